"""The dual form: implicit ΔW of LSA models against explicit fine-tuning (docs/theory.md §2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import duality
from icl_toy.core.constructions import gd_weights
from icl_toy.core.models import LSATransformer, SoftmaxSelfAttention, Transformer
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch, von_oswald_preset

ETA = 200 / 33  # η* of the von Oswald preset


def _numpy_gd_step(x_NxD, y_NxY, eta, w0_YxD):
    """Independent reference: W0 − (η/N) Σ_i (W0 x_i − y_i) x_iᵀ as a float64 numpy loop."""
    x, y, w0 = (np.asarray(a, np.float64) for a in (x_NxD, y_NxY, w0_YxD))
    grad = sum(np.outer(w0 @ x[i] - y[i], x[i]) for i in range(len(x))) / len(x)
    return w0 - eta * grad


def _setup(d_y, random_w0, num_layers=1, batch=16):
    task = TaskConfig(d=10, n_context=10, d_y=d_y, input_low=-0.5, input_high=0.5)
    prompts = sample_batch(jax.random.key(0), task, batch)
    model = LSATransformer(d=10, d_y=d_y, num_layers=num_layers)
    w0 = 0.5 * jax.random.normal(jax.random.key(3), (d_y, 10)) if random_w0 else None
    return task, prompts, model, w0


def _implicit_updates(model, params, prompts, w0):
    @jax.jit
    def batched(prompts):
        tokens = jax.vmap(prompt_tokens, in_axes=(0, None))(prompts, w0)
        return jax.vmap(duality.implicit_weight_update, in_axes=(None, 0, None, None))(
            lambda t: model.apply(params, t), tokens, model.d, w0
        )

    return batched(prompts)


@pytest.mark.parametrize("d_y, random_w0", [(1, False), (1, True), (2, True)])
def test_construction_implicit_update_is_one_gd_step_float64(x64, d_y, random_w0):
    """The must-show number: ΔW_ICL of the GD construction = one explicit GD step, ≤ 1e-12."""
    _, prompts, model, w0 = _setup(d_y, random_w0)
    params = gd_weights(model, ETA, 10, w0)
    delta_icl = _implicit_updates(model, params, prompts, w0)
    w0_np = np.zeros((d_y, 10)) if w0 is None else np.asarray(w0)
    expected = np.stack(
        [
            _numpy_gd_step(x, y, ETA, w0_np) - w0_np
            for x, y in zip(np.asarray(prompts.x), np.asarray(prompts.y), strict=True)
        ]
    )
    assert delta_icl.dtype == jnp.float64
    np.testing.assert_allclose(delta_icl, expected, rtol=0, atol=1e-12)
    delta_ft = jax.vmap(duality.finetune_update, in_axes=(0, 0, None, None, None))(
        prompts.x, prompts.y, ETA, 1, w0
    )
    np.testing.assert_allclose(delta_ft, expected, rtol=0, atol=1e-12)
    cos = jax.vmap(duality.update_cosine)(delta_icl, delta_ft)
    np.testing.assert_allclose(cos, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(duality.norm_ratio)(delta_icl, delta_ft), 1.0, atol=1e-12)


def test_construction_implicit_update_float32():
    _, prompts, model, _ = _setup(1, False)
    params = gd_weights(model, ETA, 10)
    delta_icl = _implicit_updates(model, params, prompts, None)
    delta_ft = jax.vmap(duality.finetune_update, in_axes=(0, 0, None, None))(
        prompts.x, prompts.y, ETA, 1
    )
    np.testing.assert_allclose(delta_icl, delta_ft, rtol=0, atol=1e-5)


def test_k_layer_construction_is_k_finetuning_steps_float64(x64):
    _, prompts, model, w0 = _setup(1, True, num_layers=3)
    params = gd_weights(model, 0.8 * ETA, 10, w0)
    delta_icl = _implicit_updates(model, params, prompts, w0)
    delta_ft = jax.vmap(duality.finetune_update, in_axes=(0, 0, None, None, None))(
        prompts.x, prompts.y, 0.8 * ETA, 3, w0
    )
    np.testing.assert_allclose(delta_icl, delta_ft, rtol=0, atol=1e-12)
    # ...and not one step: the check can fail.
    one_step = jax.vmap(duality.finetune_update, in_axes=(0, 0, None, None, None))(
        prompts.x, prompts.y, 0.8 * ETA, 1, w0
    )
    assert np.abs(np.asarray(delta_icl - one_step)).max() > 1e-2


@pytest.mark.parametrize("num_layers", [1, 3])
def test_any_lsa_prediction_is_linear_in_the_query_float64(x64, num_layers):
    """Random (not constructed) LSA weights: ŷ = W_ICL x_q exactly, so ΔW_ICL is the model."""
    _, prompts, model, w0 = _setup(1, True, num_layers=num_layers)
    # Scale 0.5 keeps ŷ O(1) for 3 layers, so 1e-12 is round-off (large weights blow ŷ up).
    model = LSATransformer(d=10, num_layers=num_layers, init_scale=0.5)
    tokens = prompt_tokens(jax.tree.map(lambda a: a[0], prompts), w0)
    params = model.init(jax.random.key(1), tokens)
    probes = jax.random.uniform(jax.random.key(2), (32, 10), minval=-2.0, maxval=2.0)
    gap = duality.linearity_gap(lambda t: model.apply(params, t), tokens, 10, probes, w0)
    assert gap <= 1e-12


def test_softmax_attention_is_not_linear_in_the_query(x64):
    """The linearity check can fail: softmax attention mixes x_q into the weights."""
    model = Transformer((SoftmaxSelfAttention(init_scale=20.0),), d_y=1)
    prompts = sample_batch(jax.random.key(0), von_oswald_preset(), 1)
    tokens = prompt_tokens(jax.tree.map(lambda a: a[0], prompts))
    params = model.init(jax.random.key(1), tokens)
    probes = jax.random.uniform(jax.random.key(2), (32, 10), minval=-2.0, maxval=2.0)
    assert duality.linearity_gap(lambda t: model.apply(params, t), tokens, 10, probes) > 1e-4


def test_sgd_epoch_matches_a_numpy_loop_and_one_example_gd(x64):
    prompts = sample_batch(jax.random.key(5), von_oswald_preset(), 1)
    x, y = np.asarray(prompts.x[0]), np.asarray(prompts.y[0])
    w0 = np.asarray(0.3 * jax.random.normal(jax.random.key(6), (1, 10)))
    w = w0.copy()
    for i in range(10):  # one step per example, in order, step η/N
        w = w - (ETA / 10) * np.outer(w @ x[i] - y[i], x[i])
    got = duality.sgd_finetune_update(prompts.x[0], prompts.y[0], ETA, jnp.asarray(w0))
    np.testing.assert_allclose(got, w - w0, rtol=0, atol=1e-12)
    # With one example per prompt an SGD epoch is a GD step.
    one = duality.sgd_finetune_update(prompts.x[0, :1], prompts.y[0, :1], ETA)
    np.testing.assert_allclose(
        one, duality.finetune_update(prompts.x[0, :1], prompts.y[0, :1], ETA, 1), atol=1e-12
    )


def test_update_metrics_on_hand_examples():
    a = jnp.array([[3.0, 4.0]])
    assert duality.update_cosine(a, 2 * a) == pytest.approx(1.0)
    assert duality.update_cosine(a, -a) == pytest.approx(-1.0)
    assert duality.update_cosine(a, jnp.array([[4.0, -3.0]])) == pytest.approx(0.0)
    assert duality.norm_ratio(2 * a, a) == pytest.approx(2.0)
    assert duality.relative_error(a, jnp.array([[3.0, 0.0]])) == pytest.approx(4.0 / 3.0)


def test_rec2ftp_counts_the_recall_of_fine_tuning_wins():
    zsl = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0])
    ft = jnp.array([0.1, 0.2, 0.9, 2.0, 0.4])  # right on 0, 1, 2, 4 (margin 0)
    icl = jnp.array([0.45, 1.5, 0.3, 0.1, 0.8])  # right on 0, 2, 3, 4
    assert duality.rec2ftp(icl, ft, zsl) == pytest.approx(3 / 4)
    # margin 0.5: FT right on 0, 1, 4; ICL right on 0, 2, 3.
    assert duality.rec2ftp(icl, ft, zsl, margin=0.5) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="margin"):
        duality.gets_right(icl, zsl, margin=1.0)


def test_simaou_of_the_construction_is_one_float64(x64):
    """The construction's query token is exactly (x_p, −(W0 + ΔW_FT) x_p) at every probe."""
    _, prompts, model, w0 = _setup(1, True, batch=1)
    prompt = jax.tree.map(lambda a: a[0], prompts)
    params = gd_weights(model, ETA, 10, w0)
    tokens = prompt_tokens(prompt, w0)
    probes = jax.random.uniform(jax.random.key(2), (8, 10), minval=-0.5, maxval=0.5)

    def query_token(t):
        return model.apply(params, t, method=LSATransformer.trajectory)[-1, -1]

    h_icl = duality.model_query_outputs(query_token, tokens, 10, probes, w0)
    delta_ft = duality.finetune_update(prompt.x, prompt.y, ETA, 1, w0)
    h_ft = duality.linear_query_outputs(w0 + delta_ft, probes)
    h_zsl = duality.linear_query_outputs(w0, probes)
    np.testing.assert_allclose(h_icl, h_ft, rtol=0, atol=1e-12)
    assert duality.simaou(h_icl, h_ft, h_zsl) == pytest.approx(1.0, abs=1e-12)
    # A random update is not aligned (the metric can be far from 1).
    random_w = jax.random.normal(jax.random.key(9), (1, 10))
    assert abs(duality.simaou(duality.linear_query_outputs(random_w, probes), h_ft, h_zsl)) < 0.9


def test_residual_update_of_the_construction_is_one_gd_step_on_the_residuals(x64):
    """ΔW_ICL(x, r) of GD(η) is −(η/N) Σ_i (0 · x_i − r_i) x_iᵀ: one GD step from 0 on (x, r)."""
    task = von_oswald_preset()
    prompts = sample_batch(jax.random.key(5), task, 4)
    model = LSATransformer(d=task.d)
    delta_w = duality.residual_update(lambda t: model.apply(gd_weights(model, ETA, 10), t))
    for b in range(4):
        expected = _numpy_gd_step(prompts.x[b], prompts.y[b], ETA, np.zeros((1, task.d)))
        np.testing.assert_allclose(delta_w(prompts.x[b], prompts.y[b]), expected, atol=1e-12)
