"""SAM and ASAM against an independent NumPy computation, optax.contrib.sam, and sharding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

import jaxnoisy
from softmax_reference import loss, make_problem, np_grad, np_norm
from softmax_reference import np_sam_grad as np_sam_and_grad

N, D, C = 32, 5, 3
X, Y, PARAMS = make_problem(0, N, D, C)


def np_sam_grad(params, x, y, rho, adaptive=False, eta=0.01):
  """g_SAM alone (the shared reference returns (g, g_SAM))."""
  return np_sam_and_grad(params, x, y, rho, adaptive, eta)[1]


# --- the JAX side --------------------------------------------------------------------
def jax_params(dtype=jnp.float32):
  return jax.tree.map(lambda v: jnp.asarray(v, dtype), PARAMS)


@pytest.mark.parametrize("adaptive,rho", [(False, 0.05), (False, 0.5), (True, 0.5)])
def test_sam_matches_numpy(adaptive, rho):
  with jax.enable_x64(True):
    params = jax_params(jnp.float64)
    tx = jaxnoisy.sam(rho, adaptive=adaptive)
    g = jax.grad(loss)(params, X, Y)
    out, _ = tx.update(g, tx.init(params), params, grad_fn=lambda p: jax.grad(loss)(p, X, Y))
    ref = np_sam_grad(PARAMS, X, Y, rho, adaptive)
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-9)


def test_asam_is_adaptive_sam():
  params = jax_params()
  g = jax.grad(loss)(params, X, Y)
  a, _ = jaxnoisy.asam(0.5).update(g, (), params, grad_fn=lambda p: jax.grad(loss)(p, X, Y))
  ref = np_sam_grad(PARAMS, X, Y, 0.5, adaptive=True)
  for k in ref:
    np.testing.assert_allclose(a[k], ref[k], rtol=1e-5, atol=1e-6)


def test_perturbation_norm_is_rho():
  g = jax.tree.map(jnp.asarray, np_grad(PARAMS, X, Y))
  eps = jaxnoisy.sam_perturbation(g, 0.3)
  np.testing.assert_allclose(np_norm({k: np.asarray(v) for k, v in eps.items()}), 0.3, rtol=1e-6)


def test_zero_gradient_is_finite():
  params = jax_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  for adaptive in (False, True):
    eps = jaxnoisy.sam_perturbation(zeros, 0.05, params=params, adaptive=adaptive)
    assert all(np.all(np.asarray(e) == 0) for e in jax.tree.leaves(eps))
    tx = jaxnoisy.sam(0.05, adaptive=adaptive)
    # ε = 0, so g_SAM is the gradient at w itself.
    out, _ = tx.update(zeros, tx.init(params), params, grad_fn=lambda p: jax.grad(loss)(p, X, Y))
    ref = np_grad(PARAMS, X, Y)
    for k in ref:
      assert np.all(np.isfinite(out[k]))
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-6)


def test_trajectory_matches_optax_contrib_sam_opaque():
  """20 steps of chain(sam, sgd) == optax.contrib.sam(sgd, normalize+sgd(rho), opaque)."""
  rho, lr = 0.1, 0.5
  ours = optax.chain(jaxnoisy.sam(rho), optax.sgd(lr))
  theirs = optax.contrib.sam(optax.sgd(lr), optax.chain(optax.contrib.normalize(), optax.sgd(rho)),
                             sync_period=2, opaque_mode=True)
  p1 = p2 = jax_params()
  s1, s2 = ours.init(p1), theirs.init(p2)
  for _ in range(20):
    u1, s1 = ours.update(jax.grad(loss)(p1, X, Y), s1, p1,
                         grad_fn=lambda p: jax.grad(loss)(p, X, Y))
    u2, s2 = theirs.update(jax.grad(loss)(p2, X, Y), s2, p2,
                           grad_fn=lambda p, _: jax.grad(loss)(p, X, Y))
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  for k in PARAMS:
    np.testing.assert_allclose(p1[k], p2[k], rtol=1e-5, atol=1e-6)
  assert not np.allclose(p1["w"], PARAMS["w"])  # it moved


def test_no_recompilation_on_second_call():
  tx = optax.chain(jaxnoisy.sam(0.05), optax.sgd(0.1, momentum=0.9))

  @jax.jit
  def step(params, state, x, y):
    g = jax.grad(loss)(params, x, y)
    u, state = tx.update(g, state, params, grad_fn=lambda p: jax.grad(loss)(p, x, y))
    return optax.apply_updates(params, u), state

  params = jax_params()
  state = tx.init(params)
  params, state = step(params, state, X, Y)
  params, state = step(params, state, X * 2, Y)
  assert step._cache_size() == 1


def test_bfloat16_params_keep_dtype():
  params = jax_params(jnp.bfloat16)
  g = jax.grad(loss)(params, X.astype(jnp.bfloat16), Y)
  for adaptive in (False, True):
    tx = jaxnoisy.sam(0.05, adaptive=adaptive)
    out, _ = tx.update(g, tx.init(params), params,
                       grad_fn=lambda p: jax.grad(loss)(p, X.astype(jnp.bfloat16), Y))
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(out))
    assert all(np.all(np.isfinite(np.asarray(v, np.float32))) for v in jax.tree.leaves(out))


def test_inject_hyperparams_rho():
  params = jax_params()
  tx = optax.inject_hyperparams(jaxnoisy.sam)(rho=0.05)
  state = tx.init(params)
  g = jax.grad(loss)(params, X, Y)
  grad_fn = lambda p: jax.grad(loss)(p, X, Y)
  update = jax.jit(lambda g, s, p: tx.update(g, s, p, grad_fn=grad_fn))
  out1, state = update(g, state, params)
  state.hyperparams["rho"] = jnp.asarray(0.5)
  out2, state = update(g, state, params)
  for k in PARAMS:
    np.testing.assert_allclose(out1[k], np_sam_grad(PARAMS, X, Y, 0.05)[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out2[k], np_sam_grad(PARAMS, X, Y, 0.5)[k], rtol=1e-5, atol=1e-6)


def test_has_aux_drops_second_pass_aux():
  params = jax_params()
  calls = []

  def grad_fn(p):
    calls.append(1)
    return jax.grad(loss)(p, X, Y), {"stats": jnp.ones(3)}

  out, _ = jaxnoisy.sam(0.05, has_aux=True).update(jax.grad(loss)(params, X, Y), (), params,
                                                   grad_fn=grad_fn)
  assert set(out) == {"w", "b"} and len(calls) == 1


def test_nnx_optimizer_update():
  model = nnx.Linear(D, C, rngs=nnx.Rngs(0))

  def model_loss(m, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

  graphdef, _ = nnx.split(model)

  def grad_fn(params):  # params arrive as the nnx.State of the Params
    return jax.grad(lambda p: model_loss(nnx.merge(graphdef, p), X, Y))(params)

  opt = nnx.Optimizer(model, optax.chain(jaxnoisy.sam(0.1), optax.sgd(0.5)), wrt=nnx.Param)
  w0, b0 = np.asarray(model.kernel[...]), np.asarray(model.bias[...])
  grads = nnx.grad(model_loss)(model, X, Y)
  opt.update(model, grads, grad_fn=grad_fn)
  ref = np_sam_grad({"w": w0, "b": b0}, X, Y, 0.1)
  np.testing.assert_allclose(model.kernel[...], w0 - 0.5 * ref["w"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.bias[...], b0 - 0.5 * ref["b"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,name", [({"rho": 0.0}, "rho"), ({"rho": -1.0}, "rho"),
                                         ({"eta": -0.1}, "eta"), ({"eps": 0.0}, "eps")])
def test_bad_hyperparameters(kwargs, name):
  with pytest.raises(ValueError, match=name):
    jaxnoisy.sam(**kwargs)


def test_missing_grad_fn():
  params = jax_params()
  with pytest.raises(ValueError, match="grad_fn"):
    jaxnoisy.sam(0.05).update(params, (), params)



def test_sharpness_aware_builds_a_variant():
  """A variant written as its step alone: SAM's ε by hand (g/‖g‖ in NumPy) equals the
  NumPy g_SAM; a float32 grad_fn's direction comes back in the bfloat16 of g; missing
  params, grad_fn or a declared extra argument are one error naming the variant."""
  def step(g, state, params, grad_fn, scale):
    norm = np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in jax.tree.leaves(g)))
    eps = jax.tree.map(lambda v: scale * 0.05 * v / norm, g)
    return jaxnoisy.perturbed_gradient(grad_fn, params, eps), state

  tx = jaxnoisy.sharpness_aware("mine", step, needs={"scale": "a multiplier"})
  params, grad_fn = jax_params(), lambda p: jax.grad(loss)(p, X, Y)
  out, _ = tx.update(grad_fn(params), tx.init(params), params, grad_fn=grad_fn, scale=1.0)
  expected = np_sam_grad(PARAMS, X, Y, 0.05)
  for k in PARAMS:
    np.testing.assert_allclose(out[k], expected[k], rtol=1e-5, atol=1e-6)
  g16 = jax.tree.map(lambda v: v.astype(jnp.bfloat16), grad_fn(params))
  out16, _ = tx.update(g16, (), params, grad_fn=grad_fn, scale=1.0)
  assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(out16))
  with pytest.raises(ValueError, match="mine needs params and the extra argument grad_fn"):
    tx.update(g16, (), params, scale=1.0)
  with pytest.raises(ValueError, match=r"mine needs the extra argument scale \(a multiplier\)"):
    tx.update(g16, (), params, grad_fn=grad_fn)

# --- per-device ascent (m-sharpness) on 8 fake CPU devices ---------------------------
def per_shard_reference(rho, n_dev, adaptive=False):
  xs, ys = np.split(X, n_dev), np.split(Y, n_dev)
  per = [np_sam_grad(PARAMS, x, y, rho, adaptive) for x, y in zip(xs, ys)]
  return {k: np.mean([p[k] for p in per], axis=0) for k in PARAMS}


def local_sam(tx, params, x, y):
  g = jax.grad(loss)(params, x, y)  # this device's own gradient
  out, _ = tx.update(g, tx.init(params), params, grad_fn=lambda p: jax.grad(loss)(p, x, y))
  return out


@pytest.mark.parametrize("adaptive", [False, True])
def test_per_device_ascent_shard_map(adaptive):
  n_dev = 8
  assert jax.device_count() >= n_dev
  mesh = Mesh(np.asarray(jax.devices()[:n_dev]), ("batch",))
  tx = jaxnoisy.sam(0.2, adaptive=adaptive, axis_name="batch")
  f = jax.jit(jax.shard_map(functools.partial(local_sam, tx), mesh=mesh,
                            in_specs=(P(), P("batch"), P("batch")), out_specs=P(),
                            check_vma=False))
  out = f(jax_params(), jnp.asarray(X, jnp.float32), jnp.asarray(Y))
  ref = per_shard_reference(0.2, n_dev, adaptive)
  for k in ref:
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-6)
  # ... and it differs from the global ascent.
  glob = np_sam_grad(PARAMS, X, Y, 0.2, adaptive)
  assert not np.allclose(ref["w"], glob["w"], atol=1e-4)


def test_per_device_ascent_pmap():
  n_dev = 8
  tx = jaxnoisy.sam(0.2, axis_name="batch")
  params = jax.tree.map(lambda v: jnp.broadcast_to(v, (n_dev,) + v.shape), jax_params())
  f = jax.pmap(functools.partial(local_sam, tx), axis_name="batch")
  out = f(params, jnp.asarray(X, jnp.float32).reshape(n_dev, -1, D),
          jnp.asarray(Y).reshape(n_dev, -1))
  ref = per_shard_reference(0.2, n_dev)
  for k in ref:
    for d in range(n_dev):
      np.testing.assert_allclose(out[k][d], ref[k], rtol=1e-5, atol=1e-6)


# --- float64 stays float64 -----------------------------------------------------------
def np_perturbation(g, rho, t=None, eps=1e-12):
  """ε = ρ T² g / (‖T g‖ + eps), T = 1 (SAM) or |w| + η (ASAM), in float64 NumPy."""
  t = {k: np.ones_like(g[k]) for k in g} if t is None else t
  norm = np_norm({k: t[k] * g[k] for k in g})
  return {k: rho * t[k] ** 2 * g[k] / (norm + eps) for k in g}


@pytest.mark.parametrize("adaptive", [False, True])
def test_float64_perturbation_vs_numpy(adaptive):
  """ε to 1e-12 and inside the ball: the norm is accumulated in float64, not float32."""
  rng = np.random.default_rng(11)
  with jax.enable_x64(True):
    for i in range(20):
      g = {"a": rng.normal(size=(3, 4)) * 10.0 ** rng.uniform(-4, 4), "b": rng.normal(size=5)}
      w = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
      rho = float(rng.uniform(0.01, 2.0))
      e = jaxnoisy.sam_perturbation(g, rho, params=w, adaptive=adaptive)
      t = {k: np.abs(w[k]) + 0.01 for k in w} if adaptive else None
      ref = np_perturbation(g, rho, t)
      for k in ref:
        assert e[k].dtype == jnp.float64
        np.testing.assert_allclose(e[k], ref[k], rtol=1e-12, atol=0)
      if not adaptive:
        assert np_norm(e) <= rho * (1 + 1e-14), (i, np_norm(e) / rho - 1)


def test_stateless_transforms_share_optax_empty_state():
  params = jax_params()
  for tx in (jaxnoisy.sam(), jaxnoisy.asam(), jaxnoisy.gsam(alpha=0.1), jaxnoisy.ncsam()):
    state = tx.init(params)
    assert type(state) is optax.EmptyState and jax.tree.leaves(state) == []
