"""Explicit learners and closed forms (docs/theory.md §8, §10b)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.learners import (
    gd,
    gd_fit,
    line_search_eta,
    ols,
    optimal_gd_eta,
    optimal_gd_mse,
    ridge,
)
from icl_toy.core.predictors import batch_half_mse
from icl_toy.core.tasks import TaskConfig, sample_batch, sample_task, von_oswald_preset


def test_eta_star_of_the_preset_is_200_over_33():
    assert optimal_gd_eta(von_oswald_preset()) == pytest.approx(200 / 33, abs=1e-6)
    # docs/theory.md §10b: half-MSE* = 0.2062 for U(-0.5, 0.5) and 0.8249 for U(-1, 1).
    assert optimal_gd_mse(von_oswald_preset()) / 2 == pytest.approx(0.20623, abs=1e-4)
    wide = dataclasses.replace(von_oswald_preset(), input_low=-1.0, input_high=1.0)
    assert optimal_gd_eta(wide) == pytest.approx(50 / 33, abs=1e-6)
    assert optimal_gd_mse(wide) / 2 == pytest.approx(0.8249, abs=1e-4)


def test_one_gd_step_loss_on_1e5_held_out_tasks():
    """Monte Carlo of the 1-step GD half-MSE at η*: 0.206 ± 0.003 (docs/theory.md §10b)."""
    prompts = sample_batch(jax.random.key(2024), von_oswald_preset(), 100_000)
    loss = float(batch_half_mse(gd(jnp.array([200 / 33])), prompts))
    assert loss == pytest.approx(0.206, abs=0.003)


def test_closed_form_matches_monte_carlo_for_noisy_gaussian_inputs():
    cfg = TaskConfig(d=5, n_context=20, inputs="gaussian", w_scale=0.7, noise_std=0.5)
    prompts = sample_batch(jax.random.key(1), cfg, 100_000)
    eta = optimal_gd_eta(cfg)
    mse = 2 * float(batch_half_mse(gd(jnp.array([eta])), prompts))
    assert mse == pytest.approx(optimal_gd_mse(cfg), rel=0.02)
    # η* is the minimiser: nearby steps do worse on the same tasks.
    for other in (0.8 * eta, 1.2 * eta):
        assert 2 * float(batch_half_mse(gd(jnp.array([other])), prompts)) > mse


def test_line_search_lands_within_two_percent_of_eta_star():
    eta, loss = line_search_eta(von_oswald_preset(), key=jax.random.key(99), num_tasks=10_000)
    assert eta == pytest.approx(200 / 33, rel=0.02)
    assert loss == pytest.approx(0.206, abs=0.01)


def test_line_search_validates_arguments():
    with pytest.raises(ValueError, match="num_tasks"):
        line_search_eta(von_oswald_preset(), key=jax.random.key(0), num_tasks=0)


def test_ols_and_ridge_against_numpy(x64):
    for n in (4, 10, 25):  # under-, exactly and over-determined
        p = sample_task(jax.random.key(n), TaskConfig(d=10, n_context=n, noise_std=0.1))
        x, y = np.asarray(p.x), np.asarray(p.y)
        w_min_norm = np.linalg.lstsq(x, y, rcond=None)[0]
        np.testing.assert_allclose(ols(p), p.x_q @ w_min_norm, atol=1e-9)
        w_ridge = np.linalg.solve(x.T @ x + 0.3 * np.eye(10), x.T @ y)
        np.testing.assert_allclose(ridge(0.3)(p), p.x_q @ w_ridge, atol=1e-12)


def test_ols_recovers_noiseless_teacher_and_gd_converges_to_it(x64):
    p = sample_task(jax.random.key(0), TaskConfig(d=5, n_context=30))
    np.testing.assert_allclose(ols(p), p.y_q, atol=1e-10)
    w = gd_fit(p.x, p.y, jnp.full(2000, 1.0))
    np.testing.assert_allclose(w, p.w, atol=1e-8)
