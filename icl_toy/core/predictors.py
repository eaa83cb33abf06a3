"""The one interface of an in-context learner: a **Predictor** maps one prompt to ŷ.

- `Predictor`: `predict(prompt) -> ŷ (Y,)` for ONE `icl_toy.core.tasks.Prompt` (x (N, D),
  y (N, Y), x_q (D,), …); batch it with `jax.vmap(predict)(prompts)`. Pure and traceable,
  so it can be vmapped, jitted and differentiated. Every explicit algorithm of
  `icl_toy.core.learners`, a transformer with its params (`model_predictor`) and a
  construction (a transformer with constructed params) is one.
- `ParametricPredictor`: `apply(theta, prompt) -> ŷ (Y,)`, a family of predictors indexed by
  a pytree θ: a model's params, or the step sizes of an explicit learner that
  `icl_toy.training.tuning.fit_learner` fits. `functools.partial(apply, theta)` is a
  `Predictor`.
- `SeededPredictor(apply, params)`: a `ParametricPredictor` with params that carry a leading
  seed axis S (S seeds trained or fitted in one vmapped run); seed s predicts with
  `apply(params[s], prompt)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from icl_toy.core.losses import half_mse
from icl_toy.core.tasks import Prompt, prompt_tokens

# One prompt -> ŷ (Y,).
Predictor = Callable[[Prompt], jax.Array]
# (θ, one prompt) -> ŷ (Y,).
ParametricPredictor = Callable[[Any, Prompt], jax.Array]


class SeededPredictor(NamedTuple):
    """A predictor per seed: `apply(params_of_one_seed, prompt) -> ŷ (Y,)`.

    Trained models and fitted learners come as S seeds vmapped in one run, so their params
    carry a leading seed axis S; `icl_toy.analysis.alignment` evaluates every seed on the
    same tasks.
    """

    apply: ParametricPredictor
    params: Any  # pytree, every leaf with a leading seed axis S


def as_seeded(predictor: Predictor | SeededPredictor) -> SeededPredictor:
    """A `SeededPredictor` as is; a plain predictor with a dummy seed axis of size 1."""
    if isinstance(predictor, SeededPredictor):
        return predictor
    return SeededPredictor(lambda _, prompt: predictor(prompt), jnp.zeros(1))


def batch_half_mse(predictor: Predictor, prompts: Prompt) -> jax.Array:
    """Half-MSE ½ mean ||ŷ − y_q||² of `predictor` over a batch of prompts (leading axis B)."""
    return half_mse(jax.vmap(predictor)(prompts), prompts.y_q)


# --- Transformers as predictors ------------------------------------------------------------


def model_predictor(model, params, w0: jax.Array | None = None) -> Predictor:
    """ŷ = model.apply(params, tokens(prompt)) for a flax model on regression tokens.

    Tokens are `prompt_tokens(prompt, w0)`: context (x_i, y_i), query (x_q, −W0 x_q).
    """

    def predict(prompt: Prompt) -> jax.Array:
        return model.apply(params, prompt_tokens(prompt, w0))

    return predict


def seeded_model_predictor(model, params_S, w0: jax.Array | None = None) -> SeededPredictor:
    """`model_predictor` for params with a leading seed axis S (e.g. `train`'s output)."""

    def apply(params, prompt: Prompt) -> jax.Array:
        return model.apply(params, prompt_tokens(prompt, w0))

    return SeededPredictor(apply, params_S)
