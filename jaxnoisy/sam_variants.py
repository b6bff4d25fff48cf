"""SAM whose ascent comes from an EMA of past gradients: Friendly SAM and VaSSO.

F-SAM (Li et al., CVPR 2024) subtracts an EMA of the batch gradients — an estimate of
the full gradient — from the ascent direction, which leaves the batch's own gradient
noise; VaSSO (Li and Giannakis, NeurIPS 2023) ascends along the EMA itself, a lower
variance estimate of the gradient. Both are Optax transforms with the interface of
:func:`jaxnoisy.sam` (``params`` and the extra argument ``grad_fn`` in ``update``),
whose :class:`GradientEMAState` holds the EMA. The pure pieces are :func:`gradient_ema`
and :func:`fsam_direction`; ε is :func:`jaxnoisy.sam_perturbation` of the direction.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jaxnoisy._validate import check_range
from jaxnoisy.sam import perturbed_gradient, sam_perturbation, sharpness_aware


class GradientEMAState(NamedTuple):
  """The state of :func:`fsam` and :func:`vasso`.

  Attributes:
    count: number of updates so far (int32); 0 marks the first step, where the EMA
      starts at the gradient itself.
    ema: the EMA of the batch gradients (F-SAM's m, VaSSO's v), shaped and typed like
      the parameters.
  """
  count: jax.Array
  ema: Any


def gradient_ema(ema, grads, decay):
  r"""One step of an exponential moving average of gradients, leaf by leaf.

  .. math::

    m \leftarrow \beta\, m + (1 - \beta)\, g

  Computed in ``promote_types(dtype, float32)`` and returned in the dtypes of ``ema``.
  ``decay`` may be traced; β = 0 returns g itself (the first step of both methods).

  Args:
    ema: m, the average so far.
    grads: g, the new gradient, same structure.
    decay: β in [0, 1].

  Returns:
    The new average, same structure and dtypes as ``ema``.
  """
  def leaf(m, g):
    dtype = jnp.promote_types(jnp.result_type(m, g), jnp.float32)
    beta = jnp.asarray(decay, dtype)
    return (beta * m.astype(dtype) + (1 - beta) * g.astype(dtype)).astype(m.dtype)

  return jax.tree.map(leaf, ema, grads)


def fsam_direction(grads, ema, sigma):
  r"""F-SAM's ascent direction: the batch gradient minus σ times the gradients' EMA.

  .. math::

    d = g - \sigma\, m

  Computed in ``promote_types(dtype, float32)``; d keeps the dtypes of ``grads``.

  Args:
    grads: g, the batch gradient.
    ema: m, the EMA of the previous batch gradients (F-SAM's "momentum").
    sigma: σ ≥ 0, may be traced (0 gives SAM's direction).

  Returns:
    d, same structure and dtypes as ``grads``.
  """
  def leaf(g, m):
    dtype = jnp.promote_types(jnp.result_type(g, m), jnp.float32)
    return (g.astype(dtype) - jnp.asarray(sigma, dtype) * m.astype(dtype)).astype(g.dtype)

  return jax.tree.map(leaf, grads, ema)


def _ema_ascent(name: str, rho, decay, direction_fn: Callable, *, eps: float,
                axis_name: Optional[str],
                has_aux: bool) -> optax.GradientTransformationExtraArgs:
  """The transform of both methods: ``direction_fn(g, m_old, m_new) -> d`` gives the
  ascent direction, ε = ρ d / (‖d‖ + eps), and the EMA (decay β; β = 0 on the first
  step) is kept in a :class:`GradientEMAState`."""

  def init_fn(params):
    return GradientEMAState(count=jnp.zeros((), jnp.int32),
                            ema=jax.tree.map(jnp.zeros_like, params))

  def step(g, state, params, grad_fn):
    beta = jnp.where(state.count == 0, 0.0, decay)
    ema = gradient_ema(state.ema, g, beta)
    perturbation = sam_perturbation(direction_fn(g, state.ema, ema), rho, eps=eps)
    g_sam = perturbed_gradient(grad_fn, params, perturbation, has_aux=has_aux,
                               axis_name=axis_name)
    if axis_name is not None:  # the EMA of the averaged gradient: replicated state
      ema = jax.lax.pmean(ema, axis_name)
    return g_sam, GradientEMAState(count=optax.safe_increment(state.count), ema=ema)

  return sharpness_aware(name, step, init_fn)


def fsam(rho: float = 0.2, sigma: float = 1.0, lmbda: float = 0.6, *,
         eps: float = 1e-12, axis_name: Optional[str] = None,
         has_aux: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""Friendly SAM: the ascent drops the full-gradient estimate m from the batch gradient.

  .. math::

    d_t = g_t - \sigma\, m_{t-1}, \quad
    m_t = \lambda\, m_{t-1} + (1 - \lambda)\, g_t, \quad
    \varepsilon = \rho \frac{d_t}{\lVert d_t \rVert + \epsilon}, \quad
    g_{\mathrm{F\text{-}SAM}} = \nabla L_B(w + \varepsilon)

  and on the first step (t = 0) d_0 = g_0 (SAM's step) and m_0 = g_0. Same interface
  as :func:`jaxnoisy.sam`; place it first in an ``optax.chain``:

  >>> import jax, jax.numpy as jnp, optax, jaxnoisy
  >>> x, y = jnp.arange(12.0).reshape(4, 3) / 10, jnp.array([0, 1, 1, 0])
  >>> loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()
  >>> params, grad_fn = jnp.zeros((3, 2)), jax.grad(loss)
  >>> tx = optax.chain(jaxnoisy.fsam(0.05, sigma=1.0, lmbda=0.9),
  ...                  optax.sgd(0.1, momentum=0.9))
  >>> opt_state = tx.init(params)
  >>> for _ in range(2):
  ...   updates, opt_state = tx.update(grad_fn(params), opt_state, params, grad_fn=grad_fn)
  ...   params = optax.apply_updates(params, updates)
  >>> int(opt_state[0].count), opt_state[0].ema.shape  # m lives in the state
  (2, (3, 2))

  Decisions:

  * As the authors' code (nblt/F-SAM ``utils.py`` ``FriendlySAM.first_step``, copied
    in lhchau/saner ``optimizer/fsam.py``), d subtracts the EMA *before* this step's
    gradient enters it (m_{t−1}), and the first step stores m_0 = g_0 and ascends
    along g_0 unchanged.
  * ``axis_name`` (inside ``shard_map``/``pmap``): each device forms d from its own
    gradient and the shared m, and g_F-SAM is averaged over the axis, as in
    :func:`jaxnoisy.sam`. m is updated with the averaged gradient (the average of the
    devices' EMAs, one more all-reduce), so the state stays the same on every device.
  * The authors' ``adaptive`` option (ε scaled by w²) is not offered.
  * Defaults: the CIFAR run of the authors' ``run.sh`` (the usage their README points
    to; CIFAR-100, ResNet-18): ρ = 0.2, σ = 1, λ = 0.6. Their ``train.py`` flags default
    to ρ = 0.1, λ = 0.95 and their class to ρ = 0.05, λ = 0.9.

  Args:
    rho: neighbourhood radius, > 0 (authors' ``run.sh``: 0.2).
    sigma: σ ≥ 0, the share of m removed (authors' code: 1; 0 gives SAM).
    lmbda: λ in [0, 1], the EMA's decay (authors' ``run.sh``: 0.6).
    eps: added to ‖d‖, as in the authors' code (1e-12); a zero d gives ε = 0.
    axis_name, has_aux: as in :func:`jaxnoisy.sam`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`GradientEMAState`.

  References:
    Li, Zhou, He, Cheng, Huang, Friendly Sharpness-Aware Minimization, CVPR 2024
    (nblt/F-SAM; lhchau/saner ``optimizer/fsam.py``).
  """
  check_range("rho", rho, low=0.0, low_open=True)
  check_range("sigma", sigma, low=0.0)
  check_range("lmbda", lmbda, low=0.0, high=1.0)
  check_range("eps", eps, low=0.0, low_open=True)
  return _ema_ascent("fsam", rho, lmbda, lambda g, old, new: fsam_direction(g, old, sigma),
                     eps=eps, axis_name=axis_name, has_aux=has_aux)


def vasso(rho: float = 0.05, theta: float = 0.9, *, eps: float = 1e-7,
          axis_name: Optional[str] = None,
          has_aux: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""VaSSO: the ascent follows an EMA of the gradients instead of the batch gradient.

  .. math::

    v_t = (1 - \theta)\, v_{t-1} + \theta\, g_t, \quad
    \varepsilon = \rho \frac{v_t}{\lVert v_t \rVert + \epsilon}, \quad
    g_{\mathrm{VaSSO}} = \nabla L_B(w + \varepsilon)

  and on the first step v_0 = g_0 (SAM's step). Same interface as
  :func:`jaxnoisy.sam`; place it first in an ``optax.chain``:

  >>> import jax, jax.numpy as jnp, optax, jaxnoisy
  >>> x, y = jnp.arange(12.0).reshape(4, 3) / 10, jnp.array([0, 1, 1, 0])
  >>> loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()
  >>> params, grad_fn = jnp.zeros((3, 2)), jax.grad(loss)
  >>> tx = optax.chain(jaxnoisy.vasso(0.05, theta=0.9), optax.sgd(0.1, momentum=0.9))
  >>> opt_state = tx.init(params)
  >>> updates, opt_state = tx.update(grad_fn(params), opt_state, params, grad_fn=grad_fn)
  >>> bool(jnp.array_equal(opt_state[0].ema, grad_fn(params)))  # v_0 = g_0
  True

  Decisions:

  * The first step as the authors' code (BingcongLi/VaSSO ``solver/vasso.py``,
    lhchau/saner ``optimizer/vasso.py``): v_0 = g_0, not θ g_0.
  * ``eps``: the authors' 1e-7 (BingcongLi/VaSSO ``solver/vasso.py``; lhchau/saner's
    copy adds 1e-12, which puts the parameters 5.6e-10 apart after one step).
  * Defaults: the authors' CIFAR-10 ResNet-18 command in their README (their
    ``configs/defaulf_cfg.py`` flags): ρ = 0.05, θ = 0.9; their ``train.sh`` runs
    CIFAR-100 at ρ = 0.2, θ = 0.9.
  * ``axis_name``: each device ascends along its own (1 − θ) v + θ g_local and g_VaSSO
    is averaged over the axis; the stored v is the average of these (the EMA of the
    averaged gradient, one more all-reduce), the same on every device.

  Args:
    rho: neighbourhood radius, > 0 (authors' default: 0.05).
    theta: θ in [0, 1], the weight of the new gradient (authors' default 0.9;
      lhchau/saner's 0.2). θ = 1 gives SAM.
    eps: added to ‖v‖; a zero v gives ε = 0.
    axis_name, has_aux: as in :func:`jaxnoisy.sam`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`GradientEMAState`.

  References:
    Li and Giannakis, Enhancing Sharpness-Aware Optimization Through Variance
    Suppression, NeurIPS 2023 (BingcongLi/VaSSO; lhchau/saner ``optimizer/vasso.py``).
  """
  check_range("rho", rho, low=0.0, low_open=True)
  check_range("theta", theta, low=0.0, high=1.0)
  check_range("eps", eps, low=0.0, low_open=True)
  return _ema_ascent("vasso", rho, 1.0 - theta, lambda g, old, new: new, eps=eps,
                     axis_name=axis_name, has_aux=has_aux)
