"""The trainer's method table: every method the trainer runs, by name.

A method is a :class:`~jaxnoisy.train.interface.Registration`: its hyper-parameter
record and its factory. Adding one is one module (its record and factory), one
:func:`register` call (or one line in ``METHODS`` below for the built-in ones) and one
test file; the config's record, the command-line flags and the sweepable set derive
from the record, and ``tests/test_method_contract.py`` runs it through the trainer.
"""

from __future__ import annotations

import dataclasses

import optax

from jaxnoisy.train import ascent, correction_methods, reweight_methods, sam_methods
from jaxnoisy.train.interface import (Method, ModelSpec, Registration, RunContext,
                                      plain_gradients)


@dataclasses.dataclass(frozen=True)
class SGDHparams:
  """Plain SGD: no hyper-parameters beyond the run's"""


#: Every method the trainer runs, by its ``--method`` name.
METHODS: dict[str, Registration] = {
    "sgd": Registration(SGDHparams, lambda r, ctx: Method(optax.identity(), plain_gradients),
                        "plain SGD with momentum",
                        no_ascent="plain SGD under an ascent is that ascent's method "
                        "(--method sam, saner, ...)"),
    **sam_methods.METHODS,
    **reweight_methods.METHODS,
    **correction_methods.METHODS,
}


def register(name: str, registration: Registration) -> None:
  """Adds a method to the table (e.g. a research prototype's, from its own module).

  Its record's names must not be those of the run's fields (they share the command
  line's flags and ``TrainConfig.replace``); raises a one-line ``ValueError`` otherwise.
  """
  from jaxnoisy.train.config import check_registration
  if name in METHODS:
    raise ValueError(f"method {name!r} is already registered")
  check_registration(name, registration)
  METHODS[name] = registration


def build(config, spec: ModelSpec, axis_name=None) -> Method:
  """The :class:`~jaxnoisy.train.interface.Method` of ``config``'s method: its factory
  applied to ``config.hparams`` and this run's context, its real step taken by the
  record's ``ascent`` where it has one (:mod:`jaxnoisy.train.ascent`)."""
  ctx = RunContext(config, spec, axis_name)
  method = METHODS[config.method].build(config.hparams, ctx)
  return ascent.over_ascent(method, config.hparams, ctx, config.method)
