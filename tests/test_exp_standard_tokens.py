"""End-to-end quick run of the standard-token experiment, and its config checks."""

import dataclasses

import numpy as np
import pytest
from icl_toy.experiments import standard_tokens

from icl_toy.core.tasks import TaskConfig
from icl_toy.runs.results import load_results


@pytest.mark.slow
def test_standard_tokens_quick_end_to_end(tmp_path):
    """~40 s of CPU on 2 cores, mostly compiling the training run and the in-scan evaluation."""
    standard_tokens.main(["--quick", "--out", str(tmp_path), "--quiet"])
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"standard_tokens.{ext}").stat().st_size > 0
    results = load_results(tmp_path, "standard_tokens")
    s, a = results.summary, results.arrays
    config = standard_tokens.get_config(quick=True)
    for key, values in s["per_seed"].items():
        assert len(values) == config.train.num_seeds, key
    assert s["eta_star"] == pytest.approx(200 / 33)
    # The construction reaches the one-step GD loss to within 1% (τ = 30, float32).
    construction = s["construction"]
    assert abs(construction["relative_gap_to_gd"]) < 0.01
    assert construction["copy_score"] > 0.999
    assert construction["max_abs_error_vs_gd"] < 1e-4
    # One GD step on the preset: half-MSE 0.2062 (docs/theory.md §10b), 500 held-out tasks.
    assert s["gd_loss"] == pytest.approx(0.2062, abs=0.03)
    assert s["gd2_loss"] < s["gd_loss"]
    # Training does not diverge; the copy score is a probability mass.
    assert np.all(a["eval_loss"][:, -1] <= a["eval_loss"][:, 0] * 1.01)
    assert np.all((a["eval_copy_score"] >= 0) & (a["eval_copy_score"] <= 1))
    np.testing.assert_allclose(a["attention_trained"].sum(-1), 1.0, rtol=1e-5)
    (tmp_path / "standard_tokens.png").unlink()
    standard_tokens.plot(results, tmp_path)
    assert (tmp_path / "standard_tokens.png").exists()
    assert (tmp_path / "standard_tokens_supplement.png").exists()


def test_standard_tokens_config_rejects_bad_values():
    config = standard_tokens.get_config(quick=True)
    with pytest.raises(ValueError, match="d_y"):
        dataclasses.replace(config, task=TaskConfig(d_y=2))
    with pytest.raises(ValueError, match="temperature"):
        dataclasses.replace(config, temperature=0.0)
