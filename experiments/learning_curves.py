"""Learning curves: loss against the number of in-context examples, in and out of distribution

    icl-toy run learning_curves           # or python -m experiments.learning_curves
    icl-toy run learning_curves --quick   # shrunk config, ~25 s (33 s on a loaded machine)

Full: LSA transformers with K = 1 and 2 layers (10 seeds each), then 12 learners x 20
lengths x 5 test laws on 5000 tasks each: ~4.5 min on 2 CPU cores, mostly compiling one
program per learner and length (`icl_toy.analysis.learning_curves`).

Trains K-layer LSA transformers (`init="gd_sparsity"`) at N = 10 on Gaussian prompts, d = 10,
x ~ N(0, I), w ~ N(0, I), label noise σ = 0.5, and evaluates them at every context length
n = 1..2N beside every baseline, on the same nested prompts (the prompt of length n is the
first n pairs of one 2N-pair prompt), in distribution and under four OOD test laws
(`icl_toy.analysis.learning_curves.Shift`): inputs ×2, teacher ×2, a skewed input covariance with
condition number 25 (same trace), and label noise σ = 1.5 (3x the training noise).

Gaussian inputs give closed forms at every n (zero predictor, OLS, one GD step; docs/theory.md §5,
§8); with noise the OLS risk is infinite near n = d, so the y axis is logarithmic and the
median over tasks is saved beside the mean.

Each trained model is drawn "raw" (the trained weights: a GD layer steps η·n/N at n pairs)
and "normalised" (W_PV × N/n, `learning_curves.length_normalised`), the convention of the GD
and GD++ baselines (1/n inside η, γ = γ̂/n). Baselines keep the parameters tuned for the
training law under every shift. Losses are half-MSE against the noiseless query label.
Bands and error bars are 95% Student-t intervals: over seeds for trained models, over tasks
for baselines.

Writes `learning_curves.{png,pdf}` (main figure: (a) in distribution, half-MSE against n of
the trained LSAs (K = 2 raw and normalised, K = 1 raw) beside tuned GD++, 2-step GD, OLS,
Bayes ridge and the zero predictor, (b) each learner at n = N on a linear axis (OLS, whose
noisy risk is infinite at n = d, is left out), (c) the same curves with inputs ×2 at test),
`learning_curves_supplement.{png,pdf}` (one panel per test law with every learner and the
closed forms of OLS and one GD step) and `learning_curves.{json,npz}` to `figures/` (full)
or `figures/quick/`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Literal

import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from icl_toy.analysis import baselines
from icl_toy.analysis import learning_curves as lc
from icl_toy.analysis.learning_curves import Shift
from icl_toy.analysis.stats import seed_stats
from icl_toy.core.learners import gd, nearest_neighbours, ols, ridge, tuned_gd_eta, zero_predictor
from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.predictors import seeded_model_predictor
from icl_toy.core.tasks import TaskConfig, sample_batch
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import interval_band, interval_errors, paper_figure, save_figures
from icl_toy.runs.results import Results
from icl_toy.training import tuning
from icl_toy.training.train import RunOptions, TrainConfig, train

NAME = "learning_curves"
RUNTIME = {"full": "~4.5 min", "quick": "~25 s"}  # on a 2-core CPU
IN_DISTRIBUTION = "in_distribution"


def gaussian_noisy_task() -> TaskConfig:
    """d = N = 10, x ~ N(0, I), w ~ N(0, I), context labels with noise σ = 0.5."""
    return TaskConfig(d=10, n_context=10, inputs="gaussian", noise_std=0.5)


@dataclasses.dataclass(frozen=True)
class Config:
    task: TaskConfig = dataclasses.field(default_factory=gaussian_noisy_task)  # training law
    depths: tuple[int, ...] = (1, 2)  # K of each trained LSA transformer
    # "gd_sparsity": random weights with the GD construction's zero blocks (the dense init
    # can sit on a plateau for thousands of steps at small batches, see multi_layer_gdpp).
    init: Literal["gd_sparsity", "dense"] = "gd_sparsity"
    # The recipe of `multi_layer_gdpp` for K <= 2 (warmup, cosine decay from 4e-3 to 1% of
    # it, held over the last 10% so the convergence record reads learning at a fixed rate;
    # batch 256), 10 seeds: the curves' intervals are over seeds.
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=3000,
            batch_size=256,
            learning_rate=4e-3,
            schedule="warmup_cosine",
            warmup_steps=150,
            final_lr_fraction=0.01,
            hold_steps=300,
            eval_every=300,
            num_seeds=10,
        )
    )
    lengths: tuple[int, ...] = tuple(range(1, 21))  # context lengths n of the curves (to 2N)
    shifts: tuple[Shift, ...] = (
        Shift("input_scale", 2.0),
        Shift("weight_scale", 2.0),
        Shift("skewed_covariance", 25.0),
        Shift("label_noise", 1.5),
    )
    gd_steps: tuple[int, ...] = (1, 2, 3)  # K-step GD baselines, one constant η tuned at N
    gdpp_steps: int = 2  # GD++ with (η_k, γ_k) fitted at N; 0 leaves it out
    gdpp_fit_steps: int = 1000  # Adam steps of each GD++ fit (`tuning.fit_ladders`)
    gdpp_fit_batch: int = 512
    gdpp_fit_learning_rate: float = 0.05
    knn_k: int = 3  # k of the nearest-neighbour baseline (undefined for n < k)
    eval_tasks: int = 5000  # held-out tasks per test law, the same for every learner
    tune_tasks: int = 10_000  # tasks of the η line search for K >= 2
    eval_seed: int = 10_000  # root key of held-out tasks and of the tuning (not a training seed)

    def __post_init__(self):
        if self.task.d_y != 1:
            raise ValueError("learning_curves studies d_y = 1")
        if not self.depths or min(self.depths) < 1 or len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths must be distinct integers >= 1, got {self.depths}")
        if not self.lengths or min(self.lengths) < 1 or len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"lengths must be distinct integers >= 1, got {self.lengths}")
        if list(self.lengths) != sorted(self.lengths):
            raise ValueError(f"lengths must be increasing, got {self.lengths}")
        for shift in self.shifts:
            if not isinstance(shift, Shift):
                raise ValueError(f"shifts must be Shift instances, got {shift!r}")
            lc.apply_shift(self.task, shift)  # validates the shifted law now
        if len({s.label for s in self.shifts}) != len(self.shifts):
            raise ValueError(f"shifts must be distinct, got {self.shifts}")
        if not self.gd_steps or min(self.gd_steps) < 1:
            raise ValueError(f"gd_steps must be integers >= 1, got {self.gd_steps}")
        if self.gdpp_steps < 0 or self.knn_k < 1:
            raise ValueError("gdpp_steps must be >= 0 and knn_k >= 1")
        for name in ("gdpp_fit_steps", "gdpp_fit_batch", "tune_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_tasks < 2:
            raise ValueError(f"eval_tasks must be >= 2 for an interval, got {self.eval_tasks}")
        if not self.gdpp_fit_learning_rate > 0:
            raise ValueError("gdpp_fit_learning_rate must be > 0")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        depths=(1,),
        train=TrainConfig(
            steps=200, batch_size=128, learning_rate=3e-3, eval_every=100, num_seeds=2
        ),
        lengths=(2, 10, 20),
        shifts=(Shift("input_scale", 2.0),),
        gd_steps=(1,),
        gdpp_steps=0,
        eval_tasks=1000,
    )


def _baselines(config: Config) -> tuple[dict, dict]:
    """The baseline learners, tuned on the training law, and their tuned parameters."""
    task = config.task
    key_gd, key_gdpp = jax.random.split(jax.random.fold_in(jax.random.key(config.eval_seed), 1))
    lam = baselines.bayes_ridge_lambda(task)
    learners = {"zero": zero_predictor, "OLS": ols}
    learners[f"ridge (Bayes λ={lam:g})"] = ridge(lam)
    tuned = {"ridge_lambda": lam, "gd_eta": {}}
    for k in config.gd_steps:
        eta = tuned_gd_eta(task, k, key=jax.random.fold_in(key_gd, k), num_tasks=config.tune_tasks)
        tuned["gd_eta"][k] = eta
        learners[f"GD K={k}"] = gd(np.full(k, eta))
    if config.gdpp_steps:
        # Per-step (η_k, γ_k) at their optimum (`tuning.fit_ladders`: several starts, the best
        # on tasks no fit saw), then read as γ̂ = Nγ so that at any length n GD++ runs with
        # γ = γ̂/n (`tuning.normalized_gamma`).
        k = config.gdpp_steps
        fit = tuning.FitConfig(
            config.gdpp_fit_steps, config.gdpp_fit_batch, config.gdpp_fit_learning_rate
        )
        selection = sample_batch(jax.random.fold_in(key_gdpp, 1), task, config.tune_tasks)
        fitted = tuning.fit_ladders(task, k, ("per_layer",), key_gdpp, fit, selection)
        fitted = fitted["per_layer"][k - 1]["gdpp"]
        theta = {"eta": fitted["eta"], "gamma": fitted["gamma"] * task.n_context}
        tuned["gdpp"] = {name: np.asarray(v).tolist() for name, v in theta.items()}
        tuned["gdpp"] |= {name: fitted[name] for name in ("held_out_loss", "chosen")}
        learner = tuning.normalized_gamma(tuning.gdpp_learner)
        learners[f"GD++ K={k}"] = functools.partial(learner, theta)
    learners[f"{config.knn_k}-NN"] = nearest_neighbours(config.knn_k)
    return learners, tuned


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train the LSA models, tune the baselines, and evaluate every curve on every law."""
    start = time.time()
    task, n_train = config.task, config.task.n_context
    learners, train_stats = {}, {}
    for k in config.depths:
        model = make_model(task, ModelConfig(num_layers=k, init=config.init))
        stage = options.stage(f"K{k}") if options is not None else None
        result = train(model, task, config.train, options=stage)
        raw = seeded_model_predictor(model, result.params)
        learners[f"LSA K={k} (normalised)"] = lc.length_normalised(raw, n_train)
        learners[f"LSA K={k} (raw)"] = raw
        train_stats[f"K={k}"] = seed_stats(result.train_loss[:, -100:].mean(axis=1))
    train_time = time.time() - start
    baseline_learners, tuned = _baselines(config)
    learners.update(baseline_learners)

    laws = {IN_DISTRIBUTION: task} | {s.label: lc.apply_shift(task, s) for s in config.shifts}
    key = jax.random.fold_in(jax.random.key(config.eval_seed), 0)
    curves = lc.learning_curves(
        learners, laws, config.lengths, key=key, num_tasks=config.eval_tasks
    )
    names = list(learners)
    arrays = {"lengths": np.asarray(config.lengths)} | lc.curve_arrays(curves, names)
    arrays |= lc.closed_form_arrays(laws, config.lengths, tuned["gd_eta"].get(1))
    at = lc.means_at(arrays["mean"], list(laws), names, config.lengths, n_train)
    summary = {
        "experiment": NAME,
        "config": config,
        "loss": "half-MSE, 0.5 * mean (y_hat - y_q)^2, noiseless query label",
        "interval": "95% Student-t: over seeds for LSA models, over tasks for baselines",
        "laws": list(laws),
        "law_tasks": laws,
        "learners": names,
        "tuned": tuned,
        "train_half_mse_last_100": train_stats,
        "train_time_s": train_time,
        "mean_at": at,
        "curves": {law: curves[law]["curves"] for law in laws},
        "runtime_s": time.time() - start,
    }
    return Results(summary, arrays)


STYLE = {
    "zero": dict(color="0.6", ls=":"),
    "OLS": dict(color="k", ls="-", lw=1.0),
    "ridge": dict(color="C2", ls="-", lw=1.2),
    "GD K=1": dict(color="C1", ls="--", lw=1.0),
    "GD K=2": dict(color="C4", ls="--", lw=1.0),
    "GD K=3": dict(color="C5", ls="--", lw=1.0),
    "GD++": dict(color="C6", ls="-.", lw=1.0),
    "NN": dict(color="C8", ls="-.", lw=1.0),
    "LSA K=1 (normalised)": dict(color="C0", lw=1.6),
    "LSA K=1 (raw)": dict(color="C0", lw=1.0, ls=(0, (4, 2)), marker="."),
    "LSA K=2 (normalised)": dict(color="C3", lw=1.6),
    "LSA K=2 (raw)": dict(color="C3", lw=1.0, ls=(0, (4, 2)), marker="."),
}
MAIN_LEARNERS = (  # the curves of the main figure; every learner is in the supplement
    "LSA K=1 (raw)",
    "LSA K=2 (raw)",
    "LSA K=2 (normalised)",
    "GD++ K=2",
    "GD K=2",
    "OLS",
    "ridge",
    "zero",
)
LAWS = {  # test-law labels -> titles, filled with the law's parameter
    "in_distribution": "in distribution",
    "input_scale": "inputs ×{}",
    "weight_scale": "teacher w ×{}",
    "skewed_covariance": "skewed covariance, condition number {}",
    "label_noise": "label noise σ = {}",
}


def _style(name: str) -> dict:
    for prefix, style in STYLE.items():
        if name.startswith(prefix) or (prefix == "NN" and name.endswith("-NN")):
            return style
    return {}


def display_name(name: str) -> str:
    """The name a reader knows for a learner of the saved curves."""
    if name.startswith("LSA"):
        depth = name.split("=")[1][0]
        scaled = r", $W_{PV} \times N/n$" if "normalised" in name else ""
        return f"trained LSA, K = {depth}{scaled}"
    if name.startswith("GD++"):
        return f"GD++, {name.split('=')[1]} steps, tuned"
    if name.startswith("GD K="):
        steps = int(name.split("=")[1])
        return f"GD, {steps} step{'s' if steps > 1 else ''}"
    if name.startswith("ridge"):
        return r"ridge, Bayes $\lambda$"
    return {"zero": "zero predictor"}.get(name, name)


def _law_title(law: str) -> str:
    name, _, value = law.partition("=")
    return LAWS.get(name, name.replace("_", " ")).format(value)


def _curves(ax, a, law_index: int, names: list[str], chosen) -> None:
    """Each chosen learner's curve over n with its 95% t-interval, on a log axis clipped
    at 3x the zero predictor."""
    for ci, name in enumerate(names):
        if chosen is not None and not any(name.startswith(c) for c in chosen):
            continue
        band = {field: a[field][law_index, ci] for field in ("mean", "low", "high")}
        interval_band(
            ax, a["lengths"], band, display_name(name), log_axis=True, ms=4, **_style(name)
        )
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = a["mean"][law_index][np.isfinite(a["mean"][law_index])]
    bottom = max(1e-3, 0.5 * float(finite[finite > 0].min()))
    ax.set_ylim(bottom, 3 * a["closed_zero"][law_index, 0])
    ax.set(xlabel="context length n", ylabel="half-MSE")


def figures(results: Results) -> dict[str, plt.Figure]:
    """The main figure (curves in distribution, every learner at n = N, curves under
    inputs ×2) and the dashboard of every law."""
    return {NAME: _main_figure(results), f"{NAME}_supplement": _dashboard(results)}


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figures from saved results."""
    return save_figures(figures, results, out_dir=out_dir)


def _main_figure(results: Results) -> plt.Figure:
    s, a = results.summary, results.arrays
    laws, names, lengths = s["laws"], s["learners"], list(a["lengths"])
    n_train = s["config"]["task"]["n_context"]
    fig, ((curve_ax, at_n_ax, shift_ax),) = paper_figure(3, height=2.9)

    _curves(curve_ax, a, laws.index(IN_DISTRIBUTION), names, MAIN_LEARNERS)
    curve_ax.axvline(n_train, color="gray", lw=0.8, label="training length N")
    curve_ax.set_title("(a) in distribution")
    handles, labels = curve_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=5)

    if n_train in lengths:
        _at_training_length(at_n_ax, a, laws.index(IN_DISTRIBUTION), names, lengths, n_train)
    else:
        at_n_ax.set_visible(False)

    shifted = [law for law in laws if law.startswith("input_scale")]
    if shifted:
        li = laws.index(shifted[0])
        _curves(shift_ax, a, li, names, MAIN_LEARNERS)
        # Here the GD-like learners leave the clipped axis; show how far.
        top = float(np.nanmax(a["mean"][li][np.isfinite(a["mean"][li])]))
        shift_ax.set_ylim(top=3 * top)
        shift_ax.axvline(n_train, color="gray", lw=0.8)
        shift_ax.set_title(f"(c) test {_law_title(shifted[0])}")
    else:
        shift_ax.set_visible(False)
    return fig


def _at_training_length(ax, a, law: int, names: list[str], lengths: list[int], n_train) -> None:
    """Each learner's mean at n = N with its 95% t-interval, on a linear axis: there the gap
    between the LSA and GD++ is one a log axis hides."""
    i_n = lengths.index(n_train)
    # OLS has an infinite risk at n = d with noise; at n = N a normalised LSA is its raw one.
    shown = [n for n in names if n != "OLS" and "normalised" not in n]
    order = sorted(shown, key=lambda n: a["mean"][law, names.index(n), i_n])
    for row, name in enumerate(order):
        record = {f: a[f][law, names.index(name), i_n] for f in ("mean", "low", "high")}
        color = _style(name).get("color", "k")
        ax.errorbar([record["mean"]], [row], xerr=interval_errors([record]), fmt="o", color=color)
    ax.set_yticks(range(len(order)), [display_name(n) for n in order])
    ax.errorbar([], [], xerr=[], fmt="o", color="0.3", label="mean, 95% t-interval")
    if "OLS" in names:
        ols = a["mean"][law, names.index("OLS"), i_n]
        ax.plot([], [], " ", label=f"OLS: {ols:.2g}, off scale")
    ax.set(xlabel=f"half-MSE at n = N = {n_train}")
    ax.set_title("(b) in distribution at n = N")
    ax.set_xlim(right=1.25 * ax.get_xlim()[1])  # room for the legend
    ax.legend(loc="lower right", fontsize=6.5)


def _dashboard(results: Results) -> plt.Figure:
    """One panel per test law: every learner's curve with its 95% t-interval."""
    s, a = results.summary, results.arrays
    laws, names, lengths = s["laws"], s["learners"], a["lengths"]
    task = s["config"]["task"]
    n_train, d = task["n_context"], task["d"]
    num_cols = min(3, len(laws) + 1)
    num_rows = -(-(len(laws) + 1) // num_cols)  # one more cell for the legend
    fig, axes = plt.subplots(
        num_rows, num_cols, figsize=(3.8 * num_cols, 3.2 * num_rows), squeeze=False
    )
    axes = axes.ravel()
    for li, (law, ax) in enumerate(zip(laws, axes, strict=False)):
        _curves(ax, a, li, names, None)
        ax.plot(lengths, a["closed_ols"][li], "k*", ms=5, label="OLS, closed form")
        ax.plot(lengths, a["closed_gd"][li], "x", color="C1", ms=4, label="GD 1 step, closed form")
        ols = a["mean"][li, names.index("OLS")]
        peak = int(np.nanargmax(ols))
        ax.axvline(n_train, color="gray", lw=0.8, label="training length N")
        if d != n_train:
            ax.axvline(d, color="gray", lw=0.8, ls=":", label="dimension d")
        ax.set_title(f"{_law_title(law)}\n(OLS mean peaks at {ols[peak]:.3g}, n = {lengths[peak]})")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[len(laws) :]:
        ax.axis("off")
    axes[len(laws)].legend(handles, labels, loc="center")
    return fig


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
