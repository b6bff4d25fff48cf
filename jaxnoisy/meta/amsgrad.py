"""AMSGrad as PyTorch computes it: the label-correction network's optimiser.

The MLC and EBOMLC authors train the LCN with ``torch.optim.Adam(amsgrad=True)``
(microsoft/MLC and hoanganhknk/enhanced_MLC, ``main.py``: β = (0.9, 0.999), ε = 1e-8, no
weight decay). torch keeps the running maximum of the *raw* second moment and divides it
by the current step's bias correction; ``optax.amsgrad`` keeps the maximum of the
*bias-corrected* moment. The two agree at step 1 and differ after it: with shrinking
gradients torch's steps are larger, because its maximum is an early raw moment that the
growing correction 1/(1 − β₂ᵗ) no longer inflates.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["TorchAMSGradState", "torch_amsgrad"]


class TorchAMSGradState(NamedTuple):
  count: jax.Array   # steps taken, t
  mu: optax.Updates  # m_t, the first moment
  nu: optax.Updates  # v_t, the raw second moment
  nu_max: optax.Updates  # max(v_1, ..., v_t), raw


def torch_amsgrad(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
                  eps: float = 1e-8) -> optax.GradientTransformation:
  r"""Adam with AMSGrad in PyTorch's convention (``torch.optim.Adam(amsgrad=True)``).

  .. math::

    m_t = β_1 m_{t-1} + (1 - β_1) g_t, \quad v_t = β_2 v_{t-1} + (1 - β_2) g_t^2, \quad
    \hat v_t = \max(\hat v_{t-1}, v_t),

    u_t = -\frac{η}{1 - β_1^t} \, \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - β_2^t} + ε}

  with :math:`m_0 = v_0 = \hat v_0 = 0`. The maximum is of the raw moment
  :math:`v_t`; ``optax.amsgrad`` takes it of :math:`v_t / (1 - β_2^t)`, which gives
  other steps from t = 2 on. Defaults are torch's (those of the MLC and EBOMLC code).
  """

  def init_fn(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return TorchAMSGradState(jnp.zeros((), jnp.int32), zeros(), zeros(), zeros())

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)

    def step(m, v):
      # 1 − βᵗ as −expm1(t·log β): exact to rounding in float32 too (torch computes the
      # corrections in double on the host; 1 − 0.999 in float32 is 5e-5 off).
      t = count.astype(m.dtype)
      bc1, bc2 = -jnp.expm1(t * math.log(b1)), -jnp.expm1(t * math.log(b2))
      return (-learning_rate / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)

    return (jax.tree.map(step, mu, nu_max),
            TorchAMSGradState(count, mu, nu, nu_max))

  return optax.GradientTransformation(init_fn, update_fn)
