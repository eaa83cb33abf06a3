"""Runs you can watch: metrics written as each group ends, progress off a terminal, the
optional TensorBoard writer and the error when its extra is missing."""

import importlib.util
import re
import struct

import jax
import numpy as np
import pytest

from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.tasks import sample_batch, von_oswald_preset
from icl_toy.runs import cli, metrics_log
from icl_toy.runs.metrics_log import JsonlWriter, MetricsLog, read_jsonl
from icl_toy.training.train import TRAIN_LOSS, RunOptions, TrainConfig, _Progress, batch_loss, train

# Four chunks of 10 steps, two per group: evals at 0 (init), 10, 20 | 30, 40.
TINY = TrainConfig(steps=40, eval_every=10, batch_size=8, num_seeds=2)
GROUP = 2


@pytest.fixture(scope="module")
def setup():
    task = von_oswald_preset()
    model = make_model(task, ModelConfig())
    held_out = sample_batch(jax.random.key(7), task, 16)
    return model, task, held_out


def test_metrics_file_grows_while_training_runs_and_matches_the_result(setup, tmp_path):
    model, task, held_out = setup
    path = tmp_path / "run.metrics.jsonl"
    seen = []  # lines in the file each time the compiled program evaluates

    def count_lines():
        seen.append(len(path.read_text().splitlines()) if path.exists() else 0)

    def eval_fn(params):
        # A host callback inside the scan: it reads the file while a group is computing.
        jax.debug.callback(count_lines)
        return {"loss": batch_loss(model, params, held_out)}

    log = MetricsLog([JsonlWriter(path)])
    result = train(
        model,
        task,
        TINY,
        eval_fn=eval_fn,
        options=RunOptions(checkpoint_every=GROUP, metrics_hook=log),
    )
    log.close()
    # During the second group's program the first group's lines (steps 0, 10, 20) are
    # already on disk; during the first group only step 0's.
    assert max(seen) == 1 + GROUP, seen
    assert set(seen) <= {0, 1, 1 + GROUP}, seen

    records = read_jsonl(path)
    assert [r["step"] for r in records] == list(result.eval_steps)
    assert {r["stage"] for r in records} == {"train"}
    assert all(isinstance(r["wall_time"], float) for r in records)
    for i, record in enumerate(records):
        loss = record["metrics"]["loss"]
        expected = result.eval_metrics["loss"][:, i]
        np.testing.assert_array_equal(np.float32(loss["per_seed"]), expected)
        np.testing.assert_allclose(loss["mean"], expected.astype(np.float64).mean(), rtol=1e-12)
        if i == 0:
            assert TRAIN_LOSS not in record["metrics"]  # nothing trained before step 0
            continue
        # The mean batch loss of the eval_every steps up to this eval.
        chunk = result.train_loss[:, (i - 1) * TINY.eval_every : i * TINY.eval_every]
        np.testing.assert_allclose(
            record["metrics"][TRAIN_LOSS]["per_seed"], chunk.mean(axis=1), rtol=1e-6
        )
    assert log.last["train"][0] == TINY.steps


def test_stages_name_their_records_and_progress_prints_a_line_per_group_off_a_tty(setup, capsys):
    model, task, _ = setup
    calls = []
    options = RunOptions(
        checkpoint_every=GROUP,
        progress=True,
        metrics_hook=lambda stage, step, metrics: calls.append((stage, step, sorted(metrics))),
    )
    assert options.stage("K1").stage("depth2").stage_name == "K1/depth2"
    train(model, task, TINY, options=options.stage("K1"))
    assert calls == [
        ("K1", 0, []),
        *(("K1", step, [TRAIN_LOSS]) for step in (10, 20, 30, 40)),
    ]
    lines = capsys.readouterr().err.splitlines()  # capsys's stderr is not a terminal
    assert len(lines) == TINY.steps // TINY.eval_every // GROUP, lines
    pattern = r"training K1: step {}/40  \d+ steps/s  loss [0-9.e+-]+"
    assert re.fullmatch(pattern.format(20) + r" \(compiled in [0-9.]+ s\)", lines[0]), lines
    assert re.fullmatch(pattern.format(40), lines[1]), lines


def test_progress_bar_reads_compiling_until_the_first_group_ends(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with _Progress(True, "train", 40, 0) as progress:
        assert not progress.bar.disable
        assert progress.bar.tasks[0].fields["status"] == "compiling"
        progress.compile_seconds = 3.0
        progress.update(20, 20, 0.5, 0.25)  # 20 steps in 0.5 s of compute: 40 steps/s
        assert progress.bar.tasks[0].fields["status"] == "40 steps/s  loss 0.25"
        assert progress.bar.tasks[0].completed == 20
    assert "training train: step" not in capsys.readouterr().err  # the bar, not lines


def _tfrecords(path):
    """The records of a TFRecord file: (length u64, crc u32, data, crc u32) each."""
    data, records, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        records.append(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4
    return records


def test_tensorboard_writer_writes_seed_mean_and_per_seed_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event

    log = metrics_log.open_log(tmp_path, "study", config={}, backends=["tensorboard"])
    log("train", 10, {"loss": np.array([1.0, 2.0], np.float32)})
    log("train", 20, {"loss": np.array([0.5, np.nan], np.float32)})
    log.close()
    (event_file,) = (tmp_path / "tensorboard" / "study").glob("events.out.tfevents.*")
    scalars = {}
    for record in _tfrecords(event_file):
        event = Event.FromString(record)
        for value in event.summary.value:
            scalars[(value.tag, event.step)] = value.simple_value
    assert scalars[("train/loss/mean", 10)] == 1.5
    assert scalars[("train/loss/per_seed/0", 10)] == 1.0
    assert scalars[("train/loss/per_seed/1", 10)] == 2.0
    assert scalars[("train/loss/per_seed/0", 20)] == 0.5
    # A non-finite value (and so the mean) is left out rather than plotted.
    assert ("train/loss/per_seed/1", 20) not in scalars
    assert ("train/loss/mean", 20) not in scalars
    # The JSONL file is written beside it, with null for the non-finite value.
    second = read_jsonl(tmp_path / "study.metrics.jsonl")[1]
    assert second["metrics"]["loss"] == {"mean": None, "per_seed": [0.5, None]}


def test_wandb_writer_writes_an_offline_run_by_default(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    log = metrics_log.open_log(tmp_path, "study", config={"steps": 40}, backends=["wandb"])
    log("train", 0, {"loss": np.array([1.0, 2.0], np.float32)})
    log("K1", 0, {"loss": np.array([0.5, np.nan], np.float32)})  # its own step axis
    log.close()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (data,) = run_dir.glob("run-*.wandb")
    assert data.stat().st_size > 0


@pytest.mark.parametrize(
    ("backend", "module", "extra"),
    [("tensorboard", "tensorboardX", "tensorboard"), ("wandb", "wandb", "wandb")],
)
def test_a_missing_extra_is_one_line_before_any_compute(
    backend, module, extra, tmp_path, monkeypatch, capsys
):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == module else find_spec(name, *a),
    )
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "single_layer_gd", "--quick", "--out", str(out), "--log-to", backend])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1, err
    assert f"--log-to {backend} needs {module}" in err
    assert f"pip install -e '.[{extra}]'" in err
    assert not out.exists()  # refused before the run touched anything


def test_an_unknown_backend_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "single_layer_gd", "--log-to", "tensorboard,mlflow"])
    assert exit_info.value.code == 2
    assert "unknown backend mlflow; known: tensorboard, wandb" in capsys.readouterr().err


def test_a_run_from_scratch_starts_the_metrics_file_afresh_and_a_resumed_one_appends(tmp_path):
    with metrics_log.open_log(tmp_path, "study", config={}) as log:
        log("train", 0, {"loss": np.ones(2)})
    with metrics_log.open_log(tmp_path, "study", config={}, append=True) as log:
        log("train", 10, {"loss": np.ones(2)})
    path = metrics_log.metrics_path(tmp_path, "study")
    assert [r["step"] for r in read_jsonl(path)] == [0, 10]
    with metrics_log.open_log(tmp_path, "study", config={}, append=False) as log:
        log("train", 0, {"loss": np.ones(2)})
    assert [r["step"] for r in read_jsonl(path)] == [0]
