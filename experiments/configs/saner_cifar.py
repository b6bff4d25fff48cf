"""SANER's CIFAR setup: Luong et al., arXiv 2411.17132, Tables 1–2 (CIFAR-10/100,
symmetric and asymmetric noise) and the CIFAR-N table.

ResNet-18 (pre-activation), 200 epochs, batch 128, SGD lr 0.1, momentum 0.9, weight
decay 5e-4 added after the reweighting, lr ×0.1 at 50% and 75% of training; ρ = 0.1,
down-weight a = 0.5 reached linearly over the first 50 epochs. Symmetric noise is
exclusive (exactly r·N labels moved), as in the SANER code. Random crops pad with zeros
(torchvision's ``RandomCrop(32, padding=4)`` in the code).

    jaxnoisy train --config experiments/configs/saner_cifar.py:cifar10 \\
        --noise symmetric:0.5 --out runs/saner_c10_s50
    # asymmetric: --noise asymmetric:0.4; CIFAR-N: ARG cifar10_n with --noise cifar10n:worse,
    # ARG cifar100_n with --noise cifar100n:noisy; baselines: --method sam / sgd;
    # other bases: --base asam (with --rho 1.0) or gsam
"""

from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.sam_methods import SAMHparams, SANERHparams

NOISE = {"cifar10": "symmetric:0.5", "cifar100": "symmetric:0.5",
         "cifar10_n": "cifar10n:worse", "cifar100_n": "cifar100n:noisy"}


def get_config(arg=None) -> TrainConfig:
  dataset = arg or "cifar10"
  if dataset not in NOISE:
    raise ValueError(f"saner_cifar: ARG must be one of {sorted(NOISE)}, got {dataset!r}")
  return TrainConfig(
      method="saner", dataset=dataset, noise=NOISE[dataset], model="preact_resnet18",
      epochs=200, batch_size=128, learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
      schedule="step", lr_boundaries=(0.5, 0.75), heldout_size=5000,
      padding_mode="constant",
      hparams=SANERHparams(base=SAMHparams(rho=0.1), down_weight=0.5,
                           warmup_fraction=0.25))
