"""The baseline family of in-context learners and their closed-form risks (docs/theory.md §8).

The learners are the `icl_toy.core.predictors.Predictor`s of `icl_toy.core.learners` (one
prompt in, ŷ (Y,) out); a transformer with its params (`icl_toy.core.predictors.
model_predictor`) and a construction share that signature, so `icl_toy.analysis.alignment`
compares any two of them.

Risks are MSE **per output**, E(ŷ − y_q)² with no ½ (`icl_toy.core.losses.half_mse` has the ½),
and *excess* over the query-label noise: add σ² when `query_noise` is set.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core import learners
from icl_toy.core.linalg import matmul
from icl_toy.core.predictors import Predictor
from icl_toy.core.tasks import TaskConfig, input_covariance, sample_batch


def bayes_ridge_lambda(task: TaskConfig) -> float:
    """λ = σ²/τ²: with w ~ N(0, τ²I) and Gaussian label noise σ², ridge at this λ is the
    posterior mean E[w | X, y], the Bayes-optimal predictor (docs/theory.md §3, §8)."""
    return task.noise_std**2 / task.w_scale**2


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
    GD with K = 1..`max_steps` steps at a tuned constant η (`learners.tuned_gd_eta`, on tasks
    from `key`), line-search GD, CG and Newton–Schulz for K = 1..`max_steps`, and k-NN.

    GD++ and preconditioned GD need fitted parameters: add them to the dict yourself
    (e.g. `family["gd++"] = learners.gdpp(etas, gammas)`).
    """
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    family: dict[str, Predictor] = {"zero": learners.zero_predictor, "ols": learners.ols}
    for lam in ridge_lambdas:
        family[f"ridge(λ={lam:g})"] = learners.ridge(lam)
    if task.noise_std > 0:
        lam = bayes_ridge_lambda(task)
        family[f"ridge(Bayes λ={lam:.3g})"] = learners.ridge(lam)
    for k in range(1, max_steps + 1):
        key_k = jax.random.fold_in(key, k)
        eta = learners.tuned_gd_eta(task, k, key=key_k, num_tasks=num_tune_tasks)
        family[f"gd(K={k}, η={eta:.3g})"] = learners.gd(np.full(k, eta))
    for k in range(1, max_steps + 1):
        family[f"line_search_gd(K={k})"] = learners.line_search_gd(k)
        family[f"cg(K={k})"] = learners.conjugate_gradient(k)
        family[f"newton_schulz(k={k})"] = learners.newton_schulz(k)
    if knn_k <= task.n_context:
        family[f"knn(k={knn_k})"] = learners.nearest_neighbours(knn_k)
    return family


# --- Closed-form risks (per output, excess over query noise) -------------------------------


def zero_predictor_risk(task: TaskConfig) -> float:
    """E(0 − wᵀx_q)² = τ² E||x_q||² = τ² tr Σ_x (exact for every input law)."""
    return task.w_scale**2 * _input_trace(task)


def ols_excess_risk(task: TaskConfig) -> float:
    """Excess risk E(x_qᵀ(ŵ_OLS − w))² of min-norm OLS, exact closed forms (docs/theory.md §8).

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
    is exact; only the outer expectation over X has no finite-N closed form (docs/theory.md §8 gives
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
