"""Hyper-parameter records: one frozen dataclass per method (or family), as big_vision
keeps one config section per algorithm.

A field is declared with :func:`hp`: its default, a one-line help that names its source,
its allowed values, and whether a run may sweep it in one jit. From these records the
trainer derives everything else: the flat :class:`~jaxnoisy.train.config.TrainConfig`,
its validation, the command line's flags and their help, and the sweepable set.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

from jaxnoisy._validate import check_range


def hp(default, help: str, *, low: float = -math.inf, high: float = math.inf,
       low_open: bool = False, high_open: bool = False, choices: Optional[Sequence] = None,
       sweepable: bool = False, flag_type: Optional[Callable[[str], Any]] = None,
       aliases: Sequence[str] = ()) -> Any:
  """A hyper-parameter field.

  Args:
    default: the default value (``None`` means "unset": no range check applies to it).
    help: one line for ``--help``, with the value's source (paper, authors' code).
    low, high, low_open, high_open: the allowed interval of a number.
    choices: the allowed values of a string.
    sweepable: the value enters the step as a traced scalar, so a run may train several
      values side by side (``--sweep``); it must not set a shape or a Python branch.
    flag_type: parses the flag's text (default: the type of ``default``).
    aliases: extra flag spellings (e.g. ``--lr``).
  """
  meta = dict(help=help, low=low, high=high, low_open=low_open, high_open=high_open,
              choices=tuple(choices) if choices is not None else None, sweepable=sweepable,
              flag_type=flag_type, aliases=tuple(aliases))
  if isinstance(default, (tuple, list, dict)):
    return dataclasses.field(default_factory=lambda: default, metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


def check_field(field: dataclasses.Field, value) -> None:
  """Raises a one-line ``ValueError`` naming the parameter when ``value`` is not allowed."""
  m = field.metadata
  if value is None or not m:
    return
  if m["choices"] is not None:
    if value not in m["choices"]:
      raise ValueError(f"{field.name} must be one of {list(m['choices'])}, got {value!r}")
    return
  values = value if isinstance(value, tuple) else (value,)
  for v in values:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      continue
    check_range(field.name, v, low=m["low"], high=m["high"], low_open=m["low_open"],
                high_open=m["high_open"])
  if isinstance(field.default, int) and not isinstance(field.default, bool) and \
      not isinstance(value, int):
    raise ValueError(f"{field.name} must be an integer, got {value!r}")


def check_record(record) -> None:
  """Checks every field of a hyper-parameter record (dataclass instance)."""
  for f in dataclasses.fields(record):
    check_field(f, getattr(record, f.name))


def sweepable(*records: type) -> tuple[str, ...]:
  """The names of the sweepable fields of these record classes, sorted."""
  return tuple(sorted({f.name for r in records for f in dataclasses.fields(r)
                       if f.metadata.get("sweepable")}))


def merged_fields(records: Sequence[type]) -> list[dataclasses.Field]:
  """The fields of several records, each name once (a field shared through a base
  record, such as the SAM radius ``rho``, is the same declaration everywhere)."""
  out: dict[str, dataclasses.Field] = {}
  for record in records:
    for f in dataclasses.fields(record):
      if f.name in out and out[f.name].metadata is not f.metadata:
        raise TypeError(f"hyper-parameter {f.name!r} is declared twice "
                        f"(in {record.__name__} and another record): share one base record")
      out.setdefault(f.name, f)
  return list(out.values())
