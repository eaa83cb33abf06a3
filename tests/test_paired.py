"""Paired differences over seeds and their one-line description."""

import numpy as np
import pytest

from icl_toy.analysis.paired import describe_differences, paired_difference


def test_paired_difference_is_the_t_interval_of_differences():
    # Differences (-1, -1, -1.1): mean -31/30, sample std 0.0577, t_{0.975, 2} = 4.303.
    diff = paired_difference(np.array([1.0, 2.0, 3.0]), np.array([2, 3, 4.1]))
    half = 4.303 * np.std([-1, -1, -1.1], ddof=1) / np.sqrt(3)
    assert diff["mean"] == pytest.approx(-31 / 30)
    assert (diff["low"], diff["high"]) == pytest.approx((-31 / 30 - half, -31 / 30 + half))
    assert diff["significant"]
    # Differences (-2, 0, 2) straddle 0.
    same = paired_difference(np.array([1.0, 2.0, 3.0]), np.array([3, 2, 1.0]))
    assert not same["significant"] and same["mean"] == pytest.approx(0.0)


def test_describe_differences_sorts_by_sign_and_significance():
    lower = {"mean": -1.0, "low": -1.5, "high": -0.5, "significant": True}
    higher = {"mean": 1.0, "low": 0.5, "high": 1.5, "significant": True}
    same = {"mean": 0.1, "low": -1.0, "high": 1.2, "significant": False}
    text = describe_differences("a - b", {"K1": lower, "K2": same, "K3": higher}, none="no K")
    assert text == (
        "a - b: lower at ['K1 -1.00e+00 [-1.50e+00, -5.00e-01]']; higher at "
        "['K3 +1.00e+00 [+5.00e-01, +1.50e+00]']; not significant at "
        "['K2 +1.00e-01 [-1.00e+00, +1.20e+00]']."
    )
    assert describe_differences("a", {"K1": same}).startswith("a: lower at none; higher at none")
