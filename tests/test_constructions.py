"""Constructions (GD / GD++ as LSA weights) against the explicit learners.

The math: docs/theory.md §1, §10a."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.constructions import gd_weights, gdpp_weights
from icl_toy.core.learners import gd, gd_fit, gdpp
from icl_toy.core.linalg import matmul
from icl_toy.core.models import LSATransformer, check_params, lsa_stack
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch


def _prompts(d_y, n=10, batch=32, seed=0):
    cfg = TaskConfig(d=10, n_context=n, d_y=d_y, input_low=-1.0, input_high=1.0)
    return sample_batch(jax.random.key(seed), cfg, batch)


def _explicit_gd(prompts, etas, w0):
    return jax.vmap(gd(jnp.asarray(etas), w0))(prompts)


def _construction(num_layers, shared, d_y, random_w0):
    """A K-layer GD construction, its step sizes, W0 (None for 0) and a batch of prompts."""
    prompts = _prompts(d_y)
    model = LSATransformer(d=10, d_y=d_y, num_layers=num_layers, shared_weights=shared)
    w0 = 0.5 * jax.random.normal(jax.random.key(7), (d_y, 10)) if random_w0 else None
    etas = np.full(num_layers, 0.8) if shared else np.linspace(0.4, 1.0, num_layers)
    return model, gd_weights(model, etas, n_context=10, w0=w0), prompts, w0, etas


# The two below run op by op: compiling a 10-layer float64 program per case costs more
# than running it eagerly.
def _depth_predictions(model, params, prompts, w0):
    """ŷ read out after every layer, (B, K + 1, Y), and the model's own output, (B, Y)."""
    tokens = jax.vmap(prompt_tokens, in_axes=(0, None))(prompts, w0)
    at_depth = jax.vmap(lambda t: model.apply(params, t, method=model.layer_predictions))(tokens)
    return at_depth, jax.vmap(model.apply, in_axes=(None, 0))(params, tokens)


def _explicit_gd_at_every_depth(prompts, etas, w0):
    """ŷ after k = 0, ..., K explicit GD steps with steps η_1..η_k, (B, K + 1, Y)."""
    d_y, d = prompts.y.shape[-1], prompts.x.shape[-1]
    w_BxYxD = jnp.broadcast_to(jnp.zeros((d_y, d)) if w0 is None else w0, (len(prompts.x), d_y, d))
    fit_B, predict_B = jax.vmap(gd_fit, in_axes=(0, 0, None, 0)), jax.vmap(matmul)
    predictions = [predict_B(w_BxYxD, prompts.x_q)]
    for k in range(len(etas)):  # step k + 1 continues from W_k
        w_BxYxD = fit_B(prompts.x, prompts.y, etas[k : k + 1], w_BxYxD)
        predictions.append(predict_B(w_BxYxD, prompts.x_q))
    return jnp.stack(predictions, axis=1)


def _assert_every_depth_is_that_many_gd_steps(num_layers, shared, d_y, random_w0, atol):
    """One K-layer model read out after each layer k gives k GD steps, for every k ≤ K."""
    model, params, prompts, w0, etas = _construction(num_layers, shared, d_y, random_w0)
    at_depth, output = _depth_predictions(model, params, prompts, w0)
    expected = _explicit_gd_at_every_depth(prompts, etas, w0)
    case = f"shared={shared}, d_y={d_y}, random_w0={random_w0}"
    for k in range(num_layers + 1):
        np.testing.assert_allclose(
            at_depth[:, k], expected[:, k], rtol=0, atol=atol, err_msg=f"{case}, depth {k}"
        )
    # The forward pass (which updates only the query in its last layer) is depth K's readout.
    np.testing.assert_allclose(output, expected[:, -1], rtol=0, atol=atol, err_msg=case)


def test_k_layers_equal_k_gd_steps_float64(x64):
    """Every depth 0..10, per-layer and shared weights, d_y = 1, 2, W0 = 0 and random."""
    for shared, d_y, random_w0 in itertools.product((False, True), (1, 2), (False, True)):
        _assert_every_depth_is_that_many_gd_steps(10, shared, d_y, random_w0, atol=1e-12)


def test_k_layers_equal_k_gd_steps_float32():
    for shared, d_y in itertools.product((False, True), (1, 2)):
        _assert_every_depth_is_that_many_gd_steps(10, shared, d_y, random_w0=True, atol=2e-6)


@pytest.mark.parametrize("random_w0", [False, True])
def test_context_tokens_hold_gd_residuals(x64, random_w0):
    """After k layers the context y-slots are y − (W_k − W0) x and the x-slots are unchanged."""
    num_layers, d_y = 4, 2
    model, params, prompts, w0, etas = _construction(num_layers, False, d_y, random_w0)
    w0_ = jnp.zeros((d_y, 10)) if w0 is None else w0
    tokens = jax.vmap(prompt_tokens, in_axes=(0, None))(prompts, w0)
    w_kq, w_pv = model.apply(params, method=model.layer_products)
    traj = jax.vmap(lsa_stack, in_axes=(None, None, 0, None))(w_kq, w_pv, tokens, 10)
    for k in range(num_layers + 1):
        w_k = jax.vmap(gd_fit, in_axes=(0, 0, None, None))(prompts.x, prompts.y, etas[:k], w0_)
        residual = prompts.y - jnp.einsum("bnd,byd->bny", prompts.x, w_k - w0_[None])
        np.testing.assert_allclose(traj[:, k, :-1, 10:], residual, atol=1e-12)
        np.testing.assert_allclose(traj[:, k, :-1, :10], prompts.x, atol=1e-12)


@pytest.mark.parametrize("random_w0", [False, True])
def test_gdpp_layers_equal_explicit_recursion_float64(x64, random_w0):
    """A 3-layer GD++ construction read out after each layer k gives k GD++ steps."""
    num_layers = 3
    prompts = _prompts(d_y=1)
    model = LSATransformer(d=10, num_layers=num_layers)
    w0 = 0.5 * jax.random.normal(jax.random.key(7), (1, 10)) if random_w0 else None
    etas, gammas = np.linspace(0.5, 1.0, num_layers), np.linspace(0.02, 0.05, num_layers)
    params = gdpp_weights(model, etas, gammas, n_context=10, w0=w0)
    at_depth, output = _depth_predictions(model, params, prompts, w0)
    for k in range(1, num_layers + 1):
        expected = jax.jit(jax.vmap(gdpp(etas[:k], gammas[:k], w0)))(prompts)
        np.testing.assert_allclose(
            at_depth[:, k], expected, rtol=0, atol=1e-12, err_msg=f"depth {k}"
        )
    np.testing.assert_allclose(output, expected, rtol=0, atol=1e-12)  # the forward pass, k = K
    # The input transform acts from the second layer on, so GD++ then differs from GD.
    assert float(jnp.abs(expected - _explicit_gd(prompts, etas, w0)).max()) > 1e-3


def test_gdpp_layer_moves_inputs_by_one_minus_gamma_h(x64):
    prompts = _prompts(d_y=1, batch=4)
    model = LSATransformer(d=10, num_layers=1)
    params = gdpp_weights(model, 0.7, 0.03, n_context=10)
    tokens = jax.vmap(prompt_tokens)(prompts)
    w_kq, w_pv = model.apply(params, method=model.layer_products)
    after = jax.vmap(lsa_stack, in_axes=(None, None, 0, None))(w_kq, w_pv, tokens, 10)[:, 1]
    h = jnp.einsum("bni,bnj->bij", prompts.x, prompts.x)
    x_all = tokens[:, :, :10]
    expected = x_all - 0.03 * jnp.einsum("bij,btj->bti", h, x_all)
    np.testing.assert_allclose(after[:, :, :10], expected, atol=1e-12)


def test_query_in_keys_is_exact_at_one_layer_and_wrong_from_two(x64):
    """The masking matters: with the query as a key, K ≥ 2 stops being K GD steps."""
    prompts = _prompts(d_y=1, batch=256)
    tokens = jax.vmap(prompt_tokens)(prompts)
    for num_layers in (1, 2, 5):
        model = LSATransformer(d=10, num_layers=num_layers)
        w_kq, w_pv = model.apply(gd_weights(model, 1.0, 10), method=model.layer_products)
        expected = _explicit_gd(prompts, np.ones(num_layers), None)
        masked = jax.vmap(lsa_stack, in_axes=(None, None, 0, None))(w_kq, w_pv, tokens, 10)
        leaky = jax.vmap(lsa_stack, in_axes=(None, None, 0, None))(w_kq, w_pv, tokens, 11)
        np.testing.assert_allclose(-masked[:, -1, -1, 10:], expected, atol=1e-12)
        rel_rms = float(
            jnp.sqrt(jnp.mean((-leaky[:, -1, -1, 10:] - expected) ** 2) / jnp.mean(expected**2))
        )
        if num_layers == 1:
            assert rel_rms < 1e-12
        else:
            assert rel_rms > 0.05, f"query leak went unnoticed at K={num_layers}: {rel_rms}"


@pytest.mark.parametrize("shared", [False, True])
def test_constructions_have_the_init_pytree(shared):
    model = LSATransformer(d=10, d_y=2, num_layers=3, num_heads=2, shared_weights=shared)
    init = model.init(jax.random.key(0), jnp.zeros((11, 12)))
    for params in (gd_weights(model, 1.0, 10), gdpp_weights(model, 1.0, 0.1, 10)):
        assert jax.tree.structure(params) == jax.tree.structure(init)
        assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(
            lambda a: (a.shape, a.dtype), init
        )
        check_params(model, params, jnp.zeros((11, 12)))


def test_construction_errors_are_clear():
    model = LSATransformer(d=10, num_layers=2)
    with pytest.raises(ValueError, match=r"w0 has shape \(1, 5\).*\(1, 10\)"):
        gd_weights(model, 1.0, 10, w0=jnp.zeros((1, 5)))
    with pytest.raises(ValueError, match="one per layer"):
        gd_weights(model, [1.0, 2.0, 3.0], 10)
    with pytest.raises(ValueError, match="key_size >= d"):
        gd_weights(LSATransformer(d=10, key_size=4), 1.0, 10)
    with pytest.raises(ValueError, match="shared_weights"):
        gd_weights(LSATransformer(d=10, num_layers=2, shared_weights=True), [1.0, 2.0], 10)
    with pytest.raises(ValueError, match="n_context"):
        gd_weights(model, 1.0, 0)
    small = LSATransformer(d=5, num_layers=2)
    with pytest.raises(ValueError, match=r"expects \(2, 1, 6, 6\)"):
        check_params(small, gd_weights(model, 1.0, 10), jnp.zeros((11, 6)))
