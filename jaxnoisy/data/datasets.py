"""The dataset loader: :func:`load_dataset` and the in-memory :class:`Dataset`.

One loader for ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``,
``cifar10_n`` and ``cifar100_n``. Each dataset's sources are listed, in the
order they are tried, in one table, :data:`_SOURCES`:

(a) a prepared TFDS dataset (``tfds.data_source``; array_record format, read
    without TensorFlow; :mod:`jaxnoisy.data.tfds_io`);
(b) local files in ``data_dir``, ``$JAXNOISY_DATA`` or a system directory
    (:data:`SYSTEM_DATA_DIRS`), each directory ``D`` searched as ``D/<name>``
    and then ``D`` itself (file formats: :mod:`jaxnoisy.data.readers`):

    * MNIST / Fashion-MNIST: the four IDX ``.gz`` files (:data:`IDX_FILES`);
      Fashion-MNIST also in Debian's ``/usr/share/datasets/fashion-mnist/``
      (package ``dataset-fashion-mnist``; Debian packages no MNIST);
    * CIFAR-10 / CIFAR-100: the "python version" pickles, i.e. the directory
      ``cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``) or
      ``cifar-100-python`` (``train``, ``test``), or those files directly;
    * CIFAR-10N / CIFAR-100N: the published human-label file next to the
      CIFAR data (found by this loader, read and aligned by
      :mod:`jaxnoisy.data.cifar_n`);

(c) TFDS preparation (``download_and_prepare``), only when TensorFlow is
    importable, the network is reachable and ``try_prepare`` is set.

Files found through ``data_dir`` or ``$JAXNOISY_DATA`` are the user's choice:
if they are damaged (truncated, corrupt) or incomplete, loading stops with a
one-line error naming the file instead of falling through to other sources.

Note: TFDS shuffles examples when it prepares a dataset, so the example order
(and therefore index-based splits) differs between a TFDS source and local
files. ``Dataset.source`` records where the data came from.

Per-dataset constants (image shape, classes, normalisation, augmentation
default, TFDS name) live in one place, :data:`jaxnoisy.dataset_info.DATASET_INFO`.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from jaxnoisy.data import arrayrecord as _arrayrecord
from jaxnoisy.data import cifar_n as _cifar_n
from jaxnoisy.data import stream as _stream
from jaxnoisy.data import tfds_io as _tfds_io
from jaxnoisy.data.readers import (CIFAR_PYTHON_LAYOUT, IDX_FILES, read_cifar_python,
                                   read_idx, short_error)
from jaxnoisy.dataset_info import (CIFAR_N_BASE, DATASET_INFO, REAL_NOISE_DATASETS,
                                   REAL_NOISE_LABEL_SETS, DatasetInfo)

__all__ = [
    "DataCorruptError",
    "DataNotFoundError",
    "Dataset",
    "SYSTEM_DATA_DIRS",
    "load_cifar10",
    "load_cifar100",
    "load_cifar_n",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
]


class DataNotFoundError(FileNotFoundError):
  """Raised when no source of a dataset could be found or prepared."""


class DataCorruptError(ValueError):
  """Raised when a dataset file the user pointed at (``data_dir``, ``$JAXNOISY_DATA``)
  is damaged; the message names the file and what is wrong with it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train/test image-classification dataset held in memory.

  Images are uint8 ``(N, H, W, C)``; labels int32 ``(N,)``. ``mean``/``std``
  are per-channel, in [0, 1] pixel units. ``source`` says where the arrays
  were read from (e.g. ``"idx:/usr/share/datasets/fashion-mnist"``).

  Optional fields: ``train_coarse_labels``/``test_coarse_labels`` (int32,
  CIFAR-100's super-classes); ``noisy_label_sets`` (CIFAR-N, Clothing1M: a dict from
  the noise-spec key, e.g. ``"worse"`` or ``"noisy"``, to an int32 array of
  human labels aligned with ``train_images``; with them ``train_labels`` may be −1
  where the true label is unknown); ``clean_images``/``clean_labels`` (a clean
  training set the benchmark supplies, e.g. Clothing1M's ``clean_val``: the methods'
  clean subset is drawn from it instead of from the training set).
  """

  name: str
  train_images: np.ndarray = dataclasses.field(repr=False)
  train_labels: np.ndarray = dataclasses.field(repr=False)
  test_images: np.ndarray = dataclasses.field(repr=False)
  test_labels: np.ndarray = dataclasses.field(repr=False)
  num_classes: int
  class_names: tuple[str, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  source: str = ""
  train_coarse_labels: np.ndarray | None = dataclasses.field(default=None, repr=False)
  test_coarse_labels: np.ndarray | None = dataclasses.field(default=None, repr=False)
  noisy_label_sets: dict[str, np.ndarray] | None = dataclasses.field(
      default=None, repr=False
  )
  clean_images: np.ndarray | None = dataclasses.field(default=None, repr=False)
  clean_labels: np.ndarray | None = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    if len(self.class_names) != self.num_classes:
      raise ValueError(
          f"class_names must have num_classes={self.num_classes} entries, "
          f"got {len(self.class_names)}"
      )
    for split in ("train", "test"):
      images = getattr(self, f"{split}_images")
      labels = getattr(self, f"{split}_labels")
      if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"{split}_images must be uint8 (N, H, W, C), got {images.dtype} "
            f"{images.shape}"
        )
      if split == "train" and self.noisy_label_sets is not None:  # −1: unknown
        labels = np.where(labels == -1, np.int32(0), labels)
      _check_label_array(f"{split}_labels", labels, images.shape[0], self.num_classes)
      coarse = getattr(self, f"{split}_coarse_labels")
      if coarse is not None:
        _check_label_array(f"{split}_coarse_labels", coarse, images.shape[0], None)
    if self.noisy_label_sets is not None:
      if not isinstance(self.noisy_label_sets, dict):
        raise ValueError(
            f"noisy_label_sets must be a dict or None, got "
            f"{type(self.noisy_label_sets).__name__}"
        )
      for key, labels in self.noisy_label_sets.items():
        _check_label_array(
            f"noisy_label_sets[{key!r}]", labels, self.num_train, self.num_classes
        )
    if (self.clean_images is None) != (self.clean_labels is None):
      raise ValueError("clean_images and clean_labels must be given together")
    if self.clean_images is not None:
      _check_label_array("clean_labels", self.clean_labels, self.clean_images.shape[0],
                         self.num_classes)

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.train_images.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.train_images.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.test_images.shape[0])

  @property
  def info(self) -> DatasetInfo | None:
    """This dataset's :data:`DATASET_INFO` entry (None for an unknown name)."""
    return DATASET_INFO.get(self.name)


def _check_label_array(name: str, labels, n: int, num_classes: int | None) -> None:
  if not isinstance(labels, np.ndarray) or labels.shape != (n,) or labels.dtype != np.int32:
    raise ValueError(
        f"{name} must be int32 ({n},), got {getattr(labels, 'dtype', type(labels))} "
        f"{getattr(labels, 'shape', '')}"
    )
  if labels.size and (labels.min() < 0 or (num_classes and labels.max() >= num_classes)):
    hi = f"[0, {num_classes})" if num_classes else ">= 0"
    raise ValueError(
        f"{name} must be in {hi}, got values in [{labels.min()}, {labels.max()}]"
    )



# --------------------------------------------------------------------------
# Where to look.
# --------------------------------------------------------------------------

# System directories searched for local files (after data_dir and $JAXNOISY_DATA).
SYSTEM_DATA_DIRS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}

_TFDS_CHUNK = 4096  # records read from a TFDS data source at a time

_TITLES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "cifar10_n": "CIFAR-10N",
    "cifar100_n": "CIFAR-100N",
}

# CIFAR-N dataset -> {spec key: published label name}.
_LABEL_SETS = {REAL_NOISE_DATASETS[k]: v for k, v in REAL_NOISE_LABEL_SETS.items()}


class _Request(NamedTuple):
  """The arguments of one load, handed to every source."""

  data_dir: object
  tfds_data_dir: object
  try_prepare: bool
  label_file: object = None


class _Dir(NamedTuple):
  """A directory to search and where it came from."""

  path: Path
  origin: str  # "data_dir", "$JAXNOISY_DATA" or "system"

  @property
  def chosen(self) -> bool:
    """Whether the user pointed at it (then damaged files are an error)."""
    return self.origin != "system"


def _search_dirs(name: str, data_dir) -> list[_Dir]:
  """``D/<name>`` then ``D`` for D in data_dir, $JAXNOISY_DATA, system dirs."""
  roots = []
  if data_dir is not None:
    roots.append(_Dir(Path(data_dir), "data_dir"))
  env = os.environ.get("JAXNOISY_DATA")
  if env:
    roots.append(_Dir(Path(env), "$JAXNOISY_DATA"))
  roots.extend(_Dir(Path(d), "system") for d in SYSTEM_DATA_DIRS.get(name, ()))
  dirs: list[_Dir] = []
  for root in roots:
    for d in (root.path / name, root.path):
      if all(d != o.path for o in dirs):
        dirs.append(_Dir(d, root.origin))
  return dirs


def _one_line(exc: BaseException) -> str:
  """A reader's error in full (it starts with the file's path), on one line."""
  return " ".join(str(exc).split())


def _damaged(name: str, where: _Dir, exc: BaseException) -> DataCorruptError:
  return DataCorruptError(
      f"{_TITLES[name]} file is damaged: {_one_line(exc)} (replace it; the files in "
      f"{where.origin} are used as given, so no other source was tried)"
  )


def _incomplete(name: str, where: _Dir, missing: list[str]) -> DataNotFoundError:
  return DataNotFoundError(
      f"{_TITLES[name]} files incomplete: {where.path} (from {where.origin}) lacks "
      f"{', '.join(missing)}; add them (no other source was tried)"
  )


def _present(directory: Path, files) -> tuple[list[str], list[str]]:
  have = [f for f in files if (directory / f).is_file()]
  return have, [f for f in files if f not in have]


# --------------------------------------------------------------------------
# Sources. Each is ``source(name, request, tried) -> (arrays, description) | None``
# and appends what it tried to ``tried`` when it finds nothing.
# --------------------------------------------------------------------------


def _load_tfds(name: str, tfds_data_dir) -> dict:
  return _tfds_io.load_tfds(name, tfds_data_dir, chunk_size=_TFDS_CHUNK)


def _prepare_tfds(name: str, tfds_data_dir) -> None:
  _tfds_io.prepare_tfds(name, tfds_data_dir)


def _tfds_source(name: str, req: _Request, tried: list):
  try:
    arrays = _load_tfds(name, req.tfds_data_dir)
  except Exception as exc:  # TFDS raises KeyError/NotImplementedError/... when absent
    tried.append(
        f"TFDS data_source {DATASET_INFO[name].tfds_name}: no prepared array_record copy "
        f"in data_dir={req.tfds_data_dir or 'default'} ({short_error(exc)})"
    )
    return None
  return arrays, f"tfds:{req.tfds_data_dir or 'default data_dir'}"


def _tfds_prepare_source(name: str, req: _Request, tried: list):
  tfds_name = DATASET_INFO[name].tfds_name
  if not req.try_prepare:
    tried.append(f"TFDS preparation of {tfds_name} (try_prepare=False)")
    return None
  try:
    _prepare_tfds(name, req.tfds_data_dir)
    arrays = _load_tfds(name, req.tfds_data_dir)
  except Exception as exc:
    tried.append(f"TFDS preparation of {tfds_name} ({short_error(exc)})")
    return None
  return arrays, f"tfds-prepared:{req.tfds_data_dir or 'default data_dir'}"


class _WrongDataset(ValueError):
  """Readable files whose content belongs to another dataset."""


def _check_mean(arrays: dict, info: DatasetInfo) -> None:
  """Guard against e.g. Fashion-MNIST files read as MNIST (same file names).

  Only full-size training sets (>= 10000 images) are checked.
  """
  images = arrays["train_images"]
  if images.shape[0] < 10000:
    return
  mean = float(images[:10000].mean()) / 255.0
  expected = float(np.mean(info.mean))
  if abs(mean - expected) > 0.03:
    raise _WrongDataset(
        f"mean pixel {mean:.3f}, not {expected:.3f} as in {info.name}: another "
        f"dataset's files?"
    )


def _load_idx_dir(directory: Path, info: DatasetInfo) -> dict[str, np.ndarray]:
  arrays = {k: read_idx(directory / f) for k, f in IDX_FILES.items()}
  out = {}
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.ndim == 3:
      images = images[..., None]
    if images.shape[1:] != info.image_shape or images.dtype != np.uint8:
      raise ValueError(
          f"{directory / IDX_FILES[f'{split}_images']}: images have shape "
          f"{images.shape[1:]} {images.dtype}, expected {info.image_shape} uint8"
      )
    if labels.shape != (images.shape[0],):
      raise ValueError(
          f"{directory / IDX_FILES[f'{split}_labels']}: labels of shape {labels.shape} "
          f"for {images.shape[0]} {split} images"
      )
    out[f"{split}_images"] = images
    out[f"{split}_labels"] = labels.astype(np.int32)
  _check_mean(out, info)
  return out


def _idx_source(name: str, req: _Request, tried: list):
  dirs = _search_dirs(name, req.data_dir)
  for d in dirs:
    have, missing = _present(d.path, IDX_FILES.values())
    if missing:
      if have and d.chosen:
        raise _incomplete(name, d, missing)
      continue
    try:
      return _load_idx_dir(d.path, DATASET_INFO[name]), f"idx:{d.path}"
    except _WrongDataset as exc:
      tried.append(f"IDX in {d.path} ({exc})")
      return None
    except (OSError, ValueError, EOFError) as exc:
      if d.chosen:
        raise _damaged(name, d, exc) from None
      tried.append(f"IDX in {d.path}: {_one_line(exc)}")
      return None
  tried.append("IDX files in " + (", ".join(str(d.path) for d in dirs) or "no directory"))
  return None


def _cifar_python_dirs(name: str, data_dir) -> list[_Dir]:
  subdir = CIFAR_PYTHON_LAYOUT[name]["subdir"]
  out: list[_Dir] = []
  for d in _search_dirs(name, data_dir):
    for c in (d.path / subdir, d.path):
      if all(c != o.path for o in out):
        out.append(_Dir(c, d.origin))
  return out


def _find_cifar_python_dir(name: str, data_dir) -> _Dir | None:
  layout = CIFAR_PYTHON_LAYOUT[name]
  for c in _cifar_python_dirs(name, data_dir):
    if not _present(c.path, layout["train"] + layout["test"])[1]:
      return c
  return None


def _cifar_python_source(name: str, req: _Request, tried: list):
  layout = CIFAR_PYTHON_LAYOUT[name]
  candidates = _cifar_python_dirs(name, req.data_dir)
  for c in candidates:
    have, missing = _present(c.path, layout["train"] + layout["test"])
    if missing:
      # Only a directory named like the archive's counts as an incomplete copy.
      if have and c.chosen and c.path.name == layout["subdir"]:
        raise _incomplete(name, c, missing)
      continue
    try:
      return read_cifar_python(c.path, name), f"python:{c.path}"
    except (OSError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as exc:
      if c.chosen:
        raise _damaged(name, c, exc) from None
      tried.append(f"CIFAR pickles in {c.path}: {_one_line(exc)}")
      return None
  tried.append(
      f"{layout['subdir']} pickles in "
      + (", ".join(str(c.path) for c in candidates) or "no directory")
  )
  return None


def _find_label_file(name: str, data_dir) -> tuple[Path | None, list[Path]]:
  dirs: list[Path] = []
  for d in _search_dirs(name, data_dir) + _search_dirs(CIFAR_N_BASE[name], data_dir):
    if d.path not in dirs:
      dirs.append(d.path)
  for d in dirs:
    for fname in _cifar_n.LABEL_FILE_NAMES[name]:
      if (d / fname).is_file():
        return d / fname, dirs
  return None, dirs


def _alignment(name: str, arrays: dict, source: str, data_dir) -> tuple[np.ndarray, str]:
  """Permutation taking the label file's (CIFAR file) order to ``arrays``' order."""
  base = CIFAR_N_BASE[name]
  n = arrays["train_labels"].size
  if source.startswith("python:"):
    return np.arange(n), "file order"
  found = _find_cifar_python_dir(base, data_dir)
  if found is not None:
    ref = read_cifar_python(found.path, base)
    perm = _cifar_n.align_to(ref["train_images"], arrays["train_images"],
                             reference_keys=ref["train_labels"],
                             target_keys=arrays["train_labels"])
    return perm, f"image hashes vs {found.path}"
  if "_train_ids" in arrays:
    return _cifar_n.order_from_tfds_ids(arrays["_train_ids"]), "TFDS ids"
  raise ValueError(
      f"cannot align: put {CIFAR_PYTHON_LAYOUT[base]['subdir']} in data_dir or "
      f"$JAXNOISY_DATA"
  )


def _cifar_n_source(name: str, req: _Request, tried: list):
  """The published human-label file, aligned to the base CIFAR images."""
  base = CIFAR_N_BASE[name]
  if req.label_file is not None:
    path, dirs = Path(req.label_file), []
  else:
    path, dirs = _find_label_file(name, req.data_dir)
  if path is None:
    tried.append(
        f"{' / '.join(_cifar_n.LABEL_FILE_NAMES[name][:2])} in "
        + (", ".join(str(d) for d in dirs) or "no directory")
    )
    return None
  try:
    published = _cifar_n.read_cifar_n_labels(path)
  except (OSError, ValueError, EOFError) as exc:
    tried.append(f"label file {path} ({short_error(exc)})")
    return None
  found = _find_arrays(base, req, tried)
  if found is None:
    tried.append(f"{base} images for {path.name}: none found")
    return None
  arrays, base_source = dict(found[0]), found[1]
  wanted = _LABEL_SETS[name]
  try:
    n = arrays["train_labels"].size
    missing = [p for p in wanted.values() if p not in published]
    if missing:
      raise ValueError(f"{path.name} lacks {', '.join(missing)}")
    size = published[next(iter(wanted.values()))].size
    if size != n:
      raise ValueError(f"{path.name} has {size} labels, the {base} training set {n} images")
    perm, how = _alignment(name, arrays, base_source, req.data_dir)
    if "clean_label" in published and not np.array_equal(
        published["clean_label"][perm], arrays["train_labels"]
    ):
      bad = int(np.sum(published["clean_label"][perm] != arrays["train_labels"]))
      raise ValueError(
          f"{path.name}: clean_label disagrees with the {base} labels on "
          f"{bad} of {n} images after aligning by {how}"
      )
  except (OSError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as exc:
    tried.append(f"aligning {path} ({short_error(exc)})")
    return None
  arrays["noisy_label_sets"] = {k: published[p][perm] for k, p in wanted.items()}
  arrays.pop("_train_ids", None)
  return arrays, f"{base_source}+labels:{path}"


_Source = Callable[[str, _Request, list], "tuple[dict, str] | None"]

_SOURCES: dict[str, tuple[_Source, ...]] = {
    "mnist": (_tfds_source, _idx_source, _tfds_prepare_source),
    "fashion_mnist": (_tfds_source, _idx_source, _tfds_prepare_source),
    "cifar10": (_tfds_source, _cifar_python_source, _tfds_prepare_source),
    "cifar100": (_tfds_source, _cifar_python_source, _tfds_prepare_source),
    "cifar10_n": (_tfds_source, _cifar_n_source, _tfds_prepare_source),
    "cifar100_n": (_tfds_source, _cifar_n_source, _tfds_prepare_source),
}
"""Each dataset's sources, in the order they are tried."""

_TFDS_HINT = "pip install tensorflow-cpu and load with try_prepare=True to prepare it with TFDS"

_HELP = {
    "mnist": (
        "MNIST not found. Options: set JAXNOISY_DATA (or pass data_dir) to a directory "
        "with " + ", ".join(IDX_FILES.values()) + " (or a mnist/ subdirectory with "
        "them); or " + _TFDS_HINT
    ),
    "fashion_mnist": (
        "Fashion-MNIST not found. Options: install the Debian package "
        "dataset-fashion-mnist; or set JAXNOISY_DATA to a directory with "
        + ", ".join(IDX_FILES.values()) + "; or " + _TFDS_HINT
    ),
    "cifar10": (
        "CIFAR-10 not found. Options: set JAXNOISY_DATA (or pass data_dir) to a "
        "directory holding cifar-10-batches-py (from cifar-10-python.tar.gz); or "
        + _TFDS_HINT
    ),
    "cifar100": (
        "CIFAR-100 not found. Options: set JAXNOISY_DATA (or pass data_dir) to a "
        "directory holding cifar-100-python (from cifar-100-python.tar.gz); or "
        + _TFDS_HINT
    ),
    **{
        name: (
            f"{_TITLES[name]} not found. Options: prepare the TFDS builder {name} (needs "
            f"tensorflow and its manual files); or put {_cifar_n.LABEL_FILE_NAMES[name][1]} "
            f"(or the .npz conversion) from github.com/UCSC-REAL/cifar-10-100n in data_dir "
            f"or JAXNOISY_DATA next to {CIFAR_PYTHON_LAYOUT[base]['subdir']}, or pass "
            f"label_file="
        )
        for name, base in CIFAR_N_BASE.items()
    },
}


def _find_arrays(name: str, req: _Request, tried: list):
  """The first of ``_SOURCES[name]`` that finds the data: (arrays, source) or None."""
  for source in _SOURCES[name]:
    found = source(name, req, tried)
    if found is not None:
      return found
  return None


# --------------------------------------------------------------------------
# Loaders.
# --------------------------------------------------------------------------


def _make_dataset(name: str, arrays: dict, source: str) -> Dataset:
  info = DATASET_INFO[name]
  public = {k: v for k, v in arrays.items() if not k.startswith("_")}
  return Dataset(
      name=name,
      num_classes=info.num_classes,
      class_names=info.class_names,
      mean=info.mean,
      std=info.std,
      source=source,
      **public,
  )


def _load(name: str, data_dir, tfds_data_dir, try_prepare: bool, label_file=None) -> Dataset:
  tried: list[str] = []
  req = _Request(data_dir, tfds_data_dir, try_prepare, label_file)
  found = _find_arrays(name, req, tried)
  if found is None:
    raise DataNotFoundError(_HELP[name] + ". Tried: " + "; ".join(tried))
  return _make_dataset(name, *found)


def load_fashion_mnist(data_dir=None, *, tfds_data_dir=None, try_prepare: bool = True) -> Dataset:
  """Load Fashion-MNIST (60000 train / 10000 test, uint8 28x28x1, int32 labels).

  Sources, in order: (a) a prepared TFDS dataset in ``tfds_data_dir`` (TFDS's
  default data dir if None), read with ``tfds.data_source`` (no TensorFlow
  needed); (b) the IDX ``.gz`` files in ``data_dir``, ``$JAXNOISY_DATA`` or
  ``/usr/share/datasets/fashion-mnist`` (each also as ``D/fashion_mnist``);
  (c) if ``try_prepare`` and TensorFlow is importable, ``tfds`` preparation
  (array_record) followed by (a). Raises :class:`DataNotFoundError` when all
  fail, :class:`DataCorruptError` when the files in ``data_dir`` or
  ``$JAXNOISY_DATA`` are damaged.
  """
  return _load("fashion_mnist", data_dir, tfds_data_dir, try_prepare)


def load_mnist(data_dir=None, *, tfds_data_dir=None, try_prepare: bool = True) -> Dataset:
  """Load MNIST (60000 / 10000, uint8 28x28x1): TFDS ``mnist``, else the IDX
  files in ``data_dir`` or ``$JAXNOISY_DATA`` (``D/mnist`` first, then ``D``),
  else TFDS preparation. Same sources and errors as :func:`load_fashion_mnist`.
  """
  return _load("mnist", data_dir, tfds_data_dir, try_prepare)


def load_cifar10(data_dir=None, *, tfds_data_dir=None, try_prepare: bool = True) -> Dataset:
  """Load CIFAR-10 (50000 / 10000, uint8 32x32x3): TFDS ``cifar10``, else the
  python pickles (``cifar-10-batches-py``) in ``data_dir`` or
  ``$JAXNOISY_DATA``, else TFDS preparation."""
  return _load("cifar10", data_dir, tfds_data_dir, try_prepare)


def load_cifar100(data_dir=None, *, tfds_data_dir=None, try_prepare: bool = True) -> Dataset:
  """Load CIFAR-100 (50000 / 10000, uint8 32x32x3, 100 fine classes) with its
  20 coarse labels (``train_coarse_labels``/``test_coarse_labels``): TFDS
  ``cifar100``, else ``cifar-100-python`` in ``data_dir`` or
  ``$JAXNOISY_DATA``, else TFDS preparation."""
  return _load("cifar100", data_dir, tfds_data_dir, try_prepare)


def load_cifar_n(name: str, data_dir=None, *, tfds_data_dir=None, try_prepare: bool = True,
                 label_file=None) -> Dataset:
  """Load ``cifar10_n`` or ``cifar100_n`` (see :mod:`jaxnoisy.data.cifar_n`).

  Sources, in order: TFDS ``cifar10_n`` / ``cifar100_n``; the published
  human-label file (``label_file``, else searched in ``data_dir`` and
  ``$JAXNOISY_DATA``) aligned to the CIFAR images this loader finds; TFDS
  preparation. Returns the CIFAR train/test images and clean labels (plus
  coarse labels for CIFAR-100) with ``noisy_label_sets`` = ``{spec key: int32
  labels}`` aligned with ``train_images``. Raises :class:`DataNotFoundError`
  when no source works.
  """
  if name not in CIFAR_N_BASE:
    raise ValueError(f"name must be cifar10_n or cifar100_n, got {name!r}")
  return _load(name, data_dir, tfds_data_dir, try_prepare, label_file)


def _cifar_n_loader(name: str) -> Callable[..., Dataset]:
  def load(data_dir=None, *, tfds_data_dir=None, try_prepare: bool = True,
           label_file=None) -> Dataset:
    return load_cifar_n(name, data_dir, tfds_data_dir=tfds_data_dir,
                        try_prepare=try_prepare, label_file=label_file)

  load.__name__ = f"load_{name}"
  load.__doc__ = f"Load {name}; see :func:`load_cifar_n`."
  return load


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "cifar10_n": _cifar_n_loader("cifar10_n"),
    "cifar100_n": _cifar_n_loader("cifar100_n"),
}


def _load_clothing1m(data_dir=None, **_) -> Dataset:
  raise DataNotFoundError(
      "clothing1m is read from a prepared directory: run 'jaxnoisy prepare clothing1m "
      "ROOT --out DIR --image-size 256', then pass --data-dir DIR"
      + (f" (got {data_dir}, which is not one)" if data_dir else ""))


_LOADERS["clothing1m"] = _load_clothing1m

# A prepared dataset's roles -> the split names that fill them, in order of preference
# (Clothing1M's noisy_train / clean_val / clean_test).
PREPARED_SPLITS = {"train": ("train", "noisy_train"), "test": ("test", "clean_test"),
                   "clean": ("clean_val",)}


def load_prepared(name: str, path) -> Dataset:
  """Dataset ``name`` as prepared in ArrayRecord files under ``path`` (``jaxnoisy
  prepare``), its images lazy (:class:`jaxnoisy.data.stream.RecordImages`, read when
  used). Splits by role (:data:`PREPARED_SPLITS`): the training set (its clean labels,
  −1 where unknown, and its noisy labels as the label set ``noisy`` when every example
  has one — Clothing1M's web labels), the test set (clean labels) and, when present, a
  given clean set (Clothing1M's ``clean_val``, as in the FBR authors' loader)."""
  prepared = _arrayrecord.open_prepared(path)
  if prepared.info["name"] != name:
    raise ValueError(f"data_dir {path} holds dataset {prepared.info['name']!r}, not {name!r}")
  found = {role: next((s for s in names if s in prepared.info["splits"]), None)
           for role, names in PREPARED_SPLITS.items()}
  for role in ("train", "test"):
    if found[role] is None:
      raise ValueError(f"data_dir {path} must hold a {role} split (one of "
                       f"{', '.join(PREPARED_SPLITS[role])}), has "
                       f"{', '.join(prepared.info['splits'])}")
  noisy, true = prepared.labels(found["train"])
  arrays = dict(train_images=_stream.RecordImages(prepared, found["train"]),
                train_labels=true)
  if (noisy >= 0).all():
    arrays["noisy_label_sets"] = {"noisy": noisy}
  elif (true < 0).any():
    raise ValueError(f"split {found['train']!r} of {path}: {int((true < 0).sum())} examples "
                     "have no clean label and some no noisy label; training needs every "
                     "clean label (synthetic noise) or every noisy label (the given ones)")
  for role, prefix in (("test", "test"), ("clean", "clean")):
    if found[role] is None:
      continue
    labels = prepared.labels(found[role])[1]
    if (labels < 0).any():
      raise ValueError(f"split {found[role]!r} of {path}: {int((labels < 0).sum())} "
                       "examples have no clean label")
    arrays[f"{prefix}_images"] = _stream.RecordImages(prepared, found[role])
    arrays[f"{prefix}_labels"] = labels
  return _make_dataset(name, arrays, f"arrayrecord:{path}")


def load_dataset(name: str, **kwargs) -> Dataset:
  """Load a dataset by name; ``kwargs`` (``data_dir``, ``tfds_data_dir``,
  ``try_prepare``, for CIFAR-N ``label_file``) go to its loader. Valid names:
  ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``cifar10_n``,
  ``cifar100_n``. A ``data_dir`` prepared as ArrayRecord (``jaxnoisy prepare``)
  is read by :func:`load_prepared`."""
  if name not in _LOADERS:
    raise ValueError(
        f"unknown dataset {name!r}; valid: {', '.join(sorted(_LOADERS))}"
    )
  data_dir = kwargs.get("data_dir")
  if data_dir is not None and _arrayrecord.is_prepared(data_dir):
    return load_prepared(name, data_dir)
  return _LOADERS[name](**kwargs)
