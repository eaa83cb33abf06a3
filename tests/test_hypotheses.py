"""The hypothesis harness: verdict logic, a deliberately false claim, saving and resuming."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_config_matches

from icl_toy.runs import cli, hypotheses
from icl_toy.runs.hypotheses import Criterion, Hypothesis, bootstrap_ci, combine, judge
from icl_toy.runs.results import to_jsonable
from icl_toy.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    low, high = bootstrap_ci(values)
    assert low < 3.0 < high
    assert (low, high) == bootstrap_ci(values)
    assert 1.0 <= low and high <= 5.0
    with pytest.raises(ValueError, match=">= 2 values"):
        bootstrap_ci(np.array([1.0]))


@pytest.mark.parametrize(
    ("direction", "values", "verdict"),
    [
        ("<", [-3.0, -2.0, -2.5, -3.5], "supported"),
        ("<", [2.0, 3.0, 2.5, 3.5], "not supported"),
        ("<", [-1.0, 1.0, -2.0, 2.0], "inconclusive"),
        (">", [2.0, 3.0, 2.5, 3.5], "supported"),
        (">", [-3.0, -2.0, -2.5, -3.5], "not supported"),
        (">", [1.0, np.nan, 2.0, 3.0], "inconclusive"),
    ],
)
def test_judge_reads_the_interval_against_the_threshold(direction, values, verdict):
    result = judge(Criterion("x", "a number", direction, 0.0), np.array(values))
    assert result["verdict"] == verdict
    if verdict != "inconclusive":
        assert result["ci_low"] <= result["estimate"] <= result["ci_high"]


def test_combine_needs_every_criterion():
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "not supported", "supported"]) == "not supported"
    with pytest.raises(ValueError, match="unknown verdicts"):
        combine(["maybe"])


def test_bad_criteria_and_names_raise():
    with pytest.raises(ValueError, match="direction"):
        Criterion("x", "", "<=", 0.0)
    with pytest.raises(ValueError, match="unknown hypothesis 'nope'"):
        hypotheses.get_hypotheses(["one_layer_gd", "nope"])
    with pytest.raises(ValueError, match=">= 2 seeds"):
        hypotheses.OneLayerGDConfig(train=TrainConfig(num_seeds=1))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["hypotheses", "--quick", "nope"])
    assert exit_info.value.code == 2


def test_a_claim_the_data_contradicts_is_not_supported():
    """ "One trained LSA layer beats one tuned GD step by 20%": the data says no.

    GD(η*) is the best one-layer LSA on this task family (THEORY §4), so the trained
    layer's relative loss gap is ≥ 0 up to noise, nowhere near −0.2.
    """
    false_claim = dataclasses.replace(
        hypotheses.HYPOTHESES["one_layer_gd"],
        name="one_layer_beats_gd",
        claim="One trained LSA layer beats one tuned GD step by 20%.",
        criteria=(Criterion("relative_loss_gap", "relative gap to GD(η*)", "<", -0.2),),
    )
    config = hypotheses.OneLayerGDConfig(
        train=TrainConfig(steps=300, batch_size=256, eval_every=150, num_seeds=3),
        eval_tasks=300,
    )
    entry = hypotheses.run_hypothesis(false_claim, config)
    assert entry["verdict"] == "not supported"
    (criterion,) = entry["criteria"]
    assert criterion["ci_low"] > -0.2
    assert len(criterion["per_seed"]) == 3


def _synthetic(calls: list) -> Hypothesis:
    @dataclasses.dataclass(frozen=True)
    class Config:
        shift: float = 1.0

    def measure(config, options):
        calls.append(options)
        return {"gap": config.shift + np.array([0.1, -0.1, 0.05, -0.05])}

    return Hypothesis(
        name="synthetic",
        claim="the gap is positive",
        source="a test",
        criteria=(Criterion("gap", "a shifted number", ">", 0.0),),
        get_config=lambda quick: Config(shift=2.0 if quick else 1.0),
        measure=measure,
    )


def test_run_hypotheses_saves_each_result_and_skips_finished_ones(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(hypotheses, "HYPOTHESES", {"synthetic": _synthetic(calls)})
    entries = hypotheses.run_hypotheses(None, tmp_path, quick=True)
    assert entries["synthetic"]["verdict"] == "supported"
    saved = json.loads((tmp_path / "hypotheses.json").read_text())
    assert saved["quick"] is True
    assert saved["hypotheses"]["synthetic"]["criteria"][0]["estimate"] == pytest.approx(2.0)
    assert (tmp_path / "hypotheses.png").stat().st_size > 0
    hypotheses.run_hypotheses(["synthetic"], tmp_path, quick=True)
    assert len(calls) == 1  # same config: skipped
    hypotheses.run_hypotheses(["synthetic"], tmp_path, quick=False)
    assert len(calls) == 2  # another config: run again
    cli.main(["hypotheses", "--quick", "--out", str(tmp_path), "--rerun"])
    assert len(calls) == 3
    table = capsys.readouterr().out
    assert "synthetic" in table and "SUPPORTED" in table and "[" in table


def test_committed_run_comes_from_the_current_full_configs():
    """figures/hypotheses.json must hold every hypothesis at today's full config."""
    path = ROOT / "figures" / "hypotheses.json"
    assert path.exists(), "no committed full run: run `icl-toy hypotheses`"
    assert (ROOT / "figures" / "hypotheses.png").exists()
    saved = json.loads(path.read_text())
    assert saved["quick"] is False
    for name, hypothesis in hypotheses.HYPOTHESES.items():
        assert name in saved["hypotheses"], f"{name} missing: run `icl-toy hypotheses {name}`"
        entry = saved["hypotheses"][name]
        assert_config_matches(entry["config"], to_jsonable(hypothesis.get_config(False)))
        assert entry["verdict"] in hypotheses.VERDICTS
