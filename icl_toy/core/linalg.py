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


def matrix_products(jaxpr) -> list:
    """Every `dot_general` in a (closed) jaxpr, including inside jit, scan and custom_jvp.

    With `products_below_full_precision` this lets a test check that a program keeps the
    policy above, e.g. `jax.make_jaxpr(jax.grad(loss))(params)`.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for value in eqn.params.values():  # closed sub-programs of jit, scan, custom_jvp
            inner = getattr(value, "jaxpr", None)
            if hasattr(inner, "eqns"):
                found.extend(matrix_products(inner))
    return found


def products_below_full_precision(products: list) -> list:
    """The `dot_general` equations in `products` that do not ask for `PRECISION`."""
    return [
        eqn
        for eqn in products
        if eqn.params["precision"] is None or any(p != PRECISION for p in eqn.params["precision"])
    ]
