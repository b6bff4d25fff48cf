"""F-SAM, VaSSO, SANER over them, and SANER's analysis options (SAMWO, last layer only),
against independent NumPy computations of the authors' rules (lhchau/saner optimizer/)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

import jaxnoisy
from softmax_reference import loss, make_problem, np_grad, np_norm, np_sam_grad

N, D, C = 32, 5, 3
X, Y, PARAMS = make_problem(5, N, D, C)
RHO = 0.1
HP = {"fsam": {"sigma": 0.7, "lmbda": 0.6}, "vasso": {"theta": 0.3}}
EPS = {"fsam": 1e-12, "vasso": 1e-7}


def batches(steps, seed=6):
  """``steps`` different (x, y) batches of the same size."""
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(N, D)), rng.integers(0, C, size=N)) for _ in range(steps)]


# --- the independent reference: the authors' first_step, per device -----------------
def np_step(method, w, shards, m, hp, rho=RHO):
  """One F-SAM/VaSSO step as the authors' ``first_step`` (nblt/F-SAM ``utils.py``,
  BingcongLi/VaSSO ``solver/vasso.py``; ``m is None``: the first step) on a list of
  (x, y) shards, one per device: returns (mean over shards of the gradient at w + ε,
  the new EMA from the averaged gradient, the shards' g). ε = ρ d / (‖d‖ + eps) with
  their eps: F-SAM 1e-12, VaSSO 1e-7."""
  eps = EPS[method]
  outs, news, gs = [], [], []
  for x, y in shards:
    g = np_grad(w, x, y)
    if method == "fsam":
      d = g if m is None else {k: g[k] - hp["sigma"] * m[k] for k in g}
      new = g if m is None else {k: hp["lmbda"] * m[k] + (1 - hp["lmbda"]) * g[k] for k in g}
    else:
      new = g if m is None else {k: (1 - hp["theta"]) * m[k] + hp["theta"] * g[k] for k in g}
      d = new
    norm = np_norm(d)
    outs.append(np_grad({k: w[k] + rho * d[k] / (norm + eps) for k in w}, x, y))
    news.append(new)
    gs.append(g)
  mean = lambda trees: {k: np.mean([t[k] for t in trees], 0) for k in trees[0]}
  return mean(outs), mean(news), gs


def make(method, **kwargs):
  return getattr(jaxnoisy, method)(RHO, **HP[method], **kwargs)


def jax_params(dtype=jnp.float32):
  return jax.tree.map(lambda v: jnp.asarray(v, dtype), PARAMS)


def update(tx, state, params, x, y, **kwargs):
  g = jax.grad(loss)(params, x, y)
  return tx.update(g, state, params, grad_fn=lambda p: jax.grad(loss)(p, x, y), **kwargs)


# --- F-SAM and VaSSO ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_trajectory_and_ema_match_numpy(method):
  """Four steps of chain(method, sgd) on four batches: parameters and EMA state."""
  lr = 0.5
  with jax.enable_x64(True):
    tx = optax.chain(make(method), optax.sgd(lr))
    params = jax_params(jnp.float64)
    state = tx.init(params)
    w, m = PARAMS, None
    for t, (x, y) in enumerate(batches(4)):
      updates, state = update(tx, state, params, x, y)
      params = optax.apply_updates(params, updates)
      out, m, _ = np_step(method, w, [(x, y)], m, HP[method])
      w = {k: w[k] - lr * out[k] for k in w}
      assert int(state[0].count) == t + 1
      for k in PARAMS:
        np.testing.assert_allclose(params[k], w[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state[0].ema[k], m[k], rtol=1e-10, atol=1e-12)
        assert state[0].ema[k].dtype == jnp.float64


# The authors' CIFAR settings (nblt/F-SAM run.sh; BingcongLi/VaSSO README command).
AUTHORS = {"fsam": dict(rho=0.2, hp={"sigma": 1.0, "lmbda": 0.6}),
           "vasso": dict(rho=0.05, hp={"theta": 0.9})}


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_defaults_are_the_authors_over_six_steps(method):
  """``jaxnoisy.fsam()`` / ``vasso()`` with no arguments, six steps of SGD with momentum
  0.9 and weight decay, against the authors' rule with their constants in NumPy."""
  lr, mu, wd = 0.3, 0.9, 5e-3
  with jax.enable_x64(True):
    tx = optax.chain(getattr(jaxnoisy, method)(), optax.add_decayed_weights(wd),
                     optax.sgd(lr, momentum=mu))
    params = jax_params(jnp.float64)
    state = tx.init(params)
    w, m, buf = PARAMS, None, {k: 0.0 for k in PARAMS}
    for x, y in batches(6):
      updates, state = update(tx, state, params, x, y)
      params = optax.apply_updates(params, updates)
      out, m, _ = np_step(method, w, [(x, y)], m, AUTHORS[method]["hp"],
                          rho=AUTHORS[method]["rho"])
      buf = {k: mu * buf[k] + out[k] + wd * w[k] for k in w}
      w = {k: w[k] - lr * buf[k] for k in w}
  for k in PARAMS:
    np.testing.assert_allclose(params[k], w[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_first_step_is_sam_exactly(method):
  params = jax_params()
  tx = make(method)
  out, state = update(tx, tx.init(params), params, X, Y)
  ref, _ = update(jaxnoisy.sam(RHO, eps=EPS[method]), optax.EmptyState(), params, X, Y)
  g = jax.grad(loss)(params, X, Y)
  for k in PARAMS:
    np.testing.assert_array_equal(out[k], ref[k])
    np.testing.assert_array_equal(state.ema[k], g[k])  # m_0 = g_0, not (1 - λ) g_0


@pytest.mark.parametrize("tx,eps", [(jaxnoisy.fsam(RHO, sigma=0.0, lmbda=0.6), EPS["fsam"]),
                                    (jaxnoisy.vasso(RHO, theta=1.0), EPS["vasso"])],
                         ids=["sigma0", "theta1"])
def test_degenerate_settings_are_sam_at_every_step(tx, eps):
  params = jax_params()
  state = tx.init(params)
  for x, y in batches(3):
    out, state = update(tx, state, params, x, y)
    ref, _ = update(jaxnoisy.sam(RHO, eps=eps), (), params, x, y)
    for k in PARAMS:
      np.testing.assert_array_equal(out[k], ref[k])


def test_pure_functions_vs_numpy():
  rng = np.random.default_rng(7)
  g = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=6)}
  m = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=6)}
  with jax.enable_x64(True):
    ema = jaxnoisy.gradient_ema(m, g, 0.8)
    d = jaxnoisy.fsam_direction(g, m, 0.7)
    for k in g:
      np.testing.assert_allclose(ema[k], 0.8 * m[k] + 0.2 * g[k], rtol=1e-14)
      np.testing.assert_allclose(d[k], g[k] - 0.7 * m[k], rtol=1e-14)


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_chain_jit_and_inject_hyperparams(method):
  """A jitted step compiles once; the coefficients may be traced (inject_hyperparams)."""
  factory = getattr(jaxnoisy, method)
  tx = optax.chain(optax.inject_hyperparams(factory)(rho=RHO, **HP[method]), optax.sgd(0.5))

  @jax.jit
  def step(params, state, x, y):
    updates, state = update(tx, state, params, x, y)
    return optax.apply_updates(params, updates), state

  params, w, m = jax_params(), PARAMS, None
  state = tx.init(params)
  for x, y in batches(3):
    params, state = step(params, state, x, y)
    out, m, _ = np_step(method, w, [(x, y)], m, HP[method])
    w = {k: w[k] - 0.5 * out[k] for k in w}
  assert step._cache_size() == 1
  for k in PARAMS:
    np.testing.assert_allclose(params[k], w[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[0].inner_state.ema[k], m[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_nnx_optimizer_update(method):
  model = nnx.Linear(D, C, rngs=nnx.Rngs(0))
  graphdef, _ = nnx.split(model)
  model_loss = lambda m, x, y: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
  opt = nnx.Optimizer(model, optax.chain(make(method), optax.sgd(0.5)), wrt=nnx.Param)
  w, m = {"w": np.asarray(model.kernel[...]), "b": np.asarray(model.bias[...])}, None
  for x, y in batches(2):
    x = jnp.asarray(x, jnp.float32)
    grad_fn = lambda p, x=x, y=y: jax.grad(lambda q: model_loss(nnx.merge(graphdef, q), x, y))(p)
    opt.update(model, nnx.grad(model_loss)(model, x, y), grad_fn=grad_fn)
    out, m, _ = np_step(method, w, [(np.asarray(x), y)], m, HP[method])
    w = {k: w[k] - 0.5 * out[k] for k in w}
  np.testing.assert_allclose(model.kernel[...], w["w"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.bias[...], w["b"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_zero_gradient_is_finite(method):
  """g = 0 from the start: d = 0, ε = 0, the output is the gradient at w, m stays 0."""
  params = jax_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = make(method)
  state = tx.init(params)
  for _ in range(2):
    out, state = tx.update(zeros, state, params, grad_fn=lambda p: jax.grad(loss)(p, X, Y))
    for k in PARAMS:
      assert np.all(np.isfinite(out[k]))
      np.testing.assert_allclose(out[k], np_grad(PARAMS, X, Y)[k], rtol=1e-5, atol=1e-6)
      assert np.all(np.asarray(state.ema[k]) == 0)


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_bfloat16_keeps_dtype(method):
  params = jax_params(jnp.bfloat16)
  tx = make(method)
  state = tx.init(params)
  for x, y in batches(2):
    out, state = update(tx, state, params, jnp.asarray(x, jnp.bfloat16), y)
  for tree in (out, state.ema):
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(tree))
    assert all(np.all(np.isfinite(np.asarray(v, np.float32))) for v in jax.tree.leaves(tree))


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_has_aux_drops_second_pass_aux(method):
  params = jax_params()
  tx = getattr(jaxnoisy, method)(RHO, has_aux=True)
  aux_fn = lambda p: (jax.grad(loss)(p, X, Y), {"stats": jnp.ones(3)})
  out, _ = tx.update(jax.grad(loss)(params, X, Y), tx.init(params), params, grad_fn=aux_fn)
  ref = np_sam_grad(PARAMS, X, Y, RHO)[1]  # the first step is SAM's
  for k in PARAMS:
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory,kwargs,message", [
    (jaxnoisy.fsam, {"rho": 0.0}, "rho must be in"),
    (jaxnoisy.fsam, {"sigma": -0.1}, "sigma must be in"),
    (jaxnoisy.fsam, {"lmbda": 1.5}, "lmbda must be in"),
    (jaxnoisy.fsam, {"eps": 0.0}, "eps must be in"),
    (jaxnoisy.vasso, {"rho": -1.0}, "rho must be in"),
    (jaxnoisy.vasso, {"theta": -0.1}, "theta must be in"),
    (jaxnoisy.vasso, {"theta": 1.1}, "theta must be in"),
    (jaxnoisy.vasso, {"eps": 0.0}, "eps must be in")])
def test_bad_hyperparameters(factory, kwargs, message):
  with pytest.raises(ValueError, match=message) as info:
    factory(**kwargs)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_missing_grad_fn(method):
  params = jax_params()
  tx = make(method)
  with pytest.raises(ValueError, match=f"{method} needs params and the extra argument grad_fn"):
    tx.update(params, tx.init(params), params)


# --- per device: own ascent, averaged gradient, replicated EMA ----------------------
def shard_map_steps(tx, two_batches, state_of=lambda s: s.ema, n_dev=8):
  """Two updates inside shard_map over 8 devices at fixed weights: the second output and
  each device's copy of the EMA (stacked, to check that it is replicated)."""
  mesh = Mesh(np.asarray(jax.devices()[:n_dev]), ("batch",))

  def local(params, x1, y1, x2, y2):
    state = tx.init(params)
    _, state = update(tx, state, params, x1, y1)
    out, state = update(tx, state, params, x2, y2)
    return out, jax.tree.map(lambda e: e[None], state_of(state))

  f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(),) + (P("batch"),) * 4,
                            out_specs=(P(), P("batch")), check_vma=False))
  (x1, y1), (x2, y2) = two_batches
  return f(jax_params(), *(jnp.asarray(v, jnp.float32) if v.dtype.kind == "f" else
                           jnp.asarray(v) for v in (x1, y1, x2, y2)))


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_per_device_ascent_shard_map(method):
  n_dev = 8
  two = batches(2)
  out, emas = shard_map_steps(make(method, axis_name="batch"), two)
  shards = [list(zip(np.split(x, n_dev), np.split(y, n_dev))) for x, y in two]
  _, m, _ = np_step(method, PARAMS, shards[0], None, HP[method])
  ref, m, _ = np_step(method, PARAMS, shards[1], m, HP[method])
  for k in PARAMS:
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-6)
    for d in range(n_dev):
      np.testing.assert_allclose(emas[k][d], m[k], rtol=1e-5, atol=1e-7)


# --- SANER over F-SAM and VaSSO (lhchau/saner fsaner.py, vassosaner.py) -------------
def np_authors_saner(g, gs, alpha):
  """fsaner/vassosaner ``second_step``, group B: ratio = g_SAM / (g + 1e-8), the batch
  gradient g cloned before F-SAM's subtraction."""
  out = {}
  for k in g:
    ratio = gs[k] / (g[k] + 1e-8)
    mask = (ratio > 0) & (ratio < 1)
    out[k] = gs[k] * mask * alpha + gs[k] * ~mask
  return out


@pytest.mark.parametrize("method", ["fsam", "vasso"])
def test_saner_over_base_matches_the_authors_rule(method):
  with jax.enable_x64(True):
    params = jax_params(jnp.float64)
    tx = jaxnoisy.saner(down_weight=0.5, base=make(method))
    state, m = tx.init(params), None
    for x, y in batches(2):
      out, state = update(tx, state, params, x, y)
      gs, m, (g,) = np_step(method, PARAMS, [(x, y)], m, HP[method])
      ref = np_authors_saner(g, gs, 0.5)
      for k in PARAMS:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state.base_state.ema[k], m[k], rtol=1e-10, atol=1e-12)
      assert 0 < float(state.group_fractions["B"]) < 1
    assert int(state.count) == 2 and int(state.base_state.count) == 2


def test_saner_over_fsam_per_device_keeps_the_base_state_replicated():
  """The base is built without axis_name; SANER averages its EMA over the axis."""
  n_dev = 8
  two = batches(2)
  tx = jaxnoisy.saner(down_weight=0.5, base=make("fsam"), axis_name="batch")
  out, emas = shard_map_steps(tx, two, state_of=lambda s: s.base_state.ema)
  shards = [list(zip(np.split(x, n_dev), np.split(y, n_dev))) for x, y in two]
  _, m, _ = np_step("fsam", PARAMS, shards[0], None, HP["fsam"])
  hp = HP["fsam"]
  per = []
  for x, y in shards[1]:  # each device reweights its own g_SAM against its own g
    g = np_grad(PARAMS, x, y)
    d = {k: g[k] - hp["sigma"] * m[k] for k in g}
    norm = np_norm(d)
    gs = np_grad({k: PARAMS[k] + RHO * d[k] / (norm + 1e-12) for k in d}, x, y)
    per.append(np_authors_saner(g, gs, 0.5))
  _, m, _ = np_step("fsam", PARAMS, shards[1], m, hp)
  for k in PARAMS:
    np.testing.assert_allclose(out[k], np.mean([p[k] for p in per], 0), rtol=1e-4, atol=1e-6)
    for d in range(n_dev):
      np.testing.assert_allclose(emas[k][d], m[k], rtol=1e-5, atol=1e-7)


# --- SANER's analysis options: SAMWO and the last layer only -------------------------
def np_samwo(g, gs, group, alpha):
  """lhchau/saner samwo.py ``second_step``: the masked entries take the first gradient."""
  out = {}
  for k in g:
    ratio = gs[k] / (g[k] + 1e-8)
    mask = {"A": ratio > alpha, "B": (ratio > 0) & (ratio < alpha), "C": ratio < 0,
            "AB": ratio > 0}[group]
    out[k] = gs[k] * ~mask + g[k] * mask
  return out


def random_pair(seed):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(6, 40)) + 0.1
  gs = g * rng.uniform(-1.5, 2.0, size=g.shape)
  return {"u": g[:2], "v": g[2:]}, {"u": gs[:2], "v": gs[2:]}


@pytest.mark.parametrize("group", ["A", "B", "C", "AB"])
@pytest.mark.parametrize("alpha", [1.0, 0.8])
def test_samwo_direction_vs_numpy(group, alpha):
  g, gs = random_pair(8)
  with jax.enable_x64(True):
    out = jaxnoisy.samwo_direction(g, gs, groups=tuple(group), threshold=alpha)
  ref = np_samwo(g, gs, group, alpha)
  for k in g:
    np.testing.assert_array_equal(out[k], ref[k])


def test_threshold_moves_the_a_b_boundary():
  g, gs = random_pair(9)
  with jax.enable_x64(True):
    masks = jaxnoisy.saner_masks(g, gs, threshold=0.8)
    out = jaxnoisy.saner_reweight(g, gs, 0.3, groups="A", threshold=0.8)
  for k in g:
    ratio = gs[k] / g[k]
    np.testing.assert_array_equal(masks["A"][k], ratio > 0.8)
    np.testing.assert_array_equal(masks["B"][k], (ratio > 0) & (ratio < 0.8))
    np.testing.assert_allclose(out[k], np.where(ratio > 0.8, 0.3, 1.0) * gs[k], rtol=1e-15)


@pytest.mark.parametrize("group,alpha", [("A", 1.0), ("B", 1.0), ("B", 0.8)])
def test_samwo_transform_is_the_authors_samwo(group, alpha):
  with jax.enable_x64(True):
    params = jax_params(jnp.float64)
    tx = jaxnoisy.samwo(RHO, groups=group, threshold=alpha)
    out, state = update(tx, tx.init(params), params, X, Y)
    ref = np_samwo(*np_sam_grad(PARAMS, X, Y, RHO), group, alpha)
    for k in PARAMS:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-10, atol=1e-12)
    g, gs = np_sam_grad(PARAMS, X, Y, RHO)
    ratio = np.concatenate([(gs[k] / g[k]).ravel() for k in g])
    np.testing.assert_allclose(state.group_fractions["B"],
                               np.mean((ratio > 0) & (ratio < alpha)), rtol=1e-6)


def test_saner_leaf_mask_is_saner_last():
  """saner_last.py: only the last linear layer's weight is reweighted (group B)."""
  with jax.enable_x64(True):
    params = jax_params(jnp.float64)
    tx = jaxnoisy.saner(RHO, 0.5, leaf_mask={"w": True, "b": False})
    out, _ = update(tx, tx.init(params), params, X, Y)
    g, gs = np_sam_grad(PARAMS, X, Y, RHO)
    ratio = gs["w"] / (g["w"] + 1e-12)
    ref_w = gs["w"] * np.where((ratio > 0) & (ratio < 1), 0.5, 1.0)
    np.testing.assert_allclose(out["w"], ref_w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["b"], gs["b"], rtol=1e-10, atol=1e-12)
    assert not np.allclose(ref_w, gs["w"])


@pytest.mark.parametrize("threshold", [0.0, -1.0])
def test_bad_threshold(threshold):
  with pytest.raises(ValueError, match="threshold must be in"):
    jaxnoisy.saner(threshold=threshold)
