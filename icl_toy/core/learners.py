"""Explicit in-context learners as `Predictor`s (one prompt in, ŷ out; vmap for batches).

Every algorithm is written once here, as plain matrix algebra independent of the attention
code, so that the constructions in `icl_toy.core.constructions` can be tested against them,
`icl_toy.analysis.baselines` compares trained models with them and `icl_toy.training.tuning`
fits their scalars. A factory (`gd(eta)`, `ridge(lam)`, …) returns an
`icl_toy.core.predictors.Predictor`; its per-step arguments may be jax arrays, traced while
θ is fitted, and anything else is read as a float64 numpy array. The `*_fit` functions return the
weights W (Y, D) that a predictor applies to x_q.

Notation (docs/theory.md §0, §8): S = XᵀX and b = Xᵀy (unnormalised), Ŝ = S/N. Inner loss
L(W) = (1/2N) Σ_i ||W x_i − y_i||², so a GD step is W ← W − (η/N) Σ_i (W x_i − y_i) x_iᵀ
with the 1/N inside η. With d_y > 1 every algorithm runs on each output column; the line
search uses the joint (Frobenius) loss.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core.linalg import matmul
from icl_toy.core.predictors import Predictor, batch_half_mse
from icl_toy.core.tasks import Prompt, TaskConfig, input_moments, sample_batch

# A scalar, K values, or a (K,) array (traced while θ is fitted): one value per step.
Steps = float | Sequence[float] | np.ndarray | jax.Array


def _as_steps(value: Steps, name: str) -> np.ndarray | jax.Array:
    """A per-step argument as a 1-D array: jax arrays (θ being fitted, maybe traced) as they
    are, anything else as float64 numpy (float32 on device unless x64 is enabled)."""
    if np.ndim(value) > 1 or np.size(value) < 1:
        raise ValueError(f"{name} must be a scalar or a 1-D sequence, got shape {np.shape(value)}")
    return value if isinstance(value, jax.Array) else np.atleast_1d(np.asarray(value, float))


def _check_count(value: int, name: str) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


# --- Closed-form and direct solvers --------------------------------------------------------


def zero_predictor(prompt: Prompt) -> jax.Array:
    """ŷ = 0, (Y,): the learner that ignores the context."""
    return jnp.zeros_like(prompt.y_q)


def ols(prompt: Prompt) -> jax.Array:
    """Min-norm least squares, ŷ = x_qᵀ X⁺ y with ŵ = X⁺ y, (Y,)."""
    return matmul(prompt.x_q, matmul(jnp.linalg.pinv(prompt.x), prompt.y))


def ridge(lam: float) -> Predictor:
    """Ridge, ŷ = x_qᵀ (XᵀX + λI)⁻¹ Xᵀy (λ on the unnormalised S = XᵀX).

    λ = σ²/τ² is the Bayes posterior mean (docs/theory.md §8).
    """
    if lam < 0:
        raise ValueError(f"the ridge λ must be >= 0, got {lam}")

    def predict(prompt: Prompt) -> jax.Array:
        x_NxD = prompt.x
        d = x_NxD.shape[1]
        gram_DxD = matmul(x_NxD.T, x_NxD) + lam * jnp.eye(d, dtype=x_NxD.dtype)
        w_DxY = jnp.linalg.solve(gram_DxD, matmul(x_NxD.T, prompt.y))
        return matmul(prompt.x_q, w_DxY)

    return predict


# --- Gradient methods ----------------------------------------------------------------------


def _gradient(x_NxD: jax.Array, y_NxY: jax.Array, w_YxD: jax.Array) -> jax.Array:
    """∇L(W) = (1/N) Σ_i (W x_i − y_i) x_iᵀ, (Y, D)."""
    return matmul((matmul(x_NxD, w_YxD.T) - y_NxY).T, x_NxD) / x_NxD.shape[0]


def gd_fit(
    x_NxD: jax.Array, y_NxY: jax.Array, etas_K: Steps, w0: jax.Array | None = None
) -> jax.Array:
    """W after K GD steps with step sizes η_k from W0 (default 0), (Y, D)."""
    n = x_NxD.shape[0]
    w_YxD = jnp.zeros((y_NxY.shape[1], x_NxD.shape[1]), x_NxD.dtype) if w0 is None else w0
    for eta in jnp.atleast_1d(jnp.asarray(etas_K)):
        grad_YxD = matmul((matmul(x_NxD, w_YxD.T) - y_NxY).T, x_NxD) / n
        w_YxD = w_YxD - eta * grad_YxD
    return w_YxD


def gd(eta: Steps, w0: jax.Array | None = None) -> Predictor:
    """ŷ = W_K x_q after K GD steps with step sizes η_k (K = len(eta)) from W0 (default 0)."""
    eta = _as_steps(eta, "eta")

    def predict(prompt: Prompt) -> jax.Array:
        return matmul(gd_fit(prompt.x, prompt.y, eta, w0), prompt.x_q)

    return predict


def gdpp(eta: Steps, gamma: Steps, w0: jax.Array | None = None) -> Predictor:
    """ŷ after K GD++ steps (η_k, γ_k) of von Oswald et al. (arXiv 2212.07677), (Y,).

    Per step, simultaneously for context and query, with H = Σ_i x_i x_iᵀ:
      ΔW = −(η/N) Σ_i (W0 x_i − r_i) x_iᵀ,  r_j ← r_j − ΔW x_j,  x_j ← (I − γH) x_j,
    where r holds the context targets (initially y) and the query's −W0 x_q; ŷ = −r_q.
    `eta` and `gamma` broadcast against each other.
    """
    eta = _as_steps(eta, "eta")
    gamma = _as_steps(gamma, "gamma")

    def predict(prompt: Prompt) -> jax.Array:
        x_NxD, y_NxY, x_q_D = prompt.x, prompt.y, prompt.x_q
        n, d = x_NxD.shape
        w0_YxD = jnp.zeros((y_NxY.shape[1], d), x_NxD.dtype) if w0 is None else w0
        x_all = jnp.concatenate([x_NxD, x_q_D[None]])  # (T, D); the query moves too
        r_all = jnp.concatenate([y_NxY, -matmul(w0_YxD, x_q_D)[None]])  # (T, Y)
        etas_K, gammas_K = jnp.broadcast_arrays(
            jnp.atleast_1d(jnp.asarray(eta)), jnp.atleast_1d(jnp.asarray(gamma))
        )
        for eta_k, gamma_k in zip(etas_K, gammas_K, strict=True):
            x_ctx, r_ctx = x_all[:n], r_all[:n]
            delta_w_YxD = -(eta_k / n) * matmul((matmul(x_ctx, w0_YxD.T) - r_ctx).T, x_ctx)
            h_DxD = matmul(x_ctx.T, x_ctx)
            r_all = r_all - matmul(x_all, delta_w_YxD.T)
            x_all = x_all - gamma_k * matmul(x_all, h_DxD)  # (I − γH) x_j as rows; H symmetric
        return -r_all[-1]

    return predict


def preconditioned_gd(gamma_DxD: jax.Array) -> Predictor:
    """ŷ = x_qᵀ Γ h per output, h = Xᵀy/N: one preconditioned GD step from 0, (Y,).

    From W = 0 the gradient of L(W) is −YᵀX/N, and the step W ← W − ∇L Γᵀ gives
    W = (1/N) Yᵀ X Γᵀ (docs/theory.md §0, §5); Γ = ηI is `gd(η)`.
    """
    if len(np.shape(gamma_DxD)) != 2 or np.shape(gamma_DxD)[0] != np.shape(gamma_DxD)[1]:
        raise ValueError(f"Γ must be a square (D, D) matrix, got shape {np.shape(gamma_DxD)}")

    def predict(prompt: Prompt) -> jax.Array:
        h_DxY = matmul(prompt.x.T, prompt.y) / prompt.x.shape[0]
        return matmul(matmul(prompt.x_q, jnp.asarray(gamma_DxD)), h_DxY)

    return predict


def _momentum_start(prompt: Prompt, eta, beta, w0):
    """(x, y, W_0, η_K, β_K) of a momentum method: W_0 = w0 or 0, η and β broadcast."""
    x_NxD, y_NxY = prompt.x, prompt.y
    w_YxD = jnp.zeros((y_NxY.shape[1], x_NxD.shape[1]), x_NxD.dtype) if w0 is None else w0
    etas_K, betas_K = jnp.broadcast_arrays(
        jnp.atleast_1d(jnp.asarray(eta)), jnp.atleast_1d(jnp.asarray(beta))
    )
    return x_NxD, y_NxY, w_YxD, etas_K, betas_K


def heavy_ball(eta: Steps, beta: Steps, w0: jax.Array | None = None) -> Predictor:
    """ŷ = W_K x_q after K heavy-ball steps (Polyak), (Y,).

    W_{k+1} = W_k − η_k ∇L(W_k) + β_k (W_k − W_{k−1}),  W_{−1} = W_0 (default 0),
    so β_0 has no effect. `eta` and `beta` broadcast against each other (a scalar β is one
    momentum shared by all steps); β = 0 is `gd`.
    """
    eta = _as_steps(eta, "eta")
    beta = _as_steps(beta, "beta")

    def predict(prompt: Prompt) -> jax.Array:
        x_NxD, y_NxY, w_YxD, etas_K, betas_K = _momentum_start(prompt, eta, beta, w0)
        w_prev = w_YxD
        for eta_k, beta_k in zip(etas_K, betas_K, strict=True):
            w_YxD, w_prev = (
                w_YxD - eta_k * _gradient(x_NxD, y_NxY, w_YxD) + beta_k * (w_YxD - w_prev),
                w_YxD,
            )
        return matmul(w_YxD, prompt.x_q)

    return predict


def nesterov(eta: Steps, beta: Steps, w0: jax.Array | None = None) -> Predictor:
    """ŷ = W_K x_q after K steps of Nesterov's accelerated gradient, (Y,).

    V_k = W_k + β_k (W_k − W_{k−1}),  W_{k+1} = V_k − η_k ∇L(V_k),  W_{−1} = W_0,
    i.e. heavy ball with the gradient taken at the look-ahead point V_k. Broadcasting and
    β_0 as in `heavy_ball`.
    """
    eta = _as_steps(eta, "eta")
    beta = _as_steps(beta, "beta")

    def predict(prompt: Prompt) -> jax.Array:
        x_NxD, y_NxY, w_YxD, etas_K, betas_K = _momentum_start(prompt, eta, beta, w0)
        w_prev = w_YxD
        for eta_k, beta_k in zip(etas_K, betas_K, strict=True):
            look_ahead = w_YxD + beta_k * (w_YxD - w_prev)
            w_YxD, w_prev = look_ahead - eta_k * _gradient(x_NxD, y_NxY, look_ahead), w_YxD
        return matmul(w_YxD, prompt.x_q)

    return predict


def line_search_gd_iterates(x_NxD: jax.Array, y_NxY: jax.Array, num_steps: int) -> jax.Array:
    """W_0 = 0, …, W_K of GD with exact line search on L(W) = (1/2N)||XWᵀ − Y||², (K+1, Y, D).

    With gradient G = (W Ŝ − hᵀ) (Y, D), the exact minimiser of L(W − αG) over α is
    α = ||G||² / tr(G Ŝ Gᵀ) (docs/theory.md §8). At a stationary point (G = 0) the step is 0.
    """
    n = x_NxD.shape[0]
    s_DxD = matmul(x_NxD.T, x_NxD) / n
    iterates = [jnp.zeros((y_NxY.shape[1], x_NxD.shape[1]), x_NxD.dtype)]
    for _ in range(num_steps):
        w_YxD = iterates[-1]
        g_YxD = matmul((matmul(x_NxD, w_YxD.T) - y_NxY).T, x_NxD) / n
        g_norm2 = jnp.sum(g_YxD**2)
        curvature = jnp.sum(matmul(g_YxD, s_DxD) * g_YxD)  # tr(G Ŝ Gᵀ)
        alpha = jnp.where(curvature > 0, g_norm2 / jnp.where(curvature > 0, curvature, 1.0), 0.0)
        iterates.append(w_YxD - alpha * g_YxD)
    return jnp.stack(iterates)


def line_search_gd(num_steps: int) -> Predictor:
    """K steps of GD with the exact line-search step per task and step, from W = 0."""
    _check_count(num_steps, "num_steps")

    def predict(prompt: Prompt) -> jax.Array:
        return matmul(line_search_gd_iterates(prompt.x, prompt.y, num_steps)[-1], prompt.x_q)

    return predict


def conjugate_gradient_fit(x_NxD: jax.Array, y_NxY: jax.Array, num_steps: int) -> jax.Array:
    """W (Y, D) after K conjugate-gradient steps on the normal equations S w = b from w = 0.

    r_0 = p_0 = b;  α_k = r_kᵀr_k / p_kᵀS p_k;  w ← w + α_k p_k;  r_{k+1} = r_k − α_k S p_k;
    p_{k+1} = r_{k+1} + (r_{k+1}ᵀr_{k+1} / r_kᵀr_k) p_k. In exact arithmetic it reaches the
    min-norm least-squares solution in at most rank(S) ≤ d steps (docs/theory.md §8); the iterates
    stay in the row space of X. A converged column (p = 0) takes zero steps from then on.
    """
    s_DxD = matmul(x_NxD.T, x_NxD)

    def one_column(b_D):
        w_D, r_D, p_D = jnp.zeros_like(b_D), b_D, b_D
        for _ in range(num_steps):
            sp_D = matmul(s_DxD, p_D)
            rr, psp = jnp.sum(r_D**2), jnp.sum(p_D * sp_D)
            alpha = jnp.where(psp > 0, rr / jnp.where(psp > 0, psp, 1.0), 0.0)
            w_D = w_D + alpha * p_D
            r_new = r_D - alpha * sp_D
            beta = jnp.where(rr > 0, jnp.sum(r_new**2) / jnp.where(rr > 0, rr, 1.0), 0.0)
            r_D, p_D = r_new, r_new + beta * p_D
        return w_D

    return jax.vmap(one_column)(matmul(x_NxD.T, y_NxY).T)


def conjugate_gradient(num_steps: int) -> Predictor:
    """ŷ = x_qᵀ w_K after K CG steps on XᵀX w = Xᵀy (`conjugate_gradient_fit`)."""
    _check_count(num_steps, "num_steps")

    def predict(prompt: Prompt) -> jax.Array:
        return matmul(conjugate_gradient_fit(prompt.x, prompt.y, num_steps), prompt.x_q)

    return predict


def newton_schulz_fit(
    x_NxD: jax.Array, y_NxY: jax.Array, num_iterations: int, alpha: float | jax.Array | None = None
) -> jax.Array:
    """W (Y, D) = (M_k b)ᵀ after k Newton–Schulz iterations for S⁻¹ (docs/theory.md §8).

    M_0 = αI,  M_{k+1} = M_k (2I − S M_k),  ŵ = M_k b.
    Then I − S M_k = (I − αS)^{2^k}, so ŵ equals 2^k GD steps of step α on ½||Xw − y||²
    (η = αN in the 1/N-inside convention). It needs 0 < α < 2/λ_max(S); the default
    α = 1/λ_max(S) is the largest step that damps every eigendirection monotonically.
    """
    d = x_NxD.shape[1]
    s_DxD = matmul(x_NxD.T, x_NxD)
    if alpha is None:
        alpha = 1.0 / jnp.linalg.eigvalsh(s_DxD)[-1]
    eye = jnp.eye(d, dtype=x_NxD.dtype)
    m_DxD = alpha * eye
    for _ in range(num_iterations):
        m_DxD = matmul(m_DxD, 2.0 * eye - matmul(s_DxD, m_DxD))
    return matmul(m_DxD, matmul(x_NxD.T, y_NxY)).T


def newton_schulz(num_iterations: int, alpha: float | None = None) -> Predictor:
    """ŷ = x_qᵀ M_k Xᵀy after k Newton–Schulz iterations (`newton_schulz_fit`)."""
    if num_iterations < 0:
        raise ValueError(f"num_iterations must be >= 0, got {num_iterations}")
    if alpha is not None and alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")

    def predict(prompt: Prompt) -> jax.Array:
        return matmul(newton_schulz_fit(prompt.x, prompt.y, num_iterations, alpha), prompt.x_q)

    return predict


# --- Local averaging -----------------------------------------------------------------------


def nearest_neighbours(k: int) -> Predictor:
    """k-NN regression: ŷ = mean of the labels of the k context inputs nearest to x_q (L2).

    Ties in distance go to the earlier context index (`jax.lax.top_k`). The context must
    have at least k pairs.
    """
    _check_count(k, "k")

    def predict(prompt: Prompt) -> jax.Array:
        if prompt.x.shape[0] < k:
            raise ValueError(
                f"k-NN with k = {k} needs N >= k, the prompt has N = {prompt.x.shape[0]}"
            )
        dist2_N = jnp.sum((prompt.x - prompt.x_q[None]) ** 2, axis=-1)
        _, nearest_K = jax.lax.top_k(-dist2_N, k)
        return jnp.mean(prompt.y[nearest_K], axis=0)

    return predict


# --- Step sizes: closed forms and line search ----------------------------------------------


def optimal_gd_eta(cfg: TaskConfig) -> float:
    """Closed-form best single GD step from 0 (docs/theory.md §8), 1/N inside η.

    η* = N τ² / (τ² s (κ + d + N − 2) + σ²) for inputs with i.i.d. zero-mean coordinates of
    variance s and kurtosis κ. For the von Oswald preset this is 200/33. Other input laws
    (e.g. anisotropic Gaussians) raise a ValueError; `tuned_gd_eta` falls back to the line
    search there.
    """
    s, kurt = input_moments(cfg)
    tau2, sigma2 = cfg.w_scale**2, cfg.noise_std**2
    return cfg.n_context * tau2 / (tau2 * s * (kurt + cfg.d + cfg.n_context - 2) + sigma2)


def optimal_gd_mse(cfg: TaskConfig) -> float:
    """MSE (not half) of the best single GD step per output, plus σ² if the query is noisy.

    MSE* = s τ² d [1 − N τ² s / (τ² s (κ + d + N − 2) + σ²)]   (docs/theory.md §8)
    """
    s, kurt = input_moments(cfg)
    tau2, sigma2 = cfg.w_scale**2, cfg.noise_std**2
    denom = tau2 * s * (kurt + cfg.d + cfg.n_context - 2) + sigma2
    mse = s * tau2 * cfg.d * (1.0 - cfg.n_context * tau2 * s / denom)
    return mse + (sigma2 if cfg.query_noise else 0.0)


@functools.partial(jax.jit, static_argnames=("num_steps", "refine_iters"))
def _line_search(prompts, grid, num_steps: int, refine_iters: int):
    def loss(eta):
        return batch_half_mse(gd(jnp.full(num_steps, eta)), prompts)

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


def tuned_gd_eta(
    task: TaskConfig, num_steps: int, *, key: jax.Array, num_tasks: int = 10_000
) -> float:
    """The best constant step η for K-step GD on `task`.

    K = 1 with i.i.d. symmetric inputs: the closed form `optimal_gd_eta` (docs/theory.md §8).
    Otherwise: `line_search_eta` on `num_tasks` held-out tasks drawn from `key`.
    """
    if num_steps == 1:
        try:
            return optimal_gd_eta(task)
        except ValueError:
            pass  # no closed form for these inputs: fall back to the line search
    eta, _ = line_search_eta(task, key=key, num_tasks=num_tasks, num_steps=num_steps)
    return eta
