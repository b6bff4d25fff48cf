"""An independent NumPy reference for softmax regression, shared by the SAM-family tests.

The model is ``logits = x @ w + b`` on a params dict ``{"w": (D, C), "b": (C,)}`` with the mean
cross-entropy loss; the number of classes C is read from the params. ``loss`` is the same model
in JAX, for ``jax.grad`` on the side under test.
"""

import numpy as np
import optax


def make_problem(seed, n=32, d=5, c=3):
  """(X, Y, PARAMS) from ``np.random.default_rng(seed)``: X (n, d), Y in [0, c), w (d, c), b (c,)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = rng.integers(0, c, size=n)
  params = {"w": rng.normal(size=(d, c)) * 0.5, "b": rng.normal(size=(c,)) * 0.1}
  return x, y, params


# --- NumPy ---------------------------------------------------------------------------
def np_logits(params, x):
  return x @ params["w"] + params["b"]


def np_probs(params, x):
  """Softmax probabilities of the model, row-wise."""
  logits = np_logits(params, x)
  p = np.exp(logits - logits.max(1, keepdims=True))
  return p / p.sum(1, keepdims=True)


def np_grad(params, x, y):
  """Gradient of the mean cross-entropy with respect to {"w", "b"}."""
  num_classes = np.shape(params["b"])[0]
  dlogits = (np_probs(params, x) - np.eye(num_classes)[y]) / len(y)
  return {"w": x.T @ dlogits, "b": dlogits.sum(0)}


def np_norm(tree):
  """Global L2 norm of a dict of arrays (NumPy or JAX), computed in float64."""
  return np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in tree.values()))


def np_dot(a, b):
  return sum(np.sum(a[k] * b[k]) for k in a)


def np_sam_grad(params, x, y, rho, adaptive=False, eta=0.01):
  """(g, g_SAM): the gradient at w and at w + ε, with ε = ρ T² g / ‖T g‖.

  T = 1 for SAM, T = |w| + η (elementwise) for adaptive SAM (ASAM).
  """
  g = np_grad(params, x, y)
  t = {k: (np.abs(params[k]) + eta) if adaptive else np.ones_like(params[k]) for k in params}
  norm = np_norm({k: t[k] * g[k] for k in g})
  eps = {k: rho * t[k] ** 2 * g[k] / norm for k in g}
  return g, np_grad({k: params[k] + eps[k] for k in params}, x, y)


# --- JAX -----------------------------------------------------------------------------
def loss(params, x, y):
  logits = x @ params["w"] + params["b"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
