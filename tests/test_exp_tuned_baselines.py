"""The committed tuned baselines: K = 1..10 at their optimum, read back from saved results."""

from pathlib import Path

import numpy as np
import pytest
from icl_toy.experiments import tuned_baselines

from icl_toy.runs.results import load_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def committed():
    return load_results(ROOT / "figures", tuned_baselines.NAME)


def test_committed_losses_never_rise_with_k_and_per_step_contains_shared(committed):
    s, a = committed.summary, committed.arrays
    assert list(a["K"]) == list(range(1, 11))
    for kind in ("per_layer", "recurrent"):
        for name in ("gd", "gdpp"):
            saved = [row[name]["selection_loss"] for row in s["by_kind"][kind]]
            np.testing.assert_allclose(a[f"{kind}_{name}_selection_loss"], saved, rtol=1e-12)
            for split in ("selection", "eval"):
                flag = bool(np.all(np.diff(a[f"{kind}_{name}_{split}_loss"]) <= 0))
                assert s["non_increasing_in_K"][f"{kind}_{name}_{split}"] == flag
        # GD is GD++ at γ = 0, and GD++ started from this K's GD: never worse.
        assert np.all(a[f"{kind}_gdpp_selection_loss"] <= a[f"{kind}_gd_selection_loss"])
    # What the construction guarantees, on the selection set: per-step never rises with K
    # and is never worse than shared scalars (which it contains).
    for name in ("gd", "gdpp"):
        assert s["non_increasing_in_K"][f"per_layer_{name}_selection"]
        per_step, shared = (a[f"{k}_{name}_selection_loss"] for k in ("per_layer", "recurrent"))
        assert np.all(per_step <= shared * (1 + 1e-6)), (name, per_step, shared)


def test_the_figure_redraws_from_the_committed_results(committed, tmp_path):
    paths = tuned_baselines.plot(committed, tmp_path)
    names = {
        f"{tuned_baselines.NAME}{part}.{ext}"
        for part in ("", "_supplement")
        for ext in ("png", "pdf")
    }
    assert {p.name for p in paths} == names
    assert all(p.stat().st_size > 0 for p in paths)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        tuned_baselines.Config(kinds=("diagonal",))
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        tuned_baselines.Config(max_steps=0)
