"""Image-classification datasets as in-memory numpy arrays.

One loader interface, :func:`load_dataset`, for ``mnist``, ``fashion_mnist``,
``cifar10``, ``cifar100``, ``cifar10_n`` and ``cifar100_n``. Each dataset is
looked for, in order, in:

(a) a prepared TFDS dataset (``tfds.data_source``; array_record format, read
    without TensorFlow);
(b) local files in ``data_dir``, ``$JAXNOISY_DATA`` or a system directory
    (:data:`SYSTEM_DATA_DIRS`), each directory ``D`` searched as ``D/<name>``
    and then ``D`` itself:

    * MNIST / Fashion-MNIST: the four IDX ``.gz`` files (:data:`IDX_FILES`);
      Fashion-MNIST also in Debian's ``/usr/share/datasets/fashion-mnist/``
      (package ``dataset-fashion-mnist``; Debian packages no MNIST);
    * CIFAR-10 / CIFAR-100: the "python version" pickles, i.e. the directory
      ``cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``) or
      ``cifar-100-python`` (``train``, ``test``), or those files directly;
    * CIFAR-10N / CIFAR-100N: the published human-label file next to the
      CIFAR data, see :mod:`jaxnoisy.data.cifar_n`;

(c) TFDS preparation (``download_and_prepare``), only when TensorFlow is
    importable, the network is reachable and ``try_prepare`` is set.

Note: TFDS shuffles examples when it prepares a dataset, so the example order
(and therefore index-based splits) differs between a TFDS source and local
files. ``Dataset.source`` records where the data came from.

Per-dataset constants (image shape, classes, normalisation, augmentation
default, TFDS name) live in one place, :data:`DATASET_INFO`.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "CIFAR100_COARSE_CLASS_NAMES",
    "CIFAR100_FINE_TO_COARSE",
    "DATASET_INFO",
    "DataNotFoundError",
    "Dataset",
    "DatasetInfo",
    "IDX_FILES",
    "SYSTEM_DATA_DIRS",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "read_cifar_python",
    "read_idx",
    "restricted_unpickle",
]


class DataNotFoundError(FileNotFoundError):
  """Raised when no source of a dataset could be found or prepared."""


class DatasetInfo(NamedTuple):
  """Per-dataset constants (mean/std per channel, in [0, 1] pixel units).

  ``augment``: whether random crop + horizontal flip is the default training
  augmentation (:func:`jaxnoisy.data.augment.dataset_augment`). ``tfds_name``:
  the TFDS builder. ``coarse_class_names`` / ``fine_to_coarse``: CIFAR-100's
  20 super-classes and each fine class's super-class (empty otherwise).
  """

  name: str
  image_shape: tuple[int, int, int]
  num_classes: int
  class_names: tuple[str, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: bool = False
  tfds_name: str = ""
  coarse_class_names: tuple[str, ...] = ()
  fine_to_coarse: tuple[int, ...] = ()


_MNIST_CLASSES = tuple(str(d) for d in range(10))

_FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# CIFAR-100 fine classes in label order (alphabetical). The installed TFDS
# package does not ship them (its builder reads them from the downloaded
# archive), so they are embedded here.
_CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
    bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock
    cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish
    forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
    lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange
    orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
    possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank
    telephone television tiger tractor train trout tulip turtle wardrobe whale
    willow_tree wolf woman worm""".split()
)

CIFAR100_COARSE_CLASS_NAMES: tuple[str, ...] = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)

# The standard CIFAR-100 super-class of each fine class (5 fine classes each).
CIFAR100_FINE_TO_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip

_CIFAR10_STATS = dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = dict(
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    coarse_class_names=CIFAR100_COARSE_CLASS_NAMES,
    fine_to_coarse=CIFAR100_FINE_TO_COARSE,
)

DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", (28, 28, 1), 10, _MNIST_CLASSES, (0.1307,), (0.3081,),
        augment=False, tfds_name="mnist",
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", (28, 28, 1), 10, _FASHION_MNIST_CLASSES, (0.2860,), (0.3530,),
        augment=False, tfds_name="fashion_mnist",
    ),
    "cifar10": DatasetInfo(
        "cifar10", (32, 32, 3), 10, _CIFAR10_CLASSES, **_CIFAR10_STATS,
        augment=True, tfds_name="cifar10",
    ),
    "cifar100": DatasetInfo(
        "cifar100", (32, 32, 3), 100, _CIFAR100_CLASSES, **_CIFAR100_STATS,
        augment=True, tfds_name="cifar100",
    ),
    "cifar10_n": DatasetInfo(
        "cifar10_n", (32, 32, 3), 10, _CIFAR10_CLASSES, **_CIFAR10_STATS,
        augment=True, tfds_name="cifar10_n",
    ),
    "cifar100_n": DatasetInfo(
        "cifar100_n", (32, 32, 3), 100, _CIFAR100_CLASSES, **_CIFAR100_STATS,
        augment=True, tfds_name="cifar100_n",
    ),
}  # fmt: skip
"""Per-dataset constants, keyed by jaxnoisy dataset name."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train/test image-classification dataset held in memory.

  Images are uint8 ``(N, H, W, C)``; labels int32 ``(N,)``. ``mean``/``std``
  are per-channel, in [0, 1] pixel units. ``source`` says where the arrays
  were read from (e.g. ``"idx:/usr/share/datasets/fashion-mnist"``).

  Optional fields: ``train_coarse_labels``/``test_coarse_labels`` (int32,
  CIFAR-100's super-classes); ``noisy_label_sets`` (CIFAR-N: a dict from the
  noise-spec key, e.g. ``"worse"`` or ``"noisy"``, to an int32 array of
  human labels aligned with ``train_images``).
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

# System directories searched for local files (after data_dir and $JAXNOISY_DATA).
SYSTEM_DATA_DIRS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}


def read_idx(path) -> np.ndarray:
  """Read an IDX file (gzip-compressed or raw) into a numpy array.

  The header is two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B
  int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
  then one big-endian uint32 per dimension. Raises ``ValueError`` on a bad
  magic number or a size mismatch.
  """
  path = Path(path)
  raw = path.read_bytes()
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(
        f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})"
    )
  dtype = _IDX_DTYPES[raw[2]]
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: truncated IDX header")
  shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) - header != expected:
    raise ValueError(
        f"{path}: IDX payload has {len(raw) - header} bytes, expected {expected} "
        f"for shape {shape}"
    )
  arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
  return arr.astype(dtype.newbyteorder("="), copy=True)


def _search_dirs(name: str, data_dir) -> list[Path]:
  """``D/<name>`` then ``D`` for D in data_dir, $JAXNOISY_DATA, system dirs."""
  roots = []
  if data_dir is not None:
    roots.append(Path(data_dir))
  env = os.environ.get("JAXNOISY_DATA")
  if env:
    roots.append(Path(env))
  roots.extend(Path(d) for d in SYSTEM_DATA_DIRS.get(name, ()))
  dirs = []
  for root in roots:
    for d in (root / name, root):
      if d not in dirs:
        dirs.append(d)
  return dirs


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
    raise ValueError(
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
          f"{directory}: {split} images have shape {images.shape[1:]} "
          f"{images.dtype}, expected {info.image_shape} uint8"
      )
    if labels.shape != (images.shape[0],):
      raise ValueError(
          f"{directory}: {images.shape[0]} {split} images but labels of shape "
          f"{labels.shape}"
      )
    out[f"{split}_images"] = images
    out[f"{split}_labels"] = labels.astype(np.int32)
  _check_mean(out, info)
  return out


def _idx_source(name: str, info: DatasetInfo, data_dir, tried: list, **_):
  dirs = _search_dirs(name, data_dir)
  for d in dirs:
    if not all((d / f).is_file() for f in IDX_FILES.values()):
      continue
    try:
      return _load_idx_dir(d, info), f"idx:{d}"
    except (OSError, ValueError, EOFError) as exc:
      tried.append(f"IDX in {d} ({_short(exc)})")
      return None
  tried.append("IDX files in " + (", ".join(str(d) for d in dirs) or "no directory"))
  return None


# --------------------------------------------------------------------------
# CIFAR "python version" pickles.
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


_CIFAR_PY = {
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


def _find_cifar_python_dir(name: str, data_dir) -> tuple[Path | None, list[Path]]:
  spec = _CIFAR_PY[name]
  candidates = []
  for d in _search_dirs(name, data_dir):
    for c in (d / spec["subdir"], d):
      if c not in candidates:
        candidates.append(c)
  for c in candidates:
    if all((c / f).is_file() for f in spec["train"] + spec["test"]):
      return c, candidates
  return None, candidates


def read_cifar_python(directory, name: str = "cifar10") -> dict[str, np.ndarray]:
  """Read the CIFAR "python version" pickles in ``directory``.

  ``name``: ``cifar10`` (``data_batch_1..5``, ``test_batch``) or ``cifar100``
  (``train``, ``test``). Returns ``train_images``/``test_images`` (uint8
  NHWC) and ``train_labels``/``test_labels`` (int32), plus
  ``train_coarse_labels``/``test_coarse_labels`` for CIFAR-100, in file order
  (the order torchvision's ``CIFAR10``/``CIFAR100`` datasets use). The
  pickles are read with :func:`restricted_unpickle`.
  """
  if name not in _CIFAR_PY:
    raise ValueError(f"name must be one of {', '.join(_CIFAR_PY)}, got {name!r}")
  spec = _CIFAR_PY[name]
  directory = Path(directory)
  out = {}
  for split in ("train", "test"):
    data, labels, coarse = [], [], []
    for fname in spec[split]:
      with open(directory / fname, "rb") as f:
        batch = restricted_unpickle(f, encoding="bytes")
      batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
      raw = np.asarray(batch["data"], dtype=np.uint8)
      if raw.ndim != 2 or raw.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{directory / fname}: data has shape {raw.shape}, expected (N, 3072)"
        )
      data.append(raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
      labels.append(np.asarray(batch[spec["label_key"]], dtype=np.int32))
      if name == "cifar100":
        coarse.append(np.asarray(batch["coarse_labels"], dtype=np.int32))
    out[f"{split}_images"] = np.ascontiguousarray(np.concatenate(data))
    out[f"{split}_labels"] = np.concatenate(labels)
    if coarse:
      out[f"{split}_coarse_labels"] = np.concatenate(coarse)
  return out


def _cifar_python_source(name: str, info: DatasetInfo, data_dir, tried: list, **_):
  directory, candidates = _find_cifar_python_dir(name, data_dir)
  if directory is None:
    tried.append(
        f"{_CIFAR_PY[name]['subdir']} pickles in "
        + (", ".join(str(c) for c in candidates) or "no directory")
    )
    return None
  try:
    return read_cifar_python(directory, name), f"python:{directory}"
  except (OSError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as exc:
    tried.append(f"CIFAR pickles in {directory} ({_short(exc)})")
    return None


# --------------------------------------------------------------------------
# TFDS.
# --------------------------------------------------------------------------

_TFDS_CHUNK = 4096

# jaxnoisy array key -> TFDS feature, per split. "noisy:K" keys become
# Dataset.noisy_label_sets[K]; "_train_ids" (TFDS's "train_00042" ids, i.e.
# the index in the original CIFAR files) is kept internally for alignment.
_BASIC = {"images": "image", "labels": "label"}
_TFDS_FEATURES: dict[str, dict[str, dict[str, str]]] = {
    "mnist": {"train": _BASIC, "test": _BASIC},
    "fashion_mnist": {"train": _BASIC, "test": _BASIC},
    "cifar10": {"train": {**_BASIC, "_ids": "id"}, "test": _BASIC},
    "cifar100": {
        "train": {**_BASIC, "coarse_labels": "coarse_label", "_ids": "id"},
        "test": {**_BASIC, "coarse_labels": "coarse_label"},
    },
    "cifar10_n": {
        "train": {
            **_BASIC,
            "noisy:aggre": "aggre_label",
            "noisy:random1": "random_label1",
            "noisy:random2": "random_label2",
            "noisy:random3": "random_label3",
            "noisy:worse": "worse_label",
        },
        "test": _BASIC,
    },
    "cifar100_n": {
        "train": {**_BASIC, "coarse_labels": "coarse_label", "noisy:noisy": "noise_label"},
        "test": {**_BASIC, "coarse_labels": "coarse_label"},
    },
}


def _to_array(values: list, feature: str) -> np.ndarray:
  if feature == "image":
    return np.stack([np.asarray(v, dtype=np.uint8) for v in values])
  if feature == "id":
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values])
  return np.asarray([int(v) for v in values], dtype=np.int32)


def _read_data_source(source, features: dict[str, str] | None = None) -> dict[str, np.ndarray]:
  """Read every record of a TFDS data source into arrays.

  ``features`` maps output keys to TFDS feature names (default: ``images``
  from ``image``, ``labels`` from ``label``).
  """
  features = features or _BASIC
  n = len(source)
  chunks: dict[str, list] = {k: [] for k in features}
  for start in range(0, n, _TFDS_CHUNK):
    records = source.__getitems__(list(range(start, min(start + _TFDS_CHUNK, n))))
    for key, feature in features.items():
      chunks[key].append(_to_array([r[feature] for r in records], feature))
  if n == 0:
    raise ValueError("TFDS data source is empty")
  return {k: np.concatenate(v) for k, v in chunks.items()}


def _load_tfds(name: str, tfds_data_dir) -> dict:
  import tensorflow_datasets as tfds  # lazy: slow import

  info = DATASET_INFO[name]
  # download=False: never prepare here (the default, True, would try to).
  sources = tfds.data_source(
      info.tfds_name, split=["train", "test"], data_dir=tfds_data_dir, download=False
  )
  out: dict = {}
  for split, source in zip(("train", "test"), sources):
    for key, arr in _read_data_source(source, _TFDS_FEATURES[name][split]).items():
      if key.startswith("noisy:"):
        out.setdefault("noisy_label_sets", {})[key[len("noisy:"):]] = arr
      elif key.startswith("_"):
        out[f"_{split}{key}"] = arr  # e.g. "_train_ids"
      else:
        out[f"{split}_{key}"] = arr
  return out


def _prepare_tfds(name: str, tfds_data_dir) -> None:
  import tensorflow  # noqa: F401  (TFDS needs TensorFlow to encode images)
  import tensorflow_datasets as tfds

  builder = tfds.builder(
      DATASET_INFO[name].tfds_name, data_dir=tfds_data_dir, file_format="array_record"
  )
  builder.download_and_prepare()


def _short(exc: BaseException) -> str:
  msg = " ".join(str(exc).split())
  if len(msg) > 120:
    msg = msg[:117] + "..."
  return f"{type(exc).__name__}: {msg}"


# --------------------------------------------------------------------------
# Loaders.
# --------------------------------------------------------------------------

_LOCAL_SOURCES: dict[str, Callable] = {
    "mnist": _idx_source,
    "fashion_mnist": _idx_source,
    "cifar10": _cifar_python_source,
    "cifar100": _cifar_python_source,
}

_HELP = {
    "mnist": (
        "MNIST not found. Options: set JAXNOISY_DATA (or pass data_dir) to a directory "
        "with " + ", ".join(IDX_FILES.values()) + " (or a mnist/ subdirectory with "
        "them); or pip install tensorflow-cpu and load with try_prepare=True to "
        "prepare it with TFDS"
    ),
    "fashion_mnist": (
        "Fashion-MNIST not found. Options: install the Debian package "
        "dataset-fashion-mnist; or set JAXNOISY_DATA to a directory with "
        + ", ".join(IDX_FILES.values())
        + "; or pip install tensorflow-cpu and load with try_prepare=True to "
        "prepare it with TFDS"
    ),
    "cifar10": (
        "CIFAR-10 not found. Options: set JAXNOISY_DATA (or pass data_dir) to a "
        "directory holding cifar-10-batches-py (from cifar-10-python.tar.gz); or pip "
        "install tensorflow-cpu and load with try_prepare=True to prepare it with TFDS"
    ),
    "cifar100": (
        "CIFAR-100 not found. Options: set JAXNOISY_DATA (or pass data_dir) to a "
        "directory holding cifar-100-python (from cifar-100-python.tar.gz); or pip "
        "install tensorflow-cpu and load with try_prepare=True to prepare it with TFDS"
    ),
}


def _find_arrays(name: str, data_dir, tfds_data_dir, try_prepare: bool, tried: list, **kw):
  """Try TFDS, local files, TFDS preparation; return (arrays, source) or None."""
  info = DATASET_INFO[name]
  try:
    return _load_tfds(name, tfds_data_dir), f"tfds:{tfds_data_dir or 'default data_dir'}"
  except Exception as exc:  # TFDS raises KeyError/NotImplementedError/... when absent
    tried.append(
        f"TFDS data_source {info.tfds_name}: no prepared array_record copy in "
        f"data_dir={tfds_data_dir or 'default'} ({_short(exc)})"
    )
  found = _LOCAL_SOURCES[name](
      name, info, data_dir, tried, tfds_data_dir=tfds_data_dir, try_prepare=try_prepare, **kw
  )
  if found is not None:
    return found
  if not try_prepare:
    tried.append(f"TFDS preparation of {info.tfds_name} (try_prepare=False)")
    return None
  try:
    _prepare_tfds(name, tfds_data_dir)
    arrays = _load_tfds(name, tfds_data_dir)
    return arrays, f"tfds-prepared:{tfds_data_dir or 'default data_dir'}"
  except Exception as exc:
    tried.append(f"TFDS preparation of {info.tfds_name} ({_short(exc)})")
    return None


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


def _load(name: str, data_dir, tfds_data_dir, try_prepare: bool, **kw) -> Dataset:
  tried: list[str] = []
  found = _find_arrays(name, data_dir, tfds_data_dir, try_prepare, tried, **kw)
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
  fail.
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


def _cifar_n_loader(name: str) -> Callable[..., Dataset]:
  def load(data_dir=None, *, tfds_data_dir=None, try_prepare: bool = True,
           label_file=None) -> Dataset:
    # The local source (label file + alignment) is registered by
    # jaxnoisy.data.cifar_n, which the package imports.
    return _load(name, data_dir, tfds_data_dir, try_prepare, label_file=label_file)

  load.__name__ = f"load_{name}"
  load.__doc__ = (
      f"Load {name} (see :func:`jaxnoisy.data.cifar_n.load_cifar_n`): TFDS "
      f"``{name}``, else the published human-label file aligned to the CIFAR "
      f"images jaxnoisy loads, else TFDS preparation."
  )
  return load


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "cifar10_n": _cifar_n_loader("cifar10_n"),
    "cifar100_n": _cifar_n_loader("cifar100_n"),
}


def load_dataset(name: str, **kwargs) -> Dataset:
  """Load a dataset by name; ``kwargs`` (``data_dir``, ``tfds_data_dir``,
  ``try_prepare``, for CIFAR-N ``label_file``) go to its loader. Valid names:
  ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``cifar10_n``,
  ``cifar100_n``."""
  if name not in _LOADERS:
    raise ValueError(
        f"unknown dataset {name!r}; valid: {', '.join(sorted(_LOADERS))}"
    )
  return _LOADERS[name](**kwargs)
