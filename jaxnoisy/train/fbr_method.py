"""Trainer entry of Feature-Based Reweighting (FBR), seed 002's surrogate of
meta-reweighting, run on the schedule of its authors' code.

Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209; the first author's code
yiz134/Feature_based_reweight (``trainer/train.py::train_loop``). Every epoch:

1. a phase of ``fbr_clean_epochs`` passes of plain cross-entropy over the clean subset
   in batches of ``fbr_clean_batch_size`` (the last of a pass smaller; train mode, the
   same SGD, momentum buffer and learning rate as the noisy steps; the schedule does
   not advance during them), then the clean subset's features in eval mode;
2. per noisy batch: its features in eval mode (no gradient), the scores d
   (:func:`jaxnoisy.meta.fbr_scores`) against that epoch's clean features, the weights w
   (:func:`jaxnoisy.meta.fbr_weights`, or the persistent rule), and the step on
   :math:`\\frac{1}{B}\\sum_i w_i \\mathrm{CE}_i`.

Weights start at 1/2 and are stored per example; during the warm-up epochs and in
epochs that do not reweight (``epoch % fbr_reweight_every``) the stored ones are used.
α₀ = 1/(C−1) before ``fbr_alpha_fraction`` of training, 0 after.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxnoisy.meta import fbr, reweight
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.interface import (EpochPhase, Gradients, Method, ModelSpec, PhaseEnd,
                                      StepInputs, identity_transform, plain_gradients)
from jaxnoisy.train.meta_methods import linearize_batch, record_weights


@dataclasses.dataclass(frozen=True)
class FBRHparams:
  """FBR (Zhang et al., arXiv 2510.12209; code yiz134/Feature_based_reweight)"""

  fbr_clean_epochs: int = hp(30, "passes over the clean subset before each epoch's noisy "
                             "batches (code: 30)", low=0)
  fbr_clean_batch_size: int = hp(128, "batch size of the clean passes, the last batch "
                                 "of a pass smaller (code: train_steps' 128)", low=1)
  fbr_warmup_fraction: float = hp(
      11 / 150, "fraction of the epochs with weights 1/2 before reweighting starts "
      "(code: epochs 0-10 of 150)", low=0.0, high=1.0)
  fbr_alpha_fraction: float = hp(
      40 / 150, "fraction of the epochs with α₀ = 1/(C−1); α₀ = 0 after (code: 40 of 150)",
      low=0.0, high=1.0)
  fbr_reweight_every: int = hp(1, "reweight in epochs divisible by this; other epochs "
                               "reuse the stored weights (CIFAR script: 1)", low=1)
  fbr_recompute: bool = hp(True, "recompute the weights from the scores at every visit "
                           "(code's default recompute=True); False: the persistent rule "
                           "w ← clip(w + step·d, 0, 1)")
  fbr_step_size: float = hp(0.01, "the persistent rule's step on d (code: 0.01)", low=0.0)


def _epochs(fraction: float, epochs: int) -> int:
  return round(fraction * epochs)


def fbr_schedule(config, epoch):
  """``(reweighting, α₀ as a fraction 1/(C−1) → 1 or 0)`` in force in ``epoch`` (0-based,
  may be traced): reweighting after the warm-up in epochs divisible by
  ``fbr_reweight_every``; α₀ = 1/(C−1) before ``fbr_alpha_fraction`` of training."""
  reweighting = (epoch >= _epochs(config.fbr_warmup_fraction, config.epochs)) & \
      (epoch % config.fbr_reweight_every == 0)
  first_alpha = epoch < _epochs(config.fbr_alpha_fraction, config.epochs)
  return reweighting, first_alpha


def _init(config, key, spec: ModelSpec):
  del config, key
  return {"weights": jnp.full((spec.num_train,), 0.5, jnp.float32),
          "clean_features": jnp.zeros((spec.num_clean, spec.feature_dim), jnp.float32),
          "clean_labels": jnp.zeros((spec.num_clean,), jnp.int32),
          "alpha0": jnp.zeros((), jnp.float32)}


def fbr_gradients(config, spec: ModelSpec):
  """The noisy step: eval-mode features → d → w → the weighted cross-entropy step."""
  num_classes = spec.num_classes

  def gradients(inp: StepInputs) -> Gradients:
    st = inp.method_state
    features = jax.lax.stop_gradient(inp.apply_eval(inp.params, inp.x)[1])
    reweighting, first_alpha = fbr_schedule(config, inp.step // spec.steps_per_epoch)
    alpha0 = jnp.where(first_alpha, 1.0 / (num_classes - 1), 0.0).astype(jnp.float32)
    scores = fbr.fbr_scores(features, inp.y, st["clean_features"], st["clean_labels"],
                            num_classes, alpha0)
    stored = st["weights"][inp.index]
    fresh = fbr.fbr_weights(scores) if config.fbr_recompute else \
        fbr.fbr_persistent_weights(stored, scores, config.fbr_step_size)
    w = jnp.where(reweighting, fresh, stored)
    lin, _, model_state = linearize_batch(inp)
    loss, grads = reweight.weighted_gradient(lin, w)
    state = {**record_weights(st, inp.index, w), "alpha0": alpha0}
    return Gradients(loss, grads, model_state, {}, state, {})

  return gradients


def _finish(config, spec: ModelSpec):
  """The clean subset's features in eval mode, after the epoch's clean passes."""
  del config, spec

  def finish(end: PhaseEnd):
    features = end.apply_eval(end.params, end.clean_x)[1]
    return {**end.method_state, "clean_features": features.astype(jnp.float32),
            "clean_labels": end.clean_y.astype(jnp.int32)}

  return finish


def _check_data(config, data) -> None:
  fbr.check_fbr_clean_set(data.clean_labels, data.num_classes)


def _metrics(method_state, data) -> dict:
  w = method_state["weights"]
  known = data.train_true >= 0  # noisy or clean is known only there (Clothing1M)
  out = reweight.weight_diagnostics(w[known], jnp.asarray(data.train_corrupted[known]),
                                    threshold=1e-12)
  return {**out, "zero_weight_share": jnp.mean(w == 0), "alpha0": method_state["alpha0"]}


def _phase_batch_size(config) -> int:
  return config.fbr_clean_batch_size


def _phase_steps(config, spec: ModelSpec) -> int:
  """``fbr_clean_epochs`` passes of ⌈m / fbr_clean_batch_size⌉ batches (2,000 clean
  examples at 128: 15 × 128 + 80, as the code's ``train_steps``)."""
  batches = -(-spec.num_clean // min(config.fbr_clean_batch_size, spec.num_clean))
  return config.fbr_clean_epochs * batches


METHOD = Method(
    identity_transform, fbr_gradients, "Feature-Based Reweighting (Zhang et al.)",
    hparams=(FBRHparams,), init_state=_init, epoch_metrics=_metrics,
    epoch_phase=EpochPhase(_phase_steps, plain_gradients, _finish, _phase_batch_size),
    check_data=_check_data, needs_clean=True)
