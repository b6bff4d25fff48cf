"""SANER: stronger element-wise down-weighting of noise-dominated SAM directions.

SAM's gradient ``g_SAM`` is, entry by entry, smaller than the plain gradient ``g`` in
the directions that noisy examples dominate (same sign, ratio in (0, 1): "group B").
SANER multiplies exactly those entries by a factor ``a < 1``. The pieces are pure
functions — :func:`saner_masks`, :func:`saner_reweight`, :func:`saner_group_fractions`,
:func:`saner_down_weight`, and the authors' analysis variant :func:`samwo_direction` —
and :func:`saner` is the Optax transform that wraps any SAM-family transform
(:func:`jaxnoisy.sam`, :func:`jaxnoisy.asam`, :func:`jaxnoisy.gsam`,
:func:`jaxnoisy.fsam`, :func:`jaxnoisy.vasso`); :func:`samwo` is the analysis variant's.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxnoisy._validate import check_range
from jaxnoisy.sam import sam

GROUPS = ("A", "B", "C")
# The radius of SANER's default base, the paper's value under label noise.
SANER_RHO = 0.1


def _normalize_groups(groups) -> tuple:
  groups = (groups,) if isinstance(groups, str) else tuple(groups)
  bad = [x for x in groups if x not in GROUPS]
  if bad or not groups:
    raise ValueError(f"groups must be a non-empty subset of {GROUPS}, got {groups}")
  return groups


def saner_masks(grads, sam_grads, *, threshold=1.0) -> dict:
  r"""The three SANER groups of each entry, as boolean pytrees, computed without division.

  With :math:`r = g_{\mathrm{SAM}} / g` element-wise and the threshold t (1 in SANER):

  .. math::

    A: r > t \iff \operatorname{sign} g_{\mathrm{SAM}} \operatorname{sign} g > 0
         \wedge |g_{\mathrm{SAM}}| > t |g|, \quad
    B: 0 < r < t \iff \operatorname{sign} g_{\mathrm{SAM}} \operatorname{sign} g > 0
         \wedge |g_{\mathrm{SAM}}| < t |g|, \quad
    C: r < 0 \iff \operatorname{sign} g_{\mathrm{SAM}} \operatorname{sign} g < 0

  Decision: the authors' code (lhchau/saner) divides, ``g_SAM / (g + 1e-8)``; here the
  masks use signs and magnitudes only. They agree except at g = 0, where no group
  holds the entry (it is never reweighted). Signs rather than the product
  ``g_SAM · g`` so that two tiny float32 entries whose product underflows to 0 are
  still classified. Entries with r = t or g_SAM = 0 belong to no group.

  Args:
    grads: g, the gradient at the unperturbed weights.
    sam_grads: g_SAM, same structure.
    threshold: t > 0, the ratio splitting groups A and B (SAMWO's ``alpha`` in the
      authors' ``optimizer/samwo.py``; 1 everywhere else).

  Returns:
    ``{"A": mask, "B": mask, "C": mask}``, each a boolean pytree shaped like ``grads``.

  References:
    Luong et al., SANER: Sharpness-Aware Noise-Explicit Reweighting for learning with
    noisy labels, arXiv 2411.17132 (lhchau/saner).
  """
  def sign(g, s):
    return jnp.sign(s) * jnp.sign(g)

  def group_a(g, s):
    return (sign(g, s) > 0) & (jnp.abs(s) > threshold * jnp.abs(g))

  def group_b(g, s):
    return (sign(g, s) > 0) & (jnp.abs(s) < threshold * jnp.abs(g))

  def group_c(g, s):
    return sign(g, s) < 0

  return {name: jax.tree.map(fn, grads, sam_grads)
          for name, fn in zip(GROUPS, (group_a, group_b, group_c))}


def _selected(grads, sam_grads, groups, threshold):
  """The union of the masks of ``groups`` (a boolean pytree shaped like ``grads``)."""
  masks = saner_masks(grads, sam_grads, threshold=threshold)
  return jax.tree.map(lambda *ms: functools.reduce(jnp.logical_or, ms),
                      *[masks[name] for name in _normalize_groups(groups)])


def saner_reweight(grads, sam_grads, down_weight, *, groups: Sequence[str] = ("B",),
                   threshold=1.0):
  r"""SANER's reweighted gradient: the masked entries of g_SAM are multiplied by ``a``.

  .. math::

    m = \mathbb{1}[\text{entry in a selected group}], \qquad
    d = g_{\mathrm{SAM}} \odot (1 - m) + a\, g_{\mathrm{SAM}} \odot m

  with the groups of :func:`saner_masks` (default: group B, 0 < g_SAM/g < 1, the
  paper's choice). Computed as ``g_SAM * where(m, a, 1)``, a select rather than an
  arithmetic blend, so unmasked entries are returned bit for bit.

  Args:
    grads: g, the gradient at the unperturbed weights (decides the mask only).
    sam_grads: g_SAM, the gradient being reweighted.
    down_weight: a, the multiplier on masked entries (paper: 0.5). May be traced.
    groups: which of ``"A"`` (r > t), ``"B"`` (0 < r < t), ``"C"`` (r < 0) get the
      multiplier; the authors' code has variants acting on A or C too.
    threshold: t of :func:`saner_masks`.

  Returns:
    d, same structure and dtypes as ``sam_grads``.

  References:
    Luong et al., SANER: Sharpness-Aware Noise-Explicit Reweighting for learning with
    noisy labels, arXiv 2411.17132 (lhchau/saner).
  """
  def leaf(s, m):
    dtype = jnp.promote_types(s.dtype, jnp.float32)
    factor = jnp.where(m, jnp.asarray(down_weight, dtype), jnp.ones((), dtype))
    return (s.astype(dtype) * factor).astype(s.dtype)

  return jax.tree.map(leaf, sam_grads, _selected(grads, sam_grads, groups, threshold))


def samwo_direction(grads, sam_grads, *, groups: Sequence[str] = ("B",), threshold=1.0):
  r"""SAMWO: g_SAM whose masked entries are replaced by the plain gradient g.

  .. math::

    m = \mathbb{1}[\text{entry in a selected group}], \qquad
    d = g_{\mathrm{SAM}} \odot (1 - m) + g \odot m

  The authors' analysis variant (lhchau/saner ``optimizer/samwo.py``; "SGD-GrA/GrB"
  in ``scripts/main/reproduce_fig2_3_4_cifar10.sh``): SAM everywhere but in one group,
  where the step is SGD's. Their groups are those of :func:`saner_masks` with the
  threshold t = ``alpha`` (default 1); their group ``"AB"`` (r > 0) is
  ``groups=("A", "B")`` here but for the entries with r = t exactly.

  Args:
    grads: g, the gradient at the unperturbed weights.
    sam_grads: g_SAM, same structure.
    groups, threshold: as in :func:`saner_reweight`.

  Returns:
    d, same structure and dtypes as ``sam_grads``.
  """
  return jax.tree.map(lambda g, s, m: jnp.where(m, g.astype(s.dtype), s), grads, sam_grads,
                      _selected(grads, sam_grads, groups, threshold))


def saner_group_fractions(grads, sam_grads, *, threshold=1.0) -> dict:
  """Fractions of all parameter entries in groups A, B and C (float32 scalars).

  A diagnostic: SANER's analysis tracks how many directions fall in group B.

  Args:
    grads: g; sam_grads: g_SAM; threshold: t (see :func:`saner_masks`).

  Returns:
    ``{"A": fraction, "B": fraction, "C": fraction}``.
  """
  masks = saner_masks(grads, sam_grads, threshold=threshold)
  total = sum(int(x.size) for x in jax.tree.leaves(grads))
  total = max(total, 1)
  return {name: sum(jnp.sum(m, dtype=jnp.float32) for m in jax.tree.leaves(masks[name]))
          / jnp.float32(total) for name in GROUPS}


def saner_down_weight(step, down_weight, warmup_steps) -> jax.Array:
  r"""The scheduled multiplier a(step): linear from 1 (plain SAM) to ``down_weight``.

  .. math::

    a(t) = 1 + (a_{\mathrm{target}} - 1) \min(1, t / T_{\mathrm{warm}}),
    \qquad a(t) = a_{\mathrm{target}} \text{ when } T_{\mathrm{warm}} = 0

  The paper moves a over the first 50 of 200 epochs.

  Args:
    step: the update count t (0 for the first update). May be traced.
    down_weight: the target multiplier. May be traced.
    warmup_steps: T_warm, ≥ 0. May be traced.

  Returns:
    a float32 scalar.
  """
  step = jnp.asarray(step, jnp.float32)
  warm = jnp.asarray(warmup_steps, jnp.float32)
  progress = jnp.where(warm > 0, jnp.minimum(1.0, step / jnp.maximum(warm, 1e-30)), 1.0)
  return 1.0 + (jnp.asarray(down_weight, jnp.float32) - 1.0) * progress


class SANERState(NamedTuple):
  """SANER's state.

  Attributes:
    count: number of updates so far (int32), drives the warm-up of a.
    base_state: the state of the wrapped SAM-family transform.
    group_fractions: ``{"A", "B", "C"}`` fractions of the last update (float32), for
      logging straight from the optimizer state; ``{}`` when built with
      ``track_groups=False``.
  """
  count: jax.Array
  base_state: Any
  group_fractions: dict


def _average_floats(tree, axis_name: str):
  """The floating-point leaves of ``tree`` averaged over ``axis_name``; others as they are."""
  return jax.tree.map(lambda x: jax.lax.pmean(x, axis_name)
                      if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def saner(rho: Optional[float] = None, down_weight: float = 0.5, *,
          warmup_steps: int = 0, base: Optional[optax.GradientTransformation] = None,
          groups: Sequence[str] = ("B",), eps: Optional[float] = None,
          axis_name: Optional[str] = None, has_aux: Optional[bool] = None,
          track_groups: bool = True, threshold: float = 1.0,
          leaf_mask: Any = None) -> optax.GradientTransformationExtraArgs:
  r"""SANER: a SAM-family gradient whose noise-dominated entries (group B) are down-weighted.

  .. math::

    g_{\mathrm{SAM}} = \mathrm{base}(g), \quad
    m = \mathbb{1}[\operatorname{sign} g_{\mathrm{SAM}} \operatorname{sign} g > 0
        \wedge |g_{\mathrm{SAM}}| < |g|], \quad
    d = g_{\mathrm{SAM}} \odot (1 - m) + a(t)\, g_{\mathrm{SAM}} \odot m

  with a(t) from :func:`saner_down_weight` and m from :func:`saner_masks`
  (:func:`saner_reweight` does the product). Place it first in the chain and add
  weight decay *after* it, as the authors' code does:

  >>> import jax, jax.numpy as jnp, optax, jaxnoisy
  >>> x, y = jnp.arange(12.0).reshape(4, 3) / 10, jnp.array([0, 1, 1, 0])
  >>> loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()
  >>> params, grad_fn = jnp.full((3, 2), 0.1), jax.grad(loss)
  >>> tx = optax.chain(jaxnoisy.saner(0.1, 0.5, warmup_steps=100),
  ...                  optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
  >>> opt_state = tx.init(params)
  >>> updates, opt_state = tx.update(grad_fn(params), opt_state, params, grad_fn=grad_fn)
  >>> sorted(opt_state[0].group_fractions)  # shares of the entries in each group
  ['A', 'B', 'C']

  ``update`` takes the same arguments as the base transform (``params``,
  ``grad_fn``, ...) and forwards them. Another base carries its own ρ:
  ``jaxnoisy.saner(down_weight=0.5, base=jaxnoisy.asam(0.5))``.

  Decisions:

  * ``down_weight`` *is* the multiplier a on group-B entries (paper default 0.5). The
    SANER README writes the factor as (1 − α·m) with α = 0.5, while its code
    multiplies the masked entries by ``alpha`` itself; the two agree only at 0.5,
    hence one parameter named for what it does: ``down_weight = 1 − α_README =
    alpha_code``. ``down_weight = 1`` is exactly the base transform.
  * ``base``: any SAM-family transform (``jaxnoisy.asam(...)``, ``jaxnoisy.gsam(...)``,
    ``jaxnoisy.fsam(...)``, ``jaxnoisy.vasso(...)``); its state lives in
    ``SANERState.base_state``.
    ``rho``, ``eps`` and ``has_aux`` only build the default base
    ``jaxnoisy.sam(rho, eps=eps, has_aux=has_aux)``; their defaults are ``None``
    (meaning ``SANER_RHO`` = 0.1, 1e-12 and ``False``) so that passing any of them
    together with ``base`` — where it would be ignored — raises a ValueError. (``None`` also keeps
    them out of ``optax.inject_hyperparams``' hyper-parameters unless given.) With
    GSAM as base, "g_SAM" is GSAM's direction (lhchau/saner ``gsaner.py``); with F-SAM
    or VaSSO it is the gradient at their ε, compared, as in ``fsaner.py`` and
    ``vassosaner.py``, with the batch gradient g (not F-SAM's ascent direction).
  * The mask is computed without division (see :func:`saner_masks`): entries with
    g = 0 are never reweighted.
  * Data parallelism (``axis_name`` set, inside ``shard_map``/``pmap``): each device
    compares its *own* g_SAM with its *own* g — the same per-device view as SAM's
    per-device ascent — reweights it, and only the reweighted d (and the group
    fractions) are averaged over the axis. The base must therefore return the
    *local* g_SAM: the default base is built with ``axis_name=None`` for this
    reason, and a ``base`` you pass must be built without ``axis_name`` too (a base
    that averages itself would make the mask compare the averaged g_SAM with the
    local g). With ``axis_name=None`` pass the global g and a global ``grad_fn``.
    A stateful base (F-SAM, VaSSO) then updates its EMA with the local g: the
    floating-point leaves of its state are averaged over the axis too, which for
    their EMAs is the EMA of the averaged gradient, and keeps the state replicated.
  * ``track_groups``: the A/B/C fractions are a diagnostic, not part of the update;
    counting them is three reductions over every parameter entry (and one more
    all-reduce with ``axis_name``). ``track_groups=False`` skips them and leaves
    ``group_fractions`` empty; the update is bit for bit the same. The fractions
    count every entry, also with ``leaf_mask``.
  * The authors' analysis variants: ``threshold`` moves the A/B boundary, and
    ``leaf_mask`` reweights some leaves only — ``saner_last.py`` acts on the weight
    (not the bias) of the model's last linear layer, group B, with its multiplier.
    SAMWO (``samwo.py``: the masked entries become g) is its own transform,
    :func:`samwo`.

  Args:
    rho: radius of the default SAM base, > 0; ``None`` means 0.1 (the paper's).
      Rejected with ``base``.
    down_weight: a, the multiplier on group-B entries, in [0, 1] (paper: 0.5).
    warmup_steps: a moves linearly from 1 to ``down_weight`` over this many updates,
      ≥ 0 (paper: the first 50 of 200 epochs). 0 applies ``down_weight`` at once.
    base: the SAM-family transform producing g_SAM; default ``jaxnoisy.sam``.
    groups: groups that get the multiplier (see :func:`saner_reweight`).
    eps: the default base's norm guard; ``None`` means 1e-12. Rejected with ``base``.
    axis_name: mapped axis for the per-device view described above, or ``None``.
    has_aux: whether ``grad_fn`` returns ``(grads, aux)``, for the default base;
      ``None`` means ``False``. Rejected with ``base`` (build the base with it).
    track_groups: record the group fractions of every update in the state.
    threshold: t > 0, the ratio splitting groups A (r > t) and B (0 < r < t); 1 in
      SANER, SAMWO's ``alpha`` (default 1).
    leaf_mask: ``None`` (every leaf), or a pytree of Python bools shaped like the
      parameters (or a prefix of them): the leaves to reweight; the others keep
      g_SAM: e.g. ``{"w": True, "b": False}``, or, from the parameters' paths,
      ``jax.tree_util.tree_map_with_path(lambda p, _: "head" in keystr(p), params)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`SANERState`.

  References:
    Luong et al., SANER: Sharpness-Aware Noise-Explicit Reweighting for learning with
    noisy labels, arXiv 2411.17132 (lhchau/saner, lhchau/sam-label-noise).
  """
  check_range("down_weight", down_weight, low=0.0, high=1.0)
  check_range("warmup_steps", warmup_steps, low=0.0)
  groups = _normalize_groups(groups)

  def direction(grads, sam_grads, count):
    a = saner_down_weight(count, down_weight, warmup_steps)
    return saner_reweight(grads, sam_grads, a, groups=groups, threshold=threshold)

  return _masked_transform("saner", direction, rho=rho, base=base, eps=eps,
                           axis_name=axis_name, has_aux=has_aux, track_groups=track_groups,
                           threshold=threshold, leaf_mask=leaf_mask)


def samwo(rho: Optional[float] = None, *,
          base: Optional[optax.GradientTransformation] = None,
          groups: Sequence[str] = ("B",), threshold: float = 1.0, eps: Optional[float] = None,
          axis_name: Optional[str] = None, has_aux: Optional[bool] = None,
          track_groups: bool = True, leaf_mask: Any = None
          ) -> optax.GradientTransformationExtraArgs:
  r"""SAMWO: g_SAM whose entries in the selected groups are replaced by the plain g.

  .. math::

    g_{\mathrm{SAM}} = \mathrm{base}(g), \quad
    d = g_{\mathrm{SAM}} \odot (1 - m) + g \odot m

  with m the selected groups of :func:`saner_masks` at the threshold t
  (:func:`samwo_direction`). The SANER authors' analysis variant (lhchau/saner
  ``optimizer/samwo.py``; "SGD-GrA/GrB" in their Figure 2-4 scripts): SAM everywhere
  but in one group, where the step is SGD's. Every argument is :func:`saner`'s, with
  the same meaning (``threshold`` is their ``alpha``); there is no multiplier.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`SANERState`.
  """
  groups = _normalize_groups(groups)

  def direction(grads, sam_grads, count):
    del count
    return samwo_direction(grads, sam_grads, groups=groups, threshold=threshold)

  return _masked_transform("samwo", direction, rho=rho, base=base, eps=eps,
                           axis_name=axis_name, has_aux=has_aux, track_groups=track_groups,
                           threshold=threshold, leaf_mask=leaf_mask)


def _masked_transform(name: str, direction, *, rho, base, eps, axis_name, has_aux,
                      track_groups, threshold,
                      leaf_mask) -> optax.GradientTransformationExtraArgs:
  """The transform shared by :func:`saner` and :func:`samwo`: g_SAM from the base, then
  ``direction(g, g_SAM, count)`` (on the leaves of ``leaf_mask``), averaged over
  ``axis_name`` after it (see :func:`saner`'s decisions)."""
  if base is not None:
    given = [name for name, value in (("rho", rho), ("eps", eps), ("has_aux", has_aux))
             if value is not None]
    if given:
      raise ValueError(f"{name}(base=...) would ignore {', '.join(given)}: pass "
                       f"{'it' if len(given) == 1 else 'them'} to the base transform instead")
  rho = SANER_RHO if rho is None else rho
  eps = 1e-12 if eps is None else eps
  has_aux = False if has_aux is None else has_aux
  check_range("rho", rho, low=0.0, low_open=True)
  check_range("eps", eps, low=0.0, low_open=True)
  check_range("threshold", threshold, low=0.0, low_open=True)
  if base is None:
    # Local g_SAM: the averaging over axis_name happens after the reweighting.
    base = sam(rho, eps=eps, has_aux=has_aux)
  base = optax.with_extra_args_support(base)

  def init_fn(params):
    zero = jnp.zeros((), jnp.float32)
    fractions = {name: zero for name in GROUPS} if track_groups else {}
    return SANERState(count=jnp.zeros((), jnp.int32), base_state=base.init(params),
                      group_fractions=fractions)

  def update_fn(updates, state, params=None, **extra_args):
    g_sam, base_state = base.update(updates, state.base_state, params, **extra_args)
    out = direction(updates, g_sam, state.count)
    if leaf_mask is not None:
      out = jax.tree.map(lambda keep, d, s: d if keep else s, leaf_mask, out, g_sam)
    fractions = saner_group_fractions(updates, g_sam, threshold=threshold) \
        if track_groups else {}
    if axis_name is not None:
      out, fractions = jax.lax.pmean((out, fractions), axis_name)
      base_state = _average_floats(base_state, axis_name)
    out = jax.tree.map(lambda d, g: d.astype(g.dtype), out, updates)
    return out, SANERState(count=optax.safe_increment(state.count),
                           base_state=base_state, group_fractions=fractions)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
