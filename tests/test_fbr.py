"""Feature-Based Reweighting (FBR) against a NumPy computation written from its equations.

The reference builds the B × m similarity matrix K literally (class-balanced clean mean
from the per-example weights π_j), averages it per class with loops, takes the
second-largest entry by sorting, and forms d_i term by term; the weights follow the rule
η = max_{d_i<0} 1/(2|d_i|) as written. jaxnoisy goes through the clean class means
instead, so agreement checks the identity as well as the code.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnoisy
from jaxnoisy.meta import (check_fbr_clean_set, fbr_persistent_weights, fbr_scores,
                           fbr_weights)
from jaxnoisy.meta import fbr as fbr_module


# --- NumPy reference -----------------------------------------------------------------
def np_parts(phi, y, phiv, yv, num_classes):
  """(M, second-largest per row), float64, from the definitions."""
  phi, phiv = np.asarray(phi, np.float64), np.asarray(phiv, np.float64)
  m = len(yv)
  n = [int(np.sum(yv == c)) for c in range(num_classes)]
  inv = np.array([1.0 / n[yv[j]] for j in range(m)])
  pi = inv / inv.sum()
  mu = np.zeros(phi.shape[1])
  for j in range(m):
    mu += pi[j] * phiv[j]
  k = (phi - mu) @ (phiv - mu).T                                  # K_ij, (B, m)
  big_m = np.zeros((len(phi), num_classes))
  for i in range(len(phi)):
    for c in range(num_classes):
      big_m[i, c] = np.mean([k[i, j] for j in range(m) if yv[j] == c])
  second = np.array([sorted(row)[-2] for row in big_m])
  return big_m, second


def np_scores(phi, y, phiv, yv, num_classes, alpha0):
  big_m, second = np_parts(phi, y, phiv, yv, num_classes)
  d = np.zeros(len(y))
  for i in range(len(y)):
    shifted = big_m[i] - second[i]
    d[i] = shifted[y[i]] - alpha0 * sum(shifted[c] for c in range(num_classes) if c != y[i])
  return d


def np_weights(d):
  d = np.asarray(d, np.float64)
  if np.all(d >= 0):
    return np.ones_like(d)
  eta = max(1.0 / (2 * abs(x)) for x in d if x < 0)
  w = np.clip(0.5 + eta * d, 0.0, 1.0)
  w[w <= 0.5] = 0.0
  return w


def np_persistent(previous, d, step):
  d = np.asarray(d, np.float64)
  if np.all(d >= 0):
    return np.ones_like(d)
  w = np.clip(np.asarray(previous, np.float64) + step * d, 0.0, 1.0)
  w[w <= 0.5] = 0.0
  return w


def make_problem(num_classes, batch=24, dim=16, seed=0):
  """Class-structured features; an imbalanced clean set (1 to 5 per class, shuffled)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, dim)) * 2.0
  counts = [1 + (7 * c) % 5 for c in range(num_classes)]
  yv = rng.permutation(np.repeat(np.arange(num_classes), counts))
  phiv = centres[yv] + rng.normal(size=(len(yv), dim))
  true = rng.integers(0, num_classes, size=batch)
  phi = centres[true] + rng.normal(size=(batch, dim))
  y = np.where(rng.random(batch) < 0.4, rng.integers(0, num_classes, size=batch), true)
  return (phi.astype(np.float32), y.astype(np.int32), phiv.astype(np.float32),
          yv.astype(np.int32))


# --- scores --------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("alpha_kind", ["inverse", "zero"])
def test_scores_match_numpy(num_classes, alpha_kind):
  alpha0 = 1.0 / (num_classes - 1) if alpha_kind == "inverse" else 0.0
  phi, y, phiv, yv = make_problem(num_classes, seed=num_classes)
  assert len(set(np.bincount(yv).tolist())) > 1           # the clean set is imbalanced
  got = np.asarray(fbr_scores(phi, y, phiv, yv, num_classes, alpha0))
  want = np_scores(phi, y, phiv, yv, num_classes, alpha0)
  assert got.shape == (len(y),) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  assert (want < 0).any() and (want > 0).any()           # both signs are exercised


@pytest.mark.parametrize("num_classes", [10, 100])
def test_inverse_alpha_cancels_the_shift_on_an_imbalanced_clean_set(num_classes):
  """α₀ = 1/(C−1): d_i = C/(C−1) M_{i,ỹ_i}, because the class-balanced mean makes Σ_c M_ic = 0."""
  phi, y, phiv, yv = make_problem(num_classes, seed=1)
  big_m, _ = np_parts(phi, y, phiv, yv, num_classes)
  np.testing.assert_allclose(big_m.sum(1), 0, atol=1e-9 * np.abs(big_m).max())
  got = np.asarray(fbr_scores(phi, y, phiv, yv, num_classes, 1.0 / (num_classes - 1)))
  want = num_classes / (num_classes - 1) * big_m[np.arange(len(y)), y]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_zero_alpha_is_a_top1_test():
  """α₀ = 0: d_i > 0 exactly when ỹ_i is the unique nearest class mean, < 0 unless runner-up."""
  num_classes = 10
  phi, y, phiv, yv = make_problem(num_classes, batch=64, seed=2)
  big_m, _ = np_parts(phi, y, phiv, yv, num_classes)
  order = np.argsort(-big_m, axis=1)
  d = np.asarray(fbr_scores(phi, y, phiv, yv, num_classes, 0.0))
  np.testing.assert_array_equal(d > 0, order[:, 0] == y)
  np.testing.assert_array_equal(d < 0, (order[:, 0] != y) & (order[:, 1] != y))


def exact_problem():
  """Small binary fractions: every number below is exact in float32.

  Clean class means e_0..e_3 (class 0 twice), μ = (1/4)·1; φ = (1, 1, 0, 0) gives
  M = (1/2, 1/2, −1/2, −1/2): classes 0 and 1 tie for the row maximum.
  """
  phiv = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3]]
  yv = np.array([0, 0, 1, 2, 3], np.int32)
  phi = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], np.float32)
  return phi, phiv, yv


def test_tied_row_maximum_shifts_by_the_maximum():
  phi, phiv, yv = exact_problem()
  y = np.array([0, 2], np.int32)
  d = np.asarray(fbr_scores(phi, y, phiv, yv, 4, 0.0))
  np.testing.assert_array_equal(d, [0.0, -1.0])          # topk(2)'s second = the tied max
  np.testing.assert_array_equal(d, np_scores(phi, y, phiv, yv, 4, 0.0))
  d = np.asarray(fbr_scores(phi, y, phiv, yv, 4, 1.0 / 3))
  np.testing.assert_allclose(d, [2.0 / 3, -2.0 / 3], rtol=1e-6)
  # d = 0 beside a negative score is zeroed; alone it keeps weight 1.
  np.testing.assert_array_equal(fbr_weights(fbr_scores(phi, y, phiv, yv, 4, 0.0)), [0.0, 0.0])
  np.testing.assert_array_equal(fbr_weights(fbr_scores(phi[:1], y[:1], phiv, yv, 4, 0.0)), [1.0])


def test_scores_are_jittable_without_recompiling():
  phi, y, phiv, yv = make_problem(10, seed=3)
  f = jax.jit(fbr_scores, static_argnames="num_classes")
  for alpha0 in (1.0 / 9, 0.0):                        # traced α₀: one compilation
    np.testing.assert_allclose(f(phi, y, phiv, yv, num_classes=10, alpha0=alpha0),
                               fbr_scores(phi, y, phiv, yv, 10, alpha0), rtol=1e-5, atol=1e-4)
  assert f._cache_size() == 1
  w = jax.jit(fbr_weights)(f(phi, y, phiv, yv, num_classes=10, alpha0=0.0))
  np.testing.assert_allclose(w, np_weights(np_scores(phi, y, phiv, yv, 10, 0.0)), atol=1e-5)


def test_scores_take_no_gradient_and_promote_dtype():
  phi, y, phiv, yv = make_problem(10, seed=4)
  grad = jax.grad(lambda f: fbr_scores(f, y, phiv, yv, 10, 0.0).sum())(jnp.asarray(phi))
  np.testing.assert_array_equal(grad, 0.0)
  d = fbr_scores(jnp.asarray(phi, jnp.bfloat16), y, jnp.asarray(phiv, jnp.bfloat16), yv, 10, 0.0)
  assert d.dtype == jnp.float32


# --- missing classes -----------------------------------------------------------------
def test_missing_class_is_a_one_line_error_naming_it():
  phi, y, phiv, yv = make_problem(10, seed=5)
  keep = yv != 3
  with pytest.raises(ValueError, match=r"^clean_labels has no example of class 3 \(") as e:
    fbr_scores(phi, y % 3, phiv[keep], yv[keep], 10, 0.0)
  assert "\n" not in str(e.value)
  keep = (yv != 3) & (yv != 7)
  with pytest.raises(ValueError, match="no example of classes 3, 7"):
    check_fbr_clean_set(yv[keep], 10)
  check_fbr_clean_set(yv, 10)                           # complete: no error
  with pytest.raises(ValueError, match="no example of class 9"):  # the top class too
    check_fbr_clean_set(yv[yv != 9], 10)


def test_missing_class_under_jit_is_nan_and_the_host_check_refuses_tracers():
  phi, y, phiv, yv = make_problem(10, seed=6)
  keep = yv != 4
  d = jax.jit(lambda lv: fbr_scores(phi, y, phiv[keep], lv, 10, 0.0))(yv[keep])
  assert np.isnan(np.asarray(d)).all()
  assert np.isnan(np.asarray(fbr_weights(d))).all()
  d = jax.jit(lambda lv: fbr_scores(phi, y, phiv, lv, 10, 0.0))(yv)   # complete: finite
  assert np.isfinite(np.asarray(d)).all()
  with pytest.raises(TypeError, match="outside jax.jit"):
    jax.jit(lambda lv: check_fbr_clean_set(lv, 10))(yv)


# --- weights -------------------------------------------------------------------------
def test_weights_match_numpy_on_random_scores():
  rng = np.random.default_rng(7)
  for _ in range(20):
    d = (rng.normal(size=33) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
    w = np.asarray(fbr_weights(d))
    want = np_weights(d)
    np.testing.assert_allclose(w, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(w == 0, want == 0)
    assert ((w == 0) | ((w > 0.5) & (w <= 1))).all()


def test_weights_special_cases():
  # All nonnegative (zeros included): every weight is 1.
  np.testing.assert_array_equal(fbr_weights(jnp.array([0.0, 0.0, 3.0])), [1.0, 1.0, 1.0])
  np.testing.assert_array_equal(fbr_weights(jnp.zeros(4)), np.ones(4))
  # One negative: min |d_neg| = 2, so w = min(1, 1/2 + d/4) for d > 0; 0 for d <= 0.
  d = jnp.array([-2.0, -5.0, 0.0, 1.0, 2.0, 3.0, 1e-9])
  np.testing.assert_array_equal(fbr_weights(d), [0.0, 0.0, 0.0, 0.75, 1.0, 1.0, 0.0])
  # Ties among the most negative scores: all zero.
  np.testing.assert_array_equal(fbr_weights(jnp.array([-1.0, -1.0, 0.5])), [0.0, 0.0, 0.75])
  # NaN propagates (as the authors' clamp does); an overflowing ratio clips to 1.
  w = np.asarray(fbr_weights(jnp.array([np.nan, -1.0, 1.0])))
  assert np.isnan(w[0]) and w[1] == 0 and w[2] == 1
  np.testing.assert_array_equal(fbr_weights(jnp.array([-1e-30, 0.0, 1e30], jnp.float32)),
                                [0.0, 0.0, 1.0])
  assert fbr_weights(jnp.array([1, -1], jnp.bfloat16)).dtype == jnp.float32


def test_persistent_weights_match_numpy():
  rng = np.random.default_rng(8)
  for step in (0.01, 0.2):
    prev = rng.uniform(0, 1, size=40).astype(np.float32)
    d = (rng.normal(size=40) * 30).astype(np.float32)
    w = np.asarray(fbr_persistent_weights(prev, d, step_size=step))
    np.testing.assert_allclose(w, np_persistent(prev, d, step), atol=1e-6)
  np.testing.assert_allclose(
      jax.jit(fbr_persistent_weights)(prev, d, 0.2), np_persistent(prev, d, 0.2), atol=1e-6)


def test_persistent_weights_special_cases():
  half = jnp.full(4, 0.5)
  # From the initial 1/2: d > 0 keeps 1/2 + 0.01 d, d <= 0 is zeroed.
  np.testing.assert_allclose(fbr_persistent_weights(half, jnp.array([10.0, 0.0, -1.0, 100.0])),
                             [0.6, 0.0, 0.0, 1.0], rtol=1e-6)
  # No negative score: reset to 1, even from stored zeros.
  np.testing.assert_array_equal(
      fbr_persistent_weights(jnp.array([0.0, 0.3, 1.0]), jnp.array([0.0, 1.0, 2.0])), [1, 1, 1])
  # A zeroed weight restarts from 0: back above 1/2 only when 0.01 d > 1/2.
  np.testing.assert_allclose(
      fbr_persistent_weights(jnp.zeros(3), jnp.array([30.0, 60.0, -1.0])), [0.0, 0.6, 0.0],
      rtol=1e-6)


# --- validation ----------------------------------------------------------------------
def _bad_calls():
  phi, y, phiv, yv = make_problem(3, batch=4, dim=2, seed=9)
  return [
      (lambda: fbr_scores(phi, y % 1, phiv, yv % 1, 1, 0.0), "num_classes must be an integer >= 2"),
      (lambda: fbr_scores(phi, y, phiv, yv, 3.0, 0.0), "num_classes must be an integer >= 2"),
      (lambda: fbr_scores(phi, y, phiv, yv, 3, -0.1), r"alpha0 must be in \[0, inf\]"),
      (lambda: fbr_scores(phi, y, phiv, yv, 3, float("nan")), "alpha0 must be in"),
      (lambda: fbr_scores(phi[0], y, phiv, yv, 3, 0.0), r"shapes \(B, D\) and \(m, D\)"),
      (lambda: fbr_scores(phi, y, phiv[:, :1], yv, 3, 0.0), "same feature size D"),
      (lambda: fbr_scores(phi, y[:3], phiv, yv, 3, 0.0), r"labels must have shape \(4,\)"),
      (lambda: fbr_scores(phi, y, phiv, yv[:-1], 3, 0.0), "clean_labels must have shape"),
      (lambda: fbr_scores(phi, y, phiv[:2], yv[:2], 3, 0.0), "at least num_classes = 3"),
      (lambda: fbr_scores(phi, y + 3, phiv, yv, 3, 0.0), r"labels must be in \[0, 3\)"),
      (lambda: fbr_scores(phi, y, phiv, yv - 1, 3, 0.0), r"clean_labels must be in \[0, 3\)"),
      (lambda: check_fbr_clean_set(yv, 1), "num_classes must be an integer >= 2"),
      (lambda: fbr_weights(jnp.ones((2, 2))), r"scores must have shape \(n,\)"),
      (lambda: fbr_persistent_weights(jnp.ones(3), jnp.ones(3), -1.0),
       r"step_size must be in \[0, inf\]"),
      (lambda: fbr_persistent_weights(jnp.ones(3), jnp.ones(2)), r"scores must have shape \(3,\)"),
      (lambda: fbr_persistent_weights(jnp.ones((3, 1)), jnp.ones(3)), "previous must have shape"),
  ]


@pytest.mark.parametrize("index", range(16))
def test_bad_inputs_raise_one_line_errors(index):
  calls = _bad_calls()
  assert len(calls) == 16
  call, pattern = calls[index]
  with pytest.raises(ValueError, match=pattern) as e:
    call()
  assert "\n" not in str(e.value)


# --- packaging -----------------------------------------------------------------------
def test_exported_and_docstring_example_runs():
  for name in ("fbr_scores", "fbr_weights", "fbr_persistent_weights", "check_fbr_clean_set"):
    assert getattr(jaxnoisy, name) is getattr(fbr_module, name)
    assert name in jaxnoisy.__all__ and name in jaxnoisy.meta.__all__
  result = doctest.testmod(fbr_module)
  assert result.attempted > 0 and result.failed == 0
