"""SANER against an independent NumPy computation (division-based groups), SAM, and sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxnoisy
from softmax_reference import loss, make_problem, np_grad, np_sam_grad

N, D, C = 32, 5, 3
X, Y, PARAMS = make_problem(3, N, D, C)


# --- the independent reference (softmax model and SAM from softmax_reference) ---------
def np_groups(g, gs):
  """The paper's definition through the ratio r = g_SAM / g, only where g ≠ 0."""
  nz = g != 0
  r = np.divide(gs, g, out=np.ones_like(gs), where=nz)  # r = 1 (no group) where g = 0
  return {"A": nz & (r > 1), "B": nz & (r > 0) & (r < 1), "C": nz & (r < 0)}


def np_reweight(g, gs, a, groups=("B",)):
  out = {}
  for k in g:
    grp = np_groups(g[k], gs[k])
    m = np.zeros(g[k].shape, bool)
    for name in groups:
      m |= grp[name]
    out[k] = gs[k] * (1 - m) + a * gs[k] * m
  return out


def np_fractions(g, gs):
  total = sum(v.size for v in g.values())
  return {name: sum(np_groups(g[k], gs[k])[name].sum() for k in g) / total
          for name in "ABC"}


def jax_params(dtype=jnp.float32):
  return jax.tree.map(lambda v: jnp.asarray(v, dtype), PARAMS)


def run(tx, params, x=X, y=Y, state=None):
  g = jax.grad(loss)(params, x, y)
  state = tx.init(params) if state is None else state
  return tx.update(g, state, params, grad_fn=lambda p: jax.grad(loss)(p, x, y))


def random_pair(rng):
  """g and g_SAM with every case: zeros in g, zeros in g_SAM, ties, all sign/size mixes."""
  g = rng.normal(size=(6, 50))
  gs = g * rng.uniform(-1.5, 2.0, size=g.shape)
  g[0, :10] = 0.0
  gs[1, :10] = 0.0
  gs[2, :10] = g[2, :10]  # r = 1 exactly
  return {"u": g[:3], "v": g[3:]}, {"u": gs[:3], "v": gs[3:]}


# --- the pure functions --------------------------------------------------------------
@pytest.mark.parametrize("groups", [("B",), ("A",), ("C",), ("A", "B", "C"), "C"])
def test_reweight_elementwise_vs_numpy(groups):
  g, gs = random_pair(np.random.default_rng(4))
  with jax.enable_x64(True):
    out = jaxnoisy.saner_reweight(g, gs, 0.3, groups=groups)
    ref = np_reweight(g, gs, 0.3, (groups,) if isinstance(groups, str) else groups)
    for k in g:
      assert out[k].dtype == jnp.float64
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-12, atol=0)
  # Entries with g = 0 are never touched.
  np.testing.assert_array_equal(np.asarray(out["u"])[0, :10], gs["u"][0, :10])


def test_masks_and_fractions_vs_numpy():
  g, gs = random_pair(np.random.default_rng(5))
  with jax.enable_x64(True):
    masks = jaxnoisy.saner_masks(g, gs)
    fr = jaxnoisy.saner_group_fractions(g, gs)
  for k in g:
    ref = np_groups(g[k], gs[k])
    for name in "ABC":
      np.testing.assert_array_equal(masks[name][k], ref[name])
  ref = np_fractions(g, gs)
  for name in "ABC":
    assert fr[name].dtype == jnp.float32
    np.testing.assert_allclose(fr[name], ref[name], rtol=1e-6)
  assert 0 < ref["A"] and 0 < ref["B"] and 0 < ref["C"]


def test_tiny_same_sign_entries_are_classified():
  g = {"x": jnp.asarray([1e-25, -1e-25], jnp.float32)}
  gs = {"x": jnp.asarray([5e-26, -5e-26], jnp.float32)}  # product underflows to 0
  out = jaxnoisy.saner_reweight(g, gs, 0.5)
  np.testing.assert_array_equal(out["x"], np.asarray([2.5e-26, -2.5e-26], np.float32))


@pytest.mark.parametrize("step,expected", [(0, 1.0), (5, 0.75), (10, 0.5), (25, 0.5)])
def test_warmup_schedule(step, expected):
  np.testing.assert_allclose(jaxnoisy.saner_down_weight(step, 0.5, 10), expected, rtol=1e-7)
  np.testing.assert_allclose(jaxnoisy.saner_down_weight(step, 0.5, 0), 0.5)


# --- the transform -------------------------------------------------------------------
def test_down_weight_one_is_sam_exactly():
  params = jax_params()
  a, _ = run(jaxnoisy.saner(0.1, 1.0), params)
  b, _ = run(jaxnoisy.sam(0.1), params)
  for k in PARAMS:
    np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("base", ["sam", "asam", "gsam"])
def test_matches_numpy(base):
  with jax.enable_x64(True):
    params = jax_params(jnp.float64)
    if base == "sam":
      tx = jaxnoisy.saner(0.1, 0.5)
      g, gs = np_sam_grad(PARAMS, X, Y, 0.1)
    elif base == "asam":
      tx = jaxnoisy.saner(down_weight=0.5, base=jaxnoisy.asam(0.5))
      g, gs = np_sam_grad(PARAMS, X, Y, 0.5, adaptive=True)
    else:
      tx = jaxnoisy.saner(down_weight=0.5, base=jaxnoisy.gsam(0.1, 0.3))
      g, gs = np_sam_grad(PARAMS, X, Y, 0.1)
      coef = sum(np.sum(g[k] * gs[k]) for k in g) / sum(np.sum(gs[k] ** 2) for k in g)
      gs = {k: gs[k] - 0.3 * (g[k] - coef * gs[k]) for k in g}  # GSAM's direction
    out, state = run(tx, params)
    ref = np_reweight(g, gs, 0.5)
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-10)
    frac = np_fractions(g, gs)
    for name in "ABC":
      np.testing.assert_allclose(state.group_fractions[name], frac[name], rtol=1e-6)
    assert frac["B"] > 0 and int(state.count) == 1


def test_warmup_through_the_state():
  params = jax_params()
  tx = jaxnoisy.saner(0.1, 0.5, warmup_steps=2)
  g, gs = np_sam_grad(PARAMS, X, Y, 0.1)
  state = None
  for a in (1.0, 0.75, 0.5, 0.5):
    out, state = run(tx, params, state=state)
    ref = np_reweight(g, gs, a)
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-7)
  assert int(state.count) == 4


def test_zero_gradients_are_finite():
  params = jax_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = jaxnoisy.saner(0.1, 0.5)
  out, state = tx.update(zeros, tx.init(params), params,
                         grad_fn=lambda p: jax.grad(loss)(p, X, Y))
  # g = 0: no entry is in any group, so d = g_SAM = ∇L(w) (ε = 0).
  for k in PARAMS:
    assert np.all(np.isfinite(out[k]))
    np.testing.assert_allclose(out[k], np_grad(PARAMS, X, Y)[k], rtol=1e-5, atol=1e-6)
  assert all(float(v) == 0 for v in state.group_fractions.values())


def test_untracked_groups_same_update_empty_fractions():
  params = jax_params()
  tracked, t_state = run(jaxnoisy.saner(0.1, 0.5), params, X, Y)
  untracked, u_state = run(jaxnoisy.saner(0.1, 0.5, track_groups=False), params, X, Y)
  for k in PARAMS:
    np.testing.assert_array_equal(untracked[k], tracked[k])
  assert u_state.group_fractions == {} and set(t_state.group_fractions) == {"A", "B", "C"}
  assert optax.tree_utils.tree_get(u_state, "group_fractions") == {}


def test_bfloat16_keeps_dtype():
  params = jax_params(jnp.bfloat16)
  out, state = run(jaxnoisy.saner(0.1, 0.5), params, X.astype(jnp.bfloat16), Y)
  assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(out))
  assert state.group_fractions["B"].dtype == jnp.float32


def test_chain_weight_decay_after_reweighting():
  params = jax_params()
  wd, lr = 0.01, 0.5
  tx = optax.chain(jaxnoisy.saner(0.1, 0.5), optax.add_decayed_weights(wd), optax.sgd(lr))
  grad_fn = lambda p: jax.grad(loss)(p, X, Y)

  @jax.jit
  def step(p, s):
    u, s = tx.update(grad_fn(p), s, p, grad_fn=grad_fn)
    return optax.apply_updates(p, u), s

  state = tx.init(params)
  new, state = step(params, state)
  new2, state = step(new, state)
  assert step._cache_size() == 1
  d = np_reweight(*np_sam_grad(PARAMS, X, Y, 0.1), 0.5)
  for k in PARAMS:
    np.testing.assert_allclose(new[k], PARAMS[k] - lr * (d[k] + wd * PARAMS[k]),
                               rtol=1e-5, atol=1e-6)


def test_inject_hyperparams_down_weight_and_warmup():
  params = jax_params()
  tx = optax.inject_hyperparams(jaxnoisy.saner)(rho=0.1, down_weight=0.5, warmup_steps=2)
  grad_fn = lambda p: jax.grad(loss)(p, X, Y)
  update = jax.jit(lambda s, p: tx.update(grad_fn(p), s, p, grad_fn=grad_fn))
  state = tx.init(params)
  g, gs = np_sam_grad(PARAMS, X, Y, 0.1)
  outs = []
  for dw in (0.5, 0.5, 0.5, 0.2):
    state.hyperparams["down_weight"] = jnp.asarray(dw)
    out, state = update(state, params)
    outs.append(out)
  for out, a in zip(outs, (1.0, 0.75, 0.5, 0.2)):
    ref = np_reweight(g, gs, a)
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-7)
  assert "B" in state.inner_state.group_fractions


@pytest.mark.parametrize("kwargs,name", [
    ({"rho": 0.0}, "rho"), ({"down_weight": -0.1}, "down_weight"),
    ({"down_weight": 1.5}, "down_weight"), ({"warmup_steps": -1}, "warmup_steps"),
    ({"groups": ("D",)}, "groups"), ({"groups": ()}, "groups"), ({"eps": 0.0}, "eps")])
def test_bad_hyperparameters(kwargs, name):
  with pytest.raises(ValueError, match=name):
    jaxnoisy.saner(**kwargs)


def test_missing_grad_fn():
  params = jax_params()
  tx = jaxnoisy.saner()
  with pytest.raises(ValueError, match="grad_fn"):
    tx.update(params, tx.init(params), params)


# --- per device: each shard reweights its own g_SAM with its own g ------------------
def test_per_device_shard_map():
  n_dev = 8
  mesh = Mesh(np.asarray(jax.devices()[:n_dev]), ("batch",))
  tx = jaxnoisy.saner(0.2, 0.3, axis_name="batch")

  def local(params, x, y):
    out, state = run(tx, params, x, y)
    return out, state.group_fractions

  f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("batch"), P("batch")),
                            out_specs=P(), check_vma=False))
  out, fr = f(jax_params(), jnp.asarray(X, jnp.float32), jnp.asarray(Y))
  pairs = [np_sam_grad(PARAMS, x, y, 0.2) for x, y in zip(np.split(X, n_dev), np.split(Y, n_dev))]
  per = [np_reweight(g, gs, 0.3) for g, gs in pairs]
  for k in PARAMS:
    np.testing.assert_allclose(out[k], np.mean([p[k] for p in per], 0), rtol=1e-4, atol=1e-6)
  fracs = [np_fractions(g, gs) for g, gs in pairs]
  for name in "ABC":
    np.testing.assert_allclose(fr[name], np.mean([f[name] for f in fracs]), rtol=1e-5, atol=1e-7)
  # Reweighting per shard is not reweighting the averaged gradients.
  glob = np_reweight(*np_sam_grad(PARAMS, X, Y, 0.2), 0.3)
  per_mean = np.mean([p["w"] for p in per], 0)
  assert not np.allclose(per_mean, glob["w"], atol=1e-5)


# --- arguments that a given base would ignore ------------------------------------------
@pytest.mark.parametrize("kwargs,names", [
    ({"rho": 0.1}, "rho"), ({"eps": 1e-8}, "eps"), ({"has_aux": False}, "has_aux"),
    ({"rho": 0.2, "has_aux": True}, "rho, has_aux")])
def test_base_rejects_the_arguments_it_would_ignore(kwargs, names):
  with pytest.raises(ValueError, match=rf"saner\(base=\.\.\.\) would ignore {names}: pass"):
    jaxnoisy.saner(down_weight=0.5, base=jaxnoisy.asam(0.5), **kwargs)
  with pytest.raises(ValueError, match="would ignore"):  # positional rho too
    jaxnoisy.saner(kwargs.get("rho", 0.1), 0.5, base=jaxnoisy.asam(0.5))


def test_default_base_arguments():
  """None means ρ = 0.1, eps = 1e-12, has_aux = False; given ones reach the default base."""
  params = jax_params()
  for tx, ref in ((jaxnoisy.saner(), jaxnoisy.saner(0.1, eps=1e-12, has_aux=False)),
                  (jaxnoisy.saner(0.3), jaxnoisy.saner(base=jaxnoisy.sam(0.3)))):
    a, _ = run(tx, params)
    b, _ = run(ref, params)
    for k in PARAMS:
      np.testing.assert_array_equal(a[k], b[k])
  g = jax.grad(loss)(params, X, Y)
  aux_fn = lambda p: (jax.grad(loss)(p, X, Y), {"stats": 1.0})
  tx = jaxnoisy.saner(0.1, has_aux=True)
  out, _ = tx.update(g, tx.init(params), params, grad_fn=aux_fn)
  ref = np_reweight(*np_sam_grad(PARAMS, X, Y, 0.1), 0.5)
  for k in PARAMS:
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-7)


def test_inject_hyperparams_with_base():
  """inject_hyperparams fills in the defaults: None must not count as passed."""
  params = jax_params()
  tx = optax.inject_hyperparams(jaxnoisy.saner)(down_weight=0.5, base=jaxnoisy.asam(0.5))
  out, state = run(tx, params)
  assert set(state.hyperparams) == {"down_weight", "warmup_steps", "threshold"}
  ref = np_reweight(*np_sam_grad(PARAMS, X, Y, 0.5, adaptive=True), 0.5)
  for k in PARAMS:
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="would ignore rho"):
    optax.inject_hyperparams(jaxnoisy.saner)(rho=0.1, base=jaxnoisy.asam(0.5)).init(params)
