"""Panels of depth studies: deep LSA stacks beside their tuned GD and GD++
(`icl_toy.analysis.layerwise`), and depth sweeps of softmax transformers against the baseline
family (`icl_toy.analysis.depth_alignment`).

Each panel draws saved arrays: trained models as min–max bands over seeds (`seed_band`) or as
one marker per seed (hollow where the seed's convergence record says it had not converged),
the constructions as lines (GD black dashed, GD++ red dotted). Labels use the math names of
the learners; `learner_name` maps the baseline family's code names to them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogLocator, StrMethodFormatter

from icl_toy.analysis.probes import PROBE_KINDS, TARGETS
from icl_toy.analysis.stats import mean_ci
from icl_toy.runs.plotting import (
    clip_top,
    interval_errorbar,
    interval_errors,
    paper_figure,
    seed_band,
)
from icl_toy.training.convergence import converged_flags

GD_STYLE = {"fmt": "k--", "label": "tuned GD"}
GDPP_STYLE = {"fmt": "C3:", "label": "tuned GD++"}
KIND_NAMES = {"per_layer": "per-layer", "recurrent": "recurrent"}
TARGET_NAMES = {"w": r"$w$", "xty": r"$X^\top y$", "w_ols": r"$\hat w_{\mathrm{OLS}}$"}
PROBE_NAMES = {"linear": "linear probe", "mlp": "MLP probe"}
NOT_CONVERGED = "hollow: not converged"
CLOSEST = "closest of all learners (NS-k: k Newton–Schulz steps)"


# --- Convergence records and per-seed markers ------------------------------------------------


def stage_totals(records: dict[str, dict]) -> tuple[int, int]:
    """Converged and total seed runs over every stage's convergence record."""
    return tuple(sum(r[key] for r in records.values()) for key in ("converged", "total"))


def converged_count(record: dict | None, num_seeds: int) -> tuple[int, int]:
    flags = converged_flags(record, num_seeds)
    return int(flags.sum()), flags.size


def seed_markers(ax, x, values, converged, color, marker="o", label=None, ms=3.5) -> None:
    """One marker per seed at the positions `x`: filled if converged, hollow if not (keyed
    once in the legend); `label` names the filled ones."""
    x, values, converged = np.asarray(x), np.asarray(values, dtype=float), np.asarray(converged)
    style = dict(ls="none", marker=marker, color=color, ms=ms)
    ax.plot(x[converged], values[converged], label=label, alpha=0.7, **style)
    ax.plot(x[~converged], values[~converged], mfc="none", mew=0.7, **style)
    if not converged.all() and NOT_CONVERGED not in ax.get_legend_handles_labels()[1]:
        ax.plot([], [], ls="none", marker="o", mfc="none", color="0.35", label=NOT_CONVERGED)


def _spread(x, count: int, width: float, log_x: bool) -> np.ndarray:
    """(count, X) positions fanned out around each x by ± width/2 (a factor on a log axis)."""
    offsets = np.linspace(-width / 2, width / 2, count)[:, None] if count > 1 else np.zeros((1, 1))
    x = np.asarray(x, dtype=float)[None, :]
    return x * 10**offsets if log_x else x + offsets


# --- multi_layer_gdpp: the main figure -------------------------------------------------------


def gamma_vs_context(ax, by_context: dict[str, dict]) -> None:
    """Tuned GD++ γ and the γ̂ that trained recurrent layers imply (mean, 95% t-interval over
    seeds) against N; rows are `layerwise.recurrent_gdpp_table`s."""
    x, rows = [int(n) for n in by_context], list(by_context.values())
    ax.plot(x, [row["gdpp_gamma"] for row in rows], "C3:", marker="^", ms=6, label="tuned GD++ γ")
    records = [mean_ci(np.asarray(row["trained_gamma_per_seed"])) for row in rows]
    ax.errorbar(
        x,
        [r["mean"] for r in records],
        yerr=interval_errors(records),
        fmt="o",
        color="C0",
        label=r"trained $\hat\gamma$, 95% t-interval",
    )
    ax.set(xscale="log", yscale="log", xlabel="context length N", ylabel=r"$\gamma$")
    ax.set_xticks(x, [str(n) for n in x])
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.minorticks_off()


def gamma_gap(ax, by_context: dict[str, dict], records: dict[str, dict]) -> None:
    """Each seed's γ̂ / γ_GD++ − 1 in percent (hollow if not converged) and their mean with
    its 95% t-interval, against N; `records` maps N to the N sweep's convergence record."""
    x, rows = [int(n) for n in by_context], list(by_context.values())
    gaps = [100 * (np.asarray(r["trained_gamma_per_seed"]) / r["gdpp_gamma"] - 1) for r in rows]
    for n, row_gaps in zip(x, gaps, strict=True):
        converged = converged_flags(records.get(str(n)), row_gaps.size)
        positions = _spread([n], row_gaps.size, 0.09, log_x=True)[:, 0] / 10**0.05
        label = "trained, one seed each" if n == x[0] else None
        seed_markers(ax, positions, row_gaps, converged, "C0", label=label)
    intervals = [mean_ci(g) for g in gaps]
    ax.errorbar(
        np.asarray(x) * 10**0.06,
        [i["mean"] for i in intervals],
        yerr=interval_errors(intervals),
        fmt="s",
        color="C3",
        label="mean, 95% t-interval",
    )
    ax.axhline(0.0, color="k", ls="--", label="GD++ γ (paper: equal)")
    ax.set(
        xscale="log", xlabel="context length N", ylabel=r"$\hat\gamma\,/\,\gamma$(GD++) − 1  (%)"
    )
    ax.set_xticks(x, [str(n) for n in x])
    ax.minorticks_off()


def trained_vs_tuned_by_depth(ax, depths, series: dict[str, dict]) -> None:
    """Final held-out loss of trained K-layer models (mean line, one marker per seed, hollow
    if not converged) and of K-step tuned GD (dashed) and GD++ (dotted) in the same colour.

    `series` maps a legend label to {"trained": (S, K), "converged": (S, K), "gd": (K,),
    "gdpp": (K,), "color", "marker"}.
    """
    for i, (label, entry) in enumerate(series.items()):
        color, trained = entry["color"], np.asarray(entry["trained"], dtype=float)
        shift = 0.2 * (i - (len(series) - 1) / 2)  # side by side, so no seed hides another
        positions = _spread(np.asarray(depths) + shift, trained.shape[0], 0.17, log_x=False)
        seed_markers(
            ax,
            positions.ravel(),
            trained.ravel(),
            entry["converged"].ravel(),
            color,
            entry["marker"],
            ms=2.8,
        )
        ax.plot(depths, trained.mean(axis=0), color=color)
        ax.plot([], [], color=color, marker=entry["marker"], label=f"{label}: mean, seeds")
        ax.plot(depths, entry["gd"], color=color, ls="--", lw=1)
        ax.plot(depths, entry["gdpp"], color=color, ls=":", lw=1.4, marker="^", ms=5, mfc="none")
    ax.plot([], [], "k--", lw=1, label="tuned K-step GD")
    ax.plot([], [], "k:", lw=1.4, marker="^", ms=5, mfc="none", label="tuned GD++")
    ax.set(xlabel="layers / steps K", ylabel="held-out loss (half-MSE)")
    ax.set_xticks(depths)


# --- multi_layer_gdpp: the supplement --------------------------------------------------------


def loss_vs_depth(ax, depths, trained_SxK, rows: list[dict], title: str, floor: str) -> None:
    """Final loss of trained K-layer models against K, beside K-step GD and GD++.

    `rows` are `layerwise.comparison_table`s, one per K; `floor` names a floor in the legend
    without drawing it (e.g. an exact OLS).
    """
    seed_band(ax, depths, trained_SxK, "trained LSA", marker="o")
    for style, key, marker in ((GD_STYLE, "gd_loss", "s"), (GDPP_STYLE, "gdpp_loss", "^")):
        ax.plot(
            depths, [row[key] for row in rows], style["fmt"], marker=marker, label=style["label"]
        )
    ax.plot([], [], " ", label=floor)
    ax.set(yscale="log", xlabel="layers / steps K", ylabel="half-MSE", title=title)
    ax.set_xticks(depths)
    ax.legend()


def loss_per_layer(ax, trained_SxL, gd_L, gdpp_L, title: str) -> None:
    """Loss of the readout after every layer; the y axis is capped at 5× the input's loss."""
    layers = np.arange(np.shape(gd_L)[0])
    seed_band(ax, layers, trained_SxL, f"trained, K = {len(layers) - 1}")
    for style, losses in ((GD_STYLE, gd_L), (GDPP_STYLE, gdpp_L)):
        ax.plot(layers, losses, style["fmt"], label=style["label"])
    ax.set(yscale="log", xlabel="readout after layer", ylabel="half-MSE", title=title)
    ax.set_xticks(layers)
    ax.legend(loc="lower left")
    # GD++ tuned for its last step can overshoot in between: clip to keep the detail.
    clip_top(ax, 5 * gd_L[0])


def damped_iterations(ax, trained: dict, gdpp: dict, damping: float) -> None:
    """Loss after each damped pass of a shared layer: {label: (S, L + 1)} bands beside
    {label: (L + 1,)} GD++ lines (dotted, same colour); capped at 5× the input's loss."""
    for i, label in enumerate(trained):
        it = np.arange(trained[label].shape[1])
        seed_band(ax, it, trained[label], label, color=f"C{i}")
        ax.plot(it, gdpp[label], ls=":", color=f"C{i}")
    ax.plot([], [], "k:", label="GD++ iterated (same colour)")
    xlabel = f"passes of the recurrent layer (update × {damping})"
    ax.set(yscale="log", xlabel=xlabel, ylabel="half-MSE", title="Past the training depth")
    ax.legend(loc="lower left")
    clip_top(ax, 5 * next(iter(gdpp.values()))[0])


def fitted_vs_implied_gamma(ax, by_context: dict[str, dict]) -> None:
    """Tuned GD++ γ and the γ̂ trained recurrent layers imply (mean ± sd over seeds) against
    N, with both losses on a twin log axis; rows are `layerwise.recurrent_gdpp_table`s."""
    x, rows = [int(n) for n in by_context], list(by_context.values())
    ax.plot(x, [row["gdpp_gamma"] for row in rows], "C3-o", label="tuned GD++ γ")
    mean = [row["trained_gamma"]["mean"] for row in rows]
    std = [row["trained_gamma"]["std"] for row in rows]
    ax.errorbar(x, mean, yerr=std, fmt="C0s", label=r"trained $\hat\gamma$ (mean ± sd)")
    ax.set(xscale="log", xlabel="context length N", ylabel=r"$\gamma$")
    ax.set_title("Recurrent, K = 2: γ and loss vs N")
    twin = ax.twinx()
    twin.plot(x, [row["trained_loss"]["mean"] for row in rows], "C0--", label="trained loss")
    twin.plot(x, [row["gdpp_loss"] for row in rows], "C3:", label="GD++ loss")
    twin.set(yscale="log", ylabel="half-MSE (dashed, dotted)")
    twin.grid(False)
    (handles, labels), (more_handles, more_labels) = (
        axes.get_legend_handles_labels() for axes in (ax, twin)
    )
    ax.legend(handles + more_handles, labels + more_labels, loc="upper right")


def sensitivity_cosines(ax, depths, cosines: dict, kinds: Sequence[str]) -> None:
    """Cosines with GD (dashed) and GD++ (solid) against K: {(kind, "gd" | "gdpp"): (S, K)}."""
    for kind, marker in zip(kinds, "os^v", strict=False):
        for key, label, ls in (("gd", "GD", "--"), ("gdpp", "GD++", "-")):
            label = f"{KIND_NAMES.get(kind, kind)} vs tuned {label}"
            seed_band(ax, depths, cosines[kind, key], label, marker=marker, ls=ls)
    ax.set(xlabel="K", ylabel=r"cos($\partial\hat y/\partial x_q$)", title="Alignment")
    ax.set_xticks(depths)
    low = min(float(np.min(values)) for values in cosines.values())
    ax.set_ylim(low - 1.2 * (1 - low), 1 + 0.05 * (1 - low))  # the legend goes below the data
    ax.legend(loc="lower left")


# --- which_algorithm: learner names ----------------------------------------------------------


def _steps(k: str) -> str:
    return f"{k} step" if k == "1" else f"{k} steps"


_LEARNER_PATTERNS = (
    (r"ols", lambda m: "OLS"),
    (r"zero", lambda m: "zero"),
    (r"ridge\(λ=(.+)\)", lambda m: f"ridge λ={m[1]}"),
    (r"ridge\(Bayes λ=(.+)\)", lambda m: f"ridge, Bayes λ={m[1]}"),
    (r"gd\(K=(\d+), η=.+\)", lambda m: f"GD, {_steps(m[1])}"),
    (r"line_search_gd\(K=(\d+)\)", lambda m: f"line-search GD, {_steps(m[1])}"),
    (r"cg\(K=(\d+)\)", lambda m: f"CG, {_steps(m[1])}"),
    (r"newton_schulz\(k=(\d+)\)", lambda m: f"Newton–Schulz, {_steps(m[1])}"),
    (r"knn\(k=(\d+)\)", lambda m: f"{m[1]}-NN"),
)


def short_learner_name(code: str) -> str:
    """A name short enough to write under a tick: "newton_schulz(k=2)" → "NS-2", ridge on
    two lines with λ to 3 digits."""
    name = learner_name(code)
    if name.startswith("ridge λ="):
        return f"ridge\nλ={float(name.split('=')[1]):.3g}"
    for long, short in (("Newton–Schulz", "NS"), ("line-search GD", "LS-GD"), ("CG", "CG")):
        if name.startswith(long + ","):
            return f"{short}-{name.split(', ')[1].split()[0]}"
    return name.replace("GD, 1 step", "GD-1").replace("GD, 2 steps", "GD-2")


def learner_name(code: str) -> str:
    """The display name of a `baselines.baseline_family` name, e.g. "cg(K=2)" → "CG, 2 steps"."""
    for pattern, name in _LEARNER_PATTERNS:
        match = re.fullmatch(pattern, code)
        if match:
            return name(match)
    return code


# --- which_algorithm: the main figure --------------------------------------------------------


def closest_learners(ax, setting: dict) -> None:
    """SPD / d of the model to one tuned GD step, OLS and (with noise) Bayes ridge by depth,
    mean with 95% t-interval, and the closest learner of the whole family (×), named under
    each depth's tick."""
    entries, bayes = setting["depths"], setting["bayes_lambda"]
    depths = np.asarray([e["depth"] for e in entries], dtype=float)
    labels = {"gd": "GD, 1 step (tuned η)", "ols": "OLS"}
    if bayes and entries[0]["spd_to"].get("ridge_bayes") is not None:
        labels["ridge_bayes"] = f"ridge, Bayes λ = {bayes:.3g}"
    for i, (key, label) in enumerate(labels.items()):
        shift = 2 ** (0.14 * (i - (len(labels) - 1) / 2))  # so no interval hides another
        intervals = [e["spd_to"][key] for e in entries]
        interval_errorbar(ax, depths * shift, intervals, marker="o", color=f"C{i}", label=label)
    closest = [e["closest_by_spd"] for e in entries]
    ax.plot(depths, [c["spd"]["mean"] for c in closest], "kx", ms=5, label=CLOSEST)
    ticks = [
        f"{d:g}\n{short_learner_name(c['name'])}" for d, c in zip(depths, closest, strict=True)
    ]
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, ticks)
    ax.minorticks_off()
    ax.set(xlabel="depth (layers) and closest learner ×", ylabel="SPD / d to the model")
    bottom, top = ax.get_ylim()
    ax.set_ylim(min(bottom, 0.0), top)


def losses_by_depth(ax, settings: list[dict], convergence: dict) -> None:
    """Each seed's held-out loss by depth (hollow if not converged) and the mean, per noise
    level, beside one tuned GD step (dashed) and OLS (dotted) in the same colour."""
    for i, setting in enumerate(settings):
        color, sigma = f"C{4 + i}", f"σ = {setting['noise_std']:g}"
        entries = setting["depths"]
        shift = 2 ** (0.1 * (i - (len(settings) - 1) / 2))
        depths = np.asarray([e["depth"] for e in entries], dtype=float) * shift
        for depth, e in zip(depths, entries, strict=True):
            values = np.asarray(e["model_half_mse_per_seed"])
            flags = converged_flags(convergence.get(f"noise{i}/depth{e['depth']}"), values.size)
            seed_markers(ax, np.full(values.size, depth), values, flags, color)
        means = [e["model_half_mse"]["mean"] for e in entries]
        ax.plot(
            depths, means, color=color, marker="_", ms=8, label=f"trained, {sigma}: mean, seeds"
        )
        base = setting["baseline_half_mse"]
        ax.axhline(base[setting["gd_baseline"]], color=color, ls="--", lw=1)
        ax.axhline(base["ols"], color=color, ls=":", lw=1.4)
    ax.plot([], [], "k--", lw=1, label="GD, 1 step (same colour)")
    ax.plot([], [], "k:", lw=1.4, label="OLS (same colour)")
    ticks = [e["depth"] for e in settings[0]["depths"]]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(d) for d in ticks])
    ax.minorticks_off()
    ax.set(xlabel="depth (layers)", ylabel="held-out loss (half-MSE)")
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top + 0.6 * (top - bottom))  # room for the legend


def depth_sweep_main(settings: list[dict], convergence: dict, budget: str):
    """The main figure of a depth sweep: the closest learners by depth at each noise level
    (titles say how many seed runs converged, the legend above how many in all), then the
    losses by depth; `budget` names the training budget."""
    fig, axes = paper_figure(len(settings) + 1, height=3.0)
    axes = axes[0]
    for i, (ax, setting) in enumerate(zip(axes, settings, strict=False)):
        records = [convergence.get(f"noise{i}/depth{e['depth']}") for e in setting["depths"]]
        counts = [
            converged_count(r, e["model_half_mse"]["n"])
            for r, e in zip(records, setting["depths"], strict=True)
        ]
        done, total = (sum(c[j] for c in counts) for j in (0, 1))
        closest_learners(ax, setting)
        sigma = f"σ = {setting['noise_std']:g}"
        ax.set_title(f"({chr(97 + i)}) {sigma}: converged {done}/{total} seeds")
    handles = {}
    for ax in axes[:-1]:
        handles |= dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    note = plt.Line2D([], [], ls="none")
    done, total = stage_totals(convergence)
    if convergence and done == total:
        status = f"{budget}: every seed converged"
    else:
        status = f"{budget}: {done}/{total} seeds converged (others: not a result)"
    handles = {status: note} | handles
    handles["bars: mean, 95% t-interval"] = note
    fig.legend(handles.values(), handles.keys(), loc="outside upper center", ncols=3)
    losses_by_depth(axes[-1], settings, convergence)
    axes[-1].set_title(f"({chr(97 + len(settings))}) held-out loss by depth")
    axes[-1].legend(loc="upper right", fontsize=6.5)
    return fig


# --- which_algorithm: the supplement ---------------------------------------------------------


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
            f"λ={fit['best_lambda']:.3g}", (depth, spd), textcoords="offset points", xytext=(4, -10)
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set(xlabel="depth (layers)", ylabel="SPD / d to the model", title=title)
    ax.legend(fontsize=6.5)


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
            label=f"{TARGET_NAMES.get(target, target)}, {PROBE_NAMES.get(kind, kind)}",
        )
    lowest = min(float(np.min(values)) for values in r2.values())
    ax.set_ylim(max(-0.6, min(-0.1, lowest - 0.05)), 1.02)
    ax.set(xlabel="layer (0 = embedding)", ylabel="held-out R² (mean of seeds)", title=title)
    ax.legend(ncol=2, fontsize=6.5)


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
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set(xlabel="depth (layers)", ylabel="held-out half-MSE", title="Loss by depth")
    ax.legend(fontsize=6.5)


def training_curves(ax, curves: dict[str, tuple], styles: dict[str, dict], title: str) -> None:
    """Mean over seeds of each curve {label: (steps (C,), loss (S, C), kind)}, log scale;
    `kind` names the loss ("held-out" or "train, chunk means")."""
    for label, (steps, loss_SxC, _) in curves.items():
        ax.plot(steps, loss_SxC.mean(axis=0), label=label, **styles[label])
    kinds = sorted({kind for *_, kind in curves.values()})
    ax.set_yscale("log")
    ylabel = f"half-MSE, mean of seeds ({' / '.join(kinds)})"
    ax.set(xlabel="training step", ylabel=ylabel, title=title)
    ax.legend(fontsize=6.5, ncol=2)


def loss_curve(arrays, suffix: str, eval_every: int) -> tuple:
    """A run's curve for `training_curves`: its held-out loss where it was saved, else its
    training loss in chunk means of `eval_every` steps."""
    if f"eval_loss_{suffix}" in arrays:
        return arrays[f"eval_steps_{suffix}"], arrays[f"eval_loss_{suffix}"], "held-out"
    loss = arrays[f"train_loss_{suffix}"]
    return (np.arange(loss.shape[1]) + 1) * eval_every, loss, "train, chunk means"


def noise_level_panels(
    axes, ax_loss, setting: dict, arrays, i: int, eval_every: int
) -> tuple[dict, dict]:
    """The panels of noise level `i` of a depth sweep (`depth_alignment.depth_entries`).

    Draws the closest baselines by depth on `axes[0]`, the probes of the deepest model on
    `axes[1]` and the model's loss beside one tuned GD step and OLS on `ax_loss` (colour
    C{i}); returns this level's `loss_curve`s by label and their line styles.
    """
    entries, bayes, tag = setting["depths"], setting["bayes_lambda"], f"noise{i}"
    depths, sigma = [e["depth"] for e in entries], f"σ = {setting['noise_std']:g}"
    labels = {"gd": "GD, 1 step (tuned η)", "ols": "OLS"}
    if entries[0]["spd_to"]["ridge_bayes"] is not None and bayes:
        labels["ridge_bayes"] = f"ridge, Bayes λ = {bayes:.3g}"
    labels = {k: f"{v} (95% t-int.)" for k, v in labels.items()}
    closest_by_depth(axes[0], entries, labels, f"{sigma}: SPD to learners by depth")
    deepest = max(depths)
    r2 = {
        (kind, target): arrays[f"probe_{kind}_{target}_{tag}_depth{deepest}"]
        for target in TARGETS
        for kind in PROBE_KINDS
    }
    probe_layers(axes[1], r2, f"{sigma}: probes of the depth-{deepest} model")
    base = setting["baseline_half_mse"]
    lines = {f"GD, 1 step, {sigma}": base[setting["gd_baseline"]], f"OLS, {sigma}": base["ols"]}
    losses = [e["model_half_mse"] for e in entries]
    loss_by_depth(ax_loss, depths, losses, lines, f"C{i}", f"trained, {sigma} (95% t-int.)")
    labels = {depth: f"depth {depth}, {sigma}" for depth in depths}
    curves = {labels[d]: loss_curve(arrays, f"{tag}_depth{d}", eval_every) for d in depths}
    styles = {
        labels[d]: {"color": f"C{j}", "ls": ["-", "--", ":"][i % 3]} for j, d in enumerate(depths)
    }
    return curves, styles


def depth_sweep_figure(settings: list[dict], arrays, eval_every: int, convergence: dict):
    """A depth sweep's dashboard: one column of `noise_level_panels` per noise level, then
    the losses by depth over the training (`loss_curve`: held-out where saved), whose
    title counts the converged seed runs of `convergence` (records by stage)."""
    n = len(settings)
    fig, axes = plt.subplots(2, n + 1, figsize=(3.9 * (n + 1), 6.6), squeeze=False)
    curves, styles = {}, {}
    for i, setting in enumerate(settings):
        level = noise_level_panels(axes[:, i], axes[0, -1], setting, arrays, i, eval_every)
        curves, styles = curves | level[0], styles | level[1]
    done, total = stage_totals(convergence)
    title = f"Training (converged {done}/{total} seeds)" if convergence else "Training"
    training_curves(axes[1, -1], curves, styles, title)
    return fig
