"""Panels of depth studies: deep LSA stacks beside their tuned GD and GD++
(`icl_toy.analysis.layerwise`), and depth sweeps of softmax transformers against the baseline
family (`icl_toy.analysis.depth_alignment`).

Each panel draws saved arrays: trained models as min–max bands over seeds (`seed_band`),
the constructions as lines (GD black dashed, GD++ red dotted). Losses are on a log axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from icl_toy.analysis.probes import PROBE_KINDS, TARGETS
from icl_toy.runs.plotting import (
    clip_top,
    finish_axes,
    interval_errorbar,
    merged_legend,
    seed_band,
    stats_errorbar,
)

GD_STYLE = {"fmt": "k--", "label": "tuned GD"}
GDPP_STYLE = {"fmt": "C3:", "label": "tuned GD++"}


def loss_vs_depth(ax, depths, trained_SxK, rows: list[dict], title: str, floor: str) -> None:
    """Final loss of trained K-layer models against K, beside K-step GD and GD++.

    `rows` are `layerwise.comparison_table`s, one per K; `floor` names a floor in the legend
    without drawing it (e.g. an exact OLS).
    """
    seed_band(ax, depths, trained_SxK, "trained LSA", marker="o")
    for style, key, marker in ((GD_STYLE, "gd_loss", "s"), (GDPP_STYLE, "gdpp_loss", "^")):
        losses = [row[key] for row in rows]
        ax.plot(depths, losses, style["fmt"], marker=marker, label=style["label"])
    ax.plot([], [], " ", label=floor)
    finish_axes(ax, title, "layers / steps K", "half-MSE", log_y=True, xticks=depths)


def loss_per_layer(ax, trained_SxL, gd_L, gdpp_L, title: str) -> None:
    """Loss of the readout after every layer; the y axis is capped at 5× the input's loss."""
    layers = np.arange(np.shape(gd_L)[0])
    seed_band(ax, layers, trained_SxL, f"trained K={len(layers) - 1}")
    for style, losses in ((GD_STYLE, gd_L), (GDPP_STYLE, gdpp_L)):
        ax.plot(layers, losses, style["fmt"], label=style["label"])
    finish_axes(ax, title, "readout after layer", "half-MSE", log_y=True)
    # GD++ tuned for its last step can overshoot in between: clip to keep the detail.
    clip_top(ax, 5 * gd_L[0])


def damped_iterations(ax, trained: dict, gdpp: dict, damping: float) -> None:
    """Loss after each damped pass of a shared layer: {label: (S, L + 1)} bands beside
    {label: (L + 1,)} GD++ lines (dotted, same colour); capped at 5× the input's loss."""
    for i, label in enumerate(trained):
        it = np.arange(trained[label].shape[1])
        seed_band(ax, it, trained[label], label, color=f"C{i}")
        ax.plot(it, gdpp[label], ls=":", color=f"C{i}")
    xlabel = f"iterations of the recurrent layer (update × {damping})"
    title = "Past the training depth (dotted: GD++)"
    finish_axes(ax, title, xlabel, "half-MSE", log_y=True, legend_fontsize=7)
    clip_top(ax, 5 * next(iter(gdpp.values()))[0])


def fitted_vs_implied_gamma(ax, by_context: dict[str, dict]) -> None:
    """Fitted GD++ γ and the γ trained recurrent layers imply (mean ± std over seeds) against
    N, with both losses on a twin log axis; rows are `layerwise.recurrent_gdpp_table`s."""
    x, rows = [int(n) for n in by_context], list(by_context.values())
    ax.plot(x, [row["gdpp_gamma"] for row in rows], "C3-o", label="fitted GD++ γ")
    stats_errorbar(ax, x, [row["trained_gamma"] for row in rows], "C0s", "trained implied γ")
    ax.set_xscale("log")
    finish_axes(ax, "Recurrent 2-layer: GD++ γ vs N", "context length N", "γ", legend_fontsize=0)
    twin = ax.twinx()
    twin.plot(x, [row["trained_loss"]["mean"] for row in rows], "C0--", label="trained loss")
    twin.plot(x, [row["gdpp_loss"] for row in rows], "C3:", label="GD++ loss")
    twin.set(yscale="log", ylabel="half-MSE")
    merged_legend(ax, twin, fontsize=7)


def sensitivity_cosines(ax, depths, cosines: dict, kinds: Sequence[str]) -> None:
    """Cosines with GD (dashed) and GD++ (solid) against K: {(kind, "gd" | "gdpp"): (S, K)}."""
    for kind, marker in zip(kinds, "os^v", strict=False):
        for key, label, ls in (("gd", "GD", "--"), ("gdpp", "GD++", "-")):
            label = f"vs {label} ({kind})"
            seed_band(ax, depths, cosines[kind, key], label, marker=marker, ls=ls)
    finish_axes(ax, "Alignment of trained models", "K", "sensitivity cosine", xticks=depths)


def closest_by_depth(ax, entries: list[dict], labels: dict[str, str], title: str) -> None:
    """SPD / d to each reference baseline by depth (95% intervals), and the best ridge λ.

    `entries` are `depth_summary` records with a "depth"; `labels` maps the keys of their
    "spd_to" to legend labels. The dotted line is the smallest mean SPD over the ridge grid,
    annotated with its λ.
    """
    depths = [e["depth"] for e in entries]
    for key, label in labels.items():
        interval_errorbar(ax, depths, [e["spd_to"][key] for e in entries], marker="o", label=label)
    fits = [e["ridge_fit"] for e in entries]
    best_spd = [min(f["spd_mean"]) for f in fits]
    ax.plot(depths, best_spd, "k:", marker="s", label="best ridge λ on the grid")
    for depth, fit, spd in zip(depths, fits, best_spd, strict=True):
        ax.annotate(
            f"λ={fit['best_lambda']:.3g}",
            (depth, spd),
            fontsize=7,
            textcoords="offset points",
            xytext=(3, -10),
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="depth (layers)", ylabel="SPD / d to the model", title=title)
    ax.legend(fontsize=7)


def probe_layers(ax, r2: dict[tuple[str, str], np.ndarray], title: str) -> None:
    """Mean held-out probe R² by layer: one colour per target, solid linear, dashed MLP.

    `r2` maps (probe kind, target) to (S, L + 1) values, layer 0 being the embedding.
    """
    targets = list(dict.fromkeys(target for _, target in r2))
    for (kind, target), values_SxL in r2.items():
        ax.plot(
            np.arange(values_SxL.shape[1]),
            values_SxL.mean(axis=0),
            "-" if kind == "linear" else "--",
            color=f"C{targets.index(target)}",
            marker="o",
            ms=3,
            label=f"{target} ({kind})",
        )
    lowest = min(float(np.min(values)) for values in r2.values())
    ax.set_ylim(max(-0.6, min(-0.1, lowest - 0.05)), 1.02)
    ax.set(xlabel="layer (0 = embedding)", ylabel="held-out R²", title=title)
    ax.legend(fontsize=7)


def loss_by_depth(
    ax, depths, losses: list[dict], references: dict[str, float], color: str, label: str
) -> None:
    """The model's held-out half-MSE by depth (interval records), reference losses as lines.

    `references` maps a legend label to a baseline's loss (at most three: dotted, dashed,
    dash-dotted), drawn in the model's `color`.
    """
    interval_errorbar(ax, depths, losses, marker="o", color=color, label=label)
    for (name, loss), ls in zip(references.items(), (":", "--", "-."), strict=False):
        ax.axhline(loss, color=color, ls=ls, lw=1, label=name)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="depth (layers)", ylabel="held-out half-MSE", title="Loss by depth")
    ax.legend(fontsize=7)


def training_curves(ax, curves: dict[str, np.ndarray], steps, styles: dict[str, dict]) -> None:
    """Mean over seeds of each (S, C) training-loss curve at `steps`, log scale."""
    for label, loss_SxC in curves.items():
        ax.plot(steps, loss_SxC.mean(axis=0), label=label, **styles[label])
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="train half-MSE (chunk mean)", title="Training")
    ax.legend(fontsize=6, ncol=2)


def noise_level_panels(axes, ax_loss, setting: dict, arrays, i: int) -> tuple[dict, dict]:
    """The panels of noise level `i` of a depth sweep (`depth_alignment.depth_entries`).

    Draws the closest baselines by depth on `axes[0]`, the probes of the deepest model on
    `axes[1]` and the model's loss beside one tuned GD step and OLS on `ax_loss` (colour
    C{i}); returns this level's training curves {label: (S, C)} and their line styles.
    """
    entries, bayes, tag = setting["depths"], setting["bayes_lambda"], f"noise{i}"
    depths, sigma = [e["depth"] for e in entries], f"σ = {setting['noise_std']:g}"
    labels = {"gd": "GD (K=1, tuned η)", "ols": "OLS"}
    if entries[0]["spd_to"]["ridge_bayes"] is not None and bayes:
        labels["ridge_bayes"] = f"ridge (Bayes λ={bayes:.3g})"
    closest_by_depth(axes[0], entries, labels, f"{sigma}: closest algorithm by depth")
    deepest = max(depths)
    r2 = {
        (kind, target): arrays[f"probe_{kind}_{target}_{tag}_depth{deepest}"]
        for target in TARGETS
        for kind in PROBE_KINDS
    }
    probe_layers(axes[1], r2, f"{sigma}: probes of the depth-{deepest} model")
    base = setting["baseline_half_mse"]
    lines = {f"GD K=1, {sigma}": base[setting["gd_baseline"]], f"OLS, {sigma}": base["ols"]}
    losses = [e["model_half_mse"] for e in entries]
    loss_by_depth(ax_loss, depths, losses, lines, f"C{i}", f"model, {sigma}")
    labels = {depth: f"depth {depth}, {sigma}" for depth in depths}
    curves = {labels[depth]: arrays[f"train_loss_{tag}_depth{depth}"] for depth in depths}
    styles = {
        labels[d]: {"color": f"C{j}", "ls": ["-", "--", ":"][i % 3]} for j, d in enumerate(depths)
    }
    return curves, styles


def depth_sweep_figure(settings: list[dict], arrays, eval_every: int, title: str):
    """A depth sweep's figure: one column of `noise_level_panels` per noise level, then the
    losses by depth over the training curves (chunk means of `eval_every` steps)."""
    n = len(settings)
    fig, axes = plt.subplots(2, n + 1, figsize=(5.2 * (n + 1), 8.5))
    axes = np.asarray(axes).reshape(2, n + 1)
    curves, styles = {}, {}
    for i, setting in enumerate(settings):
        level = noise_level_panels(axes[:, i], axes[0, -1], setting, arrays, i)
        curves, styles = curves | level[0], styles | level[1]
    steps = (np.arange(next(iter(curves.values())).shape[1]) + 1) * eval_every
    training_curves(axes[1, -1], curves, steps, styles)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
