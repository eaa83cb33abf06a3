"""The benchmark runs and reports what the README table needs (no timing is asserted)."""

import pytest

from benchmarks import train_throughput


@pytest.mark.slow  # four subprocesses that each import JAX and compile: ~40 s on 2 cores
def test_train_throughput_reports_every_field():
    summary = train_throughput.main(["--steps", "2", "--repeats", "1", "--seeds", "1"])
    for key in (
        "floor_steps_per_s",
        "k1_steps_per_s",
        "k5_steps_per_s",
        "k5_recurrent_steps_per_s",
        "ratio_k1",
        "ratio_k5",
        "compile_s_k1",
        "peak_rss_mb",
        "device",
    ):
        assert key in summary
    assert summary["floor_steps_per_s"] > 0 and summary["peak_rss_mb"] > 0


def test_time_to_target_stops_at_the_first_reading_within_tolerance():
    import jax

    from benchmarks.time_to_target import time_to_target
    from icl_toy.core.models import ModelConfig, make_model
    from icl_toy.core.tasks import TaskConfig, sample_batch
    from icl_toy.training.train import TrainConfig

    task = TaskConfig(d=2, n_context=4)
    model = make_model(task, ModelConfig(num_layers=2, shared_weights=True))
    held_out = sample_batch(jax.random.key(0), task, 64)
    cfg = TrainConfig(steps=30, batch_size=16, eval_every=10, num_seeds=1)
    reached = time_to_target(cfg, 1e9, task, held_out, model)
    assert reached["reached"] and reached["steps"] == 10 and reached["seconds"] > 0
    missed = time_to_target(cfg, 0.0, task, held_out, model)
    assert not missed["reached"] and missed["steps"] == 30
