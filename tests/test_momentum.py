"""Causal LSA, momentum attention, the heavy-ball construction and momentum learners."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core import learners
from icl_toy.core.constructions import gd_weights, heavy_ball_weights
from icl_toy.core.learners import gd, heavy_ball, nesterov
from icl_toy.core.linalg import matrix_products, products_below_full_precision
from icl_toy.core.models import (
    CausalLSATransformer,
    DepthMomentumLSA,
    LSATransformer,
    TokenMomentumLSA,
    learned_scalars,
    momentum_decay,
)
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch, von_oswald_preset
from icl_toy.training.tuning import constant_step_learner, fit_learner, heavy_ball_learner

TASK = von_oswald_preset()


# Jitted: eager sampling and eager Flax init/apply cost seconds per call on a CPU.
_sample_batch = jax.jit(sample_batch, static_argnums=(1, 2))


def _prompts(num, seed=0, task=TASK):
    return _sample_batch(jax.random.key(seed), task, num)


def _batch_apply(model, params, tokens_BxTxE, method=None):
    """ŷ (or `method`'s output) for a batch of prompts, vmapped and jitted."""

    def one(tokens_TxE):
        return model.apply(params, tokens_TxE, method=method)

    return jax.jit(jax.vmap(one))(tokens_BxTxE)


def _init_structure(model):
    """The pytree of shapes that `model.init` returns, without running the init."""
    tokens = jnp.zeros((TASK.n_context + 1, TASK.token_dim))
    return jax.eval_shape(model.init, jax.random.key(0), tokens)


def _random_init(model, seed=1, scale=0.3):
    """Random attention weights N(0, scale²) in the structure of `model.init` (no extra params)."""
    shapes = _init_structure(model)["params"]
    assert set(shapes) == {"w_q", "w_k", "w_v", "w_p"}, set(shapes)
    keys = jax.random.split(jax.random.key(seed + 100), 4)
    return {
        "params": {
            name: scale * jax.random.normal(key, shapes[name].shape, shapes[name].dtype)
            for key, name in zip(keys, ("w_q", "w_k", "w_v", "w_p"), strict=True)
        }
    }


@pytest.mark.parametrize("num_layers", [1, 3])
def test_causal_token_output_ignores_later_tokens(num_layers):
    model = CausalLSATransformer(d=TASK.d, num_layers=num_layers)
    params = _random_init(model)
    tokens = prompt_tokens(jax.tree.map(lambda a: a[0], _prompts(1)))
    t = 4
    perturbed = tokens.at[t + 1 :].add(jax.random.normal(jax.random.key(7), tokens[t + 1 :].shape))
    before = model.apply(params, tokens, method=CausalLSATransformer.trajectory)
    after = model.apply(params, perturbed, method=CausalLSATransformer.trajectory)
    # Tokens 0..t never see tokens after t, in any layer ...
    np.testing.assert_allclose(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=1e-6)
    # ... while a later token (and the query) does change: the test can fail.
    assert float(jnp.max(jnp.abs(after[-1, -1] - before[-1, -1]))) > 1e-3
    # Token 0 has no earlier pairs: its update is exactly 0.
    np.testing.assert_array_equal(before[-1, 0], tokens[0])


def test_causal_lsa_at_the_query_equals_plain_lsa_for_one_layer():
    causal = CausalLSATransformer(d=TASK.d, num_layers=1)
    plain = LSATransformer(d=TASK.d, num_layers=1)
    params = _random_init(plain)
    tokens = jax.vmap(prompt_tokens)(_prompts(64))
    got = _batch_apply(causal, params, tokens)
    want = _batch_apply(plain, params, tokens)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # The per-position readout at the query is the ordinary readout.
    positions = _batch_apply(causal, params, tokens, CausalLSATransformer.position_predictions)
    np.testing.assert_allclose(positions[:, -1], want, atol=1e-6)


def test_causal_gd_construction_predicts_each_label_from_its_prefix(x64):
    """With GD weights the readout at position t is one GD step on the t earlier pairs."""
    model = CausalLSATransformer(d=TASK.d, num_layers=1)
    n, eta = TASK.n_context, 2.5
    params = gd_weights(model, eta, n)
    prompts = _prompts(8)
    tokens = jax.vmap(prompt_tokens)(prompts)
    got = _batch_apply(model, params, tokens, CausalLSATransformer.position_predictions)
    x_all = jnp.concatenate([prompts.x, prompts.x_q[:, None]], axis=1)
    for t in range(1, n + 1):
        # The construction sums over the prefix with P = η/N: step η·t/N on the prefix mean.
        prefix = prompts._replace(x=prompts.x[:, :t], y=prompts.y[:, :t], x_q=x_all[:, t])
        want = jax.vmap(gd(jnp.asarray([eta * t / n])))(prefix)
        np.testing.assert_allclose(got[:, t], want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[:, 0], 0.0)


def test_token_momentum_with_mu_zero_is_plain_lsa():
    plain = LSATransformer(d=TASK.d, num_layers=3)
    token = TokenMomentumLSA(d=TASK.d, num_layers=3, momentum=0.0)
    params = _random_init(plain)
    tokens = jax.vmap(prompt_tokens)(_prompts(32))
    want = _batch_apply(plain, params, tokens)
    np.testing.assert_allclose(_batch_apply(token, params, tokens), want)
    # A nonzero μ changes the prediction (the momentum term is wired in).
    moving = TokenMomentumLSA(d=TASK.d, num_layers=3, momentum=0.5)
    moved = _batch_apply(moving, params, tokens)
    assert float(jnp.max(jnp.abs(moved - want))) > 1e-3


def test_token_momentum_adds_dais_ema_of_earlier_values(x64):
    """One layer, written out: Δe_t = W_PV (Σ_j e_j e_jᵀ W_KQ e_t + Σ_{j<t} μ^{t−j} e_j)."""
    mu = 0.37
    model = TokenMomentumLSA(d=TASK.d, num_layers=1, momentum=mu)
    params = _random_init(model)
    tokens = np.asarray(prompt_tokens(jax.tree.map(lambda a: a[0], _prompts(1))))
    p = {k: np.asarray(v[0, 0]) for k, v in params["params"].items()}
    w_kq, w_pv = p["w_k"].T @ p["w_q"], p["w_p"] @ p["w_v"]
    n = TASK.n_context
    want = tokens.copy()
    for t in range(n + 1):
        attention = sum(np.outer(tokens[j], tokens[j]) for j in range(n)) @ w_kq @ tokens[t]
        ema = sum(mu ** (t - j) * tokens[j] for j in range(min(t, n)))
        want[t] = tokens[t] + w_pv @ (attention + ema)
    got = model.apply(params, jnp.asarray(tokens), method=TokenMomentumLSA.trajectory)[-1]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.apply(params, jnp.asarray(tokens)), -want[-1, -1:], atol=1e-12)


def test_learned_momentum_params_and_their_range():
    tokens = jnp.zeros((TASK.n_context + 1, TASK.token_dim))
    token = TokenMomentumLSA(d=TASK.d, num_layers=2, momentum_init=0.2)
    params = token.init(jax.random.key(0), tokens)
    assert set(params["params"]) == {"w_q", "w_k", "w_v", "w_p", "mu_logit"}
    assert float(learned_scalars(token, params)["mu"]) == pytest.approx(0.2)
    for logit in (-50.0, 50.0):
        params["params"]["mu_logit"] = jnp.asarray(logit)
        assert 0.0 <= float(learned_scalars(token, params)["mu"]) <= 1.0
    depth = DepthMomentumLSA(d=TASK.d, num_layers=2, momentum_init=0.25)
    depth_params = depth.init(jax.random.key(0), tokens)
    learned = depth_params["params"]
    assert "beta" in learned
    assert learned_scalars(depth, depth_params) == {"beta": pytest.approx(0.25)}
    plain_model = LSATransformer(d=TASK.d, num_layers=2)
    assert learned_scalars(plain_model, plain_model.init(jax.random.key(0), tokens)) == {}
    # Fixed momentum: no extra parameter, so the init pytree is the plain model's.
    fixed = _init_structure(DepthMomentumLSA(d=TASK.d, num_layers=2, momentum=0.3))
    plain = LSATransformer(d=TASK.d, num_layers=2).init(jax.random.key(0), tokens)
    assert jax.tree.structure(fixed) == jax.tree.structure(plain)
    # Same key, same attention init: momentum and plain runs are paired.
    for name in ("w_q", "w_k", "w_v", "w_p"):
        np.testing.assert_array_equal(learned[name], plain["params"][name])


def test_momentum_decay_is_causal_powers():
    decay = np.asarray(momentum_decay(jnp.asarray(0.5), 4, 3))
    want = np.array([[0, 0, 0], [0.5, 0, 0], [0.25, 0.5, 0], [0.125, 0.25, 0.5]])
    np.testing.assert_allclose(decay, want)


def test_depth_momentum_with_beta_zero_is_plain_lsa_stack():
    plain = LSATransformer(d=TASK.d, num_layers=4)
    depth = DepthMomentumLSA(d=TASK.d, num_layers=4, momentum=0.0)
    params = _random_init(plain, scale=0.2)
    tokens = jax.vmap(prompt_tokens)(_prompts(32))
    want = _batch_apply(plain, params, tokens)
    np.testing.assert_allclose(_batch_apply(depth, params, tokens), want)
    np.testing.assert_allclose(
        depth.apply(params, tokens[0], method=DepthMomentumLSA.trajectory),
        plain.apply(params, tokens[0], method=LSATransformer.trajectory),
        atol=1e-6,
    )
    moving = DepthMomentumLSA(d=TASK.d, num_layers=4, momentum=0.5)
    moved = _batch_apply(moving, params, tokens)
    assert float(jnp.max(jnp.abs(moved - want))) > 1e-3


def _heavy_ball_case(num_layers, seed, w0_scale):
    rng = np.random.default_rng(seed)
    etas = rng.uniform(0.5, 4.0, num_layers)
    beta = float(rng.uniform(0.1, 0.8))
    w0 = jnp.asarray(w0_scale * rng.normal(size=(TASK.d_y, TASK.d)))
    return etas, beta, w0


@pytest.mark.parametrize("num_layers", range(1, 11))
def test_heavy_ball_construction_float64(x64, num_layers):
    model = DepthMomentumLSA(d=TASK.d, num_layers=num_layers)
    etas, beta, w0 = _heavy_ball_case(num_layers, num_layers, 1.0)
    params = heavy_ball_weights(model, etas, beta, TASK.n_context, w0)
    assert jax.tree.structure(params) == jax.tree.structure(_init_structure(model))
    prompts = _prompts(64, seed=num_layers)
    tokens = jax.vmap(prompt_tokens, in_axes=(0, None))(prompts, w0)
    built = _batch_apply(model, params, tokens)
    explicit = jax.vmap(heavy_ball(etas, beta, w0))(prompts)
    assert built.dtype == jnp.float64
    assert float(jnp.max(jnp.abs(built - explicit))) <= 1e-12
    # Momentum matters at K >= 2, so the comparison can fail: plain GD differs.
    if num_layers >= 2:
        plain = jax.vmap(gd(etas, w0))(prompts)
        assert float(jnp.max(jnp.abs(built - plain))) > 1e-3


def test_heavy_ball_construction_float32():
    errors = []
    for num_layers in (1, 5, 10):
        model = DepthMomentumLSA(d=TASK.d, num_layers=num_layers)
        etas, beta, _ = _heavy_ball_case(num_layers, num_layers, 0.0)
        params = heavy_ball_weights(model, etas, beta, TASK.n_context)
        prompts = _prompts(256, seed=num_layers)
        built = _batch_apply(model, params, jax.vmap(prompt_tokens)(prompts))
        explicit = jax.vmap(heavy_ball(etas, beta))(prompts)
        errors.append(float(jnp.max(jnp.abs(built - explicit))))
    assert max(errors) <= 1e-5, errors


def test_heavy_ball_weights_validate():
    model = DepthMomentumLSA(d=TASK.d, num_layers=3)
    with pytest.raises(ValueError, match="one β"):
        heavy_ball_weights(model, 1.0, [0.1, 0.2, 0.3], TASK.n_context)
    fixed = DepthMomentumLSA(d=TASK.d, num_layers=3, momentum=0.5)
    with pytest.raises(ValueError, match="fixes β"):
        heavy_ball_weights(fixed, 1.0, 0.2, TASK.n_context)
    assert "beta" not in heavy_ball_weights(fixed, 1.0, 0.5, TASK.n_context)["params"]


def test_heavy_ball_with_beta_zero_is_gd(x64):
    prompts = _prompts(16)
    etas = jnp.asarray([3.0, 1.5, 4.0])
    hb = jax.vmap(heavy_ball(etas, 0.0))(prompts)
    np.testing.assert_allclose(hb, jax.vmap(gd(etas))(prompts), rtol=0, atol=1e-13)


def _numpy_momentum_reference(x, y, x_q, etas, betas, nesterov):
    """Sutskever et al.'s velocity form, in numpy: v ← βv − η∇L(w + βv) (Nesterov) or
    v ← βv − η∇L(w) (heavy ball), w ← w + v; independent of `icl_toy.core.learners`."""
    x, y, x_q = (np.asarray(a, dtype=np.float64) for a in (x, y, x_q))
    n = x.shape[0]
    w = np.zeros((y.shape[1], x.shape[1]))
    v = np.zeros_like(w)
    for eta, beta in zip(etas, betas, strict=True):
        at = w + beta * v if nesterov else w
        grad = (x @ at.T - y).T @ x / n
        v = beta * v - eta * grad
        w = w + v
    return w @ x_q


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_learners_match_a_numpy_reference(x64, nesterov):
    prompts = _prompts(8, task=TaskConfig(d=5, n_context=12, d_y=2))
    etas, betas = [2.0, 1.0, 3.0, 2.5], [0.9, 0.5, 0.3, 0.7]
    learner = learners.nesterov if nesterov else learners.heavy_ball
    predict = learner(jnp.asarray(etas), jnp.asarray(betas))
    for i in range(8):
        got = predict(jax.tree.map(lambda a, i=i: a[i], prompts))
        want = _numpy_momentum_reference(
            prompts.x[i], prompts.y[i], prompts.x_q[i], etas, betas, nesterov
        )
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12)
    # Nesterov and heavy ball differ from K = 2 on, so the reference tells them apart.
    other = _numpy_momentum_reference(
        prompts.x[0], prompts.y[0], prompts.x_q[0], etas, betas, not nesterov
    )
    got = predict(jax.tree.map(lambda a: a[0], prompts))
    assert np.max(np.abs(np.asarray(got) - other)) > 1e-6


def test_tuned_constant_heavy_ball_beats_its_start():
    predict = constant_step_learner(heavy_ball_learner, 3)
    fit = fit_learner(
        predict,
        {"eta": 2.0, "beta": 0.0},
        TASK,
        key=jax.random.key(0),
        steps=150,
        batch_size=256,
        learning_rate=0.05,
    )
    assert fit.theta["eta"].shape == (1,) and fit.theta["beta"].shape == (1,)
    assert np.mean(fit.loss[0, -20:]) < 0.9 * np.mean(fit.loss[0, :5])
    with pytest.raises(ValueError, match="num_steps"):
        constant_step_learner(heavy_ball_learner, 0)


def test_every_matrix_product_asks_for_full_float32_precision():
    """As tests/test_models.py, for the momentum models and learners (TF32 breaks exactness)."""
    prompt = jax.tree.map(lambda a: a[0], _prompts(1))
    tokens = prompt_tokens(prompt)
    programs = []
    for model in (
        CausalLSATransformer(d=TASK.d, num_layers=2),
        TokenMomentumLSA(d=TASK.d, num_layers=2),
        DepthMomentumLSA(d=TASK.d, num_layers=2),
    ):
        params = model.init(jax.random.key(0), tokens)
        programs.append(
            jax.make_jaxpr(jax.grad(lambda p, m=model: m.apply(p, tokens).sum()))(params)
        )
    for learner in (heavy_ball, nesterov):
        programs.append(jax.make_jaxpr(lambda f=learner: f(jnp.ones(2), 0.5)(prompt))())

    found = [eqn for program in programs for eqn in matrix_products(program)]
    assert len(found) > 10
    assert not products_below_full_precision(found), products_below_full_precision(found)[0]
