"""Learning curves: loss against the number n of in-context examples (Garg et al. 2022).

`learning_curve(predictors, task, lengths, key=..., num_tasks=...)` evaluates any learners
(`icl_toy.core.predictors.Predictor`, or a `SeededPredictor` with a leading seed axis) on
the same held-out tasks at every context length n and returns, per learner and n, the mean half
squared error ½||ŷ − y_q||² with a 95% Student-t interval (`icl_toy.analysis.alignment.summarize`):
over seeds for a seeded learner (each seed's mean over the same tasks), over tasks
otherwise; the interval over tasks and the median over tasks are always kept as well. A
curve is the interval record of `icl_toy.analysis.stats` with lists over lengths for its
"mean", "low" and "high".

**Nested prompts.** Each task is drawn once with max(lengths) context pairs; the prompt of
length n is its first n pairs with the same query (`prefix`). So the curves of all learners
and all n are paired: a difference between two n is the effect of the added examples
alone, not of new tasks. `learning_curves` evaluates several test laws (e.g. the OOD
shifts of `apply_shift`) from the same key, so the shifted tasks are the same draws mapped
through another law (same uniforms, hence the same teachers' directions and noise signs).

**Prompt length and trained attention.** An LSA layer sums over its keys with the 1/N of
the training length folded into W_PV (`icl_toy.core.models.lsa_update`): at n ≠ N the GD
construction takes a step η·n/N (docs/theory.md §1, §6). `length_normalised` rescales every
layer's W_PV by N/n, so the attention averages over the context, which is the GD step of
`icl_toy.core.learners.gd` (1/n inside η) and the predictor ŷ = x_qᵀ Γ (1/n) Σ_i y_i x_i of
Zhang, Frei & Bartlett (docs/theory.md §6). Both are worth a curve: the raw layer is what the
trained weights compute, the normalised one is the algorithm they implement.

Compilation: the prompt shape changes with n, so every (learner, length) pair is its own
compiled program, reused by every test law. One program per learner holding all lengths
compiled OLS in 12 s and hung while compiling ridge on a 2-core CPU (jax 0.10.2), like the
whole-family program that `icl_toy.analysis.alignment` avoids.

Heavy tails: with label noise the OLS risk is infinite at n ∈ {d − 1, d, d + 1} (docs/theory.md §8),
so the sample mean there is dominated by a few near-singular prompts and its t-interval is
not a valid interval; the median is reported beside it. Plot such curves on a log axis.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.analysis import baselines
from icl_toy.analysis.alignment import summarize
from icl_toy.core import closed_forms
from icl_toy.core.predictors import Predictor, SeededPredictor, as_seeded
from icl_toy.core.tasks import Prompt, TaskConfig, input_covariance, sample_batch

ShiftKind = Literal["input_scale", "weight_scale", "skewed_covariance", "label_noise"]
SHIFT_KINDS: tuple[str, ...] = ("input_scale", "weight_scale", "skewed_covariance", "label_noise")


# --- OOD test laws ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shift:
    """An out-of-distribution test law: the training task changed in one respect.

    - `input_scale` α > 0: every input x → αx (uniform U(αa, αb); Gaussian N(0, α²Σ)).
    - `weight_scale` c > 0: the teacher scale τ → cτ.
    - `skewed_covariance` κ >= 1: Gaussian inputs N(0, Σ_κ) with condition number κ and the
      same trace as the training law (`skewed_covariance`); κ = 1 is isotropic.
    - `label_noise` σ_test >= 0: the label noise σ → σ_test (with `query_noise` False, the
      default, only the context labels are noisy and losses are excess risks).
    """

    kind: ShiftKind
    value: float

    def __post_init__(self):
        if self.kind not in SHIFT_KINDS:
            raise ValueError(f"unknown shift kind {self.kind!r}; known kinds: {SHIFT_KINDS}")
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise ValueError(f"Shift.value must be a number, got {value!r}")
        if not np.isfinite(value):
            raise ValueError(f"Shift.value must be finite, got {value}")
        if self.kind in ("input_scale", "weight_scale") and not value > 0:
            raise ValueError(f"a {self.kind} shift needs a value > 0, got {value}")
        if self.kind == "skewed_covariance" and not value >= 1:
            raise ValueError(f"a skewed_covariance shift needs a condition >= 1, got {value}")
        if self.kind == "label_noise" and not value >= 0:
            raise ValueError(f"a label_noise shift needs a noise std >= 0, got {value}")

    @property
    def label(self) -> str:
        """A short name, e.g. 'input_scale=2'."""
        return f"{self.kind}={self.value:g}"


def skewed_covariance(d: int, condition: float, mean_variance: float) -> np.ndarray:
    """Σ = Q diag(λ) Qᵀ, (D, D): eigenvalues geometric from 1 to κ rescaled to mean s.

    λ_i ∝ κ^{i/(d−1)}, so λ_max/λ_min = κ and tr Σ = d·s (the signal power of the training
    law is kept; only its shape changes). Q is a fixed rotation, the orthogonal factor of a
    QR decomposition of a standard normal matrix from numpy's generator with seed 0 (signs
    fixed by diag(R) > 0), so the eigenbasis is not the coordinate axes.
    """
    if d < 1 or not condition >= 1 or not mean_variance > 0:
        raise ValueError(f"need d >= 1, condition >= 1, mean_variance > 0; got {d}, {condition}")
    exponents = np.linspace(0.0, 1.0, d) if d > 1 else np.zeros(1)
    eigenvalues = condition**exponents
    eigenvalues *= mean_variance / eigenvalues.mean()
    q, r = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))
    q = q * np.sign(np.diag(r))[None, :]
    cov = np.einsum("ik,jk->ij", q * eigenvalues[None, :], q)
    return (cov + cov.T) / 2.0


def apply_shift(task: TaskConfig, shift: Shift | None) -> TaskConfig:
    """The test law of `shift` applied to `task` (None: `task` itself)."""
    if shift is None:
        return task
    if not isinstance(shift, Shift):
        raise ValueError(f"expected a Shift or None, got {shift!r}")
    if shift.kind == "input_scale":
        alpha = float(shift.value)
        if task.inputs == "uniform":
            return dataclasses.replace(
                task, input_low=alpha * task.input_low, input_high=alpha * task.input_high
            )
        cov = alpha**2 * input_covariance(task)
        return dataclasses.replace(task, input_cov=_as_nested_tuple(cov))
    if shift.kind == "weight_scale":
        return dataclasses.replace(task, w_scale=task.w_scale * float(shift.value))
    if shift.kind == "label_noise":
        return dataclasses.replace(task, noise_std=float(shift.value))
    mean_variance = float(np.trace(input_covariance(task))) / task.d
    cov = skewed_covariance(task.d, float(shift.value), mean_variance)
    return dataclasses.replace(task, inputs="gaussian", input_cov=_as_nested_tuple(cov))


def _as_nested_tuple(matrix: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(matrix))


# --- Learners at any context length ----------------------------------------------------------


def length_normalised(predictor: SeededPredictor, n_train: int) -> SeededPredictor:
    """The same LSA transformer with every layer's W_PV scaled by N/n on a prompt of n pairs.

    W_PV = P W_V, so scaling the projection `w_p` scales W_PV. The attention then averages
    over the n context tokens instead of summing with the training length's 1/N: a GD layer
    takes the step η of `learners.gd` at every n, and a GD++ layer the input step γN/n,
    i.e. x ← (I − γN Ŝ_n) x with Ŝ_n = XᵀX/n (see `tuning.normalized_gamma`).
    """
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    inner = predictor.params.get("params") if isinstance(predictor.params, dict) else None
    if not isinstance(inner, dict) or "w_p" not in inner:
        raise ValueError("length_normalised needs LSA params {'params': {'w_p': ..., ...}}")

    def apply(params, prompt: Prompt) -> jax.Array:
        return predictor.apply(scale_value_projection(params, n_train / prompt.x.shape[0]), prompt)

    return SeededPredictor(apply, predictor.params)


def scale_value_projection(params: dict, factor) -> dict:
    """LSA params with every layer's projection `w_p`, hence W_PV = P W_V, times `factor`."""
    return {**params, "params": {**params["params"], "w_p": params["params"]["w_p"] * factor}}


# --- Nested prompts and the curves -----------------------------------------------------------


def prefix(prompts: Prompt, n: int) -> Prompt:
    """The first n context pairs of each prompt, with the same query and teacher.

    Works with or without a leading batch axis (x is (..., N, D), y is (..., N, Y)).
    """
    max_n = prompts.x.shape[-2]
    if not 1 <= n <= max_n:
        raise ValueError(f"prefix length must be in 1..{max_n}, got {n}")
    return prompts._replace(x=prompts.x[..., :n, :], y=prompts.y[..., :n, :])


@functools.partial(jax.jit, static_argnums=(1, 2))
def nested_prompts(key: jax.Array, task: TaskConfig, num_tasks: int) -> Prompt:
    """`num_tasks` prompts of `task.n_context` pairs; `prefix` cuts the shorter ones."""
    return sample_batch(key, task, num_tasks)


def _loss_program(predictor: Predictor | SeededPredictor) -> Callable[[Prompt], jax.Array]:
    """A compiled map from a batch of prompts to half squared errors (S, B); S = 1 unseeded.

    The jitted function is built once per learner and retraced only for a new prompt shape,
    so every test law at a given n reuses one compiled program.
    """
    apply, params = as_seeded(predictor)

    def per_task(theta, prompt: Prompt) -> jax.Array:
        return 0.5 * jnp.sum((apply(theta, prompt) - prompt.y_q) ** 2)

    over_seeds = jax.vmap(jax.vmap(per_task, in_axes=(None, 0)), in_axes=(0, None))
    return functools.partial(jax.jit(over_seeds), params)


def _check_lengths(lengths: Sequence[int]) -> tuple[int, ...]:
    lengths = tuple(int(n) for n in lengths)
    if not lengths:
        raise ValueError("lengths is empty")
    if min(lengths) < 1 or len(set(lengths)) != len(lengths):
        raise ValueError(f"lengths must be distinct integers >= 1, got {lengths}")
    return lengths


def learning_curves(
    predictors: Mapping[str, Predictor | SeededPredictor],
    tasks: Mapping[str, TaskConfig],
    lengths: Sequence[int],
    *,
    key: jax.Array,
    num_tasks: int,
) -> dict[str, dict[str, Any]]:
    """`learning_curve` for several test laws, one compiled program per (learner, length).

    Every law draws its tasks from the same `key` (coupled draws; see the module
    docstring); all laws must share d and d_y. Returns {law name: learning_curve result}.
    """
    lengths = _check_lengths(lengths)
    if not predictors:
        raise ValueError("predictors is empty")
    if not tasks:
        raise ValueError("tasks is empty")
    if num_tasks < 2:
        raise ValueError(f"num_tasks must be >= 2 for an interval over tasks, got {num_tasks}")
    shapes = {(t.d, t.d_y) for t in tasks.values()}
    if len(shapes) != 1:
        raise ValueError(f"every test law needs the same (d, d_y), got {sorted(shapes)}")
    sizes = {
        jax.tree.leaves(p.params)[0].shape[0]
        for p in predictors.values()
        if isinstance(p, SeededPredictor)
    }
    if len(sizes) > 1:
        raise ValueError(f"the predictors' seed axes have different sizes {sorted(sizes)}")
    programs = {name: _loss_program(p) for name, p in predictors.items()}
    max_n = max(lengths)
    prompts = {
        law: nested_prompts(key, dataclasses.replace(task, n_context=max_n), num_tasks)
        for law, task in tasks.items()
    }
    out = {}
    for law, task in tasks.items():
        curves = {}
        for name, program in programs.items():
            seeded = isinstance(predictors[name], SeededPredictor)
            rows, undefined = [], {}
            for n in lengths:
                try:
                    values_SxB = np.asarray(program(prefix(prompts[law], n)), dtype=float)
                except ValueError as error:  # e.g. k-NN with k > n: no prediction exists
                    undefined[n] = str(error)
                    values_SxB = None
                rows.append(values_SxB)
            curves[name] = _curve(rows, seeded, undefined)
        out[law] = {"task": task, "lengths": list(lengths), "num_tasks": num_tasks}
        out[law]["curves"] = curves
    return out


def learning_curve(
    predictors: Mapping[str, Predictor | SeededPredictor],
    task: TaskConfig,
    lengths: Sequence[int],
    *,
    key: jax.Array,
    num_tasks: int,
) -> dict[str, Any]:
    """Mean half squared error of each learner at each context length n, with 95% CIs.

    All learners see the same `num_tasks` tasks of `task`'s law (its `n_context` is
    replaced by max(lengths)); the prompt of length n is the first n pairs (`prefix`).
    Returns {"task", "lengths", "num_tasks", "curves": {name: curve}} where each curve is
    an interval record with lists over lengths: "mean", "low", "high", "method" ("t") and
    "n" (the 95% interval over the n = S seeds if the learner is seeded with S > 1, else
    over the n tasks; "over" says which), "tasks" (the same record over tasks, always),
    "median" (over tasks of the seed-averaged values), "per_seed" (S lists), and
    "undefined" {n: reason} where the learner has no prediction (NaN there).
    """
    return learning_curves(predictors, {"": task}, lengths, key=key, num_tasks=num_tasks)[""]


def _curve(rows: list[np.ndarray | None], seeded: bool, undefined: dict) -> dict[str, Any]:
    """Interval records with lists over lengths of per-length (S, B) values; None gives NaN."""
    shape = next((r.shape for r in rows if r is not None), (1, 0))
    num_seeds, num_tasks = shape
    over = "seeds" if seeded and num_seeds > 1 else "tasks"
    curve: dict[str, Any] = {"mean": [], "low": [], "high": [], "method": "t"}
    curve["n"] = num_seeds if over == "seeds" else num_tasks
    tasks: dict[str, Any] = {"mean": [], "low": [], "high": [], "method": "t", "n": num_tasks}
    curve["median"] = []
    curve["per_seed"] = [[] for _ in range(num_seeds)]
    nan = float("nan")
    for values_SxB in rows:
        stats = None if values_SxB is None else summarize(values_SxB, seeded)
        for name in ("mean", "low", "high"):
            curve[name].append(nan if stats is None else stats[name])
            tasks[name].append(nan if stats is None else stats["tasks"][name])
        median = nan if stats is None else float(np.median(values_SxB.mean(axis=0)))
        curve["median"].append(median)
        per_seed = [nan] * num_seeds if stats is None else stats["per_seed"]
        for seed_curve, value in zip(curve["per_seed"], per_seed, strict=True):
            seed_curve.append(value)
    curve["over"] = over
    curve["tasks"] = tasks
    curve["undefined"] = undefined
    return curve


# --- Closed forms (half-MSE, excess over query noise) ----------------------------------------


def closed_form_curves(
    task: TaskConfig, lengths: Sequence[int], gd_eta: float | None = None
) -> dict[str, np.ndarray]:
    """Closed-form half-MSE at each length where one exists (NaN elsewhere), per output.

    - "zero": ½ τ² tr Σ_x (`baselines.zero_predictor_risk`), any input law.
    - "ols": ½ `baselines.ols_excess_risk` (docs/theory.md §8): 0 noiseless for n >= d; Gaussian
      inputs with noise σ²d/(n − d − 1) for n > d + 1 (inf at n ∈ {d, d + 1}); isotropic
      N(0, I) for n < d: τ²(d − n) + σ² n/(d − n − 1).
    - "gd": one GD step of size `gd_eta` (1/n inside η) on Gaussian inputs,
      ½ `closed_forms.preconditioner_risk(ηI, Σ, n, τ, σ)` (docs/theory.md §5); absent if no η.
    """
    lengths = _check_lengths(lengths)
    zero = 0.5 * baselines.zero_predictor_risk(task)
    out = {"zero": np.full(len(lengths), zero), "ols": np.full(len(lengths), np.nan)}
    for i, n in enumerate(lengths):
        try:
            out["ols"][i] = 0.5 * baselines.ols_excess_risk(dataclasses.replace(task, n_context=n))
        except ValueError:
            pass  # no closed form for this law at this n: leave NaN
    if gd_eta is not None and task.inputs == "gaussian":
        sigma_DxD = jnp.asarray(input_covariance(task), jnp.float32)
        gamma_DxD = gd_eta * jnp.eye(task.d, dtype=jnp.float32)
        out["gd"] = np.asarray(
            [
                0.5
                * float(
                    closed_forms.preconditioner_risk(
                        gamma_DxD, sigma_DxD, n, task.w_scale, task.noise_std
                    )
                )
                for n in lengths
            ]
        )
    return out


# --- Curves as arrays --------------------------------------------------------------------------

CURVE_FIELDS = ("mean", "low", "high", "median", "tasks_low", "tasks_high")


def curve_arrays(curves: Mapping[str, dict], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Every `CURVE_FIELDS` entry of `learning_curves`' output as a (law, learner, length) array."""

    def value(curve: dict, field: str):
        # Task intervals sit in their own record, curve["tasks"].
        return curve["tasks"][field[6:]] if field.startswith("tasks_") else curve[field]

    return {
        field: np.asarray(
            [[value(curves[law]["curves"][name], field) for name in names] for law in curves]
        )
        for field in CURVE_FIELDS
    }


def closed_form_arrays(
    tasks: Mapping[str, TaskConfig], lengths: Sequence[int], gd_eta: float | None = None
) -> dict[str, np.ndarray]:
    """`closed_form_curves` of every law as (law, length) arrays "closed_zero", "closed_ols",
    "closed_gd" (NaN where a form does not exist, e.g. GD without an η)."""
    closed = {law: closed_form_curves(task, lengths, gd_eta) for law, task in tasks.items()}
    nan = np.full(len(lengths), np.nan)
    return {
        f"closed_{form}": np.asarray([closed[law].get(form, nan) for law in tasks])
        for form in ("zero", "ols", "gd")
    }


def means_at(
    mean_LxCxN: np.ndarray, laws: Sequence[str], names: Sequence[str], lengths, n_train: int
) -> dict[str, dict[str, dict]]:
    """{law: {learner: {"n=N": mean at the training length (None if absent), "n=max": at the
    longest}}} from a (law, learner, length) array of means."""
    lengths = list(lengths)
    i_n, i_max = (
        (lengths.index(n_train) if n_train in lengths else None),
        lengths.index(max(lengths)),
    )
    return {
        law: {
            name: {
                "n=N": None if i_n is None else mean_LxCxN[li, ci, i_n],
                "n=max": mean_LxCxN[li, ci, i_max],
            }
            for ci, name in enumerate(names)
        }
        for li, law in enumerate(laws)
    }
