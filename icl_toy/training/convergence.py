"""Did a seed finish learning? A convergence record for every seed of every training run.

The record reads a seed's per-step training loss (S, T) in deciles: windows of w = T // 10
steps (at least one), whose means average the batch noise. With L₀ the mean loss of the
first max(1, T // 100) steps, D_k the mean of decile k and D_last the last one:

- `finite`: no NaN or Inf anywhere in the training loss;
- `left_plateau`: min_k D_k ≤ (1 − PLATEAU_DROP) · L₀, the loss fell from where it started;
- `spiked`: the run ended well above its best: with a held-out curve, its last value above
  (1 + SPIKE) × its minimum; without one, D_last > (1 + SPIKE) · min_k D_k. The training
  deciles are not read when the curve exists: under heavy-tailed batch losses (deep LSA
  stacks) a decile's mean moves by more than 10% while the held-out loss stays within 0.2%
  of its best;
- `relative_change`: the relative improvement over the last 10% of training, (L_a − L_b) / L_b
  (negative: the loss rose). With a held-out eval curve (fixed tasks, no batch noise) L_b is
  its last value and L_a its value at the last eval at or before 90% of the steps; else L_a,
  L_b are D_{last−1}, D_last;
- `change_tolerance`: STILL_IMPROVING, or, on training deciles, three standard errors of
  D_{last−1} − D_last relative to D_last where that is larger (batch noise is not progress);
- `converged` = finite and left_plateau and not spiked and |relative_change| ≤ change_tolerance.

`final_loss` is the held-out curve's last value when there is one, else D_last; `gap` is
final_loss / reference − 1 against the learner the study compares the seed with (a scalar or
one value per seed), when it gives one.

What `converged` cannot say: under a schedule that decays to 0 the last 10% of steps run at
a small rate, so the loss stops moving there whether or not the seed reached the solution
it was heading for. "Converged" is "stopped learning under this recipe", not "reached its
learner": read `gap` beside it where the study gives a reference.

`collect()` gathers the records of every `train` call made inside it (the runner wraps a
study's `run` in it and saves them under `convergence` in the results JSON).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

import numpy as np

PLATEAU_DROP = 0.1
STILL_IMPROVING = 0.01
SPIKE = 0.1
CRITERION = (
    f"finite; left the initial plateau (best training-loss decile ≤ {1 - PLATEAU_DROP:g} × the "
    f"initial loss); no spike (the last held-out loss, or without a held-out curve the last "
    f"training-loss decile, ≤ {1 + SPIKE:g} × its best); no longer improving (|relative change "
    f"over the last 10% of steps| ≤ "
    f"{STILL_IMPROVING:g}, or 3 standard errors of the batch noise on training deciles)"
)


def seed_convergence(
    train_loss_SxT: np.ndarray,
    eval_loss_SxE: np.ndarray | None = None,
    eval_steps_E: np.ndarray | None = None,
    reference: float | np.ndarray | None = None,
) -> list[dict]:
    """One record per seed (see the module docstring), from (S, T) training losses and
    optionally the (S, E) held-out losses at `eval_steps_E` (0 ≤ step ≤ T)."""
    losses = np.asarray(train_loss_SxT, dtype=np.float64)
    num_seeds, steps = losses.shape
    width = max(1, steps // 10)
    num_windows = steps // width
    # Deciles end at the last step, so D_last always covers the end of training.
    windows = losses[:, steps - num_windows * width :].reshape(num_seeds, num_windows, width)
    with np.errstate(invalid="ignore", over="ignore"):
        deciles = windows.mean(axis=2)
        standard_errors = windows.std(axis=2, ddof=1) / np.sqrt(width) if width > 1 else 0 * deciles
        initial = losses[:, : max(1, steps // 100)].mean(axis=1)
    last, best = deciles[:, -1], deciles.min(axis=1)
    k = -2 if num_windows > 1 else -1
    if eval_loss_SxE is None:
        before, after = deciles[:, k], last
        noise = 3 * np.hypot(standard_errors[:, k], standard_errors[:, -1]) / last
        tolerance = np.maximum(STILL_IMPROVING, np.where(num_windows > 1, noise, 0.0))
        with np.errstate(invalid="ignore"):
            spiked_S = last > (1 + SPIKE) * best
    else:
        evals = np.asarray(eval_loss_SxE, dtype=np.float64)
        steps_E = np.asarray(eval_steps_E)
        a = int(np.flatnonzero(steps_E <= 0.9 * steps)[-1])
        before, after = evals[:, a], evals[:, -1]
        tolerance = np.full(num_seeds, STILL_IMPROVING)
        with np.errstate(invalid="ignore"):
            spiked_S = after > (1 + SPIKE) * evals.min(axis=1)
    refs = None if reference is None else np.broadcast_to(np.asarray(reference, float), after.shape)
    records = []
    for s in range(num_seeds):
        finite = bool(np.isfinite(losses[s]).all() and np.isfinite(after[s]))
        with np.errstate(invalid="ignore", divide="ignore"):
            change = float((before[s] - after[s]) / after[s]) if finite else float("nan")
        left = finite and bool(best[s] <= (1 - PLATEAU_DROP) * initial[s])
        spiked = finite and bool(spiked_S[s])
        record = {
            "converged": bool(finite and left and not spiked and abs(change) <= tolerance[s]),
            "finite": finite,
            "left_plateau": left,
            "relative_change": change,
            "change_tolerance": float(tolerance[s]),
            "spiked": spiked,
            "initial_loss": float(initial[s]),
            "best_decile_loss": float(best[s]),
            "final_loss": float(after[s]),
        }
        if refs is not None:
            record["gap"] = float(after[s] / refs[s] - 1)
        records.append(record)
    return records


def convergence_record(result, metric: str = "loss", reference=None) -> dict:
    """The record of a `TrainResult`: per-seed records, converged/total and the criterion.

    The run's in-scan eval `metric`, when it has one, is the held-out curve.
    """
    evals = result.eval_metrics.get(metric)
    per_seed = seed_convergence(
        result.train_loss,
        None if evals is None else np.asarray(evals),
        result.eval_steps,
        reference,
    )
    return {
        "converged": sum(r["converged"] for r in per_seed),
        "total": len(per_seed),
        "curve": f"held-out {metric}" if evals is not None else "training loss",
        "criterion": CRITERION,
        "per_seed": per_seed,
    }


def converged_flags(record: dict | None, num_seeds: int | None = None) -> np.ndarray:
    """(S,) per-seed `converged` flags of a record (`convergence_record`). Without a record (a
    run saved before records existed) each of `num_seeds` seeds counts as converged, so that
    it reads as before rather than as all failed; with no seed count that is an error."""
    if not record:
        if num_seeds is None:
            raise ValueError("no convergence record, and no seed count to read it as converged")
        return np.ones(num_seeds, dtype=bool)
    return np.array([seed["converged"] for seed in record["per_seed"]], dtype=bool)


class _Collector:
    def __init__(self, root: str | None):
        self.root = None if root is None else Path(root)
        self.records: dict[str, dict] = {}

    def add(self, checkpoint_dir: str | None, record: dict) -> None:
        name = f"run{len(self.records)}"
        if checkpoint_dir is not None and self.root is not None:
            path = Path(checkpoint_dir)
            if path.is_relative_to(self.root) and path != self.root:
                name = path.relative_to(self.root).as_posix()
            elif path == self.root:
                name = "train"
        while name in self.records:  # the same stage trained twice (e.g. a refit)
            name += "'"
        self.records[name] = record


_active: contextvars.ContextVar[_Collector | None] = contextvars.ContextVar(
    "convergence_collector", default=None
)


@contextlib.contextmanager
def collect(checkpoint_root: str | None = None) -> Iterator[dict[str, dict]]:
    """Gather the record of every `train` call inside, keyed by its stage: the checkpoint
    folder relative to `checkpoint_root` ("train" for the root itself), else run0, run1…"""
    collector = _Collector(checkpoint_root)
    token = _active.set(collector)
    try:
        yield collector.records
    finally:
        _active.reset(token)


def report(result, checkpoint_dir: str | None) -> None:
    """Called by `train` at the end of every run: adds its record to the active `collect`."""
    collector = _active.get()
    if collector is not None:
        collector.add(checkpoint_dir, convergence_record(result))


def fraction(record: dict) -> str:
    """A record's converged/total, as "k/n"."""
    return f"{record['converged']}/{record['total']}"


def summary_line(records: dict[str, dict]) -> str:
    """'converged seeds: 3/3 (train)' or, with stages, one 'k/n stage' per stage."""
    if not records:
        return "converged seeds: no training"
    parts = [f"{fraction(r)} {name}" for name, r in records.items()]
    return "converged seeds: " + ", ".join(parts)
