"""Datasets (in-memory numpy arrays), deterministic splits, augmentation."""

from jaxnoisy.data.datasets import (
    CIFAR100_COARSE_CLASS_NAMES,
    CIFAR100_FINE_TO_COARSE,
    DATASET_INFO,
    IDX_FILES,
    SYSTEM_DATA_DIRS,
    DataNotFoundError,
    Dataset,
    DatasetInfo,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    read_cifar_python,
    read_idx,
)
from jaxnoisy.data.cifar_n import (
    CIFAR100N_LABEL_SETS,
    CIFAR10N_LABEL_SETS,
    align_to,
    load_cifar_n,
    order_from_tfds_ids,
    read_cifar_n_labels,
)
from jaxnoisy.data.splits import Splits, make_splits
from jaxnoisy.data.describe import describe, plot_transition_matrix
from jaxnoisy.data.augment import augment_batch, dataset_augment

__all__ = [
    "CIFAR100N_LABEL_SETS",
    "CIFAR100_COARSE_CLASS_NAMES",
    "CIFAR100_FINE_TO_COARSE",
    "CIFAR10N_LABEL_SETS",
    "DATASET_INFO",
    "IDX_FILES",
    "SYSTEM_DATA_DIRS",
    "DataNotFoundError",
    "Dataset",
    "DatasetInfo",
    "Splits",
    "align_to",
    "augment_batch",
    "dataset_augment",
    "describe",
    "load_cifar10",
    "load_cifar100",
    "load_cifar_n",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "make_splits",
    "order_from_tfds_ids",
    "plot_transition_matrix",
    "read_cifar_n_labels",
    "read_cifar_python",
    "read_idx",
]
