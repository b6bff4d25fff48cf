"""Trainer entries of the methods that learn from a clean subset.

Each is a ``gradients`` function around the pure functions of ``jaxnoisy.meta``.
Reweighting methods compute per-example weights from the clean batch, record them in
the method state (one float per training example, checkpointed with the rest) and
return the gradient of the weighted loss. Label-correction methods keep the label-
correction network (LCN) and its optimiser in the method state, update it inside the
step, and return the main network's gradient. Either gradient then goes through
weight decay and SGD like any other method's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxnoisy.meta import correction, reweight
from jaxnoisy.meta.amsgrad import torch_amsgrad
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.interface import (Gradients, Method, ModelSpec, StepInputs,
                                      identity_transform)


@dataclasses.dataclass(frozen=True)
class MetaReweightHparams:
  """Persistent meta-reweighting (Zhang et al., arXiv 2510.12209)"""

  weight_lr: float = hp(100.0, "the weights' step size α (mean-loss convention)", low=0.0,
                        sweepable=True)


@dataclasses.dataclass(frozen=True)
class CorrectionHparams:
  """Label correction: the LCN's optimiser (MLC, BOME-MLC, EBOMLC)"""

  meta_optimizer: str = hp("amsgrad", "the label-correction network's optimiser "
                           "(the MLC and EBOMLC code: torch's Adam with AMSGrad, "
                           "jaxnoisy.meta.torch_amsgrad)",
                           choices=("adam", "amsgrad", "sgd"))
  meta_lr: float = hp(3e-4, "the LCN's learning rate (EBOMLC's code: 3e-4)", low=0.0,
                      low_open=True)
  lcn_variant: str = hp("mlc", "the LCN: microsoft/MLC's (mlc) or EBOMLC's code's, with "
                        "Dropout 0.3 and train-mode BatchNorm (ebomlc)",
                        choices=("mlc", "ebomlc"))
  lcn_embed_dim: int = hp(64, "the LCN's class-embedding size (code default 64; the "
                          "READMEs' CIFAR commands 128)", low=1)


@dataclasses.dataclass(frozen=True)
class MLCHparams(CorrectionHparams):
  """MLC (Zheng et al., AAAI 2021; code microsoft/MLC)"""

  mlc_gradient_steps: int = hp(1, "K: the LCN steps every K real steps on discounted, "
                               "accumulated one-step hypergradients (code's "
                               "--gradient_steps; CIFAR: 1)", low=1)
  mlc_mix: bool = hp(True, "half the clean batch joins the main loss (microsoft/MLC's "
                     "default hmlc_K_mix) or all of it is the meta objective (hmlc_K)")


@dataclasses.dataclass(frozen=True)
class BOMEMLCHparams(CorrectionHparams):
  """BOME-MLC (enhanced_MLC's step_mlcbome)"""

  bome_inner_steps: int = hp(5, "T, the lower-level steps of the barrier's look-ahead "
                             "(code: 5)", low=1)
  bome_u: float = hp(0.5, "u of the control u·‖∇q‖² (code: 0.5)", low=0.0)


@dataclasses.dataclass(frozen=True)
class EBOMLCHparams(CorrectionHparams):
  """EBOMLC (Nguyen and Ta, arXiv 2605.17833; code hoanganhknk/enhanced_MLC)"""

  mixture_rho: float = hp(0.2, "ρ of the mixture upper loss (code: 0.2)", low=0.0,
                          high=1.0, sweepable=True)
  xi: float = hp(0.5, "ξ, the barrier's scale (code: 0.5)", low=0.0, sweepable=True)
  delta: float = hp(0.25, "δ, the barrier's margin (code: 0.25)", low=0.0, sweepable=True)
  ebomlc_sign: str = hp("descend", "the upper-loss term: descend on f (BOME) or the "
                        "code's +∇f (reference)", choices=("descend", "reference"))
  ebomlc_mixture: str = hp("probs", "the mixture upper loss mixes probabilities (probs) "
                           "or, as the code, the main network's logits with the LCN's "
                           "probabilities (logits)", choices=("probs", "logits"))
  ebomlc_delta_update: bool = hp(False, "the code's branch for datasets other than "
                                 "CIFAR-10: Δ_w replaced by −η·D(Δ_w) in the main gradient")


def _loss_fn(inp: StepInputs):
  """Per-example cross-entropy ``(params, (x, y)) -> (B,)`` for the meta functions."""
  return reweight.cross_entropy_loss_fn(lambda p, x: inp.apply(p, x)[0])


def linearize_batch(inp: StepInputs):
  """The one forward pass of the noisy batch that every reweighting method shares.

  Returns ``(linearized, features, model_state)``: the per-example losses and their
  VJP (:class:`reweight.Linearized`: the virtual step, the meta-gradient and the real
  step's gradient are all taken from it), the penultimate features and the batch
  statistics of this pass.
  """
  def forward(p):
    logits, features, model_state = inp.apply(p, inp.x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, inp.y)
    return losses, (features, model_state)

  losses, vjp_fn, (features, model_state) = jax.vjp(forward, inp.params, has_aux=True)
  return reweight.Linearized(losses, vjp_fn), features, model_state


def record_weights(state: dict, index, weights) -> dict:
  return {**state, "weights": state["weights"].at[index].set(weights)}


def _weights_state(value: float):
  def init(config, key, spec: ModelSpec):
    del config, key
    return {"weights": jnp.full((spec.num_train,), value, jnp.float32)}
  return init


def _weight_metrics(method_state, data):
  known = data.train_true >= 0  # noisy or clean is known only there (Clothing1M)
  return reweight.weight_diagnostics(method_state["weights"][known],
                                     jnp.asarray(data.train_corrupted[known]))


def l2rw_gradients(config, spec: ModelSpec):
  """L2RW: weights from one virtual step at ε = 0, renormalised per batch.

  Recorded weight: B·w_i (1 = the batch average), so that the 0.5 threshold of the
  precision/recall diagnostics means "at least half the average weight".
  """
  del config, spec

  def gradients(inp: StepInputs) -> Gradients:
    lin, _, model_state = linearize_batch(inp)
    w = reweight.l2rw_weights(_loss_fn(inp), inp.params, (inp.x, inp.y),
                              (inp.clean_x, inp.clean_y), linearized=lin)
    # Σ w_i l_i with Σ w_i = 1 is the mean convention's loss at weights B·w.
    w = w * w.shape[0]
    loss, grads = reweight.weighted_gradient(lin, w)
    state = record_weights(inp.method_state, inp.index, w)
    return Gradients(loss, grads, model_state, {}, state, {})

  return gradients


def meta_reweight_gradients(config, spec: ModelSpec):
  """Persistent weights in [0, 1]: one meta-gradient step, then the real step."""

  def gradients(inp: StepInputs) -> Gradients:
    lin, _, model_state = linearize_batch(inp)
    result = reweight.meta_reweight_step(
        _loss_fn(inp), inp.params, inp.method_state["weights"][inp.index], (inp.x, inp.y),
        (inp.clean_x, inp.clean_y), inner_lr=inp.learning_rate,
        weight_lr=config.weight_lr, linearized=lin)
    loss, grads = reweight.weighted_gradient(lin, result.weights)
    state = record_weights(inp.method_state, inp.index, result.weights)
    return Gradients(loss, grads, model_state, {}, state, {"clean_loss": result.clean_loss})

  return gradients


# Meta-Weight-Net's own optimiser (Shu et al.: Adam 1e-3, weight decay 1e-4).
_MWNET_TX = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-3))


def _mwnet_init(config, key, spec: ModelSpec):
  del config
  mw = reweight.mwnet_init(key)
  return {"mw": mw, "mw_opt": _MWNET_TX.init(mw),
          "weights": jnp.ones((spec.num_train,), jnp.float32)}


def mwnet_gradients(config, spec: ModelSpec):
  """Meta-Weight-Net: V(l) trained through a virtual step; real step with the new V."""

  def gradients(inp: StepInputs) -> Gradients:
    st = inp.method_state
    lin, _, model_state = linearize_batch(inp)
    mw_grads, clean_loss = reweight.mwnet_step(
        _loss_fn(inp), inp.params, st["mw"], (inp.x, inp.y), (inp.clean_x, inp.clean_y),
        inner_lr=inp.learning_rate, linearized=lin)
    updates, mw_opt = _MWNET_TX.update(mw_grads, st["mw_opt"], st["mw"])
    mw = optax.apply_updates(st["mw"], updates)
    w = reweight.mwnet_weights(mw, lin.losses)
    loss, grads = reweight.weighted_gradient(lin, w)
    state = {**record_weights(st, inp.index, w), "mw": mw, "mw_opt": mw_opt}
    return Gradients(loss, grads, model_state, {}, state, {"clean_loss": clean_loss})

  return gradients


def _meta_tx(config) -> optax.GradientTransformation:
  """The LCN's optimiser (MLC, EBOMLC: torch's Adam with AMSGrad, 3e-4)."""
  if config.meta_optimizer == "sgd":
    return optax.sgd(config.meta_lr, momentum=0.9)
  if config.meta_optimizer == "amsgrad":  # torch's convention, not optax.amsgrad's
    return torch_amsgrad(config.meta_lr)
  return optax.adam(config.meta_lr)


def _lcn(config, spec: ModelSpec):
  return correction.lcn_init(spec.num_classes, spec.feature_dim, seed=config.seed,
                             embed_dim=config.lcn_embed_dim, variant=config.lcn_variant)


def _correction_init(config, key, spec: ModelSpec):
  del key
  _, lcn_params = _lcn(config, spec)
  state = {"lcn": lcn_params, "lcn_opt": _meta_tx(config).init(lcn_params),
           # argmax of the corrected label of each training example, when last seen
           "corrected": jnp.full((spec.num_train,), -1, jnp.int32),
           # EBOMLC's β of each step of the current epoch (quantiles are logged)
           "beta": jnp.zeros((spec.steps_per_epoch,), jnp.float32)}
  if _gradient_steps(config) > 1:  # MLC's accumulated hypergradient
    state["lcn_accum"] = jax.tree.map(jnp.zeros_like, lcn_params)
  return state


def _gradient_steps(config) -> int:
  return config.mlc_gradient_steps if config.method == "mlc" else 1


def _correction_metrics(method_state, data):
  out = correction.corrected_accuracy(
      jax.nn.one_hot(method_state["corrected"], data.num_classes),
      jnp.asarray(data.train_true), jnp.asarray(data.train_corrupted))
  return out


def _beta_metrics(method_state, data):
  beta = method_state["beta"]
  q = jnp.quantile(beta, jnp.asarray([0.1, 0.5, 0.9]))
  return {**_correction_metrics(method_state, data), "beta_mean": jnp.mean(beta),
          "beta_q10": q[0], "beta_q50": q[1], "beta_q90": q[2]}


def _correction_gradients(step_fn):
  """Wraps an MLC-family step: updates the LCN (every K steps on accumulated
  hypergradients with MLC's K > 1), records the corrected labels."""

  def make(config, spec: ModelSpec):
    lcn_apply, _ = _lcn(config, spec)
    meta_tx = _meta_tx(config)
    every = _gradient_steps(config)

    def gradients(inp: StepInputs) -> Gradients:
      st = inp.method_state
      # The LCN's dropout draws (EBOMLC's LCN); its own stream of the step key.
      key = jax.random.fold_in(inp.key, 7) if config.lcn_variant == "ebomlc" else None
      # inp.apply returns (logits, features, batch statistics): the step hands back the
      # statistics of its forward pass of the noisy batch as res.model_state.
      res, metrics = step_fn(config, inp, lcn_apply, st, key)
      updates, lcn_opt = meta_tx.update(res.grads_phi, st["lcn_opt"], st["lcn"])
      lcn = optax.apply_updates(st["lcn"], updates)
      state = {**st, "lcn": lcn, "lcn_opt": lcn_opt,
               "corrected": st["corrected"].at[inp.index].set(
                   jnp.argmax(res.corrected, -1).astype(jnp.int32))}
      if every > 1:  # the LCN steps on the K-th step; in between it accumulates
        now = (inp.step + 1) % every == 0
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(now, a, b), new, old)
        state.update(lcn=pick(lcn, st["lcn"]), lcn_opt=pick(lcn_opt, st["lcn_opt"]),
                     lcn_accum=pick(jax.tree.map(jnp.zeros_like, res.grads_phi),
                                    res.grads_phi))
      if "beta" in metrics:  # logged as the epoch's mean and quantiles instead
        metrics = dict(metrics)
        state["beta"] = st["beta"].at[inp.step % spec.steps_per_epoch].set(metrics.pop("beta"))
      return Gradients(res.loss, res.grads_w, res.model_state, {}, state, metrics,
                       getattr(res, "params", None))

    return gradients

  return make


def _optimizer(config, inp: StepInputs) -> dict:
  """The trainer's SGD, which the look-aheads follow (buffer read, not advanced)."""
  return dict(inner_lr=inp.learning_rate, momentum_buffer=inp.momentum_buffer,
              momentum=config.momentum, weight_decay=config.weight_decay)


def _halves(inp: StepInputs):
  """The clean batch's first half G (the meta objective) and second half C (joins the
  lower loss), as the authors' hmlc_K_mix, step_mlcbome and step_ebomlc split it."""
  half = inp.clean_y.shape[0] // 2
  return (inp.clean_x[:half], inp.clean_y[:half]), (inp.clean_x[half:], inp.clean_y[half:])


def _mlc(config, inp, lcn_apply, st, key):
  meta, train = (inp.clean_x, inp.clean_y), None
  if config.mlc_mix:  # microsoft/MLC's default hmlc_K_mix
    meta, train = _halves(inp)
  res = correction.mlc_step(inp.apply, inp.params, lcn_apply, st["lcn"], (inp.x, inp.y),
                            meta, clean_train_batch=train,
                            accumulated_grads_phi=st.get("lcn_accum"), key=key,
                            **_optimizer(config, inp))
  return res, {"clean_loss": res.clean_loss}


def _bome_mlc(config, inp, lcn_apply, st, key):
  meta, train = _halves(inp)
  res = correction.bome_mlc_step(inp.apply, inp.params, lcn_apply, st["lcn"],
                                 (inp.x, inp.y), meta, clean_train_batch=train,
                                 inner_steps=config.bome_inner_steps, u=config.bome_u,
                                 key=key, **_optimizer(config, inp))
  return res, {"bome_lambda": res.lam, "upper_loss": res.upper_loss}


def _ebomlc(config, inp, lcn_apply, st, key):
  res = correction.ebomlc_step(
      inp.apply, inp.params, lcn_apply, st["lcn"], (inp.x, inp.y),
      (inp.clean_x, inp.clean_y), rho=config.mixture_rho, xi=config.xi,
      delta=config.delta, sign=config.ebomlc_sign, mixture=config.ebomlc_mixture,
      delta_update=config.ebomlc_delta_update, key=key, **_optimizer(config, inp))
  # The optimizer steps from w₁ (res.params), as the authors' step_ebomlc.
  return res, {"beta": res.beta, "upper_loss": res.upper_loss}


METHODS: dict[str, Method] = {
    "l2rw": Method(identity_transform, l2rw_gradients, "L2RW (Ren et al. 2018)",
                   init_state=_weights_state(1.0), epoch_metrics=_weight_metrics,
                   needs_clean=True),
    "meta_reweight": Method(identity_transform, meta_reweight_gradients,
                            "persistent meta-reweighting (Zhang et al.)",
                            hparams=(MetaReweightHparams,), init_state=_weights_state(1.0),
                            epoch_metrics=_weight_metrics, needs_clean=True),
    "mwnet": Method(identity_transform, mwnet_gradients, "Meta-Weight-Net (Shu et al. 2019)",
                    init_state=_mwnet_init, epoch_metrics=_weight_metrics, needs_clean=True,
                    clean_passes_per_epoch=True),  # the authors' iter() per epoch
    "mlc": Method(identity_transform, _correction_gradients(_mlc), "MLC (Zheng et al. 2021)",
                  hparams=(MLCHparams,), init_state=_correction_init,
                  epoch_metrics=_correction_metrics, needs_clean=True),
    "bome_mlc": Method(identity_transform, _correction_gradients(_bome_mlc),
                       "BOME applied to MLC (the naive first-order extension)",
                       hparams=(BOMEMLCHparams,), init_state=_correction_init,
                       epoch_metrics=_correction_metrics, needs_clean=True),
    "ebomlc": Method(identity_transform, _correction_gradients(_ebomlc),
                     "EBOMLC (Nguyen and Ta)", hparams=(EBOMLCHparams,),
                     init_state=_correction_init, epoch_metrics=_beta_metrics,
                     needs_clean=True),
}
