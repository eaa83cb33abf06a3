"""Depth-sweep alignment summaries (icl_toy.analysis.depth_alignment) and the depth sweep."""

import dataclasses

import jax
import numpy as np
import pytest

from icl_toy.analysis import alignment, depth_alignment
from icl_toy.analysis.stats import mean_ci
from icl_toy.core import learners, predictors
from icl_toy.core.models import ModelConfig
from icl_toy.core.tasks import TaskConfig
from icl_toy.training.depth_sweep import chunk_means, train_depths
from icl_toy.training.train import TrainConfig


def _per_seed(spd_by_name: dict[str, list[float]]) -> dict:
    """Synthetic `per_seed_metrics` values: the given SPDs, every other metric from them."""
    return {
        name: {
            "half_mse_a": np.array([0.5, 0.7]),
            "half_mse_b": np.full(2, 10.0 + i),
            "spd": np.array(spd),
            "ilwd": 1 - np.array(spd),  # so the order by ILWD is the reverse
            "cosine": 1 - np.array(spd),
        }
        for i, (name, spd) in enumerate(spd_by_name.items())
    }


PER_SEED = _per_seed({"ols": [0.3, 0.1], "ridge(λ=0.25)": [0.1, 0.2], "gd": [0.9, 0.8]})


def test_closest_rows_sort_by_the_mean_and_hold_t_intervals_over_seeds():
    rows = depth_alignment.closest_rows(PER_SEED)
    assert [row["name"] for row in rows] == ["ridge(λ=0.25)", "ols", "gd"]  # means .15, .2, .85
    ridge = rows[0]
    assert ridge["spd"] == mean_ci(np.array([0.1, 0.2]))
    assert ridge["ilwd"] == mean_ci(1 - np.array([0.1, 0.2]))
    assert ridge["half_mse"] == 11.0 and ridge["cosine"] == pytest.approx(0.85)
    by_cosine = depth_alignment.closest_rows(PER_SEED, sort_by="cosine", intervals=("cosine",))
    assert [row["name"] for row in by_cosine] == ["ridge(λ=0.25)", "ols", "gd"]  # larger first
    with pytest.raises(ValueError, match="sort_by"):
        depth_alignment.closest_rows(PER_SEED, sort_by="cosine")


def test_ridge_fit_names_the_grid_lambda_of_least_spd_per_seed_and_on_average():
    fit = depth_alignment.ridge_fit({0.0: np.array([0.3, 0.1]), 0.25: np.array([0.1, 0.2])})
    assert fit["lambdas"] == [0.0, 0.25]
    np.testing.assert_allclose(fit["spd_mean"], [0.2, 0.15])
    assert fit["best_lambda"] == 0.25
    assert fit["best_lambda_per_seed"] == [0.25, 0.0]


def test_depth_summary_reads_references_and_the_ridge_grid():
    references = {"gd": "gd", "ols": "ols", "ridge_bayes": None}
    ridge_names = {0.0: "ols", 0.25: "ridge(λ=0.25)"}
    summary = depth_alignment.depth_summary(PER_SEED, references, ridge_names)
    assert summary["model_half_mse"] == mean_ci(np.array([0.5, 0.7]))
    assert summary["model_half_mse_per_seed"] == [0.5, 0.7]
    assert summary["closest_by_spd"]["name"] == "ridge(λ=0.25)"
    assert summary["closest_by_ilwd"]["name"] == "gd"  # ILWD means .8, .85, .15
    assert summary["spd_to"]["gd"] == mean_ci(np.array([0.9, 0.8]))
    assert summary["spd_to"]["ridge_bayes"] is None
    assert summary["ridge_fit"]["best_lambda"] == 0.25


def test_reference_family_keeps_the_kinds_and_names_the_bayes_ridge():
    task = TaskConfig(d=4, n_context=8, inputs="gaussian", noise_std=0.5)
    family, references, ridge_names = depth_alignment.reference_family(
        task,
        ("ols", "ridge", "gd"),
        key=jax.random.key(0),
        max_steps=1,
        ridge_lambdas=(0.25, 1.0),
        num_tune_tasks=16,
    )
    eta = learners.tuned_gd_eta(task, 1, key=jax.random.key(0))
    assert set(family) == {
        "ols",
        "ridge(λ=0.25)",
        "ridge(λ=1)",
        "ridge(Bayes λ=0.25)",
        references["gd"],
    }
    assert references["gd"] == f"gd(K=1, η={eta:.3g})"
    assert references["ridge_bayes"] == "ridge(λ=0.25)" == ridge_names[0.25]
    assert ridge_names[0.0] == "ols" == references["ols"]
    _, off_grid, _ = depth_alignment.reference_family(
        task,
        ("ols", "ridge", "gd"),
        key=jax.random.key(0),
        max_steps=1,
        ridge_lambdas=(1.0,),
        num_tune_tasks=16,
    )
    assert off_grid["ridge_bayes"] is None


def test_depth_phase_statistics_contrast_the_shallowest_and_deepest_model():
    names = ("gd", "ols", "ridge(0.25)", "ridge(1)")
    shallow = _per_seed({"gd": [0.1, 0.2], "ols": [0.5, 0.4], "ridge(0.25)": [0.3, 0.3]})
    shallow |= _per_seed({"ridge(1)": [0.6, 0.6]})
    deep = _per_seed({"gd": [0.7, 0.9], "ols": [0.2, 0.1], "ridge(0.25)": [0.05, 0.3]})
    deep |= _per_seed({"ridge(1)": [0.4, 0.2]})
    values = depth_alignment.depth_phase_statistics({1: shallow, 3: deep}, names, "ridge(0.25)")
    np.testing.assert_allclose(values["shallow_spd_gd_minus_spd_ols"], [-0.4, -0.2])
    np.testing.assert_allclose(values["deep_spd_ols_minus_spd_gd"], [-0.5, -0.8])
    np.testing.assert_allclose(values["deep_minus_shallow_spd_ols"], [-0.3, -0.3])
    # Bayes ridge minus the least of OLS and ridge(1): (0.05 - 0.2, 0.3 - 0.1).
    np.testing.assert_allclose(values["deep_spd_bayes_ridge_minus_best_other"], [-0.15, 0.2])
    np.testing.assert_array_equal(values["spd_depth3_ridge(1)"], [0.4, 0.2])
    assert set(values) >= {"loss_depth1", "loss_depth3", "spd_depth1_gd"}
    noiseless = depth_alignment.depth_phase_statistics({1: shallow, 3: deep}, names, None)
    assert "deep_spd_bayes_ridge_minus_best_other" not in noiseless


def test_phase_baselines_name_the_bayes_ridge_and_require_it_on_the_grid():
    key, noisy = jax.random.key(0), TaskConfig(d=2, n_context=4, noise_std=0.5)
    names, bayes = depth_alignment.phase_baselines(noisy, (0.25, 1.0), key=key)
    assert list(names) == ["gd", "ols", "ridge(0.25)", "ridge(1)"] and bayes == "ridge(0.25)"
    assert depth_alignment.phase_baselines(TaskConfig(d=2, n_context=4), (1.0,), key=key)[1] is None
    with pytest.raises(ValueError, match="Bayes"):
        depth_alignment.phase_baselines(noisy, (1.0,), key=key)


def test_chunk_means_average_consecutive_steps_and_train_depths_sweeps_num_layers():
    loss_SxT = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(chunk_means(loss_SxT, 3), [[1.0, 4.0], [7.0, 10.0]])
    deep = ModelConfig(kind="softmax_transformer", num_layers=2)
    with pytest.raises(ValueError, match="num_layers"):
        train_depths(TaskConfig(d=2, n_context=4), (1,), deep, TrainConfig(steps=1, eval_every=1))
    one = TrainConfig(steps=1, eval_every=1)
    with pytest.raises(ValueError, match=r"no recipe for depths \[2\]"):
        train_depths(TaskConfig(d=2, n_context=4), (1, 2), ModelConfig(), {1: one})


@pytest.mark.slow  # compiles two softmax transformers' training and evaluation
def test_per_depth_metrics_pair_every_depth_with_the_same_tasks():
    """Two depths trained two and three steps (one recipe each): each evaluated against OLS
    on the same held-out tasks."""
    task = TaskConfig(d=2, n_context=4, inputs="gaussian")
    train_cfg = TrainConfig(steps=2, batch_size=4, eval_every=1, num_seeds=2)
    sizes = ModelConfig(kind="softmax_transformer", embed_dim=8, num_heads=2, mlp_hidden=8)
    recipes = {1: train_cfg, 2: dataclasses.replace(train_cfg, steps=3)}
    trained = train_depths(task, (1, 2), sizes, recipes)
    assert list(trained) == [1, 2]
    leaves = {depth: len(jax.tree.leaves(result.params)) for depth, (_, result) in trained.items()}
    assert leaves[2] > leaves[1]  # one more block of parameters
    assert [result.train_loss.shape for _, result in trained.values()] == [(2, 2), (2, 3)]
    m = depth_alignment.per_depth_metrics(
        trained, task, {"ols": learners.ols}, key=jax.random.key(1), num_tasks=8
    )
    # OLS is evaluated on the same tasks for both depths: its loss does not depend on depth.
    np.testing.assert_array_equal(m[1]["ols"]["half_mse_b"], m[2]["ols"]["half_mse_b"])
    model, result = trained[2]
    direct = alignment.per_seed_metrics(
        predictors.seeded_model_predictor(model, result.params),
        task,
        {"ols": learners.ols},
        key=jax.random.key(1),
        num_tasks=8,
    )
    np.testing.assert_array_equal(m[2]["ols"]["spd"], direct["ols"]["spd"])
