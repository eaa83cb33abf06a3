"""Training checkpoints with orbax: the train state plus the metric history so far.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
run killed mid-save leaves the previous checkpoint as the latest one. Saves are synchronous:
when `save` returns, the checkpoint is on disk.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _flatten(state) -> dict[str, np.ndarray]:
    """Leaves by index as host arrays; typed PRNG keys become their raw uint32 data.

    Host arrays carry no sharding, so a checkpoint written on one device count restores
    on any other (the restored state is placed by the next jitted call)."""
    leaves = jax.tree.leaves(state)
    return {
        str(i): np.asarray(jax.random.key_data(x) if _is_key(x) else x)
        for i, x in enumerate(leaves)
    }


class Checkpoints:
    """Checkpoints of one run in `directory`, indexed by the number of finished chunks."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest(self) -> int | None:
        """Finished chunks in the latest complete checkpoint, or None if there is none."""
        return self._manager.latest_step()

    def save(self, chunks_done: int, state, history: dict[str, np.ndarray]) -> None:
        """Save the state (any pytree) after `chunks_done` chunks and the history so far."""
        self._manager.save(
            chunks_done,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_flatten(state)),
                history=ocp.args.StandardSave(history),
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(self, template) -> tuple[int, object, dict[str, np.ndarray]]:
        """(chunks_done, state, history) of the latest checkpoint; state shaped like `template`."""
        step = self.latest()
        if step is None:
            raise FileNotFoundError("no complete checkpoint to resume from")
        abstract = _flatten(template)  # host arrays: restored unsharded, as saved
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), history=ocp.args.StandardRestore()
            ),
        )
        leaves = [
            jax.random.wrap_key_data(restored["state"][str(i)], impl=jax.random.key_impl(x))
            if _is_key(x)
            else jax.device_put(restored["state"][str(i)])
            for i, x in enumerate(jax.tree.leaves(template))
        ]
        return (
            step,
            jax.tree.unflatten(jax.tree.structure(template), leaves),
            dict(restored["history"]),
        )

    def close(self) -> None:
        self._manager.close()
