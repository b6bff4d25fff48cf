"""File-format readers, no dataset search: IDX files, restricted pickles, CIFAR pickles.

Every reader names the file it was reading in its errors: ``ValueError`` whose
message starts with the path and says what is wrong (truncated, bad magic number,
wrong shape, ...), or ``pickle.UnpicklingError`` for pickle content it refuses.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR_PYTHON_LAYOUT",
    "IDX_FILES",
    "read_cifar_python",
    "read_idx",
    "restricted_unpickle",
    "short_error",
]


def short_error(exc: BaseException) -> str:
  """``"Type: message"`` on one line, at most about 120 characters of message."""
  msg = " ".join(str(exc).split())
  if len(msg) > 120:
    msg = msg[:117] + "..."
  return f"{type(exc).__name__}: {msg}"


# --------------------------------------------------------------------------
# IDX files.
# --------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
"""The four IDX files of MNIST and Fashion-MNIST (array key -> file name)."""


def read_idx(path) -> np.ndarray:
  """Read an IDX file (gzip-compressed or raw) into a numpy array.

  The header is two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B
  int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
  then one big-endian uint32 per dimension. Raises ``ValueError`` (naming the
  file) on corrupt or truncated gzip data, a bad magic number, a truncated
  header or payload, or trailing bytes.
  """
  path = Path(path)
  raw = path.read_bytes()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
      raise ValueError(
          f"{path}: truncated or corrupt gzip data ({short_error(exc)})"
      ) from None
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(
        f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})"
    )
  dtype = _IDX_DTYPES[raw[2]]
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: truncated IDX file (header has {len(raw)} of {header} bytes)")
  shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  payload = len(raw) - header
  if payload != expected:
    what = "truncated IDX file: payload" if payload < expected else "IDX payload"
    raise ValueError(
        f"{path}: {what} has {payload} bytes, expected {expected} for shape {shape}"
    )
  arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
  return arr.astype(dtype.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------
# Restricted pickles.
# --------------------------------------------------------------------------

# Globals a pickle of plain containers and numpy arrays may reference.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
  def find_class(self, module, name):
    if (module, name) in _SAFE_GLOBALS:
      if module.startswith("numpy.core") and hasattr(np, "_core"):
        module = "numpy._core" + module[len("numpy.core"):]  # NumPy 1 pickles
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
        f"refusing to unpickle {module}.{name} (only containers and numpy arrays)"
    )

  def persistent_load(self, pid):
    raise pickle.UnpicklingError(
        "pickle references external storage (e.g. torch tensors); convert it to "
        ".npz with torch first"
    )


def restricted_unpickle(file, *, encoding: str = "ASCII"):
  """Unpickle ``file`` (a binary file object) allowing only plain Python
  containers, strings, numbers and numpy arrays (no arbitrary code)."""
  return _RestrictedUnpickler(file, encoding=encoding).load()


# --------------------------------------------------------------------------
# CIFAR "python version" pickles.
# --------------------------------------------------------------------------

CIFAR_PYTHON_LAYOUT = {
    "cifar10": dict(
        subdir="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        label_key="labels",
    ),
    "cifar100": dict(
        subdir="cifar-100-python", train=("train",), test=("test",), label_key="fine_labels"
    ),
}
"""Per CIFAR dataset: the archive's directory name, its train/test files, the label key."""


def _read_cifar_batch(path: Path, keys: tuple[str, ...]) -> dict:
  try:
    with open(path, "rb") as f:
      batch = restricted_unpickle(f, encoding="bytes")
  except pickle.UnpicklingError as exc:
    raise pickle.UnpicklingError(f"{path}: {exc}") from None
  except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
    raise ValueError(f"{path}: truncated or corrupt pickle ({short_error(exc)})") from None
  if not isinstance(batch, dict):
    raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
  batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
  missing = [k for k in keys if k not in batch]
  if missing:
    raise ValueError(f"{path}: no {', '.join(missing)} entry (not a CIFAR batch file?)")
  return batch


def read_cifar_python(directory, name: str = "cifar10") -> dict[str, np.ndarray]:
  """Read the CIFAR "python version" pickles in ``directory``.

  ``name``: ``cifar10`` (``data_batch_1..5``, ``test_batch``) or ``cifar100``
  (``train``, ``test``). Returns ``train_images``/``test_images`` (uint8
  NHWC) and ``train_labels``/``test_labels`` (int32), plus
  ``train_coarse_labels``/``test_coarse_labels`` for CIFAR-100, in file order
  (the order torchvision's ``CIFAR10``/``CIFAR100`` datasets use). The
  pickles are read with :func:`restricted_unpickle`.
  """
  if name not in CIFAR_PYTHON_LAYOUT:
    raise ValueError(
        f"name must be one of {', '.join(CIFAR_PYTHON_LAYOUT)}, got {name!r}"
    )
  spec = CIFAR_PYTHON_LAYOUT[name]
  keys = ("data", spec["label_key"]) + (("coarse_labels",) if name == "cifar100" else ())
  directory = Path(directory)
  out = {}
  for split in ("train", "test"):
    data, labels, coarse = [], [], []
    for fname in spec[split]:
      batch = _read_cifar_batch(directory / fname, keys)
      raw = np.asarray(batch["data"], dtype=np.uint8)
      if raw.ndim != 2 or raw.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{directory / fname}: data has shape {raw.shape}, expected (N, 3072)"
        )
      batch_labels = np.asarray(batch[spec["label_key"]], dtype=np.int32)
      if batch_labels.shape != (raw.shape[0],):
        raise ValueError(
            f"{directory / fname}: {raw.shape[0]} images but labels of shape "
            f"{batch_labels.shape}"
        )
      data.append(raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
      labels.append(batch_labels)
      if name == "cifar100":
        coarse.append(np.asarray(batch["coarse_labels"], dtype=np.int32))
    out[f"{split}_images"] = np.ascontiguousarray(np.concatenate(data))
    out[f"{split}_labels"] = np.concatenate(labels)
    if coarse:
      out[f"{split}_coarse_labels"] = np.concatenate(coarse)
  return out
