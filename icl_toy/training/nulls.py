"""Null models: the same measure, run on weights that learned nothing.

A statistic of a trained model ("the sensitivity cosine with GD is 0.999") means something
only beside the value the same statistic takes when nothing was learned. Two nulls:

- `untrained`: each seed's initial parameters (the same init law and the same draw that
  training started from);
- `permuted`: each seed's trained parameters with the entries of every parameter array
  shuffled (`permute_entries`): the same magnitudes, none of the structure.

`recording()` keeps the result of every `train` call inside it, in call order; inside
`replacing(kind, recorded, key)` the i-th `train` call returns the i-th recorded result
with its parameters replaced by the null's, without training. A measure that trains
through `train` and is deterministic given its config (the same calls in the same order)
therefore yields its null values by being called again under `replacing`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp

KINDS = ("untrained", "permuted")


def permute_entries(params_S, key: jax.Array):
    """Shuffle the entries of every leaf within each seed: leaf (S, ...) keeps its shape and
    each seed's multiset of values; seed s of leaf i uses fold_in(fold_in(key, i), s)."""
    leaves, treedef = jax.tree.flatten(params_S)

    def shuffle(leaf, leaf_key):
        flat = leaf.reshape(leaf.shape[0], -1)
        keys = jax.vmap(lambda s: jax.random.fold_in(leaf_key, s))(jnp.arange(flat.shape[0]))
        return jax.vmap(jax.random.permutation)(keys, flat).reshape(leaf.shape)

    shuffled = [shuffle(leaf, jax.random.fold_in(key, i)) for i, leaf in enumerate(leaves)]
    return jax.tree.unflatten(treedef, shuffled)


class _Recording:
    def __init__(self):
        self.results: list = []


class _Replacing:
    def __init__(self, kind: str, recorded: list, key: jax.Array):
        self.kind, self.recorded, self.key, self.calls = kind, recorded, key, 0


_active: contextvars.ContextVar[_Recording | _Replacing | None] = contextvars.ContextVar(
    "null_models", default=None
)


@contextlib.contextmanager
def recording() -> Iterator[list]:
    """Keep every `train` result made inside, in call order (the yielded list)."""
    state = _Recording()
    token = _active.set(state)
    try:
        yield state.results
    finally:
        _active.reset(token)


@contextlib.contextmanager
def replacing(kind: str, recorded: list, key: jax.Array) -> Iterator[None]:
    """Inside, the i-th `train` call returns `recorded[i]` with the `kind` null's params."""
    if kind not in KINDS:
        raise ValueError(f"unknown null {kind!r}; known: {', '.join(KINDS)}")
    token = _active.set(_Replacing(kind, recorded, key))
    try:
        yield
    finally:
        _active.reset(token)


def replaced(initial_params: Callable[[], dict]):
    """Called by `train` before it trains: the null's stand-in result, or None to train.

    `initial_params()` gives the run's initial parameters (only the untrained null asks).
    """
    state = _active.get()
    if not isinstance(state, _Replacing):
        return None
    if state.calls >= len(state.recorded):
        raise RuntimeError(
            f"the measure trained more often under the {state.kind} null than when recorded "
            f"({len(state.recorded)} runs): it must make the same train calls in the same order"
        )
    result = state.recorded[state.calls]
    key = jax.random.fold_in(state.key, state.calls)
    state.calls += 1
    if state.kind == "untrained":
        params = initial_params()
    else:
        params = permute_entries(result.params, key)
    return result._replace(params=params)


def record(result) -> None:
    """Called by `train` with every finished result: kept inside `recording()`."""
    state = _active.get()
    if isinstance(state, _Recording):
        state.results.append(result)
