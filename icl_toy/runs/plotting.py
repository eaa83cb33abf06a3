"""Plot helpers shared by experiments. They draw from saved arrays only."""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # experiments write files; no display is assumed

import matplotlib.pyplot as plt
import numpy as np

from icl_toy.runs.results import atomic_write_bytes


def seed_band(ax, x, values_SxX, label: str, color=None, **line_kwargs) -> None:
    """Mean over seeds as a line, min-max over seeds as a shaded band."""
    values_SxX = np.asarray(values_SxX, dtype=float)
    mean = np.nanmean(values_SxX, axis=0)
    (line,) = ax.plot(x, mean, label=label, color=color, **line_kwargs)
    ax.fill_between(
        x,
        np.nanmin(values_SxX, axis=0),
        np.nanmax(values_SxX, axis=0),
        color=line.get_color(),
        alpha=0.25,
        linewidth=0,
    )


def heatmap(ax, matrix, title: str, vmax: float | None = None) -> None:
    """A symmetric-colour heatmap of one matrix, with a colour bar."""
    matrix = np.asarray(matrix, dtype=float)
    vmax = float(np.nanmax(np.abs(matrix))) if vmax is None else vmax
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def save_figure(fig, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Write `name.png` and `name.pdf` atomically and close the figure."""
    paths = []
    for ext in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight")
        path = Path(out_dir) / f"{name}.{ext}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def heatmap_pair(axes, reference, other, titles: tuple[str, str]) -> None:
    """Heatmaps of two matrices on the colour scale of the first, max |reference|."""
    vmax = float(np.nanmax(np.abs(np.asarray(reference, dtype=float))))
    for ax, matrix, title in zip(axes, (reference, other), titles, strict=True):
        heatmap(ax, matrix, title, vmax=vmax)
