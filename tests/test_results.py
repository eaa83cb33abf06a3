"""Atomic writes: a crash mid-write leaves the previous complete result."""

import json
import os
import subprocess

import numpy as np
import pytest

from icl_toy.runs import results as results_module
from icl_toy.runs.results import Results, load_results, save_results


def _results(value):
    return Results({"value": value, "config": {"a": 1}}, {"curve": np.full(4, value)})


def test_crash_mid_write_keeps_the_previous_result(tmp_path, monkeypatch):
    save_results(tmp_path, "exp", _results(1.0))

    real_write = os.write

    def crash_after_a_few_bytes(fd, data):
        real_write(fd, bytes(data)[:10])
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(
        results_module.os, "fdopen", lambda fd, mode: _Writer(fd, crash_after_a_few_bytes)
    )
    with pytest.raises(OSError, match="simulated crash"):
        save_results(tmp_path, "exp", _results(2.0))
    monkeypatch.undo()

    saved = load_results(tmp_path, "exp")
    assert saved.summary["value"] == 1.0
    np.testing.assert_array_equal(saved.arrays["curve"], np.full(4, 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.json", "exp.npz"]  # no temp files


def test_json_is_written_last_and_marks_completion(tmp_path):
    save_results(tmp_path, "exp", _results(3.0))
    assert json.loads((tmp_path / "exp.json").read_text())["value"] == 3.0
    assert (tmp_path / "exp.npz").stat().st_mtime_ns <= (tmp_path / "exp.json").stat().st_mtime_ns


def test_non_finite_floats_are_written_as_null_and_noted(tmp_path):
    summary = {
        "curve": [1.0, float("nan"), np.inf],
        "nested": {"a/b": {"x": -np.inf, "ok": 2.5}, "n": 3},
        "array": np.array([0.5, np.nan]),
    }
    save_results(tmp_path, "exp", Results(summary, {"curve": np.array([np.nan, 1.0])}))

    def refuse(constant):
        raise AssertionError(f"bare {constant} in the JSON")

    text = (tmp_path / "exp.json").read_text()
    strict = json.loads(text, parse_constant=refuse)  # valid JSON: no NaN or Infinity
    assert strict["non_finite"] == {
        "/curve/1": "nan",
        "/curve/2": "inf",
        "/nested/a~1b/x": "-inf",  # "/" in a key is "~1" in a JSON Pointer (RFC 6901)
        "/array/1": "nan",
    }
    saved = load_results(tmp_path, "exp")
    assert saved.summary["curve"] == [1.0, None, None]
    assert saved.summary["nested"] == {"a/b": {"x": None, "ok": 2.5}, "n": 3}
    assert saved.summary["array"] == [0.5, None]
    assert np.isnan(saved.arrays["curve"][0])  # the NPZ keeps NaN
    save_results(tmp_path, "finite", _results(1.0))
    assert load_results(tmp_path, "finite").summary["non_finite"] == {}
    with pytest.raises(ValueError, match="non_finite"):
        save_results(tmp_path, "exp", Results({"non_finite": 1}, {}))


class _Writer:
    """A file object whose writes go through `write(fd, data)`."""

    def __init__(self, fd, write):
        self.fd, self._write = fd, write

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data):
        self._write(self.fd, data)

    def flush(self):
        pass

    def fileno(self):
        return self.fd


def test_git_commit_is_dirty_for_changed_code_but_not_for_changed_results(tmp_path):
    """Results rewritten under figures/ during a run leave the commit clean; code does not."""
    from icl_toy.runs.results import git_commit

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    (tmp_path / "figures").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "figures" / "r.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "figures" / "r.json").write_text('{"a": 1}\n')
    (tmp_path / "untracked.py").write_text("")
    assert git_commit(tmp_path / "figures") == sha  # from a subfolder too
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "figures") == sha + "-dirty"
    assert git_commit(tmp_path.parent / "no such folder") is None
