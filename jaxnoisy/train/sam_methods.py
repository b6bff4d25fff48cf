"""Trainer entries and hyper-parameters of the sharpness-aware methods.

Each method is its Optax transform (the math lives in the library) and, for NCSAM, the
gradients that feed it. The SAM variants share SAM's radius through :class:`SAMHparams`;
SANER's record holds those of every base it can wrap (`--saner-base`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import optax

from jaxnoisy.ncsam import ncsam, ncsam_gradients, ncsam_strength
from jaxnoisy.sam import asam, gsam, sam
from jaxnoisy.sam_variants import fsam, vasso
from jaxnoisy.saner import saner
from jaxnoisy.tree import global_norm
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.interface import (Gradients, Method, StepInputs, identity_transform,
                                      plain_gradients)


@dataclasses.dataclass(frozen=True)
class SAMHparams:
  """SAM family (Foret et al. 2021)"""

  rho: float = hp(0.05, "ascent radius ρ (SAM's CIFAR value; label noise: 0.1)",
                  low=0.0, low_open=True, sweepable=True)


@dataclasses.dataclass(frozen=True)
class ASAMHparams(SAMHparams):
  """ASAM (Kwon et al. 2021)"""

  asam_eta: float = hp(0.01, "ASAM's η in T_w = |w| + η (paper: 0.01)", low=0.0,
                       sweepable=True)


@dataclasses.dataclass(frozen=True)
class GSAMHparams(SAMHparams):
  """GSAM (Zhuang et al. 2022)"""

  gsam_alpha: float = hp(0.1, "GSAM's α, the surrogate-gap ascent (0: SAM)", low=0.0,
                         sweepable=True)


@dataclasses.dataclass(frozen=True)
class FSAMHparams(SAMHparams):
  """F-SAM (Li et al. 2024)"""

  fsam_sigma: float = hp(1.0, "F-SAM's σ, the share of the gradients' EMA removed from "
                         "the ascent (code: 1; 0: SAM)", low=0.0, sweepable=True)
  fsam_lambda: float = hp(0.6, "F-SAM's λ, the EMA's decay (authors' run.sh: 0.6)", low=0.0,
                          high=1.0, sweepable=True)


@dataclasses.dataclass(frozen=True)
class VaSSOHparams(SAMHparams):
  """VaSSO (Li and Giannakis 2023)"""

  vasso_theta: float = hp(0.9, "VaSSO's θ, the new gradient's weight in the EMA the "
                          "ascent follows (authors: 0.9; 1: SAM)", low=0.0, high=1.0,
                          sweepable=True)


@dataclasses.dataclass(frozen=True)
class SANERHparams(ASAMHparams, GSAMHparams, FSAMHparams, VaSSOHparams):
  """SANER (Luong et al., AISTATS 2026; code lhchau/saner)"""

  down_weight: float = hp(0.5, "SANER's a: multiplier on group-B entries (code: 0.5)",
                          low=0.0, high=1.0, sweepable=True)
  saner_warmup_fraction: float = hp(
      0.25, "fraction of training over which a moves from 1 to down_weight (50 of 200 "
      "epochs)", low=0.0, high=1.0)
  saner_base: str = hp("sam", "the SAM-like optimizer SANER reweights",
                       choices=("sam", "asam", "gsam", "fsam", "vasso"))
  saner_track_groups: bool = hp(True, "log the A/B/C group fractions every step "
                                "(a diagnostic; the update is the same without it)")


@dataclasses.dataclass(frozen=True)
class NCSAMHparams(SAMHparams):
  """NCSAM (Xu, Deng, Pang, arXiv 2601.19947)"""

  kappa: float = hp(0.1, "NCSAM's κ, the compensation strength (CIFAR-10: 0.1, "
                    "CIFAR-100: 0.3)", low=0.0, sweepable=True)
  flip_rate: float = hp(0.4, "NCSAM's simulated flip rate r (paper's best: 0.4)", low=0.0,
                        high=1.0)
  ncsam_warmup_fraction: float = hp(
      0.25, "fraction of the epochs trained by the warm-up optimizer (50 of 200)",
      low=0.0, high=1.0)
  ncsam_warmup: str = hp("sgd", "NCSAM's warm-up optimizer (Algorithm 1: 'using SGD or "
                         "SAM')", choices=("sgd", "sam"))
  ncsam_noise_forward: str = hp(
      "shared", "g* from the batch's forward pass (shared, the paper) or from a forward "
      "pass over the flipped subset only (subset, the authors' later code)",
      choices=("shared", "subset"))
  ncsam_label_smoothing: float = hp(0.0, "label smoothing of g*'s cross-entropy (the "
                                    "authors' later code: 0.1)", low=0.0, high=1.0)


def during_warmup(inner: optax.GradientTransformation,
                  warm: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``warm`` when the extra argument ``warmup=True`` (a Python bool, fixed when the step
  is traced), ``inner`` otherwise; the state holds both.

  The trainer compiles a separate warm-up step rather than switching with
  ``lax.cond``: on CPU a conditional around the SAM passes tripled the step time.
  """
  inner = optax.with_extra_args_support(inner)
  warm = optax.with_extra_args_support(warm)

  def init_fn(params):
    return inner.init(params), warm.init(params)

  def update_fn(updates, state, params=None, *, warmup: bool = False, **extra_args):
    if warmup:
      updates, warm_state = warm.update(updates, state[1], params, **extra_args)
      return updates, (state[0], warm_state)
    updates, inner_state = inner.update(updates, state[0], params, **extra_args)
    return updates, (inner_state, state[1])

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _fsam(c, axis: Optional[str]):
  return fsam(c.rho, c.fsam_sigma, c.fsam_lambda, axis_name=axis, has_aux=True)


def _vasso(c, axis: Optional[str]):
  return vasso(c.rho, c.vasso_theta, axis_name=axis, has_aux=True)


def _sam_base(c, axis: Optional[str]):
  """The SAM-family transform named by ``c.saner_base`` (SANER's base)."""
  if c.saner_base == "asam":
    return asam(c.rho, c.asam_eta, axis_name=axis, has_aux=True)
  if c.saner_base == "gsam":
    return gsam(c.rho, c.gsam_alpha, axis_name=axis, has_aux=True)
  if c.saner_base == "fsam":
    return _fsam(c, axis)
  if c.saner_base == "vasso":
    return _vasso(c, axis)
  return sam(c.rho, axis_name=axis, has_aux=True)


def _saner(c, axis: Optional[str], steps_per_epoch: int):
  # SANER compares each device's own g_SAM with its own g: its base must not average.
  warmup = round(c.saner_warmup_fraction * c.epochs * steps_per_epoch)
  return saner(down_weight=c.down_weight, warmup_steps=warmup, base=_sam_base(c, None),
               axis_name=axis, track_groups=c.saner_track_groups)


def _saner_groups(opt_state) -> dict:
  """SANER's A/B/C fractions of the last update (already averaged over devices)."""
  fractions = optax.tree_utils.tree_get(opt_state, "group_fractions")
  return {f"saner_group_{g}": v for g, v in (fractions or {}).items()}


def _ncsam(c, axis: Optional[str], steps_per_epoch: int):
  del steps_per_epoch
  warm = sam(c.rho, axis_name=axis, has_aux=True) if c.ncsam_warmup == "sam" else \
      optax.identity()
  return during_warmup(ncsam(c.rho, c.kappa, axis_name=axis, has_aux=True), warm)


def noise_compensated_gradients(config, spec):
  """g and NCSAM's g* (from the batch's forward pass, or with ``ncsam_noise_forward=
  "subset"`` from a pass over the flipped examples only); g* is passed as
  ``noise_grads``. Logged per step (epoch means): ‖g‖, ‖g*‖ and s(t)‖g*‖/ρ, the
  compensation's length against the ascent's at the step's t = (epoch + 1)/T (above 1,
  ε is projected back onto the ρ-ball and points mostly along g*)."""

  def gradients(inp: StepInputs) -> Gradients:
    logits_fn = lambda p: (lambda out: (out[0], out[2]))(inp.apply(p, inp.x))
    subset = None
    if config.ncsam_noise_forward == "subset":
      subset = lambda p, index: (lambda out: (out[0], out[2]))(inp.apply(p, inp.x[index]))
    loss, grads, noise_grads, model_state = ncsam_gradients(
        logits_fn, inp.params, inp.y, inp.key, config.flip_rate, has_aux=True,
        noise_forward=config.ncsam_noise_forward, subset_logits_fn=subset,
        label_smoothing=config.ncsam_label_smoothing)
    t = (inp.step // spec.steps_per_epoch + 1) / config.epochs
    noise_norm = global_norm(noise_grads)
    metrics = {"ncsam_grad_norm": global_norm(grads), "ncsam_noise_grad_norm": noise_norm,
               "ncsam_compensation_over_rho":
                   ncsam_strength(t, config.kappa) * noise_norm / config.rho}
    return Gradients(loss, grads, model_state, {"noise_grads": noise_grads},
                     inp.method_state, metrics)

  return gradients


METHODS: dict[str, Method] = {
    "sgd": Method(identity_transform, plain_gradients, "plain SGD with momentum"),
    "sam": Method(lambda c, axis, spe: sam(c.rho, axis_name=axis, has_aux=True),
                  plain_gradients, "SAM (Foret et al. 2021)", hparams=(SAMHparams,),
                  sam_family=True),
    "asam": Method(lambda c, axis, spe: asam(c.rho, c.asam_eta, axis_name=axis, has_aux=True),
                   plain_gradients, "ASAM (Kwon et al. 2021)", hparams=(ASAMHparams,),
                   sam_family=True),
    "gsam": Method(lambda c, axis, spe: gsam(c.rho, c.gsam_alpha, axis_name=axis, has_aux=True),
                   plain_gradients, "GSAM (Zhuang et al. 2022)", hparams=(GSAMHparams,),
                   sam_family=True),
    "fsam": Method(lambda c, axis, spe: _fsam(c, axis), plain_gradients,
                   "F-SAM (Li et al. 2024)", hparams=(FSAMHparams,), sam_family=True),
    "vasso": Method(lambda c, axis, spe: _vasso(c, axis), plain_gradients,
                    "VaSSO (Li and Giannakis 2023)", hparams=(VaSSOHparams,),
                    sam_family=True),
    "saner": Method(_saner, plain_gradients, "SANER (Luong et al.) over --saner-base",
                    hparams=(SANERHparams,), state_metrics=_saner_groups, sam_family=True),
    "ncsam": Method(_ncsam, noise_compensated_gradients, "NCSAM (Xu et al.)",
                    hparams=(NCSAMHparams,),
                    warmup_epochs=lambda c: round(c.ncsam_warmup_fraction * c.epochs),
                    sam_family=True),
}
