"""Tests of the softmax transformer builder, its residual stream, and the probes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.linalg import matrix_products, products_below_full_precision
from icl_toy.models import (
    EmbeddedTransformer,
    MLPBlock,
    PreNorm,
    SoftmaxSelfAttention,
    Transformer,
    softmax_transformer,
)

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
