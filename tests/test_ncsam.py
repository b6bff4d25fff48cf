"""NCSAM against independent NumPy computations, SAM at κ = 0, sampling statistics, sharding."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxnoisy
from softmax_reference import loss, make_problem, np_grad, np_logits, np_norm, np_sam_grad

N, D, C = 32, 5, 4
X, Y, PARAMS = make_problem(6, N, D, C)


# --- the independent reference (softmax model and SAM from softmax_reference) ---------
def np_strength(t, kappa):
  t = min(max(t, 0.0), 1.0)
  return kappa * min(1.0, 2 * (3 - 2 * t) * t ** 2)


def np_perturbation(g, g_star, rho, s, eps=1e-12, compensation="paper"):
  if compensation == "rho":  # the variant beyond the paper: ρ-sized g*
    g_star = {k: rho * g_star[k] / (np_norm(g_star) + eps) for k in g_star}
  v = {k: rho * g[k] / (np_norm(g) + eps) + s * g_star[k] for k in g}
  if s * np_norm(g_star) == 0:  # no compensation: SAM's ε, not projected
    return v
  return {k: v[k] * min(1.0, rho / (np_norm(v) + eps)) for k in v}


def np_ncsam_grad(params, x, y, g_star, rho, s):
  e = np_perturbation(np_grad(params, x, y), g_star, rho, s)
  return np_grad({k: params[k] + e[k] for k in params}, x, y)


def logits_fn(params, x):
  return x @ params["w"] + params["b"]


def jax_params(dtype=jnp.float32):
  return jax.tree.map(lambda v: jnp.asarray(v, dtype), PARAMS)


def star_labels(y):
  return (y + 1) % C


def run(tx, params, x, y, progress):
  """NCSAM with a hand-made g*: the first quarter of the batch relabelled y + 1."""
  g = jax.grad(loss)(params, x, y)
  q = len(y) // 4
  g_star = jax.grad(loss)(params, x[:q], star_labels(y[:q]))
  out, _ = tx.update(g, tx.init(params), params, grad_fn=lambda p: jax.grad(loss)(p, x, y),
                     noise_grads=g_star, progress=progress)
  return out


def np_run(x, y, rho, s):
  q = len(y) // 4
  return np_ncsam_grad(PARAMS, x, y, np_grad(PARAMS, x[:q], star_labels(y[:q])), rho, s)


# --- schedule and projection ---------------------------------------------------------
@pytest.mark.parametrize("t", [-0.2, 0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.9, 1.0, 1.7])
def test_strength_closed_form(t):
  np.testing.assert_allclose(jaxnoisy.ncsam_strength(t, 0.3), np_strength(t, 0.3), rtol=1e-6)
  traced = jax.jit(jaxnoisy.ncsam_strength)(jnp.asarray(t), jnp.asarray(0.3))
  np.testing.assert_allclose(traced, np_strength(t, 0.3), rtol=1e-6)


def test_strength_saturates_at_half():
  for t in np.linspace(0.5, 1.0, 11):
    np.testing.assert_allclose(jaxnoisy.ncsam_strength(t, 0.1), 0.1, rtol=1e-6)
  assert float(jaxnoisy.ncsam_strength(0.49, 0.1)) < 0.1


def test_projection_never_leaves_the_ball():
  rng = np.random.default_rng(7)
  perturb = jax.jit(jaxnoisy.ncsam_perturbation)
  for i in range(60):
    rho = float(rng.uniform(0.01, 2.0))
    s = float(10.0 ** rng.uniform(-3, 12)) if i % 3 else float(rng.uniform(0, 1))
    g = {"a": rng.normal(size=(3, 4)) * 10.0 ** rng.uniform(-6, 3), "b": rng.normal(size=5)}
    gs = {"a": rng.normal(size=(3, 4)) * 10.0 ** rng.uniform(-3, 8), "b": rng.normal(size=5)}
    g32 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), g)
    gs32 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), gs)
    e = perturb(g32, gs32, rho, s)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(e))
    assert np_norm(e) <= rho * (1 + 1e-6), (i, np_norm(e), rho)
    ref = np_perturbation(g, gs, rho, s)
    for k in ref:
      np.testing.assert_allclose(e[k], ref[k], rtol=1e-4, atol=1e-6 * rho)


def test_perturbation_vs_numpy_float64():
  """float64 stays float64: ε to 1e-12 of NumPy, and the projection never leaves the ball."""
  rng = np.random.default_rng(8)
  with jax.enable_x64(True):
    for i in range(40):
      g = {"a": rng.normal(size=(3, 4)) * 10.0 ** rng.uniform(-4, 4), "b": rng.normal(size=5)}
      gs = {"a": rng.normal(size=(3, 4)) * 10.0 ** rng.uniform(-4, 4), "b": rng.normal(size=5)}
      rho = float(rng.uniform(0.01, 2.0))
      for s in (0.0, 0.01, 0.1, 10.0, float(10.0 ** rng.uniform(-3, 6))):
        e = jaxnoisy.ncsam_perturbation(g, gs, rho, s)
        ref = np_perturbation(g, gs, rho, s)
        for k in ref:
          assert e[k].dtype == jnp.float64
          np.testing.assert_allclose(e[k], ref[k], rtol=1e-12, atol=1e-15 * rho)
        assert np_norm(e) <= rho * (1 + 1e-14), (i, s, np_norm(e) / rho - 1)


def test_rho_sized_compensation_vs_numpy_float64():
  """The variant: s·ρ·ĝ* added to SAM's ε, then projected; its size is set by s alone."""
  rng = np.random.default_rng(9)
  with jax.enable_x64(True):
    for i in range(20):
      g = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
      gs = {"a": rng.normal(size=(3, 4)) * 10.0 ** rng.uniform(-4, 4), "b": rng.normal(size=5)}
      rho = float(rng.uniform(0.01, 2.0))
      for s in (0.0, 0.05, 0.3, 1.0):
        e = jaxnoisy.ncsam_perturbation(g, gs, rho, s, compensation="rho")
        ref = np_perturbation(g, gs, rho, s, compensation="rho")
        for k in ref:
          np.testing.assert_allclose(e[k], ref[k], rtol=1e-12, atol=1e-15 * rho)
      # Scaling g* changes nothing (it does in the paper's form).
      big = {k: 1e3 * v for k, v in gs.items()}
      for k in g:
        np.testing.assert_allclose(
            jaxnoisy.ncsam_perturbation(g, big, rho, 0.3, compensation="rho")[k],
            jaxnoisy.ncsam_perturbation(g, gs, rho, 0.3, compensation="rho")[k],
            rtol=1e-10, atol=1e-14 * rho)  # equal up to the rounding of ‖g*‖
  with pytest.raises(ValueError, match="compensation must be one of paper, rho"):
    jaxnoisy.ncsam(compensation="unit")


def test_zero_gradients_give_finite_zero():
  z = {"a": jnp.zeros((3, 4)), "b": jnp.zeros(5)}
  for s in (0.0, 0.1, 1e6):
    e = jaxnoisy.ncsam_perturbation(z, z, 0.05, s)
    assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(e))
  # g = 0 but g* ≠ 0: ε is the (projected) compensation alone.
  gs = {"a": jnp.ones((3, 4)), "b": jnp.ones(5)}
  e = jaxnoisy.ncsam_perturbation(z, gs, 0.05, 1.0)
  np.testing.assert_allclose(np_norm(e), 0.05, rtol=1e-6)
  params = jax_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = jaxnoisy.ncsam(0.05, 0.3)
  out, _ = tx.update(zeros, tx.init(params), params, grad_fn=lambda p: jax.grad(loss)(p, X, Y),
                     noise_grads=zeros, progress=0.7)
  for k in PARAMS:
    np.testing.assert_allclose(out[k], np_grad(PARAMS, X, Y)[k], rtol=1e-5, atol=1e-6)


# --- the transform -------------------------------------------------------------------
@pytest.mark.parametrize("kappa,progress", [(0.0, 0.7), (0.3, 0.0)])
def test_no_compensation_is_sam_exactly(kappa, progress):
  params = jax_params()
  xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(Y)
  a = run(jaxnoisy.ncsam(0.2, kappa), params, xj, yj, progress)
  g = jax.grad(loss)(params, xj, yj)
  b, _ = jaxnoisy.sam(0.2).update(g, (), params, grad_fn=lambda p: jax.grad(loss)(p, xj, yj))
  for k in PARAMS:
    np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("kappa,progress", [(0.3, 0.7), (0.3, 0.2), (50.0, 1.0)])
def test_matches_numpy(kappa, progress):
  with jax.enable_x64(True):
    out = run(jaxnoisy.ncsam(0.2, kappa), jax_params(jnp.float64), X, Y, progress)
    ref = np_run(X, Y, 0.2, np_strength(progress, kappa))
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-10)
  assert not np.allclose(ref["w"], np_sam_grad(PARAMS, X, Y, 0.2)[1]["w"], rtol=1e-4, atol=0)


def test_chain_jit_traced_progress_and_inject_hyperparams():
  params = jax_params()
  tx = optax.chain(optax.inject_hyperparams(jaxnoisy.ncsam)(rho=0.2, kappa=0.0), optax.sgd(0.5))
  xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(Y)
  grad_fn = lambda p: jax.grad(loss)(p, xj, yj)

  @jax.jit
  def step(state, p, t):
    g_star = jax.grad(loss)(p, xj[:8], star_labels(yj[:8]))
    return tx.update(grad_fn(p), state, p, grad_fn=grad_fn, noise_grads=g_star, progress=t)

  state = tx.init(params)
  u1, state = step(state, params, 0.7)
  state[0].hyperparams["kappa"] = jnp.asarray(0.3)
  u2, state = step(state, params, 0.2)
  for u, s in ((u1, 0.0), (u2, np_strength(0.2, 0.3))):
    ref = np_run(X, Y, 0.2, s)
    for k in PARAMS:
      np.testing.assert_allclose(u[k], -0.5 * ref[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kwargs,name", [({"rho": 0.0}, "rho"), ({"kappa": -0.1}, "kappa"),
                                         ({"eps": 0.0}, "eps")])
def test_bad_hyperparameters(kwargs, name):
  with pytest.raises(ValueError, match=name):
    jaxnoisy.ncsam(**kwargs)


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_bad_flip_rate(rate):
  logits = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="flip_rate"):
    jaxnoisy.flip_targets(logits, jnp.zeros(4, jnp.int32), jax.random.key(0), rate)
  with pytest.raises(ValueError, match="flip_rate"):
    jaxnoisy.ncsam_gradients(lambda p: p, logits, jnp.zeros(4, jnp.int32),
                             jax.random.key(0), rate)


def test_missing_extra_args():
  params = jax_params()
  tx = jaxnoisy.ncsam()
  grad_fn = lambda p: jax.grad(loss)(p, X, Y)
  with pytest.raises(ValueError, match="grad_fn"):
    tx.update(params, (), params, noise_grads=params, progress=0.5)
  with pytest.raises(ValueError, match="noise_grads"):
    tx.update(params, (), params, grad_fn=grad_fn, progress=0.5)
  with pytest.raises(ValueError, match="progress"):
    tx.update(params, (), params, grad_fn=grad_fn, noise_grads=params)


# --- flip_targets ---------------------------------------------------------------------
def np_probs(logits):
  top = np.sort(logits, 1)[:, ::-1]
  p = 1.0 / (1.0 + top[:, 0] - top[:, 1])
  return p / p.sum()


def test_targets_and_set_size():
  rng = np.random.default_rng(9)
  logits = rng.normal(size=(100, 6)).astype(np.float32) * 3
  labels = rng.integers(0, 6, size=100)
  flip = jax.jit(jaxnoisy.flip_targets)
  for i, rate in enumerate([0.0, 0.01, 0.29, 0.4, 0.5, 1.0]):
    sel, tgt = flip(logits, labels, jax.random.key(i), rate)
    sel, tgt = np.asarray(sel), np.asarray(tgt)
    assert sel.dtype == bool and sel.sum() == int(np.floor(rate * 100 + 1e-9))
    assert np.all(tgt != labels)
    masked = np.where(np.eye(6, dtype=bool)[labels], -np.inf, logits)
    np.testing.assert_array_equal(tgt, masked.argmax(1))


def test_inclusion_frequency_single_draw():
  """k = 1: P(i selected) = p_i exactly; check empirical frequencies within 4σ."""
  logits = np.asarray([[3.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.2, 0.1, 0.0], [5.0, -1.0, 0.0],
                       [0.0, 0.0, 0.0], [2.0, 1.0, 0.0]], np.float32)
  labels = np.zeros(6, np.int32)
  n = 20000
  keys = jax.random.split(jax.random.key(0), n)
  sel = jax.jit(jax.vmap(lambda k: jaxnoisy.flip_targets(logits, labels, k, 1 / 6)[0]))(keys)
  freq = np.asarray(sel).mean(0)
  p = np_probs(logits)
  assert np.all(np.asarray(sel).sum(1) == 1)
  np.testing.assert_array_less(np.abs(freq - p), 4 * np.sqrt(p * (1 - p) / n) + 1e-12)


def test_inclusion_frequency_without_replacement():
  """k = 2 of 5: inclusion probabilities of sequential sampling without replacement."""
  logits = np.asarray([[4.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.0, 0.0]], np.float32)
  labels = np.zeros(5, np.int32)
  p = np_probs(logits)
  # Exact: enumerate the ordered pairs (i, j) drawn first then second.
  incl = np.zeros(5)
  for i, j in itertools.permutations(range(5), 2):
    pr = p[i] * p[j] / (1 - p[i])
    incl[i] += pr
    incl[j] += pr
  n = 20000
  keys = jax.random.split(jax.random.key(1), n)
  sel = np.asarray(jax.jit(jax.vmap(
      lambda k: jaxnoisy.flip_targets(logits, labels, k, 0.4)[0]))(keys))
  assert np.all(sel.sum(1) == 2)
  freq = sel.mean(0)
  np.testing.assert_array_less(np.abs(freq - incl), 4 * np.sqrt(incl * (1 - incl) / n))
  assert np.all(np.diff(freq) > 0)  # a smaller logit gap (larger p) is picked more often


# --- ncsam_gradients ------------------------------------------------------------------
def test_gradients_vs_numpy_and_one_forward_pass():
  calls = []

  def counted_logits(params):
    calls.append(1)
    return logits_fn(params, jnp.asarray(X))

  with jax.enable_x64(True):
    params = jax_params(jnp.float64)
    key = jax.random.key(3)
    loss_val, g, g_star, aux = jaxnoisy.ncsam_gradients(counted_logits, params, jnp.asarray(Y),
                                                        key, 0.4)
    assert len(calls) == 1 and aux is None
    sel, tgt = jaxnoisy.flip_targets(np_logits(PARAMS, X), Y, key, 0.4)
  sel, tgt = np.asarray(sel), np.asarray(tgt)
  assert sel.sum() == 12
  ref_g = np_grad(PARAMS, X, Y)
  ref_star = np_grad(PARAMS, X[sel], tgt[sel])
  logits = np_logits(PARAMS, X)
  lse = np.log(np.exp(logits).sum(1))
  np.testing.assert_allclose(loss_val, np.mean(lse - logits[np.arange(N), Y]), rtol=1e-10)
  for k in PARAMS:
    np.testing.assert_allclose(g[k], ref_g[k], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(g_star[k], ref_star[k], rtol=1e-10, atol=1e-14)


def test_gradients_has_aux_and_empty_set():
  params = jax_params()
  aux_fn = lambda p: (logits_fn(p, jnp.asarray(X, jnp.float32)), {"stats": jnp.ones(2)})
  _, g, g_star, aux = jaxnoisy.ncsam_gradients(aux_fn, params, jnp.asarray(Y),
                                               jax.random.key(0), 0.02, has_aux=True)
  assert set(aux) == {"stats"}
  assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(g_star))  # ⌊0.02·32⌋ = 0
  for k in PARAMS:
    np.testing.assert_allclose(g[k], np_grad(PARAMS, X, Y)[k], rtol=1e-5, atol=1e-6)


# --- per device ----------------------------------------------------------------------
def test_per_device_shard_map():
  n_dev = 8
  mesh = Mesh(np.asarray(jax.devices()[:n_dev]), ("batch",))
  tx = jaxnoisy.ncsam(0.2, 0.3, axis_name="batch")
  f = jax.jit(jax.shard_map(functools.partial(run, tx), mesh=mesh,
                            in_specs=(P(), P("batch"), P("batch"), P()), out_specs=P(),
                            check_vma=False))
  out = f(jax_params(), jnp.asarray(X, jnp.float32), jnp.asarray(Y), jnp.asarray(0.8))
  s = np_strength(0.8, 0.3)
  per = [np_run(x, y, 0.2, s) for x, y in zip(np.split(X, n_dev), np.split(Y, n_dev))]
  for k in PARAMS:
    np.testing.assert_allclose(out[k], np.mean([p[k] for p in per], 0), rtol=1e-4, atol=1e-6)
  glob = np_run(X, Y, 0.2, s)
  assert not np.allclose(np.mean([p["w"] for p in per], 0), glob["w"], atol=1e-5)


def test_per_device_gradients_in_shard_map():
  """ncsam_gradients on each shard (key folded with the device index) + ncsam, end to end."""
  n_dev = 8
  mesh = Mesh(np.asarray(jax.devices()[:n_dev]), ("batch",))
  tx = jaxnoisy.ncsam(0.2, 0.3, axis_name="batch")

  def local(params, x, y, key):
    key = jax.random.fold_in(key, jax.lax.axis_index("batch"))
    _, g, g_star, _ = jaxnoisy.ncsam_gradients(lambda p: logits_fn(p, x), params, y, key, 0.5)
    sel, tgt = jaxnoisy.flip_targets(logits_fn(params, x), y, key, 0.5)
    out, _ = tx.update(g, (), params, grad_fn=lambda p: jax.grad(loss)(p, x, y),
                       noise_grads=g_star, progress=1.0)
    return out, sel, tgt

  f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("batch"), P("batch"), P()),
                            out_specs=(P(), P("batch"), P("batch")), check_vma=False))
  out, sel, tgt = f(jax_params(), jnp.asarray(X, jnp.float32), jnp.asarray(Y), jax.random.key(5))
  sel, tgt = np.asarray(sel), np.asarray(tgt)
  per = []
  for x, y, s_, t_ in zip(*(np.split(a, n_dev) for a in (X, Y, sel, tgt))):
    assert s_.sum() == 2
    per.append(np_ncsam_grad(PARAMS, x, y, np_grad(PARAMS, x[s_], t_[s_]), 0.2, 0.3))
  for k in PARAMS:
    np.testing.assert_allclose(out[k], np.mean([p[k] for p in per], 0), rtol=1e-4, atol=1e-6)


# --- g* from a separate forward pass over S -------------------------------------------
def smoothed(targets, classes, ls):
  return (1 - ls) * np.eye(classes)[targets] + ls / classes


def np_soft_grad(params, x, q):
  """Gradient of mean_i CE(softmax(x_i w + b), q_i) for soft targets q, in NumPy."""
  logits = np_logits(params, x)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  d = (p - q) / len(x)
  return {"w": x.T @ d, "b": d.sum(0)}


def subset_fn(p, index):
  return logits_fn(p, jnp.asarray(X)[index])


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_subset_forward_vs_numpy_and_equal_to_shared(ls):
  """Softmax regression (no batch norm): both options give g* of the smoothed CE on S."""
  with jax.enable_x64(True):
    params, key = jax_params(jnp.float64), jax.random.key(4)
    full = lambda p: logits_fn(p, jnp.asarray(X))
    shared = jaxnoisy.ncsam_gradients(full, params, jnp.asarray(Y), key, 0.4,
                                      label_smoothing=ls)
    subset = jaxnoisy.ncsam_gradients(full, params, jnp.asarray(Y), key, 0.4,
                                      noise_forward="subset", subset_logits_fn=subset_fn,
                                      label_smoothing=ls)
    sel, tgt = jaxnoisy.flip_targets(np_logits(PARAMS, X), Y, key, 0.4)
  sel, tgt = np.asarray(sel), np.asarray(tgt)
  assert sel.sum() == 12
  ref = np_soft_grad(PARAMS, X[sel], smoothed(tgt[sel], C, ls))
  np.testing.assert_allclose(subset[0], shared[0], rtol=1e-15)
  for k in PARAMS:
    np.testing.assert_allclose(subset[1][k], shared[1][k], rtol=1e-15)  # g untouched
    np.testing.assert_allclose(subset[2][k], ref[k], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(shared[2][k], ref[k], rtol=1e-10, atol=1e-14)
  if ls:  # smoothing changes g*
    plain = np_soft_grad(PARAMS, X[sel], smoothed(tgt[sel], C, 0.0))
    assert not np.allclose(ref["w"], plain["w"], rtol=1e-3, atol=0)


def bn_logits(params, x):
  """A batch-norm layer on x @ w: the logits depend on which examples share the batch."""
  h = x @ params["w"]
  mean = h.mean(0)
  var = ((h - mean) ** 2).mean(0)
  return params["g"] * (h - mean) / jnp.sqrt(var + 1e-3) + params["b"], {"mean": mean}


def bn_params(dtype):
  rng = np.random.default_rng(12)
  return {"w": jnp.asarray(PARAMS["w"], dtype), "b": jnp.asarray(PARAMS["b"], dtype),
          "g": jnp.asarray(rng.uniform(0.5, 1.5, size=C), dtype)}


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_subset_forward_batch_norm_vs_separate_model_call(ls):
  """g* from the subset's own statistics, recomputed from a separate model call on X[S]."""
  rate, key = 0.4, jax.random.key(7)
  calls = []

  def subset(p, index):
    calls.append(index.shape)
    return bn_logits(p, jnp.asarray(X)[index])

  with jax.enable_x64(True):
    params = bn_params(jnp.float64)
    full = lambda p: bn_logits(p, jnp.asarray(X))
    step = jax.jit(lambda p, k: jaxnoisy.ncsam_gradients(
        full, p, jnp.asarray(Y), k, rate, has_aux=True, noise_forward="subset",
        subset_logits_fn=subset, label_smoothing=ls))
    loss_val, g, g_star, aux = step(params, key)
    _, _, g_shared, _ = jaxnoisy.ncsam_gradients(full, params, jnp.asarray(Y), key, rate,
                                                 has_aux=True, label_smoothing=ls)
    # The independent recomputation: S from the full batch's logits, then the model on
    # X[S] alone and the smoothed cross-entropy written out.
    sel, tgt = jaxnoisy.flip_targets(full(params)[0], Y, key, rate)
    sel, tgt = np.asarray(sel), np.asarray(tgt)
    q = jnp.asarray(smoothed(tgt[sel], C, ls))

    def ref_loss(p):
      z = bn_logits(p, jnp.asarray(X[sel]))[0]
      log_softmax = z - jnp.log(jnp.sum(jnp.exp(z - z.max(1, keepdims=True)), 1,
                                        keepdims=True)) - z.max(1, keepdims=True)
      return -jnp.sum(q * log_softmax) / sel.sum()

    ref = jax.grad(ref_loss)(params)
    ref_g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        full(p)[0], jnp.asarray(Y)).mean())(params)
  assert calls == [(12,)]  # one traced call, a static subset of ⌊0.4·32⌋ examples
  np.testing.assert_allclose(aux["mean"], np.asarray(X @ PARAMS["w"]).mean(0), rtol=1e-12)
  for k in params:
    np.testing.assert_allclose(g_star[k], ref[k], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(g[k], ref_g[k], rtol=1e-9, atol=1e-13)
  # With batch norm the subset's statistics give another g* than the shared pass.
  assert not np.allclose(g_star["w"], g_shared["w"], rtol=1e-2, atol=0)


def test_subset_forward_empty_set_skips_the_pass():
  called = []
  params = jax_params()
  _, _, g_star, _ = jaxnoisy.ncsam_gradients(
      lambda p: logits_fn(p, jnp.asarray(X, jnp.float32)), params, jnp.asarray(Y),
      jax.random.key(0), 0.02, noise_forward="subset",
      subset_logits_fn=lambda p, i: called.append(1))
  assert not called
  assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(g_star))


@pytest.mark.parametrize("kwargs,match", [
    ({"noise_forward": "separate"}, "noise_forward must be one of"),
    ({"noise_forward": "subset"}, "subset_logits_fn"),
    ({"subset_logits_fn": subset_fn}, "subset_logits_fn is used only"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"label_smoothing": 1.5}, "label_smoothing")])
def test_bad_noise_forward_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jaxnoisy.ncsam_gradients(lambda p: logits_fn(p, jnp.asarray(X)), jax_params(),
                             jnp.asarray(Y), jax.random.key(0), 0.4, **kwargs)


def test_subset_forward_needs_a_concrete_flip_rate():
  f = jax.jit(lambda r: jaxnoisy.ncsam_gradients(
      lambda p: logits_fn(p, jnp.asarray(X)), jax_params(), jnp.asarray(Y),
      jax.random.key(0), r, noise_forward="subset", subset_logits_fn=subset_fn))
  with pytest.raises(ValueError, match="flip_rate must be a concrete number"):
    f(0.4)


@pytest.mark.parametrize("compensation", ["paper", "rho"])
def test_trainer_logs_the_norms_that_decide_the_projection(compensation):
  """‖g‖, ‖g*‖, s(t)‖c‖/ρ and cos(ε, ε_SAM) at t = (epoch + 1)/T, against NumPy norms
  of the very gradients the step returns and the ramp written out by hand."""
  from jaxnoisy.train.config import TrainConfig
  from jaxnoisy.train.interface import ModelSpec, StepInputs
  from jaxnoisy.train.methods import build
  from jaxnoisy.train.sam_methods import NCSAMHparams

  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 16))
  params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
  apply = lambda p, inputs: (inputs @ p["w"], inputs, {})
  config = TrainConfig(method="ncsam", epochs=10,
                       hparams=NCSAMHparams(rho=0.1, kappa=0.1, flip_rate=0.4,
                                            compensation=compensation))
  spec = ModelSpec(num_train=64, num_classes=3, feature_dim=4, steps_per_epoch=4,
                   num_clean=0)
  out = build(config, spec).gradients(StepInputs(
      apply=apply, params=params, method_state={}, x=x, y=y, index=jnp.arange(16),
      clean_x=x[:0], clean_y=y[:0], key=jax.random.key(1), step=jnp.int32(9),
      learning_rate=jnp.float32(0.05), apply_eval=lambda p, inputs: apply(p, inputs)[:2],
      momentum_buffer=None))
  g = np.asarray(out.grads["w"], np.float64)
  g_star = np.asarray(out.extra_args["noise_grads"]["w"], np.float64)
  t = (9 // 4 + 1) / 10  # the third epoch of ten
  s = 0.1 * min(1.0, 2 * (3 - 2 * t) * t * t)
  m = out.metrics
  assert float(m["ncsam_grad_norm"]) == pytest.approx(np.linalg.norm(g), rel=1e-6)
  assert float(m["ncsam_noise_grad_norm"]) == pytest.approx(np.linalg.norm(g_star), rel=1e-6)
  c_norm = np.linalg.norm(g_star) if compensation == "paper" else 0.1
  assert float(m["ncsam_compensation_over_rho"]) == pytest.approx(s * c_norm / 0.1, rel=1e-6)
  e = np_perturbation({"w": g}, {"w": g_star}, 0.1, s, compensation=compensation)["w"]
  cos = float(np.sum(e * g) / (np.linalg.norm(e) * np.linalg.norm(g)))
  assert float(m["ncsam_cos_eps_sam"]) == pytest.approx(cos, rel=1e-5, abs=1e-6)
  assert np.linalg.norm(g_star) > 0 and cos < 1 - 1e-6  # the compensation turned ε
