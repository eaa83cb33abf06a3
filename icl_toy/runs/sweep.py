"""Grid sweeps over config fields: `icl-toy run NAME --sweep key=v1,v2,... [--sweep ...]`.

Each grid point trains the experiment's model (its `task`, `model` and `train` configs)
and is scored by the final half-MSE on held-out tasks, mean and spread over seeds. Axes
that leave every array shape unchanged and act only inside the optimizer or the seeding,
`train.learning_rate` and `train.seed`, are vmapped: all their values train in one
compiled call. Every other axis (noise level, sizes, depth, ...) runs point by point.
Writes NAME.sweep.csv (one row per grid point), NAME.sweep.json and NAME.sweep.png/.pdf,
updated as each point finishes; a diverged point gets a row with status "diverged".
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

from icl_toy.core.models import make_model
from icl_toy.core.tasks import sample_batch
from icl_toy.runs.config import apply_overrides, config_paths
from icl_toy.runs.guard import (
    ResultsLock,
    UsageError,
    check_run,
    config_differences,
    config_digest,
)
from icl_toy.runs.plotting import save_figure
from icl_toy.runs.results import atomic_write_bytes, to_jsonable
from icl_toy.runs.runner import continues, mark_finished, prepare_checkpoints
from icl_toy.training.train import NonFiniteLossError, RunOptions, batch_loss, train

VMAPPED_AXES = ("train.learning_rate", "train.seed")


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


def run_sweep(
    name: str,
    config,
    axes: dict[str, list[str]],
    out_dir: str | Path,
    *,
    quiet: bool = False,
    resume: bool = False,
    fresh: bool = False,
    echo=lambda _: None,
) -> list[dict]:
    """Train every grid point of `axes` on top of `config`; write and return the table rows.

    Every point is validated before the first trains. Each point trains with checkpoints
    in `out_dir/checkpoints/NAME.sweep/<point digest>/` and its rows are written as soon as
    it finishes, so an interrupted sweep loses at most the point in progress; `resume`
    skips finished points and continues the interrupted one. A point that diverges is
    recorded with status "diverged" (and its error) and the others still run.
    """
    parsed = check_axes(config, axes)
    learning_rates = parsed.get("train.learning_rate")
    seeds = parsed.get("train.seed")
    points = grid_points(config, axes)
    out_dir = Path(out_dir)
    for _, point in points:
        check_run(point, out_dir, len(jax.devices()))
    sweep_name = f"{name}.sweep"
    with ResultsLock(out_dir, f"icl-toy run {name} --sweep"):
        saved = _load_rows(out_dir / f"{sweep_name}.json", config, axes) if resume else {}
        rows = []
        for values, point in points:
            digest = config_digest((point, learning_rates, seeds))
            if digest in saved and saved[digest][0]["status"] == "done":
                echo(f"{name}: grid point {_label(values)} finished before, kept")
                rows += saved[digest]
                continue
            checkpoint_dir, _ = prepare_checkpoints(
                out_dir / "checkpoints" / sweep_name,
                (point, learning_rates, seeds),
                resume=resume,
                fresh=fresh,
                adopt=False,
            )
            options = RunOptions(
                checkpoint_dir=str(checkpoint_dir.absolute()),
                resume=continues(checkpoint_dir, resume),
                progress=not quiet,
            )
            try:
                final = _train_point(point, learning_rates, seeds, options)
                point_rows = _point_rows(values, point, learning_rates, seeds, final)
                mark_finished(checkpoint_dir)
            except NonFiniteLossError as error:
                echo(f"{name}: grid point {_label(values)} diverged: {error}")
                point_rows = [{**values, "status": "diverged", "error": str(error)}]
            for row in point_rows:
                row["digest"] = digest
            rows += point_rows
            _write(name, config, axes, rows, out_dir)
    return rows


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
    x_key = next(iter(axes))
    others = [k for k in rows[0] if k in axes and k != x_key]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, group in itertools.groupby(
        sorted(rows, key=lambda r: tuple(str(r[k]) for k in others)),
        key=lambda r: tuple(r[k] for k in others),
    ):
        group = list(group)
        x = [r[x_key] for r in group]
        y = np.array([r["final_loss_mean"] for r in group])
        err = np.array([r["final_loss_std"] for r in group])
        name_ = ", ".join(f"{k}={v}" for k, v in zip(others, label, strict=True)) or None
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name_)
    if x_key == "train.learning_rate":
        ax.set_xscale("log")
    ax.set(xlabel=x_key, ylabel="final half-MSE (held-out)", title=f"{name}: sweep")
    if others:
        ax.legend(fontsize=8)
    save_figure(fig, out_dir, f"{name}.sweep")
