"""The one small interface between the trainer and a method.

A method is registered as a :class:`Registration` (``methods.METHODS``): its statically
typed hyper-parameter record and one factory, ``build(record, RunContext) -> Method``.
The :class:`Method` it returns is everything the trainer runs: the Optax transform
placed before weight decay and SGD, the ``gradients`` function that turns a batch into
the gradient the transform receives, the method's state, and the lifecycle pieces it
fills (a plain-SGD warm-up, a per-epoch phase before the noisy batches, metrics). The
trainer knows methods only through this interface and never names one.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import jax
import optax

if TYPE_CHECKING:
  from jaxnoisy.train.config import TrainConfig


class Stream(enum.IntEnum):
  """The run's random streams: each is ``jax.random.fold_in(parent, Stream.X)``, so no
  two draws share a key and adding one never moves another."""

  # Of the seed's key, ``jax.random.key(seed)``:
  NOISE = 1              # the label noise
  DATA = 2               # the epochs' permutations of the training set
  STEP = 3               # the steps' keys (each folds in its step count)
  METHOD_INIT = 4        # the method's state (e.g. Meta-Weight-Net's network)
  # Of a step's key:
  LCN_DROPOUT = 7        # the label-correction network's dropout (EBOMLC's LCN)
  CLEAN_PASSES = 2**31 - 4  # of the run's step key: the order of the clean batches
  PHASE = 2**31 - 3      # of the epoch's first step key: its phase's batches and keys
  AUGMENT = 2**31 - 2    # random crops and flips
  CLEAN_BATCH = 2**31 - 1  # the clean batch's crops and flips (in a phase: its keys)


def cross_entropy_loss(apply: Callable, x, y) -> Callable:
  """``params -> (mean cross-entropy on (x, y), new model state)``: the training loss of
  the plain gradient, and what the SAM family's ``grad_fn`` differentiates at the
  perturbed weights."""

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


class RunContext(NamedTuple):
  """What a method's factory reads besides its own record.

  Attributes:
    run: the replica's :class:`~jaxnoisy.train.config.TrainConfig` (epochs, seed,
      momentum, weight decay, ...; a swept run field is a traced scalar).
    spec: the sizes of the data and the model.
    axis_name: the mesh axis of per-device ascent, or None (gradients are global).
  """

  run: "TrainConfig"
  spec: ModelSpec
  axis_name: Optional[str] = None


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
  method_state: Any      # the updated method state
  metrics: dict = {}     # scalars averaged over the epoch and logged
  extra_args: dict = {}  # extra arguments for the transform's update (e.g. noise_grads)
  # The loss the real step descends, ``params -> (loss, model_state)`` on this step's
  # batch with the method's weights or labels held fixed: the transform's ``grad_fn``
  # differentiates it (a sharpness-aware transform, at the perturbed weights). None:
  # the transform is not sharpness-aware and never calls ``grad_fn``.
  loss_fn: Optional[Callable] = None
  step_from: Any = None  # where the optimizer steps from (None: the step's params)


class PhaseEnd(NamedTuple):
  """What a per-epoch phase's ``finish`` sees once its last step is done."""

  apply_eval: Callable   # (params, x) -> (logits, features), eval mode
  params: Any
  method_state: Any
  clean_x: Any           # the whole clean subset, normalised
  clean_y: Any
  step: Any              # the global count of noisy steps (the epoch's first)


class Phase(NamedTuple):
  """A method's program run at the start of every epoch, before its noisy batches.

  Attributes:
    passes: passes over the clean subset per epoch; each step of a pass is a training
      step on a batch of the clean subset (``batch_size`` examples; passes reshuffled
      every time, every example in each, the last batch of a pass smaller when
      ``batch_size`` does not divide the subset), run through the same optimizer and
      learning rate as the noisy steps.
    gradients: ``StepInputs -> Gradients`` of a phase step.
    finish: ``PhaseEnd -> method_state`` after the last step (e.g. the clean subset's
      features in eval mode).
    batch_size: the phase's batch size (at most the clean subset's; None: the run's).

  The train state records how many phase steps of the epoch are done, so a run
  interrupted inside the phase resumes there.
  """

  passes: int
  gradients: Callable[[StepInputs], Gradients]
  finish: Callable[[PhaseEnd], Any]
  batch_size: Optional[int] = None


def plain_gradients(inp: StepInputs) -> Gradients:
  """Cross-entropy on the batch's labels: one forward and one backward pass."""
  loss_fn = cross_entropy_loss(inp.apply, inp.x, inp.y)
  (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(inp.params)
  return Gradients(loss, grads, model_state, inp.method_state, loss_fn=loss_fn)


def no_state(key) -> dict:
  """The state of a method that keeps none."""
  del key
  return {}


class Method(NamedTuple):
  """What the trainer runs for a method: built by its factory from its record.

  Attributes:
    transform: the ``GradientTransformation`` placed first in the chain (before weight
      decay and SGD's momentum); ``optax.identity()`` for methods that only change the
      gradient.
    gradients: ``StepInputs -> Gradients``.
    init_state: ``key -> method state`` (per-example weights, a network, ...).
    warmup_epochs: initial epochs run with ``warmup_gradients`` and ``warmup=True``
      passed to the transform (which then acts as the warm-up optimizer; see
      ``sam_methods.during_warmup``).
    warmup_gradients: ``StepInputs -> Gradients`` of the warm-up epochs.
    phase: a :class:`Phase` run before the noisy batches of every epoch.
    state_metrics: ``opt_state -> dict`` of scalars read after every step (averaged over
      the epoch and logged), e.g. SANER's group fractions.
    epoch_metrics: ``(method_state, data: trainer.NoisyData) -> dict`` logged each epoch.
    check_data: ``data: trainer.NoisyData -> None`` raises a one-line ``ValueError``
      before anything compiles when the data cannot serve the method.
    clean_passes_per_epoch: its clean batches restart their passes over the clean subset
      every epoch (MW-Net's loader) instead of running on across epochs.
  """

  transform: optax.GradientTransformation
  gradients: Callable[[StepInputs], Gradients]
  init_state: Callable[[Any], Any] = no_state
  warmup_epochs: int = 0
  warmup_gradients: Callable[[StepInputs], Gradients] = plain_gradients
  phase: Optional[Phase] = None
  state_metrics: Optional[Callable[[Any], dict]] = None
  epoch_metrics: Optional[Callable[[Any, Any], dict]] = None
  check_data: Optional[Callable[[Any], None]] = None
  clean_passes_per_epoch: bool = False


class Registration(NamedTuple):
  """A method as the trainer's table holds it.

  Attributes:
    hparams: its hyper-parameter record, a frozen dataclass of
      :func:`jaxnoisy.train.hparams.hp` fields (its defaults are the library's).
    build: ``(record, RunContext) -> Method``, the one factory. It may run inside the
      jitted step with a swept field traced, so a sweepable field must not set a shape
      or a Python branch.
    description: one line for ``--help``.
    needs_clean: the method learns from the clean subset (requires ``clean_size > 0``).
    per_device_ascent: the transform can form its ascent from each device's own
      gradient (``--per-device-ascent``).
    no_ascent: why the method takes no ``--ascent`` (its record has no ``ascent`` field:
      :class:`jaxnoisy.train.ascent.AscentHparams`); said in the one-line error.
  """

  hparams: type
  build: Callable[[Any, RunContext], Method]
  description: str
  needs_clean: bool = False
  per_device_ascent: bool = False
  no_ascent: str = ""
