"""The README's Python snippets run as written (in order, in one namespace)."""

import pathlib
import re

import numpy as np

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
  # MLC over SANER: the update is SANER's rule by hand (NumPy) on the gradient of the
  # soft cross-entropy against the step's corrected labels, at w and at w + ε.
  ns = namespace
  x, corrected = np.asarray(ns["x"], np.float64), np.asarray(ns["res"].corrected, np.float64)
  params = {k: np.asarray(v, np.float64) for k, v in ns["params"].items()}

  def grad(p):  # d/dp mean_i -Σ_c q_ic log softmax(x_i W + b)_c
    z = x @ p["w"] + p["b"]
    prob = np.exp(z - z.max(1, keepdims=True))
    d = (prob / prob.sum(1, keepdims=True) - corrected) / len(x)
    return {"w": x.T @ d, "b": d.sum(0)}

  g = grad(params)
  np.testing.assert_allclose(ns["res"].grads_w["w"], g["w"], rtol=1e-4, atol=1e-6)
  norm = np.sqrt(sum((v ** 2).sum() for v in g.values()))
  g_sam = grad({k: params[k] + 0.1 * g[k] / norm for k in g})
  downs = 0
  for k in g:
    down = (np.sign(g_sam[k]) * np.sign(g[k]) > 0) & (np.abs(g_sam[k]) < np.abs(g[k]))
    expected = -0.1 * np.where(down, 0.5 * g_sam[k], g_sam[k])
    np.testing.assert_allclose(ns["updates"][k], expected, rtol=1e-4, atol=1e-7)
    downs += int(down.sum())
  assert 0 < downs < sum(v.size for v in g.values())  # both kinds of entries occur


def test_readme_reads_in_minutes():
  assert len(README.read_text().splitlines()) <= 250
