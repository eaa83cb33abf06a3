"""Kernel views of in-context learners on d = 1 function tasks (docs/theory.md §1, Proposition 2).

RBF kernel baselines tuned on held-out prompts (one functional GD step, i.e. kernel
smoothing, and kernel ridge, `icl_toy.core.nonlinear`), every learner's prediction and query
sensitivity ∂ŷ/∂x_q over a grid of query points, and the learned kernel of MLP + GD
(`icl_toy.core.models.FeatureGD`).

An *explicit* learner here is `predict(x_NxD, y_NxY, x_q_D) -> ŷ (Y,)` on one prompt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.analysis import metrics
from icl_toy.core.losses import half_mse
from icl_toy.core.models import FeatureGD, MLPFeatures
from icl_toy.core.nonlinear import (
    feature_kernel,
    grid_sensitivities,
    rbf_ridge_predict,
    rbf_smoothing_predict,
)
from icl_toy.core.tasks import Prompt

Explicit = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def fit_rbf_smoothing(prompts: Prompt, length_scales: Sequence[float]) -> dict[str, float]:
    """The RBF smoothing step (ℓ, η) with the least half-MSE on `prompts`.

    ŷ = η s_ℓ with s_ℓ the unit-step prediction (η = 1), so for each ℓ the best step is
    η*(ℓ) = Σ s_ℓ y_q / Σ s_ℓ² in closed form; ℓ is the best of the grid (the first on ties).
    Returns {"length_scale": ℓ, "eta": η*(ℓ)}.
    """

    @jax.jit
    def fit(length_scale):
        s_BxY = jax.vmap(rbf_smoothing_predict, in_axes=(0, 0, 0, None, None))(
            prompts.x, prompts.y, prompts.x_q, length_scale, 1.0
        )
        eta = jnp.sum(s_BxY * prompts.y_q) / jnp.sum(s_BxY * s_BxY)
        return eta, half_mse(eta * s_BxY, prompts.y_q)

    rows = [(ell, *map(float, fit(ell))) for ell in length_scales]
    ell, eta, _ = min(rows, key=lambda row: row[2])
    return {"length_scale": ell, "eta": eta}


def fit_rbf_ridge(
    prompts: Prompt, length_scales: Sequence[float], lambdas: Sequence[float]
) -> dict[str, float]:
    """The RBF kernel ridge (ℓ, λ) of the grid with the least half-MSE on `prompts` (first on
    ties): {"length_scale": ℓ, "lambda": λ}."""

    @jax.jit
    def loss(length_scale, lam):
        pred_BxY = jax.vmap(rbf_ridge_predict, in_axes=(0, 0, 0, None, None))(
            prompts.x, prompts.y, prompts.x_q, length_scale, lam
        )
        return half_mse(pred_BxY, prompts.y_q)

    rows = [(ell, lam, float(loss(ell, lam))) for ell in length_scales for lam in lambdas]
    ell, lam, _ = min(rows, key=lambda row: row[2])
    return {"length_scale": ell, "lambda": lam}


def fit_rbf_baselines(
    prompts: Prompt, length_scales: Sequence[float], lambdas: Sequence[float]
) -> dict[str, dict]:
    """{"rbf_smoothing": `fit_rbf_smoothing`, "rbf_ridge": `fit_rbf_ridge`} on `prompts`."""
    return {
        "rbf_smoothing": fit_rbf_smoothing(prompts, length_scales),
        "rbf_ridge": fit_rbf_ridge(prompts, length_scales, lambdas),
    }


def tuned_rbf_predictors(tuned: dict[str, dict]) -> dict[str, Explicit]:
    """Explicit learners of the fits of `fit_rbf_baselines`, under the same names."""
    s, r = tuned["rbf_smoothing"], tuned["rbf_ridge"]
    return {
        "rbf_smoothing": lambda x, y, x_q: rbf_smoothing_predict(
            x, y, x_q, s["length_scale"], s["eta"]
        ),
        "rbf_ridge": lambda x, y, x_q: rbf_ridge_predict(x, y, x_q, r["length_scale"], r["lambda"]),
    }


def explicit_half_mse(predict: Explicit, prompts: Prompt) -> float:
    """Half-MSE of an explicit learner over a batch of prompts."""
    pred_BxY = jax.jit(jax.vmap(predict))(prompts.x, prompts.y, prompts.x_q)
    return float(half_mse(pred_BxY, prompts.y_q))


@functools.partial(jax.jit, static_argnums=0)
def explicit_grid(predict: Explicit, prompts: Prompt, grid_G: jax.Array):
    """(ŷ, ∂ŷ/∂x_q) of an explicit d = 1 learner at every grid query of every prompt, each
    (B, G)."""

    def one(x_NxD, y_NxY):
        return jax.vmap(jax.value_and_grad(lambda x_q: predict(x_NxD, y_NxY, x_q[None])[0]))(grid_G)

    return jax.vmap(one)(prompts.x, prompts.y)


def model_grid(model, params_S, tokens_BxTxE: jax.Array, grid_G: jax.Array):
    """(ŷ, ∂ŷ/∂x_q) of each seed's d = 1 model (`grid_sensitivities`) over the grid, each
    (S, B, G)."""

    def all_seeds(params_S, tokens_BxTxE):
        def per_seed(params):
            return jax.vmap(lambda t: grid_sensitivities(model, params, t, grid_G))(tokens_BxTxE)

        return jax.vmap(per_seed)(params_S)

    return jax.jit(all_seeds)(params_S, tokens_BxTxE)


def seed_sensitivity_cosine(sens_SxBxG: jax.Array, reference: jax.Array) -> jax.Array:
    """Per seed, the mean over tasks of `metrics.sensitivity_cosine` against `reference`,
    (S,): the same seed of another learner if (S, B, G), one shared learner if (B, G)."""
    shared = reference.ndim == sens_SxBxG.ndim - 1
    return jax.vmap(metrics.sensitivity_cosine, in_axes=(0, None if shared else 0))(
        sens_SxBxG, reference
    )


def feature_gd_kernel(model: FeatureGD, params, grid_G: jax.Array, n_context: int) -> np.ndarray:
    """The learned kernel of one MLP + GD on the grid, (η/N) m(a)ᵀ m(b), (G, G).

    Its prediction is ŷ = Σ_i y_i k(x_i, x_q) with this k; `params` are one seed's.
    """
    mlp = MLPFeatures(model.embed_dim, model.hidden_size)
    features_GxF = mlp.apply({"params": params["params"]["features"]}, grid_G[:, None])
    eta = float(params["params"]["eta"])
    return np.asarray(eta / n_context * feature_kernel(features_GxF, features_GxF))
