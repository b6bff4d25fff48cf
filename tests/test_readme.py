"""The README's Python snippets run as written (in order, in one namespace)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(path: pathlib.Path) -> list[str]:
  """The ```python fenced blocks of a Markdown (or MyST) file, in order."""
  return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def run_readme(namespace: dict) -> None:
  for block in python_blocks(README):
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102


def test_readme_python_blocks_run():
  assert len(python_blocks(README)) >= 2  # a transform and a meta step in a user's loop
  namespace: dict = {}
  run_readme(namespace)
  weights = namespace["all_weights"]
  # The meta step moved the batch's weights (and only those) and kept them in [0, 1].
  assert float(weights.min()) >= 0.0 and float(weights.max()) <= 1.0
  assert float(abs(weights[:8] - 1).max()) > 0 and bool((weights[8:] == 1).all())


def test_readme_reads_in_minutes():
  assert len(README.read_text().splitlines()) <= 250
