"""Nonlinear in-context regression: does MLP + LSA learn kernel smoothing? (von Oswald et al. 2022)

    icl-toy run nonlinear_regression           # or python -m experiments.nonlinear_regression
    icl-toy run nonlinear_regression --quick   # shrunk config, ~1 min (compile-bound)

Full: 3 seeds x 2 models x 3000 steps of 512 tasks, 2.5 min on 2 CPU cores (measured with
other jobs sharing them).

THEORY §1, Proposition 2. On sine tasks y = a·sin(x + ρ), x ~ U(-5, 5), a ~ U(0.1, 5) and
ρ ~ U(0, π) drawn independently, N = 10 (`icl_toy.core.nonlinear.SineTaskConfig`), trains with the
same optimiser, data and seeds (vmapped):
- MLP + LSA (`FeatureLSA`): an embedding and a residual GELU MLP on every x, then one LSA
  layer on the tokens (m(x), y), all trained end to end;
- MLP + GD (`FeatureGD`): the same MLP followed by one GD step of size η on its output layer,
  ŷ = (η/N) Σ_i y_i m(x_i)ᵀm(x_q) (kernel smoothing with the learned kernel), MLP and η
  meta-learned: the paper's "MLP + GD" baseline.
Kernel baselines with the RBF kernel, tuned on held-out tasks: one functional GD step
(kernel smoothing, best η in closed form per length scale) and kernel ridge (grid over ℓ, λ);
least squares on the true features (sin x, cos x) is the exact oracle, 0 is the zero
predictor. The sensitivity cosine compares ∂ŷ/∂x_q over a grid of query points per task
(with d = 1 the per-query cosine is only a sign). Writes `nonlinear_regression.{png,pdf,
json,npz}`: loss curves, final losses, the learned kernel, and predictions on a grid for a
few tasks. Losses are half-MSE on held-out tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.analysis import metrics
from icl_toy.analysis.stats import mean_ci, seed_stats
from icl_toy.core.losses import half_mse
from icl_toy.core.models import MLPFeatures, ModelConfig, make_model
from icl_toy.core.nonlinear import (
    SineTaskConfig,
    feature_kernel,
    grid_sensitivities,
    rbf_ridge_predict,
    rbf_smoothing_predict,
    sine_oracle_predict,
)
from icl_toy.core.tasks import prompt_tokens, sample_batch
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import save_figure, seed_band
from icl_toy.runs.results import Results
from icl_toy.training.train import RunOptions, TrainConfig, batch_loss, train

NAME = "nonlinear_regression"
RUNTIME = {"full": "~2.5 min", "quick": "~1 min"}  # on a 2-core CPU
MODELS = ("mlp_lsa", "mlp_gd")


@dataclasses.dataclass(frozen=True)
class Config:
    task: SineTaskConfig = dataclasses.field(default_factory=SineTaskConfig)
    # Feature MLP of both models. The paper uses 40 and 160; 32 and 32 fit the CPU budget
    # (the sine family needs only the two features sin x and cos x).
    embed_dim: int = 32  # F, the feature width
    hidden_size: int = 32  # hidden units of the residual GELU MLP
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=3000, batch_size=512, learning_rate=2e-3, eval_every=100, num_seeds=3
        )
    )
    eval_tasks: int = 2000  # held-out tasks for every loss
    tune_tasks: int = 2000  # held-out tasks on which the kernel baselines are tuned
    sensitivity_tasks: int = 500  # tasks of the sensitivity cosine (a grid of queries each)
    grid_points: int = 41  # query points on [input_low, input_high] for sensitivities/plots
    plot_tasks: int = 3  # tasks whose predictions are drawn
    length_scales: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # RBF ℓ grid
    ridge_lambdas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # kernel ridge λ grid
    eval_seed: int = 10_000  # root key of eval, tuning and plot tasks (not a training seed)

    def __post_init__(self):
        for name in ("embed_dim", "hidden_size", "eval_tasks", "tune_tasks", "grid_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"Config.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.sensitivity_tasks <= self.eval_tasks:
            raise ValueError("sensitivity_tasks must be in [1, eval_tasks]")
        if not 1 <= self.plot_tasks <= self.eval_tasks:
            raise ValueError("plot_tasks must be in [1, eval_tasks]")
        if not self.length_scales or min(self.length_scales) <= 0:
            raise ValueError(f"length_scales must be positive, got {self.length_scales}")
        if not self.ridge_lambdas or min(self.ridge_lambdas) <= 0:
            raise ValueError(f"ridge_lambdas must be positive, got {self.ridge_lambdas}")
        if self.train.num_seeds < 2:
            raise ValueError("report over >= 2 seeds: set train.num_seeds >= 2")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        embed_dim=16,
        hidden_size=32,
        train=TrainConfig(steps=300, batch_size=64, learning_rate=3e-3, eval_every=50, num_seeds=2),
        eval_tasks=200,
        tune_tasks=200,
        sensitivity_tasks=50,
        grid_points=11,
        length_scales=(0.5, 2.0),
        ridge_lambdas=(1e-2,),
    )


def _models(config: Config) -> dict:
    sizes = {"feature_dim": config.embed_dim, "feature_hidden": config.hidden_size}
    return {
        "mlp_lsa": make_model(config.task, ModelConfig(kind="feature_lsa", **sizes)),
        "mlp_gd": make_model(config.task, ModelConfig(kind="feature_gd", **sizes)),
    }


def _tune_kernel_baselines(config: Config, prompts) -> dict:
    """Best RBF smoothing (ℓ; η in closed form) and RBF ridge (ℓ, λ) on the tuning prompts."""
    y_q = prompts.y_q

    @jax.jit
    def smoothing_fit(length_scale):
        # ŷ = η s with s the unit-step prediction: the best η is E[s y] / E[s²].
        s = jax.vmap(rbf_smoothing_predict, in_axes=(0, 0, 0, None, None))(
            prompts.x, prompts.y, prompts.x_q, length_scale, 1.0
        )
        eta = jnp.sum(s * y_q) / jnp.sum(s * s)
        return eta, half_mse(eta * s, y_q)

    @jax.jit
    def ridge_loss(length_scale, lam):
        pred = jax.vmap(rbf_ridge_predict, in_axes=(0, 0, 0, None, None))(
            prompts.x, prompts.y, prompts.x_q, length_scale, lam
        )
        return half_mse(pred, y_q)

    smoothing = [(ell, *map(float, smoothing_fit(ell))) for ell in config.length_scales]
    ell_s, eta_s, _ = min(smoothing, key=lambda r: r[2])
    ridge = [
        (ell, lam, float(ridge_loss(ell, lam)))
        for ell in config.length_scales
        for lam in config.ridge_lambdas
    ]
    ell_r, lam_r, _ = min(ridge, key=lambda r: r[2])
    return {
        "rbf_smoothing": {"length_scale": ell_s, "eta": eta_s},
        "rbf_ridge": {"length_scale": ell_r, "lambda": lam_r},
    }


def _baseline_predictors(tuned: dict) -> dict:
    s, r = tuned["rbf_smoothing"], tuned["rbf_ridge"]
    return {
        "rbf_smoothing": lambda x, y, x_q: rbf_smoothing_predict(
            x, y, x_q, s["length_scale"], s["eta"]
        ),
        "rbf_ridge": lambda x, y, x_q: rbf_ridge_predict(x, y, x_q, r["length_scale"], r["lambda"]),
        "sine_oracle": sine_oracle_predict,
    }


@functools.partial(jax.jit, static_argnums=0)
def _explicit_grid(predict, prompts, grid_G):
    """(ŷ, ∂ŷ/∂x_q) of an explicit learner at every grid query of every prompt, each (B, G)."""

    def one(x, y):
        return jax.vmap(jax.value_and_grad(lambda x_q: predict(x, y, x_q[None])[0]))(grid_G)

    return jax.vmap(one)(prompts.x, prompts.y)


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train MLP + LSA and MLP + GD, tune the kernel baselines, and compare them."""
    start = time.time()
    options = options or RunOptions()
    task = config.task
    key_eval, key_tune = jax.random.split(jax.random.key(config.eval_seed))
    eval_prompts = sample_batch(key_eval, task, config.eval_tasks)
    tune_prompts = sample_batch(key_tune, task, config.tune_tasks)
    models = _models(config)

    results = {}
    for name, model in models.items():

        def eval_fn(params, model=model):
            return {"loss": batch_loss(model, params, eval_prompts)}

        results[name] = train(
            model, task, config.train, eval_fn=eval_fn, options=options.stage(name)
        )

    tuned = _tune_kernel_baselines(config, tune_prompts)
    baseline_loss = {
        name: float(
            half_mse(
                jax.jit(jax.vmap(predict))(eval_prompts.x, eval_prompts.y, eval_prompts.x_q),
                eval_prompts.y_q,
            )
        )
        for name, predict in _baseline_predictors(tuned).items()
    }
    baseline_loss["zero"] = float(half_mse(jnp.zeros_like(eval_prompts.y_q), eval_prompts.y_q))

    # Predictions and sensitivities on a grid of queries, per task and per seed.
    grid_G = jnp.linspace(task.input_low, task.input_high, config.grid_points)
    sens_prompts = jax.tree.map(lambda a: a[: config.sensitivity_tasks], eval_prompts)
    sens_tokens = jax.vmap(prompt_tokens)(sens_prompts)

    model_grid = jax.jit(
        lambda params_S, tokens, name: _model_grid(models[name], params_S, tokens, grid_G),
        static_argnums=2,
    )
    grids = {name: model_grid(results[name].params, sens_tokens, name) for name in MODELS}
    _, oracle_sens = _explicit_grid(sine_oracle_predict, sens_prompts, grid_G)
    cos_lsa_gd = jax.vmap(metrics.sensitivity_cosine)(grids["mlp_lsa"][1], grids["mlp_gd"][1])
    cos_lsa_oracle = jax.vmap(metrics.sensitivity_cosine, in_axes=(0, None))(
        grids["mlp_lsa"][1], oracle_sens
    )
    cos_gd_oracle = jax.vmap(metrics.sensitivity_cosine, in_axes=(0, None))(
        grids["mlp_gd"][1], oracle_sens
    )
    pred_diff = jax.vmap(metrics.prediction_difference)(grids["mlp_lsa"][0], grids["mlp_gd"][0])

    # The learned kernel of MLP + GD (seed 0): k(x, x') = m(x)ᵀm(x') on the grid.
    mlp = MLPFeatures(config.embed_dim, config.hidden_size)
    gd_params = results["mlp_gd"].params["params"]
    features_GxF = mlp.apply(
        {"params": jax.tree.map(lambda a: a[0], gd_params["features"])}, grid_G[:, None]
    )
    kernel_GxG = (
        float(gd_params["eta"][0]) / task.n_context * feature_kernel(features_GxF, features_GxF)
    )

    plot_prompts = jax.tree.map(lambda a: a[: config.plot_tasks], sens_prompts)
    baseline_grids = {
        name: _explicit_grid(predict, plot_prompts, grid_G)[0]
        for name, predict in _baseline_predictors(tuned).items()
    }

    final = {name: results[name].eval_metrics["loss"][:, -1] for name in MODELS}
    gap = final["mlp_lsa"] / final["mlp_gd"] - 1.0
    per_seed = {
        "mlp_lsa_loss": final["mlp_lsa"],
        "mlp_gd_loss": final["mlp_gd"],
        "relative_gap_lsa_vs_gd": gap,
        "sensitivity_cosine_lsa_vs_gd": cos_lsa_gd,
        "sensitivity_cosine_lsa_vs_oracle": cos_lsa_oracle,
        "sensitivity_cosine_gd_vs_oracle": cos_gd_oracle,
        "prediction_difference_lsa_vs_gd": pred_diff,
        "mlp_gd_eta": gd_params["eta"],
    }
    per_seed = {k: np.asarray(v) for k, v in per_seed.items()}
    gap_ci = mean_ci(gap)
    summary = {
        "experiment": NAME,
        "config": config,
        "loss": "half-MSE, 0.5 * mean (y_hat - y)^2, on the held-out eval tasks",
        "sensitivity": "d(y_hat)/d(x_q) at grid_points queries per task; cosine per task, mean",
        "per_seed": per_seed,
        "seed_stats": {k: seed_stats(v) for k, v in per_seed.items()},
        "relative_gap_ci": gap_ci,
        # The criterion: trained MLP + LSA within 5% of meta-learned MLP + GD.
        "lsa_within_5_percent_of_gd": bool(abs(float(np.mean(gap))) <= 0.05),
        "baseline_loss": baseline_loss,
        "tuned_baselines": tuned,
        "runtime_s": time.time() - start,
    }
    arrays = {
        "eval_steps": results["mlp_lsa"].eval_steps,
        **{f"eval_loss_{name}": results[name].eval_metrics["loss"] for name in MODELS},
        **{f"train_loss_{name}": results[name].train_loss for name in MODELS},
        "grid": grid_G,
        "kernel_mlp_gd": kernel_GxG,  # (G, G), seed 0, η/N included
        "plot_x": plot_prompts.x[..., 0],  # (P, N)
        "plot_y": plot_prompts.y[..., 0],
        "plot_params": plot_prompts.w[:, 0],  # (P, 2): a, ρ
        **{
            f"plot_pred_{name}": grids[name][0][:, : config.plot_tasks] for name in MODELS
        },  # (S, P, G)
        **{f"plot_pred_{name}": v for name, v in baseline_grids.items()},  # (P, G)
    }
    return Results(summary, jax.tree.map(np.asarray, arrays))


def _model_grid(model, params_S, tokens_BxTxE, grid_G):
    """(ŷ, ∂ŷ/∂x_q) of each seed's model over the grid, each (S, B, G)."""

    def per_seed(params):
        return jax.vmap(lambda t: grid_sensitivities(model, params, t, grid_G))(tokens_BxTxE)

    return jax.vmap(per_seed)(params_S)


LABELS = {
    "mlp_lsa": "MLP + LSA (trained)",
    "mlp_gd": "MLP + GD (meta-learned)",
    "rbf_smoothing": "RBF smoothing (1 functional GD step)",
    "rbf_ridge": "RBF kernel ridge",
    "sine_oracle": "least squares on (sin x, cos x)",
    "zero": "zero predictor",
}


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figure from saved results."""
    s, a = results.summary, results.arrays
    base = s["baseline_loss"]
    fig = plt.figure(figsize=(16, 8))
    grid = fig.add_gridspec(2, 3, hspace=0.35, wspace=0.3)
    steps = a["eval_steps"]

    ax = fig.add_subplot(grid[0, 0])
    for i, name in enumerate(MODELS):
        seed_band(ax, steps, a[f"eval_loss_{name}"], LABELS[name], color=f"C{i}")
    for name, style in (("rbf_smoothing", ":"), ("rbf_ridge", "--")):
        ax.axhline(base[name], color="k", ls=style, label=f"{LABELS[name]} {base[name]:.3f}")
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="half-MSE", title="Loss on held-out sine tasks")
    ax.legend(fontsize=7)

    ax = fig.add_subplot(grid[0, 1])
    names = [*MODELS, "rbf_smoothing", "rbf_ridge", "sine_oracle", "zero"]
    stats = s["seed_stats"]
    means = [stats[f"{n}_loss"]["mean"] if n in MODELS else base[n] for n in names]
    errs = [stats[f"{n}_loss"]["std"] if n in MODELS else 0.0 for n in names]
    ax.barh(range(len(names)), means, xerr=errs, color=[f"C{i}" for i in range(len(names))])
    ax.set_yticks(range(len(names)), [LABELS[n] for n in names], fontsize=7)
    for i, value in enumerate(means):
        ax.text(value, i, f" {value:.3g}", va="center", fontsize=7)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set(xlabel="half-MSE (mean ± std over seeds)", title="Final held-out loss")

    ax = fig.add_subplot(grid[0, 2])
    g = a["grid"]
    kernel = a["kernel_mlp_gd"]
    for j in (len(g) // 4, len(g) // 2, 3 * len(g) // 4):
        ax.plot(g, kernel[:, j], label=f"x' = {g[j]:.1f}")
    ax.set(xlabel="x", ylabel="(η/N) m(x)ᵀm(x')", title="Learned kernel of MLP + GD (seed 0)")
    ax.legend(fontsize=7)

    for p in range(min(3, a["plot_x"].shape[0])):
        ax = fig.add_subplot(grid[1, p])
        amp, phase = a["plot_params"][p]
        ax.plot(g, amp * np.sin(g + phase), "k", lw=2, alpha=0.4, label="true function")
        ax.plot(a["plot_x"][p], a["plot_y"][p], "ko", ms=4, label="context")
        for i, name in enumerate(MODELS):
            ax.plot(g, a[f"plot_pred_{name}"][0, p], color=f"C{i}", label=LABELS[name])
        ax.plot(g, a["plot_pred_rbf_ridge"][p], "C3--", label=LABELS["rbf_ridge"])
        ax.set(xlabel="x_q", ylabel="ŷ", title=f"Task a = {amp:.2f}, ρ = {phase:.2f}")
        if p == 0:
            ax.legend(fontsize=7)
    gap = s["seed_stats"]["relative_gap_lsa_vs_gd"]
    cos = s["seed_stats"]["sensitivity_cosine_lsa_vs_gd"]
    fig.suptitle(
        f"Sine regression, {len(a['eval_loss_mlp_lsa'])} seeds: MLP+LSA / MLP+GD − 1 = "
        f"{gap['mean']:+.1%} ± {gap['std']:.1%}; sensitivity cosine {cos['mean']:.3f} ± "
        f"{cos['std']:.3f}"
    )
    return save_figure(fig, out_dir, NAME)


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
