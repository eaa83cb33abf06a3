"""How close is in-context learning to fine-tuning? The dual form on a toy (Dai et al. 2022)

    icl-toy run icl_vs_finetuning           # or python -m experiments.icl_vs_finetuning
    icl-toy run icl_vs_finetuning --quick   # shrunk config, ~30 s

Full: 10 seeds x 5000 steps of training, then the comparison: about 2 min on 2 CPU cores.

Trains one linear self-attention layer on the von Oswald preset (d = N = 10, x ~ U(-0.5, 0.5),
noiseless; 10 seeds vmapped) and reads off, for each of 2000 held-out prompts, the implicit
weight update ΔW_ICL = dŷ/dx_q − W0 (W0 = 0; `icl_toy.analysis.duality`: an LSA's ŷ is
exactly linear in x_q, so this is the model it applies). It is compared with fine-tuning a
linear model on the same context from W0: k full-batch GD steps at η* = 200/33 (ΔW_FT), and
Dai's baseline of one SGD epoch in context order.
The GD construction at η* is measured the same way; for it
ΔW_ICL = ΔW_FT(k = 1) exactly, and a float64 check of that is stored (`construction_float64`).
Reports per model the ΔW cosine, norm ratio ||ΔW_ICL||/||ΔW_FT|| and relative error against
k, and toy Rec2FTP and SimAOU (definitions in `icl_toy.analysis.duality`) with random-update
baselines.
Writes `icl_vs_finetuning.{png,pdf}` (main figure: (a) cos(ΔW_ICL, ΔW_FT) and (b) the norm
ratio against k and the SGD epoch, trained LSAs beside the construction, (c) toy Rec2FTP
and SimAOU of trained LSAs, the construction and random updates beside Dai et al.'s GPT
values), `icl_vs_finetuning_supplement.{png,pdf}` (cosine to one GD step and loss during
training, cosine, norm ratio and relative error against k, per-prompt histograms, Rec2FTP
at every margin with SimAOU, and the construction's float64/float32 exactness and
linearity gaps) and `icl_vs_finetuning.{json,npz}` to `figures/` (full) or
`figures/quick/`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.analysis import duality
from icl_toy.analysis.stats import mean_ci, seed_stats
from icl_toy.core.constructions import gd_weights
from icl_toy.core.learners import optimal_gd_eta
from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch, von_oswald_preset
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import interval_errors, paper_figure, save_figures, seed_band
from icl_toy.runs.results import Results
from icl_toy.training.train import (
    RunOptions,
    TrainConfig,
    batch_loss,
    require_single_layer,
    seed_params,
    train,
)

NAME = "icl_vs_finetuning"
RUNTIME = {"full": "~2 min", "quick": "~30 s"}  # on a 2-core CPU


@dataclasses.dataclass(frozen=True)
class Config:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # von Oswald et al.'s recipe (Adam 1e-3 at a constant rate, batch 2048, 5000 steps):
    # every seed's held-out loss is flat over its last 10% with it; 10 seeds.
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(num_seeds=10))
    eval_tasks: int = 2000  # held-out prompts for every comparison
    # k of the explicit fine-tuning (full-batch GD at η*) compared with ΔW_ICL; must hold 1.
    finetune_steps: tuple[int, ...] = (1, 2, 3, 5, 10, 20)
    num_probes: int = 16  # P probe queries per prompt for the toy SimAOU
    # Toy Rec2FTP: "right" = query error below (1 − margin) × the zero-shot error.
    rec2ftp_margins: tuple[float, ...] = (0.0, 0.5, 0.9)
    float64_tasks: int = 256  # prompts of the float64 exactness check of the construction
    eval_seed: int = 10_000  # root key of eval prompts, probes and random baselines

    def __post_init__(self):
        require_single_layer(NAME, self.task, self.model)
        if self.eval_tasks < 2 or self.float64_tasks < 1 or self.num_probes < 1:
            raise ValueError("eval_tasks must be >= 2; float64_tasks and num_probes >= 1")
        if 1 not in self.finetune_steps or min(self.finetune_steps) < 1:
            raise ValueError(
                f"finetune_steps must be >= 1 and contain 1, got {self.finetune_steps}"
            )
        if not self.rec2ftp_margins or not all(0 <= m < 1 for m in self.rec2ftp_margins):
            raise ValueError(f"rec2ftp_margins must lie in [0, 1), got {self.rec2ftp_margins}")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        train=TrainConfig(steps=600, batch_size=1024, eval_every=100, num_seeds=2),
        eval_tasks=256,
        finetune_steps=(1, 2, 5),
        num_probes=8,
        float64_tasks=32,
    )


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train, then compare implicit and fine-tuning updates on held-out prompts."""
    start = time.time()
    task, d = config.task, config.task.d
    model = make_model(task, config.model)
    eta = optimal_gd_eta(task)
    key_eval, key_probe, key_rand = jax.random.split(jax.random.key(config.eval_seed), 3)
    prompts = sample_batch(key_eval, task, config.eval_tasks)
    probe_cfg = dataclasses.replace(task, n_context=config.num_probes - 1)
    probes = sample_batch(key_probe, probe_cfg, config.eval_tasks)  # x and x_q are the probes
    probes_BxPxD = jnp.concatenate([probes.x, probes.x_q[:, None]], axis=1)
    random_BxYxD = jax.random.normal(key_rand, (config.eval_tasks, task.d_y, d))
    eval_tokens = jax.vmap(prompt_tokens)(prompts)
    ft1 = jax.vmap(duality.finetune_update, in_axes=(0, 0, None, None))(
        prompts.x, prompts.y, eta, 1
    )

    def eval_fn(params):
        icl = jax.vmap(duality.implicit_weight_update, in_axes=(None, 0, None))(
            lambda t: model.apply(params, t), eval_tokens, d
        )
        return {
            "loss": batch_loss(model, params, prompts),
            "cosine_k1": jnp.mean(jax.vmap(duality.update_cosine)(icl, ft1)),
        }

    result = train(model, task, config.train, eval_fn=eval_fn, options=options)

    steps, margins = config.finetune_steps, config.rec2ftp_margins
    compare_jit = jax.jit(
        lambda params: duality.compare_with_finetuning(
            model, params, prompts, probes_BxPxD, random_BxYxD, eta, steps, margins
        )
    )
    construction = jax.tree.map(np.asarray, compare_jit(gd_weights(model, eta, task.n_context)))
    per_seed_raw = [
        jax.tree.map(np.asarray, compare_jit(seed_params(result.params, s)))
        for s in range(config.train.num_seeds)
    ]
    trained = {k: np.stack([r[k] for r in per_seed_raw]) for k in per_seed_raw[0]}

    def prompt_means(values):
        """Mean over prompts of per-prompt arrays; scalars (Rec2FTP, gaps) pass through."""
        return (
            values.mean(axis=-1)
            if values.ndim and values.shape[-1] == config.eval_tasks
            else values
        )

    trained_per_seed = {k: prompt_means(v) for k, v in trained.items()}
    construction_means = {k: float(prompt_means(v)) for k, v in construction.items()}
    f64 = duality.construction_float64(task, eta, config.float64_tasks, config.eval_seed + 1)
    summary = {
        "experiment": NAME,
        "config": config,
        "eta_star": eta,
        "eta_convention": "1/N inside eta; FT = k full-batch GD steps of size eta from W0 = 0",
        "definitions": {
            "delta_w_icl": "d y_hat / d x_q of the model minus W0 = 0 (y_hat is linear in x_q)",
            "rec2ftp": "#(FT right and ICL right) / #(FT right); right = squared query error "
            "< (1 - margin) * zero-shot error; FT = one GD step at eta*",
            "rec2ftp_random": "same with ICL replaced by a random Gaussian update of ICL's norm",
            "simaou": "cos(h_ICL - h_ZSL, h_FT - h_ZSL), h = query tokens after the model at "
            "num_probes probe queries, FT = one GD step; random: a Gaussian update",
        },
        "construction": construction_means,
        "construction_float64": f64,
        "trained_per_seed": trained_per_seed,
        "trained_seed_stats": {k: seed_stats(v) for k, v in trained_per_seed.items()},
        "final_eval_loss": seed_stats(result.eval_metrics["loss"][:, -1]),
        "runtime_s": time.time() - start,
    }
    arrays = {
        "eval_steps": result.eval_steps,
        **{f"eval_{k}": v for k, v in result.eval_metrics.items()},
        "finetune_steps": np.asarray(steps),
        "trained_cosine_k1": trained["cosine_k1"],  # (S, B) per prompt
        "trained_simaou": trained["simaou"],
        "random_simaou": trained["simaou_random"][0],
        "construction_cosine_k1": construction["cosine_k1"],
    }
    return Results(summary, arrays)


ICL, FT = r"$\Delta W_{\mathrm{ICL}}$", r"$\Delta W_{\mathrm{FT}}$"
METRIC_NAMES = {  # summary key prefix -> axis label
    "cosine": rf"cos({ICL}, {FT})",
    "norm_ratio": rf"$\|${ICL}$\|$ / $\|${FT}$\|$",
    "relative_error": rf"$\|${ICL} $-$ {FT}$\|$ / $\|${FT}$\|$",
}
# Dai et al. 2022 (GPT on six classification tasks), as the README quotes them.
PAPER = {"rec2ftp": 0.87, "simaou": 0.2}
TRAINED_BARS = "trained LSA, mean\nand 95% t-interval"


def figures(results: Results) -> dict[str, plt.Figure]:
    """The main figure (cosine and norm ratio against k, Dai's metrics) and the dashboard."""
    return {NAME: _main_figure(results), f"{NAME}_supplement": _dashboard(results)}


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figures from saved results."""
    return save_figures(figures, results, out_dir=out_dir)


def _trained(results: Results, key: str) -> dict:
    """Mean and 95% t-interval over seeds of a trained-LSA summary value."""
    return mean_ci(np.asarray(results.summary["trained_per_seed"][key], dtype=float))


def _against_k(ax, results: Results, metric: str) -> None:
    """A ΔW metric against the fine-tuning steps k, and against the SGD epoch at the right."""
    ks = np.asarray(results.arrays["finetune_steps"])
    cons = results.summary["construction"]
    keys = [f"{metric}_k{k}" for k in ks] + [f"{metric}_sgd"]
    # The SGD epoch is not a k: it sits apart, right of a separator.
    x = np.append(ks, 4 * ks.max())
    records = [_trained(results, key) for key in keys]
    ax.errorbar(
        x[:-1],
        [r["mean"] for r in records[:-1]],
        yerr=interval_errors(records[:-1]),
        fmt="o-",
        color="C0",
        label=TRAINED_BARS,
    )
    ax.errorbar(
        x[-1:], [records[-1]["mean"]], yerr=interval_errors(records[-1:]), fmt="o", color="C0"
    )
    ax.plot(
        x[:-1],
        [cons[k] for k in keys[:-1]],
        "k--",
        marker="x",
        ms=5,
        label=r"LSA = GD($\eta^*$)",
    )
    ax.plot(x[-1:], [cons[keys[-1]]], "kx", ms=5)
    ax.axvline(np.sqrt(x[-2] * x[-1]), color="0.6", lw=0.6)
    ax.set_xscale("log")
    ax.set_xticks(x, [str(k) for k in ks] + ["SGD\nepoch"])
    ax.minorticks_off()
    ax.set(xlabel=r"fine-tuning GD steps k at $\eta^*$", ylabel=METRIC_NAMES[metric])


def _dai_metrics(ax, results: Results, margin: float) -> None:
    """Toy Rec2FTP (at `margin`) and SimAOU of each learner, and the paper's LM values."""
    cons, stats = results.summary["construction"], results.summary["trained_seed_stats"]
    trained = [_trained(results, m) for m in (f"rec2ftp_m{margin}", "simaou")]
    bars = {  # learner -> (Rec2FTP, SimAOU)
        "trained\nLSA": [r["mean"] for r in trained],
        "LSA =\nGD($\\eta^*$)": [cons[f"rec2ftp_m{margin}"], cons["simaou"]],
        "random\nupdate": [
            stats[f"rec2ftp_random_m{margin}"]["mean"],
            stats["simaou_random"]["mean"],
        ],
        "paper\n(GPT)": list(PAPER.values()),
    }
    x = np.arange(len(bars))
    values = np.array(list(bars.values()))
    for j, (label, color) in enumerate(((f"Rec2FTP (margin {margin:g})", "C0"), ("SimAOU", "C1"))):
        offset = (j - 0.5) * 0.38
        ax.bar(x[:-1] + offset, values[:-1, j], 0.38, color=color, label=label)
        ax.bar(x[-1] + offset, values[-1, j], 0.38, color=color, alpha=0.45, hatch="///")
        ax.text(x[-1] + offset, values[-1, j] + 0.02, f"~{values[-1, j]:g}", ha="center")
        ax.errorbar(
            [offset],
            [trained[j]["mean"]],
            yerr=interval_errors(trained[j : j + 1]),
            fmt="none",
            color="k",
            label="95% t-interval over seeds" if j else None,
        )
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xticks(x, list(bars))
    ax.set(ylabel="score", ylim=(-0.05, 1.4), yticks=np.arange(0, 1.01, 0.2))


def _main_figure(results: Results) -> plt.Figure:
    fig, (axes,) = paper_figure(3, height=2.6, gridspec_kw={"width_ratios": [1, 1, 1.15]})
    _against_k(axes[0], results, "cosine")
    axes[0].set_title(f"(a) {ICL} is one GD step")

    _against_k(axes[1], results, "norm_ratio")
    axes[1].set_title("(b) ... and of one step's size")
    axes[1].legend(loc="center right")  # keys (a) too
    _dai_metrics(axes[2], results, results.summary["config"]["rec2ftp_margins"][0])
    axes[2].set_title("(c) Dai et al.'s metrics")
    axes[2].legend(loc="upper right", fontsize=6.5)
    return fig


def _dashboard(results: Results) -> plt.Figure:
    s, a = results.summary, results.arrays
    stats, cons = s["trained_seed_stats"], s["construction"]
    fig, axes = plt.subplots(2, 4, figsize=(12, 5.8))

    ax = axes[0, 0]
    seed_band(ax, a["eval_steps"], a["eval_cosine_k1"], f"trained LSA vs {FT}, k = 1", color="C2")
    ax.set(xlabel="training step", ylabel=f"mean cos({ICL}, {FT})")
    ax.set_title("alignment during training")
    ax.legend(loc="center right")
    ax = axes[0, 1]
    seed_band(ax, a["eval_steps"], a["eval_loss"], "trained LSA")
    ax.set(yscale="log", xlabel="training step", ylabel="held-out half-MSE")
    ax.set_title("loss during training")
    ax.legend()

    titles = {"cosine": "cosine", "norm_ratio": "norm ratio", "relative_error": "relative error"}
    for ax, metric in zip((axes[0, 2], axes[0, 3], axes[1, 0]), METRIC_NAMES, strict=True):
        _against_k(ax, results, metric)
        ax.set_title(f"{titles[metric]} against k")
        where = {
            "cosine": "lower left",
            "norm_ratio": "upper center",
            "relative_error": "lower right",
        }
        ax.legend(loc=where[metric], fontsize=6.5)

    ax = axes[1, 1]
    bins = np.linspace(-1, 1, 81)
    hists = (
        (a["trained_cosine_k1"][0], "C0", f"trained: cos({ICL}, {FT}, k = 1)"),
        (a["trained_simaou"][0], "C2", "trained: SimAOU"),
        (a["random_simaou"], "C7", "random update: SimAOU"),
    )
    for values, color, label in hists:
        ax.hist(values, bins=bins, alpha=0.6, color=color, label=label)
    ax.set(yscale="log", xlabel="cosine per prompt (seed 0)", ylabel="prompts")
    ax.set_title("per-prompt agreement")
    ax.set_ylim(top=ax.get_ylim()[1] * 30)  # room for the legend
    ax.legend(loc="upper left", fontsize=6.5)

    # Rec2FTP at every margin and SimAOU, for each learner.
    ax = axes[1, 2]
    metrics = [f"rec2ftp_m{m}" for m in s["config"]["rec2ftp_margins"]] + ["simaou"]
    random = [stats[f"rec2ftp_random_m{m}"]["mean"] for m in s["config"]["rec2ftp_margins"]]
    x = np.arange(len(metrics))
    trained = [_trained(results, m) for m in metrics]
    ax.bar(
        x - 0.27,
        [r["mean"] for r in trained],
        0.27,
        yerr=interval_errors(trained),
        label=TRAINED_BARS,
    )
    ax.bar(x, [cons[m] for m in metrics], 0.27, color="0.3", label=r"LSA = GD($\eta^*$)")
    ax.bar(
        x + 0.27, [*random, stats["simaou_random"]["mean"]], 0.27, color="C7", label="random update"
    )
    for i, value in ((0, PAPER["rec2ftp"]), (len(metrics) - 1, PAPER["simaou"])):
        ax.hlines(value, i - 0.45, i + 0.45, color="C3", ls="--", lw=1.4)
    ax.plot([], [], color="C3", ls="--", label="paper (GPT): ~0.87, ~0.2")
    ax.axhline(0.0, color="k", lw=0.6)
    names = [f"Rec2FTP\nm = {m:g}" for m in s["config"]["rec2ftp_margins"]] + ["SimAOU"]
    ax.set_xticks(x, names)
    ax.set(ylabel="score", ylim=(-0.05, 1.6), yticks=np.arange(0, 1.01, 0.2))
    ax.set_title("toy Rec2FTP at margin m, SimAOU")
    ax.legend(loc="upper center", ncols=2, fontsize=6.5)

    # How exact the construction's equality with one GD step is, and ŷ's linearity in x_q.
    f64 = s["construction_float64"]
    gaps = {
        rf"$|${ICL} $-$ {FT}$|$ max, float64": (f64["max_abs_delta_w_difference"], "0.3"),
        r"$|1 - \cos|$ max, float64": (f64["max_abs_one_minus_cosine"], "0.3"),
        "relative error, float32": (cons["relative_error_k1"], "0.3"),
        "relative error, trained": (stats["relative_error_k1"]["mean"], "C0"),
        "linearity gap, float32": (cons["linearity_gap"], "0.3"),
        "linearity gap, trained": (stats["linearity_gap"]["mean"], "C0"),
    }
    ax = axes[1, 3]
    for i, (value, color) in enumerate(gaps.values()):
        ax.plot([value], [i], "o", color=color, ms=5)
    ax.plot([], [], "o", color="0.3", label=r"LSA = GD($\eta^*$)")
    ax.plot([], [], "o", color="C0", label="trained LSA")
    ax.set_yticks(range(len(gaps)), list(gaps))
    ax.set(xscale="log", xlabel="value, k = 1", ylim=(len(gaps) - 0.5, -1.6))
    ax.set_title(f"{ICL} against one GD step")
    ax.legend(loc="upper left", ncols=2, fontsize=6.5)
    return fig


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
