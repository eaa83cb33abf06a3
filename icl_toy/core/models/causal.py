"""Causal LSA: token t attends to the context tokens j < t only (docs/theory.md §1).

One forward pass then holds a prediction at every context length (`position_readout`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icl_toy.core.models.lsa import LSATransformer, lsa_update


def causal_key_mask(num_tokens: int, n_context: int) -> jax.Array:
    """(T, N) mask, 1 where token t may attend to context token j: j < t.

    Context token t sees the t earlier pairs (token 0 sees none); the query, at t = N,
    sees all N context tokens, as in the ordinary LSA.
    """
    return (jnp.arange(n_context)[None, :] < jnp.arange(num_tokens)[:, None]).astype(float)


def causal_lsa_update(
    w_kq_HxExE: jax.Array,
    w_pv_HxExE: jax.Array,
    tokens_TxE: jax.Array,
    n_context: int,
    rows: slice = slice(None),
) -> jax.Array:
    """The causal LSA update of the tokens `rows` (default all), (R, E): keys j < t.

    Δe_t = Σ_h W_PV,h Σ_{j<t, j<N} e_j e_jᵀ W_KQ,h e_t.
    Zeroing a key token removes it exactly from both the scores and the values, so token t's
    update is `lsa_update` over the context with the keys j >= t set to 0.
    """
    mask_TxN = causal_key_mask(tokens_TxE.shape[0], n_context).astype(tokens_TxE.dtype)
    keys_NxE = tokens_TxE[:n_context]

    def one_token(token_E, mask_N):
        return lsa_update(w_kq_HxExE, w_pv_HxExE, token_E[None], keys_NxE * mask_N[:, None])[0]

    return jax.vmap(one_token)(tokens_TxE[rows], mask_TxN[rows])


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

    def layer(self, layer_index, w_kq_HxExE, w_pv_HxExE, tokens_TxE, rows, carry):
        """The causal LSA layer at the tokens `rows`, (R, E); no carry."""
        n_context = tokens_TxE.shape[0] - 1
        update_RxE = causal_lsa_update(w_kq_HxExE, w_pv_HxExE, tokens_TxE, n_context, rows)
        return tokens_TxE[rows] + update_RxE, carry

    def position_predictions(self, tokens_TxE: jax.Array) -> jax.Array:
        """ŷ_t for every token t = 0..N, (T, Y); see `position_readout`."""
        return position_readout(tokens_TxE, self.trajectory(tokens_TxE)[-1], self.d_y)
