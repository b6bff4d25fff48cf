"""NCSAM: SAM whose ascent is compensated by the gradient of simulated label noise.

Label noise rotates SAM's perturbation; NCSAM adds to it a scheduled multiple of
``g*``, the gradient of a loss in which the most uncertain examples of the batch are
given their most likely *wrong* label, and projects the sum back onto the ρ-ball.
Pure pieces: :func:`ncsam_strength` (the schedule), :func:`flip_targets` (which
examples, which wrong labels), :func:`ncsam_gradients` (g and g* from one forward
pass), :func:`ncsam_perturbation` (ε); :func:`ncsam` is the Optax transform.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jaxnoisy._validate import check_range
from jaxnoisy.sam import GradFn, global_norm, perturbed_gradient, sam_perturbation


def ncsam_strength(progress, kappa) -> jax.Array:
  r"""The compensation strength s(t), a smooth ramp that saturates at t = 1/2.

  .. math::

    s(t) = \kappa \min\bigl(1,\; 2 (3 - 2t)\, t^2\bigr)

  Decision: t is clipped to [0, 1] first (the cubic falls again for t > 1.5, so a
  ``progress`` slightly past the end must not weaken the compensation).

  Args:
    progress: t = epoch / total epochs (or step / total steps); may be traced.
    kappa: κ ≥ 0, the maximum strength (paper: 0.1 on CIFAR-10, 0.3 on CIFAR-100).

  Returns:
    s(t), a float32 (or float64) scalar.

  References:
    Xu, Deng, Pang, arXiv 2601.19947 (NCSAM).
  """
  t = jnp.clip(jnp.asarray(progress, jnp.promote_types(jnp.result_type(progress),
                                                      jnp.float32)), 0.0, 1.0)
  return kappa * jnp.minimum(1.0, 2.0 * (3.0 - 2.0 * t) * t * t)


def _num_selected(flip_rate, batch: int) -> jax.Array:
  # ⌊r·B⌋; the relative 1e-6 keeps r·B = 29 from flooring to 28 when float rounding
  # leaves it at 28.99999.
  r = jnp.asarray(flip_rate, jnp.float32)
  return jnp.floor(r * batch * (1.0 + 1e-6)).astype(jnp.int32)


def flip_targets(logits, labels, key, flip_rate):
  r"""Which examples get a simulated wrong label, and which label.

  .. math::

    \delta_i = z_i^{(1)} - z_i^{(2)}, \quad p_i \propto \frac{1}{1 + \delta_i}, \quad
    S \sim \text{draw } \lfloor r B \rfloor \text{ without replacement} \propto p, \quad
    \hat y^*_i = \operatorname*{argmax}_{c \ne \tilde y_i} z_{ic}

  Decision (METHODS §3): S is drawn *without* replacement, so it has exactly
  ⌊r·B⌋ distinct members. The draw is Gumbel-top-k: the ⌊r·B⌋ largest
  ``log p_i + G_i`` (G_i i.i.d. standard Gumbel), which is distributed exactly as
  sequential sampling without replacement with probabilities ∝ p (Kool, van Hoof,
  Welling, ICML 2019). It is done by ranking, so ``flip_rate`` may be traced. All
  inputs are under stop-gradient. Under ``shard_map`` fold the device index into
  ``key`` if the shards should draw independently.

  Args:
    logits: z, shape (B, C) with C ≥ 2.
    labels: the given (possibly noisy) labels ỹ, int, shape (B,).
    key: a PRNG key.
    flip_rate: r ∈ [0, 1], the fraction of the batch to relabel (paper: 0.4).

  Returns:
    ``(selected, targets)``: a bool mask (B,) of S and the int32 targets ŷ* (B,)
    (defined for every example; only those in S are used).

  References:
    Xu, Deng, Pang, arXiv 2601.19947 (NCSAM).
  """
  check_range("flip_rate", flip_rate, low=0.0, high=1.0)
  if logits.ndim != 2 or logits.shape[-1] < 2:
    raise ValueError(f"logits must have shape (batch, classes>=2), got {logits.shape}")
  z = jax.lax.stop_gradient(logits)
  z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
  labels = jax.lax.stop_gradient(labels)
  batch = z.shape[0]
  top2 = jax.lax.top_k(z, 2)[0]
  log_p = -jnp.log1p(top2[:, 0] - top2[:, 1])  # log of 1/(1 + δ); normaliser irrelevant
  perturbed = log_p + jax.random.gumbel(key, (batch,), z.dtype)
  order = jnp.argsort(-perturbed)
  rank = jnp.zeros((batch,), jnp.int32).at[order].set(jnp.arange(batch, dtype=jnp.int32))
  selected = rank < _num_selected(flip_rate, batch)
  given = jax.nn.one_hot(labels, z.shape[-1], dtype=jnp.bool_)
  targets = jnp.argmax(jnp.where(given, -jnp.inf, z), axis=-1).astype(jnp.int32)
  return selected, targets


def ncsam_gradients(logits_fn: Callable, params, labels, key, flip_rate, *,
                    has_aux: bool = False):
  r"""Loss, gradient g and simulated-noise gradient g* from one forward pass.

  .. math::

    L = \frac{1}{B} \sum_i \mathrm{CE}(z_i, \tilde y_i), \quad g = \nabla_w L, \quad
    g^* = \nabla_w \frac{1}{|S|} \sum_{i \in S} \mathrm{CE}(z_i, \hat y^*_i)

  with S and ŷ* from :func:`flip_targets`. The logits are computed once,
  ``z, vjp = jax.vjp(logits_fn, params)``, and both gradients are vector-Jacobian
  products of the same logits with the analytic cotangents
  ``(softmax(z) − onehot(ỹ)) / B`` and ``1_S (softmax(z) − onehot(ŷ*)) / |S|``
  (Decision, METHODS §3: no third forward pass). An empty S (⌊r·B⌋ = 0) gives
  g* = 0.

  Args:
    logits_fn: ``params -> logits`` (B, C) on the current batch, or
      ``params -> (logits, aux)`` with ``has_aux`` (e.g. batch statistics).
    params: the weights w.
    labels: the given labels ỹ (B,).
    key: PRNG key for the draw of S.
    flip_rate: r ∈ [0, 1] (paper: 0.4 best).
    has_aux: whether ``logits_fn`` returns ``(logits, aux)``.

  Returns:
    ``(loss, grads, noise_grads, aux)``; ``aux`` is ``None`` without ``has_aux``.

  References:
    Xu, Deng, Pang, arXiv 2601.19947 (NCSAM).
  """
  check_range("flip_rate", flip_rate, low=0.0, high=1.0)
  if has_aux:
    logits, vjp_fn, aux = jax.vjp(logits_fn, params, has_aux=True)
  else:
    (logits, vjp_fn), aux = jax.vjp(logits_fn, params), None
  z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  batch, classes = z.shape
  log_probs = jax.nn.log_softmax(z)
  probs = jnp.exp(log_probs)
  onehot = jax.nn.one_hot(labels, classes, dtype=z.dtype)
  loss = -jnp.sum(onehot * log_probs) / batch

  selected, targets = flip_targets(logits, labels, key, flip_rate)
  size = jnp.maximum(jnp.sum(selected), 1).astype(z.dtype)
  noise_ct = (jnp.where(selected[:, None], probs - jax.nn.one_hot(targets, classes,
                                                                 dtype=z.dtype), 0.0)
              / size)
  (grads,) = vjp_fn(((probs - onehot) / batch).astype(logits.dtype))
  (noise_grads,) = vjp_fn(noise_ct.astype(logits.dtype))
  return loss, grads, noise_grads, aux


def _scaled_norm(tree) -> jax.Array:
  """Global L2 norm that does not overflow: max|x| · ‖x / max|x|‖ (0 for a zero tree)."""
  leaves = jax.tree.leaves(tree)
  big = jnp.max(jnp.stack([jnp.max(jnp.abs(x.astype(jnp.float32))) for x in leaves]))
  safe = jnp.where(big > 0, big, 1.0)
  return big * global_norm([x.astype(jnp.float32) / safe for x in leaves])


def ncsam_perturbation(grads, noise_grads, rho, strength, eps: float = 1e-12):
  r"""NCSAM's ascent step: SAM's ε plus s·g*, projected onto the ρ-ball.

  .. math::

    v = \rho \frac{g}{\lVert g \rVert + \epsilon} + s\, g^*, \qquad
    \varepsilon = v \cdot \min\Bigl(1, \frac{\rho}{\lVert v \rVert + \epsilon}\Bigr)

  So ‖ε‖ ≤ ρ (up to float rounding of the norm), and zero g and g* give ε = 0.
  ‖v‖ is computed as max|v|·‖v / max|v|‖ so that a huge s·g* cannot overflow it.
  Decision: when the compensation vanishes (s·‖g*‖ = 0: κ = 0, t = 0 or empty S),
  ε is SAM's ε bit for bit — the projection is skipped, since ε_SAM lies in the ball
  by construction and a rounded ‖v‖ ≈ ρ would otherwise rescale it by 1 ± 1e-7.

  Args:
    grads: g at the current weights.
    noise_grads: g*, the gradient of the simulated-noise loss (:func:`ncsam_gradients`).
    rho: radius, > 0.
    strength: s ≥ 0 (:func:`ncsam_strength`); may be traced.
    eps: norm guard, as in :func:`jaxnoisy.sam_perturbation`.

  Returns:
    ε, same structure and dtypes as ``grads``.
  """
  sam_eps = sam_perturbation(grads, rho, eps=eps)
  s = jnp.asarray(strength, jnp.float32)

  def add(e, n):
    dtype = jnp.promote_types(jnp.promote_types(e.dtype, n.dtype), jnp.float32)
    return e.astype(dtype) + s.astype(dtype) * n.astype(dtype)

  v = jax.tree.map(add, sam_eps, noise_grads)
  compensation = jnp.abs(s) * global_norm(noise_grads)
  factor = jnp.where(compensation > 0,
                     jnp.minimum(1.0, rho / (_scaled_norm(v) + eps)), 1.0)
  return jax.tree.map(lambda x, g: (factor * x).astype(g.dtype), v, grads)


class NCSAMState(NamedTuple):
  """NCSAM keeps no state: the schedule's t arrives as the extra argument ``progress``."""


def ncsam(rho: float = 0.05, kappa: float = 0.1, *, eps: float = 1e-12,
          axis_name: Optional[str] = None,
          has_aux: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""NCSAM: SAM with an ascent compensated by simulated label noise.

  .. math::

    s = \kappa \min(1, 2(3 - 2t)t^2), \quad
    v = \rho \frac{g}{\lVert g \rVert + \epsilon} + s\, g^*, \quad
    \varepsilon = v \min\Bigl(1, \frac{\rho}{\lVert v \rVert + \epsilon}\Bigr), \quad
    d = \nabla L_B(w + \varepsilon)

  ``update`` needs ``params`` and three extra arguments: ``grad_fn`` (as in
  :func:`jaxnoisy.sam`), ``noise_grads`` (g*) and ``progress`` (t ∈ [0, 1], e.g.
  epoch / total epochs; may be traced). g and g* come together from
  :func:`ncsam_gradients`, which is where the flip rate r lives::

    import jax, jax.numpy as jnp, optax, jaxnoisy
    x, y = jnp.ones((8, 5)), jnp.arange(8) % 3
    params = {"w": jnp.zeros((5, 3)) + 0.1 * jnp.arange(3), "b": jnp.zeros(3)}
    logits_fn = lambda p: x @ p["w"] + p["b"]
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        logits_fn(p), y).mean()
    tx = optax.chain(jaxnoisy.ncsam(rho=0.05, kappa=0.1),
                     optax.sgd(0.05, momentum=0.9))
    opt_state = tx.init(params)
    loss, g, g_star, _ = jaxnoisy.ncsam_gradients(
        logits_fn, params, y, jax.random.key(0), flip_rate=0.4)
    updates, opt_state = tx.update(g, opt_state, params, grad_fn=jax.grad(loss_fn),
                                   noise_grads=g_star, progress=0.3)
    params = optax.apply_updates(params, updates)

  The paper trains with plain SGD for the first epochs (50 of 200) and NCSAM after;
  that switch belongs to the trainer. With κ = 0 this is :func:`jaxnoisy.sam`
  exactly.

  Data parallelism: as :func:`jaxnoisy.sam`. With ``axis_name`` (inside
  ``shard_map``/``pmap``) pass each device's *own* g and g* (``ncsam_gradients`` on
  the local shard; fold ``jax.lax.axis_index`` into its key for independent draws):
  ε is per device — both the SAM ascent and the compensation — and ∇L(w + ε) is
  averaged over the axis. With ``axis_name=None`` pass global g, g* and ``grad_fn``.

  Args:
    rho: radius, > 0 (the paper is silent; its authors' later code uses 0.05).
    kappa: κ ≥ 0, maximum compensation strength (0.1 CIFAR-10, 0.3 CIFAR-100).
    eps: norm guard; zero gradients give ε = 0.
    axis_name: mapped axis for the per-device ascent, or ``None``.
    has_aux: whether ``grad_fn`` returns ``(grads, aux)``; the aux of the perturbed
      pass is dropped (batch statistics come from the first pass).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with an empty :class:`NCSAMState`.

  References:
    Xu, Deng, Pang, Noise-Compensated Sharpness-Aware Minimization, arXiv 2601.19947.
  """
  check_range("rho", rho, low=0.0, low_open=True)
  check_range("kappa", kappa, low=0.0)
  check_range("eps", eps, low=0.0, low_open=True)

  def init_fn(params):
    del params
    return NCSAMState()

  def update_fn(updates, state, params=None, *, grad_fn: Optional[GradFn] = None,
                noise_grads=None, progress=None, **extra_args):
    del extra_args
    if grad_fn is None or params is None:
      raise ValueError("ncsam needs params and the extra argument grad_fn(params) -> grads")
    if noise_grads is None:
      raise ValueError("ncsam needs the extra argument noise_grads (g*, from ncsam_gradients)")
    if progress is None:
      raise ValueError("ncsam needs the extra argument progress (t in [0, 1])")
    strength = ncsam_strength(progress, kappa)
    perturbation = ncsam_perturbation(updates, noise_grads, rho, strength, eps)
    g_sam = perturbed_gradient(grad_fn, params, perturbation, has_aux=has_aux,
                               axis_name=axis_name)
    return jax.tree.map(lambda s, g: s.astype(g.dtype), g_sam, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
