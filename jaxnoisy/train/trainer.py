"""The one trainer: data with label noise, the jitted step, metrics, checkpoints.

``train(config, out_dir)`` runs a method end to end and writes ``metrics.jsonl`` (one
JSON object per epoch) and ``summary.json``; ``resume=True`` continues from the last
complete checkpoint and reaches the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxnoisy
from jaxnoisy import data as data_lib
from jaxnoisy import models as models_lib
from jaxnoisy import noise as noise_lib
from jaxnoisy.data import stream as stream_lib
from jaxnoisy.dataset_info import REAL_NOISE_DATASETS
from jaxnoisy.train import checkpoints
from jaxnoisy.train import divergence
from jaxnoisy.train import methods as methods_lib
from jaxnoisy.train import preemption
from jaxnoisy.train import rundir
from jaxnoisy.train import step as step_lib
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.interface import Method, ModelSpec, Stream
from jaxnoisy.train.methods import METHODS
from jaxnoisy.train.tensorboard import TensorBoard


class NoisyData(NamedTuple):
  """The arrays a run trains and evaluates on (host numpy; the trainer puts them on
  device). The images of a prepared ArrayRecord dataset are lazy
  (:class:`jaxnoisy.data.stream.RecordImages`): read when placed, or streamed."""

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
  return jax.random.fold_in(jax.random.key(seed), Stream.NOISE)


def prepare_data(config: TrainConfig, dataset: Optional[data_lib.Dataset] = None) -> NoisyData:
  """Loads the dataset, corrupts the training labels, splits off held-out and clean sets.

  The noise is drawn on the whole training set from the seed (so it does not depend on
  the split sizes); the clean subset keeps its true labels (drawn from the dataset's
  own clean set when it has one, Clothing1M's); ``train_size`` then keeps a random
  subset of the remaining noisy training examples (``train_balanced``: at most
  ⌈train_size / classes⌉ of each noisy label). Where true labels are unknown (−1,
  Clothing1M) only the dataset's own noisy labels can be used, and corruption,
  memorization and the realised noise are measured where the true label is known.
  """
  if dataset is None:
    dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir,
                                    tfds_data_dir=config.tfds_data_dir)
  true = np.asarray(dataset.train_labels, np.int32)
  known = true >= 0
  kind = noise_lib.parse_noise_spec(config.noise).kind
  if not known.all() and kind not in REAL_NOISE_DATASETS:
    own = [f"{k}:noisy" for k, d in REAL_NOISE_DATASETS.items() if d == dataset.name]
    raise ValueError(f"noise {config.noise} is drawn from the true labels, unknown for "
                     f"{int((~known).sum())} training examples of {dataset.name}; use "
                     f"its own noisy labels: --noise {' or '.join(own) or '(none)'}")
  noisy, corrupted = noise_lib.apply_noise(
      config.noise, true, noise_key(config.seed), dataset.num_classes, dataset=dataset.name,
      images=dataset.train_images, real_noisy_labels=dataset.noisy_label_sets)
  noisy, corrupted = np.asarray(noisy, np.int32), np.asarray(corrupted, bool)
  given_clean = dataset.clean_images is not None
  splits = data_lib.make_splits(len(true), heldout_size=config.heldout_size,
                                clean_size=0 if given_clean else config.clean_size,
                                seed=config.seed)
  if given_clean:
    if config.clean_size > len(dataset.clean_labels):
      raise ValueError(f"clean_size must be in [0, {len(dataset.clean_labels)}] (the "
                       f"dataset's clean set), got {config.clean_size}")
    rng = np.random.default_rng(config.seed + 2)
    pick = np.sort(rng.choice(len(dataset.clean_labels), config.clean_size, replace=False))
    clean_images, clean_labels = dataset.clean_images[pick], dataset.clean_labels[pick]
  else:
    clean_images, clean_labels = dataset.train_images[splits.clean], true[splits.clean]
  train_idx = _train_subset(config, splits.train, noisy, dataset.num_classes)
  return NoisyData(
      train_images=dataset.train_images[train_idx], train_labels=noisy[train_idx],
      train_true=true[train_idx], train_corrupted=corrupted[train_idx],
      heldout_images=dataset.train_images[splits.heldout],
      heldout_labels=noisy[splits.heldout],
      clean_images=clean_images, clean_labels=np.asarray(clean_labels, np.int32),
      test_images=dataset.test_images, test_labels=np.asarray(dataset.test_labels, np.int32),
      num_classes=dataset.num_classes, mean=dataset.mean, std=dataset.std,
      noise_summary={
          "spec": config.noise,
          "true_labels_known": float(known.mean()),
          "realised_rate": float(noise_lib.noise_rate(true[known], noisy[known])),
          "realised_rate_train": float(corrupted[train_idx].sum() /
                                       max(known[train_idx].sum(), 1)),
          "transition_matrix": noise_lib.transition_matrix(
              true[known], noisy[known], dataset.num_classes).round(4).tolist(),
      })


def _train_subset(config: TrainConfig, train_idx: np.ndarray, noisy: np.ndarray,
                  num_classes: int) -> np.ndarray:
  """The training examples kept: all, or ``train_size`` of them drawn from the seed."""
  if config.train_size is None:
    return train_idx
  if config.train_size > len(train_idx):
    raise ValueError(f"train_size must be in [1, {len(train_idx)}], got {config.train_size}")
  rng = np.random.default_rng(config.seed + 1)
  if not config.train_balanced:
    return np.sort(rng.choice(train_idx, config.train_size, replace=False))
  cap = -(-config.train_size // num_classes)
  kept = [rng.permutation(train_idx[noisy[train_idx] == c])[:cap] for c in range(num_classes)]
  kept = np.concatenate(kept)
  return np.sort(rng.permutation(kept)[:config.train_size])


def _streams(config: TrainConfig, images, replicas: int) -> bool:
  """Whether the training batches are streamed (see ``input_path``)."""
  prepared = isinstance(images, stream_lib.RecordImages)
  if config.input_path == "stream" and not prepared:
    raise ValueError("input_path 'stream' reads a dataset prepared as ArrayRecord "
                     "(jaxnoisy prepare, then --data-dir); these images are in memory")
  streamed = prepared and (config.input_path == "stream" or (
      config.input_path == "auto" and images.nbytes > config.stream_above_gib * 2**30))
  if streamed and replicas > 1:
    raise ValueError(f"seeds and sweep must train one replica on the streaming input path "
                     f"(the training set exceeds stream_above_gib="
                     f"{config.stream_above_gib}), got {replicas}")
  return streamed


# The evaluation sets, in the order of Trainer.eval_data; memorization is the accuracy
# on the corrupted training examples against their noisy labels.
EVAL_SETS = ("test_accuracy", "heldout_accuracy", "memorization")


def _concat_sets(sets, length: int):
  """(images, labels, set ids) of ``sets`` back to back, padded to ``length`` (id −1)."""
  images = np.concatenate([x for x, _ in sets])
  pad = length - len(images)
  images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
  labels = np.concatenate([np.asarray(y, np.int32) for _, y in sets] +
                          [np.zeros(pad, np.int32)])
  ids = np.concatenate([np.full(len(y), i, np.int32) for i, (_, y) in enumerate(sets)] +
                       [np.full(pad, -1, np.int32)])
  return images, labels, ids


def stack(trees):
  """One pytree with a leading replica axis from a list of equally shaped pytrees."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def create_learning_rate_fn(config: TrainConfig, total_steps: int):
  """The learning rate: a float or an Optax schedule over ``total_steps``."""
  c = config
  if c.schedule == "constant":
    return c.learning_rate
  if c.schedule == "cosine":
    return optax.cosine_decay_schedule(c.learning_rate, total_steps)
  # "step": ×0.1 at each fraction of training in lr_boundaries (SANER: 50%, 75%).
  return optax.piecewise_constant_schedule(
      c.learning_rate, {int(f * total_steps): 0.1 for f in c.lr_boundaries})


def model_input_shape(config: TrainConfig, data: NoisyData) -> tuple:
  """The images' shape as the model sees them (cropped to ``crop_size``)."""
  shape = data.train_images.shape[1:]  # as stored
  crop = config.crop_size
  if crop is not None and crop > min(shape[:2]):
    raise ValueError(f"crop_size must be in [1, {min(shape[:2])}] (the stored images are "
                     f"{shape[0]}×{shape[1]}), got {crop}")
  return shape if crop is None else (crop, crop, shape[2])


def create_models(config: TrainConfig, num_classes: int, input_shape: tuple) -> list:
  """Each replica's model (its seed draws the initialisation), from ``init_params``'
  weights when given (a classifier of another class count stays fresh)."""
  models = [models_lib.make_model(config.model, num_classes, input_shape, seed=c.seed,
                                  compute_dtype=config.compute_dtype)
            for _, c in config.replicas()]
  if config.init_params is not None:
    models = [m._replace(**models_lib.load_init_params(
        {"params": m.params, "state": m.state}, config.init_params,
        keep_mismatched=("params/classifier",))) for m in models]
  return models


def create_spec(model, data: NoisyData, input_shape: tuple, steps_per_epoch: int,
                num_clean: int) -> ModelSpec:
  """The sizes a method builds its state from (the model's feature width included)."""
  features = jax.eval_shape(
      lambda p, s: model.apply(p, s, jnp.zeros((1, *input_shape)), train=False)[1],
      model.params, model.state)
  return ModelSpec(len(data.train_labels), data.num_classes, features.shape[-1],
                   steps_per_epoch, num_clean)


def create_train_state(config: TrainConfig, models: list, tx, spec: ModelSpec):
  """Every replica's initial :class:`~jaxnoisy.train.step.TrainState`, stacked (host
  arrays); the method's state from its own stream of the replica's seed."""
  states = []
  for m, (_, c) in zip(models, config.replicas()):
    key = jax.random.fold_in(jax.random.key(c.seed), Stream.METHOD_INIT)
    states.append(step_lib.TrainState(
        np.zeros((), np.int32), m.params, m.state, tx.init(m.params),
        methods_lib.build(c, spec).init_state(key), np.zeros((), np.int32)))
  return stack(states)


def create_eval_data(datas: list, chunk: int):
  """The evaluation sets of every replica back to back — test, held-out, and the
  corrupted training examples with their noisy label — padded to a multiple of
  ``chunk``: ``(stacked (images, labels, set ids), each replica's set sizes)``."""
  sets = [[(d.test_images, d.test_labels), (d.heldout_images, d.heldout_labels),
           (d.train_images[d.train_corrupted], d.train_labels[d.train_corrupted])]
          for d in datas]
  sizes = [[len(y) for _, y in s] for s in sets]
  length = -(-max(sum(n) for n in sizes) // chunk) * chunk
  return stack([_concat_sets(s, length) for s in sets]), sizes


class Programs(NamedTuple):
  """A run's compiled programs (see :mod:`jaxnoisy.train.step`)."""

  train: Callable             # a noisy step
  warmup: Optional[Callable]  # a noisy step of the method's warm-up epochs
  phase: Optional[Callable]   # a step of the method's per-epoch phase
  phase_finish: Optional[Callable]
  evaluate: Callable


def create_programs(config: TrainConfig, setup: step_lib.StepSetup, method_of: Callable,
                    method: Method, *, num_clean: int, phase_steps: int,
                    phase_batch_size: int, steps_per_epoch: int, streamed: bool,
                    chunk: int) -> Programs:
  """The jitted programs of a run; ``method_of(hyper)`` is a replica's method (its swept
  value traced), ``method`` the one built from the config (its static structure)."""
  augment = config.augment if config.augment is not None else \
      data_lib.DATASET_INFO[config.dataset].augment
  make = lambda gradients, warmup: step_lib.make_train_step(
      setup, lambda hyper: gradients(method_of(hyper)), batch_size=config.batch_size,
      clean_batch_size=min(config.clean_batch_size, num_clean), augment=augment,
      per_device_ascent=config.per_device_ascent, warmup=warmup,
      state_metrics=method.state_metrics, streamed=streamed,
      clean_epoch_steps=steps_per_epoch if method.clean_passes_per_epoch else None)
  phase = None
  if phase_steps:
    phase = step_lib.make_phase_step(setup, lambda hyper: method_of(hyper).phase.gradients,
                                     num_clean=num_clean, batch_size=phase_batch_size)
  finish = None
  if method.phase is not None:
    finish = step_lib.make_phase_finish(setup, lambda hyper: method_of(hyper).phase.finish)
  return Programs(
      train=make(lambda m: m.gradients, False),
      # The method's warm-up epochs (NCSAM): its warm-up gradients, warmup=True.
      warmup=make(lambda m: m.warmup_gradients, True) if method.warmup_epochs else None,
      phase=phase, phase_finish=finish,
      evaluate=step_lib.make_evaluate(setup, chunk=chunk, num_sets=len(EVAL_SETS)))


def check_data(config: TrainConfig, datas: list, method: Method) -> None:
  """One-line ``ValueError``s, before anything compiles, for data that cannot serve
  the method."""
  data = datas[0]
  if METHODS[config.method].needs_clean and len(data.clean_labels) == 0:
    raise ValueError(f"clean_size must be in [1, {len(data.train_labels)}) for method "
                     f"{config.method!r} (it learns from a clean subset), got 0")
  if len(data.train_labels) < config.batch_size:
    raise ValueError(f"batch_size must be at most the {len(data.train_labels)} "
                     f"training examples, got {config.batch_size}")
  if method.check_data is not None:
    for d in datas:
      method.check_data(d)


class Trainer:
  """Builds models, optimizer and jitted steps for a config; :func:`train` drives it.

  It trains the config's replicas (``config.replicas()``: seeds × swept values, one by
  default) side by side: ``data`` is one :class:`NoisyData` per replica (or a single
  one for a single replica) and every state leaf has a leading replica axis.
  """

  def __init__(self, config: TrainConfig, data):
    self.config = config = config.validate()
    self.replicas = config.replicas()
    datas = [data] if isinstance(data, NoisyData) else list(data)
    if len(datas) != len(self.replicas):
      raise ValueError(f"data must hold one NoisyData per replica ({len(self.replicas)}), "
                       f"got {len(datas)}")
    self.datas, self.data = datas, datas[0]
    data = self.data
    self.mesh = step_lib.make_mesh(config.num_devices, len(self.replicas))
    n_dev = self.mesh.shape[step_lib.DATA_AXIS]
    self.steps_per_epoch = len(data.train_labels) // config.batch_size
    self.total_steps = self.steps_per_epoch * config.epochs
    self.eval_chunk = -(-config.eval_batch_size // n_dev) * n_dev
    self.streamed = _streams(config, data.train_images, len(self.replicas))
    input_shape = model_input_shape(config, data)
    models = create_models(config, data.num_classes, input_shape)
    self.apply = models[0].apply
    # The clean subset is used only by methods that learn from it.
    clean = slice(None) if METHODS[config.method].needs_clean else slice(0, 0)
    num_clean = len(data.clean_labels[clean])
    self.spec = create_spec(models[0], data, input_shape, self.steps_per_epoch, num_clean)
    self.method = methods_lib.build(config, self.spec)
    check_data(config, datas, self.method)

    axis = step_lib.DATA_AXIS if config.per_device_ascent else None
    # A replica's method and optimizer (its swept value traced).
    method_of = lambda hyper: methods_lib.build(config.replace(**hyper), self.spec, axis)

    def build(hyper: dict):
      """(tx, learning_rate) of one replica (its swept value traced)."""
      c = config.replace(**hyper)
      tx = step_lib.make_optimizer(method_of(hyper).transform, momentum=c.momentum,
                                   weight_decay=c.weight_decay)
      return tx, create_learning_rate_fn(c, self.total_steps)

    self.tx = build({})[0]  # the state's structure does not depend on swept values
    self.by_replica = NamedSharding(self.mesh, P(step_lib.REPLICA_AXIS))
    put = lambda tree: step_lib.to_mesh(tree, self.by_replica)
    self.initial_state = put(create_train_state(config, models, self.tx, self.spec))
    # Everything a step reads lives on the mesh already (see make_train_step).
    keys = [jax.random.key(c.seed) for _, c in self.replicas]
    self.data_key = put(jnp.stack([jax.random.fold_in(k, Stream.DATA) for k in keys]))
    self.step_key = put(jnp.stack([jax.random.fold_in(k, Stream.STEP) for k in keys]))
    # The swept values, one per replica (values outer, seeds inner: config.replicas()).
    self.hyper = put({config.sweep[0]: np.repeat(np.asarray(config.sweep[1], np.float32),
                                                  config.seeds)} if config.sweep else {})
    self.warmup_epochs = self.method.warmup_epochs
    phase = self.method.phase
    # A phase's pass: ⌈m / batch size⌉ batches, the last smaller (step.phase_batches).
    phase_batch_size = min(phase.batch_size or config.batch_size, num_clean) if phase else 0
    self.phase_steps = phase.passes * step_lib.phase_batches(
        num_clean, phase_batch_size)[0] if phase else 0
    # A device's several replicas: by default vmapped on accelerators, one after another
    # on XLA:CPU (its vmapped convolutions are grouped ones, slower; see step.py).
    self.vmap_replicas = (config.vmap_replicas if config.vmap_replicas is not None
                          else self.mesh.devices.flat[0].platform != "cpu")
    setup = step_lib.StepSetup(self.apply, build, self.mesh, data.mean, data.std,
                               self.vmap_replicas, config.crop_size, config.padding_mode)
    self.programs = create_programs(config, setup, method_of, self.method,
                                    num_clean=num_clean, phase_steps=self.phase_steps,
                                    phase_batch_size=phase_batch_size,
                                    steps_per_epoch=self.steps_per_epoch,
                                    streamed=self.streamed, chunk=self.eval_chunk)
    # Host-side reads of sharded arrays run as one jitted program each, which the
    # caller waits for (see sync_each_step): no eager per-leaf multi-device ops.
    self.replica_state = jax.jit(step_lib.replica, static_argnums=1)
    self._epoch_means = jax.jit(
        lambda history: jax.tree.map(lambda *v: jnp.mean(jnp.stack(v), axis=0), *history))
    self._permute = jax.jit(
        jax.vmap(step_lib.epoch_permutation, in_axes=(0, None, None)), static_argnums=2,
        out_shardings=self.by_replica)
    # XLA's CPU client can deadlock with two multi-device programs in flight: a step's
    # part on one device waits in its all-reduce while the other device's part waits
    # for an execution slot held by the next, already dispatched step (seen in gdb with
    # 2 host devices on 2 cores). So on CPU with several devices each step completes
    # before the next is dispatched; accelerators keep asynchronous dispatch.
    self.sync_each_step = (self.mesh.devices.size > 1
                           and self.mesh.devices.flat[0].platform == "cpu")
    # Streamed, the training images stay in their files (an empty array stands in).
    shape = data.train_images.shape[1:]
    train_images = lambda d: np.zeros((0, *shape), np.uint8) if self.streamed \
        else d.train_images
    self.train_data = put(stack([(train_images(d), d.train_labels, d.clean_images[clean],
                                  d.clean_labels[clean]) for d in datas]))
    if self.streamed:
      self.stream = stream_lib.BatchStream(
          data.train_images, config.batch_size, process_index=jax.process_index(),
          process_count=jax.process_count(), num_threads=config.stream_threads)
      self.batch_sharding = NamedSharding(self.mesh, P(step_lib.REPLICA_AXIS,
                                                       step_lib.DATA_AXIS))
    eval_data, self.eval_sizes = create_eval_data(datas, self.eval_chunk)
    self.eval_data = put(eval_data)

  def evaluate(self, state) -> list[dict]:
    """Test, held-out and memorization accuracy (and the method's own metrics) of
    every replica."""
    counts = step_lib.to_host(jax.block_until_ready(self.programs.evaluate(state, *self.eval_data)))
    method_state = None
    if self.method.epoch_metrics is not None:
      method_state = step_lib.to_host(state.method_state)
    out = []
    for r, d in enumerate(self.datas):
      metrics = {name: float(c / n) if n else float("nan")
                 for name, c, n in zip(EVAL_SETS, counts[r], self.eval_sizes[r])}
      if method_state is not None:
        extra = self.method.epoch_metrics(jax.tree.map(lambda v: v[r], method_state), d)
        metrics.update({k: float(v) for k, v in extra.items()})
      out.append(metrics)
    return out

  def permutation(self, epoch: int) -> jax.Array:
    """Each replica's order of the training examples in ``epoch``, shape (R, n)."""
    return jax.block_until_ready(
        self._permute(self.data_key, np.int32(epoch), len(self.data.train_labels)))

  def batches(self, epoch: int, start: int, end: int):
    """The inputs of noisy steps ``start..end-1`` of ``epoch``, one per step, for
    :meth:`step`: the epoch's permutation and the step's index, or, streamed, the batch
    read from the files (this process's part) placed on the mesh."""
    perm = self.permutation(epoch)
    if not self.streamed:
      yield from ((perm, np.int32(i)) for i in range(start, end))
      return
    b = self.config.batch_size
    for x, idx in self.stream.epoch(step_lib.to_host(perm)[0], start, end):
      yield tuple(jax.make_array_from_process_local_data(
          self.batch_sharding, a[None], (1, b, *a.shape[1:])) for a in (x, idx))

  def step(self, state, batch, t: float, warmup: bool = False):
    """One training step of every replica on ``batch`` (from :meth:`batches`) at
    training progress ``t`` (NCSAM's t): ``(state, metrics of shape (R,))``."""
    step_fn = self.programs.warmup if warmup else self.programs.train
    state, metrics = step_fn(state, self.train_data, *batch, self.step_key,
                             np.float32(t), self.hyper)
    return self.sync(state), metrics

  def steps_taken(self, state) -> int:
    """Every step taken to reach ``state``: the noisy ones and those of the epochs'
    phases (the progress bar's count and the checkpoint's number)."""
    done, phase_done = (int(v[0]) for v in step_lib.to_host((state.step, state.phase_step)))
    return done + self.phase_steps * (-(-done // self.steps_per_epoch)) + phase_done

  def sync(self, state):
    if self.sync_each_step:
      jax.block_until_ready(state)
    return state

  def run_phase(self, state, bar=None, stop=None, history=None):
    """The method's per-epoch phase from the step it reached: its remaining steps over
    the clean subset, then its ``finish``; returns (state, its step metrics, appended to
    ``history`` when given). ``stop()`` (see :meth:`run_epoch`) is called after each
    step."""
    history = [] if history is None else history
    try:
      for k in range(int(step_lib.to_host(state.phase_step)[0]), self.phase_steps):
        state, metrics = self.programs.phase(state, self.train_data, self.step_key,
                                             self.hyper, k)
        state = self.sync(state)
        history.append(metrics)
        if bar is not None:
          bar.update(1)
        if stop is not None and stop():
          raise Interrupted(state)
    except Interrupted:
      raise
    except KeyboardInterrupt:
      raise Interrupted(state) from None
    if self.programs.phase_finish is not None:
      state = self.sync(self.programs.phase_finish(state, self.train_data, self.hyper))
    return state, history

  def run_epoch(self, state, epoch: int, start: int, end: int, bar=None,
                on_step=None, stop=None, history=None):
    """The epoch's phase (when ``start`` is 0 and the method has one), then noisy steps
    ``start..end-1`` of ``epoch``; returns (state, each replica's epoch means of the
    step metrics; the phase's as ``phase_<name>``). ``on_step(steps done, metrics)``
    is called after each noisy step. ``history``: the step metrics (noisy, phase) the
    epoch took before an interruption, carried by its checkpoint, so that a resumed
    epoch's means are those of an uninterrupted one.

    ``stop()`` is called after every step (phase and noisy); True ends the epoch there
    with :class:`Interrupted` (after its last step the epoch completes as usual). A
    ``KeyboardInterrupt`` also becomes :class:`Interrupted` carrying the latest state
    and the epoch's step metrics so far.
    """
    t = (epoch + 1) / self.config.epochs  # NCSAM's t = e / T, e the 1-based epoch
    history, phase_history = (list(h) for h in history or ([], []))
    try:
      if start == 0 and self.method.phase is not None:
        state, _ = self.run_phase(state, bar, stop, phase_history)
      for i, batch in zip(range(start, end), self.batches(epoch, start, end)):
        state, metrics = self.step(state, batch, t, warmup=epoch < self.warmup_epochs)
        history.append(metrics)
        if on_step is not None:
          on_step(epoch * self.steps_per_epoch + i + 1, metrics)
        if bar is not None:
          bar.update(1)
        if stop is not None and stop() and i + 1 < end:
          raise Interrupted(state)
    except Interrupted as e:
      raise Interrupted(e.state, (history, phase_history)) from None
    except KeyboardInterrupt:
      raise Interrupted(state, (history, phase_history)) from None
    out = [{} for _ in self.replicas]
    for prefix, h in (("", history), ("phase_", phase_history)):
      if h:
        means = step_lib.to_host(jax.block_until_ready(self._epoch_means(h)))
        for r in range(len(self.replicas)):
          out[r].update({prefix + k: float(v[r]) for k, v in means.items()})
    return state, out


class Interrupted(KeyboardInterrupt):
  """Ctrl-C or a stop request during an epoch, with the state of the last completed
  step and (from :meth:`Trainer.run_epoch`) the epoch's step metrics so far."""

  def __init__(self, state, history=([], [])):
    super().__init__()
    self.state, self.history = state, history


def history_record(history) -> dict:
  """The epoch's step metrics so far (noisy, phase) as JSON, for the checkpoint."""
  return {"epoch_history": [[{k: [str(v.dtype), v.tolist()]
                              for k, v in step_lib.to_host(m).items()} for m in h]
                            for h in history]}


def history_from_record(meta: dict):
  """:func:`history_record`'s metrics back as arrays (empty when there are none)."""
  return tuple([{k: np.asarray(v, dtype) for k, (dtype, v) in m.items()} for m in h]
               for h in meta.get("epoch_history", ([], [])))


def write_atomic(path: str, text: str) -> None:
  """Writes a temp file beside ``path`` and renames it: readers never see half a file
  (and a failed write, a full disk, leaves ``path`` as it was and no temp file)."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def _read_metrics(path: str, upto_epoch: int) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if r["epoch"] <= upto_epoch]


def _metrics_text(rows: list[dict]) -> str:
  return "".join(json.dumps(r) + "\n" for r in rows)


SUMMARY_KEYS = ("test_accuracy", "best_test_accuracy", "memorization")


def _summary(config: TrainConfig, data: NoisyData, rows: list[dict]) -> dict:
  best = max(rows, key=lambda r: r["heldout_accuracy"])
  return {
      "method": config.method,
      "status": "finished",
      "test_accuracy": rows[-1]["test_accuracy"],
      "best_test_accuracy": best["test_accuracy"],
      "best_epoch": best["epoch"],
      "best_heldout_accuracy": best["heldout_accuracy"],
      "memorization": rows[-1]["memorization"],
      "seed": config.seed,
      "config": config.to_dict(),
      "noise": data.noise_summary,
      "num_train": int(len(data.train_labels)),
  }


def _mean_std(summaries: list[dict]) -> dict:
  out = {}
  for k in SUMMARY_KEYS:
    v = np.asarray([s[k] for s in summaries], np.float64)
    out[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
              "n": len(v)}
  return out


def aggregate(config: TrainConfig, labels: list[str], summaries: list[dict]) -> dict:
  """The summary of a multi-replica run: mean ± std (sample std) over the seeds, per
  swept value when a hyper-parameter is swept."""
  out = {"method": config.method, "status": "finished", "replicas": labels,
         "seeds": config.seeds,
         "sweep": list(config.sweep) if config.sweep else None,
         "config": config.to_dict(), **_mean_std(summaries)}
  if config.sweep:
    name, values = config.sweep
    out["by_value"] = {f"{v:g}": _mean_std(summaries[i * config.seeds:(i + 1) * config.seeds])
                       for i, v in enumerate(values)}
  return out


def steps_done(state) -> int:
  """The step count of a state (its replicas step together)."""
  return int(step_lib.to_host(state.step)[0])


def train(config: TrainConfig, out_dir: str, *, resume: bool = False, progress_bar=True,
          data=None) -> dict:
  """Trains ``config`` and writes metrics, summary and checkpoints under ``out_dir``.

  One replica (the default) writes ``metrics.jsonl`` and ``summary.json`` in
  ``out_dir``; several (``seeds`` > 1 or a ``sweep``) write them per replica in
  ``out_dir/<label>/`` (the same files a single run of that seed/value writes) and an
  aggregate ``summary.json`` (mean ± std) in ``out_dir``. ``data``: one
  :class:`NoisyData` per replica (default: prepared from each replica's config).
  ``progress_bar``: True for a tqdm bar, False for none, or any object with ``update(n)``.

  A run on a shared cluster:

  * it holds ``out_dir``'s lock throughout; another live run there raises
    :class:`rundir.Locked` naming it, before anything is written;
  * on SIGTERM or Ctrl-C the step in flight completes, the state is checkpointed at
    that step and :class:`preemption.Stopped` (a ``KeyboardInterrupt``) is raised;
    ``resume=True`` continues from the newest checkpoint to the metrics of an
    uninterrupted run;
  * an epoch with a non-finite training loss or parameters ends the run with
    :class:`divergence.Diverged` (``summary.json`` records it) unless
    ``config.on_nonfinite`` is ``"continue"`` (the summary then records the first
    non-finite epoch);
  * a write that fails (full disk, read-only directory) raises
    :class:`rundir.WriteFailed`; the checkpoints already written stay.

  Returns ``{"summary", "replicas": [{"label", "summary", "state", "metrics"}]}``; with
  one replica also its ``state`` and ``metrics`` at the top level.
  """
  config = config.validate()
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ValueError(f"out_dir must be a run directory, but {out_dir} is a file")
  with rundir.hold(out_dir):
    return _train(config, out_dir, resume, progress_bar, data)


def _run_info(trainer: Trainer, step_seconds: list[float], wall_seconds: float) -> dict:
  return {
      "num_devices": int(trainer.mesh.devices.size),
      "num_processes": jax.process_count(),
      "ms_per_step": 1e3 * float(np.median(step_seconds)) if step_seconds else None,
      "wall_seconds": wall_seconds,
      "versions": {"jaxnoisy": jaxnoisy.__version__, "jax": jax.__version__},
      "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
                 f"{jax.devices()[0].platform}",
  }


def _train(config: TrainConfig, out_dir: str, resume: bool, progress_bar, data) -> dict:
  replicas = config.replicas()
  if data is None:  # replicas of one seed (a sweep) share its data
    by_seed = {}
    for _, c in replicas:
      if c.seed not in by_seed:
        by_seed[c.seed] = prepare_data(c)
    data = [by_seed[c.seed] for _, c in replicas]
  trainer = Trainer(config, data)
  single = len(replicas) == 1
  labels = [label for label, _ in replicas]
  dirs = [out_dir if single else os.path.join(out_dir, label) for label in labels]
  for d in dirs:
    os.makedirs(d, exist_ok=True)
  metrics_paths = [os.path.join(d, "metrics.jsonl") for d in dirs]
  summary_path = os.path.join(out_dir, "summary.json")
  manager = checkpoints.manager(os.path.join(out_dir, "checkpoints"))

  def write(path, text):
    with rundir.writing(os.path.basename(path), os.path.dirname(path) or ".",
                        manager.latest_step):
      write_atomic(path, text)

  def result(state, rows, summaries, summary):
    reps = [{"label": label, "summary": s, "metrics": rw,
             "state": jax.block_until_ready(trainer.replica_state(state, r))}
            for r, (label, s, rw) in enumerate(zip(labels, summaries, rows))]
    out = {"summary": summary, "replicas": reps}
    if single:
      out.update(state=reps[0]["state"], metrics=reps[0]["metrics"])
    return out

  state = trainer.initial_state
  rows: list[list[dict]] = [[] for _ in replicas]
  meta = {"elapsed_seconds": 0.0}
  if resume and manager.latest_step() is not None:
    state, meta = checkpoints.restore(
        manager, state, warn=lambda m: print(f"jaxnoisy: {m}", file=sys.stderr))
    done_steps = steps_done(state)
    if done_steps >= trainer.total_steps and os.path.exists(summary_path):
      rows = [_read_metrics(p, config.epochs) for p in metrics_paths]
      summaries = []
      for d in dirs:  # already finished: nothing to do
        with open(os.path.join(d, "summary.json")) as f:
          summaries.append(json.load(f))
      with open(summary_path) as f:
        return result(state, rows, summaries, json.load(f))
    rows = [_read_metrics(p, done_steps // trainer.steps_per_epoch - 1)
            for p in metrics_paths]
  elif not resume and manager.latest_step() is not None:
    raise FileExistsError(f"out_dir {out_dir} already holds checkpoints: pass --resume "
                          "to continue it or choose another --out")
  primary = jax.process_index() == 0  # one process writes the run's files
  for p, r in zip(metrics_paths, rows):
    if primary:
      write(p, _metrics_text(r))

  bar = None
  if progress_bar is True:
    from tqdm import tqdm
    bar = tqdm(total=trainer.total_steps + trainer.phase_steps * config.epochs,
               initial=trainer.steps_taken(state), unit="step",
               desc=f"{config.method}" + ("" if single else f" ×{len(replicas)}"),
               dynamic_ncols=True)
  elif progress_bar:
    bar = progress_bar
  tb = None
  if config.tensorboard and primary:
    with rundir.writing("TensorBoard events", os.path.join(out_dir, "tb"),
                        manager.latest_step):
      tb = TensorBoard(out_dir, labels, steps_done(state))

  def log(r, step, values, prefix):
    with rundir.writing("TensorBoard events", tb.dirs[r], manager.latest_step):
      tb.scalars(r, step, values, prefix)

  on_step = None
  if config.tensorboard and config.log_every:
    def on_step(step, metrics):
      if step % config.log_every == 0:
        losses = step_lib.to_host(metrics["train_loss"])  # every process: may gather
        for r in range(len(replicas) if tb is not None else 0):
          log(r, step, {"train_loss": float(losses[r])}, "step/")
  t0 = time.perf_counter() - meta["elapsed_seconds"]
  history = history_from_record(meta)  # the resumed epoch's steps before the stop
  step_seconds: list[float] = []
  nonfinite: dict[int, dict] = {}  # replica → its first non-finite epoch (continue)
  stop = preemption.Listener(manager, trainer.steps_taken(state))
  try:
    with stop:
      while steps_done(state) < trainer.total_steps:
        epoch, start = divmod(steps_done(state), trainer.steps_per_epoch)
        te = time.perf_counter()
        state, train_metrics = trainer.run_epoch(
            state, epoch, start, trainer.steps_per_epoch, bar, on_step, stop, history)
        history = None
        epoch_seconds = time.perf_counter() - te
        step_seconds.append(epoch_seconds / max(1, trainer.steps_per_epoch - start))
        bad = divergence.nonfinite(
            train_metrics, step_lib.to_host(divergence.params_finite(state.params)))
        if bad:
          record = divergence.record(
              method=config.method, epoch=epoch,
              steps=(epoch * (trainer.steps_per_epoch + trainer.phase_steps) + 1,
                     trainer.steps_taken(state)),
              replicas=[] if single else [labels[r] for r in bad],
              last_checkpoint=manager.latest_step(), checkpoint_dir=str(manager.directory),
              learning_rate=config.learning_rate)
          if config.on_nonfinite == "stop":
            raise divergence.Diverged(record)
          for r in bad:
            nonfinite.setdefault(r, record)
        te = time.perf_counter()
        evals = trainer.evaluate(state)
        eval_seconds = time.perf_counter() - te
        for r, p in enumerate(metrics_paths):
          rows[r].append({"epoch": epoch, "step": steps_done(state), **train_metrics[r],
                          **evals[r], "epoch_seconds": epoch_seconds,
                          "eval_seconds": eval_seconds})
          if primary:
            write(p, _metrics_text(rows[r]))
          if tb is not None:
            log(r, steps_done(state), {k: v for k, v in rows[r][-1].items()
                                       if k not in ("epoch", "step")}, "epoch/")
        checkpoints.save(manager, state, time.perf_counter() - t0, trainer.steps_taken(state))
        if hasattr(bar, "set_postfix"):
          row = rows[0][-1]
          bar.set_postfix(loss=f"{row['train_loss']:.3f}", test=f"{row['test_accuracy']:.3f}",
                          mem=f"{row['memorization']:.3f}")
        if stop.stopping:  # asked during the epoch's last step: it is saved
          raise Interrupted(state)
  except KeyboardInterrupt as interrupt:
    extra = {}
    if isinstance(interrupt, Interrupted):
      state, extra = interrupt.state, history_record(interrupt.history)
    # If a second Ctrl-C hit while a step held the donated state, that state is gone:
    # the last checkpoint stays the resume point.
    if not any(x.is_deleted() for x in jax.tree.leaves(state)):
      checkpoints.save(manager, state, time.perf_counter() - t0, trainer.steps_taken(state),
                       extra)
    manager.wait_until_finished()
    raise preemption.Stopped(stop.signum or signal.SIGINT, manager.latest_step(),
                             str(manager.directory)) from None
  except divergence.Diverged as diverged:
    if primary:
      write(summary_path, json.dumps({
          "method": config.method, "status": "diverged", "diverged": diverged.record,
          "epochs_finished": len(rows[0]), "replicas": None if single else labels,
          "seed": config.seed, "config": config.to_dict(),
          **_run_info(trainer, step_seconds, time.perf_counter() - t0)}, indent=2))
    raise
  finally:
    if hasattr(bar, "close"):
      bar.close()
    if tb is not None:
      with contextlib.suppress(OSError):  # a full disk: the write that failed says so
        tb.close()
  manager.wait_until_finished()

  run_info = _run_info(trainer, step_seconds, time.perf_counter() - t0)
  summaries = [{**_summary(c, d, rw), **({"nonfinite": nonfinite[r]} if r in nonfinite
                                         else {}), **run_info}
               for r, ((_, c), d, rw) in enumerate(zip(replicas, trainer.datas, rows))]
  summary = summaries[0] if single else {
      **aggregate(config, labels, summaries), **run_info}
  if primary:
    if not single:
      for d, s in zip(dirs, summaries):
        write(os.path.join(d, "summary.json"), json.dumps(s, indent=2))
    write(summary_path, json.dumps(summary, indent=2))
  return result(state, rows, summaries, summary)
