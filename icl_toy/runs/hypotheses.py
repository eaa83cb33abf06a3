"""Claims about in-context learners as code: a named hypothesis, run over seeds, with a verdict.

A `Hypothesis` is a claim from a paper, written down once: what it says, where it comes
from, and one or more `Criterion`s. Its `measure(config, options)` trains and evaluates what
the claim is about, S seeds vmapped, and returns one number per seed for every criterion,
usually a paired difference on shared held-out tasks (e.g. the trained model's loss minus
tuned GD's). A criterion compares the mean over seeds with a threshold, using the
Student-t 95% interval of that mean over seeds (`icl_toy.analysis.stats.mean_ci`):

    supported      the interval lies entirely on the claimed side of the threshold
    not supported  it lies entirely on the other side
    inconclusive   it contains the threshold (or a seed gave a non-finite value)

A hypothesis is supported when every criterion is, not supported when any criterion is
not, and inconclusive otherwise. Beside the deciding t-interval each criterion stores the
percentile-bootstrap interval (`bootstrap_ci`; with few seeds it is narrower than the
t-interval, which is why it does not decide: with 3 seeds it is [min, max]) and the p-value
of the exact sign-flip test of "mean = threshold" against the claimed side
(`sign_flip_p_value`; with S seeds it is at least 2^−S).

**Labels.** A verdict resting on fewer than `MIN_SEEDS` seeds, or on seeds whose training
had not converged (`icl_toy.training.convergence`: every `train` inside the measure is
recorded), carries a caveat in the entry's `caveats`, printed beside the verdict: such a
verdict is not a result to cite.

**Nulls.** Every criterion is reported beside the same statistic measured on null models
(`icl_toy.training.nulls`): the measure is run again with each trained model replaced by
its seeds' initial weights ("untrained") and by its trained weights with the entries of
every array shuffled ("permuted"), nothing retrained. A null's "beyond" says the trained
t-interval lies on the claimed side of the null's; a supported criterion that is not
beyond a null carries a caveat (what chance also gives is not evidence of learning).

**Where hypotheses live.** A hypothesis belongs to a study: an experiment module may define
`HYPOTHESES: tuple[Hypothesis, ...]`, its configs and measures beside its `run`, built from
`train_seeded`, `eval_key` and `require_seeds` below. `registry()` imports every study of
`icl_toy.runs.runner.EXPERIMENTS` through `get_experiment` and collects their hypotheses in
that order, then those still defined at the bottom of this module; a name defined twice
raises.

`icl-toy hypotheses [--quick] [NAME ...]` runs the registry and prints the table;
`run_hypotheses` writes `hypotheses.json` after every finished hypothesis (atomic, so an
interrupted run keeps what it finished and a rerun skips it) and draws
`hypotheses.png`/`.pdf` from the saved JSON. Training inside a hypothesis checkpoints
through `RunOptions`, so an interrupted one resumes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from icl_toy.analysis.stats import bootstrap_ci, interval, mean_ci, sign_flip_p_value
from icl_toy.core.predictors import seeded_model_predictor
from icl_toy.core.tasks import TaskConfig
from icl_toy.runs import guard, metrics_log, runner
from icl_toy.runs.plotting import PAPER_WIDTH, interval_errors, save_figures
from icl_toy.runs.results import atomic_write_bytes, git_commit, to_json_text, to_jsonable
from icl_toy.training import convergence, nulls
from icl_toy.training.train import RunOptions, TrainConfig, train

NAME = "hypotheses"
VERDICTS = ("supported", "not supported", "inconclusive")

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


# Fewer seeds than this and a verdict is labelled as resting on too few.
MIN_SEEDS = 10
NULL_SEED = 7  # root key of the permuted-weights null


def judge(criterion: Criterion, values: np.ndarray) -> dict[str, Any]:
    """The verdict of one criterion on per-seed values, with its intervals and p-value.

    Returns the criterion's fields, "per_seed", "std" (ddof = 1), "interval" (the Student-t
    record that decides), "bootstrap_interval" (the percentile bootstrap, beside it),
    "sign_flip_p" (exact, one-sided against the claimed side) and "verdict". A non-finite
    seed makes every number NaN and the verdict inconclusive.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    result = {
        **dataclasses.asdict(criterion),
        "per_seed": values.tolist(),
        "std": float(values.std(ddof=1)),
    }
    if not np.isfinite(values).all():
        nan = float("nan")
        return result | {
            "interval": interval(nan, nan, nan, "t", n),
            "bootstrap_interval": interval(nan, nan, nan, "bootstrap", n),
            "sign_flip_p": nan,
            "verdict": "inconclusive",
        }
    ci = mean_ci(values)
    above, below = ci["low"] > criterion.threshold, ci["high"] < criterion.threshold
    on_side, off_side = (below, above) if criterion.direction == "<" else (above, below)
    verdict = "supported" if on_side else "not supported" if off_side else "inconclusive"
    alternative = "less" if criterion.direction == "<" else "greater"
    return result | {
        "interval": ci,
        "bootstrap_interval": bootstrap_ci(values),
        "sign_flip_p": sign_flip_p_value(values, criterion.threshold, alternative=alternative),
        "verdict": verdict,
    }


def judge_null(criterion: Criterion, trained: dict, values: np.ndarray) -> dict[str, Any]:
    """The criterion's statistic under a null model beside the trained one's.

    Returns "per_seed", "interval" (Student-t) and "beyond": whether the trained t-interval
    lies entirely on the claimed side of the null's (False where either is not finite).
    """
    values = np.asarray(values, dtype=float)
    nan = float("nan")
    ci = mean_ci(values) if np.isfinite(values).all() else interval(nan, nan, nan, "t", values.size)
    t = trained["interval"]
    if criterion.direction == ">":
        beyond = t["low"] > ci["high"]
    else:
        beyond = t["high"] < ci["low"]
    finite = np.isfinite([t["low"], t["high"], ci["low"], ci["high"]]).all()
    return {"per_seed": values.tolist(), "interval": ci, "beyond": bool(finite and beyond)}


def caveats(criteria: Sequence[dict], runs: dict[str, dict]) -> list[str]:
    """What keeps a verdict from being citable: too few seeds, unconverged training, a
    supported criterion that its null models reach too."""
    notes = []
    seeds = min((len(c["per_seed"]) for c in criteria), default=0)
    if seeds < MIN_SEEDS:
        notes.append(f"{seeds} seeds (fewer than {MIN_SEEDS})")
    for stage, record in runs.items():
        if record["converged"] < record["total"]:
            notes.append(f"{convergence.fraction(record)} seeds converged in {stage}")
    for c in criteria:
        for kind, null in (c.get("nulls") or {}).items():
            if c["verdict"] == "supported" and not null["beyond"]:
                notes.append(f"{c['statistic']} is not beyond its {kind} null")
    return notes


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
    # Each entry names its own code: a saved file mixes entries run at different commits.
    commit = git_commit()
    with (
        convergence.collect(options and options.checkpoint_dir) as runs,
        nulls.recording() as trained,
    ):
        values = hypothesis.measure(config, options)
    missing = [c.statistic for c in hypothesis.criteria if c.statistic not in values]
    if missing:
        raise ValueError(f"{hypothesis.name}: the measure returned no {missing}")
    # The same measure on null weights (`training.nulls`): what each statistic is by chance.
    null_values = {}
    for kind in nulls.KINDS if trained else ():
        with nulls.replacing(kind, trained, jax.random.key(NULL_SEED)):
            null_values[kind] = hypothesis.measure(config, options)
    criteria = []
    for c in hypothesis.criteria:
        verdict = judge(c, values[c.statistic])
        if null_values:
            verdict["nulls"] = {
                kind: judge_null(c, verdict, v[c.statistic]) for kind, v in null_values.items()
            }
        criteria.append(verdict)
    return {
        "name": hypothesis.name,
        "claim": hypothesis.claim,
        "source": hypothesis.source,
        "config": to_jsonable(config),
        "criteria": criteria,
        "verdict": combine([c["verdict"] for c in criteria]),
        "caveats": caveats(criteria, runs),
        "convergence": runs,
        "extra": {k: np.asarray(v).tolist() for k, v in values.items()},
        "seconds": time.perf_counter() - start,
        "git_commit": commit,
    }


# --- What measures share ------------------------------------------------------------------


def train_seeded(model, task: TaskConfig, cfg: TrainConfig, options, stage: str):
    """Train S seeds of `model` (checkpoints under `stage`); (seeded predictor, params)."""
    result = train(model, task, cfg, options=options and options.stage(stage))
    return seeded_model_predictor(model, result.params), result.params


def eval_key(seed: int) -> jax.Array:
    """The key of a measure's held-out evaluation, from its config's `eval_seed`."""
    return jax.random.PRNGKey(seed)


def require_seeds(cfg: TrainConfig) -> None:
    """Raise unless `cfg` trains the >= 2 seeds a verdict needs (for a config's post-init)."""
    if cfg.num_seeds < 2:
        raise ValueError(f"a verdict needs >= 2 seeds, got train.num_seeds = {cfg.num_seeds}")


# --- Discovery: the hypotheses of every study ----------------------------------------------


def registry() -> dict[str, Hypothesis]:
    """Every hypothesis by name: each study's `HYPOTHESES`, in `EXPERIMENTS` order.

    A study is imported through `runner.get_experiment`; its `HYPOTHESES`, if it has one,
    must be a tuple of `Hypothesis`. A name defined twice raises, naming both places.
    """
    found: list[tuple[str, Hypothesis]] = []
    for study in runner.EXPERIMENTS:
        declared = getattr(runner.get_experiment(study), "HYPOTHESES", ())
        if not isinstance(declared, tuple) or not all(isinstance(h, Hypothesis) for h in declared):
            raise TypeError(f"{study}.HYPOTHESES must be a tuple of Hypothesis, got {declared!r}")
        found.extend((study, h) for h in declared)
    by_name: dict[str, Hypothesis] = {}
    origin: dict[str, str] = {}
    for place, hypothesis in found:
        if hypothesis.name in by_name:
            raise ValueError(
                f"hypothesis {hypothesis.name!r} is defined twice: in {origin[hypothesis.name]} "
                f"and in {place}"
            )
        by_name[hypothesis.name], origin[hypothesis.name] = hypothesis, place
    return by_name


def get_hypotheses(names: Sequence[str] | None = None) -> list[Hypothesis]:
    """The named hypotheses in the given order (default: all); unknown names raise first."""
    known = registry()
    names = list(known) if not names else list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown hypothesis {unknown[0]!r}; known hypotheses: {', '.join(known)}")
    return [known[n] for n in names]


# --- Running, saving, printing, drawing ---------------------------------------------------


def load_entries(out_dir: str | Path) -> dict[str, dict]:
    """The hypotheses saved in `out_dir/hypotheses.json` ({} if none)."""
    path = Path(out_dir) / f"{NAME}.json"
    return json.loads(path.read_text())["hypotheses"] if path.exists() else {}


def _save(out_dir: Path, entries: dict[str, dict], quick: bool) -> None:
    summary = {
        "quick": quick,
        "git_commit": git_commit(),  # at this save; each entry holds the commit it ran at
        "environment": runner.environment(),
        "hypotheses": entries,
    }
    atomic_write_bytes(out_dir / f"{NAME}.json", (to_json_text(summary) + "\n").encode())


def run_hypotheses(
    names: Sequence[str] | None,
    out_dir: str | Path,
    *,
    quick: bool = False,
    rerun: bool = False,
    fresh: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, dict]:
    """Run hypotheses into `out_dir` and return every saved entry, keyed by name.

    Every config is validated and the folder checked before any compute, and the folder is
    locked for the run. A hypothesis already saved there with the same config is skipped
    unless `rerun` (recomputed, training resumed from its checkpoints) or `fresh` (its
    checkpoints removed, trained from scratch). Each finished one is written to
    `hypotheses.json` at once; training checkpoints go to
    `out_dir/checkpoints/hypotheses/NAME/<config digest>/`, so an interrupted run resumes.
    """
    selected = get_hypotheses(names)
    configs = {h.name: h.get_config(quick) for h in selected}
    out_dir = Path(out_dir)
    for config in configs.values():
        guard.check_run(config, out_dir, len(jax.devices()))
    out_dir.mkdir(parents=True, exist_ok=True)
    with guard.ResultsLock(out_dir, "icl-toy hypotheses"):
        entries = load_entries(out_dir)
        for hypothesis in selected:
            config = configs[hypothesis.name]
            saved = entries.get(hypothesis.name)
            if saved is not None and saved["config"] == to_jsonable(config):
                if not (rerun or fresh):
                    echo(f"{hypothesis.name}: saved in {out_dir}/{NAME}.json, skipped")
                    continue
            echo(f"{hypothesis.name}: running")
            checkpoints, _ = runner.prepare_checkpoints(
                out_dir / "checkpoints" / NAME / hypothesis.name,
                config,
                resume=True,
                fresh=fresh,
                adopt=False,
            )
            # Each hypothesis's in-scan evaluations, as they happen: NAME.HYPOTHESIS.metrics.jsonl
            log = metrics_log.open_log(
                out_dir, f"{NAME}.{hypothesis.name}", config, append=not fresh
            )
            options = RunOptions(
                checkpoint_dir=str(checkpoints.absolute()),
                resume=True,
                progress=progress,
                metrics_hook=log,
            )
            with log:
                entries[hypothesis.name] = run_hypothesis(hypothesis, config, options)
            runner.mark_finished(checkpoints)
            _save(out_dir, entries, quick)
        plot(entries, out_dir)
    return entries


def _number(x: float | None) -> float:
    """A saved number; JSON writes NaN as null."""
    return float("nan") if x is None else float(x)


def format_table(entries: dict[str, dict], names: Sequence[str] | None = None) -> str:
    """One line per criterion (mean, t and bootstrap CIs, sign-flip p), a verdict line each
    with its caveats."""
    names = list(entries) if names is None else list(names)
    header = (
        f"{'hypothesis / criterion':<36} {'mean':>10} {'t 95% CI':>22} {'bootstrap 95% CI':>22} "
        f"{'claim':>9} {'sign-flip p':>11} {'untrained / permuted null':>25}  verdict"
    )
    lines = [header, "-" * len(header)]
    for name in names:
        entry = entries[name]
        notes = entry.get("caveats") or []
        label = entry["verdict"].upper() + (f"  ({'; '.join(notes)})" if notes else "")
        lines.append(f"{name:<36} {'':>10} {'':>22} {'':>22} {'':>9} {'':>11} {'':>25}  {label}")
        for c in entry["criteria"]:
            t, boot = c["interval"], c["bootstrap_interval"]
            bounds = [f"[{_number(r['low']):.4g}, {_number(r['high']):.4g}]" for r in (t, boot)]
            claim = f"{c['direction']} {c['threshold']:g}"
            lines.append(
                f"  {c['statistic']:<34} {_number(t['mean']):>10.4g} {bounds[0]:>22} "
                f"{bounds[1]:>22} {claim:>9} {_number(c['sign_flip_p']):>11.3g} "
                f"{_null_means(c):>25}  {c['verdict']}"
            )
    return "\n".join(lines)


def _null_means(criterion: dict) -> str:
    """'0.12 / 0.034' (an asterisk where the trained interval is not beyond the null)."""
    nulls_ = criterion.get("nulls")
    if not nulls_:
        return "—"
    parts = []
    for kind in nulls.KINDS:
        null = nulls_[kind]
        parts.append(f"{_number(null['interval']['mean']):.3g}{'' if null['beyond'] else '*'}")
    return " / ".join(parts)


_COLOURS = {"supported": "tab:green", "not supported": "tab:red", "inconclusive": "tab:orange"}
_NULL_MARKERS = ("o", "s")  # per nulls.KINDS


def figures(entries: dict[str, dict]) -> dict[str, plt.Figure]:
    """A forest plot, one row per criterion: on the left the seeds, the mean with its
    Student-t 95% interval (which decides) and the bootstrap interval, against the threshold;
    on the right the same trained interval beside those of its nulls (untrained models of the
    same init law, permuted weights)."""
    rows = [(name, c) for name, e in entries.items() for c in e["criteria"]]
    if not rows:
        return {}
    fig, axes = plt.subplots(
        len(rows),
        2,
        figsize=(PAPER_WIDTH, 0.62 * len(rows) + 0.55),
        squeeze=False,
        width_ratios=(3, 2),
    )
    for (ax, null_ax), (name, c) in zip(axes, rows, strict=True):
        colour = _COLOURS[c["verdict"]]
        seeds = np.asarray(c["per_seed"], dtype=float)
        t, boot = c["interval"], c["bootstrap_interval"]
        ax.plot(seeds, np.full_like(seeds, 0.45), "o", color="0.55", ms=2.5, label="seeds")
        ax.errorbar(
            [_number(t["mean"])],
            [0],
            xerr=interval_errors([t]),
            fmt="D",
            color=colour,
            ms=3.5,
            label="mean, 95% t-interval (decides)",
        )
        ax.errorbar(
            [_number(boot["mean"])],
            [-0.4],
            xerr=interval_errors([boot]),
            fmt="none",
            ecolor="0.4",
            label="95% bootstrap interval",
        )
        ax.axvline(c["threshold"], color="k", ls="--", lw=0.9, label="threshold")
        ax.set_title(
            f"{name}: {c['statistic']} {c['direction']} {c['threshold']:g} → {c['verdict']}"
            f" ({t['n']} seeds)",
            loc="left",
            color=colour,
            fontsize=7,
        )
        null_ax.errorbar(
            [_number(t["mean"])], [0], xerr=interval_errors([t]), fmt="D", color=colour, ms=3.5
        )
        for i, kind in enumerate(nulls.KINDS):
            null = (c.get("nulls") or {}).get(kind)
            if null is not None:
                null_ax.errorbar(
                    [_number(null["interval"]["mean"])],
                    [0.45 * (i + 1)],
                    xerr=interval_errors([null["interval"]]),
                    fmt=_NULL_MARKERS[i],
                    color="0.3",
                    mfc="none",
                    ms=3.5,
                    label=f"null: {kind}",
                )
        for a in (ax, null_ax):
            a.xaxis.set_major_locator(MaxNLocator(5))  # tick labels of small ranges are wide
            a.set_ylim(-0.75, 1.2)
            a.set_yticks([])
            a.grid(False)
    axes[0, 1].set_title("trained beside its nulls", loc="left", fontsize=7)
    handles = dict(zip(*reversed(axes[0, 0].get_legend_handles_labels()), strict=True))
    for a in axes[:, 1]:
        handles |= dict(zip(*reversed(a.get_legend_handles_labels()), strict=True))
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3)
    return {NAME: fig}


def plot(entries: dict[str, dict], out_dir: str | Path) -> list[Path]:
    """Draw the forest plot of `entries` (see `figures`) as NAME.{png,pdf}."""
    return save_figures(figures, entries, out_dir=out_dir)
