"""Deterministic train / held-out / clean-subset splits of a training set."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Splits", "make_splits"]


class Splits(NamedTuple):
  """Sorted int64 index arrays into the training set; pairwise disjoint."""

  train: np.ndarray
  heldout: np.ndarray
  clean: np.ndarray


def _check_int(name: str, value, lo: int, hi_text: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an int {hi_text}, got {value!r}")
  if value < lo:
    raise ValueError(f"{name} must be an int {hi_text}, got {value}")
  return int(value)


def make_splits(num_train: int, *, heldout_size: int, clean_size: int, seed: int) -> Splits:
  """Split ``range(num_train)`` into train, held-out and clean index sets.

  One permutation from ``np.random.default_rng(seed)`` is drawn; its first
  ``clean_size`` entries form the clean subset (examples whose labels are
  kept clean, for meta-learning methods), the next ``heldout_size`` the
  held-out validation set, the rest the training set. Each index array is
  sorted. The same arguments always give the same splits. ``clean_size=0``
  means no clean subset (methods that need one validate this themselves).
  """
  num_train = _check_int("num_train", num_train, 1, ">= 1")
  heldout_size = _check_int("heldout_size", heldout_size, 0, f"in [0, {num_train})")
  clean_size = _check_int("clean_size", clean_size, 0, f"in [0, {num_train})")
  seed = _check_int("seed", seed, 0, ">= 0")
  if heldout_size + clean_size >= num_train:
    raise ValueError(
        f"heldout_size + clean_size must be in [0, {num_train}) (num_train), got "
        f"{heldout_size} + {clean_size} = {heldout_size + clean_size}"
    )
  perm = np.random.default_rng(seed).permutation(num_train).astype(np.int64)
  clean = np.sort(perm[:clean_size])
  heldout = np.sort(perm[clean_size : clean_size + heldout_size])
  train = np.sort(perm[clean_size + heldout_size :])
  return Splits(train=train, heldout=heldout, clean=clean)
