"""Closed-form optima and risks of one-step preconditioned GD, ŷ = x_qᵀ Γ h.

The math: docs/theory.md §4–§6, §8.

Model (one task): w ~ N(0, τ² I_d); the M context inputs x_i and the query x_q are i.i.d.
N(0, Σ); y_i = wᵀx_i + ε_i with ε_i ~ N(0, σ²); y_q = wᵀx_q (+ ε_q if the query is noisy).
h = Xᵀy / M and Ŝ = XᵀX / M are the prompt's moments at its own length M. Every one-layer LSA
optimum falls in the family ŷ = x_qᵀ Γ h (docs/theory.md §0); GD with step η is Γ = ηI.

All risks here are **MSE**, E(ŷ − y_q)² (no ½; `icl_toy.training.train` minimises half-MSE). The
training distribution (Σ = Λ, length N) enters only through Γ; the test distribution
(covariance Σ, length M) is an argument, so the risk at another prompt length and under a
covariate shift Ω are the same formula with Σ := Ω and M := test length (docs/theory.md §6).
Functions take one d×d covariance and return JAX scalars or (D, D) arrays; they trace
under jit and vmap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icl_toy.core.linalg import matmul


def _check_length(n: int, name: str) -> None:
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")


def sample_cov_second_moment(sigma_DxD: jax.Array, n: int) -> jax.Array:
    """E[Ŝ²] of the sample second moment Ŝ = (1/n) Σ_i x_i x_iᵀ, x_i ~ N(0, Σ) i.i.d., (D, D).

    E[Ŝ²] = ((n + 1)/n) Σ² + (tr Σ / n) Σ   (docs/theory.md §5), from E[x xᵀ x xᵀ] = 2Σ² + tr(Σ) Σ
    (Isserlis) for the n diagonal terms and Σ² for the n(n − 1) cross terms.
    """
    _check_length(n, "n")
    sigma2_DxD = matmul(sigma_DxD, sigma_DxD)
    return (n + 1) / n * sigma2_DxD + jnp.trace(sigma_DxD) / n * sigma_DxD


def preconditioner_risk(
    gamma_DxD: jax.Array,
    sigma_DxD: jax.Array,
    n_context: int,
    w_scale: float,
    noise_std: float,
    query_noise: bool = False,
) -> jax.Array:
    """MSE of ŷ = x_qᵀ Γ h on prompts of length M = `n_context` with inputs N(0, Σ).

    R(Γ) = τ² tr(Γᵀ Σ Γ E[Ŝ_M²]) + (σ²/M) tr(Γᵀ Σ Γ Σ) − 2τ² tr(Σ Γ Σ) + τ² tr Σ (+ σ²)

    (docs/theory.md §5; the last σ² only if the query label is noisy). Γ need not be symmetric.
    Σ is the covariance of context and query inputs *at test*: pass Ω and the test length M
    for the risk under a covariate shift or at another prompt length (docs/theory.md §6).
    """
    _check_length(n_context, "n_context")
    tau2, sigma2 = w_scale**2, noise_std**2
    g_sigma_g_DxD = matmul(matmul(gamma_DxD.T, sigma_DxD), gamma_DxD)  # Γᵀ Σ Γ
    risk = (
        tau2 * jnp.trace(matmul(g_sigma_g_DxD, sample_cov_second_moment(sigma_DxD, n_context)))
        + sigma2 / n_context * jnp.trace(matmul(g_sigma_g_DxD, sigma_DxD))
        - 2.0 * tau2 * jnp.trace(matmul(matmul(sigma_DxD, gamma_DxD), sigma_DxD))
        + tau2 * jnp.trace(sigma_DxD)
    )
    return risk + (sigma2 if query_noise else 0.0)


def optimal_preconditioner(
    sigma_DxD: jax.Array, n_context: int, w_scale: float, noise_std: float
) -> jax.Array:
    """Γ* = argmin_Γ R(Γ) for training prompts of length N with inputs N(0, Σ), (D, D).

    Γ* = ( ((N + 1)/N) Σ + ((tr Σ + σ²/τ²)/N) I )⁻¹

    (docs/theory.md §5; Ahn et al., arXiv 2306.00297)

    Setting ∂R/∂Γ = 0 gives Σ Γ (E[Ŝ²] + (σ²/(τ²N)) Σ) = Σ², and the bracket is Σ times
    the matrix inverted above. Isotropic Σ = sI makes Γ* a scalar (docs/theory.md §4, §10c).
    """
    _check_length(n_context, "n_context")
    d = sigma_DxD.shape[0]
    ridge = (jnp.trace(sigma_DxD) + noise_std**2 / w_scale**2) / n_context
    eye_DxD = jnp.eye(d, dtype=sigma_DxD.dtype)
    return jnp.linalg.inv((n_context + 1) / n_context * sigma_DxD + ridge * eye_DxD)


def optimal_preconditioner_risk(
    sigma_DxD: jax.Array,
    n_context: int,
    w_scale: float,
    noise_std: float,
    query_noise: bool = False,
) -> jax.Array:
    """R(Γ*) = τ² tr(Σ − Σ Γ* Σ) (+ σ² if the query is noisy), MSE (docs/theory.md §5).

    Tested against `preconditioner_risk` at Γ*: the two are different formulas.
    """
    gamma_DxD = optimal_preconditioner(sigma_DxD, n_context, w_scale, noise_std)
    explained = jnp.trace(matmul(matmul(sigma_DxD, gamma_DxD), sigma_DxD))
    risk = w_scale**2 * (jnp.trace(sigma_DxD) - explained)
    return risk + (noise_std**2 if query_noise else 0.0)


def _scalar_step_quadratic(sigma_DxD, n_context, w_scale, noise_std):
    """(a, b, c) of R(ηI) = a η² − 2 b η + c without query noise."""
    tau2, sigma2 = w_scale**2, noise_std**2
    sigma2_DxD = matmul(sigma_DxD, sigma_DxD)
    second_DxD = sample_cov_second_moment(sigma_DxD, n_context)
    a = tau2 * jnp.trace(matmul(sigma_DxD, second_DxD)) + sigma2 / n_context * jnp.trace(sigma2_DxD)
    return a, tau2 * jnp.trace(sigma2_DxD), tau2 * jnp.trace(sigma_DxD)


def optimal_scalar_step(
    sigma_DxD: jax.Array, n_context: int, w_scale: float, noise_std: float
) -> jax.Array:
    """η* minimising R(ηI), the best plain GD step from 0 (1/N inside η), Gaussian inputs.

    R(ηI) = a η² − 2 b η + c with a = τ² tr(Σ E[Ŝ²]) + (σ²/N) tr Σ², b = τ² tr Σ², c = τ² tr Σ,
    so η* = b / a. For Σ = sI: η* = N τ² / (τ² s (N + d + 1) + σ²), docs/theory.md §8 with κ = 3.
    """
    a, b, _ = _scalar_step_quadratic(sigma_DxD, n_context, w_scale, noise_std)
    return b / a


def optimal_scalar_step_risk(
    sigma_DxD: jax.Array,
    n_context: int,
    w_scale: float,
    noise_std: float,
    query_noise: bool = False,
) -> jax.Array:
    """R(η* I) = c − b²/a (+ σ² if the query is noisy), MSE; see `optimal_scalar_step`."""
    a, b, c = _scalar_step_quadratic(sigma_DxD, n_context, w_scale, noise_std)
    return c - b**2 / a + (noise_std**2 if query_noise else 0.0)


def limit_risk(
    gamma_DxD: jax.Array,
    sigma_DxD: jax.Array,
    w_scale: float,
    noise_std: float = 0.0,
    query_noise: bool = False,
) -> jax.Array:
    """lim_{M→∞} R(Γ) = τ² tr((ΓΣ − I)ᵀ Σ (ΓΣ − I)) (+ σ² if the query is noisy), MSE.

    As M → ∞, Ŝ → Σ and the context noise averages out, so a fixed Γ stays biased unless
    ΓΣ = I: the trained layer is inconsistent, and under a covariate shift Σ := Ω the
    error is τ² tr(Ω(ΓΩ − I)²) for Γ commuting with Ω (docs/theory.md §6), while OLS reaches 0.
    """
    d = sigma_DxD.shape[0]
    bias_DxD = matmul(gamma_DxD, sigma_DxD) - jnp.eye(d, dtype=sigma_DxD.dtype)
    risk = w_scale**2 * jnp.trace(matmul(matmul(bias_DxD.T, sigma_DxD), bias_DxD))
    return risk + (noise_std**2 if query_noise else 0.0)


def ols_risk(d: int, n_context: int, noise_std: float, query_noise: bool = False) -> float:
    """MSE of OLS on Gaussian prompts, any input covariance: σ² d / (M − d − 1) (+ σ²).

    E tr(Σ (XᵀX)⁻¹) = tr(Σ Σ⁻¹)/(M − d − 1) for a Wishart XᵀX (docs/theory.md §8, whitened), so OLS
    is unaffected by a covariate shift. Needs M > d + 1 when σ > 0 (the mean is infinite
    otherwise). Noiseless OLS with M ≥ d recovers w exactly: risk 0.
    """
    if noise_std == 0 and n_context >= d:
        return 0.0
    if n_context <= d + 1:
        raise ValueError(
            f"the OLS risk is infinite (noisy) or not closed-form (M < d) at M = {n_context}, "
            f"d = {d}; it needs M > d + 1"
        )
    sigma2 = noise_std**2
    return sigma2 * d / (n_context - d - 1) + (sigma2 if query_noise else 0.0)


def check_closed_form_setting(task, model) -> None:
    """Raise ValueError unless the closed forms here apply: one LSA layer with one head,
    d_y = 1 and Gaussian inputs. `model` is a `ModelConfig`."""
    if model.num_layers != 1 or model.num_heads != 1 or task.d_y != 1:
        raise ValueError(
            "the closed forms need one layer, one head and d_y = 1; got "
            f"num_layers={model.num_layers}, num_heads={model.num_heads}, d_y={task.d_y}"
        )
    if task.inputs != "gaussian":
        raise ValueError(f"the closed forms need task.inputs='gaussian', got {task.inputs!r}")
