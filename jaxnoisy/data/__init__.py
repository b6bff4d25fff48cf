"""Datasets (in-memory numpy arrays), deterministic splits, augmentation.

Layers, each importing only those above it:

* :mod:`jaxnoisy.dataset_info`: dataset facts, no I/O (class names, CIFAR-100
  super-classes, CIFAR-N label sets, :data:`DATASET_INFO`); :mod:`jaxnoisy.noise`
  builds on these alone;
* :mod:`jaxnoisy.data.readers` (IDX, restricted pickles, CIFAR pickles),
  :mod:`jaxnoisy.data.tfds_io` (TFDS read / prepare) and
  :mod:`jaxnoisy.data.cifar_n` (CIFAR-N label files, alignment): file formats;
* :mod:`jaxnoisy.data.arrayrecord`: datasets prepared as ArrayRecord files
  (``jaxnoisy prepare``: image folders, Clothing1M's layout, label lists), and
  :mod:`jaxnoisy.data.stream`: their lazy images and the grain batch stream of the
  streaming input path;
* :mod:`jaxnoisy.data.datasets`: the loader, :func:`load_dataset`, with each
  dataset's sources in one table (a prepared ``data_dir`` is read lazily).
"""

from jaxnoisy.dataset_info import (
    CIFAR100N_LABEL_SETS,
    CIFAR100_COARSE_CLASS_NAMES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR10N_LABEL_SETS,
    DATASET_INFO,
    DatasetInfo,
)
from jaxnoisy.data.readers import IDX_FILES, read_cifar_python, read_idx
from jaxnoisy.data.cifar_n import align_to, order_from_tfds_ids, read_cifar_n_labels
from jaxnoisy.data.datasets import (
    SYSTEM_DATA_DIRS,
    DataCorruptError,
    DataNotFoundError,
    Dataset,
    load_cifar10,
    load_cifar100,
    load_cifar_n,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
)
from jaxnoisy.data.splits import Splits, make_splits
from jaxnoisy.data.augment import augment_batch, dataset_augment

__all__ = [
    "CIFAR100N_LABEL_SETS",
    "CIFAR100_COARSE_CLASS_NAMES",
    "CIFAR100_FINE_TO_COARSE",
    "CIFAR10N_LABEL_SETS",
    "DATASET_INFO",
    "IDX_FILES",
    "SYSTEM_DATA_DIRS",
    "DataCorruptError",
    "DataNotFoundError",
    "Dataset",
    "DatasetInfo",
    "Splits",
    "align_to",
    "augment_batch",
    "dataset_augment",
    "load_cifar10",
    "load_cifar100",
    "load_cifar_n",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "make_splits",
    "order_from_tfds_ids",
    "read_cifar_n_labels",
    "read_cifar_python",
    "read_idx",
]
