import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.constructions import gd_weights
from icl_toy.core.models import LSATransformer, ModelConfig, make_model
from icl_toy.core.tasks import sample_batch, von_oswald_preset
from icl_toy.training.checkpoints import Checkpoints
from icl_toy.training.train import (
    NonFiniteLossError,
    RunOptions,
    TrainConfig,
    batch_loss,
    batch_predict,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
FOUR_DEVICES = "--xla_force_host_platform_device_count=4"
TINY = TrainConfig(steps=300, batch_size=1024, eval_every=100, num_seeds=2, learning_rate=3e-3)


@pytest.fixture(scope="module")
def tiny_run():
    task = von_oswald_preset()
    model = make_model(task, ModelConfig())
    held_out = sample_batch(jax.random.key(123), task, 512)

    def eval_fn(params):
        return {"loss": batch_loss(model, params, held_out)}

    return model, task, train(model, task, TINY, eval_fn=eval_fn), eval_fn


def test_training_shapes_and_progress(tiny_run):
    _, _, result, _ = tiny_run
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


@pytest.mark.long
def test_training_is_deterministic_and_seed_zero_matches_a_one_seed_run(tiny_run):
    model, task, result, eval_fn = tiny_run
    again = train(model, task, TINY, eval_fn=eval_fn)
    np.testing.assert_array_equal(again.train_loss, result.train_loss)
    np.testing.assert_array_equal(again.eval_metrics["loss"], result.eval_metrics["loss"])
    # Without the in-scan eval the program differs, the arithmetic of training does not.
    no_eval = train(model, task, TINY)
    np.testing.assert_allclose(no_eval.train_loss, result.train_loss, rtol=1e-6, atol=1e-8)
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


SMALL = TrainConfig(steps=600, batch_size=256, eval_every=100, num_seeds=2)


def _assert_same_result(a, b):
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    for name in a.eval_metrics:
        np.testing.assert_array_equal(a.eval_metrics[name], b.eval_metrics[name])
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    """A run killed with SIGKILL mid-training and resumed ends exactly where an
    uninterrupted run ends: every batch is a function of (seed, step)."""
    ckpt_dir = tmp_path / "killed"
    script = f"""
import time
from icl_toy.core.tasks import von_oswald_preset
from icl_toy.core.models import make_model, ModelConfig
from icl_toy.training.train import RunOptions, TrainConfig, train
task = von_oswald_preset()
model = make_model(task, ModelConfig())
cfg = TrainConfig(steps=60_000, batch_size=256, eval_every=100, num_seeds=2)
train(model, task, cfg, options=RunOptions(checkpoint_dir={str(ckpt_dir)!r}, checkpoint_every=1))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until two checkpoints are complete
            done = [p for p in ckpt_dir.glob("*") if p.name.isdigit()] if ckpt_dir.exists() else []
            if len(done) >= 2:
                break
            assert proc.poll() is None, "the training subprocess died before checkpointing"
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoints within 120 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = Checkpoints(ckpt_dir).latest()
    assert 2 <= killed_at < 600, killed_at

    task = von_oswald_preset()
    model = make_model(task, ModelConfig())
    cfg = TrainConfig(steps=60_000, batch_size=256, eval_every=100, num_seeds=2)
    # Finish a shorter horizon from the killed run's checkpoint and from scratch.
    cfg = dataclasses.replace(cfg, steps=(killed_at + 2) * 100)
    resumed = train(
        model,
        task,
        cfg,
        options=RunOptions(checkpoint_dir=str(ckpt_dir), checkpoint_every=1, resume=True),
    )
    fresh = train(
        model,
        task,
        cfg,
        options=RunOptions(checkpoint_dir=str(tmp_path / "fresh"), checkpoint_every=1),
    )
    _assert_same_result(resumed, fresh)


def test_resume_of_a_finished_run_returns_it(tmp_path):
    task, model = von_oswald_preset(), make_model(von_oswald_preset(), ModelConfig())
    options = RunOptions(checkpoint_dir=str(tmp_path), checkpoint_every=2)
    first = train(model, task, SMALL, options=options)
    again = train(model, task, SMALL, options=dataclasses.replace(options, resume=True))
    _assert_same_result(first, again)


def test_nan_loss_stops_training_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    task, model = von_oswald_preset(), make_model(von_oswald_preset(), ModelConfig())
    options = RunOptions(checkpoint_dir=str(tmp_path), checkpoint_every=1)
    train(model, task, dataclasses.replace(SMALL, steps=100), options=options)
    assert Checkpoints(tmp_path).latest() == 1
    diverging = dataclasses.replace(SMALL, learning_rate=1e30, clip_norm=1e30)
    message = r"at step \d+ .*checkpoint after step 100 is kept"
    with pytest.raises(NonFiniteLossError, match=message):
        train(model, task, diverging, options=dataclasses.replace(options, resume=True))
    assert Checkpoints(tmp_path).latest() == 1


def test_run_options_are_validated():
    with pytest.raises(ValueError, match="checkpoint_dir"):
        RunOptions(resume=True)
    with pytest.raises(ValueError, match="checkpoint_every"):
        RunOptions(checkpoint_every=0)


def test_learning_rate_grid_trains_in_one_call_and_matches_single_runs():
    task, model = von_oswald_preset(), make_model(von_oswald_preset(), ModelConfig())
    cfg = dataclasses.replace(SMALL, steps=200)
    grid = train(model, task, cfg, learning_rates=[1e-3, 3e-3], seeds=[0, 7])
    assert grid.train_loss.shape == (2 * 2 * 2, 200)
    for i, lr in enumerate([1e-3, 3e-3]):
        for j, seed in enumerate([0, 7]):
            single = train(model, task, dataclasses.replace(cfg, learning_rate=lr, seed=seed))
            rows = slice(4 * i + 2 * j, 4 * i + 2 * j + 2)
            np.testing.assert_allclose(grid.train_loss[rows], single.train_loss, rtol=1e-5)


def test_data_parallel_on_four_cpu_devices_matches_one_device():
    """Runs in a subprocess: the forced device count must be set before JAX starts."""
    script = """
import numpy as np, jax
from icl_toy.core.tasks import von_oswald_preset
from icl_toy.core.models import make_model, ModelConfig
from icl_toy.training.train import RunOptions, TrainConfig, train
assert len(jax.devices()) == 4
task = von_oswald_preset()
model = make_model(task, ModelConfig())
cfg = TrainConfig(steps=100, batch_size=128, eval_every=50, num_seeds=2)
four = train(model, task, cfg, options=RunOptions(num_devices=4))
one = train(model, task, cfg, options=RunOptions(num_devices=1))
np.testing.assert_allclose(four.train_loss, one.train_loss, rtol=2e-5, atol=1e-7)
for a, b in zip(jax.tree.leaves(four.params), jax.tree.leaves(one.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
# Whole runs on different devices: 2 learning rates x 2 seeds = 4 runs on 4 devices.
grid = train(model, task, cfg, learning_rates=[1e-3, 3e-3], options=RunOptions(shard="runs"))
grid_one = train(model, task, cfg, learning_rates=[1e-3, 3e-3], options=RunOptions(num_devices=1))
np.testing.assert_allclose(grid.train_loss, grid_one.train_loss, rtol=2e-5, atol=1e-7)
try:
    train(model, task, TrainConfig(steps=100, batch_size=510, eval_every=100), options=RunOptions())
except ValueError as error:
    assert "divisible by the number of devices (4)" in str(error), error
else:
    raise AssertionError("a batch of 510 on 4 devices was accepted")
print("OK")
"""
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FOUR_DEVICES}"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_make_model_gd_sparsity_init_has_the_construction_zero_blocks():
    task = von_oswald_preset()
    tokens = jnp.zeros((task.n_context + 1, task.token_dim))
    dense = make_model(task, ModelConfig()).init(jax.random.key(0), tokens)["params"]
    for kind in ("lsa", "token_momentum", "depth_momentum"):
        model = make_model(task, ModelConfig(kind=kind, init="gd_sparsity"))
        w = model.init(jax.random.key(0), tokens)["params"]
        d = task.d
        assert not np.any(w["w_q"][..., d:]) and not np.any(w["w_k"][..., d:])
        assert not np.any(w["w_v"][..., :d])
        assert np.any(w["w_q"][..., :d]) and np.any(w["w_v"][..., d:])
        # The same draw as the dense init, with the blocks zeroed.
        np.testing.assert_array_equal(w["w_q"][..., :d], dense["w_q"][..., :d])
        np.testing.assert_array_equal(w["w_p"], dense["w_p"])
    with pytest.raises(ValueError, match=r"^ModelConfig.init of kind 'lsa' must be one of dense"):
        ModelConfig(init="zeros")
    with pytest.raises(ValueError, match="must be one of dense; got 'gd_sparsity'"):
        ModelConfig(kind="causal_lsa", init="gd_sparsity")
