"""Reading prepared TFDS datasets (``tfds.data_source``, no TensorFlow) and preparing them.

TFDS is imported lazily (a slow import). While TFDS looks for a prepared copy, its
absl warnings about unusable variant folders (e.g. "Variant folder
~/tensorflow_datasets/mnist/3.0.1 has no dataset_info.json", left by an interrupted
preparation) are dropped: the loader reports a missing copy itself, once, in its
error message, instead of a warning on every run.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from jaxnoisy.dataset_info import DATASET_INFO

__all__ = ["TFDS_FEATURES", "load_tfds", "prepare_tfds", "read_data_source"]

# jaxnoisy array key -> TFDS feature, per split. "noisy:K" keys become
# Dataset.noisy_label_sets[K]; "_ids" (TFDS's "train_00042" ids, i.e. the index
# in the original CIFAR files) is returned as "_train_ids" for alignment.
_BASIC = {"images": "image", "labels": "label"}
TFDS_FEATURES: dict[str, dict[str, dict[str, str]]] = {
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
"""Per dataset and split: jaxnoisy array key -> TFDS feature name."""


class _DropVariantWarnings(logging.Filter):
  """Drops TFDS's warnings about variant folders that are not prepared datasets."""

  def filter(self, record: logging.LogRecord) -> bool:
    msg = str(record.msg)
    return not (msg.startswith("Variant folder ")
                or msg.startswith("Skipping invalid variant directory"))


@contextlib.contextmanager
def _quiet_variant_probe():
  logger = logging.getLogger("absl")  # absl.logging writes to this logger
  f = _DropVariantWarnings()
  logger.addFilter(f)
  try:
    yield
  finally:
    logger.removeFilter(f)


def _to_array(values: list, feature: str) -> np.ndarray:
  if feature == "image":
    return np.stack([np.asarray(v, dtype=np.uint8) for v in values])
  if feature == "id":
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values])
  return np.asarray([int(v) for v in values], dtype=np.int32)


def read_data_source(source, features: dict[str, str] | None = None, *,
                     chunk_size: int = 4096) -> dict[str, np.ndarray]:
  """Read every record of a TFDS data source into arrays, ``chunk_size`` at a time.

  ``features`` maps output keys to TFDS feature names (default: ``images``
  from ``image``, ``labels`` from ``label``).
  """
  features = features or _BASIC
  n = len(source)
  chunks: dict[str, list] = {k: [] for k in features}
  for start in range(0, n, chunk_size):
    records = source.__getitems__(list(range(start, min(start + chunk_size, n))))
    for key, feature in features.items():
      chunks[key].append(_to_array([r[feature] for r in records], feature))
  if n == 0:
    raise ValueError("TFDS data source is empty")
  return {k: np.concatenate(v) for k, v in chunks.items()}


def load_tfds(name: str, tfds_data_dir=None, *, chunk_size: int = 4096) -> dict:
  """The train and test arrays of the prepared TFDS copy of dataset ``name``.

  Keys: ``train_images``, ``train_labels``, ``test_*`` (and ``*_coarse_labels``
  for CIFAR-100), ``noisy_label_sets`` for CIFAR-N, ``_train_ids`` for CIFAR.
  Raises whatever TFDS raises when no array_record copy is prepared in
  ``tfds_data_dir`` (TFDS's default data dir if None); never prepares one.
  """
  import tensorflow_datasets as tfds  # lazy: slow import

  info = DATASET_INFO[name]
  with _quiet_variant_probe():
    # download=False: never prepare here (the default, True, would try to).
    sources = tfds.data_source(
        info.tfds_name, split=["train", "test"], data_dir=tfds_data_dir, download=False
    )
  out: dict = {}
  for split, source in zip(("train", "test"), sources):
    arrays = read_data_source(source, TFDS_FEATURES[name][split], chunk_size=chunk_size)
    for key, arr in arrays.items():
      if key.startswith("noisy:"):
        out.setdefault("noisy_label_sets", {})[key[len("noisy:"):]] = arr
      elif key.startswith("_"):
        out[f"_{split}{key}"] = arr  # e.g. "_train_ids"
      else:
        out[f"{split}_{key}"] = arr
  return out


def prepare_tfds(name: str, tfds_data_dir=None) -> None:
  """Download and prepare dataset ``name`` with TFDS in array_record format.

  Needs TensorFlow (TFDS encodes the images with it) and, for CIFAR-N, the
  builder's manual files.
  """
  import tensorflow  # noqa: F401  (TFDS needs TensorFlow to encode images)
  import tensorflow_datasets as tfds

  with _quiet_variant_probe():
    builder = tfds.builder(
        DATASET_INFO[name].tfds_name, data_dir=tfds_data_dir, file_format="array_record"
    )
  builder.download_and_prepare()
