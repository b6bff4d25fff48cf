"""Tests for jaxnoisy.noise: exact counts, conventions, determinism, validation."""

import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnoisy import noise

C = 10


def _labels(n=5000, num_classes=C, seed=0):
  return np.random.default_rng(seed).integers(0, num_classes, n).astype(np.int32)


def _images(n, shape=(6, 6, 1), seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("rate", [0.2, 0.45, 0.8])
def test_symmetric_exclusive_exact_count_and_always_changes(rate):
  y = _labels(1001)
  noisy, mask = noise.symmetric_exclusive(y, rate, jax.random.key(1), C)
  assert noisy.dtype == np.int32 and mask.dtype == np.bool_
  assert noisy.shape == mask.shape == y.shape
  assert mask.sum() == round(rate * y.size)
  np.testing.assert_array_equal(mask, noisy != y)
  assert noisy.min() >= 0 and noisy.max() < C


def test_symmetric_exclusive_targets_uniform_over_other_classes():
  y = np.zeros(50000, dtype=np.int32)
  noisy, mask = noise.symmetric_exclusive(y, 0.9, jax.random.key(2), C)
  counts = np.bincount(noisy[mask], minlength=C)
  assert counts[0] == 0
  expected = mask.sum() / (C - 1)
  sigma = math.sqrt(expected)
  assert np.all(np.abs(counts[1:] - expected) < 5 * sigma)


def test_symmetric_inclusive_realised_rate_within_sampling_error():
  n, rate = 100000, 0.4
  y = _labels(n)
  noisy, mask = noise.symmetric_inclusive(y, rate, jax.random.key(3), C)
  p = rate * (C - 1) / C
  sigma = math.sqrt(p * (1 - p) / n)
  assert abs(mask.mean() - p) < 4 * sigma
  np.testing.assert_array_equal(mask, noisy != y)


def test_asymmetric_exact_per_class_and_only_to_mapped_class():
  y = _labels(3000)
  cmap = noise.FASHION_MNIST_ASYMMETRIC
  rate = 0.35
  noisy, mask = noise.asymmetric(y, rate, jax.random.key(4), cmap)
  np.testing.assert_array_equal(mask, noisy != y)
  for c in range(C):
    members = y == c
    if cmap[c] == c:
      assert not mask[members].any()
    else:
      assert mask[members].sum() == round(rate * members.sum())
      assert np.all(noisy[members & mask] == cmap[c])


def test_asymmetric_swap_moves_each_example_once():
  # 0 <-> 1 swap: flips are decided from clean labels.
  y = np.array([0] * 10 + [1] * 10, dtype=np.int32)
  noisy, mask = noise.asymmetric(y, 0.5, jax.random.key(5), (1, 0))
  assert mask[:10].sum() == 5 and mask[10:].sum() == 5
  assert np.all(noisy[:10][mask[:10]] == 1) and np.all(noisy[10:][mask[10:]] == 0)


def test_pairflip_exact_per_class():
  y = _labels(2000, num_classes=4)
  noisy, mask = noise.pairflip(y, 0.3, jax.random.key(6), 4)
  for c in range(4):
    members = y == c
    assert mask[members].sum() == round(0.3 * members.sum())
    assert np.all(noisy[members & mask] == (c + 1) % 4)


GENERATORS = [
    lambda y, r, k: noise.symmetric_exclusive(y, r, k, C),
    lambda y, r, k: noise.symmetric_inclusive(y, r, k, C),
    lambda y, r, k: noise.asymmetric(y, r, k, noise.FASHION_MNIST_ASYMMETRIC),
    lambda y, r, k: noise.pairflip(y, r, k, C),
    lambda y, r, k: noise.instance_dependent(y, r, k, _images(len(y)), C),
]
IDS = ["exclusive", "inclusive", "asymmetric", "pairflip", "instance"]


@pytest.mark.parametrize("gen", GENERATORS, ids=IDS)
def test_determinism(gen):
  y = _labels(2000)
  a, ma = gen(y, 0.3, jax.random.key(7))
  b, mb = gen(jnp.asarray(y), 0.3, jax.random.key(7))  # JAX input too
  c, _ = gen(y, 0.3, jax.random.key(8))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ma, mb)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize("gen", GENERATORS, ids=IDS)
def test_rate_zero_is_identity(gen):
  y = _labels(500)
  noisy, mask = gen(y, 0.0, jax.random.key(9))
  np.testing.assert_array_equal(noisy, y)
  assert noisy.dtype == np.int32
  assert not mask.any()


@pytest.mark.parametrize("gen", GENERATORS, ids=IDS)
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.2, float("nan")])
def test_invalid_rate(gen, rate):
  with pytest.raises(ValueError, match="rate"):
    gen(_labels(10), rate, jax.random.key(0))


@pytest.mark.parametrize("gen", GENERATORS, ids=IDS)
@pytest.mark.parametrize("bad", [[0, 1, 12], [-1, 0, 3]])
def test_labels_out_of_range(gen, bad):
  with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
    gen(np.array(bad), 0.2, jax.random.key(0))


def test_other_validation():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="num_classes"):
    noise.symmetric_exclusive(_labels(10), 0.2, key, 1)
  with pytest.raises(ValueError, match="labels"):
    noise.symmetric_exclusive(np.zeros((2, 2), int), 0.2, key, C)
  with pytest.raises(ValueError, match="labels"):
    noise.symmetric_exclusive(np.zeros(3, float), 0.2, key, C)
  with pytest.raises(ValueError, match="class_map"):
    noise.asymmetric(_labels(10), 0.2, key, (1, 2, 3))


def test_transition_matrix_hand_example():
  clean = np.array([0, 0, 0, 0, 1, 1, 2])
  noisy = np.array([0, 0, 0, 2, 1, 0, 2])
  t = noise.transition_matrix(clean, noisy, 4)
  expected = np.array(
      [
          [0.75, 0.0, 0.25, 0.0],
          [0.5, 0.5, 0.0, 0.0],
          [0.0, 0.0, 1.0, 0.0],
          [0.0, 0.0, 0.0, 0.0],  # class 3 absent: zero row
      ]
  )
  assert t.dtype == np.float64
  np.testing.assert_allclose(t, expected)
  assert noise.noise_rate(clean, noisy) == pytest.approx(2 / 7)


def test_transition_matrix_rows_sum_to_one():
  y = _labels(4000)
  noisy, mask = noise.symmetric_exclusive(y, 0.4, jax.random.key(10), C)
  t = noise.transition_matrix(y, noisy, C)
  np.testing.assert_allclose(t.sum(axis=1), 1.0)
  np.testing.assert_allclose(np.diag(t) @ np.bincount(y, minlength=C) / y.size, 0.6)
  assert noise.noise_rate(y, noisy) == pytest.approx(mask.mean())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("none", ("none", 0.0, "")),
        ("symmetric:0.4", ("symmetric", 0.4, "")),
        (" Symmetric-Inclusive:0.2 ", ("symmetric-inclusive", 0.2, "")),
        ("asymmetric:0.3", ("asymmetric", 0.3, "")),
        ("pairflip:0.45", ("pairflip", 0.45, "")),
        ("symmetric:0", ("symmetric", 0.0, "")),
        ("instance:0.4", ("instance", 0.4, "")),
        ("cifar10n:worse", ("cifar10n", 0.0, "worse")),
        ("CIFAR10N: Random2", ("cifar10n", 0.0, "random2")),
        ("cifar100n:noisy", ("cifar100n", 0.0, "noisy")),
    ],
)
def test_parse_noise_spec(text, expected):
  spec = noise.parse_noise_spec(text)
  assert isinstance(spec, noise.NoiseSpec)
  assert tuple(spec) == expected
  assert noise.parse_noise_spec(str(spec)) == spec  # str round-trips
  assert noise.parse_noise_spec(spec) == spec


@pytest.mark.parametrize(
    "text",
    ["", "symmetric", "symmetric:", "symmetric:abc", "gaussian:0.2", "none:0.1",
     "symmetric:1.0", "pairflip:-0.1", "symmetric:nan", "asymmetric:0.2:3",
     "instance:1.0", "instance", "cifar10n", "cifar10n:noisy", "cifar10n:0.4",
     "cifar100n:worse", "cifar10n:aggre_label", "idn:0.4"],
)
def test_parse_noise_spec_errors(text):
  with pytest.raises(ValueError, match="valid forms") as info:
    noise.parse_noise_spec(text)
  msg = str(info.value)
  assert "\n" not in msg
  for form in ("instance:R", "cifar10n:aggre|random1|random2|random3|worse",
               "cifar100n:noisy", "pairflip:R"):
    assert form in msg


def test_apply_noise_dispatch():
  y = _labels(1000)
  key = jax.random.key(11)
  for text, direct in [
      ("symmetric:0.3", noise.symmetric_exclusive(y, 0.3, key, C)),
      ("symmetric-inclusive:0.3", noise.symmetric_inclusive(y, 0.3, key, C)),
      ("pairflip:0.3", noise.pairflip(y, 0.3, key, C)),
      ("asymmetric:0.3", noise.asymmetric(y, 0.3, key, noise.FASHION_MNIST_ASYMMETRIC)),
  ]:
    got = noise.apply_noise(text, y, key, C)
    np.testing.assert_array_equal(got[0], direct[0])
    np.testing.assert_array_equal(got[1], direct[1])
  noisy, mask = noise.apply_noise(noise.NoiseSpec("none", 0.0), y, key, C)
  np.testing.assert_array_equal(noisy, y)
  assert not mask.any()
  with pytest.raises(ValueError, match="no asymmetric noise map"):
    noise.apply_noise("asymmetric:0.2", y, key, C, dataset="cifar10_unknown")


def test_fashion_mnist_map():
  cmap = noise.FASHION_MNIST_ASYMMETRIC
  assert noise.ASYMMETRIC_MAPS["fashion_mnist"] == cmap
  sources = {c: t for c, t in enumerate(cmap) if t != c}
  assert sources == {0: 6, 2: 4, 5: 7, 6: 0, 9: 7}


# --------------------------------------------------------------------------
# Asymmetric maps.
# --------------------------------------------------------------------------


def _sources(cmap):
  return {c: t for c, t in enumerate(cmap) if t != c}


def test_mnist_and_cifar10_maps():
  assert _sources(noise.ASYMMETRIC_MAPS["mnist"]) == {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
  cifar = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}  # truck->car, bird->plane, cat<->dog, deer->horse
  assert _sources(noise.ASYMMETRIC_MAPS["cifar10"]) == cifar
  assert noise.ASYMMETRIC_MAPS["cifar10_n"] == noise.ASYMMETRIC_MAPS["cifar10"]
  assert noise.ASYMMETRIC_MAPS["cifar100_n"] == noise.ASYMMETRIC_MAPS["cifar100"]
  assert set(noise.ASYMMETRIC_MAPS) == {
      "mnist", "fashion_mnist", "cifar10", "cifar100", "cifar10_n", "cifar100_n"}


def test_cifar100_map_cycles_within_super_classes():
  from jaxnoisy.dataset_info import CIFAR100_FINE_TO_COARSE as coarse

  cmap = np.asarray(noise.CIFAR100_ASYMMETRIC)
  assert sorted(cmap.tolist()) == list(range(100))  # a permutation
  assert np.all(cmap != np.arange(100))  # every class moves
  for c in range(20):
    block = [f for f in range(100) if coarse[f] == c]
    assert len(block) == 5
    assert all(coarse[cmap[f]] == c for f in block)  # stays in its super-class
    # a single 5-cycle, in order of fine index
    assert [int(cmap[f]) for f in block] == block[1:] + block[:1]
  # spot check with the class names: apple -> mushroom (fruit and vegetables)
  assert cmap[0] == 51 and cmap[83] == 0


def test_cifar100_map_from_labels():
  from jaxnoisy.dataset_info import CIFAR100_FINE_TO_COARSE as coarse

  fine = np.repeat(np.arange(100), 3)[::-1].astype(np.int32)
  got = noise.cifar100_asymmetric_map(fine, np.asarray(coarse)[fine])
  assert got == noise.CIFAR100_ASYMMETRIC
  # A toy assignment: blocks of consecutive indices give consecutive cycles.
  toy = np.arange(100) // 5
  cmap = noise.cifar100_asymmetric_map(np.arange(100), toy)
  assert cmap[:6] == (1, 2, 3, 4, 0, 6)
  with pytest.raises(ValueError, match=r"coarse_labels must be in \[0, 20\)"):
    noise.cifar100_asymmetric_map(np.arange(100), toy + 1)
  bad = np.r_[np.arange(100), 0]
  with pytest.raises(ValueError, match="exactly one coarse class"):
    noise.cifar100_asymmetric_map(bad, np.r_[toy, 7])
  with pytest.raises(ValueError, match="exactly one coarse class"):
    noise.cifar100_asymmetric_map(np.arange(99), toy[:99])  # class 99 absent
  with pytest.raises(ValueError, match="together"):
    noise.cifar100_asymmetric_map(np.arange(100))


def test_apply_noise_asymmetric_cifar100_exact():
  y = _labels(20000, num_classes=100)
  noisy, mask = noise.apply_noise("asymmetric:0.4", y, jax.random.key(12), 100,
                                  dataset="cifar100")
  cmap = noise.CIFAR100_ASYMMETRIC
  for c in range(100):
    members = y == c
    assert mask[members].sum() == round(0.4 * members.sum())
    assert np.all(noisy[members & mask] == cmap[c])


# --------------------------------------------------------------------------
# Instance-dependent (part-dependent) noise.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_instance_rate_within_sampling_error(rate):
  n = 20000
  y = _labels(n)
  noisy, mask = noise.instance_dependent(y, rate, jax.random.key(13), _images(n, (8, 8, 1)), C)
  assert noisy.dtype == np.int32 and mask.dtype == np.bool_ and noisy.shape == (n,)
  np.testing.assert_array_equal(mask, noisy != y)
  assert noisy.min() >= 0 and noisy.max() < C  # always a valid class
  assert abs(mask.mean() - rate) < 0.02
  assert noise.noise_rate(y, noisy) == pytest.approx(mask.mean())
  t = noise.transition_matrix(y, noisy, C)
  np.testing.assert_allclose(t.sum(axis=1), 1.0)


def test_instance_follows_pdn_distribution():
  """One image repeated: flips follow q_i, targets follow softmax(x @ W[y])."""
  n, rate = 20000, 0.4
  img = _images(1, (5, 5, 1), seed=3)
  images = np.repeat(img, n, axis=0)
  y = np.zeros(n, dtype=np.int32)
  key = jax.random.key(14)
  noisy, mask = noise.instance_dependent(y, rate, key, images, C)
  # W[c] is drawn from fold_in(split(key, 3)[1], c) (documented).
  w0 = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.split(key, 3)[1], 0),
                                    (25, C)), np.float64)
  logits = (img.reshape(-1) / 255.0) @ w0
  logits[0] = -np.inf
  p = np.exp(logits - logits.max())
  p /= p.sum()
  assert abs(mask.mean() - rate) < 0.02
  counts = np.bincount(noisy[mask], minlength=C)
  assert counts[0] == 0
  expected = p * mask.sum()
  sigma = np.sqrt(expected * (1 - p)) + 1.0
  assert np.all(np.abs(counts - expected) < 5 * sigma)


def test_instance_reproducible_and_memory_chunks():
  n = 3000
  y, x = _labels(n), _images(n, (4, 4, 3))
  key = jax.random.key(15)
  a, ma = noise.instance_dependent(y, 0.3, key, x, C)
  b, mb = noise.instance_dependent(jnp.asarray(y), 0.3, key, x, C, chunk_size=7)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ma, mb)
  # float images in [0, 1] are used as they are; uint8 are divided by 255
  c, _ = noise.instance_dependent(y, 0.3, key, x.astype(np.float32) / np.float32(255), C)
  assert np.mean(a == c) > 0.999
  d, _ = noise.instance_dependent(y, 0.3, jax.random.key(16), x, C)
  assert not np.array_equal(a, d)


def test_instance_validation():
  key = jax.random.key(0)
  y = _labels(10)
  with pytest.raises(ValueError, match="images must have shape"):
    noise.instance_dependent(y, 0.2, key, _images(9), C)
  with pytest.raises(ValueError, match="images must have shape"):
    noise.instance_dependent(y, 0.2, key, np.zeros(10, np.uint8), C)
  with pytest.raises(ValueError, match=r"images must be in \[0, 1\]"):
    noise.instance_dependent(y, 0.2, key, np.full((10, 2, 2), 2.0), C)
  with pytest.raises(ValueError, match="images must be 8-bit"):
    noise.instance_dependent(y, 0.2, key, np.full((10, 2, 2), 300), C)
  with pytest.raises(ValueError, match="chunk_size"):
    noise.instance_dependent(y, 0.2, key, _images(10), C, chunk_size=0)


# --------------------------------------------------------------------------
# Real noise and apply_noise.
# --------------------------------------------------------------------------


def test_real_noise_and_apply_noise_label_sets():
  y = _labels(500)
  worse = y.copy()
  worse[:100] = (worse[:100] + 1) % C
  sets = {"worse": worse, "aggre": y}
  key = jax.random.key(17)
  noisy, mask = noise.apply_noise("cifar10n:worse", y, key, C, dataset="cifar10_n",
                                  real_noisy_labels=sets)
  np.testing.assert_array_equal(noisy, worse)
  assert noisy.dtype == np.int32 and mask.sum() == 100
  assert noise.noise_rate(y, noisy) == pytest.approx(0.2)
  # published names and plain arrays work too
  got, _ = noise.apply_noise("cifar10n:worse", y, key, C,
                             real_noisy_labels={"worse_label": worse})
  np.testing.assert_array_equal(got, worse)
  got, _ = noise.apply_noise("cifar10n:aggre", y, key, C, real_noisy_labels=worse)
  np.testing.assert_array_equal(got, worse)
  np.testing.assert_array_equal(noise.real_noise(y, worse, C)[0], worse)
  with pytest.raises(ValueError, match="no 'random1' label set; available: aggre, worse"):
    noise.apply_noise("cifar10n:random1", y, key, C, real_noisy_labels=sets)
  # Without human labels the error names the --dataset that has them, in one line.
  for dataset, needed in (("fashion_mnist", "cifar10_n"), ("cifar10", "cifar10_n"),
                          ("cifar100_n", "cifar10_n")):
    with pytest.raises(ValueError) as info:
      noise.apply_noise("cifar10n:worse", y, key, C, dataset=dataset)
    msg = str(info.value)
    assert f"needs --dataset {needed}" in msg and repr(dataset) in msg
    assert "\n" not in msg and "real_noisy_labels" not in msg
  with pytest.raises(ValueError, match="needs --dataset cifar100_n"):
    noise.apply_noise("cifar100n:noisy", y, key, C, dataset="mnist")
  with pytest.raises(ValueError, match="needs --dataset cifar100_n"):  # the other CIFAR-N
    noise.apply_noise("cifar100n:noisy", y, key, 100, dataset="cifar10_n",
                      real_noisy_labels=sets)
  with pytest.raises(ValueError, match="num_classes must be 100"):
    noise.apply_noise("cifar100n:noisy", y, key, C, real_noisy_labels=worse)
  with pytest.raises(ValueError, match="real_noisy_labels must have the shape"):
    noise.real_noise(y, worse[:-1], C)
  with pytest.raises(ValueError, match=r"real_noisy_labels must be in \[0, 10\)"):
    noise.real_noise(y, worse + 5, C)


def test_apply_noise_instance_and_map_datasets():
  y = _labels(400)
  x = _images(400)
  key = jax.random.key(18)
  got = noise.apply_noise("instance:0.3", y, key, C, dataset="mnist", images=x)
  direct = noise.instance_dependent(y, 0.3, key, x, C)
  np.testing.assert_array_equal(got[0], direct[0])
  with pytest.raises(ValueError, match="images is required"):
    noise.apply_noise("instance:0.3", y, key, C)
  for name in ("mnist", "cifar10", "cifar10_n"):
    got = noise.apply_noise("asymmetric:0.3", y, key, C, dataset=name)
    direct = noise.asymmetric(y, 0.3, key, noise.ASYMMETRIC_MAPS[name])
    np.testing.assert_array_equal(got[0], direct[0])
  with pytest.raises(ValueError, match="num_classes must be 100"):
    noise.apply_noise("asymmetric:0.3", y, key, C, dataset="cifar100")


def test_importing_noise_does_not_load_the_loaders():
  """noise depends on the dataset facts alone (facts <- noise <- loaders)."""
  code = ("import sys, jaxnoisy.noise; "
          "print(' '.join(sorted(m for m in sys.modules if m.startswith('jaxnoisy'))))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
  assert "jaxnoisy.noise" in out and "jaxnoisy.dataset_info" in out
  loaded = [m for m in out if m == "jaxnoisy.data" or m.startswith("jaxnoisy.data.")]
  assert not loaded, f"importing jaxnoisy.noise loaded {loaded}"


def test_real_noise_counts_corruption_only_where_the_truth_is_known():
  """Clothing1M: −1 marks an unknown true label; such an example is never 'corrupted'."""
  true = np.array([0, -1, 2, -1, 3], np.int32)
  web = np.array([1, 1, 2, 0, 3], np.int32)
  out, mask = noise.apply_noise("clothing1m:noisy", true, jax.random.key(0), 14,
                                dataset="clothing1m", real_noisy_labels={"noisy": web})
  np.testing.assert_array_equal(out, web)
  np.testing.assert_array_equal(mask, [True, False, False, False, False])
  with pytest.raises(ValueError, match=r"labels must be in \[0, 14\)"):
    noise.real_noise(np.array([0, 15]), web[:2], 14)
