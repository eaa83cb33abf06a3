"""Standard token format: x_i and y_i as separate tokens, a softmax copy layer, then LSA.

docs/theory.md §1 (von Oswald et al., arXiv 2212.07677, Proposition 3). A prompt arrives as
S = 2N + 1 alternating tokens x_1, y_1, x_2, y_2, …, x_N, y_N, x_q. Token p has width
W = d + P + d_y, laid out (x-slot, one-hot position p, y-slot) with P = 2N + 1:

    x-token 2i:   (x_i, e_{2i},   0)
    y-token 2i+1: (0,   e_{2i+1}, y_i)
    query 2N:     (x_q, e_{2N},   0)

No LSA layer can compute GD on these tokens alone: GD needs Σ_i y_i x_i, a product of
entries of two different tokens, while an LSA update is bilinear within each key token. A
first softmax layer must bring each y_i next to its x_i; von Oswald et al. link this copy
to induction heads. `StandardTokenTransformer` is that 2-layer model (softmax, then LSA); it
takes the usual (N + 1, d + d_y) tokens of `icl_toy.core.tasks.prompt_tokens` and lays them out
itself, so `icl_toy.training.train.train` trains it unchanged.
The construction that copies and then steps is `icl_toy.core.constructions.copy_gd_weights`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from icl_toy.core.linalg import einsum
from icl_toy.core.models.lsa import PARAM_NAMES, LSATransformer, attention_param_shapes


def alternating_tokens(tokens_TxE: jax.Array, d: int) -> jax.Array:
    """The (2N + 1, d + P + d_y) alternating layout of one prompt's (N + 1, d + d_y) tokens.

    Rows: x_1, y_1, …, x_N, y_N, x_q, each (x-slot, one-hot position, y-slot); the query
    keeps the y-slot it had (0 for W0 = 0).
    """
    n = tokens_TxE.shape[0] - 1
    num_tokens = 2 * n + 1
    positions_SxP = jnp.eye(num_tokens, dtype=tokens_TxE.dtype)
    x_NxD, y_NxY = tokens_TxE[:-1, :d], tokens_TxE[:-1, d:]
    zeros_x, zeros_y = jnp.zeros_like(x_NxD), jnp.zeros_like(y_NxY)
    x_tokens = jnp.concatenate([x_NxD, positions_SxP[0:-1:2], zeros_y], axis=-1)
    y_tokens = jnp.concatenate([zeros_x, positions_SxP[1::2], y_NxY], axis=-1)
    pairs_2NxW = jnp.stack([x_tokens, y_tokens], axis=1).reshape(2 * n, -1)
    query_W = jnp.concatenate([tokens_TxE[-1, :d], positions_SxP[-1], tokens_TxE[-1, d:]])
    return jnp.concatenate([pairs_2NxW, query_W[None]], axis=0)


def softmax_attention_weights(layer_params: dict, tokens_SxW: jax.Array) -> jax.Array:
    """Attention weights (H, S, S) of every token over all S tokens, logits qᵀk/√k."""
    w_q, w_k = layer_params["w_q"], layer_params["w_k"]
    queries_HxSxK = einsum("hkw,sw->hsk", w_q, tokens_SxW)
    keys_HxSxK = einsum("hkw,sw->hsk", w_k, tokens_SxW)
    logits_HxSxS = einsum("hsk,htk->hst", queries_HxSxK, keys_HxSxK) / jnp.sqrt(w_q.shape[1])
    return jax.nn.softmax(logits_HxSxS, axis=-1)


def softmax_layer(layer_params: dict, tokens_SxW: jax.Array) -> jax.Array:
    """One residual softmax attention layer over all tokens, (S, W):

    e_p ← e_p + Σ_h P_h Σ_t A_h[p, t] W_V,h e_t,   A_h = softmax_t((W_Q,h e_p)ᵀ(W_K,h e_t)/√k).
    """
    weights_HxSxS = softmax_attention_weights(layer_params, tokens_SxW)
    values_HxSxK = einsum("hkw,sw->hsk", layer_params["w_v"], tokens_SxW)
    mixed_HxSxK = einsum("hst,htk->hsk", weights_HxSxS, values_HxSxK)
    return tokens_SxW + einsum("hwk,hsk->sw", layer_params["w_p"], mixed_HxSxK)


class SoftmaxAttentionParams(nn.Module):
    """One softmax attention layer's params, column form: w_q, w_k, w_v (H, k, W), w_p (H, W, k)."""

    num_heads: int
    key_size: int
    token_dim: int
    init_scale: float

    @nn.compact
    def __call__(self) -> dict:
        init = jax.nn.initializers.variance_scaling(
            self.init_scale, "fan_in", "truncated_normal", in_axis=-1, out_axis=-2, batch_axis=(0,)
        )
        shapes = attention_param_shapes(self.num_heads, self.key_size, self.token_dim)
        return {name: self.param(name, init, shapes[name]) for name in PARAM_NAMES}


class StandardTokenTransformer(nn.Module):
    """Softmax attention (layer 1), then one LSA layer (layer 2), on alternating tokens.

    Takes the usual (N + 1, d + d_y) prompt tokens, lays them out as 2N + 1 alternating
    tokens with one-hot positions (`alternating_tokens`) and reads ŷ = −(y-slot of the query).
    Params: {"copy": softmax layer (H, k, W) / (H, W, k), "lsa": `LSATransformer` params on
    tokens whose "x" block is (x-slot, position), width d + P}. The LSA's keys are the 2N
    context tokens (x- and y-tokens); the query is not a key, as in `LSATransformer`.
    """

    d: int  # input dimension
    n_context: int  # N; fixes the positional encoding
    d_y: int = 1
    num_heads: int = 1  # heads of the softmax layer
    key_size: int | None = None  # of the softmax layer; None means the token width W
    softmax_init_scale: float = 1.0  # fan-in variance scale of the softmax layer
    lsa_init_scale: float = 0.002  # fan-in variance scale of the LSA layer (von Oswald et al.)

    @property
    def num_positions(self) -> int:
        """P = 2N + 1, the number of tokens and the width of the positional one-hot."""
        return 2 * self.n_context + 1

    @property
    def width(self) -> int:
        """W = d + P + d_y, the width of an alternating token."""
        return self.d + self.num_positions + self.d_y

    def setup(self):
        key_size = self.width if self.key_size is None else self.key_size
        self.copy = SoftmaxAttentionParams(
            self.num_heads, key_size, self.width, self.softmax_init_scale
        )
        self.lsa = LSATransformer(
            d=self.d + self.num_positions, d_y=self.d_y, init_scale=self.lsa_init_scale
        )

    def _layout(self, tokens_TxE: jax.Array) -> jax.Array:
        if tokens_TxE.shape != (self.n_context + 1, self.d + self.d_y):
            raise ValueError(
                f"tokens have shape {tokens_TxE.shape}; this model expects "
                f"(N + 1, d + d_y) = ({self.n_context + 1}, {self.d + self.d_y})"
            )
        return alternating_tokens(tokens_TxE, self.d)

    def attention(self, tokens_TxE: jax.Array) -> jax.Array:
        """Layer-1 attention weights on the alternating tokens, (H, S, S)."""
        return softmax_attention_weights(self.copy(), self._layout(tokens_TxE))

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        copied_SxW = softmax_layer(self.copy(), self._layout(tokens_TxE))
        return self.lsa(copied_SxW)


def copy_score(attention_HxSxS: jax.Array, n_context: int) -> jax.Array:
    """Mean attention mass that each x-token puts on its own y-token (its right neighbour), (H,).

    1 for a perfect copy head; 1/S for uniform attention.
    """
    rows = 2 * jnp.arange(n_context)
    return jnp.mean(attention_HxSxS[:, rows, rows + 1], axis=-1)


def batch_attention(model: StandardTokenTransformer, params, tokens_BxTxE) -> jax.Array:
    """Layer-1 attention of a batch of prompts, (B, H, S, S)."""
    return jax.vmap(lambda t: model.apply(params, t, method=model.attention))(tokens_BxTxE)
