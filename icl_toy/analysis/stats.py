"""Statistics over seeds: summaries and confidence intervals of per-seed values."""

from __future__ import annotations

import numpy as np


def seed_stats(values: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation (ddof=1), min and max over seeds (axis 0)."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if values.shape[0] > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
    }


# Two-sided 95% quantiles t_{0.975, df} of Student's t for df = 1..9 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: a table for df < 10, else the Cornish–Fisher series (error < 3e-3)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: np.ndarray) -> dict[str, float]:
    """Mean over seeds (axis 0) with a 95% Student-t confidence interval.

    For paired comparisons pass the per-seed differences; the difference is significant at
    the 5% level when the interval excludes 0. One value gives an interval of zero width.
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    mean = float(values.mean())
    if n < 2:
        return {"mean": mean, "low": mean, "high": mean, "n": n}
    t = t_quantile_975(n - 1)
    half = t * float(values.std(ddof=1)) / np.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}
