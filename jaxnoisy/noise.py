"""Synthetic label-noise generators.

Every generator is a pure function of ``(labels, rate, key, ...)``: the same
inputs and the same ``jax.random`` key always give the same noisy labels. All
randomness comes from ``jax.random``; inputs may be numpy or JAX arrays, and the
outputs are numpy arrays ``(noisy_labels int32 (N,), mask bool (N,))`` where
``mask[i]`` is True iff example ``i``'s label was changed.

Conventions (they differ between papers, so they are named explicitly here):

* ``symmetric_exclusive``: exactly ``round(rate * N)`` examples receive a label
  drawn uniformly from the *other* C-1 classes, so the realised flip rate is
  ``rate`` (Co-teaching, T-Revision, SANER).
* ``symmetric_inclusive``: each label is resampled uniformly over *all* C
  classes with probability ``rate``, so the realised flip rate is about
  ``rate * (C-1) / C`` (DivideMix, MW-Net, MLC).
* ``asymmetric``: class-conditional flips ``c -> class_map[c]``; exactly
  ``round(rate * n_c)`` examples of each source class ``c`` are moved.
* ``pairflip``: ``asymmetric`` with ``c -> (c + 1) mod C`` (Co-teaching).
* ``instance_dependent``: part-dependent noise (PDN, Xia et al. NeurIPS 2020),
  see :func:`instance_dependent`; each example flips with its own probability
  ``q_i`` (mean ``rate``), so the realised rate is ``rate`` in expectation.
* ``real_noise``: given human labels (CIFAR-10N / CIFAR-100N, see
  :mod:`jaxnoisy.data.cifar_n`).

Unlike generators that floor per-class counts (cleanlab issue 977), the
counts here are exact, and :func:`transition_matrix` reports the realised
noise.

Fashion-MNIST asymmetric map
----------------------------
Fashion-MNIST has no standard class-conditional noise map. jaxnoisy uses
``FASHION_MNIST_ASYMMETRIC = (6, 1, 4, 3, 4, 7, 0, 7, 8, 7)``, built from
visually confusable pairs, with five source classes like the CIFAR-10 map:

* T-shirt/top <-> Shirt (0 <-> 6)
* Pullover -> Coat (2 -> 4)
* Sandal -> Sneaker (5 -> 7)
* Ankle boot -> Sneaker (9 -> 7)

Trouser (1), Dress (3), Coat (4), Sneaker (7) and Bag (8) are never flipped.

Other asymmetric maps
---------------------
* MNIST: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1 (:data:`MNIST_ASYMMETRIC`).
* CIFAR-10: truck -> automobile (9 -> 1), bird -> airplane (2 -> 0),
  cat <-> dog (3 <-> 5), deer -> horse (4 -> 7) (:data:`CIFAR10_ASYMMETRIC`).
* CIFAR-100: each fine class moves to the next fine class of its own
  super-class: the 5 fine classes sharing a coarse label, sorted by fine index,
  form a cycle (:func:`cifar100_asymmetric_map`, from the standard fine ->
  coarse assignment :data:`jaxnoisy.dataset_info.CIFAR100_FINE_TO_COARSE` or from
  given fine/coarse labels). Note: some published code instead cycles blocks
  of 5 *consecutive fine indices*, which are not super-classes in CIFAR-100's
  alphabetical label order; jaxnoisy uses the real super-classes.

``cifar10_n``/``cifar100_n`` share the CIFAR-10/CIFAR-100 maps.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Dataset facts only (no loaders): importing jaxnoisy.noise must not load jaxnoisy.data.
from jaxnoisy.dataset_info import (CIFAR100_FINE_TO_COARSE, DATASET_INFO,
                                   REAL_NOISE_DATASETS, REAL_NOISE_LABEL_SETS)

__all__ = [
    "ASYMMETRIC_MAPS",
    "CIFAR100_ASYMMETRIC",
    "CIFAR10_ASYMMETRIC",
    "FASHION_MNIST_ASYMMETRIC",
    "MNIST_ASYMMETRIC",
    "NOISE_KINDS",
    "NoiseSpec",
    "apply_noise",
    "asymmetric",
    "cifar100_asymmetric_map",
    "instance_dependent",
    "noise_rate",
    "pairflip",
    "parse_noise_spec",
    "real_noise",
    "superclass_cycle_map",
    "symmetric_exclusive",
    "symmetric_inclusive",
    "transition_matrix",
]

FASHION_MNIST_ASYMMETRIC: tuple[int, ...] = (6, 1, 4, 3, 4, 7, 0, 7, 8, 7)
"""Fashion-MNIST class map: 0<->6 (T-shirt/Shirt), 2->4, 5->7, 9->7."""

MNIST_ASYMMETRIC: tuple[int, ...] = (0, 1, 7, 8, 4, 6, 5, 1, 8, 9)
"""MNIST class map: 2->7, 3->8, 5<->6, 7->1."""

CIFAR10_ASYMMETRIC: tuple[int, ...] = (0, 1, 0, 5, 7, 3, 6, 7, 8, 1)
"""CIFAR-10 class map: truck->automobile (9->1), bird->airplane (2->0),
cat<->dog (3<->5), deer->horse (4->7)."""


def superclass_cycle_map(fine_to_coarse: Sequence[int]) -> tuple[int, ...]:
  """Class map sending each fine class to the next one of its super-class.

  ``fine_to_coarse[f]`` is fine class ``f``'s super-class. The fine classes
  of each super-class, sorted by index, form one cycle
  ``f_0 -> f_1 -> ... -> f_last -> f_0`` (a super-class with one fine class
  maps it to itself).
  """
  coarse = np.asarray(fine_to_coarse)
  if coarse.ndim != 1 or coarse.size < 2 or not np.issubdtype(coarse.dtype, np.integer):
    raise ValueError(
        f"fine_to_coarse must be an int sequence of length >= 2, got {fine_to_coarse!r}"
    )
  cmap = np.arange(coarse.size)
  for c in np.unique(coarse):
    members = np.flatnonzero(coarse == c)
    cmap[members] = np.roll(members, -1)
  return tuple(int(t) for t in cmap)


def cifar100_asymmetric_map(fine_labels=None, coarse_labels=None) -> tuple[int, ...]:
  """CIFAR-100 asymmetric map: next fine class within the super-class.

  Without arguments, uses the standard fine -> coarse assignment
  (:data:`jaxnoisy.dataset_info.CIFAR100_FINE_TO_COARSE`). Given the fine and coarse
  labels of a data set (e.g. ``Dataset.train_labels`` and
  ``Dataset.train_coarse_labels``), derives the assignment from them; every
  one of the 100 fine classes must occur and always with the same coarse
  label. See :func:`superclass_cycle_map`.
  """
  if fine_labels is None and coarse_labels is None:
    return superclass_cycle_map(CIFAR100_FINE_TO_COARSE)
  if fine_labels is None or coarse_labels is None:
    raise ValueError("fine_labels and coarse_labels must be given together")
  fine = _check_labels(fine_labels, 100, "fine_labels")
  coarse = _check_labels(coarse_labels, 20, "coarse_labels")
  if fine.shape != coarse.shape:
    raise ValueError(
        f"fine_labels and coarse_labels must have the same shape, got {fine.shape} "
        f"and {coarse.shape}"
    )
  pairs = np.unique(fine * 20 + coarse)
  pair_fine = pairs // 20
  if not np.array_equal(pair_fine, np.arange(100)):
    counts = np.bincount(pair_fine, minlength=100)
    bad = np.flatnonzero(counts != 1)
    raise ValueError(
        f"coarse_labels must give each of the 100 fine classes exactly one coarse "
        f"class; fine classes {bad[:5].tolist()} have {counts[bad[:5]].tolist()}"
    )
  return superclass_cycle_map(pairs % 20)


CIFAR100_ASYMMETRIC: tuple[int, ...] = cifar100_asymmetric_map()
"""CIFAR-100 class map: next fine class within the (real) super-class."""

ASYMMETRIC_MAPS: dict[str, tuple[int, ...]] = {
    "mnist": MNIST_ASYMMETRIC,
    "fashion_mnist": FASHION_MNIST_ASYMMETRIC,
    "cifar10": CIFAR10_ASYMMETRIC,
    "cifar10_n": CIFAR10_ASYMMETRIC,
    "cifar100": CIFAR100_ASYMMETRIC,
    "cifar100_n": CIFAR100_ASYMMETRIC,
}
"""Asymmetric class maps by dataset name, for :func:`apply_noise`."""


# --------------------------------------------------------------------------
# Validation helpers (plain Python / numpy, run before any randomness).
# --------------------------------------------------------------------------


def _check_rate(rate) -> float:
  if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
    raise ValueError(f"rate must be a float in [0, 1), got {rate!r}")
  rate = float(rate)
  if not 0.0 <= rate < 1.0:  # also rejects NaN
    raise ValueError(f"rate must be in [0, 1), got {rate}")
  return rate


def _check_num_classes(num_classes) -> int:
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
  if num_classes < 2:
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes}")
  return int(num_classes)


def _check_labels(labels, num_classes: int, name: str = "labels") -> np.ndarray:
  arr = np.asarray(labels)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be a 1-D integer array, got shape {arr.shape}")
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{name} must be a 1-D integer array, got dtype {arr.dtype}")
  arr = arr.astype(np.int64)
  if arr.size:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
      raise ValueError(
          f"{name} must be in [0, {num_classes}), got values in [{lo}, {hi}]"
      )
  return arr


def _check_class_map(class_map) -> np.ndarray:
  cmap = np.asarray(class_map)
  if cmap.ndim != 1 or cmap.size < 2 or not np.issubdtype(cmap.dtype, np.integer):
    raise ValueError(
        f"class_map must be an int sequence of length C >= 2, got {class_map!r}"
    )
  c = cmap.size
  if cmap.min() < 0 or cmap.max() >= c:
    raise ValueError(
        f"class_map entries must be in [0, {c}), got values in "
        f"[{int(cmap.min())}, {int(cmap.max())}]"
    )
  return cmap.astype(np.int64)


def _count(rate: float, n: int) -> int:
  """Number of examples to flip: Python ``round`` (half to even) of rate*n."""
  return min(int(round(rate * n)), n)


def _identity(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  return y.astype(np.int32), np.zeros(y.shape, dtype=bool)


# --------------------------------------------------------------------------
# Generators.
# --------------------------------------------------------------------------


def symmetric_exclusive(labels, rate: float, key, num_classes: int):
  """Symmetric noise, exclusive convention (Co-teaching, T-Revision, SANER).

  Exactly ``round(rate * N)`` examples, chosen uniformly without replacement,
  get a new label drawn uniformly from the other ``num_classes - 1`` classes;
  every chosen example therefore changes label and the realised flip rate is
  exactly ``rate`` (up to rounding).

  Returns ``(noisy_labels int32, mask bool)`` as numpy arrays.
  """
  rate = _check_rate(rate)
  num_classes = _check_num_classes(num_classes)
  y = _check_labels(labels, num_classes)
  n = y.size
  n_flip = _count(rate, n)
  if n_flip == 0:
    return _identity(y)
  k_idx, k_off = jax.random.split(key)
  idx = np.asarray(jax.random.permutation(k_idx, n))[:n_flip]
  # An offset in [1, C) added modulo C is uniform over the other C-1 classes.
  offset = np.asarray(jax.random.randint(k_off, (n_flip,), 1, num_classes))
  noisy = y.copy()
  noisy[idx] = (y[idx] + offset) % num_classes
  return noisy.astype(np.int32), noisy != y


def symmetric_inclusive(labels, rate: float, key, num_classes: int):
  """Symmetric noise, inclusive ("uniform") convention (DivideMix, MW-Net, MLC).

  Each label is independently resampled uniformly over all ``num_classes``
  classes with probability ``rate``; a resampled label may equal the original,
  so the expected realised flip rate is ``rate * (C - 1) / C``. ``mask`` marks
  the labels that actually changed.

  Returns ``(noisy_labels int32, mask bool)`` as numpy arrays.
  """
  rate = _check_rate(rate)
  num_classes = _check_num_classes(num_classes)
  y = _check_labels(labels, num_classes)
  if rate == 0.0 or y.size == 0:
    return _identity(y)
  k_sel, k_lab = jax.random.split(key)
  resample = np.asarray(jax.random.bernoulli(k_sel, rate, (y.size,)))
  new = np.asarray(jax.random.randint(k_lab, (y.size,), 0, num_classes))
  noisy = np.where(resample, new, y)
  return noisy.astype(np.int32), noisy != y


def asymmetric(labels, rate: float, key, class_map: Sequence[int]):
  """Class-conditional (asymmetric) noise, exact per class.

  ``class_map`` has length C; ``class_map[c]`` is the class that examples of
  class ``c`` are flipped to (``class_map[c] == c``: never flipped). For every
  source class ``c`` with ``class_map[c] != c``, exactly ``round(rate * n_c)``
  of its ``n_c`` examples, chosen uniformly without replacement, are moved to
  ``class_map[c]``. Flips are decided from the clean labels, so swaps such as
  0<->6 move each example at most once. (CIFAR-style maps, Patrini et al. /
  Co-teaching; the papers flip each example with probability ``rate``, here
  the count is exact.)

  Returns ``(noisy_labels int32, mask bool)`` as numpy arrays.
  """
  rate = _check_rate(rate)
  cmap = _check_class_map(class_map)
  num_classes = cmap.size
  y = _check_labels(labels, num_classes)
  if rate == 0.0 or y.size == 0:
    return _identity(y)
  noisy = y.copy()
  # One random ranking of all N examples (a uniform permutation, no ties);
  # within each source class the n_flip lowest-ranked examples are moved,
  # which is a uniform choice without replacement per class.
  rank = np.empty(y.size, dtype=np.int64)
  rank[np.asarray(jax.random.permutation(key, y.size))] = np.arange(y.size)
  for c in range(num_classes):
    target = int(cmap[c])
    if target == c:
      continue
    members = np.flatnonzero(y == c)
    n_flip = _count(rate, members.size)
    if n_flip == 0:
      continue
    chosen = members[np.argsort(rank[members])[:n_flip]]
    noisy[chosen] = target
  return noisy.astype(np.int32), noisy != y


def pairflip(labels, rate: float, key, num_classes: int):
  """Pair-flip noise (Co-teaching): :func:`asymmetric` with ``c -> (c + 1) mod C``.

  Exactly ``round(rate * n_c)`` examples of every class ``c`` move to
  ``(c + 1) mod C``. Returns ``(noisy_labels int32, mask bool)``.
  """
  num_classes = _check_num_classes(num_classes)
  cmap = tuple((c + 1) % num_classes for c in range(num_classes))
  return asymmetric(labels, rate, key, cmap)


def _scaled_images(images, n: int) -> tuple[np.ndarray, float]:
  """(N, D) view of ``images`` and the factor that maps its values to [0, 1]."""
  x = np.asarray(images)
  if x.ndim < 2 or x.shape[0] != n:
    raise ValueError(
        f"images must have shape (N, ...) with N = len(labels) = {n}, got {x.shape}"
    )
  flat = x.reshape(n, -1)
  if flat.shape[1] == 0:
    raise ValueError(f"images must have at least one feature, got shape {x.shape}")
  if np.issubdtype(x.dtype, np.integer):
    if x.size and (flat.min() < 0 or flat.max() > 255):
      raise ValueError(
          f"images must be 8-bit pixels in [0, 255] when integer, got values in "
          f"[{flat.min()}, {flat.max()}]"
      )
    return flat, 1.0 / 255.0
  if np.issubdtype(x.dtype, np.floating):
    if x.size and not (flat.min() >= 0.0 and flat.max() <= 1.0):  # also rejects NaN
      raise ValueError(
          f"images must be in [0, 1] when floating point, got values in "
          f"[{flat.min()}, {flat.max()}]"
      )
    return flat, 1.0
  raise ValueError(f"images must be an integer or float array, got dtype {x.dtype}")


def instance_dependent(labels, rate: float, key, images, num_classes: int,
                       *, chunk_size: int = 4096):
  """Instance-dependent, part-dependent noise (PDN; Xia et al., NeurIPS 2020).

  For each example ``i`` with clean label ``y_i`` and image ``x_i``:

  1. ``q_i ~ TruncNormal(rate, 0.1**2)`` on ``[0, 1]`` (its flip probability);
  2. ``W ~ N(0, 1)`` of shape ``(C, D, C)``, ``D`` = pixels per image, drawn
     once for the data set (slice ``W[c]`` from ``fold_in(key, c)``);
  3. ``p = x_i @ W[y_i]``; ``p[y_i] = -inf``; ``p = q_i * softmax(p)``;
     ``p[y_i] += 1 - q_i``;
  4. the noisy label is drawn from ``p``.

  Normalisation of ``x``: images of any shape ``(N, ...)`` are flattened to
  ``(N, D)`` and scaled to [0, 1] (integer images are taken as 8-bit pixels
  and divided by 255; float images must already lie in [0, 1]), with no
  mean/std standardisation. Logits ``x_i @ W[c]`` then have standard
  deviation ``||x_i||``, so the off-class distribution is sharply peaked:
  each image has one or two dominant wrong classes, which is what makes the
  noise instance-dependent.

  An example changes label with probability exactly ``q_i``, so the realised
  noise rate is ``mean(q)`` ~ ``rate`` (up to sampling error and the small
  bias of truncation near 0 or 1); unlike the symmetric/asymmetric
  generators the count is not exact. Memory: ``W[c]`` is made one class at
  a time and images are converted in chunks of ``chunk_size`` rows, so only
  ``(chunk_size, D)`` floats and ``(N, C)`` probabilities are held.

  Returns ``(noisy_labels int32, mask bool)`` as numpy arrays.
  """
  rate = _check_rate(rate)
  num_classes = _check_num_classes(num_classes)
  y = _check_labels(labels, num_classes)
  n = y.size
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
          or chunk_size < 1:
    raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
  flat, scale = _scaled_images(images, n)
  if rate == 0.0 or n == 0:
    return _identity(y)
  k_q, k_w, k_u = jax.random.split(key, 3)
  sd = 0.1
  q = rate + sd * np.asarray(
      jax.random.truncated_normal(k_q, -rate / sd, (1.0 - rate) / sd, (n,)), np.float64
  )
  q = np.clip(q, 0.0, 1.0)
  d = flat.shape[1]
  logits = np.zeros((n, num_classes), dtype=np.float64)
  for c in range(num_classes):
    members = np.flatnonzero(y == c)
    if members.size == 0:
      continue
    w = np.asarray(jax.random.normal(jax.random.fold_in(k_w, c), (d, num_classes)))
    for start in range(0, members.size, chunk_size):
      rows = members[start : start + chunk_size]
      x = flat[rows].astype(np.float32)
      if scale != 1.0:
        x *= np.float32(scale)
      logits[rows] = x @ w
  rows = np.arange(n)
  logits[rows, y] = -np.inf
  logits -= logits.max(axis=1, keepdims=True)
  p = np.exp(logits)
  p *= (q / p.sum(axis=1))[:, None]
  p[rows, y] += 1.0 - q
  # Inverse-CDF sampling; comparing against u * total keeps every draw inside
  # the support even when the row sums differ from 1 by rounding.
  u = np.asarray(jax.random.uniform(k_u, (n,), dtype=jnp.float32), np.float64)
  cdf = np.cumsum(p, axis=1)
  noisy = np.argmax(cdf > (u * cdf[:, -1])[:, None], axis=1)
  return noisy.astype(np.int32), noisy != y


def real_noise(labels, noisy_labels, num_classes: int):
  """Real (human or web) label noise: use the given ``noisy_labels`` as they are.

  ``noisy_labels`` must be aligned with ``labels`` (e.g. a set from
  ``Dataset.noisy_label_sets``). ``labels`` may be −1 where the true label is unknown
  (Clothing1M knows it for a few per cent of its images). Returns ``(noisy_labels
  int32, mask bool)`` with ``mask = (labels >= 0) & (noisy != labels)``: corrupted
  where that is known.
  """
  num_classes = _check_num_classes(num_classes)
  y = np.asarray(labels)
  known = y >= 0
  _check_labels(y[known], num_classes)
  noisy = _check_labels(noisy_labels, num_classes, "real_noisy_labels")
  if noisy.shape != y.shape:
    raise ValueError(
        f"real_noisy_labels must have the shape of labels {y.shape}, got {noisy.shape}"
    )
  return noisy.astype(np.int32), known & (noisy != y)


# --------------------------------------------------------------------------
# Diagnostics.
# --------------------------------------------------------------------------


def transition_matrix(clean_labels, noisy_labels, num_classes: int) -> np.ndarray:
  """Empirical noise transition matrix ``T[c, k] = P(noisy = k | clean = c)``.

  Returns a float64 ``(C, C)`` numpy array; row ``c`` is the distribution of
  noisy labels among examples whose clean label is ``c``. A class with no
  examples gives a row of zeros (every other row sums to 1).
  """
  num_classes = _check_num_classes(num_classes)
  clean = _check_labels(clean_labels, num_classes, "clean_labels")
  noisy = _check_labels(noisy_labels, num_classes, "noisy_labels")
  if clean.shape != noisy.shape:
    raise ValueError(
        f"clean_labels and noisy_labels must have the same shape, got "
        f"{clean.shape} and {noisy.shape}"
    )
  counts = np.bincount(
      clean * num_classes + noisy, minlength=num_classes * num_classes
  ).reshape(num_classes, num_classes).astype(np.float64)
  totals = counts.sum(axis=1, keepdims=True)
  return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def noise_rate(clean_labels, noisy_labels) -> float:
  """Fraction of examples whose noisy label differs from the clean one (0.0 if empty)."""
  clean = np.asarray(clean_labels)
  noisy = np.asarray(noisy_labels)
  if clean.shape != noisy.shape:
    raise ValueError(
        f"clean_labels and noisy_labels must have the same shape, got "
        f"{clean.shape} and {noisy.shape}"
    )
  if clean.size == 0:
    return 0.0
  return float(np.mean(clean != noisy))


# --------------------------------------------------------------------------
# Noise specs.
# --------------------------------------------------------------------------

#: The kinds a noise spec (``KIND`` or ``KIND:ARG``) may name.
NOISE_KINDS = (
    "none",
    "symmetric",
    "symmetric-inclusive",
    "asymmetric",
    "pairflip",
    "instance",
    "cifar10n",
    "cifar100n",
    "clothing1m",
)

_RATE_KINDS = ("symmetric", "symmetric-inclusive", "asymmetric", "pairflip", "instance")
_REAL_KINDS = tuple(REAL_NOISE_LABEL_SETS)  # cifar10n, cifar100n
_REAL_NUM_CLASSES = {k: DATASET_INFO[d].num_classes for k, d in REAL_NOISE_DATASETS.items()}

_VALID_FORMS = (
    "none, symmetric:R (exclusive), symmetric-inclusive:R, asymmetric:R, pairflip:R, "
    "instance:R with R in [0, 1); "
    + "; ".join(f"{k}:{'|'.join(v)}" for k, v in REAL_NOISE_LABEL_SETS.items())
)


class NoiseSpec(NamedTuple):
  """A parsed noise specification.

  ``kind`` in :data:`NOISE_KINDS`; ``rate`` in [0, 1) (0.0 for ``none`` and
  the real-noise kinds, whose rate is whatever the human labels give);
  ``label_set``: the real-noise label set (``worse``, ``noisy``, ...), else "".
  """

  kind: str
  rate: float
  label_set: str = ""

  def __str__(self) -> str:
    if self.kind == "none":
      return "none"
    if self.kind in _REAL_KINDS:
      return f"{self.kind}:{self.label_set}"
    return f"{self.kind}:{self.rate:g}"


def parse_noise_spec(spec: str) -> NoiseSpec:
  """Parse a noise spec string into a :class:`NoiseSpec`.

  Valid forms: ``none``; ``symmetric:R`` (exclusive), ``symmetric-inclusive:R``,
  ``asymmetric:R``, ``pairflip:R``, ``instance:R`` with R in [0, 1);
  ``cifar10n:aggre|random1|random2|random3|worse``; ``cifar100n:noisy``;
  ``clothing1m:noisy``.
  Case and surrounding whitespace are ignored. Raises ``ValueError`` (one
  line, listing the valid forms) on an unknown kind, a malformed string or a
  bad rate / label set.
  """
  if isinstance(spec, NoiseSpec):
    if spec.kind in _REAL_KINDS:
      return parse_noise_spec(str(spec))
    if spec.kind not in NOISE_KINDS:
      raise ValueError(f"invalid noise spec {spec!r}; valid forms: {_VALID_FORMS}")
    return NoiseSpec(spec.kind, _check_rate(spec.rate))
  if not isinstance(spec, str):
    raise ValueError(f"noise spec must be a string ({_VALID_FORMS}), got {spec!r}")
  text = spec.strip().lower()
  if text == "none":
    return NoiseSpec("none", 0.0)
  kind, sep, arg = text.partition(":")
  kind, arg = kind.strip(), arg.strip()
  if not sep or kind not in NOISE_KINDS or kind == "none":
    raise ValueError(f"invalid noise spec {spec!r}; valid forms: {_VALID_FORMS}")
  if kind in _REAL_KINDS:
    if arg not in REAL_NOISE_LABEL_SETS[kind]:
      raise ValueError(
          f"invalid noise spec {spec!r}: label set must be one of "
          f"{'|'.join(REAL_NOISE_LABEL_SETS[kind])}; valid forms: {_VALID_FORMS}"
      )
    return NoiseSpec(kind, 0.0, arg)
  try:
    rate = float(arg)
  except ValueError:
    raise ValueError(
        f"invalid noise spec {spec!r}; valid forms: {_VALID_FORMS}"
    ) from None
  if not math.isfinite(rate) or not 0.0 <= rate < 1.0:
    raise ValueError(
        f"invalid noise spec {spec!r}: rate must be in [0, 1); valid forms: {_VALID_FORMS}"
    )
  return NoiseSpec(kind, rate)


def _select_real_labels(spec: NoiseSpec, real_noisy_labels, dataset: str):
  needed = REAL_NOISE_DATASETS[spec.kind]
  if real_noisy_labels is None or (
      dataset in REAL_NOISE_DATASETS.values() and dataset != needed):
    # One line for the command line: which --dataset carries these human labels.
    raise ValueError(
        f"noise {spec} needs --dataset {needed} (its human labels); dataset "
        f"{dataset!r} has none"
    )
  if isinstance(real_noisy_labels, dict):
    published = REAL_NOISE_LABEL_SETS[spec.kind][spec.label_set]
    for k in (spec.label_set, published):
      if k in real_noisy_labels:
        return real_noisy_labels[k]
    raise ValueError(
        f"dataset {dataset!r} has no {spec.label_set!r} label set; available: "
        f"{', '.join(sorted(map(str, real_noisy_labels))) or 'none'}"
    )
  return real_noisy_labels


def apply_noise(
    spec: str | NoiseSpec,
    labels,
    key,
    num_classes: int,
    dataset: str = "fashion_mnist",
    images=None,
    real_noisy_labels=None,
):
  """Apply a noise spec (string or :class:`NoiseSpec`) to ``labels``.

  Dispatches to :func:`symmetric_exclusive` (``symmetric``),
  :func:`symmetric_inclusive`, :func:`asymmetric` (with
  ``ASYMMETRIC_MAPS[dataset]``), :func:`pairflip`,
  :func:`instance_dependent` (``instance``; needs ``images``, aligned with
  ``labels``) or :func:`real_noise` (``cifar10n:K`` / ``cifar100n:K`` /
  ``clothing1m:noisy``; needs
  ``real_noisy_labels``: an aligned label array, or a dict such as
  ``Dataset.noisy_label_sets`` keyed by ``K`` or the published name; without
  them, or with ``dataset`` another CIFAR-N set, the error names the dataset
  that has them, :data:`jaxnoisy.dataset_info.REAL_NOISE_DATASETS`); ``none``
  returns the labels unchanged. Returns ``(noisy_labels int32, mask bool)``.
  """
  spec = parse_noise_spec(spec)
  num_classes = _check_num_classes(num_classes)
  if spec.kind == "none":
    return _identity(_check_labels(labels, num_classes))
  if spec.kind == "symmetric":
    return symmetric_exclusive(labels, spec.rate, key, num_classes)
  if spec.kind == "symmetric-inclusive":
    return symmetric_inclusive(labels, spec.rate, key, num_classes)
  if spec.kind == "pairflip":
    return pairflip(labels, spec.rate, key, num_classes)
  if spec.kind == "instance":
    if images is None:
      raise ValueError(f"images is required for {spec} noise (aligned with labels)")
    return instance_dependent(labels, spec.rate, key, images, num_classes)
  if spec.kind in _REAL_KINDS:
    noisy_labels = _select_real_labels(spec, real_noisy_labels, dataset)
    if num_classes != _REAL_NUM_CLASSES[spec.kind]:
      raise ValueError(
          f"num_classes must be {_REAL_NUM_CLASSES[spec.kind]} for {spec} noise, "
          f"got {num_classes}"
      )
    return real_noise(labels, noisy_labels, num_classes)
  # asymmetric
  if dataset not in ASYMMETRIC_MAPS:
    raise ValueError(
        f"dataset {dataset!r} has no asymmetric noise map; datasets with one: "
        f"{', '.join(sorted(ASYMMETRIC_MAPS))}"
    )
  class_map = ASYMMETRIC_MAPS[dataset]
  if len(class_map) != num_classes:
    raise ValueError(
        f"num_classes must be {len(class_map)} for the {dataset!r} asymmetric map, "
        f"got {num_classes}"
    )
  return asymmetric(labels, spec.rate, key, class_map)
