"""Grid sweeps over config fields: `icl-toy run NAME --sweep key=v1,v2,... [--sweep ...]`.

Each grid point trains the experiment's model (its `task`, `model` and `train` configs)
and is scored by the final half-MSE on held-out tasks, mean and spread over seeds. Axes
that leave every array shape unchanged and act only inside the optimizer or the seeding,
`train.learning_rate` and `train.seed`, are vmapped: all their values train in one
compiled call. Every other axis (noise level, sizes, depth, ...) runs point by point.
Writes NAME.sweep.csv (one row per grid point), NAME.sweep.json and NAME.sweep.png/.pdf,
updated as each point finishes; a diverged point gets a row with status "diverged".

A grid point is one `PointRun`, a picklable callable that trains the point into its
checkpoint folder and saves its rows next to it. The local launcher calls each in turn in
this process; `--launcher slurm` submits each as a Slurm job through submitit (`slurm.py`)
and assembles the same table from the jobs' rows as they finish.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.core.models import make_model
from icl_toy.core.tasks import sample_batch
from icl_toy.runs import slurm
from icl_toy.runs.config import apply_overrides, config_paths
from icl_toy.runs.guard import (
    ResultsLock,
    UsageError,
    check_run,
    config_differences,
    config_digest,
)
from icl_toy.runs.metrics_log import JsonlWriter, MetricsLog
from icl_toy.runs.plotting import save_figures
from icl_toy.runs.results import atomic_write_bytes, to_jsonable
from icl_toy.runs.runner import continues, mark_finished, prepare_checkpoints
from icl_toy.training.train import NonFiniteLossError, RunOptions, batch_loss, train

VMAPPED_AXES = ("train.learning_rate", "train.seed")
# A grid point's rows, saved by the run that trained it next to its checkpoint folder
# (checkpoints/NAME.sweep/<digest>.rows.json): a resume finds the points that finished in
# jobs even when the launcher that waited for them did not live to write the table.
ROWS_SUFFIX = ".rows.json"


class JobsFailedError(RuntimeError):
    """Grid points whose jobs failed (not diverged: crashed, cancelled, out of time)."""


def parse_sweep(items: list[str]) -> dict[str, list[str]]:
    """{"key=v1,v2", ...} -> {key: [v1, v2]}, keeping the order of axes and values."""
    axes = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise ValueError(f"--sweep takes key=v1,v2,...; got {item!r}")
        axes[key.strip()] = [v.strip() for v in values.split(",")]
    return axes


def _values(config, key: str, texts: list[str]) -> list:
    """Each text parsed as the field's type (through the same path as --set)."""
    return [config_paths(apply_overrides(config, [f"{key}={t}"]))[key] for t in texts]


def check_axes(config, axes: dict[str, list[str]]) -> dict[str, list]:
    """Parse every swept value against its field; bad keys or values raise ValueError."""
    for field in ("task", "model", "train"):
        if not hasattr(config, field):
            raise ValueError(f"this experiment has no `{field}` config to sweep over")
    return {key: _values(config, key, texts) for key, texts in axes.items()}


def grid_points(config, axes: dict[str, list[str]]) -> list[tuple[dict, object]]:
    """[(values of the sequential axes, point config)], every point validated up front."""
    sequential = {k: v for k, v in axes.items() if k not in VMAPPED_AXES}
    points = []
    for combo in itertools.product(*sequential.values()):
        overrides = [f"{k}={v}" for k, v in zip(sequential, combo, strict=True)]
        point = apply_overrides(config, overrides)
        paths = config_paths(point)
        points.append(({k: paths[k] for k in sequential}, point))
    return points


def _label(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "the base config"


def _train_point(point, learning_rates, seeds, options: RunOptions) -> np.ndarray:
    """Final held-out half-MSE of every run of one grid point, (L, G, S)."""
    task, model = point.task, make_model(point.task, point.model)
    held_out = sample_batch(
        jax.random.key(getattr(point, "eval_seed", 10_000)),
        task,
        getattr(point, "eval_tasks", 10_000),
    )

    def eval_fn(params):
        return {"loss": batch_loss(model, params, held_out)}

    result = train(
        model,
        task,
        point.train,
        eval_fn=eval_fn,
        learning_rates=learning_rates,
        seeds=seeds,
        options=options,
    )
    lrs = learning_rates or [point.train.learning_rate]
    bases = seeds or [point.train.seed]
    return result.eval_metrics["loss"][:, -1].reshape(len(lrs), len(bases), -1)


def _point_rows(values: dict, point, learning_rates, seeds, final_LxGxS) -> list[dict]:
    lrs = learning_rates or [point.train.learning_rate]
    bases = seeds or [point.train.seed]
    rows = []
    for (i, lr), (j, base) in itertools.product(enumerate(lrs), enumerate(bases)):
        final = final_LxGxS[i, j]
        rows.append(
            {
                **values,
                "train.learning_rate": lr,
                "train.seed": base,
                "status": "done",
                "final_loss_mean": float(final.mean()),
                "final_loss_std": float(final.std(ddof=1)) if final.size > 1 else 0.0,
                "num_seeds": int(final.size),
            }
        )
    return rows


@dataclasses.dataclass(frozen=True)
class PointRun:
    """One grid point's training, the unit both launchers run: calling it trains the point
    (all its learning rates and seeds in one compiled call) with checkpoints in
    `out_dir/checkpoints/NAME.sweep/<digest>/`, saves its rows to `<digest>.rows.json`
    beside them and returns them. A module-level dataclass, so submitit can pickle it; its
    `checkpoint` lets submitit requeue a job that reached its time limit or was preempted,
    and the requeued job resumes from the point's latest checkpoint.
    """

    name: str  # the experiment
    values: dict  # the point's value of every sequential axis
    point: object  # the experiment's config at this point
    learning_rates: list | None  # the vmapped learning rates (None: the config's)
    seeds: list | None  # the vmapped base seeds (None: the config's)
    out_dir: str  # absolute, so a job started in another folder writes to the same place
    resume: bool = False  # continue from this point's checkpoints
    quiet: bool = False  # no progress bar

    @property
    def digest(self) -> str:
        return config_digest((self.point, self.learning_rates, self.seeds))

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out_dir) / "checkpoints" / f"{self.name}.sweep" / self.digest

    @property
    def rows_path(self) -> Path:
        return self.checkpoint_dir.with_name(self.digest + ROWS_SUFFIX)

    @property
    def metrics_path(self) -> Path:
        return self.checkpoint_dir.with_name(self.digest + ".metrics.jsonl")

    def __call__(self) -> list[dict]:
        checkpoint_dir = self.checkpoint_dir
        resume = continues(checkpoint_dir, self.resume)
        # The point's in-scan evaluations as they happen, beside its rows.
        log = MetricsLog([JsonlWriter(self.metrics_path, append=resume)])
        options = RunOptions(
            checkpoint_dir=str(checkpoint_dir),
            resume=resume,
            progress=not self.quiet,
            metrics_hook=log,
        )
        try:
            with log:
                final = _train_point(self.point, self.learning_rates, self.seeds, options)
            rows = _point_rows(self.values, self.point, self.learning_rates, self.seeds, final)
            mark_finished(checkpoint_dir)
        except NonFiniteLossError as error:
            rows = [{**self.values, "status": "diverged", "error": str(error)}]
        for row in rows:
            row["digest"] = self.digest
        atomic_write_bytes(self.rows_path, json.dumps(to_jsonable(rows), indent=2).encode())
        return rows

    def checkpoint(self):
        """submitit's hook before a requeue: the same point, resuming its checkpoints."""
        import submitit  # only ever called inside a submitit job

        return submitit.helpers.DelayedSubmission(dataclasses.replace(self, resume=True))


def run_sweep(
    name: str,
    config,
    axes: dict[str, list[str]],
    out_dir: str | Path,
    *,
    quiet: bool = False,
    resume: bool = False,
    fresh: bool = False,
    executor=None,
    num_devices: int | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """Train every grid point of `axes` on top of `config`; write and return the table rows.

    Every point is validated, and its checkpoint folder prepared, before the first trains.
    Each point trains with checkpoints in `out_dir/checkpoints/NAME.sweep/<point digest>/`
    and the table is rewritten as soon as a point finishes, so an interrupted sweep loses at
    most the points in progress; `resume` skips finished points and continues interrupted
    ones. A point that diverges is recorded with status "diverged" (and its error) and the
    others still run.

    `executor`: None trains the points here, one after another; a submitit executor (Slurm,
    or `submitit.LocalExecutor`) runs each as a job of one job array and waits for them.
    The rows, files and table are the same either way. Jobs that fail raise
    `JobsFailedError` once the others have finished and their rows are written.
    `num_devices`: the devices each point trains on, for the batch checks (default: the
    devices JAX sees here).
    """
    parsed = check_axes(config, axes)
    learning_rates = parsed.get("train.learning_rate")
    seeds = parsed.get("train.seed")
    points = grid_points(config, axes)
    out_dir = Path(out_dir)
    for _, point in points:
        check_run(point, out_dir, num_devices or len(jax.devices()))
    sweep_name = f"{name}.sweep"
    runs = [
        PointRun(name, values, point, learning_rates, seeds, str(out_dir.absolute()), resume, quiet)
        for values, point in points
    ]
    with ResultsLock(out_dir, f"icl-toy run {name} --sweep"):
        saved = _saved_rows(out_dir, name, config, axes, runs) if resume else {}
        pending = []
        for run in runs:
            if run.digest in saved:
                echo(f"{name}: grid point {_label(run.values)} finished before, kept")
                continue
            prepare_checkpoints(
                out_dir / "checkpoints" / sweep_name,
                (run.point, learning_rates, seeds),
                resume=resume,
                fresh=fresh,
                adopt=False,
            )
            run.rows_path.unlink(missing_ok=True)
            pending.append(run)
        finished = dict(saved)

        def table() -> list[dict]:
            return [row for run in runs for row in finished.get(run.digest, [])]

        failures = []
        if executor is None:
            launched = _run_here(pending)
        else:
            launched = slurm.run_jobs(executor, pending, echo)
        # Closed on the way out, so an error or Ctrl-C here cancels the unfinished jobs.
        with contextlib.closing(launched):
            for run, rows, failure in launched:
                if failure is not None:
                    echo(f"{name}: grid point {_label(run.values)}: {failure}")
                    failures.append(f"{_label(run.values)} ({failure})")
                    continue
                if rows[0]["status"] == "diverged":
                    echo(f"{name}: grid point {_label(run.values)} diverged: {rows[0]['error']}")
                finished[run.digest] = rows
                _write(name, config, axes, table(), out_dir)
        if not pending and finished:
            _write(name, config, axes, table(), out_dir)
        if failures:
            raise JobsFailedError(
                f"{len(failures)} of {len(pending)} grid point jobs failed: "
                + "; ".join(failures)
                + "; --resume continues them from their checkpoints"
            )
    return table()


def _run_here(runs: list[PointRun]) -> Iterator[tuple[PointRun, list[dict], None]]:
    """The local launcher: each point in this process, one after another."""
    for run in runs:
        yield run, run(), None


def _saved_rows(out_dir: Path, name: str, config, axes, runs: list[PointRun]) -> dict:
    """Rows of this sweep's finished points, by point digest: from the table of an earlier
    run of the same sweep, else from the rows a point's own run saved."""
    saved = _load_rows(out_dir / f"{name}.sweep.json", config, axes)
    found = {}
    for run in runs:
        rows = saved.get(run.digest)
        if rows is None and run.rows_path.exists():
            rows = json.loads(run.rows_path.read_text())
            values = to_jsonable(run.values)
            if any({k: row.get(k) for k in values} != values for row in rows):
                rows = None  # saved by a sweep over other axes: retrain
        if rows and all(row["status"] == "done" for row in rows):
            found[run.digest] = rows
    return found


def _load_rows(path: Path, config, axes) -> dict[str, list[dict]]:
    """Rows of an earlier run of the same sweep, by point digest ({} if none or another)."""
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    if summary.get("config") != to_jsonable(config) or summary.get("axes") != axes:
        raise UsageError(
            f"cannot resume: {path} holds another sweep ("
            + "; ".join(config_differences(summary.get("config"), to_jsonable(config)))
            + "); run without --resume, or with the same --set and --sweep"
        )
    by_digest: dict[str, list[dict]] = {}
    for row in summary["rows"]:
        by_digest.setdefault(row["digest"], []).append(row)
    return by_digest


def _write(name: str, config, axes: dict[str, list[str]], rows: list[dict], out_dir: Path):
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out_dir / f"{name}.sweep.csv", buffer.getvalue().encode())
    summary = {"experiment": name, "config": to_jsonable(config), "axes": axes, "rows": rows}
    atomic_write_bytes(out_dir / f"{name}.sweep.json", json.dumps(summary, indent=2).encode())

    rows = [r for r in rows if r["status"] == "done"]
    if not rows:
        return
    save_figures(_sweep_figure, name, axes, rows, out_dir=out_dir)


def _sweep_figure(name: str, axes: dict[str, list[str]], rows: list[dict]) -> dict:
    """Final held-out loss (mean ± sd over seeds) against the sweep's first axis, one line per
    value of the others."""
    x_key = next(iter(axes))
    others = [k for k in rows[0] if k in axes and k != x_key]
    fig, ax = plt.subplots(figsize=(3.4, 2.6))  # one column of a two-column page
    for label, group in itertools.groupby(
        sorted(rows, key=lambda r: tuple(str(r[k]) for k in others)),
        key=lambda r: tuple(r[k] for k in others),
    ):
        group = list(group)
        x = [r[x_key] for r in group]
        y = np.array([r["final_loss_mean"] for r in group])
        err = np.array([r["final_loss_std"] for r in group])
        name_ = ", ".join(f"{k}={v}" for k, v in zip(others, label, strict=True)) or None
        ax.errorbar(x, y, yerr=err, marker="o", label=name_)
    if x_key == "train.learning_rate":
        ax.set_xscale("log")
    ax.set(xlabel=x_key, ylabel="final held-out half-MSE", title=f"{name}: mean ± sd of seeds")
    if others:
        ax.legend()
    return {f"{name}.sweep": fig}
