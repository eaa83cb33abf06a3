"""Saving and loading experiment results: a JSON summary and an NPZ of arrays, written atomically.

Every file is written to a temporary name in the same directory and renamed into place,
so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


class Results(NamedTuple):
    summary: dict[str, Any]  # JSON-able: config, scalars, per-seed lists
    arrays: dict[str, np.ndarray]  # curves and matrices for the figure


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp creates 0600; a result gets the mode any new file gets under the umask.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy and JAX scalars/arrays, tuples -> plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / JAX arrays and scalars
        return obj.tolist()
    return obj


def git_commit() -> str | None:
    """The current git commit of the source tree, or None outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def save_results(out_dir: str | os.PathLike, name: str, results: Results) -> None:
    """Write `name.npz` then `name.json`; the JSON, written last, marks the result complete."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in results.arrays.items()})
    atomic_write_bytes(Path(out_dir) / f"{name}.npz", buffer.getvalue())
    text = json.dumps(to_jsonable(results.summary), indent=2, allow_nan=True)
    atomic_write_bytes(Path(out_dir) / f"{name}.json", (text + "\n").encode())


def load_results(out_dir: str | os.PathLike, name: str) -> Results:
    """Read what `save_results` wrote."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / f"{name}.json").read_text())
    with np.load(out_dir / f"{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return Results(summary, arrays)
