"""Clothing1M (Xiao et al., CVPR 2015) as the FBR authors' script trains it
(yiz134/Feature_based_reweight, ``experiments.py`` and ``data_loader/clothing1m.py``).

Data: 1M web images with their noisy labels (``clothing1m:noisy``); the model trains on
a class-balanced subset of 128,000 noisy examples (2,000 batches of 64 per epoch, at
most ⌈128,000/14⌉ per noisy label, drawn once from the seed), takes its clean subset of
2,000 from ``clean_val`` and is tested on ``clean_test``; 5,000 noisy examples are held
out for model selection (the authors select none). Images are stored at 256×256
(``prepare --image-size 256``; the authors resize the shorter side to 256), trained on
random 224×224 crops with flips and evaluated on the central crop, normalised with the
loader's statistics. ResNet-50 (ImageNet form), SGD lr 0.01, momentum 0.9, weight decay
5e-4, 10 epochs, ×0.1 at epochs 5, 7 and 9. The authors start from ImageNet weights
(``resnet50(pretrained=True)``): pass them as ``--init-params FILE.npz``
(``models.save_params({"params": ..., "state": ...})`` of jaxnoisy's ``resnet50``; the
14-class head keeps its fresh initialisation), or train from scratch without it. FBR: 30 passes over the clean subset before each epoch (the
script's ``val_steps``), in batches of 128 whatever the noisy batch (``train_steps``:
15 × 128 + 80); its Clothing1M branch leaves α₀ undefined and skips
reweighting for all of its 10 epochs (``skip_epochs=10``), so the CIFAR schedule's
proportions are kept instead: weights ½ in the first epoch, α₀ = 1/13 for the first 3.

    jaxnoisy prepare clothing1m /data/clothing1m --out /data/c1m_256 --image-size 256 --shards 256
    jaxnoisy train --config experiments/configs/clothing1m.py:fbr --data-dir /data/c1m_256 \\
        --init-params resnet50_imagenet.npz --out runs/c1m_fbr
    # ARG: any method (sgd, sam, saner, meta_reweight, mlc, ebomlc, ...); default fbr
"""

from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.methods import METHODS


def get_config(arg=None) -> TrainConfig:
  method = arg or "fbr"
  if method not in METHODS:
    raise ValueError(f"clothing1m: ARG must be a method ({', '.join(sorted(METHODS))}), "
                     f"got {method!r}")
  clean = dict(clean_size=2000, clean_batch_size=100) if METHODS[method].needs_clean else {}
  fbr = dict(clean_epochs=30, warmup_fraction=0.1, alpha_fraction=0.3) \
      if method == "fbr" else {}
  return TrainConfig(
      method=method, dataset="clothing1m", noise="clothing1m:noisy", model="resnet50",
      epochs=10, batch_size=64, learning_rate=0.01, momentum=0.9, weight_decay=5e-4,
      schedule="step", lr_boundaries=(0.5, 0.7, 0.9), train_size=128_000,
      train_balanced=True, heldout_size=5000, crop_size=224, augment=True,
      **clean).replace(**fbr)
