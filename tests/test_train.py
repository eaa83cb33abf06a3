import dataclasses

import jax
import numpy as np
import pytest

from icl_toy.constructions import gd_weights
from icl_toy.models import LSATransformer
from icl_toy.tasks import sample_batch, von_oswald_preset
from icl_toy.train import (
    ModelConfig,
    TrainConfig,
    batch_loss,
    batch_predict,
    make_model,
    train,
)

TINY = TrainConfig(steps=300, batch_size=1024, eval_every=100, num_seeds=2, learning_rate=3e-3)


@pytest.fixture(scope="module")
def tiny_run():
    task = von_oswald_preset()
    model = make_model(task, ModelConfig())
    held_out = sample_batch(jax.random.key(123), task, 512)
    result = train(model, task, TINY, eval_fn=lambda p: {"loss": batch_loss(model, p, held_out)})
    return model, task, result


def test_training_shapes_and_progress(tiny_run):
    _, _, result = tiny_run
    assert result.train_loss.shape == (2, 300)
    np.testing.assert_array_equal(result.eval_steps, [0, 100, 200, 300])
    assert result.eval_metrics["loss"].shape == (2, 4)
    assert result.params["params"]["w_q"].shape == (2, 1, 1, 11, 11)
    assert np.isfinite(result.train_loss).all()
    # From the zero-predictor loss (≈ 0.417) most of the way to one GD step (≈ 0.206).
    assert (result.eval_metrics["loss"][:, 0] > 0.38).all()
    assert (result.eval_metrics["loss"][:, -1] < 0.3).all()
    # Seeds are different runs.
    assert not np.allclose(result.train_loss[0], result.train_loss[1])


def test_training_is_deterministic_and_seed_zero_matches_a_one_seed_run(tiny_run):
    model, task, result = tiny_run
    again = train(model, task, TINY)
    np.testing.assert_array_equal(again.train_loss, result.train_loss)
    single = train(model, task, dataclasses.replace(TINY, num_seeds=1))
    # vmap over seeds may reorder float reductions, nothing more.
    np.testing.assert_allclose(single.train_loss[0], result.train_loss[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("cls", "change", "match"),
    [
        (TrainConfig, {"learning_rate": 0.0}, "learning_rate must be > 0"),
        (TrainConfig, {"learning_rate": -1e-3}, "learning_rate must be > 0"),
        (TrainConfig, {"steps": 0}, "steps must be"),
        (TrainConfig, {"num_seeds": 0}, "num_seeds"),
        (TrainConfig, {"batch_size": 0}, "batch_size"),
        (TrainConfig, {"eval_every": 7}, "must divide"),
        (TrainConfig, {"adam_b2": 1.0}, "adam_b2"),
        (ModelConfig, {"num_layers": 0}, "num_layers must be"),
        (ModelConfig, {"num_heads": 0}, "num_heads"),
        (ModelConfig, {"key_size": 0}, "key_size"),
    ],
)
def test_bad_configs_raise_before_compile(cls, change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(cls(), **change)


def test_batch_predict_rejects_params_of_another_model():
    model = LSATransformer(d=10)
    prompts = sample_batch(jax.random.key(0), von_oswald_preset(), 2)
    wrong = gd_weights(LSATransformer(d=4), 1.0, 10)
    with pytest.raises(ValueError, match="expects"):
        batch_predict(model, wrong, prompts)
