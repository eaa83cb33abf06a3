import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import metrics
from icl_toy.core.constructions import gd_weights
from icl_toy.core.learners import gd_fit
from icl_toy.core.losses import half_mse
from icl_toy.core.models import LSATransformer, attention_products, lsa_query_output, readout
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch


def _prompts(batch=64):
    return sample_batch(jax.random.key(0), TaskConfig(d=10, n_context=10), batch)


def test_half_mse_and_prediction_difference():
    pred, target = jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [1.0]])
    assert float(half_mse(pred, target)) == pytest.approx(0.5 * (1 + 4) / 2)
    assert float(metrics.prediction_difference(pred, target)) == pytest.approx(1.5)


def test_sensitivity_of_gd_construction_is_the_gd_weight(x64):
    prompts = _prompts()
    model = LSATransformer(d=10)
    params = gd_weights(model, 0.9, 10)
    tokens = jax.vmap(prompt_tokens)(prompts)
    sens = jax.vmap(metrics.query_sensitivity, in_axes=(None, 0, None))(
        lambda t: model.apply(params, t), tokens, 10
    )
    w1 = jax.vmap(gd_fit, in_axes=(0, 0, None))(prompts.x, prompts.y, jnp.array([0.9]))
    np.testing.assert_allclose(sens, w1, atol=1e-12)
    assert float(metrics.sensitivity_cosine(sens, 3.0 * sens)) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.sensitivity_cosine(sens, -sens)) == pytest.approx(-1.0, abs=1e-6)
    assert float(metrics.model_difference(sens, sens)) == 0.0
    assert float(metrics.model_difference(sens, 0 * sens)) == pytest.approx(
        float(jnp.mean(jnp.linalg.norm(sens[:, 0], axis=-1)))
    )


def _random_products(key, heads=1, e=11, scale=0.3):
    k1, k2 = jax.random.split(key)
    return scale * jax.random.normal(k1, (heads, e, e)), scale * jax.random.normal(
        k2, (heads, e, e)
    )


def _predict(w_kq, w_pv, tokens_BxTxE):
    return jax.vmap(lambda t: readout(lsa_query_output(w_kq[None], w_pv[None], t)[None], 1))(
        tokens_BxTxE
    )


def test_beta_rescaling_keeps_the_function_and_normalises_the_construction(x64):
    tokens = jax.vmap(prompt_tokens)(_prompts())
    w_kq, w_pv = _random_products(jax.random.key(1), heads=2)
    w_kq = w_kq + jnp.eye(11)[None]  # give each head a clear x-block diagonal
    kq_r, pv_r, _ = metrics.beta_rescale(w_kq, w_pv, 10)
    np.testing.assert_allclose(
        _predict(kq_r, pv_r, tokens), _predict(w_kq, w_pv, tokens), atol=1e-10
    )
    np.testing.assert_allclose(jnp.mean(jnp.diagonal(kq_r[:, :10, :10], axis1=1, axis2=2), -1), 1.0)
    # The GD construction already has β = 1, and a gauge-scaled copy comes back to it.
    model = LSATransformer(d=10)
    gd_kq, gd_pv = (m[0] for m in attention_products(gd_weights(model, 2.0, 10)["params"]))
    scaled_kq, scaled_pv, scaled_beta = metrics.beta_rescale(-4.0 * gd_kq, -0.25 * gd_pv, 10)
    assert float(scaled_beta[0]) == pytest.approx(-4.0)
    np.testing.assert_allclose(scaled_kq, gd_kq, atol=1e-12)
    np.testing.assert_allclose(scaled_pv, gd_pv, atol=1e-12)
    interp = metrics.interpolated_products((-4.0 * gd_kq, -0.25 * gd_pv), (gd_kq, gd_pv), 10)
    np.testing.assert_allclose(interp[0], gd_kq, atol=1e-12)


def test_degenerate_beta_gives_nan_not_a_blow_up():
    w_kq, w_pv = _random_products(jax.random.key(2))
    w_kq = w_kq.at[0, jnp.arange(10), jnp.arange(10)].set(0.0)  # no x-block diagonal
    kq_r, pv_r, beta = metrics.beta_rescale(w_kq, w_pv, 10)
    assert float(beta[0]) == 0.0
    assert bool(jnp.isnan(kq_r).all()) and bool(jnp.isnan(pv_r).all())
    zero_kq, zero_pv, _ = metrics.beta_rescale(jnp.zeros_like(w_kq), w_pv, 10)
    assert bool(jnp.isnan(zero_kq).all()) and not bool(jnp.isinf(zero_pv).any())


def test_implied_eta_of_the_construction_is_its_step():
    model = LSATransformer(d=10)
    w_kq, w_pv = (m[0] for m in attention_products(gd_weights(model, 3.7, 10)["params"]))
    assert float(metrics.implied_eta(w_kq, w_pv, 10, 10)) == pytest.approx(3.7, rel=1e-6)
    np.testing.assert_allclose(
        metrics.implied_preconditioner(w_kq, w_pv, 10, 10), 3.7 * np.eye(10), atol=1e-5
    )


def test_implied_preconditioner_is_the_part_odd_in_y(x64):
    """For any weights, ŷ(y) − ŷ(−y) = 2 x_qᵀ Γ h with h = Xᵀy/N (an independent check)."""
    prompts = _prompts(16)
    w_kq, w_pv = _random_products(jax.random.key(3), heads=2)
    gamma = metrics.implied_preconditioner(w_kq, w_pv, 10, 10)
    flipped = prompts._replace(y=-prompts.y)
    odd = 0.5 * (
        _predict(w_kq, w_pv, jax.vmap(prompt_tokens)(prompts))
        - _predict(w_kq, w_pv, jax.vmap(prompt_tokens)(flipped))
    )
    h = jnp.einsum("bnd,bny->bdy", prompts.x, prompts.y) / 10
    expected = jnp.einsum("bd,de,bey->by", prompts.x_q, gamma, h)
    np.testing.assert_allclose(odd, expected, atol=1e-12)


def test_single_layer_readouts_match_the_model():
    """`products_predict` of a layer's own products is its forward pass; the seed readouts
    equal per-seed `beta_rescale` (2 seeds, one of them the GD construction)."""
    model = LSATransformer(d=10)
    prompts = _prompts(8)
    tokens = jax.vmap(prompt_tokens)(prompts)
    random = model.init(jax.random.key(3), tokens[0])
    products = metrics.single_layer_products(random)
    assert products[0].shape == (1, 11, 11)
    expected = jax.vmap(lambda t: model.apply(random, t))(tokens)
    got = metrics.products_predict(*products, tokens, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    gd = gd_weights(model, 2.0, 10)
    params_S = jax.tree.map(lambda a, b: jnp.stack([a, b]), random, gd)
    kq_S, pv_S, beta_S = metrics.seed_beta_rescale(params_S, 10)
    for s, params in enumerate((random, gd)):
        kq, pv, beta = metrics.beta_rescale(*metrics.single_layer_products(params), 10)
        np.testing.assert_allclose(kq_S[s], kq, rtol=1e-6)
        np.testing.assert_allclose(pv_S[s], pv, rtol=1e-6)
        np.testing.assert_allclose(beta_S[s], beta, rtol=1e-6)
    # The midpoint of the construction with itself is the construction.
    gd_products = metrics.single_layer_products(gd)
    np.testing.assert_allclose(
        metrics.interpolated_predict(gd_products, gd_products, tokens, 10, 1),
        jax.vmap(lambda t: model.apply(gd, t))(tokens),
        rtol=1e-5,
        atol=1e-6,
    )


def test_against_reference_is_zero_distance_to_itself():
    model = LSATransformer(d=10)
    tokens = jax.vmap(prompt_tokens)(_prompts(8))
    params = gd_weights(model, 2.0, 10)
    pred = jax.vmap(lambda t: model.apply(params, t))(tokens)
    sens = metrics.batch_sensitivities(model, params, tokens, 10)
    assert sens.shape == (8, 1, 10)
    out = metrics.against_reference(pred, sens, pred, sens)
    assert float(out["prediction_difference"]) == 0.0
    assert float(out["model_difference"]) == 0.0
    assert float(out["sensitivity_cosine"]) == pytest.approx(1.0, abs=1e-6)
