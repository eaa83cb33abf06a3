"""Claims about in-context learners as code: a named hypothesis, run over seeds, with a verdict.

A `Hypothesis` is a claim from a paper, written down once: what it says, where it comes
from, and one or more `Criterion`s. Its `measure(config, options)` trains and evaluates what
the claim is about, S seeds vmapped, and returns one number per seed for every criterion,
usually a paired difference on shared held-out tasks (e.g. the trained model's loss minus
tuned GD's). A criterion compares the mean over seeds with a threshold, using a percentile
bootstrap 95% interval of that mean (`bootstrap_ci`, resampling seeds):

    supported      the interval lies entirely on the claimed side of the threshold
    not supported  it lies entirely on the other side
    inconclusive   it contains the threshold (or a seed gave a non-finite value)

A hypothesis is supported when every criterion is, not supported when any criterion is
not, and inconclusive otherwise. With S = 5 seeds the percentile bootstrap is narrower
than a Student-t interval (it ignores the small-sample correction); the t-interval is
stored beside it for the reader who wants the conservative one.

`icl-toy hypotheses [--quick] [NAME ...]` runs the registry `HYPOTHESES` and prints the
table; `run_hypotheses` writes `hypotheses.json` after every finished hypothesis (atomic,
so an interrupted run keeps what it finished and a rerun skips it) and draws
`hypotheses.png`/`.pdf` from the saved JSON. Training inside a hypothesis checkpoints
through `RunOptions`, so an interrupted one resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.analysis import alignment, baselines, metrics
from icl_toy.core import closed_forms, learners
from icl_toy.training import tuning
from icl_toy.core.learners import optimal_gd_eta
from icl_toy.core.predictors import seeded_model_predictor
from icl_toy.core.models import LSATransformer, TokenMomentumLSA, softmax_transformer
from icl_toy.runs.plotting import save_figure
from icl_toy.runs.results import atomic_write_bytes, git_commit, to_jsonable
from icl_toy.analysis.stats import mean_ci
from icl_toy.core.tasks import TaskConfig, anisotropic_task, input_covariance, von_oswald_preset
from icl_toy.training.train import ModelConfig, RunOptions, TrainConfig, make_model, train

NAME = "hypotheses"
VERDICTS = ("supported", "not supported", "inconclusive")
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

Measure = Callable[[Any, RunOptions | None], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Criterion:
    """The claim about one per-seed statistic: mean over seeds `direction` `threshold`."""

    statistic: str  # a key of the hypothesis' measure output
    meaning: str  # what one seed's value is, in words
    direction: Literal["<", ">"]
    threshold: float

    def __post_init__(self):
        if self.direction not in ("<", ">"):
            raise ValueError(f"Criterion.direction must be '<' or '>', got {self.direction!r}")
        if not np.isfinite(self.threshold):
            raise ValueError(f"Criterion.threshold must be finite, got {self.threshold}")


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """A named, documented claim with its criteria and the code that measures it."""

    name: str
    claim: str  # one sentence, as the source states it
    source: str  # paper and place
    criteria: tuple[Criterion, ...]
    get_config: Callable[[bool], Any]  # quick -> a frozen config dataclass
    measure: Measure  # (config, options) -> {statistic: (S,) per-seed values}

    def __post_init__(self):
        if not self.criteria:
            raise ValueError(f"hypothesis {self.name!r} has no criteria")


# --- Verdicts ---------------------------------------------------------------------------


def bootstrap_ci(
    values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of `values` (resampling with replacement)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"a bootstrap interval needs >= 2 values, got shape {values.shape}")
    index = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    low, high = np.percentile(values[index].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def judge(criterion: Criterion, values: np.ndarray) -> dict[str, Any]:
    """The verdict of one criterion on per-seed values, with estimate and intervals."""
    values = np.asarray(values, dtype=float)
    finite = bool(np.isfinite(values).all())
    result = {
        **dataclasses.asdict(criterion),
        "per_seed": values.tolist(),
        "estimate": float(values.mean()),
        "std": float(values.std(ddof=1)),
    }
    if not finite:
        nan = float("nan")
        return result | {"ci_low": nan, "ci_high": nan, "verdict": "inconclusive"}
    low, high = bootstrap_ci(values)
    t = mean_ci(values)
    above, below = low > criterion.threshold, high < criterion.threshold
    on_side, off_side = (below, above) if criterion.direction == "<" else (above, below)
    verdict = "supported" if on_side else "not supported" if off_side else "inconclusive"
    return result | {
        "ci_low": low,
        "ci_high": high,
        "t_low": t["low"],
        "t_high": t["high"],
        "verdict": verdict,
    }


def combine(verdicts: Sequence[str]) -> str:
    """All supported: supported; any not supported: not supported; else inconclusive."""
    if any(v not in VERDICTS for v in verdicts):
        raise ValueError(f"unknown verdicts in {verdicts}; known: {VERDICTS}")
    if "not supported" in verdicts:
        return "not supported"
    return "supported" if all(v == "supported" for v in verdicts) else "inconclusive"


def run_hypothesis(
    hypothesis: Hypothesis, config: Any, options: RunOptions | None = None
) -> dict[str, Any]:
    """Measure one hypothesis at `config` and judge every criterion."""
    start = time.perf_counter()
    values = hypothesis.measure(config, options)
    missing = [c.statistic for c in hypothesis.criteria if c.statistic not in values]
    if missing:
        raise ValueError(f"{hypothesis.name}: the measure returned no {missing}")
    criteria = [judge(c, values[c.statistic]) for c in hypothesis.criteria]
    return {
        "name": hypothesis.name,
        "claim": hypothesis.claim,
        "source": hypothesis.source,
        "config": to_jsonable(config),
        "criteria": criteria,
        "verdict": combine([c["verdict"] for c in criteria]),
        "extra": {k: np.asarray(v).tolist() for k, v in values.items()},
        "seconds": time.perf_counter() - start,
    }


# --- Shared pieces of the measures --------------------------------------------------------


def _train_seeded(model, task: TaskConfig, cfg: TrainConfig, options, stage: str):
    """Train S seeds of `model` and wrap them as one seeded predictor."""
    result = train(model, task, cfg, options=options and options.stage(stage))
    return seeded_model_predictor(model, result.params), result.params


def _eval_key(seed: int) -> jax.Array:
    return jax.random.PRNGKey(seed)


def _require_seeds(cfg: TrainConfig) -> None:
    if cfg.num_seeds < 2:
        raise ValueError(f"a verdict needs >= 2 seeds, got train.num_seeds = {cfg.num_seeds}")


# --- 1. One trained LSA layer is one GD step (von Oswald et al.) ---------------------------


@dataclasses.dataclass(frozen=True)
class OneLayerGDConfig:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=4000, batch_size=1024, eval_every=500, num_seeds=5
        )
    )
    eval_tasks: int = 4000  # held-out tasks shared by the model's seeds and GD
    eval_seed: int = 20_000

    def __post_init__(self):
        _require_seeds(self.train)


def _one_layer_gd_config(quick: bool) -> OneLayerGDConfig:
    if not quick:
        return OneLayerGDConfig()
    return OneLayerGDConfig(
        train=TrainConfig(steps=1000, batch_size=512, eval_every=500, num_seeds=3),
        eval_tasks=1000,
    )


def _measure_one_layer_gd(config: OneLayerGDConfig, options) -> dict[str, np.ndarray]:
    model = make_model(config.task, ModelConfig())
    model_pred, _ = _train_seeded(model, config.task, config.train, options, "one_layer_gd")
    eta = optimal_gd_eta(config.task)
    m = alignment.per_seed_metrics(
        model_pred,
        config.task,
        {"gd": learners.gd(eta)},
        key=_eval_key(config.eval_seed),
        num_tasks=config.eval_tasks,
    )["gd"]
    return {
        "relative_loss_gap": (m["half_mse_a"] - m["half_mse_b"]) / m["half_mse_b"],
        "sensitivity_cosine": m["cosine"],
        "gd_eta": np.full_like(m["cosine"], eta),
    }


# --- 2. K trained layers beat K GD steps and are closer to GD++ (von Oswald et al.) --------


@dataclasses.dataclass(frozen=True)
class DeepLSAConfig:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    num_layers: int = 2  # K
    # The sparse GD init (`GDSparsityLSA`): from the dense init one of 5 seeds sat on the
    # initial plateau for 3000 steps at batch 256 (multi_layer_gdpp's docstring).
    init: Literal["dense", "gd_sparsity"] = "gd_sparsity"
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=3000, batch_size=256, learning_rate=2e-3, eval_every=500, num_seeds=5
        )
    )
    fit: tuning.FitConfig = dataclasses.field(default_factory=tuning.FitConfig)
    eval_tasks: int = 4000
    eval_seed: int = 20_001

    def __post_init__(self):
        _require_seeds(self.train)
        if self.num_layers < 2:
            raise ValueError(f"the claim is about K >= 2 layers, got num_layers={self.num_layers}")


def _deep_lsa_config(quick: bool) -> DeepLSAConfig:
    if not quick:
        return DeepLSAConfig()
    return DeepLSAConfig(
        train=TrainConfig(
            steps=2000, batch_size=256, learning_rate=2e-3, eval_every=500, num_seeds=3
        ),
        fit=tuning.FitConfig(steps=600),
        eval_tasks=1000,
    )


def _measure_deep_lsa(config: DeepLSAConfig, options) -> dict[str, np.ndarray]:
    k = config.num_layers
    model = make_model(config.task, ModelConfig(num_layers=k), init=config.init)
    model_pred, _ = _train_seeded(model, config.task, config.train, options, "deep_lsa")
    key_fit, key_eval = jax.random.split(_eval_key(config.eval_seed))
    fitted = tuning.fit_gd_and_gdpp(config.task, k, "per_layer", key_fit, config.fit)
    m = alignment.per_seed_metrics(
        model_pred,
        config.task,
        {
            "gd": learners.gd(fitted["gd"]["eta"]),
            "gdpp": learners.gdpp(fitted["gdpp"]["eta"], fitted["gdpp"]["gamma"]),
        },
        key=key_eval,
        num_tasks=config.eval_tasks,
    )
    return {
        "gd_loss_minus_model_loss": m["gd"]["half_mse_b"] - m["gd"]["half_mse_a"],
        "spd_gdpp_minus_spd_gd": m["gdpp"]["spd"] - m["gd"]["spd"],
        "model_loss": m["gd"]["half_mse_a"],
        "gd_loss": m["gd"]["half_mse_b"],
        "gdpp_loss": m["gdpp"]["half_mse_b"],
    }


# --- 3. On anisotropic inputs one layer is preconditioned GD with Γ* (Ahn et al.) ----------


@dataclasses.dataclass(frozen=True)
class PreconditionedConfig:
    # Gaussian inputs with a rotated Σ, eigenvalues in [1/2, 2], d = 5, N = 20, σ = 0.5.
    task: TaskConfig = dataclasses.field(default_factory=anisotropic_task)
    init: Literal["dense", "gd_sparsity"] = "gd_sparsity"  # see preconditioned_gd's docstring
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=3000, batch_size=1024, eval_every=500, num_seeds=5
        )
    )
    eval_tasks: int = 4000
    eval_seed: int = 20_002

    def __post_init__(self):
        _require_seeds(self.train)
        if self.task.inputs != "gaussian" or self.task.d_y != 1:
            raise ValueError("Γ* is the closed form for Gaussian inputs and d_y = 1")


def _preconditioned_config(quick: bool) -> PreconditionedConfig:
    if not quick:
        return PreconditionedConfig()
    return PreconditionedConfig(
        train=TrainConfig(
            steps=1000, batch_size=512, learning_rate=3e-3, eval_every=500, num_seeds=3
        ),
        eval_tasks=1000,
    )


def _measure_preconditioned(config: PreconditionedConfig, options) -> dict[str, np.ndarray]:
    task = config.task
    model = make_model(task, ModelConfig(), init=config.init)
    model_pred, params = _train_seeded(model, task, config.train, options, "preconditioned")
    sigma = jnp.asarray(input_covariance(task), jnp.float32)
    gamma_star = closed_forms.optimal_preconditioner(
        sigma, task.n_context, task.w_scale, task.noise_std
    )
    eta_star = float(
        closed_forms.optimal_scalar_step(sigma, task.n_context, task.w_scale, task.noise_std)
    )
    gamma_fit = jax.vmap(metrics.layer_preconditioner, in_axes=(0, None, None))(
        params, task.d, task.n_context
    )
    r2 = jax.vmap(metrics.r_squared, in_axes=(0, None))(gamma_fit, gamma_star)
    m = alignment.per_seed_metrics(
        model_pred,
        task,
        {"pgd": learners.preconditioned_gd(gamma_star), "gd": learners.gd(eta_star)},
        key=_eval_key(config.eval_seed),
        num_tasks=config.eval_tasks,
    )
    return {
        "gamma_r_squared": np.asarray(r2),
        "spd_pgd_minus_spd_gd": m["pgd"]["spd"] - m["gd"]["spd"],
        "model_loss": m["pgd"]["half_mse_a"],
        "pgd_loss": m["pgd"]["half_mse_b"],
        "gd_loss": m["gd"]["half_mse_b"],
    }


# --- 4. Depth phases: GD-like → ridge-like → OLS-like (Akyürek et al.) ---------------------


@dataclasses.dataclass(frozen=True)
class DepthPhasesConfig:
    # Akyürek et al.: d = 8, x ~ N(0, I), w ~ N(0, I). N = 16 > d keeps OLS well posed
    # without their 40-pair sequences, which a 2-core CPU cannot train at depth.
    task: TaskConfig = dataclasses.field(
        default_factory=lambda: TaskConfig(d=8, n_context=16, inputs="gaussian")
    )
    depths: tuple[int, ...] = (1, 3)  # the first is "shallow", the last "deep"
    num_heads: int = 2
    mlp_hidden: int = 64
    embed_dim: int = 32
    # A 2-core CPU budget: 1500 steps at batch 128 (Akyürek et al. train 500k at batch 64).
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=1500, batch_size=128, learning_rate=1e-3, eval_every=500, num_seeds=5
        )
    )
    # Akyürek et al.'s grid; λ = 0 is OLS, and σ = 0.5 makes the Bayes λ = σ²/τ² = 1/4.
    ridge_lambdas: tuple[float, ...] = (1 / 16, 1 / 9, 1 / 4, 4 / 9)
    eval_tasks: int = 2000
    eval_seed: int = 20_003

    def __post_init__(self):
        _require_seeds(self.train)
        if len(self.depths) < 2 or list(self.depths) != sorted(set(self.depths)):
            raise ValueError(f"depths must be >= 2 increasing integers, got {self.depths}")
        if min(self.depths) < 1 or min(self.ridge_lambdas, default=1) <= 0:
            raise ValueError("depths must be >= 1 and ridge_lambdas > 0 (λ = 0 is OLS)")


def _depth_phases_config(noise_std: float) -> Callable[[bool], DepthPhasesConfig]:
    def get_config(quick: bool) -> DepthPhasesConfig:
        task = TaskConfig(d=8, n_context=16, inputs="gaussian", noise_std=noise_std)
        if not quick:
            return DepthPhasesConfig(task=task)
        return DepthPhasesConfig(
            task=task,
            depths=(1, 2),
            train=TrainConfig(
                steps=500, batch_size=128, learning_rate=1e-3, eval_every=250, num_seeds=3
            ),
            eval_tasks=500,
        )

    return get_config


def _measure_depth_phases(config: DepthPhasesConfig, options) -> dict[str, np.ndarray]:
    task = config.task
    key_tune, key_eval = jax.random.split(_eval_key(config.eval_seed))
    names = {
        "gd": learners.gd(learners.tuned_gd_eta(task, 1, key=key_tune)),
        "ols": learners.ols,
        **{f"ridge({lam:.3g})": learners.ridge(lam) for lam in config.ridge_lambdas},
    }
    spd, loss = {}, {}
    for depth in config.depths:
        model = softmax_transformer(
            task.d_y,
            depth,
            config.num_heads,
            config.mlp_hidden,
            embed_dim=config.embed_dim,
        )
        model_pred, _ = _train_seeded(model, task, config.train, options, f"depth{depth}")
        m = alignment.per_seed_metrics(
            model_pred, task, names, key=key_eval, num_tasks=config.eval_tasks
        )
        spd[depth] = {name: m[name]["spd"] for name in names}
        loss[depth] = m["ols"]["half_mse_a"]
    shallow, deep = config.depths[0], config.depths[-1]
    ridge_names = [n for n in names if n.startswith("ridge")]
    values = {
        "shallow_spd_gd_minus_spd_ols": spd[shallow]["gd"] - spd[shallow]["ols"],
        "deep_spd_ols_minus_spd_gd": spd[deep]["ols"] - spd[deep]["gd"],
        "deep_minus_shallow_spd_ols": spd[deep]["ols"] - spd[shallow]["ols"],
    }
    if task.noise_std > 0:
        bayes = baselines.bayes_ridge_lambda(task)
        bayes_name = f"ridge({bayes:.3g})"
        if bayes_name not in names:
            raise ValueError(f"the Bayes λ = {bayes:.3g} must be in ridge_lambdas")
        others = np.stack([spd[deep][n] for n in [*ridge_names, "ols"] if n != bayes_name])
        values["deep_spd_bayes_ridge_minus_best_other"] = spd[deep][bayes_name] - others.min(0)
    for depth in config.depths:
        values[f"loss_depth{depth}"] = loss[depth]
        for name in names:
            values[f"spd_depth{depth}_{name}"] = spd[depth][name]
    return values


# --- 5. Momentum attention improves in-context learning (Dai et al.) -----------------------


@dataclasses.dataclass(frozen=True)
class MomentumConfig:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    num_layers: int = 2
    mu_init: float = 0.1  # initial token momentum μ, learned through a sigmoid
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=2000, batch_size=512, learning_rate=2e-3, eval_every=500, num_seeds=5
        )
    )
    eval_tasks: int = 4000
    eval_seed: int = 20_004

    def __post_init__(self):
        _require_seeds(self.train)
        if not 0 < self.mu_init < 1:
            raise ValueError(f"mu_init must lie in (0, 1), got {self.mu_init}")


def _momentum_config(quick: bool) -> MomentumConfig:
    if not quick:
        return MomentumConfig()
    return MomentumConfig(
        train=TrainConfig(
            steps=600, batch_size=256, learning_rate=2e-3, eval_every=300, num_seeds=3
        ),
        eval_tasks=1000,
    )


def _measure_momentum(config: MomentumConfig, options) -> dict[str, np.ndarray]:
    """Token momentum (Dai's EMA of earlier values) against the plain LSA, same seeds."""
    common = dict(d=config.task.d, d_y=config.task.d_y, num_layers=config.num_layers)
    plain = LSATransformer(**common)
    momentum = TokenMomentumLSA(**common, momentum=None, momentum_init=config.mu_init)
    plain_pred, _ = _train_seeded(plain, config.task, config.train, options, "plain")
    momentum_pred, params = _train_seeded(
        momentum, config.task, config.train, options, "token_momentum"
    )
    m = alignment.per_seed_metrics(
        momentum_pred,
        config.task,
        {"plain": plain_pred},
        key=_eval_key(config.eval_seed),
        num_tasks=config.eval_tasks,
    )["plain"]
    mu = jax.vmap(lambda p: momentum.apply(p, method=TokenMomentumLSA.mu))(params)
    return {
        "momentum_minus_plain_loss": m["half_mse_a"] - m["half_mse_b"],
        "momentum_loss": m["half_mse_a"],
        "plain_loss": m["half_mse_b"],
        "learned_mu": np.asarray(mu),
    }


# --- The registry --------------------------------------------------------------------------

HYPOTHESES: dict[str, Hypothesis] = {
    h.name: h
    for h in (
        Hypothesis(
            name="one_layer_gd",
            claim="One trained linear self-attention layer implements one step of gradient "
            "descent with a tuned step size.",
            source="von Oswald et al. 2022 (arXiv 2212.07677), §3 and Fig. 2",
            criteria=(
                Criterion(
                    "relative_loss_gap",
                    "(trained loss − GD(η*) loss) / GD(η*) loss on shared held-out tasks",
                    "<",
                    0.05,
                ),
                Criterion(
                    "sensitivity_cosine",
                    "cosine of ∂ŷ/∂x_q between the trained layer and GD(η*)",
                    ">",
                    0.99,
                ),
            ),
            get_config=_one_layer_gd_config,
            measure=_measure_one_layer_gd,
        ),
        Hypothesis(
            name="deep_lsa_gdpp",
            claim="K trained LSA layers beat K steps of tuned GD and are closer to GD++ than "
            "to GD.",
            source="von Oswald et al. 2022 (arXiv 2212.07677), §4 and Fig. 3",
            criteria=(
                Criterion(
                    "gd_loss_minus_model_loss",
                    "tuned K-step GD loss − trained K-layer loss (paired tasks)",
                    ">",
                    0.0,
                ),
                Criterion(
                    "spd_gdpp_minus_spd_gd",
                    "SPD(trained, tuned GD++) − SPD(trained, tuned GD)",
                    "<",
                    0.0,
                ),
            ),
            get_config=_deep_lsa_config,
            measure=_measure_deep_lsa,
        ),
        Hypothesis(
            name="anisotropic_preconditioned",
            claim="On anisotropic Gaussian inputs one trained LSA layer implements one step "
            "of preconditioned GD with the optimal preconditioner Γ*.",
            source="Ahn et al. 2023 (arXiv 2306.00297), Thm. 1; Mahankali et al. 2023",
            criteria=(
                Criterion(
                    "gamma_r_squared",
                    "R² of the layer's implied Γ against the closed-form Γ*",
                    ">",
                    0.99,
                ),
                Criterion(
                    "spd_pgd_minus_spd_gd",
                    "SPD(trained, preconditioned GD at Γ*) − SPD(trained, best scalar-step GD)",
                    "<",
                    0.0,
                ),
            ),
            get_config=_preconditioned_config,
            measure=_measure_preconditioned,
        ),
        Hypothesis(
            name="depth_phases_noiseless",
            claim="On noiseless regression, deeper trained transformers move from GD-like "
            "towards OLS-like predictions.",
            source="Akyürek et al. 2022 (arXiv 2211.15661), §4.3 and Fig. 3",
            criteria=(
                Criterion(
                    "shallow_spd_gd_minus_spd_ols",
                    "shallowest model: SPD to 1-step GD − SPD to OLS",
                    "<",
                    0.0,
                ),
                Criterion(
                    "deep_spd_ols_minus_spd_gd",
                    "deepest model: SPD to OLS − SPD to 1-step GD",
                    "<",
                    0.0,
                ),
                Criterion(
                    "deep_minus_shallow_spd_ols",
                    "SPD to OLS of the deepest minus the shallowest model (paired seeds)",
                    "<",
                    0.0,
                ),
            ),
            get_config=_depth_phases_config(0.0),
            measure=_measure_depth_phases,
        ),
        Hypothesis(
            name="depth_phases_noisy",
            claim="On noisy regression (σ² / τ² = 1/4), deeper trained transformers move from "
            "GD-like towards Bayes-optimal ridge, and the best-fitting ridge λ is σ² / τ².",
            source="Akyürek et al. 2022 (arXiv 2211.15661), §4.2 and Fig. 2",
            criteria=(
                Criterion(
                    "shallow_spd_gd_minus_spd_ols",
                    "shallowest model: SPD to 1-step GD − SPD to OLS",
                    "<",
                    0.0,
                ),
                Criterion(
                    "deep_minus_shallow_spd_ols",
                    "SPD to OLS of the deepest minus the shallowest model (paired seeds)",
                    "<",
                    0.0,
                ),
                Criterion(
                    "deep_spd_bayes_ridge_minus_best_other",
                    "deepest model: SPD to ridge(σ²/τ²) − min SPD to OLS and other λ",
                    "<",
                    0.0,
                ),
            ),
            get_config=_depth_phases_config(0.5),
            measure=_measure_depth_phases,
        ),
        Hypothesis(
            name="momentum_attention",
            claim="Momentum attention (an exponential moving average of earlier values) "
            "improves in-context learning.",
            source="Dai et al. 2022 (arXiv 2212.10559), §6",
            criteria=(
                Criterion(
                    "momentum_minus_plain_loss",
                    "token-momentum LSA loss − plain LSA loss (paired seeds and tasks)",
                    "<",
                    0.0,
                ),
            ),
            get_config=_momentum_config,
            measure=_measure_momentum,
        ),
    )
}


def get_hypotheses(names: Sequence[str] | None = None) -> list[Hypothesis]:
    """The named hypotheses in the given order (default: all); unknown names raise first."""
    names = list(HYPOTHESES) if not names else list(names)
    unknown = [n for n in names if n not in HYPOTHESES]
    if unknown:
        raise ValueError(
            f"unknown hypothesis {unknown[0]!r}; known hypotheses: {', '.join(HYPOTHESES)}"
        )
    return [HYPOTHESES[n] for n in names]


# --- Running, saving, printing, drawing ---------------------------------------------------


def _config_digest(config_json: Any) -> str:
    return hashlib.sha256(json.dumps(config_json, sort_keys=True).encode()).hexdigest()[:12]


def load_entries(out_dir: str | Path) -> dict[str, dict]:
    """The hypotheses saved in `out_dir/hypotheses.json` ({} if none)."""
    path = Path(out_dir) / f"{NAME}.json"
    return json.loads(path.read_text())["hypotheses"] if path.exists() else {}


def _save(out_dir: Path, entries: dict[str, dict], quick: bool) -> None:
    summary = {"quick": quick, "git_commit": git_commit(), "hypotheses": entries}
    data = (json.dumps(to_jsonable(summary), indent=2) + "\n").encode()
    atomic_write_bytes(out_dir / f"{NAME}.json", data)


def run_hypotheses(
    names: Sequence[str] | None,
    out_dir: str | Path,
    *,
    quick: bool = False,
    rerun: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, dict]:
    """Run hypotheses into `out_dir` and return every saved entry, keyed by name.

    A hypothesis already saved there with the same config is skipped unless `rerun`. Each
    finished one is written to `hypotheses.json` at once; training checkpoints go to
    `out_dir/checkpoints/hypotheses/NAME/<config digest>/`, so an interrupted run resumes.
    """
    selected = get_hypotheses(names)
    configs = {h.name: h.get_config(quick) for h in selected}  # validated before any compute
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = load_entries(out_dir)
    for hypothesis in selected:
        config_json = to_jsonable(configs[hypothesis.name])
        saved = entries.get(hypothesis.name)
        if saved is not None and saved["config"] == config_json and not rerun:
            echo(f"{hypothesis.name}: saved in {out_dir}/{NAME}.json, skipped")
            continue
        echo(f"{hypothesis.name}: running")
        checkpoints = out_dir / "checkpoints" / NAME / hypothesis.name / _config_digest(config_json)
        options = RunOptions(
            checkpoint_dir=str(checkpoints.absolute()), resume=not rerun, progress=progress
        )
        entries[hypothesis.name] = run_hypothesis(hypothesis, configs[hypothesis.name], options)
        _save(out_dir, entries, quick)
    plot(entries, out_dir)
    return entries


def format_table(entries: dict[str, dict], names: Sequence[str] | None = None) -> str:
    """One line per criterion and a verdict line per hypothesis."""
    names = list(entries) if names is None else list(names)
    header = (
        f"{'hypothesis / criterion':<40} {'estimate':>10} {'bootstrap 95% CI':>22} "
        f"{'claim':>9}  verdict"
    )
    lines = [header, "-" * len(header)]
    for name in names:
        entry = entries[name]
        lines.append(f"{name:<40} {'':>10} {'':>22} {'':>9}  {entry['verdict'].upper()}")
        for c in entry["criteria"]:
            ci = f"[{c['ci_low']:.4g}, {c['ci_high']:.4g}]"
            claim = f"{c['direction']} {c['threshold']:g}"
            lines.append(
                f"  {c['statistic']:<38} {c['estimate']:>10.4g} {ci:>22} {claim:>9}  {c['verdict']}"
            )
    return "\n".join(lines)


_COLOURS = {"supported": "tab:green", "not supported": "tab:red", "inconclusive": "tab:orange"}


def plot(entries: dict[str, dict], out_dir: str | Path) -> list[Path]:
    """A forest plot: per criterion the seeds, the mean with its bootstrap CI, the threshold."""
    rows = [(name, c) for name, e in entries.items() for c in e["criteria"]]
    if not rows:
        return []
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.05 * len(rows) + 0.6), squeeze=False)
    for ax, (name, c) in zip(axes[:, 0], rows, strict=True):
        colour = _COLOURS[c["verdict"]]
        seeds = np.asarray(c["per_seed"], dtype=float)
        ax.plot(seeds, np.full_like(seeds, 0.4), "o", color="0.5", markersize=3)
        ax.errorbar(
            [c["estimate"]],
            [0],
            xerr=[[c["estimate"] - c["ci_low"]], [c["ci_high"] - c["estimate"]]],
            fmt="D",
            color=colour,
            capsize=4,
        )
        ax.set_ylim(-0.6, 0.8)
        ax.axvline(c["threshold"], color="k", linestyle="--", linewidth=1)
        ax.set_yticks([])
        ax.set_title(
            f"{name}: {c['statistic']} {c['direction']} {c['threshold']:g}  →  {c['verdict']}",
            fontsize=8,
            loc="left",
            color=colour,
        )
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(
        "Hypotheses: per-seed values (grey), mean with bootstrap 95% CI, threshold (dashed)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, out_dir, NAME)
