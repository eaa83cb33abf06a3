"""Grid sweeps over config fields: `icl-toy run NAME --sweep key=v1,v2,... [--sweep ...]`.

Each grid point trains the experiment's model (its `task`, `model` and `train` configs)
and is scored by the final half-MSE on held-out tasks, mean and spread over seeds. Axes
that leave every array shape unchanged and act only inside the optimizer or the seeding,
`train.learning_rate` and `train.seed`, are vmapped: all their values train in one
compiled call. Every other axis (noise level, sizes, depth, ...) runs point by point.
Writes NAME.sweep.csv (one row per grid point), NAME.sweep.json and NAME.sweep.png/.pdf.
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

from icl_toy.core.tasks import sample_batch
from icl_toy.runs.config import apply_overrides, config_paths
from icl_toy.runs.plotting import save_figure
from icl_toy.runs.results import atomic_write_bytes, to_jsonable
from icl_toy.training.train import RunOptions, batch_loss, make_model, train

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


def run_sweep(name: str, config, axes: dict[str, list[str]], out_dir: str | Path, *, quiet=False):
    """Train every grid point of `axes` on top of `config`; write and return the table rows."""
    parsed = check_axes(config, axes)
    learning_rates = parsed.get("train.learning_rate")
    seeds = parsed.get("train.seed")
    sequential = {k: v for k, v in axes.items() if k not in VMAPPED_AXES}
    rows = []
    for combo in itertools.product(*sequential.values()):
        overrides = [f"{k}={v}" for k, v in zip(sequential, combo, strict=True)]
        point = apply_overrides(config, overrides)
        task, model = point.task, make_model(point.task, point.model)
        eval_tasks = getattr(point, "eval_tasks", 10_000)
        held_out = sample_batch(
            jax.random.key(getattr(point, "eval_seed", 10_000)), task, eval_tasks
        )

        def eval_fn(params, model=model, held_out=held_out):
            return {"loss": batch_loss(model, params, held_out)}

        result = train(
            model,
            task,
            point.train,
            eval_fn=eval_fn,
            learning_rates=learning_rates,
            seeds=seeds,
            options=RunOptions(progress=not quiet),
        )
        lrs = learning_rates or [point.train.learning_rate]
        bases = seeds or [point.train.seed]
        final = result.eval_metrics["loss"][:, -1].reshape(len(lrs), len(bases), -1)
        fixed = dict(zip(sequential, (config_paths(point)[k] for k in sequential), strict=True))
        for (i, lr), (j, base) in itertools.product(enumerate(lrs), enumerate(bases)):
            rows.append(
                {
                    **fixed,
                    "train.learning_rate": lr,
                    "train.seed": base,
                    "final_loss_mean": float(final[i, j].mean()),
                    "final_loss_std": float(final[i, j].std(ddof=1)) if final.shape[2] > 1 else 0.0,
                    "num_seeds": int(final.shape[2]),
                }
            )
    _write(name, config, axes, rows, Path(out_dir))
    return rows


def _write(name: str, config, axes: dict[str, list[str]], rows: list[dict], out_dir: Path):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out_dir / f"{name}.sweep.csv", buffer.getvalue().encode())
    summary = {"experiment": name, "config": to_jsonable(config), "axes": axes, "rows": rows}
    atomic_write_bytes(out_dir / f"{name}.sweep.json", json.dumps(summary, indent=2).encode())

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
