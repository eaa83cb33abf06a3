"""Standard tokens: does a softmax layer learn to copy y_i to x_i for a GD layer? (von Oswald 2022)

    icl-toy run standard_tokens           # or python -m experiments.standard_tokens
    icl-toy run standard_tokens --quick   # shrunk config, ~45 s (compile-bound)

Full: 10 seeds x 4000 steps, ~5 min on 2 CPU cores.

docs/theory.md §1, Proposition 3. On the von Oswald preset (d = N = 10, x ~ U(-0.5, 0.5), noiseless)
prompts arrive as 2N + 1 alternating tokens x_1, y_1, …, x_N, y_N, x_q with one-hot
positions (`icl_toy.core.models.standard_tokens`). Trains the 2-layer model, softmax attention then
LSA, S seeds vmapped, and compares it on the same held-out tasks with one GD step at the
closed-form η* = 200/33, two GD steps at a line-searched η, and the closed-form copy + GD
construction (copy temperature τ). Tracks during training the held-out loss, the copy score
(the mean attention mass each x-token puts on its own y-token; 1 for the construction) and
the sensitivity cosine with GD. Writes `standard_tokens.{png,pdf,json,npz}`: training curves,
copy score, and the first layer's attention maps (trained and constructed). Losses are
half-MSE; η has the 1/N inside.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.analysis import metrics
from icl_toy.analysis.seed_summaries import final_eval_metrics, per_seed_summary, training_arrays
from icl_toy.analysis.stats import mean_ci
from icl_toy.core.constructions import copy_gd_weights
from icl_toy.core.learners import gd, line_search_eta, optimal_gd_eta
from icl_toy.core.losses import ETA_NOTE, HALF_MSE_NOTE, half_mse
from icl_toy.core.models import ModelConfig, batch_attention, copy_score, make_model
from icl_toy.core.predictors import batch_half_mse
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch, von_oswald_preset
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import save_figure, seed_lines
from icl_toy.runs.results import Results
from icl_toy.training.train import RunOptions, TrainConfig, batch_predict, train

NAME = "standard_tokens"
RUNTIME = {"full": "~5 min", "quick": "~45 s"}  # on a 2-core CPU


@dataclasses.dataclass(frozen=True)
class Config:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    num_heads: int = 1  # heads of the softmax (copy) layer
    # Constant 2e-3 at batch 256: some seeds leave the initial plateau late or not at all (one
    # of 3 never did in 4000 steps), so 10 seeds measure the fraction that leaves it.
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=4000, batch_size=256, learning_rate=2e-3, eval_every=100, num_seeds=10
        )
    )
    temperature: float = 30.0  # τ of the constructed copy layer; the leak is <= 2N e^{-τ}
    eval_tasks: int = 2000  # held-out tasks for losses, sensitivities and the line search
    attention_tasks: int = 200  # held-out tasks whose attention gives the copy score and maps
    eval_seed: int = 10_000  # root key of the eval and line-search tasks (not a training seed)

    def __post_init__(self):
        if self.task.d_y != 1:
            raise ValueError(f"standard_tokens studies d_y = 1, got {self.task.d_y}")
        if self.num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {self.num_heads}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.eval_tasks < 1 or not 1 <= self.attention_tasks <= self.eval_tasks:
            raise ValueError("need eval_tasks >= 1 and 1 <= attention_tasks <= eval_tasks")
        if self.train.num_seeds < 2:
            raise ValueError("report over >= 2 seeds: set train.num_seeds >= 2")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        train=TrainConfig(
            steps=300, batch_size=128, learning_rate=3e-3, eval_every=50, num_seeds=2
        ),
        eval_tasks=500,
        attention_tasks=50,
    )


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train the softmax → LSA model and compare it with GD and the copy + GD construction."""
    start = time.time()
    task, n, d = config.task, config.task.n_context, config.task.d
    model = make_model(task, ModelConfig(kind="standard_tokens", num_heads=config.num_heads))
    key_eval, key_line_search = jax.random.split(jax.random.key(config.eval_seed))
    eval_prompts = sample_batch(key_eval, task, config.eval_tasks)
    eval_tokens = jax.vmap(prompt_tokens)(eval_prompts)
    attention_tokens = eval_tokens[: config.attention_tasks]

    eta_star = optimal_gd_eta(task)
    eta_two_steps, _ = line_search_eta(
        task, key=key_line_search, num_tasks=config.eval_tasks, num_steps=2
    )
    gd_pred = jax.vmap(gd(jnp.asarray([eta_star])))(eval_prompts)
    gd_loss = float(half_mse(gd_pred, eval_prompts.y_q))
    gd2_loss = float(batch_half_mse(gd(jnp.full(2, eta_two_steps)), eval_prompts))

    def gd_direction(prompt):
        predict = gd(jnp.asarray([eta_star]))
        return jax.jacrev(lambda x_q: predict(prompt._replace(x_q=x_q)))(prompt.x_q)

    # GD's sensitivity ∂ŷ/∂x_q is its weight W = η Σ_i y_i x_iᵀ / N, the same at every query.
    gd_sens = jax.vmap(gd_direction)(eval_prompts)

    def evaluate(params):
        pred = batch_predict(model, params, eval_prompts)
        attention = batch_attention(model, params, attention_tokens)  # (B, H, S, S)
        return {
            "loss": half_mse(pred, eval_prompts.y_q),
            "copy_score": jnp.max(copy_score(jnp.mean(attention, axis=0), n)),
            "prediction_difference": metrics.prediction_difference(pred, gd_pred),
            "sensitivity_cosine": metrics.sensitivity_cosine(
                metrics.model_sensitivities(model, params, eval_tokens, d), gd_sens
            ),
        }

    construction = copy_gd_weights(model, eta_star, config.temperature)
    constructed = jax.tree.map(float, jax.jit(evaluate)(construction))
    constructed_max_error = float(
        jnp.max(jnp.abs(batch_predict(model, construction, eval_prompts) - gd_pred))
    )

    result = train(model, task, config.train, eval_fn=evaluate, options=options)

    @jax.jit
    def mean_attention(params_S):
        """Seed-wise mean attention over the attention tasks, (S, H, S, S)."""
        return jax.vmap(lambda p: jnp.mean(batch_attention(model, p, attention_tokens), axis=0))(
            params_S
        )

    attention_trained = mean_attention(result.params)
    attention_constructed = jnp.mean(batch_attention(model, construction, attention_tokens), axis=0)
    final = final_eval_metrics(result)
    gap = final["loss"] / gd_loss - 1.0
    per_seed = {"trained_loss": final.pop("loss"), "relative_gap_to_gd": gap}
    per_seed |= {k: final[k] for k in ("copy_score", "sensitivity_cosine", "prediction_difference")}
    summary = {
        "experiment": NAME,
        "config": config,
        "loss": HALF_MSE_NOTE,
        "eta_convention": ETA_NOTE,
        "eta_star": eta_star,
        "eta_two_steps": eta_two_steps,
        "gd_loss": gd_loss,
        "gd2_loss": gd2_loss,
        "construction": {
            "temperature": config.temperature,
            "loss": constructed["loss"],
            "relative_gap_to_gd": constructed["loss"] / gd_loss - 1.0,
            "copy_score": constructed["copy_score"],
            "max_abs_error_vs_gd": constructed_max_error,
        },
        **per_seed_summary(per_seed),
        "relative_gap_ci": mean_ci(gap),
        "runtime_s": time.time() - start,
    }
    arrays = {
        **training_arrays(result),
        "attention_trained": attention_trained,  # (S, H, S, S), mean over attention tasks
        "attention_constructed": attention_constructed,  # (H, S, S)
    }
    return Results(summary, jax.tree.map(np.asarray, arrays))


def _token_labels(n: int) -> list[str]:
    return [f"{kind}{i + 1}" for i in range(n) for kind in ("x", "y")] + ["xq"]


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figure from saved results."""
    s, a = results.summary, results.arrays
    fig = plt.figure(figsize=(17, 4.5))
    grid = fig.add_gridspec(1, 4, wspace=0.35)
    steps = a["eval_steps"]
    construction = s["construction"]

    # One line per seed: seeds that stay on the initial plateau and seeds that leave it
    # would make a mean with a min-max band misleading.
    ax = fig.add_subplot(grid[0, 0])
    seed_lines(ax, steps, a["eval_loss"], "softmax → LSA, one line per seed", color="C0", alpha=0.8)
    ax.axhline(s["gd_loss"], color="k", ls="--", label=f"1 GD step (η*) {s['gd_loss']:.4f}")
    ax.axhline(s["gd2_loss"], color="k", ls=":", label=f"2 GD steps {s['gd2_loss']:.4f}")
    ax.axhline(
        construction["loss"],
        color="C3",
        ls="-.",
        label=f"copy + GD (τ = {construction['temperature']:g}) {construction['loss']:.4f}",
    )
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="half-MSE", title="Loss on held-out tasks")
    ax.legend(fontsize=7)

    ax = fig.add_subplot(grid[0, 1])
    seed_lines(ax, steps, a["eval_copy_score"], "copy score", color="C2")
    seed_lines(
        ax, steps, a["eval_sensitivity_cosine"], "sensitivity cosine with GD", color="C4", ls="--"
    )
    n = s["config"]["task"]["n_context"]
    ax.axhline(1.0 / (2 * n + 1), color="gray", lw=0.8, label="uniform attention")
    ax.set_ylim(0, 1.02)
    ax.set(xlabel="training step", title="Copy score and alignment with GD")
    ax.legend(fontsize=7)

    labels = _token_labels(n)
    best = int(np.argmin(a["eval_loss"][:, -1]))
    for i, (matrix, title) in enumerate(
        (
            (a["attention_trained"][best, 0], f"Layer-1 attention, trained (best seed, {best})"),
            (a["attention_constructed"][0], f"Copy layer (τ = {construction['temperature']:g})"),
        )
    ):
        ax = fig.add_subplot(grid[0, 2 + i])
        image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, fontsize=5, rotation=90)
        ax.set_yticks(range(len(labels)), labels, fontsize=5)
        ax.set(xlabel="key token", ylabel="attending token", title=title)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    gaps = ", ".join(f"{g:+.1%}" for g in s["per_seed"]["relative_gap_to_gd"])
    copy = s["seed_stats"]["copy_score"]
    fig.suptitle(
        f"Standard tokens, {len(a['eval_loss'])} seeds: trained / GD − 1 = {gaps}; copy score "
        f"{copy['mean']:.3f} ± {copy['std']:.3f}; copy + GD / GD − 1 = "
        f"{construction['relative_gap_to_gd']:+.1e}"
    )
    return save_figure(fig, out_dir, NAME)


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
