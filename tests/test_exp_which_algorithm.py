"""End-to-end quick run of the which-algorithm study (Akyürek et al., docs/theory.md §3)."""

import numpy as np
import pytest
from icl_toy.experiments import which_algorithm

from icl_toy.analysis.probes import PROBE_KINDS, TARGETS
from icl_toy.runs.results import load_results


@pytest.mark.slow  # ~45 s on 2 cores: eight softmax transformers and probes, compile-bound
def test_which_algorithm_quick_end_to_end(tmp_path):
    which_algorithm.main(["--quick", "--out", str(tmp_path)])
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"which_algorithm.{ext}").stat().st_size > 0
    results = load_results(tmp_path, "which_algorithm")
    s, config = results.summary, results.summary["config"]
    num_seeds = config["train"]["num_seeds"]
    assert [setting["noise_std"] for setting in s["settings"]] == config["noise_stds"]
    for i, setting in enumerate(s["settings"]):
        assert setting["bayes_lambda"] == pytest.approx(setting["noise_std"] ** 2)
        assert [d["depth"] for d in setting["depths"]] == config["depths"]
        for entry in setting["depths"]:
            names = [row["name"] for row in entry["rows"]]
            assert entry["closest_by_spd"]["name"] == names[0]
            spds = [row["spd"]["mean"] for row in entry["rows"]]
            assert spds == sorted(spds) and min(spds) >= 0
            loss = entry["model_half_mse"]
            assert loss["low"] <= loss["mean"] <= loss["high"]
            # Sanity: even 100 steps of training stay below twice the zero predictor's
            # half-MSE (τ² d / 2 = 4 here) and the grid fit names a λ of the grid.
            assert loss["mean"] < 2 * 0.5 * config["d"]
            assert entry["ridge_fit"]["best_lambda"] in entry["ridge_fit"]["lambdas"]
            for kind in PROBE_KINDS:
                for target in TARGETS:
                    r2 = results.arrays[f"probe_{kind}_{target}_noise{i}_depth{entry['depth']}"]
                    assert r2.shape == (num_seeds, entry["depth"] + 1)
                    assert np.all(np.isfinite(r2)) and np.all(r2 <= 1.0)
            suffix = f"noise{i}_depth{entry['depth']}"
            curve = results.arrays[f"eval_loss_{suffix}"]
            assert curve.shape == (num_seeds, len(results.arrays[f"eval_steps_{suffix}"]))
            np.testing.assert_allclose(curve[:, -1], entry["model_half_mse_per_seed"], rtol=0.5)
            assert s["convergence"][suffix.replace("_", "/")]["curve"] == "held-out loss"
    (tmp_path / "which_algorithm.png").unlink()
    which_algorithm.plot(results, tmp_path)
    assert (tmp_path / "which_algorithm.png").exists()
    assert (tmp_path / "which_algorithm_supplement.png").exists()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="depths"):
        which_algorithm.Config(depths=(2, 2))
    with pytest.raises(ValueError, match="baseline_kinds"):
        which_algorithm.Config(baseline_kinds=("ols", "gd"))
    with pytest.raises(ValueError, match="ridge_lambdas"):
        which_algorithm.Config(ridge_lambdas=(0.0,))
