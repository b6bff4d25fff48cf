"""Meta-reweighting (L2RW, persistent weights, feature surrogate, MW-Net) against NumPy.

The model is float64 softmax regression; the independent reference is NumPy: the
virtual step, the clean loss after it, its central finite differences, and the
first-order formula −(η/(Bm)) Σ_j ⟨∇l_i, ∇l^v_j⟩ from analytic per-example gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnoisy
from jaxnoisy.meta import check_labels, cross_entropy_loss_fn
from jaxnoisy.models import make_model

B, M, D, C = 12, 8, 4, 3
RNG = np.random.default_rng(0)
X = RNG.normal(size=(B, D))
Y = RNG.integers(0, C, size=B)
XV = RNG.normal(size=(M, D))
YV = RNG.integers(0, C, size=M)
PARAMS = {"w": RNG.normal(size=(D, C)) * 0.5, "b": RNG.normal(size=(C,)) * 0.1}


# --- NumPy reference -----------------------------------------------------------------
def np_probs(params, x):
  z = x @ params["w"] + params["b"]
  p = np.exp(z - z.max(1, keepdims=True))
  return p / p.sum(1, keepdims=True)


def np_losses(params, x, y):
  return -np.log(np_probs(params, x)[np.arange(len(y)), y])


def np_example_grads(params, x, y):
  """Per-example gradients, flattened as [w.ravel(), b]: shape (n, D*C + C)."""
  r = np_probs(params, x) - np.eye(C)[y]
  return np.concatenate([(x[:, :, None] * r[:, None, :]).reshape(len(y), -1), r], axis=1)


def np_lookahead(params, w, eta, x=X, y=Y, xv=XV, yv=YV):
  g = (w[:, None] * np_example_grads(params, x, y)).mean(0)
  new = {"w": params["w"] - eta * g[:D * C].reshape(D, C), "b": params["b"] - eta * g[D * C:]}
  return np_losses(new, xv, yv).mean()


def np_central_fd(f, w, h=1e-5):
  out = np.zeros_like(w)
  for i in range(len(w)):
    e = np.zeros_like(w)
    e[i] = h
    out[i] = (f(w + e) - f(w - e)) / (2 * h)
  return out


def np_first_order(params, eta, x=X, y=Y, xv=XV, yv=YV):
  gi = np_example_grads(params, x, y)
  gv = np_example_grads(params, xv, yv)
  return -eta / (len(y) * len(yv)) * (gi @ gv.T).sum(1)


# --- JAX side ------------------------------------------------------------------------
loss_fn = cross_entropy_loss_fn(lambda p, x: x @ p["w"] + p["b"])


def jparams():
  return jax.tree.map(jnp.asarray, PARAMS)


BATCH, CLEAN = (X, Y), (XV, YV)


@pytest.mark.parametrize("eta", [0.05, 1.0])
def test_l2rw_scores_are_finite_differences_and_exact_first_order(eta):
  with jax.enable_x64(True):
    u = np.asarray(jaxnoisy.l2rw_scores(loss_fn, jparams(), BATCH, CLEAN, inner_lr=eta))
  fd = -np_central_fd(lambda w: np_lookahead(PARAMS, w, eta), np.zeros(B))
  np.testing.assert_allclose(u, fd, rtol=1e-6, atol=1e-10)
  # At ε = 0 the lookahead is θ itself, so the first-order formula is exact.
  np.testing.assert_allclose(u, -np_first_order(PARAMS, eta), rtol=1e-10, atol=1e-14)


def test_meta_grad_is_finite_differences():
  eta, w0 = 0.8, RNG.uniform(size=B)
  with jax.enable_x64(True):
    res = jaxnoisy.meta_reweight_step(loss_fn, jparams(), jnp.asarray(w0), BATCH, CLEAN,
                                      inner_lr=eta, weight_lr=0.3)
    direct = jaxnoisy.lookahead_clean_loss(loss_fn, jparams(), jnp.asarray(w0), BATCH, CLEAN,
                                           inner_lr=eta)
  fd = np_central_fd(lambda w: np_lookahead(PARAMS, w, eta), w0)
  np.testing.assert_allclose(res.meta_grad, fd, rtol=1e-6, atol=1e-10)
  np.testing.assert_allclose(res.clean_loss, np_lookahead(PARAMS, w0, eta), rtol=1e-12)
  np.testing.assert_allclose(direct, res.clean_loss, rtol=1e-12)
  np.testing.assert_allclose(res.weights, np.clip(w0 - 0.3 * fd, 0, 1), rtol=1e-6, atol=1e-9)
  # At η = 0.8 the step is far from first order: the test above is not vacuous.
  assert not np.allclose(res.meta_grad, np_first_order(PARAMS, eta), rtol=1e-2)


def test_meta_grad_matches_first_order_formula_as_eta_shrinks():
  w0 = RNG.uniform(size=B)
  errors = []
  with jax.enable_x64(True):
    for eta in (1e-1, 1e-2, 1e-3):
      g = np.asarray(jaxnoisy.meta_reweight_step(loss_fn, jparams(), jnp.asarray(w0), BATCH,
                                                 CLEAN, inner_lr=eta, weight_lr=0.0).meta_grad)
      ref = np_first_order(PARAMS, eta)
      errors.append(np.linalg.norm(g - ref) / np.linalg.norm(ref))
  assert errors[2] < 1e-2
  assert errors[0] / errors[1] > 5 and errors[1] / errors[2] > 5  # error is O(η)


def test_l2rw_weights_normalised_and_guarded():
  with jax.enable_x64(True):
    u = np.asarray(jaxnoisy.l2rw_scores(loss_fn, jparams(), BATCH, CLEAN, inner_lr=0.1))
    w = np.asarray(jaxnoisy.l2rw_weights(loss_fn, jparams(), BATCH, CLEAN, inner_lr=0.1))
    w_other_lr = np.asarray(jaxnoisy.l2rw_weights(loss_fn, jparams(), BATCH, CLEAN,
                                                  inner_lr=3.0))
  assert (u > 0).any() and (u <= 0).any()
  ref = np.maximum(u, 0) / np.maximum(u, 0).sum()
  np.testing.assert_allclose(w, ref, rtol=1e-12)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
  assert np.all(w[u <= 0] == 0)
  np.testing.assert_allclose(w_other_lr, w, rtol=1e-10)  # η only scales u
  for scores in (-np.ones(5), np.zeros(5)):
    z = np.asarray(jaxnoisy.l2rw_normalize(jnp.asarray(scores)))
    assert np.all(z == 0) and np.all(np.isfinite(z))


def test_weights_stay_in_unit_interval_with_huge_weight_lr():
  params, w = jparams(), jnp.full((B,), 0.5)
  step = jax.jit(lambda p, w: jaxnoisy.meta_reweight_step(loss_fn, p, w, BATCH, CLEAN,
                                                          inner_lr=0.5, weight_lr=1e6))
  for _ in range(10):
    w, _, _ = step(params, w)
    params = jax.tree.map(lambda p, g: p - 0.5 * g, params,
                          jax.grad(lambda p: jaxnoisy.weighted_loss(loss_fn(p, BATCH), w))(params))
    w_np = np.asarray(w)
    assert np.all((w_np >= 0) & (w_np <= 1)) and np.all(np.isfinite(w_np))
  assert (w_np == 0).any() and (w_np == 1).any()


def test_jit_no_recompilation_and_traced_rates():
  traces = []

  @jax.jit
  def step(p, w, lr, alpha):
    traces.append(1)
    return jaxnoisy.meta_reweight_step(loss_fn, p, w, BATCH, CLEAN, inner_lr=lr,
                                       weight_lr=alpha)

  p, w = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), PARAMS), jnp.ones((B,))
  w1 = step(p, w, 0.1, 1.0).weights
  w2 = step(p, w1, 0.2, 2.0).weights
  assert len(traces) == 1 and w2.dtype == jnp.float32 and w2.shape == (B,)


# --- the separable toy problem ---------------------------------------------------------
def toy_problem(seed=1, n=40, m=20, classes=3, dim=5):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(classes, dim)) * 3.0

  def draw(k):
    y = rng.integers(0, classes, size=k)
    return centers[y] + rng.normal(size=(k, dim)) * 0.5, y

  x, y = draw(n)
  xv, yv = draw(m)
  corrupted = np.zeros(n, bool)
  corrupted[rng.permutation(n)[: n // 2]] = True
  noisy = np.where(corrupted, (y + rng.integers(1, classes, size=n)) % classes, y)
  params = {"w": rng.normal(size=(dim, classes)) * 0.01, "b": np.zeros(classes)}
  return x, noisy, corrupted, xv, yv, params


def test_toy_clean_examples_get_higher_weights():
  x, noisy, corrupted, xv, yv, params = toy_problem()
  batch, clean = (jnp.asarray(x), jnp.asarray(noisy)), (jnp.asarray(xv), jnp.asarray(yv))
  lr = 0.5

  @jax.jit
  def step(p, w):
    w, _, _ = jaxnoisy.meta_reweight_step(loss_fn, p, w, batch, clean, inner_lr=lr,
                                          weight_lr=50.0)
    g = jax.grad(lambda q: jaxnoisy.weighted_loss(loss_fn(q, batch), w))(p)
    return jax.tree.map(lambda a, b: a - lr * b, p, g), w

  p, w = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params), jnp.ones(len(noisy))
  for _ in range(30):
    p, w = step(p, w)
  d = {k: float(v) for k, v in jaxnoisy.weight_diagnostics(w, corrupted).items()}
  assert d["mean_weight_clean"] >= d["mean_weight_noisy"] + 0.3, d
  assert d["weight_auc"] > 0.9, d
  # L2RW on the same problem: the corrupted examples get (almost) no weight.
  w_l2rw = jaxnoisy.l2rw_weights(loss_fn, jax.tree.map(jnp.asarray, params), batch, clean)
  assert float(jaxnoisy.weight_auc(w_l2rw, corrupted)) > 0.9


# --- the surrogate ---------------------------------------------------------------------
def np_mwnet(v, losses):
  h = np.maximum(losses[:, None] @ v["w1"] + v["b1"], 0)
  return 1 / (1 + np.exp(-(h @ v["w2"] + v["b2"])[:, 0]))


def test_mwnet_meta_gradient_is_finite_differences():
  eta = 0.7
  with jax.enable_x64(True):
    mw = jaxnoisy.mwnet_init(jax.random.key(0), hidden=8, dtype=jnp.float64)
    grads, clean_loss = jaxnoisy.mwnet_step(loss_fn, jparams(), mw, BATCH, CLEAN, inner_lr=eta)
  mw = {k: np.asarray(v) for k, v in mw.items()}
  losses = np_losses(PARAMS, X, Y)
  pre = losses[:, None] @ mw["w1"] + mw["b1"]
  active = int(np.argmax((pre > 0).sum(0)))          # a hidden unit with active inputs
  assert (pre[:, active] > 0).any()

  def clean_after(v):
    return np_lookahead(PARAMS, np_mwnet(v, losses), eta)

  np.testing.assert_allclose(clean_loss, clean_after(mw), rtol=1e-12)
  for name, idx in (("b2", (0,)), ("w2", (active, 0)), ("w1", (0, active)),
                    ("b1", (active,))):
    h = 1e-6

    def shifted(delta):
      v = {k: a.copy() for k, a in mw.items()}
      v[name][idx] += delta
      return clean_after(v)

    fd = (shifted(h) - shifted(-h)) / (2 * h)
    np.testing.assert_allclose(np.asarray(grads[name])[idx], fd, rtol=1e-5, atol=1e-11)
  assert abs(float(grads["b2"][0])) > 1e-8


def test_mwnet_shapes_and_range():
  mw = jaxnoisy.mwnet_init(jax.random.key(1))
  assert {k: v.shape for k, v in mw.items()} == {"w1": (1, 100), "b1": (100,),
                                                 "w2": (100, 1), "b2": (1,)}
  v = np.asarray(jaxnoisy.mwnet_weights(mw, jnp.linspace(0, 5, 7)))
  assert v.shape == (7,) and np.all((v > 0) & (v < 1))
  assert np.abs(np.asarray(mw["w2"])).max() <= 0.1  # U(±1/√100)


# --- diagnostics -----------------------------------------------------------------------
def brute_auc(w, corrupted):
  pos, neg = w[~corrupted], w[corrupted]
  return ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
      len(pos) * len(neg))


def test_weight_auc_and_diagnostics_match_brute_force():
  rng = np.random.default_rng(5)
  for n in (2, 50):
    w = np.round(rng.uniform(size=n), 1)             # many ties
    corrupted = np.arange(n) % 3 == 0
    np.testing.assert_allclose(jaxnoisy.weight_auc(jnp.asarray(w), jnp.asarray(corrupted)),
                               brute_auc(w, corrupted), rtol=1e-6)
  assert float(jaxnoisy.weight_auc(jnp.ones(6), jnp.arange(6) < 2)) == 0.5
  assert np.isnan(float(jaxnoisy.weight_auc(jnp.ones(4), jnp.zeros(4, bool))))
  w = np.array([0.9, 0.6, 0.2, 0.5, 0.1, 0.7])
  corrupted = np.array([False, False, False, True, True, True])
  d = jaxnoisy.weight_diagnostics(jnp.asarray(w), jnp.asarray(corrupted))
  kept = w >= 0.5
  np.testing.assert_allclose(d["weight_precision"], (kept & ~corrupted).sum() / kept.sum())
  np.testing.assert_allclose(d["weight_recall"], (kept & ~corrupted).sum() / 3)
  np.testing.assert_allclose(d["mean_weight_clean"], w[:3].mean(), rtol=1e-6)
  np.testing.assert_allclose(d["mean_weight_noisy"], w[3:].mean(), rtol=1e-6)
  np.testing.assert_allclose(d["weight_auc"], brute_auc(w, corrupted), rtol=1e-6)
  assert np.isnan(float(jaxnoisy.weight_diagnostics(jnp.zeros(3), jnp.zeros(3, bool))
                        ["weight_precision"]))


# --- validation and the real model -----------------------------------------------------
@pytest.mark.parametrize("call,name", [
    (lambda: jaxnoisy.l2rw_weights(loss_fn, PARAMS, BATCH, CLEAN, inner_lr=0.0), "inner_lr"),
    (lambda: jaxnoisy.meta_reweight_step(loss_fn, PARAMS, jnp.ones(B), BATCH, CLEAN,
                                         inner_lr=-1.0, weight_lr=1.0), "inner_lr"),
    (lambda: jaxnoisy.meta_reweight_step(loss_fn, PARAMS, jnp.ones(B), BATCH, CLEAN,
                                         inner_lr=0.1, weight_lr=-1.0), "weight_lr"),
    (lambda: jaxnoisy.mwnet_step(loss_fn, PARAMS, {}, BATCH, CLEAN, inner_lr=0.0), "inner_lr"),
    (lambda: check_labels("clean_labels", np.array([0, 1]), 1), "num_classes"),
    (lambda: jaxnoisy.check_clean_size(0, 100), "clean_size"),
    (lambda: jaxnoisy.check_clean_size(100, 100), "clean_size"),
    (lambda: jaxnoisy.check_clean_size(2.5, 100), "clean_size"),
    (lambda: jaxnoisy.mwnet_init(jax.random.key(0), hidden=0), "hidden"),
])
def test_bad_inputs_raise_naming_the_parameter(call, name):
  with pytest.raises(ValueError, match=name):
    call()


def test_clean_size_message_names_the_range():
  with pytest.raises(ValueError, match=r"clean_size must be an integer in \[1, 100\)"):
    jaxnoisy.check_clean_size(-3, 100)
  jaxnoisy.check_clean_size(1, 100)
  jaxnoisy.check_clean_size(99, 100)


def test_runs_on_a_jaxnoisy_model():
  model = make_model("mlp", 3, (2, 2, 1), seed=0)
  logits_fn = lambda p, x: model.apply(p, model.state, x, train=True)[0]
  fn = cross_entropy_loss_fn(logits_fn)
  rng = np.random.default_rng(0)
  batch = (jnp.asarray(rng.normal(size=(6, 2, 2, 1)), jnp.float32), jnp.asarray(Y[:6]))
  clean = (jnp.asarray(rng.normal(size=(4, 2, 2, 1)), jnp.float32), jnp.asarray(YV[:4]))
  w = jax.jit(lambda p: jaxnoisy.l2rw_weights(fn, p, batch, clean, inner_lr=0.1))(model.params)
  assert w.shape == (6,) and w.dtype == jnp.float32
  np.testing.assert_allclose(float(jnp.sum(w)), 1.0, rtol=1e-5)


def test_shared_forward_pass_gives_the_same_step():
  """One :func:`linearize` feeds the meta-gradients and the real step unchanged."""
  from jaxnoisy.meta import linearize, weighted_gradient
  w0 = jnp.asarray(RNG.uniform(size=B))
  with jax.enable_x64(True):
    p = jparams()
    lin = linearize(loss_fn, p, BATCH)
    np.testing.assert_allclose(lin.losses, np_losses(PARAMS, X, Y), rtol=1e-12)
    loss, grads = weighted_gradient(lin, w0)
    ref = jax.grad(lambda q: jaxnoisy.weighted_loss(loss_fn(q, BATCH), w0))(p)
    np.testing.assert_allclose(loss, np.mean(np.asarray(w0) * np_losses(PARAMS, X, Y)),
                               rtol=1e-12)
    for k in ref:
      np.testing.assert_allclose(grads[k], ref[k], rtol=1e-12, atol=1e-15)
    shared = jaxnoisy.meta.meta_reweight_step(loss_fn, p, w0, BATCH, CLEAN, inner_lr=0.8,
                                              weight_lr=0.3, linearized=lin)
    alone = jaxnoisy.meta.meta_reweight_step(loss_fn, p, w0, BATCH, CLEAN, inner_lr=0.8,
                                             weight_lr=0.3)
    u_shared = jaxnoisy.meta.l2rw_scores(loss_fn, p, BATCH, CLEAN, inner_lr=0.5,
                                         linearized=lin)
  np.testing.assert_allclose(shared.meta_grad, alone.meta_grad, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(u_shared, -np_first_order(PARAMS, 0.5), rtol=1e-10, atol=1e-14)
