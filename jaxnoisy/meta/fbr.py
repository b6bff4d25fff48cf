r"""Feature-Based Reweighting (FBR): the bilevel-free surrogate of meta-reweighting.

Zhang, Holtz, Mishne, Cloninger (arXiv 2510.12209) replace the meta-gradient of
meta-reweighting by a rule on penultimate features: "mean-centering, row shifting, and
label-signed modulation". The exact rule is the one of the first author's public code
(github.com/yiz134/Feature_based_reweight; no licence, so read, not copied):
``trainer/reweight_methods.py::reweight_feature``, with ``utils/util.py::transform_Kmat``
(per-class means and row shift), ``trainer/utils.py::weighted_mean_features`` (the
class-balanced clean mean) and ``trainer/utils.py::update_weight`` (the weights).

* :func:`fbr_scores` — the score d_i of every noisy example against the whole clean set.
* :func:`fbr_weights` — the authors' default (``recompute=True``): nearly binary weights
  re-derived from 1/2 at every visit.
* :func:`fbr_persistent_weights` — their other branch (``recompute=False``): stored
  weights moved by a fixed step along d.
* :func:`check_fbr_clean_set` — the host-side check that every class has a clean example;
  call it once per run when the scores are computed under ``jax.jit`` with traced labels.

The model does not enter: the caller passes the features (in the authors' code, the
eval-mode, no-gradient output of the global average pool before the last linear layer;
the clean ones computed once per epoch, the noisy ones per batch). Example:

>>> import jax.numpy as jnp
>>> from jaxnoisy.meta import fbr_scores, fbr_weights
>>> clean = jnp.array([[1., 0.], [0., 1.]])
>>> d = fbr_scores(jnp.array([[2., 0.], [2., 0.]]), jnp.array([0, 1]), clean,
...                jnp.array([0, 1]), num_classes=2, alpha0=1.0)   # α₀ = 1/(C − 1)
>>> d.tolist(), fbr_weights(d).tolist()
([2.0, -2.0], [1.0, 0.0])
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxnoisy._validate import check_num_classes, check_range
from jaxnoisy.meta.reweight import check_labels


def _check_vector(name: str, x, length=None) -> None:
  if np.ndim(x) != 1 or (length is not None and np.shape(x)[0] != length):
    want = "(n,)" if length is None else f"({length},)"
    raise ValueError(f"{name} must have shape {want}, got {np.shape(x)}")


def _missing_classes(clean_labels, num_classes: int) -> list:
  counts = np.bincount(np.asarray(clean_labels).astype(np.int64), minlength=num_classes)
  return [int(c) for c in np.flatnonzero(counts[:num_classes] == 0)]


def _missing_message(missing: list, num_classes: int) -> str:
  which = (f"class {missing[0]}" if len(missing) == 1
           else "classes " + ", ".join(str(c) for c in missing))
  return (f"clean_labels has no example of {which} (num_classes = {num_classes}); FBR "
          f"needs at least one clean example of every class")


def check_fbr_clean_set(clean_labels, num_classes: int) -> None:
  """Raise ``ValueError`` unless every class in [0, C) has at least one clean example.

  FBR divides by each class count n_c (the class-balanced mean and the per-class means),
  so a missing class would make every score NaN. :func:`fbr_scores` runs this check
  itself when ``clean_labels`` is concrete; when it is traced (the clean set passed as an
  argument of a jitted step) it cannot, and a trainer calls this once on the host, since
  the clean set is fixed for the whole run.

  Args:
    clean_labels: y, the clean labels, shape (m,), concrete (a NumPy or JAX array).
    num_classes: C ≥ 2.

  Raises:
    ValueError: a class has no clean example, a label is outside [0, C), or C < 2.
    TypeError: ``clean_labels`` is a tracer (call this outside ``jax.jit``).
  """
  check_num_classes(num_classes)
  if isinstance(clean_labels, jax.core.Tracer):
    raise TypeError("check_fbr_clean_set needs concrete clean_labels: call it once on the "
                    "host, outside jax.jit")
  _check_vector("clean_labels", clean_labels)
  check_labels("clean_labels", clean_labels, num_classes)
  missing = _missing_classes(clean_labels, num_classes)
  if missing:
    raise ValueError(_missing_message(missing, num_classes))


# The arithmetic of each public function is one jitted core (validation stays in Python
# before it), so that an eager call compiles once per shape instead of op by op.
@functools.partial(jax.jit, static_argnames="num_classes")
def _scores(features, labels, clean_features, clean_labels, num_classes, alpha0):
  dtype = jnp.promote_types(jnp.result_type(features, clean_features), jnp.float32)
  phi = jax.lax.stop_gradient(features).astype(dtype)
  phi_v = jax.lax.stop_gradient(clean_features).astype(dtype)
  onehot = jax.nn.one_hot(clean_labels, num_classes, dtype=dtype)      # (m, C)
  counts = jnp.sum(onehot, axis=0)                                      # n_c
  present = jnp.all(counts > 0)
  class_means = (onehot.T @ phi_v) / jnp.maximum(counts, 1)[:, None]   # P_c, (C, D)
  mu = jnp.mean(class_means, axis=0)                                    # Σ_j π_j φᵛ_j
  sim = (phi - mu) @ (class_means - mu).T                               # M, (B, C)
  second = jax.lax.top_k(sim, 2)[0][:, 1]                               # ties: = max
  shifted = sim - second[:, None]                                       # K̃
  own = labels[:, None] == jnp.arange(num_classes)
  sign = jnp.where(own, jnp.ones((), dtype), -jnp.asarray(alpha0, dtype))
  d = jnp.sum(sign * shifted, axis=1)
  # Traced clean labels with an absent class: NaN, as loud as the authors' 0/0.
  return jnp.where(present, d, jnp.nan)


def fbr_scores(features, labels, clean_features, clean_labels, num_classes: int,
               alpha0) -> jax.Array:
  r"""FBR's score d_i of each noisy example: label-signed, row-shifted class similarity.

  With φ the batch's features (B × D), ỹ its given labels, φᵛ the clean features
  (m × D), y their labels and n_c the number of clean examples of class c:

  .. math::

    \pi_j = \frac{1/n_{y_j}}{\sum_k 1/n_{y_k}}, \quad
    \mu = \sum_j \pi_j \phi^v_j, \quad
    K_{ij} = \langle \phi_i - \mu, \phi^v_j - \mu \rangle, \quad
    M_{ic} = \frac{1}{n_c} \sum_{j: y_j = c} K_{ij}

  .. math::

    \tilde K_{ic} = M_{ic} - \operatorname{second\,largest}_{c'} M_{ic'}, \qquad
    d_i = \tilde K_{i \tilde y_i} - \alpha_0 \sum_{c \ne \tilde y_i} \tilde K_{ic}

  As ``reweight_feature`` with ``transform_Kmat`` and ``weighted_mean_features`` in the
  authors' code. Decisions and facts, each checked against that code:

  * Computed through the clean class means P_c = (1/n_c) Σ_{y_j=c} φᵛ_j: μ is their
    plain mean (Σ_k 1/n_{y_k} = C) and M_ic = ⟨φ_i − μ, P_c − μ⟩ by linearity — the
    same numbers as the B × m matrix K averaged per class, in O(B·C·D) instead of
    O(B·m·D).
  * The second-largest entry counts ties as the code's ``topk(2)`` does: when two
    classes share the row maximum, the shift is that maximum. So with α₀ = 0, d_i > 0
    exactly when ỹ_i is the unique nearest class, d_i = 0 when it ties for nearest or
    is the runner-up, d_i < 0 otherwise.
  * Because μ is class-balanced, Σ_c M_ic = 0 for every row whatever the class counts;
    with α₀ = 1/(C − 1) the shift then cancels and d_i = C/(C − 1) · M_{i ỹ_i}.
  * C is an argument; the code takes it as ``max(clean_labels) + 1`` and divides by a
    zero count (NaN) when a class has no clean example. Here that is a ``ValueError``
    naming the class when ``clean_labels`` is concrete (before anything is compiled);
    under ``jax.jit`` with traced labels it cannot raise, so every d_i is NaN
    (and so are the weights) — call :func:`check_fbr_clean_set` on the host once.
  * Inputs are under ``stop_gradient`` (the code computes them under ``no_grad``);
    arithmetic in at least float32.

  Args:
    features: φ, penultimate features of the noisy batch, shape (B, D).
    labels: ỹ, its given (possibly noisy) integer labels, shape (B,), in [0, C).
    clean_features: φᵛ, features of the whole clean set, shape (m, D).
    clean_labels: y, its integer labels, shape (m,); every class present.
    num_classes: C ≥ 2 (a Python int: static under ``jax.jit``).
    alpha0: α₀ ≥ 0, the weight of the other classes; the authors use 1/(C − 1) for the
      first 40 of 150 epochs, then 0. May be traced.

  Returns:
    d, shape (B,), dtype at least float32; d ≥ 0 means "keep".

  References:
    Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209; code yiz134/Feature_based_reweight,
    ``trainer/reweight_methods.py::reweight_feature``.
  """
  check_num_classes(num_classes)
  check_range("alpha0", alpha0, low=0.0)
  if np.ndim(features) != 2 or np.ndim(clean_features) != 2:
    raise ValueError(f"features and clean_features must have shapes (B, D) and (m, D), got "
                     f"{np.shape(features)} and {np.shape(clean_features)}")
  if np.shape(features)[1] != np.shape(clean_features)[1]:
    raise ValueError(f"features and clean_features must have the same feature size D, got "
                     f"{np.shape(features)} and {np.shape(clean_features)}")
  _check_vector("labels", labels, np.shape(features)[0])
  _check_vector("clean_labels", clean_labels, np.shape(clean_features)[0])
  m = np.shape(clean_features)[0]
  if m < num_classes:
    raise ValueError(f"clean_labels must hold at least num_classes = {num_classes} examples "
                     f"(one per class), got {m}")
  check_labels("labels", labels, num_classes)
  if not isinstance(clean_labels, jax.core.Tracer):
    check_fbr_clean_set(clean_labels, num_classes)

  return _scores(features, labels, clean_features, clean_labels, num_classes, alpha0)


def _all_nonnegative(scores) -> jax.Array:
  # The code's first test, `(w_direction >= 0).all()`: a NaN fails it.
  return jnp.all(scores >= 0)


def fbr_weights(scores) -> jax.Array:
  r"""FBR's weights from the scores, re-derived from 1/2 at every visit (``recompute=True``).

  .. math::

    w = \mathbf 1 \ \text{ if every } d_i \ge 0; \ \text{else} \quad
    \eta = \max_{i: d_i < 0} \frac{1}{2|d_i|}, \quad
    w_i = \operatorname{clip}(\tfrac12 + \eta d_i, 0, 1), \quad
    w_i \leftarrow 0 \ \text{ where } w_i \le \tfrac12

  As ``update_weight`` (``ratio=None``, ``clipmax=1``) followed by the zeroing in
  ``reweight_feature`` of the authors' code. So, when some d_k < 0: w_i = 0 for every
  d_i ≤ 0 (d_i = 0 included: 1/2 is zeroed), and
  w_i = min(1, 1/2 + d_i / (2 min_{d_k<0} :math:`|d_k|`)) for d_i > 0. When no d_i is negative
  every weight is 1, zeros included. A NaN score gives a NaN weight, as in the code.
  ηd_i is computed as d_i / (2 min :math:`|d_k|`), equal to the code's
  (1/(2 min :math:`|d_k|`))·d_i up to one rounding; the score of smallest :math:`|d_k|` then lands exactly on 1/2 − 1/2 = 0.

  Args:
    scores: d from :func:`fbr_scores`, shape (B,).

  Returns:
    w ∈ {0} ∪ (1/2, 1], shape (B,), dtype of ``scores`` (at least float32).

  References:
    Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209; code yiz134/Feature_based_reweight,
    ``trainer/utils.py::update_weight``, ``trainer/reweight_methods.py::reweight_feature``.
  """
  _check_vector("scores", scores)
  return _weights(jnp.asarray(scores))


@jax.jit
def _weights(scores):
  d = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
  smallest = jnp.min(jnp.where(d < 0, -d, jnp.inf))        # min |d_k| over d_k < 0
  w = jnp.clip(0.5 + 0.5 * (d / smallest), 0.0, 1.0)
  w = jnp.where(w <= 0.5, jnp.zeros_like(w), w)
  return jnp.where(_all_nonnegative(d), jnp.ones_like(w), w)


def fbr_persistent_weights(previous, scores, step_size=0.01) -> jax.Array:
  r"""FBR's other branch (``recompute=False``): stored weights moved by a fixed step.

  .. math::

    w = \mathbf 1 \ \text{ if every } d_i \ge 0; \ \text{else} \quad
    w_i = \operatorname{clip}(w^{\mathrm{prev}}_i + s\, d_i, 0, 1), \quad
    w_i \leftarrow 0 \ \text{ where } w_i \le \tfrac12

  As ``update_weight(..., eta=0.01)`` and the zeroing of ``reweight_feature`` in the
  authors' code, with ``trainer/train.py::train_loop`` storing the result. Facts of that
  code, kept here:

  * The all-nonnegative test comes first, so a batch with no d_i < 0 resets its weights
    to 1 even in this branch.
  * The zeroing is applied to the stored weights, not only to those of the step: the
    returned array is both what the step uses and what the caller stores for these
    examples. A zeroed weight restarts from 0 on its next visit (it comes back above 1/2
    only if s·d_i > 1/2, or through an all-nonnegative batch).
  * Every stored weight starts at 1/2 (``train_loop``), so an example whose first score
    is d_i ≤ 0 is zeroed.

  Args:
    previous: the stored weights of the batch's examples, shape (B,), in [0, 1].
    scores: d from :func:`fbr_scores`, shape (B,).
    step_size: s ≥ 0; the code's fixed 0.01.

  Returns:
    The new weights (to store and to use), shape (B,), dtype of ``previous`` (at least
    float32).

  References:
    Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209; code yiz134/Feature_based_reweight,
    ``trainer/utils.py::update_weight``, ``trainer/reweight_methods.py::reweight_feature``.
  """
  check_range("step_size", step_size, low=0.0)
  _check_vector("previous", previous)
  _check_vector("scores", scores, np.shape(previous)[0])
  return _persistent(jnp.asarray(previous), jnp.asarray(scores), step_size)


@jax.jit
def _persistent(previous, scores, step_size):
  dtype = jnp.promote_types(previous.dtype, jnp.float32)
  d = scores.astype(dtype)
  w = jnp.clip(previous.astype(dtype) + jnp.asarray(step_size, dtype) * d, 0.0, 1.0)
  w = jnp.where(w <= 0.5, jnp.zeros_like(w), w)
  return jnp.where(_all_nonnegative(d), jnp.ones_like(w), w)
