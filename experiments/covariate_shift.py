"""One trained LSA layer at other prompt lengths and under covariate shift (Zhang et al. 2023)

    icl-toy run covariate_shift           # or python -m experiments.covariate_shift
    icl-toy run covariate_shift --quick   # shrunk config, ~20 s

Full: 10 seeds x 3000 steps, then 35 test settings x 50,000 tasks, ~1.5 min on 2 CPU cores.

Trains one LSA layer at prompt length N = 20 on the anisotropic Gaussian task of
`preconditioned_gd` (inputs N(0, Λ), d = 5, σ = 0.5), then tests it at prompt lengths M
and under a covariate shift Ω = cΛ of context and query inputs. The empirical MSE (mean
and min–max band over seeds, on the same held-out tasks for every seed) is drawn beside the
closed form R(Γ*; Ω, M) of docs/theory.md §6 (`closed_forms.preconditioner_risk` with Σ := Ω and
length M) and its limit τ² tr(Ω(Γ*Ω − I)²) as M → ∞, with OLS (closed form σ²d/(M − d − 1),
unchanged by the shift) and Bayes ridge λ = σ²/τ² as baselines.

Prompt length. The LSA's attention sums over the context, so its weights carry the 1/N of
the training length; at test length M we scale W_PV by N/M, i.e. we evaluate the
normalised layer ŷ = x_qᵀ Γ (1/M) Σ_i y_i x_i of Zhang et al. (without it ŷ grows as M/N).
The M grid starts at 10 > d + 1 because the OLS risk with noisy labels is infinite for
M ≤ d + 1 (docs/theory.md §8). Losses are MSE.

Writes `covariate_shift.{png,pdf}` (main figure: (a) MSE against the test length M at
c = 1 beside the closed form, its M → ∞ limit and OLS, (b) MSE against the shift c at
M = N and the longest M, (c) the seed-mean relative error to the closed form at every
(M, c)), `covariate_shift_supplement.{png,pdf}` (panels (a) and (b) with Bayes ridge, the
relative error to R(Γ*) and to each seed's own R(Γ_fit) as heatmaps, MSE against M at
every c, the training loss) and `covariate_shift.{json,npz}` to `figures/` (full) or
`figures/quick/`.
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

from icl_toy.analysis import input_shifts, preconditioning
from icl_toy.analysis.learning_curves import scale_value_projection
from icl_toy.analysis.stats import seed_stats
from icl_toy.core import learners
from icl_toy.core.tasks import TaskConfig, sample_batch
from icl_toy.runs.cli import experiment_main
from icl_toy.runs.plotting import paper_figure, save_figures, seed_band
from icl_toy.runs.results import Results
from icl_toy.training.train import RunOptions, batch_predict, train

NAME = "covariate_shift"
RUNTIME = {"full": "~1.5 min", "quick": "~20 s"}  # on a 2-core CPU


@dataclasses.dataclass(frozen=True)
class Config(preconditioning.LayerConfig):  # the layer of preconditioned_gd, trained at N
    test_lengths: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 640)  # M; each > d + 1 for OLS
    shift_scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # c in Ω = cΛ
    eval_tasks: int = 50_000  # held-out tasks per (M, c), the same for every seed
    baseline_tasks: int = 10_000  # of those, the first ones also solved by OLS and ridge
    chunk_tasks: int = 5_000  # tasks evaluated at once (bounds memory at large M)
    eval_seed: int = 10_000  # root key of the held-out tasks (not a training seed)

    def __post_init__(self):
        super().__post_init__()
        if not self.test_lengths or min(self.test_lengths) <= self.task.d + 1:
            raise ValueError(
                f"test_lengths must all exceed d + 1 = {self.task.d + 1} (the OLS risk is "
                f"infinite below), got {self.test_lengths}"
            )
        if not self.shift_scales or min(self.shift_scales) <= 0:
            raise ValueError(f"shift_scales must be positive, got {self.shift_scales}")
        if min(self.eval_tasks, self.baseline_tasks, self.chunk_tasks) < 1:
            raise ValueError("eval_tasks, baseline_tasks and chunk_tasks must be >= 1")
        if self.eval_tasks % self.chunk_tasks or self.baseline_tasks % self.chunk_tasks:
            raise ValueError("chunk_tasks must divide eval_tasks and baseline_tasks")
        if self.baseline_tasks > self.eval_tasks:
            raise ValueError("baseline_tasks must be <= eval_tasks")


def get_config(quick: bool = False) -> Config:
    if not quick:
        return Config()
    return Config(
        train=preconditioning.quick_train(),
        test_lengths=(10, 160),
        shift_scales=(0.5, 1.0, 2.0),
        eval_tasks=5_000,
        baseline_tasks=5_000,
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _lsa_errors(model, test_task: TaskConfig, num_tasks: int, n_train: int, params_S, key, c_C):
    """Summed squared errors (S, C) of each seed's length-normalised LSA at each shift c."""
    prompts = sample_batch(key, test_task, num_tasks)
    m = test_task.n_context

    def at_shift(c):
        shifted = input_shifts.scale_inputs(prompts, c)

        def per_seed(params):
            pred = batch_predict(model, scale_value_projection(params, n_train / m), shifted)
            return jnp.sum((pred - shifted.y_q) ** 2)

        return jax.vmap(per_seed)(params_S)

    return jax.lax.map(at_shift, c_C).T


@functools.partial(jax.jit, static_argnums=(0, 1))
def _baseline_errors(test_task: TaskConfig, num_tasks: int, key, c_C):
    """Summed squared errors (C,) of OLS and of ridge with λ = σ²/τ² at each shift c."""
    prompts = sample_batch(key, test_task, num_tasks)
    lam = test_task.noise_std**2 / test_task.w_scale**2

    def at_shift(c):
        p = input_shifts.scale_inputs(prompts, c)
        ols = jax.vmap(learners.ols)(p)
        ridge = jax.vmap(learners.ridge(lam))(p)
        return jnp.sum((ols - p.y_q) ** 2), jnp.sum((ridge - p.y_q) ** 2)

    return jax.lax.map(at_shift, c_C)


def empirical_errors(config: Config, model, params_S) -> dict[str, np.ndarray]:
    """MSE of the LSA (S, M, C), OLS and ridge (M, C) on held-out tasks at each M and c.

    Tasks of length M are drawn from Λ; every c rescales the same draws (`scale_inputs`), and
    every seed sees the same tasks.
    """
    lengths, scales = config.test_lengths, config.shift_scales
    lsa = np.zeros((config.train.num_seeds, len(lengths), len(scales)))
    ols, ridge = np.zeros(lsa.shape[1:]), np.zeros(lsa.shape[1:])
    root = jax.random.key(config.eval_seed)
    baseline_chunks = config.baseline_tasks // config.chunk_tasks
    c_C = jnp.asarray(scales, jnp.float32)
    n, chunk = config.task.n_context, config.chunk_tasks
    for i, m in enumerate(lengths):
        test_task = dataclasses.replace(config.task, n_context=m)
        for k in range(config.eval_tasks // chunk):
            key = jax.random.fold_in(jax.random.fold_in(root, m), k)
            lsa_sums = _lsa_errors(model, test_task, chunk, n, params_S, key, c_C)
            lsa[:, i] += np.asarray(lsa_sums) / config.eval_tasks
            if k < baseline_chunks:
                ols_sums, ridge_sums = _baseline_errors(test_task, chunk, key, c_C)
                ols[i] += np.asarray(ols_sums) / config.baseline_tasks
                ridge[i] += np.asarray(ridge_sums) / config.baseline_tasks
    return {"lsa": lsa, "ols": ols, "ridge": ridge}


def run(config: Config, options: RunOptions | None = None) -> Results:
    """Train at length N on Λ; measure and compute the risk at each M and c."""
    start = time.time()
    task = config.task
    model = preconditioning.make_layer(config)
    result = train(model, task, config.train, options=options)
    gamma_fit = preconditioning.fitted_preconditioners(result.params, task)
    gamma_star = preconditioning.optimal_preconditioner(task)
    lengths, scales = config.test_lengths, config.shift_scales
    measured = empirical_errors(config, model, result.params)
    closed = preconditioning.shift_risk_grid(task, gamma_star, gamma_fit, lengths, scales)
    lsa = measured["lsa"]
    rel_star = lsa / closed["star"][None] - 1.0
    rel_fit = lsa / closed["fitted"] - 1.0
    arrays = {
        "test_lengths": np.asarray(lengths),
        "shift_scales": np.asarray(scales),
        "lsa_empirical": lsa,  # (S, M, C)
        "lsa_closed_form": closed["star"],  # (M, C), at Γ*
        "lsa_closed_form_at_fitted": closed["fitted"],  # (S, M, C)
        "lsa_limit_closed_form": closed["limit"],  # (C,), M → ∞
        "ols_empirical": measured["ols"],
        "ols_closed_form": closed["ols"],
        "ridge_empirical": measured["ridge"],
    }
    summary = {
        "experiment": NAME,
        "config": config,
        "loss": "MSE, mean (y_hat - y_q)^2; the LSA at length M has W_PV scaled by N/M",
        "test_lengths": list(lengths),
        "shift_scales": list(scales),
        **{k: v for k, v in arrays.items() if k not in ("test_lengths", "shift_scales")},
        "ridge_lambda": task.noise_std**2 / task.w_scale**2,
        "max_abs_relative_error_vs_closed_form": float(np.abs(rel_star.mean(0)).max()),
        "max_abs_relative_error_vs_closed_form_at_fitted": float(np.abs(rel_fit).max()),
        "seed_stats": {
            "relative_error_vs_closed_form_max_over_grid": seed_stats(
                np.abs(rel_star).reshape(rel_star.shape[0], -1).max(axis=1)
            ),
            "train_half_mse_last": seed_stats(result.train_loss[:, -1]),
        },
        "runtime_s": time.time() - start,
    }
    return Results(summary, {**arrays, "train_half_mse": result.train_loss})


def figures(results: Results) -> dict[str, plt.Figure]:
    """The main figure (risk against prompt length and shift beside the closed form, the
    relative error) and the dashboard."""
    return {NAME: _main_figure(results), f"{NAME}_supplement": _dashboard(results)}


def plot(results: Results, out_dir: str | Path) -> list[Path]:
    """Draw the study's figures from saved results."""
    return save_figures(figures, results, out_dir=out_dir)


# One encoding in both panels: C0 the trained LSA, black its closed form, C3 OLS (markers
# measured, line closed form), C2 ridge; at two lengths M, filled markers are the first.
LSA = dict(color="C0", marker="o")
RIDGE = r"ridge, $\lambda = \sigma^2/\tau^2$"
LIMIT = r"LSA, $M \to \infty$: $\tau^2\,\mathrm{tr}(\Omega(\Gamma^*\Omega - I)^2)$"


def _length_panel(ax, s, a, with_ridge: bool) -> None:
    """MSE against the test length M at c = 1: LSA, its closed form and limit, OLS."""
    lengths, scales = a["test_lengths"], a["shift_scales"]
    j = int(np.argmin(np.abs(scales - 1.0)))
    seed_band(ax, lengths, a["lsa_empirical"][:, :, j], "trained LSA", **LSA)
    ax.plot(lengths, a["lsa_closed_form"][:, j], "k--", label=r"LSA at $\Gamma^*$, closed form")
    ax.axhline(a["lsa_limit_closed_form"][j], color="gray", ls=":", label=LIMIT)
    ax.plot(lengths, a["ols_empirical"][:, j], "s", color="C3", label="OLS (line: closed form)")
    ax.plot(lengths, a["ols_closed_form"][:, j], "-", color="C3", lw=0.8)
    if with_ridge:
        ax.plot(lengths, a["ridge_empirical"][:, j], "^-", color="C2", label=RIDGE)
    ax.axvline(s["config"]["task"]["n_context"], color="gray", lw=0.8, label="training length N")
    ax.set(xscale="log", yscale="log", xlabel="test prompt length M", ylabel="MSE")


def _shift_panel(ax, a, rows, with_ridge: bool) -> None:
    """MSE against the shift c at two test lengths `rows` (indices into M), filled markers
    at the first, open at the second."""
    lengths, scales = a["test_lengths"], a["shift_scales"]
    for row, fill in zip(rows, ("full", "none"), strict=True):
        kwargs = dict(fillstyle=fill, ls="")
        seed_band(ax, scales, a["lsa_empirical"][:, row, :], None, **LSA, **kwargs)
        ax.plot(scales, a["lsa_closed_form"][row], "k--", lw=0.9)
        ax.plot(scales, a["ols_empirical"][row], "s", color="C3", **kwargs)
        ax.plot(scales, a["ols_closed_form"][row], "-", color="C3", lw=0.8)
        if with_ridge:
            ax.plot(scales, a["ridge_empirical"][row], "^", color="C2", **kwargs)
        ax.plot([], [], "o", color="0.4", label=f"M = {lengths[row]}", **kwargs)
    ax.plot(scales, a["lsa_limit_closed_form"], ":", color="gray")
    ax.set(
        xscale="log", yscale="log", xlabel=r"shift c: inputs $\sim N(0, c\Lambda)$", ylabel="MSE"
    )
    ax.set_xticks(scales, [f"{c:g}" for c in scales], minor=False)
    ax.set_xticks([], minor=True)


def _shift_rows(a, n_train: int) -> list[int]:
    """Indices of the training length N and of the longest test length."""
    lengths = a["test_lengths"]
    return [int(np.argmin(np.abs(lengths - n_train))), len(lengths) - 1]


def _main_figure(results: Results) -> plt.Figure:
    s, a = results.summary, results.arrays
    lengths, scales = a["test_lengths"], a["shift_scales"]
    n_train = s["config"]["task"]["n_context"]
    fig, ((length_ax, shift_ax, error_ax),) = paper_figure(3, height=2.9)

    _length_panel(length_ax, s, a, with_ridge=False)
    length_ax.set_title(f"(a) test length M (c = 1, trained at N = {n_train})")
    fig.legend(*length_ax.get_legend_handles_labels(), loc="outside lower center", ncols=3)

    _shift_panel(shift_ax, a, _shift_rows(a, n_train), with_ridge=False)
    shift_ax.set_title(r"(b) covariate shift $\Omega = c\Lambda$")
    shift_ax.legend(loc="upper left")

    # The claim is "empirical = closed form": the relative error on a linear axis.
    relative = 100 * (a["lsa_empirical"].mean(axis=0) / a["lsa_closed_form"] - 1.0)
    for j, c in enumerate(scales):
        error_ax.plot(lengths, relative[:, j], "o-", ms=3, color=f"C{j}", label=f"{c:g}")
    error_ax.axhline(0.0, color="k", ls="--", lw=0.8)
    error_ax.set(xscale="log", xlabel="test prompt length M", ylabel="MSE / closed form − 1 (%)")
    error_ax.set_title("(c) LSA against its closed form")
    top = np.abs(relative).max()
    error_ax.set_ylim(-1.3 * top, 2.2 * top)  # room for the legend
    error_ax.legend(loc="upper center", ncols=3, title="shift c (mean of seeds)")
    return fig


def _relative_heatmap(ax, relative_MxC, lengths, scales, title: str) -> None:
    """A heatmap of relative errors over (M, c), each cell labelled with its value."""
    vmax = max(float(np.abs(relative_MxC).max()), 0.03)
    image = ax.imshow(relative_MxC, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    for (r, col), value in np.ndenumerate(relative_MxC):
        ax.text(col, r, f"{value:+.1%}", ha="center", va="center")
    ax.set_xticks(range(len(scales)), [f"{c:g}" for c in scales])
    ax.set_yticks(range(len(lengths)), [str(m) for m in lengths])
    ax.set(xlabel="shift c", ylabel="test length M", title=title)
    ax.grid(False)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.grid(False)


def _dashboard(results: Results) -> plt.Figure:
    s, a = results.summary, results.arrays
    lengths, scales = a["test_lengths"], a["shift_scales"]
    n_train = s["config"]["task"]["n_context"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))

    ax = axes[0, 0]
    _length_panel(ax, s, a, with_ridge=True)
    ax.set_title(f"test length M (c = 1, trained at N = {n_train})")
    ax.legend()

    ax = axes[0, 1]
    _shift_panel(ax, a, _shift_rows(a, n_train), with_ridge=True)
    ax.set_title(r"covariate shift $\Omega = c\Lambda$ (colours as left)")
    ax.legend(loc="upper left")

    ax = axes[0, 2]
    relative = a["lsa_empirical"].mean(axis=0) / a["lsa_closed_form"] - 1.0
    _relative_heatmap(ax, relative, lengths, scales, r"seed-mean MSE / $R(\Gamma^*)$ − 1")

    ax = axes[1, 0]
    for j, c in enumerate(scales):
        seed_band(ax, lengths, a["lsa_empirical"][:, :, j], f"c = {c:g}", color=f"C{j}", marker="o")
        ax.plot(lengths, a["lsa_closed_form"][:, j], "k--", lw=0.8)
    ax.plot([], [], "k--", lw=0.8, label=r"closed form at $\Gamma^*$")
    ax.set(xscale="log", yscale="log", xlabel="test prompt length M", ylabel="MSE")
    ax.set_ylim(top=20 * ax.get_ylim()[1])  # room for the legend above the curves
    ax.set_title("trained LSA at every shift")
    ax.legend(loc="upper center", ncols=3)

    ax = axes[1, 1]
    relative_fit = (a["lsa_empirical"] / a["lsa_closed_form_at_fitted"] - 1.0).mean(axis=0)
    _relative_heatmap(ax, relative_fit, lengths, scales, r"MSE / $R(\hat\Gamma)$ − 1, seed mean")

    ax = axes[1, 2]
    train = a["train_half_mse"]
    seed_band(ax, np.arange(1, train.shape[1] + 1), train, "trained LSA, training batch")
    ax.set(xlabel="training step", ylabel="half-MSE", title="training loss at N")
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> int:
    return experiment_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
