"""Metrics of a run as it trains: the writers behind `RunOptions.metrics_hook`.

`train` calls the hook between groups of chunks with (stage, step, metrics), every metric
an (R,) array of per-run values (see `RunOptions`). A `MetricsLog` hands each call to its
writers, which record the per-seed values and their mean:

- `JsonlWriter`: `NAME.metrics.jsonl`, one JSON object per eval, flushed as each group
  ends, so the file can be read (or tailed) while training runs. Always on for `icl-toy run`.
- `TensorBoardWriter`: event files under `tensorboard/NAME/` (tensorboardX, the
  `tensorboard` extra): scalars `stage/metric/mean` and `stage/metric/per_seed/i`.
- `WandbWriter`: a Weights & Biases run (the `wandb` extra), offline unless `WANDB_MODE`
  says otherwise, with one step axis per stage (`stage/step`).

A line of the JSONL file:
  {"stage": "train", "step": 100, "wall_time": 1718000000.0,
   "metrics": {"loss": {"mean": 0.21, "per_seed": [0.2, 0.22]}, "train_loss": {...}}}
`wall_time` is seconds since the epoch when the hook was called (the end of the eval's
group); a non-finite value is written as null.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from icl_toy.runs.guard import UsageError
from icl_toy.runs.results import to_jsonable

# The optional writers: `--log-to` name -> (module it imports, pyproject extra that installs it).
BACKENDS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


def metrics_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.metrics.jsonl"


def check_backends(backends: Sequence[str]) -> None:
    """Raise UsageError, in one line, for an unknown backend or one whose extra is missing;
    called before any compute."""
    for backend in backends:
        if backend not in BACKENDS:
            raise UsageError(
                f"--log-to: unknown backend {backend!r}; known: {', '.join(BACKENDS)} "
                "(NAME.metrics.jsonl is always written)"
            )
        module, extra = BACKENDS[backend]
        if importlib.util.find_spec(module) is None:
            raise UsageError(
                f"--log-to {backend} needs {module}, which is not installed; install the "
                f"extra: pip install -e '.[{extra}]'"
            )


def _number(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def seed_record(values) -> dict:
    """{"mean", "per_seed"} of a metric's per-run values (non-finite ones as None)."""
    values = np.asarray(values, np.float64)
    with np.errstate(invalid="ignore"):
        mean = values.mean()
    return {"mean": _number(mean), "per_seed": [_number(v) for v in values]}


class MetricsWriter(Protocol):
    """One destination of a run's metrics."""

    def write(self, stage: str, step: int, metrics: dict[str, np.ndarray], wall_time: float):
        """Record the metrics of one eval (every value an (R,) array)."""

    def close(self) -> None:
        """Flush and release the destination."""


class JsonlWriter:
    """Appends one JSON object per eval to `path` (see the module docstring)."""

    def __init__(self, path: str | Path, *, append: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not append:
            self.path.write_text("")

    def write(self, stage: str, step: int, metrics: dict[str, np.ndarray], wall_time: float):
        line = {
            "stage": stage,
            "step": int(step),
            "wall_time": wall_time,
            "metrics": {k: seed_record(v) for k, v in metrics.items()},
        }
        # Appends of one short line each; a crash loses at most the line being written.
        with open(self.path, "a") as f:
            f.write(json.dumps(line, allow_nan=False) + "\n")

    def close(self) -> None:
        pass


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a metrics file, skipping a last line still being written."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class TensorBoardWriter:
    """Scalars `stage/metric/mean` and `stage/metric/per_seed/i` in `log_dir` (tensorboardX)."""

    def __init__(self, log_dir: str | Path):
        from tensorboardX import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(logdir=str(self.log_dir))

    def write(self, stage: str, step: int, metrics: dict[str, np.ndarray], wall_time: float):
        for name, values in metrics.items():
            record = seed_record(values)
            scalars = {"mean": record["mean"]}
            scalars |= {f"per_seed/{i}": v for i, v in enumerate(record["per_seed"])}
            for suffix, value in scalars.items():
                if value is not None:
                    self._writer.add_scalar(
                        f"{stage}/{name}/{suffix}", value, int(step), walltime=wall_time
                    )
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbWriter:
    """A Weights & Biases run in `directory`, offline unless the environment's WANDB_MODE
    says otherwise; each stage has its own step axis `stage/step`."""

    def __init__(self, directory: str | Path, name: str, config):
        import wandb

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "icl-toy"),
            name=name,
            dir=str(self.directory),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=to_jsonable(config),
        )
        self._stages: set[str] = set()

    def write(self, stage: str, step: int, metrics: dict[str, np.ndarray], wall_time: float):
        if stage not in self._stages:  # stages each count steps from 0: one axis each
            self._run.define_metric(f"{stage}/step")
            self._run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
            self._stages.add(stage)
        row = {f"{stage}/step": int(step)}
        for name, values in metrics.items():
            record = seed_record(values)
            row[f"{stage}/{name}/mean"] = record["mean"]
            row |= {f"{stage}/{name}/per_seed/{i}": v for i, v in enumerate(record["per_seed"])}
        self._run.log({k: v for k, v in row.items() if v is not None})

    def close(self) -> None:
        self._run.finish()


class MetricsLog:
    """A `RunOptions.metrics_hook` that hands every call to its writers and keeps the
    latest record of each stage (`last`)."""

    def __init__(self, writers: Sequence[MetricsWriter]):
        self.writers = list(writers)
        self.last: dict[str, tuple[int, dict[str, dict]]] = {}

    def __call__(self, stage: str, step: int, metrics: dict[str, np.ndarray]) -> None:
        wall_time = time.time()
        for writer in self.writers:
            writer.write(stage, step, metrics, wall_time)
        self.last[stage] = (int(step), {k: seed_record(v) for k, v in metrics.items()})

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_log(
    out_dir: str | Path, name: str, config, backends: Sequence[str] = (), *, append: bool = True
) -> MetricsLog:
    """The metrics log of experiment `name` in `out_dir`: `NAME.metrics.jsonl` (appended to,
    or started afresh unless `append`), plus the writers of `backends` ("tensorboard",
    "wandb"; `check_backends` first)."""
    check_backends(backends)
    out_dir = Path(out_dir)
    writers: list[MetricsWriter] = [JsonlWriter(metrics_path(out_dir, name), append=append)]
    if "tensorboard" in backends:
        writers.append(TensorBoardWriter(out_dir / "tensorboard" / name))
    if "wandb" in backends:
        writers.append(WandbWriter(out_dir, name, config))
    return MetricsLog(writers)
