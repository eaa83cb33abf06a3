"""Attention layers and transformers on regression tokens (Flax linen, column-form weights).

Conventions (THEORY §0, §1):
- A prompt is T = N + 1 tokens of width E = d + d_y; the query is the last token.
- Keys and values come from the N context tokens only; every token, query included, is
  updated. Letting the query into the keys is exact only for one GD layer (THEORY §1).
- Weights are stored in column form, q = W_Q e: `w_q`, `w_k`, `w_v` have shape (H, k, E)
  and the projection `w_p` has shape (H, E, k), for H heads of key size k. (Flax `Dense`
  kernels are the transpose; these are not Dense kernels.)
- Only the products W_KQ = W_Kᵀ W_Q and W_PV = P W_V matter to a linear attention layer.
- The prediction is ŷ = −(y-slot of the query token) after the last layer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from icl_toy.core.linalg import PRECISION, einsum

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

    with keys = values = `keys_NxE`. Contracting in attention order (W_KQ e_j, then the
    scores e_iᵀ(·), then the weighted sum of keys) runs several times faster under vmap on a
    CPU than forming the (E, E) second moment Σ_i e_i e_iᵀ per prompt; both are exact.
    """
    u_HxQxE = einsum("hab,qb->hqa", w_kq_HxExE, queries_QxE)
    scores_HxQxN = einsum("ne,hqe->hqn", keys_NxE, u_HxQxE)
    mixed_HxQxE = einsum("hqn,ne->hqe", scores_HxQxN, keys_NxE)
    return einsum("hae,hqe->qa", w_pv_HxExE, mixed_HxQxE)


def lsa_layer(w_kq_HxExE: jax.Array, w_pv_HxExE: jax.Array, tokens_TxE: jax.Array, n_keys: int):
    """One residual LSA layer on all tokens, keys/values = the first `n_keys` tokens, (T, E).

    The model uses n_keys = N (the query is not a key); n_keys = T shows the pitfall.
    """
    return tokens_TxE + lsa_update(w_kq_HxExE, w_pv_HxExE, tokens_TxE, tokens_TxE[:n_keys])


def lsa_stack(
    w_kq_LxHxExE: jax.Array, w_pv_LxHxExE: jax.Array, tokens_TxE: jax.Array, n_keys: int
) -> jax.Array:
    """Tokens after each of L residual LSA layers, (L + 1, T, E); entry 0 is the input."""
    trajectory = [tokens_TxE]
    for w_kq, w_pv in zip(w_kq_LxHxExE, w_pv_LxHxExE, strict=True):
        trajectory.append(lsa_layer(w_kq, w_pv, trajectory[-1], n_keys))
    return jnp.stack(trajectory)


def lsa_query_output(
    w_kq_LxHxExE: jax.Array, w_pv_LxHxExE: jax.Array, tokens_TxE: jax.Array
) -> jax.Array:
    """The query token after L layers, (E,): equal to `lsa_stack(...)[-1, -1]` with n_keys = T − 1.

    The last layer updates only the query, since no later layer reads the context.
    """
    n_keys = tokens_TxE.shape[0] - 1
    for w_kq, w_pv in zip(w_kq_LxHxExE[:-1], w_pv_LxHxExE[:-1], strict=True):
        tokens_TxE = lsa_layer(w_kq, w_pv, tokens_TxE, n_keys)
    query_1xE = tokens_TxE[-1:]
    query_1xE = query_1xE + lsa_update(
        w_kq_LxHxExE[-1], w_pv_LxHxExE[-1], query_1xE, tokens_TxE[:n_keys]
    )
    return query_1xE[0]


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

    def check_params(self, params: dict) -> None:
        """Raise ValueError unless `params` has the structure and shapes `init` gives."""
        expected = self.param_shapes()
        got = params.get("params") if isinstance(params, dict) else None
        if not isinstance(got, dict) or set(got) != set(expected):
            raise ValueError(
                f"params must be {{'params': {{{', '.join(sorted(expected))}}}}}; "
                f"got {jax.tree.map(jnp.shape, params)}"
            )
        for name, shape in expected.items():
            if jnp.shape(got[name]) != shape:
                raise ValueError(
                    f"params['params'][{name!r}] has shape {jnp.shape(got[name])}, but this "
                    f"model (d={self.d}, d_y={self.d_y}, K={self.num_layers}, "
                    f"H={self.num_heads}, shared_weights={self.shared_weights}) expects {shape}"
                )

    def setup(self):
        shapes = self.param_shapes()
        init = _fan_in_init(self.init_scale / self.num_layers, len(shapes["w_q"]) - 2)
        self.weights = {name: self.param(name, init, shapes[name]) for name in PARAM_NAMES}

    def layer_products(self) -> tuple[jax.Array, jax.Array]:
        """(W_KQ, W_PV) of every layer, each (K, H, E, E)."""
        w_kq, w_pv = attention_products(self.weights)
        if self.shared_weights:
            w_kq = jnp.broadcast_to(w_kq, (self.num_layers, *w_kq.shape))
            w_pv = jnp.broadcast_to(w_pv, (self.num_layers, *w_pv.shape))
        return w_kq, w_pv

    def trajectory(self, tokens_TxE: jax.Array) -> jax.Array:
        """Tokens after each layer, (K + 1, T, E)."""
        w_kq, w_pv = self.layer_products()
        return lsa_stack(w_kq, w_pv, tokens_TxE, n_keys=tokens_TxE.shape[0] - 1)

    def layer_predictions(self, tokens_TxE: jax.Array) -> jax.Array:
        """ŷ read out after each layer, (K + 1, Y); entry 0 is the input (−W0 x_q)."""
        return -self.trajectory(tokens_TxE)[:, -1, -self.d_y :]

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        w_kq, w_pv = self.layer_products()
        return readout(lsa_query_output(w_kq, w_pv, tokens_TxE)[None], self.d_y)


class GDSparsityLSA(LSATransformer):
    """`LSATransformer` whose random init has the zero blocks of the GD construction.

    The fan-in init of `LSATransformer`, then W_Q[:, d:] = W_K[:, d:] = 0 (queries and keys
    read only x) and W_V[:, :d] = 0 (values read only y), as in Zhang, Frei & Bartlett
    (arXiv 2306.09927). All entries are trained; the params have the same pytree.
    """

    def setup(self):
        shapes = self.param_shapes()
        fan_in = _fan_in_init(self.init_scale / self.num_layers, len(shapes["w_q"]) - 2)
        d = self.d

        def masked_init(name):
            def init(key, shape, dtype=jnp.float32):
                w = fan_in(key, shape, dtype)
                if name in ("w_q", "w_k"):
                    return w.at[..., d:].set(0.0)
                if name == "w_v":
                    return w.at[..., :d].set(0.0)
                return w

            return init

        self.weights = {
            name: self.param(name, masked_init(name), shapes[name]) for name in PARAM_NAMES
        }


class LinearSelfAttention(nn.Module):
    """One residual LSA layer as a composable block; params (H, k, E) / (H, E, k)."""

    num_heads: int = 1
    key_size: int | None = None  # None means the token width E
    init_scale: float = 0.002

    @nn.compact
    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        e = tokens_TxE.shape[-1]
        params = _declare_attention_params(self, self.num_heads, self.key_size, e, self.init_scale)
        w_kq, w_pv = attention_products(params)
        return lsa_layer(w_kq, w_pv, tokens_TxE, n_keys=tokens_TxE.shape[0] - 1)


class SoftmaxSelfAttention(nn.Module):
    """One residual softmax attention layer: keys/values from context tokens, scaled by 1/√k."""

    num_heads: int = 1
    key_size: int | None = None  # None means the token width E
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        e = tokens_TxE.shape[-1]
        params = _declare_attention_params(self, self.num_heads, self.key_size, e, self.init_scale)
        w_q, w_k, w_v, w_p = (params[name] for name in PARAM_NAMES)
        k = w_q.shape[1]
        context_NxE = tokens_TxE[:-1]
        queries_HxTxK = einsum("hke,te->htk", w_q, tokens_TxE)
        keys_HxNxK = einsum("hke,ne->hnk", w_k, context_NxE)
        values_HxNxK = einsum("hke,ne->hnk", w_v, context_NxE)
        logits_HxTxN = einsum("htk,hnk->htn", queries_HxTxK, keys_HxNxK) / jnp.sqrt(k)
        weights_HxTxN = jax.nn.softmax(logits_HxTxN, axis=-1)
        mixed_HxTxK = einsum("htn,hnk->htk", weights_HxTxN, values_HxNxK)
        return tokens_TxE + einsum("hek,htk->te", w_p, mixed_HxTxK)


class MLPBlock(nn.Module):
    """Residual GELU MLP applied to every token: e + W₂ gelu(W₁ e + b₁) + b₂."""

    hidden_size: int

    @nn.compact
    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        dense = functools.partial(nn.Dense, precision=PRECISION)
        hidden = nn.gelu(dense(self.hidden_size)(tokens_TxE))
        return tokens_TxE + dense(tokens_TxE.shape[-1])(hidden)


class Transformer(nn.Module):
    """A stack of token-wise blocks (attention, `nn.LayerNorm`, `MLPBlock`), then ŷ readout.

    Every block maps tokens (T, E) to tokens (T, E); compose them freely, e.g.
    `Transformer((SoftmaxSelfAttention(2), MLPBlock(64), LinearSelfAttention()), d_y=1)`.
    """

    blocks: Sequence[nn.Module]
    d_y: int = 1

    def residual_stream(self, tokens_TxE: jax.Array) -> jax.Array:
        """The tokens before and after every block, (num_blocks + 1, T, E); entry 0 is the input."""
        stream = [tokens_TxE]
        for block in self.blocks:
            stream.append(block(stream[-1]))
        return jnp.stack(stream)

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        for block in self.blocks:
            tokens_TxE = block(tokens_TxE)
        return readout(tokens_TxE, self.d_y)


class PreNorm(nn.Module):
    """A residual block with its input layer-normalised: e + f(LN(e)) for inner(z) = z + f(z).

    Turns any residual block of this module (attention, `MLPBlock`) into a pre-norm one,
    as in GPT-2: the residual stream itself is never normalised.
    """

    inner: nn.Module

    @nn.compact
    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        normed_TxE = nn.LayerNorm()(tokens_TxE)
        return tokens_TxE + self.inner(normed_TxE) - normed_TxE


class EmbeddedTransformer(Transformer):
    """A `Transformer` on a learned token embedding, with a learned linear readout.

    h⁰_t = W_in e_t + b_in (width W = `embed_dim`), then the blocks at width W, then
    ŷ = W_out h^L_query + b_out. A token (x, y) of width d + d_y is too narrow for softmax heads
    and MLPs to compute in (Akyürek et al., arXiv 2211.15661, use width ≥ 16 for d = 8), so the
    residual stream, and `residual_stream`, live at width W.
    """

    embed_dim: int = 64  # W, the width of the residual stream

    def setup(self):
        dense = functools.partial(nn.Dense, precision=PRECISION)
        self.embed = dense(self.embed_dim)
        self.unembed = dense(self.d_y)

    def residual_stream(self, tokens_TxE: jax.Array) -> jax.Array:
        """The embedded tokens before and after every block, (num_blocks + 1, T, W)."""
        return super().residual_stream(self.embed(tokens_TxE))

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        hidden_TxW = self.embed(tokens_TxE)
        for block in self.blocks:
            hidden_TxW = block(hidden_TxW)
        return self.unembed(hidden_TxW[-1])


def softmax_transformer(
    d_y: int = 1,
    depth: int = 1,
    num_heads: int = 2,
    mlp_hidden: int = 128,
    *,
    embed_dim: int = 32,
    key_size: int | None = None,
    layer_norm: bool = True,
) -> EmbeddedTransformer:
    """A softmax transformer with MLPs, as in Akyürek et al. (arXiv 2211.15661), on our tokens.

    `depth` blocks, each one pre-norm layer (GPT-2 style, `PreNorm`):
      h ← h + attn(LN(h)),  h ← h + MLP(LN(h))
    with softmax attention of `num_heads` heads and a GELU MLP of `mlp_hidden` units (without
    `layer_norm` the norms are left out: h ← h + attn(h), h ← h + MLP(h)), on an embedding of
    width `embed_dim` with a learned linear readout of the query (`EmbeddedTransformer`), so
    `residual_stream` returns (depth + 1, T, W): the embedding, then the state after each
    layer. `key_size` defaults to embed_dim // num_heads. Pre-norm trained faster than
    post-norm here (depth 4, 1000 steps: half-MSE 0.89 vs 1.02), and no norm at all did not
    train at lr 1e-3.

    Departures from Akyürek et al.: one token (x_i, y_i) per pair and a query token (x_q, 0),
    not separate x and y tokens; keys and values come from the context tokens only (the query
    reads, nothing reads the query), so the model is a set function of the context and needs
    no position embedding; it is trained on the query loss only, not autoregressively.
    """
    for name, value in (
        ("d_y", d_y),
        ("depth", depth),
        ("num_heads", num_heads),
        ("mlp_hidden", mlp_hidden),
        ("embed_dim", embed_dim),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"softmax_transformer needs {name} >= 1 (an integer), got {value!r}")
    key_size = embed_dim // num_heads if key_size is None else key_size
    if key_size < 1:
        raise ValueError(f"key_size must be >= 1, got {key_size} (embed_dim // num_heads?)")

    def layer() -> nn.Module:
        attention = SoftmaxSelfAttention(num_heads, key_size)
        mlp = MLPBlock(mlp_hidden)
        if layer_norm:
            return nn.Sequential([PreNorm(attention), PreNorm(mlp)])
        return nn.Sequential([attention, mlp])

    return EmbeddedTransformer(
        blocks=tuple(layer() for _ in range(depth)), d_y=d_y, embed_dim=embed_dim
    )


# --- Causal prompts and momentum attention (THEORY §1, §2) ------------------------------------


def causal_key_mask(num_tokens: int, n_context: int) -> jax.Array:
    """(T, N) mask, 1 where token t may attend to context token j: j < t.

    Context token t sees the t earlier pairs (token 0 sees none); the query, at t = N,
    sees all N context tokens, as in the ordinary LSA.
    """
    return (jnp.arange(n_context)[None, :] < jnp.arange(num_tokens)[:, None]).astype(float)


def causal_lsa_update(
    w_kq_HxExE: jax.Array, w_pv_HxExE: jax.Array, tokens_TxE: jax.Array, n_context: int
) -> jax.Array:
    """The causal LSA update of every token, (T, E): `lsa_update` with keys j < t.

    Δe_t = Σ_h W_PV,h Σ_{j<t, j<N} e_j e_jᵀ W_KQ,h e_t.
    Zeroing a key token removes it exactly from both the scores and the values, so token t's
    update is `lsa_update` over the context with the keys j >= t set to 0.
    """
    mask_TxN = causal_key_mask(tokens_TxE.shape[0], n_context).astype(tokens_TxE.dtype)
    keys_NxE = tokens_TxE[:n_context]

    def one_token(token_E, mask_N):
        return lsa_update(w_kq_HxExE, w_pv_HxExE, token_E[None], keys_NxE * mask_N[:, None])[0]

    return jax.vmap(one_token)(tokens_TxE, mask_TxN)


def position_readout(initial_TxE: jax.Array, final_TxE: jax.Array, d_y: int) -> jax.Array:
    """ŷ_t = −(y-slot of the total attention update of token t), (T, Y).

    A token's y-slot starts at its label (context) or at −W0 x_q (query), and the GD
    construction subtracts ΔW x_t from it; minus the update is therefore the learner's
    prediction ΔW x_t. For the query with W0 = 0 the y-slot starts at 0, so ŷ_N equals
    `readout`. For context token t it is the prediction of y_t from the t earlier pairs,
    free of y_t itself as long as no layer's W_KQ reads the attending token's y-slot
    (true for the GD construction; a trained layer may leak a little of y_t that way).
    """
    return -(final_TxE - initial_TxE)[:, -d_y:]


class CausalLSATransformer(LSATransformer):
    """K residual causal LSA layers: token t attends to context tokens j < t only.

    Same params as `LSATransformer`. At the query the first layer equals the ordinary LSA
    (the query sees all N context tokens), so for K = 1 ŷ is identical; for K >= 2 the
    context tokens of later layers differ (each saw only its prefix), and so does ŷ.
    `position_predictions` reads a prediction at every position: a learning curve over
    context length from one forward pass.
    """

    def trajectory(self, tokens_TxE: jax.Array) -> jax.Array:
        """Tokens after each causal layer, (K + 1, T, E)."""
        w_kq, w_pv = self.layer_products()
        n_context = tokens_TxE.shape[0] - 1
        trajectory = [tokens_TxE]
        for w_kq_l, w_pv_l in zip(w_kq, w_pv, strict=True):
            trajectory.append(
                trajectory[-1] + causal_lsa_update(w_kq_l, w_pv_l, trajectory[-1], n_context)
            )
        return jnp.stack(trajectory)

    def position_predictions(self, tokens_TxE: jax.Array) -> jax.Array:
        """ŷ_t for every token t = 0..N, (T, Y); see `position_readout`."""
        return position_readout(tokens_TxE, self.trajectory(tokens_TxE)[-1], self.d_y)

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        return readout(self.trajectory(tokens_TxE)[-1], self.d_y)


def momentum_decay(mu: jax.Array, num_tokens: int, n_context: int) -> jax.Array:
    """(T, N) weights μ^{t−j} for context tokens j < t, else 0 (Dai et al.'s EMA)."""
    lag_TxN = jnp.arange(num_tokens)[:, None] - jnp.arange(n_context)[None, :]
    earlier = lag_TxN > 0
    # μ**lag at masked entries would be μ**0 or μ**(−k); use lag 1 there and zero it after.
    return jnp.where(earlier, mu ** jnp.where(earlier, lag_TxN, 1), 0.0)


class TokenMomentumLSA(LSATransformer):
    """LSA layers with Dai et al.'s momentum attention (arXiv 2212.10559, THEORY §2).

    Each layer adds an exponential moving average of the earlier context tokens' values to
    the attention output (causal, over context tokens only, like the keys):
      Δe_t = Σ_h W_PV,h [ Σ_{j<N} e_j e_jᵀ W_KQ,h e_t + Σ_{j<min(t,N)} μ^{t−j} e_j ],
    with the value projection W_PV,h = P_h W_V,h shared by both terms. The attention term
    is the ordinary LSA's, so μ = 0 is exactly `LSATransformer` (the one baseline that the
    momentum variants are compared against). One μ for all layers and heads, like Dai's
    single η: learned as μ = sigmoid(`mu_logit`) ∈ (0, 1) when `momentum` is None, else
    fixed at `momentum` (and no extra param).
    """

    momentum: float | None = None  # fixed μ in [0, 1); None: learned
    momentum_init: float = 0.1  # initial μ when learned, in (0, 1)

    def setup(self):
        super().setup()
        if self.momentum is None:
            mu0 = self.momentum_init
            self.mu_logit = self.param(
                "mu_logit", lambda _, shape: jnp.full(shape, jnp.log(mu0) - jnp.log1p(-mu0)), ()
            )

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes()
        return shapes if self.momentum is not None else {**shapes, "mu_logit": ()}

    def mu(self) -> jax.Array:
        """The momentum μ in use."""
        if self.momentum is not None:
            return jnp.asarray(self.momentum)
        return jax.nn.sigmoid(self.mu_logit)

    def _layer(self, w_kq_HxExE, w_pv_HxExE, tokens_TxE, rows: slice) -> jax.Array:
        """The tokens `rows` after one momentum-attention layer, (R, E)."""
        n_context = tokens_TxE.shape[0] - 1
        keys_NxE = tokens_TxE[:n_context]
        decay_RxN = momentum_decay(self.mu(), tokens_TxE.shape[0], n_context)[rows]
        queries_RxE = tokens_TxE[rows]
        ema_RxE = einsum("rn,ne->re", decay_RxN, keys_NxE)
        update_RxE = lsa_update(w_kq_HxExE, w_pv_HxExE, queries_RxE, keys_NxE)
        return queries_RxE + update_RxE + einsum("hae,re->ra", w_pv_HxExE, ema_RxE)

    def trajectory(self, tokens_TxE: jax.Array) -> jax.Array:
        """Tokens after each layer, (K + 1, T, E)."""
        trajectory = [tokens_TxE]
        for w_kq, w_pv in zip(*self.layer_products(), strict=True):
            trajectory.append(self._layer(w_kq, w_pv, trajectory[-1], slice(None)))
        return jnp.stack(trajectory)

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        # As in `lsa_query_output`, the last layer updates only the query.
        w_kq, w_pv = self.layer_products()
        for w_kq_l, w_pv_l in zip(w_kq[:-1], w_pv[:-1], strict=True):
            tokens_TxE = self._layer(w_kq_l, w_pv_l, tokens_TxE, slice(None))
        return readout(self._layer(w_kq[-1], w_pv[-1], tokens_TxE, slice(-1, None)), self.d_y)


class DepthMomentumLSA(LSATransformer):
    """LSA layers with heavy-ball momentum across depth.

    Layer l computes the ordinary LSA update Δ_l of every token and carries a velocity:
      v_l = Δ_l + β v_{l−1},  e ← e + v_l,  v_0 = 0.
    With the GD construction in every layer (step η_l) the y-slots hold y_j − W_l x_j and
    this is exactly heavy-ball GD, W_{l+1} = W_l − η_l ∇L(W_l) + β (W_l − W_{l−1}) with
    W_{−1} = W_0 (`constructions.heavy_ball_weights`). One β shared by all layers, as in
    heavy ball with a constant momentum: β is then comparable with tuned heavy-ball GD.
    β is unconstrained (`beta`, learned from `momentum_init`) when `momentum` is None,
    else fixed. β = 0 is exactly `LSATransformer`; for K = 1 β has no effect.
    """

    momentum: float | None = None  # fixed β; None: learned
    momentum_init: float = 0.0  # initial β when learned

    def setup(self):
        super().setup()
        if self.momentum is None:
            self.beta = self.param("beta", jax.nn.initializers.constant(self.momentum_init), ())

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes()
        return shapes if self.momentum is not None else {**shapes, "beta": ()}

    def momentum_beta(self) -> jax.Array:
        """The depth momentum β in use."""
        return jnp.asarray(self.momentum) if self.momentum is not None else self.beta

    def _hidden_layers(self, tokens_TxE: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        """Tokens after each of the first K − 1 layers (input first), and the velocity."""
        w_kq, w_pv = self.layer_products()
        n_context = tokens_TxE.shape[0] - 1
        velocity_TxE = jnp.zeros_like(tokens_TxE)
        trajectory = [tokens_TxE]
        for w_kq_l, w_pv_l in zip(w_kq[:-1], w_pv[:-1], strict=True):
            tokens = trajectory[-1]
            update_TxE = lsa_update(w_kq_l, w_pv_l, tokens, tokens[:n_context])
            velocity_TxE = update_TxE + self.momentum_beta() * velocity_TxE
            trajectory.append(tokens + velocity_TxE)
        return trajectory, velocity_TxE

    def _last_layer(self, tokens_TxE, velocity_TxE, rows: slice) -> jax.Array:
        """The tokens `rows` after the last layer, (R, E)."""
        w_kq, w_pv = (m[-1] for m in self.layer_products())
        keys_NxE = tokens_TxE[: tokens_TxE.shape[0] - 1]
        update_RxE = lsa_update(w_kq, w_pv, tokens_TxE[rows], keys_NxE)
        return tokens_TxE[rows] + update_RxE + self.momentum_beta() * velocity_TxE[rows]

    def trajectory(self, tokens_TxE: jax.Array) -> jax.Array:
        """Tokens after each layer, (K + 1, T, E)."""
        trajectory, velocity_TxE = self._hidden_layers(tokens_TxE)
        return jnp.stack([*trajectory, self._last_layer(trajectory[-1], velocity_TxE, slice(None))])

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        # As in `lsa_query_output`, the last layer updates only the query.
        trajectory, velocity_TxE = self._hidden_layers(tokens_TxE)
        query_1xE = self._last_layer(trajectory[-1], velocity_TxE, slice(-1, None))
        return readout(query_1xE, self.d_y)
