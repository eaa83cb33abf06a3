"""Test-time input shifts: the same tasks with rescaled inputs."""

import jax
import numpy as np
import pytest

from icl_toy.analysis import input_shifts
from icl_toy.core.tasks import anisotropic_task, sample_batch, von_oswald_preset


def test_scale_inputs_keeps_teachers_and_noise():
    prompts = sample_batch(jax.random.key(0), anisotropic_task(), 16)
    shifted = input_shifts.scale_inputs(prompts, 4.0)
    np.testing.assert_allclose(shifted.x, 2.0 * prompts.x, rtol=1e-6)
    np.testing.assert_allclose(shifted.x_q, 2.0 * prompts.x_q, rtol=1e-6)
    np.testing.assert_array_equal(shifted.w, prompts.w)

    def noise(p):  # ε = y − W x of the context, computed in numpy
        return np.asarray(p.y) - np.einsum("bnd,byd->bny", np.asarray(p.x), np.asarray(p.w))

    np.testing.assert_allclose(noise(shifted), noise(prompts), atol=1e-5)


def test_half_width_sweep_stacks_on_a_last_axis_with_shared_teachers():
    task = von_oswald_preset()
    seen = []

    def losses(prompts):
        seen.append(prompts)
        return {"scalar": float(np.abs(prompts.x).max()), "per_seed": np.arange(3.0)}

    out = input_shifts.half_width_sweep(losses, task, jax.random.key(1), 64, (0.5, 2.0))
    assert out["scalar"].shape == (2,) and out["per_seed"].shape == (3, 2)
    assert out["scalar"][0] <= 0.5 < out["scalar"][1] <= 2.0
    np.testing.assert_array_equal(seen[0].w, seen[1].w)
    assert out["scalar"][0] == pytest.approx(float(np.abs(seen[0].x).max()))
