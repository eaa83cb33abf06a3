"""Strict JAX for every test: implicit rank promotion is an error (STYLE.md)."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Run the test body in float64 (jax_enable_x64) for round-off-level comparisons."""
    with jax.enable_x64(True):
        yield
