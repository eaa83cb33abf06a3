"""Learning without backpropagation: forward-only gradient estimators and ICL baked into weights.

Gradient estimators (docs/theory.md §9), in the `GradientFn` form that
`icl_toy.training.train.train` takes as `gradient=`. Both draw M directions v ~ N(0, I)
over all parameters from the step's key and average:
- forward gradient (Baydin et al., arXiv 2202.08587): g = (∇L·v) v, the directional
  derivative from one forward-mode `jax.jvp`; unbiased, E[(∇L·v) v] = ∇L, with variance
  growing with the parameter count P (E||g||² = (P + 2)||∇L||² for M = 1).
- SPSA / two-point zeroth order (Spall 1992; MeZO, arXiv 2305.17333, uses Gaussian v):
  g = (L(θ + εv) − L(θ − εv))/(2ε) v, loss values only; as ε → 0 the quotient is ∇L·v.
  The loss it reports is (L(θ + εv) + L(θ − εv))/2 = L(θ) + O(ε²), so it needs no third pass.

ICL baked into weights: a stream of (x, y) from one linear task is cut into chunks of N
examples; each chunk becomes a prompt whose y-slots hold the residuals y − W x of the
running linear model W, the in-context learner's implicit update ΔW_ICL of that prompt
(`icl_toy.analysis.duality`) is added to W, and the next chunk comes. With the GD construction at
step η this is exactly minibatch SGD with batch N and learning rate η (Proposition 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from icl_toy.core.linalg import einsum, matmul
from icl_toy.core.tasks import TaskConfig, input_moments, sample_batch


def _check_directions(num_directions: int) -> None:
    if not isinstance(num_directions, int) or num_directions < 1:
        raise ValueError(f"num_directions must be an integer >= 1, got {num_directions!r}")


def gaussian_direction(key: jax.Array, params):
    """A pytree like `params` with i.i.d. N(0, 1) leaves (one key per leaf)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    normals = [
        jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, normals)


def _scaled(tree, scale_M: jax.Array):
    """Mean over the direction axis M of scale_m · v_m, for a pytree with leading axis M."""
    return jax.tree.map(lambda v: jnp.tensordot(scale_M, v, axes=1) / scale_M.shape[0], tree)


def forward_gradient(num_directions: int = 1) -> Callable:
    """Forward-gradient estimator g = (1/M) Σ_m (∇L·v_m) v_m, by `jax.jvp` (no backprop).

    Returns a `GradientFn` for `icl_toy.training.train.train(gradient=...)`; the loss value
    is exact.
    """
    _check_directions(num_directions)

    def gradient(loss, params, prompts, key):
        directions = jax.vmap(gaussian_direction, in_axes=(0, None))(
            jax.random.split(key, num_directions), params
        )

        def directional(v):
            return jax.jvp(lambda p: loss(p, prompts), (params,), (v,))

        values_M, slopes_M = jax.vmap(directional)(directions)
        return values_M[0], _scaled(directions, slopes_M)

    return gradient


def spsa_gradient(epsilon: float = 1e-3, num_directions: int = 1) -> Callable:
    """Two-point zeroth-order estimator g = (1/M) Σ_m (L(θ+εv_m) − L(θ−εv_m))/(2ε) v_m.

    Returns a `GradientFn`; only loss values are computed (two forward passes per direction).
    """
    _check_directions(num_directions)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")

    def gradient(loss, params, prompts, key):
        directions = jax.vmap(gaussian_direction, in_axes=(0, None))(
            jax.random.split(key, num_directions), params
        )

        def two_point(v):
            plus = loss(jax.tree.map(lambda p, u: p + epsilon * u, params, v), prompts)
            minus = loss(jax.tree.map(lambda p, u: p - epsilon * u, params, v), prompts)
            return 0.5 * (plus + minus), (plus - minus) / (2.0 * epsilon)

        values_M, slopes_M = jax.vmap(two_point)(directions)
        return jnp.mean(values_M), _scaled(directions, slopes_M)

    return gradient


def population_half_mse(w_YxD: jax.Array, w_star_YxD: jax.Array, cfg: TaskConfig) -> jax.Array:
    """½ E_x ||(W − W*) x||² = ½ s ||W − W*||²_F, for inputs with i.i.d. zero-mean coords of
    variance s (noiseless labels)."""
    s, _ = input_moments(cfg)
    return 0.5 * s * jnp.sum((w_YxD - w_star_YxD) ** 2)


def stream_icl_fit(
    delta_w: Callable[[jax.Array, jax.Array], jax.Array],
    x_CxNxD: jax.Array,
    y_CxNxY: jax.Array,
    w0_YxD: jax.Array,
) -> jax.Array:
    """Weights after each chunk, (C + 1, Y, D): W ← W + ΔW_ICL(x_c, y_c − W x_c).

    `delta_w(x_NxD, residuals_NxY) -> (Y, D)` is the implicit update of the in-context learner
    on a prompt of the chunk with residual labels (see the module docstring).
    """

    def step(w_YxD, chunk):
        x_NxD, y_NxY = chunk
        w_next = w_YxD + delta_w(x_NxD, y_NxY - matmul(x_NxD, w_YxD.T))
        return w_next, w_next

    _, ws = jax.lax.scan(step, w0_YxD, (x_CxNxD, y_CxNxY))
    return jnp.concatenate([w0_YxD[None], ws])


def stream_sgd_fit(
    x_CxNxD: jax.Array, y_CxNxY: jax.Array, w0_YxD: jax.Array, learning_rate: jax.Array
) -> jax.Array:
    """Backprop minibatch SGD on the same chunks, (C + 1, Y, D): W ← W − lr ∇L_c(W), with
    L_c(W) = (1/2N) Σ_i ||W x_i − y_i||² differentiated by `jax.grad`."""

    def chunk_loss(w_YxD, x_NxD, y_NxY):
        return 0.5 * jnp.mean(jnp.sum((matmul(x_NxD, w_YxD.T) - y_NxY) ** 2, axis=-1))

    def step(w_YxD, chunk):
        w_next = w_YxD - learning_rate * jax.grad(chunk_loss)(w_YxD, *chunk)
        return w_next, w_next

    _, ws = jax.lax.scan(step, w0_YxD, (x_CxNxD, y_CxNxY))
    return jnp.concatenate([w0_YxD[None], ws])


def stream_chunks(
    key: jax.Array, task: TaskConfig, num_tasks: int, num_chunks: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """T streams of C chunks of N examples: x (T, C, N, D), y = W* x (T, C, N, Y), W* (T, Y, D).

    Each stream has one fixed teacher W* from the task's prior and C·N inputs from its input
    law; the labels are noiseless.
    """
    key_w, key_x = jax.random.split(key)
    teachers_TxYxD = sample_batch(key_w, task, num_tasks).w
    chunk_cfg = dataclasses.replace(task, n_context=num_chunks * task.n_context - 1)
    draws = sample_batch(key_x, chunk_cfg, num_tasks)
    x_TxCxNxD = jnp.concatenate([draws.x, draws.x_q[:, None]], axis=1).reshape(
        num_tasks, num_chunks, task.n_context, task.d
    )
    y_TxCxNxY = einsum("tcnd,tyd->tcny", x_TxCxNxD, teachers_TxYxD)
    return x_TxCxNxD, y_TxCxNxY, teachers_TxYxD


def mean_population_curve(
    ws_TxCxYxD: jax.Array, teachers_TxYxD: jax.Array, cfg: TaskConfig
) -> jax.Array:
    """`population_half_mse` of each stream's weights after each chunk, averaged over streams."""
    losses_TxC = jax.vmap(
        jax.vmap(population_half_mse, in_axes=(0, None, None)), in_axes=(0, 0, None)
    )(ws_TxCxYxD, teachers_TxYxD, cfg)
    return jnp.mean(losses_TxC, axis=0)
