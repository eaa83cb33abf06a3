"""Linear self-attention (LSA): the attention products, the layer, the stack, `LSATransformer`.

The conventions of tokens, weights and readout are those of `icl_toy.core.models`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from icl_toy.core.linalg import einsum

# Projections are (..., out, in): fan-in is the last axis, leading axes are layers/heads.
PARAM_NAMES = ("w_q", "w_k", "w_v", "w_p")


def _fan_in_init(scale: float, num_batch_axes: int):
    """von Oswald et al.'s init: truncated normal, variance scale/fan_in (Haiku's fan-in)."""
    return jax.nn.initializers.variance_scaling(
        scale,
        "fan_in",
        "truncated_normal",
        in_axis=-1,
        out_axis=-2,
        batch_axis=tuple(range(num_batch_axes)),
    )


def attention_products(layer_params: dict) -> tuple[jax.Array, jax.Array]:
    """(W_KQ, W_PV) per head, each (..., H, E, E): W_KQ = W_Kᵀ W_Q, W_PV = P W_V."""
    w_kq = einsum("...hke,...hkf->...hef", layer_params["w_k"], layer_params["w_q"])
    w_pv = einsum("...hek,...hkf->...hef", layer_params["w_p"], layer_params["w_v"])
    return w_kq, w_pv


def attention_param_shapes(
    num_heads: int, key_size: int, token_dim: int, lead: tuple[int, ...] = ()
) -> dict[str, tuple[int, ...]]:
    """Shapes of `w_q`, `w_k`, `w_v` (…, H, k, E) and `w_p` (…, H, E, k), after `lead` axes."""
    qkv = (*lead, num_heads, key_size, token_dim)
    return {"w_q": qkv, "w_k": qkv, "w_v": qkv, "w_p": (*lead, num_heads, token_dim, key_size)}


def _declare_attention_params(module: nn.Module, num_heads, key_size, token_dim, init_scale):
    """One attention layer's params, declared on `module` (inside its compact call)."""
    init = _fan_in_init(init_scale, 1)
    shapes = attention_param_shapes(
        num_heads, token_dim if key_size is None else key_size, token_dim
    )
    return {name: module.param(name, init, shape) for name, shape in shapes.items()}


def lsa_update(
    w_kq_HxExE: jax.Array, w_pv_HxExE: jax.Array, queries_QxE: jax.Array, keys_NxE: jax.Array
) -> jax.Array:
    """The linear self-attention update of each query token, (Q, E).

    Δe_j = Σ_h W_PV,h Σ_i e_i e_iᵀ W_KQ,h e_j   (von Oswald et al., arXiv 2212.07677)

    with keys = values = `keys_NxE`. Both contraction orders are exact; the cheaper one is
    taken from the shapes. Attention order (W_KQ e_j, the scores e_iᵀ(·), the weighted sum of
    keys) costs 2·H·Q·N·E beyond the W_KQ products; forming the second moment Σ_i e_i e_iᵀ
    once per prompt costs N·E² + H·Q·E². With few queries (the query-only last layer) or a
    short context, attention order wins; for all-token layers at N ≫ E the moment order
    (about 3× faster per training step at N = 100 on a CPU).
    """
    num_heads, num_queries, (num_keys, token_dim) = (
        w_kq_HxExE.shape[0],
        queries_QxE.shape[0],
        keys_NxE.shape,
    )
    u_HxQxE = einsum("hab,qb->hqa", w_kq_HxExE, queries_QxE)
    attention_cost = 2 * num_heads * num_queries * num_keys
    moment_cost = (num_keys + num_heads * num_queries) * token_dim
    if moment_cost < attention_cost:
        moment_ExE = einsum("ne,nf->ef", keys_NxE, keys_NxE)
        mixed_HxQxE = einsum("ef,hqf->hqe", moment_ExE, u_HxQxE)
    else:
        scores_HxQxN = einsum("ne,hqe->hqn", keys_NxE, u_HxQxE)
        mixed_HxQxE = einsum("hqn,ne->hqe", scores_HxQxN, keys_NxE)
    return einsum("hae,hqe->qa", w_pv_HxExE, mixed_HxQxE)


def lsa_layer(
    w_kq_HxExE: jax.Array,
    w_pv_HxExE: jax.Array,
    tokens_TxE: jax.Array,
    n_keys: int,
    rows: slice = slice(None),
) -> jax.Array:
    """One residual LSA layer at the tokens `rows`, keys/values = the first `n_keys` tokens, (R, E).

    The model uses n_keys = N (the query is not a key); n_keys = T shows the pitfall.
    """
    queries_RxE = tokens_TxE[rows]
    return queries_RxE + lsa_update(w_kq_HxExE, w_pv_HxExE, queries_RxE, tokens_TxE[:n_keys])


# `layer(l, tokens_TxE, rows, carry) -> (tokens after layer l at `rows` (R, E), carry)`: one
# layer of a residual stack; `carry` is what layer l passes to layer l + 1 (e.g. a velocity).
LayerRule = Callable[[int, jax.Array, slice, object], tuple[jax.Array, object]]


def residual_layers(
    layer: LayerRule,
    num_layers: int,
    tokens_TxE: jax.Array,
    carry: object = None,
    *,
    query_only: bool = False,
) -> list[jax.Array]:
    """Tokens before and after each of L layers, [e⁰ (T, E), e¹, …, e^L].

    With `query_only` the last layer updates only the query, since no later layer reads the
    context: e^L is then the query token alone, (1, E), and the model reads ŷ from it.
    """
    trajectory = [tokens_TxE]
    for layer_index in range(num_layers):
        last = layer_index == num_layers - 1
        rows = slice(-1, None) if query_only and last else slice(None)
        tokens, carry = layer(layer_index, trajectory[-1], rows, carry)
        trajectory.append(tokens)
    return trajectory


def _lsa_rule(w_kq_LxHxExE: jax.Array, w_pv_LxHxExE: jax.Array, n_keys: int) -> LayerRule:
    """The plain LSA layer as a `LayerRule`: layer l uses (W_KQ, W_PV)[l], no carry."""

    def layer(layer_index, tokens_TxE, rows, carry):
        w_kq, w_pv = w_kq_LxHxExE[layer_index], w_pv_LxHxExE[layer_index]
        return lsa_layer(w_kq, w_pv, tokens_TxE, n_keys, rows), carry

    return layer


def lsa_stack(
    w_kq_LxHxExE: jax.Array, w_pv_LxHxExE: jax.Array, tokens_TxE: jax.Array, n_keys: int
) -> jax.Array:
    """Tokens after each of L residual LSA layers, (L + 1, T, E); entry 0 is the input."""
    rule = _lsa_rule(w_kq_LxHxExE, w_pv_LxHxExE, n_keys)
    return jnp.stack(residual_layers(rule, len(w_kq_LxHxExE), tokens_TxE))


def lsa_query_output(
    w_kq_LxHxExE: jax.Array, w_pv_LxHxExE: jax.Array, tokens_TxE: jax.Array
) -> jax.Array:
    """The query token after L layers, (E,): equal to `lsa_stack(...)[-1, -1]` with n_keys = T − 1
    (`residual_layers` with `query_only`)."""
    rule = _lsa_rule(w_kq_LxHxExE, w_pv_LxHxExE, tokens_TxE.shape[0] - 1)
    return residual_layers(rule, len(w_kq_LxHxExE), tokens_TxE, query_only=True)[-1][0]


def iterate_layer(
    w_kq_HxExE: jax.Array,
    w_pv_HxExE: jax.Array,
    tokens_TxE: jax.Array,
    num_iterations: int,
    damping: float = 1.0,
) -> jax.Array:
    """One LSA layer applied `num_iterations` times with its update scaled by `damping`.

    e ← e + λ Δe (λ = damping), i.e. W_PV ← λ W_PV; returns the trajectory (L + 1, T, E).
    von Oswald et al. iterate a trained layer 50 times with λ = 0.75; on the GD construction
    this is GD with step λη (and GD++ with (λη, λγ)).
    """
    n_keys = tokens_TxE.shape[0] - 1

    def step(tokens, _):
        tokens = lsa_layer(w_kq_HxExE, damping * w_pv_HxExE, tokens, n_keys)
        return tokens, tokens

    _, iterates_LxTxE = jax.lax.scan(step, tokens_TxE, None, length=num_iterations)
    return jnp.concatenate([tokens_TxE[None], iterates_LxTxE])


def readout(tokens_TxE: jax.Array, d_y: int) -> jax.Array:
    """ŷ = −(y-slot of the query token), (Y,)."""
    return -tokens_TxE[-1, -d_y:]


class LSATransformer(nn.Module):
    """K residual linear self-attention layers, per-layer or shared (recurrent) weights.

    Params (column form): `w_q`, `w_k`, `w_v` of shape (K, H, k, E) and `w_p` of shape
    (K, H, E, k); with `shared_weights` the leading K axis is absent and the one layer is
    applied K times. `__call__` maps one prompt's tokens (T, E) to ŷ (Y,); vmap for batches.
    """

    d: int  # input dimension
    d_y: int = 1  # output dimension
    num_layers: int = 1  # K
    num_heads: int = 1  # H
    key_size: int | None = None  # k; None means E = d + d_y
    shared_weights: bool = False  # one layer applied K times (a recurrent transformer)
    init_scale: float = 0.002  # variance scale of the fan-in init, divided by K
    # The fan-in init, then the GD construction's zero blocks: W_Q[:, d:] = W_K[:, d:] = 0
    # (queries and keys read only x) and W_V[:, :d] = 0 (values read only y), as in Zhang,
    # Frei & Bartlett (arXiv 2306.09927). All entries are trained; the pytree is the same.
    gd_sparsity: bool = False

    @property
    def token_dim(self) -> int:
        return self.d + self.d_y

    @property
    def head_size(self) -> int:
        return self.token_dim if self.key_size is None else self.key_size

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each parameter leaf."""
        lead = () if self.shared_weights else (self.num_layers,)
        return attention_param_shapes(self.num_heads, self.head_size, self.token_dim, lead)

    def setup(self):
        shapes = self.param_shapes()
        fan_in = _fan_in_init(self.init_scale / self.num_layers, len(shapes["w_q"]) - 2)
        d = self.d

        def init(name):
            def masked(key, shape, *dtype):  # the fan-in init's own default dtype
                w = fan_in(key, shape, *dtype)
                if not self.gd_sparsity:
                    return w
                if name in ("w_q", "w_k"):
                    return w.at[..., d:].set(0.0)
                return w.at[..., :d].set(0.0) if name == "w_v" else w

            return masked

        self.weights = {name: self.param(name, init(name), shapes[name]) for name in PARAM_NAMES}

    def layer_products(self) -> tuple[jax.Array, jax.Array]:
        """(W_KQ, W_PV) of every layer, each (K, H, E, E)."""
        w_kq, w_pv = attention_products(self.weights)
        if self.shared_weights:
            w_kq = jnp.broadcast_to(w_kq, (self.num_layers, *w_kq.shape))
            w_pv = jnp.broadcast_to(w_pv, (self.num_layers, *w_pv.shape))
        return w_kq, w_pv

    def layer(
        self,
        layer_index: int,
        w_kq_HxExE: jax.Array,
        w_pv_HxExE: jax.Array,
        tokens_TxE: jax.Array,
        rows: slice,
        carry: object,
    ) -> tuple[jax.Array, object]:
        """Layer `layer_index` at the tokens `rows`, (R, E), and the carry for the next layer.

        The model's per-layer update rule (a `LayerRule` given the layer's W_KQ, W_PV); keys
        and values are the context tokens. A variant overrides `layer` (and `initial_carry`),
        and `trajectory` and `__call__` follow. Here: the plain residual LSA layer.
        """
        n_keys = tokens_TxE.shape[0] - 1
        return lsa_layer(w_kq_HxExE, w_pv_HxExE, tokens_TxE, n_keys, rows), carry

    def initial_carry(self, tokens_TxE: jax.Array) -> object:
        """The carry layer 0 receives; the plain LSA carries nothing."""
        return None

    def layers(self, tokens_TxE: jax.Array, *, query_only: bool) -> list[jax.Array]:
        """`residual_layers` of this model's update rule on one prompt's tokens (T, E)."""
        w_kq, w_pv = self.layer_products()

        def rule(index, tokens, rows, carry):
            return self.layer(index, w_kq[index], w_pv[index], tokens, rows, carry)

        carry = self.initial_carry(tokens_TxE)
        return residual_layers(rule, self.num_layers, tokens_TxE, carry, query_only=query_only)

    def trajectory(self, tokens_TxE: jax.Array) -> jax.Array:
        """Tokens after each layer, (K + 1, T, E)."""
        return jnp.stack(self.layers(tokens_TxE, query_only=False))

    def layer_predictions(self, tokens_TxE: jax.Array) -> jax.Array:
        """ŷ read out after each layer, (K + 1, Y); entry 0 is the input (−W0 x_q)."""
        return -self.trajectory(tokens_TxE)[:, -1, -self.d_y :]

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        return readout(self.layers(tokens_TxE, query_only=True)[-1], self.d_y)
