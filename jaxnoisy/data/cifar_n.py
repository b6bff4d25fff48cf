"""CIFAR-10N / CIFAR-100N: real human label noise, aligned to jaxnoisy's images.

Label sets (noise-spec key -> published name):

* CIFAR-10N (``cifar10n:KEY``): ``aggre`` -> ``aggre_label``, ``random1`` ->
  ``random_label1``, ``random2`` -> ``random_label2``, ``random3`` ->
  ``random_label3``, ``worse`` -> ``worse_label``;
* CIFAR-100N (``cifar100n:noisy``): ``noisy`` -> ``noisy_label`` (TFDS's
  ``cifar100_n`` calls the feature ``noise_label``).

(These facts are :data:`jaxnoisy.dataset_info.CIFAR10N_LABEL_SETS` /
``CIFAR100N_LABEL_SETS``. This module reads the published label files and aligns
them to images; the loader, :mod:`jaxnoisy.data.datasets`, combines the two.)

Two ways to get them (tried in this order by ``load_dataset("cifar10_n")``):

(a) The TFDS builders ``cifar10_n`` / ``cifar100_n``, if prepared: every record
    carries its image and its human labels, so they are aligned by
    construction. (Preparing them needs TensorFlow, the network and the
    builder's manual files; see its ``MANUAL_DOWNLOAD_INSTRUCTIONS``.)

(b) The published label file plus the CIFAR images jaxnoisy loads anyway.
    Get ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt`` from the ``data/``
    folder of the authors' repository (github.com/UCSC-REAL/cifar-10-100n) and
    put it in ``data_dir`` or ``$JAXNOISY_DATA`` (or ``D/cifar10_n`` etc.), or
    pass ``label_file=``. The ``.pt`` file is a pickled dict of numpy arrays
    and is read without torch by :func:`read_cifar_n_labels` (a restricted
    unpickler: containers and numpy arrays only). If it holds torch tensors
    instead, it is read with torch when importable; otherwise convert it once
    where torch is installed::

        import numpy as np, torch
        d = torch.load("CIFAR-10_human.pt", weights_only=False)
        np.savez("CIFAR-10_human.npz", **{k: np.asarray(v) for k, v in d.items()})

    and use the ``.npz`` (same base name, found automatically). The labels
    follow the torchvision CIFAR order, i.e. the order of the python pickles
    (``data_batch_1..5`` / ``train``). They are aligned to the loader's order:

    * CIFAR loaded from the python pickles: already in that order;
    * CIFAR loaded from TFDS (which shuffles) and the python pickles present
      (``cifar-10-batches-py`` / ``cifar-100-python`` in ``data_dir`` or
      ``$JAXNOISY_DATA``): by matching image bytes, :func:`align_to`;
    * otherwise from TFDS's record ids (``train_00042`` = index 42 in the
      CIFAR files), :func:`order_from_tfds_ids`.

    In every case the file's ``clean_label`` must then equal the loader's
    labels exactly, which catches any misalignment.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np

from jaxnoisy.data.readers import restricted_unpickle, short_error

__all__ = [
    "LABEL_FILE_NAMES",
    "align_to",
    "image_digests",
    "order_from_tfds_ids",
    "read_cifar_n_labels",
]

LABEL_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10_n": ("CIFAR-10_human.npz", "CIFAR-10_human.pt", "CIFAR-10_human.npy"),
    "cifar100_n": ("CIFAR-100_human.npz", "CIFAR-100_human.pt", "CIFAR-100_human.npy"),
}
"""File names looked for (in each search directory) by the CIFAR-N loaders."""


# --------------------------------------------------------------------------
# Label files.
# --------------------------------------------------------------------------

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _read_pt(path: Path):
  """A torch.save'd object made of containers and numpy arrays, without torch."""
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
      if len(names) != 1:
        raise ValueError(f"{path}: not a torch zip file (no single data.pkl)")
      with z.open(names[0]) as f:
        return restricted_unpickle(f, encoding="latin1")
  with open(path, "rb") as f:  # legacy format: magic, protocol, sys_info, object
    if restricted_unpickle(f) != _TORCH_LEGACY_MAGIC:
      raise ValueError(f"{path}: not a torch file (bad magic number)")
    restricted_unpickle(f)
    restricted_unpickle(f)
    return restricted_unpickle(f, encoding="latin1")


def _read_pt_with_torch(path: Path):
  import torch  # optional

  obj = torch.load(path, map_location="cpu", weights_only=True)
  return {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in obj.items()}


def _read_npy_dict(path: Path):
  """A dict saved with ``np.save(path, d)``, unpickled with the restricted unpickler."""
  with open(path, "rb") as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
      shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype != object or shape != ():
      raise ValueError(f"{path}: .npy must hold a pickled dict, got {dtype} {shape}")
    try:
      obj = restricted_unpickle(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as exc:
      raise ValueError(f"{path}: {short_error(exc)}") from None
  if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
    obj = obj.item()  # np.save pickles the 0-d object array holding the dict
  return obj


def read_cifar_n_labels(path, *, image_order=None) -> dict[str, np.ndarray]:
  """Read a CIFAR-N human-label file into ``{published name: int32 array}``.

  ``path``: ``.pt`` (the published ``CIFAR-10_human.pt`` /
  ``CIFAR-100_human.pt``; read without torch if it holds numpy arrays, with
  torch if it holds tensors and torch is importable), ``.npz`` (one array
  per key) or ``.npy`` (a pickled dict, ``np.save(path, d)``). Pickles are
  read with a restricted unpickler (no code execution). Keys are e.g.
  ``clean_label``, ``aggre_label``, ``worse_label``, ``random_label1..3``,
  ``noisy_label``.

  ``image_order`` (array or ``.npy`` path, optional): for files stored in
  another order, such as the repository's ``CIFAR-10_human_ordered.npy``
  with ``image_order_c10.npy``: entry ``j`` of every array belongs to CIFAR
  file index ``image_order[j]`` (as TFDS's cifar10_n builder uses them);
  the result is then in CIFAR file (torchvision) order.
  """
  path = Path(path)
  suffix = path.suffix.lower()
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as z:
      raw = {k: z[k] for k in z.files}
  elif suffix == ".npy":
    raw = _read_npy_dict(path)
  elif suffix in (".pt", ".pth"):
    try:
      raw = _read_pt(path)
    except Exception as exc:
      try:
        raw = _read_pt_with_torch(path)
      except ImportError:
        raise ValueError(
            f"{path}: cannot read without torch ({short_error(exc)}); convert it "
            f"to .npz where torch is installed"
        ) from exc
      except Exception:  # torch's weights-only loader refuses it too (torch >= 2.6)
        raise ValueError(
            f"{path}: holds more than arrays and tensors ({short_error(exc)}); torch's "
            f"weights-only loader refuses it too; convert it to .npz where you trust it"
        ) from None
  else:
    raise ValueError(f"path must end in .pt, .npz or .npy, got {path.name!r}")
  if not isinstance(raw, dict) or not raw:
    raise ValueError(f"{path}: expected a non-empty dict of label arrays")
  out = {}
  for key, value in raw.items():
    key = key.decode() if isinstance(key, bytes) else str(key)
    arr = np.asarray(value)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(
          f"{path}: {key} must be a 1-D integer array, got {arr.dtype} {arr.shape}"
      )
    out[key] = arr.astype(np.int32)
  sizes = {a.size for a in out.values()}
  if len(sizes) != 1:
    raise ValueError(f"{path}: label arrays have different lengths {sorted(sizes)}")
  if image_order is not None:
    if isinstance(image_order, (str, Path)):
      image_order = np.load(image_order, allow_pickle=False)
    order = np.asarray(image_order).astype(np.int64)
    n = sizes.pop()
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
      raise ValueError(f"image_order must be a permutation of range({n})")
    for key, arr in out.items():
      reordered = np.empty_like(arr)
      reordered[order] = arr
      out[key] = reordered
  return out


# --------------------------------------------------------------------------
# Alignment.
# --------------------------------------------------------------------------


def image_digests(images, keys=None) -> list[bytes]:
  """A 16-byte BLAKE2b digest of each image's bytes (and of ``keys[i]``, if given)."""
  images = np.ascontiguousarray(np.asarray(images))
  if images.ndim < 2:
    raise ValueError(f"images must have shape (N, ...), got {images.shape}")
  extra = None if keys is None else np.asarray(keys)
  if extra is not None and extra.shape[:1] != images.shape[:1]:
    raise ValueError(
        f"keys must have length {images.shape[0]}, got shape {extra.shape}"
    )
  flat = images.reshape(images.shape[0], -1)
  out = []
  for i in range(flat.shape[0]):
    h = hashlib.blake2b(flat[i].tobytes(), digest_size=16)
    if extra is not None:
      h.update(np.ascontiguousarray(extra[i]).tobytes())
    out.append(h.digest())
  return out


def align_to(reference_images, target_images, *, reference_keys=None,
             target_keys=None) -> np.ndarray:
  """Permutation taking arrays in ``reference_images``' order to ``target_images``'.

  Returns int64 ``perm`` with ``reference_images[perm] == target_images``, so
  labels stored in reference order become ``labels[perm]`` in target order.
  Images are matched by a hash of their bytes (plus ``*_keys[i]``, e.g. the
  clean labels, when given, which disambiguates identical images with
  different labels). Identical images are matched in order of occurrence.
  Raises ``ValueError`` if the two sets do not match one to one (different
  sizes, shapes, or an image of one missing from the other).
  """
  ref = np.asarray(reference_images)
  tgt = np.asarray(target_images)
  if ref.shape != tgt.shape or ref.dtype != tgt.dtype:
    raise ValueError(
        f"reference_images and target_images must have the same shape and dtype, "
        f"got {ref.dtype} {ref.shape} and {tgt.dtype} {tgt.shape}"
    )
  if (reference_keys is None) != (target_keys is None):
    raise ValueError("reference_keys and target_keys must be given together")
  index: dict[bytes, list[int]] = {}
  for i, d in enumerate(image_digests(ref, reference_keys)):
    index.setdefault(d, []).append(i)
  for v in index.values():
    v.reverse()  # pop() then yields occurrences in order
  perm = np.empty(tgt.shape[0], dtype=np.int64)
  for j, d in enumerate(image_digests(tgt, target_keys)):
    bucket = index.get(d)
    if not bucket:
      raise ValueError(
          f"target image {j} has no unmatched counterpart in reference_images; "
          f"the two sets are not a permutation of each other"
      )
    perm[j] = bucket.pop()
  return perm  # every target matched a distinct reference: a bijection


def order_from_tfds_ids(ids, prefix: str = "train_") -> np.ndarray:
  """Indices into the original CIFAR files from TFDS record ids.

  TFDS's ``cifar10``/``cifar100`` give each record an ``id`` such as
  ``"train_00042"``: its index in the CIFAR files. Returns int64 ``perm``
  with ``perm[i]`` the file index of record ``i``; raises ``ValueError`` if
  an id is malformed or the ids are not a permutation.
  """
  ids = [i.decode() if isinstance(i, bytes) else str(i) for i in np.asarray(ids).tolist()]
  try:
    if not all(i.startswith(prefix) for i in ids):
      raise ValueError
    perm = np.asarray([int(i[len(prefix):]) for i in ids], dtype=np.int64)
  except ValueError:
    raise ValueError(f"ids must look like {prefix}00042, got e.g. {ids[:2]}") from None
  if not np.array_equal(np.sort(perm), np.arange(perm.size)):
    raise ValueError(f"ids must be a permutation of {prefix}0..{perm.size - 1}")
  return perm
