"""The trainer's method table.

A method is (1) the Optax transform placed first in the chain, before weight decay and
SGD with momentum, and (2) how the step computes the gradient(s) it feeds that
transform. A new SAM-family method is one entry here; its math lives in the library.
"""

from __future__ import annotations

from typing import Optional

import jax
import optax

from jaxnoisy.ncsam import ncsam, ncsam_gradients
from jaxnoisy.sam import asam, gsam, sam
from jaxnoisy.saner import saner
from jaxnoisy.train import meta_methods
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.interface import Gradients, Method, StepInputs, cross_entropy_loss


def plain_gradients(config: TrainConfig, spec=None):
  """Cross-entropy on the noisy labels: one forward and one backward pass."""
  del config, spec

  def gradients(inp: StepInputs) -> Gradients:
    loss_fn = cross_entropy_loss(inp.apply, inp.x, inp.y)
    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(inp.params)
    return Gradients(loss, grads, model_state, {}, inp.method_state, {})

  return gradients


def noise_compensated_gradients(config: TrainConfig, spec=None):
  """g and NCSAM's g* from one forward pass; g* is passed as ``noise_grads``."""
  del spec

  def gradients(inp: StepInputs) -> Gradients:
    logits_fn = lambda p: (lambda out: (out[0], out[2]))(inp.apply(p, inp.x))
    loss, grads, noise_grads, model_state = ncsam_gradients(
        logits_fn, inp.params, inp.y, inp.key, config.flip_rate, has_aux=True)
    return Gradients(loss, grads, model_state, {"noise_grads": noise_grads},
                     inp.method_state, {})

  return gradients


def skip_during_warmup(
    inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``inner``, except that with the extra argument ``warmup=True`` (a Python bool,
  fixed when the step is traced) gradients pass through unchanged: plain SGD.

  The trainer compiles a separate warm-up step rather than switching with
  ``lax.cond``: on CPU a conditional around the SAM passes tripled the step time.
  """
  inner = optax.with_extra_args_support(inner)

  def update_fn(updates, state, params=None, *, warmup: bool = False, **extra_args):
    if warmup:
      return updates, state
    return inner.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def _sam_base(c: TrainConfig, axis: Optional[str]):
  """The SAM-family transform named by ``c.saner_base`` (SANER's base)."""
  if c.saner_base == "asam":
    return asam(c.rho, c.asam_eta, axis_name=axis, has_aux=True)
  if c.saner_base == "gsam":
    return gsam(c.rho, c.gsam_alpha, axis_name=axis, has_aux=True)
  return sam(c.rho, axis_name=axis, has_aux=True)


def _saner(c: TrainConfig, axis: Optional[str], steps_per_epoch: int):
  # SANER compares each device's own g_SAM with its own g: its base must not average.
  warmup = round(c.saner_warmup_fraction * c.epochs * steps_per_epoch)
  return saner(c.rho, c.down_weight, warmup_steps=warmup, base=_sam_base(c, None),
               axis_name=axis, track_groups=c.saner_track_groups)


def _ncsam(c: TrainConfig, axis: Optional[str], steps_per_epoch: int):
  del steps_per_epoch
  return skip_during_warmup(ncsam(c.rho, c.kappa, axis_name=axis, has_aux=True))


METHODS: dict[str, Method] = {
    "sgd": Method(lambda c, axis, spe: optax.identity(), plain_gradients,
                  "plain SGD with momentum"),
    "sam": Method(lambda c, axis, spe: sam(c.rho, axis_name=axis, has_aux=True),
                  plain_gradients, "SAM (Foret et al. 2021): --rho", sam_family=True),
    "asam": Method(lambda c, axis, spe: asam(c.rho, c.asam_eta, axis_name=axis, has_aux=True),
                   plain_gradients, "ASAM (Kwon et al. 2021): --rho, --asam-eta",
                   sam_family=True),
    "gsam": Method(lambda c, axis, spe: gsam(c.rho, c.gsam_alpha, axis_name=axis, has_aux=True),
                   plain_gradients, "GSAM (Zhuang et al. 2022): --rho, --gsam-alpha",
                   sam_family=True),
    "saner": Method(_saner, plain_gradients,
                    "SANER (Luong et al.): --rho, --down-weight, --saner-warmup-fraction, "
                    "--saner-base {sam,asam,gsam}", sam_family=True),
    "ncsam": Method(_ncsam, noise_compensated_gradients,
                    "NCSAM (Xu et al.): --rho, --kappa, --flip-rate, --ncsam-warmup-fraction",
                    warmup_epochs=lambda c: round(c.ncsam_warmup_fraction * c.epochs),
                    sam_family=True),
    **meta_methods.METHODS,
}
