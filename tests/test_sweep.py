"""Sweeps: learning rates vmapped into one compiled call, other axes in sequence."""

import csv
import re

import pytest
from icl_toy.experiments import single_layer_gd

from icl_toy.runs import cli
from icl_toy.runs.config import apply_overrides
from icl_toy.runs.metrics_log import read_jsonl
from icl_toy.runs.sweep import parse_sweep, run_sweep
from icl_toy.training import train as train_module

TINY = ["train.steps=100", "train.eval_every=100", "train.batch_size=256", "eval_tasks=256"]


@pytest.fixture
def tiny_config():
    return apply_overrides(single_layer_gd.get_config(quick=True), TINY)


@pytest.fixture
def trainer_builds(monkeypatch):
    """Counts make_trainer calls: each is one compiled training program."""
    calls = []
    original = train_module.make_trainer

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "make_trainer", counting)
    return calls


def test_learning_rate_sweep_is_one_compiled_call(tiny_config, trainer_builds, tmp_path):
    axes = parse_sweep(["train.learning_rate=1e-3,3e-3,1e-2"])
    rows = run_sweep("single_layer_gd", tiny_config, axes, tmp_path, quiet=True)
    assert len(trainer_builds) == 1
    assert [r["train.learning_rate"] for r in rows] == [1e-3, 3e-3, 1e-2]
    assert all(r["num_seeds"] == 2 for r in rows)
    with open(tmp_path / "single_layer_gd.sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and float(table[1]["final_loss_mean"]) == pytest.approx(
        rows[1]["final_loss_mean"]
    )
    assert (tmp_path / "single_layer_gd.sweep.png").exists()
    # The point's in-scan evaluations, logged while it trained: 3 rates x 2 seeds per record.
    (log,) = (tmp_path / "checkpoints" / "single_layer_gd.sweep").glob("*.metrics.jsonl")
    last = read_jsonl(log)[-1]
    assert last["step"] == tiny_config.train.steps
    assert len(last["metrics"]["loss"]["per_seed"]) == 6


def test_shape_changing_axes_run_in_sequence(tiny_config, trainer_builds, tmp_path):
    axes = parse_sweep(["train.learning_rate=1e-3,3e-3", "task.noise_std=0,0.5"])
    rows = run_sweep("single_layer_gd", tiny_config, axes, tmp_path, quiet=True)
    assert len(trainer_builds) == 2 and len(rows) == 4
    assert sorted({r["task.noise_std"] for r in rows}) == [0.0, 0.5]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("train.lr=1,2", "valid keys"),
        ("train.learning_rate", "key=v1,v2"),
        ("train.steps=600,ten", "train.steps expects an int"),
    ],
)
def test_bad_sweeps_exit_before_compute(sweep, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "single_layer_gd", "--quick", "--sweep", sweep])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
