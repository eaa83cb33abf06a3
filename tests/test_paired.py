"""Paired differences over seeds: significance and their one-line description."""

import numpy as np
import pytest

from icl_toy.analysis.paired import (
    describe_all_lower,
    describe_differences,
    excludes_zero,
    interval_text,
    paired_difference,
    verdict_note,
)
from icl_toy.analysis.stats import mean_ci


def test_excludes_zero_reads_the_t_interval_of_differences():
    # Differences (-1, -1, -1.1): mean -31/30, sample std 0.0577, t_{0.975, 2} = 4.303.
    diff = mean_ci(np.array([1.0, 2.0, 3.0]) - np.array([2, 3, 4.1]))
    half = 4.303 * np.std([-1, -1, -1.1], ddof=1) / np.sqrt(3)
    assert (diff["low"], diff["high"]) == pytest.approx((-31 / 30 - half, -31 / 30 + half), 1e-4)
    assert excludes_zero(diff)
    # Differences (-2, 0, 2) straddle 0.
    assert not excludes_zero(mean_ci(np.array([1.0, 2.0, 3.0]) - np.array([3, 2, 1.0])))


LOWER = {"mean": -1.0, "low": -1.5, "high": -0.5}
HIGHER = {"mean": 1.0, "low": 0.5, "high": 1.5}
SAME = {"mean": 0.1, "low": -1.0, "high": 1.2}


def test_describe_differences_sorts_by_sign_and_significance():
    text = describe_differences("a - b", {"K1": LOWER, "K2": SAME, "K3": HIGHER}, none="no K")
    assert text == (
        "a - b: lower at K1 (-1.00e+00 [-1.50e+00, -5.00e-01]); higher at "
        "K3 (+1.00e+00 [+5.00e-01, +1.50e+00]); not significant at "
        "K2 (+1.00e-01 [-1.00e+00, +1.20e+00])."
    )
    assert describe_differences("a", {"K1": SAME}).startswith("a: lower at none; higher at none")


def test_describe_all_lower_skips_only_the_exempt_places():
    diffs = {"a": {"K1": LOWER, "K2": LOWER}, "b": {"K1": SAME, "K2": LOWER}}
    lines, lower = describe_all_lower(diffs, "ref", exempt={("b", "K1")}, none="no K")
    assert lower and lines[0].startswith("a - ref (half-MSE, 95% CI): lower at K1 (")
    assert not describe_all_lower(diffs, "ref")[1]
    assert not describe_all_lower({"a": {"K1": HIGHER}}, "ref")[1]


def test_paired_difference_is_the_interval_of_per_seed_differences():
    loss, baseline = np.array([1.0, 2.0, 3.0]), np.array([2, 3, 4.1])
    diff = paired_difference(loss, baseline)
    assert diff == mean_ci(loss - baseline) | {"significant": True}
    assert not paired_difference(loss, np.array([3, 2, 1.0]))["significant"]


def test_interval_text_and_verdict_note():
    assert interval_text(LOWER) == "-1.00e+00 [-1.50e+00, -5.00e-01]"
    assert interval_text(HIGHER, "+.3f") == "+1.000 [+0.500, +1.500]"
    assert verdict_note(["a.", "b."], "X", True, "c") == "a. b. X holds here: c."
    assert verdict_note([], "X", False, "c") == "X does not hold here: it would need c."
