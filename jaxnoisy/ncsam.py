"""NCSAM: SAM whose ascent is compensated by the gradient of simulated label noise.

Label noise rotates SAM's perturbation; NCSAM adds to it a scheduled multiple of
``g*``, the gradient of a loss in which the most uncertain examples of the batch are
given their most likely *wrong* label, and projects the sum back onto the ρ-ball.
Pure pieces: :func:`ncsam_strength` (the schedule), :func:`flip_targets` (which
examples, which wrong labels), :func:`ncsam_gradients` (g and g*, from one shared
forward pass or with a separate pass over the flipped examples),
:func:`ncsam_perturbation` (ε); :func:`ncsam` is the Optax transform.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnoisy._validate import check_range
from jaxnoisy.sam import perturbed_gradient, sam_perturbation, sharpness_aware
from jaxnoisy.tree import accumulation_dtype, axpy, cast, global_norm, scaled_norm


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


def _num_selected(flip_rate, batch: int):
  """|S| = ⌊r·B⌋: a Python int for a concrete r (a static size), an int32 array if traced.

  The product is taken in float32 either way, and the relative 1e-6 keeps r·B = 29
  from flooring to 28 when float rounding leaves it at 28.99999.
  """
  if isinstance(flip_rate, jax.core.Tracer):
    r = jnp.asarray(flip_rate, jnp.float32)
    return jnp.floor(r * batch * (1.0 + 1e-6)).astype(jnp.int32)
  r = np.float32(flip_rate)
  return int(np.floor(r * np.float32(batch) * np.float32(1.0 + 1e-6)))


def _draw(logits, labels, key):
  """The order in which the Gumbel-top-k draw picks examples, and the wrong labels ŷ*."""
  z = jax.lax.stop_gradient(logits)
  z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
  labels = jax.lax.stop_gradient(labels)
  top2 = jax.lax.top_k(z, 2)[0]
  log_p = -jnp.log1p(top2[:, 0] - top2[:, 1])  # log of 1/(1 + δ); normaliser irrelevant
  order = jnp.argsort(-(log_p + jax.random.gumbel(key, log_p.shape, z.dtype)))
  given = jax.nn.one_hot(labels, z.shape[-1], dtype=jnp.bool_)
  targets = jnp.argmax(jnp.where(given, -jnp.inf, z), axis=-1).astype(jnp.int32)
  return order, targets


def _check_logits(logits):
  if logits.ndim != 2 or logits.shape[-1] < 2:
    raise ValueError(f"logits must have shape (batch, classes>=2), got {logits.shape}")


def flip_targets(logits, labels, key, flip_rate):
  r"""Which examples get a simulated wrong label, and which label.

  .. math::

    \delta_i = z_i^{(1)} - z_i^{(2)}, \quad p_i \propto \frac{1}{1 + \delta_i}, \quad
    S \sim \text{draw } \lfloor r B \rfloor \text{ without replacement} \propto p, \quad
    \hat y^*_i = \operatorname*{argmax}_{c \ne \tilde y_i} z_{ic}

  Decision: the paper draws S with probabilities p but does not say whether with
  replacement; here S is drawn *without* replacement, so it has exactly
  ⌊r·B⌋ distinct members. The draw is Gumbel-top-k: the ⌊r·B⌋ largest
  ``log p_i + G_i`` (G_i i.i.d. standard Gumbel), which is distributed exactly as
  sequential sampling without replacement with probabilities ∝ p (Kool, van Hoof,
  Welling, ICML 2019). It is done by ranking, so ``flip_rate`` may be traced. All
  inputs are under stop-gradient. Under ``shard_map`` fold the device index into
  ``key`` if the shards should draw independently.

  >>> import jax, jax.numpy as jnp, jaxnoisy
  >>> logits = jnp.array([[2.0, 1.9, 0.0], [5.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
  >>> selected, targets = jaxnoisy.flip_targets(logits, jnp.array([0, 0, 1]),
  ...                                           jax.random.key(0), flip_rate=0.34)
  >>> int(selected.sum()), targets.tolist()
  (1, [1, 1, 0])

  Args:
    logits: z, shape (B, C) with C ≥ 2.
    labels: the given (possibly noisy) labels ỹ, int, shape (B,).
    key: a PRNG key.
    flip_rate: r ∈ [0, 1], the fraction of the batch to relabel (paper: 0.4).

  Returns:
    ``(selected, targets)``: a bool mask (B,) of S and the int32 targets ŷ* (B,)
    (defined for every example; only those in S are used).

  References:
    Xu, Deng, Pang, Noise-Compensated Sharpness-Aware Minimization, arXiv 2601.19947.
  """
  check_range("flip_rate", flip_rate, low=0.0, high=1.0)
  _check_logits(logits)
  batch = logits.shape[0]
  order, targets = _draw(logits, labels, key)
  rank = jnp.zeros((batch,), jnp.int32).at[order].set(jnp.arange(batch, dtype=jnp.int32))
  return rank < _num_selected(flip_rate, batch), targets


NOISE_FORWARDS = ("shared", "subset")


def _smoothed(targets, classes: int, label_smoothing, dtype):
  """q = (1 − λ) onehot(ŷ*) + λ / C (optax.smooth_labels, PyTorch's label_smoothing)."""
  onehot = jax.nn.one_hot(targets, classes, dtype=dtype)
  ls = jnp.asarray(label_smoothing, dtype)
  return (1.0 - ls) * onehot + ls / classes


def ncsam_gradients(logits_fn: Callable, params, labels, key, flip_rate, *,
                    has_aux: bool = False, noise_forward: str = "shared",
                    subset_logits_fn: Optional[Callable] = None,
                    label_smoothing: float = 0.0):
  r"""Loss, gradient g and simulated-noise gradient g*, g* from the batch's or S's logits.

  .. math::

    L = \frac{1}{B} \sum_i \mathrm{CE}(z_i, \tilde y_i), \quad g = \nabla_w L, \quad
    q_i = (1 - \lambda)\, \mathrm{onehot}(\hat y^*_i) + \frac{\lambda}{C}, \quad
    g^* = \nabla_w \frac{1}{|S|} \sum_{i \in S} \mathrm{CE}(z'_i, q_i)

  with S and ŷ* from :func:`flip_targets` on the batch's logits z, λ =
  ``label_smoothing``, and z' chosen by ``noise_forward``:

  * ``"shared"`` (default, the paper's algorithm): z' = z. The logits
    are computed once, ``z, vjp = jax.vjp(logits_fn, params)``, and g and g* are two
    vector-Jacobian products with the analytic cotangents ``(softmax(z) − onehot(ỹ))
    / B`` and ``1_S (softmax(z) − q) / |S|``. Decision: the paper does not say whether
    g* has its own forward pass; sharing one costs no third full pass.
  * ``"subset"`` (the authors' later code, CBNI-NCSAM): z' are the logits of a
    separate forward pass over the examples of S alone, ``subset_logits_fn(params,
    index)`` with ``index`` the (⌊r·B⌋,) int32 positions of S in the batch. With
    batch norm z' uses S's own batch statistics, so g* differs from ``"shared"``;
    without it the two agree (the backward pass then covers :math:`|S|` examples, not B).
    :math:`|S|` is a static shape here, so ``flip_rate`` must be a concrete number. The aux
    of the subset pass is dropped: running statistics come from the full batch, as
    in SAM's second pass.

  Decisions: g* is the *mean* over S (the paper does not say mean or sum; the
  authors' later code averages). The authors' code smooths g*'s targets with λ = 0.1;
  the default λ = 0 is the paper's plain cross-entropy. λ applies to g* only, never
  to L and g. An empty S (⌊r·B⌋ = 0) gives g* = 0.

  >>> import jax, jax.numpy as jnp, jaxnoisy
  >>> x, y = jnp.arange(15.0).reshape(5, 3) / 10, jnp.array([0, 1, 1, 0, 1])
  >>> params = {"w": jnp.ones((3, 2)) * jnp.array([0.1, -0.1])}
  >>> logits_fn = lambda p: x @ p["w"]
  >>> loss, g, g_star, _ = jaxnoisy.ncsam_gradients(
  ...     logits_fn, params, y, jax.random.key(0), flip_rate=0.4)
  >>> _, _, g_star_sub, _ = jaxnoisy.ncsam_gradients(
  ...     logits_fn, params, y, jax.random.key(0), flip_rate=0.4, noise_forward="subset",
  ...     subset_logits_fn=lambda p, index: x[index] @ p["w"])
  >>> bool(jnp.allclose(g_star["w"], g_star_sub["w"], atol=1e-6))  # no batch norm
  True

  Args:
    logits_fn: ``params -> logits`` (B, C) on the current batch, or
      ``params -> (logits, aux)`` with ``has_aux`` (e.g. batch statistics).
    params: the weights w.
    labels: the given labels ỹ (B,).
    key: PRNG key for the draw of S.
    flip_rate: r ∈ [0, 1] (paper: 0.4 best).
    has_aux: whether ``logits_fn`` (and ``subset_logits_fn``) return ``(logits, aux)``.
    noise_forward: ``"shared"`` or ``"subset"``, see above.
    subset_logits_fn: ``(params, index) -> logits`` (⌊r·B⌋, C) of the examples
      ``index``; required with ``noise_forward="subset"``, rejected otherwise.
    label_smoothing: λ ∈ [0, 1] on g*'s targets (authors' code: 0.1; paper: 0).

  Returns:
    ``(loss, grads, noise_grads, aux)``; ``aux`` is the full batch's (``None``
    without ``has_aux``).

  References:
    Xu, Deng, Pang, Noise-Compensated Sharpness-Aware Minimization, arXiv 2601.19947.
  """
  check_range("flip_rate", flip_rate, low=0.0, high=1.0)
  check_range("label_smoothing", label_smoothing, low=0.0, high=1.0)
  if noise_forward not in NOISE_FORWARDS:
    raise ValueError(f"noise_forward must be one of {NOISE_FORWARDS}, got {noise_forward!r}")
  subset = noise_forward == "subset"
  if subset and subset_logits_fn is None:
    raise ValueError("noise_forward='subset' needs subset_logits_fn(params, index) -> logits")
  if not subset and subset_logits_fn is not None:
    raise ValueError("subset_logits_fn is used only with noise_forward='subset', "
                     f"got noise_forward={noise_forward!r}")
  if subset and isinstance(flip_rate, jax.core.Tracer):
    raise ValueError("flip_rate must be a concrete number with noise_forward='subset' "
                     "(|S| = floor(flip_rate * batch) is a static shape)")
  if has_aux:
    logits, vjp_fn, aux = jax.vjp(logits_fn, params, has_aux=True)
  else:
    (logits, vjp_fn), aux = jax.vjp(logits_fn, params), None
  _check_logits(logits)
  z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  batch, classes = z.shape
  log_probs = jax.nn.log_softmax(z)
  probs = jnp.exp(log_probs)
  onehot = jax.nn.one_hot(labels, classes, dtype=z.dtype)
  loss = -jnp.sum(onehot * log_probs) / batch
  (grads,) = vjp_fn(((probs - onehot) / batch).astype(logits.dtype))

  order, targets = _draw(logits, labels, key)
  num = _num_selected(flip_rate, batch)
  if subset:
    index = order[:num]  # S in draw order; a static ⌊r·B⌋ examples
    noise_grads = _subset_noise_grads(subset_logits_fn, params, index, targets[index],
                                      classes, label_smoothing, has_aux)
  else:
    rank = jnp.zeros((batch,), jnp.int32).at[order].set(jnp.arange(batch, dtype=jnp.int32))
    selected = rank < num
    size = jnp.maximum(jnp.sum(selected), 1).astype(z.dtype)
    q = _smoothed(targets, classes, label_smoothing, z.dtype)
    noise_ct = jnp.where(selected[:, None], probs - q, 0.0) / size
    (noise_grads,) = vjp_fn(noise_ct.astype(logits.dtype))
  return loss, grads, noise_grads, aux


def _subset_noise_grads(subset_logits_fn, params, index, targets, classes, label_smoothing,
                        has_aux):
  """g* from a separate forward pass over the examples ``index`` (static count)."""
  num = index.shape[0]
  if num == 0:
    return jax.tree.map(jnp.zeros_like, params)

  def subset_loss(p):
    out = subset_logits_fn(p, index)
    logits = out[0] if has_aux else out
    if logits.shape != (num, classes):
      raise ValueError(f"subset_logits_fn must return logits of shape {(num, classes)}, "
                       f"got {logits.shape}")
    z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    q = _smoothed(targets, classes, label_smoothing, z.dtype)
    return -jnp.sum(q * jax.nn.log_softmax(z)) / num

  return jax.grad(subset_loss)(params)


COMPENSATIONS = ("paper", "rho")


def _check_compensation(compensation: str) -> None:
  if compensation not in COMPENSATIONS:
    raise ValueError(f"compensation must be one of {', '.join(COMPENSATIONS)}, "
                     f"got {compensation!r}")


def ncsam_perturbation(grads, noise_grads, rho, strength, eps: float = 1e-12,
                       compensation: str = "paper"):
  r"""NCSAM's ascent step: SAM's ε plus s·g*, projected onto the ρ-ball.

  .. math::

    v = \rho \frac{g}{\lVert g \rVert + \epsilon} + s\, c, \qquad
    \varepsilon = v \cdot \min\Bigl(1, \frac{\rho}{\lVert v \rVert + \epsilon}\Bigr)

  with c = g* (``compensation="paper"``) or, a variant beyond the paper,
  c = ρ g*/(‖g*‖ + ϵ) (``"rho"``): the compensation sized against the radius, so that
  s alone (not the scale of g*, which grows as the noisy examples are fitted) sets
  how far it turns ε.

  So ‖ε‖ ≤ ρ (up to float rounding of the norm), and zero g and g* give ε = 0.
  v and its norm are computed in ``promote_types(dtype, float32)`` (float64 stays
  float64), and ‖v‖ as max|v|·‖v / max|v|‖ (:func:`jaxnoisy.tree.scaled_norm`) so
  that a huge s·g* cannot overflow it.

  Decisions:

  * As in the paper: the raw g* (not normalised) is added and the *sum* projected.
  * When the compensation vanishes (s·‖g*‖ = 0: κ = 0, t = 0 or empty S), ε is SAM's
    ε bit for bit — the projection is skipped, since ε_SAM lies in the ball by
    construction and a rounded ‖v‖ ≈ ρ would otherwise rescale it by 1 ± 1 ulp.

  >>> import jax.numpy as jnp, jaxnoisy
  >>> g, g_star = {"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([0.0, 10.0])}
  >>> e = jaxnoisy.ncsam_perturbation(g, g_star, rho=0.5, strength=1.0)
  >>> round(float(jaxnoisy.global_norm(e)), 6)  # projected back onto the ball
  0.5

  Args:
    grads: g at the current weights.
    noise_grads: g*, the gradient of the simulated-noise loss (:func:`ncsam_gradients`).
    rho: radius, > 0.
    strength: s ≥ 0 (:func:`ncsam_strength`); may be traced.
    eps: norm guard, as in :func:`jaxnoisy.sam_perturbation`.
    compensation: ``"paper"`` (raw g*) or ``"rho"`` (ρ-sized g*; not in the paper).

  Returns:
    ε, same structure and dtypes as ``grads``.

  References:
    Xu, Deng, Pang, Noise-Compensated Sharpness-Aware Minimization, arXiv 2601.19947.
  """
  _check_compensation(compensation)
  dtype = accumulation_dtype(grads, noise_grads)
  sam_eps = cast(sam_perturbation(grads, rho, eps=eps), dtype)
  s = jnp.asarray(strength).astype(dtype)
  c = noise_grads if compensation == "paper" else \
      cast(sam_perturbation(noise_grads, rho, eps=eps), dtype)
  v = axpy(s, c, sam_eps)
  factor = jnp.where(jnp.abs(s) * global_norm(c) > 0,
                     jnp.minimum(1.0, rho / (scaled_norm(v) + eps)), 1.0)
  return jax.tree.map(lambda x, g: (factor * x).astype(g.dtype), v, grads)


def ncsam_cosine(grad_norm, noise_norm, inner, rho, strength, compensation: str = "paper",
                 eps: float = 1e-12):
  r"""cos(ε, ε_SAM) of :func:`ncsam_perturbation` from three scalars of g and g*.

  .. math::

    a = \frac{\rho}{\lVert g \rVert + \epsilon}, \quad
    \cos(\varepsilon, g) = \frac{a\lVert g \rVert^2 + s\langle c, g \rangle}
    {\lVert g \rVert \sqrt{a^2\lVert g \rVert^2 + 2as\langle c, g \rangle
    + s^2\lVert c \rVert^2}}

  (the projection only rescales v, so it cancels), with ⟨c, g⟩ = ⟨g*, g⟩ and ‖c‖ = ‖g*‖
  for ``"paper"``, or both scaled by ρ/(‖g*‖ + ϵ) for ``"rho"``. From ‖g‖, ‖g*‖ and
  ⟨g*, g⟩ (``inner``) alone: a logged diagnostic that adds no pass over the parameters
  beside the step's own ε. 0 when g = 0.
  """
  _check_compensation(compensation)
  scale = 1.0 if compensation == "paper" else rho / (noise_norm + eps)
  cg, cc = scale * inner, scale * noise_norm
  a = rho / (grad_norm + eps)
  num = a * grad_norm ** 2 + strength * cg
  sq = a * a * grad_norm ** 2 + 2 * a * strength * cg + (strength * cc) ** 2
  den = grad_norm * jnp.sqrt(jnp.maximum(sq, 0.0))
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def ncsam(rho: float = 0.05, kappa: float = 0.1, *, eps: float = 1e-12,
          axis_name: Optional[str] = None, has_aux: bool = False,
          compensation: str = "paper") -> optax.GradientTransformationExtraArgs:
  r"""NCSAM: SAM with an ascent compensated by simulated label noise.

  .. math::

    s = \kappa \min(1, 2(3 - 2t)t^2), \quad
    v = \rho \frac{g}{\lVert g \rVert + \epsilon} + s\, g^*, \quad
    \varepsilon = v \min\Bigl(1, \frac{\rho}{\lVert v \rVert + \epsilon}\Bigr), \quad
    d = \nabla L_B(w + \varepsilon)

  ``update`` needs ``params`` and three extra arguments: ``grad_fn`` (as in
  :func:`jaxnoisy.sam`), ``noise_grads`` (g*) and ``progress`` (t ∈ [0, 1], e.g.
  epoch / total epochs; may be traced). g and g* come together from
  :func:`ncsam_gradients`, which is where the flip rate r lives:

  >>> import jax, jax.numpy as jnp, optax, jaxnoisy
  >>> x, y = jnp.ones((8, 5)), jnp.arange(8) % 3
  >>> params = {"w": jnp.zeros((5, 3)) + 0.1 * jnp.arange(3), "b": jnp.zeros(3)}
  >>> logits_fn = lambda p: x @ p["w"] + p["b"]
  >>> loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
  ...     logits_fn(p), y).mean()
  >>> tx = optax.chain(jaxnoisy.ncsam(rho=0.05, kappa=0.1),
  ...                  optax.sgd(0.05, momentum=0.9))
  >>> opt_state = tx.init(params)
  >>> loss, g, g_star, _ = jaxnoisy.ncsam_gradients(
  ...     logits_fn, params, y, jax.random.key(0), flip_rate=0.4)
  >>> updates, opt_state = tx.update(g, opt_state, params, grad_fn=jax.grad(loss_fn),
  ...                                noise_grads=g_star, progress=0.3)
  >>> params = optax.apply_updates(params, updates)
  >>> jax.tree.map(jnp.shape, params)
  {'b': (3,), 'w': (5, 3)}

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
    compensation: ``"paper"``, or ``"rho"`` for the ρ-sized variant beyond the paper
      (:func:`ncsam_perturbation`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is ``optax.EmptyState()``
    (the schedule's t arrives as the extra argument ``progress``).

  References:
    Xu, Deng, Pang, Noise-Compensated Sharpness-Aware Minimization, arXiv 2601.19947.
  """
  check_range("rho", rho, low=0.0, low_open=True)
  check_range("kappa", kappa, low=0.0)
  check_range("eps", eps, low=0.0, low_open=True)
  _check_compensation(compensation)

  def step(g, state, params, grad_fn, noise_grads, progress):
    strength = ncsam_strength(progress, kappa)
    perturbation = ncsam_perturbation(g, noise_grads, rho, strength, eps, compensation)
    return perturbed_gradient(grad_fn, params, perturbation, has_aux=has_aux,
                              axis_name=axis_name), state

  return sharpness_aware("ncsam", step, needs={
      "noise_grads": "g*, from ncsam_gradients", "progress": "t in [0, 1]"})
