r"""Diagnostics of the three phases of meta-reweighting (seed paper 002).

Zhang, Holtz, Mishne, Cloninger (arXiv 2510.12209) prove that meta-reweighting under
label noise (:func:`jaxnoisy.meta.meta_reweight_step`) runs through three phases:

(i) **alignment** — examples consistent with the clean subset are amplified and
    conflicting ones suppressed;
(ii) **filtering** — the weights of noisy examples are driven toward zero until the
     clean-subset loss plateaus;
(iii) **post-filtering** — once the clean-subset loss is small, the similarity-weighted
      coupling between training and clean signals vanishes and the filtering becomes
      perturbation-sensitive.

The mechanism is the coupling that drives the one-step meta-gradient. With the mean
convention of :mod:`jaxnoisy.meta.reweight`, θ̂(w) = θ − η ∇(1/B)Σ_i w_i l_i and
L_val(w) = L_clean(θ̂(w)), the chain rule gives exactly

.. math::

  \frac{\partial L_{\mathrm{val}}}{\partial w_i}
    = -\frac{\eta}{B} \bigl\langle \nabla l_i(\theta),
      \nabla L_{\mathrm{clean}}(\hat\theta(w)) \bigr\rangle
    \approx -\frac{\eta}{B} a_i, \qquad
  a_i = \langle \nabla l_i(\theta), \nabla L_{\mathrm{clean}}(\theta) \rangle

(equal at w = 0, where θ̂ = θ). For cross-entropy the last layer's weight matrix
contributes (1/m) Σ_j ⟨p_i − e_ỹi, p_j − e_yj⟩ ⟨φ_i, φ_j⟩ to a_i (p the softmax outputs,
φ the penultimate features): residual products weighted by feature similarities, the
paper's "similarity-weighted coupling". As the clean residuals p_j − e_yj shrink with
the clean loss, a_i shrinks for every example, clean or not.

Every function here is pure and jit-able and cheap enough to run every few steps:

* :func:`weight_phase_stats` — the weights of a whole training set: mean weight of clean
  and corrupted examples and the share of each at zero (phases i–ii).
* :func:`clean_loss_and_gradient`, :func:`coupling` — L_clean, ∇L_clean and a_i (one
  ``jax.jvp`` of the batch's losses along ∇L_clean, no per-example gradients).
* :func:`score_summary` — any per-example score whose sign says "keep" (a_i, −∂L_val/∂w,
  FBR's d): its mean on clean and on corrupted examples, their separation, its
  magnitude, its AUC and the shares on the right side of zero.
* :func:`perturb_params`, :func:`sign_flip_share` — the sensitivity of phase iii: the
  share of examples whose score changes sign under a small seeded perturbation.
* :func:`phase_diagnostics` — all of the above for one state and batch.

The model enters as ``loss_fn(params, batch) -> (B,)`` per-example losses, as in
:mod:`jaxnoisy.meta.reweight`. Two copies of one image, the second mislabelled, against
a clean batch holding its true label: the coupling amplifies the first and suppresses
the second.

>>> import jax.numpy as jnp
>>> from jaxnoisy.meta import (clean_loss_and_gradient, coupling, cross_entropy_loss_fn,
...                            score_summary)
>>> loss_fn = cross_entropy_loss_fn(lambda p, x: x @ p["w"])
>>> params = {"w": jnp.eye(2)}
>>> x, y = jnp.array([[1., 0.], [1., 0.]]), jnp.array([0, 1])
>>> loss, g = clean_loss_and_gradient(loss_fn, params, (x[:1], y[:1]))
>>> a = coupling(loss_fn, params, (x, y), g)
>>> (a > 0).tolist(), float(score_summary(a, jnp.array([False, True]))["auc"])
([True, False], 1.0)

References: Zhang, Holtz, Mishne, Cloninger, *Revisiting
Meta-Learning with Noisy Labels: Reweighting Dynamics and Theoretical Guarantees*, arXiv
2510.12209.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnoisy import tree as tree_lib
from jaxnoisy._validate import check_range
from jaxnoisy.meta.reweight import (LossFn, linearize, meta_reweight_step,
                                    surrogate_agreement, weight_auc, weight_diagnostics)


def _float(x):
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _masked_mean(x, mask):
  """mean of x over mask; NaN when the mask is empty."""
  n = jnp.sum(mask)
  return jnp.where(n > 0, jnp.sum(jnp.where(mask, x, 0)) / jnp.maximum(n, 1), jnp.nan)


def weight_phase_stats(weights, corrupted, zero_tol=1e-6) -> dict:
  r"""Where the weights of a training set stand: phases (i) alignment and (ii) filtering.

  With C the clean and N the corrupted examples (``corrupted`` True where the given
  label is wrong):

  .. math::

    \bar w_C = \frac{1}{|C|}\sum_{i\in C} w_i, \quad
    \bar w_N = \frac{1}{|N|}\sum_{i\in N} w_i, \quad
    z_N = \frac{|\{i \in N: w_i \le \tau\}|}{|N|}, \quad
    z_C = \frac{|\{i \in C: w_i \le \tau\}|}{|C|}

  Paper statements tested: (i) clean examples are amplified and corrupted ones
  suppressed, w̄_C > w̄_N; (ii) the noisy weights are driven toward zero, z_N → 1 while
  z_C stays small, until the filtering stops (z_N levels off).

  Args:
    weights: w, shape (n,) (meta-reweighting's persistent weights live in [0, 1]).
    corrupted: bool mask (n,).
    zero_tol: τ ≥ 0, "at zero" means w ≤ τ (projected weights sit at exactly 0).

  Returns:
    :func:`jaxnoisy.meta.weight_diagnostics` (``weight_auc``, ``weight_precision``,
    ``weight_recall``, ``mean_weight_clean`` = w̄_C, ``mean_weight_noisy`` = w̄_N) and
    ``zero_share_noisy`` = z_N, ``zero_share_clean`` = z_C (NaN for an empty group).
  """
  check_range("zero_tol", zero_tol, low=0.0)
  w = _float(weights)
  noisy = jnp.asarray(corrupted, bool)
  at_zero = (w <= zero_tol).astype(w.dtype)
  return {**weight_diagnostics(w, noisy),
          "zero_share_noisy": _masked_mean(at_zero, noisy),
          "zero_share_clean": _masked_mean(at_zero, ~noisy)}


def clean_loss_and_gradient(loss_fn: LossFn, params, clean_batch):
  r"""The clean-subset loss and its gradient, :math:`L_{\mathrm{clean}}(\theta) =
  \frac{1}{m}\sum_j l^v_j(\theta)` and :math:`\nabla_\theta L_{\mathrm{clean}}`.

  Paper statement tested: the filtering runs until L_clean plateaus, and the coupling
  vanishes once it is small (the gradient's norm is reported by
  :func:`phase_diagnostics`).

  Returns:
    ``(loss, grads)``, grads shaped like ``params``.
  """
  return jax.value_and_grad(lambda p: jnp.mean(loss_fn(p, clean_batch)))(params)


def coupling(loss_fn: LossFn, params, batch, clean_grad) -> jax.Array:
  r"""The per-example coupling that drives the one-step meta-gradient.

  .. math::

    a_i = \langle \nabla_\theta l_i(\theta), \nabla_\theta L_{\mathrm{clean}}(\theta)
    \rangle, \qquad
    \frac{\partial L_{\mathrm{val}}}{\partial w_i}\Big|_{w=0} = -\frac{\eta}{B} a_i

  One ``jax.jvp`` of the batch's losses along ``clean_grad`` (a forward-mode pass; no
  per-example gradients are formed). a_i > 0: up-weighting example i lowers the clean
  loss; a_i = (1/m) Σ_j ⟨∇l_i, ∇l^v_j⟩ sums the training-clean inner products over the
  clean examples (the module docstring gives its last-layer form).

  Args:
    loss_fn: ``(params, batch) -> (B,)``.
    params: θ.
    batch: the training batch.
    clean_grad: ∇L_clean(θ), shaped like ``params``
      (:func:`clean_loss_and_gradient`).

  Returns:
    a, shape (B,).
  """
  tangent = jax.tree.map(lambda p, g: jnp.asarray(g, p.dtype), params, clean_grad)
  return jax.jvp(lambda p: loss_fn(p, batch), (params,), (tangent,))[1]


def score_summary(scores, corrupted) -> dict:
  r"""How a per-example "keep" score separates clean from corrupted examples.

  For scores s whose sign says "up-weight" (a_i, −∂L_val/∂w_i, FBR's d_i):

  .. math::

    \bar s_C, \ \bar s_N \ (\text{means over clean / corrupted}), \quad
    \Delta = \bar s_C - \bar s_N, \quad
    |s| = \sqrt{\tfrac{1}{n}\textstyle\sum_i s_i^2}, \quad
    P_C = \Pr_{i\in C}[s_i > 0], \quad Q_N = \Pr_{i\in N}[s_i < 0]

  and the AUC of s ranking clean above corrupted (:func:`jaxnoisy.meta.weight_auc`).
  Paper statements tested: (i) alignment — s̄_C > 0 > s̄_N, P_C and Q_N high, AUC
  well above 1/2; (iii) post-filtering — the coupling vanishes, :math:`|s|` and Δ fall
  toward 0, and the separation (AUC) is lost.

  Returns:
    ``{"clean_mean", "noisy_mean", "separation", "magnitude", "auc", "clean_positive",
    "noisy_negative"}`` (NaN where a group is empty).
  """
  s = _float(scores)
  noisy = jnp.asarray(corrupted, bool)
  clean_mean, noisy_mean = _masked_mean(s, ~noisy), _masked_mean(s, noisy)
  return {"clean_mean": clean_mean, "noisy_mean": noisy_mean,
          "separation": clean_mean - noisy_mean,
          "magnitude": jnp.sqrt(jnp.mean(s * s)),
          "auc": weight_auc(s, noisy),
          "clean_positive": _masked_mean((s > 0).astype(s.dtype), ~noisy),
          "noisy_negative": _masked_mean((s < 0).astype(s.dtype), noisy)}


def perturb_params(params, key, scale):
  r"""The parameters moved by a random direction of relative size ``scale``.

  .. math::

    \theta' = \theta + \sigma \lVert\theta\rVert \frac{u}{\lVert u \rVert},
    \qquad u \sim \mathcal N(0, I)

  so that ‖θ' − θ‖ = σ‖θ‖ (global L2 norms over the pytree). Each leaf keeps its dtype.

  Args:
    params: θ, any pytree of float arrays.
    key: the PRNG key u is drawn from (one draw per leaf, from ``jax.random.split``).
    scale: σ ≥ 0.
  """
  check_range("scale", scale, low=0.0)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  dtype = tree_lib.accumulation_dtype(params)
  u = [jax.random.normal(k, jnp.shape(x), dtype) for k, x in zip(keys, leaves)]
  size = jnp.asarray(scale, dtype) * tree_lib.global_norm(params) / tree_lib.global_norm(u)
  return jax.tree.unflatten(treedef, [(x + size * v).astype(jnp.asarray(x).dtype)
                                      for x, v in zip(leaves, u)])


def sign_flip_share(reference, perturbed) -> jax.Array:
  r"""The share of examples whose score has the opposite sign after a perturbation.

  .. math::

    F = \frac{1}{n}\,\bigl|\{i : s_i \, s'_i < 0\}\bigr|

  (a score that is exactly 0 on either side does not count as a flip). Paper statement
  tested: (iii) in the post-filtering phase the filtering becomes perturbation-
  sensitive — F rises once the coupling has vanished.
  """
  a, b = _float(reference), _float(perturbed)
  return jnp.mean((a * b < 0).astype(a.dtype))


def phase_diagnostics(loss_fn: LossFn, params, weights, batch, corrupted, clean_batch,
                      alt_clean_batch, key, *, inner_lr, param_scale) -> dict:
  r"""The phase diagnostics of one meta-reweighting state on one batch.

  With g = ∂L_val/∂w the exact meta-gradient of :func:`jaxnoisy.meta.meta_reweight_step`
  at the batch's current weights (the direction the algorithm moves them along):

  * ``clean_loss`` L_clean(θ) on ``clean_batch`` and ``clean_grad_norm`` ‖∇L_clean(θ)‖
    (:func:`clean_loss_and_gradient`);
  * ``coupling_*``: :func:`score_summary` of the coupling a (:func:`coupling`);
  * ``meta_*``: :func:`score_summary` of −g, and ``coupling_meta_correlation``, the
    Pearson correlation of a with −g (how well the first-order coupling explains the
    exact step);
  * ``flip_params``: :func:`sign_flip_share` of g against g at
    θ' = :func:`perturb_params` ``(θ, key, param_scale)``, same batches;
  * ``flip_clean``: the same against g with ``alt_clean_batch`` in place of
    ``clean_batch`` (a resampled clean batch).

  Args:
    loss_fn: ``(params, batch) -> (B,)``.
    params: θ.
    weights: the batch's current weights w, shape (B,).
    batch: the training batch.
    corrupted: bool mask (B,) of the batch's corrupted examples.
    clean_batch: the clean batch of the meta-gradient (and of L_clean, a).
    alt_clean_batch: another clean batch of the same size (the resample).
    key: PRNG key of the parameter perturbation.
    inner_lr: η > 0, the virtual step size (the run's learning rate).
    param_scale: σ ≥ 0 of :func:`perturb_params`.

  Returns:
    A dict of scalars.
  """
  check_range("inner_lr", inner_lr, low=0.0, low_open=True)
  check_range("param_scale", param_scale, low=0.0)
  loss, clean_grad = clean_loss_and_gradient(loss_fn, params, clean_batch)
  a = coupling(loss_fn, params, batch, clean_grad)
  # θ's forward pass of the batch (and its VJP) serves both meta-gradients at θ.
  lin = linearize(loss_fn, params, batch)
  meta = lambda p, clean, lin=None: meta_reweight_step(
      loss_fn, p, weights, batch, clean, inner_lr=inner_lr, weight_lr=0.0,
      linearized=lin).meta_grad
  g = meta(params, clean_batch, lin)
  out = {"clean_loss": loss, "clean_grad_norm": tree_lib.global_norm(clean_grad),
         **{f"coupling_{k}": v for k, v in score_summary(a, corrupted).items()},
         **{f"meta_{k}": v for k, v in score_summary(-g, corrupted).items()},
         "coupling_meta_correlation": surrogate_agreement(a, g)["correlation"],
         "flip_params": sign_flip_share(g, meta(perturb_params(params, key, param_scale),
                                                clean_batch)),
         "flip_clean": sign_flip_share(g, meta(params, alt_clean_batch, lin))}
  return out
