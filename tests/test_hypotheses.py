"""The hypothesis harness: verdicts, discovery in the studies, a false claim, saving, resuming."""

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_config_matches
from icl_toy.experiments import single_layer_gd

from icl_toy.analysis.stats import bootstrap_ci, mean_ci
from icl_toy.runs import cli, hypotheses, runner
from icl_toy.runs.hypotheses import Criterion, Hypothesis, combine, judge
from icl_toy.runs.results import git_commit
from icl_toy.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


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
    t, boot = result["interval"], result["bootstrap_interval"]
    assert (t["method"], boot["method"], t["n"], boot["n"]) == ("t", "bootstrap", 4, 4)
    if np.isfinite(values).all():
        # The decision reads the Student-t record; the bootstrap and p-value sit beside it.
        assert t == mean_ci(np.array(values)) and boot == bootstrap_ci(np.array(values))
        assert t["low"] <= t["mean"] <= t["high"]
        # Four seeds all on one side: the observed signs are the most extreme of 2^4.
        expected_p = {"supported": 1 / 16, "not supported": 1.0}.get(verdict)
        if expected_p is not None:
            assert result["sign_flip_p"] == pytest.approx(expected_p)
    else:
        assert np.isnan([t["mean"], t["low"], boot["high"], result["sign_flip_p"]]).all()


def test_the_t_interval_decides_where_the_bootstrap_would_flatter():
    """Five seeds whose bootstrap interval excludes 0 while the t-interval does not (the
    shape of a committed verdict that the bootstrap had called supported)."""
    values = np.array([-0.010, -0.006, -0.004, -0.003, 0.001])
    result = judge(Criterion("x", "a number", "<", 0.0), values)
    assert result["bootstrap_interval"]["high"] < 0 < result["interval"]["high"]
    assert result["verdict"] == "inconclusive"


def test_caveats_name_too_few_seeds_and_unconverged_training():
    criteria = [{"per_seed": [1.0] * 5}, {"per_seed": [1.0] * 5}]
    runs = {"lsa": {"converged": 3, "total": 5}, "gd": {"converged": 5, "total": 5}}
    assert hypotheses.caveats(criteria, runs) == [
        f"5 seeds (fewer than {hypotheses.MIN_SEEDS})",
        "3/5 seeds converged in lsa",
    ]
    ten = [{"per_seed": [1.0] * 10}]
    assert hypotheses.caveats(ten, {"lsa": {"converged": 10, "total": 10}}) == []


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
        single_layer_gd.OneLayerGDConfig(train=TrainConfig(num_seeds=1))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["hypotheses", "--quick", "nope"])
    assert exit_info.value.code == 2


def test_a_claim_the_data_contradicts_is_not_supported():
    """ "One trained LSA layer beats one tuned GD step by 20%": the data says no.

    GD(η*) is the best one-layer LSA on this task family (docs/theory.md §4), so the trained
    layer's relative loss gap is ≥ 0 up to noise, nowhere near −0.2; ten seeds make the
    Student-t interval narrow enough to say so (three do not).
    """
    false_claim = dataclasses.replace(
        hypotheses.registry()["one_layer_gd"],
        name="one_layer_beats_gd",
        claim="One trained LSA layer beats one tuned GD step by 20%.",
        criteria=(Criterion("relative_loss_gap", "relative gap to GD(η*)", "<", -0.2),),
    )
    config = single_layer_gd.OneLayerGDConfig(
        train=TrainConfig(steps=300, batch_size=256, eval_every=150, num_seeds=10),
        eval_tasks=300,
    )
    entry = hypotheses.run_hypothesis(false_claim, config)
    assert entry["verdict"] == "not supported"
    assert entry["git_commit"] == git_commit()  # the code it ran at, kept with the entry
    (criterion,) = entry["criteria"]
    t = criterion["interval"]
    assert t["low"] > -0.2 and t["n"] == 10
    # Every seed lies above −0.2, so no sign pattern has a larger mean: the one-sided p of
    # "mean < −0.2" is 1.
    assert min(criterion["per_seed"]) > -0.2
    assert criterion["sign_flip_p"] == 1.0
    # Ten seeds: no seed caveat; the training's convergence record is kept with the entry.
    assert not any("seeds (fewer than" in note for note in entry["caveats"])
    assert [r["total"] for r in entry["convergence"].values()] == [10]
    # Beside it, the same statistic on untrained and on permuted weights: far from GD.
    for kind in ("untrained", "permuted"):
        null = criterion["nulls"][kind]
        assert len(null["per_seed"]) == 10 and null["interval"]["low"] > t["high"]
        # On the claimed side of chance, though not past the claim's threshold.
        assert null["beyond"]


def _study(name: str, declared) -> types.ModuleType:
    module = types.ModuleType(f"icl_toy.experiments.{name}")
    if declared is not None:
        module.HYPOTHESES = declared
    return module


def _with_studies(monkeypatch, studies: dict[str, types.ModuleType]) -> None:
    """Make `studies` the only experiments, importable through `runner.get_experiment`."""
    monkeypatch.setattr(runner, "EXPERIMENTS", tuple(studies))
    for module in studies.values():
        monkeypatch.setitem(sys.modules, module.__name__, module)


def test_registry_collects_the_studies_hypotheses_in_experiment_order(monkeypatch):
    a, b, c = (_synthetic([], name) for name in ("from_a", "from_c", "also_from_c"))
    _with_studies(
        monkeypatch,
        {
            "study_a": _study("study_a", (a,)),
            "no_claims": _study("no_claims", None),
            "study_c": _study("study_c", (b, c)),
        },
    )
    found = hypotheses.registry()
    assert list(found)[:3] == ["from_a", "from_c", "also_from_c"]
    assert found["from_c"] is b and len(found) == 3
    selected = hypotheses.get_hypotheses(["also_from_c", "from_a"])
    assert [h.name for h in selected] == ["also_from_c", "from_a"]


def test_registry_rejects_a_name_defined_twice_and_a_malformed_declaration(monkeypatch):
    _with_studies(
        monkeypatch,
        {
            "study_a": _study("study_a", (_synthetic([], "twice"),)),
            "study_b": _study("study_b", (_synthetic([], "twice"),)),
        },
    )
    with pytest.raises(ValueError, match="'twice' is defined twice: in study_a and in study_b"):
        hypotheses.registry()
    _with_studies(monkeypatch, {"study_a": _study("study_a", [_synthetic([], "a list")])})
    with pytest.raises(TypeError, match="must be a tuple of Hypothesis"):
        hypotheses.registry()


def test_the_real_registry_imports_every_study():
    found = hypotheses.registry()
    assert {"one_layer_gd", "deep_lsa_gdpp", "momentum_attention"} <= set(found)
    assert all(isinstance(h, Hypothesis) and h.name == name for name, h in found.items())


def _synthetic(calls: list, name: str = "synthetic") -> Hypothesis:
    @dataclasses.dataclass(frozen=True)
    class Config:
        shift: float = 1.0

    def measure(config, options):
        calls.append(options)
        return {"gap": config.shift + np.array([0.1, -0.1, 0.05, -0.05])}

    return Hypothesis(
        name=name,
        claim="the gap is positive",
        source="a test",
        criteria=(Criterion("gap", "a shifted number", ">", 0.0),),
        get_config=lambda quick: Config(shift=2.0 if quick else 1.0),
        measure=measure,
    )


def test_run_hypotheses_saves_each_result_and_skips_finished_ones(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(hypotheses, "registry", lambda: {"synthetic": _synthetic(calls)})
    entries = hypotheses.run_hypotheses(None, tmp_path, quick=True)
    assert entries["synthetic"]["verdict"] == "supported"
    saved = json.loads((tmp_path / "hypotheses.json").read_text())
    assert saved["quick"] is True
    assert saved["hypotheses"]["synthetic"]["criteria"][0]["interval"]["mean"] == pytest.approx(2.0)
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
    for name, hypothesis in hypotheses.registry().items():
        assert name in saved["hypotheses"], f"{name} missing: run `icl-toy hypotheses {name}`"
        entry = saved["hypotheses"][name]
        assert_config_matches(entry["config"], hypothesis.get_config(False))
        assert entry["verdict"] in hypotheses.VERDICTS


def test_committed_verdicts_follow_from_their_per_seed_values():
    """Every committed interval, null, verdict and caveat is recomputed from the saved
    per-seed values: the table in the README is what the numbers say."""
    saved = json.loads((ROOT / "figures" / "hypotheses.json").read_text())["hypotheses"]
    for name, entry in saved.items():
        criteria = []
        for c in entry["criteria"]:
            criterion = Criterion(c["statistic"], c["meaning"], c["direction"], c["threshold"])
            again = judge(criterion, np.array(c["per_seed"], dtype=float))
            assert again["verdict"] == c["verdict"], (name, c["statistic"])
            for bound in ("mean", "low", "high"):
                assert again["interval"][bound] == pytest.approx(c["interval"][bound], rel=1e-9)
            if "nulls" in c:
                again["nulls"] = {
                    kind: hypotheses.judge_null(criterion, again, np.array(null["per_seed"]))
                    for kind, null in c["nulls"].items()
                }
                for kind, null in again["nulls"].items():
                    assert null["beyond"] == c["nulls"][kind]["beyond"], (name, kind)
            criteria.append(again)
        assert combine([c["verdict"] for c in criteria]) == entry["verdict"], name
        if entry["convergence"] is not None:
            assert hypotheses.caveats(criteria, entry["convergence"]) == entry["caveats"], name
