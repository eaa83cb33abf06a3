"""Forward-only gradient estimators, the train() hook, and ICL baked into weights.

The math: docs/theory.md §9."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import duality
from icl_toy.core.constructions import gd_weights
from icl_toy.core.models import LSATransformer, ModelConfig, make_model
from icl_toy.core.tasks import (
    Prompt,
    TaskConfig,
    prompt_tokens,
    sample_batch,
    von_oswald_preset,
)
from icl_toy.training import forward_only, timing
from icl_toy.training.train import RunOptions, TrainConfig, batch_loss, train

TASK = von_oswald_preset()
MODEL = make_model(TASK, ModelConfig())


def _loss_setup(scale=0.3):
    """The LSA's half-MSE on a fixed batch at random (not tiny) weights, and its params."""
    prompts = sample_batch(jax.random.key(0), TASK, 16)
    model = LSATransformer(d=10, init_scale=scale)
    params = model.init(jax.random.key(1), jnp.zeros((11, 11)))
    return functools.partial(batch_loss, model), params, prompts


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def test_forward_gradient_is_unbiased_within_the_monte_carlo_bound():
    loss, params, prompts = _loss_setup()
    num = 4000
    value, grad = jax.jit(forward_gradient_of(num), static_argnums=0)(loss, params, prompts)
    _, exact = jax.value_and_grad(loss)(params, prompts)
    g, est = _flat(exact), _flat(grad)
    assert value == pytest.approx(float(loss(params, prompts)), rel=1e-6)
    # For v ~ N(0, I): Var[(g·v) v_j] = ||g||² + g_j², so the mean of M draws has
    # E||mean − g||² = (P + 1)||g||² / M. A 2x scale error would give ||g||² on its own.
    expected_sq = (g.size + 1) * jnp.sum(g**2) / num
    assert jnp.sum((est - g) ** 2) <= 2.0 * expected_sq, (jnp.sum((est - g) ** 2), expected_sq)
    # ...and per coordinate within 5 standard errors.
    std_err = jnp.sqrt((jnp.sum(g**2) + g**2) / num)
    assert jnp.all(jnp.abs(est - g) <= 5 * std_err)


def forward_gradient_of(num):
    def estimate(loss, params, prompts):
        return forward_only.forward_gradient(num)(loss, params, prompts, jax.random.key(42))

    return estimate


def test_estimators_share_directions_and_spsa_converges_to_the_directional_derivative(x64):
    loss, params, prompts = _loss_setup()
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    key = jax.random.key(3)
    # The direction both estimators draw for M = 1.
    v = forward_only.gaussian_direction(jax.random.split(key, 1)[0], params)
    _, exact = jax.value_and_grad(loss)(params, prompts)
    slope = jnp.dot(_flat(exact), _flat(v))  # ∇L·v by reverse mode, independently
    _, fwd = jax.jit(forward_only.forward_gradient(), static_argnums=0)(loss, params, prompts, key)
    np.testing.assert_allclose(_flat(fwd), slope * _flat(v), rtol=1e-10, atol=1e-14)
    errors = []
    for eps in (1e-1, 1e-3, 1e-5):
        estimate = jax.jit(forward_only.spsa_gradient(eps), static_argnums=0)
        value, spsa = estimate(loss, params, prompts, key)
        errors.append(float(jnp.linalg.norm(_flat(spsa) - slope * _flat(v))))
        assert value == pytest.approx(float(loss(params, prompts)), rel=10 * eps**2)
    norm = float(jnp.linalg.norm(slope * _flat(v)))
    # Central differences: the error falls as ε² (x1e4 per x1e-2 in ε) until round-off,
    # which in float64 is ~1e-16/ε, far below what is left at ε = 1e-5.
    assert 5e3 <= errors[1] / errors[2] <= 2e4, errors
    assert errors[2] <= 1e-4 * norm, (errors, norm)


def test_estimators_reject_bad_arguments():
    with pytest.raises(ValueError, match="num_directions"):
        forward_only.forward_gradient(0)
    with pytest.raises(ValueError, match="epsilon"):
        forward_only.spsa_gradient(0.0)


SMALL = TrainConfig(steps=40, batch_size=64, eval_every=20, num_seeds=2, learning_rate=1e-2)


@pytest.mark.slow
def test_train_hook_runs_an_estimator_and_resumes_it_bitwise(tmp_path):
    default = train(MODEL, TASK, SMALL)
    spsa = forward_only.spsa_gradient(1e-3)
    fresh = train(MODEL, TASK, SMALL, gradient=spsa)
    assert not np.array_equal(fresh.train_loss, default.train_loss)
    # Interrupt after 20 steps, resume to 40: the estimator's keys depend on (seed, step) only.
    options = RunOptions(checkpoint_dir=str(tmp_path), checkpoint_every=1)
    train(MODEL, TASK, dataclasses.replace(SMALL, steps=20), options=options, gradient=spsa)
    resumed = train(
        MODEL, TASK, SMALL, options=dataclasses.replace(options, resume=True), gradient=spsa
    )
    np.testing.assert_array_equal(resumed.train_loss, fresh.train_loss)
    jax.tree.map(np.testing.assert_array_equal, resumed.params, fresh.params)


def test_icl_stream_with_the_construction_is_minibatch_sgd_float64(x64):
    """W ← W + ΔW_ICL(chunk residuals) with the GD construction = SGD at lr η, ≤ 1e-12."""
    eta = 200 / 33
    chunks = sample_batch(jax.random.key(4), TASK, 6)  # 6 chunks of N = 10 examples
    w_star = chunks.w[0]
    y_CxNxY = jnp.einsum("cnd,yd->cny", chunks.x, w_star)  # one task for the whole stream
    model = LSATransformer(d=10)
    params = gd_weights(model, eta, 10)

    def delta_w(x_NxD, r_NxY):
        prompt = Prompt(x=x_NxD, y=r_NxY, x_q=jnp.zeros(10), y_q=jnp.zeros(1), w=w_star)
        return duality.implicit_weight_update(
            lambda t: model.apply(params, t), prompt_tokens(prompt), 10
        )

    w0 = jnp.zeros((1, 10))
    icl = forward_only.stream_icl_fit(delta_w, chunks.x, y_CxNxY, w0)
    sgd = forward_only.stream_sgd_fit(chunks.x, y_CxNxY, w0, eta)
    assert icl.shape == (7, 1, 10)
    np.testing.assert_allclose(icl, sgd, rtol=0, atol=1e-12)
    losses = jax.vmap(forward_only.population_half_mse, in_axes=(0, None, None))(icl, w_star, TASK)
    assert losses[-1] < 0.5 * losses[0]


def test_population_loss_matches_monte_carlo():
    w, w_star = jnp.ones((1, 10)), jnp.zeros((1, 10))
    x = jax.random.uniform(jax.random.key(0), (200_000, 10), minval=-0.5, maxval=0.5)
    monte_carlo = 0.5 * jnp.mean(jnp.sum(x, axis=1) ** 2)
    closed = forward_only.population_half_mse(w, w_star, TASK)
    assert closed == pytest.approx(10 / 24)
    assert monte_carlo == pytest.approx(float(closed), rel=0.02)


def test_stream_chunks_are_noiseless_streams_of_fixed_teachers():
    task = von_oswald_preset()
    x, y, teachers = forward_only.stream_chunks(jax.random.key(2), task, 3, 4)
    assert x.shape == (3, 4, task.n_context, task.d) and y.shape == (3, 4, task.n_context, 1)
    expected = np.einsum("tcnd,tyd->tcny", np.asarray(x), np.asarray(teachers))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    # The teacher itself has zero population loss after every chunk; W = 0 has ½ s ||W*||².
    at_teacher = jnp.broadcast_to(teachers[:, None], (3, 5, 1, task.d))
    np.testing.assert_allclose(
        forward_only.mean_population_curve(at_teacher, teachers, task), np.zeros(5), atol=0
    )
    zero = forward_only.mean_population_curve(jnp.zeros_like(at_teacher), teachers, task)
    s = 1.0 / 12  # variance of U(-0.5, 0.5)
    expected_zero = 0.5 * s * np.mean(np.sum(np.asarray(teachers) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(zero, np.full(5, expected_zero), rtol=1e-5)


def test_steps_per_second_times_a_recipe_whose_warmup_is_longer_than_the_timed_steps():
    task = TaskConfig(d=2, n_context=4)
    cfg = TrainConfig(
        steps=30_000, batch_size=8, num_seeds=1, schedule="warmup_cosine", warmup_steps=1500
    )
    rate = timing.steps_per_second(make_model(task, ModelConfig()), task, cfg, None, 20, 1)
    assert rate > 0
