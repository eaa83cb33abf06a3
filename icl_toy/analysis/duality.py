"""The dual form of in-context learning: implicit weight updates vs explicit fine-tuning.

Dai et al. (arXiv 2212.10559, THEORY §2) read linear attention as a linear model whose
weights are updated by the context: F_ICL(q) = (W_ZSL + ΔW_ICL) q, against fine-tuning's
F_FT(q) = (W_ZSL + ΔW_FT) q. On regression prompts both sides are explicit:

- ICL. An LSA stack excludes the query from keys and values, so the context tokens never
  depend on the query and every layer maps the query token by a context-dependent linear
  map, e_q ← (I + Σ_h W_PV,h C W_KQ,h) e_q with C = Σ_i e_i e_iᵀ. The query token starts
  as (x_q, −W0 x_q), linear in x_q, so ŷ = W_ICL x_q exactly, for every depth and every
  set of weights (trained or constructed); `linearity_gap` checks it. The implicit weight
  is the query sensitivity W_ICL = dŷ/dx_q, and with no context the LSA predicts the
  zero-shot ŷ = W0 x_q, so ΔW_ICL = W_ICL − W0.
- FT. k explicit GD steps on the context loss L(W) = (1/2N) Σ_i ||W x_i − y_i||² from W0
  (1/N inside η, THEORY §0), or Dai's baseline: one epoch of SGD, one example at a time in
  context order, each step −(η/N)(W x_i − y_i) x_iᵀ (so one epoch with W frozen would be
  one full-batch GD step).

For the GD construction (Proposition 1 of von Oswald et al., arXiv 2212.07677) ΔW_ICL is
exactly one GD step: ΔW_ICL = ΔW_FT(k = 1, η).

Toy versions of Dai's metrics (the LM quantities have no regression analogue, so these are
our definitions):
- Rec2FTP: a learner "gets a prompt right" when its squared error on the query is below
  (1 − margin) times the zero-shot error (margin = 0: any improvement over ZSL).
  Rec2FTP = #(FT right ∧ ICL right) / #(FT right).
- SimAOU: h is the query token after the model (the attention output plus the residual),
  stacked over P probe queries; for a linear model W it is (x_p, −W x_p), the token
  Proposition 1 writes, and for ZSL it is the input token (x_p, −W0 x_p).
  SimAOU = cos(vec(h_ICL − h_ZSL), vec(h_FT − h_ZSL)).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from icl_toy.analysis.metrics import query_sensitivity
from icl_toy.core.learners import gd_fit
from icl_toy.core.linalg import matmul


def _zero_w0(d: int, d_y: int, dtype) -> jax.Array:
    return jnp.zeros((d_y, d), dtype)


def implicit_weight(
    predict: Callable[[jax.Array], jax.Array], tokens_TxE: jax.Array, d: int, w0=None
) -> jax.Array:
    """W_ICL = dŷ/dx_q of one prompt, (Y, D), with the query's y-slot kept at −W0 x_q.

    `query_sensitivity` moves only the x-part of the query; when W0 ≠ 0 the y-slot −W0 x_q
    also depends on x_q, and the total derivative is the implicit linear model.
    """
    if w0 is None:
        return query_sensitivity(predict, tokens_TxE, d)

    def predict_with_query_slot(tokens):
        return predict(tokens.at[-1, d:].set(-matmul(w0, tokens[-1, :d])))

    return query_sensitivity(predict_with_query_slot, tokens_TxE, d)


def implicit_weight_update(
    predict: Callable[[jax.Array], jax.Array], tokens_TxE: jax.Array, d: int, w0=None
) -> jax.Array:
    """ΔW_ICL = dŷ/dx_q − W0 of one prompt, (Y, D) (Dai et al.'s dual form, THEORY §2).

    W0 (default 0) is the zero-shot model: an LSA with no context predicts ŷ = W0 x_q.
    """
    w_icl = implicit_weight(predict, tokens_TxE, d, w0)
    return w_icl if w0 is None else w_icl - w0


def linearity_gap(
    predict: Callable[[jax.Array], jax.Array],
    tokens_TxE: jax.Array,
    d: int,
    probes_PxD: jax.Array,
    w0=None,
) -> jax.Array:
    """max_p |ŷ(x_p) − W_ICL x_p| over probe queries: 0 (round-off) iff ŷ is linear in x_q.

    Exact zero for any LSA stack (see the module docstring); softmax attention is not.
    """
    w_icl_YxD = implicit_weight(predict, tokens_TxE, d, w0)
    w0 = _zero_w0(d, w_icl_YxD.shape[0], tokens_TxE.dtype) if w0 is None else w0

    def one(x_p_D):
        tokens = tokens_TxE.at[-1, :d].set(x_p_D).at[-1, d:].set(-matmul(w0, x_p_D))
        return predict(tokens) - matmul(w_icl_YxD, x_p_D)

    return jnp.max(jnp.abs(jax.vmap(one)(probes_PxD)))


def finetune_update(
    x_NxD: jax.Array, y_NxY: jax.Array, eta: float, num_steps: int, w0=None
) -> jax.Array:
    """ΔW_FT = W_k − W0 after k full-batch GD steps of size η on the context, (Y, D)."""
    w0 = _zero_w0(x_NxD.shape[1], y_NxY.shape[1], x_NxD.dtype) if w0 is None else w0
    return gd_fit(x_NxD, y_NxY, jnp.full(num_steps, eta), w0) - w0


def sgd_finetune_update(x_NxD: jax.Array, y_NxY: jax.Array, eta: float, w0=None) -> jax.Array:
    """ΔW of one SGD epoch in context order (Dai et al.'s fine-tuning baseline), (Y, D).

    W ← W − (η/N)(W x_i − y_i) x_iᵀ for i = 1..N.
    """
    n = x_NxD.shape[0]
    w0 = _zero_w0(x_NxD.shape[1], y_NxY.shape[1], x_NxD.dtype) if w0 is None else w0

    def step(w_YxD, example):
        x_D, y_Y = example
        residual_Y = matmul(w_YxD, x_D) - y_Y
        return w_YxD - (eta / n) * residual_Y[:, None] * x_D[None, :], None

    w_YxD, _ = jax.lax.scan(step, w0, (x_NxD, y_NxY))
    return w_YxD - w0


def update_cosine(a_YxD: jax.Array, b_YxD: jax.Array) -> jax.Array:
    """cos(vec ΔW_a, vec ΔW_b) of one prompt (no ε: the 1e-12 checks need the exact value)."""
    a, b = a_YxD.reshape(-1), b_YxD.reshape(-1)
    return jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def norm_ratio(a_YxD: jax.Array, b_YxD: jax.Array) -> jax.Array:
    """||ΔW_a||_F / ||ΔW_b||_F of one prompt."""
    return jnp.linalg.norm(a_YxD.reshape(-1)) / jnp.linalg.norm(b_YxD.reshape(-1))


def relative_error(a_YxD: jax.Array, b_YxD: jax.Array) -> jax.Array:
    """||ΔW_a − ΔW_b||_F / ||ΔW_b||_F of one prompt."""
    return jnp.linalg.norm((a_YxD - b_YxD).reshape(-1)) / jnp.linalg.norm(b_YxD.reshape(-1))


def gets_right(err_B: jax.Array, err_zsl_B: jax.Array, margin: float = 0.0) -> jax.Array:
    """Toy "correct" for regression: query error below (1 − margin) × zero-shot error, (B,)."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    return err_B < (1.0 - margin) * err_zsl_B


def rec2ftp(
    err_icl_B: jax.Array, err_ft_B: jax.Array, err_zsl_B: jax.Array, margin: float = 0.0
) -> jax.Array:
    """Toy Rec2FTP = #(FT right ∧ ICL right) / #(FT right) over B prompts (Dai et al.).

    Errors are squared errors on each prompt's query; "right" is `gets_right`. NaN when FT
    gets no prompt right.
    """
    ft_right = gets_right(err_ft_B, err_zsl_B, margin)
    both = ft_right & gets_right(err_icl_B, err_zsl_B, margin)
    return jnp.sum(both) / jnp.sum(ft_right)


def linear_query_outputs(w_YxD: jax.Array, probes_PxD: jax.Array) -> jax.Array:
    """Query tokens (x_p, −W x_p) of a linear model W at P probe queries, (P, E)."""
    return jnp.concatenate([probes_PxD, -matmul(probes_PxD, w_YxD.T)], axis=-1)


def model_query_outputs(
    query_token: Callable[[jax.Array], jax.Array],
    tokens_TxE: jax.Array,
    d: int,
    probes_PxD: jax.Array,
    w0=None,
) -> jax.Array:
    """Query tokens after the model, (P, E), for one context and P probe queries x_p.

    `query_token` maps tokens (T, E) to the last token's output (E,); each probe enters
    as (x_p, −W0 x_p).
    """
    w0 = _zero_w0(d, tokens_TxE.shape[1] - d, tokens_TxE.dtype) if w0 is None else w0

    def one(x_p_D):
        return query_token(tokens_TxE.at[-1, :d].set(x_p_D).at[-1, d:].set(-matmul(w0, x_p_D)))

    return jax.vmap(one)(probes_PxD)


def simaou(h_icl_PxE: jax.Array, h_ft_PxE: jax.Array, h_zsl_PxE: jax.Array) -> jax.Array:
    """Toy SimAOU of one prompt: cos(vec(h_ICL − h_ZSL), vec(h_FT − h_ZSL)) (Dai et al.)."""
    return update_cosine(h_icl_PxE - h_zsl_PxE, h_ft_PxE - h_zsl_PxE)
