"""Preconditioned GD as LSA weights against its explicit learner (docs/theory.md §0, §5)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import metrics
from icl_toy.core import learners
from icl_toy.core.constructions import gd_weights, preconditioned_gd_weights
from icl_toy.core.models import LSATransformer, attention_products
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch

D, N = 5, 20


def _anisotropic_prompts(d_y, batch=64, seed=0):
    a = np.random.default_rng(seed).normal(size=(D, D))
    cov = a @ a.T / D + 0.2 * np.eye(D)
    cov = (cov + cov.T) / 2
    cfg = TaskConfig(
        d=D,
        n_context=N,
        d_y=d_y,
        inputs="gaussian",
        input_cov=tuple(map(tuple, cov.tolist())),
        noise_std=0.3,
    )
    return sample_batch(jax.random.key(seed), cfg, batch)


def _random_gamma(seed=1):
    """A non-symmetric Γ, so a transpose slip in the construction cannot cancel."""
    return jax.random.normal(jax.random.key(seed), (D, D))


@functools.partial(jax.jit, static_argnums=0)
def _model_predictions(model, params, prompts):
    tokens = jax.vmap(prompt_tokens)(prompts)
    return jax.vmap(model.apply, in_axes=(None, 0))(params, tokens)


def _numpy_reference(prompts, gamma):
    """ŷ_b = (1/N) Σ_i y_bi (x_qᵀ Γ x_bi): a float64 loop over tasks and context pairs."""
    x, y, x_q = (np.asarray(a, np.float64) for a in (prompts.x, prompts.y, prompts.x_q))
    gamma = np.asarray(gamma, np.float64)
    out = np.zeros((x.shape[0], y.shape[2]))
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            out[b] += y[b, i] * (x_q[b] @ gamma @ x[b, i]) / x.shape[1]
    return out


@pytest.mark.parametrize(
    ("d_y", "heads", "key_size", "shared"), [(1, 1, None, False), (2, 2, 9, True)]
)
def test_construction_equals_explicit_prediction_float64(x64, d_y, heads, key_size, shared):
    prompts = _anisotropic_prompts(d_y)
    model = LSATransformer(d=D, d_y=d_y, num_heads=heads, key_size=key_size, shared_weights=shared)
    for seed in range(3):
        gamma = _random_gamma(seed)
        params = preconditioned_gd_weights(model, gamma, N)
        got = _model_predictions(model, params, prompts)
        explicit = jax.vmap(learners.preconditioned_gd(gamma))(prompts)
        np.testing.assert_allclose(got, explicit, rtol=0, atol=1e-12)
        np.testing.assert_allclose(explicit, _numpy_reference(prompts, gamma), rtol=0, atol=1e-12)


@pytest.mark.parametrize("d_y", [1, 2])
def test_construction_equals_explicit_prediction_float32(d_y):
    prompts = _anisotropic_prompts(d_y)
    model = LSATransformer(d=D, d_y=d_y)
    gamma = _random_gamma()
    got = _model_predictions(model, preconditioned_gd_weights(model, gamma, N), prompts)
    np.testing.assert_allclose(got, _numpy_reference(prompts, gamma), rtol=0, atol=1e-5)


def test_scalar_preconditioner_is_one_gd_step(x64):
    """Γ = ηI gives the same predictions as the GD construction and explicit GD."""
    prompts = _anisotropic_prompts(1)
    model = LSATransformer(d=D)
    eta = 0.37
    precond = _model_predictions(
        model, preconditioned_gd_weights(model, eta * jnp.eye(D), N), prompts
    )
    gd = _model_predictions(model, gd_weights(model, eta, N), prompts)
    explicit = jax.vmap(learners.gd(jnp.array([eta])))(prompts)
    np.testing.assert_allclose(precond, gd, rtol=0, atol=1e-12)
    np.testing.assert_allclose(precond, explicit, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("heads", "key_size", "shared"), [(1, None, False), (3, 8, True)])
def test_construction_has_the_init_pytree(heads, key_size, shared):
    model = LSATransformer(d=D, num_heads=heads, key_size=key_size, shared_weights=shared)
    init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((N + 1, D + 1)))
    built = preconditioned_gd_weights(model, _random_gamma(), N)
    assert jax.tree.structure(built) == jax.tree.structure(init)
    assert jax.tree.map(jnp.shape, built) == jax.tree.map(jnp.shape, init)


def test_implied_preconditioner_of_the_construction_is_gamma(x64):
    """metrics.implied_preconditioner reads back exactly the Γ that was built in."""
    model = LSATransformer(d=D, num_heads=2)
    gamma = _random_gamma()
    params = preconditioned_gd_weights(model, gamma, N)
    w_kq, w_pv = (m[0] for m in attention_products(params["params"]))
    implied = metrics.implied_preconditioner(w_kq, w_pv, D, N)
    np.testing.assert_allclose(implied, gamma, rtol=0, atol=1e-14)


def test_construction_rejects_what_it_cannot_build():
    gamma = _random_gamma()
    with pytest.raises(ValueError, match="one layer"):
        preconditioned_gd_weights(LSATransformer(d=D, num_layers=2), gamma, N)
    with pytest.raises(ValueError, match="key_size"):
        preconditioned_gd_weights(LSATransformer(d=D, key_size=3), gamma, N)
    with pytest.raises(ValueError, match="gamma has shape"):
        preconditioned_gd_weights(LSATransformer(d=D), jnp.eye(D + 1), N)
    with pytest.raises(ValueError, match="n_context"):
        preconditioned_gd_weights(LSATransformer(d=D), gamma, 0)
