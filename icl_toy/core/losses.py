"""The losses every part of icl-toy reports: squared error per task, half-MSE and MSE.

Shapes: B tasks, Y output dimension. Both averages run over tasks of the squared norm over
outputs, so with d_y = 1 they are the usual mean squared error and its half.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# How results name the loss and the step-size convention they report in.
HALF_MSE_NOTE = "half-MSE, 0.5 * mean (y_hat - y)^2, on the held-out eval tasks"
ETA_NOTE = "1/N inside eta: one GD step from 0 predicts eta * x_q^T X^T y / N"


def squared_error(pred_BxY: jax.Array, target_BxY: jax.Array) -> jax.Array:
    """||ŷ − y||² of each task, (B,)."""
    return jnp.sum((pred_BxY - target_BxY) ** 2, axis=-1)


def half_mse(pred_BxY: jax.Array, target_BxY: jax.Array) -> jax.Array:
    """0.5 · mean over tasks of ||ŷ − y||² (von Oswald et al.'s code; the paper omits the ½)."""
    return 0.5 * jnp.mean(squared_error(pred_BxY, target_BxY))


def mse(pred_BxY: jax.Array, target_BxY: jax.Array) -> jax.Array:
    """Mean over tasks of ||ŷ − y||², the risk of closed forms and of Zhang, Frei & Bartlett."""
    return jnp.mean(squared_error(pred_BxY, target_BxY))
