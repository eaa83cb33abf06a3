"""Guards that keep a run from losing or mislabelling work, all checked before any compute.

- `config_digest`: the identity of a resolved config; checkpoints live under it, so a
  checkpoint can never be restored into another config.
- `config_differences`: the fields in which two configs differ, for one-line refusals.
- `ResultsLock`: an exclusive lock on a results folder for the time of a run.
- `check_run`: non-finite values, sizes against a sanity bound and the memory they imply,
  every training stage's batch against the device count, and a writable output folder.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from icl_toy.runs.config import config_paths
from icl_toy.runs.results import to_jsonable

# Any integer size above this is a typo, not an experiment (10^8 tasks, steps, widths, ...).
SIZE_LIMIT = 10**8
# Prompts held at once may use at most this fraction of the machine's memory.
MEMORY_FRACTION = 0.5
# Bytes per float32 entry of a prompt batch, times a working-set factor for what a forward
# pass holds besides the tokens (attention products, gradients, vmapped seeds).
_BYTES_PER_ENTRY = 4 * 8


class UsageError(ValueError):
    """A user's mistake (config, folder, flags): the CLI prints it as one line, exit 2."""


def config_digest(config: Any) -> str:
    """16 hex digits of the SHA-256 of the config's canonical JSON."""
    text = json.dumps(to_jsonable(config), sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def config_differences(old: Any, new: Any) -> list[str]:
    """`path: old -> new` for every leaf that differs between two configs (or their JSON)."""
    a, b = _flatten(to_jsonable(old)), _flatten(to_jsonable(new))
    missing = object()
    return [
        f"{path}: {a.get(path, missing)!r} -> {b.get(path, missing)!r}".replace(
            repr(missing), "(absent)"
        )
        for path in sorted(set(a) | set(b))
        if a.get(path, missing) != b.get(path, missing)
    ]


class ResultsLock:
    """An exclusive `flock` on `out_dir/.icl-toy.lock`, released when the run ends or dies.

    The lock file names its holder (pid, start time, command), so a second run into the
    same folder is refused at once with who holds it.
    """

    def __init__(self, out_dir: str | os.PathLike, command: str = ""):
        self.path = Path(out_dir) / ".icl-toy.lock"
        self.command = command
        self._file = None

    def __enter__(self) -> ResultsLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UsageError(
                f"{self.path.parent} is in use by another run ({holder}); wait for it to "
                "finish or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.write(f", {self.command}" if self.command else "")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def check_finite(config: Any) -> None:
    """Every float field of the config (and inside its tuples) is finite."""
    for path, value in config_paths(config).items():
        for i, item in enumerate(value if isinstance(value, tuple) else (value,)):
            items = item if isinstance(item, tuple) else (item,)
            for x in items:
                if isinstance(x, float) and not math.isfinite(x):
                    where = path if not isinstance(value, tuple) else f"{path}[{i}]"
                    raise UsageError(f"{where} must be finite, got {x}")


def _is_size(path: str) -> bool:
    name = path.rsplit(".", 1)[-1]
    return "seed" not in name or name == "num_seeds"


def check_sizes(config: Any, memory_bytes: int | None = None) -> None:
    """Integer sizes stay below `SIZE_LIMIT`, and the prompts of the largest batch (any
    stage's, `*batch_sizes` entries included) or held-out set (tasks × tokens × width, for
    every vmapped seed) fit in `MEMORY_FRACTION` of memory."""
    paths = config_paths(config)
    for path, value in paths.items():
        if isinstance(value, int) and not isinstance(value, bool) and _is_size(path):
            if value > SIZE_LIMIT:
                raise UsageError(f"{path} = {value} is above the sanity bound {SIZE_LIMIT:.0e}")
    task = getattr(config, "task", None)
    if not all(hasattr(task, a) for a in ("n_context", "d", "d_y")):
        return
    entries = (task.n_context + 1) * (task.d + task.d_y)
    seeds = paths.get("train.num_seeds", 1)
    memory_bytes = memory_bytes or _physical_memory()
    sizes = {
        path: value
        for path, value in paths.items()
        if type(value) is int and (path.endswith("tasks") or path.endswith("batch_size"))
    }
    for path, value in {**sizes, **_batches(config, paths)}.items():
        need = value * entries * _BYTES_PER_ENTRY * seeds
        if need > MEMORY_FRACTION * memory_bytes:
            raise UsageError(
                f"{path} = {value} needs about {need / 2**30:.1f} GiB for its prompts "
                f"({seeds} seeds × {value} tasks × {entries} entries), more than "
                f"{MEMORY_FRACTION:.0%} of this machine's {memory_bytes / 2**30:.1f} GiB"
            )


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def training_configs(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every nested config with a `batch_size` and `num_seeds` (a `TrainConfig`), by path."""
    found = {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        if hasattr(config, "batch_size") and hasattr(config, "num_seeds"):
            found[prefix.rstrip(".") or "train"] = config
        for field in dataclasses.fields(config):
            found.update(training_configs(getattr(config, field.name), f"{prefix}{field.name}."))
    return found


def check_devices(config: Any, num_devices: int) -> None:
    """Data parallelism splits every training batch over the devices: the batch of every
    stage (each nested `TrainConfig`, and each entry of a `*batch_sizes` tuple that sets a
    stage's batch) must be a multiple of the device count."""
    if num_devices <= 1:
        return
    for path, batch in _batches(config, config_paths(config)).items():
        if batch % num_devices:
            raise UsageError(
                f"{path} = {batch} is not a multiple of the {num_devices} devices JAX sees; "
                "choose a multiple, or expose fewer devices"
            )


def _batches(config: Any, paths: dict[str, Any]) -> dict[str, int]:
    """The batch of every training stage by path: each nested `TrainConfig`'s `batch_size`
    and each entry of a `*batch_sizes` tuple (a per-stage override of one)."""
    batches = {
        f"{path}.batch_size": train.batch_size for path, train in training_configs(config).items()
    }
    for path, value in paths.items():
        if path.endswith("batch_sizes") and isinstance(value, tuple):
            batches.update({f"{path}[{i}]": b for i, b in enumerate(value)})
    return batches


def check_writable(out_dir: str | os.PathLike) -> None:
    """`out_dir` is (or can be made) a folder this process can write into."""
    out_dir = Path(out_dir)
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a folder")
    if existing is not None and not existing.is_dir():
        raise UsageError(f"--out {out_dir}: {existing} is a file, not a folder")
    if existing is not None:
        try:  # a real write: permission bits alone say nothing for root or read-only mounts
            tempfile.TemporaryFile(dir=existing).close()
        except OSError as error:
            raise UsageError(
                f"--out {out_dir}: cannot write in {existing} ({error.strerror})"
            ) from None


def check_run(config: Any, out_dir: str | os.PathLike, num_devices: int) -> None:
    """Every check above, in the order a user would fix them."""
    check_finite(config)
    check_sizes(config)
    check_devices(config, num_devices)
    check_writable(out_dir)
