"""TensorBoard event files of a run's logged scalars (tensorboardX: no TensorFlow).

One writer per replica: ``OUT/tb/`` for a single run, ``OUT/tb/<label>/`` for each
replica of several, so that TensorBoard shows the seeds or swept values side by side.
"""

from __future__ import annotations

import math
import os
import time


class TensorBoard:
  """Writes scalars per replica at the run's noisy-step count (the trainer: each epoch's
  row of ``metrics.jsonl`` and the training loss every ``log_every`` steps).
  ``start_step``: the steps done when a run resumes; TensorBoard drops what an earlier
  writer logged after it (the steps being redone).

  The events are written and flushed in the calling thread (tensorboardX's
  ``EventsWriter``, not its ``SummaryWriter``, whose writer thread dies on a full disk
  and leaves the next ``add_scalar`` blocked on its queue): a failed write raises
  ``OSError`` here, where the trainer reports it."""

  def __init__(self, out_dir: str, labels: list[str], start_step: int = 0):
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    root = os.path.join(out_dir, "tb")
    self.dirs = [root] if len(labels) == 1 else [os.path.join(root, lab) for lab in labels]
    self.writers = []
    for d in self.dirs:
      os.makedirs(d, exist_ok=True)
      writer = EventsWriter(os.path.join(d, "events"))
      if start_step:  # TensorBoard hides the events at or after a START's step
        writer.write_event(Event(wall_time=time.time(), step=start_step + 1,
                                 session_log=SessionLog(status=SessionLog.START)))
      self.writers.append(writer)

  def scalars(self, replica: int, step: int, values: dict, prefix: str = "") -> None:
    """Every finite number in ``values`` as ``prefix + name``."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary
    writer = self.writers[replica]
    for name, v in values.items():
      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        writer.write_event(Event(wall_time=time.time(), step=step, summary=Summary(
            value=[Summary.Value(tag=prefix + name, simple_value=float(v))])))
    writer.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()
