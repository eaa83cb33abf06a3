"""Paired comparisons over seeds: the t-interval of per-seed differences."""

from __future__ import annotations

import numpy as np

from icl_toy.analysis.stats import mean_ci


def paired_difference(values_S: np.ndarray, baseline_S: np.ndarray) -> dict:
    """`mean_ci` of values − baseline over paired seeds, and whether it excludes 0.

    Seed s of both arrays shares its init and data, so d_s = values_s − baseline_s is one
    sample of the difference; "significant" is True iff the 95% interval of mean(d) excludes 0.
    """
    stats = mean_ci(np.asarray(values_S, dtype=float) - np.asarray(baseline_S, dtype=float))
    return {**stats, "significant": bool(stats["low"] > 0 or stats["high"] < 0)}


def describe_differences(label: str, differences: dict[str, dict], none: str = "none") -> str:
    """Where `paired_difference` records say lower, higher or not significant, in one line.

    `differences` maps a place (e.g. "K2") to its record; the line reads "LABEL: lower at
    [...]; higher at [...]; not significant at [...]." with `none` for an empty list.
    """
    lower, higher, same = [], [], []
    for name, diff in differences.items():
        text = f"{name} {diff['mean']:+.2e} [{diff['low']:+.2e}, {diff['high']:+.2e}]"
        (same if not diff["significant"] else lower if diff["mean"] < 0 else higher).append(text)
    return (
        f"{label}: lower at {lower or none}; higher at {higher or none}; "
        f"not significant at {same or none}."
    )
