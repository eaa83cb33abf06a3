"""Panels of d = 1 function regression: a kernel as slices, and predictions over a grid of
queries beside a task's true function and its context points. They draw saved arrays."""

from __future__ import annotations

import numpy as np


def kernel_slices(ax, grid_G, kernel_GxG, ylabel: str, title: str) -> None:
    """k(x, x') against x for x' at the quartiles of the grid."""
    grid_G, kernel_GxG = np.asarray(grid_G), np.asarray(kernel_GxG)
    g = len(grid_G)
    for j in (g // 4, g // 2, 3 * g // 4):
        ax.plot(grid_G, kernel_GxG[:, j], label=f"$x'$ = {grid_G[j]:.1f}")
    ax.set(xlabel="$x$", ylabel=ylabel, title=title)
    ax.legend()


def function_fit(ax, grid_G, truth_G, context_x, context_y, predictions: dict, title: str) -> None:
    """The true function (grey), the context points (black) and each prediction on the grid.

    `predictions` maps a legend label to (ŷ over the grid (G,), matplotlib format string).
    """
    ax.plot(grid_G, truth_G, "k", lw=2, alpha=0.4, label="true function")
    ax.plot(context_x, context_y, "ko", ms=3, label="context pairs")
    for label, (curve_G, fmt) in predictions.items():
        ax.plot(grid_G, curve_G, fmt, label=label)
    ax.set(xlabel="query $x_q$", ylabel=r"$\hat y$", title=title)
