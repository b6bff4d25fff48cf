"""Tests for jaxnoisy.data.augment: keyed random crop + flip, jit-able, identity when off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnoisy.data import DATASET_INFO, augment_batch, dataset_augment
from jaxnoisy.data.augment import identity_augment


def _batch(n=16, h=8, w=8, c=3, dtype=np.uint8, seed=0):
  x = np.random.default_rng(seed).integers(1, 256, (n, h, w, c))  # no zeros: padding is visible
  return x.astype(dtype) if dtype == np.uint8 else (x / 255).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_shapes_dtypes_and_jit(dtype):
  x = _batch(dtype=dtype)
  key = jax.random.key(0)
  out = augment_batch(key, x)
  assert out.shape == x.shape and out.dtype == x.dtype
  jitted = jax.jit(lambda k, b: augment_batch(k, b, crop_padding=4, flip=True))
  np.testing.assert_array_equal(jitted(key, jnp.asarray(x)), out)


def test_reproducible_and_differs_across_keys():
  x = _batch()
  a = augment_batch(jax.random.key(1), x)
  b = augment_batch(jax.random.key(1), x)
  c = augment_batch(jax.random.key(2), x)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a, x)
  # per-example randomness: the examples do not all get the same crop/flip
  same = augment_batch(jax.random.key(3), np.repeat(x[:1], 16, axis=0))
  assert len({bytes(np.asarray(e)) for e in same}) > 1


def test_identity_when_disabled():
  x = _batch()
  assert augment_batch(jax.random.key(0), x, crop_padding=0, flip=False) is x
  assert dataset_augment("mnist") is identity_augment
  assert dataset_augment("fashion_mnist")(jax.random.key(0), x) is x
  for name, info in DATASET_INFO.items():
    assert (dataset_augment(name) is identity_augment) == (not info.augment)
  out = jax.jit(dataset_augment("cifar10"))(jax.random.key(4), x)
  np.testing.assert_array_equal(out, augment_batch(jax.random.key(4), x))


def test_flip_only_is_horizontal_mirror():
  x = _batch(n=32)
  out = np.asarray(augment_batch(jax.random.key(5), x, crop_padding=0, flip=True))
  flipped = 0
  for xi, oi in zip(x, out):
    if np.array_equal(oi, xi[:, ::-1]):
      flipped += 1
    else:
      np.testing.assert_array_equal(oi, xi)
  assert 0 < flipped < 32


def _crop_offset(padded, out, h, w):
  """All (dy, dx) whose window of ``padded`` equals ``out``."""
  return [(dy, dx) for dy in range(padded.shape[0] - h + 1)
          for dx in range(padded.shape[1] - w + 1)
          if np.array_equal(padded[dy:dy + h, dx:dx + w], out)]


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_crop_only_is_a_window_of_the_padded_image(mode):
  x = _batch(n=24)
  p = 2
  out = np.asarray(augment_batch(jax.random.key(6), x, crop_padding=p, flip=False,
                                 padding_mode=mode))
  offsets = set()
  for xi, oi in zip(x, out):
    padded = np.pad(xi, ((p, p), (p, p), (0, 0)), mode=mode)
    found = _crop_offset(padded, oi, 8, 8)
    assert found, "output is not a crop of the padded image"
    offsets.add(found[0])
  assert len(offsets) > 3  # offsets vary across the batch


def test_validation():
  x = _batch()
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="crop_padding"):
    augment_batch(key, x, crop_padding=-1)
  with pytest.raises(ValueError, match="flip"):
    augment_batch(key, x, flip=1)
  with pytest.raises(ValueError, match="padding_mode"):
    augment_batch(key, x, padding_mode="wrap")
  with pytest.raises(ValueError, match="images must be a"):
    augment_batch(key, x[0])
  with pytest.raises(ValueError, match="crop_padding must be < image"):
    augment_batch(key, x, crop_padding=8, padding_mode="reflect")
  with pytest.raises(ValueError, match="name must be one of"):
    dataset_augment("imagenet")
