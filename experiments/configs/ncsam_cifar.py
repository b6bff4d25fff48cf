"""NCSAM's CIFAR setup: Xu, Deng, Pang, arXiv 2601.19947, Table 1 (symmetric 20–80%)
and the instance-dependent table (20–60%).

ResNet-18 (pre-activation), 200 epochs, batch 128, SGD lr 0.05, momentum 0.9,
weight decay 1e-3; the first 50 epochs plain SGD (warm-up), NCSAM after, with
ρ = 0.05, r_flip = 0.4, κ = 0.1 on CIFAR-10 and 0.3 on CIFAR-100. The paper's loaders
resample labels over all classes (symmetric-inclusive). The schedule is not stated:
jaxnoisy uses cosine decay.

    jaxnoisy train --config experiments/configs/ncsam_cifar.py:cifar10 \\
        --noise symmetric-inclusive:0.4 --method ncsam --out runs/ncsam_c10_s40
    # table rows: --noise symmetric-inclusive:{0.2,0.4,0.6,0.8} or instance:{0.2,0.4,0.6};
    # baselines: --method sgd / --method sam
"""

from jaxnoisy.train.config import TrainConfig


def get_config(arg=None) -> TrainConfig:
  dataset = arg or "cifar10"
  if dataset not in ("cifar10", "cifar100"):
    raise ValueError(f"ncsam_cifar: ARG must be cifar10 or cifar100, got {dataset!r}")
  return TrainConfig(
      method="ncsam", dataset=dataset, noise="symmetric-inclusive:0.4",
      model="preact_resnet18", epochs=200, batch_size=128, learning_rate=0.05,
      momentum=0.9, weight_decay=1e-3, schedule="cosine", heldout_size=5000,
      rho=0.05, flip_rate=0.4, kappa=0.1 if dataset == "cifar10" else 0.3,
      ncsam_warmup_fraction=0.25)
