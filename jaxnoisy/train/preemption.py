"""Stopping a run between steps on SIGTERM (a scheduler's preemption notice) or Ctrl-C.

While the training loop runs, :class:`Listener` turns the first SIGTERM or SIGINT into
a request that the trainer reads after each step (:meth:`Listener.__call__`): the step
in flight completes, the state is checkpointed at that step, and the run ends with
:class:`Stopped`. A second Ctrl-C interrupts at once, as usual.

In a multi-process run the processes must stop at the same step, since saving is
collective. JAX's preemption service (started by ``jax.distributed.initialize``) takes
SIGTERM itself and agrees on a step across processes; Orbax's
``CheckpointManager.reached_preemption(step)`` asks it, and the trainer calls it once
per step with the checkpoint numbering (which Orbax's own ``save`` also uses). There a
Ctrl-C is passed on as a SIGTERM to the process itself, so it takes the same path.
"""

from __future__ import annotations

import logging
import signal
import threading


class _QuietSyncPoint(logging.Filter):
  """Orbax logs a warning each time it sees the agreed step; the trainer's own line
  says it once."""

  def filter(self, record):
    return "Reached preemption sync point" not in record.getMessage()


class Stopped(KeyboardInterrupt):
  """The run stopped on a signal after checkpointing; ``--resume`` continues it."""

  def __init__(self, signum: int, checkpoint, directory: str):
    super().__init__()
    self.signum, self.checkpoint, self.directory = signum, checkpoint, directory

  @property
  def exit_status(self) -> int:
    """128 + the signal's number: the shell's status of a run ended by that signal."""
    return 128 + self.signum

  def __str__(self) -> str:
    where = (f"checkpoint {self.checkpoint} is in {self.directory}"
             if self.checkpoint is not None else "no checkpoint was written yet")
    return (f"stopped by {signal.Signals(self.signum).name}: {where}; continue with the "
            "same command plus --resume")


class Listener:
  """Catches SIGTERM and SIGINT while the training loop runs (a context manager).

  ``first_step``: the checkpoint number of the state the loop starts from; each call
  counts one step (noisy or phase) and returns True when the loop should stop after it
  (and from then on ``stopping`` is True).
  """

  def __init__(self, manager, first_step: int):
    import jax
    self.manager, self.step = manager, first_step
    self.multiprocess = jax.process_count() > 1
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _QuietSyncPoint) for f in absl.filters):
      absl.addFilter(_QuietSyncPoint())
    self.signum = None  # the signal that asked to stop
    self.stopping = False  # a call answered True: the loop stops after this step
    self._previous = {}

  def __call__(self) -> bool:
    self.step += 1
    if self.multiprocess:  # every process answers True at the same, agreed step
      if self.manager.reached_preemption(self.step):
        self.signum = self.signum or signal.SIGTERM
        self.stopping = True
    else:
      self.stopping = self.signum is not None
    return self.stopping

  def _handle(self, signum, frame):
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: now
    self.signum = signum
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      if self.multiprocess:  # JAX's preemption service listens for SIGTERM
        signal.raise_signal(signal.SIGTERM)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # else: no handlers
      # Multi-process: SIGTERM is left to JAX's preemption service.
      caught = (signal.SIGINT,) if self.multiprocess else (signal.SIGINT, signal.SIGTERM)
      for s in caught:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    return False

