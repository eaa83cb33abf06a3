"""Meta-learning the scalars of explicit learners (step sizes, GD++ γ, momentum) with optax.

A learner to fit is a `icl_toy.core.predictors.ParametricPredictor`, `apply(theta, prompt) ->
ŷ (Y,)` for one prompt, with θ a small pytree of hyperparameters (e.g. per-step η_k and γ_k)
read by an algorithm of `icl_toy.core.learners` (`gd_learner` runs `learners.gd(θ["eta"])`).
`fit_learner` tunes θ the way a transformer is trained: Adam on the half-MSE of fresh
batches of prompts, all steps in one `lax.scan`, seeds vmapped; its θ with the seed axis and
the learner make a `SeededPredictor`. This is how von Oswald et al. (arXiv 2212.07677) fit
"GD++ with tuned scalars" and the per-layer GD baseline, written once for every learner.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from icl_toy.core import learners
from icl_toy.core.predictors import ParametricPredictor, batch_half_mse
from icl_toy.core.tasks import Prompt, TaskConfig, batch_at_step


class FitResult(NamedTuple):
    theta: dict  # fitted hyperparameters; every leaf has a leading seed axis S
    learning_rate: float  # the Adam learning rate of the fit that converged
    loss: np.ndarray  # (S, steps) half-MSE of each batch; inf/NaN where the step was skipped


def learner_half_mse(predict: ParametricPredictor, theta, prompts: Prompt) -> jax.Array:
    """Half-MSE of the learner `predict` with hyperparameters θ over a batch of prompts."""
    return batch_half_mse(functools.partial(predict, theta), prompts)


def _adam_fits(
    predict: ParametricPredictor,
    theta0_S: dict,
    keys_S: jax.Array,
    task: TaskConfig,
    batch_size: int,
    rates_S: jax.Array,
    clip_norm: float,
) -> tuple[dict, np.ndarray]:
    """S fits by Adam in one compiled call, fit s from θ0_S[s] on the data of keys_S[s] with
    the learning rate rates_S[s, t] at step t (S, steps): final θ (leading axis S) and
    losses (S, steps). Each fit carries its own rate curve, so fits under different
    schedules share one compiled call."""
    # GD++ with a large γ blows up on the rare prompt with γ·λ_max(H) > 2; such a batch is
    # skipped (`apply_if_finite` zeroes its direction) instead of ending the fit. Ten in a
    # row still diverge.
    direction = optax.apply_if_finite(
        optax.chain(optax.clip_by_global_norm(clip_norm), optax.scale_by_adam()),
        max_consecutive_errors=10,
    )

    def one_fit(theta0, data_key, rates):
        def step(carry, t):
            theta, opt_state = carry
            prompts = batch_at_step(data_key, task, batch_size, t)
            loss, grads = jax.value_and_grad(learner_half_mse, argnums=1)(predict, theta, prompts)
            updates, opt_state = direction.update(grads, opt_state, theta)
            updates = jax.tree.map(lambda u: -rates[t] * u, updates)
            return (optax.apply_updates(theta, updates), opt_state), loss

        steps = jnp.arange(rates.shape[0])
        (theta, _), losses = jax.lax.scan(step, (theta0, direction.init(theta0)), steps)
        return theta, losses

    theta, losses = jax.jit(jax.vmap(one_fit))(theta0_S, keys_S, rates_S)
    return jax.tree.map(np.asarray, theta), np.asarray(losses)


FIT_SCHEDULES = ("constant", "cosine")  # the shapes of a fit's Adam rate (`fit_rate`)


def fit_rate(
    learning_rate: float, steps: int, schedule: str, final_lr_fraction: float
) -> jax.Array:
    """Adam's learning rate at each of a fit's `steps` steps, (steps,): the constant
    `learning_rate` ("constant"), or a half cosine from it down to `final_lr_fraction` of it
    at the last step ("cosine")."""
    if schedule not in FIT_SCHEDULES:
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if schedule == "constant":
        return jnp.full(steps, learning_rate, jnp.result_type(float))
    return optax.cosine_decay_schedule(learning_rate, steps, alpha=final_lr_fraction)(
        jnp.arange(steps)
    )


def fit_learner(
    predict: ParametricPredictor,
    theta0: dict,
    task: TaskConfig,
    *,
    key: jax.Array,
    steps: int = 2000,
    batch_size: int = 1024,
    learning_rate: float = 1e-2,
    num_seeds: int = 1,
    clip_norm: float = 10.0,
    halvings: int = 0,
    schedule: str = "constant",
    final_lr_fraction: float = 0.0,
) -> FitResult:
    """Fit θ by Adam on online prompts of `task`; S seeds (independent data) vmapped.

    Every seed starts from `theta0`; the data of seed s at step t is a pure function of
    (key, s, t). Returns the final θ of each seed and the training loss curve. A fit that
    diverges (θ not finite) is rerun from θ0 with half the learning rate, at most `halvings`
    times; then `FloatingPointError` is raised. `schedule` and `final_lr_fraction` shape the
    rate over the steps (`fit_rate`).
    """
    if steps < 1 or batch_size < 1 or num_seeds < 1:
        raise ValueError(
            f"steps, batch_size and num_seeds must be >= 1, got {steps}, {batch_size}, {num_seeds}"
        )
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    theta0 = jax.tree.map(lambda v: jnp.asarray(v, jnp.result_type(float)), theta0)
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(num_seeds))
    theta0_S = jax.tree.map(lambda v: jnp.broadcast_to(v, (num_seeds, *v.shape)), theta0)
    rates = jnp.broadcast_to(
        fit_rate(learning_rate, steps, schedule, final_lr_fraction), (num_seeds, steps)
    )
    theta, losses = _adam_fits(predict, theta0_S, keys, task, batch_size, rates, clip_norm)
    if all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(theta)):
        return FitResult(theta, learning_rate, losses)
    if halvings > 0:
        return fit_learner(
            predict,
            theta0,
            task,
            key=key,
            steps=steps,
            batch_size=batch_size,
            learning_rate=learning_rate / 2,
            num_seeds=num_seeds,
            clip_norm=clip_norm,
            halvings=halvings - 1,
            schedule=schedule,
            final_lr_fraction=final_lr_fraction,
        )
    step = int(np.argmax(~np.isfinite(losses).all(axis=0)))
    raise FloatingPointError(
        f"fitting the learner diverged (non-finite loss from step {step}); lower the "
        f"learning rate ({learning_rate}) or start from a stabler theta0"
    )


def gd_learner(theta: dict, prompt: Prompt) -> jax.Array:
    """K-step GD with a tuned step per step: θ = {"eta": (K,)} (`learners.gd`)."""
    return learners.gd(theta["eta"])(prompt)


def gdpp_learner(theta: dict, prompt: Prompt) -> jax.Array:
    """K-step GD++ with tuned (η_k, γ_k): θ = {"eta": (K,), "gamma": (K,)} (`learners.gdpp`)."""
    return learners.gdpp(theta["eta"], theta["gamma"])(prompt)


def initial_steps(values: float | Sequence[float], num_steps: int) -> jnp.ndarray:
    """A (K,) array from a scalar or K values: the starting point of a per-step fit."""
    arr = np.broadcast_to(np.asarray(values, dtype=float), (num_steps,))
    return jnp.asarray(arr)


def heavy_ball_learner(theta: dict, prompt: Prompt) -> jax.Array:
    """K-step heavy-ball GD with tuned (η_k, β_k): θ = {"eta": (K,), "beta": (K,) or ()}.

    A scalar β is one momentum shared by all steps (the family `DepthMomentumLSA` builds).
    """
    return learners.heavy_ball(theta["eta"], theta["beta"])(prompt)


def nesterov_learner(theta: dict, prompt: Prompt) -> jax.Array:
    """K-step Nesterov accelerated GD with tuned (η_k, β_k), θ as `heavy_ball_learner`."""
    return learners.nesterov(theta["eta"], theta["beta"])(prompt)


def constant_step_learner(learner: ParametricPredictor, num_steps: int) -> ParametricPredictor:
    """`learner` with every hyperparameter shared by its K steps: θ's leaves are scalars.

    E.g. `constant_step_learner(heavy_ball_learner, K)` tunes the classic heavy ball with
    one (η, β) for all K steps, whose β is identifiable (per-step η_k and β are not).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")

    def predict(theta: dict, prompt: Prompt) -> jax.Array:
        per_step = jax.tree.map(lambda v: jnp.broadcast_to(v, (num_steps,)), theta)
        return learner(per_step, prompt)

    return predict


def normalized_gamma(learner: ParametricPredictor) -> ParametricPredictor:
    """`learner` with θ["gamma"] read in units of Ŝ = H/N: γ = γ̂/N, so x ← (I − γ̂ Ŝ) x.

    GD++'s γ scales like 1/N; fitting γ̂ = Nγ gives Adam the same step scale at every
    context length. Divide the fitted γ̂ by N to build `gdpp_weights`.
    """

    def predict(theta: dict, prompt: Prompt) -> jax.Array:
        theta = theta | {"gamma": theta["gamma"] / prompt.x.shape[0]}
        return learner(theta, prompt)

    return predict


# --- Tuned K-step GD and GD++ (the baselines of von Oswald et al.'s deep models) ----------


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Adam on the explicit learner's own half-MSE (`fit_learner`)."""

    steps: int = 3000
    batch_size: int = 512
    learning_rate: float = 0.05  # step sizes are O(10), so a large Adam step
    # "constant", or "cosine": the rate decays along a half cosine to final_lr_fraction of
    # itself at the last step, so a fit ends at the minimum of the expected loss and not
    # anywhere in the noise ball that a constant rate leaves around it.
    schedule: Literal["constant", "cosine"] = "constant"
    final_lr_fraction: float = 0.0
    # Held-out selection (`fit_gd_and_gdpp_ladder`) also fits every start under each of
    # these schedules and keeps the best: no one schedule is best for every learner and K
    # (a decayed rate lands on the minimum near its start; a constant one travels further).
    also_schedules: tuple[Literal["constant", "cosine"], ...] = ()

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError(f"FitConfig needs positive steps, batch_size, learning_rate: {self}")
        if self.schedule not in FIT_SCHEDULES:
            raise ValueError(
                f"FitConfig.schedule must be 'constant' or 'cosine', got {self.schedule!r}"
            )
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(
                f"FitConfig.final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}"
            )
        schedules = self.selection_schedules()
        if not set(schedules) <= set(FIT_SCHEDULES) or len(set(schedules)) != len(schedules):
            raise ValueError(
                "FitConfig.also_schedules must hold distinct schedules of 'constant', 'cosine' "
                f"other than schedule = {self.schedule!r}, got {self.also_schedules!r}"
            )

    def selection_schedules(self) -> tuple[str, ...]:
        """The schedules every start is fitted under in held-out selection, `schedule` first."""
        return (self.schedule, *self.also_schedules)

    def rate(self, schedule: str | None = None) -> jax.Array:
        """Adam's learning rate at each step under `schedule` (default: `schedule`), (steps,)."""
        schedule = self.schedule if schedule is None else schedule
        return fit_rate(self.learning_rate, self.steps, schedule, self.final_lr_fraction)


def gd_and_gdpp_learners(
    kind: Literal["per_layer", "recurrent"], num_steps: int
) -> tuple[ParametricPredictor, ParametricPredictor]:
    """(GD, GD++) with per-step scalars (per-layer models) or shared ones (recurrent)."""
    if kind not in ("per_layer", "recurrent"):
        raise ValueError(f"kind must be 'per_layer' or 'recurrent', got {kind!r}")
    if kind == "per_layer":
        return gd_learner, gdpp_learner
    return (
        constant_step_learner(gd_learner, num_steps),
        constant_step_learner(gdpp_learner, num_steps),
    )


def _fit_one(
    predict: ParametricPredictor, theta0: dict, task: TaskConfig, key, fit: FitConfig
) -> dict:
    """θ of one fit without the seed axis, and the Adam learning rate that converged
    (halved on divergence, at most 3 times)."""
    result = fit_learner(
        predict,
        theta0,
        task,
        key=key,
        steps=fit.steps,
        batch_size=fit.batch_size,
        learning_rate=fit.learning_rate,
        halvings=3,
        schedule=fit.schedule,
        final_lr_fraction=fit.final_lr_fraction,
    )
    theta = {name: np.asarray(value[0]) for name, value in result.theta.items()}
    return theta | {"fit_learning_rate": result.learning_rate}


def fit_gd_and_gdpp(
    task: TaskConfig,
    num_steps: int,
    kind: Literal["per_layer", "recurrent"],
    key: jax.Array,
    fit: FitConfig,
) -> dict:
    """Tuned K-step GD and GD++ scalars: {"gd": {"eta", "gamma"=0}, "gdpp": {"eta", "gamma"}}.

    One scalar per step (`kind="per_layer"`) or one shared by all steps ("recurrent"). Both
    fits start at the best one-step η (`learners.tuned_gd_eta`: the closed form η* where the
    inputs have i.i.d. symmetric coordinates, else a line search on 10 000 tasks drawn from
    `key`) and γ = 0; GD++'s γ is fitted as γ̂ = Nγ (`normalized_gamma`) and returned as γ,
    ready for `constructions.gdpp_weights`.
    """
    key_gd, key_gdpp = jax.random.split(key)
    gd, gdpp = gd_and_gdpp_learners(kind, num_steps)
    start = learners.tuned_gd_eta(task, 1, key=jax.random.fold_in(key, 2))
    if kind == "per_layer":
        start = initial_steps(start, num_steps)
    gd_theta = _fit_one(gd, {"eta": start}, task, key_gd, fit)
    gdpp_theta = _fit_one(
        normalized_gamma(gdpp), {"eta": start, "gamma": jnp.zeros_like(start)}, task, key_gdpp, fit
    )
    gdpp_theta["gamma"] = gdpp_theta["gamma"] / task.n_context
    return {"gd": gd_theta | {"gamma": np.zeros_like(gd_theta["eta"])}, "gdpp": gdpp_theta}


def fit_normalized_gdpp(
    task: TaskConfig, eta0_K: jax.Array, key: jax.Array, fit: FitConfig
) -> dict:
    """Per-step GD++ (η_k, γ̂_k) fitted from (η0, 0) with γ read as γ̂/n (`normalized_gamma`).

    Returns θ = {"eta", "gamma"} with γ̂ unscaled, so `normalized_gamma(gdpp_learner)` at
    any context length n runs GD++ with γ = γ̂/n, and "fit_learning_rate" (`fit_learner`
    with at most 3 halvings on divergence).
    """
    theta0 = {"eta": eta0_K, "gamma": jnp.zeros_like(eta0_K)}
    return _fit_one(normalized_gamma(gdpp_learner), theta0, task, key, fit)


# --- Baselines at their optimum: K = 1..K_max, warm-started, best on held-out tasks --------


def _best_fit(
    predict: ParametricPredictor,
    starts: list[dict],
    task: TaskConfig,
    key: jax.Array,
    fit: FitConfig,
    held_out: Prompt,
) -> dict:
    """Fit θ from every start under every schedule of `fit.selection_schedules()` (one
    compiled call; start i sees the same data under each schedule) and keep, of the fitted
    θs and the starts themselves, the one with the lowest half-MSE on `held_out` (tasks the
    fits never saw)."""
    score = jax.jit(functools.partial(learner_half_mse, predict))
    as_float = functools.partial(jnp.asarray, dtype=jnp.result_type(float))
    starts = [jax.tree.map(as_float, theta0) for theta0 in starts]
    schedules = fit.selection_schedules()
    runs = [(i, schedule) for schedule in schedules for i in range(len(starts))]
    theta0_S = jax.tree.map(lambda *v: jnp.stack(v), *[starts[i] for i, _ in runs])
    keys = jnp.stack([jax.random.fold_in(key, i) for i, _ in runs])
    rates = jnp.stack([fit.rate(schedule) for _, schedule in runs])
    fitted_S, _ = _adam_fits(predict, theta0_S, keys, task, fit.batch_size, rates, 10.0)
    candidates = []
    for i, theta0 in enumerate(starts):
        for j, schedule in enumerate(schedules):
            fitted = {k: np.asarray(v[j * len(starts) + i]) for k, v in fitted_S.items()}
            label = "fit" if len(schedules) == 1 else f"{schedule} fit"
            candidates.append((f"{label} from start {i}", fitted))
        candidates.append((f"start {i}", theta0))
    scored = []
    for origin, theta in candidates:
        theta = {k: np.asarray(v) for k, v in theta.items()}
        loss = float(score(theta, held_out))
        if np.isfinite(loss):  # a fit that diverged is dropped; its start stays
            scored.append((loss, origin, theta))
    if not scored:
        raise FloatingPointError("every fit and start of the learner gives a non-finite loss")
    loss, origin, theta = min(scored, key=lambda c: c[0])
    return theta | {"held_out_loss": loss, "chosen": origin}


def fit_gd_and_gdpp_ladder(
    task: TaskConfig,
    max_steps: int,
    kind: Literal["per_layer", "recurrent"],
    key: jax.Array,
    fit: FitConfig,
    held_out: Prompt,
    eta_scales: Sequence[float] = (0.5, 1.0, 1.5),
    also_from: Sequence[dict] | None = None,
    prepend_starts: bool = False,
) -> list[dict]:
    """Tuned K-step GD and GD++ for K = 1..max_steps, each at its optimum on `held_out`.

    Every K is fitted from several starts and the best on `held_out` is kept, with the
    starts themselves among the candidates: the K − 1 solution extended by a step (per-step
    scalars: η_K = γ_K = 0, which is exactly the K − 1 learner, so the held-out loss of
    the per-layer family never rises with K; shared scalars: the K − 1 values), and the
    one-step η* scaled by each of `eta_scales` with γ = 0; GD++ also starts from this K's
    tuned GD (γ = 0), so it is never worse than GD on `held_out`. γ is fitted as γ̂ = Nγ
    (`normalized_gamma`) and returned as γ. Returns one {"gd": θ, "gdpp": θ} per K, each
    θ with "eta", "gamma", "held_out_loss", "chosen" (which start or fit won).

    `also_from`, another ladder (e.g. the recurrent one, for the per-step family that
    contains it), adds its K-th GD and GD++ as starts, broadcast to this kind's shapes.
    `prepend_starts` (per-step scalars) also starts from the K − 1 solutions with the new
    step first (η_1 = γ_1 = 0, again exactly the K − 1 learner): Adam from the two
    extensions reaches different minima of the rough per-step landscape.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    n = task.n_context
    eta_star = float(learners.tuned_gd_eta(task, 1, key=jax.random.fold_in(key, 2)))
    ladder, previous = [], None
    for k in range(1, max_steps + 1):
        gd, gdpp = gd_and_gdpp_learners(kind, k)
        gdpp = normalized_gamma(gdpp)
        # Every start in GD++'s units (η, γ̂); GD's starts drop γ.
        starts = [
            {
                "eta": initial_steps(s * eta_star, k) if kind == "per_layer" else s * eta_star,
                "gamma": np.zeros(k) if kind == "per_layer" else 0.0,
            }
            for s in eta_scales
        ]
        if previous is not None:
            for name in ("gd", "gdpp"):
                eta, gamma = previous[name]["eta"], previous[name]["gamma"] * n
                if kind == "per_layer":
                    if prepend_starts:
                        starts.append(
                            {"eta": np.insert(eta, 0, 0.0), "gamma": np.insert(gamma, 0, 0.0)}
                        )
                    eta, gamma = np.append(eta, 0.0), np.append(gamma, 0.0)
                starts.insert(0, {"eta": eta, "gamma": gamma})
        if also_from is not None and k <= len(also_from):
            for name in ("gd", "gdpp"):
                other = also_from[k - 1][name]
                eta, gamma = np.asarray(other["eta"]), np.asarray(other["gamma"]) * n
                if kind == "per_layer":
                    eta, gamma = np.broadcast_to(eta, (k,)), np.broadcast_to(gamma, (k,))
                elif eta.ndim:  # per-step values into one shared scalar: their mean
                    eta, gamma = eta.mean(), gamma.mean()
                starts.append({"eta": eta, "gamma": gamma})
        k_key = jax.random.fold_in(key, 100 + k)
        gd_theta = _best_fit(
            gd,
            [{"eta": s["eta"]} for s in starts],
            task,
            jax.random.fold_in(k_key, 0),
            fit,
            held_out,
        )
        # GD is GD++ at γ = 0: this K's tuned GD is a GD++ candidate, so GD++ ≤ GD.
        gd_as_gdpp = {"eta": gd_theta["eta"], "gamma": np.zeros_like(gd_theta["eta"])}
        gdpp_starts = [*starts, gd_as_gdpp]
        gdpp_theta = _best_fit(gdpp, gdpp_starts, task, jax.random.fold_in(k_key, 1), fit, held_out)
        gdpp_theta["gamma"] = gdpp_theta["gamma"] / n
        previous = {
            "gd": gd_theta | {"gamma": np.zeros_like(gd_theta["eta"])},
            "gdpp": gdpp_theta,
        }
        ladder.append(previous)
    return ladder


def fit_ladders(
    task: TaskConfig,
    max_steps: int,
    kinds: Sequence[str],
    key: jax.Array,
    fit: FitConfig | Sequence[FitConfig],
    held_out: Prompt,
    eta_scales: Sequence[float] = (0.5, 1.0, 1.5),
    prepend_starts: bool = False,
) -> dict[str, list[dict]]:
    """`fit_gd_and_gdpp_ladder` of every kind in `kinds`, {kind: ladder} in fitting order.

    The shared-scalar ("recurrent") family is fitted first and its solutions are starts of
    the per-step one, which contains it: per-step scalars are then never worse on
    `held_out`. Each kind's fit key is `key` folded with the kind's index in `kinds`.

    With several FitConfigs in `fit`, each runs these ladders on its own (the same keys,
    so the same data) and every rung keeps the best of them on `held_out`, its "chosen"
    prefixed "ladder j: ". The landscape has many minima and a ladder's warm starts follow
    the path its own rungs took, so no one fit config gives the best rung at every K; the
    rung-wise best is no worse than any of them, and keeps their guarantees (each ladder's
    per-step family is non-increasing in K, never worse than its shared one, and GD++ never
    worse than GD; so is the minimum over ladders).
    """
    fits = (fit,) if isinstance(fit, FitConfig) else tuple(fit)
    if not fits:
        raise ValueError("fit_ladders needs at least one FitConfig")
    runs = [
        _ladders_of_one_fit(task, max_steps, kinds, key, f, held_out, eta_scales, prepend_starts)
        for f in fits
    ]
    if len(runs) == 1:
        return runs[0]
    best: dict[str, list[dict]] = {}
    for kind in runs[0]:
        best[kind] = []
        for k in range(max_steps):
            rung = {}
            for name in ("gd", "gdpp"):
                j, theta = min(
                    enumerate(run[kind][k][name] for run in runs),
                    key=lambda item: item[1]["held_out_loss"],
                )
                rung[name] = theta | {"chosen": f"ladder {j}: {theta['chosen']}"}
            best[kind].append(rung)
    return best


def _ladders_of_one_fit(
    task: TaskConfig,
    max_steps: int,
    kinds: Sequence[str],
    key: jax.Array,
    fit: FitConfig,
    held_out: Prompt,
    eta_scales: Sequence[float],
    prepend_starts: bool,
) -> dict[str, list[dict]]:
    """`fit_ladders` under one FitConfig."""
    ladders: dict[str, list[dict]] = {}
    for i, kind in sorted(enumerate(kinds), key=lambda item: item[1] != "recurrent"):
        ladders[kind] = fit_gd_and_gdpp_ladder(
            task,
            max_steps,
            kind,
            jax.random.fold_in(key, 10 + i),
            fit,
            held_out,
            eta_scales,
            also_from=ladders.get("recurrent"),
            prepend_starts=prepend_starts,
        )
    return ladders
