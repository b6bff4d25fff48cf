"""Meta label correction (MLC, BOME on MLC, EBOMLC) against independent recomputations.

The main network is a float64 one-hidden-layer tanh MLP whose hidden layer is the
"penultimate features"; the LCN is the library's, made small. References: central
finite differences of the clean loss after the look-ahead (the hypergradient), NumPy
for the barrier coefficients and the plain-CE gradient, and losses and gradient
differences re-derived in the test from their definitions.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
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


def logits_fn(p, x):
  h = jnp.tanh(x @ p["w1"] + p["b1"])
  return h @ p["w2"] + p["b2"], h


def setup():
  """float64 main parameters and a small LCN; call inside ``jax.enable_x64(True)``."""
  lcn_apply, phi = jaxnoisy.lcn_init(C, H, seed=1, hidden=5, embed_dim=2,
                                     param_dtype=jnp.float64)
  # Scale φ up so that the corrected labels depend visibly on φ and the features.
  phi = jax.tree.map(lambda a: 3.0 * a + 0.1, phi)
  return jax.tree.map(jnp.asarray, PARAMS), lcn_apply, phi


def ce(logits, y):
  return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])


def noisy_loss(p, lcn_apply, phi, x=X, y=Y):
  """ℓ_noisy from its definition: mean −Σ_c t_c log softmax(z)_c, t from detached h."""
  logits, h = logits_fn(p, x)
  t = lcn_apply(phi, jax.lax.stop_gradient(h), y)
  return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(logits), axis=1))


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
  assert out.shape == (B, C) and out.dtype == np.float64
  np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-12)
  np.testing.assert_array_equal(grad_h, 0.0)   # stop_gradient on the features
  np.testing.assert_allclose(module_out, from_init, rtol=1e-12)
  _, defaults = jaxnoisy.lcn_init(10, 128, seed=0)
  shapes = jax.tree.map(jnp.shape, defaults)
  assert shapes == {"embed": {"embedding": (10, 64)},
                    "dense1": {"kernel": (192, 128), "bias": (128,)},
                    "dense2": {"kernel": (128, 128), "bias": (128,)},
                    "out": {"kernel": (128, 10), "bias": (10,)}}


# --- MLC ------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2])
def test_mlc_hypergradient_is_finite_differences(steps):
  eta = 0.7
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    res = jax.tree.map(np.asarray, jaxnoisy.mlc_step(
        logits_fn, params, lcn_apply, phi, (X, Y), (XV, YV), inner_lr=eta,
        lookahead_steps=steps))

    def clean_after(phi_, frozen=None):
      """L_clean(w_K(φ)); ``frozen[k]`` replaces the LCN's input features at step k."""
      w, feats = params, []
      for k in range(steps):
        h = logits_fn(w, X)[1] if frozen is None else frozen[k]
        feats.append(h)
        t = lcn_apply(phi_, h, Y)
        g = jax.grad(lambda p: -jnp.mean(jnp.sum(t * jax.nn.log_softmax(
            logits_fn(p, X)[0]), axis=1)))(w)
        w = jax.tree.map(lambda a, b: a - eta * b, w, g)
      return float(ce(logits_fn(w, XV)[0], YV)), feats

    # The LCN reads features as data at every virtual iterate (stop_gradient), so for
    # K ≥ 2 the hypergradient is that of L_clean with each iterate's features held at
    # their current values; for K = 1 the features are those of w and this is exact.
    ref_clean, frozen = clean_after(phi)
    entries = [("dense1", "kernel", (0, 0)), ("dense1", "kernel", (H + 1, 3)),
               ("embed", "embedding", (1, 0)), ("out", "bias", (2,)),
               ("dense2", "kernel", (4, 1))]
    fd, got, eps = [], [], 1e-6
    for layer, name, idx in entries:
      def shifted(s):
        return phi | {layer: phi[layer] | {name: phi[layer][name].at[idx].add(s)}}
      fd.append((clean_after(shifted(eps), frozen)[0]
                 - clean_after(shifted(-eps), frozen)[0]) / (2 * eps))
      got.append(float(res.grads_phi[layer][name][idx]))
    ref_gw = jax.grad(noisy_loss)(params, lcn_apply, phi)
    ref_loss = noisy_loss(params, lcn_apply, phi)
    ref_corrected = lcn_apply(phi, logits_fn(params, X)[1], Y)
  np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9)
  assert np.max(np.abs(fd)) > 1e-3     # the hypergradient is not trivially zero
  np.testing.assert_allclose(res.clean_loss, ref_clean, rtol=1e-12)
  np.testing.assert_allclose(res.loss, ref_loss, rtol=1e-12)
  for a, b in zip(jax.tree.leaves(res.grads_w), jax.tree.leaves(ref_gw)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(res.corrected, ref_corrected, rtol=1e-12)


def test_mlc_clean_train_batch_mixes_the_lower_loss_by_size():
  """hmlc_K_mix: ℓ = (B·ℓ_noisy + m·CE_C)/(B + m); the hypergradient differentiates the
  clean loss after a step on that ℓ (finite differences)."""
  eta, m = 0.7, 4
  xc, yc = XV[:m] + 0.5, YV[:m]
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    res = jax.tree.map(np.asarray, jaxnoisy.mlc_step(
        logits_fn, params, lcn_apply, phi, (X, Y), (XV, YV), inner_lr=eta,
        clean_train_batch=(xc, yc)))

    def lower(p, phi_):
      return (B * noisy_loss(p, lcn_apply, phi_) + m * ce(logits_fn(p, xc)[0], yc)) / (B + m)

    def clean_after(phi_):
      h = logits_fn(params, X)[1]  # the LCN reads w's features as data
      t = lcn_apply(phi_, h, Y)
      g = jax.grad(lambda p: (B * -jnp.mean(jnp.sum(t * jax.nn.log_softmax(
          logits_fn(p, X)[0]), axis=1)) + m * ce(logits_fn(p, xc)[0], yc)) / (B + m))(params)
      w = jax.tree.map(lambda a, b: a - eta * b, params, g)
      return float(ce(logits_fn(w, XV)[0], YV))

    eps, fd, got = 1e-6, [], []
    for layer, name, idx in [("dense1", "kernel", (0, 1)), ("embed", "embedding", (1, 0)),
                             ("out", "bias", (2,)), ("dense2", "kernel", (4, 1))]:
      shifted = lambda s: phi | {layer: phi[layer] | {name: phi[layer][name].at[idx].add(s)}}
      fd.append((clean_after(shifted(eps)) - clean_after(shifted(-eps))) / (2 * eps))
      got.append(float(res.grads_phi[layer][name][idx]))
    ref_gw = jax.grad(lower)(params, phi)
    ref_loss = lower(params, phi)
  np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9)
  assert np.max(np.abs(fd)) > 1e-3
  np.testing.assert_allclose(res.loss, ref_loss, rtol=1e-12)
  for a, b in zip(jax.tree.leaves(res.grads_w), jax.tree.leaves(ref_gw)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


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


# --- BOME and EBOMLC coefficients -----------------------------------------------------
def _random_tree(rng, scale=1.0):
  return {"a": rng.normal(size=(3, 2)) * scale, "b": rng.normal(size=(4,)) * scale}


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


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
  eta, u = 0.3, 0.5
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    res = jax.tree.map(np.asarray, jaxnoisy.bome_mlc_step(
        logits_fn, params, lcn_apply, phi, (X, Y), (XV, YV), inner_lr=eta, inner_steps=2,
        u=u))
    g = lambda p, f: noisy_loss(p, lcn_apply, f)
    w_hat = params
    for _ in range(2):
      w_hat = jax.tree.map(lambda a, b: a - eta * b, w_hat, jax.grad(g)(w_hat, phi))
    gw, gphi = jax.grad(g, argnums=(0, 1))(params, phi)
    dq_phi = jax.tree.map(jnp.subtract, gphi, jax.grad(g, argnums=1)(w_hat, phi))
    q = g(params, phi) - g(w_hat, phi)
    fw = jax.grad(lambda p: ce(logits_fn(p, XV)[0], YV))(params)
  gq = np.concatenate([_flat(gw), _flat(dq_phi)])
  gf = np.concatenate([_flat(fw), np.zeros(_flat(dq_phi).size)])
  lam = max(0.0, (u * float(q) - gf @ gq) / (gq @ gq + 1e-8))
  np.testing.assert_allclose(res.q, q, rtol=1e-12)
  np.testing.assert_allclose(res.lam, lam, rtol=1e-10)
  direction = np.concatenate([_flat(res.grads_w), _flat(res.grads_phi)])
  np.testing.assert_allclose(direction, gf + lam * gq, rtol=1e-10, atol=1e-13)
  # The barrier: ⟨d, ∇q⟩ ≥ u·q (equality, up to the 1e-8, when λ > 0).
  assert direction @ gq >= u * float(q) - 1e-7


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


def _momentum(trace, mu=0.9):
  return lambda g: jax.tree.map(lambda b, x: mu * b + x, trace, g)


def test_ebomlc_step_deltas_beta_and_signs():
  eta, rho, xi, delta = 0.4, 0.2, 0.5, 0.25
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    trace = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.3), params)
    D = _momentum(trace)
    step = functools.partial(jaxnoisy.ebomlc_step, logits_fn, params, lcn_apply, phi, (X, Y),
                             (XV, YV), D, inner_lr=eta, rho=rho, xi=xi, delta=delta)
    desc, ref = (jax.tree.map(np.asarray, step(sign=s)) for s in ("descend", "reference"))
    jitted = jax.tree.map(np.asarray, jax.jit(lambda p, f: jaxnoisy.ebomlc_step(
        logits_fn, p, lcn_apply, f, (X, Y), (XV, YV), D, inner_lr=eta))(params, phi))

    # Recompute from the definitions: G = first half, C = second half of the clean batch.
    xg, yg, xc, yc = XV[:3], YV[:3], XV[3:], YV[3:]
    def lower(p, f):
      return (B * noisy_loss(p, lcn_apply, f) + 3 * ce(logits_fn(p, xc)[0], yc)) / (B + 3)
    def upper(p, f):
      logits, h = logits_fn(p, xg)
      t = lcn_apply(f, h, yg)
      mix = rho * jax.nn.softmax(logits) + (1 - rho) * t
      return -jnp.mean(jnp.log(mix[jnp.arange(3), yg]))
    gw, gphi = jax.grad(lower, argnums=(0, 1))(params, phi)
    w1 = jax.tree.map(lambda a, d: a - eta * d, params, D(gw))
    gw1, gphi1 = jax.grad(lower, argnums=(0, 1))(w1, phi)
    fw, fphi = jax.grad(upper, argnums=(0, 1))(params, phi)
    f_val, l_val = upper(params, phi), lower(params, phi)
    d_fw = jax.tree.map(np.asarray, D(fw))
    dfw_ref = jax.tree.map(lambda d: -eta * d, d_fw)
  dw = _flat(gw) - _flat(gw1)
  dphi = _flat(gphi) - _flat(gphi1)
  n2 = dw @ dw + dphi @ dphi
  beta = lambda dfw: xi * max(0.0, (delta * n2 - dw @ dfw) / (n2 + 1e-8))
  b_desc, b_ref = beta(_flat(fw)), beta(_flat(dfw_ref))
  assert b_desc > 0 and b_ref > 0 and not np.isclose(b_desc, b_ref)
  np.testing.assert_allclose([desc.beta, ref.beta], [b_desc, b_ref], rtol=1e-9)
  for r in (desc, ref):
    np.testing.assert_allclose(r.upper_loss, f_val, rtol=1e-12)
    np.testing.assert_allclose(r.loss, l_val, rtol=1e-12)
    np.testing.assert_allclose(_flat(r.grads_phi), r.beta * dphi + _flat(fphi),
                               rtol=1e-9, atol=1e-12)
  # "descend": g_w = βΔ_w + ∇_w f.   "reference": g_w = βΔ_w − η·D(∇_w f).
  np.testing.assert_allclose(_flat(desc.grads_w), b_desc * dw + _flat(fw), rtol=1e-9,
                             atol=1e-12)
  np.testing.assert_allclose(_flat(ref.grads_w), b_ref * dw + _flat(dfw_ref), rtol=1e-9,
                             atol=1e-12)
  # Stepping along −g_w: "reference" moves w up the upper loss's momentum direction.
  assert (_flat(ref.grads_w) - b_ref * dw) @ _flat(d_fw) < 0
  for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(desc)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_steps_return_the_noisy_forward_state_and_ignore_it_otherwise():
  """A third output of logits_fn (here batch-norm-like statistics: the mean hidden
  activation of the batch) comes back as ``model_state`` — the noisy batch's, at w —
  and changes nothing else."""
  def with_state(p, x):
    logits, h = logits_fn(p, x)
    return logits, h, {"mean": jnp.mean(h, axis=0)}

  with jax.enable_x64(True):
    params, lcn_apply, phi = setup()
    expected = np.tanh(X @ PARAMS["w1"] + PARAMS["b1"]).mean(axis=0)  # NumPy, at w
    clean = (np.concatenate([XV, XV[:2]]), np.concatenate([YV, YV[:2]]))
    steps = {
        "mlc": lambda f: jaxnoisy.mlc_step(f, params, lcn_apply, phi, (X, Y), (XV, YV),
                                           inner_lr=0.3, clean_train_batch=(XV[:2], YV[:2])),
        "bome_mlc": lambda f: jaxnoisy.bome_mlc_step(f, params, lcn_apply, phi, (X, Y),
                                                     (XV, YV), inner_lr=0.3),
        "ebomlc": lambda f: jaxnoisy.ebomlc_step(f, params, lcn_apply, phi, (X, Y), clean,
                                                 None, inner_lr=0.3),
    }
    for name, step in steps.items():
      plain, stated = step(logits_fn), step(with_state)
      assert plain.model_state is None, name
      np.testing.assert_allclose(stated.model_state["mean"], expected, rtol=1e-12,
                                 err_msg=name)
      for a, b in zip(jax.tree.leaves(plain[:-1]), jax.tree.leaves(stated[:-1])):
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


# --- validation -----------------------------------------------------------------------
@pytest.mark.parametrize("fn, kwargs, name", [
    ("mlc", {"inner_lr": 0.0}, "inner_lr"),
    ("mlc", {"inner_lr": 0.1, "lookahead_steps": 0}, "lookahead_steps"),
    ("bome", {"inner_lr": -1.0}, "inner_lr"),
    ("bome", {"inner_lr": 0.1, "inner_steps": 0}, "inner_steps"),
    ("bome", {"inner_lr": 0.1, "u": -0.5}, "u"),
    ("ebomlc", {"inner_lr": 0.1, "rho": 1.5}, "rho"),
    ("ebomlc", {"inner_lr": 0.1, "rho": -0.1}, "rho"),
    ("ebomlc", {"inner_lr": 0.1, "xi": -1.0}, "xi"),
    ("ebomlc", {"inner_lr": 0.1, "delta": -0.1}, "delta"),
    ("ebomlc", {"inner_lr": 0.0}, "inner_lr"),
    ("ebomlc", {"inner_lr": 0.1, "sign": "ascend"}, "sign"),
    ("ebomlc", {"inner_lr": 0.1, "mixture": "logit"}, "mixture"),
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
      jaxnoisy.ebomlc_step(*args, None, **kwargs)
    else:
      jaxnoisy.ebomlc_step(*args[:5], (XV[:1], YV[:1]), None, **kwargs)
  with pytest.raises(ValueError, match="xi"):
    jaxnoisy.ebomlc_beta({}, {}, {}, -1.0, 0.1)
