"""End-to-end quick runs of the ICL-vs-fine-tuning and forward-only experiments (issue 6)."""

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import assert_config_matches
from icl_toy.experiments import forward_only, icl_vs_finetuning

from icl_toy.core.models import ModelConfig
from icl_toy.runs.results import load_results

ROOT = Path(__file__).resolve().parents[1]


def _check_files_and_redraw(module, tmp_path):
    name = module.NAME
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    results = load_results(tmp_path, name)
    assert (tmp_path / f"{name}_supplement.png").stat().st_size > 0
    return results.summary


@pytest.mark.long
def test_icl_vs_finetuning_quick_end_to_end(tmp_path):
    icl_vs_finetuning.main(["--quick", "--out", str(tmp_path), "--quiet"])
    s = _check_files_and_redraw(icl_vs_finetuning, tmp_path)
    num_seeds = s["config"]["train"]["num_seeds"]
    for key in ("cosine_k1", "norm_ratio_k1", "relative_error_k1", "simaou", "rec2ftp_m0.0"):
        assert len(s["trained_per_seed"][key]) == num_seeds
        assert key in s["construction"]
    # The construction is one GD step: exact in float64, round-off in float32.
    f64 = s["construction_float64"]
    assert f64["dtype_is_float64"]
    assert f64["max_abs_delta_w_difference"] <= 1e-12
    assert abs(s["construction"]["cosine_k1"] - 1) <= 1e-5
    assert abs(s["construction"]["simaou"] - 1) <= 1e-5
    assert s["construction"]["rec2ftp_m0.0"] == 1.0
    # Random updates are not aligned; the quick-trained layer mostly is.
    assert abs(s["trained_seed_stats"]["simaou_random"]["mean"]) < 0.1
    assert s["trained_seed_stats"]["cosine_k1"]["mean"] > 0.9


def test_icl_vs_finetuning_config_rejects_bad_input():
    with pytest.raises(ValueError, match="one LSA layer"):
        dataclasses.replace(icl_vs_finetuning.get_config(), model=ModelConfig(num_layers=2))
    with pytest.raises(ValueError, match="contain 1"):
        dataclasses.replace(icl_vs_finetuning.get_config(), finetune_steps=(2, 3))


@pytest.mark.slow
def test_forward_only_quick_end_to_end(tmp_path):
    forward_only.main(["--quick", "--out", str(tmp_path), "--quiet"])
    s = _check_files_and_redraw(forward_only, tmp_path)
    for method in forward_only.METHODS:
        assert s["steps_per_second"][method] > 0
        assert len(s["final_loss_per_seed"][method]) == s["config"]["train"]["num_seeds"]
    stream = s["stream"]
    # The construction's stream is minibatch SGD at η* (float32 round-off).
    assert stream["construction_vs_sgd_eta_star_max_abs"] <= 1e-5
    assert stream["construction_icl_final"] < 0.01 * stream["initial_loss"]
    # Backprop training makes progress within 400 steps on at least one seed.
    assert s["final_loss"]["backprop"]["min"] < 0.3


def test_forward_only_config_rejects_bad_input():
    with pytest.raises(ValueError, match="spsa_epsilon"):
        dataclasses.replace(forward_only.get_config(), spsa_epsilon=0.0)
    with pytest.raises(ValueError, match="one LSA layer"):
        dataclasses.replace(forward_only.get_config(), model=ModelConfig(num_heads=2))


@pytest.mark.parametrize("module", [icl_vs_finetuning, forward_only])
def test_committed_figure_comes_from_the_current_full_config(module):
    """figures/NAME.json must be a run of today's full config (else rerun it)."""
    saved = json.loads((ROOT / "figures" / f"{module.NAME}.json").read_text())
    assert_config_matches(saved["config"], module.get_config(quick=False))
