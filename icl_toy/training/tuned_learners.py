"""Families of explicit learners tuned by `fit_learner`, scored on shared held-out prompts.

A family maps a name to (predict, θ0): `predict(θ, prompt)` (a `ParametricPredictor`) as in
`icl_toy.training.tuning`, θ0 the start of the fit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core.predictors import ParametricPredictor
from icl_toy.core.tasks import Prompt, TaskConfig
from icl_toy.training.tuning import (
    constant_step_learner,
    fit_learner,
    gd_learner,
    heavy_ball_learner,
    learner_half_mse,
    nesterov_learner,
)


def momentum_family(eta0: float, num_steps: int, beta0: float = 0.1) -> dict[str, tuple]:
    """K-step GD and momentum learners, the explicit counterparts of momentum attention.

    "gd": per-step η_k; "gd_constant": one η; "heavy_ball", "nesterov": one (η, β);
    "heavy_ball_shared_beta": per-step η_k and one β (the depth-momentum construction's
    family). Fits start at η0 and β0; per-step η_k start spread over η0 · [0.6, 1.4],
    since GD steps commute and equal η_k are a symmetric saddle of the fit.
    """
    k = num_steps
    etas0 = eta0 * jnp.linspace(0.6, 1.4, k) if k > 1 else jnp.full(1, eta0)
    return {
        "gd": (gd_learner, {"eta": etas0}),
        "gd_constant": (constant_step_learner(gd_learner, k), {"eta": eta0}),
        "heavy_ball": (constant_step_learner(heavy_ball_learner, k), {"eta": eta0, "beta": beta0}),
        "heavy_ball_shared_beta": (heavy_ball_learner, {"eta": etas0, "beta": beta0}),
        "nesterov": (constant_step_learner(nesterov_learner, k), {"eta": eta0, "beta": beta0}),
    }


def fit_and_score(
    learners: dict[str, tuple[ParametricPredictor, dict]],
    task: TaskConfig,
    eval_prompts: Prompt,
    *,
    key: jax.Array,
    **fit_kwargs,
) -> dict[str, dict]:
    """Fit every learner (`fit_learner`, key folded with its index) and score it on `eval_prompts`.

    Returns {name: {"theta": {param: per-fit-seed values}, "eval_loss": per-fit-seed half-MSE,
    "mean_eval_loss": their mean}}, as lists ready for JSON; `fit_kwargs` go to `fit_learner`
    (steps, num_seeds, …).
    """
    out = {}
    for i, (name, (predict, theta0)) in enumerate(learners.items()):
        fit = fit_learner(predict, theta0, task, key=jax.random.fold_in(key, i), **fit_kwargs)
        per_fit_seed = jax.vmap(functools.partial(learner_half_mse, predict), in_axes=(0, None))
        losses = jax.jit(per_fit_seed)(fit.theta, eval_prompts)
        eval_loss = np.asarray(losses).tolist()
        out[name] = {
            "theta": {p: np.asarray(v).tolist() for p, v in fit.theta.items()},
            "eval_loss": eval_loss,
            "mean_eval_loss": float(np.mean(eval_loss)),
        }
    return out
