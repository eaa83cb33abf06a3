"""Figures of momentum studies: LSA stacks with token momentum (learned μ) or depth momentum
(learned β) beside the plain LSA and tuned K-step learners (`training.tuned_learners`).

Per-seed values are drawn as means with 95% t-intervals, seeds as dots (hollow where the
seed's convergence record says it had not converged), curves as faint seeds under their
mean; tuned learners are lines.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from icl_toy.runs import plotting
from icl_toy.training.convergence import converged_flags

COLORS = {"plain": "C0", "token_momentum": "C1", "depth_momentum": "C2"}  # every LSA variant
DISPLAY = {
    "plain": "plain LSA",
    "token_momentum": r"token momentum (learned $\mu$)",
    "depth_momentum": r"depth momentum (learned $\beta$)",
}
SYMBOL = {"token_momentum": r"$\mu$", "depth_momentum": r"$\beta$"}  # the momentum variants
LEARNERS = {  # tuned K-step learner: (line format, display name); GD drawn over the others
    "heavy_ball": ("m-", r"tuned heavy ball (one $\eta$, $\beta$)"),
    "heavy_ball_shared_beta": ("m:", r"tuned heavy ball ($\eta_k$, one $\beta$)"),
    "nesterov": ("c--", r"tuned Nesterov (one $\eta$, $\beta$)"),
    "gd": ("k--", r"tuned GD ($\eta_k$ per step)"),
    "gd_constant": ("k:", r"tuned GD (one $\eta$)"),
}
MAIN_LEARNERS = (
    "heavy_ball",
    "gd",
    "gd_constant",
)  # GD dashed over heavy ball where equal  # momentum's case: one η vs one η and β
K_LABEL = "K (LSA layers; GD steps)"


def _per_k(per_k: dict):
    """(depths, {variant: [final losses per seed at each K]}, {learner: [fit per K]})."""
    depths, entries = [int(name[1:]) for name in per_k], list(per_k.values())
    final = {v: [e[v]["final_loss"] for e in entries] for v in COLORS}
    tuned = {n: [e["tuned_learners"][n] for e in entries] for n in entries[0]["tuned_learners"]}
    return depths, final, tuned


def _seed_dots(ax, x, values, converged, color) -> None:
    """One dot per seed at `x`: filled where it converged, hollow where it did not."""
    values = np.asarray(values, dtype=float)
    ax.plot(np.full(converged.sum(), x), values[converged], "o", color=color, alpha=0.7, ms=3)
    hollow = dict(mfc="none", alpha=0.9, ms=3)
    ax.plot(np.full((~converged).sum(), x), values[~converged], "o", color=color, **hollow)


def _strip(ax, x, values, interval, converged, color) -> None:
    """Seeds as dots and their mean with its 95% t-interval as a bar beside them."""
    _seed_dots(ax, x, values, converged, color)
    errors = plotting.interval_errors([interval])
    ax.errorbar([x + 0.07], [interval["mean"]], yerr=errors, fmt="s", ms=3.5, color=color)


def momentum_main_figure(per_k: dict, convergence: dict):
    """(a) final loss against K for the three LSA variants beside tuned GD and heavy ball,
    (b), (c) each momentum variant minus the plain LSA on paired seeds."""
    depths, final, tuned = _per_k(per_k)
    fig, ((loss_ax, token_ax, depth_ax),) = plotting.paper_figure(3, height=2.75)
    offsets = dict(zip(COLORS, (-0.25, 0.0, 0.25), strict=True))
    handles = []
    for v, color in COLORS.items():
        flags = [converged_flags(convergence.get(f"{v}_K{k}"), len(final[v][0])) for k in depths]
        for k, values, converged in zip(depths, final[v], flags, strict=True):
            interval = per_k[f"K{k}"][v]
            _strip(loss_ax, k + offsets[v], values, interval, converged, color)
        count = f"{sum(f.sum() for f in flags)}/{sum(f.size for f in flags)} seeds converged"
        handles.append(
            Line2D([], [], color=color, marker="s", ls="", label=f"{DISPLAY[v]}, {count}")
        )
    for name in (n for n in MAIN_LEARNERS if n in tuned):
        fmt, label = LEARNERS[name]
        means = [fit["mean_eval_loss"] for fit in tuned[name]]
        (line,) = loss_ax.plot(depths, means, fmt, lw=1, label=label)
        handles.append(line)
    loss_ax.set(xlabel=K_LABEL, ylabel="final held-out loss (half-MSE)", xticks=depths)
    loss_ax.set_title("(a) final loss against depth")

    for ax, v in ((token_ax, "token_momentum"), (depth_ax, "depth_momentum")):
        # Depth momentum cannot act in one layer (β gets no gradient): K = 1 is plain itself.
        shown = [k for k in depths if (v, k) != ("depth_momentum", 1)]
        for k in shown:
            values = np.subtract(final[v][depths.index(k)], final["plain"][depths.index(k)])
            both = converged_flags(convergence.get(f"{v}_K{k}"), values.size)
            both &= converged_flags(convergence.get(f"plain_K{k}"), values.size)
            interval = per_k[f"K{k}"][v]["difference_vs_plain"]
            _strip(ax, k, values, interval, both, COLORS[v])
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set(xlabel=K_LABEL, ylabel="Δ final loss, paired seeds", xticks=shown)
        ax.set_xlim(min(shown) - 0.5, max(shown) + 0.5)
    token_ax.set_title("(b) token momentum − plain")
    depth_ax.set_title("(c) depth momentum − plain")

    mean_key = Line2D([], [], color="0.3", marker="s", ls="-", label="mean, 95% t-interval")
    dot_keys = [
        Line2D(
            [], [], color="0.3", marker="o", ls="", label="seed converged ((b), (c): both runs)"
        ),
        Line2D([], [], color="0.3", marker="o", mfc="none", ls="", label="seed not converged"),
    ]
    handles += [mean_key, *dot_keys]
    fig.legend(handles=handles, loc="outside upper center", ncols=3)
    return fig


def final_losses(ax, depths, final: dict, tuned: dict) -> None:
    """Final loss of each variant against K (per-seed lists), beside the tuned learners' means."""
    series = {DISPLAY[v]: (per_seed, COLORS[v]) for v, per_seed in final.items()}
    plotting.offset_errorbars(ax, depths, series, 0.08)
    for name in (n for n in LEARNERS if n in tuned):
        fmt, label = LEARNERS[name]
        ax.plot(depths, [fit["mean_eval_loss"] for fit in tuned[name]], fmt, lw=1, label=label)


def learned_vs_tuned_momentum(ax, depths, learned: dict, tuned: dict) -> None:
    """Learned μ and β against K, beside the β of the tuned heavy-ball and Nesterov learners."""
    series = {f"learned {SYMBOL[v]}": (values, COLORS[v]) for v, values in learned.items()}
    plotting.offset_errorbars(ax, depths, series, 0.1)
    for name in (n for n in ("heavy_ball", "nesterov") if n in tuned):
        fmt, label = LEARNERS[name]
        betas = [np.mean(fit["theta"]["beta"]) for fit in tuned[name]]
        ax.plot(depths, betas, fmt, label=rf"$\beta$ of {label}")


def momentum_during_training(ax, steps, arrays, depths) -> None:
    """μ and β of every seed during training (saved as `momentum_{variant}_K{k}`)."""
    for v, color in ((v, COLORS[v]) for v in SYMBOL):
        for k, ls in zip(depths, itertools.cycle(("-", "--", "-.", ":"))):
            curves, label = arrays[f"momentum_{v}_K{k}"], f"{SYMBOL[v]}, K = {k}"
            plotting.seed_mean_line(ax, steps, curves, label, color, ls=ls)


def fixed_momentum_sweep(ax, sweep: dict, at_depth: dict) -> None:
    """Final loss with μ or β fixed (`sweep` rows), and with it learned (stars, `at_depth`)."""
    for v, color in ((v, COLORS[v]) for v in SYMBOL):
        fixed, at = sweep[v], at_depth[v]
        x, losses = [r["momentum"] for r in fixed], [r["loss"] for r in fixed]
        name = v.split("_")[0]
        plotting.seed_errorbars(ax, x, losses, fmt="o-", color=color, label=f"{name}, fixed")
        x, losses = [np.mean(at["learned_momentum"])], [at["final_loss"]]
        kw = dict(fmt="*", ms=9, color=color, label=f"{name}, learned {SYMBOL[v]}")
        plotting.seed_errorbars(ax, x, losses, **kw)


POSITION_CURVES = {  # `one_layer_position_curves` saved as position_NAME: (format, label)
    "trained_causal": ("o-", "trained LSA (K = 1), causal readout"),
    "trained_prefix": ("x", "same, label-free prefix prompts"),
    "gd_construction": ("k--", r"GD($\eta^*$) construction, causal"),
    "gd_best_per_length": ("k:", r"best one GD step $\eta^*(n)$"),
}


def position_losses(ax, arrays) -> None:
    """The loss at every context length of the K = 1 LSA read causally, seed mean."""
    for name, (fmt, label) in POSITION_CURVES.items():
        if f"position_{name}" in arrays:
            curve = np.atleast_2d(arrays[f"position_{name}"]).mean(axis=0)
            ax.plot(np.arange(curve.size), curve, fmt, label=label)


PANELS = (  # (xlabel, ylabel, title) of the 2 x 3 supplement panels, row by row
    (K_LABEL, "final held-out loss (half-MSE)", "final loss, mean and 95% t-interval"),
    (K_LABEL, "Δ final loss, paired seeds", "momentum − plain, 95% t-interval"),
    (K_LABEL, r"$\mu$ or $\beta$", r"learned $\mu$, $\beta$ (95% t-interval), tuned $\beta$"),
    ("training step", r"$\mu$ or $\beta$", "learned momentum during training (seed mean)"),
    (r"fixed $\mu$ or $\beta$ (0 = plain)", "final held-out loss", "fixed-momentum sweep"),
    ("position t (earlier pairs in context)", "half-MSE", "loss at every context length"),
)


def momentum_supplement(per_k: dict, sweep: dict, arrays):
    """Every diagnostic: final losses and differences, learned vs tuned momentum, momentum
    during training, the fixed-momentum sweep and the loss at every context length."""
    depths, final, tuned = _per_k(per_k)
    learned = {v: [per_k[f"K{k}"][v]["learned_momentum"] for k in depths] for v in SYMBOL}
    diffs = {v: np.subtract(final[v], final["plain"]) for v in SYMBOL}
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    final_losses(axes[0, 0], depths, final, tuned)
    series = {f"{DISPLAY[v].split(' (')[0]} − plain": (d, COLORS[v]) for v, d in diffs.items()}
    plotting.offset_errorbars(axes[0, 1], depths, series, 0.1)
    learned_vs_tuned_momentum(axes[0, 2], depths, learned, tuned)
    momentum_during_training(axes[1, 0], arrays["eval_steps"], arrays, depths)
    fixed_momentum_sweep(axes[1, 1], sweep, per_k[f"K{sweep['depth']}"])
    position_losses(axes[1, 2], arrays)
    for ax, (xlabel, ylabel, title) in zip(axes.flat, PANELS, strict=True):
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.legend()
    for ax in axes[0, 1:]:
        ax.axhline(0.0, color="k", lw=0.8)
    axes[1, 1].set_title(f"fixed-momentum sweep at K = {sweep['depth']}, 95% t-interval")
    # Room for the legends above the data.
    axes[0, 0].set_ylim(0.0, 0.5)
    axes[0, 0].legend(loc="upper right")
    axes[1, 0].set_ylim(-0.02, 1.0)
    axes[1, 0].legend(loc="upper center", ncols=4)
    axes[1, 1].set_ylim(None, 0.48)
    axes[1, 1].legend(loc="upper center", ncols=2)
    return fig
