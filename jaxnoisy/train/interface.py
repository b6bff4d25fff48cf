"""The one small interface between the trainer and a method.

A method is a :class:`Method` entry of ``methods.METHODS``: its hyper-parameter records,
the Optax transform placed before weight decay and SGD, a ``gradients`` function that
turns a batch into the gradient the transform receives, and the lifecycle hooks it
fills (a plain-SGD warm-up, a per-epoch phase before the noisy batches, metrics of its
state). The trainer knows methods only through this interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import jax
import optax

if TYPE_CHECKING:
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
  steps_per_epoch: int   # noisy steps per epoch
  num_clean: int = 0     # examples of the clean subset (0 when the method uses none)


class StepInputs(NamedTuple):
  """What a method's ``gradients`` function sees in one training step."""

  apply: Callable        # (params, x) -> (logits, features, new_model_state), train mode
  params: Any
  method_state: Any      # the method's own state (e.g. per-example weights), or {}
  x: Any                 # the batch, normalised (noisy; in a phase: a clean batch)
  y: Any                 # its labels
  index: Any             # the batch's positions in its set, shape (B,)
  clean_x: Any           # a clean batch (empty when the method needs none)
  clean_y: Any
  key: Any               # this step's PRNG key
  step: Any              # the global count of noisy steps
  learning_rate: Any     # the schedule at `step`: scales the real update (inner steps use it)
  apply_eval: Callable   # (params, x) -> (logits, features), eval mode (no state change)
  # The trainer's SGD momentum buffer (read-only): look-aheads along its direction
  # μ·buf + g + λ·w (:func:`jaxnoisy.meta.sgd_direction`) read it without advancing it.
  momentum_buffer: Any


class Gradients(NamedTuple):
  """What a method's ``gradients`` function returns."""

  loss: Any              # the training loss (logged)
  grads: Any             # the gradient handed to the transform
  model_state: Any       # batch statistics of the (first) forward pass
  extra_args: dict       # extra arguments for the transform's update (e.g. noise_grads)
  method_state: Any      # the updated method state
  metrics: dict          # scalars averaged over the epoch and logged
  params: Any = None     # where the optimizer steps from (None: the step's params)


class PhaseEnd(NamedTuple):
  """What a per-epoch phase's ``finish`` sees once its last step is done."""

  apply_eval: Callable   # (params, x) -> (logits, features), eval mode
  params: Any
  method_state: Any
  clean_x: Any           # the whole clean subset, normalised
  clean_y: Any
  step: Any              # the global count of noisy steps (the epoch's first)


class EpochPhase(NamedTuple):
  """A method's program run at the start of every epoch, before its noisy batches.

  steps: ``(config, spec) -> int`` steps of the phase per epoch; each is a training step
    on a batch of the clean subset (passes reshuffled every time, every example in each,
    the last batch of a pass smaller when ``batch_size`` does not divide the subset),
    run through the same optimizer and learning rate as the noisy steps.
  gradients: ``(config, spec) -> (StepInputs -> Gradients)`` of a phase step.
  finish: ``(config, spec) -> (PhaseEnd -> method_state)``: after the last step (e.g.
    the clean subset's features in eval mode).
  batch_size: ``config -> int``, the phase's batch size (at most the clean subset's).
  The state records how many phase steps of the epoch are done, so a run interrupted
  inside the phase resumes there.
  """

  steps: Callable[["TrainConfig", ModelSpec], int]
  gradients: Callable[["TrainConfig", ModelSpec], Callable[[StepInputs], Gradients]]
  finish: Callable[["TrainConfig", ModelSpec], Callable[[PhaseEnd], Any]]
  batch_size: Callable[["TrainConfig"], int] = lambda config: config.batch_size


def plain_gradients(config: "TrainConfig", spec: Optional[ModelSpec] = None):
  """Cross-entropy on the batch's labels: one forward and one backward pass."""
  del config, spec

  def gradients(inp: StepInputs) -> Gradients:
    loss_fn = cross_entropy_loss(inp.apply, inp.x, inp.y)
    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(inp.params)
    return Gradients(loss, grads, model_state, {}, inp.method_state, {})

  return gradients


def identity_transform(config, axis, steps_per_epoch) -> optax.GradientTransformation:
  """The transform of methods that only change the gradient (SGD, the meta methods)."""
  del config, axis, steps_per_epoch
  return optax.identity()


class Method(NamedTuple):
  """How the trainer runs a method.

  transform: ``(config, axis_name, steps_per_epoch) -> GradientTransformation`` placed
    first in the chain; ``axis_name`` is the mesh axis for per-device ascent, or None.
  gradients: ``(config, spec: ModelSpec) -> (StepInputs -> Gradients)``.
  description: one line for ``--help``.
  hparams: the hyper-parameter records (frozen dataclasses of
    :func:`jaxnoisy.train.hparams.hp` fields) the method reads from the config.
  warmup_epochs: ``config -> number of initial epochs`` run with ``warmup_gradients``
    and ``warmup=True`` passed to the transform (which then acts as the warm-up
    optimizer; see ``sam_methods.during_warmup``).
  init_state: ``(config, key, spec: ModelSpec) -> method state`` (default: {}).
  epoch_metrics: ``(method_state, data: trainer.NoisyData) -> dict`` logged each epoch.
  state_metrics: ``opt_state -> dict`` of scalars read after every step (averaged over
    the epoch and logged), e.g. SANER's group fractions.
  epoch_phase: an :class:`EpochPhase` run before the noisy batches of every epoch.
  check_data: ``(config, data: trainer.NoisyData) -> None`` raises a one-line
    ``ValueError`` before anything compiles when the data cannot serve the method.
  needs_clean: whether the method uses the clean subset (requires ``clean_size > 0``).
  clean_passes_per_epoch: its clean batches restart their passes over the clean subset
    every epoch (MW-Net's loader) instead of running on across epochs.
  sam_family: whether per-device ascent applies.
  """

  transform: Callable[["TrainConfig", Optional[str], int], optax.GradientTransformation]
  gradients: Callable[["TrainConfig", ModelSpec], Callable[[StepInputs], Gradients]]
  description: str
  hparams: tuple = ()
  warmup_epochs: Callable[["TrainConfig"], int] = lambda c: 0
  warmup_gradients: Callable = plain_gradients
  init_state: Callable[..., Any] = lambda config, key, spec: {}
  epoch_metrics: Optional[Callable[[Any, Any], dict]] = None
  state_metrics: Optional[Callable[[Any], dict]] = None
  epoch_phase: Optional[EpochPhase] = None
  check_data: Optional[Callable[["TrainConfig", Any], None]] = None
  needs_clean: bool = False
  clean_passes_per_epoch: bool = False
  sam_family: bool = False
