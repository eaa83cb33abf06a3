"""Loss at every context length: position t of a prompt predicts y_t from t earlier pairs.

A prompt's tokens are (x_1, y_1), …, (x_N, y_N), (x_q, 0); position t = 0..N (T = N + 1
positions) reads a prediction of y_t (y_q at t = N) from the t pairs before it. Each function
returns the half-MSE over a batch of prompts at every position, shape (T,).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from icl_toy.core.constructions import gd_weights
from icl_toy.core.learners import gd, optimal_gd_eta
from icl_toy.core.losses import half_mse
from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.tasks import Prompt, TaskConfig, prompt_tokens


def position_targets(prompts: Prompt) -> jax.Array:
    """y_1, …, y_N, y_q of every prompt, (B, T, Y)."""
    return jnp.concatenate([prompts.y, prompts.y_q[:, None]], axis=1)


def causal_position_losses(model, params, prompts: Prompt) -> jax.Array:
    """Half-MSE at every position of a causal model's `position_predictions`, (T,)."""
    tokens_BxTxE = jax.vmap(prompt_tokens)(prompts)

    def predict(tokens_TxE):
        return model.apply(params, tokens_TxE, method=type(model).position_predictions)

    pred_BxTxY = jax.vmap(predict)(tokens_BxTxE)
    return jax.vmap(half_mse, in_axes=1)(pred_BxTxY, position_targets(prompts))


def prefix_position_losses(model, params, prompts: Prompt, d: int) -> jax.Array:
    """Half-MSE of `model` run on each prefix prompt (pairs 1..t, query (x_{t+1}, 0)), (T,).

    The label-free twin of `causal_position_losses`: one forward pass per position.
    """
    tokens_BxTxE = jax.vmap(prompt_tokens)(prompts)
    targets_BxTxY = position_targets(prompts)
    losses = []
    for t in range(tokens_BxTxE.shape[1]):
        query_BxE = tokens_BxTxE[:, t].at[:, d:].set(0.0)
        tokens = jnp.concatenate([tokens_BxTxE[:, :t], query_BxE[:, None]], axis=1)
        pred = jax.vmap(model.apply, in_axes=(None, 0))(params, tokens)
        losses.append(half_mse(pred, targets_BxTxY[:, t]))
    return jnp.stack(losses)


def gd_position_losses(task: TaskConfig, prompts: Prompt) -> jax.Array:
    """Half-MSE of the best one-step GD at every position, η*(t) = `optimal_gd_eta` at N = t.

    Position 0 has no pairs: GD from w = 0 predicts 0 there.
    """
    targets_BxTxY = position_targets(prompts)
    x_all = jnp.concatenate([prompts.x, prompts.x_q[:, None]], axis=1)
    losses = [half_mse(jnp.zeros_like(prompts.y_q), targets_BxTxY[:, 0])]
    for t in range(1, task.n_context + 1):
        eta_t = optimal_gd_eta(dataclasses.replace(task, n_context=t))
        prefix = prompts._replace(x=prompts.x[:, :t], y=prompts.y[:, :t], x_q=x_all[:, t])
        pred = jax.vmap(gd(jnp.asarray([eta_t])))(prefix)
        losses.append(half_mse(pred, targets_BxTxY[:, t]))
    return jnp.stack(losses)


@functools.partial(jax.jit, static_argnums=0)
def one_layer_position_curves(task: TaskConfig, params_S, prompts: Prompt) -> dict[str, jax.Array]:
    """Loss at every position of trained one-layer LSA params (seed axis S) and references.

    "trained_causal" (S, T): the layers read by `CausalLSATransformer` (same params; at the
    query it is the same model); "trained_prefix" (S, T): the plain `LSATransformer` run on
    each prefix prompt; "gd_construction" (T,): the GD construction at η* read causally;
    "gd_best_per_length" (T,): the best one-step GD at each context length.
    """
    causal = make_model(task, ModelConfig(kind="causal_lsa"))
    plain = make_model(task, ModelConfig())
    gd_params = gd_weights(causal, optimal_gd_eta(task), task.n_context)
    return {
        "trained_causal": jax.lax.map(
            lambda p: causal_position_losses(causal, p, prompts), params_S
        ),
        "trained_prefix": jax.lax.map(
            lambda p: prefix_position_losses(plain, p, prompts, task.d), params_S
        ),
        "gd_construction": causal_position_losses(causal, gd_params, prompts),
        "gd_best_per_length": gd_position_losses(task, prompts),
    }
