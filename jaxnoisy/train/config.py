"""The training configuration: one plain, frozen dataclass (configs are code)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from jaxnoisy._validate import check_range

SCHEDULES = ("cosine", "constant", "step")
SANER_BASES = ("sam", "asam", "gsam")
# Hyper-parameters a run can sweep in one jit (``sweep``): they enter the step as traced
# scalars, so none of them may set a shape or a Python branch.
SWEEPABLE = ("learning_rate", "weight_decay", "rho", "asam_eta", "gsam_alpha", "down_weight",
             "kappa", "weight_lr", "weight_step", "mixture_rho", "xi", "delta")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a run depends on. ``validate`` checks it before anything compiles."""

  method: str = "sgd"
  dataset: str = "fashion_mnist"
  noise: str = "symmetric:0.4"
  model: str = "cnn"
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 0.05
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "cosine"
  lr_boundaries: tuple = (0.5, 0.75)  # "step" schedule: ×0.1 at these fractions of training
  seed: int = 0
  # Replicas trained side by side in one jitted step (vmap): seeds seed .. seed+seeds-1,
  # each with every value of ``sweep = (name, (v1, v2, ...))`` if given.
  seeds: int = 1
  sweep: Optional[tuple] = None
  # A device's replicas: vmapped (True) or one after another (False); None: vmap on
  # accelerators, a loop on CPU (XLA:CPU's vmapped convolutions are slow grouped ones).
  vmap_replicas: Optional[bool] = None
  augment: Optional[bool] = None     # random crop + flip; None: the dataset's default
  train_size: Optional[int] = None   # use a random subset of the noisy training set
  heldout_size: int = 5000           # noisy held-out split for model selection
  clean_size: int = 0                # clean subset for the meta methods (true labels)
  clean_batch_size: int = 100        # clean examples per step (MW-Net/MLC: 100)
  weight_lr: float = 100.0           # meta_reweight's α (weights step, mean-loss convention)
  weight_step: float = 0.1           # feature_reweight's β (weight units per visit)
  # Label correction (MLC, BOME-MLC, EBOMLC): the LCN's optimiser and EBOMLC's ρ, ξ, δ.
  meta_optimizer: str = "amsgrad"
  meta_lr: float = 3e-4
  mlc_lookahead: int = 1
  # MLC's default (hmlc_K_mix): half the clean batch joins the main network's loss, the
  # other half is the meta objective; False: all of it is the meta objective (hmlc_K).
  mlc_mix: bool = True
  mixture_rho: float = 0.2
  xi: float = 0.5
  delta: float = 0.25
  ebomlc_sign: str = "descend"       # "descend" (BOME's convention) or "reference" (code's)
  # SAM family.
  rho: float = 0.05
  asam_eta: float = 0.01
  per_device_ascent: bool = False    # ε from each device's own gradient (m-sharpness)
  gsam_alpha: float = 0.1            # GSAM's α (jaxnoisy's default; α = 0 is SAM)
  # SANER: a moves from 1 to down_weight over the first 25% of training (50 of 200 epochs).
  down_weight: float = 0.5
  saner_warmup_fraction: float = 0.25
  saner_base: str = "sam"
  saner_track_groups: bool = True   # log the A/B/C group fractions every step
  # NCSAM: plain SGD for the first 25% of the epochs (50 of 200), then NCSAM.
  kappa: float = 0.1
  flip_rate: float = 0.4
  ncsam_warmup_fraction: float = 0.25
  # Run-time.
  num_devices: Optional[int] = None  # None: all devices of the default backend
  eval_batch_size: int = 2000
  data_dir: Optional[str] = None
  tfds_data_dir: Optional[str] = None

  def replace(self, **changes) -> "TrainConfig":
    """A copy with ``changes`` (a config file's ``get_config`` builds on this)."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def replicas(self) -> list[tuple[str, "TrainConfig"]]:
    """``(label, config)`` of every replica: the sweep's values (outer) × the seeds.

    Each replica's config is the single run it reproduces (``seeds=1``, no sweep): its
    own seed draws its initialisation, label noise, splits and batch order.
    """
    name, values = self.sweep if self.sweep else (None, (None,))
    out = []
    for value in values:
      for k in range(self.seeds):
        changes = {"seed": self.seed + k, "seeds": 1, "sweep": None}
        label = f"seed{self.seed + k}"
        if name is not None:
          changes[name] = value
          label = f"{name}{value:g}_{label}"
        out.append((label, self.replace(**changes)))
    return out

  def validate(self) -> "TrainConfig":
    from jaxnoisy.train.methods import METHODS  # the method table validates the name

    if self.method not in METHODS:
      raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
    from jaxnoisy.data import DATASET_INFO
    if self.dataset not in DATASET_INFO:
      raise ValueError(f"dataset must be one of {sorted(DATASET_INFO)}, got {self.dataset!r}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
    for f in self.lr_boundaries:
      check_range("lr_boundaries", f, low=0.0, high=1.0)
    check_range("epochs", self.epochs, low=1)
    check_range("batch_size", self.batch_size, low=1)
    check_range("learning_rate", self.learning_rate, low=0.0, low_open=True)
    check_range("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
    check_range("weight_decay", self.weight_decay, low=0.0)
    check_range("heldout_size", self.heldout_size, low=0)
    check_range("clean_size", self.clean_size, low=0)
    check_range("clean_batch_size", self.clean_batch_size, low=1)
    check_range("weight_lr", self.weight_lr, low=0.0)
    check_range("weight_step", self.weight_step, low=0.0)
    if self.meta_optimizer not in ("adam", "amsgrad", "sgd"):
      raise ValueError("meta_optimizer must be one of ['adam', 'amsgrad', 'sgd'], "
                       f"got {self.meta_optimizer!r}")
    check_range("meta_lr", self.meta_lr, low=0.0, low_open=True)
    check_range("mlc_lookahead", self.mlc_lookahead, low=1)
    check_range("mixture_rho", self.mixture_rho, low=0.0, high=1.0)
    check_range("xi", self.xi, low=0.0)
    check_range("delta", self.delta, low=0.0)
    if self.ebomlc_sign not in ("descend", "reference"):
      raise ValueError(f"ebomlc_sign must be 'descend' or 'reference', got {self.ebomlc_sign!r}")
    check_range("rho", self.rho, low=0.0, low_open=True)
    check_range("asam_eta", self.asam_eta, low=0.0)
    check_range("gsam_alpha", self.gsam_alpha, low=0.0)
    check_range("down_weight", self.down_weight, low=0.0, high=1.0)
    check_range("saner_warmup_fraction", self.saner_warmup_fraction, low=0.0, high=1.0)
    if self.saner_base not in SANER_BASES:
      raise ValueError(f"saner_base must be one of {list(SANER_BASES)}, got {self.saner_base!r}")
    check_range("kappa", self.kappa, low=0.0)
    check_range("flip_rate", self.flip_rate, low=0.0, high=1.0)
    check_range("ncsam_warmup_fraction", self.ncsam_warmup_fraction, low=0.0, high=1.0)
    check_range("eval_batch_size", self.eval_batch_size, low=1)
    if self.train_size is not None:
      check_range("train_size", self.train_size, low=1)
    if self.num_devices is not None:
      check_range("num_devices", self.num_devices, low=1)
    check_range("seeds", self.seeds, low=1)
    if self.sweep is not None:
      name, values = self.sweep if len(self.sweep) == 2 else (None, ())
      if name not in SWEEPABLE or not values:
        raise ValueError(f"sweep must be (name, values) with name in {list(SWEEPABLE)} and "
                         f"at least one value, got {self.sweep!r}")
      for _, replica in self.replicas():
        replica.validate()
    if self.per_device_ascent and (self.seeds > 1 or self.sweep):
      raise ValueError("per_device_ascent must be off when training replicas "
                       f"(seeds={self.seeds}, sweep={self.sweep!r})")
    return self


def load_config(spec: str) -> TrainConfig:
  """``PATH[:ARG]``: runs ``get_config(ARG)`` of the Python file PATH (ARG may be None).

  Configs are code (as in big_vision): each file under ``experiments/configs`` returns
  a plain :class:`TrainConfig` for one paper setup; command-line flags override it.
  """
  import importlib.util
  import os

  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"config must be PATH[:ARG] with PATH an existing .py file, got {spec!r}")
  module_spec = importlib.util.spec_from_file_location("jaxnoisy_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  if not isinstance(config, TrainConfig):
    raise ValueError(f"config {path}: get_config must return a TrainConfig, "
                     f"got {type(config).__name__}")
  return config.validate()
