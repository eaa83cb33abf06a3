"""icl-toy: do transformers learn in context by gradient descent?

The package is layered; a module imports only from its own layer and those below it:

- `icl_toy.core`: prompts and task families, the models, algorithms written as weights,
  the explicit learners and closed-form risks (pure math, no training);
- `icl_toy.training`: training in one compiled region, checkpoints, step-size fitting,
  gradient estimators;
- `icl_toy.analysis`: statistics, alignment metrics, baselines, probes, learning curves;
- `icl_toy.runs`: configs, results on disk, plotting, the runner, sweeps, the CLI and the
  hypothesis harness;
- `icl_toy.experiments`: one module per study (the repository's `experiments/` folder).

The names most scripts need are importable from the top (`from icl_toy import train`);
they are loaded on first use, so `import icl_toy` stays cheap.
"""

from __future__ import annotations

import importlib

# name -> module that defines it
_EXPORTS = {
    "Prompt": "icl_toy.core.tasks",
    "TaskConfig": "icl_toy.core.tasks",
    "get_preset": "icl_toy.core.tasks",
    "sample_task": "icl_toy.core.tasks",
    "sample_batch": "icl_toy.core.tasks",
    "prompt_tokens": "icl_toy.core.tasks",
    "half_mse": "icl_toy.core.losses",
    "mse": "icl_toy.core.losses",
    "gd_weights": "icl_toy.core.constructions",
    "gdpp_weights": "icl_toy.core.constructions",
    "preconditioned_gd_weights": "icl_toy.core.constructions",
    "heavy_ball_weights": "icl_toy.core.constructions",
    "optimal_gd_eta": "icl_toy.core.learners",
    "ModelConfig": "icl_toy.core.models",
    "make_model": "icl_toy.core.models",
    "learned_scalars": "icl_toy.core.models",
    "TrainConfig": "icl_toy.training.train",
    "RunOptions": "icl_toy.training.train",
    "train": "icl_toy.training.train",
    "batch_predict": "icl_toy.training.train",
    "batch_loss": "icl_toy.training.train",
    "fit_learner": "icl_toy.training.tuning",
    "sensitivity_cosine": "icl_toy.analysis.metrics",
    "mean_ci": "icl_toy.analysis.stats",
    "seed_stats": "icl_toy.analysis.stats",
    "baseline_family": "icl_toy.analysis.baselines",
    "model_predictor": "icl_toy.core.predictors",
    "compare": "icl_toy.analysis.alignment",
    "closest_algorithm": "icl_toy.analysis.alignment",
    "format_table": "icl_toy.analysis.alignment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'icl_toy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
