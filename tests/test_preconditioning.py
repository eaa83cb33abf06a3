"""The shared path of the Γ studies: layer config, Γ readout and closed forms.

The math: docs/theory.md §5, §6."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import preconditioning
from icl_toy.core import closed_forms
from icl_toy.core.constructions import preconditioned_gd_weights
from icl_toy.core.models import LSATransformer, ModelConfig
from icl_toy.core.tasks import anisotropic_task, input_covariance


def test_layer_config_rejects_what_the_closed_forms_do_not_cover():
    with pytest.raises(ValueError, match="one layer"):
        preconditioning.LayerConfig(model=ModelConfig(num_layers=2))
    with pytest.raises(ValueError, match="init"):
        preconditioning.LayerConfig(model=ModelConfig(init="zeros"))
    with pytest.raises(ValueError, match="gaussian"):
        uniform = dataclasses.replace(anisotropic_task(), inputs="uniform", input_cov=None)
        preconditioning.LayerConfig(task=uniform)


def test_fitted_preconditioners_read_back_the_constructed_gamma():
    """The preconditioned-GD construction with Γ has implied Γ equal to Γ (S = 2 seeds)."""
    task = anisotropic_task()
    model = LSATransformer(d=task.d, d_y=task.d_y)
    gammas = [preconditioning.optimal_preconditioner(task), 0.3 * jnp.eye(task.d)]
    params_S = jax.tree.map(
        lambda *leaves: jnp.stack(leaves),
        *[preconditioned_gd_weights(model, g, task.n_context) for g in gammas],
    )
    fitted = preconditioning.fitted_preconditioners(params_S, task)
    np.testing.assert_allclose(fitted, np.stack(gammas), rtol=1e-5, atol=1e-6)
    r2 = preconditioning.preconditioner_r_squared(fitted, gammas[0])
    assert r2.shape == (2,)
    assert float(r2[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(r2[1]) < 0.99


def test_closed_forms_at_the_training_law_agree_with_the_optimal_risk():
    """R(Γ*; Σ, N) from the general risk formula equals the optimum's own formula
    τ² tr(Σ − ΣΓ*Σ) (+σ²) (`closed_forms.optimal_preconditioner_risk`): two formulas."""
    task = anisotropic_task()
    gamma_star = preconditioning.optimal_preconditioner(task)
    risk_star, scalar_risk = preconditioning.optimal_risks(task)
    assert float(preconditioning.closed_form_risk(task, gamma_star)) == pytest.approx(
        float(risk_star), rel=1e-5
    )
    eta = preconditioning.optimal_scalar_step(task)
    assert float(preconditioning.closed_form_risk(task, eta * jnp.eye(task.d))) == pytest.approx(
        float(scalar_risk), rel=1e-5
    )
    grid = preconditioning.shift_risk_grid(
        task, gamma_star, gamma_star[None], (10, task.n_context), (0.5, 1.0)
    )
    assert grid["star"].shape == (2, 2) and grid["fitted"].shape == (1, 2, 2)
    assert grid["star"][1, 1] == pytest.approx(float(risk_star), rel=1e-5)
    np.testing.assert_array_equal(grid["fitted"][0], grid["star"])
    # OLS is shift-invariant; the M → ∞ limit lies below every finite M.
    assert grid["ols"][0, 0] == grid["ols"][0, 1] == closed_forms.ols_risk(5, 10, 0.5)
    assert np.all(grid["limit"] < grid["star"].min(axis=0))


def test_task_covariance_scales_the_input_law():
    task = anisotropic_task()
    np.testing.assert_allclose(
        preconditioning.task_covariance(task, 2.0), 2.0 * input_covariance(task), rtol=1e-6
    )
    assert preconditioning.task_covariance(task).dtype == jnp.float32
