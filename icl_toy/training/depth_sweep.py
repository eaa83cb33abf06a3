"""A depth sweep: one model per depth, each trained on the same task.

Akyürek et al. (arXiv 2211.15661, docs/theory.md §3) find that the algorithm a trained transformer
is closest to depends on its depth; `train_depths` trains the models of such a comparison.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.tasks import Prompt, TaskConfig
from icl_toy.training.train import RunOptions, TrainConfig, TrainResult, train, train_held_out


def train_depths(
    task: TaskConfig,
    depths: tuple[int, ...],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig | Mapping[int, TrainConfig],
    options: RunOptions | None = None,
    prompts: Prompt | None = None,
) -> dict[int, tuple[object, TrainResult]]:
    """Train S seeds of `model_cfg` at each depth on `task`: {depth: (model, result)}.

    The depth is `model_cfg.num_layers` (left at its default 1: it is swept); each depth
    is one `icl_toy.training.train.train` call with the same seeds (checkpoints under
    `depth{D}` of `options.checkpoint_dir`); `result.params` has a leading seed axis S.
    With held-out `prompts`, each run evaluates its half-MSE on them every `eval_every`
    steps (`result.eval_metrics["loss"]`), the curve its convergence record then reads.
    `train_cfg` is one recipe for every depth, or a {depth: recipe} mapping.
    """
    if model_cfg.num_layers != ModelConfig.num_layers:
        raise ValueError(f"model_cfg.num_layers is swept by depths; got {model_cfg.num_layers}")
    per_depth = train_cfg if isinstance(train_cfg, Mapping) else dict.fromkeys(depths, train_cfg)
    if missing := set(depths) - set(per_depth):
        raise ValueError(f"train_cfg has no recipe for depths {sorted(missing)}")
    options = options or RunOptions()
    trained = {}
    for depth in depths:
        model = make_model(task, dataclasses.replace(model_cfg, num_layers=depth))
        stage = options.stage(f"depth{depth}")
        if prompts is None:
            result = train(model, task, per_depth[depth], options=stage)
        else:
            result = train_held_out(model, task, per_depth[depth], prompts, stage)
        trained[depth] = (model, result)
    return trained


def chunk_means(loss_SxT: np.ndarray, chunk: int) -> np.ndarray:
    """(S, T) per-step losses -> (S, T / chunk) means over consecutive chunks of `chunk` steps."""
    return loss_SxT.reshape(len(loss_SxT), -1, chunk).mean(axis=-1)
