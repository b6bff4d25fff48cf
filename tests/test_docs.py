"""The documentation site: its examples run, and it builds with warnings as errors,
listing every public name with its math rendered."""

import pathlib
import re
import subprocess
import sys
import zlib

import pytest

from jaxnoisy.train.methods import METHODS
from test_readme import README, python_blocks, run_readme

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def pages() -> list[pathlib.Path]:
  """The MyST pages, Getting started first (the others continue from its examples)."""
  rest = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
  first = DOCS / "getting_started.md"
  return [first] + [p for p in rest if p != first]


def test_docs_python_blocks_run():
  # Getting started includes the README's examples; every page continues from them.
  namespace: dict = {}
  before = dict(METHODS)
  try:
    run_readme(namespace)
    ran = 0
    for page in pages():
      for block in python_blocks(page):
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102
        ran += 1
    assert ran >= 4
    assert set(namespace["fractions"]) == {"A", "B", "C"}   # methods/saner.md
    assert "my_method" in METHODS                            # trainer.md registers it
  finally:  # the other tests see the built-in table
    METHODS.clear()
    METHODS.update(before)


def test_readme_markers_the_docs_include_exist():
  text = README.read_text()
  for page in pages():
    for start, end in re.findall(r":start-after: (.*)\n:end-before: (.*)\n", page.read_text()):
      assert text.index(start) < text.index(end), (page, start)


def test_every_results_report_is_a_docs_page():
  included = "".join(page.read_text() for page in pages())
  reports = sorted((ROOT / "experiments" / "results").glob("*.md"))
  assert reports
  for report in reports:
    assert f"experiments/results/{report.name}" in included, f"{report.name} is in no page"


def public_names() -> set[str]:
  """Every name the API reference must list, as the reference spells it."""
  import inspect

  import jaxnoisy
  from jaxnoisy import meta, noise, tree

  # jaxnoisy.global_norm is listed where it lives, as jaxnoisy.tree.global_norm.
  names = {f"jaxnoisy.{n}" for n in jaxnoisy.__all__
           if n not in meta.__all__ and n not in ("tree", "global_norm")}
  names |= {f"jaxnoisy.meta.{n}" for n in meta.__all__}
  names |= {f"jaxnoisy.noise.{n}" for n in noise.__all__}
  names |= {f"jaxnoisy.tree.{n}" for n, f in vars(tree).items()
            if inspect.isfunction(f) and f.__module__ == tree.__name__
            and not n.startswith("_")}
  names |= {"jaxnoisy.train.config.TrainConfig", "jaxnoisy.train.config.load_config",
            "jaxnoisy.train.interface.Method", "jaxnoisy.train.interface.Registration",
            "jaxnoisy.train.methods.METHODS", "jaxnoisy.train.methods.register"}
  return names


def inventory(path: pathlib.Path) -> dict[str, str]:
  """``{python name: page#anchor}`` from Sphinx's objects.inv (format version 2)."""
  data = path.read_bytes()
  for _ in range(4):  # four header lines, then zlib
    data = data[data.index(b"\n") + 1:]
  out = {}
  for line in zlib.decompress(data).decode().splitlines():
    match = re.match(r"(.+?)\s+(py:\w+)\s+-?\d+\s+(\S+)", line)
    if match:
      name, _, uri = match.groups()
      out[name] = uri.replace("$", name)
  return out


def test_site_builds_warning_free_with_every_public_name_and_its_math(tmp_path):
  pytest.importorskip("sphinx")
  pytest.importorskip("myst_parser")
  pytest.importorskip("furo")
  out = tmp_path / "html"
  proc = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
       "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
      capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-6000:]

  listed = inventory(out / "objects.inv")
  missing = sorted(public_names() - set(listed))
  assert not missing, f"not in the API reference: {missing}"

  # Every documented function whose docstring has a `.. math::` block shows it rendered.
  import importlib
  unrendered = []
  for name in sorted(public_names()):
    module, _, attr = name.rpartition(".")
    doc = getattr(importlib.import_module(module), attr).__doc__ or ""
    if ".. math::" not in doc:
      continue
    page, _, anchor = listed[name].partition("#")
    html = (out / page).read_text()
    start = html.index(f'id="{anchor}"')
    following = html.find('id="jaxnoisy.', start + 1)
    if 'class="math' not in html[start:following if following > 0 else None]:
      unrendered.append(name)
  assert not unrendered, f"math not rendered for {unrendered}"
  assert (out / "_images" / "main_job.png").exists()  # the results pages carry the plots

  # The configuration reference lists every flag: the run's and every method's record's.
  import dataclasses
  from jaxnoisy.train import hparams
  from jaxnoisy.train.config import TrainConfig
  from jaxnoisy.train.methods import METHODS
  reference = (out / "api" / "trainer.html").read_text()
  names = {f.name for f in dataclasses.fields(TrainConfig)} - {"hparams"}
  for registration in METHODS.values():
    names |= {f.name for f in hparams.declarations(registration.hparams)}
  unlisted = sorted(n for n in names
                    if f">--{n.replace('_', '-')}</span></code>" not in reference)
  assert not unlisted, f"flags missing from the configuration reference: {unlisted}"
