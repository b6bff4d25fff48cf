"""One-line argument checks, run in Python before anything is traced or compiled."""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np


def _concrete(value):
  """A Python float for numbers and concrete scalars; None for tracers (inject_hyperparams)."""
  if isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0:
    return float(value)
  raise TypeError(f"expected a real number, got {type(value).__name__}")


def check_range(name: str, value, *, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False, high_open: bool = False) -> None:
  """Raise ``ValueError('<name> must be in <range>, got <value>')`` when out of range."""
  x = _concrete(value)
  if x is None:
    return
  too_low = x <= low if low_open else x < low
  too_high = x >= high if high_open else x > high
  if too_low or too_high or math.isnan(x):
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ValueError(f"{name} must be in {interval}, got {value}")


def check_num_classes(num_classes) -> None:
  """Raise ``ValueError('num_classes must be an integer >= 2, got ...')`` otherwise."""
  if (not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool)
      or num_classes < 2):
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
