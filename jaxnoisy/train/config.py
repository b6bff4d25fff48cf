"""The training configuration: one plain, frozen dataclass (configs are code).

Its fields are the run's own (:class:`RunConfig`) and those of every method's
hyper-parameter records (``METHODS[name].hparams``), flat: ``TrainConfig(method="saner",
rho=0.1)``. Validation, the command-line flags and the sweepable set derive from the
fields' declarations (:func:`jaxnoisy.train.hparams.hp`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from jaxnoisy.data.augment import PADDING_MODES
from jaxnoisy.dataset_info import DATASET_INFO, REAL_NOISE_DATASETS
from jaxnoisy.models import COMPUTE_DTYPES, MODELS
from jaxnoisy.noise import parse_noise_spec
from jaxnoisy.train import hparams as hparams_lib
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.methods import METHODS, REPLACED

SCHEDULES = ("cosine", "constant", "step")


def _fractions(text: str) -> tuple:
  return tuple(float(x) for x in text.split(","))


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The run: data, model, optimizer, replicas and devices"""

  method: str = hp("sgd", "the method to train", choices=tuple(METHODS))
  dataset: str = hp("fashion_mnist", "fashion_mnist, mnist, cifar10, cifar100, cifar10_n, "
                    "cifar100_n")
  noise: str = hp("symmetric:0.4", "noise spec, e.g. none, symmetric:0.4, "
                  "symmetric-inclusive:0.4, asymmetric:0.4, pairflip:0.45, instance:0.4")
  model: str = hp("cnn", "the network", choices=tuple(MODELS))
  compute_dtype: str = hp("float32", "what activations and matmuls compute in; "
                         "parameters, optimizer state and the loss stay float32",
                         choices=tuple(COMPUTE_DTYPES))
  init_params: Optional[str] = hp(None, "start from these weights: an .npz of "
                                  "{'params': ..., 'state': ...} as models.save_params "
                                  "writes it (e.g. ImageNet weights); a classifier of "
                                  "another class count keeps its fresh initialisation")
  epochs: int = hp(10, "training epochs", low=1)
  batch_size: int = hp(128, "examples per noisy step", low=1)
  learning_rate: float = hp(0.05, "SGD's learning rate", low=0.0, low_open=True,
                            sweepable=True, aliases=("--lr",))
  momentum: float = hp(0.9, "SGD's momentum", low=0.0, high=1.0, high_open=True)
  weight_decay: float = hp(5e-4, "coupled weight decay, added after the method's "
                           "transform", low=0.0, sweepable=True)
  schedule: str = hp("cosine", "learning-rate schedule", choices=SCHEDULES)
  lr_boundaries: tuple = hp((0.5, 0.75), "step schedule: ×0.1 at these fractions of "
                            "training, e.g. 0.5,0.75", low=0.0, high=1.0,
                            flag_type=_fractions)
  seed: int = hp(0, "draws initialisation, label noise, splits and batch order")
  seeds: int = hp(1, "train this many replicas (seeds seed, seed+1, ...) side by side in "
                  "one jitted step; the summary reports mean ± std", low=1)
  sweep: Optional[tuple] = hp(None, "NAME=V1,V2,...: one replica per value (× --seeds) "
                              "in the same step")
  vmap_replicas: Optional[bool] = hp(None, "a device's several replicas vmapped, or run "
                                     "one after another (default: vmapped on "
                                     "accelerators, one after another on CPU)")
  augment: Optional[bool] = hp(None, "random crop + flip (default: on for CIFAR, off for "
                               "MNIST-like)")
  padding_mode: str = hp("constant", "the random crops' 4-pixel padding: zeros "
                         "(constant, torchvision's RandomCrop(padding=4) of the SAM, "
                         "SANER and FBR code) or mirrored (reflect, the MW-Net and EBOMLC "
                         "loaders)", choices=PADDING_MODES)
  crop_size: Optional[int] = hp(None, "the model's input: random crop×crop windows of the "
                                "stored images in training (no padding), central ones "
                                "elsewhere (Clothing1M: 224 of 256)", low=1)
  train_size: Optional[int] = hp(None, "train on a random subset of this size", low=1)
  train_balanced: bool = hp(False, "train_size: at most train_size/classes examples of "
                            "each noisy label (the FBR authors' Clothing1M subset)")
  heldout_size: int = hp(5000, "noisy held-out split for model selection", low=0)
  clean_size: int = hp(0, "clean subset (true labels) for the methods that learn from "
                       "one", low=0)
  clean_batch_size: int = hp(100, "clean examples per step (MW-Net/MLC: 100)", low=1)
  per_device_ascent: bool = hp(False, "SAM-family ε from each device's own gradient "
                               "(m-sharpness)")
  num_devices: Optional[int] = hp(None, "devices of the mesh (default: all; in a "
                                  "multi-process run: over all processes)", low=1)
  eval_batch_size: int = hp(512, "examples per evaluation chunk (on 2 CPU cores 512 "
                            "evaluates the CNN 1.7× faster than 2000)", low=1)
  tensorboard: bool = hp(True, "write every logged scalar as TensorBoard events under "
                         "OUT/tb/ (beside metrics.jsonl)")
  log_every: int = hp(50, "TensorBoard: also the training loss every this many noisy "
                      "steps (0: per epoch only)", low=0)
  data_dir: Optional[str] = hp(None, "directory with the IDX .gz files, or a dataset "
                               "prepared as ArrayRecord (jaxnoisy prepare)")
  input_path: str = hp("auto", "training batches from device-resident arrays (device) or "
                       "read from ArrayRecord with grain each step (stream; a prepared "
                       "dataset); auto streams a prepared training set larger than "
                       "--stream-above-gib", choices=("auto", "device", "stream"))
  stream_above_gib: float = hp(4.0, "auto input path: stream a prepared training set whose "
                               "decoded images exceed this many GiB", low=0.0)
  stream_threads: int = hp(8, "streaming: batches read ahead in parallel", low=1)
  tfds_data_dir: Optional[str] = hp(None, "TFDS data directory")
  on_nonfinite: str = hp("stop", "a non-finite training loss or parameters at an epoch's "
                         "end: stop the run (summary.json records it) or continue "
                         "training through it", choices=("stop", "continue"))


def method_records() -> list[type]:
  """Every method's hyper-parameter records, in the method table's order."""
  out = []
  for m in METHODS.values():
    out += [r for r in m.hparams if r not in out]
  return out


RECORDS = (RunConfig, *method_records())
SWEEPABLE = hparams_lib.sweepable(*RECORDS)


class _Config:
  """The methods of :class:`TrainConfig`."""

  def replace(self, **changes) -> "TrainConfig":
    """A copy with ``changes`` (a config file's ``get_config`` builds on this)."""
    for name in changes:
      if name in REPLACED:
        raise ValueError(REPLACED[name])
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
    """Checks every field against its declaration, then the rules across fields;
    raises a one-line ``ValueError`` naming the parameter before anything compiles."""
    if self.method in REPLACED:
      raise ValueError(REPLACED[self.method])
    for f in dataclasses.fields(self):
      hparams_lib.check_field(f, getattr(self, f.name))
    if self.dataset not in DATASET_INFO:
      raise ValueError(f"dataset must be one of {sorted(DATASET_INFO)}, got {self.dataset!r}")
    needs = REAL_NOISE_DATASETS.get(parse_noise_spec(self.noise).kind)
    if needs is not None and self.dataset != needs:  # human labels exist for one dataset
      raise ValueError(f"noise {self.noise} needs --dataset {needs} (its human labels); "
                       f"dataset {self.dataset!r} has none")
    if self.sweep is not None:
      name, values = self.sweep if len(self.sweep) == 2 else (None, ())
      if name not in SWEEPABLE or not values:
        raise ValueError(f"sweep must be (name, values) with name in {list(SWEEPABLE)} and "
                         f"at least one value, got {self.sweep!r}")
      for _, replica in self.replicas():
        replica.validate()
    if self.train_balanced and self.train_size is None:
      raise ValueError("train_balanced needs train_size (the size of the balanced subset)")
    if self.input_path == "stream" and (self.seeds > 1 or self.sweep):
      raise ValueError("input_path must be device or auto when training replicas (seeds="
                       f"{self.seeds}, sweep={self.sweep!r}): the stream reads one order")
    if self.per_device_ascent and (self.seeds > 1 or self.sweep):
      raise ValueError("per_device_ascent must be off when training replicas "
                       f"(seeds={self.seeds}, sweep={self.sweep!r})")
    return self


def _make_config_class():
  fields = []
  for f in hparams_lib.merged_fields(RECORDS):
    kwargs = dict(metadata=f.metadata)
    if f.default_factory is not dataclasses.MISSING:
      kwargs["default_factory"] = f.default_factory
    else:
      kwargs["default"] = f.default
    fields.append((f.name, f.type, dataclasses.field(**kwargs)))
  cls = dataclasses.make_dataclass("TrainConfig", fields, bases=(_Config,), frozen=True)
  cls.__module__ = __name__
  cls.__doc__ = ("Everything a run depends on: the run's fields and every method's "
                 "hyper-parameters. ``validate`` checks it before anything compiles.")
  return cls


TrainConfig = _make_config_class()


def _reject_replaced(init):
  def __init__(self, *args, **kwargs):
    for name in kwargs:
      if name in REPLACED:
        raise ValueError(REPLACED[name])
    init(self, *args, **kwargs)
  return __init__


TrainConfig.__init__ = _reject_replaced(TrainConfig.__init__)


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
