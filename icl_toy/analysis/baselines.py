"""The baseline family of in-context learners, each with the model's call signature (THEORY §8).

A **Predictor** maps ONE prompt (`icl_toy.core.tasks.Prompt`: x (N, D), y (N, Y), x_q (D,), …) to
ŷ (Y,); batch it with `jax.vmap`. Every algorithm here, a transformer with its params
(`model_predictor`) and a construction (a transformer with constructed params) share that
signature, so `icl_toy.analysis.alignment` compares any two of them.

Notation (THEORY §0, §8): S = XᵀX and b = Xᵀy (unnormalised), Ŝ = S/N. GD step sizes η have
the 1/N inside (the inner loss is L(W) = (1/2N) Σ_i ||W x_i − y_i||²). With d_y > 1 every
algorithm runs on each output column; the line search uses the joint (Frobenius) loss.

Risks are MSE **per output**, E(ŷ − y_q)² with no ½ (`icl_toy.core.losses.half_mse` has the ½),
and *excess* over the query-label noise: add σ² when `query_noise` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core import learners
from icl_toy.core.linalg import matmul
from icl_toy.core.tasks import Prompt, TaskConfig, input_covariance, prompt_tokens, sample_batch

# One prompt -> ŷ (Y,). Pure and traceable, so it can be vmapped, jitted and differentiated.
Predictor = Callable[[Prompt], jax.Array]


class SeededPredictor(NamedTuple):
    """A predictor per seed: `apply(params_of_one_seed, prompt) -> ŷ (Y,)`.

    Trained models come as S seeds vmapped in one run, so their params carry a leading
    seed axis S; `icl_toy.analysis.alignment` evaluates every seed on the same tasks.
    """

    apply: Callable[[Any, Prompt], jax.Array]
    params: Any  # pytree, every leaf with a leading seed axis S


def as_seeded(predictor: Predictor | SeededPredictor) -> SeededPredictor:
    """A `SeededPredictor` as is; a plain predictor with a dummy seed axis of size 1."""
    if isinstance(predictor, SeededPredictor):
        return predictor
    return SeededPredictor(lambda _, prompt: predictor(prompt), jnp.zeros(1))


# --- Transformers as predictors ------------------------------------------------------------


def model_predictor(model, params, w0: jax.Array | None = None) -> Predictor:
    """ŷ = model.apply(params, tokens(prompt)) for a flax model on regression tokens.

    Tokens are `prompt_tokens(prompt, w0)`: context (x_i, y_i), query (x_q, −W0 x_q).
    """

    def predict(prompt: Prompt) -> jax.Array:
        return model.apply(params, prompt_tokens(prompt, w0))

    return predict


def seeded_model_predictor(model, params_S, w0: jax.Array | None = None) -> SeededPredictor:
    """`model_predictor` for params with a leading seed axis S (e.g. `train`'s output)."""

    def apply(params, prompt: Prompt) -> jax.Array:
        return model.apply(params, prompt_tokens(prompt, w0))

    return SeededPredictor(apply, params_S)


# --- Closed-form and direct solvers --------------------------------------------------------


def zero_predictor(prompt: Prompt) -> jax.Array:
    """ŷ = 0, (Y,): the learner that ignores the context."""
    return jnp.zeros_like(prompt.y_q)


def ols(prompt: Prompt) -> jax.Array:
    """Min-norm least squares, ŷ = x_qᵀ X⁺ y, (Y,)."""
    return learners.ols_predict(prompt.x, prompt.y, prompt.x_q)


def ridge(lam: float) -> Predictor:
    """Ridge, ŷ = x_qᵀ (XᵀX + λI)⁻¹ Xᵀy (λ on the unnormalised S = XᵀX)."""
    if lam < 0:
        raise ValueError(f"the ridge λ must be >= 0, got {lam}")

    def predict(prompt: Prompt) -> jax.Array:
        return learners.ridge_predict(prompt.x, prompt.y, prompt.x_q, lam)

    return predict


def bayes_ridge_lambda(task: TaskConfig) -> float:
    """λ = σ²/τ²: with w ~ N(0, τ²I) and Gaussian label noise σ², ridge at this λ is the
    posterior mean E[w | X, y], the Bayes-optimal predictor (THEORY §3, §8)."""
    return task.noise_std**2 / task.w_scale**2


# --- Gradient methods --------------------------------------------------------------------------


def gd(etas_K: float | Sequence[float]) -> Predictor:
    """K GD steps from W = 0 with step sizes η_k (1/N inside η), `learners.gd_predict`."""
    etas_K = np.atleast_1d(np.asarray(etas_K, dtype=float))
    if etas_K.ndim != 1 or etas_K.size < 1:
        raise ValueError(f"etas must be a scalar or a 1-D sequence, got shape {etas_K.shape}")

    def predict(prompt: Prompt) -> jax.Array:
        return learners.gd_predict(prompt.x, prompt.y, prompt.x_q, jnp.asarray(etas_K))

    return predict


def tuned_gd_eta(
    task: TaskConfig, num_steps: int, *, key: jax.Array, num_tasks: int = 10_000
) -> float:
    """The best constant step η for K-step GD on `task`.

    K = 1 with i.i.d. symmetric inputs: the closed form `learners.optimal_gd_eta` (THEORY §8).
    Otherwise: `learners.line_search_eta` on `num_tasks` held-out tasks drawn from `key`.
    """
    if num_steps == 1:
        try:
            return learners.optimal_gd_eta(task)
        except ValueError:
            pass  # no closed form for these inputs: fall back to the line search
    eta, _ = learners.line_search_eta(task, key=key, num_tasks=num_tasks, num_steps=num_steps)
    return eta


def line_search_gd_iterates(x_NxD: jax.Array, y_NxY: jax.Array, num_steps: int) -> jax.Array:
    """W_0 = 0, …, W_K of GD with exact line search on L(W) = (1/2N)||XWᵀ − Y||², (K+1, Y, D).

    With gradient G = (W Ŝ − hᵀ) (Y, D), the exact minimiser of L(W − αG) over α is
    α = ||G||² / tr(G Ŝ Gᵀ) (THEORY §8). At a stationary point (G = 0) the step is 0.
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
    _check_steps(num_steps)

    def predict(prompt: Prompt) -> jax.Array:
        return matmul(line_search_gd_iterates(prompt.x, prompt.y, num_steps)[-1], prompt.x_q)

    return predict


def conjugate_gradient_fit(x_NxD: jax.Array, y_NxY: jax.Array, num_steps: int) -> jax.Array:
    """W (Y, D) after K conjugate-gradient steps on the normal equations S w = b from w = 0.

    r_0 = p_0 = b;  α_k = r_kᵀr_k / p_kᵀS p_k;  w ← w + α_k p_k;  r_{k+1} = r_k − α_k S p_k;
    p_{k+1} = r_{k+1} + (r_{k+1}ᵀr_{k+1} / r_kᵀr_k) p_k. In exact arithmetic it reaches the
    min-norm least-squares solution in at most rank(S) ≤ d steps (THEORY §8); the iterates
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
    _check_steps(num_steps)

    def predict(prompt: Prompt) -> jax.Array:
        return matmul(conjugate_gradient_fit(prompt.x, prompt.y, num_steps), prompt.x_q)

    return predict


def gdpp(etas_K: float | Sequence[float], gammas_K: float | Sequence[float]) -> Predictor:
    """K GD++ steps (η_k, γ_k) of von Oswald et al. (arXiv 2212.07677), `learners.gdpp_predict`."""
    etas_K, gammas_K = np.broadcast_arrays(
        np.atleast_1d(np.asarray(etas_K, float)), np.atleast_1d(np.asarray(gammas_K, float))
    )

    def predict(prompt: Prompt) -> jax.Array:
        return learners.gdpp_predict(
            prompt.x, prompt.y, prompt.x_q, jnp.asarray(etas_K), jnp.asarray(gammas_K)
        )

    return predict


def preconditioned_gd(gamma_DxD: jax.Array) -> Predictor:
    """One preconditioned GD step from 0, ŷ = x_qᵀ Γ h with h = Xᵀy/N (THEORY §0, §5).

    Wraps `learners.preconditioned_gd_predict`; Γ = ηI is `gd(η)`.
    """
    gamma_DxD = jnp.asarray(gamma_DxD)
    if gamma_DxD.ndim != 2 or gamma_DxD.shape[0] != gamma_DxD.shape[1]:
        raise ValueError(f"Γ must be a square (D, D) matrix, got shape {gamma_DxD.shape}")

    def predict(prompt: Prompt) -> jax.Array:
        return learners.preconditioned_gd_predict(prompt.x, prompt.y, prompt.x_q, gamma_DxD)

    return predict


def newton_schulz_fit(
    x_NxD: jax.Array, y_NxY: jax.Array, num_iterations: int, alpha: float | jax.Array | None = None
) -> jax.Array:
    """W (Y, D) = (M_k b)ᵀ after k Newton–Schulz iterations for S⁻¹ (THEORY §8).

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


def nearest_neighbours(k: int) -> Predictor:
    """k-NN regression: ŷ = mean of the labels of the k context inputs nearest to x_q (L2).

    Ties in distance go to the earlier context index (`jax.lax.top_k`). The context must
    have at least k pairs.
    """
    _check_steps(k, "k")

    def predict(prompt: Prompt) -> jax.Array:
        if prompt.x.shape[0] < k:
            raise ValueError(
                f"k-NN with k = {k} needs N >= k, the prompt has N = {prompt.x.shape[0]}"
            )
        dist2_N = jnp.sum((prompt.x - prompt.x_q[None]) ** 2, axis=-1)
        _, nearest_K = jax.lax.top_k(-dist2_N, k)
        return jnp.mean(prompt.y[nearest_K], axis=0)

    return predict


def _check_steps(value: int, name: str = "num_steps") -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


# --- The family used by `alignment.closest_algorithm` --------------------------------------


def baseline_family(
    task: TaskConfig,
    *,
    key: jax.Array,
    max_steps: int = 3,
    ridge_lambdas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
    knn_k: int = 3,
    num_tune_tasks: int = 10_000,
) -> dict[str, Predictor]:
    """Every baseline, named: zero, OLS, ridge over a λ grid (plus the Bayes λ if σ > 0),
    GD with K = 1..`max_steps` steps at a tuned constant η (`tuned_gd_eta`, on tasks from
    `key`), line-search GD, CG and Newton–Schulz for K = 1..`max_steps`, and k-NN.

    GD++ and preconditioned GD need fitted parameters: add them to the dict yourself
    (e.g. `family["gd++"] = gdpp(etas, gammas)`).
    """
    _check_steps(max_steps, "max_steps")
    family: dict[str, Predictor] = {"zero": zero_predictor, "ols": ols}
    for lam in ridge_lambdas:
        family[f"ridge(λ={lam:g})"] = ridge(lam)
    if task.noise_std > 0:
        lam = bayes_ridge_lambda(task)
        family[f"ridge(Bayes λ={lam:.3g})"] = ridge(lam)
    for k in range(1, max_steps + 1):
        eta = tuned_gd_eta(task, k, key=jax.random.fold_in(key, k), num_tasks=num_tune_tasks)
        family[f"gd(K={k}, η={eta:.3g})"] = gd(np.full(k, eta))
    for k in range(1, max_steps + 1):
        family[f"line_search_gd(K={k})"] = line_search_gd(k)
        family[f"cg(K={k})"] = conjugate_gradient(k)
        family[f"newton_schulz(k={k})"] = newton_schulz(k)
    if knn_k <= task.n_context:
        family[f"knn(k={knn_k})"] = nearest_neighbours(knn_k)
    return family


# --- Closed-form risks (per output, excess over query noise) -------------------------------


def zero_predictor_risk(task: TaskConfig) -> float:
    """E(0 − wᵀx_q)² = τ² E||x_q||² = τ² tr Σ_x (exact for every input law)."""
    return task.w_scale**2 * _input_trace(task)


def ols_excess_risk(task: TaskConfig) -> float:
    """Excess risk E(x_qᵀ(ŵ_OLS − w))² of min-norm OLS, exact closed forms (THEORY §8).

    Noiseless (any input law with a density): N ≥ d gives 0 (X has full column rank a.s.).
    Gaussian inputs with σ > 0 (any covariance): N > d + 1 gives σ² d/(N − d − 1), and
    N ∈ {d, d+1} has an infinite expectation. Isotropic N(0, I) inputs, N < d [D]: ŵ − w =
    −(I − P)w + X⁺ε with P the projection onto the row space, so the risk is
    τ²(d − N) + σ² E tr((XXᵀ)⁻¹) = τ²(d − N) + σ² N/(d − N − 1) (inverse Wishart; infinite
    for d = N + 1 with noise). Other cases raise ValueError.
    """
    d, n, tau2, sigma2 = task.d, task.n_context, task.w_scale**2, task.noise_std**2
    if sigma2 == 0 and n >= d:
        return 0.0
    if task.inputs != "gaussian":
        raise ValueError(
            "ols_excess_risk has closed forms only for Gaussian inputs (or σ = 0, N ≥ d)"
        )
    if n >= d:
        return float("inf") if n <= d + 1 else sigma2 * d / (n - d - 1)
    if task.input_cov is not None and not np.allclose(task.input_cov, np.eye(d)):
        raise ValueError("the N < d OLS risk is derived for isotropic N(0, I) inputs only")
    if sigma2 == 0:
        return tau2 * (d - n)
    return float("inf") if d <= n + 1 else tau2 * (d - n) + sigma2 * n / (d - n - 1)


def bayes_ridge_excess_risk(
    task: TaskConfig, *, key: jax.Array, num_tasks: int = 10_000
) -> tuple[float, float]:
    """Bayes risk of ridge at λ = σ²/τ²: σ² E_X tr(Σ_x (XᵀX + λI)⁻¹), a Monte Carlo estimate.

    Given X the posterior covariance of w is σ²(XᵀX + λI)⁻¹, so the conditional excess risk
    is exact; only the outer expectation over X has no finite-N closed form (THEORY §8 gives
    a Marchenko–Pastur approximation). Returns (mean, standard error) over `num_tasks`
    context draws from `key`. Needs σ > 0.
    """
    if task.noise_std <= 0:
        raise ValueError("the Bayes ridge risk needs noise_std > 0 (σ = 0 gives λ = 0)")
    lam, sigma2 = bayes_ridge_lambda(task), task.noise_std**2
    sigma_x_DxD = jnp.asarray(input_covariance(task))
    x_BxNxD = sample_batch(key, task, num_tasks).x

    def conditional_risk(x_NxD):
        gram_DxD = matmul(x_NxD.T, x_NxD) + lam * jnp.eye(task.d, dtype=x_NxD.dtype)
        return sigma2 * jnp.trace(jnp.linalg.solve(gram_DxD, sigma_x_DxD.astype(x_NxD.dtype)))

    risks_B = np.asarray(jax.jit(jax.vmap(conditional_risk))(x_BxNxD), dtype=float)
    return float(risks_B.mean()), float(risks_B.std(ddof=1) / np.sqrt(num_tasks))


def _input_trace(task: TaskConfig) -> float:
    return float(np.trace(input_covariance(task)))
