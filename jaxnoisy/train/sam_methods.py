"""Trainer entries and hyper-parameter records of the sharpness-aware methods.

Each method is its Optax transform (the math lives in the library) and, for NCSAM, the
gradients that feed it. A SAM-family record builds its own transform
(``record.transform(axis_name)``), so SANER's ``base`` is any of them, nested
(``SANERHparams(base=GSAMHparams(rho=0.1, alpha=0.1))``). Defaults are the library
functions' (``tests/test_method_contract.py`` compares them).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import optax

from jaxnoisy.ncsam import (COMPENSATIONS, ncsam, ncsam_cosine, ncsam_gradients,
                             ncsam_strength)
from jaxnoisy.sam import asam, gsam, sam
from jaxnoisy.sam_variants import fsam, vasso
from jaxnoisy.saner import SANER_RHO, saner
from jaxnoisy.tree import global_norm, vdot
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.interface import (Gradients, Method, Registration, RunContext,
                                      StepInputs, cross_entropy_loss, plain_gradients)

_RHO_HELP = "ascent radius ρ (SAM's CIFAR value; label noise: 0.1)"


def _rho(default: float = 0.05, help: str = _RHO_HELP):
  return hp(default, help, low=0.0, low_open=True, sweepable=True)


@dataclasses.dataclass(frozen=True)
class SAMHparams:
  """SAM (Foret et al. 2021)"""

  rho: float = _rho()

  def transform(self, axis_name: Optional[str] = None) -> optax.GradientTransformation:
    """SAM's transform; ``axis_name``: per-device ascent over that mesh axis."""
    return sam(self.rho, axis_name=axis_name, has_aux=True)


@dataclasses.dataclass(frozen=True)
class ASAMHparams:
  """ASAM (Kwon et al. 2021)"""

  rho: float = _rho(0.5, "ASAM's radius ρ (paper: 0.5 on CIFAR-10, 1.0 on CIFAR-100)")
  eta: float = hp(0.01, "ASAM's η in T_w = |w| + η (paper: 0.01)", low=0.0, sweepable=True)

  def transform(self, axis_name: Optional[str] = None) -> optax.GradientTransformation:
    return asam(self.rho, self.eta, axis_name=axis_name, has_aux=True)


@dataclasses.dataclass(frozen=True)
class GSAMHparams:
  """GSAM (Zhuang et al. 2022)"""

  rho: float = _rho()
  alpha: float = hp(0.1, "GSAM's α, the surrogate-gap ascent (paper's sweep 0.01-0.3; "
                    "0: SAM)", low=0.0, sweepable=True)

  def transform(self, axis_name: Optional[str] = None) -> optax.GradientTransformation:
    return gsam(self.rho, self.alpha, axis_name=axis_name, has_aux=True)


@dataclasses.dataclass(frozen=True)
class FSAMHparams:
  """F-SAM (Li et al. 2024)"""

  rho: float = _rho(0.2, "F-SAM's radius ρ (authors' run.sh: 0.2)")
  sigma: float = hp(1.0, "F-SAM's σ, the share of the gradients' EMA removed from the "
                    "ascent (code: 1; 0: SAM)", low=0.0, sweepable=True)
  lmbda: float = hp(0.6, "F-SAM's λ, the EMA's decay (authors' run.sh: 0.6)", low=0.0,
                    high=1.0, sweepable=True)

  def transform(self, axis_name: Optional[str] = None) -> optax.GradientTransformation:
    return fsam(self.rho, self.sigma, self.lmbda, axis_name=axis_name, has_aux=True)


@dataclasses.dataclass(frozen=True)
class VaSSOHparams:
  """VaSSO (Li and Giannakis 2023)"""

  rho: float = _rho()
  theta: float = hp(0.9, "VaSSO's θ, the new gradient's weight in the EMA the ascent "
                    "follows (authors: 0.9; lhchau/saner: 0.2; 1: SAM)", low=0.0,
                    high=1.0, sweepable=True)

  def transform(self, axis_name: Optional[str] = None) -> optax.GradientTransformation:
    return vasso(self.rho, self.theta, axis_name=axis_name, has_aux=True)


# The SAM-like optimizers by name: SANER's bases (and any method's ascent).
SAM_FAMILY = {"sam": SAMHparams, "asam": ASAMHparams, "gsam": GSAMHparams,
              "fsam": FSAMHparams, "vasso": VaSSOHparams}


@dataclasses.dataclass(frozen=True)
class SANERHparams:
  """SANER (Luong et al., AISTATS 2026; code lhchau/saner)"""

  base: SAMHparams = hp(SAMHparams(rho=SANER_RHO), "the SAM-like optimizer SANER "
                        "reweights, with its own hyper-parameters (ρ: SANER's 0.1)",
                        records=SAM_FAMILY)
  down_weight: float = hp(0.5, "SANER's a: multiplier on group-B entries (code: 0.5)",
                          low=0.0, high=1.0, sweepable=True)
  warmup_fraction: float = hp(0.25, "fraction of training over which a moves from 1 to "
                              "down_weight (50 of 200 epochs)", low=0.0, high=1.0)
  track_groups: bool = hp(True, "log the A/B/C group fractions every step (a "
                          "diagnostic; the update is the same without it)")


@dataclasses.dataclass(frozen=True)
class NCSAMHparams:
  """NCSAM (Xu, Deng, Pang, arXiv 2601.19947)"""

  rho: float = _rho()
  kappa: float = hp(0.1, "NCSAM's κ, the compensation strength (CIFAR-10: 0.1, "
                    "CIFAR-100: 0.3)", low=0.0, sweepable=True)
  flip_rate: float = hp(0.4, "NCSAM's simulated flip rate r (paper's best: 0.4)", low=0.0,
                        high=1.0)
  warmup_fraction: float = hp(0.25, "fraction of the epochs trained by the warm-up "
                              "optimizer (50 of 200)", low=0.0, high=1.0)
  warmup: str = hp("sgd", "NCSAM's warm-up optimizer (Algorithm 1: 'using SGD or SAM')",
                   choices=("sgd", "sam"))
  noise_forward: str = hp(
      "shared", "g* from the batch's forward pass (shared, the paper) or from a forward "
      "pass over the flipped subset only (subset, the authors' later code)",
      choices=("shared", "subset"))
  label_smoothing: float = hp(0.0, "label smoothing of g*'s cross-entropy (the authors' "
                              "later code: 0.1)", low=0.0, high=1.0)
  compensation: str = hp("paper", "NCSAM's compensation: the raw g* (paper) or, a variant "
                         "beyond the paper, g* sized to ρ, s·ρ·g*/‖g*‖ (rho)",
                         choices=COMPENSATIONS)


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


def _sam_family(record, ctx: RunContext) -> Method:
  """SAM, ASAM, GSAM, F-SAM, VaSSO: the record's transform on the plain gradient."""
  return Method(record.transform(ctx.axis_name), plain_gradients)


def _saner_groups(opt_state) -> dict:
  """SANER's A/B/C fractions of the last update (already averaged over devices)."""
  fractions = optax.tree_utils.tree_get(opt_state, "group_fractions")
  return {f"saner_group_{g}": v for g, v in (fractions or {}).items()}


def _saner(r: SANERHparams, ctx: RunContext) -> Method:
  # SANER compares each device's own g_SAM with its own g: its base must not average.
  warmup = round(r.warmup_fraction * ctx.run.epochs * ctx.spec.steps_per_epoch)
  tx = saner(down_weight=r.down_weight, warmup_steps=warmup, base=r.base.transform(None),
             axis_name=ctx.axis_name, track_groups=r.track_groups)
  return Method(tx, plain_gradients, state_metrics=_saner_groups)


def noise_compensated_gradients(r: NCSAMHparams, ctx: RunContext):
  """g and NCSAM's g* (from the batch's forward pass, or with ``noise_forward=
  "subset"`` from a pass over the flipped examples only); g* is passed as
  ``noise_grads``. Logged per step (epoch means): ‖g‖, ‖g*‖, s(t)‖c‖/ρ, the
  compensation's length against the ascent's at the step's t = (epoch + 1)/T (c = g*,
  or ρ·ĝ* with ``compensation="rho"``; above 1, ε is projected back onto the ρ-ball and
  points mostly along c), and cos(ε, ε_SAM) = cos(ε, g), the ascent actually taken
  against SAM's."""

  def gradients(inp: StepInputs) -> Gradients:
    logits_fn = lambda p: (lambda out: (out[0], out[2]))(inp.apply(p, inp.x))
    subset = None
    if r.noise_forward == "subset":
      subset = lambda p, index: (lambda out: (out[0], out[2]))(inp.apply(p, inp.x[index]))
    loss, grads, noise_grads, model_state = ncsam_gradients(
        logits_fn, inp.params, inp.y, inp.key, r.flip_rate, has_aux=True,
        noise_forward=r.noise_forward, subset_logits_fn=subset,
        label_smoothing=r.label_smoothing)
    t = (inp.step // ctx.spec.steps_per_epoch + 1) / ctx.run.epochs
    s = ncsam_strength(t, r.kappa)
    noise_norm = global_norm(noise_grads)
    # The compensation's length: s‖g*‖ (paper) or sρ (rho-sized), against ρ.
    compensation = s * (noise_norm if r.compensation == "paper" else r.rho)
    grad_norm = global_norm(grads)
    metrics = {"ncsam_grad_norm": grad_norm, "ncsam_noise_grad_norm": noise_norm,
               "ncsam_compensation_over_rho": compensation / r.rho,
               "ncsam_cos_eps_sam": ncsam_cosine(grad_norm, noise_norm, vdot(grads, noise_grads),
                                                 r.rho, s, r.compensation)}
    return Gradients(loss, grads, model_state, inp.method_state, metrics,
                     extra_args={"noise_grads": noise_grads},
                     loss_fn=cross_entropy_loss(inp.apply, inp.x, inp.y))

  return gradients


def _ncsam(r: NCSAMHparams, ctx: RunContext) -> Method:
  axis = ctx.axis_name
  warm = sam(r.rho, axis_name=axis, has_aux=True) if r.warmup == "sam" else optax.identity()
  tx = during_warmup(ncsam(r.rho, r.kappa, axis_name=axis, has_aux=True,
                           compensation=r.compensation), warm)
  return Method(tx, noise_compensated_gradients(r, ctx),
                warmup_epochs=round(r.warmup_fraction * ctx.run.epochs))


def _sharpness_aware(hparams: type, build, description: str) -> Registration:
  """A SAM-family entry: its ascent may be per device; it takes no ``--ascent``
  (:mod:`jaxnoisy.train.ascent`), being one itself."""
  return Registration(hparams, build, description, per_device_ascent=True,
                      no_ascent="it is a sharpness-aware optimizer itself (SANER's --base "
                      "composes them)")


METHODS: dict[str, Registration] = {
    "sam": _sharpness_aware(SAMHparams, _sam_family, "SAM (Foret et al. 2021)"),
    "asam": _sharpness_aware(ASAMHparams, _sam_family, "ASAM (Kwon et al. 2021)"),
    "gsam": _sharpness_aware(GSAMHparams, _sam_family, "GSAM (Zhuang et al. 2022)"),
    "fsam": _sharpness_aware(FSAMHparams, _sam_family, "F-SAM (Li et al. 2024)"),
    "vasso": _sharpness_aware(VaSSOHparams, _sam_family, "VaSSO (Li and Giannakis 2023)"),
    "saner": _sharpness_aware(SANERHparams, _saner, "SANER (Luong et al.) over --base"),
    "ncsam": _sharpness_aware(NCSAMHparams, _ncsam, "NCSAM (Xu et al.)"),
}
