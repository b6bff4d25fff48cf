"""GSAM against an independent NumPy decomposition, SAM at α = 0, and per-device sharding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxnoisy
from softmax_reference import loss, make_problem, np_dot, np_grad, np_sam_grad

N, D, C = 32, 5, 3
X, Y, PARAMS = make_problem(1, N, D, C)


# --- the independent reference: GSAM's decomposition on the shared softmax model -----
def np_gsam(g, gs, alpha):
  coef = np_dot(g, gs) / np_dot(gs, gs)
  return {k: gs[k] - alpha * (g[k] - coef * gs[k]) for k in g}


def jax_params(dtype=jnp.float32):
  return jax.tree.map(lambda v: jnp.asarray(v, dtype), PARAMS)


def run(tx, params, x=X, y=Y):
  g = jax.grad(loss)(params, x, y)
  out, _ = tx.update(g, tx.init(params), params, grad_fn=lambda p: jax.grad(loss)(p, x, y))
  return out


@pytest.mark.parametrize("adaptive", [False, True])
def test_alpha_zero_is_sam_exactly(adaptive):
  params = jax_params()
  a = run(jaxnoisy.gsam(0.3, 0.0, adaptive=adaptive), params)
  b = run(jaxnoisy.sam(0.3, adaptive=adaptive), params)
  for k in PARAMS:
    np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("adaptive", [False, True])
def test_matches_numpy_decomposition(adaptive):
  with jax.enable_x64(True):
    out = run(jaxnoisy.gsam(0.3, 0.3, adaptive=adaptive), jax_params(jnp.float64))
    g, gs = np_sam_grad(PARAMS, X, Y, 0.3, adaptive)
    ref = np_gsam(g, gs, 0.3)
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-10)
    # The correction is real: it differs from SAM.
    assert not np.allclose(ref["w"], gs["w"], rtol=1e-4, atol=0)


def test_direction_pure_function_vs_numpy():
  rng = np.random.default_rng(2)
  g = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(7,))}
  gs = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(7,))}
  with jax.enable_x64(True):
    out = jaxnoisy.gsam_direction(g, gs, 0.7)
    ref = np_gsam(g, gs, 0.7)
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-10)
    # d − g_SAM = −α g_⊥ is orthogonal to g_SAM.
    perp = {k: np.asarray(out[k]) - gs[k] for k in gs}
    assert abs(np_dot(perp, gs)) < 1e-10


def test_zero_gradients_are_finite():
  params = jax_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  d = jaxnoisy.gsam_direction(zeros, zeros, 0.5)
  assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(d))
  # g_SAM = 0, g ≠ 0: g_∥ = 0, d = −α g.
  g = jax.grad(loss)(params, X, Y)
  d = jaxnoisy.gsam_direction(g, zeros, 0.5)
  for k in PARAMS:
    np.testing.assert_allclose(d[k], -0.5 * np.asarray(g[k]), rtol=1e-6)
  # Zero incoming gradient: ε = 0, g_SAM = g at w... and g (= 0) has g_⊥ = 0.
  tx = jaxnoisy.gsam(0.05, 0.5)
  out, _ = tx.update(zeros, tx.init(params), params, grad_fn=lambda p: jax.grad(loss)(p, X, Y))
  for k in PARAMS:
    assert np.all(np.isfinite(out[k]))
    np.testing.assert_allclose(out[k], np_grad(PARAMS, X, Y)[k], rtol=1e-5, atol=1e-6)


def test_bfloat16_keeps_dtype():
  params = jax_params(jnp.bfloat16)
  out = run(jaxnoisy.gsam(0.05, 0.2), params, X.astype(jnp.bfloat16), Y)
  assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(out))
  assert all(np.all(np.isfinite(np.asarray(v, np.float32))) for v in jax.tree.leaves(out))


def test_chain_jit_and_inject_hyperparams():
  params = jax_params()
  tx = optax.chain(optax.inject_hyperparams(jaxnoisy.gsam)(rho=0.3, alpha=0.0), optax.sgd(0.5))
  grad_fn = lambda p: jax.grad(loss)(p, X, Y)
  step = jax.jit(lambda s, p: tx.update(grad_fn(p), s, p, grad_fn=grad_fn))
  state = tx.init(params)
  u1, state = step(state, params)
  state[0].hyperparams["alpha"] = jnp.asarray(0.3)
  u2, state = step(state, params)
  g, gs = np_sam_grad(PARAMS, X, Y, 0.3)
  for k in PARAMS:
    np.testing.assert_allclose(u1[k], -0.5 * gs[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u2[k], -0.5 * np_gsam(g, gs, 0.3)[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,name", [({"alpha": -0.1}, "alpha"), ({"rho": 0.0}, "rho"),
                                         ({"eta": -1.0}, "eta"), ({"eps": 0.0}, "eps")])
def test_bad_hyperparameters(kwargs, name):
  with pytest.raises(ValueError, match=name):
    jaxnoisy.gsam(**kwargs)


def test_missing_grad_fn():
  params = jax_params()
  with pytest.raises(ValueError, match="grad_fn"):
    jaxnoisy.gsam().update(params, (), params)


# --- per device: ascent and decomposition per shard, then the average ---------------
@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_per_device_shard_map(alpha):
  n_dev = 8
  mesh = Mesh(np.asarray(jax.devices()[:n_dev]), ("batch",))
  tx = jaxnoisy.gsam(0.2, alpha, axis_name="batch")
  f = jax.jit(jax.shard_map(functools.partial(run, tx), mesh=mesh,
                            in_specs=(P(), P("batch"), P("batch")), out_specs=P(),
                            check_vma=False))
  out = f(jax_params(), jnp.asarray(X, jnp.float32), jnp.asarray(Y))
  per = [np_gsam(*np_sam_grad(PARAMS, x, y, 0.2), alpha)
         for x, y in zip(np.split(X, n_dev), np.split(Y, n_dev))]
  for k in PARAMS:
    np.testing.assert_allclose(out[k], np.mean([p[k] for p in per], 0), rtol=1e-4, atol=1e-6)
