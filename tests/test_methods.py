"""The trainer's method table: warm-up switching and the SANER/NCSAM wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnoisy
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.interface import ModelSpec, StepInputs
from jaxnoisy.train.methods import build
from jaxnoisy.train.sam_methods import during_warmup

X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
Y = np.arange(16) % 3


def loss(p):
  return optax.softmax_cross_entropy_with_integer_labels(X @ p["w"], Y).mean()


def test_during_warmup_switches_to_the_warmup_optimizer():
  """warmup=True runs the warm-up transform (identity: plain SGD; SAM), else inner."""
  params = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)}
  inner = jaxnoisy.sam(0.2)
  tx = during_warmup(inner, optax.identity())
  state = tx.init(params)
  g = jax.grad(loss)(params)
  warm, _ = tx.update(g, state, params, grad_fn=jax.grad(loss), warmup=True)
  after, _ = tx.update(g, state, params, grad_fn=jax.grad(loss), warmup=False)
  ref, _ = inner.update(g, inner.init(params), params, grad_fn=jax.grad(loss))
  np.testing.assert_array_equal(warm["w"], g["w"])
  np.testing.assert_array_equal(after["w"], ref["w"])
  assert not np.allclose(ref["w"], g["w"])
  # A SAM warm-up (NCSAM's other choice) is SAM's own update.
  sam_warm = during_warmup(jaxnoisy.sam(0.5), jaxnoisy.sam(0.2))
  out, _ = sam_warm.update(g, sam_warm.init(params), params, grad_fn=jax.grad(loss),
                           warmup=True)
  np.testing.assert_array_equal(out["w"], ref["w"])


@pytest.mark.parametrize("method,flag,value", [
    ("saner", "down_weight", 1.5), ("ncsam", "flip_rate", -0.1), ("ncsam", "kappa", -1.0),
    ("saner", "rho", 0.0), ("saner", "base", "samwo"), ("gsam", "alpha", -0.5),
    ("fsam", "lmbda", 1.5), ("fsam", "sigma", -1.0), ("vasso", "theta", -0.1)])
def test_bad_method_hyperparameters(method, flag, value):
  with pytest.raises(ValueError, match=flag):
    TrainConfig(method=method).replace(**{flag: value}).validate()


def test_a_name_the_method_does_not_have_is_refused():
  with pytest.raises(ValueError, match="alpha is not a hyper-parameter of SAMHparams"):
    TrainConfig(method="sam").replace(alpha=0.1)


@pytest.mark.parametrize("base", ["sam", "asam", "gsam", "fsam", "vasso"])
def test_saner_over_each_base_with_down_weight_one_is_the_base(base):
  """SANER at a = 1 over each base equals the base method's own transform."""
  params = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)), jnp.float32)}
  c = TrainConfig(method="saner").replace(base=base, down_weight=1.0, rho=0.3)
  grad_fn = lambda p: (jax.grad(loss)(p), None)
  g = jax.grad(loss)(params)
  spec = ModelSpec(num_train=16, num_classes=3, feature_dim=4, steps_per_epoch=10)
  tx = build(c, spec).transform
  ref_tx = build(TrainConfig(method=base, hparams=c.hparams.base), spec).transform
  out, _ = tx.update(g, tx.init(params), params, grad_fn=grad_fn, progress=0.5)
  ref, _ = ref_tx.update(g, ref_tx.init(params), params, grad_fn=grad_fn, progress=0.5)
  np.testing.assert_array_equal(out["w"], ref["w"])


# BOME-MLC: at w and at its T = 5 lower-level iterates (the code's step_mlcbome).
@pytest.mark.parametrize("method,noisy_passes", [("mlc", 1), ("bome_mlc", 6), ("ebomlc", 2)])
def test_correction_methods_take_batch_statistics_from_their_own_pass(method, noisy_passes):
  """With a batch-norm-like model (its state: the batch mean of the features), the
  statistics handed to the real step are those of the noisy batch at the point the real
  step starts from (w; EBOMLC: w₁), and the step
  runs no forward pass of the noisy batch beyond those its method needs (MLC: the
  look-ahead's; BOME-MLC: at w and each inner iterate; EBOMLC: at w and w₁)."""
  rng = np.random.default_rng(3)
  params = {"w1": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)}
  x, xc = jnp.asarray(X[:8]), jnp.asarray(X[8:])
  calls = []

  def apply(p, inputs):
    calls.append(inputs is x)
    h = jnp.tanh(inputs @ p["w1"])
    return h @ p["w2"], h, {"mean": jnp.mean(h, axis=0)}

  config = TrainConfig(method=method, clean_batch_size=8)
  spec = ModelSpec(num_train=16, num_classes=3, feature_dim=5, steps_per_epoch=2)
  m = build(config, spec)
  out = m.gradients(StepInputs(
      apply=apply, params=params, method_state=m.init_state(jax.random.key(0)), x=x,
      y=jnp.asarray(Y[:8]), index=jnp.arange(8), clean_x=xc, clean_y=jnp.asarray(Y[8:]),
      key=jax.random.key(1), step=jnp.int32(0), learning_rate=jnp.float32(0.1),
      apply_eval=lambda p, inputs: apply(p, inputs)[:2], momentum_buffer=None))
  # NumPy, at w (EBOMLC: at w₁, where its optimizer steps from, as the authors' code).
  at = out.step_from if method == "ebomlc" else params
  expected = np.tanh(X[:8] @ np.asarray(at["w1"])).mean(axis=0)
  np.testing.assert_allclose(out.model_state["mean"], expected, rtol=1e-5)
  assert sum(calls) == noisy_passes


def test_mlc_with_k_gradient_steps_steps_the_lcn_every_k_steps():
  """microsoft/MLC's --gradient_steps K: the LCN moves on every K-th real step, on the
  hypergradients accumulated since; in between it stays and the accumulator fills."""
  rng = np.random.default_rng(4)
  params = {"w1": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)}
  apply = lambda p, x: (jnp.tanh(x @ p["w1"]) @ p["w2"], jnp.tanh(x @ p["w1"]), {})
  config = TrainConfig(method="mlc", clean_batch_size=8).replace(gradient_steps=2)
  spec = ModelSpec(num_train=16, num_classes=3, feature_dim=5, steps_per_epoch=4)
  m = build(config, spec)
  state = m.init_state(jax.random.key(0))
  lcn0 = jax.tree.leaves(state["lcn"])
  for k, moved in [(0, False), (1, True)]:
    state = m.gradients(StepInputs(
        apply=apply, params=params, method_state=state, x=jnp.asarray(X[:8]),
        y=jnp.asarray(Y[:8]), index=jnp.arange(8), clean_x=jnp.asarray(X[8:]),
        clean_y=jnp.asarray(Y[8:]), key=jax.random.key(1), step=jnp.int32(k),
        learning_rate=jnp.float32(0.1), apply_eval=lambda p, x: apply(p, x)[:2],
        momentum_buffer=None)).method_state
    same = all(np.array_equal(a, b) for a, b in zip(lcn0, jax.tree.leaves(state["lcn"])))
    assert same != moved
    accum = jax.tree.leaves(state["lcn_accum"])
    assert any(np.abs(a).sum() > 0 for a in accum) != moved  # reset once it is used
