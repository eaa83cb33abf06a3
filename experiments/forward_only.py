"""Learning with forward passes alone: ICL as weight updates, and training an LSA without backprop

    icl-toy run forward_only           # or python -m experiments.forward_only
    icl-toy run forward_only --quick   # shrunk config, ~1 min (9 compiled programs)

Full: 3 methods x 10 seeds x 30,000 steps (batch 256, warmup then cosine decay) plus a
50-chunk stream: ~5 min on 2 CPU cores (288 s measured).

Two studies on the von Oswald preset (d = N = 10, x ~ U(-0.5, 0.5), noiseless; docs/theory.md §9):
1. Training the transformer without backprop. One LSA layer is trained with Adam (same init,
   same batches, 10 seeds vmapped) from three gradients: backprop, the forward gradient
   (∇L·v) v from one `jax.jvp` per step, and two-point SPSA (L(θ+εv) − L(θ−εv))/(2ε) v, with
   v ~ N(0, I) over all 484 parameters (`icl_toy.training.forward_only`). Each method uses its best
   peak learning rate of {1e-3, 3e-3, 1e-2, 3e-2} from a 6000-step, 2-seed scan (see the
   config).
   Held-out half-MSE against steps and against wall-clock seconds (steps divided by the
   steps/s of each compiled method, timed after a warm-up compile).
2. ICL baked into weights. Each of `stream_tasks` fixed teachers W* streams its (x, W* x) in
   chunks of N = 10; each chunk is a prompt with residual labels y − W x, and the in-context
   learner's implicit update ΔW_ICL (`icl_toy.analysis.duality`) is added to the running
   linear model W (`forward_only.stream_icl_fit`). Learners: the GD construction at η*
   (exactly minibatch SGD at lr η*), and the LSAs trained in study 1. Against backprop
   minibatch SGD on the same chunks at several learning rates.
   Population half-MSE ½ s ||W − W*||² against examples seen.
Writes `forward_only.{png,pdf}` (main figure: (a) held-out loss of every seed run of the
three methods, (b) each run's final gap to GD(η*) in percent, (c) the stream's population loss
for the construction, SGD at η* and the trained LSAs; runs the convergence record does not
call converged are dotted and hollow, and the legend gives each method's converged count),
`forward_only_supplement.{png,pdf}` (seed bands of loss against steps and wall-clock, the
stream against SGD at every learning rate, each run's change over its last 10% against the
tolerance, steps/s, and final stream loss against the SGD learning rate) and
`forward_only.{json,npz}` to `figures/` (full) or `figures/quick/` (--quick).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from icl_toy.analysis import duality
from icl_toy.analysis.stats import seed_stats
from icl_toy.core.constructions import gd_weights
from icl_toy.core.learners import gd, optimal_gd_eta
from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.predictors import batch_half_mse
from icl_toy.core.tasks import TaskConfig, sample_batch, von_oswald_preset
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import paper_figure, save_figures, seed_band
from icl_toy.runs.results import Results
from icl_toy.training import forward_only, timing
from icl_toy.training.train import (
    RunOptions,
    TrainConfig,
    batch_loss,
    require_single_layer,
    seed_params,
    train,
)

NAME = "forward_only"
RUNTIME = {"full": "~5 min", "quick": "~1 min"}  # on a 2-core CPU
METHODS = ("backprop", "forward_gradient", "spsa")


@dataclasses.dataclass(frozen=True)
class Config:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # Shared by all methods except the peak learning rate: the recipe (5% warmup, then
    # cosine decay to 1% of the peak, held over the last 10% so the convergence record reads
    # learning at a fixed rate), batch 256 (not the paper's 2048), 10 seeds. At a constant rate
    # backprop jittered 2.4% above GD(η*) after 10,000 steps; decayed, every peak rate of
    # {1e-3, 3e-3, 1e-2, 3e-2} ends within 0.4% of it in 6000 steps. The estimators are
    # noisier per step (one random direction of 484) and get 30,000 steps for all.
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=30_000,
            batch_size=256,
            eval_every=500,
            num_seeds=10,
            learning_rate=1e-2,
            schedule="warmup_cosine",
            warmup_steps=1500,
            final_lr_fraction=0.01,
            hold_steps=3000,
        )
    )
    # Best peak rate of {1e-3, 3e-3, 1e-2, 3e-2} for each estimator in a 6000-step, 2-seed
    # scan under the same recipe (final held-out half-MSE: forward gradient 0.246 / 0.305,
    # SPSA 0.251 / 0.293 at 3e-3; at 1e-2 both stay near 0.40).
    forward_gradient_learning_rate: float = 3e-3
    spsa_learning_rate: float = 3e-3
    num_directions: int = 1  # M random directions averaged per step by both estimators
    spsa_epsilon: float = 1e-3  # SPSA perturbation size ε
    eval_tasks: int = 1000  # held-out prompts for the learning curves
    timing_steps: int = 1000  # steps timed (after a warm-up compile) for steps/s
    timing_repeats: int = 3  # steps/s is the best of this many timed calls (shared machine)
    stream_chunks: int = 50  # C chunks of N examples from each fixed teacher
    stream_tasks: int = 64  # independent teachers W*, averaged
    # Backprop minibatch SGD baselines on the stream; η* = 200/33 ≈ 6.06 is among them.
    sgd_learning_rates: tuple[float, ...] = (2.0, 4.0, 200 / 33, 8.0, 10.0)
    eval_seed: int = 10_000  # root key of eval prompts and of the streams

    def __post_init__(self):
        require_single_layer(NAME, self.task, self.model)
        for name in ("forward_gradient_learning_rate", "spsa_learning_rate", "spsa_epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Config.{name} must be > 0, got {getattr(self, name)}")
        counts = ("num_directions", "eval_tasks", "timing_steps", "timing_repeats", "stream_chunks")
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.stream_tasks < 1 or not self.sgd_learning_rates:
            raise ValueError("stream_tasks must be >= 1 and sgd_learning_rates non-empty")
        if min(self.sgd_learning_rates) <= 0:
            raise ValueError(f"sgd_learning_rates must be > 0, got {self.sgd_learning_rates}")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        train=TrainConfig(
            steps=400, batch_size=128, eval_every=100, num_seeds=2, learning_rate=1e-2
        ),
        eval_tasks=256,
        timing_steps=100,
        timing_repeats=1,
        stream_chunks=10,
        stream_tasks=8,
        sgd_learning_rates=(2.0, 200 / 33),
    )


def _methods(config: Config) -> dict:
    """method -> (gradient estimator, learning rate); None is backprop."""
    return {
        "backprop": (None, config.train.learning_rate),
        "forward_gradient": (
            forward_only.forward_gradient(config.num_directions),
            config.forward_gradient_learning_rate,
        ),
        "spsa": (
            forward_only.spsa_gradient(config.spsa_epsilon, config.num_directions),
            config.spsa_learning_rate,
        ),
    }


def stream_curves(config: Config, model, learners: dict) -> dict:
    """Population half-MSE (C + 1,) averaged over teachers, for ICL learners and SGD."""
    key = jax.random.fold_in(jax.random.key(config.eval_seed), 1)
    x, y, teachers = forward_only.stream_chunks(
        key, config.task, config.stream_tasks, config.stream_chunks
    )
    w0 = jnp.zeros((config.task.d_y, config.task.d))

    @jax.jit
    def icl_curve(params):
        delta_w = duality.residual_update(lambda t: model.apply(params, t))
        ws = jax.vmap(lambda x, y: forward_only.stream_icl_fit(delta_w, x, y, w0))(x, y)
        return forward_only.mean_population_curve(ws, teachers, config.task)

    @jax.jit
    def sgd_curve(lr):
        ws = jax.vmap(forward_only.stream_sgd_fit, in_axes=(0, 0, None, None))(x, y, w0, lr)
        return forward_only.mean_population_curve(ws, teachers, config.task)

    out = {name: np.asarray(icl_curve(params)) for name, params in learners.items()}
    out["sgd"] = np.stack([np.asarray(sgd_curve(lr)) for lr in config.sgd_learning_rates])
    return out


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train with three gradients, time them, and stream ICL updates into a linear model."""
    start = time.time()
    task = config.task
    model = make_model(task, config.model)
    eta = optimal_gd_eta(task)
    eval_prompts = sample_batch(jax.random.key(config.eval_seed), task, config.eval_tasks)
    gd_loss = float(batch_half_mse(gd(jnp.asarray([eta])), eval_prompts))

    def eval_fn(params):
        return {"loss": batch_loss(model, params, eval_prompts)}

    curves, rates, finals = {}, {}, {}
    for method, (gradient, lr) in _methods(config).items():
        cfg = dataclasses.replace(config.train, learning_rate=lr)
        stage = None if options is None else options.stage(method)  # own checkpoints
        result = train(model, task, cfg, eval_fn=eval_fn, options=stage, gradient=gradient)
        curves[method] = result.eval_metrics["loss"]  # (S, E)
        finals[method] = result.params
        rates[method] = timing.steps_per_second(
            model, task, cfg, gradient, config.timing_steps, config.timing_repeats
        )

    learners = {"construction": gd_weights(model, eta, task.n_context)}
    for method in METHODS:
        for s in range(config.train.num_seeds):
            learners[f"{method}_seed{s}"] = seed_params(finals[method], s)
    stream = stream_curves(config, model, learners)
    sgd_final = stream["sgd"][:, -1]
    best_sgd = int(np.argmin(sgd_final))
    stream_final = {
        method: [float(stream[f"{method}_seed{s}"][-1]) for s in range(config.train.num_seeds)]
        for method in METHODS
    }
    exact_sgd = [i for i, lr in enumerate(config.sgd_learning_rates) if np.isclose(lr, eta)]
    summary = {
        "experiment": NAME,
        "config": config,
        "loss": "half-MSE on held-out prompts (training); population half-MSE (stream)",
        "eta_star": eta,
        "gd_loss": gd_loss,
        "learning_rates": {m: lr for m, (_, lr) in _methods(config).items()},
        "steps_per_second": rates,  # all seeds together, no eval
        "final_loss": {m: seed_stats(curves[m][:, -1]) for m in METHODS},
        "final_loss_per_seed": {m: curves[m][:, -1] for m in METHODS},
        "final_relative_gap_to_gd": {
            m: seed_stats(curves[m][:, -1] / gd_loss - 1) for m in METHODS
        },
        "stream": {
            "examples_seen": config.stream_chunks * task.n_context,
            "initial_loss": float(stream["construction"][0]),
            "construction_icl_final": float(stream["construction"][-1]),
            "trained_icl_final": {m: seed_stats(np.asarray(v)) for m, v in stream_final.items()},
            "trained_icl_final_per_seed": stream_final,
            "sgd_final": dict(
                zip(map(str, config.sgd_learning_rates), sgd_final.tolist(), strict=True)
            ),
            "sgd_best_learning_rate": config.sgd_learning_rates[best_sgd],
            "construction_vs_sgd_eta_star_max_abs": (
                float(np.max(np.abs(stream["construction"] - stream["sgd"][exact_sgd[0]])))
                if exact_sgd
                else None
            ),
        },
        "runtime_s": time.time() - start,
    }
    arrays = {
        "eval_steps": result.eval_steps,
        **{f"loss_{m}": curves[m] for m in METHODS},
        "stream_examples": np.arange(config.stream_chunks + 1) * task.n_context,
        "stream_construction": stream["construction"],
        **{
            f"stream_{m}": np.stack([stream[f"{m}_seed{s}"] for s in range(config.train.num_seeds)])
            for m in METHODS
        },
        "stream_sgd": stream["sgd"],  # (len(sgd_learning_rates), C + 1)
        "sgd_learning_rates": np.asarray(config.sgd_learning_rates),
    }
    return Results(summary, arrays)


METHOD_NAMES = {"backprop": "backprop", "forward_gradient": "forward gradient", "spsa": "SPSA"}
COLORS = {"backprop": "C0", "forward_gradient": "C1", "spsa": "C2"}
# A seed run the convergence record does not call converged is drawn dotted and hollow:
# its numbers are where a budget ran out, not results.
CONVERGED_STYLE = {True: dict(ls="-", alpha=0.9), False: dict(ls=":", alpha=0.9)}


def figures(results: Results) -> dict[str, plt.Figure]:
    """The main figure (training curves, final gaps, the ICL stream) and the dashboard."""
    return {NAME: _main_figure(results), f"{NAME}_supplement": _dashboard(results)}


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figures from saved results."""
    return save_figures(figures, results, out_dir=out_dir)


def _converged(results: Results, method: str) -> list[bool]:
    """Per seed, whether the convergence record calls the method's run converged (a run
    without a record counts as not converged)."""
    num_seeds = results.summary["config"]["train"]["num_seeds"]
    record = results.summary.get("convergence", {}).get(method)
    if record is None:
        return [False] * num_seeds
    return [bool(seed["converged"]) for seed in record["per_seed"]]


def _method_label(results: Results, method: str) -> str:
    converged = _converged(results, method)
    return f"{METHOD_NAMES[method]} ({sum(converged)}/{len(converged)} converged)"


def _figure_key(fig, results: Results) -> None:
    """One legend above the panels: each method's colour with its converged count, GD(η*),
    and how converged and unconverged runs are drawn."""
    handles = [Line2D([], [], color=COLORS[m], marker="o") for m in METHODS]
    labels = [_method_label(results, m) for m in METHODS]
    handles += [
        Line2D([], [], color="k", ls="--", lw=0.9),
        Line2D([], [], color="0.4", marker="o", ms=5, **CONVERGED_STYLE[True]),
        Line2D([], [], color="0.4", marker="o", ms=5, mfc="none", **CONVERGED_STYLE[False]),
    ]
    labels += [r"GD($\eta^*$)", "converged run", "run not converged"]
    fig.legend(handles, labels, loc="outside upper center", ncols=3)


def _seed_curves(ax, results: Results, x, prefix: str) -> None:
    """Each method's seed runs as lines in its colour, styled by whether they converged."""
    a = results.arrays
    for method in METHODS:
        for curve, converged in zip(
            a[f"{prefix}{method}"], _converged(results, method), strict=True
        ):
            ax.plot(x, curve, color=COLORS[method], **CONVERGED_STYLE[converged])


def _main_figure(results: Results) -> plt.Figure:
    s, a = results.summary, results.arrays
    fig, (axes,) = paper_figure(3, height=2.9, gridspec_kw={"width_ratios": [1.15, 0.85, 1.15]})
    _figure_key(fig, results)

    ax = axes[0]
    _seed_curves(ax, results, a["eval_steps"], "loss_")
    ax.axhline(s["gd_loss"], color="k", ls="--", lw=0.9)
    ax.set(xlabel="training step", ylabel="held-out loss (half-MSE)")
    ax.set_title("(a) training one LSA layer")

    # The gap to one GD step per seed run, on a linear axis; hollow = not converged.
    ax = axes[1]
    for i, method in enumerate(METHODS):
        gaps = 100 * (np.asarray(s["final_loss_per_seed"][method]) / s["gd_loss"] - 1)
        jitter = i + np.linspace(-0.15, 0.15, gaps.size)
        for x, gap, converged in zip(jitter, gaps, _converged(results, method), strict=True):
            face = COLORS[method] if converged else "none"
            ax.plot(x, gap, "o", ms=5, color=COLORS[method], mfc=face)
    ax.axhline(0.0, color="k", ls="--", lw=0.9)
    ax.set_xticks(range(len(METHODS)), [METHOD_NAMES[m].replace(" ", "\n") for m in METHODS])
    ax.set(xlim=(-0.5, len(METHODS) - 0.5), ylabel=r"final loss / GD($\eta^*$) $-$ 1  (%)")
    ax.set_title("(b) final gap per seed run")

    ax = axes[2]
    x = a["stream_examples"]
    exact = np.flatnonzero(np.isclose(a["sgd_learning_rates"], s["eta_star"]))
    for i in exact:
        ax.plot(x, a["stream_sgd"][i], color="0.6", lw=3, label=r"SGD, lr $\eta^*$")
    ax.plot(x, a["stream_construction"], "k--", label=r"ICL of LSA = GD($\eta^*$)")
    _seed_curves(ax, results, x, "stream_")
    ax.plot([], [], color="0.4", label="ICL of trained LSAs")
    ax.set(yscale="log", xlabel="examples seen", ylabel="population half-MSE")
    ax.set_title("(c) ICL as weight updates")
    ax.legend(loc="lower left")
    return fig


def _dashboard(results: Results) -> plt.Figure:
    s, a = results.summary, results.arrays
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.8))
    for ax, seconds in ((axes[0, 0], False), (axes[0, 1], True)):
        for method in METHODS:
            rate, lr = s["steps_per_second"][method], s["learning_rates"][method]
            x = a["eval_steps"] / rate if seconds else a["eval_steps"]
            label = f"{_method_label(results, method)}, lr {lr:g}"
            seed_band(ax, x, a[f"loss_{method}"], label, color=COLORS[method])
        ax.axhline(s["gd_loss"], color="k", ls="--", label=r"GD($\eta^*$)")
        xlabel = "wall-clock seconds (compiled)" if seconds else "training step"
        # Linear: the curves span a factor of two; the headroom keeps the legend off them.
        ax.set(xlabel=xlabel, ylabel="held-out half-MSE", ylim=(0.19, 0.55))
        ax.set_title("loss against wall-clock" if seconds else "loss against steps")
        ax.legend(loc="upper right", fontsize=6.5)

    ax = axes[0, 2]
    x = a["stream_examples"]
    for i, lr in enumerate(a["sgd_learning_rates"]):
        shade = 0.75 - 0.5 * i / max(len(a["sgd_learning_rates"]) - 1, 1)
        ax.plot(x, a["stream_sgd"][i], color=str(shade), lw=0.9, label=f"backprop SGD, lr {lr:.3g}")
    ax.plot(x, a["stream_construction"], "k--", lw=1.6, label=r"ICL of LSA = GD($\eta^*$)")
    for method in METHODS:
        label = f"ICL, LSA by {METHOD_NAMES[method]}"
        seed_band(ax, x, a[f"stream_{method}"], label, color=COLORS[method])
    ax.set(yscale="log", xlabel="examples seen", ylabel="population half-MSE")
    ax.set_ylim(bottom=1e-24)  # room below the curves for the legend
    ax.set_title("ICL stream against backprop SGD")
    ax.legend(loc="lower left", ncols=2, fontsize=6.5)

    # Why runs are or are not converged: the change over the last 10% against its tolerance.
    ax = axes[1, 0]
    for i, method in enumerate(METHODS):
        record = s.get("convergence", {}).get(method, {"per_seed": []})
        for j, seed in enumerate(record["per_seed"]):
            face = COLORS[method] if seed["converged"] else "none"
            x = i + 0.12 * (j - (len(record["per_seed"]) - 1) / 2)
            ax.plot(x, 100 * seed["relative_change"], "o", ms=5, color=COLORS[method], mfc=face)
            ax.plot([x - 0.05, x + 0.05], [100 * seed["change_tolerance"]] * 2, color="k", lw=0.8)
            ax.plot([x - 0.05, x + 0.05], [-100 * seed["change_tolerance"]] * 2, color="k", lw=0.8)
    ax.plot([], [], color="k", lw=0.8, label="± tolerance")
    ax.plot([], [], "o", ms=5, color="0.4", label="converged")
    ax.plot([], [], "o", ms=5, color="0.4", mfc="none", label="not converged")
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xticks(range(len(METHODS)), [METHOD_NAMES[m] for m in METHODS])
    ax.set(ylabel="improvement over last 10% of steps (%)")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.4)  # room for the legend
    ax.set_title("convergence: still moving at the end?")
    ax.legend(loc="upper left", ncols=3)

    ax = axes[1, 1]
    rates = [s["steps_per_second"][m] for m in METHODS]
    ax.bar(range(len(METHODS)), rates, color=[COLORS[m] for m in METHODS])
    ax.set_xticks(range(len(METHODS)), [METHOD_NAMES[m] for m in METHODS])
    ax.set(ylabel="steps / s (all seeds, compiled)", title="speed per step")

    ax = axes[1, 2]
    sgd_final = np.asarray(list(s["stream"]["sgd_final"].values()), dtype=float)
    ax.plot(a["sgd_learning_rates"], sgd_final, "o-", color="0.4", label="backprop SGD")
    at_eta = np.isclose(a["sgd_learning_rates"], s["eta_star"])
    ax.plot(a["sgd_learning_rates"][at_eta], sgd_final[at_eta], "k*", ms=8, label=r"lr $\eta^*$")
    for method in METHODS:
        ax.axhline(
            s["stream"]["trained_icl_final"][method]["mean"],
            color=COLORS[method],
            label=f"ICL, LSA by {METHOD_NAMES[method]}",
        )
    ax.set(yscale="log", xlabel="SGD learning rate", ylabel="population half-MSE")
    ax.set_title(f"after {s['stream']['examples_seen']} examples (ICL: seed means)")
    ax.legend(loc="center", fontsize=6.5)
    return fig


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
