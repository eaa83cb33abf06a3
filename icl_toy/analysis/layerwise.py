"""Deep LSA stacks read out layer by layer, beside their tuned GD and GD++ constructions.

von Oswald et al. (arXiv 2212.07677, §4) compare K trained LSA layers with K steps of GD and
GD++ whose scalars are tuned on their own loss (`tuning.fit_gd_and_gdpp_ladder`) and built as LSA
weights (`constructions.gd_weights`, `gdpp_weights`). On one held-out batch shared by every
model this module gives the half-MSE of the readout after every layer, the cosine of the
query sensitivities ∂ŷ/∂x_q, a shared-weight layer iterated past its training depth with
damped updates e ← e + λ Δe, and the GD++ (η, γ) that a shared layer's W_KQ and W_PV imply.
Losses are half-MSE; η has the 1/N inside.
"""

from __future__ import annotations

from typing import Literal

import jax
import numpy as np

from icl_toy.analysis import alignment, metrics
from icl_toy.analysis.stats import converged_seed_stats, mean_ci, seed_stats
from icl_toy.core import learners
from icl_toy.core.constructions import gd_weights, gdpp_weights
from icl_toy.core.losses import half_mse
from icl_toy.core.models import LSATransformer, attention_products, iterate_layer
from icl_toy.core.predictors import SeededPredictor
from icl_toy.core.tasks import Prompt, TaskConfig, prompt_tokens, sample_batch
from icl_toy.training import convergence, tuning
from icl_toy.training.train import RunOptions, TrainConfig, TrainResult, train_held_out


def per_layer_half_mse(preds_BxLxY: jax.Array, y_q_BxY: jax.Array) -> jax.Array:
    """Half-MSE of the readout after each layer, (L,)."""
    return jax.vmap(half_mse, in_axes=(1, None))(preds_BxLxY, y_q_BxY)


def layer_losses(model: LSATransformer, params, tokens_BxTxE, y_q_BxY) -> jax.Array:
    """Half-MSE of the readout after each of the K layers and of the input, (K + 1,)."""
    preds_BxLxY = jax.vmap(
        lambda t: model.apply(params, t, method=LSATransformer.layer_predictions)
    )(tokens_BxTxE)
    return per_layer_half_mse(preds_BxLxY, y_q_BxY)


def query_sensitivities(model, params, tokens_BxTxE: jax.Array, d: int) -> jax.Array:
    """∂ŷ/∂x_q of the model on every prompt, (B, Y, D)."""
    return jax.vmap(metrics.query_sensitivity, in_axes=(None, 0, None))(
        lambda t: model.apply(params, t), tokens_BxTxE, d
    )


def damped_iteration_losses(
    params, tokens_BxTxE, y_q_BxY, num_iterations: int, damping: float, d_y: int
) -> jax.Array:
    """Half-MSE after each of `num_iterations` damped passes of one shared layer, (L + 1,).

    e ← e + λ Δe with λ = `damping` (`models.iterate_layer`); `params` hold one layer.
    """
    w_kq, w_pv = attention_products(params["params"])

    def preds(tokens_TxE):
        return -iterate_layer(w_kq, w_pv, tokens_TxE, num_iterations, damping)[:, -1, -d_y:]

    return per_layer_half_mse(jax.vmap(preds)(tokens_BxTxE), y_q_BxY)


def implied_recurrent_gdpp(layer_params_S: dict, d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """GD++ (η, γ) implied by each seed's shared layer, read from W_KQ and W_PV, each (S,).

    η = tr(Γ)/d of the implied preconditioner (`metrics.implied_eta`, 1/N inside η) and
    γ = −tr(Σ_h P_h B_h)/d (`metrics.implied_gamma`).
    """
    w_kq, w_pv = attention_products(layer_params_S)  # (S, H, E, E)
    eta = jax.vmap(metrics.implied_eta, in_axes=(0, 0, None, None))(w_kq, w_pv, d, n)
    gamma = jax.vmap(metrics.implied_gamma, in_axes=(0, 0, None))(w_kq, w_pv, d)
    return np.asarray(eta), np.asarray(gamma)


def gd_and_gdpp_constructions(model: LSATransformer, fitted: dict, n: int) -> tuple[dict, dict]:
    """LSA params of the fitted K-step GD and GD++ (`tuning.fit_gd_and_gdpp`'s output)."""
    gd_params = gd_weights(model, fitted["gd"]["eta"], n)
    gdpp_params = gdpp_weights(model, fitted["gdpp"]["eta"], fitted["gdpp"]["gamma"], n)
    return gd_params, gdpp_params


def _scalars(theta: dict) -> dict:
    """A fitted learner's θ without its fit record ("chosen", losses, Adam rates)."""
    return {"eta": theta["eta"], "gamma": theta["gamma"]}


def compare_with_constructions(
    model: LSATransformer, params_S, fitted: dict, prompts: Prompt, tokens_BxTxE: jax.Array
) -> dict:
    """Trained seeds against the fitted GD and GD++ built as weights, on shared prompts.

    Returns per-seed arrays: "trained_loss" (S,), "trained_layer_losses" (S, K + 1),
    "cos_gd" and "cos_gdpp" (S,), sensitivity cosines with each construction; and of the
    constructions: "gd_layer_losses" and "gdpp_layer_losses" (K + 1,), their final losses
    "gd_loss", "gdpp_loss", "gdpp_explicit_loss" (the fitted explicit GD++ learner run on the
    same prompts, equal to "gdpp_loss" up to float error), "gdpp_params", and the floor
    "ols_loss" (`ols_half_mse`) on the same prompts.
    """
    d, n = prompts.x.shape[-1], prompts.x.shape[-2]
    gd_params, gdpp_params = gd_and_gdpp_constructions(model, fitted, n)
    gd_sens = query_sensitivities(model, gd_params, tokens_BxTxE, d)
    gdpp_sens = query_sensitivities(model, gdpp_params, tokens_BxTxE, d)

    @jax.jit
    def seed_metrics(params):
        sens = query_sensitivities(model, params, tokens_BxTxE, d)
        return {
            "layer_losses": layer_losses(model, params, tokens_BxTxE, prompts.y_q),
            "cos_gd": metrics.sensitivity_cosine(sens, gd_sens),
            "cos_gdpp": metrics.sensitivity_cosine(sens, gdpp_sens),
        }

    trained = jax.vmap(seed_metrics)(params_S)
    kind: Literal["per_layer", "recurrent"] = "recurrent" if model.shared_weights else "per_layer"
    explicit_gdpp = tuning.gd_and_gdpp_learners(kind, model.num_layers)[1]
    out = {
        "trained_loss": np.asarray(trained["layer_losses"][:, -1]),
        "trained_layer_losses": np.asarray(trained["layer_losses"]),
        "cos_gd": np.asarray(trained["cos_gd"]),
        "cos_gdpp": np.asarray(trained["cos_gdpp"]),
        "gd_layer_losses": np.asarray(layer_losses(model, gd_params, tokens_BxTxE, prompts.y_q)),
        "gdpp_layer_losses": np.asarray(
            layer_losses(model, gdpp_params, tokens_BxTxE, prompts.y_q)
        ),
        "gdpp_explicit_loss": float(
            tuning.learner_half_mse(explicit_gdpp, _scalars(fitted["gdpp"]), prompts)
        ),
        "gdpp_params": gdpp_params,
        "ols_loss": ols_half_mse(prompts),
    }
    out["gd_loss"] = float(out["gd_layer_losses"][-1])
    out["gdpp_loss"] = float(out["gdpp_layer_losses"][-1])
    return out


def comparison_table(comparison: dict, fitted: dict) -> dict:
    """JSON summary of `compare_with_constructions` and of the fitted scalars.

    Per-seed values become `seed_stats`; the paired gaps trained − GD and trained − GD++
    (each seed against the same constructed model on the same prompts) get a 95% t-interval
    (`mean_ci`); "beats_gd" says the whole interval of trained − GD lies below 0.
    """
    gap_gd = comparison["trained_loss"] - comparison["gd_loss"]
    return {
        "trained_loss": seed_stats(comparison["trained_loss"]),
        "trained_loss_per_seed": comparison["trained_loss"],
        "gd_loss": comparison["gd_loss"],
        "gdpp_loss": comparison["gdpp_loss"],
        "ols_loss": comparison["ols_loss"],
        "gdpp_explicit_loss": comparison["gdpp_explicit_loss"],
        "gdpp_construction_vs_explicit": abs(
            comparison["gdpp_loss"] - comparison["gdpp_explicit_loss"]
        ),
        "trained_minus_gd": mean_ci(gap_gd),
        "beats_gd": bool(mean_ci(gap_gd)["high"] < 0),
        "trained_minus_gdpp": mean_ci(comparison["trained_loss"] - comparison["gdpp_loss"]),
        "cos_gd": seed_stats(comparison["cos_gd"]),
        "cos_gdpp": seed_stats(comparison["cos_gdpp"]),
        "gd_eta": fitted["gd"]["eta"],
        "gdpp_eta": fitted["gdpp"]["eta"],
        "gdpp_gamma": fitted["gdpp"]["gamma"],
        "fit": {name: _fit_record(fitted[name]) for name in ("gd", "gdpp")},
    }


def _fit_record(theta: dict) -> dict:
    """How a fitted learner was chosen: its Adam rate, or its start and selection loss."""
    keys = ("fit_learning_rate", "chosen", "held_out_loss")
    return {key: theta[key] for key in keys if key in theta}


def damped_iteration_curves(
    params_S, gdpp_params, tokens_BxTxE, y_q_BxY, num_iterations: int, damping: float, d_y: int
) -> tuple[np.ndarray, np.ndarray]:
    """`damped_iteration_losses` of every trained seed, (S, L + 1), and of GD++, (L + 1,)."""
    iterate = jax.jit(
        lambda p: damped_iteration_losses(p, tokens_BxTxE, y_q_BxY, num_iterations, damping, d_y)
    )
    return np.asarray(jax.vmap(iterate)(params_S)), np.asarray(iterate(gdpp_params))


def train_against_constructions(
    model: LSATransformer,
    task: TaskConfig,
    train_config: TrainConfig,
    fitted: dict,
    prompts: Prompt,
    tokens_BxTxE: jax.Array,
    options: RunOptions | None = None,
) -> tuple[TrainResult, dict, dict]:
    """Train `model`'s S seeds and compare them with its tuned K-step GD and GD++.

    `fitted` holds the tuned scalars, {"gd": θ, "gdpp": θ} (a rung of
    `tuning.fit_gd_and_gdpp_ladder`, or `tuning.fit_gd_and_gdpp`), per step for a per-layer
    model and shared for a recurrent one; training records the held-out half-MSE on
    `prompts` ("loss"). Returns the training result, its convergence record (gap against
    the GD++ construction's loss) and `compare_with_constructions` of the final params.
    """
    result = train_held_out(model, task, train_config, prompts, options)
    comparison = compare_with_constructions(model, result.params, fitted, prompts, tokens_BxTxE)
    record = convergence.convergence_record(result, reference=comparison["gdpp_loss"])
    return result, record, comparison


def gd_and_gdpp_metrics(
    predictor: SeededPredictor, task: TaskConfig, fitted: dict, *, key: jax.Array, num_tasks: int
) -> dict:
    """`alignment.per_seed_metrics` of a seeded model against the fitted GD and GD++ learners."""
    fitted_learners = {
        "gd": learners.gd(fitted["gd"]["eta"]),
        "gdpp": learners.gdpp(fitted["gdpp"]["eta"], fitted["gdpp"]["gamma"]),
    }
    return alignment.per_seed_metrics(
        predictor, task, fitted_learners, key=key, num_tasks=num_tasks
    )


COMPARISON_ARRAYS = (
    "trained_layer_losses",
    "gd_layer_losses",
    "gdpp_layer_losses",
    "cos_gd",
    "cos_gdpp",
)


def comparison_arrays(comparison: dict, prefix: str) -> dict[str, np.ndarray]:
    """The per-seed and per-layer arrays of `compare_with_constructions`, keys prefixed."""
    return {prefix + name: comparison[name] for name in COMPARISON_ARRAYS}


def held_out_batch(key: jax.Array, task: TaskConfig, num_tasks: int) -> tuple[Prompt, jax.Array]:
    """Held-out prompts of `task` and their tokens (B, T, E), to share across models."""
    prompts = sample_batch(key, task, num_tasks)
    return prompts, jax.vmap(prompt_tokens)(prompts)


def ols_half_mse(prompts: Prompt) -> float:
    """Half-MSE of OLS on a batch of prompts (exact, hence 0, when N >= d without noise)."""
    return float(half_mse(jax.vmap(learners.ols)(prompts), prompts.y_q))


def recurrent_gdpp_table(
    comparison: dict, fitted: dict, params_S, d: int, n: int, record: dict
) -> dict:
    """A recurrent model's fitted GD++ scalars beside those its seeds imply, with the losses.

    "gdpp_eta", "gdpp_gamma": the fitted shared scalars; "trained_eta", "trained_gamma":
    `seed_stats` of `implied_recurrent_gdpp` over all seeds, and "..._converged" over the
    seeds that `record` (the run's convergence record) marks converged; "converged":
    "k/n"; the losses and cosines of `comparison_table`.
    """
    eta, gamma = implied_recurrent_gdpp(params_S["params"], d, n)
    table = comparison_table(comparison, fitted)
    return {
        "gdpp_eta": float(fitted["gdpp"]["eta"]),
        "gdpp_gamma": float(fitted["gdpp"]["gamma"]),
        "trained_eta": seed_stats(eta),
        "trained_gamma": seed_stats(gamma),
        "trained_eta_per_seed": eta,
        "trained_gamma_per_seed": gamma,
        "trained_eta_converged": converged_seed_stats(eta, record),
        "trained_gamma_converged": converged_seed_stats(gamma, record),
        "converged": convergence.fraction(record),
    } | {
        name: table[name]
        for name in ("trained_loss", "gd_loss", "gdpp_loss", "ols_loss", "cos_gdpp", "cos_gd")
    }
