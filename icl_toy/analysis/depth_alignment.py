"""Which baseline each model of a depth sweep is closest to, seed by seed.

`per_depth_metrics` evaluates every depth's S seeds against one baseline family on the same
held-out tasks (`alignment.per_seed_metrics`); `closest_rows` turns one depth's per-seed
values into a table, closest first, with 95% Student-t intervals over seeds (`mean_ci`).
SPD and ILWD are divided by d (`icl_toy.analysis.alignment`). `noise_level_summary` gathers
one noise level of a sweep (summaries and saved arrays); `phase_baselines` and
`depth_phase_statistics` give the shallow-versus-deep SPD contrasts of Akyürek et al.'s
depth phases (GD-like, then ridge- or OLS-like).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from icl_toy.analysis import alignment, baselines
from icl_toy.analysis.probes import r2_summary
from icl_toy.analysis.stats import mean_ci
from icl_toy.core import learners
from icl_toy.core.predictors import Predictor, seeded_model_predictor
from icl_toy.core.tasks import TaskConfig
from icl_toy.training.depth_sweep import chunk_means
from icl_toy.training.train import TrainResult

PerSeed = dict[str, dict[str, np.ndarray]]  # {baseline: {metric: (S,) values}}


def per_depth_metrics(
    trained: dict[int, tuple[Any, TrainResult]],
    task: TaskConfig,
    baselines: dict[str, Predictor],
    *,
    key: jax.Array,
    num_tasks: int,
) -> dict[int, PerSeed]:
    """{depth: `alignment.per_seed_metrics` of its seeds against `baselines`}.

    `trained` is `icl_toy.training.depth_sweep.train_depths`' output; every depth sees the
    same held-out tasks and probe queries (drawn from `key`), so depths pair seed by seed.
    """
    return {
        depth: alignment.per_seed_metrics(
            seeded_model_predictor(model, result.params),
            task,
            baselines,
            key=key,
            num_tasks=num_tasks,
        )
        for depth, (model, result) in trained.items()
    }


def closest_rows(
    per_seed: PerSeed,
    *,
    sort_by: str = "spd",
    intervals: tuple[str, ...] = ("spd", "ilwd"),
    means: tuple[str, ...] = ("cosine",),
) -> list[dict[str, Any]]:
    """One row per baseline, closest first by the mean of `sort_by` (one of `intervals`).

    A row holds `name`, the baseline's `half_mse` (mean over seeds of `half_mse_b`), the
    `mean_ci` record over seeds of every metric in `intervals` and the mean over seeds of
    every other metric in `means`. Larger is closer for `alignment.HIGHER_IS_CLOSER`.
    """
    if sort_by not in intervals:
        raise ValueError(f"sort_by must be one of the intervals {intervals}, got {sort_by!r}")
    rows = [
        {
            "name": name,
            "half_mse": float(np.mean(values["half_mse_b"])),
            **{m: mean_ci(values[m]) for m in intervals},
            **{m: float(np.mean(values[m])) for m in means if m not in intervals},
        }
        for name, values in per_seed.items()
    ]
    sign = -1.0 if sort_by in alignment.HIGHER_IS_CLOSER else 1.0
    return sorted(rows, key=lambda row: sign * row[sort_by]["mean"])


def ridge_fit(spd_by_lambda: dict[float, np.ndarray]) -> dict[str, Any]:
    """The best-fitting ridge λ: the λ whose ridge predictions are closest to the model's.

    `spd_by_lambda` maps λ (0 for OLS) to the model's (S,) per-seed SPD to ridge at λ.
    Returns the λ grid, the mean SPD at each λ, the λ of the smallest mean SPD and each
    seed's own best λ.
    """
    lambdas = list(spd_by_lambda)
    spd_SxL = np.stack(list(spd_by_lambda.values()), axis=1)
    return {
        "lambdas": lambdas,
        "spd_mean": spd_SxL.mean(axis=0).tolist(),
        "best_lambda": lambdas[int(np.argmin(spd_SxL.mean(axis=0)))],
        "best_lambda_per_seed": [lambdas[j] for j in np.argmin(spd_SxL, axis=1)],
    }


def depth_summary(
    per_seed: PerSeed, references: dict[str, str | None], ridge_names: dict[float, str]
) -> dict[str, Any]:
    """One depth's alignment with a baseline family, from its `per_seed_metrics` values.

    The model's half-MSE (`mean_ci` over seeds, and per seed), the closest baseline by SPD
    and by ILWD, the SPD record to each named reference baseline (None where the name is
    None), the `ridge_fit` over the ridge baselines `ridge_names` ({λ: name}) and every
    baseline's row (`closest_rows`).
    """
    rows = closest_rows(per_seed)
    by_name = {row["name"]: row for row in rows}
    model_half_mse_S = next(iter(per_seed.values()))["half_mse_a"]  # the same for every baseline
    by_ilwd = min(rows, key=lambda row: row["ilwd"]["mean"])
    return {
        "model_half_mse": mean_ci(model_half_mse_S),
        "model_half_mse_per_seed": model_half_mse_S.tolist(),
        "closest_by_spd": {k: rows[0][k] for k in ("name", "spd", "ilwd")},
        "closest_by_ilwd": {k: by_ilwd[k] for k in ("name", "spd", "ilwd")},
        "spd_to": {
            label: None if name is None else by_name[name]["spd"]
            for label, name in references.items()
        },
        "ridge_fit": ridge_fit({lam: per_seed[name]["spd"] for lam, name in ridge_names.items()}),
        "rows": rows,
    }


def ridge_name(lam: float) -> str:
    """The name `baselines.baseline_family` gives ridge at λ ("ols" at λ = 0)."""
    return "ols" if lam == 0 else f"ridge(λ={lam:g})"


def reference_family(
    task: TaskConfig,
    kinds: tuple[str, ...],
    *,
    key: jax.Array,
    max_steps: int,
    ridge_lambdas: tuple[float, ...],
    num_tune_tasks: int,
) -> tuple[dict[str, Predictor], dict[str, str | None], dict[float, str]]:
    """`baselines.baseline_family` kept to the name prefixes `kinds` (which must hold "ols",
    "ridge" and "gd"), with the names `depth_summary` reads.

    Returns (family, references, ridge_names): references name one tuned GD step ("gd"),
    OLS ("ols") and ridge at the Bayes λ = σ²/τ² ("ridge_bayes", None unless that λ is 0
    or on the grid); ridge_names maps each λ of {0} ∪ `ridge_lambdas` to its baseline.
    """
    family = baselines.baseline_family(
        task,
        key=key,
        max_steps=max_steps,
        ridge_lambdas=ridge_lambdas,
        num_tune_tasks=num_tune_tasks,
    )
    family = {name: p for name, p in family.items() if name.split("(")[0] in kinds}
    ridge_names = {lam: ridge_name(lam) for lam in (0.0, *ridge_lambdas)}
    references = {
        "gd": next(name for name in family if name.startswith("gd(K=1,")),
        "ols": "ols",
        "ridge_bayes": ridge_names.get(baselines.bayes_ridge_lambda(task)),
    }
    return family, references, ridge_names


def noise_level_summary(
    trained: dict[int, tuple[Any, TrainResult]],
    task: TaskConfig,
    metrics: dict[int, PerSeed],
    r2: dict[int, dict[str, dict[str, np.ndarray]]],
    family: tuple[dict[str, str | None], dict[float, str]],
    *,
    tag: str,
    chunk: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One noise level of a depth sweep: its summary and its saved arrays.

    `metrics` are `per_depth_metrics`, `r2` `probes.probe_depths`, `family` the references
    and ridge names of `reference_family`. The summary holds σ, the Bayes λ, the name of the
    one-step GD baseline, every baseline's half-MSE and per depth its `depth_summary` with
    its probes' `r2_summary`. The arrays, keyed `{name}_{tag}_depth{D}`, are the (S, L + 1)
    R² of every probe kind and target (`probe_{kind}_{target}`), the (S, steps / chunk)
    training loss (`train_loss`, `depth_sweep.chunk_means`), the (S,) SPD to each named
    reference (`spd_to_{label}`) and, where the runs evaluated held-out prompts, the (S, E)
    held-out loss (`eval_loss`) at its steps (`eval_steps`).
    """
    references, ridge_names = family
    entries, arrays = [], {}
    for depth, (_, result) in trained.items():
        suffix = f"{tag}_depth{depth}"
        for kind, by_target in r2[depth].items():
            arrays |= {f"probe_{kind}_{t}_{suffix}": v for t, v in by_target.items()}
        arrays[f"train_loss_{suffix}"] = chunk_means(result.train_loss, chunk)
        for label, name in references.items():
            if name is not None:  # per seed, so the summary's intervals can be recomputed
                arrays[f"spd_to_{label}_{suffix}"] = np.asarray(metrics[depth][name]["spd"])
        if "loss" in result.eval_metrics:
            arrays[f"eval_loss_{suffix}"] = np.asarray(result.eval_metrics["loss"])
            arrays[f"eval_steps_{suffix}"] = np.asarray(result.eval_steps)
        summary = depth_summary(metrics[depth], references, ridge_names)
        entries.append({"depth": depth, **summary, "probe_r2": r2_summary(r2[depth])})
    first = next(iter(metrics.values()))
    setting = {
        "noise_std": task.noise_std,
        "bayes_lambda": baselines.bayes_ridge_lambda(task),
        "gd_baseline": references["gd"],
        "baseline_half_mse": {k: float(np.mean(v["half_mse_b"])) for k, v in first.items()},
        "depths": entries,
    }
    return setting, arrays


def phase_baselines(
    task: TaskConfig, ridge_lambdas: tuple[float, ...], *, key: jax.Array
) -> tuple[dict[str, Predictor], str | None]:
    """One GD step with η tuned on tasks from `key` ("gd"), OLS and ridge at each λ of
    `ridge_lambdas` ("ridge({λ:.3g})"), and the name of ridge at the Bayes λ = σ²/τ²
    (None without label noise; with it, that λ must be in `ridge_lambdas`)."""
    names = {
        "gd": learners.gd(learners.tuned_gd_eta(task, 1, key=key)),
        "ols": learners.ols,
        **{f"ridge({lam:.3g})": learners.ridge(lam) for lam in ridge_lambdas},
    }
    bayes = baselines.bayes_ridge_lambda(task)
    bayes_name = f"ridge({bayes:.3g})" if task.noise_std > 0 else None
    if bayes_name is not None and bayes_name not in names:
        raise ValueError(f"the Bayes λ = {bayes:.3g} must be in ridge_lambdas")
    return names, bayes_name


def depth_phase_statistics(
    metrics: dict[int, PerSeed], names: tuple[str, ...], bayes_name: str | None
) -> dict[str, np.ndarray]:
    """Per-seed SPD contrasts between the shallowest and the deepest model of a depth sweep.

    `metrics` are `per_depth_metrics`, shallowest depth first, against the baselines `names`,
    among them one GD step "gd" and "ols". The values: the shallowest model's SPD to GD minus
    its SPD to OLS, the deepest model's SPD to OLS minus its SPD to GD, the deepest minus the
    shallowest model's SPD to OLS (seeds paired); with `bayes_name`, the deepest model's SPD
    to that ridge minus its smallest SPD to the baselines other than GD and it; then every
    depth's model half-MSE (`loss_depth{D}`) and SPD to each baseline (`spd_depth{D}_{name}`).
    """
    spd = {depth: {name: m[name]["spd"] for name in names} for depth, m in metrics.items()}
    shallow, deep = spd[next(iter(spd))], spd[list(spd)[-1]]
    values = {
        "shallow_spd_gd_minus_spd_ols": shallow["gd"] - shallow["ols"],
        "deep_spd_ols_minus_spd_gd": deep["ols"] - deep["gd"],
        "deep_minus_shallow_spd_ols": deep["ols"] - shallow["ols"],
    }
    if bayes_name is not None:
        others = np.stack([deep[n] for n in names if n not in ("gd", bayes_name)])
        values["deep_spd_bayes_ridge_minus_best_other"] = deep[bayes_name] - others.min(0)
    for depth, m in metrics.items():
        values[f"loss_depth{depth}"] = m["ols"]["half_mse_a"]
        values |= {f"spd_depth{depth}_{name}": spd[depth][name] for name in names}
    return values
