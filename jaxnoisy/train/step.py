"""The jitted training and evaluation steps, data-parallel over a one-axis device mesh.

The step gathers its batch from device-resident arrays (the epoch's permutation is
computed in JAX too), so there is no host input pipeline. Gradients are computed per
device inside ``jax.shard_map``: the default averages them over the mesh before the
method's transform (global SAM ascent); with per-device ascent the transform receives
each device's own gradient and averages g_SAM itself over ``DATA_AXIS``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


class TrainState(NamedTuple):
  """Everything that changes during training (checkpointed as one pytree)."""

  step: jax.Array          # global step count
  params: Any
  model_state: Any         # batch statistics
  opt_state: Any


def make_mesh(num_devices: int | None = None) -> Mesh:
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(f"num_devices must be in [1, {len(devices)}], got {num_devices}")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 NHWC → float32, standardised per channel."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def cross_entropy(logits, labels) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


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


def gather_batch(images, labels, perm, index, *, batch_size: int, mean, std):
  """Batch ``index`` of the epoch: indices from the permutation, gathered on device."""
  idx = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
  return normalize(images[idx], mean, std), labels[idx]


def make_train_step(apply: Callable, tx: optax.GradientTransformation, gradients: Callable,
                    mesh: Mesh, *, batch_size: int, mean, std, per_device_ascent: bool,
                    warmup: bool = False):
  """Returns ``step(state, images, labels, perm, index, key, progress) -> (state, metrics)``.

  ``images``/``labels`` are the whole training set on device, ``perm`` the epoch's
  permutation, ``index`` the step within the epoch, ``key`` this step's PRNG key and
  ``progress`` the training progress t ∈ [0, 1] (passed to the transform).
  ``gradients`` is the method's ``(logits_fn, params, labels, key) -> (loss, grads,
  aux, extra_args)``. ``metrics`` holds the loss and, for SANER, the group fractions.
  ``warmup=True`` builds the step of a method's plain-SGD warm-up epochs: the
  transform receives ``warmup=True`` (see ``methods.skip_during_warmup``).
  """
  n_dev = mesh.devices.size
  if batch_size % n_dev:
    raise ValueError(f"batch_size must be a multiple of the {n_dev} devices, got {batch_size}")
  replicated = NamedSharding(mesh, P())
  batch_sharded = NamedSharding(mesh, P(DATA_AXIS))

  def local_update(state: TrainState, x, y, key, progress):
    """One device's share: runs under shard_map with this device's batch shard."""

    def logits_fn(params):
      logits, _, new_model_state = apply(params, state.model_state, x, train=True)
      return logits, new_model_state

    def grad_and_aux(params):
      loss_fn = lambda p: (lambda out: (cross_entropy(out[0], y), out[1]))(logits_fn(p))
      return jax.grad(loss_fn, has_aux=True)(params)

    # Each device draws its own random numbers (e.g. NCSAM's simulated flips).
    key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
    loss, grads, model_state, extra = gradients(logits_fn, state.params, y, key)
    if per_device_ascent:
      # The transform needs this device's own gradients to form a per-device ε.
      grad_fn = grad_and_aux
    else:
      grads, extra = jax.lax.pmean((grads, extra), DATA_AXIS)
      grad_fn = lambda p: jax.lax.pmean(grad_and_aux(p), DATA_AXIS)
    # Batch statistics of the first (unperturbed) pass, averaged over devices.
    model_state = jax.lax.pmean(model_state, DATA_AXIS)
    if warmup:
      extra = {**extra, "warmup": True}
    updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn,
                                   progress=progress, **extra)
    params = optax.apply_updates(state.params, updates)
    metrics = {"train_loss": jax.lax.pmean(loss, DATA_AXIS)}
    fractions = optax.tree_utils.tree_get(opt_state, "group_fractions")
    if fractions is not None:  # SANER's diagnostics (already averaged over devices)
      metrics.update({f"saner_group_{g}": v for g, v in fractions.items()})
    return TrainState(state.step + 1, params, model_state, opt_state), metrics

  sharded_update = jax.shard_map(
      local_update, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(), P()),
      out_specs=(P(), P()), check_vma=False)

  def step(state, images, labels, perm, index, key, progress):
    x, y = gather_batch(images, labels, perm, index, batch_size=batch_size, mean=mean, std=std)
    x = jax.lax.with_sharding_constraint(x, batch_sharded)
    y = jax.lax.with_sharding_constraint(y, batch_sharded)
    return sharded_update(state, x, y, key, progress)

  return jax.jit(step, donate_argnums=(0,), out_shardings=(replicated, replicated))


def make_predict(apply: Callable, mesh: Mesh, *, mean, std):
  """Returns a jitted ``predict(params, model_state, images_uint8) -> argmax labels``."""
  batch_sharded = NamedSharding(mesh, P(DATA_AXIS))

  def predict(params, model_state, images):
    x = jax.lax.with_sharding_constraint(normalize(images, mean, std), batch_sharded)
    logits, _, _ = apply(params, model_state, x, train=False)
    return jnp.argmax(logits, axis=-1)

  return jax.jit(predict)


def predict_all(predict, params, model_state, images: jax.Array, chunk: int) -> np.ndarray:
  """Predictions for a whole array, in fixed-size chunks (one compilation)."""
  n = images.shape[0]
  out = []
  for start in range(0, n, chunk):
    block = images[start:start + chunk]
    pad = chunk - block.shape[0]
    if pad:
      block = jnp.concatenate([block, jnp.zeros((pad,) + block.shape[1:], block.dtype)])
    out.append(np.asarray(predict(params, model_state, block))[:chunk - pad])
  return np.concatenate(out) if out else np.zeros((0,), np.int32)
