r"""Meta label correction: MLC, BOME applied to MLC, and EBOMLC (METHODS §5).

A label-correction network (LCN) maps the main network's *detached* penultimate
features h(x) and the given label ỹ to a soft label,
:math:`\mathrm{LCN}_\phi(\mathrm{sg}(h(x)), \tilde y) \in \Delta^{C-1}`, and the main
network w trains on the corrected labels,

.. math::

  \ell(w, \phi) = \frac{1}{B}\sum_i
    \mathrm{softCE}\bigl(f_w(x_i), \mathrm{LCN}_\phi(\mathrm{sg}(h_w(x_i)), \tilde y_i)\bigr).

Three ways to train φ (and w) against a small clean batch are implemented as pure,
jit-able step functions that return gradients; the caller owns both optimisers:

* :func:`mlc_step` — MLC (Zheng et al. 2021): the hypergradient of the clean loss after
  a look-ahead step w'(φ) = w − η∇_wℓ(w, φ), by ``jax.grad`` through the update.
* :func:`bome_mlc_step` — BOME's dynamic barrier (Liu et al. 2022) applied to the same
  bilevel problem: first order, no differentiation through an update.
* :func:`ebomlc_step` — EBOMLC (Nguyen and Ta): a mixture upper loss on one half of the
  clean batch, a one-step gradient difference as the barrier, an alignment-aware β.

and the pieces they share: :class:`LabelCorrectionNet` / :func:`lcn_init` (the network
and its functional form), :func:`soft_cross_entropy`, :func:`bome_lambda`,
:func:`ebomlc_beta`, :func:`ebomlc_upper_loss`, :func:`corrected_accuracy`.

The main network enters only through ``logits_fn(params, x) -> (logits, features)``,
or ``(logits, features, state)`` with any third output — typically the new batch-norm
statistics. With a :func:`jaxnoisy.models.make_model` model::

  model = make_model("cnn", 10, (28, 28, 1))
  logits_fn = lambda p, x: model.apply(p, model.state, x, train=True)
  lcn_apply, lcn_params = lcn_init(10, feature_dim=128, seed=0)

Each step returns as ``model_state`` the third output of its forward pass of the noisy
batch at the current w (``None`` for a two-output ``logits_fn``), so the caller's real
step gets its batch statistics without another forward pass; those of virtual steps
and of the clean batches are discarded (as in :mod:`jaxnoisy.meta.reweight`). Batches are
``(inputs, labels)`` pairs; every loss is the mean over its batch (the convention of
:mod:`jaxnoisy.meta.reweight`), so ``inner_lr`` is the trainer's learning rate.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxnoisy._validate import check_range

LogitsFn = Callable[[Any, Any], tuple]  # (params, x) -> (logits (B, C), features[, state])
LcnApply = Callable[[Any, jax.Array, jax.Array], jax.Array]
Direction = Callable[[Any], Any]                # grads -> optimiser direction (same tree)

_SIGNS = ("descend", "reference")
_MIXTURES = ("probs", "logits")


# --- validation -----------------------------------------------------------------------
def _check_positive_int(name: str, value) -> None:
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _batch_size(name: str, batch) -> int:
  if not isinstance(batch, (tuple, list)) or len(batch) != 2:
    raise ValueError(f"{name} must be an (inputs, labels) pair")
  shape = jnp.shape(batch[1])
  if len(shape) != 1:
    raise ValueError(f"{name} labels must have shape (n,), got {shape}")
  return shape[0]


# --- pytree arithmetic (accumulated in at least float32, float64 kept) ----------------
def _vdot(a, b) -> jax.Array:
  leaves = [(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  if not leaves:
    return jnp.zeros((), jnp.float32)
  dtype = jnp.promote_types(jnp.result_type(*[x for pair in leaves for x in pair]),
                            jnp.float32)
  return sum(jnp.vdot(x.astype(dtype), y.astype(dtype)) for x, y in leaves)


def _axpy(alpha, x, y):
  """alpha · x + y, leaf by leaf, in y's dtypes."""
  return jax.tree.map(lambda a, b: (jnp.asarray(alpha, b.dtype) * a.astype(b.dtype) + b),
                      x, y)


def _sgd(params, grads, lr):
  return jax.tree.map(lambda p, g: p - jnp.asarray(lr, p.dtype) * g.astype(p.dtype),
                      params, grads)


# --- the label-correction network -----------------------------------------------------
class LabelCorrectionNet(nnx.Module):
  r"""MLC's label-correction network: (detached features, noisy label) → soft label.

  .. math::

    z = [\,\mathrm{sg}(h) ;\; E[\tilde y]\,], \quad
    \mathrm{LCN}_\phi(h, \tilde y) = \mathrm{softmax}\bigl(W_3 \tanh(W_2 \tanh(W_1 z + b_1)
      + b_2) + b_3\bigr)

  Sizes follow MLC's reference (microsoft/MLC ``MetaNet``): label embedding of dimension
  64, two tanh hidden layers of width 128, a linear layer to C. Initialisation as there:
  Glorot-uniform embedding, Glorot-normal (untruncated) weights, zero biases.

  Args:
    num_classes: C ≥ 2 (the label vocabulary and the output size).
    feature_dim: d, the width of the main network's penultimate features.
    hidden: width of the two hidden layers (MLC: 128).
    embed_dim: label-embedding dimension (MLC: 64).
    param_dtype: parameter dtype.
    rngs: ``nnx.Rngs``.

  References:
    Zheng, Awadallah, Dumais, Meta Label Correction for Noisy Label Learning, AAAI 2021
    (microsoft/MLC).
  """

  def __init__(self, num_classes: int, feature_dim: int, *, hidden: int = 128,
               embed_dim: int = 64, param_dtype=jnp.float32, rngs: nnx.Rngs):
    for name, value in (("feature_dim", feature_dim), ("hidden", hidden),
                        ("embed_dim", embed_dim)):
      _check_positive_int(name, value)
    if not isinstance(num_classes, numbers.Integral) or num_classes < 2:
      raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    normal = nnx.initializers.variance_scaling(1.0, "fan_avg", "normal")
    linear = lambda i, o: nnx.Linear(i, o, kernel_init=normal, param_dtype=param_dtype,
                                     rngs=rngs)
    self.embed = nnx.Embed(num_classes, embed_dim, param_dtype=param_dtype,
                           embedding_init=nnx.initializers.glorot_uniform(), rngs=rngs)
    self.dense1 = linear(feature_dim + embed_dim, hidden)
    self.dense2 = linear(hidden, hidden)
    self.out = linear(hidden, num_classes)

  def __call__(self, features: jax.Array, noisy_labels: jax.Array) -> jax.Array:
    # The LCN reads the features as data: φ's gradient must not reach the main network
    # through h(x) (MLC detaches them; the main network learns only from the targets).
    h = jax.lax.stop_gradient(features)
    emb = self.embed(noisy_labels)
    z = jnp.concatenate([h.astype(emb.dtype), emb], axis=-1)
    z = jnp.tanh(self.dense1(z))
    z = jnp.tanh(self.dense2(z))
    return jax.nn.softmax(self.out(z), axis=-1)


def lcn_init(num_classes: int, feature_dim: int, *, seed: int = 0, hidden: int = 128,
             embed_dim: int = 64, param_dtype=jnp.float32) -> tuple[LcnApply, dict]:
  """:class:`LabelCorrectionNet` as a pure function and its parameters.

  Returns:
    ``(lcn_apply, lcn_params)``: ``lcn_apply(lcn_params, features (B, d), noisy_labels
    (B,)) -> soft labels (B, C)``, jit-able and differentiable in ``lcn_params`` (a
    nested dict of arrays); the features are under ``stop_gradient`` inside.
  """
  net = LabelCorrectionNet(num_classes, feature_dim, hidden=hidden, embed_dim=embed_dim,
                           param_dtype=param_dtype, rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(net, nnx.Param)
  params = nnx.to_pure_dict(state)

  def lcn_apply(lcn_params, features, noisy_labels):
    return nnx.merge(graphdef, lcn_params)(features, noisy_labels)

  return lcn_apply, params


# --- losses ---------------------------------------------------------------------------
def soft_cross_entropy(logits, soft_targets) -> jax.Array:
  r"""Per-example cross-entropy against soft targets, :math:`-\sum_c t_c \log
  \mathrm{softmax}(z)_c`, shape (B,). Differentiable in both arguments."""
  return optax.softmax_cross_entropy(logits, soft_targets.astype(logits.dtype))


def _ce(logits, labels) -> jax.Array:
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _corrected_loss(logits_fn, params, lcn_apply, lcn_params, batch):
  """ℓ_noisy(w, φ) = mean softCE(f_w(x), LCN_φ(sg(h_w(x)), ỹ)); aux: the soft labels
  and ``logits_fn``'s third output (``None`` without one)."""
  x, y = batch
  out = logits_fn(params, x)
  logits, features = out[:2]
  corrected = lcn_apply(lcn_params, jax.lax.stop_gradient(features), y)
  state = out[2] if len(out) > 2 else None
  return jnp.mean(soft_cross_entropy(logits, corrected)), (corrected, state)


def _lower_loss(logits_fn, params, lcn_apply, lcn_params, batch, clean_train_batch):
  """ℓ, optionally the size-weighted mean with CE on clean training examples."""
  noisy, aux = _corrected_loss(logits_fn, params, lcn_apply, lcn_params, batch)
  if clean_train_batch is None:
    return noisy, aux
  xc, yc = clean_train_batch
  b, m = batch[1].shape[0], yc.shape[0]
  clean = _ce(logits_fn(params, xc)[0], yc)
  return (b * noisy + m * clean.astype(noisy.dtype)) / (b + m), aux


def _clean_loss(logits_fn, params, clean_batch):
  x, y = clean_batch
  return _ce(logits_fn(params, x)[0], y)


# --- MLC ------------------------------------------------------------------------------
class MLCResult(NamedTuple):
  """What :func:`mlc_step` returns."""
  loss: jax.Array        # ℓ(w, φ) at the current w and φ, a scalar
  grads_w: Any           # ∇_w ℓ(w, φ), the main network's real-step gradient
  grads_phi: Any         # ∇_φ L_clean(w'(φ)), the LCN's hypergradient
  clean_loss: jax.Array  # L_clean(w'(φ)), the clean loss after the look-ahead
  corrected: jax.Array   # LCN_φ(sg(h_w(x)), ỹ), shape (B, C)
  model_state: Any       # logits_fn's third output on the noisy batch at w, or None


def mlc_step(logits_fn: LogitsFn, params, lcn_apply: LcnApply, lcn_params, batch,
             clean_batch, *, inner_lr, lookahead_steps: int = 1,
             clean_train_batch=None) -> MLCResult:
  r"""One MLC step: the LCN's hypergradient and the main network's gradient.

  .. math::

    w_0 = w, \quad w_{k+1} = w_k - \eta \nabla_w \ell(w_k, \phi) \;(k < K), \quad
    g_\phi = \nabla_\phi L_{\mathrm{clean}}(w_K(\phi)), \quad g_w = \nabla_w \ell(w, \phi)

  g_φ is ``jax.grad`` through the K virtual steps (exact, second order); the first
  virtual step's gradient is returned as g_w, so the whole step is one differentiated
  computation. The caller then applies both::

    res = mlc_step(logits_fn, params, lcn_apply, lcn_params, (x, y_noisy), (xc, yc),
                   inner_lr=lr)
    upd, meta_opt = meta_tx.update(res.grads_phi, meta_opt, lcn_params)  # MLC: Adam
    lcn_params = optax.apply_updates(lcn_params, upd)
    upd, opt = tx.update(res.grads_w, opt, params)
    params = optax.apply_updates(params, upd)

  Decision (order): g_w uses the *current* φ, before the meta update. METHODS lists
  the φ update before the w update; the reference code (microsoft/MLC
  ``step_hmlc_K``) also steps the meta optimiser first, but the gradient it then hands
  the main optimiser is the inner-step gradient computed with the old φ. jaxnoisy
  does the same: it is what the code does, it costs no second forward/backward pass,
  and it makes the real step exactly the first virtual step. A caller that wants the
  new φ recomputes ∇_wℓ after the meta update.

  Decision (look-ahead): ``lookahead_steps = K`` unrolls K virtual SGD steps on the
  same batch with φ fixed, differentiated exactly. MLC's code approximates a K-step
  look-ahead differently (one-step hypergradients accumulated across consecutive real
  steps with a discount, ``--gradient_steps``); that trainer-level scheme is not
  reproduced. The virtual step is plain SGD at ``inner_lr`` (as in
  :mod:`jaxnoisy.meta.reweight`); the reference's also applies momentum and weight decay.
  The LCN reads the features of each iterate w_k as data (``stop_gradient``), so for
  K ≥ 2 g_φ omits the path φ → w_k → h_{w_k}(x) → LCN: it is the derivative of the
  clean loss with every iterate's features held at their current values. For K = 1
  the features are those of w, which does not depend on φ, and g_φ is exact.

  Args:
    logits_fn: ``(params, x) -> (logits (B, C), features (B, d))``, optionally with a
      third output (e.g. batch statistics) returned as ``model_state``.
    params: w, the main network's parameters (any pytree).
    lcn_apply: ``(lcn_params, features, noisy_labels) -> (B, C)`` soft labels
      (:func:`lcn_init`).
    lcn_params: φ.
    batch: ``(x, noisy_labels)``.
    clean_batch: ``(x_c, y_c)``, the batch of the clean loss L_clean (mean CE).
    inner_lr: η > 0, the virtual step size (the real step's learning rate).
    lookahead_steps: K ≥ 1 (MLC: 1).
    clean_train_batch: optional ``(x, y)`` of clean examples added to ℓ as plain CE,
      size-weighted: ℓ = (B·ℓ_noisy + m·CE)/(B + m). MLC's default ``hmlc_K_mix``
      splits the clean batch in halves, uses one as ``clean_batch`` and the other here.

  Returns:
    :class:`MLCResult` ``(loss, grads_w, grads_phi, clean_loss, corrected,
    model_state)``.

  References:
    Zheng, Awadallah, Dumais, Meta Label Correction for Noisy Label Learning, AAAI 2021
    (microsoft/MLC).
  """
  check_range("inner_lr", inner_lr, low=0.0, low_open=True)
  _check_positive_int("lookahead_steps", lookahead_steps)
  _batch_size("batch", batch)
  _batch_size("clean_batch", clean_batch)
  lower = lambda p, phi: _lower_loss(logits_fn, p, lcn_apply, phi, batch, clean_train_batch)
  lower_grad = jax.value_and_grad(lower, has_aux=True)

  def hyper(phi):
    (loss, (corrected, model_state)), g0 = lower_grad(params, phi)
    w = _sgd(params, g0, inner_lr)
    for _ in range(lookahead_steps - 1):
      w = _sgd(w, lower_grad(w, phi)[1], inner_lr)
    return _clean_loss(logits_fn, w, clean_batch), (loss, g0, corrected, model_state)

  (clean_loss, (loss, grads_w, corrected, model_state)), grads_phi = jax.value_and_grad(
      hyper, has_aux=True)(lcn_params)
  return MLCResult(loss, grads_w, grads_phi, clean_loss, corrected, model_state)


# --- BOME -----------------------------------------------------------------------------
def bome_lambda(grad_f, grad_q, q, u) -> jax.Array:
  r"""BOME's dynamic-barrier multiplier, over whole pytrees.

  .. math::

    \lambda = \max\Bigl(0, \frac{u\, q - \langle \nabla f, \nabla q \rangle}
      {\lVert \nabla q \rVert^2 + 10^{-8}}\Bigr)

  the smallest λ ≥ 0 for which d = ∇f + λ∇q satisfies ⟨d, ∇q⟩ ≥ u·q (up to the 1e-8):
  descending along d then also lowers q at the rate the control u·q asks for.

  Args:
    grad_f: ∇f, a pytree.
    grad_q: ∇q, the same structure.
    q: the scalar q ≥ 0.
    u: the control coefficient, ≥ 0.
  """
  gq2 = _vdot(grad_q, grad_q)
  num = jnp.asarray(u, gq2.dtype) * jnp.asarray(q, gq2.dtype) - _vdot(grad_f, grad_q)
  return jnp.maximum(0, num / (gq2 + 1e-8))


def ebomlc_beta(delta_w, delta_phi, d_f_w, xi, delta) -> jax.Array:
  r"""EBOMLC's alignment-aware barrier coefficient.

  .. math::

    \beta = \xi \max\Bigl(0, \frac{\delta \lVert [\Delta_w; \Delta_\phi] \rVert^2
      - \langle \Delta_w, d_f^w \rangle}{\lVert [\Delta_w; \Delta_\phi] \rVert^2 + 10^{-8}}
      \Bigr)

  β = 0 when the upper direction is already aligned with the lower-loss change,
  ⟨Δ_w, d_f^w⟩ ≥ δ‖Δ‖².

  Args:
    delta_w: Δ_w, a pytree shaped like the main parameters.
    delta_phi: Δ_φ, a pytree shaped like the LCN parameters.
    d_f_w: the upper direction for w, shaped like ``delta_w``.
    xi: ξ ≥ 0, the barrier's scale (EBOMLC: 0.5).
    delta: δ ≥ 0, the required alignment (EBOMLC: 0.25).
  """
  check_range("xi", xi, low=0.0)
  check_range("delta", delta, low=0.0)
  norm2 = _vdot(delta_w, delta_w) + _vdot(delta_phi, delta_phi)
  num = jnp.asarray(delta, norm2.dtype) * norm2 - _vdot(delta_w, d_f_w)
  return jnp.asarray(xi, norm2.dtype) * jnp.maximum(0, num / (norm2 + 1e-8))


class BomeMLCResult(NamedTuple):
  """What :func:`bome_mlc_step` returns."""
  loss: jax.Array        # g = ℓ(w, φ), a scalar
  grads_w: Any           # ∇_w f + λ ∇_w q
  grads_phi: Any         # λ ∇_φ q (f does not depend on φ)
  lam: jax.Array         # λ
  q: jax.Array           # q = ℓ(w, φ) − ℓ(ŵ, φ)
  upper_loss: jax.Array  # f = L_clean(w)
  corrected: jax.Array   # LCN_φ(sg(h_w(x)), ỹ), shape (B, C)
  model_state: Any       # logits_fn's third output on the noisy batch at w, or None


def bome_mlc_step(logits_fn: LogitsFn, params, lcn_apply: LcnApply, lcn_params, batch,
                  clean_batch, *, inner_lr, inner_steps: int = 1, u=0.5,
                  clean_train_batch=None) -> BomeMLCResult:
  r"""BOME (dynamic barrier) on MLC's bilevel problem, for (w, φ) jointly.

  Upper f(w) = L_clean(w) (mean CE on ``clean_batch``); lower g(w, φ) = ℓ(w, φ);

  .. math::

    \hat w = T \text{ GD steps on } g(\cdot, \phi) \text{ from } w, \quad
    q(w, \phi) = g(w, \phi) - g(\mathrm{sg}(\hat w), \phi),

  .. math::

    (g_w, g_\phi) = \nabla f + \lambda \nabla q, \quad
    \lambda = \max\Bigl(0, \frac{u\,q - \langle\nabla f, \nabla q\rangle}
      {\lVert\nabla q\rVert^2 + 10^{-8}}\Bigr)

  with ∇ over (w, φ): ∇_w q = ∇_w g(w, φ) (ŵ held fixed), ∇_φ q = ∇_φ g(w, φ) −
  ∇_φ g(ŵ, φ), ∇_φ f = 0. No derivative passes through the inner steps. The caller
  descends both w and φ along the returned gradients with its optimisers.

  Args:
    logits_fn, params, lcn_apply, lcn_params, batch, clean_batch, clean_train_batch:
      as in :func:`mlc_step`.
    inner_lr: the inner GD step size α > 0 (the trainer's learning rate).
    inner_steps: T ≥ 1 (default 1).
    u: the control coefficient, ≥ 0. Decision: the control is u·q as METHODS §5 writes
      it; the default 0.5 is BOME's η (whose code defaults to the control η‖∇q‖²).

  Returns:
    :class:`BomeMLCResult` ``(loss, grads_w, grads_phi, lam, q, upper_loss, corrected,
    model_state)``.

  References:
    Liu, Ye, Wright, Stone, Liu, BOME! Bilevel Optimization Made Easy: A Simple
    First-Order Approach, NeurIPS 2022.
  """
  check_range("inner_lr", inner_lr, low=0.0, low_open=True)
  _check_positive_int("inner_steps", inner_steps)
  check_range("u", u, low=0.0)
  _batch_size("batch", batch)
  _batch_size("clean_batch", clean_batch)
  lower = lambda p, phi: _lower_loss(logits_fn, p, lcn_apply, phi, batch, clean_train_batch)
  lower_grads = jax.value_and_grad(lower, argnums=(0, 1), has_aux=True)

  (loss, (corrected, model_state)), (g_w, g_phi) = lower_grads(params, lcn_params)
  w_hat = _sgd(params, g_w, inner_lr)
  for _ in range(inner_steps - 1):
    w_hat = _sgd(w_hat, lower_grads(w_hat, lcn_params)[1][0], inner_lr)
  # ŵ is a constant of q (BOME's sg): only its value enters, never its derivative.
  w_hat = jax.lax.stop_gradient(w_hat)
  (loss_hat, _), (_, g_phi_hat) = lower_grads(w_hat, lcn_params)
  q = loss - loss_hat
  dq_w, dq_phi = g_w, jax.tree.map(jnp.subtract, g_phi, g_phi_hat)

  upper_loss, f_w = jax.value_and_grad(lambda p: _clean_loss(logits_fn, p, clean_batch))(
      params)
  f_phi = jax.tree.map(jnp.zeros_like, lcn_params)
  lam = bome_lambda((f_w, f_phi), (dq_w, dq_phi), q, u)
  grads_w = _axpy(lam, dq_w, f_w)
  grads_phi = jax.tree.map(lambda d: (lam * d).astype(d.dtype), dq_phi)
  return BomeMLCResult(loss, grads_w, grads_phi, lam, q, upper_loss, corrected,
                       model_state)


# --- EBOMLC ---------------------------------------------------------------------------
def ebomlc_upper_loss(logits_fn: LogitsFn, params, lcn_apply: LcnApply, lcn_params,
                      clean_batch, *, rho=0.2, mixture: str = "probs") -> jax.Array:
  r"""EBOMLC's mixture upper loss on clean examples (x_G, y_G).

  With p = softmax(f_w(x_G)) and t = LCN_φ(sg(h_w(x_G)), y_G),

  .. math::

    \texttt{"probs"}:\; f = \frac{1}{|G|}\sum_i -\log\bigl(\rho\, p_i + (1-\rho)\, t_i
      \bigr)_{y_i}, \qquad
    \texttt{"logits"}:\; f = \frac{1}{|G|}\sum_i
      \mathrm{CE}\bigl(\rho\, f_w(x_i) + (1-\rho)\, t_i,\; y_i\bigr)

  Decision (mixture): METHODS writes CE(ρ·f_w(x_G) + (1−ρ)·LCN, y_G). jaxnoisy's
  default, ``"probs"``, mixes two distributions — the network's predictive probabilities
  and the corrected label — and takes the negative log-likelihood of the mixture, so
  ρ weighs comparable quantities. ``"logits"`` is what the reference code
  (hoanganhknk/enhanced_MLC ``step_ebomlc``) computes: raw logits plus probabilities,
  then softmax cross-entropy. At ρ = 1 both are the plain clean CE. The ``"probs"``
  log is taken as a ``logaddexp`` of log-probabilities, so it stays finite when both
  terms underflow.

  Args:
    logits_fn, params, lcn_apply, lcn_params: as in :func:`mlc_step`.
    clean_batch: ``(x_G, y_G)``.
    rho: ρ ∈ [0, 1] (EBOMLC: 0.2).
    mixture: ``"probs"`` (default) or ``"logits"`` (the reference code).
  """
  check_range("rho", rho, low=0.0, high=1.0)
  _check_choice("mixture", mixture, _MIXTURES)
  x, y = clean_batch
  logits, features = logits_fn(params, x)[:2]
  target = lcn_apply(lcn_params, jax.lax.stop_gradient(features), y).astype(logits.dtype)
  r = jnp.asarray(rho, logits.dtype)
  if mixture == "logits":
    return _ce(r * logits + (1 - r) * target, y)
  pick = lambda a: jnp.take_along_axis(a, y[:, None], axis=-1)[:, 0]
  tiny = jnp.finfo(logits.dtype).tiny
  # log(ρ p_y + (1−ρ) t_y); log 0 = −inf is exact for ρ ∈ {0, 1} and logaddexp's
  # derivative puts weight 0 on the −inf branch.
  log_mix = jnp.logaddexp(jnp.log(r) + pick(jax.nn.log_softmax(logits)),
                          jnp.log(1 - r) + jnp.log(jnp.maximum(pick(target), tiny)))
  return -jnp.mean(log_mix)


class EBOMLCResult(NamedTuple):
  """What :func:`ebomlc_step` returns."""
  loss: jax.Array        # ℓ(w, φ): lower loss at the current w, a scalar
  grads_w: Any           # β Δ_w + d_f^w
  grads_phi: Any         # β Δ_φ + ∇_φ f
  beta: jax.Array        # β
  upper_loss: jax.Array  # f(w, φ), the mixture loss on G
  corrected: jax.Array   # LCN_φ(sg(h_w(x)), ỹ) on the noisy batch, shape (B, C)
  model_state: Any       # logits_fn's third output on the noisy batch at w, or None


def ebomlc_step(logits_fn: LogitsFn, params, lcn_apply: LcnApply, lcn_params, batch,
                clean_batch, momentum_direction: Optional[Direction], *, inner_lr,
                rho=0.2, xi=0.5, delta=0.25, sign: str = "descend",
                mixture: str = "probs") -> EBOMLCResult:
  r"""One EBOMLC step: gradients for the main network w and the LCN φ.

  The clean batch is split in halves, G (its first ⌊m/2⌋ examples) and C (the rest).
  Upper f(w, φ) = :func:`ebomlc_upper_loss` on G. Lower
  ℓ(w, φ) = (B·ℓ_noisy(w, φ) + |C|·CE_C(w)) / (B + |C|). With D = ``momentum_direction``,

  .. math::

    w_1 = w - \eta\, D(\nabla_w \ell(w, \phi)), \quad
    \Delta_w = \nabla_w \ell(w, \phi) - \nabla_w \ell(w_1, \phi), \quad
    \Delta_\phi = \nabla_\phi \ell(w, \phi) - \nabla_\phi \ell(w_1, \phi),

  .. math::

    \beta = \xi \max\Bigl(0, \frac{\delta \lVert\Delta\rVert^2
      - \langle \Delta_w, d_f^w\rangle}{\lVert\Delta\rVert^2 + 10^{-8}}\Bigr), \quad
    g_w = \beta \Delta_w + d_f^w, \quad g_\phi = \beta \Delta_\phi + \nabla_\phi f

  (:func:`ebomlc_beta`). The caller descends both with its optimisers (EBOMLC: SGD with
  momentum for w, Adam for φ).

  Decision (sign, METHODS §5):

  * ``sign="descend"`` (default, BOME's convention): d_f^w = ∇_w f. The returned g_w is a
    gradient; the optimiser's step −lr·g_w descends on f, and β's alignment term
    compares two gradients.
  * ``sign="reference"``: d_f^w = −η·D(∇_w f), as the reference code computes it (an
    update, not a gradient). Handed to an optimiser that steps along −g_w, it moves w
    along +D(∇_w f), *ascending* the upper loss; β's alignment term changes sign with
    it. The two options give the same Δ_w, Δ_φ and ∇_φ f; only d_f^w, hence β and g_w,
    differ. (For datasets other than CIFAR-10 the reference code also replaces Δ_w in
    g_w by −η·D(Δ_w); that branch is not reproduced.)

  Args:
    logits_fn, params, lcn_apply, lcn_params: as in :func:`mlc_step`.
    batch: ``(x, noisy_labels)``, size B.
    clean_batch: ``(x_clean, y_clean)`` with m ≥ 2 examples (both halves non-empty).
    momentum_direction: D, ``grads -> direction`` (same pytree): what the trainer's
      optimiser would step along for these gradients with its state *not* advanced,
      e.g. ``lambda g: tree_map(lambda b, x: momentum * b + x, trace, g)`` for SGD
      with momentum (add weight decay there if the optimiser couples it). ``None`` is
      the identity (plain SGD).
    inner_lr: η > 0 (the trainer's learning rate).
    rho: ρ ∈ [0, 1], the mixture weight of the main network (EBOMLC: 0.2).
    xi: ξ ≥ 0 (EBOMLC: 0.5).
    delta: δ ≥ 0 (EBOMLC: 0.25).
    sign: ``"descend"`` (default) or ``"reference"``, as above.
    mixture: ``"probs"`` (default) or ``"logits"``; see :func:`ebomlc_upper_loss`.

  Returns:
    :class:`EBOMLCResult` ``(loss, grads_w, grads_phi, beta, upper_loss, corrected,
    model_state)``.

  References:
    Nguyen and Ta, arXiv 2605.17833 (EBOMLC; hoanganhknk/enhanced_MLC).
  """
  check_range("inner_lr", inner_lr, low=0.0, low_open=True)
  check_range("rho", rho, low=0.0, high=1.0)
  check_range("xi", xi, low=0.0)
  check_range("delta", delta, low=0.0)
  _check_choice("sign", sign, _SIGNS)
  _check_choice("mixture", mixture, _MIXTURES)
  _batch_size("batch", batch)
  m = _batch_size("clean_batch", clean_batch)
  if m < 2:
    raise ValueError(f"clean_batch must hold at least 2 examples (halves G and C are "
                     f"both non-empty), got {m}")
  direction = momentum_direction if momentum_direction is not None else (lambda g: g)
  half = m // 2
  clean_g = jax.tree.map(lambda a: a[:half], tuple(clean_batch))
  clean_c = jax.tree.map(lambda a: a[half:], tuple(clean_batch))

  upper_loss, (f_w, f_phi) = jax.value_and_grad(
      lambda p, phi: ebomlc_upper_loss(logits_fn, p, lcn_apply, phi, clean_g, rho=rho,
                                       mixture=mixture), argnums=(0, 1))(params, lcn_params)
  lower_grads = jax.value_and_grad(
      lambda p, phi: _lower_loss(logits_fn, p, lcn_apply, phi, batch, clean_c),
      argnums=(0, 1), has_aux=True)
  (loss, (corrected, model_state)), (g_w, g_phi) = lower_grads(params, lcn_params)
  # The look-ahead point is data for Δ (no derivative passes through it).
  w1 = jax.lax.stop_gradient(_sgd(params, direction(g_w), inner_lr))
  _, (g_w1, g_phi1) = lower_grads(w1, lcn_params)
  delta_w = jax.tree.map(jnp.subtract, g_w, g_w1)
  delta_phi = jax.tree.map(jnp.subtract, g_phi, g_phi1)

  if sign == "descend":
    d_f_w = f_w
  else:
    d_f_w = jax.tree.map(lambda d, p: (-jnp.asarray(inner_lr, p.dtype) * d).astype(p.dtype),
                         direction(f_w), params)
  beta = ebomlc_beta(delta_w, delta_phi, d_f_w, xi, delta)
  grads_w = _axpy(beta, delta_w, d_f_w)
  grads_phi = _axpy(beta, delta_phi, f_phi)
  return EBOMLCResult(loss, grads_w, grads_phi, beta, upper_loss, corrected, model_state)


# --- diagnostics ----------------------------------------------------------------------
def corrected_accuracy(corrected, true_labels, corrupted) -> dict:
  r"""How often the corrected label's argmax is the true label, by group.

  Returns ``{"corrected_accuracy_noisy", "corrected_accuracy_clean"}``: the fraction
  of corrupted (``corrupted`` True) and of clean examples whose argmax_c corrected_c
  equals the true label; NaN for an empty group. Jit-able.

  Args:
    corrected: soft labels, shape (n, C).
    true_labels: shape (n,).
    corrupted: bool mask (n,), True where the given label is wrong.
  """
  corrected = jnp.asarray(corrected)
  hit = jnp.argmax(corrected, axis=-1) == jnp.asarray(true_labels)
  bad = jnp.asarray(corrupted, bool)
  dtype = jnp.promote_types(corrected.dtype, jnp.float32)

  def rate(mask):
    n = jnp.sum(mask).astype(dtype)
    return jnp.where(n > 0, jnp.sum(hit & mask).astype(dtype) / jnp.maximum(n, 1), jnp.nan)

  return {"corrected_accuracy_noisy": rate(bad), "corrected_accuracy_clean": rate(~bad)}
