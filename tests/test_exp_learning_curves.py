"""End-to-end quick run of the learning-curves study (experiments/learning_curves.py)."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from icl_toy.experiments import learning_curves

from icl_toy.analysis.learning_curves import Shift
from icl_toy.core.tasks import sample_batch
from icl_toy.runs.plotting import drawn_figures
from icl_toy.runs.results import load_results
from icl_toy.training import tuning

ROOT = Path(__file__).resolve().parents[1]


def test_learning_curves_quick_end_to_end(tmp_path):
    learning_curves.main(["--quick", "--out", str(tmp_path)])
    for ext in ("png", "pdf", "json", "npz"):
        assert (tmp_path / f"learning_curves.{ext}").stat().st_size > 0
    results = load_results(tmp_path, "learning_curves")
    s, a = results.summary, results.arrays
    config = learning_curves.get_config(quick=True)
    laws, names, lengths = s["laws"], s["learners"], list(a["lengths"])
    assert laws == ["in_distribution", *(shift.label for shift in config.shifts)]
    assert a["mean"].shape == (len(laws), len(names), len(config.lengths))
    assert lengths == list(config.lengths)
    curves = s["curves"]["in_distribution"]
    n_train = config.task.n_context
    i_n, i_max = lengths.index(n_train), len(lengths) - 1
    norm, raw = curves["LSA K=1 (normalised)"], curves["LSA K=1 (raw)"]
    assert norm["over"] == "seeds" and len(norm["per_seed"]) == config.train.num_seeds
    # At the training length the two length conventions are the same model.
    assert norm["mean"][i_n] == pytest.approx(raw["mean"][i_n], rel=1e-6)
    # Even the quick model is within 10% of one tuned GD step at N...
    assert norm["mean"][i_n] < 1.1 * curves["GD K=1"]["mean"][i_n]
    # ...and at 2N the raw layer, which steps η·n/N = 2η, is worse than the normalised one.
    assert raw["mean"][i_max] > norm["mean"][i_max]
    # OLS at n = 2N = 20 > d + 3 matches σ²d/(n − d − 1)/2 within 3 standard errors.
    ols = curves["OLS"]
    se = (
        (ols["tasks"]["high"][i_max] - ols["tasks"]["low"][i_max])
        / 2
        / scipy.stats.t.ppf(0.975, config.eval_tasks - 1)
    )
    assert abs(ols["mean"][i_max] - a["closed_ols"][0, i_max]) < 3 * se
    assert a["closed_ols"][0, i_n] == np.inf  # n = d = 10 with noise
    # k-NN has no prediction for n < k.
    knn = curves[f"{config.knn_k}-NN"]
    assert all(str(n) in knn["undefined"] for n in lengths if n < config.knn_k)
    assert (tmp_path / "learning_curves_supplement.png").exists()


def test_learning_curves_config_rejects_bad_values():
    config = learning_curves.get_config(quick=True)
    with pytest.raises(ValueError, match="condition"):
        dataclasses.replace(config, shifts=(Shift("skewed_covariance", 0.5),))
    with pytest.raises(ValueError, match="distinct"):
        dataclasses.replace(config, shifts=(Shift("input_scale", 2.0),) * 2)
    with pytest.raises(ValueError, match="increasing"):
        dataclasses.replace(config, lengths=(5, 1))
    with pytest.raises(ValueError, match="Shift"):
        dataclasses.replace(config, shifts=("input_scale",))


def test_learning_curves_gdpp_is_the_held_out_ladder_read_per_length():
    """The study's GD++ is the per-step ladder's K-th rung (`tuning.fit_ladders`, selected on
    tasks of its own), with γ̂ = Nγ so that `normalized_gamma` runs γ = γ̂/n at length n."""
    config = dataclasses.replace(
        learning_curves.get_config(quick=True),
        gdpp_steps=2,
        gdpp_fit_steps=30,
        gdpp_fit_batch=32,
        tune_tasks=200,
    )
    _, tuned = learning_curves._baselines(config)
    _, key_gdpp = jax.random.split(jax.random.fold_in(jax.random.key(config.eval_seed), 1))
    selection = sample_batch(jax.random.fold_in(key_gdpp, 1), config.task, 200)
    fit = tuning.FitConfig(30, 32, config.gdpp_fit_learning_rate)
    ladder = tuning.fit_ladders(config.task, 2, ("per_layer",), key_gdpp, fit, selection)
    rung = ladder["per_layer"][1]["gdpp"]
    np.testing.assert_array_equal(tuned["gdpp"]["eta"], rung["eta"])
    np.testing.assert_allclose(tuned["gdpp"]["gamma"], rung["gamma"] * config.task.n_context)
    # At n = N the study's learner is the rung's GD++ (γ = γ̂/N).
    gdpp = tuning.gdpp_learner
    theta = {name: jnp.asarray(rung[name]) for name in ("eta", "gamma")}
    want = tuning.learner_half_mse(gdpp, theta, selection)
    assert np.isclose(rung["held_out_loss"], float(want), rtol=1e-5)
    assert tuned["gdpp"]["held_out_loss"] == rung["held_out_loss"]


def test_learning_curves_legends_use_display_names():
    """Every learner is drawn under the name a reader knows, never the code's key."""
    results = load_results(ROOT / "figures", "learning_curves")
    with drawn_figures(learning_curves.figures, results) as figures:
        labels = [
            text.get_text()
            for fig in figures.values()
            for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
            if legend is not None
            for text in legend.get_texts()
        ]
    assert "trained LSA, K = 2" in labels and "GD++, 2 steps, tuned" in labels
    assert not [label for label in labels if "(raw)" in label or "K=" in label], labels
