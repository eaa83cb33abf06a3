"""Test-time shifts of the input law: the same tasks with rescaled inputs (docs/theory.md §6).

`scale_inputs` multiplies every input of given prompts by √c (covariance Σ → cΣ) and keeps
teachers and noise draws; `half_width_sweep` redraws uniform inputs x ~ U(−α, α) for each
half-width α from one key, so every α sees the same draws of the teacher W.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core.linalg import einsum
from icl_toy.core.tasks import Prompt, TaskConfig, sample_batch


def scale_inputs(prompts: Prompt, c: jax.Array) -> Prompt:
    """The same tasks with every input scaled by √c (covariance Σ → cΣ), labels recomputed.

    y = W x + ε becomes W (√c x) + ε: the teacher and the noise draws are kept.
    """
    root_c = jnp.sqrt(c)
    noise_BxNxY = prompts.y - einsum("bnd,byd->bny", prompts.x, prompts.w)
    query_noise_BxY = prompts.y_q - einsum("bd,byd->by", prompts.x_q, prompts.w)
    x, x_q = root_c * prompts.x, root_c * prompts.x_q
    return prompts._replace(
        x=x,
        y=einsum("bnd,byd->bny", x, prompts.w) + noise_BxNxY,
        x_q=x_q,
        y_q=einsum("bd,byd->by", x_q, prompts.w) + query_noise_BxY,
    )


def half_width_sweep(
    losses: Callable[[Prompt], dict[str, jax.Array]],
    task: TaskConfig,
    key: jax.Array,
    num_tasks: int,
    half_widths: Sequence[float],
) -> dict[str, np.ndarray]:
    """`losses(prompts)` on `num_tasks` tasks with inputs U(−α, α) for each α, stacked on a
    new last axis: a value of shape (...) becomes (..., A)."""
    rows = []
    for alpha in half_widths:
        shifted = dataclasses.replace(task, input_low=-alpha, input_high=alpha)
        rows.append(losses(sample_batch(key, shifted, num_tasks)))
    return {name: np.stack([np.asarray(row[name]) for row in rows], axis=-1) for name in rows[0]}
