"""The run directory: one writer at a time, and a directory that stops taking writes.

A run holds an exclusive ``fcntl.flock`` on ``OUT/run.lock`` from before it reads its
data to its last write. The kernel drops the lock with the process (a ``kill -9``
leaves nothing stale, so a killed run's ``--resume`` starts at once); the file keeps
the holder's pid, host and start time so that a second run into the same directory
can say who holds it, and refuses before writing anything. In a multi-process run
process 0 holds the lock and tells the others (``multihost_utils.broadcast_one_to_all``)
whether to go on. The file itself is left in place: deleting a lock file races with a
process opening it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys

LOCK_NAME = "run.lock"


class Locked(RuntimeError):
  """Another live run holds the run directory."""


class WriteFailed(RuntimeError):
  """The run directory stopped accepting writes (full disk, read-only, quota)."""


def _holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (OSError, ValueError):
    info = {}
  if not info:
    return "another run (it has not written its pid yet)"
  return f"pid {info.get('pid')} on {info.get('host')} (started {info.get('started')})"


def _acquire(out_dir: str) -> int | None:
  """The lock's file descriptor, locked (None where the file system has no locks); or
  :class:`Locked` naming the holder."""
  path = os.path.join(out_dir, LOCK_NAME)
  try:
    os.makedirs(out_dir, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WriteFailed(f"cannot write to --out {out_dir}: {e.strerror}") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
      os.close(fd)  # a file system without locks (some NFS set-ups): go on, and say so
      print(f"jaxnoisy: warning: {out_dir}'s file system cannot lock {LOCK_NAME} "
            f"({e.strerror}); make sure no other run writes there", file=sys.stderr)
      return None
    holder = _holder(fd)
    os.close(fd)
    raise Locked(f"--out {out_dir} is in use by {holder}: wait for that run to end or "
                 "stop it, or choose another --out") from None
  started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
  os.ftruncate(fd, 0)
  os.pwrite(fd, info.encode() + b"\n", 0)
  return fd


@contextlib.contextmanager
def hold(out_dir: str):
  """Holds ``out_dir``'s lock for the ``with`` block (process 0 of a multi-process run);
  raises :class:`Locked` in every process when another run holds it."""
  import jax
  error, fd = None, None
  if jax.process_index() == 0:
    try:
      fd = _acquire(out_dir)
    except (Locked, WriteFailed) as e:
      error = e
  if jax.process_count() > 1:  # every process learns process 0's outcome
    import numpy as np
    from jax.experimental import multihost_utils
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      error = Locked(f"--out {out_dir}: process 0 could not lock the run directory")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if fd is not None:
      os.close(fd)  # closing the descriptor releases the lock


def unwritable(what: str, path: str, error: BaseException, last_checkpoint) -> WriteFailed:
  """The one-line error of a write that failed: what, where, why, and what is kept."""
  reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:160]
  kept = (f"checkpoint {last_checkpoint} is intact" if last_checkpoint is not None
          else "no checkpoint was written yet")
  return WriteFailed(f"could not write {what} to {path} ({reason}); {kept}: free space "
                     "or restore write access, then rerun with --resume")


@contextlib.contextmanager
def writing(what: str, path: str, last_checkpoint):
  """Turns an ``OSError`` raised in the block into :func:`unwritable`'s one line;
  ``last_checkpoint()`` is asked only then."""
  try:
    yield
  except OSError as e:
    raise unwritable(what, path, e, last_checkpoint()) from None
