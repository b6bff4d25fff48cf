"""Orbax checkpoints of the whole ``TrainState``, with a small JSON record beside it
(the elapsed wall time; a run stopped mid-epoch adds the epoch's step metrics so far).

Orbax writes each checkpoint into a temporary directory and renames it when complete,
so ``latest_step`` only ever sees complete checkpoints. The state is copied to host
memory first and saved synchronously: Orbax then never touches device buffers from a
thread of its own while the next training step runs (with several CPU host devices a
checkpoint taken from device arrays was followed once by a step that hung in its
cross-device all-reduce).
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxnoisy.train import rundir
from jaxnoisy.train.step import to_host, to_mesh


_HINT = "it was written for another config or jaxnoisy version; train into a new --out"


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False))


def save(mngr: ocp.CheckpointManager, state, elapsed_seconds: float, step: int,
         extra: dict | None = None) -> None:
  """Saves ``state`` under ``step``, the count of every step taken so far (noisy and
  per-epoch phase steps: a state inside a phase has its own number), with
  ``{"elapsed_seconds", **extra}`` as its JSON record; a no-op if that step is already
  saved.

  A save that fails (a full disk, a directory turned read-only) raises
  :class:`rundir.WriteFailed` in one line. Orbax writes into a temporary directory and
  removes old checkpoints only after a save completes, so the previous ones stay.
  """
  if step in mngr.all_steps():  # before the copy to host: a no-op costs nothing
    return
  host_state = to_host(state)
  previous = mngr.latest_step()
  try:
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(host_state),
        meta=ocp.args.JsonSave({"elapsed_seconds": elapsed_seconds, **(extra or {})})))
    mngr.wait_until_finished()
  except Exception as e:  # noqa: BLE001  (Orbax and TensorStore raise many types)
    _quiet_closed_event_loop()
    raise rundir.unwritable(f"checkpoint {step}", mngr.directory, e, previous) from None


def restore(mngr: ocp.CheckpointManager, like, *, warn=print):
  """Restores the newest intact checkpoint into the structure and shardings of ``like``:
  ``(state, its JSON record)``.

  A checkpoint that cannot be read (its files truncated or corrupt: a full disk, a copy
  cut short) while an older one restores is damaged: ``warn`` says so in one line, it is
  moved to ``damaged/`` beside the checkpoints (so that its step is saved again), and the
  older one is used. An intact checkpoint of another state (other shapes or tree) is
  refused with its first mismatching entry named; so is a directory none of whose
  checkpoints can be read.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      state, meta = _restore_step(mngr, step, like)
    except _Unreadable as e:
      errors.append((step, e))
      continue
    for bad, e in errors:
      _set_aside(mngr, bad)
      warn(f"checkpoint {bad} in {mngr.directory} is damaged ({e}); resuming from "
           f"checkpoint {step}")
    return state, meta
  step, e = errors[0]
  raise ValueError(f"checkpoint {step} in {mngr.directory} does not match this run's state "
                   f"or is damaged ({e}), and no older checkpoint restores: {_HINT}") \
      from e.__cause__


class _Unreadable(Exception):
  """A checkpoint that Orbax could not restore (damaged, or of another tree)."""


def _restore_step(mngr, step: int, like):
  target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), like)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    meta = dict(restored["meta"])
    meta["elapsed_seconds"] = float(meta["elapsed_seconds"])
  except Exception as e:  # noqa: BLE001  (Orbax and TensorStore raise many types)
    _quiet_closed_event_loop()
    raise _Unreadable(f"{type(e).__name__}: {str(e).splitlines()[0][:120]}") from e
  leaves = jax.tree.leaves(restored["state"])
  _check_matches(mngr.directory, leaves, like)  # intact but another state: refused
  state = jax.tree.unflatten(jax.tree.structure(like), leaves)
  state = jax.tree.map(lambda v, x: to_mesh(v, x.sharding), state, like)
  return state, meta


def _quiet_closed_event_loop() -> None:
  """A failed Orbax restore closes its event loop while TensorStore's other reads are
  still pending; when they complete, their callbacks hit the closed loop and Python
  prints "Exception ignored ... RuntimeError: Event loop is closed" with a traceback.
  That error is harmless here (the failure was already handled): drop just it."""
  hook = sys.unraisablehook
  if getattr(hook, "_jaxnoisy_quiet", False):
    return

  def quiet(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    hook(unraisable)

  quiet._jaxnoisy_quiet = True
  sys.unraisablehook = quiet


def _set_aside(mngr, step: int) -> None:
  """Moves a damaged checkpoint to ``<checkpoints>/../damaged/<step>``."""
  src = os.path.join(str(mngr.directory), str(step))
  dest_dir = os.path.join(os.path.dirname(str(mngr.directory).rstrip("/")), "damaged")
  os.makedirs(dest_dir, exist_ok=True)
  dest = os.path.join(dest_dir, str(step))
  n = 1
  while os.path.exists(dest):
    dest, n = os.path.join(dest_dir, f"{step}.{n}"), n + 1
  os.replace(src, dest)
  mngr.reload()


def _check_matches(directory, leaves, like) -> None:
  """Orbax refuses another tree structure but restores other shapes as saved: a
  checkpoint written for another state (another model, number of replicas or jaxnoisy
  version) is refused here with its first mismatching entry."""
  paths = jax.tree_util.tree_flatten_with_path(like)[0]
  for (path, x), v in zip(paths, leaves, strict=True):
    if np.shape(v) != tuple(x.shape):
      raise ValueError(f"checkpoint in {directory}: state{jax.tree_util.keystr(path)} has "
                       f"shape {np.shape(v)}, this run's {tuple(x.shape)}: {_HINT}")
