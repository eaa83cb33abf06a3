import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.tasks import (
    TaskConfig,
    batch_at_step,
    get_preset,
    input_moments,
    prompt_tokens,
    sample_batch,
    sample_task,
    von_oswald_preset,
)


def test_shapes_and_noiseless_labels():
    cfg = TaskConfig(d=4, n_context=7, d_y=2)
    p = sample_task(jax.random.key(0), cfg)
    assert p.x.shape == (7, 4) and p.y.shape == (7, 2)
    assert p.x_q.shape == (4,) and p.y_q.shape == (2,) and p.w.shape == (2, 4)
    np.testing.assert_allclose(p.y, p.x @ p.w.T, atol=1e-6)
    np.testing.assert_allclose(p.y_q, p.w @ p.x_q, atol=1e-6)
    batch = sample_batch(jax.random.key(0), cfg, 5)
    assert batch.x.shape == (5, 7, 4) and batch.y_q.shape == (5, 2)


@pytest.mark.parametrize("query_noise", [False, True])
def test_label_noise_on_context_and_optionally_query(query_noise):
    cfg = TaskConfig(d=3, n_context=50, noise_std=0.5, query_noise=query_noise)
    p = sample_batch(jax.random.key(1), cfg, 400)
    context_noise = p.y - jnp.einsum("bnd,byd->bny", p.x, p.w)
    query_noise_values = p.y_q - jnp.einsum("bd,byd->by", p.x_q, p.w)
    assert abs(float(context_noise.std()) - 0.5) < 0.02
    if query_noise:
        assert abs(float(query_noise_values.std()) - 0.5) < 0.05
    else:
        assert float(jnp.abs(query_noise_values).max()) < 1e-5


def test_batches_are_pure_functions_of_key_and_step():
    cfg = von_oswald_preset()
    key = jax.random.key(3)
    a = batch_at_step(key, cfg, 16, 7)
    b = batch_at_step(key, cfg, 16, 7)
    c = batch_at_step(key, cfg, 16, 8)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.allclose(a.x, c.x)


def test_preset_is_von_oswald_code_scale():
    cfg = von_oswald_preset()
    assert (cfg.d, cfg.n_context, cfg.d_y, cfg.noise_std) == (10, 10, 1, 0.0)
    assert (cfg.input_low, cfg.input_high) == (-0.5, 0.5)
    assert "0.5" in von_oswald_preset.__doc__
    assert get_preset("von_oswald") == cfg
    x = sample_batch(jax.random.key(0), cfg, 2000).x
    assert float(x.min()) >= -0.5 and float(x.max()) <= 0.5
    # U(-0.5, 0.5): variance 1/12 per coordinate.
    assert abs(float(x.var()) - 1 / 12) < 2e-3
    assert input_moments(cfg) == pytest.approx((1 / 12, 9 / 5))


def test_gaussian_inputs_have_the_requested_covariance():
    cov = ((2.0, 0.5), (0.5, 1.0))
    cfg = TaskConfig(d=2, n_context=100, inputs="gaussian", input_cov=cov)
    x = sample_batch(jax.random.key(0), cfg, 500).x.reshape(-1, 2)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), cov, atol=0.03)
    with pytest.raises(ValueError, match="isotropic"):
        input_moments(cfg)


def test_prompt_tokens_layout():
    cfg = TaskConfig(d=3, n_context=4, d_y=2)
    p = sample_task(jax.random.key(0), cfg)
    tokens = prompt_tokens(p)
    assert tokens.shape == (5, 5)
    np.testing.assert_array_equal(tokens[:4, :3], p.x)
    np.testing.assert_array_equal(tokens[:4, 3:], p.y)
    np.testing.assert_array_equal(tokens[4, :3], p.x_q)
    np.testing.assert_array_equal(tokens[4, 3:], jnp.zeros(2))
    w0 = jnp.ones((2, 3))
    np.testing.assert_allclose(prompt_tokens(p, w0)[4, 3:], -(w0 @ p.x_q))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"n_context": 0}, "n_context"),
        ({"d": 0}, "d must be"),
        ({"d_y": -1}, "d_y"),
        ({"input_low": 1.0}, "input_low < input_high"),
        ({"inputs": "laplace"}, "inputs"),
        ({"w_scale": 0.0}, "w_scale"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"inputs": "gaussian", "input_cov": ((1.0, 2.0), (2.0, 1.0))}, "10x10"),
    ],
)
def test_bad_task_configs_raise(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(von_oswald_preset(), **change)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="von_oswald"):
        get_preset("garg")


def test_teacher_weights_are_gaussian_with_scale_tau():
    cfg = TaskConfig(d=10, n_context=2, w_scale=2.0)
    w = np.asarray(sample_batch(jax.random.key(5), cfg, 20_000).w).ravel()  # 200k draws
    assert abs(w.mean()) < 0.02 and w.std() == pytest.approx(2.0, rel=0.01)
    # Normal, not merely unit-variance: P(|z| < 1) = 0.6827, E z⁴ = 3.
    assert np.mean(np.abs(w) < 2.0) == pytest.approx(0.6827, abs=0.005)
    assert np.mean((w / 2.0) ** 4) == pytest.approx(3.0, rel=0.03)
