"""Trainer entries of the label-correction methods: MLC, BOME-MLC and EBOMLC.

Each keeps the label-correction network (LCN) and its optimiser in the method state,
updates it inside the step from the pure functions of ``jaxnoisy.meta.correction``, and
returns the main network's gradient, which then goes through weight decay and SGD like
any other method's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxnoisy.meta import correction
from jaxnoisy.meta.amsgrad import torch_amsgrad
from jaxnoisy.train.ascent import AscentHparams
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.interface import (Gradients, Method, Registration, RunContext,
                                      StepInputs, Stream)


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
class MLCHparams(CorrectionHparams, AscentHparams):
  """MLC (Zheng et al., AAAI 2021; code microsoft/MLC)"""

  gradient_steps: int = hp(1, "K: the LCN steps every K real steps on discounted, "
                           "accumulated one-step hypergradients (code's "
                           "--gradient_steps; CIFAR: 1)", low=1)
  mix: bool = hp(True, "half the clean batch joins the main loss (microsoft/MLC's "
                 "default hmlc_K_mix) or all of it is the meta objective (hmlc_K)")


@dataclasses.dataclass(frozen=True)
class BOMEMLCHparams(CorrectionHparams):
  """BOME-MLC (enhanced_MLC's step_mlcbome)"""

  inner_steps: int = hp(5, "T, the lower-level steps of the barrier's look-ahead "
                        "(code: 5)", low=1)
  u: float = hp(0.5, "u of the control u·‖∇q‖² (code: 0.5)", low=0.0)


@dataclasses.dataclass(frozen=True)
class EBOMLCHparams(CorrectionHparams):
  """EBOMLC (Nguyen and Ta, arXiv 2605.17833; code hoanganhknk/enhanced_MLC)"""

  mixture_rho: float = hp(0.2, "ρ of the mixture upper loss (code: 0.2)", low=0.0,
                          high=1.0, sweepable=True)
  xi: float = hp(0.5, "ξ, the barrier's scale (code: 0.5)", low=0.0, sweepable=True)
  delta: float = hp(0.25, "δ, the barrier's margin (code: 0.25)", low=0.0, sweepable=True)
  sign: str = hp("descend", "the upper-loss term: descend on f (BOME) or the code's "
                 "+∇f (reference)", choices=("descend", "reference"))
  mixture: str = hp("probs", "the mixture upper loss mixes probabilities (probs) or, as "
                    "the code, the main network's logits with the LCN's probabilities "
                    "(logits)", choices=("probs", "logits"))
  delta_update: bool = hp(False, "the code's branch for datasets other than CIFAR-10: "
                          "Δ_w replaced by −η·D(Δ_w) in the main gradient")


def _meta_tx(r: CorrectionHparams) -> optax.GradientTransformation:
  """The LCN's optimiser (MLC, EBOMLC: torch's Adam with AMSGrad, 3e-4)."""
  if r.meta_optimizer == "sgd":
    return optax.sgd(r.meta_lr, momentum=0.9)
  if r.meta_optimizer == "amsgrad":  # torch's convention, not optax.amsgrad's
    return torch_amsgrad(r.meta_lr)
  return optax.adam(r.meta_lr)


def _corrected_accuracy(method_state, data):
  return correction.corrected_accuracy(
      jax.nn.one_hot(method_state["corrected"], data.num_classes),
      jnp.asarray(data.train_true), jnp.asarray(data.train_corrupted))


def _beta_metrics(method_state, data):
  beta = method_state["beta"]
  q = jnp.quantile(beta, jnp.asarray([0.1, 0.5, 0.9]))
  return {**_corrected_accuracy(method_state, data), "beta_mean": jnp.mean(beta),
          "beta_q10": q[0], "beta_q50": q[1], "beta_q90": q[2]}


def _optimizer(ctx: RunContext, inp: StepInputs) -> dict:
  """The trainer's SGD, which the look-aheads follow (buffer read, not advanced)."""
  return dict(inner_lr=inp.learning_rate, momentum_buffer=inp.momentum_buffer,
              momentum=ctx.run.momentum, weight_decay=ctx.run.weight_decay)


def _halves(inp: StepInputs):
  """The clean batch's first half G (the meta objective) and second half C (joins the
  lower loss), as the authors' hmlc_K_mix, step_mlcbome and step_ebomlc split it."""
  half = inp.clean_y.shape[0] // 2
  return (inp.clean_x[:half], inp.clean_y[:half]), (inp.clean_x[half:], inp.clean_y[half:])


def _correction_method(r: CorrectionHparams, ctx: RunContext, step_fn, *,
                       gradient_steps: int = 1, epoch_metrics=_corrected_accuracy) -> Method:
  """An MLC-family method around ``step_fn(inp, lcn_apply, state, key) -> (result,
  metrics, extra)``: updates the LCN (every ``gradient_steps`` steps on accumulated
  hypergradients when more than 1, MLC's K), records the corrected labels. ``extra``
  holds the method's other :class:`Gradients` fields: ``loss_fn``, the loss the real
  step descends, where it is the gradient of one loss; ``step_from``, where the
  optimizer steps from, where that is not the step's parameters."""
  spec = ctx.spec
  lcn_apply, lcn_params = correction.lcn_init(
      spec.num_classes, spec.feature_dim, seed=ctx.run.seed, embed_dim=r.lcn_embed_dim,
      variant=r.lcn_variant)
  meta_tx = _meta_tx(r)

  def init(key):
    del key  # the LCN is drawn from the run's seed (as lcn_init's)
    state = {"lcn": lcn_params, "lcn_opt": meta_tx.init(lcn_params),
             # argmax of the corrected label of each training example, when last seen
             "corrected": jnp.full((spec.num_train,), -1, jnp.int32),
             # EBOMLC's β of each step of the current epoch (quantiles are logged)
             "beta": jnp.zeros((spec.steps_per_epoch,), jnp.float32)}
    if gradient_steps > 1:  # MLC's accumulated hypergradient
      state["lcn_accum"] = jax.tree.map(jnp.zeros_like, lcn_params)
    return state

  def gradients(inp: StepInputs) -> Gradients:
    st = inp.method_state
    # The LCN's dropout draws (EBOMLC's LCN); its own stream of the step key.
    key = jax.random.fold_in(inp.key, Stream.LCN_DROPOUT) \
        if r.lcn_variant == "ebomlc" else None
    # inp.apply returns (logits, features, batch statistics): the step hands back the
    # statistics of its forward pass of the noisy batch as res.model_state.
    res, metrics, extra = step_fn(inp, lcn_apply, st, key)
    updates, lcn_opt = meta_tx.update(res.grads_phi, st["lcn_opt"], st["lcn"])
    lcn = optax.apply_updates(st["lcn"], updates)
    state = {**st, "lcn": lcn, "lcn_opt": lcn_opt,
             "corrected": st["corrected"].at[inp.index].set(
                 jnp.argmax(res.corrected, -1).astype(jnp.int32))}
    if gradient_steps > 1:  # the LCN steps on the K-th step; in between it accumulates
      now = (inp.step + 1) % gradient_steps == 0
      pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(now, a, b), new, old)
      state.update(lcn=pick(lcn, st["lcn"]), lcn_opt=pick(lcn_opt, st["lcn_opt"]),
                   lcn_accum=pick(jax.tree.map(jnp.zeros_like, res.grads_phi),
                                  res.grads_phi))
    if "beta" in metrics:  # logged as the epoch's mean and quantiles instead
      metrics = dict(metrics)
      state["beta"] = st["beta"].at[inp.step % spec.steps_per_epoch].set(metrics.pop("beta"))
    return Gradients(res.loss, res.grads_w, res.model_state, state, metrics, **extra)

  return Method(optax.identity(), gradients, init, epoch_metrics=epoch_metrics)


def _mlc(r: MLCHparams, ctx: RunContext) -> Method:
  def step(inp, lcn_apply, st, key):
    meta, train = (inp.clean_x, inp.clean_y), None
    if r.mix:  # microsoft/MLC's default hmlc_K_mix
      meta, train = _halves(inp)
    res = correction.mlc_step(inp.apply, inp.params, lcn_apply, st["lcn"], (inp.x, inp.y),
                              meta, clean_train_batch=train,
                              accumulated_grads_phi=st.get("lcn_accum"), key=key,
                              **_optimizer(ctx, inp))
    # ℓ with this step's corrected labels held fixed (an ascent's gradient at w + ε).
    loss_fn = lambda p: correction.corrected_labels_loss(inp.apply, p, res.corrected,
                                                         (inp.x, inp.y), train)
    return res, {"clean_loss": res.clean_loss}, {"loss_fn": loss_fn}

  return _correction_method(r, ctx, step, gradient_steps=r.gradient_steps)


def _bome_mlc(r: BOMEMLCHparams, ctx: RunContext) -> Method:
  def step(inp, lcn_apply, st, key):
    meta, train = _halves(inp)
    res = correction.bome_mlc_step(inp.apply, inp.params, lcn_apply, st["lcn"],
                                   (inp.x, inp.y), meta, clean_train_batch=train,
                                   inner_steps=r.inner_steps, u=r.u, key=key,
                                   **_optimizer(ctx, inp))
    return res, {"bome_lambda": res.lam, "upper_loss": res.upper_loss}, {}

  return _correction_method(r, ctx, step)


def _ebomlc(r: EBOMLCHparams, ctx: RunContext) -> Method:
  def step(inp, lcn_apply, st, key):
    res = correction.ebomlc_step(
        inp.apply, inp.params, lcn_apply, st["lcn"], (inp.x, inp.y),
        (inp.clean_x, inp.clean_y), rho=r.mixture_rho, xi=r.xi, delta=r.delta,
        sign=r.sign, mixture=r.mixture, delta_update=r.delta_update, key=key,
        **_optimizer(ctx, inp))
    # The optimizer steps from w₁ (res.params), as the authors' step_ebomlc.
    return res, {"beta": res.beta, "upper_loss": res.upper_loss}, {"step_from": res.params}

  return _correction_method(r, ctx, step, epoch_metrics=_beta_metrics)


# Why BOME-MLC and EBOMLC take no --ascent (jaxnoisy.train.ascent): a sharpness-aware
# optimizer differentiates one loss at w + ε, and their real steps are no loss's gradient.
_NO_ASCENT = ("its real step ({}) is not the gradient of one loss, so no loss can be "
              "differentiated at the perturbed weights")

METHODS: dict[str, Registration] = {
    "mlc": Registration(MLCHparams, _mlc, "MLC (Zheng et al. 2021)", needs_clean=True),
    "bome_mlc": Registration(BOMEMLCHparams, _bome_mlc,
                             "BOME applied to MLC (the naive first-order extension)",
                             needs_clean=True,
                             no_ascent=_NO_ASCENT.format("∇f + λΔ_w, λ from T inner "
                                                         "steps")),
    "ebomlc": Registration(EBOMLCHparams, _ebomlc, "EBOMLC (Nguyen and Ta)",
                           needs_clean=True,
                           no_ascent=_NO_ASCENT.format("βΔ_w + d_f, from w₁")),
}
