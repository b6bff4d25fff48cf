"""The trainer's method table: each method is the Optax transform placed before the
base optimizer (weight decay and SGD with momentum follow it in the chain).

A new gradient-transform method is one entry here; its math lives in the library.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import optax

from jaxnoisy.sam import asam, sam
from jaxnoisy.train.config import TrainConfig


class Method(NamedTuple):
  """How the trainer runs a method.

  transform: ``(config, axis_name) -> GradientTransformation`` placed first in the
    chain; ``axis_name`` is the mesh axis for per-device ascent, or None.
  description: one line for ``--help``.
  """

  transform: Callable[[TrainConfig, Optional[str]], optax.GradientTransformation]
  description: str


METHODS: dict[str, Method] = {
    "sgd": Method(lambda c, axis: optax.identity(), "plain SGD with momentum"),
    "sam": Method(lambda c, axis: sam(c.rho, axis_name=axis, has_aux=True),
                  "SAM (Foret et al. 2021), --rho"),
    "asam": Method(lambda c, axis: asam(c.rho, c.asam_eta, axis_name=axis,
                                                has_aux=True),
                   "ASAM (Kwon et al. 2021), --rho, --asam-eta"),
}
