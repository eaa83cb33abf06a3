"""Nonlinear task families, learned-feature models and the MLP + GD construction.

The math: docs/theory.md §1."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.constructions import feature_gd_lsa_params
from icl_toy.core.linalg import matrix_products, products_below_full_precision
from icl_toy.core.models import FeatureGD, FeatureLSA, MLPFeatures
from icl_toy.core.nonlinear import (
    FourierTaskConfig,
    SineTaskConfig,
    rbf_ridge_predict,
    rbf_smoothing_predict,
    sine_oracle_predict,
)
from icl_toy.core.tasks import prompt_tokens, sample_task
from icl_toy.core.tasks import sample_batch as _sample_batch
from icl_toy.training.train import batch_loss, batch_predict

# Jitted: eager vmapped sampling dispatches every primitive separately and is several times slower.
sample_batch = jax.jit(_sample_batch, static_argnums=(1, 2))


def test_sine_prompts_follow_the_documented_law():
    task = SineTaskConfig()
    prompts = sample_batch(jax.random.key(0), task, 4000)
    a, rho = np.asarray(prompts.w[:, 0, 0]), np.asarray(prompts.w[:, 0, 1])
    assert prompts.x.shape == (4000, 10, 1) and prompts.y.shape == (4000, 10, 1)
    assert prompts.w.shape == (4000, 1, 2)
    assert 0.1 <= a.min() and a.max() <= 5.0 and 0.0 <= rho.min() and rho.max() <= math.pi
    x = np.asarray(prompts.x)
    assert -5.0 <= x.min() and x.max() <= 5.0
    # Uniform draws: means within 4 standard errors of the interval midpoints.
    assert abs(a.mean() - 2.55) < 4 * (4.9 / math.sqrt(12)) / math.sqrt(4000)
    assert abs(rho.mean() - math.pi / 2) < 4 * (math.pi / math.sqrt(12)) / math.sqrt(4000)
    expected_y = a[:, None, None] * np.sin(x + rho[:, None, None])
    np.testing.assert_allclose(prompts.y, expected_y, atol=1e-5)
    np.testing.assert_allclose(
        prompts.y_q[:, 0], a * np.sin(np.asarray(prompts.x_q[:, 0]) + rho), atol=1e-5
    )


def test_sine_amplitude_and_phase_are_independent():
    """Correlation of a and ρ over 20,000 tasks is 0 within 4 standard errors (4/√n = 0.028).

    The official notebook draws a and ρ from one key, so a = 0.1 + 0.4u and ρ = πu for the
    same u: correlation exactly 1. The second check shows this test would catch that.
    """
    n = 20_000
    task = SineTaskConfig()
    params = jax.jit(jax.vmap(task.draw_params))(jax.random.split(jax.random.key(3), n))
    a, rho = np.asarray(params[:, 0, 0]), np.asarray(params[:, 0, 1])
    assert abs(np.corrcoef(a, rho)[0, 1]) < 4 / math.sqrt(n)
    # Rank correlation too: independence, not just no linear trend.
    ranks_a, ranks_rho = np.argsort(np.argsort(a)), np.argsort(np.argsort(rho))
    assert abs(np.corrcoef(ranks_a, ranks_rho)[0, 1]) < 4 / math.sqrt(n)

    def one_key_draw(key):  # the notebook's bug, for contrast
        a = jax.random.uniform(key, (), minval=0.1, maxval=0.5)
        return a, jax.random.uniform(key, (), minval=0.0, maxval=math.pi)

    a_bug, rho_bug = jax.vmap(one_key_draw)(jax.random.split(jax.random.key(3), 1000))
    assert np.corrcoef(a_bug, rho_bug)[0, 1] > 0.999


def test_sample_task_dispatches_to_the_family_sampler():
    task = SineTaskConfig(n_context=7)
    key = jax.random.key(11)
    got, expected = sample_task(key, task), task.sample(key)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert task.token_dim == 2 and task.d == 1 and task.d_y == 1


def test_task_pool_draws_only_pool_members_uniformly():
    task = SineTaskConfig(pool_size=4, pool_seed=5)
    pool = np.asarray(task.task_pool())
    assert pool.shape == (4, 1, 2) and len(np.unique(pool[:, 0, 0])) == 4
    prompts = sample_batch(jax.random.key(0), task, 4000)
    member = np.argmin(np.abs(np.asarray(prompts.w)[:, None, 0, 0] - pool[None, :, 0, 0]), axis=1)
    np.testing.assert_array_equal(prompts.w, pool[member])
    counts = np.bincount(member, minlength=4)
    # Multinomial(4000, 1/4): each count within 5 standard deviations (27) of 1000.
    assert np.all(np.abs(counts - 1000) < 5 * math.sqrt(4000 * 0.25 * 0.75)), counts
    # Inputs stay fresh (float32 draws of 4000 values collide only by chance, a few times).
    assert len(np.unique(np.asarray(prompts.x[:, 0, 0]))) > 3990
    # Another pool seed, another pool.
    assert not np.allclose(SineTaskConfig(pool_size=4, pool_seed=6).task_pool(), pool)


def test_fourier_teacher_has_the_rbf_prior_covariance():
    """E f(x) f(x') = exp(−(x − x')²/(2ℓ²)) for any M (Rahimi & Recht); Monte Carlo, 4 s.e."""
    task = FourierTaskConfig(num_features=8, length_scale=0.7)
    n = 40_000
    params = jax.jit(jax.vmap(task.draw_params))(jax.random.split(jax.random.key(1), n))
    x = jnp.asarray([[0.0], [0.5], [1.2]])
    f = np.asarray(jax.jit(jax.vmap(task.evaluate, in_axes=(0, None)))(params, x))[
        :, :, 0
    ]  # (n, 3)
    for i, j in ((0, 0), (0, 1), (0, 2), (1, 2)):
        products = f[:, i] * f[:, j]
        expected = math.exp(-((x[i, 0] - x[j, 0]) ** 2) / (2 * 0.7**2))
        assert abs(products.mean() - expected) < 4 * products.std() / math.sqrt(n), (i, j)


def test_fourier_prompts_and_noise():
    task = FourierTaskConfig(d=2, n_context=6, num_features=5, noise_std=0.3)
    prompts = sample_batch(jax.random.key(2), task, 500)
    assert prompts.x.shape == (500, 6, 2) and prompts.w.shape == (500, 1, 5 * 4)
    clean = jax.jit(jax.vmap(task.evaluate))(prompts.w, prompts.x)
    residual = np.asarray(prompts.y - clean)
    assert abs(residual.std() - 0.3) < 0.02
    # The query label is clean.
    clean_q = jax.jit(jax.vmap(task.evaluate))(prompts.w, prompts.x_q[:, None])[:, 0]
    np.testing.assert_allclose(prompts.y_q, clean_q, atol=1e-6)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (SineTaskConfig, {"n_context": 0}, "n_context"),
        (SineTaskConfig, {"pool_size": 0}, "pool_size"),
        (SineTaskConfig, {"amplitude_low": 2.0, "amplitude_high": 1.0}, "amplitude"),
        (SineTaskConfig, {"phase_low": 1.0, "phase_high": 1.0}, "phase"),
        (SineTaskConfig, {"input_low": 1.0, "input_high": -1.0}, "input_low"),
        (SineTaskConfig, {"noise_std": -1.0}, "noise_std"),
        (FourierTaskConfig, {"num_features": 0}, "num_features"),
        (FourierTaskConfig, {"length_scale": 0.0}, "length_scale"),
        (FourierTaskConfig, {"d": 0}, "d must"),
    ],
)
def test_task_configs_reject_bad_values(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_task_pool_needs_a_pool_size():
    with pytest.raises(ValueError, match="no task pool"):
        SineTaskConfig().task_pool()


def _features_and_models(embed_dim=12, hidden_size=24):
    lsa = FeatureLSA(d=1, embed_dim=embed_dim, hidden_size=hidden_size)
    gd = FeatureGD(d=1, embed_dim=embed_dim, hidden_size=hidden_size, eta_init=0.37)
    return lsa, gd


def test_mlp_features_then_gd_layer_is_kernel_smoothing_float64(x64):
    """Proposition 2: LSA with the GD weights on (m(x), y) is ŷ = (η/N) Σ_i y_i m(x_i)ᵀm(x_q).

    The reference computes the features with the model's MLP and the rest in numpy.
    """
    lsa_model, gd_model = _features_and_models()
    prompts = sample_batch(jax.random.key(4), SineTaskConfig(), 64)
    tokens = jax.vmap(prompt_tokens)(prompts)
    gd_params = jax.jit(gd_model.init)(jax.random.key(5), tokens[0])
    lsa_params = feature_gd_lsa_params(lsa_model, gd_params, n_context=10)
    init_params = jax.eval_shape(lsa_model.init, jax.random.key(6), tokens[0])
    assert jax.tree.structure(lsa_params) == jax.tree.structure(init_params)
    assert jax.tree.map(np.shape, lsa_params) == jax.tree.map(lambda a: a.shape, init_params)

    got = np.asarray(jax.jit(batch_predict, static_argnums=0)(lsa_model, lsa_params, prompts))
    np.testing.assert_allclose(
        got, jax.jit(batch_predict, static_argnums=0)(gd_model, gd_params, prompts), atol=1e-12
    )

    mlp = MLPFeatures(embed_dim=12, hidden_size=24)
    features = np.asarray(
        jax.jit(mlp.apply)({"params": gd_params["params"]["features"]}, tokens[..., :1])
    )  # (B, T, F)
    kernel = np.einsum("bnf,bf->bn", features[:, :-1], features[:, -1])
    expected = 0.37 / 10 * np.einsum("bn,bny->by", kernel, np.asarray(prompts.y))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.abs(expected).max() > 1e-3  # a real comparison, not of two zeros


def test_mlp_features_then_gd_layer_float32():
    lsa_model, gd_model = _features_and_models()
    prompts = sample_batch(jax.random.key(4), SineTaskConfig(), 256)
    tokens = jax.vmap(prompt_tokens)(prompts)
    gd_params = jax.jit(gd_model.init)(jax.random.key(5), tokens[0])
    lsa_params = feature_gd_lsa_params(lsa_model, gd_params, n_context=10)
    predict = jax.jit(batch_predict, static_argnums=0)
    got, expected = predict(lsa_model, lsa_params, prompts), predict(gd_model, gd_params, prompts)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(jnp.abs(expected).max()))


def test_rbf_baselines_against_numpy(x64):
    rng = np.random.default_rng(0)
    x, y, x_q = rng.normal(size=(8, 2)), rng.normal(size=(8, 1)), rng.normal(size=2)
    ell, lam, eta = 0.8, 0.1, 1.7
    gram = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * ell**2))
    k_q = np.exp(-((x - x_q) ** 2).sum(-1) / (2 * ell**2))
    np.testing.assert_allclose(
        rbf_ridge_predict(x, y, x_q, ell, lam), k_q @ np.linalg.solve(gram + lam * np.eye(8), y)
    )
    np.testing.assert_allclose(rbf_smoothing_predict(x, y, x_q, ell, eta), eta / 8 * k_q @ y)


def test_sine_oracle_is_exact_on_noiseless_sine_tasks(x64):
    prompts = sample_batch(jax.random.key(8), SineTaskConfig(), 200)
    pred = jax.jit(jax.vmap(sine_oracle_predict))(prompts.x, prompts.y, prompts.x_q)
    np.testing.assert_allclose(pred, prompts.y_q, atol=1e-10)


def test_feature_models_use_full_precision_products():
    lsa_model, gd_model = _features_and_models()
    prompts = sample_batch(jax.random.key(4), SineTaskConfig(), 8)
    tokens = prompt_tokens(jax.tree.map(lambda a: a[0], prompts))
    programs = []
    for model in (lsa_model, gd_model):
        params = jax.eval_shape(model.init, jax.random.key(0), tokens)
        programs.append(
            jax.make_jaxpr(jax.grad(lambda p, m=model: batch_loss(m, p, prompts)))(params)
        )
    found = [eqn for program in programs for eqn in matrix_products(program)]
    assert found and not products_below_full_precision(found)
