"""Datasets (in-memory numpy arrays) and deterministic splits."""

from jaxnoisy.data.datasets import (
    DATASET_INFO,
    IDX_FILES,
    DataNotFoundError,
    Dataset,
    DatasetInfo,
    load_dataset,
    load_fashion_mnist,
    read_idx,
)
from jaxnoisy.data.splits import Splits, make_splits

__all__ = [
    "DATASET_INFO",
    "IDX_FILES",
    "DataNotFoundError",
    "Dataset",
    "DatasetInfo",
    "Splits",
    "load_dataset",
    "load_fashion_mnist",
    "make_splits",
    "read_idx",
]
