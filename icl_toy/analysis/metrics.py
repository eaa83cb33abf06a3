"""Alignment metrics between in-context learners (docs/theory.md §1, §11).

All averages run over tasks. "Sensitivity" is ∂ŷ/∂x_q, the derivative of the prediction
with respect to the x-part of the query token: for a linear learner it is the implicit
weight matrix W that the learner applies to the query.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from icl_toy.core.linalg import einsum
from icl_toy.core.models import attention_products, lsa_query_output, readout

# Added to the norms in the cosine, as in von Oswald et al.'s `analyse()`.
COSINE_EPS = 1e-8
# β below this fraction of max|W_KQ| is treated as no x-block structure: see `beta_rescale`.
DEGENERATE_BETA = 1e-3


def prediction_difference(pred_a_BxY: jax.Array, pred_b_BxY: jax.Array) -> jax.Array:
    """Preds diff: mean |ŷ_a − ŷ_b| over tasks and outputs."""
    return jnp.mean(jnp.abs(pred_a_BxY - pred_b_BxY))


def query_sensitivity(
    predict: Callable[[jax.Array], jax.Array], tokens_TxE: jax.Array, d: int
) -> jax.Array:
    """∂ŷ/∂x_q of one prompt, (Y, D): `predict` maps tokens (T, E) to ŷ (Y,)."""

    def predict_from_query_x(x_q_D):
        return predict(tokens_TxE.at[-1, :d].set(x_q_D))

    return jax.jacrev(predict_from_query_x)(tokens_TxE[-1, :d])


def sensitivity_cosine(sens_a_BxYxD: jax.Array, sens_b_BxYxD: jax.Array) -> jax.Array:
    """Model cos: mean over tasks of cos(∂ŷ_a/∂x_q, ∂ŷ_b/∂x_q), flattened per task."""
    a = sens_a_BxYxD.reshape(sens_a_BxYxD.shape[0], -1)
    b = sens_b_BxYxD.reshape(sens_b_BxYxD.shape[0], -1)
    norms = (jnp.linalg.norm(a, axis=-1) + COSINE_EPS) * (jnp.linalg.norm(b, axis=-1) + COSINE_EPS)
    return jnp.mean(jnp.sum(a * b, axis=-1) / norms)


def model_difference(sens_a_BxYxD: jax.Array, sens_b_BxYxD: jax.Array) -> jax.Array:
    """Model diff: mean over tasks of ||∂ŷ_a/∂x_q − ∂ŷ_b/∂x_q||₂ (Frobenius for d_y > 1)."""
    diff = (sens_a_BxYxD - sens_b_BxYxD).reshape(sens_a_BxYxD.shape[0], -1)
    return jnp.mean(jnp.linalg.norm(diff, axis=-1))


def beta_rescale(
    w_kq_HxExE: jax.Array, w_pv_HxExE: jax.Array, d: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(W_KQ/β, β·W_PV, β) per head, with β the mean x-block diagonal of W_KQ.

    The rescaling leaves the layer's function unchanged and puts trained weights on the
    scale of the GD construction, where β = 1 (von Oswald et al., arXiv 2212.07677). When
    |β| < 1e-3 · max|W_KQ| (e.g. at initialisation) the head has no x-block diagonal to
    align, and that head's rescaled products are NaN rather than numbers blown up by 1/β.
    """
    beta_H = jnp.mean(jnp.diagonal(w_kq_HxExE[:, :d, :d], axis1=-2, axis2=-1), axis=-1)
    scale_H = jnp.max(jnp.abs(w_kq_HxExE), axis=(-2, -1))
    degenerate_H = jnp.abs(beta_H) <= DEGENERATE_BETA * scale_H
    safe_beta_H = jnp.where(degenerate_H, 1.0, beta_H)
    nan_H = jnp.where(degenerate_H, jnp.nan, 1.0)[:, None, None]
    w_kq = w_kq_HxExE / safe_beta_H[:, None, None] * nan_H
    w_pv = w_pv_HxExE * safe_beta_H[:, None, None] * nan_H
    return w_kq, w_pv, beta_H


def implied_preconditioner(
    w_kq_HxExE: jax.Array, w_pv_HxExE: jax.Array, d: int, n_context: int
) -> jax.Array:
    """Γ (D, D) of the part of a one-layer LSA prediction that is linear in h = Xᵀy/N.

    With d_y = 1 and the query's y-slot at 0, write W_PV = [[·, ·], [c, a]] and
    W_KQ = [[B, ·], [b, ·]] in (x, y) blocks (c, b rows of length d, a a scalar). The terms
    of ŷ = −[Σ_h W_PV,h C W_KQ,h (x_q, 0)]_y that are linear in y give ŷ ⊇ x_qᵀ Γ h with
    Γ = −N Σ_h (a_h B_hᵀ + b_hᵀ c_h). The GD construction gives Γ = ηI.
    """
    if w_kq_HxExE.shape[-1] != d + 1:
        raise ValueError("implied_preconditioner is defined for d_y = 1")
    a_H, c_HxD = w_pv_HxExE[:, d, d], w_pv_HxExE[:, d, :d]
    b_mat_HxDxD, b_HxD = w_kq_HxExE[:, :d, :d], w_kq_HxExE[:, d, :d]
    gamma_DxD = einsum("h,hji->ij", a_H, b_mat_HxDxD) + einsum("hi,hj->ij", b_HxD, c_HxD)
    return -n_context * gamma_DxD


def implied_eta(w_kq_HxExE: jax.Array, w_pv_HxExE: jax.Array, d: int, n_context: int):
    """Implied GD step size of a one-layer LSA: tr(Γ)/d (1/N inside η, as `gd_weights`)."""
    return jnp.trace(implied_preconditioner(w_kq_HxExE, w_pv_HxExE, d, n_context)) / d


def implied_gamma(w_kq_HxExE: jax.Array, w_pv_HxExE: jax.Array, d: int) -> jax.Array:
    """Implied GD++ input step γ of an LSA layer: −tr(Σ_h P_h B_h)/d.

    The part of the layer's input update Δx_j that is linear in H x_j (H = Σ_i x_i x_iᵀ) is
    Σ_h P_h H B_h x_j, with P_h = W_PV,h[:d, :d] and B_h = W_KQ,h[:d, :d]. The GD++
    construction has P = −γI and B = I, so this returns its γ; it is invariant to the β gauge.
    """
    p_HxDxD, b_HxDxD = w_pv_HxExE[:, :d, :d], w_kq_HxExE[:, :d, :d]
    return -einsum("hij,hji->", p_HxDxD, b_HxDxD) / d


def interpolated_products(
    trained: tuple[jax.Array, jax.Array], constructed: tuple[jax.Array, jax.Array], d: int
) -> tuple[jax.Array, jax.Array]:
    """Midpoint of β-rescaled trained products and constructed products, each (H, E, E).

    Interpolation test of von Oswald et al.: if training found the construction up to
    the β gauge, the midpoint model has the same loss as both ends.
    """
    w_kq, w_pv, _ = beta_rescale(*trained, d)
    return 0.5 * (w_kq + constructed[0]), 0.5 * (w_pv + constructed[1])


R2_DEFINITION = "1 - ||G_fit - G*||_F^2 / ||G* - mean(G*)||_F^2, mean over the d^2 entries of G*"


def r_squared(fit_DxD: jax.Array, target_DxD: jax.Array) -> jax.Array:
    """R² of a fitted matrix against a target, see `R2_DEFINITION` (1 = equal)."""
    residual = jnp.sum((fit_DxD - target_DxD) ** 2)
    return 1.0 - residual / jnp.sum((target_DxD - jnp.mean(target_DxD)) ** 2)


def layer_preconditioner(params: dict, d: int, n_context: int) -> jax.Array:
    """Γ (D, D) of a one-layer, one-head `LSATransformer`'s params (`implied_preconditioner`)."""
    w_kq, w_pv = (m[0] for m in attention_products(params["params"]))
    return implied_preconditioner(w_kq, w_pv, d, n_context)


def model_sensitivities(model, params, tokens_BxTxE: jax.Array, d: int) -> jax.Array:
    """∂ŷ/∂x_q of `model` with `params` on every prompt, (B, Y, D) (`query_sensitivity`)."""
    return jax.vmap(query_sensitivity, in_axes=(None, 0, None))(
        lambda tokens_TxE: model.apply(params, tokens_TxE), tokens_BxTxE, d
    )


def single_layer_products(params: dict) -> tuple[jax.Array, jax.Array]:
    """(W_KQ, W_PV), each (..., H, E, E), of a one-layer `LSATransformer` (layer axis dropped).

    Leading axes of the params (e.g. S seeds) are kept.
    """
    w_kq, w_pv = attention_products(params["params"])
    return w_kq[..., 0, :, :, :], w_pv[..., 0, :, :, :]


def products_predict(
    w_kq_HxExE: jax.Array, w_pv_HxExE: jax.Array, tokens_BxTxE: jax.Array, d_y: int
) -> jax.Array:
    """ŷ (B, Y) of a one-layer LSA given its products W_KQ, W_PV directly."""

    def one(tokens_TxE):
        query_E = lsa_query_output(w_kq_HxExE[None], w_pv_HxExE[None], tokens_TxE)
        return readout(query_E[None], d_y)

    return jax.vmap(one)(tokens_BxTxE)


def interpolated_predict(
    trained: tuple[jax.Array, jax.Array],
    constructed: tuple[jax.Array, jax.Array],
    tokens_BxTxE: jax.Array,
    d: int,
    d_y: int,
) -> jax.Array:
    """ŷ (B, Y) of the midpoint model of `interpolated_products`."""
    return products_predict(*interpolated_products(trained, constructed, d), tokens_BxTxE, d_y)


def seed_beta_rescale(params_S, d: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`beta_rescale` of the one layer of S seeds: W_KQ/β, β·W_PV (S, H, E, E) and β (S, H)."""
    w_kq_S, w_pv_S = single_layer_products(params_S)
    return jax.vmap(beta_rescale, in_axes=(0, 0, None))(w_kq_S, w_pv_S, d)


def batch_sensitivities(model, params, tokens_BxTxE: jax.Array, d: int) -> jax.Array:
    """`query_sensitivity` (B, Y, D) of `model.apply(params, ·)` on each of B prompts."""
    return jax.vmap(query_sensitivity, in_axes=(None, 0, None))(
        lambda t: model.apply(params, t), tokens_BxTxE, d
    )


def against_reference(
    pred_BxY: jax.Array, sens_BxYxD: jax.Array, ref_pred_BxY: jax.Array, ref_sens_BxYxD: jax.Array
) -> dict[str, jax.Array]:
    """Prediction difference, sensitivity cosine and model difference of a learner against a
    reference learner (e.g. its GD construction) on the same B prompts."""
    return {
        "prediction_difference": prediction_difference(pred_BxY, ref_pred_BxY),
        "sensitivity_cosine": sensitivity_cosine(sens_BxYxD, ref_sens_BxYxD),
        "model_difference": model_difference(sens_BxYxD, ref_sens_BxYxD),
    }
