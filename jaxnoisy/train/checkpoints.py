"""Orbax checkpoints of the whole ``TrainState`` (plus the elapsed wall time).

Orbax writes each checkpoint into a temporary directory and renames it when complete,
so ``latest_step`` only ever sees complete checkpoints. The state is copied to host
memory first and saved synchronously: Orbax then never touches device buffers from a
thread of its own while the next training step runs (with several CPU host devices a
checkpoint taken from device arrays was followed once by a step that hung in its
cross-device all-reduce).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxnoisy.train.step import to_host, to_mesh


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False))


def save(mngr: ocp.CheckpointManager, state, elapsed_seconds: float) -> None:
  """Saves ``state`` under its step number (a no-op if that step is already saved);
  ``state.step`` has a leading replica axis (the replicas step together)."""
  host_state = to_host(state)
  step = int(host_state.step.reshape(-1)[0])
  if step in mngr.all_steps():
    return
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(host_state),
      meta=ocp.args.JsonSave({"elapsed_seconds": elapsed_seconds})))
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, like):
  """Restores the latest checkpoint into the structure and shardings of ``like``."""
  target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), like)
  restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  leaves = jax.tree.leaves(restored["state"])
  state = jax.tree.unflatten(jax.tree.structure(like), leaves)
  state = jax.tree.map(lambda v, x: to_mesh(v, x.sharding), state, like)
  return state, float(restored["meta"]["elapsed_seconds"])
