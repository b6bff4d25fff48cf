"""Hyper-parameter records: one frozen dataclass per method, as big_vision keeps one
config section per algorithm (``config.gsam``).

A field is declared with :func:`hp`: its default (the library function's, where the
method has one), a one-line help that names its source, its allowed values, and
whether a run may sweep it in one jit. A field may hold another record chosen by name
(SANER's ``base``: any SAM-family record). From the declarations the trainer derives
validation, the command line's flags and their help, and the sweepable set.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Sequence

from jaxnoisy._validate import check_range


def hp(default, help: str, *, low: float = -math.inf, high: float = math.inf,
       low_open: bool = False, high_open: bool = False, choices: Optional[Sequence] = None,
       records: Optional[Mapping[str, type]] = None, sweepable: bool = False,
       flag_type: Optional[Callable[[str], Any]] = None, aliases: Sequence[str] = ()) -> Any:
  """A hyper-parameter field.

  Args:
    default: the default value (``None`` means "unset": no range check applies to it).
    help: one line for ``--help``, with the value's source (paper, authors' code).
    low, high, low_open, high_open: the allowed interval of a number.
    choices: the allowed values of a string.
    records: ``{name: record class}``: the field holds one of these records, and
      :func:`set_value` also accepts its name (that record with its defaults).
    sweepable: the value enters the step as a traced scalar, so a run may train several
      values side by side (``--sweep``); it must not set a shape or a Python branch.
    flag_type: parses the flag's text (default: the type of ``default``).
    aliases: extra flag spellings (e.g. ``--lr``).
  """
  if records is not None:
    choices = tuple(records)
  meta = dict(help=help, low=low, high=high, low_open=low_open, high_open=high_open,
              choices=tuple(choices) if choices is not None else None, sweepable=sweepable,
              flag_type=flag_type, aliases=tuple(aliases),
              records=dict(records) if records is not None else None)
  if isinstance(default, (tuple, list, dict)):
    return dataclasses.field(default_factory=lambda: default, metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


def record_name(field: dataclasses.Field, value) -> str:
  """The name under which a nested record field's ``value`` is chosen."""
  return next(k for k, cls in field.metadata["records"].items() if type(value) is cls)


def check_field(field: dataclasses.Field, value) -> None:
  """Raises a one-line ``ValueError`` naming the parameter when ``value`` is not allowed."""
  m = field.metadata
  if value is None or not m:
    return
  if m["records"] is not None:
    if type(value) not in m["records"].values():
      raise ValueError(f"{field.name} must be one of {list(m['records'])}, got {value!r}")
    check_record(value)
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


def _nested(record):
  """The fields of ``record`` that hold another record, with their values."""
  return [(f, getattr(record, f.name)) for f in dataclasses.fields(record)
          if f.metadata.get("records") is not None]


def names(record) -> list[str]:
  """Every name :func:`set_value` accepts on ``record``: its fields, then those of the
  records nested in it."""
  out = [f.name for f in dataclasses.fields(record)]
  for _, inner in _nested(record):
    out += [n for n in names(inner) if n not in out]
  return out


def sweepable(record) -> tuple[str, ...]:
  """The sweepable names of a record instance (nested records included), sorted."""
  out = {f.name for f in dataclasses.fields(record) if f.metadata.get("sweepable")}
  for _, inner in _nested(record):
    out |= set(sweepable(inner))
  return tuple(sorted(out))


def get_value(record, name: str):
  """The value of ``name`` on ``record``: its own field, else a nested record's."""
  if name in {f.name for f in dataclasses.fields(record)}:
    return getattr(record, name)
  for _, inner in _nested(record):
    if name in names(inner):
      return get_value(inner, name)
  raise ValueError(f"{name} is not a hyper-parameter of {type(record).__name__} "
                   f"(its hyper-parameters: {', '.join(names(record)) or 'none'})")


def set_value(record, name: str, value):
  """A copy of ``record`` with ``name`` set: its own field, else the field of a nested
  record. A nested record field also takes a name: that record with its defaults, but
  for the fields it shares with the record it replaces (e.g. SANER's ρ carries over
  from one base to another)."""
  fields = {f.name: f for f in dataclasses.fields(record)}
  if name in fields:
    f = fields[name]
    if f.metadata.get("records") is not None and isinstance(value, str):
      if value not in f.metadata["records"]:
        raise ValueError(f"{name} must be one of {list(f.metadata['records'])}, "
                         f"got {value!r}")
      old, cls = getattr(record, name), f.metadata["records"][value]
      keep = {g.name for g in dataclasses.fields(cls)} & {g.name for g in
                                                         dataclasses.fields(old)}
      value = cls(**{k: getattr(old, k) for k in keep})
    return dataclasses.replace(record, **{name: value})
  for f, inner in _nested(record):
    if name in names(inner):
      return dataclasses.replace(record, **{f.name: set_value(inner, name, value)})
  raise ValueError(f"{name} is not a hyper-parameter of {type(record).__name__} "
                   f"(its hyper-parameters: {', '.join(names(record)) or 'none'})")


def set_values(record, changes: dict):
  """:func:`set_value` for each of ``changes``; the nested records chosen by name first
  (outer before inner: a method's ``ascent``, then SANER's ``base``), so that the other
  names set their fields."""
  selectors = [f.name for f in declarations(type(record)) if f.metadata.get("records")]
  order = lambda n: selectors.index(n) if n in selectors else len(selectors)
  for name in sorted(changes, key=order):
    record = set_value(record, name, changes[name])
  return record


def to_dict(record) -> dict:
  """The record as plain data: a nested record as ``{"name": ..., **its fields}``."""
  out = {}
  for f in dataclasses.fields(record):
    value = getattr(record, f.name)
    if f.metadata.get("records") is not None:
      value = {"name": record_name(f, value), **to_dict(value)}
    out[f.name] = value
  return out


def declarations(record_cls: type) -> list[dataclasses.Field]:
  """The fields a record class may hold: its own, then those of every record that can
  be nested in it (each name once)."""
  out: dict[str, dataclasses.Field] = {}
  for f in dataclasses.fields(record_cls):
    out.setdefault(f.name, f)
    for cls in (f.metadata.get("records") or {}).values():
      for g in declarations(cls):
        out.setdefault(g.name, g)
  return list(out.values())
