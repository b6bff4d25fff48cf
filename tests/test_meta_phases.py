"""The phase diagnostics of meta-reweighting (jaxnoisy.meta.phases) against NumPy.

The model is float64 softmax regression; the reference is NumPy with analytic
per-example gradients: the clean loss and gradient, the coupling ⟨∇l_i, ∇L_clean⟩, the
exact meta-gradient −(η/B)⟨∇l_i(θ), ∇L_clean(θ̂(w))⟩ (chain rule through the one-step
update), pairwise AUCs and sign counts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnoisy.meta import cross_entropy_loss_fn, phases

B, M, D, C = 16, 10, 4, 3
RNG = np.random.default_rng(3)
X = RNG.normal(size=(B, D))
Y = RNG.integers(0, C, size=B)
CORRUPTED = np.arange(B) % 3 == 0
XV, YV = RNG.normal(size=(M, D)), RNG.integers(0, C, size=M)
XV2, YV2 = RNG.normal(size=(M, D)), RNG.integers(0, C, size=M)
PARAMS = {"w": RNG.normal(size=(D, C)) * 0.5, "b": RNG.normal(size=(C,)) * 0.1}
WEIGHTS = np.clip(RNG.uniform(-0.3, 1.3, size=B), 0, 1)

loss_fn = cross_entropy_loss_fn(lambda p, x: x @ p["w"] + p["b"])


# --- NumPy reference -----------------------------------------------------------------
def np_probs(params, x):
  z = x @ params["w"] + params["b"]
  p = np.exp(z - z.max(1, keepdims=True))
  return p / p.sum(1, keepdims=True)


def np_example_grads(params, x, y):
  """Per-example gradients flattened as [w.ravel(), b], shape (n, D*C + C)."""
  r = np_probs(params, x) - np.eye(C)[y]
  return np.concatenate([(x[:, :, None] * r[:, None, :]).reshape(len(y), -1), r], axis=1)


def np_flat(params):
  return np.concatenate([np.ravel(params["w"]), np.ravel(params["b"])])


def np_unflat(v):
  return {"w": v[:D * C].reshape(D, C), "b": v[D * C:]}


def np_clean_loss(params, x, y):
  return -np.log(np_probs(params, x)[np.arange(len(y)), y]).mean()


def np_meta_grad(params, w, eta, x, y, xv, yv):
  """∂L_val/∂w_i = −(η/B)⟨∇l_i(θ), ∇L_clean(θ̂(w))⟩, θ̂ = θ − η (1/B)Σ w_i ∇l_i."""
  gi = np_example_grads(params, x, y)
  lookahead = np_unflat(np_flat(params) - eta * (w[:, None] * gi).mean(0))
  return -eta / len(y) * gi @ np_example_grads(lookahead, xv, yv).mean(0)


def np_auc(s, corrupted):
  clean, noisy = s[~corrupted], s[corrupted]
  wins = (clean[:, None] > noisy[None, :]) + 0.5 * (clean[:, None] == noisy[None, :])
  return wins.mean()


def np_summary(s, corrupted):
  c, n = s[~corrupted], s[corrupted]
  return {"clean_mean": c.mean(), "noisy_mean": n.mean(), "separation": c.mean() - n.mean(),
          "magnitude": np.sqrt(np.mean(s ** 2)), "auc": np_auc(s, corrupted),
          "clean_positive": np.mean(c > 0), "noisy_negative": np.mean(n < 0)}


def jparams(params=PARAMS):
  return jax.tree.map(jnp.asarray, params)


def assert_dict_close(got, want, **tol):
  assert set(want) <= set(got)
  for k, v in want.items():
    np.testing.assert_allclose(float(got[k]), v, err_msg=k, **tol)


# --- tests ---------------------------------------------------------------------------
def test_weight_phase_stats_are_group_means_and_zero_shares():
  w = np.array([1.0, 0.0, 0.3, 0.0, 1e-7, 0.9, 0.0, 0.6])
  corrupted = np.array([False, True, True, True, False, False, False, True])
  got = phases.weight_phase_stats(w, corrupted)
  want = {"mean_weight_clean": w[~corrupted].mean(), "mean_weight_noisy": w[corrupted].mean(),
          "zero_share_noisy": np.mean(w[corrupted] <= 1e-6),   # 2 of 4
          "zero_share_clean": np.mean(w[~corrupted] <= 1e-6),  # 1e-7 and 0: 2 of 4
          "weight_auc": np_auc(w, corrupted)}
  assert_dict_close(got, want, rtol=1e-6)
  assert float(got["zero_share_noisy"]) == 0.5 and float(got["zero_share_clean"]) == 0.5
  strict = phases.weight_phase_stats(w, corrupted, zero_tol=0.0)
  assert float(strict["zero_share_clean"]) == 0.25
  assert np.isnan(float(phases.weight_phase_stats(w, np.zeros(8, bool))["zero_share_noisy"]))


def test_weight_phase_stats_rejects_a_negative_tolerance():
  with pytest.raises(ValueError, match="zero_tol"):
    phases.weight_phase_stats(np.ones(3), np.zeros(3, bool), zero_tol=-1.0)


def test_clean_loss_gradient_and_coupling_are_the_numpy_inner_products():
  with jax.enable_x64(True):
    loss, grad = phases.clean_loss_and_gradient(loss_fn, jparams(), (XV, YV))
    a = phases.coupling(loss_fn, jparams(), (X, Y), grad)
  g_clean = np_example_grads(PARAMS, XV, YV).mean(0)
  np.testing.assert_allclose(float(loss), np_clean_loss(PARAMS, XV, YV), rtol=1e-12)
  np.testing.assert_allclose(np_flat(grad), g_clean, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(np.asarray(a), np_example_grads(PARAMS, X, Y) @ g_clean,
                             rtol=1e-10, atol=1e-14)


def test_coupling_is_the_meta_gradient_at_zero_weights():
  """∂L_val/∂w at w = 0 is exactly −(η/B) a (θ̂(0) = θ); checked against NumPy."""
  eta = 0.3
  with jax.enable_x64(True):
    _, grad = phases.clean_loss_and_gradient(loss_fn, jparams(), (XV, YV))
    a = np.asarray(phases.coupling(loss_fn, jparams(), (X, Y), grad))
  want = np_meta_grad(PARAMS, np.zeros(B), eta, X, Y, XV, YV)
  np.testing.assert_allclose(-eta / B * a, want, rtol=1e-10, atol=1e-15)


def test_score_summary_matches_numpy():
  s = RNG.normal(size=40)
  s[3] = 0.0
  corrupted = RNG.uniform(size=40) < 0.4
  assert_dict_close(phases.score_summary(s, corrupted), np_summary(s, corrupted), rtol=1e-6)


def test_score_summary_auc_counts_ties_as_half():
  s = np.array([1.0, 1.0, 0.0, 2.0])
  corrupted = np.array([False, True, True, False])
  # clean {1, 2} vs corrupted {1, 0}: 1>0, 1=1 (1/2), 2>1, 2>0 → 3.5 / 4
  assert float(phases.score_summary(s, corrupted)["auc"]) == 0.875


def test_perturb_params_moves_by_the_relative_scale_and_is_seeded():
  with jax.enable_x64(True):
    p = jparams()
    q = phases.perturb_params(p, jax.random.key(1), 0.01)
    again = phases.perturb_params(p, jax.random.key(1), 0.01)
    other = phases.perturb_params(p, jax.random.key(2), 0.01)
  delta = np_flat(q) - np_flat(PARAMS)
  np.testing.assert_allclose(np.linalg.norm(delta), 0.01 * np.linalg.norm(np_flat(PARAMS)),
                             rtol=1e-12)
  np.testing.assert_array_equal(np_flat(q), np_flat(again))
  assert not np.allclose(np_flat(q), np_flat(other))
  assert q["w"].dtype == jnp.float64
  half = phases.perturb_params({"w": jnp.ones(4, jnp.bfloat16)}, jax.random.key(0), 0.1)
  assert half["w"].dtype == jnp.bfloat16
  zero = phases.perturb_params(jparams(), jax.random.key(0), 0.0)
  np.testing.assert_array_equal(np_flat(zero), np_flat(jax.tree.map(np.float32, PARAMS)))


def test_sign_flip_share_counts_strictly_opposite_signs():
  a = np.array([1.0, -2.0, 3.0, 0.0, -1.0, 2.0])
  b = np.array([-1.0, -1.0, 2.0, -5.0, 0.0, -0.1])
  assert float(phases.sign_flip_share(a, b)) == pytest.approx(np.mean(a * b < 0)) == 2 / 6


def test_phase_diagnostics_match_numpy_under_jit():
  eta, sigma = 0.5, 0.05
  key = jax.random.key(7)
  with jax.enable_x64(True):
    out = jax.jit(lambda p, w, k: phases.phase_diagnostics(
        loss_fn, p, w, (X, Y), CORRUPTED, (XV, YV), (XV2, YV2), k, inner_lr=eta,
        param_scale=sigma))(jparams(), jnp.asarray(WEIGHTS), key)
    moved = jax.tree.map(np.asarray, phases.perturb_params(jparams(), key, sigma))
  g_clean = np_example_grads(PARAMS, XV, YV).mean(0)
  a = np_example_grads(PARAMS, X, Y) @ g_clean
  g = np_meta_grad(PARAMS, WEIGHTS, eta, X, Y, XV, YV)
  g_moved = np_meta_grad(moved, WEIGHTS, eta, X, Y, XV, YV)
  g_alt = np_meta_grad(PARAMS, WEIGHTS, eta, X, Y, XV2, YV2)
  want = {"clean_loss": np_clean_loss(PARAMS, XV, YV),
          "clean_grad_norm": np.linalg.norm(g_clean),
          **{f"coupling_{k}": v for k, v in np_summary(a, CORRUPTED).items()},
          **{f"meta_{k}": v for k, v in np_summary(-g, CORRUPTED).items()},
          "coupling_meta_correlation": np.corrcoef(a, -g)[0, 1],
          "flip_params": np.mean(g * g_moved < 0),
          "flip_clean": np.mean(g * g_alt < 0)}
  assert_dict_close(out, want, rtol=1e-9, atol=1e-14)
  # The inputs are not degenerate: some signs flip with the other clean batch.
  assert 0 < want["flip_clean"] < 1


def test_phase_diagnostics_reject_bad_step_sizes():
  args = (loss_fn, jparams(), jnp.ones(B), (X, Y), CORRUPTED, (XV, YV), (XV2, YV2),
          jax.random.key(0))
  with pytest.raises(ValueError, match="inner_lr"):
    phases.phase_diagnostics(*args, inner_lr=0.0, param_scale=0.01)
  with pytest.raises(ValueError, match="param_scale"):
    phases.phase_diagnostics(*args, inner_lr=0.1, param_scale=-1.0)
