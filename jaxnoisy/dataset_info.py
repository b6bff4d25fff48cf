"""Dataset facts, no I/O: class names, CIFAR-100's super-classes, CIFAR-N's label sets,
and the per-dataset table :data:`DATASET_INFO`.

The bottom layer of the data stack: :mod:`jaxnoisy.noise` builds its class maps and
real-noise specs from these facts, and the loaders (:mod:`jaxnoisy.data`) build
:class:`~jaxnoisy.data.Dataset` objects from them. It imports nothing from jaxnoisy.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "CIFAR100N_LABEL_SETS",
    "CIFAR100_COARSE_CLASS_NAMES",
    "CIFAR100_FINE_TO_COARSE",
    "CIFAR10N_LABEL_SETS",
    "CIFAR_N_BASE",
    "DATASET_INFO",
    "DatasetInfo",
    "REAL_NOISE_DATASETS",
    "REAL_NOISE_LABEL_SETS",
]


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

# Clothing1M (Xiao et al., CVPR 2015): the 14 classes in label order.
_CLOTHING1M_CLASSES = (
    "T-shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
    "Jacket", "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear",
)

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
    # Read from a prepared ArrayRecord directory only (jaxnoisy prepare clothing1m); the
    # statistics are those of the FBR authors' Clothing1M loader.
    "clothing1m": DatasetInfo(
        "clothing1m", (224, 224, 3), 14, _CLOTHING1M_CLASSES,
        (0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214), augment=True,
    ),
}  # fmt: skip
"""Per-dataset constants, keyed by jaxnoisy dataset name."""


# --------------------------------------------------------------------------
# CIFAR-10N / CIFAR-100N (real human label noise).
# --------------------------------------------------------------------------

CIFAR10N_LABEL_SETS: dict[str, str] = {
    "aggre": "aggre_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
    "worse": "worse_label",
}
"""CIFAR-10N label sets: noise-spec key (``cifar10n:KEY``) -> published name."""

CIFAR100N_LABEL_SETS: dict[str, str] = {"noisy": "noisy_label"}
"""CIFAR-100N label sets: noise-spec key (``cifar100n:KEY``) -> published name."""

CLOTHING1M_LABEL_SETS: dict[str, str] = {"noisy": "noisy_label_kv"}
"""Clothing1M's label set: its web labels (``clothing1m:noisy``)."""

REAL_NOISE_LABEL_SETS: dict[str, dict[str, str]] = {
    "cifar10n": CIFAR10N_LABEL_SETS,
    "cifar100n": CIFAR100N_LABEL_SETS,
    "clothing1m": CLOTHING1M_LABEL_SETS,
}
"""Noise-spec kind -> {spec key: published label name}."""

REAL_NOISE_DATASETS: dict[str, str] = {"cifar10n": "cifar10_n", "cifar100n": "cifar100_n",
                                        "clothing1m": "clothing1m"}
"""Noise-spec kind -> the dataset that carries its human labels."""

CIFAR_N_BASE: dict[str, str] = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}
"""CIFAR-N dataset -> the CIFAR dataset whose training images its labels annotate."""
