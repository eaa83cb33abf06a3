"""The losses every part of icl-toy reports: squared error per task, half-MSE and MSE.

Shapes: B tasks, Y output dimension. Both averages run over tasks of the squared norm over
outputs, so with d_y = 1 they are the usual mean squared error and its half.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def squared_error(pred_BxY: jax.Array, target_BxY: jax.Array) -> jax.Array:
    """||ŷ − y||² of each task, (B,)."""
    return jnp.sum((pred_BxY - target_BxY) ** 2, axis=-1)


def half_mse(pred_BxY: jax.Array, target_BxY: jax.Array) -> jax.Array:
    """0.5 · mean over tasks of ||ŷ − y||² (von Oswald et al.'s code; the paper omits the ½)."""
    return 0.5 * jnp.mean(squared_error(pred_BxY, target_BxY))


def mse(pred_BxY: jax.Array, target_BxY: jax.Array) -> jax.Array:
    """Mean over tasks of ||ŷ − y||², the risk of closed forms and of Zhang, Frei & Bartlett."""
    return jnp.mean(squared_error(pred_BxY, target_BxY))
