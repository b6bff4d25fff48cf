"""Orbax checkpoints of the whole ``TrainState`` (plus the elapsed wall time).

Orbax writes each checkpoint into a temporary directory and renames it when complete,
so ``latest_step`` only ever sees complete checkpoints.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(mngr: ocp.CheckpointManager, state, elapsed_seconds: float) -> None:
  """Saves ``state`` under its step number (a no-op if that step is already saved)."""
  step = int(state.step)
  if step in mngr.all_steps():
    return
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      meta=ocp.args.JsonSave({"elapsed_seconds": elapsed_seconds})))
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, like):
  """Restores the latest checkpoint into the structure, shapes and shardings of ``like``."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  state = jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored["state"]))
  return state, float(restored["meta"]["elapsed_seconds"])
