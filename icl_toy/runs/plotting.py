"""Plot helpers shared by experiments. They draw from saved arrays only.

Every study draws its figures with one function, `figures(results) -> {name: Figure}`: the
main figure `NAME` (7 in wide, one to three panels that show the study's claim) and the
dashboard `NAME_supplement` (every diagnostic the run saved). `save_figures` draws them in
the package's paper style (`paper.mplstyle`) and writes each as PNG and PDF;
`text_collisions` lists text that overlaps other text or leaves the canvas, which the
suite checks on every committed figure.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # experiments write files; no display is assumed

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.transforms import Bbox

from icl_toy.analysis.stats import mean_ci
from icl_toy.runs.results import atomic_write_bytes

STYLE = Path(__file__).with_name("paper.mplstyle")
PAPER_WIDTH = 7.0  # inches: a main figure spans a two-column page's text width
BANDS = {  # what a shaded band means, as its legend entry says
    "range": "band: seed min–max",
    "ci": "band: 95% t-interval",
    "sd": "band: ±1 sd of seeds",
}
BAND_ALPHA = 0.25


def paper_figure(ncols: int = 1, nrows: int = 1, height: float = 2.4, **subplots_kwargs):
    """(fig, axes) of a main figure: PAPER_WIDTH wide, an (nrows, ncols) array of axes.

    Call it inside the paper style (`save_figures` and `drawn_figures` enter it).
    """
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(PAPER_WIDTH, height), squeeze=False, **subplots_kwargs
    )
    return fig, axes


def band_key(ax, band: str) -> None:
    """Add the legend entry that says what the shaded bands on `ax` mean, once per axes."""
    note = BANDS[band]
    if any(patch.get_label() == note for patch in ax.patches):
        return
    # A zero-size rectangle is left out of the data limits but shows in the legend.
    ax.add_patch(Rectangle((0, 0), 0, 0, color="0.5", alpha=2 * BAND_ALPHA, lw=0, label=note))


def seed_band(ax, x, values_SxX, label: str, color=None, **line_kwargs) -> None:
    """Mean over seeds as a line, min-max over seeds as a shaded band (keyed in the
    legend)."""
    values_SxX = np.asarray(values_SxX, dtype=float)
    mean = np.nanmean(values_SxX, axis=0)
    (line,) = ax.plot(x, mean, label=label, color=color, **line_kwargs)
    ax.fill_between(
        x,
        np.nanmin(values_SxX, axis=0),
        np.nanmax(values_SxX, axis=0),
        color=line.get_color(),
        alpha=BAND_ALPHA,
        linewidth=0,
    )
    band_key(ax, "range")


def interval_band(
    ax, x, record, label: str, color=None, log_axis: bool = False, band="ci", **line_kwargs
) -> None:
    """An interval record with lists over `x`: "mean" as a line, [low, high] as a band.

    A None (a non-finite value saved as JSON null) leaves a gap. With `log_axis`, an
    interval reaching 0 (low <= 0, e.g. OLS near n = d, whose noisy risk is infinite) says
    nothing on the axis and is left undrawn rather than filled to the bottom. `band` names
    what the interval is (a key of BANDS) for the legend.
    """
    mean, low, high = (np.asarray(record[k], dtype=float) for k in ("mean", "low", "high"))
    (line,) = ax.plot(x, mean, label=label, color=color, **line_kwargs)
    if log_axis:
        low, high = np.where(low > 0, low, np.nan), np.where(low > 0, high, np.nan)
    ax.fill_between(x, low, high, color=line.get_color(), alpha=BAND_ALPHA, linewidth=0)
    band_key(ax, band)


def seed_strip(ax, values_S, label: str, color="C0", x: float = 0.0) -> None:
    """Each seed's value as a dot (spread sideways around `x`), and beside them the mean with
    its 95% t-interval (`mean_ci`): a final gap in percent reads on a linear axis."""
    values_S = np.asarray(values_S, dtype=float)
    jitter = x + np.linspace(-0.15, 0.15, values_S.size)
    ax.plot(jitter, values_S, "o", color=color, alpha=0.6, label=label)
    interval = mean_ci(values_S)
    ax.errorbar(
        [x + 0.45],
        [interval["mean"]],
        yerr=interval_errors([interval]),
        fmt="s",
        color="C3",
        label="mean, 95% t-interval",
    )


def interval_errors(records) -> np.ndarray:
    """(2, R) distances [mean − low; high − mean] of interval records: errorbar's xerr/yerr."""
    mean, low, high = (
        np.asarray([r[k] for r in records], dtype=float) for k in ("mean", "low", "high")
    )
    return np.stack([mean - low, high - mean])


def heatmap(ax, matrix, title: str, vmax: float | None = None) -> None:
    """A symmetric-colour heatmap of one matrix, with a colour bar."""
    matrix = np.asarray(matrix, dtype=float)
    vmax = float(np.nanmax(np.abs(matrix))) if vmax is None else vmax
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    colorbar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.ax.grid(False)


def _png_dpi(fig) -> float:
    """savefig.dpi (300: a main figure at print resolution), capped so that no PNG is wider
    than a main figure's 2100 px: a wide supplement renders in a fraction of the time."""
    return min(float(plt.rcParams["savefig.dpi"]), 3 * PAPER_WIDTH * 100 / fig.get_figwidth())


def save_figure(fig, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Write `name.png` and `name.pdf` atomically and close the figure."""
    paths = []
    for ext in ("png", "pdf"):
        buffer = io.BytesIO()
        # No creation date in the PDF: a redraw of the same results gives the same bytes.
        metadata = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(buffer, format=ext, metadata=metadata, dpi=_png_dpi(fig))
        path = Path(out_dir) / f"{name}.{ext}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
        # The layout is solved; keep it for the PDF rather than solving it again.
        fig.set_layout_engine("none")
    plt.close(fig)
    return paths


@contextlib.contextmanager
def drawn_figures(draw: Callable[..., dict[str, Figure]], *args) -> Iterator[dict[str, Figure]]:
    """`draw(*args)` in the paper style: {name: Figure}, closed on exit."""
    with plt.style.context(STYLE):
        figures = draw(*args)
        try:
            yield figures
        finally:
            for fig in figures.values():
                plt.close(fig)


def save_figures(draw: Callable[..., dict[str, Figure]], *args, out_dir) -> list[Path]:
    """Draw `draw(*args)` in the paper style and write each figure as NAME.png and NAME.pdf.

    The style stays on while saving: tick labels are made when the figure is drawn.
    """
    with drawn_figures(draw, *args) as figures:
        return [path for name, fig in figures.items() for path in save_figure(fig, out_dir, name)]


def _text_boxes(fig: Figure) -> list[tuple[str, Bbox]]:
    """(description, window extent) of every visible, non-empty text of `fig`: figure texts,
    axes titles, axis labels, offset texts, the tick labels inside the view, in-axes texts,
    and each legend as one box."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # Newer matplotlib keeps the suptitle (and sup-labels) in fig.texts too: each text once.
    special = {
        id(getattr(fig, n, None)): n.strip("_") for n in ("_suptitle", "_supxlabel", "_supylabel")
    }
    texts = [(special.get(id(t), "figure text"), t) for t in fig.texts]
    for name in ("_suptitle", "_supxlabel", "_supylabel"):
        text = getattr(fig, name, None)
        if text is not None and all(text is not t for t in fig.texts):
            texts.append((name.strip("_"), text))
    boxes = [
        (f"figure legend {i}", legend.get_window_extent(renderer))
        for i, legend in enumerate(fig.legends)
    ]
    for index, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        where = f"axes {index} ({ax.get_title() or ax.get_label() or 'untitled'})"
        texts += [(f"{where} title", t) for t in (ax.title, ax._left_title, ax._right_title)]
        texts += [(f"{where} text", t) for t in ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            name = axis.axis_name
            texts += [(f"{where} {name} label", axis.label), (f"{where} offset", axis.offsetText)]
            low, high = sorted(axis.get_view_interval())
            span = (high - low) * 1e-6
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - span <= tick.get_loc() <= high + span:
                    continue
                for label in (tick.label1, tick.label2):
                    texts.append((f"{where} {name} tick {label.get_text()!r}", label))
        if ax.get_legend() is not None and ax.get_legend().get_visible():
            boxes.append((f"{where} legend", ax.get_legend().get_window_extent(renderer)))
    for description, text in texts:
        if text.get_visible() and text.get_text().strip():
            boxes.append((description, text.get_window_extent(renderer)))
    return boxes


def text_collisions(fig: Figure, tolerance_px: float = 1.5) -> list[str]:
    """Every pair of text boxes of `fig` that overlap, and every box that leaves the canvas.

    Boxes are shrunk by `tolerance_px` on each side first: a text's box includes its ascent
    and descent, so neighbours that only touch are not collisions. Empty: a clean figure.
    """
    canvas = fig.bbox
    boxes = [(d, b.padded(-tolerance_px)) for d, b in _text_boxes(fig)]
    problems = [
        f"{d} leaves the canvas"
        for d, b in boxes
        if b.x0 < canvas.x0 - 1
        or b.y0 < canvas.y0 - 1
        or b.x1 > canvas.x1 + 1
        or b.y1 > canvas.y1 + 1
    ]
    for (d1, b1), (d2, b2) in itertools.combinations(boxes, 2):
        if b1.width > 0 and b1.height > 0 and b2.width > 0 and b2.height > 0 and b1.overlaps(b2):
            problems.append(f"{d1} overlaps {d2}")
    return problems


def clip_top(ax, limit: float) -> None:
    """Cap the y axis at `limit` if it reaches above, saying so in the title."""
    bottom, top = ax.get_ylim()
    if top > limit:
        ax.set_ylim(bottom, limit)
        ax.set_title(ax.get_title() + " (clipped)")


def seed_bands(ax, x, curves_SxX: dict, **line_kwargs) -> None:
    """`seed_band` of every entry of {label: (S, X) values}, in colours C0, C1, ..."""
    for i, (label, values_SxX) in enumerate(curves_SxX.items()):
        seed_band(ax, x, values_SxX, label, color=f"C{i}", **line_kwargs)


def seed_lines(ax, x, values_SxX, label: str | None, **line_kwargs) -> None:
    """One line per seed (row of `values_SxX`), labelled once."""
    for seed, curve in enumerate(np.asarray(values_SxX, dtype=float)):
        ax.plot(x, curve, label=label if seed == 0 else None, **line_kwargs)


def seed_mean_line(ax, x, values_SxX, label: str, color=None, **mean_kwargs) -> None:
    """Each seed as a faint thin line, the mean over seeds as a labelled line on top."""
    seed_lines(ax, x, values_SxX, None, color=color, alpha=0.2, lw=0.6)
    ax.plot(x, np.mean(values_SxX, axis=0), color=color, label=label, **mean_kwargs)


def seed_errorbars(ax, x, values_per_x, **errorbar_kwargs) -> None:
    """At each x the mean over its per-seed values, with the 95% t-interval (`mean_ci`)."""
    records = [mean_ci(np.asarray(values, dtype=float)) for values in values_per_x]
    mean = [r["mean"] for r in records]
    ax.errorbar(x, mean, yerr=interval_errors(records), capsize=3, **errorbar_kwargs)


def offset_errorbars(ax, x, series: dict[str, tuple[list, str]], spread: float) -> None:
    """Several `seed_errorbars` series at the same x, each shifted by `spread` so none hides
    another.

    `series` maps a legend label to (per-seed values at each x, colour); x gets the ticks.
    """
    for i, (label, (values_per_x, color)) in enumerate(series.items()):
        x_shifted = np.asarray(x) + spread * (i - (len(series) - 1) / 2)
        seed_errorbars(ax, x_shifted, values_per_x, fmt="o", color=color, label=label)
    ax.set_xticks(x)


POSITION_CURVES = {  # the curves of `one_layer_position_curves`: (format, label)
    "trained_causal": ("o-", "trained K=1 LSA, causal readout"),
    "trained_prefix": ("x", "same, label-free prefix prompts"),
    "gd_construction": ("k--", "GD construction η*, causal"),
    "gd_best_per_length": ("k:", "best 1-step GD η*(n)"),
}


def interval_errorbar(ax, x, intervals: list[dict], **errorbar_kwargs) -> None:
    """Means with their intervals as error bars; each interval is a {mean, low, high} record."""
    mean = np.array([i["mean"] for i in intervals], dtype=float)
    low = np.array([i["low"] for i in intervals], dtype=float)
    high = np.array([i["high"] for i in intervals], dtype=float)
    ax.errorbar(x, mean, yerr=[mean - low, high - mean], capsize=3, **errorbar_kwargs)


def heatmap_pair(axes, reference, other, titles: tuple[str, str]) -> None:
    """Heatmaps of two matrices on the colour scale of the first, max |reference|."""
    vmax = float(np.nanmax(np.abs(np.asarray(reference, dtype=float))))
    for ax, matrix, title in zip(axes, (reference, other), titles, strict=True):
        heatmap(ax, matrix, title, vmax=vmax)


def reference_lines(ax, references: dict[str, float], linestyles, color="k") -> None:
    """Each {label: value} as a horizontal line in turn of `linestyles`, its value in the
    legend."""
    for (label, value), ls in zip(references.items(), linestyles, strict=True):
        ax.axhline(value, color=color, ls=ls, label=f"{label} {value:.3f}")
