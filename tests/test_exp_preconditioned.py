"""End-to-end quick runs of the preconditioned-GD and covariate-shift studies.

The math: docs/theory.md §5, §6."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_config_matches
from icl_toy.experiments import covariate_shift, preconditioned_gd

from icl_toy.analysis import metrics
from icl_toy.core.models import ModelConfig
from icl_toy.runs.results import load_results

ROOT = Path(__file__).resolve().parents[1]


def test_r_squared_definition():
    gamma_star = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert float(metrics.r_squared(gamma_star, gamma_star)) == 1.0
    # mean(Γ*) = 1, so ||Γ* − mean||² = 0 + 1 + 1 + 4 = 6; a 0.5 error in one entry costs 0.25.
    off = gamma_star + np.array([[0.5, 0.0], [0.0, 0.0]])
    assert float(metrics.r_squared(off, gamma_star)) == pytest.approx(1 - 0.25 / 6)


def test_preconditioned_gd_quick_end_to_end(tmp_path):
    preconditioned_gd.main(["--quick", "--out", str(tmp_path)])
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"preconditioned_gd.{ext}").stat().st_size > 0
    results = load_results(tmp_path, "preconditioned_gd")
    s = results.summary
    num_seeds = s["config"]["train"]["num_seeds"]
    d = s["config"]["task"]["d"]
    for key in ("gamma_fitted", "gamma_star", "r2", "trained_loss", "closed_form_risk"):
        assert key in s
    assert np.asarray(s["gamma_fitted"]).shape == (num_seeds, d, d)
    assert len(s["r2"]) == len(s["trained_loss"]) == num_seeds
    # Even 300 steps find most of Γ*, and the preconditioner beats the best scalar step.
    assert min(s["r2"]) > 0.9
    assert max(s["trained_loss"]) < 1.1 * s["closed_form_risk"]
    assert s["closed_form_risk"] < s["scalar_step"]["closed_form_risk"]
    assert (tmp_path / "preconditioned_gd_supplement.png").exists()


def test_covariate_shift_quick_end_to_end(tmp_path):
    covariate_shift.main(["--quick", "--out", str(tmp_path)])
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"covariate_shift.{ext}").stat().st_size > 0
    results = load_results(tmp_path, "covariate_shift")
    s = results.summary
    lengths, scales = s["test_lengths"], s["shift_scales"]
    num_seeds = s["config"]["train"]["num_seeds"]
    assert np.asarray(s["lsa_empirical"]).shape == (num_seeds, len(lengths), len(scales))
    for key in ("lsa_closed_form", "ols_empirical", "ridge_empirical", "ols_closed_form"):
        assert np.asarray(s[key]).shape == (len(lengths), len(scales))
    closed = np.asarray(s["lsa_closed_form"])
    empirical = np.asarray(s["lsa_empirical"]).mean(axis=0)
    # The quick model is trained for 300 steps only: a loose agreement with the closed form.
    np.testing.assert_allclose(empirical, closed, rtol=0.25)
    # The headline: at the longest prompts the LSA stays above its positive limit; OLS does not.
    assert np.all(np.asarray(s["lsa_limit_closed_form"]) > 0)
    assert np.all(empirical[-1] > 10 * np.asarray(s["ols_empirical"])[-1])
    assert (tmp_path / "covariate_shift_supplement.png").exists()


def test_configs_reject_what_the_closed_forms_do_not_cover():
    with pytest.raises(ValueError, match="one layer"):
        dataclasses.replace(preconditioned_gd.get_config(), model=ModelConfig(num_layers=2))
    with pytest.raises(ValueError, match="gaussian"):
        dataclasses.replace(
            preconditioned_gd.get_config(),
            task=dataclasses.replace(
                preconditioned_gd.get_config().task, inputs="uniform", input_cov=None
            ),
        )
    with pytest.raises(ValueError, match="d \\+ 1"):
        dataclasses.replace(covariate_shift.get_config(), test_lengths=(5, 10))
    with pytest.raises(ValueError, match="init"):
        dataclasses.replace(covariate_shift.get_config(), model=ModelConfig(init="zeros"))


@pytest.mark.parametrize("module", [preconditioned_gd, covariate_shift])
def test_committed_figure_comes_from_the_current_full_config(module):
    """figures/NAME.json must be a run of today's full config (else rerun it)."""
    saved = json.loads((ROOT / "figures" / f"{module.NAME}.json").read_text())
    assert_config_matches(saved["config"], module.get_config(quick=False))


@pytest.mark.parametrize("module", [preconditioned_gd, covariate_shift])
def test_committed_full_run_shows_the_claims(module):
    """The issue's must-show numbers, read from the committed full run."""
    s = json.loads((ROOT / "figures" / f"{module.NAME}.json").read_text())
    if module is preconditioned_gd:
        assert len(s["r2"]) >= 5
        assert min(s["r2"]) >= 0.99
        relative = np.asarray(s["trained_loss"]) / s["closed_form_risk"] - 1
        assert np.all(np.abs(relative) <= 0.02), relative
    else:
        empirical = np.asarray(s["lsa_empirical"]).mean(axis=0)
        relative = empirical / np.asarray(s["lsa_closed_form"]) - 1
        assert np.all(np.abs(relative) <= 0.03), relative
