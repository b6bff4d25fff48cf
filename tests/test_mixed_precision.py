"""bfloat16 compute (``--compute-dtype``): float32 parameters, state and loss; close to
float32's first steps; and the import surface a bare accelerator machine needs."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnoisy.models import make_model
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.methods import METHODS
from jaxnoisy.train.trainer import Trainer
from test_trainer import toy_data, toy_with_clean


def dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


@pytest.mark.parametrize("name,shape", [("cnn", (28, 28, 1)), ("resnet20", (32, 32, 3))])
def test_bfloat16_layers_compute_in_bfloat16_and_return_float32(name, shape):
  f32 = make_model(name, 10, shape)
  bf16 = make_model(name, 10, shape, compute_dtype="bfloat16")
  x = jax.random.normal(jax.random.key(0), (8, *shape))
  assert dtypes(bf16.params) == dtypes(bf16.state) | {"float32"} == {"float32"}
  # Every convolution and dense product runs on bfloat16 operands.
  jaxpr = str(jax.make_jaxpr(lambda p: bf16.apply(p, bf16.state, x, train=True))(bf16.params))
  products = [l for l in jaxpr.splitlines() if "conv_general_dilated" in l or "dot_general" in l]
  assert products and all(":bf16[" in l for l in products)
  logits, feats, state = bf16.apply(bf16.params, bf16.state, x, train=True)
  assert logits.dtype == feats.dtype == jnp.float32 and dtypes(state) <= {"float32"}
  ref = f32.apply(f32.params, f32.state, x, train=True)[0]
  scale = float(jnp.max(jnp.abs(ref)))
  # bfloat16 keeps 8 bits of mantissa (relative error 2^-8 per rounding).
  np.testing.assert_allclose(logits, ref, atol=0.05 * scale)
  assert not np.allclose(logits, ref, atol=1e-6 * scale)  # it did compute in bfloat16


def test_bad_compute_dtype_is_one_line_before_compiling():
  with pytest.raises(ValueError, match="compute_dtype must be one of float32, bfloat16"):
    make_model("cnn", 10, (28, 28, 1), compute_dtype="float16")
  with pytest.raises(ValueError, match="compute_dtype") as e:
    TrainConfig(compute_dtype="half").validate()
  assert "\n" not in str(e.value) and "bfloat16" in str(e.value)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_float32_parameters_and_state(method):
  data = toy_with_clean() if METHODS[method].needs_clean else toy_data(n=256)
  config = TrainConfig(method=method, model="mlp", compute_dtype="bfloat16", epochs=1,
                       batch_size=64, heldout_size=0, num_devices=1, tensorboard=False,
                       clean_batch_size=32)
  t = Trainer(config, data)
  before = jax.tree.map(lambda x: x.dtype, t.initial_state)
  state = t.run_phase(t.initial_state)[0] if t.phase_steps else t.initial_state  # FBR
  for batch in t.batches(0, 0, 2):
    state, metrics = t.step(state, batch, 0.5)
  assert jax.tree.map(lambda x: x.dtype, state) == before
  assert dtypes(state.params) == dtypes(state.opt_state) | {"float32"} == {"float32"}
  assert np.isfinite(np.asarray(metrics["train_loss"])).all()


@pytest.mark.parametrize("method", ["sgd", "sam"])
def test_bfloat16_first_steps_stay_close_to_float32(method):
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = TrainConfig(method=method, model="cnn", compute_dtype=dtype, epochs=1,
                         batch_size=64, heldout_size=0, num_devices=1,
                         tensorboard=False)  # SAM: its default ρ = 0.05
    t = Trainer(config, toy_data())
    state, out = t.initial_state, []
    for batch in t.batches(0, 0, 6):
      state, metrics = t.step(state, batch, 0.1)
      out.append(float(np.asarray(metrics["train_loss"])[0]))
    losses[dtype] = np.array(out)
  assert losses["float32"][-1] < losses["float32"][0]  # it is learning
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.02)


def test_library_and_trainer_import_nothing_optional():
  """A bare accelerator machine (no tensorboardX, grain, array_record, TFDS) can import
  the library and the trainer: those load at their point of use."""
  code = """
import importlib.abc, sys
OPTIONAL = ("tensorboardX", "grain", "array_record", "tensorflow_datasets", "tensorflow")
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in OPTIONAL:
      raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import jaxnoisy, jaxnoisy.meta, jaxnoisy.noise, jaxnoisy.data, jaxnoisy.cli
import jaxnoisy.train.trainer
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
