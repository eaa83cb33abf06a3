"""End-to-end quick run of the which-algorithm study (Akyürek et al., docs/theory.md §3)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from icl_toy.experiments import which_algorithm

from icl_toy.analysis.probes import PROBE_KINDS, TARGETS
from icl_toy.runs.results import load_results

ROOT = Path(__file__).resolve().parents[1]


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


def test_depth_phases_train_each_depth_at_its_own_batch_where_given():
    full = which_algorithm._depth_phases_config(0.0)(False)
    by_depth = full.train_by_depth()
    assert list(by_depth) == list(full.depths)
    assert [t.batch_size for t in by_depth.values()] == list(full.batch_sizes)
    # Only the batch differs between depths: the recipe is the study's at every depth.
    assert {dataclasses.replace(t, batch_size=1) for t in by_depth.values()} == {
        dataclasses.replace(full.train, batch_size=1)
    }
    quick = which_algorithm._depth_phases_config(0.5)(True)
    assert {t.batch_size for t in quick.train_by_depth().values()} == {quick.train.batch_size}
    with pytest.raises(ValueError, match="batch_sizes needs one entry per depth"):
        which_algorithm.DepthPhasesConfig(batch_sizes=(128,))
    with pytest.raises(ValueError, match="batch_size"):
        which_algorithm.DepthPhasesConfig(batch_sizes=(128, 0))


def _t_interval(values):
    """Mean and 95% Student-t interval, written out here to check the saved records."""
    values = np.asarray(values, float)
    half = scipy.stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean(), values.mean() - half, values.mean() + half


def test_committed_summaries_follow_from_the_saved_per_seed_values():
    """Every depth's model loss and SPD to the reference learners, as summarised in the
    committed JSON, recomputed from the per-seed values; each seed's convergence record
    reads the saved held-out curve, whose last point is the seed's final loss."""
    results = load_results(ROOT / "figures", which_algorithm.NAME)
    s, a = results.summary, results.arrays
    for i, setting in enumerate(s["settings"]):
        for entry in setting["depths"]:
            suffix = f"noise{i}_depth{entry['depth']}"
            checks = {"model": (entry["model_half_mse"], entry["model_half_mse_per_seed"])}
            for label, record in entry["spd_to"].items():
                if record is not None:
                    checks[label] = (record, a[f"spd_to_{label}_{suffix}"])
            for label, (record, per_seed) in checks.items():
                saved = [record[k] for k in ("mean", "low", "high")]
                np.testing.assert_allclose(saved, _t_interval(per_seed), rtol=1e-9, err_msg=label)
            convergence = s["convergence"][f"noise{i}/depth{entry['depth']}"]
            assert convergence["curve"] == "held-out loss"
            finals = [seed["final_loss"] for seed in convergence["per_seed"]]
            np.testing.assert_allclose(finals, a[f"eval_loss_{suffix}"][:, -1], rtol=1e-12)
