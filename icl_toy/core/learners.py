"""Explicit learners on one prompt (vmap for batches), closed-form step sizes, line search.

These are written as plain matrix algebra, independently of the attention code, so that
the constructions in `icl_toy.core.constructions` can be tested against them.
Inner loss L(W) = (1/2N) Σ_i ||W x_i − y_i||², so a GD step is
W ← W − (η/N) Σ_i (W x_i − y_i) x_iᵀ, with the 1/N inside η (THEORY §0).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core.linalg import matmul
from icl_toy.core.losses import half_mse
from icl_toy.core.tasks import TaskConfig, input_moments, sample_batch


def gd_fit(
    x_NxD: jax.Array, y_NxY: jax.Array, etas_K: jax.Array, w0: jax.Array | None = None
) -> jax.Array:
    """W after K GD steps with step sizes η_k from W0 (default 0), (Y, D)."""
    n = x_NxD.shape[0]
    w_YxD = jnp.zeros((y_NxY.shape[1], x_NxD.shape[1]), x_NxD.dtype) if w0 is None else w0
    for eta in jnp.atleast_1d(etas_K):
        grad_YxD = matmul((matmul(x_NxD, w_YxD.T) - y_NxY).T, x_NxD) / n
        w_YxD = w_YxD - eta * grad_YxD
    return w_YxD


def gd_predict(x_NxD, y_NxY, x_q_D, etas_K, w0=None) -> jax.Array:
    """ŷ = W_K x_q after K explicit GD steps, (Y,)."""
    return matmul(gd_fit(x_NxD, y_NxY, etas_K, w0), x_q_D)


def gdpp_predict(x_NxD, y_NxY, x_q_D, etas_K, gammas_K, w0=None) -> jax.Array:
    """ŷ after K GD++ steps: the recursion of von Oswald et al. (arXiv 2212.07677), (Y,).

    Per step, simultaneously for context and query, with H = Σ_i x_i x_iᵀ:
      ΔW = −(η/N) Σ_i (W0 x_i − r_i) x_iᵀ,  r_j ← r_j − ΔW x_j,  x_j ← (I − γH) x_j,
    where r holds the context targets (initially y) and the query's −W0 x_q; ŷ = −r_q.
    """
    n, d = x_NxD.shape
    w0 = jnp.zeros((y_NxY.shape[1], d), x_NxD.dtype) if w0 is None else w0
    x_all = jnp.concatenate([x_NxD, x_q_D[None]])  # (T, D); the query moves too
    r_all = jnp.concatenate([y_NxY, -matmul(w0, x_q_D)[None]])  # (T, Y)
    etas_K, gammas_K = jnp.broadcast_arrays(jnp.atleast_1d(etas_K), jnp.atleast_1d(gammas_K))
    for eta, gamma in zip(etas_K, gammas_K, strict=True):
        x_ctx, r_ctx = x_all[:n], r_all[:n]
        delta_w_YxD = -(eta / n) * matmul((matmul(x_ctx, w0.T) - r_ctx).T, x_ctx)
        h_DxD = matmul(x_ctx.T, x_ctx)
        r_all = r_all - matmul(x_all, delta_w_YxD.T)
        x_all = x_all - gamma * matmul(x_all, h_DxD)  # (I − γH) x_j in row form; H is symmetric
    return -r_all[-1]


def ols_predict(x_NxD, y_NxY, x_q_D) -> jax.Array:
    """Min-norm least squares, ŵ = X⁺ y, (Y,)."""
    return matmul(x_q_D, matmul(jnp.linalg.pinv(x_NxD), y_NxY))


def ridge_predict(x_NxD, y_NxY, x_q_D, lam: float) -> jax.Array:
    """Ridge, ŵ = (XᵀX + λI)⁻¹ Xᵀy; λ = σ²/τ² is the Bayes posterior mean (THEORY §8)."""
    d = x_NxD.shape[1]
    gram_DxD = matmul(x_NxD.T, x_NxD) + lam * jnp.eye(d, dtype=x_NxD.dtype)
    w_DxY = jnp.linalg.solve(gram_DxD, matmul(x_NxD.T, y_NxY))
    return matmul(x_q_D, w_DxY)


def optimal_gd_eta(cfg: TaskConfig) -> float:
    """Closed-form best single GD step from 0 (THEORY §8), 1/N inside η.

    η* = N τ² / (τ² s (κ + d + N − 2) + σ²) for inputs with i.i.d. zero-mean coordinates of
    variance s and kurtosis κ. For the von Oswald preset this is 200/33.
    """
    s, kurt = input_moments(cfg)
    tau2, sigma2 = cfg.w_scale**2, cfg.noise_std**2
    return cfg.n_context * tau2 / (tau2 * s * (kurt + cfg.d + cfg.n_context - 2) + sigma2)


def optimal_gd_mse(cfg: TaskConfig) -> float:
    """MSE (not half) of the best single GD step per output, plus σ² if the query is noisy.

    MSE* = s τ² d [1 − N τ² s / (τ² s (κ + d + N − 2) + σ²)]   (THEORY §8)
    """
    s, kurt = input_moments(cfg)
    tau2, sigma2 = cfg.w_scale**2, cfg.noise_std**2
    denom = tau2 * s * (kurt + cfg.d + cfg.n_context - 2) + sigma2
    mse = s * tau2 * cfg.d * (1.0 - cfg.n_context * tau2 * s / denom)
    return mse + (sigma2 if cfg.query_noise else 0.0)


def gd_half_mse(prompts, etas_K) -> jax.Array:
    """Half-MSE of explicit K-step GD (step sizes η_k) over a batch of prompts."""
    preds = jax.vmap(gd_predict, in_axes=(0, 0, 0, None))(prompts.x, prompts.y, prompts.x_q, etas_K)
    return half_mse(preds, prompts.y_q)


@functools.partial(jax.jit, static_argnames=("num_steps", "refine_iters"))
def _line_search(prompts, grid, num_steps: int, refine_iters: int):
    def loss(eta):
        return gd_half_mse(prompts, jnp.full(num_steps, eta))

    losses = jax.lax.map(loss, grid)
    best = jnp.argmin(losses)
    lo = grid[jnp.maximum(best - 1, 0)]
    hi = grid[jnp.minimum(best + 1, grid.shape[0] - 1)]
    inv_phi = (np.sqrt(5.0) - 1.0) / 2.0

    def golden(_, bracket):
        lo, hi = bracket
        a, b = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
        left_better = loss(a) < loss(b)
        return jnp.where(left_better, lo, a), jnp.where(left_better, b, hi)

    lo, hi = jax.lax.fori_loop(0, refine_iters, golden, (lo, hi))
    eta = 0.5 * (lo + hi)
    return eta, loss(eta)


def line_search_eta(
    cfg: TaskConfig,
    *,
    key: jax.Array,
    num_tasks: int = 10_000,
    num_steps: int = 1,
    grid: np.ndarray | None = None,
    refine_iters: int = 40,
) -> tuple[float, float]:
    """(η, half-MSE) of the best shared step size for K-step GD on held-out tasks.

    Scans `grid` (default arange(0.001, 25, 0.1), as von Oswald et al.'s code), then refines
    around the best grid point by golden-section search.
    """
    if num_tasks < 1 or num_steps < 1:
        raise ValueError(f"num_tasks and num_steps must be >= 1, got {num_tasks}, {num_steps}")
    grid = np.arange(0.001, 25.0, 0.1) if grid is None else np.asarray(grid)
    prompts = sample_batch(key, cfg, num_tasks)
    eta, loss = _line_search(prompts, jnp.asarray(grid), num_steps, refine_iters)
    return float(eta), float(loss)


def preconditioned_gd_predict(x_NxD, y_NxY, x_q_D, gamma_DxD) -> jax.Array:
    """ŷ = x_qᵀ Γ h per output, h = Xᵀy/N: one preconditioned GD step from 0, (Y,).

    From W = 0 the gradient of L(W) = (1/2N) Σ_i ||W x_i − y_i||² is −YᵀX/N, and the step
    W ← W − ∇L Γᵀ gives W = (1/N) Yᵀ X Γᵀ (THEORY §0, §5; Γ = ηI is plain GD).
    """
    h_DxY = matmul(x_NxD.T, y_NxY) / x_NxD.shape[0]
    return matmul(matmul(x_q_D, gamma_DxD), h_DxY)


def _gradient(x_NxD: jax.Array, y_NxY: jax.Array, w_YxD: jax.Array) -> jax.Array:
    """∇L(W) = (1/N) Σ_i (W x_i − y_i) x_iᵀ, (Y, D)."""
    return matmul((matmul(x_NxD, w_YxD.T) - y_NxY).T, x_NxD) / x_NxD.shape[0]


def heavy_ball_predict(x_NxD, y_NxY, x_q_D, etas_K, betas_K, w0=None) -> jax.Array:
    """ŷ = W_K x_q after K heavy-ball steps (Polyak), (Y,).

    W_{k+1} = W_k − η_k ∇L(W_k) + β_k (W_k − W_{k−1}),  W_{−1} = W_0 (default 0),
    so β_0 has no effect. `etas_K` and `betas_K` broadcast against each other (a scalar β
    is one momentum shared by all steps); β = 0 is `gd_predict`.
    """
    w_YxD = jnp.zeros((y_NxY.shape[1], x_NxD.shape[1]), x_NxD.dtype) if w0 is None else w0
    w_prev = w_YxD
    etas_K, betas_K = jnp.broadcast_arrays(jnp.atleast_1d(etas_K), jnp.atleast_1d(betas_K))
    for eta, beta in zip(etas_K, betas_K, strict=True):
        w_YxD, w_prev = (
            w_YxD - eta * _gradient(x_NxD, y_NxY, w_YxD) + beta * (w_YxD - w_prev),
            w_YxD,
        )
    return matmul(w_YxD, x_q_D)


def nesterov_predict(x_NxD, y_NxY, x_q_D, etas_K, betas_K, w0=None) -> jax.Array:
    """ŷ = W_K x_q after K steps of Nesterov's accelerated gradient, (Y,).

    V_k = W_k + β_k (W_k − W_{k−1}),  W_{k+1} = V_k − η_k ∇L(V_k),  W_{−1} = W_0,
    i.e. heavy ball with the gradient taken at the look-ahead point V_k. Broadcasting and
    β_0 as in `heavy_ball_predict`.
    """
    w_YxD = jnp.zeros((y_NxY.shape[1], x_NxD.shape[1]), x_NxD.dtype) if w0 is None else w0
    w_prev = w_YxD
    etas_K, betas_K = jnp.broadcast_arrays(jnp.atleast_1d(etas_K), jnp.atleast_1d(betas_K))
    for eta, beta in zip(etas_K, betas_K, strict=True):
        look_ahead = w_YxD + beta * (w_YxD - w_prev)
        w_YxD, w_prev = look_ahead - eta * _gradient(x_NxD, y_NxY, look_ahead), w_YxD
    return matmul(w_YxD, x_q_D)
