"""Trainer entries of the methods that reweight the noisy examples from a clean subset:
L2RW, persistent meta-reweighting, Meta-Weight-Net and Feature-Based Reweighting.

Each is a ``gradients`` function around the pure functions of ``jaxnoisy.meta``: it
computes per-example weights, records them in the method state (one float per training
example, checkpointed with the rest) and returns the gradient of the weighted loss,
which then goes through weight decay and SGD like any other method's.

FBR (Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209; the first author's code
yiz134/Feature_based_reweight, ``trainer/train.py::train_loop``) runs on its authors'
schedule. Every epoch:

1. a phase of ``clean_epochs`` passes of plain cross-entropy over the clean subset
   in batches of ``pass_batch_size`` (the last of a pass smaller; train mode, the same
   SGD, momentum buffer and learning rate as the noisy steps; the schedule does not
   advance during them), then the clean subset's features in eval mode;
2. per noisy batch: its features in eval mode (no gradient), the scores d
   (:func:`jaxnoisy.meta.fbr_scores`) against that epoch's clean features, the weights w
   (:func:`jaxnoisy.meta.fbr_weights`, or the persistent rule), and the step on
   :math:`\\frac{1}{B}\\sum_i w_i \\mathrm{CE}_i`.

FBR's weights start at 1/2; during the warm-up epochs and in epochs that do not
reweight (``epoch % reweight_every``) the stored ones are used. α₀ = 1/(C−1) before
``alpha_fraction`` of training, 0 after.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxnoisy.meta import fbr, reweight
from jaxnoisy.train.ascent import AscentHparams
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.interface import (Gradients, Method, Phase, PhaseEnd, Registration,
                                      RunContext, StepInputs, plain_gradients)


@dataclasses.dataclass(frozen=True)
class L2RWHparams(AscentHparams):
  """L2RW (Ren et al. 2018): no hyper-parameters of its own"""


@dataclasses.dataclass(frozen=True)
class MetaReweightHparams(AscentHparams):
  """Persistent meta-reweighting (Zhang et al., arXiv 2510.12209)"""

  weight_lr: float = hp(100.0, "the weights' step size α (mean-loss convention)", low=0.0,
                        sweepable=True)


@dataclasses.dataclass(frozen=True)
class MWNetHparams(AscentHparams):
  """Meta-Weight-Net (Shu et al. 2019): no hyper-parameters of its own"""


@dataclasses.dataclass(frozen=True)
class FBRHparams(AscentHparams):
  """FBR (Zhang et al., arXiv 2510.12209; code yiz134/Feature_based_reweight)"""

  clean_epochs: int = hp(30, "passes over the clean subset before each epoch's noisy "
                         "batches (code: 30)", low=0)
  pass_batch_size: int = hp(128, "batch size of the clean passes, the last batch of a "
                            "pass smaller (code: train_steps' 128)", low=1)
  warmup_fraction: float = hp(11 / 150, "fraction of the epochs with weights 1/2 before "
                              "reweighting starts (code: epochs 0-10 of 150)", low=0.0,
                              high=1.0)
  alpha_fraction: float = hp(40 / 150, "fraction of the epochs with α₀ = 1/(C−1); α₀ = 0 "
                             "after (code: 40 of 150)", low=0.0, high=1.0)
  reweight_every: int = hp(1, "reweight in epochs divisible by this; other epochs reuse "
                           "the stored weights (CIFAR script: 1)", low=1)
  recompute: bool = hp(True, "recompute the weights from the scores at every visit "
                       "(code's default recompute=True); False: the persistent rule "
                       "w ← clip(w + step_size·d, 0, 1)")
  step_size: float = hp(0.01, "the persistent rule's step on d (code: 0.01)", low=0.0)


def _per_example_loss(inp: StepInputs):
  """Per-example cross-entropy ``(params, (x, y)) -> (B,)`` for the meta functions."""
  return reweight.cross_entropy_loss_fn(lambda p, x: inp.apply(p, x)[0])


def _losses(inp: StepInputs):
  """``params -> (per-example CE on the noisy batch (B,), batch statistics)``."""
  def forward(p):
    logits, _, model_state = inp.apply(p, inp.x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, inp.y), model_state
  return forward


def linearize_batch(inp: StepInputs):
  """The one forward pass of the noisy batch that every reweighting method shares.

  Returns ``(linearized, model_state)``: the per-example losses and their VJP
  (:class:`reweight.Linearized`: the virtual step, the meta-gradient and the real
  step's gradient are all taken from it) and the batch statistics of this pass.
  """
  losses, vjp_fn, model_state = jax.vjp(_losses(inp), inp.params, has_aux=True)
  return reweight.Linearized(losses, vjp_fn), model_state


def weighted_step(inp: StepInputs, lin, model_state, w, method_state,
                  metrics=None) -> Gradients:
  """The real step on :math:`\\frac{1}{B}\\sum_i w_i \\mathrm{CE}_i` from the shared
  forward pass, with its loss as ``loss_fn`` (w held fixed) for an ascent's gradient at
  the perturbed weights."""
  loss, grads = reweight.weighted_gradient(lin, w)
  w = jax.lax.stop_gradient(w)

  def loss_fn(p):
    losses, state = _losses(inp)(p)
    return reweight.weighted_loss(losses, w), state

  return Gradients(loss, grads, model_state, method_state, metrics or {}, loss_fn=loss_fn)


def record_weights(state: dict, index, weights) -> dict:
  """The method state with the batch's weights stored at its examples' positions."""
  return {**state, "weights": state["weights"].at[index].set(weights)}


def _weights_state(num_train: int, value: float, **more):
  """``key -> {"weights": value everywhere, **more}``."""
  return lambda key: {"weights": jnp.full((num_train,), value, jnp.float32), **more}


def weight_metrics(threshold: float = 0.5):
  """``(method_state, data) -> dict``: how well the stored weights separate clean from
  corrupted examples (:func:`jaxnoisy.meta.weight_diagnostics`), where that is known."""

  def metrics(method_state, data) -> dict:
    known = data.train_true >= 0  # noisy or clean is known only there (Clothing1M)
    return reweight.weight_diagnostics(method_state["weights"][known],
                                       jnp.asarray(data.train_corrupted[known]),
                                       threshold=threshold)

  return metrics


def _l2rw(r: L2RWHparams, ctx: RunContext) -> Method:
  """L2RW: weights from one virtual step at ε = 0, renormalised per batch.

  Recorded weight: B·w_i (1 = the batch average), so that the 0.5 threshold of the
  precision/recall diagnostics means "at least half the average weight".
  """
  del r

  def gradients(inp: StepInputs) -> Gradients:
    lin, model_state = linearize_batch(inp)
    w = reweight.l2rw_weights(_per_example_loss(inp), inp.params, (inp.x, inp.y),
                              (inp.clean_x, inp.clean_y), linearized=lin)
    # Σ w_i l_i with Σ w_i = 1 is the mean convention's loss at weights B·w.
    w = w * w.shape[0]
    return weighted_step(inp, lin, model_state, w,
                         record_weights(inp.method_state, inp.index, w))

  return Method(optax.identity(), gradients, _weights_state(ctx.spec.num_train, 1.0),
                epoch_metrics=weight_metrics())


def _meta_reweight(r: MetaReweightHparams, ctx: RunContext) -> Method:
  """Persistent weights in [0, 1]: one meta-gradient step, then the real step."""

  def gradients(inp: StepInputs) -> Gradients:
    lin, model_state = linearize_batch(inp)
    result = reweight.meta_reweight_step(
        _per_example_loss(inp), inp.params, inp.method_state["weights"][inp.index],
        (inp.x, inp.y), (inp.clean_x, inp.clean_y), inner_lr=inp.learning_rate,
        weight_lr=r.weight_lr, linearized=lin)
    state = record_weights(inp.method_state, inp.index, result.weights)
    return weighted_step(inp, lin, model_state, result.weights, state,
                         {"clean_loss": result.clean_loss})

  return Method(optax.identity(), gradients, _weights_state(ctx.spec.num_train, 1.0),
                epoch_metrics=weight_metrics())


# Meta-Weight-Net's own optimiser (Shu et al.: Adam 1e-3, weight decay 1e-4).
_MWNET_TX = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-3))


def _mwnet(r: MWNetHparams, ctx: RunContext) -> Method:
  """Meta-Weight-Net: V(l) trained through a virtual step; real step with the new V."""
  del r

  def init(key):
    mw = reweight.mwnet_init(key)
    return {"mw": mw, "mw_opt": _MWNET_TX.init(mw),
            "weights": jnp.ones((ctx.spec.num_train,), jnp.float32)}

  def gradients(inp: StepInputs) -> Gradients:
    st = inp.method_state
    lin, model_state = linearize_batch(inp)
    mw_grads, clean_loss = reweight.mwnet_step(
        _per_example_loss(inp), inp.params, st["mw"], (inp.x, inp.y),
        (inp.clean_x, inp.clean_y), inner_lr=inp.learning_rate, linearized=lin)
    updates, mw_opt = _MWNET_TX.update(mw_grads, st["mw_opt"], st["mw"])
    mw = optax.apply_updates(st["mw"], updates)
    w = reweight.mwnet_weights(mw, lin.losses)
    state = {**record_weights(st, inp.index, w), "mw": mw, "mw_opt": mw_opt}
    return weighted_step(inp, lin, model_state, w, state, {"clean_loss": clean_loss})

  # The authors' loader restarts its clean batches every epoch (iter() per epoch).
  return Method(optax.identity(), gradients, init, epoch_metrics=weight_metrics(),
                clean_passes_per_epoch=True)


def fbr_schedule(r: FBRHparams, epochs: int, epoch):
  """``(reweighting, α₀ as a fraction 1/(C−1) → 1 or 0)`` in force in ``epoch`` (0-based,
  may be traced) of ``epochs``: reweighting after the warm-up in epochs divisible by
  ``reweight_every``; α₀ = 1/(C−1) before ``alpha_fraction`` of training."""
  reweighting = (epoch >= round(r.warmup_fraction * epochs)) & \
      (epoch % r.reweight_every == 0)
  first_alpha = epoch < round(r.alpha_fraction * epochs)
  return reweighting, first_alpha


def _fbr(r: FBRHparams, ctx: RunContext) -> Method:
  spec = ctx.spec

  def gradients(inp: StepInputs) -> Gradients:
    """The noisy step: eval-mode features → d → w → the weighted cross-entropy step."""
    st = inp.method_state
    features = jax.lax.stop_gradient(inp.apply_eval(inp.params, inp.x)[1])
    reweighting, first_alpha = fbr_schedule(r, ctx.run.epochs,
                                            inp.step // spec.steps_per_epoch)
    alpha0 = jnp.where(first_alpha, 1.0 / (spec.num_classes - 1), 0.0).astype(jnp.float32)
    scores = fbr.fbr_scores(features, inp.y, st["clean_features"], st["clean_labels"],
                            spec.num_classes, alpha0)
    stored = st["weights"][inp.index]
    fresh = fbr.fbr_weights(scores) if r.recompute else \
        fbr.fbr_persistent_weights(stored, scores, r.step_size)
    w = jnp.where(reweighting, fresh, stored)
    lin, model_state = linearize_batch(inp)
    return weighted_step(inp, lin, model_state, w,
                         {**record_weights(st, inp.index, w), "alpha0": alpha0})

  def finish(end: PhaseEnd):
    """The clean subset's features in eval mode, after the epoch's clean passes."""
    features = end.apply_eval(end.params, end.clean_x)[1]
    return {**end.method_state, "clean_features": features.astype(jnp.float32),
            "clean_labels": end.clean_y.astype(jnp.int32)}

  diagnostics = weight_metrics(threshold=1e-12)

  def metrics(method_state, data) -> dict:
    w = method_state["weights"]
    return {**diagnostics(method_state, data), "zero_weight_share": jnp.mean(w == 0),
            "alpha0": method_state["alpha0"]}

  init = _weights_state(
      spec.num_train, 0.5,
      clean_features=jnp.zeros((spec.num_clean, spec.feature_dim), jnp.float32),
      clean_labels=jnp.zeros((spec.num_clean,), jnp.int32), alpha0=jnp.zeros((), jnp.float32))
  return Method(optax.identity(), gradients, init,
                phase=Phase(r.clean_epochs, plain_gradients, finish,
                            batch_size=min(r.pass_batch_size, spec.num_clean)),
                epoch_metrics=metrics,
                check_data=lambda data: fbr.check_fbr_clean_set(data.clean_labels,
                                                                data.num_classes))


METHODS: dict[str, Registration] = {
    "l2rw": Registration(L2RWHparams, _l2rw, "L2RW (Ren et al. 2018)", needs_clean=True),
    "meta_reweight": Registration(MetaReweightHparams, _meta_reweight,
                                  "persistent meta-reweighting (Zhang et al.)",
                                  needs_clean=True),
    "mwnet": Registration(MWNetHparams, _mwnet, "Meta-Weight-Net (Shu et al. 2019)",
                          needs_clean=True),
    "fbr": Registration(FBRHparams, _fbr, "Feature-Based Reweighting (Zhang et al.)",
                        needs_clean=True),
}
