"""TensorBoard event files of a run's logged scalars (tensorboardX: no TensorFlow).

One writer per replica: ``OUT/tb/`` for a single run, ``OUT/tb/<label>/`` for each
replica of several, so that TensorBoard shows the seeds or swept values side by side.
"""

from __future__ import annotations

import math
import os


class TensorBoard:
  """Writes scalars per replica at the run's noisy-step count (the trainer: each epoch's
  row of ``metrics.jsonl`` and the training loss every ``log_every`` steps).
  ``start_step``: the steps done when a run resumes; TensorBoard drops what an earlier
  writer logged after it (the steps being redone)."""

  def __init__(self, out_dir: str, labels: list[str], start_step: int = 0):
    from tensorboardX import SummaryWriter
    root = os.path.join(out_dir, "tb")
    dirs = [root] if len(labels) == 1 else [os.path.join(root, lab) for lab in labels]
    purge = start_step + 1 if start_step else None
    self.writers = [SummaryWriter(d, purge_step=purge) for d in dirs]

  def scalars(self, replica: int, step: int, values: dict, prefix: str = "") -> None:
    """Every finite number in ``values`` as ``prefix + name``."""
    writer = self.writers[replica]
    for name, v in values.items():
      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        writer.add_scalar(prefix + name, v, step)

  def close(self) -> None:
    for w in self.writers:
      w.close()
