"""Synthetic label-noise generators.

Every generator is a pure function of ``(labels, rate, key, ...)``: the same
inputs and the same ``jax.random`` key always give the same noisy labels. All
randomness comes from ``jax.random``; inputs may be numpy or JAX arrays, and the
outputs are numpy arrays ``(noisy_labels int32 (N,), mask bool (N,))`` where
``mask[i]`` is True iff example ``i``'s label was changed.

Conventions (see METHODS.md section 6; they differ between papers, so they are
named explicitly here):

* ``symmetric_exclusive``: exactly ``round(rate * N)`` examples receive a label
  drawn uniformly from the *other* C-1 classes, so the realised flip rate is
  ``rate`` (Co-teaching, T-Revision, SANER).
* ``symmetric_inclusive``: each label is resampled uniformly over *all* C
  classes with probability ``rate``, so the realised flip rate is about
  ``rate * (C-1) / C`` (DivideMix, MW-Net, MLC).
* ``asymmetric``: class-conditional flips ``c -> class_map[c]``; exactly
  ``round(rate * n_c)`` examples of each source class ``c`` are moved.
* ``pairflip``: ``asymmetric`` with ``c -> (c + 1) mod C`` (Co-teaching).

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
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import numpy as np

__all__ = [
    "ASYMMETRIC_MAPS",
    "FASHION_MNIST_ASYMMETRIC",
    "NOISE_KINDS",
    "NoiseSpec",
    "apply_noise",
    "asymmetric",
    "noise_rate",
    "pairflip",
    "parse_noise_spec",
    "symmetric_exclusive",
    "symmetric_inclusive",
    "transition_matrix",
]

FASHION_MNIST_ASYMMETRIC: tuple[int, ...] = (6, 1, 4, 3, 4, 7, 0, 7, 8, 7)
"""Fashion-MNIST class map: 0<->6 (T-shirt/Shirt), 2->4, 5->7, 9->7."""

ASYMMETRIC_MAPS: dict[str, tuple[int, ...]] = {
    "fashion_mnist": FASHION_MNIST_ASYMMETRIC,
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

NOISE_KINDS = ("none", "symmetric", "symmetric-inclusive", "asymmetric", "pairflip")

_VALID_FORMS = (
    "none, symmetric:R (exclusive), symmetric-inclusive:R, asymmetric:R, pairflip:R "
    "with R in [0, 1)"
)


class NoiseSpec(NamedTuple):
    """A parsed noise specification: ``kind`` in :data:`NOISE_KINDS`, ``rate`` in [0, 1)."""

    kind: str
    rate: float

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.rate:g}"


def parse_noise_spec(spec: str) -> NoiseSpec:
    """Parse ``"none"``, ``"symmetric:R"`` (exclusive), ``"symmetric-inclusive:R"``,
    ``"asymmetric:R"`` or ``"pairflip:R"`` into a :class:`NoiseSpec`.

    Case and surrounding whitespace are ignored. Raises ``ValueError`` (listing
    the valid forms) on an unknown kind, a malformed string or a bad rate.
    """
    if isinstance(spec, NoiseSpec):
        return NoiseSpec(spec.kind, _check_rate(spec.rate))
    if not isinstance(spec, str):
        raise ValueError(f"noise spec must be a string ({_VALID_FORMS}), got {spec!r}")
    text = spec.strip().lower()
    if text == "none":
        return NoiseSpec("none", 0.0)
    kind, sep, rate_text = text.partition(":")
    kind = kind.strip()
    if not sep or kind not in NOISE_KINDS or kind == "none":
        raise ValueError(f"invalid noise spec {spec!r}; valid forms: {_VALID_FORMS}")
    try:
        rate = float(rate_text)
    except ValueError:
        raise ValueError(
            f"invalid noise spec {spec!r}; valid forms: {_VALID_FORMS}"
        ) from None
    if not math.isfinite(rate) or not 0.0 <= rate < 1.0:
        raise ValueError(
            f"invalid noise spec {spec!r}: rate must be in [0, 1); valid forms: {_VALID_FORMS}"
        )
    return NoiseSpec(kind, rate)


def apply_noise(
    spec: str | NoiseSpec,
    labels,
    key,
    num_classes: int,
    dataset: str = "fashion_mnist",
):
    """Apply a noise spec (string or :class:`NoiseSpec`) to ``labels``.

    Dispatches to :func:`symmetric_exclusive` (``symmetric``),
    :func:`symmetric_inclusive`, :func:`asymmetric` (with
    ``ASYMMETRIC_MAPS[dataset]``) or :func:`pairflip`; ``none`` returns the
    labels unchanged. Returns ``(noisy_labels int32, mask bool)``.
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
