"""``jaxnoisy-config [METHOD ...]``: the trainer's configuration fields, from the records.

Each field with its command-line flag, default, allowed values, whether it can be swept,
and its help: the reference cannot drift from the code, since it is the code's own
declarations. Without arguments: the run's fields (``TrainConfig``), then every
registered method's record. With method names: those methods' records, each with the
fields of the records it may nest (SANER's base). It writes Markdown: use it in MyST
pages.
"""

import dataclasses
import math

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _allowed(meta) -> str:
  if meta.get("records"):
    return ", ".join(f"`{name}`" for name in meta["records"])
  if meta["choices"]:
    return ", ".join(f"`{c}`" for c in meta["choices"])
  low, high = meta["low"], meta["high"]
  if low == -math.inf and high == math.inf:
    return ""
  left = "(" if meta["low_open"] or low == -math.inf else "["
  right = ")" if meta["high_open"] or high == math.inf else "]"
  return f"{left}{'−∞' if low == -math.inf else f'{low:g}'}, " \
         f"{'∞' if high == math.inf else f'{high:g}'}{right}"


def _shown(field, value) -> str:
  """A default as the flag takes it (a tuple comma-separated, a record by its name)."""
  from jaxnoisy.train import hparams as hparams_lib

  if value is None:
    return "(unset)"
  if dataclasses.is_dataclass(value):
    value = hparams_lib.record_name(field, value)
  elif isinstance(value, (tuple, list)):
    value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
  return f"`{value}`"


def _flags(field) -> str:
  """The field's flags as ``jaxnoisy train`` spells them (booleans with their --no-)."""
  flag = "--" + field.name.replace("_", "-")
  names = [flag, *field.metadata["aliases"]]
  if isinstance(field.default, bool):
    names.append("--no-" + flag[2:])
  return ", ".join(f"`{n}`" for n in names)


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def _table(title: str, rows) -> list[str]:
  """``rows``: ``(field, default)`` pairs."""
  lines = [title, "", "| flag | default | allowed | sweep | meaning |",
           "|---|---|---|---|---|"]
  for f, default in rows:
    meta = f.metadata
    lines.append(f"| {_flags(f)} | {_cell(_shown(f, default))} | "
                 f"{_cell(_allowed(meta))} | {'yes' if meta['sweepable'] else ''} | "
                 f"{_cell(meta['help'])} |")
  return lines + [""]


def _run_rows():
  from jaxnoisy.train.config import TrainConfig

  for f in dataclasses.fields(TrainConfig):
    if f.name != "hparams":  # the method's record: its own tables
      yield f, (f.default_factory() if f.default_factory is not dataclasses.MISSING
                else f.default)


def _method_rows(registration):
  from jaxnoisy.train import hparams as hparams_lib

  defaults = registration.hparams()
  for f in hparams_lib.declarations(registration.hparams):
    try:
      yield f, hparams_lib.get_value(defaults, f.name)
    except ValueError:  # a field of a nested record not chosen by default
      yield f, f.default


class ConfigTable(SphinxDirective):
  """Renders the run's and the methods' fields as Markdown tables."""

  optional_arguments = 20

  def run(self):
    from jaxnoisy.train.methods import METHODS

    lines = []
    if not self.arguments:
      lines += _table("**The run** (`TrainConfig`; `--method` picks the method's record)",
                      _run_rows())
    for name in self.arguments or METHODS:
      if name not in METHODS:
        raise self.error(f"jaxnoisy-config: no method named {name!r}")
      registration = METHODS[name]
      record = registration.hparams
      doc = (record.__doc__ or "").strip().splitlines()[0].rstrip(".")
      rows = list(_method_rows(registration))
      title = f"**`--method {name}`** (`{record.__name__}`: {doc})"
      lines += _table(title, rows) if rows else [title + ": no hyper-parameters of its "
                                                 "own.", ""]
    node = nodes.container()
    self.state.nested_parse(StringList(lines, source="jaxnoisy.train.config"),
                            self.content_offset, node)
    return node.children


def setup(app):
  app.add_directive("jaxnoisy-config", ConfigTable)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
