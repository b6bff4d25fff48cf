"""Image-classification datasets as in-memory numpy arrays.

Fashion-MNIST is looked for, in order, in:

(a) a prepared TFDS dataset (``tfds.data_source``; array_record format, read
    without TensorFlow);
(b) the four IDX ``.gz`` files in ``data_dir``, ``$JAXNOISY_DATA`` or Debian's
    ``/usr/share/datasets/fashion-mnist/`` (package ``dataset-fashion-mnist``);
(c) TFDS preparation (``download_and_prepare``), only when TensorFlow is
    importable and ``try_prepare`` is set.

Note: TFDS shuffles examples when it prepares a dataset, so the example order
(and therefore index-based splits) differs between a TFDS source and the IDX
files. ``Dataset.source`` records where the data came from.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "DATASET_INFO",
    "DataNotFoundError",
    "Dataset",
    "DatasetInfo",
    "IDX_FILES",
    "load_dataset",
    "load_fashion_mnist",
    "read_idx",
]


class DataNotFoundError(FileNotFoundError):
    """Raised when no source of a dataset could be found or prepared."""


class DatasetInfo(NamedTuple):
    """Per-dataset constants (mean/std per channel, in [0, 1] pixel units)."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASET_INFO: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        image_shape=(28, 28, 1),
        num_classes=10,
        class_names=(
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
        ),
        mean=(0.2860,),
        std=(0.3530,),
    ),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test image-classification dataset held in memory.

    Images are uint8 ``(N, H, W, C)``; labels int32 ``(N,)``. ``mean``/``std``
    are per-channel, in [0, 1] pixel units. ``source`` says where the arrays
    were read from (e.g. ``"idx:/usr/share/datasets/fashion-mnist"``).
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
            if labels.shape != (images.shape[0],) or labels.dtype != np.int32:
                raise ValueError(
                    f"{split}_labels must be int32 ({images.shape[0]},), got "
                    f"{labels.dtype} {labels.shape}"
                )
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(
                    f"{split}_labels must be in [0, {self.num_classes}), got values in "
                    f"[{labels.min()}, {labels.max()}]"
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

# System directories searched for IDX files (after data_dir and $JAXNOISY_DATA).
SYSTEM_DATA_DIRS = {
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


def _idx_dirs(name: str, data_dir) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    env = os.environ.get("JAXNOISY_DATA")
    if env:
        dirs.append(Path(env))
    dirs.extend(Path(d) for d in SYSTEM_DATA_DIRS.get(name, ()))
    return dirs


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
    return out


# --------------------------------------------------------------------------
# TFDS.
# --------------------------------------------------------------------------

_TFDS_CHUNK = 4096


def _read_data_source(source) -> tuple[np.ndarray, np.ndarray]:
    """Read every record of a TFDS data source into (images, labels) arrays."""
    n = len(source)
    images, labels = [], []
    for start in range(0, n, _TFDS_CHUNK):
        records = source.__getitems__(list(range(start, min(start + _TFDS_CHUNK, n))))
        images.append(np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records]))
        labels.append(np.asarray([int(r["label"]) for r in records], dtype=np.int32))
    if not images:
        raise ValueError("TFDS data source is empty")
    return np.concatenate(images), np.concatenate(labels)


def _load_tfds(name: str, tfds_data_dir) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds  # lazy: slow import

    # download=False: never prepare here (the default, True, would try to).
    train, test = tfds.data_source(
        name, split=["train", "test"], data_dir=tfds_data_dir, download=False
    )
    train_images, train_labels = _read_data_source(train)
    test_images, test_labels = _read_data_source(test)
    return dict(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )


def _prepare_tfds(name: str, tfds_data_dir) -> None:
    import tensorflow  # noqa: F401  (TFDS needs TensorFlow to encode images)
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=tfds_data_dir, file_format="array_record")
    builder.download_and_prepare()


def _short(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    if len(msg) > 80:
        msg = msg[:77] + "..."
    return f"{type(exc).__name__}: {msg}"


# --------------------------------------------------------------------------
# Loaders.
# --------------------------------------------------------------------------


def load_fashion_mnist(
    data_dir=None,
    *,
    tfds_data_dir=None,
    try_prepare: bool = True,
) -> Dataset:
    """Load Fashion-MNIST (60000 train / 10000 test, uint8 28x28x1, int32 labels).

    Sources, in order: (a) a prepared TFDS dataset in ``tfds_data_dir`` (TFDS's
    default data dir if None), read with ``tfds.data_source`` (no TensorFlow
    needed); (b) the IDX ``.gz`` files in ``data_dir``, ``$JAXNOISY_DATA`` or
    ``/usr/share/datasets/fashion-mnist``; (c) if ``try_prepare`` and TensorFlow
    is importable, ``tfds`` preparation (array_record) followed by (a).
    Raises :class:`DataNotFoundError` when all fail.
    """
    name = "fashion_mnist"
    info = DATASET_INFO[name]
    tried = []
    arrays, source = None, ""

    try:
        arrays = _load_tfds(name, tfds_data_dir)
        source = f"tfds:{tfds_data_dir or 'default data_dir'}"
    except Exception as exc:  # TFDS raises KeyError/NotImplementedError/... when absent
        tried.append(
            f"TFDS data_source: no prepared array_record copy in data_dir="
            f"{tfds_data_dir or 'default'} ({_short(exc)})"
        )

    if arrays is None:
        dirs = _idx_dirs(name, data_dir)
        for d in dirs:
            if not all((d / f).is_file() for f in IDX_FILES.values()):
                continue
            try:
                arrays = _load_idx_dir(d, info)
                source = f"idx:{d}"
                break
            except (OSError, ValueError, EOFError) as exc:
                tried.append(f"IDX in {d} ({_short(exc)})")
        else:
            tried.append("IDX files in " + ", ".join(str(d) for d in dirs))

    if arrays is None:
        if try_prepare:
            try:
                _prepare_tfds(name, tfds_data_dir)
                arrays = _load_tfds(name, tfds_data_dir)
                source = f"tfds-prepared:{tfds_data_dir or 'default data_dir'}"
            except Exception as exc:
                tried.append(f"TFDS preparation ({_short(exc)})")
        else:
            tried.append("TFDS preparation (try_prepare=False)")

    if arrays is None:
        raise DataNotFoundError(
            "Fashion-MNIST not found. Options: install the Debian package "
            "dataset-fashion-mnist; or set JAXNOISY_DATA to a directory with "
            + ", ".join(IDX_FILES.values())
            + "; or pip install tensorflow-cpu and load with try_prepare=True to "
            "prepare it with TFDS. Tried: "
            + "; ".join(tried)
        )

    return Dataset(
        name=name,
        num_classes=info.num_classes,
        class_names=info.class_names,
        mean=info.mean,
        std=info.std,
        source=source,
        **arrays,
    )


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "fashion_mnist": load_fashion_mnist,
}


def load_dataset(name: str, **kwargs) -> Dataset:
    """Load a dataset by name (``fashion_mnist``); ``kwargs`` go to its loader."""
    if name not in _LOADERS:
        raise ValueError(
            f"unknown dataset {name!r}; valid: {', '.join(sorted(_LOADERS))}"
        )
    return _LOADERS[name](**kwargs)
