"""Throughput of a compiled training program: steps per second, without eval or compilation."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from icl_toy.core.tasks import TaskConfig
from icl_toy.training.train import GradientFn, TrainConfig, make_trainer, scaled_hold, seed_keys


def steps_per_second(
    model, task: TaskConfig, cfg: TrainConfig, gradient: GradientFn | None, steps: int, repeats: int
) -> float:
    """Training steps per second of one compiled method (all seeds at once).

    The best of `repeats` timed calls of `steps` steps, after a warm-up call that compiles the
    same program; no eval runs inside the timed steps. `gradient=None` is backprop.
    """
    # The same schedule shape over the timed steps (a warmup longer than them is invalid).
    warmup, hold = cfg.warmup_steps * steps // cfg.steps, scaled_hold(cfg, steps)
    cfg = dataclasses.replace(
        cfg, steps=steps, eval_every=steps, warmup_steps=warmup, hold_steps=hold
    )
    trainer = make_trainer(model, task, cfg, gradient=gradient)
    state, _ = trainer.init(seed_keys(cfg), jnp.full(cfg.num_seeds, cfg.learning_rate))
    state, out = trainer.advance(state, 0, 1)
    jax.block_until_ready(out)
    best = float("inf")
    for chunk in range(1, repeats + 1):
        start = time.perf_counter()
        state, out = trainer.advance(state, chunk, 1)
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - start)
    return steps / best
