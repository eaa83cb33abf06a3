"""icl_toy.analysis.layerwise: per-layer losses, damped iteration, implied GD++, comparisons."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import layerwise
from icl_toy.core.constructions import gd_weights, gdpp_weights
from icl_toy.core.learners import gdpp
from icl_toy.core.models import LSATransformer
from icl_toy.core.tasks import TaskConfig

TASK = TaskConfig(d=4, n_context=12)  # N > d, noiseless: OLS is exact


def _batch(num_tasks=64, seed=0):
    return layerwise.held_out_batch(jax.random.key(seed), TASK, num_tasks)


def _stack(*params):
    return jax.tree.map(lambda *a: jnp.stack(a), *params)


def test_layer_losses_match_explicit_gdpp_after_every_step(x64):
    """Readout after layer k of the GD++ construction is k explicit GD++ steps.

    The reference values: docs/theory.md §10a."""
    prompts, tokens = _batch()
    model = LSATransformer(d=4, d_y=1, num_layers=3)
    etas, gammas = np.array([0.9, 0.7, 0.5]), np.array([0.3, 0.2, 0.1]) / 12
    losses = layerwise.layer_losses(
        model, gdpp_weights(model, etas, gammas, 12), tokens, prompts.y_q
    )
    for k in range(4):
        if k == 0:  # no step: the zero predictor
            pred = jnp.zeros_like(prompts.y_q)
        else:
            pred = jax.vmap(gdpp(jnp.asarray(etas[:k]), jnp.asarray(gammas[:k])))(prompts)
        expected = 0.5 * np.mean(np.sum((np.asarray(pred) - np.asarray(prompts.y_q)) ** 2, -1))
        np.testing.assert_allclose(losses[k], expected, rtol=1e-10)


def test_damped_iteration_is_the_recurrent_model_then_gd_with_a_damped_step(x64):
    prompts, tokens = _batch()
    recurrent = LSATransformer(d=4, d_y=1, num_layers=3, shared_weights=True)
    params = gd_weights(recurrent, 0.8, 12)
    undamped = layerwise.damped_iteration_losses(params, tokens, prompts.y_q, 3, 1.0, 1)
    np.testing.assert_allclose(
        undamped, layerwise.layer_losses(recurrent, params, tokens, prompts.y_q), rtol=1e-10
    )
    # λ-damped iterations of GD(η) are GD with step λη.
    damped = layerwise.damped_iteration_losses(params, tokens, prompts.y_q, 3, 0.5, 1)
    slower = gd_weights(recurrent, 0.4, 12)
    np.testing.assert_allclose(
        damped, layerwise.layer_losses(recurrent, slower, tokens, prompts.y_q), rtol=1e-10
    )
    trained, gdpp = layerwise.damped_iteration_curves(
        _stack(params, slower), params, tokens, prompts.y_q, 3, 0.5, 1
    )
    assert trained.shape == (2, 4) and gdpp.shape == (4,)
    np.testing.assert_allclose(trained[0], damped, rtol=1e-10)


def test_implied_recurrent_gdpp_reads_back_the_construction():
    model = LSATransformer(d=4, d_y=1, num_layers=2, shared_weights=True)
    seeds = [gdpp_weights(model, eta, gamma, 12) for eta, gamma in ((0.9, 0.02), (1.3, 0.05))]
    eta, gamma = layerwise.implied_recurrent_gdpp(_stack(*seeds)["params"], 4, 12)
    np.testing.assert_allclose(eta, [0.9, 1.3], rtol=1e-5)
    np.testing.assert_allclose(gamma, [0.02, 0.05], rtol=1e-5)


@pytest.mark.parametrize("shared", [False, True])
def test_a_model_that_is_its_gdpp_construction_compares_as_such(shared):
    """Seeds equal to the GD++ construction: cosine 1, the same loss, a paired gap of 0."""
    prompts, tokens = _batch()
    model = LSATransformer(d=4, d_y=1, num_layers=2, shared_weights=shared)
    eta = np.float32(0.9) if shared else np.array([0.9, 0.8])
    gamma = np.float32(0.004) if shared else np.array([0.004, 0.002])
    fitted = {
        "gd": {"eta": eta, "gamma": np.zeros_like(eta), "fit_learning_rate": 0.05},
        "gdpp": {"eta": eta, "gamma": gamma, "fit_learning_rate": 0.05},
    }
    gdpp = gdpp_weights(model, eta, gamma, 12)
    cmp = layerwise.compare_with_constructions(model, _stack(gdpp, gdpp), fitted, prompts, tokens)
    np.testing.assert_allclose(cmp["cos_gdpp"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(cmp["trained_loss"], cmp["gdpp_loss"], rtol=1e-5)
    assert cmp["trained_layer_losses"].shape == (2, 3)
    # The constructed GD++ model gives the explicit learner's loss on the same prompts.
    assert abs(cmp["gdpp_loss"] - cmp["gdpp_explicit_loss"]) <= 1e-5 * cmp["gdpp_loss"]
    assert cmp["ols_loss"] < 1e-6 * cmp["gd_loss"]  # N > d, noiseless
    table = layerwise.comparison_table(cmp, fitted)
    assert table["trained_minus_gdpp"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert table["beats_gd"] == bool(table["trained_minus_gd"]["high"] < 0)
    arrays = layerwise.comparison_arrays(cmp, "m_")
    assert set(arrays) == {"m_" + name for name in layerwise.COMPARISON_ARRAYS}
