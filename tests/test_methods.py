"""The trainer's method table: warm-up switching and the SANER/NCSAM wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnoisy
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.methods import METHODS, skip_during_warmup

X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
Y = np.arange(16) % 3


def loss(p):
  return optax.softmax_cross_entropy_with_integer_labels(X @ p["w"], Y).mean()


def test_skip_during_warmup_passes_gradients_through():
  params = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)}
  inner = jaxnoisy.sam(0.2)
  tx = skip_during_warmup(inner)
  state = tx.init(params)
  g = jax.grad(loss)(params)
  warm, _ = tx.update(g, state, params, grad_fn=jax.grad(loss), warmup=True)
  after, _ = tx.update(g, state, params, grad_fn=jax.grad(loss), warmup=False)
  ref, _ = inner.update(g, inner.init(params), params, grad_fn=jax.grad(loss))
  np.testing.assert_array_equal(warm["w"], g["w"])
  np.testing.assert_array_equal(after["w"], ref["w"])
  assert not np.allclose(ref["w"], g["w"])


@pytest.mark.parametrize("flag,value,name", [
    ("down_weight", 1.5, "down_weight"), ("flip_rate", -0.1, "flip_rate"),
    ("kappa", -1.0, "kappa"), ("rho", 0.0, "rho"), ("saner_base", "fsam", "saner_base"),
    ("gsam_alpha", -0.5, "gsam_alpha")])
def test_bad_method_hyperparameters(flag, value, name):
  with pytest.raises(ValueError, match=name):
    TrainConfig(method="saner", **{flag: value}).validate()


@pytest.mark.parametrize("base", ["sam", "asam", "gsam"])
def test_saner_over_each_base_with_down_weight_one_is_the_base(base):
  """SANER at a = 1 over each base equals the base method's own transform."""
  params = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)), jnp.float32)}
  c = TrainConfig(method="saner", saner_base=base, down_weight=1.0, rho=0.3)
  grad_fn = lambda p: (jax.grad(loss)(p), None)
  g = jax.grad(loss)(params)
  tx = METHODS["saner"].transform(c, None, 10)
  ref_tx = METHODS[base].transform(c, None, 10)
  out, _ = tx.update(g, tx.init(params), params, grad_fn=grad_fn, progress=0.5)
  ref, _ = ref_tx.update(g, ref_tx.init(params), params, grad_fn=grad_fn, progress=0.5)
  np.testing.assert_array_equal(out["w"], ref["w"])
