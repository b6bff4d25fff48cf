"""The jitted training and evaluation steps over a ("replica", "data") device mesh.

The step gathers its batch from device-resident arrays (the epoch's permutation is
computed in JAX too), so there is no host input pipeline. It trains R ≥ 1 independent
replicas (seeds, or values of a swept hyper-parameter) with ``jax.vmap``: the replica
axis is split over the mesh's "replica" axis and each replica's batch over "data".
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxnoisy.data.augment import augment_batch, center_crop
from jaxnoisy.train.interface import PhaseEnd, StepInputs, Stream

REPLICA_AXIS = "replica"
DATA_AXIS = "data"


class TrainState(NamedTuple):
  """Everything that changes during training (checkpointed as one pytree)."""

  step: jax.Array          # global count of noisy steps
  params: Any
  model_state: Any         # batch statistics
  opt_state: Any
  method_state: Any        # the method's own state (e.g. per-example weights), or {}
  phase_step: jax.Array    # steps of the epoch's phase done (reset by the noisy steps)


def make_mesh(num_devices: int | None = None, replicas: int = 1) -> Mesh:
  """A (replica, data) mesh: gcd(replicas, devices) groups of devices, each group
  training its share of the replicas data-parallel (one replica: all devices on data)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(f"num_devices must be in [1, {len(devices)}], got {num_devices}")
    devices = devices[:num_devices]
  groups = math.gcd(replicas, len(devices))
  return Mesh(np.asarray(devices).reshape(groups, -1), (REPLICA_AXIS, DATA_AXIS))


def replica(tree, r: int):
  """Replica ``r`` of a pytree with a leading replica axis."""
  return jax.tree.map(lambda a: a[r], tree)


def to_mesh(tree, sharding: NamedSharding):
  """Host arrays, the same on every process, as global arrays with ``sharding``.

  Each process fills only its own devices' shards (``jax.device_put`` accepts only
  shardings over this process's devices); PRNG keys travel as their key data.
  """
  def put(a):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(a)),
                                      impl=jax.random.key_impl(a))
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])
  return jax.block_until_ready(jax.tree.map(put, tree))


def to_host(tree):
  """Global arrays as host NumPy arrays (gathered from every process)."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils
  return jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)),
                      tree)


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 NHWC → float32, standardised per channel."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def make_optimizer(method_transform: optax.GradientTransformation, *, momentum: float,
                   weight_decay: float):
  """method transform → weight decay → SGD's momentum, with a unit step.

  Weight decay is added after the method's transform (as SANER's reference code does),
  so it never enters the SAM ascent gradient. The learning rate is not inside the
  optimizer: each step multiplies the update by the schedule at the noisy-step count
  ``state.step`` (``optax.sgd(lr)`` = −lr · trace, so this is the same update), because
  an optimizer's own schedule count would also advance on a method's phase steps (FBR's
  clean passes) and run the schedule out early.
  """
  return optax.chain(method_transform, optax.add_decayed_weights(weight_decay),
                     optax.sgd(1.0, momentum=momentum))


def epoch_permutation(key: jax.Array, epoch, n: int) -> jax.Array:
  """The order of the training examples in ``epoch`` (a pure function of key, epoch)."""
  return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def prepare_batch(x, labels, idx, key, *, mean, std, augment: bool = False,
                  crop: Optional[int] = None, padding_mode: str = "constant"):
  """The training batch of images ``x`` (uint8) with example indices ``idx``: randomly
  cropped (padding 4 with ``padding_mode``; with ``crop``, a ``crop``-sized window, no
  padding) and flipped when ``augment`` (keyed: reproducible), else center-cropped to
  ``crop``; normalized; the labels gathered by index. Returns ``(x, y, idx)``."""
  if augment:
    x = augment_batch(key, x, crop_padding=4 if crop is None else 0, crop_size=crop,
                      padding_mode=padding_mode)
  else:
    x = center_crop(x, crop)
  return normalize(x, mean, std), labels[idx], idx


def clean_batch_indices(key: jax.Array, position, *, num_clean: int, batch_size: int):
  """The example indices of clean batch number ``position`` (``position`` ≥ 0).

  The clean subset is read in passes, pass p a permutation drawn from
  ``fold_in(key, p)``, the batches back to back over the passes: batch k holds items
  k·b … k·b + b − 1 of that endless sequence, so every clean example is in every pass
  once and a batch that crosses the end of a pass takes the rest of it and the start of
  the next (L2RW's ``DataSet.next_batch``; the torch loaders of MLC, EBOMLC and MW-Net
  yield a smaller last batch instead, the same batches when b divides the subset).
  A pure function of (key, position): a resumed run reads the same batches.
  """
  m, b = num_clean, batch_size
  # p·m + o = position·b without overflowing int32: position = q·m + r.
  q, r = jnp.divmod(position, m)
  first, offset = q * b + (r * b) // m, (r * b) % m
  slots = offset + jnp.arange(b)  # < 2m, as b ≤ m
  perm = lambda p: jax.random.permutation(jax.random.fold_in(key, p), m)
  return jnp.where(slots < m, perm(first)[slots % m], perm(first + 1)[slots % m])


def gather_batch(images, labels, perm, index, key, *, batch_size: int, mean, std,
                 augment: bool = False, crop: Optional[int] = None,
                 padding_mode: str = "constant"):
  """Batch ``index`` of the epoch on the device-resident path: the example indices are
  a slice of the permutation, the images gathered on device; then :func:`prepare_batch`."""
  idx = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
  return prepare_batch(images[idx], labels, idx, key, mean=mean, std=std, augment=augment,
                       crop=crop, padding_mode=padding_mode)


def model_input(setup: "StepSetup", images):
  """Images as the model sees them outside training augmentation (clean batches,
  phases, evaluation): center-cropped to ``setup.crop``, normalized."""
  return normalize(center_crop(images, setup.crop), setup.mean, setup.std)


def replicate(step: Callable, mesh: Mesh, in_axes: tuple, *, vmap_replicas: bool,
              donate: bool = True):
  """The jitted program that runs ``step`` (one replica's) on every replica.

  ``in_axes`` marks each argument 0 (a leading replica axis) or None (shared). A
  ``jax.shard_map`` over REPLICA_AXIS gives each device group its own replicas, which
  it runs with ``jax.vmap`` — or, with ``vmap_replicas=False``, one after another in the
  same program. On XLA:CPU vmapped convolutions become grouped convolutions, slower than
  separate steps (README: "Many seeds, a sweep"), also when a vmap over the whole replica
  axis was left to the partitioner; with one replica per group the local vmap has size 1
  and the convolutions stay plain. The first argument (the state) is donated unless
  ``donate=False``; every output has a leading replica axis.
  """
  def local_step(*args):  # this device group's replicas
    if vmap_replicas:
      return jax.vmap(step, in_axes=in_axes)(*args)
    count = jax.tree.leaves(args[0])[0].shape[0]
    outs = [step(*(a if ax is None else replica(a, i) for a, ax in zip(args, in_axes)))
            for i in range(count)]
    return jax.tree.map(lambda *v: jnp.stack(v), *outs)

  r = P(REPLICA_AXIS)
  specs = tuple(P() if ax is None else r for ax in in_axes)
  replicated = jax.shard_map(local_step, mesh=mesh, in_specs=specs, out_specs=r,
                             axis_names={REPLICA_AXIS}, check_vma=False)
  return jax.jit(replicated, donate_argnums=(0,) if donate else (),
                 out_shardings=NamedSharding(mesh, r))


class StepSetup(NamedTuple):
  """What every program of a run shares: the model and the batch layout."""

  apply: Callable          # (params, model_state, x, train) -> (logits, features, state)
  build: Callable          # hyper -> (tx, learning_rate) of one replica
  mesh: Mesh
  mean: tuple
  std: tuple
  vmap_replicas: bool
  crop: Optional[int] = None  # the model's input size, cropped from larger stored images
  padding_mode: str = "constant"  # of the random crops' padding (augment.PADDING_MODES)


def _inputs(setup: StepSetup, state: TrainState, hyper, x, y, index, clean_x, clean_y,
            key) -> StepInputs:
  """The :class:`StepInputs` of one replica's step at ``state``."""
  _, learning_rate = setup.build(hyper)
  lr = learning_rate(state.step) if callable(learning_rate) else learning_rate
  model_apply = lambda p, inputs: setup.apply(p, state.model_state, inputs, train=True)
  apply_eval = lambda p, inputs: setup.apply(p, state.model_state, inputs, train=False)[:2]
  buffer = optax.tree_utils.tree_get(state.opt_state, "trace")  # SGD's momentum
  return StepInputs(apply=model_apply, params=state.params, method_state=state.method_state,
                    x=x, y=y, index=index, clean_x=clean_x, clean_y=clean_y, key=key,
                    step=state.step, learning_rate=jnp.asarray(lr, jnp.float32),
                    apply_eval=apply_eval, momentum_buffer=buffer)


def _apply_update(tx, state: TrainState, inp: StepInputs, out, average, *, phase_step,
                  step_increment: int, state_metrics=None, **extra):
  """The optimizer's step from the method's gradients; returns (new state, metrics)."""
  start = inp.params if out.step_from is None else out.step_from  # EBOMLC: from w₁
  if out.loss_fn is not None:  # what a sharpness-aware transform differentiates
    extra = dict(extra, grad_fn=jax.grad(out.loss_fn, has_aux=True))
  updates, opt_state = tx.update(out.grads, state.opt_state, start,
                                 **dict(out.extra_args, **extra))
  # The learning rate at the noisy-step count (see make_optimizer).
  updates = jax.tree.map(lambda u: (inp.learning_rate * u).astype(u.dtype), updates)
  params = optax.apply_updates(start, updates)
  metrics = average({"train_loss": out.loss, **out.metrics})
  if state_metrics is not None:
    metrics.update(state_metrics(opt_state))
  new_state = TrainState(state.step + step_increment, params, average(out.model_state),
                         opt_state, out.method_state, phase_step)
  return new_state, metrics


def make_train_step(setup: StepSetup, gradients_fn: Callable, *, batch_size: int,
                    clean_batch_size: int, per_device_ascent: bool, augment: bool = False,
                    warmup: bool = False, state_metrics: Optional[Callable] = None,
                    streamed: bool = False, clean_epoch_steps: Optional[int] = None):
  """Returns the jitted ``step(state, data, perm, index, key, progress, hyper)``, or
  with ``streamed=True`` ``step(state, data, images, idx, key, progress, hyper)``.

  Every argument but ``index`` and ``progress`` carries a leading replica axis R:
  ``state`` the replicas' :class:`TrainState`, ``data`` their ``(images, labels,
  clean_images, clean_labels)``, ``perm`` their epoch permutations, ``key`` their PRNG
  keys (each step folds in its step count) and ``hyper`` a dict of (R,) arrays of the
  swept hyper-parameters ({} when none is swept). ``index`` is the step within the
  epoch and ``progress`` the training progress t ∈ [0, 1] (passed to the transform).
  Streamed (:mod:`jaxnoisy.data.stream`), the batch's uint8 ``images`` (R, B, H, W, C)
  and example indices ``idx`` (R, B) come from the input pipeline instead (``data``'s
  images are then empty); the labels are still gathered on device by ``idx``.
  Pass arrays already placed on the mesh and scalars as NumPy values, so that no call
  copies between devices. Returns ``(state, metrics)``, metrics of shape (R,).

  ``gradients_fn(hyper) -> (StepInputs -> Gradients)`` is the method's gradient of one
  replica (under a sweep it receives that replica's traced values). ``augment`` turns
  on random crops and flips of the training batch (CIFAR) and of the clean batch. The
  clean batch of noisy step s is :func:`clean_batch_indices` at position s (passes over
  the clean subset that run on across epochs, as the MLC and EBOMLC authors'
  ``DataIterator``), or, with ``clean_epoch_steps``, at position s mod
  ``clean_epoch_steps`` with a key of the epoch's own (passes restarted every epoch, as
  MW-Net's ``iter(train_meta_loader)``). ``warmup=True`` builds the
  step of a method's warm-up epochs: the transform receives ``warmup=True``.
  ``state_metrics(opt_state) -> dict`` adds the method's metrics read from its state.

  Parallelism (see :func:`replicate` for the replicas): within a group, each replica's
  step is written on its global batch and ``jax.jit`` partitions it over DATA_AXIS
  (batch sharded, state replicated), so every gradient is the global one. With
  ``per_device_ascent`` the update runs under ``jax.shard_map``: each device computes
  its own gradients, the SAM-family transform forms its ε from them and averages g_SAM
  over DATA_AXIS.
  """
  n_data = setup.mesh.shape[DATA_AXIS]
  if batch_size % n_data:
    raise ValueError(f"batch_size must be a multiple of the {n_data} devices per replica, "
                     f"got {batch_size}")

  def update(state: TrainState, x, y, index, clean_x, clean_y, key, progress, hyper,
             axis=None):
    tx, _ = setup.build(hyper)
    average = (lambda t: jax.lax.pmean(t, axis)) if axis else (lambda t: t)
    if axis:  # each device draws its own random numbers (e.g. NCSAM's simulated flips)
      key = jax.random.fold_in(key, jax.lax.axis_index(axis))
    inp = _inputs(setup, state, hyper, x, y, index, clean_x, clean_y, key)
    out = gradients_fn(hyper)(inp)
    extra = {"progress": progress}
    if warmup:
      extra["warmup"] = True
    # Per-device ascent: the transform gets this device's own gradients and averages
    # g_SAM itself. Otherwise (axis None) everything is already global. The noisy steps
    # end any phase of the epoch (phase_step back to 0).
    return _apply_update(tx, state, inp, out, average, phase_step=jnp.zeros_like(
        state.phase_step), step_increment=1, state_metrics=state_metrics, **extra)

  def step(state, data, perm_or_images, index_or_idx, key, progress, hyper):
    clean_key = jax.random.fold_in(key, Stream.CLEAN_PASSES)  # not the step's
    key = jax.random.fold_in(key, state.step)
    images, labels, clean_images, clean_labels = data
    aug_key = jax.random.fold_in(key, Stream.AUGMENT)
    norm = dict(mean=setup.mean, std=setup.std, augment=augment, crop=setup.crop,
                padding_mode=setup.padding_mode)
    if streamed:  # the pipeline's images and example indices
      batch = prepare_batch(perm_or_images, labels, index_or_idx, aug_key, **norm)
    else:
      batch = gather_batch(images, labels, perm_or_images, index_or_idx, aug_key,
                           batch_size=batch_size, **norm)
    # Inside the shard_map over replicas: the context mesh (REPLICA_AXIS manual).
    batch_sharded = NamedSharding(jax.sharding.get_abstract_mesh(), P(DATA_AXIS))
    x, y, idx = jax.lax.with_sharding_constraint(batch, batch_sharded)
    if clean_labels.shape[0]:  # the clean batch of this step (meta methods)
      position = state.step
      if clean_epoch_steps is not None:  # passes restarted every epoch
        epoch, position = jnp.divmod(state.step, clean_epoch_steps)
        clean_key = jax.random.fold_in(clean_key, epoch)
      cidx = clean_batch_indices(clean_key, position, num_clean=clean_labels.shape[0],
                                 batch_size=clean_batch_size)
      clean_x, clean_y, _ = prepare_batch(clean_images[cidx], clean_labels, cidx,
                                          jax.random.fold_in(key, Stream.CLEAN_BATCH),
                                          **norm)
      if clean_batch_size % n_data == 0:  # sharded like the noisy batch, not repeated
        clean_x, clean_y = jax.lax.with_sharding_constraint((clean_x, clean_y), batch_sharded)
    else:
      clean_x, clean_y = model_input(setup, clean_images), clean_labels
    update_fn = update
    if per_device_ascent:  # nested in the shard_map over replicas: its context mesh
      update_fn = jax.shard_map(
          functools.partial(update, axis=DATA_AXIS), mesh=jax.sharding.get_abstract_mesh(),
          in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P(), P(), P(), P(), P()),
          out_specs=(P(), P()), check_vma=False, axis_names={DATA_AXIS})
    return update_fn(state, x, y, idx, clean_x, clean_y, key, progress, hyper)

  return replicate(step, setup.mesh, (0, 0, 0, 0 if streamed else None, 0, None, 0),
                   vmap_replicas=setup.vmap_replicas)


def phase_batches(num_clean: int, batch_size: int) -> tuple[int, int]:
  """``(batches per pass, size of the last)`` of a phase's passes over the clean subset:
  ``ceil(m / batch_size)`` batches, all of ``batch_size`` but the last, which holds the
  rest (``DataLoader(shuffle=True, drop_last=False)``: every example in every pass)."""
  batches = -(-num_clean // batch_size)
  return batches, num_clean - (batches - 1) * batch_size


def make_phase_step(setup: StepSetup, gradients_fn: Callable, *, num_clean: int,
                    batch_size: int):
  """Returns ``phase_step(state, data, key, hyper, index)``: step ``index`` (the host's
  count of ``state.phase_step``) of a method's per-epoch phase, on a batch of the clean
  subset (pass p = index // batches, reshuffled per epoch and pass; batches of
  :func:`phase_batches`), through the same optimizer as the noisy steps; it advances
  ``phase_step``, not ``step``. The full batches and the smaller last one of a pass are
  two jitted programs, each compiled once."""
  n_data = setup.mesh.shape[DATA_AXIS]
  batches, last = phase_batches(num_clean, batch_size)

  def make(size: int):
    def step(state, data, key, hyper):
      tx, _ = setup.build(hyper)
      _, _, clean_images, clean_labels = data
      # state.step is the epoch's first noisy step: keys of this epoch's phase.
      epoch_key = jax.random.fold_in(jax.random.fold_in(key, state.step), Stream.PHASE)
      pass_index, b = jnp.divmod(state.phase_step, batches)
      perm = jax.random.permutation(jax.random.fold_in(epoch_key, pass_index), num_clean)
      idx = jax.lax.dynamic_slice_in_dim(perm, b * batch_size, size)
      x, y = model_input(setup, clean_images[idx]), clean_labels[idx]
      if size % n_data == 0:  # sharded like the noisy batch (else whole on each device)
        batch_sharded = NamedSharding(jax.sharding.get_abstract_mesh(), P(DATA_AXIS))
        x, y, idx = jax.lax.with_sharding_constraint((x, y, idx), batch_sharded)
      step_key = jax.random.fold_in(jax.random.fold_in(epoch_key, Stream.CLEAN_BATCH),
                                    state.phase_step)
      inp = _inputs(setup, state, hyper, x, y, idx, x[:0], y[:0], step_key)
      out = gradients_fn(hyper)(inp)
      return _apply_update(tx, state, inp, out, lambda t: t,
                           phase_step=state.phase_step + 1, step_increment=0)

    return replicate(step, setup.mesh, (0, 0, 0, 0), vmap_replicas=setup.vmap_replicas)

  full = make(batch_size) if batches > 1 or last == batch_size else None
  rest = make(last) if last != batch_size else full

  def phase_step(state, data, key, hyper, index: int):
    program = rest if index % batches == batches - 1 else full
    return program(state, data, key, hyper)

  return phase_step


def make_phase_finish(setup: StepSetup, finish_fn: Callable):
  """Returns the jitted ``finish(state, data, hyper) -> state`` run after a phase's
  last step: the method's ``finish`` sees the whole clean subset (normalised)."""

  def finish(state, data, hyper):
    _, _, clean_images, clean_labels = data
    apply_eval = lambda p, inputs: setup.apply(p, state.model_state, inputs, train=False)[:2]
    method_state = finish_fn(hyper)(PhaseEnd(
        apply_eval, state.params, state.method_state,
        model_input(setup, clean_images), clean_labels, state.step))
    return state._replace(method_state=method_state)

  return replicate(finish, setup.mesh, (0, 0, 0), vmap_replicas=setup.vmap_replicas)


def make_evaluate(setup: StepSetup, *, chunk: int, num_sets: int):
  """Returns the jitted ``evaluate(state, images, labels, set_ids) -> (R, num_sets)``:
  per replica, the count of correct eval-mode predictions in each evaluation set.

  ``images`` (uint8), ``labels`` and ``set_ids`` carry a leading replica axis and hold
  every set of a replica back to back (set id −1 marks padding), their length a multiple
  of ``chunk`` (a multiple of the data-parallel devices): one program runs them all in
  chunks of ``chunk``, batch-sharded, and returns only the counts, so an evaluation is
  one dispatch and one small read instead of a round trip per chunk and set.
  """

  def evaluate(state, images, labels, set_ids):
    batch_sharded = NamedSharding(jax.sharding.get_abstract_mesh(), P(DATA_AXIS))

    def counts(block):
      x, y, ids = block
      x = jax.lax.with_sharding_constraint(model_input(setup, x), batch_sharded)
      logits = setup.apply(state.params, state.model_state, x, train=False)[0]
      hit = (jnp.argmax(logits, axis=-1) == y)[:, None]
      return jnp.sum(hit & (ids[:, None] == jnp.arange(num_sets)), axis=0, dtype=jnp.int32)

    blocks = jax.tree.map(lambda a: a.reshape(a.shape[0] // chunk, chunk, *a.shape[1:]),
                          (images, labels, set_ids))
    return jnp.sum(jax.lax.map(counts, blocks), axis=0)

  return replicate(evaluate, setup.mesh, (0, 0, 0, 0), vmap_replicas=setup.vmap_replicas,
                   donate=False)
