"""EBOMLC against MLC: Nguyen and Ta, arXiv 2605.17833 (CIFAR-10/100, symmetric noise).

ResNet-32, 1000 clean examples (gold fraction 0.02), batch 100, 120 epochs, SGD lr 0.1
(momentum 0.9, weight decay 5e-4, ×0.1 at epochs 80 and 100), meta optimiser Adam with
AMSGrad at 3e-4; EBOMLC's ρ = 0.2, ξ = 0.5, δ = 0.25. The authors' LCN (Dropout 0.3,
train-mode BatchNorm) with class embedding 128 (their README's commands); on CIFAR-100
their code's branch for datasets other than CIFAR-10 (Δ_w → −η·D(Δ_w)). The MLC code's
loaders resample labels over all classes (symmetric-inclusive). The mixture upper loss
and its sign keep jaxnoisy's defaults; the code's are ``--mixture logits
--sign reference``. Random crops pad by reflection, as the MW-Net loader that
the code's ``main.py`` selects (``use_mwnet_loader``; ``data_helper_cifar.py``).

    jaxnoisy train --config experiments/configs/ebomlc_cifar.py:cifar10 \\
        --noise symmetric-inclusive:0.6 --out runs/ebomlc_c10_s60
    # --method mlc / bome_mlc; --sign reference for the authors' code's sign
"""

from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.correction_methods import EBOMLCHparams


def get_config(arg=None) -> TrainConfig:
  dataset = arg or "cifar10"
  if dataset not in ("cifar10", "cifar100"):
    raise ValueError(f"ebomlc_cifar: ARG must be cifar10 or cifar100, got {dataset!r}")
  return TrainConfig(
      method="ebomlc", dataset=dataset, noise="symmetric-inclusive:0.6", model="resnet32",
      epochs=120, batch_size=100, learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
      schedule="step", lr_boundaries=(80 / 120, 100 / 120), heldout_size=5000,
      clean_size=1000, clean_batch_size=100, padding_mode="reflect",
      hparams=EBOMLCHparams(meta_optimizer="amsgrad", meta_lr=3e-4, mixture_rho=0.2,
                            xi=0.5, delta=0.25, lcn_variant="ebomlc", lcn_embed_dim=128,
                            delta_update=dataset != "cifar10"))
