import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.linalg import matrix_products, products_below_full_precision
from icl_toy.core.models import (
    LinearSelfAttention,
    LSATransformer,
    MLPBlock,
    SoftmaxSelfAttention,
    Transformer,
    attention_products,
    lsa_layer,
    lsa_query_output,
    lsa_stack,
)


def _random_layer(key, h, k, e, scale=0.3):
    keys = jax.random.split(key, 4)
    shapes = {"w_q": (h, k, e), "w_k": (h, k, e), "w_v": (h, k, e), "w_p": (h, e, k)}
    return {
        n: scale * jax.random.normal(kk, s) for kk, (n, s) in zip(keys, shapes.items(), strict=True)
    }


def _reference_lsa_layer(layer, tokens, n_keys):
    """Independent numpy loop over heads, tokens j and keys i of docs/theory.md §1's LSA layer."""
    layer = {k: np.asarray(v, dtype=np.float64) for k, v in layer.items()}
    tokens = np.asarray(tokens, dtype=np.float64)
    out = tokens.copy()
    for h in range(layer["w_q"].shape[0]):
        for j in range(tokens.shape[0]):
            q = layer["w_q"][h] @ tokens[j]
            acc = np.zeros(layer["w_v"].shape[1])
            for i in range(n_keys):
                acc += (layer["w_v"][h] @ tokens[i]) * ((layer["w_k"][h] @ tokens[i]) @ q)
            out[j] += layer["w_p"][h] @ acc
    return out


# 11 tokens with one head contract in attention order, 41 tokens (or 11 with 2 or 3 heads)
# through the keys' second moment: both orders are held to the same independent loop.
@pytest.mark.parametrize("num_tokens", [11, 41])
@pytest.mark.parametrize(("heads", "key_size"), [(1, 11), (2, 4), (3, 16)])
def test_lsa_layer_matches_explicit_attention_sum(x64, heads, key_size, num_tokens):
    layer = _random_layer(jax.random.key(0), heads, key_size, 11)
    tokens = jax.random.normal(jax.random.key(1), (num_tokens, 11))
    w_kq, w_pv = attention_products(layer)
    n_keys = num_tokens - 1
    got = lsa_layer(w_kq, w_pv, tokens, n_keys=n_keys)
    want = _reference_lsa_layer(layer, tokens, n_keys)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * num_tokens)


def test_query_never_enters_keys_or_values():
    model = LSATransformer(d=10, num_layers=3, init_scale=5.0)
    params = model.init(jax.random.key(0), jnp.zeros((11, 11)))
    tokens = jax.random.normal(jax.random.key(1), (11, 11))
    moved = tokens.at[-1].set(jax.random.normal(jax.random.key(2), (11,)))
    traj = model.apply(params, tokens, method=model.trajectory)
    traj_moved = model.apply(params, moved, method=model.trajectory)
    # Context tokens never see the query, at any depth.
    np.testing.assert_array_equal(traj[:, :-1], traj_moved[:, :-1])
    assert not np.allclose(traj[-1, -1], traj_moved[-1, -1])


def test_query_only_last_layer_equals_full_stack(x64):
    model = LSATransformer(d=8, d_y=2, num_layers=4, num_heads=2, init_scale=2.0)
    params = model.init(jax.random.key(0), jnp.zeros((6, 10)))
    tokens = jax.random.normal(jax.random.key(1), (6, 10))
    w_kq, w_pv = model.apply(params, method=model.layer_products)
    full = lsa_stack(w_kq, w_pv, tokens, n_keys=5)
    np.testing.assert_allclose(lsa_query_output(w_kq, w_pv, tokens), full[-1, -1], rtol=1e-12)
    np.testing.assert_allclose(model.apply(params, tokens), -full[-1, -1, -2:], rtol=1e-12)


def test_param_shapes_init_scale_and_sharing():
    model = LSATransformer(d=10, num_layers=4)
    params = model.init(jax.random.key(0), jnp.zeros((11, 11)))["params"]
    assert {k: v.shape for k, v in params.items()} == model.param_shapes()
    assert params["w_q"].shape == (4, 1, 11, 11) and params["w_p"].shape == (4, 1, 11, 11)
    # von Oswald et al.: fan-in truncated normal with variance 0.002 / (K * fan_in).
    std = np.std(np.concatenate([np.ravel(v) for v in params.values()]))
    assert std == pytest.approx(np.sqrt(0.002 / (4 * 11)), rel=0.1)

    shared = LSATransformer(d=10, num_layers=4, shared_weights=True)
    shared_params = shared.init(jax.random.key(0), jnp.zeros((11, 11)))
    assert shared_params["params"]["w_q"].shape == (1, 11, 11)
    # A shared layer applied K times equals K per-layer copies of it.
    stacked = jax.tree.map(lambda a: jnp.stack([a] * 4), shared_params)
    tokens = jax.random.normal(jax.random.key(1), (11, 11))
    np.testing.assert_allclose(shared.apply(shared_params, tokens), model.apply(stacked, tokens))


def test_transformer_composes_blocks():
    tokens = jax.random.normal(jax.random.key(1), (11, 11))
    single = Transformer((LinearSelfAttention(init_scale=2.0),), d_y=1)
    params = single.init(jax.random.key(0), tokens)
    lsa = LSATransformer(d=10, num_layers=1)
    as_stack = jax.tree.map(lambda a: a[None], {"params": params["params"]["blocks_0"]})
    np.testing.assert_allclose(single.apply(params, tokens), lsa.apply(as_stack, tokens), rtol=1e-6)

    mixed = Transformer(
        (SoftmaxSelfAttention(num_heads=2), nn.LayerNorm(), MLPBlock(32), LinearSelfAttention()),
        d_y=1,
    )
    mixed_params = mixed.init(jax.random.key(0), tokens)
    out = mixed.apply(mixed_params, tokens)
    assert out.shape == (1,) and bool(jnp.isfinite(out).all())


def test_softmax_attention_ignores_query_as_key(x64):
    block = SoftmaxSelfAttention(num_heads=2, key_size=5)
    tokens = jax.random.normal(jax.random.key(1), (11, 11))
    params = block.init(jax.random.key(0), tokens)
    moved = tokens.at[-1].add(3.0)
    out, out_moved = block.apply(params, tokens), block.apply(params, moved)
    np.testing.assert_array_equal(out[:-1], out_moved[:-1])
    # With W_Q = 0 the attention is uniform over the N context tokens (never the query).
    uniform = {"params": {**params["params"], "w_q": jnp.zeros_like(params["params"]["w_q"])}}
    w_pv = jnp.einsum("hek,hkf->ef", params["params"]["w_p"], params["params"]["w_v"])
    expected = tokens + (w_pv @ tokens[:-1].mean(axis=0))[None]
    np.testing.assert_allclose(block.apply(uniform, tokens), expected, atol=1e-12)


def test_every_matrix_product_asks_for_full_float32_precision():
    """GPUs default to TF32 products, which break float32 exactness (see icl_toy.core.linalg)."""
    from icl_toy.core.constructions import gd_weights
    from icl_toy.core.learners import gd, gdpp
    from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_task

    prompt = sample_task(jax.random.key(0), TaskConfig(d=10, n_context=10))
    model = LSATransformer(d=10, num_layers=2)
    params = gd_weights(model, 1.0, 10)
    mixed = Transformer((SoftmaxSelfAttention(), MLPBlock(8), LinearSelfAttention()), d_y=1)
    mixed_params = mixed.init(jax.random.key(0), prompt_tokens(prompt))
    programs = [
        jax.make_jaxpr(jax.grad(lambda p: model.apply(p, prompt_tokens(prompt)).sum()))(params),
        jax.make_jaxpr(lambda p: mixed.apply(p, prompt_tokens(prompt)))(mixed_params),
        jax.make_jaxpr(lambda: gd(jnp.ones(2))(prompt))(),
        jax.make_jaxpr(lambda: gdpp(1.0, 0.1)(prompt))(),
        jax.make_jaxpr(lambda k: sample_task(k, TaskConfig(d=3, n_context=2)))(jax.random.key(0)),
    ]

    found = [eqn for program in programs for eqn in matrix_products(program)]
    assert len(found) > 10
    assert not products_below_full_precision(found), products_below_full_precision(found)[0]


def test_precision_check_flags_a_default_precision_product():
    """The checker used above can fail: a plain `@` product is reported."""
    a = jnp.ones((3, 3))
    found = matrix_products(jax.make_jaxpr(jax.jit(lambda x: x @ x))(a))
    assert len(found) == 1
    assert products_below_full_precision(found) == found
