"""Paired comparisons: two learners on the same seeds and held-out tasks, and their wording.

Seed s of both learners shares its init, its training batches and its held-out tasks, so
d_s = loss_s − baseline_s is one sample of the difference; its interval is
`icl_toy.analysis.stats.mean_ci` of the d_s, significant at the 5% level iff it excludes 0.
"""

from __future__ import annotations

import jax
import numpy as np

from icl_toy.analysis import alignment
from icl_toy.analysis.stats import mean_ci
from icl_toy.core.predictors import SeededPredictor
from icl_toy.core.tasks import TaskConfig


def paired_half_mse(
    predictor: SeededPredictor,
    baseline: SeededPredictor,
    task: TaskConfig,
    *,
    key: jax.Array,
    num_tasks: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed half-MSE (S,) of `predictor` and of `baseline` on the same held-out tasks.

    The tasks are drawn from `key` by `alignment.per_seed_metrics`; seed s of both shares them.
    """
    metrics = alignment.per_seed_metrics(
        predictor, task, {"baseline": baseline}, key=key, num_tasks=num_tasks
    )["baseline"]
    return metrics["half_mse_a"], metrics["half_mse_b"]


def excludes_zero(record: dict) -> bool:
    """Whether an interval record's [low, high] excludes 0: a significant paired difference."""
    return bool(record["low"] > 0 or record["high"] < 0)


def describe_differences(label: str, differences: dict[str, dict], none: str = "none") -> str:
    """Where interval records of paired differences are lower, higher or not significant.

    `differences` maps a place (e.g. "K2") to its record; the line reads "LABEL: lower at
    K1 (-1.00e+00 [-1.50e+00, -5.00e-01]); higher at none; not significant at K2 (...),
    K3 (...)." with `none` for an empty group.
    """
    lower, higher, same = [], [], []
    for name, diff in differences.items():
        text = f"{name} ({interval_text(diff)})"
        (same if not excludes_zero(diff) else lower if diff["mean"] < 0 else higher).append(text)
    lower, higher, same = (", ".join(group) or none for group in (lower, higher, same))
    return f"{label}: lower at {lower}; higher at {higher}; not significant at {same}."


def describe_all_lower(
    differences: dict[str, dict[str, dict]], reference: str, *, exempt=(), none: str = "none"
) -> tuple[list[str], bool]:
    """`describe_differences` of each learner − `reference`, and whether all are lower.

    `differences` maps a learner to its {place: record} of half-MSE differences; the bool
    says whether every difference outside `exempt` ((learner, place) pairs) is significantly
    below 0.
    """
    lines = [
        describe_differences(f"{name} - {reference} (half-MSE, 95% CI)", places, none)
        for name, places in differences.items()
    ]
    lower = all(
        excludes_zero(d) and d["mean"] < 0
        for name, places in differences.items()
        for place, d in places.items()
        if (name, place) not in exempt
    )
    return lines, lower


def paired_difference(loss_S, baseline_S) -> dict:
    """The `mean_ci` record of the paired differences d_s = loss_s − baseline_s over seeds,
    with "significant": whether its interval excludes 0 (`excludes_zero`)."""
    diff = mean_ci(np.asarray(loss_S) - np.asarray(baseline_S))
    return diff | {"significant": excludes_zero(diff)}


def interval_text(record: dict, spec: str = "+.2e") -> str:
    """An interval record as "mean [low, high]", each number in the format `spec`."""
    return f"{record['mean']:{spec}} [{record['low']:{spec}}, {record['high']:{spec}}]"


def verdict_note(lines: list[str], claim: str, holds: bool, condition: str) -> str:
    """A closing note: the `lines`, then whether `claim` holds here, judged by `condition`.

    The condition is stated as met ("holds here: C.") or as what was needed ("does not hold
    here: it would need C."), never as a finding when it was not met.
    """
    verdict = (
        f"holds here: {condition}" if holds else f"does not hold here: it would need {condition}"
    )
    return " ".join([*lines, f"{claim} {verdict}."])
