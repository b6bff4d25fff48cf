"""The one small interface between the trainer and a method.

A method is an entry of ``methods.METHODS``: the Optax transform placed before weight
decay and SGD, and a ``gradients`` function that turns a batch into the gradient the
transform receives (plus any extra arguments, per-method state and metrics).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import optax

from jaxnoisy.train.config import TrainConfig


def cross_entropy_loss(apply: Callable, x, y) -> Callable:
  """``params -> (mean cross-entropy on (x, y), new model state)``: the training loss,
  used for the plain gradient and for the SAM family's gradient at perturbed weights."""

  def loss_fn(params):
    logits, _, model_state = apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), model_state

  return loss_fn


class ModelSpec(NamedTuple):
  """Sizes a method may need to build its own state and networks."""

  num_train: int         # training examples (per-example state has this length)
  num_classes: int
  feature_dim: int       # width of the model's penultimate features
  steps_per_epoch: int


class StepInputs(NamedTuple):
  """What a method's ``gradients`` function sees in one training step."""

  apply: Callable        # (params, x) -> (logits, features, new_model_state), train mode
  params: Any
  method_state: Any      # the method's own state (e.g. per-example weights), or {}
  x: Any                 # the noisy batch, normalised
  y: Any                 # its (noisy) labels
  index: Any             # the batch's positions in the training set, shape (B,)
  clean_x: Any           # a clean batch (empty when the method needs none)
  clean_y: Any
  key: Any               # this step's PRNG key
  opt_state: Any         # the optimizer state, read-only (e.g. a momentum buffer)
  step: Any              # the global step count
  learning_rate: Any     # the real step's current learning rate (inner steps use it)


class Gradients(NamedTuple):
  """What a method's ``gradients`` function returns."""

  loss: Any              # the training loss (logged)
  grads: Any             # the gradient handed to the transform
  model_state: Any       # batch statistics of the (first) forward pass
  extra_args: dict       # extra arguments for the transform's update (e.g. noise_grads)
  method_state: Any      # the updated method state
  metrics: dict          # scalars averaged over the epoch and logged


class Method(NamedTuple):
  """How the trainer runs a method.

  transform: ``(config, axis_name, steps_per_epoch) -> GradientTransformation`` placed
    first in the chain; ``axis_name`` is the mesh axis for per-device ascent, or None.
  gradients: ``(config, spec: ModelSpec) -> (StepInputs -> Gradients)``.
  description: one line for ``--help``.
  warmup_epochs: ``config -> number of initial epochs of plain SGD``; during them the
    trainer runs a step with plain gradients and ``warmup=True`` passed to the transform.
  init_state: ``(config, key, spec: ModelSpec) -> method state`` (default: {}).
  epoch_metrics: ``(method_state, data: trainer.NoisyData) -> dict`` logged each epoch.
  needs_clean: whether the method uses the clean subset (requires ``clean_size > 0``).
  sam_family: whether per-device ascent applies.
  """

  transform: Callable[[TrainConfig, Optional[str], int], optax.GradientTransformation]
  gradients: Callable[[TrainConfig, ModelSpec], Callable[[StepInputs], Gradients]]
  description: str
  warmup_epochs: Callable[[TrainConfig], int] = lambda c: 0
  init_state: Callable[..., Any] = lambda config, key, spec: {}
  epoch_metrics: Optional[Callable[[Any, Any], dict]] = None
  needs_clean: bool = False
  sam_family: bool = False
