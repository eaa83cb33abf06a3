"""icl_toy.analysis.stats: interval records, against printed tables and brute-force references."""

import itertools

import numpy as np
import pytest

from icl_toy.analysis.stats import bootstrap_ci, mean_ci, seed_stats, sign_flip_p_value

# Two-sided 95% quantiles t_{0.975, df} of Student's t to 4 decimals, as printed in
# statistics tables (e.g. NIST/SEMATECH e-Handbook, §1.3.6.7.2); df = ∞ is 1.9600.
T975 = {
    1: 12.7062,
    2: 4.3027,
    3: 3.1824,
    4: 2.7764,
    5: 2.5706,
    9: 2.2622,
    10: 2.2281,
    20: 2.0860,
    30: 2.0423,
    100: 1.9840,
}


def _unit_std(n: int) -> np.ndarray:
    """n values with mean 3 and sample standard deviation (ddof = 1) exactly 1."""
    z = np.random.default_rng(n).normal(size=n)
    return 3.0 + (z - z.mean()) / z.std(ddof=1)


@pytest.mark.parametrize("df", sorted(T975))
def test_mean_ci_half_width_is_the_tabled_t_quantile(df):
    n = df + 1
    record = mean_ci(_unit_std(n))
    assert record["method"] == "t" and record["n"] == n
    assert record["mean"] == pytest.approx(3.0, abs=1e-12)
    # With s = 1 the half-width times √n is t_{0.975, n−1}: the table's 4 digits.
    assert (record["high"] - record["mean"]) * np.sqrt(n) == pytest.approx(T975[df], abs=6e-5)
    assert record["mean"] - record["low"] == pytest.approx(record["high"] - record["mean"])


def test_mean_ci_of_one_value_has_zero_width_and_bad_shapes_raise():
    assert mean_ci(np.array([5.0])) == {
        "mean": 5.0,
        "low": 5.0,
        "high": 5.0,
        "method": "t",
        "n": 1,
    }
    with pytest.raises(ValueError, match="1-d"):
        mean_ci(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="1-d"):
        mean_ci(np.array([]))


def test_bootstrap_ci_is_the_percentile_of_resampled_means():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    record = bootstrap_ci(values)
    assert record == bootstrap_ci(values)  # the same seed, the same interval
    assert set(record) == {"mean", "low", "high", "method", "n"}
    assert (record["method"], record["n"], record["mean"]) == ("bootstrap", 5, 3.0)
    # An independent reference: the 2.5% and 97.5% quantiles of the means of 200 000
    # numpy resamples; both are Monte Carlo estimates, within a resampled mean's grid
    # of 0.2 (means of 5 integers) of each other.
    index = np.random.default_rng(1).integers(0, 5, size=(200_000, 5))
    low, high = np.percentile(values[index].mean(axis=1), [2.5, 97.5])
    assert abs(record["low"] - low) <= 0.2 + 1e-9 and abs(record["high"] - high) <= 0.2 + 1e-9
    # Narrower than the t-interval with 5 values (no small-sample correction).
    t = mean_ci(values)
    assert t["low"] < record["low"] < 3.0 < record["high"] < t["high"]
    with pytest.raises(ValueError, match=">= 2 values"):
        bootstrap_ci(np.array([1.0]))


def _brute_force_p(values, threshold, alternative):
    """Enumerate all 2^n sign patterns of d = values − threshold (the observed one included)."""
    d = np.asarray(values, dtype=float) - threshold
    observed = d.mean()
    null = np.array([np.mean(np.array(s) * d) for s in itertools.product((1, -1), repeat=d.size)])
    tol = 1e-12 * max(1.0, abs(observed))
    less = np.mean(null <= observed + tol)
    greater = np.mean(null >= observed - tol)
    if alternative == "less":
        return less
    if alternative == "greater":
        return greater
    return min(1.0, 2 * min(less, greater))


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
@pytest.mark.parametrize(
    ("values", "threshold"),
    [
        ([0.3, -0.1, 0.5, 0.2, 0.4], 0.0),
        ([1.0, 2.0, 3.0, -1.0, 5.0], 0.0),  # ties in |d| between sign patterns
        ([0.99, 0.995, 0.97, 0.999, 0.992, 0.985, 0.996], 0.99),
        ([-2.0, -3.0, -2.5], 0.0),
    ],
)
def test_sign_flip_p_value_is_the_exact_enumeration(values, threshold, alternative):
    p = sign_flip_p_value(np.array(values), threshold, alternative=alternative)
    assert p == pytest.approx(_brute_force_p(values, threshold, alternative), abs=1e-12)


def test_sign_flip_p_value_extremes():
    # Every seed on the claimed side: the observed pattern is the most extreme of 2^5.
    assert sign_flip_p_value(np.array([1.0, 2, 3, 4, 5]), alternative="greater") == 1 / 32
    assert sign_flip_p_value(np.array([1.0, 2, 3, 4, 5]), alternative="two-sided") == 2 / 32
    assert sign_flip_p_value(np.array([1.0, 2, 3, 4, 5]), alternative="less") == 1.0
    # Beyond 2^16 patterns it samples them: still a p-value, reproducible from its seed.
    many = np.random.default_rng(0).normal(0.5, 1.0, size=40)
    p = sign_flip_p_value(many, alternative="greater")
    assert 0 < p < 0.05 and p == sign_flip_p_value(many, alternative="greater")


def test_seed_stats_keeps_its_keys():
    assert seed_stats(np.array([1.0, 3.0])) == pytest.approx(
        {"mean": 2.0, "std": np.sqrt(2.0), "min": 1.0, "max": 3.0}
    )
