"""The alignment API: compare() and the closest-algorithm table (docs/theory.md §1, §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import alignment, baselines
from icl_toy.core import learners, predictors
from icl_toy.core.constructions import gd_weights
from icl_toy.core.learners import optimal_gd_eta
from icl_toy.core.losses import half_mse
from icl_toy.core.models import LSATransformer
from icl_toy.core.tasks import TaskConfig, sample_batch, von_oswald_preset

TASK = TaskConfig(d=4, n_context=6, inputs="gaussian", noise_std=0.3)


def test_a_learner_compared_with_itself(x64):
    ridge = learners.ridge(0.5)
    result = alignment.compare(ridge, ridge, TASK, key=jax.random.key(0), num_tasks=32)
    for name in ("pred_diff", "spd", "ilwd", "model_diff"):
        assert result[name]["mean"] == 0.0, name
    assert result["cosine"]["mean"] == pytest.approx(1.0, abs=1e-7)  # the 1e-8 in the norms
    assert result["half_mse_a"] == result["half_mse_b"]
    assert result["spd"]["over"] == "tasks" and result["spd"]["n"] == 32
    # The task-averaged losses are half_mse on the same held-out prompts.
    prompts = sample_batch(jax.random.split(jax.random.key(0))[0], TASK, 32)
    preds = jax.vmap(ridge)(prompts)
    expected = float(half_mse(preds, prompts.y_q))
    assert result["half_mse_a"]["mean"] == pytest.approx(expected, rel=1e-12)
    assert result["half_mse_a"]["low"] < expected < result["half_mse_a"]["high"]


def test_seeded_predictor_against_independent_gd_formulas(x64):
    """Seeds = GD constructions with η_s; against GD(η_b), ŷ_a − ŷ_b = (η_s − η_b) x'ᵀh."""
    model = LSATransformer(d=TASK.d)
    etas = [0.5, 1.0, 2.0]
    params_S = jax.tree.map(
        lambda *a: jnp.stack(a), *(gd_weights(model, eta, TASK.n_context) for eta in etas)
    )
    seeded = predictors.seeded_model_predictor(model, params_S)
    key, num_tasks, num_probes = jax.random.key(1), 16, 9
    result = alignment.compare(
        seeded, learners.gd(1.0), TASK, key=key, num_tasks=num_tasks, num_probes=num_probes
    )
    key_tasks, key_probes = jax.random.split(key)
    prompts = sample_batch(key_tasks, TASK, num_tasks)
    probes = alignment.sample_probes(key_probes, TASK, num_tasks, num_probes)
    h_BxD = np.einsum("bnd,bn->bd", prompts.x, prompts.y[..., 0]) / TASK.n_context
    probe_h_BxP = np.einsum("bpd,bd->bp", probes, h_BxD)
    for s, eta in enumerate(etas):
        ilwd = (eta - 1.0) ** 2 * np.mean(np.sum(h_BxD**2, axis=-1)) / TASK.d
        spd = (eta - 1.0) ** 2 * np.mean(probe_h_BxP**2) / TASK.d
        model_diff = abs(eta - 1.0) * np.mean(np.linalg.norm(h_BxD, axis=-1))
        assert result["ilwd"]["per_seed"][s] == pytest.approx(ilwd, rel=1e-10, abs=1e-20)
        assert result["spd"]["per_seed"][s] == pytest.approx(spd, rel=1e-10, abs=1e-20)
        assert result["model_diff"]["per_seed"][s] == pytest.approx(
            model_diff, rel=1e-10, abs=1e-14
        )
    assert result["spd"]["over"] == "seeds" and result["spd"]["n"] == 3
    assert result["cosine"]["mean"] == pytest.approx(1.0, abs=1e-6)  # parallel sensitivities
    assert result["spd"]["tasks"]["n"] == num_tasks


def test_gd_construction_is_closest_to_one_gd_step_with_its_eta(x64):
    task = von_oswald_preset()
    eta = optimal_gd_eta(task)  # 200/33; `baseline_family` uses the same closed form at K = 1
    model = LSATransformer(d=task.d)
    construction = predictors.model_predictor(model, gd_weights(model, eta, task.n_context))
    family = baselines.baseline_family(
        task, key=jax.random.key(2), max_steps=1, ridge_lambdas=(1.0,)
    )
    rows = alignment.closest_algorithm(
        construction, task, family, key=jax.random.key(3), num_tasks=64
    )
    assert rows[0]["name"] == f"gd(K=1, η={eta:.3g})"
    assert rows[0]["spd"] < 1e-24 and rows[0]["ilwd"] < 1e-24
    assert rows[1]["spd"] > 1e-4, "another baseline is indistinguishable from one GD step"
    assert [r["spd"] for r in rows] == sorted(r["spd"] for r in rows)
    for row in rows:  # the interval record of the sorted-by metric, over the 64 tasks
        assert row["interval"]["mean"] == row["spd"]
        assert (row["interval"]["method"], row["interval"]["n"]) == ("t", 64)
        assert row["interval"]["over"] == "tasks"
        assert row["interval"]["low"] <= row["spd"] <= row["interval"]["high"]
    table = alignment.format_table(rows)
    assert rows[0]["name"] in table and "ols" in table and "knn(k=3)" in table
    assert max(rows, key=lambda r: r["cosine"])["name"] == rows[0]["name"]


def test_bad_arguments_raise():
    ridge = learners.ridge(0.1)
    with pytest.raises(ValueError, match="num_probes"):
        alignment.compare(ridge, ridge, TASK, key=jax.random.key(0), num_tasks=4, num_probes=2)
    with pytest.raises(ValueError, match="num_tasks"):
        alignment.compare(ridge, ridge, TASK, key=jax.random.key(0), num_tasks=1)
    with pytest.raises(ValueError, match="sort_by"):
        alignment.closest_algorithm(ridge, TASK, {"r": ridge}, key=jax.random.key(0), sort_by="x")
    model = LSATransformer(d=TASK.d)
    params = model.init(jax.random.key(0), jnp.zeros((TASK.n_context + 1, TASK.d + 1)))
    two = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    three = jax.tree.map(lambda a: jnp.stack([a, a, a]), params)
    with pytest.raises(ValueError, match="different sizes"):
        alignment.compare(
            predictors.seeded_model_predictor(model, two),
            predictors.seeded_model_predictor(model, three),
            TASK,
            key=jax.random.key(0),
            num_tasks=4,
        )
