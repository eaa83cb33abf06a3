"""Tests of the softmax transformer builder, its residual stream, and the probes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis.probes import (
    PROBE_KINDS,
    TARGETS,
    ProbeConfig,
    linear_probe_r2,
    mlp_probe_r2,
    probe_model,
    probe_targets,
)
from icl_toy.core.linalg import matrix_products, products_below_full_precision
from icl_toy.core.models import (
    EmbeddedTransformer,
    MLPBlock,
    PreNorm,
    SoftmaxSelfAttention,
    Transformer,
    softmax_transformer,
)
from icl_toy.core.tasks import TaskConfig, sample_batch

# --- models: residual stream and the softmax transformer builder ------------------------------


def test_residual_stream_is_the_blocks_applied_in_turn(x64):
    tokens = jax.random.normal(jax.random.key(1), (7, 6))
    blocks = (SoftmaxSelfAttention(num_heads=2, key_size=3), nn.LayerNorm(), MLPBlock(8))
    model = Transformer(blocks, d_y=1)
    params = model.init(jax.random.key(0), tokens)
    stream = model.apply(params, tokens, method=model.residual_stream)
    assert stream.shape == (4, 7, 6)
    np.testing.assert_array_equal(stream[0], tokens)
    # Block l alone, applied to entry l − 1 of the stream, gives entry l.
    for l, block in enumerate(blocks, start=1):
        got = block.apply({"params": params["params"][f"blocks_{l - 1}"]}, stream[l - 1])
        np.testing.assert_allclose(stream[l], got, rtol=0, atol=1e-12)
    # The prediction is −(query y-slot) of the last entry.
    np.testing.assert_allclose(model.apply(params, tokens), -stream[-1, -1, -1:], atol=1e-12)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_softmax_transformer_stream_shapes_and_readout(x64, layer_norm):
    model = softmax_transformer(1, 3, 2, 16, embed_dim=8, layer_norm=layer_norm)
    assert isinstance(model, EmbeddedTransformer) and len(model.blocks) == 3
    tokens = jax.random.normal(jax.random.key(1), (5, 4))
    params = model.init(jax.random.key(0), tokens)
    stream = model.apply(params, tokens, method=model.residual_stream)
    assert stream.shape == (4, 5, 8)
    embed, unembed = params["params"]["embed"], params["params"]["unembed"]
    # Entry 0 is the embedding W_in e + b_in; ŷ is W_out (last entry's query) + b_out.
    embedded = tokens @ embed["kernel"] + embed["bias"][None]
    np.testing.assert_allclose(stream[0], embedded, rtol=0, atol=1e-12)
    expected = stream[-1, -1] @ unembed["kernel"] + unembed["bias"]
    np.testing.assert_allclose(model.apply(params, tokens), expected, atol=1e-12)
    # One block per layer: attention and MLP, each in a PreNorm (with its LayerNorm) or bare.
    layer_params = params["params"]["blocks_0"]
    assert len(layer_params) == 2
    assert ("LayerNorm_0" in layer_params["layers_1"]) == layer_norm


def test_pre_norm_mlp_matches_the_formula(x64):
    """PreNorm(MLPBlock): e + W₂ gelu(W₁ LN(e) + b₁) + b₂, LN over the token width."""
    block = PreNorm(MLPBlock(6))
    tokens = jax.random.normal(jax.random.key(1), (3, 4))
    params = block.init(jax.random.key(0), tokens)["params"]
    params = jax.tree.map(lambda a: a + 0.1, params)  # LN scale 1.1, bias 0.1: not the identity
    mean = tokens.mean(-1, keepdims=True)
    var = ((tokens - mean) ** 2).mean(-1, keepdims=True)
    norm = params["LayerNorm_0"]
    normed = (tokens - mean) / np.sqrt(var + 1e-6) * norm["scale"][None] + norm["bias"][None]
    d0, d1 = params["inner"]["Dense_0"], params["inner"]["Dense_1"]
    hidden = jax.nn.gelu(normed @ d0["kernel"] + d0["bias"][None])
    expected = tokens + hidden @ d1["kernel"] + d1["bias"][None]
    got = block.apply({"params": params}, tokens)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_softmax_transformer_is_a_set_function_that_never_reads_the_query(x64):
    """Keys and values come from the context: permuting it leaves ŷ unchanged, and moving
    the query changes no context token at any depth."""
    model = softmax_transformer(1, 2, 2, 16, embed_dim=8)
    tokens = jax.random.normal(jax.random.key(1), (9, 5))
    params = model.init(jax.random.key(0), tokens)
    permuted = jnp.concatenate([tokens[:-1][::-1], tokens[-1:]])
    y_hat = model.apply(params, tokens)
    np.testing.assert_allclose(model.apply(params, permuted), y_hat, rtol=0, atol=1e-12)
    moved = tokens.at[-1].add(2.0)
    stream = model.apply(params, tokens, method=model.residual_stream)
    stream_moved = model.apply(params, moved, method=model.residual_stream)
    np.testing.assert_array_equal(stream[:, :-1], stream_moved[:, :-1])
    assert not np.allclose(stream[-1, -1], stream_moved[-1, -1])


def test_softmax_transformer_rejects_bad_sizes():
    with pytest.raises(ValueError, match="depth"):
        softmax_transformer(1, 0)
    with pytest.raises(ValueError, match="embed_dim"):
        softmax_transformer(1, 1, embed_dim=0)
    with pytest.raises(ValueError, match="key_size"):
        softmax_transformer(1, 1, num_heads=4, embed_dim=2)


def test_softmax_transformer_products_at_full_precision():
    model = softmax_transformer(1, 2, 2, 16, embed_dim=8)
    tokens = jnp.ones((5, 4))
    params = model.init(jax.random.key(0), tokens)
    programs = [
        jax.make_jaxpr(jax.grad(lambda p: model.apply(p, tokens).sum()))(params),
        jax.make_jaxpr(lambda p: model.apply(p, tokens, method=model.residual_stream))(params),
    ]
    found = [eqn for program in programs for eqn in matrix_products(program)]
    assert len(found) > 10
    assert not products_below_full_precision(found), products_below_full_precision(found)[0]


# --- probes ------------------------------------------------------------------------------------


def _normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def test_probe_targets_match_numpy(x64):
    task = TaskConfig(d=4, n_context=6, inputs="gaussian", noise_std=0.3)
    prompts = sample_batch(jax.random.key(0), task, 5)
    targets = probe_targets(prompts)
    x, y = np.asarray(prompts.x), np.asarray(prompts.y[..., 0])
    for b in range(5):
        np.testing.assert_allclose(targets["xty"][b], x[b].T @ y[b], rtol=0, atol=1e-12)
        ols = np.linalg.lstsq(x[b], y[b], rcond=None)[0]
        np.testing.assert_allclose(targets["w_ols"][b], ols, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(targets["w"], prompts.w[:, 0])
    # With noise and N > d, OLS is not the teacher.
    assert not np.allclose(targets["w_ols"], targets["w"], atol=1e-3)


def test_linear_probe_recovers_a_linear_target_and_not_noise():
    f_train, f_test = _normal(0, (1000, 16)), _normal(1, (1000, 16))
    a_FxK, c_K = _normal(2, (16, 3)), _normal(3, (3,))

    def target(f):
        return f @ a_FxK + c_K[None]

    r2 = linear_probe_r2(f_train, target(f_train), f_test, target(f_test), ridge=1e-3)
    assert r2 > 0.999, f"an exact linear target must be decoded, got R² = {r2}"
    noise_train, noise_test = _normal(4, (1000, 3)), _normal(5, (1000, 3))
    r2_noise = linear_probe_r2(f_train, noise_train, f_test, noise_test, ridge=1e-3)
    assert abs(r2_noise) < 0.05, f"independent noise must give R² ≈ 0, got {r2_noise}"


def test_probes_are_scored_on_held_out_prompts():
    """100 noise features for 120 training rows: perfect in-sample, badly negative held out."""
    f_train, f_test = _normal(0, (120, 100)), _normal(1, (120, 100))
    t_train, t_test = _normal(2, (120, 2)), _normal(3, (120, 2))
    in_sample = linear_probe_r2(f_train, t_train, f_train, t_train, ridge=0.0)
    held_out = linear_probe_r2(f_train, t_train, f_test, t_test, ridge=0.0)
    assert in_sample > 0.7 and held_out < -0.5, (in_sample, held_out)


def test_mlp_probe_decodes_a_nonlinear_target_that_a_linear_probe_cannot():
    f_train, f_test = _normal(0, (1000, 6)), _normal(1, (1000, 6))

    def target(f):  # products and squares: uncorrelated with every linear function of f
        return jnp.stack([f[:, 0] * f[:, 1], f[:, 2] ** 2], axis=1)

    cfg = ProbeConfig(mlp_hidden=32, mlp_steps=300)
    linear = linear_probe_r2(f_train, target(f_train), f_test, target(f_test), ridge=1e-2)
    mlp = jax.jit(mlp_probe_r2, static_argnames="cfg")(
        jax.random.key(7), f_train, target(f_train), f_test, target(f_test), cfg=cfg
    )
    assert linear < 0.05 and mlp > 0.8, (linear, mlp)


class _MomentStream(nn.Module):
    """A fixed 'model' whose stream is [query token, query token with Xᵀy/N written in]."""

    @nn.compact
    def residual_stream(self, tokens_TxE):
        scale = self.param("scale", nn.initializers.ones, ())
        x_NxD, y_N = tokens_TxE[:-1, :-1], tokens_TxE[:-1, -1]
        query = tokens_TxE[-1]
        moment = scale * (x_NxD.T @ y_N) / x_NxD.shape[0]
        layer_1 = jnp.concatenate([query, moment])
        return jnp.stack([jnp.concatenate([query, jnp.zeros_like(moment)]), layer_1])[:, None]


def test_probe_model_finds_the_moment_where_the_stream_holds_it():
    model = _MomentStream()
    task = TaskConfig(d=4, n_context=8, inputs="gaussian")
    train_prompts = sample_batch(jax.random.key(0), task, 400)
    test_prompts = sample_batch(jax.random.key(1), task, 400)
    params = model.init(jax.random.key(0), jnp.zeros((9, 5)), method=model.residual_stream)
    params_S = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)  # two "seeds"
    cfg = ProbeConfig(mlp_steps=10)  # only the linear probes are checked here
    r2 = probe_model(model, params_S, train_prompts, test_prompts, key=jax.random.key(2), cfg=cfg)
    assert set(r2) == set(PROBE_KINDS) and set(r2["linear"]) == set(TARGETS)
    linear = {name: np.asarray(v) for name, v in r2["linear"].items()}
    assert linear["xty"].shape == (2, 2)
    # Layer 0 holds only x_q, independent of w and of the context: nothing to decode.
    for name in TARGETS:
        assert np.all(np.abs(linear[name][:, 0]) < 0.05), (name, linear[name])
    # Layer 1 holds Xᵀy/N exactly: a linear probe decodes it; w (= w_OLS here) only partly.
    assert np.all(linear["xty"][:, 1] > 0.999), linear["xty"]
    assert np.all(linear["w"][:, 1] < 0.95) and np.all(linear["w"][:, 1] > 0.3), linear["w"]
    np.testing.assert_allclose(linear["w_ols"], linear["w"], atol=1e-4)  # noiseless, N > d


def test_probe_config_rejects_bad_values():
    with pytest.raises(ValueError, match="ridge"):
        ProbeConfig(ridge=-1.0)
    with pytest.raises(ValueError, match="mlp_steps"):
        ProbeConfig(mlp_steps=0)
    with pytest.raises(ValueError, match="pool"):
        ProbeConfig(pool="mean")
