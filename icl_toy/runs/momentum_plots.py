"""Panels of momentum studies: LSA stacks with token momentum (learned μ) or depth momentum
(learned β) beside the plain LSA and tuned K-step learners (`training.tuned_learners`).

Each panel draws saved per-seed values as means with 95% t-intervals (`seed_errorbars`), or
curves as faint seeds under their mean; tuned learners are lines.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np

from icl_toy.runs import plotting

COLORS = {"plain": "C0", "token_momentum": "C1", "depth_momentum": "C2"}  # every LSA variant
SYMBOL = {"token_momentum": "μ", "depth_momentum": "β"}  # the momentum variants
LEARNER_STYLES = {"gd": "k--", "gd_constant": "k:", "heavy_ball": "m--"}
LEARNER_STYLES |= {"heavy_ball_shared_beta": "m:", "nesterov": "c--"}
PANELS = (  # (xlabel, ylabel, title) of the 2 x 3 panels of `momentum_figure`, row by row
    ("K (layers / steps)", "half-MSE (held-out)", "Final loss, 95% CI"),
    ("K", "Δ half-MSE (paired seeds)", "Momentum − plain, 95% CI"),
    ("K", "momentum", "Learned μ, β vs tuned heavy-ball β"),
    ("training step", "μ or β", "Learned momentum during training"),
    ("fixed μ or β (0 = plain)", "half-MSE", "Fixed-momentum sweep, 95% CI"),
    (
        "position t = number of earlier pairs",
        "half-MSE",
        "Loss at every context length (causal LSA)",
    ),
)


def _series(values: dict, label) -> dict:
    """{label(variant): (per-seed values at every K, the variant's colour)}."""
    return {label(v): (per_seed, COLORS[v]) for v, per_seed in values.items()}


def final_losses(ax, depths, final: dict, tuned: dict) -> None:
    """Final loss of each variant against K (per-seed lists), beside the tuned learners' means."""
    plotting.offset_errorbars(ax, depths, _series(final, lambda v: f"LSA {v}"), 0.08)
    for name in (n for n in LEARNER_STYLES if n in tuned):
        means = [fit["mean_eval_loss"] for fit in tuned[name]]
        ax.plot(depths, means, LEARNER_STYLES[name], lw=1, label=f"tuned {name}")


def learned_vs_tuned_momentum(ax, depths, learned: dict, tuned: dict) -> None:
    """Learned μ and β against K, beside the β of the tuned heavy-ball and Nesterov learners."""
    plotting.offset_errorbars(ax, depths, _series(learned, lambda v: f"learned {SYMBOL[v]}"), 0.1)
    for name in (n for n in ("heavy_ball", "nesterov") if n in tuned):
        betas, label = [np.mean(fit["theta"]["beta"]) for fit in tuned[name]], f"tuned {name} β"
        ax.plot(depths, betas, LEARNER_STYLES[name], label=f"{label} (constant η, β)")


def momentum_during_training(ax, steps, arrays, depths) -> None:
    """μ and β of every seed during training (saved as `momentum_{variant}_K{k}`)."""
    for v, color in ((v, COLORS[v]) for v in SYMBOL):
        for k, ls in zip(depths, itertools.cycle(("-", "--", "-.", ":"))):
            curves, label = arrays[f"momentum_{v}_K{k}"], f"{SYMBOL[v]}, K = {k} (seed mean)"
            plotting.seed_mean_line(ax, steps, curves, label, color, ls=ls)


def fixed_momentum_sweep(ax, sweep: dict, at_depth: dict) -> None:
    """Final loss with μ or β fixed (`sweep` rows), and with it learned (stars, `at_depth`)."""
    for v, color in ((v, COLORS[v]) for v in SYMBOL):
        fixed, at = sweep[v], at_depth[v]
        x, losses = [r["momentum"] for r in fixed], [r["loss"] for r in fixed]
        plotting.seed_errorbars(ax, x, losses, fmt="o-", color=color, label=f"{v}, fixed")
        x, losses = [np.mean(at["learned_momentum"])], [at["final_loss"]]
        kw = dict(fmt="*", ms=12, color=color, label=f"{v}, learned")
        plotting.seed_errorbars(ax, x, losses, **kw)


def momentum_figure(per_k: dict, sweep: dict, arrays):
    """The 2 x 3 figure of `PANELS` from a momentum study's per-K entries, sweep and arrays."""
    depths, entries = [int(name[1:]) for name in per_k], list(per_k.values())
    tuned = {n: [e["tuned_learners"][n] for e in entries] for n in entries[0]["tuned_learners"]}
    final = {v: [e[v]["final_loss"] for e in entries] for v in COLORS}
    learned = {v: [e[v]["learned_momentum"] for e in entries] for v in SYMBOL}
    diffs = {v: np.subtract(final[v], final["plain"]) for v in SYMBOL}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    final_losses(axes[0, 0], depths, final, tuned)
    plotting.offset_errorbars(axes[0, 1], depths, _series(diffs, lambda v: f"{v} − plain"), 0.1)
    learned_vs_tuned_momentum(axes[0, 2], depths, learned, tuned)
    momentum_during_training(axes[1, 0], arrays["eval_steps"], arrays, depths)
    fixed_momentum_sweep(axes[1, 1], sweep, per_k[f"K{sweep['depth']}"])
    plotting.position_curves(axes[1, 2], arrays)
    plotting.label_panels(axes.flat, PANELS)
    axes[0, 0].set_yscale("log")
    for ax in axes[0, 1:]:
        ax.axhline(0.0, color="k", lw=0.8)
    fig.suptitle(f"Momentum attention on the von Oswald preset; sweep at K = {sweep['depth']}")
    return fig
