"""The icl-toy command: list, run (with --set/--seeds), plot, reproduce, and its errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import one_panel_plot
from icl_toy.experiments import single_layer_gd

from icl_toy.runs import cli
from icl_toy.runs.config import apply_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_list_names_every_experiment_with_runtimes(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "single_layer_gd" in out and "--quick" in out and "full" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "no_such_experiment"], "known experiments: single_layer_gd"),
        (["run", "single_layer_gd", "--set", "train.lr=1"], "valid keys: .*train.learning_rate"),
        (["run", "single_layer_gd", "--set", "train.steps=many"], "train.steps expects an int"),
        (["run", "single_layer_gd", "--set", "train.learning_rate=0"], "learning_rate must be > 0"),
        (["run", "single_layer_gd", "--set", "model.num_layers=0"], "num_layers must be"),
        (["run", "single_layer_gd", "--set", "task.n_context=0"], "n_context"),
        (["run", "single_layer_gd", "--seeds", "0"], "num_seeds"),
        (["plot", "nope", "--from", "."], "unknown experiment"),
        # Every name is checked before the first experiment runs.
        (["reproduce", "--quick", "single_layer_gd", "nope"], "unknown experiment 'nope'"),
    ],
)
def test_bad_input_exits_with_a_message_before_any_compute(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_reproduce_runs_then_skips_and_plot_redraws(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = [
        "train.steps=200",
        "train.eval_every=100",
        "eval_tasks=500",
        "line_search_tasks=500",
    ]
    small = apply_overrides(single_layer_gd.get_config(quick=True), overrides)
    monkeypatch.setattr(single_layer_gd, "get_config", lambda quick=False: small)
    # One experiment keeps the test short; `reproduce` with no names runs them all in order.
    # Its figures stand in as one panel each: the test is of the commands, not the drawing.
    monkeypatch.setattr(single_layer_gd, "plot", one_panel_plot(single_layer_gd))
    assert cli.main(["reproduce", "--quick", "--quiet", "single_layer_gd"]) == 0
    out_dir = tmp_path / "figures" / "quick"
    for suffix in (".json", ".npz", ".png", ".pdf", ".config.json", ".log"):
        assert (out_dir / f"single_layer_gd{suffix}").exists(), suffix
    metadata = json.loads((out_dir / "single_layer_gd.config.json").read_text())
    assert {"icl_toy_version", "git_commit", "jax_version", "device", "config"} <= set(metadata)
    assert metadata["config"]["train"]["steps"] == 200
    # The results JSON itself carries the versions and devices behind its numbers.
    environment = json.loads((out_dir / "single_layer_gd.json").read_text())["environment"]
    assert environment["versions"]["jax"] == metadata["jax_version"]
    assert environment["device_count"] == metadata["device_count"] >= 1
    assert environment["git_commit"] == metadata["git_commit"]
    assert cli.main(["reproduce", "--quick", "--quiet", "single_layer_gd"]) == 0
    assert "complete" in capsys.readouterr().out
    assert sorted(p.name for p in out_dir.glob("*.json")) == [
        "single_layer_gd.config.json",
        "single_layer_gd.json",
    ]
    (out_dir / "single_layer_gd.png").unlink()
    assert cli.main(["plot", "single_layer_gd", "--from", str(out_dir)]) == 0
    assert (out_dir / "single_layer_gd.png").exists()


def test_console_script_and_module_share_the_parser(capsys):
    """`icl-toy run --help` (in-process) and `python -m experiments.NAME --help` (a fresh
    process, as a user types it) print the same options."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--help"])
    assert exit_info.value.code == 0
    command = [sys.executable, "-m", "experiments.single_layer_gd", "--help"]
    module = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert module.returncode == 0, module.stderr
    for out in (capsys.readouterr().out, module.stdout):
        assert "--set" in out and "--resume" in out and "--sweep" in out


def test_paper_configs_resolve_and_a_study_without_one_says_so(capsys):
    config = cli.resolve_config("multi_layer_gdpp", False, None, [], paper=True)
    assert (config.depths, config.train.batch_size, config.train.steps) == (
        (1, 2, 3, 4, 5),
        2048,
        50_000,
    )
    assert cli.default_out_dir(False, paper=True) == cli.FIGURES / "paper"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "forward_only", "--paper"])
    assert exit_info.value.code == 2
    assert (
        "forward_only has no paper config (studies with one: multi_layer_gdpp, which_algorithm)"
        in capsys.readouterr().err
    )
