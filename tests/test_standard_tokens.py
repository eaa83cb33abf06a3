"""Alternating tokens, the softmax copy layer and copy + GD (docs/theory.md §1, Proposition 3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.constructions import copy_gd_weights, copy_targets
from icl_toy.core.learners import gd, optimal_gd_eta
from icl_toy.core.linalg import matrix_products, products_below_full_precision
from icl_toy.core.losses import half_mse
from icl_toy.core.models import (
    StandardTokenTransformer,
    alternating_tokens,
    batch_attention,
    copy_score,
)
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch, von_oswald_preset
from icl_toy.training.train import batch_loss, batch_predict

_sample = jax.jit(sample_batch, static_argnums=(1, 2))
_predict = jax.jit(batch_predict, static_argnums=0)
_attention = jax.jit(batch_attention, static_argnums=0)


def test_alternating_layout():
    task = TaskConfig(d=3, n_context=4, d_y=2)
    prompt = jax.tree.map(lambda a: a[0], _sample(jax.random.key(0), task, 1))
    tokens = np.asarray(alternating_tokens(prompt_tokens(prompt), d=3))
    num_tokens = 2 * 4 + 1
    assert tokens.shape == (num_tokens, 3 + num_tokens + 2)
    np.testing.assert_array_equal(tokens[:, 3 : 3 + num_tokens], np.eye(num_tokens))
    for i in range(4):
        np.testing.assert_array_equal(tokens[2 * i, :3], prompt.x[i])
        np.testing.assert_array_equal(tokens[2 * i, -2:], 0.0)
        np.testing.assert_array_equal(tokens[2 * i + 1, :3], 0.0)
        np.testing.assert_array_equal(tokens[2 * i + 1, -2:], prompt.y[i])
    np.testing.assert_array_equal(tokens[-1, :3], prompt.x_q)
    np.testing.assert_array_equal(tokens[-1, -2:], 0.0)


def _preset_batch(num_tasks, seed=0):
    task = von_oswald_preset()
    prompts = _sample(jax.random.key(seed), task, num_tasks)
    model = StandardTokenTransformer(d=task.d, n_context=task.n_context)
    return task, model, prompts


def _gd(prompts, eta):
    return jax.vmap(gd(jnp.asarray([eta])))(prompts)


def test_copy_gd_has_the_init_structure():
    _, model, prompts = _preset_batch(2)
    params = jax.eval_shape(
        model.init, jax.random.key(0), prompt_tokens(jax.tree.map(lambda a: a[0], prompts))
    )
    constructed = copy_gd_weights(model, eta=1.0, temperature=10.0)
    assert jax.tree.structure(constructed) == jax.tree.structure(params)
    assert jax.tree.map(np.shape, constructed) == jax.tree.map(lambda a: a.shape, params)


def test_copy_then_gd_equals_one_gd_step_float64(x64):
    """At temperature τ = 40 the copy leaks (S − 1)/(e^τ + S − 1) ≈ 9e-17: exact to 1e-12.

    At τ = 5, 10, 20 the error is visible and falls like e^{−τ}, which shows that the
    construction is exact only in the limit and that the comparison can fail.
    """
    task, model, prompts = _preset_batch(256)
    eta = optimal_gd_eta(task)
    expected = np.asarray(_gd(prompts, eta))
    got = _predict(model, copy_gd_weights(model, eta, temperature=40.0), prompts)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    errors = [
        float(np.abs(_predict(model, copy_gd_weights(model, eta, tau), prompts) - expected).max())
        for tau in (5.0, 10.0, 20.0)
    ]
    assert errors[0] > 1e-2 and errors[0] > errors[1] > errors[2] > 1e-12, errors
    # Each 5 (then 10) more units of τ cut the error by about e^5 (e^10): within a factor 3.
    assert errors[0] / errors[1] > math.exp(5) / 3 and errors[1] / errors[2] > math.exp(10) / 3


def test_copy_gd_reaches_the_one_step_gd_loss_float32():
    """On the von Oswald preset, copy + GD(η* = 200/33) at τ = 30 in float32 is within 1% of
    the one-step GD loss on the same 10,000 prompts; the copy score is 1 to float precision."""
    task, model, prompts = _preset_batch(10_000, seed=1)
    eta = optimal_gd_eta(task)
    params = copy_gd_weights(model, eta, temperature=30.0)
    loss = float(jax.jit(batch_loss, static_argnums=0)(model, params, prompts))
    gd_loss = float(half_mse(_gd(prompts, eta), prompts.y_q))
    assert abs(loss / gd_loss - 1) < 0.01, (loss, gd_loss)
    assert abs(gd_loss - 0.2062) < 0.01  # docs/theory.md §10b: the preset's one-step half-MSE
    tokens = jax.vmap(prompt_tokens)(jax.tree.map(lambda a: a[:500], prompts))
    attention = _attention(model, params, tokens)
    assert float(copy_score(attention.mean(0), task.n_context)[0]) > 1 - 1e-6


def test_copy_score_of_uniform_and_target_attention():
    n = 6
    num_tokens = 2 * n + 1
    uniform = jnp.full((1, num_tokens, num_tokens), 1.0 / num_tokens)
    np.testing.assert_allclose(copy_score(uniform, n), [1.0 / num_tokens])
    targets = jnp.asarray(copy_targets(n))[None]
    np.testing.assert_allclose(copy_score(targets, n), [1.0])
    np.testing.assert_allclose(targets.sum(-1), 1.0)


def test_no_lsa_layer_alone_can_do_gd_on_alternating_tokens():
    """With the copy layer switched off (value 0), the untrained with the GD weights
    sees no (x_i, y_i) pair in one token and predicts 0: the first layer is necessary."""
    task, model, prompts = _preset_batch(64)
    params = copy_gd_weights(model, optimal_gd_eta(task), temperature=30.0)
    params["params"]["copy"]["w_v"] = jnp.zeros_like(params["params"]["copy"]["w_v"])
    np.testing.assert_allclose(_predict(model, params, prompts), 0.0, atol=1e-6)


def test_bad_inputs_raise():
    _, model, prompts = _preset_batch(2)
    with pytest.raises(ValueError, match="temperature"):
        copy_gd_weights(model, 1.0, temperature=0.0)
    with pytest.raises(ValueError, match="key_size"):
        copy_gd_weights(StandardTokenTransformer(d=10, n_context=10, key_size=4), 1.0, 10.0)
    wrong = StandardTokenTransformer(d=10, n_context=5)
    tokens = prompt_tokens(jax.tree.map(lambda a: a[0], prompts))
    with pytest.raises(ValueError, match="expects"):
        wrong.init(jax.random.key(0), tokens)


def test_standard_token_model_uses_full_precision_products():
    _, model, prompts = _preset_batch(4)
    params = jax.eval_shape(
        model.init, jax.random.key(0), prompt_tokens(jax.tree.map(lambda a: a[0], prompts))
    )
    program = jax.make_jaxpr(jax.grad(lambda p: batch_loss(model, p, prompts)))(params)
    found = matrix_products(program)
    assert found and not products_below_full_precision(found)
