"""TensorBoard event files of a run's logged scalars (tensorboardX: no TensorFlow).

One writer per replica: ``OUT/tb/`` for a single run, ``OUT/tb/<label>/`` for each
replica of several, so that TensorBoard shows the seeds or swept values side by side.
"""

from __future__ import annotations

import math
import os


class TensorBoard:
  """Writes the epoch rows of ``metrics.jsonl`` and the training loss every ``every``
  steps, at the run's noisy-step count. ``start_step``: the steps done when a run
  resumes; TensorBoard drops what an earlier writer logged after it (the steps being
  redone)."""

  def __init__(self, out_dir: str, labels: list[str], start_step: int = 0):
    from tensorboardX import SummaryWriter
    root = os.path.join(out_dir, "tb")
    dirs = [root] if len(labels) == 1 else [os.path.join(root, lab) for lab in labels]
    self.writers = [SummaryWriter(d, purge_step=start_step + 1 if start_step else None) for d in dirs]

  def scalars(self, replica: int, step: int, values: dict, prefix: str = "") -> None:
    """Every finite number in ``values`` as ``prefix + name``."""
    writer = self.writers[replica]
    for name, v in values.items():
      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        writer.add_scalar(prefix + name, v, step)

  def close(self) -> None:
    for w in self.writers:
      w.close()
