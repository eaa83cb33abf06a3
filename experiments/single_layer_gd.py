"""Does one trained LSA layer implement one step of gradient descent? (von Oswald et al. 2022)

    icl-toy run single_layer_gd           # or python -m experiments.single_layer_gd
    icl-toy run single_layer_gd --quick   # shrunk config, ~15 s

Full: 5 seeds x 5000 steps, ~1.5 min on 2 CPU cores.

Trains one linear self-attention layer on the von Oswald preset (d = N = 10, x ~ U(-0.5, 0.5),
noiseless), 5 seeds vmapped, and compares it on the same 10,000 held-out tasks with the GD
construction at the closed-form best step η* = 200/33. Writes `single_layer_gd.{png,pdf,json,npz}`
to `figures/` (full) or `figures/quick/` (--quick): training loss vs GD(η*) with seed bands,
sensitivity cosine and model difference over training, loss against OOD input scale α for
trained, GD and interpolated models, and heatmaps of trained vs constructed W_KQ and W_PV
after β-rescaling. Losses are half-MSE; η has the 1/N inside.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.analysis import metrics
from icl_toy.analysis.stats import seed_stats
from icl_toy.core.constructions import gd_weights
from icl_toy.core.learners import line_search_eta, optimal_gd_eta
from icl_toy.core.losses import half_mse
from icl_toy.core.models import attention_products, lsa_query_output, readout
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch, von_oswald_preset
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import heatmap, save_figure, seed_band
from icl_toy.runs.results import Results, git_commit
from icl_toy.training.train import (
    ModelConfig,
    RunOptions,
    TrainConfig,
    batch_predict,
    make_model,
    train,
)

NAME = "single_layer_gd"
RUNTIME = {"full": "~1.5 min", "quick": "~15 s"}  # on a 2-core CPU


@dataclasses.dataclass(frozen=True)
class Config:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval_tasks: int = 10_000  # held-out tasks shared by every metric and every seed
    line_search_tasks: int = 10_000  # held-out tasks for the line search of η
    # Half-widths α of the OOD input law U(-α, α); the preset trains at α = 0.5.
    ood_scales: tuple[float, ...] = tuple(np.round(np.arange(0.5, 2.0001, 0.1), 2).tolist())
    eval_seed: int = 10_000  # root key of eval, OOD and line-search tasks (not a training seed)

    def __post_init__(self):
        if self.model.num_layers != 1 or self.model.num_heads != 1 or self.task.d_y != 1:
            raise ValueError(
                "single_layer_gd studies one layer, one head and d_y = 1; got "
                f"num_layers={self.model.num_layers}, num_heads="
                f"{self.model.num_heads}, d_y={self.task.d_y}"
            )
        if self.eval_tasks < 1 or self.line_search_tasks < 1:
            raise ValueError("eval_tasks and line_search_tasks must be >= 1")
        if not self.ood_scales or min(self.ood_scales) <= 0:
            raise ValueError(f"ood_scales must be positive half-widths, got {self.ood_scales}")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        train=TrainConfig(steps=600, batch_size=1024, eval_every=50, num_seeds=2),
        eval_tasks=2000,
        line_search_tasks=2000,
        ood_scales=(0.5, 1.0, 1.5, 2.0),
    )


def _predict_from_products(w_kq_HxExE, w_pv_HxExE, tokens_BxTxE):
    """ŷ (B, 1) of a one-layer LSA given its products directly (used for interpolation)."""

    def one(tokens_TxE):
        return readout(lsa_query_output(w_kq_HxExE[None], w_pv_HxExE[None], tokens_TxE)[None], 1)

    return jax.vmap(one)(tokens_BxTxE)


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train, evaluate against GD(η*) on held-out tasks, and return the results to save."""
    start = time.time()
    task, d, n = config.task, config.task.d, config.task.n_context
    model = make_model(task, config.model)
    key_eval, key_line_search, key_ood = jax.random.split(jax.random.key(config.eval_seed), 3)

    eta_star = optimal_gd_eta(task)
    eta_ls, _ = line_search_eta(task, key=key_line_search, num_tasks=config.line_search_tasks)

    eval_prompts = sample_batch(key_eval, task, config.eval_tasks)
    eval_tokens = jax.vmap(prompt_tokens)(eval_prompts)
    gd_params = gd_weights(model, eta_star, n)
    gd_kq, gd_pv = (m[0] for m in attention_products(gd_params["params"]))

    def sensitivities(params, tokens):
        return jax.vmap(metrics.query_sensitivity, in_axes=(None, 0, None))(
            lambda t: model.apply(params, t), tokens, d
        )

    gd_pred = batch_predict(model, gd_params, eval_prompts)
    gd_sens = sensitivities(gd_params, eval_tokens)
    gd_loss = half_mse(gd_pred, eval_prompts.y_q)
    gd_loss_ls = half_mse(
        batch_predict(model, gd_weights(model, eta_ls, n), eval_prompts), eval_prompts.y_q
    )

    def predictions(params, prompts, tokens):
        """ŷ of the trained layer and of its midpoint with the construction, each (B, Y)."""
        w_kq, w_pv = (m[0] for m in attention_products(params["params"]))
        interp = metrics.interpolated_products((w_kq, w_pv), (gd_kq, gd_pv), d)
        return batch_predict(model, params, prompts), _predict_from_products(*interp, tokens)

    def eval_fn(params):
        pred, interp_pred = predictions(params, eval_prompts, eval_tokens)
        sens = sensitivities(params, eval_tokens)
        w_kq, w_pv = (m[0] for m in attention_products(params["params"]))
        return {
            "loss": half_mse(pred, eval_prompts.y_q),
            "prediction_difference": metrics.prediction_difference(pred, gd_pred),
            "sensitivity_cosine": metrics.sensitivity_cosine(sens, gd_sens),
            "model_difference": metrics.model_difference(sens, gd_sens),
            "implied_eta": metrics.implied_eta(w_kq, w_pv, d, n),
            "interpolated_loss": half_mse(interp_pred, eval_prompts.y_q),
        }

    result = train(model, task, config.train, eval_fn=eval_fn, options=options)

    @jax.jit
    def ood_losses(prompts):
        """Half-MSE of each seed's trained and interpolated model, and of GD(η*)."""
        tokens = jax.vmap(prompt_tokens)(prompts)

        def per_seed(params):
            pred, interp_pred = predictions(params, prompts, tokens)
            return half_mse(pred, prompts.y_q), half_mse(interp_pred, prompts.y_q)

        trained, interpolated = jax.vmap(per_seed)(result.params)
        gd = half_mse(batch_predict(model, gd_params, prompts), prompts.y_q)
        return trained, interpolated, gd

    # Loss under input scaling: the same draws of W for every α, inputs from U(-α, α).
    ood = {"trained": [], "interpolated": [], "gd": []}
    for alpha in config.ood_scales:
        shifted = dataclasses.replace(task, input_low=-alpha, input_high=alpha)
        for name, value in zip(
            ood, ood_losses(sample_batch(key_ood, shifted, config.eval_tasks)), strict=True
        ):
            ood[name].append(value)

    w_kq_S, w_pv_S = (m[:, 0] for m in attention_products(result.params["params"]))
    rescaled_kq, rescaled_pv, beta = jax.vmap(metrics.beta_rescale, in_axes=(0, 0, None))(
        w_kq_S, w_pv_S, d
    )
    final = {name: values[:, -1] for name, values in result.eval_metrics.items()}
    per_seed = {
        "trained_loss": final["loss"],
        "sensitivity_cosine": final["sensitivity_cosine"],
        "model_difference": final["model_difference"],
        "prediction_difference": final["prediction_difference"],
        "implied_eta": final["implied_eta"],
        "interpolated_loss": final["interpolated_loss"],
        "beta": beta[:, 0],
    }
    gd_loss = float(gd_loss)
    summary = {
        "experiment": NAME,
        "config": config,
        "git_commit": git_commit(),
        "device": str(jax.devices()[0]),
        "loss": "half-MSE, 0.5 * mean (y_hat - y)^2, on the held-out eval tasks",
        "eta_convention": "1/N inside eta: one GD step from 0 predicts eta * x_q^T X^T y / N",
        "eta_star": eta_star,
        "eta_line_search": eta_ls,
        "gd_loss": gd_loss,
        "gd_loss_line_search": float(gd_loss_ls),
        "per_seed": per_seed,
        "seed_stats": {k: seed_stats(v) for k, v in per_seed.items()},
        "relative_gap_to_gd": seed_stats(np.asarray(final["loss"]) / gd_loss - 1.0),
        "implied_eta_relative_error": seed_stats(np.asarray(final["implied_eta"]) / eta_star - 1),
        "runtime_s": time.time() - start,
    }
    arrays = {
        "eval_steps": result.eval_steps,
        "train_loss": result.train_loss,
        **{f"eval_{k}": v for k, v in result.eval_metrics.items()},
        "ood_scales": np.asarray(config.ood_scales),
        "ood_trained": np.stack(ood["trained"], axis=1),  # (S, A)
        "ood_interpolated": np.stack(ood["interpolated"], axis=1),  # (S, A)
        "ood_gd": np.asarray(ood["gd"]),  # (A,)
        "w_kq_trained": rescaled_kq[:, 0],  # (S, E, E), β-rescaled
        "w_pv_trained": rescaled_pv[:, 0],
        "w_kq_gd": gd_kq[0],  # (E, E)
        "w_pv_gd": gd_pv[0],
    }
    return Results(summary, jax.tree.map(np.asarray, arrays))


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figure from saved results."""
    s, a = results.summary, results.arrays
    gd_loss, eta_star = s["gd_loss"], s["eta_star"]
    fig = plt.figure(figsize=(16, 7.5))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.0, 1.0], hspace=0.35, wspace=0.5)
    steps = a["eval_steps"]

    ax = fig.add_subplot(grid[0, 0])
    seed_band(ax, steps, a["eval_loss"], "trained LSA (eval)")
    ax.axhline(gd_loss, color="k", ls="--", label=f"GD(η*={eta_star:.3f}) {gd_loss:.4f}")
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="half-MSE", title="Loss on held-out tasks")
    ax.legend(fontsize=8)

    ax = fig.add_subplot(grid[0, 1])
    seed_band(ax, steps, a["eval_sensitivity_cosine"], "sensitivity cosine", color="C2")
    ax.set(xlabel="training step", ylabel="cos(∂ŷ/∂x_q, GD)", title="Alignment with GD")
    ax.set_ylim(min(0.0, float(np.nanmin(a["eval_sensitivity_cosine"]))), 1.02)
    twin = ax.twinx()
    seed_band(twin, steps, a["eval_model_difference"], "model difference", color="C3")
    twin.set_ylabel("||Δ ∂ŷ/∂x_q||", color="C3")
    ax.legend(handles=ax.get_lines() + twin.get_lines(), fontsize=8, loc="center right")

    ax = fig.add_subplot(grid[0, 2])
    seed_band(ax, steps, a["eval_implied_eta"], "implied η of trained layer", color="C4")
    ax.axhline(eta_star, color="k", ls="--", label="η* (closed form)")
    ax.set(xlabel="training step", ylabel="η", title="Implied step size tr(Γ)/d")
    ax.legend(fontsize=8)

    ax = fig.add_subplot(grid[0, 3])
    alphas = a["ood_scales"]
    seed_band(ax, alphas, a["ood_trained"], "trained", marker="o", ms=3)
    ax.plot(alphas, a["ood_gd"], "k--", label="GD(η*)")
    seed_band(ax, alphas, a["ood_interpolated"], "interpolated", ls=":", color="C1")
    ax.axvline(s["config"]["task"]["input_high"], color="gray", lw=0.8)
    ax.set_yscale("log")
    ax.set(xlabel="input half-width α, x ~ U(−α, α)", ylabel="half-MSE", title="OOD input scale")
    ax.legend(fontsize=8)

    panels = [
        (a["w_kq_trained"][0], "trained W_KQ / β (seed 0)"),
        (a["w_kq_gd"], "GD construction W_KQ"),
        (a["w_pv_trained"][0], "trained β·W_PV (seed 0)"),
        (a["w_pv_gd"], "GD construction W_PV"),
    ]
    for i, (matrix, title) in enumerate(panels):
        vmax = float(np.nanmax(np.abs(panels[i - i % 2][0])))
        heatmap(fig.add_subplot(grid[1, i]), matrix, title, vmax=vmax if i % 2 else None)
    gap = s["relative_gap_to_gd"]
    fig.suptitle(
        f"One trained LSA layer vs one GD step: {len(a['eval_loss'])} seeds, trained/GD − 1 = "
        f"{gap['mean']:+.2%} ± {gap['std']:.2%}, sensitivity cosine "
        f"{s['seed_stats']['sensitivity_cosine']['mean']:.4f}"
    )
    return save_figure(fig, out_dir, NAME)


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
