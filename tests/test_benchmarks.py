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
