"""FBR's CIFAR setup: Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209, as the first
author's code runs it (yiz134/Feature_based_reweight, ``experiments.py`` and
``trainer/train.py::train_loop``).

CIFAR ResNet-34 (post-activation, 3×3 stem, no max-pool), SGD lr 0.02, momentum 0.9,
weight decay 1e-3, 150 epochs, ×0.1 at epochs 40, 80 and 100, batch 128. 45,000 noisy
training examples; of the other 5,000, 2,000 are the clean subset (true labels) and
3,000 the noisy held-out split (the code takes its 2,000 clean examples from a 5,000
held-out part and selects no model). Each epoch starts with 30 passes of plain
cross-entropy over the clean subset; weights 1/2 for epochs 0–10, α₀ = 1/(C−1) before
epoch 40 and 0 after (the ``fbr_*`` defaults). Noise follows FINE's protocol (labels
resampled over all classes: symmetric-inclusive); the reported results are CIFAR-100
asymmetric 40% and the CIFAR-N human labels. Random crops pad with zeros (the code's
``RandomCrop(32, padding=4)``, ``data_loader/cifar10.py``).

    jaxnoisy train --config experiments/configs/fbr_cifar.py:cifar100 --out runs/fbr_c100
    # ARG cifar10 (symmetric-inclusive:0.5), cifar10_n (worst labels), cifar100_n;
    # baselines: --method meta_reweight / l2rw / mwnet / sgd
"""

from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.reweight_methods import FBRHparams

NOISE = {"cifar10": "symmetric-inclusive:0.5", "cifar100": "asymmetric:0.4",
         "cifar10_n": "cifar10n:worse", "cifar100_n": "cifar100n:noisy"}


def get_config(arg=None) -> TrainConfig:
  dataset = arg or "cifar100"
  if dataset not in NOISE:
    raise ValueError(f"fbr_cifar: ARG must be one of {sorted(NOISE)}, got {dataset!r}")
  return TrainConfig(
      method="fbr", dataset=dataset, noise=NOISE[dataset], model="resnet34", epochs=150,
      batch_size=128, learning_rate=0.02, momentum=0.9, weight_decay=1e-3,
      schedule="step", lr_boundaries=(40 / 150, 80 / 150, 100 / 150), heldout_size=3000,
      clean_size=2000, clean_batch_size=100, padding_mode="constant",
      hparams=FBRHparams(clean_epochs=30, warmup_fraction=11 / 150,
                         alpha_fraction=40 / 150))
