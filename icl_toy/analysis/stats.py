"""Statistics over seeds (or tasks): summaries, 95% intervals of the mean, a sign-flip test.

Every interval is one record, a plain dict (JSON-able as it is):

    {"mean": m, "low": l, "high": h, "method": "t" | "bootstrap", "n": n}

`mean` is the sample mean of the n values, [low, high] the 95% interval of the population
mean, `method` how it was made:

- `mean_ci` ("t"): the Student-t interval m ± t_{0.975, n−1} s / √n (s with ddof = 1),
  exact for Gaussian values, conservative for few seeds. The common call.
- `bootstrap_ci` ("bootstrap"): the percentile bootstrap, the 2.5% and 97.5% quantiles of
  the mean over resamples of the values with replacement (Efron & Tibshirani 1993, §13.3);
  narrower than the t-interval for few values (it has no small-sample correction).

`sign_flip_p_value` is the exact permutation test of "mean = threshold" for values
symmetric about their mean under the null (Fisher's randomisation test): the mean of
v_i − threshold against its law under all 2^n sign flips. For paired comparisons pass the
per-seed differences. Every function takes the values along axis 0 of a 1-d array.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.stats

from icl_toy.training.convergence import converged_flags

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
# More sign patterns than this (2^n for n values) are sampled, not enumerated.
SIGN_FLIP_MAX_EXACT = 2**16

Alternative = Literal["two-sided", "less", "greater"]


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


def interval(mean: float, low: float, high: float, method: str, n: int) -> dict[str, Any]:
    """The interval record {"mean", "low", "high", "method", "n"}."""
    return {"mean": float(mean), "low": float(low), "high": float(high), "method": method, "n": n}


def _one_dimensional(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"expected a non-empty 1-d array of values, got shape {values.shape}")
    return values


def mean_ci(values: np.ndarray) -> dict[str, Any]:
    """Mean over seeds (axis 0) with a 95% Student-t interval, as a record of method "t".

    m ± t_{0.975, n−1} s / √n, the quantile from `scipy.stats.t`. For paired comparisons
    pass the per-seed differences; the difference is significant at the 5% level when the
    interval excludes 0. One value gives an interval of zero width.
    """
    values = _one_dimensional(values)
    n = values.size
    mean = float(values.mean())
    if n < 2:
        return interval(mean, mean, mean, "t", n)
    t = float(scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1))
    half = t * float(values.std(ddof=1)) / np.sqrt(n)
    return interval(mean, mean - half, mean + half, "t", n)


def bootstrap_ci(
    values: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Mean with a 95% percentile-bootstrap interval, as a record of method "bootstrap".

    `scipy.stats.bootstrap` with `method="percentile"`: the 2.5% and 97.5% quantiles of
    the means of `resamples` resamples with replacement, drawn from `seed`; the same values
    and seed give the same interval.
    """
    values = _one_dimensional(values)
    if values.size < 2:
        raise ValueError(f"a bootstrap interval needs >= 2 values, got {values.size}")
    result = scipy.stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return interval(values.mean(), low, high, "bootstrap", values.size)


def sign_flip_p_value(
    values: np.ndarray,
    threshold: float = 0.0,
    *,
    alternative: Alternative = "two-sided",
    seed: int = 0,
) -> float:
    """p-value of the sign-flip test of "mean = threshold" (`scipy.stats.permutation_test`).

    The statistic is the mean of d_i = v_i − threshold; under the null each d_i is as
    likely as −d_i, so the statistic's law is that of the mean of ±d_i over the 2^n sign
    patterns. "less" is the p-value for mean < threshold, P(mean(±d) ≤ mean(d)); "greater"
    the mirror; "two-sided" twice the smaller, at most 1. Exact (every pattern enumerated,
    the observed one included) for 2^n ≤ `SIGN_FLIP_MAX_EXACT`, else `SIGN_FLIP_MAX_EXACT`
    random patterns drawn from `seed`. With n values the smallest one-sided p is 2^−n.
    """
    values = _one_dimensional(values)
    result = scipy.stats.permutation_test(
        (values - threshold,),
        lambda d, axis: np.mean(d, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=SIGN_FLIP_MAX_EXACT,
        alternative=alternative,
        random_state=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def converged_seed_stats(values: np.ndarray, record: dict) -> dict[str, float] | None:
    """`seed_stats` over the seeds that a convergence record (`training.convergence`) marks
    converged, in seed order; None when none did."""
    mask = converged_flags(record)
    values = np.asarray(values, dtype=float)
    if mask.shape != values.shape[:1]:
        raise ValueError(f"{mask.size} convergence records for {values.shape[0]} seeds")
    return seed_stats(values[mask]) if mask.any() else None
