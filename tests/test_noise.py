"""Tests for jaxnoisy.noise: exact counts, conventions, determinism, validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnoisy import noise

C = 10


def _labels(n=5000, num_classes=C, seed=0):
    return np.random.default_rng(seed).integers(0, num_classes, n).astype(np.int32)


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
]
IDS = ["exclusive", "inclusive", "asymmetric", "pairflip"]


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
        ("none", ("none", 0.0)),
        ("symmetric:0.4", ("symmetric", 0.4)),
        (" Symmetric-Inclusive:0.2 ", ("symmetric-inclusive", 0.2)),
        ("asymmetric:0.3", ("asymmetric", 0.3)),
        ("pairflip:0.45", ("pairflip", 0.45)),
        ("symmetric:0", ("symmetric", 0.0)),
    ],
)
def test_parse_noise_spec(text, expected):
    spec = noise.parse_noise_spec(text)
    assert isinstance(spec, noise.NoiseSpec)
    assert tuple(spec) == expected


@pytest.mark.parametrize(
    "text",
    ["", "symmetric", "symmetric:", "symmetric:abc", "gaussian:0.2", "none:0.1",
     "symmetric:1.0", "pairflip:-0.1", "symmetric:nan", "asymmetric:0.2:3"],
)
def test_parse_noise_spec_errors(text):
    with pytest.raises(ValueError, match="valid forms") as info:
        noise.parse_noise_spec(text)
    assert "\n" not in str(info.value)


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
