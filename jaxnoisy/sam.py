"""Sharpness-aware minimisation as Optax gradient transformations.

SAM (Foret et al., ICLR 2021), ASAM (Kwon et al., ICML 2021) and GSAM (Zhuang et al.,
ICLR 2022; :func:`gsam`, its decomposition :func:`gsam_direction`). The perturbation is
the pure function :func:`sam_perturbation`; :func:`sam` and :func:`asam` are
transforms that map the incoming gradient ``g`` to ``g_SAM = ∇L(w + ε)`` by calling
the extra argument ``grad_fn`` at the perturbed weights. Every later SAM variant in
jaxnoisy (GSAM, SANER, NCSAM) reuses :func:`sam_perturbation` and
:func:`perturbed_gradient`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from jaxnoisy._validate import check_range
from jaxnoisy.tree import accumulation_dtype, global_norm, vdot

GradFn = Callable[[optax.Params], Any]


def sam_perturbation(grads, rho, *, params=None, adaptive: bool = False,
                     eta: float = 0.01, eps: float = 1e-12):
  r"""The SAM (or ASAM) ascent step ε, a pytree shaped like ``grads``.

  .. math::

    \varepsilon = \rho \frac{g}{\lVert g \rVert + \epsilon}
    \quad\text{(SAM)},\qquad
    \varepsilon = \rho \frac{T_w^2 \odot g}{\lVert T_w \odot g \rVert + \epsilon},
    \; T_w = |w| + \eta \quad\text{(ASAM)}.

  The norm is the global L2 norm over the pytree, and ε is computed, in
  ``promote_types(dtype, float32)`` (:func:`jaxnoisy.tree.global_norm`): bfloat16
  gradients in float32, float64 gradients in float64. ε keeps each leaf's dtype.

  Decisions:

  * ``eps``: the authors' code (google-research/sam) has none and divides a zero
    gradient by zero; here a zero gradient gives ε = 0, never NaN.
  * ASAM's T_w covers every parameter, as in the paper's definition; the authors'
    code (SamsungLabs/ASAM) leaves biases un-normalised (T_w = 1 there).

  >>> import jax.numpy as jnp, jaxnoisy
  >>> g = {"w": jnp.array([[3.0, 0.0]]), "b": jnp.array([4.0])}
  >>> e = jaxnoisy.sam_perturbation(g, 0.5)
  >>> [round(float(v), 6) for v in (e["w"][0, 0], e["b"][0], jaxnoisy.global_norm(e))]
  [0.3, 0.4, 0.5]

  Args:
    grads: the gradient g at the current weights.
    rho: radius of the neighbourhood (SAM 0.05 on CIFAR-10, 0.1 under label noise;
      ASAM 0.5 on CIFAR-10).
    params: the weights w; required when ``adaptive``.
    adaptive: ASAM's scale-invariant ascent.
    eta: ASAM's η, keeps T_w positive where w = 0.
    eps: added to the norm so that a zero gradient gives ε = 0.

  Returns:
    ε, same structure and dtypes as ``grads``.

  References:
    Foret et al., Sharpness-Aware Minimization for Efficiently Improving
    Generalization, ICLR 2021 (google-research/sam). Kwon et al., ASAM: Adaptive
    Sharpness-Aware Minimization for Scale-Invariant Learning of Deep Neural Networks,
    ICML 2021 (SamsungLabs/ASAM).
  """
  if not adaptive:
    dtype = accumulation_dtype(grads)
    factor = rho / (global_norm(grads) + eps)
    return jax.tree.map(lambda g: (factor * g.astype(dtype)).astype(g.dtype), grads)
  if params is None:
    raise ValueError("params must be given when adaptive=True (ASAM scales by |w|)")
  dtype = accumulation_dtype(grads, params)
  scale = jax.tree.map(lambda w: jnp.abs(w.astype(dtype)) + eta, params)
  scaled = jax.tree.map(lambda t, g: t * g.astype(dtype), scale, grads)
  factor = rho / (global_norm(scaled) + eps)
  return jax.tree.map(lambda t, s, g: (factor * t * s).astype(g.dtype), scale, scaled, grads)


def perturbed_gradient(grad_fn: GradFn, params, perturbation, *, has_aux: bool = False,
                       axis_name: Optional[str] = None):
  """``∇L(w + ε)``: calls ``grad_fn`` at ``params + perturbation``.

  ``grad_fn`` returns the gradient, or ``(gradient, aux)`` when ``has_aux``. The aux
  of this second pass is dropped on purpose: batch-norm statistics must come from the
  unperturbed pass (as in google-research/sam), which the caller already holds.
  With ``axis_name`` the result is averaged over that mapped axis (per-device ascent).
  """
  perturbed = jax.tree.map(lambda w, e: w + e.astype(w.dtype), params, perturbation)
  out = grad_fn(perturbed)
  grads = out[0] if has_aux else out
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  return grads


def sharpness_aware(name: str, step: Callable, init_fn: Callable = optax.init_empty_state,
                    needs: dict = None) -> optax.GradientTransformationExtraArgs:
  """The ``update`` every SAM-family transform shares, around its own ``step``.

  ``step(g, state, params, grad_fn, **needed) -> (direction, state)`` is the method;
  this checks that ``params`` and ``grad_fn`` (and each extra argument named in
  ``needs``, ``{name: what it is}``) were given, and casts the direction to the
  incoming gradient's dtypes (``grad_fn`` may compute in a wider type). A new
  variant is its ``step``; e.g. SAM that ascends along the sign of the gradient:

  >>> import jax, jax.numpy as jnp, jaxnoisy
  >>> def step(g, state, params, grad_fn):
  ...   eps = jax.tree.map(lambda x: 0.05 * jnp.sign(x), g)
  ...   return jaxnoisy.perturbed_gradient(grad_fn, params, eps), state
  >>> tx = jaxnoisy.sharpness_aware("sign_sam", step)
  >>> grad_fn = jax.grad(lambda w: jnp.sum(w ** 3))
  >>> w = jnp.array([1.0, -2.0])
  >>> tx.update(grad_fn(w), tx.init(w), w, grad_fn=grad_fn)[0]
  Array([ 3.3074994, 11.407501 ], dtype=float32)
  """
  needs = needs or {}

  def update_fn(updates, state, params=None, *, grad_fn: Optional[GradFn] = None,
                **extra_args):
    if grad_fn is None or params is None:
      raise ValueError(f"{name} needs params and the extra argument grad_fn(params) -> grads")
    for arg, what in needs.items():
      if extra_args.get(arg) is None:
        raise ValueError(f"{name} needs the extra argument {arg} ({what})")
    direction, state = step(updates, state, params, grad_fn,
                            **{arg: extra_args[arg] for arg in needs})
    return jax.tree.map(lambda d, g: d.astype(g.dtype), direction, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sam(rho: float = 0.05, *, adaptive: bool = False, eta: float = 0.01,
        eps: float = 1e-12, axis_name: Optional[str] = None,
        has_aux: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""SAM: replaces the gradient by the gradient at the worst point of a ρ-ball.

  .. math::

    \varepsilon = \rho \frac{g}{\lVert g \rVert + \epsilon}, \qquad
    g_{\mathrm{SAM}} = \nabla L_B(w + \varepsilon)

  (with ``adaptive=True`` the ASAM ε of :func:`sam_perturbation`). Place it first in
  an ``optax.chain``, before the base optimizer:

  >>> import jax, jax.numpy as jnp, optax, jaxnoisy
  >>> x, y = jnp.arange(12.0).reshape(4, 3) / 10, jnp.array([0, 1, 1, 0])
  >>> params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  >>> def loss(p):
  ...   logits = x @ p["w"] + p["b"]
  ...   return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  >>> grad_fn = jax.grad(loss)
  >>> tx = optax.chain(jaxnoisy.sam(0.05), optax.sgd(0.1, momentum=0.9))
  >>> opt_state = tx.init(params)
  >>> updates, opt_state = tx.update(grad_fn(params), opt_state, params, grad_fn=grad_fn)
  >>> params = optax.apply_updates(params, updates)
  >>> jax.tree.map(jnp.shape, params)
  {'b': (2,), 'w': (3, 2)}

  ``update`` needs ``params`` and the extra argument ``grad_fn(params) -> grads``
  (or ``-> (grads, aux)`` with ``has_aux=True``, e.g. batch statistics; the aux of
  the perturbed pass is discarded so that statistics come from the first pass).

  Data parallelism. By default (``axis_name=None``) ε is computed from the gradient
  it is given: pass the globally averaged gradient (what ``jax.jit`` with sharded
  batches computes) and a ``grad_fn`` that returns the global gradient, and ε is the
  *global* ascent. With ``axis_name='batch'`` the transform is meant to run inside
  ``jax.shard_map`` or ``jax.pmap`` over that axis, given each device's *own*
  un-averaged gradient and a ``grad_fn`` on its own shard: ε is then per device
  (m-sharpness with m = per-device batch, as google-research/sam's default), and
  g_SAM is averaged over the axis before it is returned.

  Args:
    rho: neighbourhood radius, > 0 (0.05 for CIFAR-10 in the paper, 0.1 under label
      noise). Works with ``optax.inject_hyperparams``.
    adaptive: use ASAM's scale-invariant ε (see :func:`asam`).
    eta: ASAM's η.
    eps: added to the gradient norm; a zero gradient gives ε = 0.
    axis_name: mapped axis for per-device ascent, or ``None`` for the global ε.
    has_aux: whether ``grad_fn`` returns ``(grads, aux)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is ``optax.EmptyState()``
    (no copy of the parameters, no counters).

  References:
    Foret et al., Sharpness-Aware Minimization for Efficiently Improving
    Generalization, ICLR 2021 (google-research/sam).
  """
  check_range("rho", rho, low=0.0, low_open=True)
  check_range("eta", eta, low=0.0)
  check_range("eps", eps, low=0.0, low_open=True)

  def step(g, state, params, grad_fn):
    perturbation = sam_perturbation(g, rho, params=params, adaptive=adaptive, eta=eta,
                                    eps=eps)
    return perturbed_gradient(grad_fn, params, perturbation, has_aux=has_aux,
                              axis_name=axis_name), state

  return sharpness_aware("sam", step)


def asam(rho: float = 0.5, eta: float = 0.01, *, eps: float = 1e-12,
         axis_name: Optional[str] = None,
         has_aux: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""ASAM: SAM with a scale-invariant (adaptive) neighbourhood.

  .. math::

    T_w = |w| + \eta, \qquad
    \varepsilon = \rho \frac{T_w^2 \odot g}{\lVert T_w \odot g \rVert + \epsilon},
    \qquad g_{\mathrm{ASAM}} = \nabla L_B(w + \varepsilon)

  Same interface as :func:`sam` (``params`` and ``grad_fn`` in ``update``).

  Args:
    rho: radius, > 0 (0.5 on CIFAR-10, 1.0 on CIFAR-100 in the paper).
    eta: keeps T_w positive at w = 0 (paper: 0.01).
    eps, axis_name, has_aux: as in :func:`sam`.

  References:
    Kwon et al., ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
    Learning of Deep Neural Networks, ICML 2021 (SamsungLabs/ASAM).
  """
  return sam(rho, adaptive=True, eta=eta, eps=eps, axis_name=axis_name, has_aux=has_aux)


# --- GSAM: surrogate-gap guided SAM ---------------------------------------------------
def gsam_direction(grads, sam_grads, alpha, eps: float = 1e-12):
  r"""GSAM's update direction from the clean gradient g and the SAM gradient g_SAM.

  .. math::

    g_{\parallel} = \frac{\langle g, g_{\mathrm{SAM}} \rangle}
                         {(\lVert g_{\mathrm{SAM}} \rVert + \epsilon)^2}\, g_{\mathrm{SAM}},
    \qquad g_{\perp} = g - g_{\parallel},
    \qquad d = g_{\mathrm{SAM}} - \alpha\, g_{\perp}

  The *unperturbed* gradient g is decomposed with respect to g_SAM, as in big_vision's
  ``gsam_gradient`` (its default ``minimize_fp=True``): descending along −g_⊥, the
  part of g orthogonal to g_SAM, lowers the surrogate gap without changing the
  perturbed loss to first order. At α = 0 the result is g_SAM exactly. A zero g_SAM
  gives g_∥ = 0 (never NaN) thanks to ``eps``. The inner product and norm are
  accumulated in ``promote_types(dtype, float32)`` (:func:`jaxnoisy.tree.vdot`); d
  keeps the dtypes of ``sam_grads``.

  Args:
    grads: g, the gradient at the unperturbed weights.
    sam_grads: g_SAM = ∇L(w + ε), same structure as ``grads``.
    alpha: weight of the orthogonal correction, ≥ 0 (paper sweeps 0.01–0.3).
    eps: added to ‖g_SAM‖, as in the SAM ascent.

  Returns:
    d, same structure and dtypes as ``sam_grads``.

  References:
    Zhuang et al., Surrogate Gap Minimization Improves Sharpness-Aware Training,
    ICLR 2022 (google-research/big_vision, ``trainers/proj/gsam``).
  """
  sq = vdot(sam_grads, sam_grads)
  coef = vdot(grads, sam_grads) / jnp.square(jnp.sqrt(sq) + eps)

  def leaf(g, s):
    dtype = jnp.promote_types(coef.dtype, s.dtype)
    s_ = s.astype(dtype)
    perp = g.astype(dtype) - coef.astype(dtype) * s_
    return (s_ - jnp.asarray(alpha, dtype) * perp).astype(s.dtype)

  return jax.tree.map(leaf, grads, sam_grads)


def gsam(rho: float = 0.05, alpha: float = 0.1, *, adaptive: bool = False,
         eta: float = 0.01, eps: float = 1e-12, axis_name: Optional[str] = None,
         has_aux: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""GSAM: SAM plus a descent step on the surrogate gap.

  .. math::

    \varepsilon = \rho \frac{g}{\lVert g \rVert + \epsilon}, \quad
    g_{\mathrm{SAM}} = \nabla L_B(w + \varepsilon), \quad
    g_{\perp} = g - \frac{\langle g, g_{\mathrm{SAM}} \rangle}
                         {(\lVert g_{\mathrm{SAM}} \rVert + \epsilon)^2} g_{\mathrm{SAM}},
    \quad d = g_{\mathrm{SAM}} - \alpha\, g_{\perp}

  (with ``adaptive=True`` the ASAM ε of :func:`sam_perturbation`; the decomposition
  is :func:`gsam_direction`). Same interface as :func:`sam`: ``update`` needs
  ``params`` and the extra argument ``grad_fn``; place it first in an
  ``optax.chain``:

  >>> import jax, jax.numpy as jnp, optax, jaxnoisy
  >>> x, y = jnp.arange(12.0).reshape(4, 3) / 10, jnp.array([0, 1, 1, 0])
  >>> loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()
  >>> params, grad_fn = jnp.zeros((3, 2)), jax.grad(loss)
  >>> tx = optax.chain(jaxnoisy.gsam(0.05, alpha=0.1), optax.sgd(0.1, momentum=0.9))
  >>> updates, _ = tx.update(grad_fn(params), tx.init(params), params, grad_fn=grad_fn)
  >>> updates.shape
  (3, 2)

  Decisions:

  * big_vision ties ρ to the learning rate (ρ_t between ρ_min and ρ_max); here ρ is a
    plain hyper-parameter, which ``optax.inject_hyperparams`` can schedule.
  * ``adaptive=True`` uses jaxnoisy's ASAM ε (T_w² ⊙ g / ‖T_w ⊙ g‖), not big_vision's
    ``|w| ⊙ g / ‖g‖``.
  * Data parallelism (``axis_name`` set, inside ``shard_map``/``pmap``): each device
    computes its own ε, its own g_SAM *and its own decomposition* from its local g,
    and only d is averaged over the axis — as big_vision, whose ``gsam_gradient``
    runs per device and whose trainer averages its output. The decomposition is not
    linear in g_SAM, so this differs from decomposing the averaged g_SAM; at α = 0
    both equal :func:`sam` with the same ``axis_name``.

  Args:
    rho: neighbourhood radius, > 0 (the paper uses the SAM values, e.g. 0.05).
    alpha: weight of the orthogonal correction, ≥ 0; 0 gives SAM exactly (the paper
      sweeps 0.01–0.3; the default 0.1 is the trainer's).
    adaptive, eta, eps, has_aux: as in :func:`sam`.
    axis_name: mapped axis for per-device ascent and decomposition, or ``None``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is ``optax.EmptyState()``.

  References:
    Zhuang et al., Surrogate Gap Minimization Improves Sharpness-Aware Training,
    ICLR 2022 (google-research/big_vision, ``trainers/proj/gsam``).
  """
  check_range("rho", rho, low=0.0, low_open=True)
  check_range("alpha", alpha, low=0.0)
  check_range("eta", eta, low=0.0)
  check_range("eps", eps, low=0.0, low_open=True)

  def step(g, state, params, grad_fn):
    perturbation = sam_perturbation(g, rho, params=params, adaptive=adaptive, eta=eta,
                                    eps=eps)
    # Local g_SAM (no averaging yet): the decomposition is per device, like big_vision.
    g_sam = perturbed_gradient(grad_fn, params, perturbation, has_aux=has_aux)
    direction = gsam_direction(g, g_sam, alpha, eps)
    if axis_name is not None:
      direction = jax.lax.pmean(direction, axis_name)
    return direction, state

  return sharpness_aware("gsam", step)
