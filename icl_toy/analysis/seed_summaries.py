"""JSON summaries of a training run's per-seed values."""

from __future__ import annotations

import numpy as np

from icl_toy.analysis.stats import seed_stats
from icl_toy.training.train import TrainResult


def per_seed_summary(values: dict[str, np.ndarray]) -> dict[str, dict]:
    """{"per_seed": the values per seed, "seed_stats": `seed_stats` of each}."""
    per_seed = {name: np.asarray(v) for name, v in values.items()}
    return {"per_seed": per_seed, "seed_stats": {k: seed_stats(v) for k, v in per_seed.items()}}


def final_eval_metrics(result: TrainResult) -> dict[str, np.ndarray]:
    """Each tracked eval metric at the last evaluation, (S,) per metric."""
    return {name: np.asarray(values[:, -1]) for name, values in result.eval_metrics.items()}


def training_arrays(result: TrainResult) -> dict[str, np.ndarray]:
    """The curves of a run to save: eval steps, training loss and every eval metric (eval_*)."""
    return {
        "eval_steps": result.eval_steps,
        "train_loss": result.train_loss,
        **{f"eval_{name}": values for name, values in result.eval_metrics.items()},
    }
