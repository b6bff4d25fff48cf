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


_HINT = "it was written for another config or jaxnoisy version; train into a new --out"


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False))


def save(mngr: ocp.CheckpointManager, state, elapsed_seconds: float, step: int) -> None:
  """Saves ``state`` under ``step``, the count of every step taken so far (noisy and
  per-epoch phase steps: a state inside a phase has its own number); a no-op if that
  step is already saved."""
  host_state = to_host(state)
  if step in mngr.all_steps():
    return
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(host_state),
      meta=ocp.args.JsonSave({"elapsed_seconds": elapsed_seconds})))
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, like):
  """Restores the latest checkpoint into the structure and shardings of ``like``."""
  target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), like)
  try:
    restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  except (ValueError, KeyError, TypeError) as e:  # another tree structure
    raise ValueError(f"checkpoint in {mngr.directory} does not match this run's state "
                     f"({type(e).__name__}: {str(e).splitlines()[0][:120]}): {_HINT}") from e
  leaves = jax.tree.leaves(restored["state"])
  _check_matches(mngr.directory, leaves, like)
  state = jax.tree.unflatten(jax.tree.structure(like), leaves)
  state = jax.tree.map(lambda v, x: to_mesh(v, x.sharding), state, like)
  return state, float(restored["meta"]["elapsed_seconds"])


def _check_matches(directory, leaves, like) -> None:
  """Orbax refuses another tree structure but restores other shapes as saved: a
  checkpoint written for another state (another model, number of replicas or jaxnoisy
  version) is refused here with its first mismatching entry."""
  paths = jax.tree_util.tree_flatten_with_path(like)[0]
  for (path, x), v in zip(paths, leaves, strict=True):
    if np.shape(v) != tuple(x.shape):
      raise ValueError(f"checkpoint in {directory}: state{jax.tree_util.keystr(path)} has "
                       f"shape {np.shape(v)}, this run's {tuple(x.shape)}: {_HINT}")
