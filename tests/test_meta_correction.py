"""Meta label correction (MLC, BOME on MLC, EBOMLC) against independent recomputations.

The main network is a float64 one-hidden-layer tanh MLP whose hidden layer is the
"penultimate features"; the LCN is the library's, made small (its own forward is checked
against NumPy). References: central finite differences of the clean loss after the
look-ahead (the hypergradient), NumPy for the look-ahead direction, the barrier
coefficients and the plain-CE gradient, and losses, look-ahead points and gradient
differences re-derived in the test from the equations with explicit parameters (never a
call of the step under test).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxnoisy
from jaxnoisy.meta import correction as mc

B, M, D, H, C = 6, 6, 3, 4, 3
RNG = np.random.default_rng(0)
X = RNG.normal(size=(B, D))
Y = RNG.integers(0, C, size=B)
XV = RNG.normal(size=(M, D))
YV = RNG.integers(0, C, size=M)
PARAMS = {"w1": RNG.normal(size=(D, H)), "b1": RNG.normal(size=(H,)) * 0.1,
          "w2": RNG.normal(size=(H, C)), "b2": RNG.normal(size=(C,)) * 0.1}
BUF = {k: RNG.normal(size=v.shape) * 0.3 for k, v in PARAMS.items()}  # a momentum trace
MU, WD = 0.9, 0.05


def logits_fn(p, x):
  h = jnp.tanh(x @ p["w1"] + p["b1"])
  return h @ p["w2"] + p["b2"], h


def setup(variant="mlc"):
  """float64 main parameters and a small LCN; call inside ``jax.enable_x64(True)``."""
  lcn_apply, phi = jaxnoisy.lcn_init(C, H, seed=1, hidden=5, embed_dim=2, variant=variant,
                                     param_dtype=jnp.float64)
  # Scale φ up so that the corrected labels depend visibly on φ and the features.
  phi = jax.tree.map(lambda a: 3.0 * a + 0.1, phi)
  return jax.tree.map(jnp.asarray, PARAMS), lcn_apply, phi


def ce(logits, y):
  return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])


def noisy_loss(p, lcn_apply, phi, x=X, y=Y, key=None):
  """ℓ_noisy from its definition: mean −Σ_c t_c log softmax(z)_c, t from detached h."""
  logits, h = logits_fn(p, x)
  args = () if key is None else (key,)
  t = lcn_apply(phi, jax.lax.stop_gradient(h), y, *args)
  return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(logits), axis=1))


def mixed_loss(p, lcn_apply, phi, xc, yc, key=None):
  """(B·ℓ_noisy + m·CE_C)/(B + m)."""
  m = len(yc)
  return (B * noisy_loss(p, lcn_apply, phi, key=key) + m * ce(logits_fn(p, xc)[0], yc)) / (
      B + m)


def sgd_dir(g, w, buf, mu, wd):
  """μ·buf + g + λ·w, written out leaf by leaf (buf None: zeros)."""
  return {k: (0 if buf is None else mu * buf[k]) + g[k] + wd * w[k] for k in w}


def step_to(w, d, lr):
  return {k: w[k] - lr * d[k] for k in w}


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


# --- the network ----------------------------------------------------------------------
def test_lcn_soft_labels_detached_features_and_default_sizes():
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    h = logits_fn(params, X)[1]
    out = np.asarray(lcn_apply(phi, h, Y))
    grad_h = jax.grad(lambda f: jnp.sum(lcn_apply(phi, f, Y)[:, 0]))(h)
    net = mc.LabelCorrectionNet(C, H, hidden=5, embed_dim=2, param_dtype=jnp.float64,
                                rngs=nnx.Rngs(1))
    module_out = net(h, jnp.asarray(Y))
    _, phi0 = jaxnoisy.lcn_init(C, H, seed=1, hidden=5, embed_dim=2, param_dtype=jnp.float64)
    from_init = lcn_apply(phi0, h, Y)
    keyed = lcn_apply(phi, h, Y, jax.random.key(0))     # "mlc" ignores the key
  assert out.shape == (B, C) and out.dtype == np.float64
  np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-12)
  np.testing.assert_array_equal(grad_h, 0.0)   # stop_gradient on the features
  np.testing.assert_allclose(module_out, from_init, rtol=1e-12)
  np.testing.assert_array_equal(keyed, out)
  _, defaults = jaxnoisy.lcn_init(10, 128, seed=0)
  shapes = jax.tree.map(jnp.shape, defaults)
  assert shapes == {"embed": {"embedding": (10, 64)},
                    "dense1": {"kernel": (192, 128), "bias": (128,)},
                    "dense2": {"kernel": (128, 128), "bias": (128,)},
                    "out": {"kernel": (128, 10), "bias": (10,)}}
  _, authors = jaxnoisy.lcn_init(10, 64, seed=0, embed_dim=128, variant="ebomlc")
  assert jax.tree.map(jnp.shape, authors) == {
      "embed": {"embedding": (10, 128)}, "dense1": {"kernel": (192, 128), "bias": (128,)},
      "dense2": {"kernel": (128, 128), "bias": (128,)},
      "bn": {"scale": (128,), "bias": (128,)}, "out": {"kernel": (128, 10), "bias": (10,)}}
  # nn.Embedding's N(0, 1) (the "mlc" LCN's Glorot-uniform has std ≈ 0.12 here)
  assert 0.9 < float(np.std(authors["embed"]["embedding"])) < 1.1
  assert float(np.std(defaults["embed"]["embedding"])) < 0.3
  np.testing.assert_array_equal(authors["bn"]["scale"], 1.0)
  np.testing.assert_array_equal(authors["bn"]["bias"], 0.0)


def test_ebomlc_lcn_is_numpy_forward_with_dropout_and_batch_statistics():
  """The authors' LCN: tanh → Dropout(0.3) → tanh → BatchNorm (batch statistics) → linear
  → softmax, in NumPy; the mask is bernoulli(key, 0.7, (n, hidden)) as documented."""
  key = jax.random.key(3)
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup("ebomlc")
    phi = phi | {"bn": {"scale": jnp.linspace(0.5, 1.5, 5), "bias": jnp.linspace(-1, 1, 5)}}
    h = np.asarray(logits_fn(params, X)[1])
    plain = np.asarray(lcn_apply(phi, h, Y))
    dropped = np.asarray(lcn_apply(phi, h, Y, key))
    other = np.asarray(lcn_apply(phi, h, Y, jax.random.key(4)))
    mask = np.asarray(jax.random.bernoulli(key, 0.7, (B, 5)))
  p = jax.tree.map(np.asarray, phi)

  def forward(mask):
    z = np.concatenate([h, p["embed"]["embedding"][Y]], axis=1)
    z = np.tanh(z @ p["dense1"]["kernel"] + p["dense1"]["bias"]) * mask / 0.7
    z = np.tanh(z @ p["dense2"]["kernel"] + p["dense2"]["bias"])
    z = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
    z = z @ p["out"]["kernel"] + p["out"]["bias"]
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)

  np.testing.assert_allclose(plain, forward(0.7), rtol=1e-10)   # no key: no dropout
  assert 0 < mask.sum() < mask.size
  np.testing.assert_allclose(dropped, forward(mask), rtol=1e-10)
  assert not np.allclose(dropped, other)
  assert not np.allclose(dropped, plain)


def test_sgd_direction_matches_numpy():
  rng = np.random.default_rng(5)
  g = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=(4,))}
  w = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=(4,))}
  buf = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=(4,))}
  with jax.enable_x64(True):
    full = jax.jit(jaxnoisy.sgd_direction)(g, w, buf, 0.9, 5e-4)
    nobuf = jaxnoisy.sgd_direction(g, w, None, 0.9, 0.1)
    plain = jaxnoisy.sgd_direction(g, w)
  for k in g:
    np.testing.assert_allclose(full[k], 0.9 * buf[k] + g[k] + 5e-4 * w[k], rtol=1e-14)
    np.testing.assert_allclose(nobuf[k], g[k] + 0.1 * w[k], rtol=1e-14)
    np.testing.assert_array_equal(plain[k], g[k])


# --- MLC ------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [False, True])
def test_mlc_hypergradient_is_finite_differences(momentum):
  """w' = w − η(μ·buf + ∇ℓ + λw) (the reference's look-ahead), g_φ = d L_G(w'(φ))/dφ by
  central differences; with ``momentum`` also hmlc_K_mix's C half in ℓ."""
  eta, m = 0.7, 4
  xc, yc = XV[:m] + 0.5, YV[:m]
  buf, mu, wd = (BUF, MU, WD) if momentum else (None, 0.0, 0.0)
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    kwargs = dict(momentum_buffer=buf, momentum=mu, weight_decay=wd,
                  clean_train_batch=(xc, yc)) if momentum else {}
    res = jax.tree.map(np.asarray, jaxnoisy.mlc_step(
        logits_fn, params, lcn_apply, phi, (X, Y), (XV, YV), inner_lr=eta, **kwargs))

    def lower(p, phi_):
      return mixed_loss(p, lcn_apply, phi_, xc, yc) if momentum else noisy_loss(
          p, lcn_apply, phi_)

    def clean_after(phi_):
      g = jax.grad(lower)(params, phi_)
      w = step_to(params, sgd_dir(g, params, buf, mu, wd), eta)
      return float(ce(logits_fn(w, XV)[0], YV))

    eps, fd, got = 1e-6, [], []
    for layer, name, idx in [("dense1", "kernel", (0, 0)), ("dense1", "kernel", (H + 1, 3)),
                             ("embed", "embedding", (1, 0)), ("out", "bias", (2,)),
                             ("dense2", "kernel", (4, 1))]:
      shifted = lambda s: phi | {layer: phi[layer] | {name: phi[layer][name].at[idx].add(s)}}
      fd.append((clean_after(shifted(eps)) - clean_after(shifted(-eps))) / (2 * eps))
      got.append(float(res.grads_phi[layer][name][idx]))
    ref_clean = clean_after(phi)
    ref_gw = jax.grad(lower)(params, phi)
    ref_loss = lower(params, phi)
    ref_corrected = lcn_apply(phi, logits_fn(params, X)[1], Y)
  np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9)
  assert np.max(np.abs(fd)) > 1e-3     # the hypergradient is not trivially zero
  np.testing.assert_allclose(res.clean_loss, ref_clean, rtol=1e-12)
  np.testing.assert_allclose(res.loss, ref_loss, rtol=1e-12)
  # The real step's gradient is ∇_wℓ at w with the old φ (the optimiser adds μ, λ).
  for a, b in zip(jax.tree.leaves(res.grads_w), jax.tree.leaves(ref_gw)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(res.corrected, ref_corrected, rtol=1e-12)
  assert float(res.gamma) == 0.0


def test_mlc_accumulates_discounted_hypergradients():
  """--gradient_steps K: G_t = g_φ + γ G_{t−1}, γ = (1 − η)⟨∇L_G(w'), ∇L_G(w)⟩/‖∇L_G(w)‖²."""
  eta = 0.3
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    acc = jax.tree.map(lambda a: jnp.full_like(a, 0.7) + a, phi)
    step = jax.jit(lambda p, f, b, a: jaxnoisy.mlc_step(
        logits_fn, p, lcn_apply, f, (X, Y), (XV, YV), inner_lr=eta, momentum_buffer=b,
        momentum=MU, weight_decay=WD, accumulated_grads_phi=a))
    res = jax.tree.map(np.asarray, step(params, phi, BUF, acc))

    def ahead(phi_):
      g = jax.grad(noisy_loss)(params, lcn_apply, phi_)
      return step_to(params, sgd_dir(g, params, BUF, MU, WD), eta)

    clean = lambda w: ce(logits_fn(w, XV)[0], YV)
    g_phi = jax.grad(lambda f: clean(ahead(f)))(phi)
    g_now, g_ahead = _flat(jax.grad(clean)(params)), _flat(jax.grad(clean)(ahead(phi)))
  gamma = (1 - eta) * (g_ahead @ g_now) / (g_now @ g_now)
  assert abs(gamma) > 1e-3
  np.testing.assert_allclose(res.gamma, gamma, rtol=1e-10)
  np.testing.assert_allclose(_flat(res.grads_phi), _flat(g_phi) + gamma * _flat(acc),
                             rtol=1e-9, atol=1e-12)


def test_identity_correction_gives_plain_noisy_ce():
  # Softmax regression (features = x) and an LCN that returns the given label.
  lin = lambda p, x: (x @ p["w"] + p["b"], x)
  stub = lambda phi, feats, y: jax.nn.one_hot(y, C, dtype=feats.dtype) + 0 * phi["a"]
  p0 = {"w": RNG.normal(size=(D, C)), "b": RNG.normal(size=(C,))}
  with jax.enable_x64(True):
    res = jax.tree.map(np.asarray, jaxnoisy.mlc_step(
        lin, jax.tree.map(jnp.asarray, p0), stub, {"a": jnp.zeros((), jnp.float64)},
        (X, Y), (XV, YV), inner_lr=0.5))
  z = X @ p0["w"] + p0["b"]
  prob = np.exp(z - z.max(1, keepdims=True))
  prob /= prob.sum(1, keepdims=True)
  r = prob - np.eye(C)[Y]
  np.testing.assert_allclose(res.grads_w["w"], X.T @ r / B, rtol=1e-12)
  np.testing.assert_allclose(res.grads_w["b"], r.mean(0), rtol=1e-12)
  np.testing.assert_allclose(res.loss, -np.mean(np.log(prob[np.arange(B), Y])), rtol=1e-12)
  np.testing.assert_array_equal(res.corrected, np.eye(C)[Y])


def test_mlc_chain_with_torch_amsgrad_over_three_steps():
  """Three MLC steps as the trainer runs them (hmlc_K_mix halves, ``--meta-optimizer
  amsgrad``, SGD with momentum and coupled decay) against the chain recomputed from the
  equations: the hypergradient through w − η(μ·buf + ∇ℓ + λw), φ stepped by torch's
  AMSGrad in NumPy, w by SGD with momentum in NumPy."""
  from jaxnoisy.train import correction_methods, step as step_lib
  from jaxnoisy.train.config import TrainConfig
  from test_amsgrad import run, torch_rule

  lr, meta_lr, m = 0.3, 0.05, 4
  config = TrainConfig(method="mlc", momentum=MU, weight_decay=WD).replace(meta_lr=meta_lr)
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    # φ as initialised: setup's 3× scale saturates an LCN tanh unit, whose hypergradient
    # (~1e-9, from 1 − tanh² near 0) Adam would blow up to a full step, rounding and all.
    phi = jax.tree.map(lambda a: (a - 0.1) / 3.0, phi)
    meta_tx = correction_methods._meta_tx(config.hparams)  # --meta-optimizer amsgrad
    tx = step_lib.make_optimizer(optax.identity(), momentum=MU, weight_decay=WD)
    w, f, opt, meta_opt = params, phi, tx.init(params), meta_tx.init(phi)
    # The reference's state, in NumPy.
    rw, rf = jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, phi)
    rbuf, hyper = None, []
    for t in range(3):
      xg, yg, xc, yc = XV[:m // 2] + t, YV[:m // 2], XV[m // 2:m] - t, YV[m // 2:m]
      buf = optax.tree_utils.tree_get(opt, "trace")
      res = jaxnoisy.mlc_step(logits_fn, w, lcn_apply, f, (X, Y), (xg, yg), inner_lr=lr,
                              momentum_buffer=buf, momentum=MU, weight_decay=WD,
                              clean_train_batch=(xc, yc))
      upd, meta_opt = meta_tx.update(res.grads_phi, meta_opt, f)
      f = optax.apply_updates(f, upd)
      upd, opt = tx.update(res.grads_w, opt, w)
      w = optax.apply_updates(w, jax.tree.map(lambda u: lr * u, upd))

      def lower(p, phi_):
        return mixed_loss(p, lcn_apply, phi_, xc, yc)

      def clean_after(phi_):
        g = jax.grad(lower)(rw, phi_)
        return ce(logits_fn(step_to(rw, sgd_dir(g, rw, rbuf, MU, WD), lr), xg)[0], yg)

      hyper.append(_flat(jax.grad(clean_after)(rf)))
      g_w = jax.tree.map(np.asarray, jax.grad(lower)(rw, rf))
      d = {k: g_w[k] + WD * rw[k] for k in rw}  # SGD: buf = μ·buf + g + λw; w −= lr·buf
      rbuf = d if rbuf is None else {k: MU * rbuf[k] + d[k] for k in rw}
      rw = {k: rw[k] - lr * rbuf[k] for k in rw}
      shapes = [(k, np.shape(v)) for k, v in jax.tree_util.tree_leaves_with_path(rf)]
      step = torch_rule(hyper, lr=meta_lr)[-1]
      leaves, at = [], 0
      for _, shape in shapes:
        n = int(np.prod(shape))
        leaves.append(step[at:at + n].reshape(shape))
        at += n
      rf = jax.tree.unflatten(jax.tree.structure(rf),
                              [a + u for a, u in zip(jax.tree.leaves(rf), leaves)])
    # optax.amsgrad's three steps on the same hypergradients (its max is of the
    # bias-corrected moment): what the chain must tell apart from torch's rule.
    optax_moved = np.sum(run(optax.amsgrad(meta_lr), hyper), axis=0)
  np.testing.assert_allclose(_flat(f), _flat(rf), rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(_flat(w), _flat(rw), rtol=1e-12, atol=1e-14)
  # optax.amsgrad would have left φ visibly elsewhere after three steps.
  assert np.max(np.abs(_flat(rf) - _flat(phi))) > 1e-3
  assert np.max(np.abs(_flat(rf) - _flat(phi) - optax_moved)) > 1e-3


# --- BOME and EBOMLC coefficients -----------------------------------------------------
def _random_tree(rng, scale=1.0):
  return {"a": rng.normal(size=(3, 2)) * scale, "b": rng.normal(size=(4,)) * scale}


def test_bome_lambda_and_ebomlc_beta_match_numpy_and_are_never_negative():
  rng = np.random.default_rng(1)
  lam_fn = jax.jit(jaxnoisy.bome_lambda)
  beta_fn = jax.jit(jaxnoisy.ebomlc_beta)
  positive = [0, 0]
  with jax.enable_x64(True):
    for _ in range(40):
      gf, gq, q, u = _random_tree(rng), _random_tree(rng), abs(rng.normal()), rng.uniform()
      lam = float(lam_fn(gf, gq, q, u))
      ref = max(0.0, (u * q - _flat(gf) @ _flat(gq)) / (_flat(gq) @ _flat(gq) + 1e-8))
      np.testing.assert_allclose(lam, ref, rtol=1e-12, atol=1e-15)
      dw, dphi, dfw = _random_tree(rng), {"c": rng.normal(size=(5,))}, _random_tree(rng)
      xi, delta = rng.uniform(), rng.uniform()
      beta = float(beta_fn(dw, dphi, dfw, xi, delta))
      n2 = _flat(dw) @ _flat(dw) + _flat(dphi) @ _flat(dphi)
      ref_b = xi * max(0.0, (delta * n2 - _flat(dw) @ _flat(dfw)) / (n2 + 1e-8))
      np.testing.assert_allclose(beta, ref_b, rtol=1e-12, atol=1e-15)
      assert lam >= 0 and beta >= 0
      positive[0] += lam > 0
      positive[1] += beta > 0
    assert all(0 < k < 40 for k in positive)   # both branches of max(0, ·) were seen
    # Already aligned: ⟨∇f, ∇q⟩ ≥ u q  ⇒  λ = 0;  ⟨Δ_w, d_f⟩ ≥ δ‖Δ‖²  ⇒  β = 0.
    gq = _random_tree(rng)
    assert float(jaxnoisy.bome_lambda(jax.tree.map(lambda x: 2 * x, gq), gq, 0.1, 1.0)) == 0
    dw, dphi = _random_tree(rng), {"c": rng.normal(size=(5,))}
    n2 = _flat(dw) @ _flat(dw) + _flat(dphi) @ _flat(dphi)
    aligned = jax.tree.map(lambda x: x * (0.5 * n2 / (_flat(dw) @ _flat(dw))), dw)
    assert float(jaxnoisy.ebomlc_beta(dw, dphi, aligned, 0.5, 0.25)) == 0
    assert float(jaxnoisy.ebomlc_beta(dw, dphi, aligned, 0.5, 0.75)) > 0


def test_bome_mlc_step_recomputed_and_barrier_holds():
  """step_mlcbome: T look-ahead steps along μ·buf + ∇ℓ + λŵ_k, ∇q = gradient difference,
  control u‖∇q‖², f = CE on G, C in ℓ."""
  eta, u, steps = 0.3, 0.5, 2
  xg, yg, xc, yc = XV[:3], YV[:3], XV[3:], YV[3:]
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    res = jax.tree.map(np.asarray, jaxnoisy.bome_mlc_step(
        logits_fn, params, lcn_apply, phi, (X, Y), (xg, yg), inner_lr=eta,
        inner_steps=steps, u=u, momentum_buffer=BUF, momentum=MU, weight_decay=WD,
        clean_train_batch=(xc, yc)))
    g = lambda p, f: mixed_loss(p, lcn_apply, f, xc, yc)
    w_hat = params
    for _ in range(steps):
      w_hat = step_to(w_hat, sgd_dir(jax.grad(g)(w_hat, phi), w_hat, BUF, MU, WD), eta)
    gw, gphi = jax.grad(g, argnums=(0, 1))(params, phi)
    gw_hat, gphi_hat = jax.grad(g, argnums=(0, 1))(w_hat, phi)
    q = g(params, phi) - g(w_hat, phi)
    fw = jax.grad(lambda p: ce(logits_fn(p, xg)[0], yg))(params)
    f_val = ce(logits_fn(params, xg)[0], yg)
  dq_w, dq_phi = _flat(gw) - _flat(gw_hat), _flat(gphi) - _flat(gphi_hat)
  gq = np.concatenate([dq_w, dq_phi])
  lam = max(0.0, (u * (gq @ gq) - _flat(fw) @ dq_w) / (gq @ gq + 1e-8))
  assert lam > 0
  np.testing.assert_allclose(res.q, q, rtol=1e-12)
  np.testing.assert_allclose(res.upper_loss, f_val, rtol=1e-12)
  np.testing.assert_allclose(res.lam, lam, rtol=1e-10)
  np.testing.assert_allclose(_flat(res.grads_w), _flat(fw) + lam * dq_w, rtol=1e-10,
                             atol=1e-13)
  np.testing.assert_allclose(_flat(res.grads_phi), lam * dq_phi, rtol=1e-10, atol=1e-13)
  # The barrier: ⟨d, ∇q⟩ ≥ u‖∇q‖² (equality, up to the 1e-8, when λ > 0).
  direction = np.concatenate([_flat(res.grads_w), _flat(res.grads_phi)])
  assert direction @ gq >= u * (gq @ gq) - 1e-7


# --- EBOMLC ---------------------------------------------------------------------------
@pytest.mark.parametrize("mixture", ["probs", "logits"])
def test_mixture_upper_loss(mixture):
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    f = lambda rho: float(jaxnoisy.ebomlc_upper_loss(logits_fn, params, lcn_apply, phi,
                                                     (XV, YV), rho=rho, mixture=mixture))
    logits, h = logits_fn(params, XV)
    t = np.asarray(lcn_apply(phi, h, YV))
    plain = float(ce(logits, YV))
    f1, f_mid = f(1.0), f(0.3)
  logits = np.asarray(logits)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  rows = np.arange(M)
  np.testing.assert_allclose(f1, plain, rtol=1e-12)            # ρ = 1: the clean CE
  if mixture == "probs":
    ref = -np.mean(np.log(0.3 * p[rows, YV] + 0.7 * t[rows, YV]))
  else:                                                          # the reference code
    z = 0.3 * logits + 0.7 * t
    ref = -np.mean(z[rows, YV] - np.log(np.exp(z).sum(1)))
  np.testing.assert_allclose(f_mid, ref, rtol=1e-12)


def test_ebomlc_step_starts_from_w1_with_momentum_weight_decay_and_signs():
  eta, lr, rho, xi, delta = 0.4, 0.1, 0.2, 0.5, 0.25
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    step = functools.partial(jaxnoisy.ebomlc_step, logits_fn, params, lcn_apply, phi, (X, Y),
                             (XV, YV), inner_lr=eta, momentum_buffer=BUF, momentum=MU,
                             weight_decay=WD, rho=rho, xi=xi, delta=delta)
    desc, ref, upd = (jax.tree.map(np.asarray, step(sign=s, delta_update=d))
                      for s, d in (("descend", False), ("reference", False),
                                   ("descend", True)))
    jitted = jax.tree.map(np.asarray, jax.jit(lambda p, f, b: jaxnoisy.ebomlc_step(
        logits_fn, p, lcn_apply, f, (X, Y), (XV, YV), inner_lr=eta, momentum_buffer=b,
        momentum=MU, weight_decay=WD))(params, phi, BUF))
    # The trainer's real step: SGD with momentum and coupled weight decay, at w₁.
    tx = optax.chain(optax.add_decayed_weights(WD), optax.sgd(lr, momentum=MU))
    opt = optax.tree_utils.tree_set(tx.init(params), trace=BUF)
    updates, opt = tx.update(desc.grads_w, opt, desc.params)
    stepped = jax.tree.map(np.asarray, optax.apply_updates(desc.params, updates))
    new_trace = optax.tree_utils.tree_get(opt, "trace")

    # Recompute from the definitions: G = first half, C = second half of the clean batch.
    xg, yg, xc, yc = XV[:3], YV[:3], XV[3:], YV[3:]
    lower = lambda p, f: mixed_loss(p, lcn_apply, f, xc, yc)
    def upper(p, f):
      logits, h = logits_fn(p, xg)
      t = lcn_apply(f, h, yg)
      mix = rho * jax.nn.softmax(logits) + (1 - rho) * t
      return -jnp.mean(jnp.log(mix[jnp.arange(3), yg]))
    gw, gphi = jax.grad(lower, argnums=(0, 1))(params, phi)
    w1 = step_to(params, sgd_dir(gw, params, BUF, MU, WD), eta)
    gw1, gphi1 = jax.grad(lower, argnums=(0, 1))(w1, phi)
    fw, fphi = jax.grad(upper, argnums=(0, 1))(params, phi)
    f_val, l_val = upper(params, phi), lower(params, phi)
    d_fw = jax.tree.map(np.asarray, sgd_dir(fw, params, BUF, MU, WD))
    dw_tree = {k: gw[k] - gw1[k] for k in gw}
    dw_update = jax.tree.map(lambda d: -eta * np.asarray(d), sgd_dir(dw_tree, w1, BUF, MU, WD))
  dw = _flat(dw_tree)
  dphi = _flat(gphi) - _flat(gphi1)
  dfw_ref = -eta * _flat(d_fw)
  n2 = dw @ dw + dphi @ dphi
  beta = lambda dfw: xi * max(0.0, (delta * n2 - dw @ dfw) / (n2 + 1e-8))
  b_desc, b_ref = beta(_flat(fw)), beta(dfw_ref)
  assert b_desc > 0 and b_ref > 0 and not np.isclose(b_desc, b_ref)
  np.testing.assert_allclose([desc.beta, ref.beta, upd.beta], [b_desc, b_ref, b_desc],
                             rtol=1e-9)
  for r in (desc, ref, upd):
    np.testing.assert_allclose(_flat(r.params), _flat(w1), rtol=1e-13)   # w₁ by hand
    np.testing.assert_allclose(r.upper_loss, f_val, rtol=1e-12)
    np.testing.assert_allclose(r.loss, l_val, rtol=1e-12)
    np.testing.assert_allclose(_flat(r.grads_phi), r.beta * dphi + _flat(fphi),
                               rtol=1e-9, atol=1e-12)
  # "descend": g_w = βΔ_w + ∇_w f.   "reference": g_w = βΔ_w − η·D(∇_w f).
  np.testing.assert_allclose(_flat(desc.grads_w), b_desc * dw + _flat(fw), rtol=1e-9,
                             atol=1e-12)
  np.testing.assert_allclose(_flat(ref.grads_w), b_ref * dw + dfw_ref, rtol=1e-9,
                             atol=1e-12)
  # delta_update (the code's non-CIFAR-10 branch): Δ_w → −η(μ·buf + Δ_w + λw₁).
  np.testing.assert_allclose(_flat(upd.grads_w), b_desc * _flat(dw_update) + _flat(fw),
                             rtol=1e-9, atol=1e-12)
  # Stepping along −g_w: "reference" moves w up the upper loss's momentum direction.
  assert (_flat(ref.grads_w) - b_ref * dw) @ _flat(d_fw) < 0
  # The real step from w₁: w ← w₁ − lr(μ·buf + g_w + λw₁), the buffer advanced.
  g_real = b_desc * dw + _flat(fw)
  expected = _flat(w1) - lr * (MU * _flat(BUF) + g_real + WD * _flat(w1))
  np.testing.assert_allclose(_flat(stepped), expected, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(_flat(new_trace), MU * _flat(BUF) + g_real + WD * _flat(w1),
                             rtol=1e-10, atol=1e-12)
  for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(desc)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_steps_with_the_authors_lcn_draw_one_dropout_key_per_lcn_evaluation():
  """With a key, each LCN evaluation gets its own split key (EBOMLC: G, w, w₁; BOME-MLC:
  ŵ_0 = w, …, ŵ); recomputed with those keys and the "logits" mixture."""
  eta, rho, key = 0.4, 0.2, jax.random.key(7)
  xg, yg, xc, yc = XV[:3], YV[:3], XV[3:], YV[3:]
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup("ebomlc")
    run = lambda k: jax.tree.map(np.asarray, jaxnoisy.ebomlc_step(
        logits_fn, params, lcn_apply, phi, (X, Y), (XV, YV), inner_lr=eta, rho=rho,
        mixture="logits", key=k))
    res, no_key = run(key), run(None)
    bome = jax.tree.map(np.asarray, jaxnoisy.bome_mlc_step(
        logits_fn, params, lcn_apply, phi, (X, Y), (xg, yg), inner_lr=eta, inner_steps=1,
        clean_train_batch=(xc, yc), key=key))

    k_g, k_w, k_w1 = jax.random.split(key, 3)
    lower = lambda p, f, k: mixed_loss(p, lcn_apply, f, xc, yc, key=k)
    def upper(p, f):
      logits, h = logits_fn(p, xg)
      return ce(rho * logits + (1 - rho) * lcn_apply(f, h, yg, k_g), yg)
    gw, gphi = jax.grad(lower, argnums=(0, 1))(params, phi, k_w)
    w1 = step_to(params, gw, eta)
    gw1, gphi1 = jax.grad(lower, argnums=(0, 1))(w1, phi, k_w1)
    fw, fphi = jax.grad(upper, argnums=(0, 1))(params, phi)

    b0, b1 = jax.random.split(key, 2)
    bw, bphi = jax.grad(lower, argnums=(0, 1))(params, phi, b0)
    w_hat = step_to(params, bw, eta)
    bw_hat, bphi_hat = jax.grad(lower, argnums=(0, 1))(w_hat, phi, b1)
    bfw = jax.grad(lambda p: ce(logits_fn(p, xg)[0], yg))(params)
  dw, dphi = _flat(gw) - _flat(gw1), _flat(gphi) - _flat(gphi1)
  n2 = dw @ dw + dphi @ dphi
  beta = 0.5 * max(0.0, (0.25 * n2 - dw @ _flat(fw)) / (n2 + 1e-8))
  np.testing.assert_allclose(res.beta, beta, rtol=1e-9)
  np.testing.assert_allclose(_flat(res.grads_w), beta * dw + _flat(fw), rtol=1e-9,
                             atol=1e-12)
  np.testing.assert_allclose(_flat(res.grads_phi), beta * dphi + _flat(fphi), rtol=1e-9,
                             atol=1e-12)
  assert not np.allclose(_flat(res.grads_phi), _flat(no_key.grads_phi))
  qw, qphi = _flat(bw) - _flat(bw_hat), _flat(bphi) - _flat(bphi_hat)
  gq = np.concatenate([qw, qphi])
  lam = max(0.0, (0.5 * (gq @ gq) - _flat(bfw) @ qw) / (gq @ gq + 1e-8))
  np.testing.assert_allclose(bome.lam, lam, rtol=1e-9)
  np.testing.assert_allclose(_flat(bome.grads_phi), lam * qphi, rtol=1e-9, atol=1e-12)


def test_steps_return_the_noisy_forward_state_and_ignore_it_otherwise():
  """A third output of logits_fn (here batch-norm-like statistics: the mean hidden
  activation of the batch) comes back as ``model_state`` — the noisy batch's where the
  real step starts: at w (MLC, BOME-MLC), at w₁ (EBOMLC) — and changes nothing else."""
  def with_state(p, x):
    logits, h = logits_fn(p, x)
    return logits, h, {"mean": jnp.mean(h, axis=0)}

  eta = 0.3
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    clean = (np.concatenate([XV, XV[:2]]), np.concatenate([YV, YV[:2]]))
    gw = jax.grad(mixed_loss)(params, lcn_apply, phi, clean[0][4:], clean[1][4:])
    w1 = jax.tree.map(np.asarray, step_to(params, gw, eta))
    steps = {
        "mlc": lambda f: jaxnoisy.mlc_step(f, params, lcn_apply, phi, (X, Y), (XV, YV),
                                           inner_lr=eta, clean_train_batch=(XV[:2], YV[:2])),
        "bome_mlc": lambda f: jaxnoisy.bome_mlc_step(f, params, lcn_apply, phi, (X, Y),
                                                     (XV, YV), inner_lr=eta, inner_steps=1),
        "ebomlc": lambda f: jaxnoisy.ebomlc_step(f, params, lcn_apply, phi, (X, Y), clean,
                                                 inner_lr=eta),
    }
    for name, step in steps.items():
      at = w1 if name == "ebomlc" else PARAMS
      expected = np.tanh(X @ at["w1"] + at["b1"]).mean(axis=0)  # NumPy
      plain, stated = step(logits_fn)._asdict(), step(with_state)._asdict()
      assert plain.pop("model_state") is None, name
      np.testing.assert_allclose(stated.pop("model_state")["mean"], expected, rtol=1e-12,
                                 err_msg=name)
      for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(stated)):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_corrected_accuracy():
  soft = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
  true = np.array([0, 2, 2, 0])
  out = jaxnoisy.corrected_accuracy(soft, true, np.array([True, True, False, False]))
  assert float(out["corrected_accuracy_noisy"]) == 0.5
  assert float(out["corrected_accuracy_clean"]) == 1.0
  none = jax.jit(jaxnoisy.corrected_accuracy)(soft, true, np.zeros(4, bool))
  assert np.isnan(none["corrected_accuracy_noisy"])
  assert float(none["corrected_accuracy_clean"]) == 0.75
  # An unknown true label (−1, Clothing1M) is in neither group.
  unknown = jaxnoisy.corrected_accuracy(soft, np.array([0, 2, -1, 0]), np.zeros(4, bool))
  assert float(unknown["corrected_accuracy_clean"]) == pytest.approx(2 / 3, rel=1e-6)


# --- validation -----------------------------------------------------------------------
_BAD_BUF = {"x": np.zeros(2)}


@pytest.mark.parametrize("fn, kwargs, name", [
    ("mlc", {"inner_lr": 0.0}, "inner_lr"),
    ("mlc", {"inner_lr": 0.1, "momentum": -0.1}, "momentum"),
    ("mlc", {"inner_lr": 0.1, "momentum": 1.5}, "momentum"),
    ("mlc", {"inner_lr": 0.1, "weight_decay": -1e-4}, "weight_decay"),
    ("mlc", {"inner_lr": 0.1, "momentum_buffer": _BAD_BUF}, "momentum_buffer"),
    ("mlc", {"inner_lr": 0.1, "accumulated_grads_phi": _BAD_BUF}, "accumulated_grads_phi"),
    ("bome", {"inner_lr": -1.0}, "inner_lr"),
    ("bome", {"inner_lr": 0.1, "inner_steps": 0}, "inner_steps"),
    ("bome", {"inner_lr": 0.1, "u": -0.5}, "u"),
    ("bome", {"inner_lr": 0.1, "momentum": 2.0}, "momentum"),
    ("ebomlc", {"inner_lr": 0.1, "rho": 1.5}, "rho"),
    ("ebomlc", {"inner_lr": 0.1, "rho": -0.1}, "rho"),
    ("ebomlc", {"inner_lr": 0.1, "xi": -1.0}, "xi"),
    ("ebomlc", {"inner_lr": 0.1, "delta": -0.1}, "delta"),
    ("ebomlc", {"inner_lr": 0.0}, "inner_lr"),
    ("ebomlc", {"inner_lr": 0.1, "sign": "ascend"}, "sign"),
    ("ebomlc", {"inner_lr": 0.1, "mixture": "logit"}, "mixture"),
    ("ebomlc", {"inner_lr": 0.1, "delta_update": "yes"}, "delta_update"),
    ("ebomlc", {"inner_lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
    ("ebomlc", {"inner_lr": 0.1, "momentum_buffer": _BAD_BUF}, "momentum_buffer"),
    ("ebomlc_small", {"inner_lr": 0.1}, "clean_batch"),
])
def test_bad_input_raises(fn, kwargs, name):
  params, lcn_apply, phi = {"w": jnp.zeros((D, C))}, None, None   # never traced
  args = (logits_fn, params, lcn_apply, phi, (X, Y), (XV, YV))
  with pytest.raises(ValueError, match=name):
    if fn == "mlc":
      jaxnoisy.mlc_step(*args, **kwargs)
    elif fn == "bome":
      jaxnoisy.bome_mlc_step(*args, **kwargs)
    elif fn == "ebomlc":
      jaxnoisy.ebomlc_step(*args, **kwargs)
    else:
      jaxnoisy.ebomlc_step(*args[:5], (XV[:1], YV[:1]), **kwargs)
  with pytest.raises(ValueError, match="xi"):
    jaxnoisy.ebomlc_beta({}, {}, {}, -1.0, 0.1)
  with pytest.raises(ValueError, match="variant"):
    jaxnoisy.lcn_init(C, H, variant="authors")
  with pytest.raises(ValueError, match="momentum"):
    jaxnoisy.sgd_direction(params, params, None, -0.5)
