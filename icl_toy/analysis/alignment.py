"""Every alignment metric between two in-context learners, with 95% confidence intervals.

`compare(a, b, task, key=...)` takes any two predictors (`icl_toy.core.predictors.Predictor`: a
trained model, a construction, a baseline; or a `SeededPredictor` with a leading seed axis)
and evaluates both on the same held-out tasks. Per task it computes:

- `half_mse_a`, `half_mse_b`: ½||ŷ − y_q||² on the query (von Oswald et al.'s half-MSE).
- `pred_diff`: |ŷ_a − ŷ_b| on the query, mean over outputs (`metrics.prediction_difference`).
- `spd`: Akyürek et al.'s squared prediction difference (arXiv 2211.15661, docs/theory.md §3),
  E_{x'} ||A(D)(x') − B(D)(x')||² over P unlabeled probe queries x'_p drawn from the task's
  input law, **divided by d** as in their plots.
- `ilwd`: implicit linear weight difference, ||ŵ_A − ŵ_B||²_F / d, where ŵ_A (Y, D) is the
  least-squares fit of A's predictions on the same P probes for the same context (exact
  for learners that are linear in x_q once P ≥ d), also **divided by d**.
- `cosine`, `model_diff`: cosine and ||·||₂ distance of the sensitivities ∂ŷ/∂x_q
  (`metrics.sensitivity_cosine`, `metrics.model_difference`), from `jax.jacrev` of the
  predictor with respect to `prompt.x_q`.

Every metric is a mean over tasks of a per-task value. Confidence intervals are Student-t
interval records (`icl_toy.analysis.stats.mean_ci`, {"mean", "low", "high", "method", "n"}):
over seeds when a predictor has a seed axis S > 1 (each seed's value is its mean over the
same tasks, so the interval is conditional on that task set; seeds are paired by index),
and always also over tasks (the per-task values, averaged over seeds, n = number of tasks).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.analysis import metrics
from icl_toy.analysis.stats import mean_ci
from icl_toy.core.linalg import matmul
from icl_toy.core.losses import half_mse
from icl_toy.core.predictors import Predictor, SeededPredictor, as_seeded
from icl_toy.core.tasks import Prompt, TaskConfig, sample_batch

METRICS = ("half_mse_a", "half_mse_b", "pred_diff", "spd", "ilwd", "cosine", "model_diff")
# Metrics where larger means closer; `closest_algorithm` sorts these in descending order.
HIGHER_IS_CLOSER = ("cosine",)


class Evaluation(NamedTuple):
    """One learner's outputs on a batch of tasks, with a leading seed axis S (1 if none)."""

    pred_SxBxY: jax.Array  # ŷ on the query
    sensitivity_SxBxYxD: jax.Array  # ∂ŷ/∂x_q
    probe_pred_SxBxPxY: jax.Array  # ŷ on the P probe queries
    w_fit_SxBxYxD: jax.Array  # least-squares implicit weights from the probes
    seeded: bool  # whether S is a real seed axis


def sample_probes(key: jax.Array, task: TaskConfig, num_tasks: int, num_probes: int) -> jax.Array:
    """P unlabeled probe queries per task from the task's input law, (B, P, D).

    Drawn as the context inputs of prompts of length P (only their x is used).
    """
    probe_task = dataclasses.replace(task, n_context=num_probes, noise_std=0.0)
    return sample_batch(key, probe_task, num_tasks).x


def _evaluation_arrays(
    predictor: Predictor | SeededPredictor, prompts: Prompt, probes_BxPxD, probes_pinv_BxDxP
):
    """The four arrays of an `Evaluation` (traceable); a plain predictor gets S = 1."""
    apply, params = as_seeded(predictor)

    def one_task(theta, prompt: Prompt, probes_PxD: jax.Array, probes_pinv_DxP: jax.Array):
        def at_query(x_q_D):
            return apply(theta, prompt._replace(x_q=x_q_D))

        probe_pred_PxY = jax.vmap(at_query)(probes_PxD)
        w_fit_YxD = matmul(probes_pinv_DxP, probe_pred_PxY).T  # least squares on the probes
        return at_query(prompt.x_q), jax.jacrev(at_query)(prompt.x_q), probe_pred_PxY, w_fit_YxD

    over_tasks = jax.vmap(one_task, in_axes=(None, 0, 0, 0))
    over_seeds = jax.vmap(over_tasks, in_axes=(0, None, None, None))
    return over_seeds(params, prompts, probes_BxPxD, probes_pinv_BxDxP)


def evaluate(
    predictor: Predictor | SeededPredictor, prompts: Prompt, probes_BxPxD: jax.Array
) -> Evaluation:
    """Predictions, sensitivities, probe predictions and fitted ŵ of one learner on a batch."""
    return evaluate_many({"": predictor}, prompts, probes_BxPxD)[""]


def evaluate_many(
    predictors: dict[str, Predictor | SeededPredictor], prompts: Prompt, probes_BxPxD: jax.Array
) -> dict[str, Evaluation]:
    """`evaluate` for several learners on the same prompts and probes.

    Each learner is its own compiled program: one program holding a whole baseline family
    compiled a little faster, but hung intermittently on a 2-core CPU (jax 0.10.2).
    """
    probes_pinv_BxDxP = jax.jit(jnp.linalg.pinv)(probes_BxPxD)  # shared by every learner
    evaluations = {}
    for name, predictor in predictors.items():
        arrays = jax.jit(functools.partial(_evaluation_arrays, predictor))(
            prompts, probes_BxPxD, probes_pinv_BxDxP
        )
        evaluations[name] = Evaluation(*arrays, seeded=isinstance(predictor, SeededPredictor))
    return evaluations


def _on_one_task(metric, a_YxD: jax.Array, b_YxD: jax.Array) -> jax.Array:
    """A task-averaging metric of `icl_toy.analysis.metrics` on a single task (a batch of one)."""
    return metric(a_YxD[None], b_YxD[None])


def _check_seed_axes(*predictors: Predictor | SeededPredictor) -> None:
    sizes = {
        jax.tree.leaves(p.params)[0].shape[0] for p in predictors if isinstance(p, SeededPredictor)
    }
    if len(sizes) > 1:
        raise ValueError(f"the predictors' seed axes have different sizes {sorted(sizes)}")


def pair_metrics(ev_a: Evaluation, ev_b: Evaluation, prompts: Prompt) -> dict[str, np.ndarray]:
    """Per-seed, per-task values (S, B) of every metric in `METRICS`.

    A learner without a seed axis is broadcast against the other's seeds.
    """
    s_a, s_b = ev_a.pred_SxBxY.shape[0], ev_b.pred_SxBxY.shape[0]
    if ev_a.seeded and ev_b.seeded and s_a != s_b:
        raise ValueError(f"the predictors' seed axes have different sizes {sorted({s_a, s_b})}")
    s = max(s_a, s_b)

    def seeds(x):
        return jnp.broadcast_to(x, (s, *x.shape[1:]))

    fields_a = (seeds(x) for x in ev_a[:4])
    fields_b = (seeds(x) for x in ev_b[:4])
    values = _pair_values(*fields_a, *fields_b, prompts.y_q)
    return {name: np.asarray(values[name], dtype=float) for name in METRICS}


@jax.jit
def _pair_values(pred_a, sens_a, probe_a, w_a, pred_b, sens_b, probe_b, w_b, y_q_BxY):
    """Per-seed, per-task metric values; arrays (S, B, …) as in `Evaluation`, y_q (B, Y)."""
    d = w_a.shape[-1]

    def per_task(pred_a, sens_a, probe_a, w_a, pred_b, sens_b, probe_b, w_b, y_q):
        return {
            "half_mse_a": half_mse(pred_a[None], y_q[None]),
            "half_mse_b": half_mse(pred_b[None], y_q[None]),
            "pred_diff": metrics.prediction_difference(pred_a[None], pred_b[None]),
            "spd": jnp.mean(jnp.sum((probe_a - probe_b) ** 2, axis=-1)) / d,
            "ilwd": jnp.sum((w_a - w_b) ** 2) / d,
            "cosine": _on_one_task(metrics.sensitivity_cosine, sens_a, sens_b),
            "model_diff": _on_one_task(metrics.model_difference, sens_a, sens_b),
        }

    over_seeds = jax.vmap(jax.vmap(per_task), in_axes=(0,) * 8 + (None,))
    return over_seeds(pred_a, sens_a, probe_a, w_a, pred_b, sens_b, probe_b, w_b, y_q_BxY)


def summarize(values_SxB: np.ndarray, seeded: bool) -> dict[str, Any]:
    """The t-interval record of the mean: over seeds if `seeded` and S > 1, else over tasks.

    Returns the record {"mean", "low", "high", "method", "n"} with "over" ("seeds" or
    "tasks") saying which, "tasks" the record over tasks of the seed-averaged per-task
    values (always), and "per_seed" each seed's mean over tasks.
    """
    per_seed = values_SxB.mean(axis=1)
    over_tasks = mean_ci(values_SxB.mean(axis=0))
    use_seeds = seeded and values_SxB.shape[0] > 1
    main = mean_ci(per_seed) if use_seeds else over_tasks
    return {
        **main,
        "over": "seeds" if use_seeds else "tasks",
        "tasks": over_tasks,
        "per_seed": per_seed.tolist(),
    }


def _check_sizes(task: TaskConfig, num_tasks: int, num_probes: int | None) -> int:
    num_probes = 4 * task.d if num_probes is None else num_probes
    if num_tasks < 2:
        raise ValueError(f"num_tasks must be >= 2 for an interval over tasks, got {num_tasks}")
    if num_probes < task.d:
        raise ValueError(
            f"num_probes must be >= d = {task.d} to fit the implicit weights, got {num_probes}"
        )
    return num_probes


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _held_out(key: jax.Array, task: TaskConfig, num_tasks: int, num_probes: int):
    """The held-out prompts and probe queries of `compare` (one compiled sampler)."""
    key_tasks, key_probes = jax.random.split(key)
    return sample_batch(key_tasks, task, num_tasks), sample_probes(
        key_probes, task, num_tasks, num_probes
    )


def compare(
    predictor_a: Predictor | SeededPredictor,
    predictor_b: Predictor | SeededPredictor,
    task: TaskConfig,
    *,
    key: jax.Array,
    num_tasks: int = 1000,
    num_probes: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Every metric of `METRICS` between two learners on `num_tasks` held-out tasks.

    Both see the same prompts and the same P = `num_probes` probe queries per task (default
    4d). Returns {metric: `summarize` record}, each {"mean", "low", "high", "method", "n",
    "over", "tasks", "per_seed"}; see the module docstring for the definitions.
    """
    num_probes = _check_sizes(task, num_tasks, num_probes)
    _check_seed_axes(predictor_a, predictor_b)
    prompts, probes = _held_out(key, task, num_tasks, num_probes)
    if predictor_a is predictor_b:  # one evaluation serves both sides
        ev_a = ev_b = evaluate(predictor_a, prompts, probes)
    else:
        evaluations = evaluate_many({"a": predictor_a, "b": predictor_b}, prompts, probes)
        ev_a, ev_b = evaluations["a"], evaluations["b"]
    values = pair_metrics(ev_a, ev_b, prompts)
    seeded = ev_a.seeded or ev_b.seeded
    return {name: summarize(values[name], seeded) for name in METRICS}


def _against_baselines(predictor, task, baselines, key, num_tasks, num_probes):
    """({baseline: pair_metrics(predictor, baseline)}, whether the predictor is seeded).

    The predictor is evaluated once, on the same held-out tasks and probes as every baseline.
    """
    if not baselines:
        raise ValueError("baselines is empty")
    num_probes = _check_sizes(task, num_tasks, num_probes)
    _check_seed_axes(predictor, *baselines.values())
    prompts, probes = _held_out(key, task, num_tasks, num_probes)
    evaluations = evaluate_many(
        {"model": predictor, **{f"b:{k}": v for k, v in baselines.items()}}, prompts, probes
    )
    ev_model = evaluations["model"]
    values = {name: pair_metrics(ev_model, evaluations[f"b:{name}"], prompts) for name in baselines}
    return values, ev_model.seeded


def closest_algorithm(
    predictor: Predictor | SeededPredictor,
    task: TaskConfig,
    baselines: dict[str, Predictor],
    *,
    key: jax.Array,
    num_tasks: int = 1000,
    num_probes: int | None = None,
    sort_by: str = "spd",
) -> list[dict[str, Any]]:
    """One row per baseline, closest first: `compare(predictor, baseline)` means.

    Each row has `name`, the baseline's `half_mse`, every pairwise metric's mean, and
    `interval`: the t-interval record of the `sort_by` metric with its "over" (the
    `summarize` record without "tasks" and "per_seed"). The predictor is evaluated
    once, on the same tasks and probes as every baseline. Build `baselines` with
    `icl_toy.analysis.baselines.baseline_family` (GD with K = 1..k, ridge over a λ grid, …).
    """
    pair_names = ("pred_diff", "spd", "ilwd", "cosine", "model_diff")
    if sort_by not in pair_names:
        raise ValueError(f"sort_by must be one of {pair_names}, got {sort_by!r}")
    values_by_name, seeded = _against_baselines(
        predictor, task, baselines, key, num_tasks, num_probes
    )
    rows = []
    for name, values in values_by_name.items():
        stats = {m: summarize(values[m], seeded) for m in METRICS}
        rows.append(
            {
                "name": name,
                "half_mse": stats["half_mse_b"]["mean"],
                "model_half_mse": stats["half_mse_a"]["mean"],
                **{m: stats[m]["mean"] for m in pair_names},
                "interval": {
                    k: v for k, v in stats[sort_by].items() if k not in ("tasks", "per_seed")
                },
            }
        )
    sign = -1.0 if sort_by in HIGHER_IS_CLOSER else 1.0
    return sorted(rows, key=lambda row: sign * row[sort_by])


def per_seed_metrics(
    predictor: Predictor | SeededPredictor,
    task: TaskConfig,
    baselines: dict[str, Predictor | SeededPredictor],
    *,
    key: jax.Array,
    num_tasks: int = 1000,
    num_probes: int | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """{baseline: {metric: (S,) values}}: each seed's mean over the same held-out tasks.

    The raw material of paired, per-seed statistics (`icl_toy.runs.hypotheses`): e.g. the
    difference of SPD to two baselines, seed by seed. The predictor is evaluated once.
    """
    values_by_name, _ = _against_baselines(predictor, task, baselines, key, num_tasks, num_probes)
    return {
        name: {metric: v.mean(axis=1) for metric, v in values.items()}
        for name, values in values_by_name.items()
    }


def format_table(rows: list[dict[str, Any]], sort_by: str = "spd") -> str:
    """A plain-text table of `closest_algorithm` rows (SPD and ILWD are divided by d)."""
    if not rows:
        return "(no rows)"
    width = max(len("baseline"), *(len(row["name"]) for row in rows))
    header = (
        f"{'baseline':<{width}}  {'half-MSE':>9}  {'SPD/d':>9}  {'ILWD/d':>9}  "
        f"{'pred diff':>9}  {'cosine':>7}  {'model diff':>10}  95% CI of {sort_by}"
    )
    lines = [f"model half-MSE {rows[0]['model_half_mse']:.4g}", header, "-" * len(header)]
    for row in rows:
        ci = row["interval"]
        lines.append(
            f"{row['name']:<{width}}  {row['half_mse']:>9.4g}  {row['spd']:>9.3g}  "
            f"{row['ilwd']:>9.3g}  {row['pred_diff']:>9.3g}  {row['cosine']:>7.4f}  "
            f"{row['model_diff']:>10.3g}  [{ci['low']:.3g}, {ci['high']:.3g}] ({ci['over']})"
        )
    return "\n".join(lines)
