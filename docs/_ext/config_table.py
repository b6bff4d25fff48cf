"""``jaxnoisy-config [Record ...]``: the trainer's configuration fields, from the records.

One table per hyper-parameter record, each field with its command-line flag, default,
allowed values, whether it can be swept, and its help: the reference cannot drift from
the code, since it is the code's own declarations. Without arguments: every record of
``jaxnoisy.train.config.RECORDS``, each field once. With record names (classes of
``jaxnoisy.train``'s method modules): those records, each with the fields it declares
itself (not those of its base records). It writes Markdown: use it in MyST pages.
"""

import dataclasses
import math

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _allowed(meta) -> str:
  if meta["choices"]:
    return ", ".join(f"`{c}`" for c in meta["choices"])
  low, high = meta["low"], meta["high"]
  if low == -math.inf and high == math.inf:
    return ""
  left = "(" if meta["low_open"] or low == -math.inf else "["
  right = ")" if meta["high_open"] or high == math.inf else "]"
  return f"{left}{'−∞' if low == -math.inf else f'{low:g}'}, " \
         f"{'∞' if high == math.inf else f'{high:g}'}{right}"


def _default(field) -> str:
  """The default as the flag takes it (a tuple comma-separated; unset: none)."""
  value = field.default_factory() if field.default_factory is not dataclasses.MISSING \
      else field.default
  if value is None:
    return "(unset)"
  if isinstance(value, (tuple, list)):
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


def _records(names):
  """``[(record, fields)]``: all records' fields once each, or the named records' own."""
  from jaxnoisy.train import config, fbr_method, meta_methods, sam_methods

  if not names:
    out, seen = [], set()
    for record in config.RECORDS:
      out.append((record, [f for f in dataclasses.fields(record) if f.name not in seen]))
      seen.update(f.name for f in out[-1][1])
    return out
  modules = (config, sam_methods, meta_methods, fbr_method)
  out = []
  for name in names:
    record = next((getattr(m, name) for m in modules if hasattr(m, name)), None)
    if record is None or not dataclasses.is_dataclass(record):
      raise ValueError(f"jaxnoisy-config: no hyper-parameter record named {name!r}")
    inherited = {f.name for base in record.__mro__[1:] if dataclasses.is_dataclass(base)
                 for f in dataclasses.fields(base)}
    out.append((record, [f for f in dataclasses.fields(record) if f.name not in inherited]))
  return out


class ConfigTable(SphinxDirective):
  """Renders records' fields as list-tables."""

  optional_arguments = 20

  def run(self):
    lines = []
    for record, own in _records(self.arguments):
      if not own:
        continue
      doc = (record.__doc__ or "").strip().rstrip(".")
      lines += [f"**`{record.__name__}`**: {doc}", "",
                "| flag | default | allowed | sweep | meaning |", "|---|---|---|---|---|"]
      for f in own:
        meta = f.metadata
        lines.append(f"| {_flags(f)} | {_cell(_default(f))} | "
                     f"{_cell(_allowed(meta))} | {'yes' if meta['sweepable'] else ''} | "
                     f"{_cell(meta['help'])} |")
      lines.append("")
    node = nodes.container()
    self.state.nested_parse(StringList(lines, source="jaxnoisy.train.config"),
                            self.content_offset, node)
    return node.children


def setup(app):
  app.add_directive("jaxnoisy-config", ConfigTable)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
