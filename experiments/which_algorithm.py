"""Which learning algorithm does a trained softmax transformer implement? (Akyürek et al. 2022)

    icl-toy run which_algorithm           # or python -m experiments.which_algorithm
    icl-toy run which_algorithm --quick   # shrunk config, ~40 s (compilation-bound)

Full: depths 1, 2, 4, 8 x noiseless and noisy x 3 seeds x 1000 steps: 17 min (1026 s)
measured on 2 CPU cores shared with three other jobs (load ~7); about half of it trains
the two depth-8 models.

Akyürek et al. (arXiv 2211.15661, THEORY §3) train transformers on linear regression
(d = 8, x ~ N(0, I), w ~ N(0, I)) and find that the algorithm the trained model is closest
to depends on depth: one layer is closest to one GD step, 2–4 layers look like ridge, 8 or
more like OLS (noiseless); with label noise σ the best-fitting ridge λ is the Bayes value
σ²/τ². Probes decode Xᵀy from middle layers and w_OLS later, MLP probes better than linear.

Here, for each noise level and depth, S seeds of `models.softmax_transformer` (pre-norm
softmax attention + GELU MLP layers on a learned width-W embedding, learned linear readout)
are trained on online prompts (`icl_toy.training.train.train`), then:

- compared on the same held-out tasks with the baseline family (`baselines.baseline_family`:
  OLS, ridge on Akyürek's λ grid {1/16, 1/9, 1/4, 4/9} and 1, tuned GD, line-search GD, CG,
  Newton–Schulz, k-NN, zero) by SPD and ILWD (both / d, THEORY §3), with 95% Student-t
  intervals over seeds (`icl_toy.analysis.alignment`); the baselines are evaluated once per noise
  level and shared by every depth;
- the best-fitting ridge λ: the λ of {0 (OLS)} ∪ grid with the smallest SPD to the model;
- probed (`icl_toy.analysis.probes`): ridge-linear and MLP probes of the residual stream after
  every layer (the query token's state and the mean of the context tokens' states), fitted
  on one prompt set and scored by R² on another, for w, Xᵀy and w_OLS.

Departures from Akyürek et al.: one token (x_i, y_i) per pair and a query token (x_q, 0)
(not separate x and y tokens), trained on the query loss at one context length N (not
autoregressively over prefixes), far smaller models and budgets (width 32, 1000 steps of
batch 32 instead of width ≥ 256 and 500k steps). N = 16 = 2d puts every prompt in the
overdetermined regime, where noiseless OLS is exact and w_OLS = w, so OLS, small-λ ridge
and the teacher agree there; the noisy setting (σ = 0.5, Bayes λ = 1/4) separates them.
Writes `which_algorithm.{png,pdf,json,npz}` to `figures/` (full) or `figures/quick/`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.analysis import alignment, baselines
from icl_toy.analysis.probes import PROBE_KINDS, TARGETS, ProbeConfig, probe_model
from icl_toy.core.models import EmbeddedTransformer, softmax_transformer
from icl_toy.core.predictors import seeded_model_predictor
from icl_toy.core.tasks import TaskConfig, sample_batch
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import save_figure
from icl_toy.runs.results import Results, git_commit
from icl_toy.training.train import RunOptions, TrainConfig, TrainResult, train

NAME = "which_algorithm"
RUNTIME = {"full": "~17 min", "quick": "~40 s"}  # on a shared 2-core CPU

# Akyürek et al.'s ridge grid (THEORY §3), plus λ = 1; λ = 0 is OLS.
AKYUREK_LAMBDAS = (1 / 16, 1 / 9, 1 / 4, 4 / 9)
BASELINE_KINDS = ("zero", "ols", "ridge", "gd", "line_search_gd", "cg", "newton_schulz", "knn")


@dataclasses.dataclass(frozen=True)
class SoftmaxModelConfig:
    """Sizes of `models.softmax_transformer` (the depth is swept separately)."""

    embed_dim: int = 32  # W, width of the residual stream
    num_heads: int = 2
    mlp_hidden: int = 64

    def __post_init__(self):
        for name in ("embed_dim", "num_heads", "mlp_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SoftmaxModelConfig.{name} must be an integer >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class Config:
    d: int = 8  # input dimension (Akyürek et al.: 8)
    n_context: int = 16  # N context pairs; N = 2d, overdetermined (see the module docstring)
    noise_stds: tuple[float, ...] = (0.0, 0.5)  # σ of the label noise; τ = 1
    depths: tuple[int, ...] = (1, 2, 4, 8)
    model: SoftmaxModelConfig = dataclasses.field(default_factory=SoftmaxModelConfig)
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=1000, batch_size=32, learning_rate=2e-3, eval_every=100, num_seeds=3
        )
    )
    ridge_lambdas: tuple[float, ...] = (*AKYUREK_LAMBDAS, 1.0)  # family grid; OLS is λ = 0
    max_gd_steps: int = 2  # GD, line-search GD, CG and Newton–Schulz with K = 1..this
    # Baselines of `baselines.baseline_family` kept, by name prefix ("ridge" keeps the Bayes λ).
    baseline_kinds: tuple[str, ...] = BASELINE_KINDS
    tune_tasks: int = 2000  # tasks for the line search of GD's η when K > 1
    eval_tasks: int = 500  # held-out tasks of the alignment metrics
    probe_train_prompts: int = 1024  # prompts the probes are fitted on
    probe_test_prompts: int = 1024  # disjoint prompts the probes are scored on
    # Features: the query token and the mean of the context tokens. The query alone decoded
    # nothing (linear R² <= 0.08 for every target and layer in a full run): it only needs
    # x_qᵀŵ, while Σ_i x_i y_i / N is a mean over the context tokens.
    probe: ProbeConfig = dataclasses.field(
        default_factory=lambda: ProbeConfig(mlp_steps=200, pool="query_and_context")
    )
    eval_seed: int = 10_000  # root key of eval, probe and tuning tasks (not a training seed)

    def __post_init__(self):
        if self.d < 1 or self.n_context < 1:
            raise ValueError(f"d and n_context must be >= 1, got {self.d}, {self.n_context}")
        if not self.noise_stds or min(self.noise_stds) < 0:
            raise ValueError(f"noise_stds must be non-empty and >= 0, got {self.noise_stds}")
        if not self.depths or min(self.depths) < 1 or len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths must be distinct integers >= 1, got {self.depths}")
        if not self.ridge_lambdas or min(self.ridge_lambdas) <= 0:
            raise ValueError(f"ridge_lambdas must be > 0 (λ = 0 is OLS), got {self.ridge_lambdas}")
        unknown = set(self.baseline_kinds) - set(BASELINE_KINDS)
        if unknown or not {"ols", "ridge", "gd"} <= set(self.baseline_kinds):
            raise ValueError(
                f"baseline_kinds must be among {BASELINE_KINDS} and include ols, ridge and gd "
                f"(the figure's reference learners), got {self.baseline_kinds}"
            )
        if self.max_gd_steps < 1:
            raise ValueError(f"max_gd_steps must be >= 1, got {self.max_gd_steps}")
        if self.eval_tasks < 2 or self.tune_tasks < 2:
            raise ValueError("eval_tasks and tune_tasks must be >= 2")
        if min(self.probe_train_prompts, self.probe_test_prompts) < 2:
            raise ValueError("probe_train_prompts and probe_test_prompts must be >= 2")

    def task(self, noise_std: float) -> TaskConfig:
        """Gaussian inputs and teacher (τ = 1), label noise σ on the context only."""
        return TaskConfig(
            d=self.d, n_context=self.n_context, inputs="gaussian", noise_std=noise_std
        )


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        noise_stds=(0.5,),
        depths=(1,),
        train=TrainConfig(steps=100, batch_size=16, learning_rate=2e-3, eval_every=50, num_seeds=2),
        ridge_lambdas=(1 / 4,),
        max_gd_steps=1,
        baseline_kinds=("ols", "ridge", "gd"),
        tune_tasks=100,
        eval_tasks=50,
        probe_train_prompts=64,
        probe_test_prompts=64,
        probe=ProbeConfig(mlp_steps=20),
    )


def train_depths(
    task: TaskConfig,
    depths: tuple[int, ...],
    model_cfg: SoftmaxModelConfig,
    train_cfg: TrainConfig,
    options: RunOptions | None = None,
) -> dict[int, tuple[EmbeddedTransformer, TrainResult]]:
    """Train S seeds of `softmax_transformer` at each depth on `task`: {depth: (model, result)}.

    Each depth is one `icl_toy.training.train.train` call (checkpoints under `depth{D}` of
    `options.checkpoint_dir`); `result.params` has a leading seed axis S.
    """
    options = options or RunOptions()
    trained = {}
    for depth in depths:
        model = softmax_transformer(
            task.d_y,
            depth,
            model_cfg.num_heads,
            model_cfg.mlp_hidden,
            embed_dim=model_cfg.embed_dim,
        )
        trained[depth] = (model, train(model, task, train_cfg, options=options.stage(f"d{depth}")))
    return trained


def _held_out(key: jax.Array, task: TaskConfig, num_tasks: int):
    """Held-out prompts and P = 4d probe queries per task for the alignment metrics."""
    key_tasks, key_probes = jax.random.split(key)
    num_probes = 4 * task.d
    return sample_batch(key_tasks, task, num_tasks), alignment.sample_probes(
        key_probes, task, num_tasks, num_probes
    )


def closest_rows(
    model_eval: alignment.Evaluation,
    baseline_evals: dict[str, alignment.Evaluation],
    prompts,
) -> list[dict]:
    """One row per baseline, sorted by SPD: the baseline's half-MSE and the model–baseline
    SPD, ILWD (each mean and 95% interval over seeds) and sensitivity cosine."""
    rows = []
    for name, ev in baseline_evals.items():
        values = alignment.pair_metrics(model_eval, ev, prompts)
        stats = {m: alignment.summarize(values[m], model_eval.seeded) for m in alignment.METRICS}
        rows.append(
            {
                "name": name,
                "half_mse": stats["half_mse_b"]["mean"],
                "spd": _interval(stats["spd"]),
                "ilwd": _interval(stats["ilwd"]),
                "cosine": stats["cosine"]["mean"],
                "spd_per_seed": stats["spd"]["per_seed"],
            }
        )
    return sorted(rows, key=lambda row: row["spd"]["mean"])


def _half_mse_per_task(ev: alignment.Evaluation, prompts) -> np.ndarray:
    """½ mean_Y (ŷ − y_q)² of every seed and task, (S, B)."""
    return 0.5 * np.mean((np.asarray(ev.pred_SxBxY) - np.asarray(prompts.y_q)[None]) ** 2, -1)


def _interval(stats: dict) -> dict:
    return {k: stats[k] for k in ("mean", "low", "high", "over")}


def _ridge_name(lam: float) -> str:
    return "ols" if lam == 0 else f"ridge(λ={lam:g})"


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train every (noise, depth), align with the baselines, probe; return the results."""
    start = time.time()
    options = options or RunOptions()
    root = jax.random.key(config.eval_seed)
    settings, arrays = [], {}
    fit_lambdas = (0.0, *config.ridge_lambdas)
    for i, noise_std in enumerate(config.noise_stds):
        task = config.task(noise_std)
        key_family, key_eval, key_probe_train, key_probe_test, key_probe = jax.random.split(
            jax.random.fold_in(root, i), 5
        )
        family = baselines.baseline_family(
            task,
            key=key_family,
            max_steps=config.max_gd_steps,
            ridge_lambdas=config.ridge_lambdas,
            num_tune_tasks=config.tune_tasks,
        )
        family = {
            name: predictor
            for name, predictor in family.items()
            if name.split("(")[0] in config.baseline_kinds
        }
        prompts, probes = _held_out(key_eval, task, config.eval_tasks)
        baseline_evals = alignment.evaluate_many(family, prompts, probes)
        gd_name = next(name for name in family if name.startswith("gd(K=1,"))
        bayes_lambda = baselines.bayes_ridge_lambda(task)
        probe_train = sample_batch(key_probe_train, task, config.probe_train_prompts)
        probe_test = sample_batch(key_probe_test, task, config.probe_test_prompts)
        trained = train_depths(
            task, config.depths, config.model, config.train, options.stage(f"noise{i}")
        )
        per_depth = []
        for depth, (model, result) in trained.items():
            predictor = seeded_model_predictor(model, result.params)
            model_eval = alignment.evaluate(predictor, prompts, probes)
            rows = closest_rows(model_eval, baseline_evals, prompts)
            by_name = {row["name"]: row for row in rows}
            model_loss = alignment.summarize(_half_mse_per_task(model_eval, prompts), True)
            ridge_spd_SxL = np.stack(
                [by_name[_ridge_name(lam)]["spd_per_seed"] for lam in fit_lambdas], axis=1
            )
            best_per_seed = [fit_lambdas[j] for j in np.argmin(ridge_spd_SxL, axis=1)]
            r2 = probe_model(
                model,
                result.params,
                probe_train,
                probe_test,
                key=jax.random.fold_in(key_probe, depth),
                cfg=config.probe,
            )
            tag = f"noise{i}_depth{depth}"
            for kind in PROBE_KINDS:
                for target in TARGETS:
                    arrays[f"probe_{kind}_{target}_{tag}"] = np.asarray(r2[kind][target])
            arrays[f"train_loss_{tag}"] = result.train_loss.reshape(
                result.train_loss.shape[0], -1, config.train.eval_every
            ).mean(axis=-1)
            by_ilwd = min(rows, key=lambda row: row["ilwd"]["mean"])
            per_depth.append(
                {
                    "depth": depth,
                    "model_half_mse": _interval(model_loss),
                    "model_half_mse_per_seed": model_loss["per_seed"],
                    "closest_by_spd": {k: rows[0][k] for k in ("name", "spd", "ilwd")},
                    "closest_by_ilwd": {k: by_ilwd[k] for k in ("name", "spd", "ilwd")},
                    "spd_to": {
                        "gd": by_name[gd_name]["spd"],
                        "ols": by_name["ols"]["spd"],
                        "ridge_bayes": by_name[_ridge_name(bayes_lambda)]["spd"]
                        if bayes_lambda in fit_lambdas
                        else None,
                    },
                    "ridge_fit": {
                        "lambdas": list(fit_lambdas),
                        "spd_mean": ridge_spd_SxL.mean(axis=0).tolist(),
                        "best_lambda": fit_lambdas[int(np.argmin(ridge_spd_SxL.mean(axis=0)))],
                        "best_lambda_per_seed": best_per_seed,
                    },
                    "probe_r2": {
                        kind: {
                            target: {
                                "mean": np.asarray(r2[kind][target]).mean(axis=0).tolist(),
                                "per_seed": np.asarray(r2[kind][target]).tolist(),
                            }
                            for target in TARGETS
                        }
                        for kind in PROBE_KINDS
                    },
                    "rows": [{k: v for k, v in row.items() if k != "spd_per_seed"} for row in rows],
                }
            )
        settings.append(
            {
                "noise_std": noise_std,
                "bayes_lambda": bayes_lambda,
                "gd_baseline": gd_name,
                "baseline_half_mse": {
                    name: float(_half_mse_per_task(ev, prompts).mean())
                    for name, ev in baseline_evals.items()
                },
                "depths": per_depth,
            }
        )
    summary = {
        "experiment": NAME,
        "config": config,
        "git_commit": git_commit(),
        "device": str(jax.devices()[0]),
        "loss": "half-MSE, 0.5 * mean (y_hat - y)^2, on held-out tasks (query label noiseless)",
        "spd_ilwd": "divided by d; mean and 95% Student-t interval over training seeds",
        "probe_r2": "held-out R^2 per layer (0 = embedding), mean over target coordinates",
        "settings": settings,
        "runtime_s": time.time() - start,
    }
    return Results(summary, arrays)


def _spd_series(setting: dict, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and interval of one `spd_to` entry across depths."""
    values = [d["spd_to"][key] for d in setting["depths"]]
    mean = np.array([v["mean"] for v in values])
    return mean, np.array([v["low"] for v in values]), np.array([v["high"] for v in values])


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figure from saved results."""
    s, a = results.summary, results.arrays
    settings = s["settings"]
    num_settings = len(settings)
    fig, axes = plt.subplots(2, num_settings + 1, figsize=(5.2 * (num_settings + 1), 8.5))
    axes = np.asarray(axes).reshape(2, num_settings + 1)
    for i, setting in enumerate(settings):
        depths = [d["depth"] for d in setting["depths"]]
        ax = axes[0, i]
        series = [("gd", "GD (K=1, tuned η)"), ("ols", "OLS")]
        if setting["depths"][0]["spd_to"]["ridge_bayes"] is not None and setting["bayes_lambda"]:
            series.append(("ridge_bayes", f"ridge (Bayes λ={setting['bayes_lambda']:.3g})"))
        for key, label in series:
            mean, low, high = _spd_series(setting, key)
            ax.errorbar(
                depths, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, label=label
            )
        best = [d["ridge_fit"] for d in setting["depths"]]
        best_spd = [min(f["spd_mean"]) for f in best]
        ax.plot(depths, best_spd, "k:", marker="s", label="best ridge λ on the grid")
        for depth, fit, spd in zip(depths, best, best_spd, strict=True):
            ax.annotate(
                f"λ={fit['best_lambda']:.3g}",
                (depth, spd),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, -10),
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(
            xlabel="depth (layers)",
            ylabel="SPD / d to the model",
            title=f"σ = {setting['noise_std']:g}: closest algorithm by depth",
        )
        ax.legend(fontsize=7)

        ax = axes[1, i]
        deepest = max(depths)
        for j, target in enumerate(TARGETS):
            for kind, style in (("linear", "-"), ("mlp", "--")):
                r2 = a[f"probe_{kind}_{target}_noise{i}_depth{deepest}"]  # (S, L + 1)
                layers = np.arange(r2.shape[1])
                ax.plot(
                    layers,
                    r2.mean(axis=0),
                    style,
                    color=f"C{j}",
                    marker="o",
                    ms=3,
                    label=f"{target} ({kind})",
                )
        lowest = min(
            float(np.min(a[f"probe_{kind}_{target}_noise{i}_depth{deepest}"]))
            for kind in PROBE_KINDS
            for target in TARGETS
        )
        ax.set_ylim(max(-0.6, min(-0.1, lowest - 0.05)), 1.02)
        ax.set(
            xlabel="layer (0 = embedding)",
            ylabel="held-out R²",
            title=f"σ = {setting['noise_std']:g}: probes of the depth-{deepest} model",
        )
        ax.legend(fontsize=7)

    ax = axes[0, -1]
    for i, setting in enumerate(settings):
        depths = [d["depth"] for d in setting["depths"]]
        loss = [d["model_half_mse"] for d in setting["depths"]]
        mean = np.array([v["mean"] for v in loss])
        yerr = [
            mean - np.array([v["low"] for v in loss]),
            np.array([v["high"] for v in loss]) - mean,
        ]
        ax.errorbar(
            depths,
            mean,
            yerr=yerr,
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=f"model, σ = {setting['noise_std']:g}",
        )
        base = setting["baseline_half_mse"]
        ax.axhline(
            base[setting["gd_baseline"]],
            color=f"C{i}",
            ls=":",
            lw=1,
            label=f"GD K=1, σ = {setting['noise_std']:g}",
        )
        ax.axhline(
            base["ols"], color=f"C{i}", ls="--", lw=1, label=f"OLS, σ = {setting['noise_std']:g}"
        )
    ax.set_xscale("log", base=2)
    ax.set(xlabel="depth (layers)", ylabel="held-out half-MSE", title="Loss by depth")
    ax.legend(fontsize=7)

    ax = axes[1, -1]
    for i, setting in enumerate(settings):
        for j, depth in enumerate(d["depth"] for d in setting["depths"]):
            loss = a[f"train_loss_noise{i}_depth{depth}"]  # (S, chunks)
            steps = (np.arange(loss.shape[1]) + 1) * s["config"]["train"]["eval_every"]
            ax.plot(
                steps,
                loss.mean(axis=0),
                color=f"C{j}",
                ls=["-", "--", ":"][i % 3],
                label=f"depth {depth}, σ = {setting['noise_std']:g}",
            )
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="train half-MSE (chunk mean)", title="Training")
    ax.legend(fontsize=6, ncol=2)
    fig.suptitle(
        "Which algorithm does a trained softmax transformer implement? "
        f"(d = {s['config']['d']}, N = {s['config']['n_context']})"
    )
    fig.tight_layout()
    return save_figure(fig, out_dir, NAME)


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
