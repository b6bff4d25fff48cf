"""The README's Python snippets run as written (in order, in one namespace)."""

import pathlib
import re

from jaxnoisy.train.methods import METHODS

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert len(blocks) >= 4
  namespace: dict = {}
  before = dict(METHODS)
  try:
    for block in blocks:
      exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert "fractions" in namespace and set(namespace["fractions"]) == {"A", "B", "C"}
    assert "my_method" in METHODS  # the snippet's registration
  finally:  # the other tests see the built-in table
    METHODS.clear()
    METHODS.update(before)
