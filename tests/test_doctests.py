"""Every docstring example of the listed modules runs and prints what it says."""

import doctest
import importlib

import pytest

# Modules whose docstring examples are doctests; each must hold at least one.
MODULES = [
    "jaxnoisy.meta.correction",
    "jaxnoisy.meta.fbr",
    "jaxnoisy.meta.phases",
    "jaxnoisy.meta.reweight",
    "jaxnoisy.ncsam",
    "jaxnoisy.sam",
    "jaxnoisy.sam_variants",
    "jaxnoisy.saner",
    "jaxnoisy.tree",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  # A fresh namespace per docstring: an example may only use the names it defines.
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  tests = finder.find(module, name, globs={})
  for test in tests:
    runner.run(test, out=print)
  result = runner.summarize(verbose=False)
  assert result.attempted > 0, f"{name} has no docstring examples"
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
