"""The jitted training and evaluation steps over a ("replica", "data") device mesh.

The step gathers its batch from device-resident arrays (the epoch's permutation is
computed in JAX too), so there is no host input pipeline. It trains R ≥ 1 independent
replicas (seeds, or values of a swept hyper-parameter) with ``jax.vmap``: the replica
axis is split over the mesh's "replica" axis and each replica's batch over "data".
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxnoisy.data.augment import augment_batch
from jaxnoisy.train.interface import StepInputs, cross_entropy_loss

REPLICA_AXIS = "replica"
DATA_AXIS = "data"


class TrainState(NamedTuple):
  """Everything that changes during training (checkpointed as one pytree)."""

  step: jax.Array          # global step count
  params: Any
  model_state: Any         # batch statistics
  opt_state: Any
  method_state: Any        # the method's own state (e.g. per-example weights), or {}


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


def make_optimizer(method_transform: optax.GradientTransformation, *, learning_rate,
                   momentum: float, weight_decay: float):
  """method transform → weight decay → SGD with momentum.

  Weight decay is added after the method's transform (as SANER's reference code does),
  so it never enters the SAM ascent gradient.
  """
  return optax.chain(method_transform, optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum))


def epoch_permutation(key: jax.Array, epoch, n: int) -> jax.Array:
  """The order of the training examples in ``epoch`` (a pure function of key, epoch)."""
  return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def gather_batch(images, labels, perm, index, key, *, batch_size: int, mean, std,
                 augment: bool = False):
  """Batch ``index`` of the epoch: positions from the permutation, gathered on device,
  randomly cropped (padding 4) and flipped when ``augment`` (keyed: reproducible)."""
  idx = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
  x = images[idx]
  if augment:
    x = augment_batch(key, x)
  return normalize(x, mean, std), labels[idx], idx


def make_train_step(apply: Callable, build: Callable, mesh: Mesh, *, batch_size: int,
                    clean_batch_size: int, mean, std, per_device_ascent: bool,
                    augment: bool = False, warmup: bool = False, vmap_replicas: bool = True):
  """Returns the jitted ``step(state, data, perm, index, key, progress, hyper)``.

  Every argument but ``index`` and ``progress`` carries a leading replica axis R:
  ``state`` the replicas' :class:`TrainState`, ``data`` their ``(images, labels,
  clean_images, clean_labels)``, ``perm`` their epoch permutations, ``key`` their PRNG
  keys (each step folds in its step count) and ``hyper`` a dict of (R,) arrays of the
  swept hyper-parameters ({} when none is swept). ``index`` is the step within the
  epoch and ``progress`` the training progress t ∈ [0, 1] (passed to the transform).
  Pass arrays already placed on the mesh and scalars as NumPy values, so that no call
  copies between devices. Returns ``(state, metrics)``, metrics of shape (R,).

  ``build(hyper) -> (tx, gradients, learning_rate)`` makes the optimizer chain, the
  method's ``StepInputs -> Gradients`` and the learning rate (a float or an Optax
  schedule) of one replica; under a sweep it receives that replica's traced values.
  ``augment`` turns on random crops and flips of the training batch (CIFAR).
  ``warmup=True`` builds the step of a method's plain-SGD warm-up epochs: the
  transform receives ``warmup=True`` (see ``methods.skip_during_warmup``).

  Parallelism: a ``jax.shard_map`` over REPLICA_AXIS gives each device group its own
  replicas, which it runs with ``jax.vmap`` — or, with ``vmap_replicas=False``, one
  after another in the same program. On XLA:CPU vmapped convolutions become grouped
  convolutions, slower than separate steps (README: "Many seeds, a sweep"), also when
  a vmap over the whole replica axis was left to the partitioner; with one replica per
  group the local vmap has size 1 and the convolutions stay plain. Within a group,
  each replica's step is written on its global batch and ``jax.jit`` partitions it
  over DATA_AXIS (batch sharded, state replicated), so every gradient is the global
  one. With ``per_device_ascent`` the update runs under ``jax.shard_map``:
  each device computes its own gradients, the SAM-family transform forms its ε from
  them and averages g_SAM over DATA_AXIS.
  """
  n_data = mesh.shape[DATA_AXIS]
  if batch_size % n_data:
    raise ValueError(f"batch_size must be a multiple of the {n_data} devices per replica, "
                     f"got {batch_size}")

  def update(state: TrainState, x, y, index, clean_x, clean_y, key, progress, hyper,
             axis=None):
    tx, gradients, learning_rate = build(hyper)
    average = (lambda t: jax.lax.pmean(t, axis)) if axis else (lambda t: t)
    if axis:  # each device draws its own random numbers (e.g. NCSAM's simulated flips)
      key = jax.random.fold_in(key, jax.lax.axis_index(axis))
    model_apply = lambda p, inputs: apply(p, state.model_state, inputs, train=True)
    lr = learning_rate(state.step) if callable(learning_rate) else learning_rate
    out = gradients(StepInputs(model_apply, state.params, state.method_state, x, y, index,
                               clean_x, clean_y, key, state.opt_state, state.step,
                               jnp.asarray(lr, jnp.float32)))

    # The SAM family's gradient at perturbed weights.
    grad_fn = jax.grad(cross_entropy_loss(model_apply, x, y), has_aux=True)

    extra = dict(out.extra_args, progress=progress)
    if warmup:
      extra["warmup"] = True
    # Per-device ascent: the transform gets this device's own gradients and averages
    # g_SAM itself. Otherwise (axis None) everything is already global.
    updates, opt_state = tx.update(out.grads, state.opt_state, state.params,
                                   grad_fn=grad_fn, **extra)
    params = optax.apply_updates(state.params, updates)
    # Batch statistics of the first (unperturbed) pass.
    model_state = average(out.model_state)
    metrics = average({"train_loss": out.loss, **out.metrics})
    fractions = optax.tree_utils.tree_get(opt_state, "group_fractions")
    if fractions is not None:  # SANER's diagnostics (already averaged over devices)
      metrics.update({f"saner_group_{g}": v for g, v in fractions.items()})
    new_state = TrainState(state.step + 1, params, model_state, opt_state, out.method_state)
    return new_state, metrics

  def step(state, data, perm, index, key, progress, hyper):
    key = jax.random.fold_in(key, state.step)
    images, labels, clean_images, clean_labels = data
    batch = gather_batch(images, labels, perm, index, jax.random.fold_in(key, 2**31 - 2),
                         batch_size=batch_size, mean=mean, std=std, augment=augment)
    # Inside the shard_map over replicas: the context mesh (REPLICA_AXIS manual).
    batch_sharded = NamedSharding(jax.sharding.get_abstract_mesh(), P(DATA_AXIS))
    x, y, idx = jax.lax.with_sharding_constraint(batch, batch_sharded)
    if clean_labels.shape[0]:  # a fresh random clean batch (meta methods)
      cidx = jax.random.choice(jax.random.fold_in(key, 2**31 - 1), clean_labels.shape[0],
                               (clean_batch_size,), replace=False)
      clean_x, clean_y = normalize(clean_images[cidx], mean, std), clean_labels[cidx]
      if clean_batch_size % n_data == 0:  # sharded like the noisy batch, not repeated
        clean_x, clean_y = jax.lax.with_sharding_constraint((clean_x, clean_y), batch_sharded)
    else:
      clean_x, clean_y = normalize(clean_images, mean, std), clean_labels
    update_fn = update
    if per_device_ascent:  # nested in the shard_map over replicas: its context mesh
      update_fn = jax.shard_map(
          functools.partial(update, axis=DATA_AXIS), mesh=jax.sharding.get_abstract_mesh(),
          in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P(), P(), P(), P(), P()),
          out_specs=(P(), P()), check_vma=False, axis_names={DATA_AXIS})
    return update_fn(state, x, y, idx, clean_x, clean_y, key, progress, hyper)

  in_axes = (0, 0, 0, None, 0, None, 0)

  def local_step(*args):  # this device group's replicas
    if vmap_replicas:
      return jax.vmap(step, in_axes=in_axes)(*args)
    count = args[0].step.shape[0]
    outs = [step(*(a if ax is None else replica(a, i) for a, ax in zip(args, in_axes)))
            for i in range(count)]
    return jax.tree.map(lambda *v: jnp.stack(v), *outs)

  r = P(REPLICA_AXIS)
  replicated_step = jax.shard_map(
      local_step, mesh=mesh,
      in_specs=(r, r, r, P(), r, P(), r), out_specs=(r, r), axis_names={REPLICA_AXIS},
      check_vma=False)
  by_replica = NamedSharding(mesh, r)
  return jax.jit(replicated_step, donate_argnums=(0,), out_shardings=(by_replica, by_replica))


def make_predict(apply: Callable, mesh: Mesh, *, mean, std):
  """Returns a jitted ``predict(params, model_state, images_uint8) -> argmax labels``
  (computed batch-sharded, returned replicated: every process can read them)."""
  batch_sharded = NamedSharding(mesh, P(DATA_AXIS))

  def predict(params, model_state, images):
    x = jax.lax.with_sharding_constraint(normalize(images, mean, std), batch_sharded)
    logits, _, _ = apply(params, model_state, x, train=False)
    return jnp.argmax(logits, axis=-1)

  return jax.jit(predict, out_shardings=NamedSharding(mesh, P()))


def predict_all(predict, params, model_state, images: np.ndarray, chunk: int) -> np.ndarray:
  """Predictions for a whole host array, in fixed-size chunks (one compilation)."""
  n = images.shape[0]
  out = []
  for start in range(0, n, chunk):
    block = images[start:start + chunk]
    pad = chunk - block.shape[0]
    if pad:
      block = np.concatenate([block, np.zeros((pad,) + block.shape[1:], block.dtype)])
    out.append(np.asarray(predict(params, model_state, block))[:chunk - pad])
  return np.concatenate(out) if out else np.zeros((0,), np.int32)
