"""Null models: untrained and permuted weights stand in for a recorded training run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.tasks import von_oswald_preset
from icl_toy.runs.hypotheses import Criterion, caveats, judge, judge_null
from icl_toy.training import nulls
from icl_toy.training.train import TrainConfig, make_trainer, seed_keys, train

CFG = TrainConfig(steps=20, batch_size=32, eval_every=10, num_seeds=2)


def test_permute_entries_keeps_each_seeds_values_and_moves_them():
    params = {"a": jnp.arange(24.0).reshape(2, 3, 4), "b": {"c": jnp.arange(10.0).reshape(2, 5)}}
    shuffled = nulls.permute_entries(params, jax.random.key(0))
    for before, after in zip(jax.tree.leaves(params), jax.tree.leaves(shuffled), strict=True):
        assert after.shape == before.shape
        for s in range(before.shape[0]):
            np.testing.assert_array_equal(np.sort(after[s].ravel()), before[s].ravel())
        assert not np.array_equal(after, before)
    again = nulls.permute_entries(params, jax.random.key(0))
    assert jax.tree.all(jax.tree.map(np.array_equal, shuffled, again))


def test_replacing_returns_the_recorded_run_with_null_params_without_training():
    task = von_oswald_preset()
    model = make_model(task, ModelConfig())
    with nulls.recording() as recorded:
        result = train(model, task, CFG)
    assert len(recorded) == 1 and recorded[0] is result
    init_params = (
        make_trainer(model, task, CFG, None)
        .init(seed_keys(CFG), jnp.full(CFG.num_seeds, CFG.learning_rate))[0]
        .params
    )
    # The stand-in comes back without training: the recorded losses, the initial params.
    with nulls.replacing("untrained", recorded, jax.random.key(1)):
        untrained = train(model, task, CFG)
    np.testing.assert_array_equal(untrained.train_loss, result.train_loss)
    for got, want in zip(
        jax.tree.leaves(untrained.params), jax.tree.leaves(init_params), strict=True
    ):
        np.testing.assert_array_equal(got, np.asarray(want))
    with nulls.replacing("permuted", recorded, jax.random.key(1)):
        permuted = train(model, task, CFG)
        with pytest.raises(RuntimeError, match="same train calls"):
            train(model, task, CFG)  # a second call was never recorded
    for got, want in zip(
        jax.tree.leaves(permuted.params), jax.tree.leaves(result.params), strict=True
    ):
        np.testing.assert_array_equal(np.sort(got, axis=None), np.sort(want, axis=None))
    with pytest.raises(ValueError, match="unknown null"):
        with nulls.replacing("shuffled", recorded, jax.random.key(1)):
            pass


def test_a_null_is_beyond_only_when_the_trained_interval_clears_it():
    criterion = Criterion("cos", "a cosine", ">", 0.9)
    trained = judge(criterion, np.array([0.99, 0.995, 0.992, 0.994]))
    far = judge_null(criterion, trained, np.array([0.1, 0.2, 0.15, 0.12]))
    near = judge_null(criterion, trained, np.array([0.99, 0.996, 0.991, 0.993]))
    broken = judge_null(criterion, trained, np.array([0.1, np.nan, 0.1, 0.1]))
    assert far["beyond"] and not near["beyond"] and not broken["beyond"]
    assert far["interval"]["n"] == 4 and np.isnan(broken["interval"]["mean"])
    # "<": the trained interval must lie below the null's.
    less = Criterion("loss", "a loss", "<", 1.5)
    trained_loss = judge(less, np.array([0.99, 0.995, 0.992, 0.994]))
    assert judge_null(less, trained_loss, np.array([2.0, 2.1, 2.2, 2.05]))["beyond"]
    assert not judge_null(less, trained_loss, np.array([0.5, 0.99, 1.4, 0.8]))["beyond"]
    trained["nulls"] = {"untrained": far, "permuted": near}
    notes = caveats([trained], {})
    assert "cos is not beyond its permuted null" in notes
    assert not any("untrained" in note for note in notes)
