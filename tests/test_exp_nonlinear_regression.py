"""End-to-end quick run of the nonlinear-regression experiment, and its config checks."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from icl_toy.experiments import nonlinear_regression

from icl_toy.analysis.stats import mean_ci, seed_stats
from icl_toy.runs.results import load_results
from icl_toy.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_nonlinear_regression_quick_end_to_end(tmp_path):
    """~55 s of CPU on 2 cores: it compiles two training runs (MLP + LSA, MLP + GD) and more."""
    nonlinear_regression.main(["--quick", "--out", str(tmp_path), "--quiet"])
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"nonlinear_regression.{ext}").stat().st_size > 0
    results = load_results(tmp_path, "nonlinear_regression")
    s, a = results.summary, results.arrays
    config = nonlinear_regression.get_config(quick=True)
    num_seeds = config.train.num_seeds
    for key, values in s["per_seed"].items():
        assert len(values) == num_seeds, key
    base = s["baseline_loss"]
    # Least squares on (sin x, cos x) is exact on noiseless sine tasks; 0 predicts 0.25 E a².
    assert base["sine_oracle"] < 1e-6
    assert base["zero"] == pytest.approx(0.25 * (0.1**2 + 0.1 * 5 + 5**2) / 3, rel=0.15)
    # Even the quick run learns: both models end well below the zero predictor.
    for name in nonlinear_regression.MODELS:
        curve = a[f"eval_loss_{name}"]
        np.testing.assert_allclose(curve[:, -1], s["per_seed"][f"{name}_loss"], rtol=1e-6)
        assert np.all(curve[:, -1] < 0.8 * base["zero"]), (name, curve[:, -1])
    cos = np.asarray(s["per_seed"]["sensitivity_cosine_lsa_vs_gd"])
    assert np.all(np.abs(cos) <= 1 + 1e-6)
    assert isinstance(s["lsa_within_5_percent_of_gd"], bool)
    assert a["plot_pred_mlp_lsa"].shape == (num_seeds, config.plot_tasks, config.grid_points)
    # The figure can be redrawn from saved results alone.
    (tmp_path / "nonlinear_regression.png").unlink()
    nonlinear_regression.plot(results, tmp_path)
    assert (tmp_path / "nonlinear_regression.png").exists()
    assert (tmp_path / "nonlinear_regression_supplement.png").exists()


def test_nonlinear_regression_config_rejects_bad_values():
    config = nonlinear_regression.get_config(quick=True)
    with pytest.raises(ValueError, match="num_seeds"):
        dataclasses.replace(config, train=TrainConfig(steps=10, eval_every=5, num_seeds=1))
    with pytest.raises(ValueError, match="sensitivity_tasks"):
        dataclasses.replace(config, sensitivity_tasks=10**6)
    with pytest.raises(ValueError, match="length_scales"):
        dataclasses.replace(config, length_scales=(0.0,))


def test_committed_summaries_and_the_within_5_percent_claim():
    """The committed run's summaries are its per-seed values (the final points of the saved
    held-out curves), and von Oswald et al.'s claim holds on them: every seed of both models
    converged and the whole 95% t-interval of MLP + LSA / MLP + GD − 1 lies within ±5%."""
    results = load_results(ROOT / "figures", "nonlinear_regression")
    s, a = results.summary, results.arrays
    per_seed = {k: np.asarray(v) for k, v in s["per_seed"].items()}
    for key, values in per_seed.items():
        assert s["seed_stats"][key] == pytest.approx(seed_stats(values), rel=1e-9), key
    for name in nonlinear_regression.MODELS:
        np.testing.assert_allclose(a[f"eval_loss_{name}"][:, -1], per_seed[f"{name}_loss"])
        record = s["convergence"][name]
        assert record["converged"] == record["total"] == len(per_seed[f"{name}_loss"]), name
    gap = per_seed["mlp_lsa_loss"] / per_seed["mlp_gd_loss"] - 1
    # The study divides float32 losses: the ratio carries float32 round-off (~1e-7).
    np.testing.assert_allclose(gap, per_seed["relative_gap_lsa_vs_gd"], atol=2e-7)
    interval = mean_ci(gap)
    for bound in ("mean", "low", "high"):
        assert s["relative_gap_ci"][bound] == pytest.approx(interval[bound], abs=2e-7), bound
    assert -0.05 < interval["low"] and interval["high"] < 0.05
    assert s["lsa_within_5_percent_of_gd"] is True
