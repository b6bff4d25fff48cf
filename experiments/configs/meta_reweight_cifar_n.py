"""Exact meta-reweighting on real label noise: Zhang, Holtz, Mishne, Cloninger, arXiv
2510.12209 (CIFAR-10N / CIFAR-100N, 1000–2000 clean examples); its surrogate FBR has the
authors' own setup in ``fbr_cifar.py``.

The paper's training details are not public; jaxnoisy's choices: pre-activation
ResNet-18, 120 epochs, batch 128, SGD lr 0.1 (momentum 0.9, weight decay 5e-4, ×0.1 at
2/3 and 5/6 of training as in MW-Net), 1000 clean examples drawn from the training set
(their true labels), clean batch 100; random crops pad with zeros, as the first
author's code (yiz134/Feature_based_reweight ``data_loader/cifar10.py``).

    jaxnoisy train --config experiments/configs/meta_reweight_cifar_n.py:cifar10_n \\
        --out runs/mr_c10n
    # --method l2rw, mwnet; --clean-size 2000;
    # ARG cifar100_n uses --noise cifar100n:noisy
"""

from jaxnoisy.train.config import TrainConfig

NOISE = {"cifar10_n": "cifar10n:worse", "cifar100_n": "cifar100n:noisy"}


def get_config(arg=None) -> TrainConfig:
  dataset = arg or "cifar10_n"
  if dataset not in NOISE:
    raise ValueError(f"meta_reweight_cifar_n: ARG must be one of {sorted(NOISE)}, "
                     f"got {dataset!r}")
  return TrainConfig(
      method="meta_reweight", dataset=dataset, noise=NOISE[dataset],
      model="preact_resnet18", epochs=120, batch_size=128, learning_rate=0.1, momentum=0.9,
      weight_decay=5e-4, schedule="step", lr_boundaries=(2 / 3, 5 / 6), heldout_size=5000,
      clean_size=1000, clean_batch_size=100, padding_mode="constant")
