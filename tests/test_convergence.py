"""The training recipe (learning-rate schedules) and the convergence record of every seed."""

import dataclasses
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.tasks import TaskConfig
from icl_toy.training import convergence
from icl_toy.training.train import TrainConfig, make_optimizer, schedule_shape, train


def _shape_by_hand(cfg: TrainConfig, t: int) -> float:
    """The schedule of `TrainConfig`'s docstring, written out."""
    w, T, f, h = cfg.warmup_steps, cfg.steps, cfg.final_lr_fraction, cfg.hold_steps
    if t < w:
        return t / w
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (t - w) / (T - w - h))  # then held at f for the last h steps
    if cfg.schedule == "warmup_cosine":
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1 - (1 - f) * progress


@pytest.mark.parametrize("hold_steps", [0, 10])
@pytest.mark.parametrize("schedule", ["constant", "warmup_cosine", "warmup_linear"])
def test_schedule_shape_is_the_documented_formula(schedule, hold_steps):
    cfg = TrainConfig(
        steps=100,
        eval_every=10,
        schedule=schedule,
        warmup_steps=20,
        final_lr_fraction=0.1,
        hold_steps=hold_steps,
    )
    shape = schedule_shape(cfg)
    for t in (0, 5, 19, 20, 21, 50, 89, 90, 95, 99, 100):
        assert float(shape(t)) == pytest.approx(_shape_by_hand(cfg, t), abs=1e-6), t
    if schedule != "constant" and hold_steps:  # the last hold_steps steps at the final rate
        assert [float(shape(t)) for t in range(90, 100)] == pytest.approx([0.1] * 10, abs=1e-7)


def test_scheduled_adam_steps_are_plain_adam_steps_times_the_shape():
    """Same gradients into both optimizers: the scheduled update is shape(t) × Adam's."""
    plain = TrainConfig(steps=50, eval_every=10)
    cosine = dataclasses.replace(plain, schedule="warmup_cosine", warmup_steps=10)
    params = {"w": jnp.ones(3)}
    grads = [{"w": jnp.array([0.3, -1.0, 2.0]) * (1 + 0.1 * t)} for t in range(30)]
    opt_a, opt_b = make_optimizer(plain), make_optimizer(cosine)
    state_a, state_b = opt_a.init(params), opt_b.init(params)
    shape = schedule_shape(cosine)
    for t, g in enumerate(grads):
        up_a, state_a = opt_a.update(g, state_a, params)
        up_b, state_b = opt_b.update(g, state_b, params)
        np.testing.assert_allclose(up_b["w"], float(shape(t)) * up_a["w"], rtol=1e-6, atol=1e-12)
    # The default optimizer has no schedule stage: its state is clipped Adam's alone.
    assert len(state_a) == 2 and len(state_b) == 3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"schedule": "cosine"}, "schedule must be one of constant, warmup_cosine"),
        ({"warmup_steps": 100}, r"warmup_steps must be an integer in \[0, steps = 100\)"),
        ({"warmup_steps": -1}, "warmup_steps must be"),
        ({"final_lr_fraction": 1.5}, r"final_lr_fraction must be in \[0, 1\]"),
        ({"final_lr_fraction": float("nan")}, "final_lr_fraction must be"),
        (
            {"hold_steps": 100},
            r"hold_steps must be an integer in \[0, steps − warmup_steps = 100\)",
        ),
        ({"hold_steps": 60, "warmup_steps": 40}, r"hold_steps must be .* = 60\)"),
        ({"hold_steps": 2.5}, "hold_steps must be an integer"),
        ({"schedule": "warmup_cosine", "hold_steps": 10}, "hold_steps needs final_lr_fraction > 0"),
    ],
)
def test_bad_schedules_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(steps=100, eval_every=10, **change)


def _curves() -> dict[str, np.ndarray]:
    t = np.arange(1000, dtype=float)
    return {
        "converged": 0.2 + 0.3 * np.exp(-t / 50),
        "plateau": 0.5 + 0.001 * np.sin(t),
        "still_improving": 0.5 - 0.0004 * t,
        "spiked": np.where(t < 900, 0.2 + 0.3 * np.exp(-t / 50), 0.4),
        "nan": np.where(t < 500, 0.5 - 0.0004 * t, np.nan),
    }


def test_the_record_reads_each_kind_of_curve():
    curves = _curves()
    per_seed = convergence.seed_convergence(np.stack(list(curves.values())))
    records = dict(zip(curves, per_seed, strict=True))
    assert [name for name, r in records.items() if r["converged"]] == ["converged"]
    assert not records["plateau"]["left_plateau"]
    assert records["still_improving"]["left_plateau"]
    assert records["still_improving"]["relative_change"] > convergence.STILL_IMPROVING
    assert records["spiked"]["spiked"] and records["spiked"]["left_plateau"]
    assert not records["nan"]["finite"] and not records["converged"]["spiked"]
    assert abs(records["converged"]["relative_change"]) < 1e-6
    assert records["converged"]["final_loss"] == pytest.approx(0.2, rel=1e-6)


def test_the_held_out_curve_gives_the_trend_and_the_gap():
    curve = _curves()["converged"][None]
    steps = np.array([0, 500, 900, 1000])
    flat = np.array([[0.5, 0.21, 0.202, 0.202]])
    (record,) = convergence.seed_convergence(curve, flat, steps, reference=0.2)
    assert record["converged"] and record["relative_change"] == 0.0
    assert record["gap"] == pytest.approx(0.01) and record["final_loss"] == pytest.approx(0.202)
    falling = np.array([[0.5, 0.3, 0.25, 0.22]])  # held-out loss still falling: not done
    (record,) = convergence.seed_convergence(curve, falling, steps)
    assert not record["converged"] and record["relative_change"] == pytest.approx(0.03 / 0.22)
    rising = np.array([[0.5, 0.2, 0.2, 0.25]])  # ends 25% above its best: a spike
    (record,) = convergence.seed_convergence(curve, rising, steps)
    assert record["spiked"] and not record["converged"]


def test_with_a_held_out_curve_a_training_decile_spike_is_batch_noise():
    # The training loss's last decile is 2x its best (heavy-tailed batches), but the
    # held-out loss on fixed tasks ends within 0.1% of its minimum: not a spike.
    curve = _curves()["spiked"][None]
    steps = np.array([0, 500, 900, 1000])
    flat = np.array([[0.5, 0.2, 0.2001, 0.2002]])
    (record,) = convergence.seed_convergence(curve, flat, steps)
    assert not record["spiked"] and record["converged"]
    # Without the curve the same training loss is a spike.
    (record,) = convergence.seed_convergence(curve)
    assert record["spiked"] and not record["converged"]


def test_batch_noise_on_a_finished_run_is_not_read_as_progress():
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    noisy = (0.2 + 0.3 * np.exp(-t / 50)) * (1 + 0.1 * rng.standard_normal((8, t.size)))
    records = convergence.seed_convergence(noisy)
    assert all(r["converged"] for r in records), [r["relative_change"] for r in records]
    assert all(r["change_tolerance"] > convergence.STILL_IMPROVING for r in records)
    # The same noise on a run that is still falling 10% per decile is not converged.
    still = (0.5 - 0.0002 * t) * (1 + 0.1 * rng.standard_normal((8, t.size)))
    assert not any(r["converged"] for r in convergence.seed_convergence(still))


def test_every_train_call_inside_collect_is_recorded():
    task = TaskConfig(d=2, n_context=4)
    model = make_model(task, ModelConfig())
    cfg = TrainConfig(steps=20, batch_size=16, eval_every=10, num_seeds=2, learning_rate=1e-2)
    with convergence.collect() as records:
        train(model, task, cfg)
        train(model, task, dataclasses.replace(cfg, num_seeds=1))
    assert list(records) == ["run0", "run1"]
    assert [r["total"] for r in records.values()] == [2, 1]
    assert records["run0"]["criterion"] == convergence.CRITERION
    assert convergence.summary_line(records).startswith("converged seeds: ")
    # Outside `collect` nothing is gathered, and nothing fails.
    train(model, task, cfg)
    assert len(records) == 2


@pytest.mark.long
def test_one_layer_trained_with_the_recipe_reaches_gd_at_its_optimal_step():
    """The science the recipe must deliver, in the default suite: one LSA layer trained with
    warmup then cosine decay reaches GD(η*)'s held-out loss within 1%, its query
    sensitivity aligns with GD's (cosine ≥ 0.99), and every seed reads as converged."""
    from icl_toy.experiments import single_layer_gd

    quick = single_layer_gd.get_config(quick=True)
    recipe = dataclasses.replace(
        quick.train, learning_rate=3e-3, schedule="warmup_cosine", warmup_steps=60, eval_every=150
    )
    config = dataclasses.replace(quick, train=recipe, ood_scales=(1.0,))
    with convergence.collect() as records:
        summary = single_layer_gd.run(config).summary
    gap = np.asarray(summary["per_seed"]["trained_loss"]) / summary["gd_loss"] - 1
    assert np.all(np.abs(gap) <= 0.01), gap
    assert np.all(np.asarray(summary["per_seed"]["sensitivity_cosine"]) >= 0.99)
    (record,) = records.values()
    assert record["converged"] == record["total"] == 2, record["per_seed"]


def test_converged_flags_read_a_record_and_a_missing_one():
    """The flags are the record's per-seed `converged`; a run saved without a record reads
    as all converged when its seed count is given, and is refused without one."""
    rng = np.random.default_rng(0)
    flat = np.full((2, 400), 0.2) + 1e-4 * rng.standard_normal((2, 400))
    flat[1, :40] = 1.0  # seed 1 left a plateau, seed 0 never did
    result = types.SimpleNamespace(train_loss=flat, eval_metrics={}, eval_steps=None)
    record = convergence.convergence_record(result)
    np.testing.assert_array_equal(convergence.converged_flags(record), [False, True])
    np.testing.assert_array_equal(convergence.converged_flags(None, 3), [True] * 3)
    with pytest.raises(ValueError, match="no seed count"):
        convergence.converged_flags(None)
