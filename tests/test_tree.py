"""The pytree helpers against NumPy: float64 kept, bfloat16 accumulated in float32."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnoisy import tree


def np_tree(seed):
  rng = np.random.default_rng(seed)
  return {"a": rng.normal(size=(3, 4)) * 10.0 ** rng.uniform(-3, 3), "b": rng.normal(size=7)}


def test_float64_stays_float64_vs_numpy():
  with jax.enable_x64(True):
    for seed in range(5):
      a, b = np_tree(seed), np_tree(seed + 100)
      flat_a = np.concatenate([a["a"].ravel(), a["b"]])
      flat_b = np.concatenate([b["a"].ravel(), b["b"]])
      norm, dot, scaled = tree.global_norm(a), tree.vdot(a, b), tree.scaled_norm(a)
      assert norm.dtype == dot.dtype == scaled.dtype == jnp.float64
      np.testing.assert_allclose(norm, np.linalg.norm(flat_a), rtol=1e-14)
      np.testing.assert_allclose(scaled, np.linalg.norm(flat_a), rtol=1e-14)
      np.testing.assert_allclose(dot, flat_a @ flat_b, rtol=1e-12,
                                 atol=1e-14 * np.linalg.norm(flat_a) * np.linalg.norm(flat_b))
      out = tree.axpy(0.3, a, b)
      for k in a:
        assert out[k].dtype == jnp.float64
        np.testing.assert_allclose(out[k], 0.3 * a[k] + b[k], rtol=1e-15, atol=1e-300)


def test_mixed_leaves_accumulate_in_the_widest():
  with jax.enable_x64(True):
    t = {"x": jnp.asarray([1.0, 1e-9], jnp.float64), "y": jnp.ones(2, jnp.float32)}
    assert tree.accumulation_dtype(t) == jnp.float64
    np.testing.assert_allclose(tree.global_norm(t), np.sqrt(3 + 1e-18), rtol=1e-15)


def test_bfloat16_accumulates_in_float32():
  # 4096 ones: a bfloat16 running sum stalls at 256 (8-bit mantissa), a float32 one does not.
  t = {"x": jnp.ones((4096,), jnp.bfloat16)}
  assert tree.accumulation_dtype(t) == jnp.float32
  assert tree.global_norm(t).dtype == jnp.float32
  assert float(tree.global_norm(t)) == 64.0
  assert float(tree.vdot(t, t)) == 4096.0
  assert float(tree.scaled_norm(t)) == 64.0
  assert tree.axpy(2.0, t, t)["x"].dtype == jnp.bfloat16


def test_empty_and_zero_trees():
  assert float(tree.global_norm({})) == 0.0 and tree.global_norm({}).dtype == jnp.float32
  assert float(tree.vdot({}, {})) == 0.0 and float(tree.scaled_norm([])) == 0.0
  z = {"a": jnp.zeros((2, 3))}
  assert float(tree.scaled_norm(z)) == 0.0 and float(tree.global_norm(z)) == 0.0


def test_scaled_norm_does_not_overflow():
  t = {"a": jnp.full((4,), 3e30, jnp.float32), "b": jnp.asarray([4e30], jnp.float32)}
  assert not np.isfinite(float(tree.global_norm(t)))  # the plain sum of squares overflows
  np.testing.assert_allclose(float(tree.scaled_norm(t)), np.sqrt(4 * 9 + 16) * 1e30, rtol=1e-6)

