"""Matrix products at full float32 precision on every backend.

On GPUs, JAX's default float32 matrix product may run in TF32 (a 10-bit mantissa): on an
H100 that put the float32 GD construction 5e-4 away from explicit GD, instead of 1e-6.
Every product in icl-toy goes through these two functions. They are tiny, so full
precision costs nothing measurable, and it is a no-op on CPUs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PRECISION = jax.lax.Precision.HIGHEST


def einsum(subscripts: str, *operands: jax.Array) -> jax.Array:
    """`jnp.einsum` at full precision."""
    return jnp.einsum(subscripts, *operands, precision=PRECISION)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a @ b` at full precision."""
    return jnp.matmul(a, b, precision=PRECISION)
