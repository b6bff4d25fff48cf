"""The training configuration: one plain, frozen dataclass (configs are code).

Its fields are the run's, plus ``hparams``: the method's own statically typed record
(``METHODS[method].hparams``, e.g. :class:`~jaxnoisy.train.sam_methods.GSAMHparams`),
as big_vision nests ``config.gsam``. Validation, the command-line flags and the
sweepable set derive from the fields' declarations (:func:`jaxnoisy.train.hparams.hp`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from jaxnoisy.data.augment import PADDING_MODES
from jaxnoisy.dataset_info import DATASET_INFO, REAL_NOISE_DATASETS
from jaxnoisy.models import COMPUTE_DTYPES, MODELS
from jaxnoisy.noise import parse_noise_spec
from jaxnoisy.train import ascent as ascent_lib
from jaxnoisy.train import hparams as hparams_lib
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.methods import METHODS

SCHEDULES = ("cosine", "constant", "step")


def _fractions(text: str) -> tuple:
  return tuple(float(x) for x in text.split(","))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a run depends on: the run's fields (data, model, optimizer, replicas,
  devices) and ``hparams``, the method's own record.

  ``TrainConfig(method="gsam", hparams=GSAMHparams(rho=0.1, alpha=0.1))``; ``hparams``
  left ``None`` is the method's record with its defaults. :meth:`replace` also takes
  the record's names (``config.replace(rho=0.2)``), as the flags and ``--sweep`` do.
  ``validate`` checks everything before anything compiles.
  """

  method: str = hp("sgd", "the method to train")
  hparams: Any = None
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

  def __post_init__(self):
    if self.hparams is None and self.method in METHODS:  # the method's defaults
      object.__setattr__(self, "hparams", METHODS[self.method].hparams())

  def replace(self, **changes) -> "TrainConfig":
    """A copy with ``changes``: run fields, and names of the method's record (a new
    ``method`` starts from its record's defaults unless ``hparams`` is given)."""
    run = {k: v for k, v in changes.items() if k in RUN_FIELDS}
    if run.get("method", self.method) != self.method and "hparams" not in run:
      run["hparams"] = None
    new = dataclasses.replace(self, **run)
    rest = {k: v for k, v in changes.items() if k not in RUN_FIELDS}
    if rest:
      if new.hparams is None:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {new.method!r}")
      if "ascent" in rest and "ascent" not in hparams_lib.names(new.hparams):
        if not ascent_lib.is_none(rest.pop("ascent")):
          raise ValueError(ascent_lib.refusal(new.method, METHODS[new.method].no_ascent))
      record = hparams_lib.set_values(new.hparams, rest)
      new = dataclasses.replace(new, hparams=record)
    return new

  def to_dict(self) -> dict:
    """Plain data (a run's summary.json): the run's fields, the record nested."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out["hparams"] = hparams_lib.to_dict(self.hparams) if self.hparams is not None else None
    return out

  def sweepable(self) -> tuple[str, ...]:
    """The names ``sweep`` may take: the run's sweepable fields and the record's."""
    return tuple(sorted(set(RUN_SWEEPABLE) | set(hparams_lib.sweepable(self.hparams))))

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
    if self.method not in METHODS:
      raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
    registration = METHODS[self.method]
    if type(self.hparams) is not registration.hparams:
      raise ValueError(f"hparams must be a {registration.hparams.__name__} for method "
                       f"{self.method!r}, got {type(self.hparams).__name__}")
    for f in dataclasses.fields(self):
      hparams_lib.check_field(f, getattr(self, f.name))
    hparams_lib.check_record(self.hparams)
    if self.dataset not in DATASET_INFO:
      raise ValueError(f"dataset must be one of {sorted(DATASET_INFO)}, got {self.dataset!r}")
    needs = REAL_NOISE_DATASETS.get(parse_noise_spec(self.noise).kind)
    if needs is not None and self.dataset != needs:  # human labels exist for one dataset
      raise ValueError(f"noise {self.noise} needs --dataset {needs} (its human labels); "
                       f"dataset {self.dataset!r} has none")
    if self.sweep is not None:
      name, values = self.sweep if len(self.sweep) == 2 else (None, ())
      if name not in self.sweepable() or not values:
        raise ValueError(f"sweep must be (name, values) with name in "
                         f"{list(self.sweepable())} and at least one value, got "
                         f"{self.sweep!r}")
      for _, replica in self.replicas():
        replica.validate()
    if self.train_balanced and self.train_size is None:
      raise ValueError("train_balanced needs train_size (the size of the balanced subset)")
    if self.input_path == "stream" and (self.seeds > 1 or self.sweep):
      raise ValueError("input_path must be device or auto when training replicas (seeds="
                       f"{self.seeds}, sweep={self.sweep!r}): the stream reads one order")
    if self.per_device_ascent and not registration.per_device_ascent:
      raise ValueError(f"per_device_ascent applies to the SAM-family methods "
                       f"({', '.join(k for k, r in METHODS.items() if r.per_device_ascent)}"
                       f"), not {self.method!r} (its --ascent is global)")
    if self.per_device_ascent and (self.seeds > 1 or self.sweep):
      raise ValueError("per_device_ascent must be off when training replicas "
                       f"(seeds={self.seeds}, sweep={self.sweep!r})")
    return self


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
RUN_SWEEPABLE = tuple(f.name for f in dataclasses.fields(TrainConfig)
                      if f.metadata.get("sweepable"))


def check_registration(name: str, registration) -> None:
  """A method's record must be a frozen dataclass whose names are not the run's."""
  record = registration.hparams
  if not (dataclasses.is_dataclass(record) and record.__dataclass_params__.frozen):
    raise ValueError(f"method {name!r}: hparams must be a frozen dataclass, got {record!r}")
  clash = sorted({f.name for f in hparams_lib.declarations(record)} & set(RUN_FIELDS))
  if clash:
    raise ValueError(f"method {name!r}: hyper-parameter names {clash} are run fields; "
                     "rename them")


for _name, _registration in METHODS.items():
  check_registration(_name, _registration)


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
