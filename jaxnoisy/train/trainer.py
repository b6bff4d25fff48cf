"""The one trainer: data with label noise, the jitted step, metrics, checkpoints.

``train(config, out_dir)`` runs a method end to end and writes ``metrics.jsonl`` (one
JSON object per epoch) and ``summary.json``; ``resume=True`` continues from the last
complete checkpoint and reaches the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxnoisy
from jaxnoisy import data as data_lib
from jaxnoisy import models as models_lib
from jaxnoisy import noise as noise_lib
from jaxnoisy.train import checkpoints
from jaxnoisy.train import step as step_lib
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.interface import ModelSpec
from jaxnoisy.train.methods import METHODS, plain_gradients


class NoisyData(NamedTuple):
  """The arrays a run trains and evaluates on (host numpy; the trainer puts them on device)."""

  train_images: np.ndarray
  train_labels: np.ndarray        # noisy labels, used for training
  train_true: np.ndarray          # true labels (for memorization and diagnostics)
  train_corrupted: np.ndarray     # bool mask: label was changed by the noise
  heldout_images: np.ndarray
  heldout_labels: np.ndarray      # noisy: model selection never sees clean labels
  clean_images: np.ndarray        # clean subset (true labels), for the meta methods
  clean_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  mean: tuple
  std: tuple
  noise_summary: dict


def noise_key(seed: int) -> jax.Array:
  """The PRNG key the label noise of a run with ``seed`` is drawn from."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def prepare_data(config: TrainConfig, dataset: Optional[data_lib.Dataset] = None) -> NoisyData:
  """Loads the dataset, corrupts the training labels, splits off held-out and clean sets.

  The noise is drawn on the whole training set from the seed (so it does not depend on
  the split sizes); the clean subset keeps its true labels; ``train_size`` then keeps
  a random subset of the remaining noisy training examples.
  """
  if dataset is None:
    dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir,
                                    tfds_data_dir=config.tfds_data_dir)
  true = np.asarray(dataset.train_labels, np.int32)
  noisy, corrupted = noise_lib.apply_noise(
      config.noise, true, noise_key(config.seed), dataset.num_classes, dataset=dataset.name,
      images=dataset.train_images, real_noisy_labels=dataset.noisy_label_sets)
  noisy, corrupted = np.asarray(noisy, np.int32), np.asarray(corrupted, bool)
  splits = data_lib.make_splits(len(true), heldout_size=config.heldout_size,
                                clean_size=config.clean_size, seed=config.seed)
  train_idx = splits.train
  if config.train_size is not None:
    if config.train_size > len(train_idx):
      raise ValueError(f"train_size must be in [1, {len(train_idx)}], got {config.train_size}")
    rng = np.random.default_rng(config.seed + 1)
    train_idx = np.sort(rng.choice(train_idx, config.train_size, replace=False))
  return NoisyData(
      train_images=dataset.train_images[train_idx], train_labels=noisy[train_idx],
      train_true=true[train_idx], train_corrupted=corrupted[train_idx],
      heldout_images=dataset.train_images[splits.heldout],
      heldout_labels=noisy[splits.heldout],
      clean_images=dataset.train_images[splits.clean], clean_labels=true[splits.clean],
      test_images=dataset.test_images, test_labels=np.asarray(dataset.test_labels, np.int32),
      num_classes=dataset.num_classes, mean=dataset.mean, std=dataset.std,
      noise_summary={
          "spec": config.noise,
          "realised_rate": float(noise_lib.noise_rate(true, noisy)),
          "realised_rate_train": float(corrupted[train_idx].mean()),
          "transition_matrix": noise_lib.transition_matrix(
              true, noisy, dataset.num_classes).round(4).tolist(),
      })


class Trainer:
  """Builds model, optimizer and jitted steps for a config; :func:`train` drives it."""

  def __init__(self, config: TrainConfig, data: NoisyData):
    self.config = config.validate()
    self.data = data
    self.mesh = step_lib.make_mesh(config.num_devices)
    n_dev = self.mesh.devices.size
    self.steps_per_epoch = len(data.train_labels) // config.batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f"batch_size must be at most the {len(data.train_labels)} "
                       f"training examples, got {config.batch_size}")
    self.total_steps = self.steps_per_epoch * config.epochs
    self.eval_chunk = -(-config.eval_batch_size // n_dev) * n_dev

    method = METHODS[config.method]
    if config.per_device_ascent and not method.sam_family:
      raise ValueError(f"per_device_ascent applies to the SAM-family methods, not "
                       f"{config.method!r}")
    if method.needs_clean and len(data.clean_labels) == 0:
      raise ValueError(f"clean_size must be in [1, {len(data.train_labels)}) for method "
                       f"{config.method!r} (it learns from a clean subset), got 0")
    self.method = method
    model = models_lib.make_model(config.model, data.num_classes,
                                  data.train_images.shape[1:], seed=config.seed)
    self.apply = model.apply
    axis = step_lib.DATA_AXIS if config.per_device_ascent else None
    self.learning_rate = self._schedule()
    self.tx = step_lib.make_optimizer(
        method.transform(config, axis, self.steps_per_epoch),
        learning_rate=self.learning_rate, momentum=config.momentum,
        weight_decay=config.weight_decay)
    self.replicated = NamedSharding(self.mesh, P())
    key = jax.random.key(config.seed)
    features = jax.eval_shape(
        lambda p, s: model.apply(p, s, jnp.zeros((1, *data.train_images.shape[1:])),
                                 train=False)[1], model.params, model.state)
    self.spec = ModelSpec(len(data.train_labels), data.num_classes, features.shape[-1],
                          self.steps_per_epoch)
    method_state = method.init_state(config, jax.random.fold_in(key, 4), self.spec)
    self.initial_state = jax.device_put(
        step_lib.TrainState(jnp.zeros((), jnp.int32), model.params, model.state,
                            self.tx.init(model.params), method_state), self.replicated)
    # Everything a step reads lives on the mesh already (see make_train_step).
    self.data_key = jax.device_put(jax.random.fold_in(key, 2), self.replicated)
    self.step_key = jax.device_put(jax.random.fold_in(key, 3), self.replicated)
    self.warmup_epochs = method.warmup_epochs(config)
    clean_batch = min(config.clean_batch_size, len(data.clean_labels))
    augment = config.augment if config.augment is not None else \
        data_lib.DATASET_INFO[config.dataset].augment
    build = lambda gradients, warmup: step_lib.make_train_step(
        self.apply, self.tx, gradients, self.mesh, batch_size=config.batch_size,
        clean_batch_size=clean_batch, mean=data.mean, std=data.std, augment=augment,
        learning_rate=self.learning_rate, per_device_ascent=config.per_device_ascent,
        warmup=warmup)
    self.train_step = build(method.gradients(config, self.spec), False)
    # Plain-SGD warm-up epochs (NCSAM): plain gradients, the transform skipped.
    self.warmup_step = (build(plain_gradients(config, self.spec), True)
                        if self.warmup_epochs else None)
    self.predict = step_lib.make_predict(self.apply, self.mesh, mean=data.mean, std=data.std)
    self._permute = jax.jit(step_lib.epoch_permutation, static_argnums=2,
                            out_shardings=self.replicated)
    # XLA's CPU client can deadlock with two multi-device programs in flight: a step's
    # part on one device waits in its all-reduce while the other device's part waits
    # for an execution slot held by the next, already dispatched step (seen in gdb with
    # 2 host devices on 2 cores). So on CPU with several devices each step completes
    # before the next is dispatched; accelerators keep asynchronous dispatch.
    self.sync_each_step = n_dev > 1 and self.mesh.devices.flat[0].platform == "cpu"
    put = lambda a: jax.device_put(a, self.replicated)
    # The clean subset is used only by methods that learn from it.
    clean = slice(None) if method.needs_clean else slice(0, 0)
    self.train_data = put((data.train_images, data.train_labels, data.clean_images[clean],
                           data.clean_labels[clean]))
    self.memorization_images = data.train_images[data.train_corrupted]
    self.memorization_labels = data.train_labels[data.train_corrupted]

  def _schedule(self):
    c = self.config
    if c.schedule == "constant":
      return c.learning_rate
    if c.schedule == "cosine":
      return optax.cosine_decay_schedule(c.learning_rate, self.total_steps)
    # "step": ×0.1 at each fraction of training in lr_boundaries (SANER: 50%, 75%).
    return optax.piecewise_constant_schedule(
        c.learning_rate, {int(f * self.total_steps): 0.1 for f in c.lr_boundaries})

  def accuracy(self, state, images, labels) -> float:
    pred = step_lib.predict_all(self.predict, state.params, state.model_state, images,
                                self.eval_chunk)
    return float(np.mean(pred == labels)) if len(labels) else float("nan")

  def evaluate(self, state) -> dict:
    d = self.data
    metrics = {
        "test_accuracy": self.accuracy(state, d.test_images, d.test_labels),
        "heldout_accuracy": self.accuracy(state, d.heldout_images, d.heldout_labels),
    }
    # Memorization: the corrupted training examples predicted with their noisy label.
    metrics["memorization"] = self.accuracy(state, self.memorization_images,
                                            self.memorization_labels)
    if self.method.epoch_metrics is not None:
      extra = self.method.epoch_metrics(state.method_state, self.data)
      metrics.update({k: float(v) for k, v in extra.items()})
    return metrics

  def permutation(self, epoch: int) -> jax.Array:
    """The order of the training examples in ``epoch``, replicated over the mesh."""
    return jax.block_until_ready(
        self._permute(self.data_key, np.int32(epoch), len(self.data.train_labels)))

  def run_epoch(self, state, epoch: int, start: int, end: int, progress=None):
    """Steps ``start..end-1`` of ``epoch``; returns (state, epoch means of the metrics).

    A ``KeyboardInterrupt`` becomes :class:`Interrupted` carrying the latest state.
    """
    perm = self.permutation(epoch)
    t = np.float32(epoch / self.config.epochs)  # NCSAM's t = epoch / total epochs
    step_fn = self.warmup_step if epoch < self.warmup_epochs else self.train_step
    history = []
    try:
      for i in range(start, end):
        state, metrics = step_fn(state, self.train_data, perm, np.int32(i), self.step_key, t)
        if self.sync_each_step:
          jax.block_until_ready(state)
        history.append(metrics)
        if progress is not None:
          progress.update(1)
    except KeyboardInterrupt:
      raise Interrupted(state) from None
    if not history:
      return state, {}
    stacked = jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *history)
    return state, {k: float(v) for k, v in stacked.items()}


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during an epoch, with the state of the last completed step."""

  def __init__(self, state):
    super().__init__()
    self.state = state


def write_atomic(path: str, text: str) -> None:
  """Writes a temp file beside ``path`` and renames it: readers never see half a file."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _read_metrics(path: str, upto_epoch: int) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if r["epoch"] <= upto_epoch]


def _write_metrics(path: str, rows: list[dict]) -> None:
  write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def train(config: TrainConfig, out_dir: str, *, resume: bool = False, progress=True,
          data: Optional[NoisyData] = None) -> dict:
  """Trains ``config`` and writes metrics, summary and checkpoints under ``out_dir``.

  ``progress``: True for a tqdm bar, False for none, or any object with ``update(n)``.
  On Ctrl-C the state of the last completed step is checkpointed and
  ``KeyboardInterrupt`` is re-raised; ``resume=True`` continues from there.
  """
  config = config.validate()
  os.makedirs(out_dir, exist_ok=True)
  if data is None:
    data = prepare_data(config)
  trainer = Trainer(config, data)
  metrics_path = os.path.join(out_dir, "metrics.jsonl")
  manager = checkpoints.manager(os.path.join(out_dir, "checkpoints"))

  state = trainer.initial_state
  rows: list[dict] = []
  elapsed = 0.0
  summary_path = os.path.join(out_dir, "summary.json")
  if resume and manager.latest_step() is not None:
    state, elapsed = checkpoints.restore(manager, state)
    if int(state.step) >= trainer.total_steps and os.path.exists(summary_path):
      with open(summary_path) as f:  # already finished: nothing to do
        return {"summary": json.load(f), "state": state,
                "metrics": _read_metrics(metrics_path, config.epochs)}
    done_epochs = int(state.step) // trainer.steps_per_epoch
    rows = _read_metrics(metrics_path, done_epochs - 1)
  elif not resume and manager.latest_step() is not None:
    raise FileExistsError(f"out_dir {out_dir} already holds checkpoints: pass --resume "
                          "to continue it or choose another --out")
  _write_metrics(metrics_path, rows)

  bar = None
  if progress is True:
    from tqdm import tqdm
    bar = tqdm(total=trainer.total_steps, initial=int(state.step), unit="step",
               desc=f"{config.method}", dynamic_ncols=True)
  elif progress:
    bar = progress
  t0 = time.perf_counter() - elapsed
  step_seconds: list[float] = []
  try:
    while int(state.step) < trainer.total_steps:
      epoch, start = divmod(int(state.step), trainer.steps_per_epoch)
      te = time.perf_counter()
      state, train_metrics = trainer.run_epoch(state, epoch, start, trainer.steps_per_epoch,
                                               bar)
      epoch_seconds = time.perf_counter() - te
      step_seconds.append(epoch_seconds / max(1, trainer.steps_per_epoch - start))
      row = {"epoch": epoch, "step": int(state.step), **train_metrics,
             **trainer.evaluate(state), "epoch_seconds": epoch_seconds}
      rows.append(row)
      _write_metrics(metrics_path, rows)
      checkpoints.save(manager, state, time.perf_counter() - t0)
      if hasattr(bar, "set_postfix"):
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", test=f"{row['test_accuracy']:.3f}",
                        mem=f"{row['memorization']:.3f}")
  except KeyboardInterrupt as interrupt:
    if isinstance(interrupt, Interrupted):
      state = interrupt.state
    # If Ctrl-C hit while a step held the donated state, that state is gone: the last
    # epoch's checkpoint stays the resume point.
    if not any(x.is_deleted() for x in jax.tree.leaves(state)):
      checkpoints.save(manager, state, time.perf_counter() - t0)
    manager.wait_until_finished()
    if hasattr(bar, "close"):
      bar.close()
    raise KeyboardInterrupt from None
  manager.wait_until_finished()
  if hasattr(bar, "close"):
    bar.close()

  best = max(rows, key=lambda r: r["heldout_accuracy"])
  summary = {
      "method": config.method,
      "test_accuracy": rows[-1]["test_accuracy"],
      "best_test_accuracy": best["test_accuracy"],
      "best_epoch": best["epoch"],
      "best_heldout_accuracy": best["heldout_accuracy"],
      "memorization": rows[-1]["memorization"],
      "seed": config.seed,
      "config": config.to_dict(),
      "noise": data.noise_summary,
      "num_train": int(len(data.train_labels)),
      "num_devices": int(trainer.mesh.devices.size),
      "ms_per_step": 1e3 * float(np.median(step_seconds)) if step_seconds else None,
      "wall_seconds": time.perf_counter() - t0,
      "versions": {"jaxnoisy": jaxnoisy.__version__, "jax": jax.__version__},
      "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
                 f"{jax.devices()[0].platform}",
  }
  write_atomic(summary_path, json.dumps(summary, indent=2))
  return {"summary": summary, "state": state, "metrics": rows}
