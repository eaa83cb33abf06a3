"""Runs never lose or mislabel work: checkpoints bound to their config, safe reruns, sweeps
that keep their points, a lock on the results folder, bad input refused up front."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import one_panel_figures
from icl_toy.experiments import multi_layer_gdpp, single_layer_gd

from icl_toy.runs import cli, guard, metrics_log, runner, sweep
from icl_toy.runs.config import apply_overrides
from icl_toy.runs.guard import ResultsLock, UsageError
from icl_toy.training.train import DIVERGENCE_RATIO, NonFiniteLossError, _check_diverged

ROOT = Path(__file__).resolve().parents[1]
FOUR_DEVICES = "--xla_force_host_platform_device_count=4"
NAME = "single_layer_gd"
# Two chunks in one checkpoint group; small enough to compile and train in seconds.
TINY = [
    "train.steps=200",
    "train.eval_every=100",
    "train.batch_size=128",
    "train.num_seeds=2",
    "eval_tasks=256",
    "line_search_tasks=256",
    "ood_scales=0.5,1",
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """cli.main's exit code and its stderr (stdout is kept in `_run.out`)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    _run.out = captured.out
    return code, captured.err


def _tiny(out: Path, *extra: str) -> list[str]:
    return [
        "run",
        NAME,
        "--quick",
        "--quiet",
        "--out",
        str(out),
        *(w for o in TINY for w in ("--set", o)),
        *extra,
    ]


def _losses(out: Path) -> np.ndarray:
    return np.asarray(json.loads((out / f"{NAME}.json").read_text())["per_seed"]["trained_loss"])


def _interrupt(out: Path) -> None:
    """Make a finished run look interrupted: its results gone, its checkpoints unfinished."""
    (out / f"{NAME}.json").unlink()
    for marker in (out / "checkpoints" / NAME).glob(f"*/{runner.FINISHED_FILE}"):
        marker.unlink()


@pytest.fixture(scope="module", autouse=True)
def _quick_figures():
    """The study's figures are not what these tests check; drawing them is most of a run."""
    with one_panel_figures(single_layer_gd):
        yield


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run at lr 1e-3 (copied by tests that change it)."""
    out = tmp_path_factory.mktemp("finished")
    assert cli.main(_tiny(out)) == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)
    return dst


def test_a_run_logs_every_eval_its_environment_and_its_final_metrics(finished):
    records = metrics_log.read_jsonl(finished / f"{NAME}.metrics.jsonl")
    assert [(r["stage"], r["step"]) for r in records] == [
        ("train", 0),
        ("train", 100),
        ("train", 200),
    ]
    assert all(len(r["metrics"]["loss"]["per_seed"]) == 2 for r in records)
    log = (finished / f"{NAME}.log").read_text()
    digest = json.loads((finished / f"{NAME}.config.json").read_text())["config_digest"]
    assert f"digest={digest}" in log
    assert re.search(r"devices=\d+x.+ \(\w+\); python [\d.]+, icl_toy ", log), log
    assert f"jax {runner.environment()['versions']['jax']}" in log
    (record,) = json.loads((finished / f"{NAME}.json").read_text())["convergence"].values()
    final = np.mean([s["final_loss"] for s in record["per_seed"]])
    fraction = f"{record['converged']}/{record['total']}"
    assert re.search(
        rf"done in .* s; converged seeds: {fraction} train; "
        rf"final loss \(seed mean\): {final:.4g} train \(held-out loss\)\n",
        log,
    ), log
    last = records[-1]["metrics"]["loss"]["mean"]
    assert re.search(rf"final eval of train at step 200 \(seed means\): .*\bloss={last:.4g} ", log)


# --- 1. a resume can never restore one config's training into another -----------------


def test_resume_into_a_changed_config_is_refused_naming_the_fields(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    start = time.perf_counter()
    code, err = _run(_tiny(out, "--set", "train.learning_rate=3e-3", "--resume"), capsys)
    assert code == 2 and time.perf_counter() - start < 5
    assert "train.learning_rate: 0.001 -> 0.003" in err and "without --resume" in err
    assert err.count("\n") == 1


def test_a_changed_config_trains_under_its_own_checkpoints(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    before = _losses(out)
    code, _ = _run(_tiny(out, "--set", "train.learning_rate=3e-3"), capsys)
    assert code == 0
    saved = json.loads((out / f"{NAME}.json").read_text())
    assert saved["config"]["train"]["learning_rate"] == 3e-3
    assert not np.array_equal(_losses(out), before)  # its own training, not the 1e-3 run's
    assert len(list((out / "checkpoints" / NAME).iterdir())) == 2
    # The first config again: its training finished here, so its results come back from
    # its checkpoints (bitwise), with no flag and nothing retrained.
    assert _run(_tiny(out), capsys)[0] == 0
    np.testing.assert_array_equal(_losses(out), before)
    assert "start (resume=True" in (out / f"{NAME}.log").read_text().splitlines()[-2]


def test_resume_adopts_an_interrupted_run_when_only_the_learning_rate_changes(
    finished, tmp_path, capsys
):
    out = _copy(finished, tmp_path)
    _interrupt(out)
    code, _ = _run(_tiny(out, "--set", "train.learning_rate=5e-4", "--resume"), capsys)
    assert code == 0
    saved = json.loads((out / f"{NAME}.json").read_text())
    assert saved["config"]["train"]["learning_rate"] == 5e-4
    assert saved["resumed_from"]["changed"] == ["train.learning_rate: 0.001 -> 0.0005"]


def test_an_interrupted_run_of_another_config_is_not_adopted(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    _interrupt(out)
    code, err = _run(_tiny(out, "--set", "task.noise_std=0.1", "--resume"), capsys)
    assert code == 2 and "task.noise_std: 0.0 -> 0.1" in err


# --- 2. reruns are safe ----------------------------------------------------------------


def test_a_finished_config_is_skipped_rerun_on_request_and_restarted_with_fresh(
    finished, tmp_path, capsys
):
    out = _copy(finished, tmp_path)
    before = _losses(out)
    assert _run(_tiny(out), capsys)[0] == 0
    assert "complete" in _run.out and "skipped" in _run.out
    assert _run(_tiny(out, "--rerun"), capsys)[0] == 0
    np.testing.assert_array_equal(_losses(out), before)  # recomputed from its checkpoints
    assert _run(_tiny(out, "--fresh"), capsys)[0] == 0
    np.testing.assert_array_equal(_losses(out), before)  # retrained: the same pure function


def test_checkpoints_of_an_interrupted_run_are_never_overwritten(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    _interrupt(out)
    code, err = _run(_tiny(out), capsys)
    assert code == 2 and "--resume continues it, --fresh starts it over" in err
    assert _run(_tiny(out, "--resume"), capsys)[0] == 0


# --- 3. sweeps keep their points --------------------------------------------------------


def test_a_sweep_with_a_non_finite_value_is_refused_before_any_point_trains(tmp_path, capsys):
    start = time.perf_counter()
    code, err = _run(_tiny(tmp_path, "--sweep", "task.noise_std=0,0.5,inf"), capsys)
    assert code == 2 and "task.noise_std must be finite" in err
    assert time.perf_counter() - start < 5 and not (tmp_path / f"{NAME}.sweep.json").exists()


def test_a_diverged_point_is_named_by_its_values_and_the_others_complete(
    tmp_path, monkeypatch, capsys
):
    real = sweep._train_point

    def diverge_at_half(point, learning_rates, seeds, options):
        if point.task.noise_std == 0.5:
            raise NonFiniteLossError("training diverged", step=3, run=(1e-3, 0, 1), kept_step=None)
        return real(point, learning_rates, seeds, options)

    monkeypatch.setattr(sweep, "_train_point", diverge_at_half)
    code, _ = _run(_tiny(tmp_path, "--sweep", "task.noise_std=0,0.5,1"), capsys)
    assert code == 1
    assert "grid point task.noise_std=0.5 diverged" in _run.out
    rows = json.loads((tmp_path / f"{NAME}.sweep.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["done", "diverged", "done"]


def test_an_interrupted_sweep_keeps_its_finished_points_and_resumes(tmp_path, monkeypatch):
    real, calls = sweep._train_point, []

    def interrupted(point, learning_rates, seeds, options):
        calls.append(point.task.noise_std)
        if point.task.noise_std == 0.5 and len(calls) == 2:
            raise KeyboardInterrupt
        return real(point, learning_rates, seeds, options)

    monkeypatch.setattr(sweep, "_train_point", interrupted)
    argv = _tiny(tmp_path, "--sweep", "task.noise_std=0,0.5")
    with pytest.raises(KeyboardInterrupt):
        cli.main(argv)
    rows = json.loads((tmp_path / f"{NAME}.sweep.json").read_text())["rows"]
    assert [r["task.noise_std"] for r in rows] == [0.0]
    assert cli.main([*argv, "--resume"]) == 0
    assert calls == [0.0, 0.5, 0.5]  # the finished point was not trained again
    rows = json.loads((tmp_path / f"{NAME}.sweep.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["done", "done"]


# --- 4. one run at a time in a results folder --------------------------------------------


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path, capsys):
    with ResultsLock(tmp_path, "icl-toy run other"):
        code, err = _run(_tiny(tmp_path), capsys)
    assert code == 2 and f"pid {os.getpid()}" in err and "in use by another run" in err
    assert not (tmp_path / f"{NAME}.json").exists()


# --- 5. non-finite values and exploding losses -------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "task.noise_std=nan",
        "train.learning_rate=inf",
        "task.w_scale=nan",
        "model.init_scale=inf",
        "task.input_high=inf",
    ],
)
def test_non_finite_values_are_refused_in_one_line(override, tmp_path, capsys):
    start = time.perf_counter()
    code, err = _run(_tiny(tmp_path, "--set", override), capsys)
    assert code == 2 and time.perf_counter() - start < 5
    assert re.search(r"must be (finite|> 0)", err) and err.count("\n") == 1


def test_a_finite_loss_far_above_its_start_is_a_divergence():
    losses = np.ones((2, 3, 4), np.float32)
    _check_diverged(losses, np.ones(2), 0, None, [(1e-3, 0, 0), (1e-3, 0, 1)])
    losses[1, 2, 1] = 10 * DIVERGENCE_RATIO
    runs = [(1e-3, 0, 0), (1e-3, 0, 1)]
    with pytest.raises(NonFiniteLossError, match=r"at step 209 .*seed 1") as info:
        _check_diverged(losses, np.ones(2), 200, 100, runs)
    assert info.value.step == 209 and info.value.kept_step == 100


# --- 6. the divergence error names the kept checkpoint and how to continue ---------------


def test_the_divergence_message_says_how_to_continue_at_a_lower_learning_rate(
    tmp_path, monkeypatch, capsys
):
    def diverge(config, options=None):
        raise NonFiniteLossError(
            "training diverged: loss nan at step 250; the checkpoint after step 200 is kept",
            step=250,
            run=(1e-3, 0, 0),
            kept_step=200,
        )

    monkeypatch.setattr(single_layer_gd, "run", diverge)
    monkeypatch.setattr(runner, "get_experiment", lambda name: single_layer_gd)
    code, err = _run(_tiny(tmp_path), capsys)
    assert code == 1 and "the checkpoint after step 200 is kept" in err
    assert err.count("\n") == 1
    assert "--set train.learning_rate=0.0005 --resume" in err


# --- 7. devices ------------------------------------------------------------------------------


def test_every_stage_batch_is_checked_against_the_device_count():
    config = single_layer_gd.get_config(quick=True)
    guard.check_devices(config, 4)  # 2048 tasks split over 4
    with pytest.raises(UsageError, match=r"train.batch_size = 6 is not a multiple of the 4"):
        guard.check_devices(apply_overrides(config, ["train.batch_size=6"]), 4)
    per_context = multi_layer_gdpp.get_config()
    guard.check_devices(per_context, 4)
    odd = dataclasses.replace(per_context, context_batch_sizes=(256, 256, 256, 510))
    with pytest.raises(UsageError, match=r"context_batch_sizes\[3\] = 510 is not a multiple"):
        guard.check_devices(odd, 4)


def test_the_memory_guard_reads_every_stage_batch_per_stage_overrides_included():
    config = multi_layer_gdpp.get_config()
    guard.check_sizes(config, memory_bytes=2**34)
    huge = dataclasses.replace(config, context_batch_sizes=(256, 256, 256, 50_000_000))
    with pytest.raises(UsageError, match=r"context_batch_sizes\[3\] = 50000000 needs about"):
        guard.check_sizes(huge, memory_bytes=2**34)


@pytest.mark.slow  # ~20 s: a subprocess on 4 devices; data parallelism itself is in test_train
def test_checkpoints_restore_on_another_device_count(tmp_path, capsys):
    """Interrupted on 4 (virtual CPU) devices, resumed on 1; the results record both."""
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FOUR_DEVICES}"}
    subprocess.run(
        [sys.executable, "-m", "icl_toy.runs.cli", *_tiny(tmp_path)], env=env, check=True, cwd=ROOT
    )
    assert json.loads((tmp_path / f"{NAME}.config.json").read_text())["device_count"] == 4
    _interrupt(tmp_path)
    assert _run(_tiny(tmp_path, "--resume"), capsys)[0] == 0
    meta = json.loads((tmp_path / f"{NAME}.config.json").read_text())
    assert meta["device_count"] == 1 and meta["device_kind"] and meta["versions"]["jax"]


# --- 8. one line for every user mistake ------------------------------------------------------


def test_bad_folders_and_sizes_get_one_line(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    cases = [
        (_tiny(a_file), "is a file"),
        (_tiny(Path("/proc/icl-toy-out")), "cannot write"),
        (["plot", NAME, "--from", str(tmp_path / "missing")], "no saved results"),
        (["plot", NAME, "--from", str(tmp_path)], "no saved results"),
        (_tiny(tmp_path, "--set", "eval_tasks=1000000000"), "above the sanity bound"),
        (_tiny(tmp_path, "--set", "eval_tasks=90000000"), "GiB"),
    ]
    for argv, message in cases:
        code, err = _run(argv, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)


# --- 9. readable results, logged signals ----------------------------------------------------


def test_results_are_readable_by_the_group(finished):
    mode = (finished / f"{NAME}.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_sigterm_is_logged(tmp_path):
    argv = [*_tiny(tmp_path), "--set", "train.steps=100000", "--set", "train.eval_every=100"]
    proc = subprocess.Popen([sys.executable, "-m", "icl_toy.runs.cli", *argv], cwd=ROOT)
    log = tmp_path / f"{NAME}.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "start" in log.read_text()):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert "interrupted by SIGTERM" in log.read_text()


def test_hypotheses_rerun_and_fresh_into_a_folder_they_ran_in(tmp_path, monkeypatch):
    """Training with checkpoints, then --rerun (recomputed from them) and --fresh."""
    import dataclasses

    from icl_toy.core.models import ModelConfig, make_model
    from icl_toy.core.tasks import TaskConfig
    from icl_toy.runs import hypotheses
    from icl_toy.runs.metrics_log import read_jsonl
    from icl_toy.training.train import TrainConfig, train

    @dataclasses.dataclass(frozen=True)
    class Config:
        task: TaskConfig = dataclasses.field(default_factory=lambda: TaskConfig(d=2, n_context=4))
        train: TrainConfig = dataclasses.field(
            default_factory=lambda: TrainConfig(steps=20, batch_size=8, eval_every=10, num_seeds=2)
        )

    def measure(config, options):
        model = make_model(config.task, ModelConfig())
        return {"loss": train(model, config.task, config.train, options=options).train_loss[:, -1]}

    claim = hypotheses.Hypothesis(
        name="tiny",
        claim="a loss is positive",
        source="a test",
        criteria=(hypotheses.Criterion("loss", "last batch loss", ">", 0.0),),
        get_config=lambda quick: Config(),
        measure=measure,
    )
    monkeypatch.setattr(hypotheses, "registry", lambda: {"tiny": claim})
    first = hypotheses.run_hypotheses(None, tmp_path)["tiny"]["criteria"][0]["per_seed"]
    # Its in-scan evaluations were logged as they happened, one record per seed each.
    logged = read_jsonl(tmp_path / "hypotheses.tiny.metrics.jsonl")
    assert logged[-1]["step"] == 20 and len(logged[-1]["metrics"]["train_loss"]["per_seed"]) == 2
    again = hypotheses.run_hypotheses(None, tmp_path, rerun=True)["tiny"]["criteria"][0]
    fresh = hypotheses.run_hypotheses(None, tmp_path, fresh=True)["tiny"]["criteria"][0]
    assert again["per_seed"] == first and fresh["per_seed"] == first
