"""Any method that changes the loss over any sharpness-aware optimizer (``--ascent``).

The reweighting methods (L2RW, meta-reweighting, MW-Net, FBR) and MLC change the loss —
per-example weights, corrected labels — and hand the real step to SGD. Their records
carry an ``ascent`` field (:class:`AscentHparams`): ``none`` (today's step) or a
SAM-family record, the same records the SAM-family methods are built from
(``MLCHparams(ascent=SANERHparams())``, ``--method mlc --ascent saner --rho 0.1``), so
the flags and the defaults have one source. The ascent's transform then takes the real
step; the sharpness-aware gradient is that of the loss the method's step descends, with
its weights or corrected labels held at their values of this step (its
``Gradients.loss_fn``, L(w; s) with s the step's weights or labels):

.. math::

  g = \\nabla_w L(w; s), \\quad \\epsilon = \\rho\\, g / (\\lVert g\\rVert + \\mathrm{eps})
  \\ (\\text{or the ascent's own } \\epsilon), \\quad
  g_{\\mathrm{SAM}} = \\nabla_w L(w + \\epsilon; s)

— for the reweighting methods L = (1/B) Σ w_i CE_i with the step's w; for MLC
L = mean softCE(f_w(x), ŷ) with the LCN's labels ŷ of this step (mixed size-weighted
with the clean half's CE, as the method's step). SANER then compares g_SAM with g.

Decisions:

* The ascent acts on the method's real steps only: FBR's per-epoch clean passes keep
  plain SGD (same momentum buffer) and leave the ascent's state alone, so SANER's
  warm-up of ``a`` and F-SAM's and VaSSO's gradient averages count noisy steps, as the
  learning-rate schedule does (in the table's protocol an epoch's 30 clean passes take
  240 steps against its 117 noisy ones, and would end SANER's warm-up three times
  early).
* A name the method's record has itself stays the method's on the command line (FBR's
  ``--warmup-fraction``); the ascent's then keeps its default unless set in a config
  (``FBRHparams(ascent=SANERHparams(warmup_fraction=0.1))``).
* The ascent's ε is global (``--per-device-ascent`` stays with the SAM-family methods):
  the reweighting methods normalise their weights over the whole batch.
* Refused, with a one-line error before anything compiles: EBOMLC and BOME-MLC, whose
  real step is not the gradient of one loss (their ``Registration.no_ascent`` says
  why), SGD (its ascent is the SAM-family method itself) and the SAM family.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import optax

from jaxnoisy.train import sam_methods
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.interface import Gradients, Method, RunContext, StepInputs


@dataclasses.dataclass(frozen=True)
class NoAscentHparams:
  """none: the method's own step (plain SGD)"""


# The optimizers that can take a method's real step, by name: the SAM-family records.
ASCENTS = {"none": NoAscentHparams, **sam_methods.SAM_FAMILY,
           "saner": sam_methods.SANERHparams}


@dataclasses.dataclass(frozen=True)
class AscentHparams:
  """The ``ascent`` field of a method's record: inherit it to accept ``--ascent``. The
  method's ``gradients`` must fill ``Gradients.loss_fn``."""

  ascent: Any = hp(NoAscentHparams(), "the sharpness-aware optimizer that takes the "
                   "real step of a method that changes the loss, on that loss (weights "
                   "or corrected labels held fixed); its flags (--rho, --base, ...) apply "
                   "unchanged", records=ASCENTS)


def is_none(value) -> bool:
  """Whether an ``ascent`` value (a name or a record) is ``none``."""
  return value == "none" or isinstance(value, NoAscentHparams)


def refusal(method: str, reason: str) -> str:
  """The one-line error for ``--ascent`` on a method that takes none."""
  takes = ", ".join(n for n in ASCENTS if n != "none")
  return (f"ascent must be none for method {method!r}: "
          f"{reason or 'its record has no ascent field (AscentHparams)'}; the ascents "
          f"({takes}) go over the methods that change the loss")


def skipped_in_phase(ascent: optax.GradientTransformation
                     ) -> optax.GradientTransformationExtraArgs:
  """``ascent``, but the identity (state untouched) when called with ``ascend=False``
  (a Python bool fixed at trace: the phase steps' gradients pass it)."""
  inner = optax.with_extra_args_support(ascent)

  def update_fn(updates, state, params=None, *, ascend: bool = True, **extra_args):
    if not ascend:
      return updates, state
    return inner.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def _ascent_name(record) -> str:
  return next(k for k, cls in ASCENTS.items() if type(record) is cls)


def over_ascent(method: Method, record, ctx: RunContext, name: str) -> Method:
  """``method`` (built from ``record``) with its real step taken by ``record.ascent``
  (unchanged when the record has no ascent or it is ``none``)."""
  chosen: Optional[Any] = getattr(record, "ascent", None)
  if chosen is None or is_none(chosen):
    return method
  # The SAM-family method's own factory: its transform and metrics (SANER's groups).
  ascent = sam_methods.METHODS[_ascent_name(chosen)].build(chosen, ctx)
  inner_gradients = method.gradients

  def gradients(inp: StepInputs) -> Gradients:
    out = inner_gradients(inp)
    if out.loss_fn is None or out.step_from is not None:
      raise ValueError(f"method {name!r} cannot take an ascent: its gradients carry no "
                       "loss_fn (or step from elsewhere than w)")
    return out

  phase = method.phase
  if phase is not None:  # plain SGD in the phase (see the module's decisions)
    def phase_gradients(inp: StepInputs, inner=phase.gradients) -> Gradients:
      out = inner(inp)
      return out._replace(extra_args={**out.extra_args, "ascend": False})

    phase = phase._replace(gradients=phase_gradients)
  metrics = [m for m in (method.state_metrics, ascent.state_metrics) if m is not None]
  return method._replace(
      transform=optax.chain(skipped_in_phase(ascent.transform), method.transform),
      gradients=gradients, phase=phase,
      state_metrics=(lambda s: {k: v for m in metrics for k, v in m(s).items()})
      if metrics else None)
