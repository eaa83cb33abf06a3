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


def _pointer_token(key: str) -> str:
    """A key as one JSON Pointer token (RFC 6901: "~" is "~0", "/" is "~1")."""
    return key.replace("~", "~0").replace("/", "~1")


def _finite_or_null(obj: Any, path: str, non_finite: dict[str, str]) -> Any:
    """`obj` (plain JSON types) with NaN and ±inf as None; their pointers go to `non_finite`."""
    if isinstance(obj, dict):
        return {
            k: _finite_or_null(v, f"{path}/{_pointer_token(k)}", non_finite) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_finite_or_null(v, f"{path}/{i}", non_finite) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not np.isfinite(obj):
        non_finite[path] = "nan" if np.isnan(obj) else "inf" if obj > 0 else "-inf"
        return None
    return obj


def to_json_text(summary: dict[str, Any]) -> str:
    """`summary` as strict, indented JSON: every non-finite float is written as null.

    Bare NaN and Infinity are not JSON, so they become null, and the summary gains the note
    `"non_finite": {JSON Pointer (RFC 6901): "nan" | "inf" | "-inf"}` saying where each
    was (empty when every float is finite); loading gives None at those places.
    """
    if "non_finite" in summary:
        raise ValueError('"non_finite" is the note save_results writes; the summary has one')
    non_finite: dict[str, str] = {}
    plain = _finite_or_null(to_jsonable(summary), "", non_finite)
    return json.dumps({**plain, "non_finite": non_finite}, indent=2, allow_nan=False)


# What runs write inside the checkout (`icl-toy`'s default results folder): changes there are
# results, not code, so they do not make the commit "-dirty". A sweep of hypotheses rewrites
# figures/hypotheses.json after each one, and the next was labelled "-dirty" for it.
RESULTS_PATHSPEC = ":(top,exclude)figures"


def git_commit(source: Path = Path(__file__).parent) -> str | None:
    """The git commit of the checkout holding `source` (this package by default), with
    "-dirty" when tracked files outside `figures/` have uncommitted changes; None outside
    a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        # Uncommitted changes to tracked code: the commit alone does not name it.
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(
            [*status, "--", ":(top)", RESULTS_PATHSPEC],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return (commit + "-dirty" if dirty else commit) or None


def save_results(out_dir: str | os.PathLike, name: str, results: Results) -> None:
    """Write `name.npz` then `name.json`; the JSON, written last, marks the result complete.

    The JSON is `to_json_text(summary)`: non-finite floats are null there and listed under
    "non_finite"; the NPZ keeps them.
    """
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in results.arrays.items()})
    atomic_write_bytes(Path(out_dir) / f"{name}.npz", buffer.getvalue())
    text = to_json_text(results.summary)
    atomic_write_bytes(Path(out_dir) / f"{name}.json", (text + "\n").encode())


def load_results(out_dir: str | os.PathLike, name: str) -> Results:
    """Read what `save_results` wrote (None where a summary float was non-finite)."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / f"{name}.json").read_text())
    with np.load(out_dir / f"{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return Results(summary, arrays)
