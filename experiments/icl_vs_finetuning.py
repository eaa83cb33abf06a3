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
Writes `icl_vs_finetuning.{png,pdf,json,npz}` to `figures/` (full) or `figures/quick/`.
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
from icl_toy.analysis.stats import seed_stats
from icl_toy.core.constructions import gd_weights
from icl_toy.core.learners import optimal_gd_eta
from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch, von_oswald_preset
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import save_figure, seed_band
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


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figure from saved results."""
    s, a = results.summary, results.arrays
    ks = a["finetune_steps"]
    stats, cons = s["trained_seed_stats"], s["construction"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    fig.subplots_adjust(hspace=0.4, wspace=0.55)

    ax = axes[0, 0]
    seed_band(ax, a["eval_steps"], a["eval_cosine_k1"], "cos(ΔW_ICL, ΔW_FT k=1)", color="C2")
    ax.set(xlabel="training step", ylabel="mean cosine", title="Trained LSA during training")
    twin = ax.twinx()
    seed_band(twin, a["eval_steps"], a["eval_loss"], "eval half-MSE", color="C0")
    twin.set_yscale("log")
    twin.set_ylabel("half-MSE", color="C0")
    ax.legend(handles=ax.get_lines() + twin.get_lines(), fontsize=8, loc="center right")

    for ax, metric, label in (
        (axes[0, 1], "cosine", "cos(ΔW_ICL, ΔW_FT)"),
        (axes[0, 2], "norm_ratio", "||ΔW_ICL|| / ||ΔW_FT||"),
    ):
        mean = [stats[f"{metric}_k{k}"]["mean"] for k in ks]
        std = [stats[f"{metric}_k{k}"]["std"] for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label="trained LSA (seeds)")
        ax.plot(
            ks, [cons[f"{metric}_k{k}"] for k in ks], "k--", marker="x", label="GD construction"
        )
        ax.errorbar(
            [1.1],
            [stats[f"{metric}_sgd"]["mean"]],
            yerr=[stats[f"{metric}_sgd"]["std"]],
            marker="s",
            color="C3",
            ls="none",
            capsize=3,
            label="vs SGD epoch (trained)",
        )
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set(xlabel="fine-tuning GD steps k (η*)", ylabel=label, title=f"{label} against k")
        ax.legend(fontsize=8)

    ax = axes[1, 0]
    bins = np.linspace(-1, 1, 81)
    ax.hist(a["trained_cosine_k1"][0], bins=bins, alpha=0.7, label="trained (seed 0) vs FT k=1")
    ax.hist(a["random_simaou"], bins=bins, alpha=0.5, label="random update: SimAOU")
    ax.hist(a["trained_simaou"][0], bins=bins, alpha=0.5, label="trained (seed 0): SimAOU")
    ax.set(yscale="log", xlabel="cosine per prompt", ylabel="prompts", title="Per-prompt agreement")
    ax.legend(fontsize=8)

    margins = s["config"]["rec2ftp_margins"]
    ax = axes[1, 1]
    x = np.arange(len(margins))
    for i, (name, get) in enumerate(
        (
            ("trained LSA", lambda m: stats[f"rec2ftp_m{m}"]["mean"]),
            ("GD construction", lambda m: cons[f"rec2ftp_m{m}"]),
            ("random update", lambda m: stats[f"rec2ftp_random_m{m}"]["mean"]),
        )
    ):
        ax.bar(x + (i - 1) * 0.27, [get(m) for m in margins], width=0.27, label=name)
    ax.set_xticks(x, [f"margin {m}" for m in margins])
    ax.set(ylabel="Rec2FTP", title="Toy Rec2FTP (FT = one GD step)", ylim=(0, 1.05))
    ax.legend(fontsize=8)

    ax = axes[1, 2]
    names = ["trained LSA", "GD\nconstruction", "random\nupdate"]
    values = [stats["simaou"]["mean"], cons["simaou"], stats["simaou_random"]["mean"]]
    ax.bar(names, values, color=["C0", "C1", "C2"], yerr=[stats["simaou"]["std"], 0, 0])
    ax.set(ylabel="SimAOU", title="Toy SimAOU (query-token update vs FT)", ylim=(-0.1, 1.05))

    f64 = s["construction_float64"]
    fig.suptitle(
        f"ICL vs fine-tuning: trained cos(ΔW_ICL, ΔW_FT k=1) = {stats['cosine_k1']['mean']:.4f} ± "
        f"{stats['cosine_k1']['std']:.4f} ({len(a['eval_loss'])} seeds); construction float64 "
        f"max|ΔW_ICL − ΔW_FT| = {f64['max_abs_delta_w_difference']:.1e}"
    )
    return save_figure(fig, out_dir, NAME)


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
