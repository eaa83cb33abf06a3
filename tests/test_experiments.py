"""End-to-end runs of every experiment (quick configs) and checks of committed results."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from experiments import single_layer_gd
from icl_toy.results import load_results, to_jsonable
from icl_toy.train import ModelConfig

ROOT = Path(__file__).resolve().parents[1]


def test_single_layer_gd_quick_end_to_end(tmp_path):
    single_layer_gd.main(["--quick", "--out", str(tmp_path)])
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"single_layer_gd.{ext}").stat().st_size > 0
    results = load_results(tmp_path, "single_layer_gd")
    s = results.summary
    for key in ("config", "eta_star", "eta_line_search", "gd_loss"):
        assert key in s
    num_seeds = s["config"]["train"]["num_seeds"]
    for key in (
        "trained_loss",
        "sensitivity_cosine",
        "model_difference",
        "prediction_difference",
        "implied_eta",
    ):
        assert len(s["per_seed"][key]) == num_seeds
    assert s["eta_star"] == pytest.approx(200 / 33)
    # Even the quick run learns most of one GD step.
    assert np.mean(s["per_seed"]["sensitivity_cosine"]) > 0.9
    # The figure can be redrawn from saved results alone.
    (tmp_path / "single_layer_gd.png").unlink()
    single_layer_gd.plot(results, tmp_path)
    assert (tmp_path / "single_layer_gd.png").exists()


def test_single_layer_gd_rejects_other_depths():
    with pytest.raises(ValueError, match="one layer"):
        dataclasses.replace(single_layer_gd.get_config(), model=ModelConfig(num_layers=2))


def test_committed_figure_comes_from_the_current_full_config():
    """figures/single_layer_gd.json must be a run of today's full config (else rerun it)."""
    path = ROOT / "figures" / "single_layer_gd.json"
    saved = json.loads(path.read_text())
    assert saved["config"] == to_jsonable(single_layer_gd.get_config(quick=False))


@pytest.mark.slow
def test_single_layer_gd_full_run_matches_von_oswald(tmp_path):
    """The issue's must-show numbers, from a fresh full run (several minutes on 2 cores)."""
    results = single_layer_gd.run(single_layer_gd.get_config(quick=False))
    s = results.summary
    trained = np.asarray(s["per_seed"]["trained_loss"])
    assert np.all(trained <= 1.01 * s["gd_loss"]), (trained, s["gd_loss"])
    assert np.mean(s["per_seed"]["sensitivity_cosine"]) >= 0.99
    assert np.all(np.abs(np.asarray(s["per_seed"]["implied_eta"]) / s["eta_star"] - 1) <= 0.03)
