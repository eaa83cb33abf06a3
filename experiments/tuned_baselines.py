"""Tuned K-step GD and GD++ at their optimum, K = 1..10: the baselines deep LSA models meet.

    icl-toy run tuned_baselines           # or python -m experiments.tuned_baselines
    icl-toy run tuned_baselines --quick   # shrunk config, ~1 min

Full: K = 1..10, per-step and shared (recurrent) scalars, ~12 min on 2 CPU cores (1000 Adam
steps per fit, every start of a K in one call).

On the von Oswald preset (d = N = 10, x ~ U(−1/2, 1/2)^d, w ~ N(0, I), no noise) the
scalars of K-step GD (η_k) and GD++ (η_k, γ_k) are fitted by Adam on their own half-MSE
(`tuning.fit_gd_and_gdpp_ladder`): every K from several starts at once, the K − 1
solution extended by a step among them, and the best kept on a selection set of held-out
tasks that no fit saw. The per-step family contains its K − 1 solution (η_K = γ_K = 0),
so its selected loss never rises with K; a baseline that got worse with more steps would
not be at its optimum. Losses are reported on a second held-out set (the selection set
would flatter the chosen θ) and are **half-MSE**, ½ E(ŷ − y_q)².
Writes `tuned_baselines.{png,pdf,json,npz}` to `figures/` (full) or `figures/quick/`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.core.losses import HALF_MSE_NOTE
from icl_toy.core.tasks import TaskConfig, sample_batch, von_oswald_preset
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import finish_axes, save_figure
from icl_toy.runs.results import Results
from icl_toy.training import tuning
from icl_toy.training.train import RunOptions

NAME = "tuned_baselines"
RUNTIME = {"full": "~12 min", "quick": "~1 min"}  # on a 2-core CPU
KINDS = ("per_layer", "recurrent")


@dataclasses.dataclass(frozen=True)
class Config:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    max_steps: int = 10  # K = 1..max_steps
    kinds: tuple[str, ...] = KINDS  # per-step scalars, and one set shared by all steps
    # Each K starts from the K − 1 solution, so a short fit suffices; 20 K-fits per kind.
    fit: tuning.FitConfig = dataclasses.field(
        default_factory=lambda: tuning.FitConfig(steps=1000, batch_size=256)
    )
    eta_scales: tuple[float, ...] = (0.5, 1.0, 1.5)  # starts at s·η* besides the K − 1 one
    selection_tasks: int = 10_000  # held-out tasks that choose among fits and starts
    eval_tasks: int = 10_000  # another held-out set, for the reported losses
    seed: int = 0

    def __post_init__(self):
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        for name in ("max_steps", "selection_tasks", "eval_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.eta_scales or not all(s > 0 for s in self.eta_scales):
            raise ValueError(f"eta_scales must be positive, got {self.eta_scales}")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        max_steps=4,
        fit=tuning.FitConfig(steps=200, batch_size=128),
        eta_scales=(1.0,),
        selection_tasks=1024,
        eval_tasks=1024,
    )


def run(config: Config, options: RunOptions | None = None) -> Results:
    """The ladder of every kind; `options` is unused (the fits are not checkpointed)."""
    del options
    task = config.task
    key = jax.random.key(config.seed)
    selection = sample_batch(jax.random.fold_in(key, 1), task, config.selection_tasks)
    held_out = sample_batch(jax.random.fold_in(key, 2), task, config.eval_tasks)
    by_kind, arrays = {}, {"K": np.arange(1, config.max_steps + 1)}
    ladders = tuning.fit_ladders(
        task, config.max_steps, config.kinds, key, config.fit, selection, config.eta_scales
    )
    for kind, ladder in ladders.items():
        rows = []
        for k, rung in enumerate(ladder, start=1):
            gd, gdpp = tuning.gd_and_gdpp_learners(kind, k)
            row = {"K": k}
            for name, learner in (("gd", gd), ("gdpp", gdpp)):
                theta = {"eta": rung[name]["eta"]}
                if name == "gdpp":
                    theta["gamma"] = rung[name]["gamma"]
                row[name] = {
                    "eta": np.asarray(rung[name]["eta"]).tolist(),
                    "gamma": np.asarray(rung[name]["gamma"]).tolist(),
                    "selection_loss": rung[name]["held_out_loss"],
                    "eval_loss": float(tuning.learner_half_mse(learner, theta, held_out)),
                    "chosen": rung[name]["chosen"],
                }
            rows.append(row)
        by_kind[kind] = rows
        for name in ("gd", "gdpp"):
            for split in ("selection", "eval"):
                arrays[f"{kind}_{name}_{split}_loss"] = np.array(
                    [row[name][f"{split}_loss"] for row in rows]
                )
    monotone = {
        f"{kind}_{name}_{split}": bool(np.all(np.diff(arrays[f"{kind}_{name}_{split}_loss"]) <= 0))
        for kind in config.kinds
        for name in ("gd", "gdpp")
        for split in ("selection", "eval")
    }
    summary = {
        "experiment": NAME,
        "config": config,
        "loss": HALF_MSE_NOTE,
        "by_kind": by_kind,
        "non_increasing_in_K": monotone,
    }
    return Results(summary, arrays)


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    s, a = results.summary, results.arrays
    kinds = list(s["by_kind"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.5 * len(kinds), 3.0), squeeze=False)
    labels = {
        "per_layer": r"per-step $\eta_k, \gamma_k$",
        "recurrent": r"shared $\eta, \gamma$ (recurrent)",
    }
    for ax, kind in zip(axes[0], kinds, strict=True):
        for name, label, marker in (("gd", "GD", "o"), ("gdpp", "GD++", "s")):
            ax.plot(a["K"], a[f"{kind}_{name}_eval_loss"], marker=marker, label=f"tuned {label}")
        finish_axes(
            ax,
            labels[kind],
            "steps K",
            "held-out half-MSE",
            log_y=True,
            xticks=a["K"],
            legend_fontsize=8,
        )
    fig.suptitle("Tuned K-step GD and GD++ at their optimum (von Oswald preset)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_dir, NAME)


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
