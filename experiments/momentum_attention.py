"""Does momentum attention help a linear transformer learn in context? (Dai et al. 2022)

    icl-toy run momentum_attention           # or python -m experiments.momentum_attention
    icl-toy run momentum_attention --quick   # shrunk config, ~1.5 min

Full: 3 variants x K in {1, 2, 3, 4} x 5 seeds x 1500 steps (batch 256), plus a fixed-momentum
sweep at K = 2 and tuned explicit learners: 10.7 min wall (9.5 CPU-min) measured on the
2-core CPU shared with other jobs. Quick: K in {1, 2}, 2 seeds, 100 steps; ~1.5 min, nearly
all of it compiling 7 training runs.

Trains three LSA transformers on the von Oswald preset (d = N = 10, x ~ U(-0.5, 0.5),
noiseless), 5 seeds vmapped per (variant, K), with the same init of the attention weights and
the same training batches across variants (same seeds), so differences are paired:
- plain: `LSATransformer`;
- token momentum: Dai et al.'s EMA of earlier value vectors, Σ_{j<t} μ^{t−j} v_j, added to
  the attention output (`TokenMomentumLSA`, one learned μ = sigmoid(·) ∈ (0, 1));
- depth momentum: heavy ball across layers, v_l = Δ_l + β v_{l−1} (`DepthMomentumLSA`, one
  learned β); with GD weights it is exactly heavy-ball GD (`heavy_ball_weights`).
All are scored on the same 10,000 held-out tasks: final half-MSE per seed, 95% t-intervals
over seeds, and the paired difference momentum − plain per K with its t-interval
("significant" iff it excludes 0). A sweep trains K = 2 with μ or β fixed on a grid. Explicit
GD, heavy-ball and Nesterov learners with tuned (η, β) (Adam on online prompts) give the
reference losses and the heavy-ball β that training is compared with. The float64 check that
the heavy-ball construction equals explicit heavy-ball GD for K = 1..10 is stored too, and a
causal readout of the trained K = 1 model gives the loss at every context length.
Writes `momentum_attention.{png,pdf,json,npz}` to `figures/` (full) or `figures/quick/`.
Losses are half-MSE; η has the 1/N inside.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.analysis import metrics
from icl_toy.analysis.stats import mean_ci, seed_stats
from icl_toy.core.constructions import gd_weights, heavy_ball_weights
from icl_toy.core.learners import gd, heavy_ball, optimal_gd_eta
from icl_toy.core.models import (
    CausalLSATransformer,
    DepthMomentumLSA,
    LSATransformer,
    TokenMomentumLSA,
)
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch, von_oswald_preset
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import save_figure
from icl_toy.runs.results import Results, git_commit
from icl_toy.training.train import RunOptions, TrainConfig, batch_predict, train
from icl_toy.training.tuning import (
    constant_step_learner,
    fit_learner,
    gd_learner,
    heavy_ball_learner,
    learner_half_mse,
    nesterov_learner,
)

NAME = "momentum_attention"
RUNTIME = {"full": "~11 min", "quick": "~1.5 min"}  # on a 2-core CPU
VARIANTS = ("plain", "token_momentum", "depth_momentum")
MOMENTUM_VARIANTS = VARIANTS[1:]
LEARNERS = ("gd", "gd_constant", "heavy_ball", "heavy_ball_shared_beta", "nesterov")


@dataclasses.dataclass(frozen=True)
class Config:
    task: TaskConfig = dataclasses.field(default_factory=von_oswald_preset)
    # K = 1, 2 use train.learning_rate; K >= 3 use deep_learning_rate. Twice von Oswald et
    # al.'s 1e-3 / 5e-4: with 8x smaller batches and 1500 steps (to fit a 2-core CPU), one
    # of 5 seeds at 1e-3 was still on the initial plateau at K = 1 and 2 after 1500 steps.
    # Seeds, steps and batch are shared by every run.
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=1500, batch_size=256, learning_rate=2e-3, eval_every=250, num_seeds=5
        )
    )
    depths: tuple[int, ...] = (1, 2, 3, 4)  # K, number of LSA layers
    deep_learning_rate: float = 1e-3  # Adam learning rate for K >= 3
    init_scale: float = 0.002  # fan-in variance scale of the attention weights, divided by K
    mu_init: float = 0.1  # initial token momentum μ (learned through a sigmoid)
    beta_init: float = 0.0  # initial depth momentum β (learned, unconstrained)
    # Fixed-momentum sweep: train K = sweep_depth with μ (token) or β (depth) held fixed.
    sweep_depth: int = 2
    sweep_mu: tuple[float, ...] = (0.3, 0.6)
    sweep_beta: tuple[float, ...] = (0.3, 0.6)
    eval_tasks: int = 10_000  # held-out tasks shared by every model, seed and learner
    # Explicit learners tuned by Adam on θ from η* (closed form) and β = 0.1, `fit_seeds`
    # vmapped: per-step η_k GD ("gd"), one η ("gd_constant"), heavy ball and Nesterov with one
    # (η, β) ("heavy_ball", "nesterov"), heavy ball with per-step η_k and one β, the family
    # of the depth-momentum construction ("heavy_ball_shared_beta"). "heavy_ball" is needed.
    fit_learners: tuple[str, ...] = LEARNERS
    fit_steps: int = 600
    fit_batch_size: int = 512
    fit_learning_rate: float = 0.05
    fit_seeds: int = 2
    construction_depths: int = 10  # float64 heavy-ball construction check for K = 1..this
    construction_tasks: int = 1000
    eval_seed: int = 10_000  # root key of eval tasks and learner fits (not a training seed)

    def __post_init__(self):
        if self.task.d_y != 1:
            raise ValueError(f"momentum_attention uses d_y = 1, got {self.task.d_y}")
        if not self.depths or min(self.depths) < 1 or len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths must be distinct integers >= 1, got {self.depths}")
        if self.train.num_seeds < 2:
            raise ValueError(
                f"95% intervals need >= 2 seeds; got train.num_seeds = {self.train.num_seeds}"
            )
        if self.sweep_depth not in self.depths:
            raise ValueError(f"sweep_depth {self.sweep_depth} must be one of depths {self.depths}")
        if not 0 < self.mu_init < 1 or any(not 0 <= mu < 1 for mu in self.sweep_mu):
            raise ValueError("token momentum μ must lie in [0, 1) (learned: in (0, 1))")
        if not self.deep_learning_rate > 0 or not self.init_scale > 0:
            raise ValueError("deep_learning_rate and init_scale must be > 0")
        for name in ("eval_tasks", "fit_steps", "fit_batch_size", "fit_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if "heavy_ball" not in self.fit_learners or not set(self.fit_learners) <= set(LEARNERS):
            raise ValueError(f"fit_learners must include 'heavy_ball' and be among {LEARNERS}")
        if self.construction_depths < 1 or self.construction_tasks < 1:
            raise ValueError("construction_depths and construction_tasks must be >= 1")
        if not self.fit_learning_rate > 0:
            raise ValueError(f"fit_learning_rate must be > 0, got {self.fit_learning_rate}")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        train=TrainConfig(steps=100, batch_size=64, eval_every=50, num_seeds=2),
        depths=(1, 2),
        sweep_depth=1,
        sweep_mu=(0.5,),
        sweep_beta=(),
        eval_tasks=1000,
        fit_learners=("heavy_ball",),
        fit_steps=50,
        fit_batch_size=128,
        fit_seeds=1,
        construction_depths=2,
        construction_tasks=100,
    )


def t_interval(values: np.ndarray) -> dict[str, float]:
    """Mean and 95% Student-t interval over seeds (axis 0), as {mean, ci_low, ci_high}."""
    stats = mean_ci(values)
    return {"mean": stats["mean"], "ci_low": stats["low"], "ci_high": stats["high"]}


def paired_difference(values: np.ndarray, baseline: np.ndarray) -> dict:
    """t-interval of values − baseline over paired seeds; significant iff it excludes 0."""
    stats = t_interval(np.asarray(values) - np.asarray(baseline))
    return {**stats, "significant": bool(stats["ci_low"] > 0 or stats["ci_high"] < 0)}


def _model(config: Config, variant: str, num_layers: int, momentum: float | None = None):
    common = dict(d=config.task.d, d_y=config.task.d_y, num_layers=num_layers)
    common["init_scale"] = config.init_scale
    if variant == "plain":
        return LSATransformer(**common)
    if variant == "token_momentum":
        return TokenMomentumLSA(**common, momentum=momentum, momentum_init=config.mu_init)
    return DepthMomentumLSA(**common, momentum=momentum, momentum_init=config.beta_init)


def _momentum(model, params) -> jax.Array:
    """The μ or β a model uses (0 for the plain LSA)."""
    if isinstance(model, TokenMomentumLSA):
        return model.apply(params, method=TokenMomentumLSA.mu)
    if isinstance(model, DepthMomentumLSA):
        return model.apply(params, method=DepthMomentumLSA.momentum_beta)
    return jnp.zeros(())


def _train_config(config: Config, num_layers: int) -> TrainConfig:
    lr = config.train.learning_rate if num_layers < 3 else config.deep_learning_rate
    return dataclasses.replace(config.train, learning_rate=lr)


def _train_one(config, variant, num_layers, eval_prompts, options, momentum=None, label=None):
    """Train all seeds of one model; eval_fn tracks the held-out loss and μ or β."""
    model = _model(config, variant, num_layers, momentum)

    def eval_fn(params):
        pred = batch_predict(model, params, eval_prompts)
        return {
            "loss": metrics.half_mse(pred, eval_prompts.y_q),
            "momentum": _momentum(model, params),
        }

    label = label or f"{variant}_K{num_layers}"
    result = train(
        model,
        config.task,
        _train_config(config, num_layers),
        eval_fn=eval_fn,
        options=options and options.stage(label),
    )
    return result


def _fit_learners(config: Config, num_layers: int, eval_prompts, key) -> dict:
    """Tune each explicit learner for K = num_layers steps; θ and eval loss per fit seed."""
    eta0 = optimal_gd_eta(config.task)
    k = num_layers
    # GD steps commute, so equal per-step η_k are a symmetric saddle of the fit: start spread.
    etas0 = eta0 * jnp.linspace(0.6, 1.4, k) if k > 1 else jnp.full(1, eta0)
    learners = {
        "gd": (gd_learner, {"eta": etas0}),
        "gd_constant": (constant_step_learner(gd_learner, k), {"eta": eta0}),
        "heavy_ball": (constant_step_learner(heavy_ball_learner, k), {"eta": eta0, "beta": 0.1}),
        "heavy_ball_shared_beta": (heavy_ball_learner, {"eta": etas0, "beta": 0.1}),
        "nesterov": (constant_step_learner(nesterov_learner, k), {"eta": eta0, "beta": 0.1}),
    }
    out = {}
    for i, name in enumerate(config.fit_learners):
        predict, theta0 = learners[name]
        fit = fit_learner(
            predict,
            theta0,
            config.task,
            key=jax.random.fold_in(key, i),
            steps=config.fit_steps,
            batch_size=config.fit_batch_size,
            learning_rate=config.fit_learning_rate,
            num_seeds=config.fit_seeds,
        )
        per_fit_seed = jax.vmap(functools.partial(learner_half_mse, predict), in_axes=(0, None))
        losses = jax.jit(per_fit_seed)(fit.theta, eval_prompts)
        out[name] = {
            "theta": {p: np.asarray(v).tolist() for p, v in fit.theta.items()},
            "eval_loss": np.asarray(losses).tolist(),
        }
    return out


def _heavy_ball_construction_error(config: Config, eta: float, beta: float, key) -> list[float]:
    """Max |ŷ_construction − ŷ_heavy-ball| in float64 over held-out tasks, for K = 1..Kmax."""
    errors = []
    with jax.enable_x64(True):
        prompts = sample_batch(key, config.task, config.construction_tasks)
        tokens = jax.vmap(prompt_tokens)(prompts)
        for k in range(1, config.construction_depths + 1):
            model = DepthMomentumLSA(d=config.task.d, d_y=config.task.d_y, num_layers=k)
            params = heavy_ball_weights(model, eta, beta, config.task.n_context)

            @jax.jit
            def max_error(params, tokens, prompts, k=k, model=model):
                built = jax.vmap(model.apply, in_axes=(None, 0))(params, tokens)
                explicit = jax.vmap(heavy_ball(jnp.full(k, eta), beta))(prompts)
                return jnp.max(jnp.abs(built - explicit))

            errors.append(float(max_error(params, tokens, prompts)))
    return errors


@functools.partial(jax.jit, static_argnums=0)
def _position_losses(config: Config, plain_k1_params, eval_prompts) -> dict[str, jax.Array]:
    """Half-MSE at every position t = 0..N (t earlier pairs) of the causal readout.

    The trained K = 1 plain layer is read by `CausalLSATransformer` (same params; at the
    query it is the same model). References: its label-free twin (the plain model run on
    each prefix prompt, query (x_t, 0)), the GD construction at η* read causally, and the
    best one-step GD at each context length n (closed-form η*(n)).
    """
    task, n = config.task, config.task.n_context
    causal = CausalLSATransformer(d=task.d, d_y=task.d_y, num_layers=1)
    plain = LSATransformer(d=task.d, d_y=task.d_y, num_layers=1)
    tokens_BxTxE = jax.vmap(prompt_tokens)(eval_prompts)
    targets_BxTxY = jnp.concatenate([eval_prompts.y, eval_prompts.y_q[:, None]], axis=1)

    def causal_losses(params):
        def predict(tokens_TxE):
            return causal.apply(
                params, tokens_TxE, method=CausalLSATransformer.position_predictions
            )

        pred_BxTxY = jax.vmap(predict)(tokens_BxTxE)
        return jax.vmap(metrics.half_mse, in_axes=1)(pred_BxTxY, targets_BxTxY)  # (T,)

    def prefix_losses(params):
        losses = []
        for t in range(n + 1):
            prefix = tokens_BxTxE[:, :t]
            query_BxE = tokens_BxTxE[:, t].at[:, task.d :].set(0.0)
            tokens = jnp.concatenate([prefix, query_BxE[:, None]], axis=1)
            pred = jax.vmap(plain.apply, in_axes=(None, 0))(params, tokens)
            losses.append(metrics.half_mse(pred, targets_BxTxY[:, t]))
        return jnp.stack(losses)

    x_all = jnp.concatenate([eval_prompts.x, eval_prompts.x_q[:, None]], axis=1)
    best_gd = [metrics.half_mse(jnp.zeros_like(eval_prompts.y_q), targets_BxTxY[:, 0])]
    for t in range(1, n + 1):
        eta_t = optimal_gd_eta(dataclasses.replace(task, n_context=t))
        prefix = eval_prompts._replace(
            x=eval_prompts.x[:, :t], y=eval_prompts.y[:, :t], x_q=x_all[:, t]
        )
        pred = jax.vmap(gd(jnp.asarray([eta_t])))(prefix)
        best_gd.append(metrics.half_mse(pred, targets_BxTxY[:, t]))
    gd_params = gd_weights(causal, optimal_gd_eta(task), n)
    return {
        "trained_causal": jax.lax.map(causal_losses, plain_k1_params),
        "trained_prefix": jax.lax.map(prefix_losses, plain_k1_params),
        "gd_construction": causal_losses(gd_params),
        "gd_best_per_length": jnp.stack(best_gd),
    }


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train every (variant, K), the fixed-momentum sweep and the tuned learners."""
    start = time.time()
    key_eval, key_fit, key_construction = jax.random.split(jax.random.key(config.eval_seed), 3)
    eval_prompts = sample_batch(key_eval, config.task, config.eval_tasks)

    final_loss, final_momentum, arrays = {}, {}, {}
    plain_k1_params = None
    for k in config.depths:
        for variant in VARIANTS:
            result = _train_one(config, variant, k, eval_prompts, options)
            final_loss[variant, k] = result.eval_metrics["loss"][:, -1]
            final_momentum[variant, k] = result.eval_metrics["momentum"][:, -1]
            arrays[f"eval_loss_{variant}_K{k}"] = result.eval_metrics["loss"]
            arrays[f"momentum_{variant}_K{k}"] = result.eval_metrics["momentum"]
            arrays["eval_steps"] = result.eval_steps
            if variant == "plain" and k == 1:
                plain_k1_params = result.params

    sweep = {}
    for variant, values in (
        ("token_momentum", config.sweep_mu),
        ("depth_momentum", config.sweep_beta),
    ):
        rows = [{"momentum": 0.0, "loss": final_loss["plain", config.sweep_depth].tolist()}]
        for value in values:
            result = _train_one(
                config,
                variant,
                config.sweep_depth,
                eval_prompts,
                options,
                momentum=value,
                label=f"sweep_{variant}_{value}",
            )
            rows.append({"momentum": value, "loss": result.eval_metrics["loss"][:, -1].tolist()})
        sweep[variant] = rows

    learners = {
        k: _fit_learners(config, k, eval_prompts, jax.random.fold_in(key_fit, k))
        for k in config.depths
    }
    deepest = learners[max(config.depths)]["heavy_ball"]["theta"]
    construction_error = _heavy_ball_construction_error(
        config, float(np.mean(deepest["eta"])), float(np.mean(deepest["beta"])), key_construction
    )
    positions = (
        jax.tree.map(np.asarray, _position_losses(config, plain_k1_params, eval_prompts))
        if 1 in config.depths
        else {}
    )

    per_depth = {}
    for k in config.depths:
        entry = {}
        for variant in VARIANTS:
            entry[variant] = {
                "final_loss": final_loss[variant, k].tolist(),
                **t_interval(final_loss[variant, k]),
            }
            if variant in MOMENTUM_VARIANTS:
                entry[variant]["learned_momentum"] = final_momentum[variant, k].tolist()
                entry[variant]["learned_momentum_stats"] = {
                    **seed_stats(final_momentum[variant, k]),
                    **t_interval(final_momentum[variant, k]),
                }
                entry[variant]["difference_vs_plain"] = paired_difference(
                    final_loss[variant, k], final_loss["plain", k]
                )
        entry["tuned_learners"] = {
            name: {**fit, "mean_eval_loss": float(np.mean(fit["eval_loss"]))}
            for name, fit in learners[k].items()
        }
        per_depth[f"K{k}"] = entry

    summary = {
        "experiment": NAME,
        "config": config,
        "git_commit": git_commit(),
        "device": str(jax.devices()[0]),
        "loss": "half-MSE, 0.5 * mean (y_hat - y)^2, on the held-out eval tasks",
        "eta_convention": "1/N inside eta",
        "ci": "95% Student-t interval over seeds; paired differences use the same seeds",
        "eta_star": optimal_gd_eta(config.task),
        "heavy_ball_construction_error": max(construction_error),
        "heavy_ball_construction_error_per_K": construction_error,
        "per_K": per_depth,
        "sweep": {"depth": config.sweep_depth, **sweep},
    }
    if positions:
        summary["position_curve_causal_vs_prefix_max_abs"] = float(
            np.max(np.abs(positions["trained_causal"] - positions["trained_prefix"]))
        )
        arrays.update({f"position_{name}": v for name, v in positions.items()})
    summary["closing_note"] = closing_note(summary)
    summary["runtime_s"] = time.time() - start
    return Results(summary, jax.tree.map(np.asarray, arrays))


def closing_note(summary: dict) -> str:
    """What the toy model says, in words, from the numbers in `summary`."""
    lines = []
    for variant in MOMENTUM_VARIANTS:
        better, worse, same = [], [], []
        for name, entry in summary["per_K"].items():
            diff = entry[variant]["difference_vs_plain"]
            text = f"{name} {diff['mean']:+.2e} [{diff['ci_low']:+.2e}, {diff['ci_high']:+.2e}]"
            if not diff["significant"]:
                same.append(text)
            elif diff["mean"] < 0:
                better.append(text)
            else:
                worse.append(text)
        lines.append(
            f"{variant} - plain (half-MSE, 95% CI): lower at {better or 'no K'}; "
            f"higher at {worse or 'no K'}; not significant at {same or 'no K'}."
        )
    consistent = all(
        entry[v]["difference_vs_plain"]["significant"]
        and entry[v]["difference_vs_plain"]["mean"] < 0
        for v in MOMENTUM_VARIANTS
        for name, entry in summary["per_K"].items()
        if not (v == "depth_momentum" and name == "K1")
    )
    for name, entry in summary["per_K"].items():
        tuned = entry["tuned_learners"]
        beta = entry["depth_momentum"]["learned_momentum_stats"]
        text = (
            f"{name}: learned depth β {beta['mean']:+.3f} [{beta['ci_low']:+.3f}, "
            f"{beta['ci_high']:+.3f}] vs tuned heavy-ball β "
            f"{np.mean(tuned['heavy_ball']['theta']['beta']):+.3f}"
        )
        if "gd_constant" in tuned:
            text += (
                f"; tuned constant-step loss GD {tuned['gd_constant']['mean_eval_loss']:.4f} vs "
                f"heavy ball {tuned['heavy_ball']['mean_eval_loss']:.4f}"
            )
        lines.append(text + ".")
    lines.append(
        "A small but consistent improvement from momentum "
        + ("holds" if consistent else "does not hold")
        + " here (every momentum variant significantly below plain at every K where it can act)."
    )
    return " ".join(lines)


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figure from saved results."""
    s, a = results.summary, results.arrays
    depths = [int(name[1:]) for name in s["per_K"]]
    names = list(s["per_K"])
    colors = {"plain": "C0", "token_momentum": "C1", "depth_momentum": "C2"}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))

    ax = axes[0, 0]
    for i, variant in enumerate(VARIANTS):
        mean = np.array([s["per_K"][n][variant]["mean"] for n in names])
        low = np.array([s["per_K"][n][variant]["ci_low"] for n in names])
        high = np.array([s["per_K"][n][variant]["ci_high"] for n in names])
        x = np.asarray(depths) + 0.08 * (i - 1)
        ax.errorbar(
            x,
            mean,
            yerr=[mean - low, high - mean],
            fmt="o",
            capsize=3,
            color=colors[variant],
            label=f"LSA {variant}",
        )
    styles = {
        "gd": "k--",
        "gd_constant": "k:",
        "heavy_ball": "m--",
        "heavy_ball_shared_beta": "m:",
        "nesterov": "c--",
    }
    for name, style in styles.items():
        if name not in s["per_K"][names[0]]["tuned_learners"]:
            continue
        ys = [s["per_K"][n]["tuned_learners"][name]["mean_eval_loss"] for n in names]
        ax.plot(depths, ys, style, lw=1, label=f"tuned {name}")
    ax.set_yscale("log")
    ax.set(xlabel="K (layers / steps)", ylabel="half-MSE (held-out)", title="Final loss, 95% CI")
    ax.set_xticks(depths)
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    for i, variant in enumerate(MOMENTUM_VARIANTS):
        diffs = [s["per_K"][n][variant]["difference_vs_plain"] for n in names]
        mean = np.array([d["mean"] for d in diffs])
        low, high = np.array([d["ci_low"] for d in diffs]), np.array([d["ci_high"] for d in diffs])
        x = np.asarray(depths) + 0.1 * (i - 0.5)
        ax.errorbar(
            x,
            mean,
            yerr=[mean - low, high - mean],
            fmt="o",
            capsize=3,
            color=colors[variant],
            label=f"{variant} − plain",
        )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xlabel="K", ylabel="Δ half-MSE (paired seeds)", title="Momentum − plain, 95% CI")
    ax.set_xticks(depths)
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    for i, variant in enumerate(MOMENTUM_VARIANTS):
        stats = [s["per_K"][n][variant]["learned_momentum_stats"] for n in names]
        mean = np.array([st["mean"] for st in stats])
        low, high = (
            np.array([st["ci_low"] for st in stats]),
            np.array([st["ci_high"] for st in stats]),
        )
        x = np.asarray(depths) + 0.1 * (i - 0.5)
        label = "learned μ (token)" if variant == "token_momentum" else "learned β (depth)"
        ax.errorbar(
            x,
            mean,
            yerr=[mean - low, high - mean],
            fmt="o",
            capsize=3,
            color=colors[variant],
            label=label,
        )
    for name, style in (("heavy_ball", "m--"), ("nesterov", "c--")):
        if name not in s["per_K"][names[0]]["tuned_learners"]:
            continue
        betas = [np.mean(s["per_K"][n]["tuned_learners"][name]["theta"]["beta"]) for n in names]
        ax.plot(depths, betas, style, label=f"tuned {name} β (constant η, β)")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xlabel="K", ylabel="momentum", title="Learned μ, β vs tuned heavy-ball β")
    ax.set_xticks(depths)
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    steps = a["eval_steps"]
    for variant in MOMENTUM_VARIANTS:
        for j, k in enumerate(depths):
            curves = a[f"momentum_{variant}_K{k}"]
            ax.plot(steps, curves.T, color=colors[variant], alpha=0.2, lw=0.6)
            ax.plot(
                steps,
                curves.mean(axis=0),
                color=colors[variant],
                ls=("-", "--", "-.", ":")[j % 4],
                label=f"{'μ' if variant == 'token_momentum' else 'β'}, K = {k} (seed mean)",
            )
    ax.set(xlabel="training step", ylabel="μ or β", title="Learned momentum during training")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    sweep = s["sweep"]
    for variant in MOMENTUM_VARIANTS:
        rows = sweep[variant]
        xs = np.array([r["momentum"] for r in rows])
        stats = [t_interval(np.asarray(r["loss"])) for r in rows]
        mean = np.array([st["mean"] for st in stats])
        low, high = (
            np.array([st["ci_low"] for st in stats]),
            np.array([st["ci_high"] for st in stats]),
        )
        ax.errorbar(
            xs,
            mean,
            yerr=[mean - low, high - mean],
            fmt="o-",
            capsize=3,
            color=colors[variant],
            label=f"{variant}, fixed",
        )
        learned = s["per_K"][f"K{sweep['depth']}"][variant]
        ax.errorbar(
            learned["learned_momentum_stats"]["mean"],
            learned["mean"],
            yerr=[[learned["mean"] - learned["ci_low"]], [learned["ci_high"] - learned["mean"]]],
            fmt="*",
            ms=12,
            color=colors[variant],
            label=f"{variant}, learned",
        )
    ax.set(
        xlabel="fixed μ or β (0 = plain)",
        ylabel="half-MSE",
        title=f"Fixed-momentum sweep, K = {sweep['depth']}, 95% CI",
    )
    ax.legend(fontsize=8)

    ax = axes[1, 2]
    if "position_trained_causal" in a:
        t = np.arange(a["position_gd_construction"].shape[0])
        trained = a["position_trained_causal"]
        ax.plot(t, trained.mean(axis=0), "o-", color="C0", label="trained K=1 LSA, causal readout")
        ax.plot(
            t,
            a["position_trained_prefix"].mean(axis=0),
            "x",
            color="C3",
            label="same, label-free prefix prompts",
        )
        ax.plot(t, a["position_gd_construction"], "k--", label="GD construction η*, causal")
        ax.plot(t, a["position_gd_best_per_length"], "k:", label="best 1-step GD η*(n)")
        ax.set(
            xlabel="position t = number of earlier pairs",
            ylabel="half-MSE",
            title="Loss at every context length (causal LSA)",
        )
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Momentum attention on the von Oswald preset: heavy-ball construction error "
        f"{s['heavy_ball_construction_error']:.1e} (float64, K = 1..10)"
    )
    fig.text(0.5, 0.005, s["closing_note"], ha="center", va="bottom", fontsize=7, wrap=True)
    return save_figure(fig, out_dir, NAME)


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
