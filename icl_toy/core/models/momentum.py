"""Momentum in LSA: across tokens (Dai et al.'s EMA of values) and across depth (heavy ball).

docs/theory.md §2. Both are `LSATransformer`s with one more update rule per layer and one scalar
(μ or β), read by `learned_scalars`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icl_toy.core.linalg import einsum
from icl_toy.core.models.lsa import LSATransformer, lsa_update


def momentum_decay(mu: jax.Array, num_tokens: int, n_context: int) -> jax.Array:
    """(T, N) weights μ^{t−j} for context tokens j < t, else 0 (Dai et al.'s EMA)."""
    lag_TxN = jnp.arange(num_tokens)[:, None] - jnp.arange(n_context)[None, :]
    earlier = lag_TxN > 0
    # μ**lag at masked entries would be μ**0 or μ**(−k); use lag 1 there and zero it after.
    return jnp.where(earlier, mu ** jnp.where(earlier, lag_TxN, 1), 0.0)


class TokenMomentumLSA(LSATransformer):
    """LSA layers with Dai et al.'s momentum attention (arXiv 2212.10559, docs/theory.md §2).

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

    def learned_scalars(self) -> dict[str, jax.Array]:
        """{"mu": the momentum μ in use}."""
        if self.momentum is not None:
            return {"mu": jnp.asarray(self.momentum)}
        return {"mu": jax.nn.sigmoid(self.mu_logit)}

    def layer(self, layer_index, w_kq_HxExE, w_pv_HxExE, tokens_TxE, rows, carry):
        """The tokens `rows` after one momentum-attention layer, (R, E); no carry."""
        n_context = tokens_TxE.shape[0] - 1
        keys_NxE = tokens_TxE[:n_context]
        mu = self.learned_scalars()["mu"]
        decay_RxN = momentum_decay(mu, tokens_TxE.shape[0], n_context)[rows]
        queries_RxE = tokens_TxE[rows]
        ema_RxE = einsum("rn,ne->re", decay_RxN, keys_NxE)
        update_RxE = lsa_update(w_kq_HxExE, w_pv_HxExE, queries_RxE, keys_NxE)
        return queries_RxE + update_RxE + einsum("hae,re->ra", w_pv_HxExE, ema_RxE), carry


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

    def learned_scalars(self) -> dict[str, jax.Array]:
        """{"beta": the depth momentum β in use}."""
        return {"beta": jnp.asarray(self.momentum) if self.momentum is not None else self.beta}

    def initial_carry(self, tokens_TxE: jax.Array) -> jax.Array:
        """The velocity before layer 1, v_0 = 0, (T, E)."""
        return jnp.zeros_like(tokens_TxE)

    def layer(self, layer_index, w_kq_HxExE, w_pv_HxExE, tokens_TxE, rows, velocity_TxE):
        """The tokens `rows` after layer l, (R, E), and the velocity v_l, (T, E).

        No later layer reads the last layer's velocity, so it adds Δ_K and β v_{K−1} to the
        tokens without forming v_K (and returns no velocity).
        """
        beta = self.learned_scalars()["beta"]
        keys_NxE = tokens_TxE[: tokens_TxE.shape[0] - 1]
        update_RxE = lsa_update(w_kq_HxExE, w_pv_HxExE, tokens_TxE[rows], keys_NxE)
        if layer_index == self.num_layers - 1:
            return tokens_TxE[rows] + update_RxE + beta * velocity_TxE[rows], None
        velocity_TxE = update_RxE + beta * velocity_TxE
        return tokens_TxE + velocity_TxE, velocity_TxE
