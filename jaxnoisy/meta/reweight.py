r"""Meta-reweighting: per-example weights guided by a small clean subset.

Every method here looks one SGD step ahead. With per-example losses
``l_i(θ)`` on the noisy batch (size B) and ``l^v_j(θ)`` on the clean batch (size m),

.. math::

  \hat\theta(w) = \theta - \eta \frac{1}{B} \sum_i w_i \nabla_\theta l_i(\theta),
  \qquad
  L_{\mathrm{val}}(w) = \frac{1}{m} \sum_j l^v_j(\hat\theta(w))

(:func:`lookahead_clean_loss`), and differentiates the clean loss after that step with
``jax.grad`` through the update (never a hand-derived formula):

* :func:`l2rw_weights` — L2RW (Ren et al. 2018): weights re-derived from w = 0 at every
  step, kept only where they lower the clean loss, normalised to sum to one.
* :func:`meta_reweight_step` — the analysed algorithm of Zhang et al. (arXiv 2510.12209,
  §3; its bilevel-free surrogate is :mod:`jaxnoisy.meta.fbr`): persistent weights in [0, 1], moved by projected gradient descent on
  L_val.
* :func:`mwnet_init`, :func:`mwnet_weights`, :func:`mwnet_step` — Meta-Weight-Net
  (Shu et al. 2019): weights are an MLP of the loss, trained through the same lookahead.
* :func:`weight_diagnostics` — how well weights separate clean from corrupted examples.

All of them share one forward pass of the noisy batch, :func:`linearize` (the losses and
their VJP): the virtual step is a VJP of it, ``jax.grad`` in the weights goes through
that VJP, and :func:`weighted_gradient` takes the real step's gradient from it too.

The model enters only through ``loss_fn(params, batch) -> per-example losses (B,)``
(``batch`` is any pytree; :func:`cross_entropy_loss_fn` builds one from a logits
function). With a :func:`jaxnoisy.models.make_model` model:

>>> import jax.numpy as jnp
>>> from jaxnoisy.meta import cross_entropy_loss_fn
>>> from jaxnoisy.models import make_model
>>> model = make_model("mlp", 10, (28, 28, 1))
>>> logits_fn = lambda p, x: model.apply(p, model.state, x, train=True)[0]
>>> loss_fn = cross_entropy_loss_fn(logits_fn)   # batch = (images, labels)
>>> loss_fn(model.params, (jnp.zeros((4, 28, 28, 1)), jnp.arange(4))).shape
(4,)

The batch-norm statistics of the virtual step are discarded on purpose (the lookahead
is a probe, not a training step); the caller's real step updates them.

Decision (sum or mean). The paper writes the inner step with a sum, θ − η_Σ ∇Σ_i w_i l_i.
jaxnoisy uses the *mean* (1/B)Σ_i w_i l_i everywhere (lookahead, MW-Net, the real step
:func:`weighted_loss`), so that at w = 1 the virtual step is exactly one SGD step of
the ordinary mean loss and ``inner_lr`` is the trainer's learning rate. The two
conventions give the same θ̂ and the same L_val(w) when ``inner_lr = B · η_Σ``; the
meta-gradient is then identical, so the paper's (η_Σ, α) become (B·η_Σ, α). To first
order in η,

.. math::

  \frac{\partial L_{\mathrm{val}}}{\partial w_i} \approx
  -\frac{\eta}{B m} \sum_j \langle \nabla l_i, \nabla l^v_j \rangle ,

exactly (not approximately) at w = 0, since θ̂(0) = θ.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnoisy._validate import check_num_classes, check_range

LossFn = Callable[[Any, Any], jax.Array]


# --- validation -----------------------------------------------------------------------
def check_clean_size(clean_size, num_train) -> None:
  """Raise ``ValueError`` unless the clean subset is non-empty and smaller than the data.

  Args:
    clean_size: m, the number of clean examples; must be an integer in [1, num_train).
    num_train: the number of training examples the clean subset is carved from.
  """
  if not isinstance(num_train, numbers.Integral) or num_train < 2:
    raise ValueError(f"num_train must be an integer >= 2, got {num_train!r}")
  if (not isinstance(clean_size, numbers.Integral) or isinstance(clean_size, bool)
      or not 0 < clean_size < num_train):
    raise ValueError(f"clean_size must be an integer in [1, {num_train}) "
                     f"(num_train = {num_train}), got {clean_size!r}")


def check_labels(name: str, labels, num_classes: int) -> None:
  """Raise ``ValueError('<name> must be in [0, C) ...')`` for an out-of-range label.

  Concrete arrays only; traced labels are not checked (as :func:`check_range`).
  """
  check_num_classes(num_classes)
  if isinstance(labels, jax.core.Tracer):
    return
  y = np.asarray(labels)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    bad = y[(y < 0) | (y >= num_classes)][0]
    raise ValueError(f"{name} must be in [0, {num_classes}) (num_classes), got {bad}")


# --- losses ---------------------------------------------------------------------------
def cross_entropy_loss_fn(logits_fn: Callable[[Any, Any], jax.Array]) -> LossFn:
  """``loss_fn(params, (inputs, labels)) -> (B,)`` per-example softmax cross-entropy.

  Args:
    logits_fn: ``(params, inputs) -> logits`` of shape (B, C).
  """
  def loss_fn(params, batch):
    inputs, labels = batch
    logits = logits_fn(params, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss_fn


def weighted_loss(losses, weights) -> jax.Array:
  r"""The real step's loss, :math:`\frac{1}{B}\sum_i w_i l_i`, weights held constant.

  ``weights`` are under ``stop_gradient``: they are data for the real step. Use it for
  :func:`meta_reweight_step` and MW-Net weights. L2RW's weights sum to one, so its real
  loss is ``jnp.vdot(weights, losses)`` (= ``weighted_loss(losses, B * weights)``).
  """
  w = jax.lax.stop_gradient(weights)
  return jnp.mean(w.astype(losses.dtype) * losses)


# --- the lookahead --------------------------------------------------------------------
class Linearized(NamedTuple):
  r"""One forward pass of the noisy batch, shared by the lookahead and the real step.

  ``vjp(v)`` is :math:`(\nabla_\theta \sum_i v_i l_i(\theta),)`, linear in v: the
  virtual step, its derivative in the weights (the transpose) and the real step's
  gradient all reuse this one forward pass.
  """
  losses: jax.Array   # l_i(θ), shape (B,)
  vjp: Callable       # v of shape (B,) -> (∇_θ Σ_i v_i l_i,)


def linearize(loss_fn: LossFn, params, batch) -> Linearized:
  """:class:`Linearized` of ``loss_fn(·, batch)`` at ``params`` (one ``jax.vjp``)."""
  return Linearized(*jax.vjp(lambda p: loss_fn(p, batch), params))


def _mean_gradient(linearized: Linearized, weights):
  r""":math:`\nabla_\theta \frac{1}{B}\sum_i w_i l_i`, linear (and differentiable) in w."""
  losses = linearized.losses
  return linearized.vjp(weights.astype(losses.dtype) / losses.shape[0])[0]


def weighted_gradient(linearized: Linearized, weights) -> tuple:
  r"""The real step from the shared forward pass: ``(loss, grads)``.

  loss = :func:`weighted_loss` = :math:`\frac{1}{B}\sum_i w_i l_i` and grads its
  gradient with w held constant: one VJP of ``linearized``, no forward pass.
  """
  w = jax.lax.stop_gradient(weights)
  return weighted_loss(linearized.losses, w), _mean_gradient(linearized, w)


def _stepped_clean_loss(loss_fn: LossFn, linearized: Linearized, params, weights,
                        clean_batch, inner_lr):
  """L_val after θ̂ = θ − η ∇(1/B)Σ w_i l_i; ``jax.grad`` in w goes through the VJP."""
  grads = _mean_gradient(linearized, weights)
  lookahead = jax.tree.map(lambda p, g: p - jnp.asarray(inner_lr, p.dtype) * g, params, grads)
  return jnp.mean(loss_fn(lookahead, clean_batch))


def lookahead_clean_loss(loss_fn: LossFn, params, weights, batch, clean_batch, *,
                         inner_lr) -> jax.Array:
  r"""The clean loss after one virtual weighted SGD step, as a function of the weights.

  .. math::

    \hat\theta(w) = \theta - \eta \nabla_\theta \frac{1}{B}\sum_{i=1}^B w_i l_i(\theta),
    \qquad L_{\mathrm{val}}(w) = \frac{1}{m}\sum_{j=1}^m l^v_j(\hat\theta(w))

  Differentiable in ``weights`` (and ``params``); every meta-gradient in this module is
  ``jax.grad`` of this function (or of the same lookahead with MW-Net weights).

  Args:
    loss_fn: ``(params, batch) -> (B,)`` per-example losses.
    params: θ, any pytree.
    weights: w, shape (B,).
    batch: the noisy batch (any pytree ``loss_fn`` accepts).
    clean_batch: the clean batch, same structure (its own size m).
    inner_lr: η > 0, the virtual step size (the trainer's learning rate).

  Returns:
    L_val(w), a scalar.
  """
  check_range("inner_lr", inner_lr, low=0.0, low_open=True)
  return _stepped_clean_loss(loss_fn, linearize(loss_fn, params, batch), params, weights,
                             clean_batch, inner_lr)


# --- L2RW -----------------------------------------------------------------------------
def l2rw_scores(loss_fn: LossFn, params, batch, clean_batch, *, inner_lr=1.0,
                linearized: Optional[Linearized] = None) -> jax.Array:
  r"""L2RW's raw scores: how much up-weighting each example lowers the clean loss.

  .. math::

    u_i = -\left.\frac{\partial L_{\mathrm{val}}(\epsilon)}{\partial \epsilon_i}
          \right|_{\epsilon = 0}
        = \frac{\eta}{B m} \sum_j \langle \nabla l_i(\theta), \nabla l^v_j(\theta)\rangle

  with L_val of :func:`lookahead_clean_loss`. The gradient is taken with ``jax.grad``
  through the virtual step; the closed form holds exactly because θ̂(0) = θ. The mean
  convention makes u 1/B of Ren et al.'s sum-convention u; the normalised weights of
  :func:`l2rw_weights` are the same.

  Args:
    loss_fn, params, batch, clean_batch: as in :func:`lookahead_clean_loss`.
    inner_lr: η > 0; it only scales u (default 1).
    linearized: the batch's forward pass, :func:`linearize` ``(loss_fn, params, batch)``,
      if the caller already has it (the trainer shares it with its real step via
      :func:`weighted_gradient`); ``batch`` is then not read.

  Returns:
    u, shape (B,).

  References:
    Ren, Zeng, Yang, Urtasun, Learning to Reweight Examples for Robust Deep Learning,
    ICML 2018 (uber-research/learning-to-reweight-examples).
  """
  check_range("inner_lr", inner_lr, low=0.0, low_open=True)
  lin = linearized if linearized is not None else linearize(loss_fn, params, batch)
  at_zero = jnp.zeros_like(lin.losses)  # the examples' weight perturbations ε = 0
  return -jax.grad(
      lambda e: _stepped_clean_loss(loss_fn, lin, params, e, clean_batch, inner_lr))(at_zero)


def l2rw_normalize(scores) -> jax.Array:
  r"""L2RW's weights from its scores: clipped at zero and normalised to sum to one.

  .. math::

    w_i = \frac{\max(u_i, 0)}{\sum_k \max(u_k, 0)}, \qquad w = 0 \text{ if every } u_k \le 0
  """
  pos = jnp.maximum(scores, 0)
  total = jnp.sum(pos)
  return jnp.where(total > 0, pos / jnp.where(total > 0, total, 1), jnp.zeros_like(pos))


def l2rw_weights(loss_fn: LossFn, params, batch, clean_batch, *, inner_lr=1.0,
                 linearized: Optional[Linearized] = None) -> jax.Array:
  r"""L2RW: per-example weights for the real step, re-derived from zero at every step.

  .. math::

    u = -\nabla_\epsilon L_{\mathrm{val}}(\epsilon)\big|_{\epsilon=0}, \qquad
    w_i = \frac{\max(u_i, 0)}{\sum_k \max(u_k, 0)} \;(0 \text{ if all } u_k \le 0)

  (:func:`l2rw_scores`, :func:`l2rw_normalize`). The real step then minimises
  ``jnp.vdot(w, losses)``; an all-zero w means the batch is skipped (zero gradient),
  as in the reference code.

  Args:
    loss_fn, params, batch, clean_batch: as in :func:`lookahead_clean_loss`.
    inner_lr: η > 0; w does not depend on it (default 1).
    linearized: as in :func:`l2rw_scores`.

  Returns:
    w, shape (B,), non-negative, summing to 1 or all zero.

  References:
    Ren, Zeng, Yang, Urtasun, Learning to Reweight Examples for Robust Deep Learning,
    ICML 2018 (uber-research/learning-to-reweight-examples).
  """
  return l2rw_normalize(l2rw_scores(loss_fn, params, batch, clean_batch, inner_lr=inner_lr,
                                    linearized=linearized))


# --- the analysed algorithm: persistent weights in [0, 1] -----------------------------
class MetaReweightResult(NamedTuple):
  """What :func:`meta_reweight_step` returns."""
  weights: jax.Array      # the new weights, clip(w − α ∂L_val/∂w, 0, 1), shape (B,)
  meta_grad: jax.Array    # ∂L_val/∂w at the old weights, shape (B,)
  clean_loss: jax.Array   # L_val(w) at the old weights, a scalar


def meta_reweight_step(loss_fn: LossFn, params, weights, batch, clean_batch, *,
                       inner_lr, weight_lr,
                       linearized: Optional[Linearized] = None) -> MetaReweightResult:
  r"""One projected meta-gradient step on persistent per-example weights.

  .. math::

    \hat\theta(w) = \theta - \eta \nabla_\theta \frac{1}{B}\sum_i w_i l_i, \quad
    L_{\mathrm{val}}(w) = \frac{1}{m}\sum_j l^v_j(\hat\theta(w)), \quad
    w \leftarrow \operatorname{clip}\Bigl(w - \alpha
      \frac{\partial L_{\mathrm{val}}}{\partial w}, 0, 1\Bigr)

  ∂L_val/∂w is ``jax.grad`` through the virtual step; to first order it is
  −(η/(Bm)) Σ_j ⟨∇l_i, ∇l^v_j⟩, so weights of examples whose gradient agrees with the
  clean gradient grow. The caller holds the weights of the whole training set, gathers
  the batch's entries, scatters the result back and takes the real step on
  :func:`weighted_loss` with the *new* weights, from the same forward pass::

    lin = linearize(loss_fn, params, batch)
    w = meta_reweight_step(loss_fn, params, all_weights[idx], batch, clean_batch,
                           inner_lr=lr, weight_lr=alpha, linearized=lin).weights
    all_weights = all_weights.at[idx].set(w)
    loss, grads = weighted_gradient(lin, w)

  Decision: mean convention (module docstring); the paper's (η_Σ, α) are
  ``inner_lr = B·η_Σ, weight_lr = α`` here.

  Args:
    loss_fn, params, batch, clean_batch: as in :func:`lookahead_clean_loss`.
    weights: w ∈ [0, 1], shape (B,) (the paper starts from 1).
    inner_lr: η > 0, the virtual step size (the real step's learning rate).
    weight_lr: α ≥ 0, the weights' step size (the paper's α = β/η).
    linearized: as in :func:`l2rw_scores`.

  Returns:
    :class:`MetaReweightResult` ``(weights, meta_grad, clean_loss)``.

  References:
    Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209 (analysed meta-reweighting).
  """
  check_range("inner_lr", inner_lr, low=0.0, low_open=True)
  check_range("weight_lr", weight_lr, low=0.0)
  lin = linearized if linearized is not None else linearize(loss_fn, params, batch)
  clean_loss, meta_grad = jax.value_and_grad(
      lambda w: _stepped_clean_loss(loss_fn, lin, params, w, clean_batch, inner_lr))(weights)
  new = jnp.clip(weights - jnp.asarray(weight_lr, weights.dtype) * meta_grad, 0, 1)
  return MetaReweightResult(new.astype(weights.dtype), meta_grad, clean_loss)


# --- Meta-Weight-Net ------------------------------------------------------------------
def mwnet_init(key, hidden: int = 100, dtype=jnp.float32) -> dict:
  r"""Parameters of Meta-Weight-Net's MLP, loss → weight: 1 → ``hidden`` → 1.

  Decision: each weight and bias is drawn from U(−1/√fan_in, 1/√fan_in), the default
  ``nn.Linear`` initialisation the reference code inherits.

  Args:
    key: a PRNG key.
    hidden: width of the hidden layer, ≥ 1 (paper: 100).
    dtype: parameter dtype.

  Returns:
    ``{"w1": (1, hidden), "b1": (hidden,), "w2": (hidden, 1), "b2": (1,)}``.

  References:
    Shu et al., Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting,
    NeurIPS 2019 (xjtushujun/meta-weight-net).
  """
  if not isinstance(hidden, numbers.Integral) or isinstance(hidden, bool) or hidden < 1:
    raise ValueError(f"hidden must be an integer >= 1, got {hidden!r}")
  k1, k2, k3, k4 = jax.random.split(key, 4)
  b2 = 1.0 / math.sqrt(hidden)
  uniform = lambda k, shape, bound: jax.random.uniform(k, shape, dtype, -bound, bound)
  return {"w1": uniform(k1, (1, hidden), 1.0), "b1": uniform(k2, (hidden,), 1.0),
          "w2": uniform(k3, (hidden, 1), b2), "b2": uniform(k4, (1,), b2)}


def mwnet_weights(mw_params, losses) -> jax.Array:
  r"""Meta-Weight-Net's weights, :math:`V(l_i) = \sigma(W_2 \,\mathrm{relu}(W_1 l_i + b_1) + b_2)`.

  Args:
    mw_params: from :func:`mwnet_init`.
    losses: per-example losses, shape (B,) (pass them under ``stop_gradient``: the
      network reads loss values, as the reference code's ``cost.data``).

  Returns:
    Weights in (0, 1), shape (B,), dtype of ``mw_params``.
  """
  x = losses.astype(mw_params["w1"].dtype)[:, None]
  h = jax.nn.relu(x @ mw_params["w1"] + mw_params["b1"])
  return jax.nn.sigmoid(h @ mw_params["w2"] + mw_params["b2"])[:, 0]


def mwnet_step(loss_fn: LossFn, params, mw_params, batch, clean_batch, *, inner_lr,
               linearized: Optional[Linearized] = None):
  r"""Meta-Weight-Net's meta-gradient: the clean loss after a virtual step, w.r.t. V.

  .. math::

    \hat\theta(V) = \theta - \eta \nabla_\theta \frac{1}{B}\sum_i V(l_i)\, l_i(\theta),
    \qquad g_V = \nabla_V \frac{1}{m}\sum_j l^v_j(\hat\theta(V))

  with V's input l_i held constant (the network reads loss values). The caller updates
  V with its own optimiser (paper: Adam 1e-3, weight decay 1e-4), then takes the real
  step with the new V::

    lin = linearize(loss_fn, params, batch)
    g_v, _ = mwnet_step(loss_fn, params, mw_params, batch, clean_batch, inner_lr=lr,
                        linearized=lin)
    upd, mw_opt = mw_tx.update(g_v, mw_opt, mw_params)
    mw_params = optax.apply_updates(mw_params, upd)
    loss, grads = weighted_gradient(lin, mwnet_weights(mw_params, lin.losses))

  Decision: the virtual and real losses are the mean (1/B)Σ V(l_i) l_i of the paper's
  Algorithm 1 (not the sum-normalised variant of an earlier code release).

  Args:
    loss_fn, params, batch, clean_batch: as in :func:`lookahead_clean_loss`.
    mw_params: V's parameters (:func:`mwnet_init`).
    inner_lr: η > 0, the virtual step size (the real step's learning rate).
    linearized: as in :func:`l2rw_scores`.

  Returns:
    ``(mw_grads, clean_loss)``: g_V shaped like ``mw_params`` and L_val at the current V.

  References:
    Shu et al., Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting,
    NeurIPS 2019 (xjtushujun/meta-weight-net).
  """
  check_range("inner_lr", inner_lr, low=0.0, low_open=True)
  lin = linearized if linearized is not None else linearize(loss_fn, params, batch)
  # V reads the loss values (constants here: they are the forward pass's outputs).
  clean_loss, grads = jax.value_and_grad(lambda v: _stepped_clean_loss(
      loss_fn, lin, params, mwnet_weights(v, lin.losses), clean_batch, inner_lr))(mw_params)
  return grads, clean_loss


# --- diagnostics ----------------------------------------------------------------------
def weight_auc(weights, corrupted) -> jax.Array:
  r"""AUC of the weights at ranking clean examples above corrupted ones.

  .. math::

    \mathrm{AUC} = \frac{1}{PN}\sum_{i\,\mathrm{clean}}\sum_{k\,\mathrm{corrupted}}
      \bigl(\mathbb 1[w_i > w_k] + \tfrac12 \mathbb 1[w_i = w_k]\bigr)

  computed from mid-ranks in O(n log n) (jit-able). NaN when either group is empty.

  Args:
    weights: shape (n,).
    corrupted: bool mask (n,), True where the given label is wrong.
  """
  w = jnp.asarray(weights)
  clean = ~jnp.asarray(corrupted, bool)
  ordered = jnp.sort(w)
  # 1-based mid-rank: (#smaller) + (#equal + 1)/2.
  lo = jnp.searchsorted(ordered, w, side="left")
  hi = jnp.searchsorted(ordered, w, side="right")
  rank = (lo + hi + 1).astype(jnp.promote_types(w.dtype, jnp.float32)) / 2
  pos = jnp.sum(clean).astype(rank.dtype)
  neg = w.shape[0] - pos
  u_stat = jnp.sum(jnp.where(clean, rank, 0)) - pos * (pos + 1) / 2
  return jnp.where((pos > 0) & (neg > 0), u_stat / jnp.maximum(pos * neg, 1), jnp.nan)


def weight_diagnostics(weights, corrupted, threshold=0.5) -> dict:
  r"""How well weights separate clean from corrupted examples.

  "Kept" means w ≥ ``threshold``; precision = :math:`|\text{kept} \cap \text{clean}| /
  |\text{kept}|`, recall =
  :math:`|\text{kept} \cap \text{clean}| / |\text{clean}|`. Any ratio with an empty
  denominator is NaN.

  Args:
    weights: shape (n,).
    corrupted: bool mask (n,), True where the given label is wrong.
    threshold: the keep threshold (0.5 for weights in [0, 1]; for L2RW's weights,
      which sum to one, a small positive value such as 1e-12 means "non-zero").

  Returns:
    ``{"weight_auc", "weight_precision", "weight_recall", "mean_weight_clean",
    "mean_weight_noisy"}``, scalars.
  """
  w = jnp.asarray(weights)
  dtype = jnp.promote_types(w.dtype, jnp.float32)
  w = w.astype(dtype)
  clean = ~jnp.asarray(corrupted, bool)
  kept = w >= threshold

  def ratio(num, den):
    num, den = jnp.asarray(num, dtype), jnp.asarray(den, dtype)
    return jnp.where(den > 0, num / jnp.maximum(den, 1), jnp.nan)

  hits = jnp.sum(kept & clean)
  return {
      "weight_auc": weight_auc(w, ~clean),
      "weight_precision": ratio(hits, jnp.sum(kept)),
      "weight_recall": ratio(hits, jnp.sum(clean)),
      "mean_weight_clean": ratio(jnp.sum(jnp.where(clean, w, 0)), jnp.sum(clean)),
      "mean_weight_noisy": ratio(jnp.sum(jnp.where(clean, 0, w)), jnp.sum(~clean)),
  }


def surrogate_agreement(scores, meta_grad) -> dict:
  r"""How well surrogate scores u (e.g. FBR's d) track the exact meta-gradient
  direction −∂L_val/∂w, on the same state.

  Returns ``{"sign_agreement": mean(sign u = sign(−g)), "correlation": Pearson(u, −g)}``. NaN correlation if either is constant.
  """
  u = jnp.asarray(scores)
  g = -jnp.asarray(meta_grad)
  dtype = jnp.promote_types(jnp.result_type(u, g), jnp.float32)
  u, g = u.astype(dtype), g.astype(dtype)
  uc, gc = u - jnp.mean(u), g - jnp.mean(g)
  den = jnp.sqrt(jnp.sum(uc * uc) * jnp.sum(gc * gc))
  return {"sign_agreement": jnp.mean((jnp.sign(u) == jnp.sign(g)).astype(dtype)),
          "correlation": jnp.where(den > 0, jnp.sum(uc * gc) / jnp.where(den > 0, den, 1),
                                   jnp.nan)}
