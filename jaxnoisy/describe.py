"""Dataset + noise summaries and transition-matrix plots (for ``jaxnoisy data describe``).

Next to the CLI, above both the loaders and :mod:`jaxnoisy.noise`: it applies a
noise spec to a loaded :class:`~jaxnoisy.data.Dataset`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxnoisy import noise as noise_lib

if TYPE_CHECKING:
  from jaxnoisy.data import Dataset

__all__ = ["describe", "plot_transition_matrix"]


def describe(dataset: Dataset, spec, key) -> dict:
  """Sizes, classes and the realised noise of ``spec`` on ``dataset``'s training set.

  The noise is drawn with :func:`jaxnoisy.noise.apply_noise` from ``key``
  (instance noise uses ``dataset.train_images``; CIFAR-N specs use
  ``dataset.noisy_label_sets``). Returns a JSON-serialisable dict: ``name``,
  ``source``, ``num_train``, ``num_test``, ``image_shape``, ``num_classes``,
  ``class_names``, ``noise`` (the normalised spec), ``noise_rate`` (realised
  fraction of changed labels), ``num_corrupted``, ``transition_matrix``
  (``T[c][k] = P(noisy = k | clean = c)``, nested lists) and
  ``noisy_label_sets`` (names of the real-noise label sets, if any). Where true labels
  are unknown (−1, Clothing1M) the rate and the matrix are over the known ones, and
  ``true_labels_known`` says their share.
  """
  spec = noise_lib.parse_noise_spec(spec)
  clean = np.asarray(dataset.train_labels, np.int32)
  noisy, mask = noise_lib.apply_noise(
      spec, clean, key, dataset.num_classes, dataset=dataset.name,
      images=dataset.train_images, real_noisy_labels=dataset.noisy_label_sets,
  )
  known = clean >= 0
  matrix = noise_lib.transition_matrix(clean[known], noisy[known], dataset.num_classes)
  return {
      "name": dataset.name,
      "source": dataset.source,
      "num_train": dataset.num_train,
      "num_test": dataset.num_test,
      "image_shape": list(dataset.image_shape),
      "num_classes": dataset.num_classes,
      "class_names": list(dataset.class_names),
      "noise": str(spec),
      "noise_rate": noise_lib.noise_rate(clean[known], noisy[known]),
      "true_labels_known": float(known.mean()),
      "num_corrupted": int(mask.sum()),
      "transition_matrix": matrix.tolist(),
      "noisy_label_sets": sorted(dataset.noisy_label_sets or {}),
  }


def plot_transition_matrix(matrix, class_names, path, *, title: str | None = None) -> Path:
  """Write a heat-map PNG of a ``(C, C)`` transition matrix to ``path``, atomically.

  Rows are clean classes, columns noisy classes; cells are annotated with
  their value when C <= 20 and tick labels are the class names when C <= 30.
  The figure is written to a temporary file in the same directory and then
  renamed over ``path`` (matplotlib's Agg backend, no display needed).
  Returns ``path``.
  """
  matrix = np.asarray(matrix, dtype=np.float64)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
    raise ValueError(f"matrix must be square (C, C), got shape {matrix.shape}")
  c = matrix.shape[0]
  names = [str(n) for n in class_names]
  if len(names) != c:
    raise ValueError(f"class_names must have {c} entries, got {len(names)}")
  path = Path(path)

  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  size = min(4.0 + 0.45 * c, 20.0)
  fig = Figure(figsize=(size, size * 0.9))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  im = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  ax.set_xlabel("noisy label")
  ax.set_ylabel("clean label")
  if title:
    ax.set_title(title)
  if c <= 30:
    ax.set_xticks(range(c), names, rotation=90)
    ax.set_yticks(range(c), names)
  if c <= 20:
    for i in range(c):
      for j in range(c):
        v = matrix[i, j]
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="black" if v > 0.6 else "white")
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      fig.savefig(f, format="png", dpi=100)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  return path
