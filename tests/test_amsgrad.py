"""torch_amsgrad against PyTorch's AMSGrad recomputed in NumPy (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnoisy.meta import torch_amsgrad

LR, B1, B2, EPS = 3e-4, 0.9, 0.999, 1e-8


def torch_rule(grads, lr=LR, b1=B1, b2=B2, eps=EPS):
  """torch.optim.Adam(amsgrad=True) (no weight decay), step by step in NumPy: the max
  of the raw second moment, the bias corrections of the current step."""
  m = v = vmax = np.zeros_like(grads[0])
  out = []
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    vmax = np.maximum(vmax, v)
    denom = np.sqrt(vmax) / np.sqrt(1 - b2 ** t) + eps
    out.append(-(lr / (1 - b1 ** t)) * m / denom)
  return out


def run(tx, grads):
  state, out = tx.init(jnp.zeros_like(grads[0])), []
  for g in grads:
    u, state = tx.update(jnp.asarray(g), state)
    out.append(np.asarray(u))
  return out


def _grads(kind, steps=7):
  rng = np.random.default_rng(0)
  g0 = rng.normal(size=(4, 3)) * np.array([1.0, 1e-3, 10.0])
  scale = {"shrinking": 0.5, "growing": 1.7}
  if kind == "mixed":  # each entry's own trend, signs flipping
    return [g0 * rng.choice([0.3, 2.0], size=g0.shape) ** t * (-1) ** t
            for t in range(steps)]
  return [g0 * scale[kind] ** t for t in range(steps)]


@pytest.mark.parametrize("kind", ["shrinking", "growing", "mixed"])
def test_updates_equal_torch_rule(kind):
  grads = _grads(kind)
  with jax.enable_x64(True):
    got = run(torch_amsgrad(LR), grads)
  for a, b in zip(got, torch_rule(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_differs_from_optax_amsgrad_from_step_two():
  """optax keeps the max of the bias-corrected moment: equal at step 1, then smaller
  steps on a shrinking sequence (why the torch convention needs its own transform)."""
  grads = _grads("shrinking")
  with jax.enable_x64(True):
    ours = run(torch_amsgrad(LR), grads)
    theirs = run(optax.amsgrad(LR), grads)
  np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
  ratio = np.abs(ours[1]) / np.abs(theirs[1])
  assert ratio.min() > 1.2


def test_float32_state_and_jit():
  tx = torch_amsgrad(1e-2)
  params = {"a": jnp.ones((3,), jnp.float32)}
  state = tx.init(params)
  u, state = jax.jit(tx.update)({"a": jnp.full((3,), 0.5, jnp.float32)}, state)
  assert u["a"].dtype == jnp.float32 and int(state.count) == 1
  np.testing.assert_allclose(u["a"], -1e-2 / (1 + 1e-8 / 0.5), rtol=1e-6)
