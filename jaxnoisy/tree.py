"""Pytree arithmetic for the SAM family: reductions in at least float32, float64 kept.

Every reduction over a pytree (norm, inner product) is accumulated in
:func:`accumulation_dtype` — ``jnp.promote_types(dtype, float32)`` over all leaves — so
bfloat16 and float16 gradients are summed in float32, and float64 gradients (with
``jax_enable_x64``) stay float64 instead of losing eight digits to a float32 sum.
Element-wise helpers keep each leaf's dtype.

  >>> import jax.numpy as jnp
  >>> from jaxnoisy import tree
  >>> t = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0], jnp.bfloat16)}
  >>> float(tree.global_norm(t)), tree.global_norm(t).dtype
  (5.0, dtype('float32'))
  >>> float(tree.vdot(t, t))
  25.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def accumulation_dtype(*trees):
  """The dtype reductions over ``trees`` use: the leaves' common dtype, at least float32."""
  leaves = [x for t in trees for x in jax.tree.leaves(t)]
  if not leaves:
    return jnp.dtype(jnp.float32)
  return jnp.promote_types(jnp.result_type(*leaves), jnp.float32)


def cast(tree, dtype):
  """Every leaf of ``tree`` as ``dtype``."""
  return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def global_norm(tree) -> jax.Array:
  r"""The L2 norm over a whole pytree, :math:`\sqrt{\sum_\ell \sum_j x_{\ell j}^2}`.

  Accumulated in :func:`accumulation_dtype` (float32 for bfloat16/float32 leaves,
  float64 for float64 leaves); 0 for an empty tree.
  """
  dtype = accumulation_dtype(tree)
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum((jnp.sum(jnp.square(jnp.asarray(x).astype(dtype))) for x in leaves),
                      jnp.zeros((), dtype)))


def scaled_norm(tree) -> jax.Array:
  r"""The global L2 norm without overflow: :math:`m \lVert x / m \rVert`, :math:`m = \max|x|`.

  Equal to :func:`global_norm` up to rounding, but finite wherever :math:`\max|x|` is (a
  plain sum of squares overflows float32 from :math:`|x| \approx 1.8 \times 10^{19}`).
  0 for a zero or empty tree.
  """
  dtype = accumulation_dtype(tree)
  leaves = [jnp.asarray(x).astype(dtype) for x in jax.tree.leaves(tree)]
  if not leaves:
    return jnp.zeros((), dtype)
  big = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in leaves]))
  safe = jnp.where(big > 0, big, jnp.ones((), dtype))
  return big * global_norm([x / safe for x in leaves])


def vdot(a, b) -> jax.Array:
  r"""The inner product :math:`\langle a, b \rangle` of two pytrees of the same structure.

  Accumulated in :func:`accumulation_dtype` of both trees; 0 for empty trees.
  """
  dtype = accumulation_dtype(a, b)
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
  return sum((jnp.vdot(jnp.asarray(x).astype(dtype), jnp.asarray(y).astype(dtype))
              for x, y in pairs), jnp.zeros((), dtype))


def axpy(alpha, x, y):
  r""":math:`\alpha x + y` leaf by leaf, in ``y``'s dtypes (α a scalar, may be traced)."""
  return jax.tree.map(lambda a, b: jnp.asarray(alpha, b.dtype) * a.astype(b.dtype) + b, x, y)
