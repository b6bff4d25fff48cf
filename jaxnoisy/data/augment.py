"""Training-time image augmentation in JAX (random crop with padding, horizontal flip).

Pure, keyed functions that work inside ``jax.jit``: the same key and batch
always give the same output. :func:`augment_batch` draws per-example crop
offsets and flips (``jax.vmap`` over the batch, crops with
``jax.lax.dynamic_slice``); :func:`dataset_augment` returns the per-dataset
default (``DATASET_INFO[name].augment``: on for CIFAR, off for MNIST-like),
the identity when disabled.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxnoisy.dataset_info import DATASET_INFO

__all__ = ["PADDING_MODES", "augment_batch", "center_crop", "dataset_augment",
           "identity_augment"]

PADDING_MODES = ("constant", "reflect")
"""``constant`` pads with zeros (as the CIFAR papers do); ``reflect`` mirrors."""


def _check(images, crop_padding, flip, padding_mode) -> None:
  if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
    raise ValueError(f"crop_padding must be an int >= 0, got {crop_padding!r}")
  if not isinstance(flip, bool):
    raise ValueError(f"flip must be a bool, got {flip!r}")
  if padding_mode not in PADDING_MODES:
    raise ValueError(
        f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}"
    )
  if getattr(images, "ndim", None) != 4:
    raise ValueError(
        f"images must be a (N, H, W, C) batch, got shape {getattr(images, 'shape', None)}"
    )
  if padding_mode == "reflect" and crop_padding >= min(images.shape[1:3]):
    raise ValueError(
        f"crop_padding must be < image height and width ({images.shape[1:3]}) for "
        f"reflect padding, got {crop_padding}"
    )


def augment_batch(key, images, *, crop_padding: int = 4, flip: bool = True,
                  padding_mode: str = "constant", crop_size: int | None = None):
  """Random crop after padding, and random horizontal flip, per example.

  ``images``: ``(N, H, W, C)``, uint8 or float (numpy or JAX). Each example
  is padded by ``crop_padding`` pixels on every side (zeros, or mirrored with
  ``padding_mode="reflect"``), an ``S x S`` window (``crop_size``; default the
  ``H x W`` of the input) at a uniform random offset in ``[0, H + 2 * crop_padding
  - S]`` is kept, and with probability 1/2 the result is mirrored left-right
  (``x[:, ::-1]`` for an HWC image ``x``). The dtype is preserved.
  ``crop_padding=0`` without ``crop_size`` disables the crop, ``flip=False``
  the flip; with both disabled ``images`` is returned unchanged. Clothing1M's
  ``RandomCrop(224)`` of 256-pixel images is ``crop_padding=0, crop_size=224``.
  Keyword arguments are Python values (static under ``jax.jit``).
  """
  _check(images, crop_padding, flip, padding_mode)
  n, h, w, c = images.shape
  if crop_size is not None and not 1 <= crop_size <= min(h, w) + 2 * crop_padding:
    raise ValueError(f"crop_size must be in [1, {min(h, w) + 2 * crop_padding}], got "
                     f"{crop_size}")
  sh, sw = (h, w) if crop_size is None else (crop_size, crop_size)
  crop = crop_padding or (sh, sw) != (h, w)
  if (not crop and not flip) or n == 0:
    return images
  p = crop_padding

  def one(k, x):
    k_crop, k_flip = jax.random.split(k)
    if crop:
      padded = jnp.pad(x, ((p, p), (p, p), (0, 0)), mode=padding_mode)
      if (sh, sw) == (h, w):  # both offsets in [0, 2p] in one draw
        dy, dx = jax.random.randint(k_crop, (2,), 0, 2 * p + 1)
      else:
        dy = jax.random.randint(k_crop, (), 0, h + 2 * p - sh + 1)
        dx = jax.random.randint(jax.random.fold_in(k_crop, 1), (), 0, w + 2 * p - sw + 1)
      x = jax.lax.dynamic_slice(padded, (dy, dx, 0), (sh, sw, c))
    if flip:
      x = jnp.where(jax.random.bernoulli(k_flip), x[:, ::-1], x)
    return x

  return jax.vmap(one)(jax.random.split(key, n), jnp.asarray(images))


def center_crop(images, size: int | None):
  """The central ``size x size`` window of ``(N, H, W, C)`` images (``None``: all of
  them), offsets rounded down as torchvision's ``CenterCrop`` rounds."""
  if size is None or images.shape[1:3] == (size, size):
    return images
  h, w = images.shape[1:3]
  if not 1 <= size <= min(h, w):
    raise ValueError(f"crop_size must be in [1, {min(h, w)}], got {size}")
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  return images[:, top:top + size, left:left + size]


def identity_augment(key, images):
  """The disabled augmentation: returns ``images`` unchanged."""
  del key
  return images


def dataset_augment(name: str, *, crop_padding: int = 4, flip: bool = True,
                    padding_mode: str = "constant") -> Callable:
  """The default training augmentation ``fn(key, images) -> images`` for a dataset.

  :func:`augment_batch` with the given settings when
  ``DATASET_INFO[name].augment`` (CIFAR-10/100, CIFAR-N), else
  :func:`identity_augment` (MNIST, Fashion-MNIST). Usable inside ``jax.jit``.
  """
  if name not in DATASET_INFO:
    raise ValueError(f"name must be one of {', '.join(sorted(DATASET_INFO))}, got {name!r}")
  if not DATASET_INFO[name].augment:
    return identity_augment

  def augment(key, images):
    return augment_batch(key, images, crop_padding=crop_padding, flip=flip,
                         padding_mode=padding_mode)

  return augment
