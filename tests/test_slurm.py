"""Cluster sweeps: grid points as submitit jobs give the local launcher's table, and the CLI's
launcher flags fail with one line before any compute."""

import csv
import functools
import json
import pickle
import re
import sys
from pathlib import Path

import jax
import pytest
from icl_toy.experiments import single_layer_gd

from icl_toy.runs import cli, slurm
from icl_toy.runs.config import apply_overrides
from icl_toy.runs.sweep import PointRun

NAME = "single_layer_gd"
# The quick config shrunk to one compiled call of 100 steps per grid point: each submitit
# job is a fresh Python process that imports JAX and compiles, so the training is kept tiny.
TINY = ["train.steps=100", "train.eval_every=100", "train.batch_size=256", "eval_tasks=256"]


@pytest.fixture
def tiny_config():
    return apply_overrides(single_layer_gd.get_config(quick=True), TINY)


def _table(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _assert_same_rows(rows, expected):
    """Same rows in the same order: other fields equal, floats to float32 round-off (two
    processes may fuse a reduction differently)."""
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert row.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
            else:
                assert row[key] == value, key


@pytest.fixture
def submitit(monkeypatch):
    """submitit, imported without its logging configuration: applied at import, that shuts
    down every logging handler there is and breaks pytest's output capture."""
    monkeypatch.setenv("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    return pytest.importorskip("submitit")


@pytest.fixture
def jobs_share_the_compilation_cache(monkeypatch):
    """Jobs (fresh processes) read the programs this process compiled from the suite's
    persistent compilation cache (conftest.py) instead of compiling them again."""
    for option, value in (
        ("jax_compilation_cache_dir", jax.config.jax_compilation_cache_dir),
        ("jax_persistent_cache_min_compile_time_secs", "0"),
        ("jax_persistent_cache_min_entry_size_bytes", "-1"),
    ):
        if value is not None:
            monkeypatch.setenv(option.upper(), str(value))


@pytest.mark.slow  # ~20 s on 2 cores: two jobs, each a fresh process that imports JAX
def test_jobs_assemble_the_local_table_and_a_resume_submits_nothing(
    submitit, tmp_path, monkeypatch, capsys, jobs_share_the_compilation_cache
):
    """`--launcher slurm` through the CLI, with submitit's LocalExecutor in place of Slurm:
    every job a fresh process, as on a cluster."""
    sweep = ["run", NAME, "--quick", "--quiet", "--sweep", "task.noise_std=0,0.5"]
    sweep += [w for o in TINY for w in ("--set", o)]
    assert cli.main([*sweep, "--out", str(tmp_path / "local")]) == 0
    local = json.loads((tmp_path / "local" / f"{NAME}.sweep.json").read_text())

    asked = []

    def local_executor(out_dir, name, options):
        asked.append(options)
        executor = submitit.LocalExecutor(Path(out_dir) / slurm.LOG_FOLDER)
        executor.update_parameters(timeout_min=options.time_min)
        return executor

    monkeypatch.setattr(slurm, "make_executor", local_executor)
    out_dir = tmp_path / "jobs"
    argv = [*sweep, "--out", str(out_dir), "--launcher", "slurm", "--slurm-time", "5"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert asked == [slurm.SlurmOptions(time_min=5)]
    assert "submitted 2 jobs" in capsys.readouterr().out
    summary = json.loads((out_dir / f"{NAME}.sweep.json").read_text())
    assert summary.keys() == local.keys() and summary["config"] == local["config"]
    _assert_same_rows(summary["rows"], local["rows"])
    table = _table(out_dir / f"{NAME}.sweep.csv")
    assert [r.keys() for r in table] == [
        r.keys() for r in _table(tmp_path / "local" / f"{NAME}.sweep.csv")
    ]
    for suffix in (".png", ".pdf"):
        assert (out_dir / f"{NAME}.sweep{suffix}").exists(), suffix
    # Each job left its point as the local launcher does: finished checkpoints, saved rows.
    for row in summary["rows"]:
        point_dir = out_dir / "checkpoints" / f"{NAME}.sweep" / row["digest"]
        assert (point_dir / "finished").exists()
        assert point_dir.with_name(row["digest"] + ".rows.json").exists()

    logs = sorted(p.name for p in (out_dir / slurm.LOG_FOLDER).iterdir())
    assert cli.main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished before, kept") == 2 and "submitted" not in out, out
    # A launcher that died while its jobs ran left no table, but the points their rows.
    for suffix in (".json", ".csv"):
        (out_dir / f"{NAME}.sweep{suffix}").unlink()
    assert cli.main([*argv, "--resume"]) == 0
    assert "submitted" not in capsys.readouterr().out
    assert sorted(p.name for p in (out_dir / slurm.LOG_FOLDER).iterdir()) == logs
    again = json.loads((out_dir / f"{NAME}.sweep.json").read_text())
    _assert_same_rows(again["rows"], summary["rows"])


def test_a_requeued_point_resumes_its_checkpoints(submitit, tiny_config, tmp_path):
    """submitit pickles the point and, at a time limit or preemption, requeues what its
    `checkpoint` returns: the same point, continuing from its checkpoints."""
    run = PointRun(NAME, {"task.noise_std": 0.5}, tiny_config, None, None, str(tmp_path))
    assert pickle.loads(pickle.dumps(run)) == run
    requeued = run.checkpoint()
    assert isinstance(requeued, submitit.helpers.DelayedSubmission)
    assert requeued.function == PointRun(**{**vars(run), "resume": True})


SWEEP = ["run", NAME, "--quick", "--sweep", "task.noise_std=0,0.5"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*SWEEP, "--slurm-gpus", "2"], "--slurm-gpus needs --launcher slurm"),
        ([*SWEEP, "--launcher", "local", "--slurm-time", "30"], "--slurm-time needs --launcher"),
        (["run", NAME, "--quick", "--launcher", "slurm"], "--launcher slurm needs --sweep"),
        ([*SWEEP, "--launcher", "slurm", "--slurm-cpus", "0"], "--slurm-cpus must be >= 1"),
    ],
)
def test_launcher_mistakes_exit_with_one_line_before_any_compute(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err


def test_slurm_without_submitit_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` fails
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*SWEEP, "--launcher", "slurm", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert 'pip install -e ".[slurm]"' in capsys.readouterr().err


def test_slurm_without_sbatch_says_so_and_writes_nothing(submitit, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*SWEEP, "--launcher", "slurm", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "no `sbatch`" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_slurm_flags_reach_the_executor(submitit, monkeypatch, tmp_path):
    # submitit looks for sbatch and srun on the PATH; these two are never run.
    (tmp_path / "bin").mkdir()
    for command in ("sbatch", "srun"):
        (tmp_path / "bin" / command).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / command).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    options = slurm.SlurmOptions(partition="gpu", time_min=30, gpus=2, cpus=4)
    executor = slurm.make_executor(tmp_path, NAME, options)
    assert executor.folder == (tmp_path / slurm.LOG_FOLDER).absolute()
    params = executor._executor.parameters
    assert (params["partition"], params["time"], params["gpus_per_node"]) == ("gpu", 30, 2)
    assert (params["cpus_per_task"], params["job_name"]) == (4, f"icl-toy-{NAME}")


def test_a_failed_job_is_reported_in_one_line_with_its_log(submitit, tmp_path):
    executor = submitit.LocalExecutor(tmp_path)
    executor.update_parameters(timeout_min=1)
    calls = [functools.partial(int, "7"), functools.partial(int, "seven")]
    outcomes = {
        id(call): (result, failure)
        for call, result, failure in slurm.run_jobs(executor, calls, echo=lambda _: None)
    }
    assert outcomes[id(calls[0])] == (7, None)
    result, failure = outcomes[id(calls[1])]
    assert result is None
    pattern = r"job \d+ failed: ValueError: invalid literal .*'seven' \(log: .*_log\.err\)"
    assert re.fullmatch(pattern, failure), failure
