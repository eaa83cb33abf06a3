"""Closed forms for ŷ = x_qᵀ Γ h against reference values and Monte Carlo.

The math: docs/theory.md §4–§6, §8."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core import closed_forms as cf
from icl_toy.core.learners import (
    ols,
    optimal_gd_eta,
    optimal_gd_mse,
    preconditioned_gd,
)
from icl_toy.core.tasks import TaskConfig, sample_batch

D = 5


def _anisotropic_cov(seed=0):
    """Σ = Q diag(geomspace(1/4, 4)) Qᵀ with a random rotation Q (float64 numpy)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(D, D)))
    cov = q @ np.diag(np.geomspace(0.25, 4.0, D)) @ q.T
    return (cov + cov.T) / 2


def _task(cov, n, noise_std=0.5, w_scale=1.0, query_noise=False):
    return TaskConfig(
        d=D,
        n_context=n,
        inputs="gaussian",
        input_cov=tuple(map(tuple, np.asarray(cov).tolist())),
        w_scale=w_scale,
        noise_std=noise_std,
        query_noise=query_noise,
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _squared_errors(cfg, num_tasks, key, gamma):
    prompts = sample_batch(key, cfg, num_tasks)
    pred = jax.vmap(preconditioned_gd(gamma))(prompts)
    return jnp.sum((pred - prompts.y_q) ** 2, axis=-1)


def _assert_within_standard_errors(errors, expected, num_se=4.0):
    """Monte Carlo mean within `num_se` standard errors of the closed form."""
    errors = np.asarray(errors, np.float64)
    mean, se = errors.mean(), errors.std(ddof=1) / np.sqrt(errors.size)
    assert abs(mean - expected) <= num_se * se, (mean, expected, se)


def test_sample_cov_second_moment_matches_monte_carlo(x64):
    cov = _anisotropic_cov()
    n, draws = 4, 200_000
    z = np.random.default_rng(1).normal(size=(draws, n, D))
    x = z @ np.linalg.cholesky(cov).T
    s_hat = np.einsum("bni,bnj->bij", x, x) / n
    mc = np.einsum("bij,bjk->ik", s_hat, s_hat) / draws
    expected = np.asarray(cf.sample_cov_second_moment(jnp.asarray(cov), n))
    # ~0.5% of the entries' scale at 2e5 draws.
    np.testing.assert_allclose(mc, expected, rtol=0, atol=0.02 * np.abs(expected).max())


def test_isotropic_reference_values_of_theory_10c(x64):
    """d = N = 10, τ = 1, σ = 0, x ~ N(0, I): Γ* = (10/21) I with MSE 110/21 = best scalar step."""
    eye = jnp.eye(10)
    gamma = cf.optimal_preconditioner(eye, 10, 1.0, 0.0)
    np.testing.assert_allclose(gamma, 10 / 21 * np.eye(10), rtol=0, atol=1e-14)
    assert float(cf.optimal_preconditioner_risk(eye, 10, 1.0, 0.0)) == pytest.approx(110 / 21)
    assert float(cf.preconditioner_risk(gamma, eye, 10, 1.0, 0.0)) == pytest.approx(110 / 21)
    assert float(cf.optimal_scalar_step(eye, 10, 1.0, 0.0)) == pytest.approx(10 / 21)
    assert float(cf.optimal_scalar_step_risk(eye, 10, 1.0, 0.0)) == pytest.approx(110 / 21)


@pytest.mark.parametrize(("d", "n", "tau", "sigma"), [(10, 20, 1.0, 0.5), (5, 7, 0.7, 1.3)])
@pytest.mark.parametrize("query_noise", [False, True])
def test_isotropic_formulas_of_theory_4(x64, d, n, tau, sigma, query_noise):
    """η* = N/(N + d + 1 + σ²/τ²), MSE* = τ² d (d + 1 + σ²/τ²)/(N + d + 1 + σ²/τ²) (+ σ²)."""
    ratio = sigma**2 / tau**2
    eta = n / (n + d + 1 + ratio)
    mse = tau**2 * d * (d + 1 + ratio) / (n + d + 1 + ratio) + (sigma**2 if query_noise else 0)
    eye = jnp.eye(d)
    gamma = cf.optimal_preconditioner(eye, n, tau, sigma)
    np.testing.assert_allclose(gamma, eta * np.eye(d), rtol=0, atol=1e-14)
    for risk in (
        cf.optimal_preconditioner_risk(eye, n, tau, sigma, query_noise),
        cf.preconditioner_risk(gamma, eye, n, tau, sigma, query_noise),
        cf.optimal_scalar_step_risk(eye, n, tau, sigma, query_noise),
    ):
        assert float(risk) == pytest.approx(mse, rel=1e-12)


@pytest.mark.parametrize("s", [0.25, 3.0])
def test_scalar_step_agrees_with_the_iid_coordinate_formula_of_theory_8(x64, s):
    """For Σ = sI the scalar step equals learners.optimal_gd_eta / _mse (κ = 3)."""
    cfg = TaskConfig(
        d=6,
        n_context=15,
        inputs="gaussian",
        input_cov=tuple(map(tuple, (s * np.eye(6)).tolist())),
        w_scale=0.8,
        noise_std=0.4,
    )
    sigma = s * jnp.eye(6)
    assert float(cf.optimal_scalar_step(sigma, 15, 0.8, 0.4)) == pytest.approx(optimal_gd_eta(cfg))
    assert float(cf.optimal_scalar_step_risk(sigma, 15, 0.8, 0.4)) == pytest.approx(
        optimal_gd_mse(cfg)
    )


def test_optimal_preconditioner_is_the_minimiser(x64):
    cov = jnp.asarray(_anisotropic_cov())
    n, tau, sigma = 20, 1.0, 0.5
    gamma = cf.optimal_preconditioner(cov, n, tau, sigma)
    grad = jax.grad(cf.preconditioner_risk)(gamma, cov, n, tau, sigma)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)
    r_star = float(cf.optimal_preconditioner_risk(cov, n, tau, sigma))
    assert float(cf.preconditioner_risk(gamma, cov, n, tau, sigma)) == pytest.approx(r_star)
    for seed in range(5):
        delta = 0.05 * jax.random.normal(jax.random.key(seed), (D, D))
        assert float(cf.preconditioner_risk(gamma + delta, cov, n, tau, sigma)) > r_star
    # The preconditioner strictly beats the best scalar step for anisotropic inputs
    # (docs/theory.md §10c).
    eta = cf.optimal_scalar_step(cov, n, tau, sigma)
    scalar = float(cf.optimal_scalar_step_risk(cov, n, tau, sigma))
    assert float(cf.preconditioner_risk(eta * jnp.eye(D), cov, n, tau, sigma)) == pytest.approx(
        scalar
    )
    assert r_star < 0.9 * scalar
    assert float(
        jax.grad(lambda e: cf.preconditioner_risk(e * jnp.eye(D), cov, n, tau, sigma))(eta)
    ) == pytest.approx(0.0, abs=1e-12)


def test_as_n_grows_the_optimum_tends_to_newton(x64):
    cov = jnp.asarray(_anisotropic_cov())
    gamma = cf.optimal_preconditioner(cov, 10**8, 1.0, 0.5)
    np.testing.assert_allclose(gamma, np.linalg.inv(np.asarray(cov)), rtol=0, atol=1e-6)


def test_test_length_risk_for_identity_covariance_matches_theory_6(x64):
    """Λ = I, noiseless: R(M) = d(d+1)²/(N+d+1)² + d(d+1)N²/(M(N+d+1)²)."""
    d, n = 4, 12
    gamma = cf.optimal_preconditioner(jnp.eye(d), n, 1.0, 0.0)
    for m in (1, 3, 12, 50, 1000):
        expected = d * (d + 1) ** 2 / (n + d + 1) ** 2 + d * (d + 1) * n**2 / (m * (n + d + 1) ** 2)
        assert float(cf.preconditioner_risk(gamma, jnp.eye(d), m, 1.0, 0.0)) == pytest.approx(
            expected, rel=1e-12
        )
    assert float(cf.limit_risk(gamma, jnp.eye(d), 1.0)) == pytest.approx(
        d * (d + 1) ** 2 / (n + d + 1) ** 2, rel=1e-12
    )


@pytest.mark.parametrize("c", [0.25, 4.0])
def test_limit_risk_under_shift(x64, c):
    """M → ∞ of R(Γ*; Ω = cΛ, M) is tr(Ω(Γ*Ω − I)²) (docs/theory.md §6), with and without noise."""
    lam = jnp.asarray(_anisotropic_cov())
    omega = c * lam
    gamma = cf.optimal_preconditioner(lam, 20, 1.0, 0.5)
    bias = gamma @ omega - jnp.eye(D)
    expected = float(jnp.trace(omega @ bias @ bias))
    assert float(cf.limit_risk(gamma, omega, 1.0)) == pytest.approx(expected, rel=1e-10)
    far = float(cf.preconditioner_risk(gamma, omega, 10**9, 1.0, 0.5))
    assert far == pytest.approx(expected, rel=1e-6)
    assert float(cf.limit_risk(gamma, omega, 1.0, 0.5, True)) == pytest.approx(expected + 0.25)


@pytest.mark.parametrize(
    ("n", "c", "query_noise"), [(20, 1.0, False), (8, 0.3, True), (60, 3.0, False)]
)
def test_preconditioner_risk_matches_monte_carlo(n, c, query_noise):
    """Trained on Λ at N = 20, tested at length M = n with inputs from Ω = cΛ, 10⁵ tasks."""
    lam = _anisotropic_cov()
    for gamma in (
        cf.optimal_preconditioner(jnp.asarray(lam), 20, 1.0, 0.5),
        0.3 * jax.random.normal(jax.random.key(3), (D, D)),  # any Γ, not symmetric
    ):
        cfg = _task(c * lam, n, query_noise=query_noise)
        errors = _squared_errors(cfg, 100_000, jax.random.key(11), gamma)
        expected = float(
            cf.preconditioner_risk(gamma, jnp.asarray(c * lam), n, 1.0, 0.5, query_noise)
        )
        _assert_within_standard_errors(errors, expected)


def test_ols_risk_matches_monte_carlo_under_a_shift():
    cfg = _task(4.0 * _anisotropic_cov(), 12, noise_std=0.5)
    prompts = sample_batch(jax.random.key(5), cfg, 20_000)
    pred = jax.jit(jax.vmap(ols))(prompts)
    errors = jnp.sum((pred - prompts.y_q) ** 2, axis=-1)
    _assert_within_standard_errors(errors, cf.ols_risk(D, 12, 0.5))
    assert cf.ols_risk(D, 12, 0.5) == pytest.approx(0.25 * 5 / 6)


def test_bad_lengths_raise():
    with pytest.raises(ValueError, match="n_context"):
        cf.preconditioner_risk(jnp.eye(2), jnp.eye(2), 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="n must be"):
        cf.sample_cov_second_moment(jnp.eye(2), 0)
    with pytest.raises(ValueError, match="M > d"):
        cf.ols_risk(5, 6, 0.5)
    assert cf.ols_risk(5, 5, 0.0) == 0.0
