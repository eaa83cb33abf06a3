"""End-to-end quick run of the momentum-attention experiment, and its config checks."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from helpers import assert_config_matches
from icl_toy.experiments import momentum_attention

from icl_toy.runs.results import load_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_momentum_attention_quick_end_to_end(tmp_path):
    """~1.5 min: the quick config still compiles 7 training runs (3 variants x K = 1, 2 + 1)."""
    momentum_attention.main(["--quick", "--out", str(tmp_path), "--quiet"])
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"momentum_attention.{ext}").stat().st_size > 0
    results = load_results(tmp_path, "momentum_attention")
    s = results.summary
    config = momentum_attention.get_config(quick=True)
    for k in config.depths:
        entry = s["per_K"][f"K{k}"]
        for variant in momentum_attention.VARIANTS:
            stats = entry[variant]
            assert len(stats["final_loss"]) == config.train.num_seeds
            assert stats["low"] <= stats["mean"] <= stats["high"]
            # Even the quick run learns: every seed ends below its held-out loss at step 0.
            curve = results.arrays[f"eval_loss_{variant}_K{k}"]
            np.testing.assert_allclose(curve[:, -1], stats["final_loss"], rtol=1e-6)
            assert np.all(curve[:, -1] < curve[:, 0]), (k, variant, curve)
        mu = entry["token_momentum"]["learned_momentum"]
        assert all(0 < v < 1 for v in mu)
        for variant in momentum_attention.MOMENTUM_VARIANTS:
            assert "significant" in entry[variant]["difference_vs_plain"]
        assert set(entry["tuned_learners"]) == set(config.fit_learners)
    # Depth momentum cannot act in one layer: β gets no gradient and the runs are identical.
    k1 = s["per_K"]["K1"]
    np.testing.assert_allclose(k1["depth_momentum"]["final_loss"], k1["plain"]["final_loss"], 1e-5)
    assert k1["depth_momentum"]["learned_momentum"] == [config.beta_init] * 2
    # The causal readout at the query equals the trained model's held-out loss there.
    position = results.arrays["position_trained_causal"]
    assert position.shape == (config.train.num_seeds, config.task.n_context + 1)
    np.testing.assert_allclose(position[:, -1], k1["plain"]["final_loss"], rtol=1e-4)
    assert "closing_note" in s and "consistent improvement" in s["closing_note"]
    # The figure can be redrawn from saved results alone.
    (tmp_path / "momentum_attention.png").unlink()
    momentum_attention.plot(results, tmp_path)
    assert (tmp_path / "momentum_attention.png").exists()
    assert (tmp_path / "momentum_attention_supplement.png").exists()


def test_config_validation():
    config = momentum_attention.get_config()
    with pytest.raises(ValueError, match="seeds"):
        dataclasses.replace(config, train=dataclasses.replace(config.train, num_seeds=1))
    with pytest.raises(ValueError, match="sweep_depth"):
        dataclasses.replace(config, sweep_depth=7)
    with pytest.raises(ValueError, match="μ"):
        dataclasses.replace(config, sweep_mu=(1.0,))
    with pytest.raises(ValueError, match="heavy_ball"):
        dataclasses.replace(config, fit_learners=("gd",))


def test_committed_full_run():
    """figures/momentum_attention.* must be a run of today's full config (else rerun it);
    tests/test_figures.py redraws its figures."""
    saved = json.loads((ROOT / "figures" / "momentum_attention.json").read_text())
    assert_config_matches(saved["config"], momentum_attention.get_config(quick=False))


def test_owns_its_hypothesis():
    (hypothesis,) = momentum_attention.HYPOTHESES
    assert hypothesis.name == "momentum_attention"
    assert [c.statistic for c in hypothesis.criteria] == ["momentum_minus_plain_loss"]
    config = hypothesis.get_config(True)
    assert config.train.num_seeds == 3 and config.num_layers == 2
    with pytest.raises(ValueError, match="mu_init"):
        dataclasses.replace(config, mu_init=1.0)


def test_committed_closing_note_says_what_its_numbers_say():
    """The generated sentence is the one the saved per-K entries give, and it calls the
    claim held only when every momentum difference that can act is significantly below 0."""
    saved = json.loads((ROOT / "figures" / "momentum_attention.json").read_text())
    per_k = saved["per_K"]
    assert saved["closing_note"] == momentum_attention.closing_note(per_k)
    lower = all(
        entry[variant]["difference_vs_plain"]["significant"]
        and entry[variant]["difference_vs_plain"]["mean"] < 0
        for k, entry in per_k.items()
        for variant in momentum_attention.MOMENTUM_VARIANTS
        if (variant, k) != ("depth_momentum", "K1")
    )
    verdict = "holds here:" if lower else "does not hold here: it would need"
    assert verdict in saved["closing_note"]


def _t_interval(values):
    """Mean and 95% Student-t interval, written out here independently of the library."""
    values = np.asarray(values, dtype=float)
    half = scipy.stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return values.mean(), values.mean() - half, values.mean() + half


def test_committed_statistics_recompute_from_the_per_seed_values():
    """Every interval of the committed per-K entries, over all seeds and over the converged
    ones (pairs where both runs converged, for the differences), follows from the saved
    per-seed final losses and the saved convergence records."""
    saved = json.loads((ROOT / "figures" / "momentum_attention.json").read_text())
    records = saved["convergence"]
    for k, entry in saved["per_K"].items():
        converged = {
            v: np.array([r["converged"] for r in records[f"{v}_{k}"]["per_seed"]])
            for v in momentum_attention.VARIANTS
        }
        plain = np.array(entry["plain"]["final_loss"])
        for variant in momentum_attention.VARIANTS:
            stats, loss = entry[variant], np.array(entry[variant]["final_loss"])
            recomputed = [
                (stats, loss),
                (stats["converged_loss"], loss[converged[variant]]),
            ]
            if variant in momentum_attention.MOMENTUM_VARIANTS:
                both = converged[variant] & converged["plain"]
                recomputed += [
                    (stats["difference_vs_plain"], loss - plain),
                    (stats["difference_vs_plain_converged"], (loss - plain)[both]),
                ]
            for record, values in recomputed:
                if values.size < 2:  # no interval from fewer than 2 seeds
                    assert record is None, (k, variant)
                    continue
                assert record["n"] == values.size, (k, variant)
                if np.ptp(values) == 0:  # depth momentum at K = 1 is plain: no spread
                    np.testing.assert_allclose([record["low"], record["high"]], values[0])
                    continue
                expected = _t_interval(values)
                got = (record["mean"], record["low"], record["high"])
                np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
