"""Arithmetic on parameter trees at the probe's precision.

The probe reads slopes as dot products over every leaf of the parameters,
accumulated in at least float32 (float64 and complex leaves keep their
precision), and forms points along the step leaf by leaf in each leaf's
dtype. On the CPU the large reductions are split into blocks so that XLA's
serial reduction chain runs at the speed of the memory reads.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp


def probe_dtype(dtype: Any) -> Any:
  """The dtype in which a leaf of ``dtype`` is probed: at least float32.

  bfloat16 and float16 widen to float32; float64 and complex keep their
  precision (a float64 loss probed in float32 reads rounding as kinks).
  """
  return jnp.promote_types(dtype, jnp.float32)


def real_dot(x: jax.Array, y: jax.Array) -> jax.Array:
  """``Re(conj(x) * y)`` elementwise: the directional derivative's terms.

  For complex parameters optax takes the gradient as ``conj`` of what
  ``jax.grad`` returns (so that ``-grad`` descends), and the directional
  derivative along ``u`` is then ``Re(sum(conj(grad) * u))``.
  """
  return jnp.real(jnp.conj(x) * y) if (jnp.iscomplexobj(x) or jnp.iscomplexobj(y)) else x * y


def optax_grad(tree: Any) -> Any:
  """``jax.grad``'s output in optax's convention: conjugated where complex."""
  return jax.tree.map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, tree)


def abs_sq(y: jax.Array) -> jax.Array:
  return jnp.real(y * jnp.conj(y)) if jnp.iscomplexobj(y) else y * y


def accumulator_dtype(leaves: Sequence[jax.Array]) -> Any:
  """float32, or float64 where a leaf is float64 / complex128."""
  return functools.reduce(
    jnp.promote_types, [jnp.finfo(probe_dtype(x.dtype)).dtype for x in leaves], jnp.float32
  )


def tree_dot(a: Any, b: Any) -> jax.Array:
  """``Re <a, b>`` over all leaves, accumulated in at least float32."""
  # Not jnp.vdot: it ravels its inputs, which an explicitly sharded array
  # refuses (jax.make_mesh's default axis type).
  leaves = jax.tree.leaves(a)
  acc = accumulator_dtype(leaves)
  return sum(
    (
      jnp.sum(real_dot(x.astype(probe_dtype(x.dtype)), y.astype(probe_dtype(y.dtype)))).astype(acc)
      for x, y in zip(leaves, jax.tree.leaves(b))
    ),
    jnp.zeros([], acc),
  )


# XLA:CPU reduces an array to a scalar in one serial chain of additions (no
# reassociation without fast math), about 1 ns per element: on the 2-core MLP
# the secant's reductions took as long as a forward pass. Adding a leaf's
# blocks elementwise first gives the chain one term per block-sized group, so
# the reduction runs at the speed of its memory reads (the benchmarks' README).
CHAIN_BLOCKS = 8
CHAIN_MIN_SIZE = 8192


def chain_split(x: jax.Array) -> tuple[int, int]:
  """``(axis, k)``: sum ``x`` as ``k`` equal blocks along ``axis`` (k=1: whole).

  Only on the CPU, for leaves of at least ``CHAIN_MIN_SIZE`` entries, along
  an axis that no explicit sharding splits (blocks of a sharded axis would
  move data between devices); other backends reduce in parallel anyway.
  """
  if x.size < CHAIN_MIN_SIZE or jax.default_backend() != 'cpu':
    return 0, 1
  spec = tuple(getattr(getattr(jax.typeof(x), 'sharding', None), 'spec', ()) or ())
  best = (1, 0)  # (blocks, -axis): the most blocks, then the leading axis.
  for axis, n in enumerate(x.shape):
    if axis < len(spec) and spec[axis] is not None:
      continue
    k = max(j for j in range(1, CHAIN_BLOCKS + 1) if n % j == 0)
    best = max(best, (k, -axis))
  k, axis = best
  return -axis, k


def block_sum(terms: Callable[..., jax.Array], *leaves: jax.Array) -> jax.Array:
  """``terms(*leaves)``, its blocks along the leaves' chain split added up."""
  axis, k = chain_split(leaves[-1])
  if k == 1:
    return terms(*leaves)
  size = leaves[-1].shape[axis] // k
  blocks = [
    terms(*(jax.lax.slice_in_dim(x, i * size, (i + 1) * size, axis=axis) for x in leaves))
    for i in range(k)
  ]
  return functools.reduce(jnp.add, blocks)


def _add_pairs(p: tuple[jax.Array, jax.Array], r: tuple[jax.Array, jax.Array]):
  # Module level: lax.reduce caches its computation on the function object, and
  # a fresh lambda per call compiled a new reduction on every eager step.
  return p[0] + r[0], p[1] + r[1]


def dot_and_sq_norm(a: Any, b: Any) -> tuple[jax.Array, jax.Array]:
  """``(Re <a, b>, <b, b>)`` over all leaves, one reduction per leaf.

  One two-output reduction per leaf, not a scaled copy and two reductions:
  on the CPU each is a kernel, and on a 2-core ResNet-18 (62 leaves) those
  kernels made the secant's step 1.52x AdamW's instead of 1.29x, the cost of
  a forward pass (see the benchmarks' README). Large leaves enter it as the
  sum of their blocks (:data:`CHAIN_BLOCKS`), fused into the same pass.
  """
  leaves_b = jax.tree.leaves(b)
  acc = accumulator_dtype(leaves_b)
  zero = jnp.zeros([], acc)
  dot, sq = zero, zero
  for x, y in zip(jax.tree.leaves(a), leaves_b):
    x, y = x.astype(probe_dtype(x.dtype)), y.astype(probe_dtype(y.dtype))
    d, q = jax.lax.reduce(
      (
        block_sum(lambda u, v: real_dot(u, v).astype(acc), x, y),
        block_sum(lambda v: abs_sq(v).astype(acc), y),
      ),
      (zero, zero),
      _add_pairs,
      tuple(range(y.ndim)),
    )
    dot, sq = dot + d, sq + q
  return dot, sq


def safe_sqrt(sq: jax.Array) -> jax.Array:
  """sqrt with a finite gradient at 0 (the norm of a zero step)."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


@jax.custom_jvp
def root(sq: jax.Array) -> jax.Array:
  """``sqrt(sq)`` for ``sq >= 0``, with derivative 0 (not inf) at 0.

  :func:`safe_sqrt`'s value, from one square root: XLA copies a select on a
  sum over the leaves into every leaf's kernel that reads it, with the whole
  chain of per-leaf sums, and computes a square root once.
  """
  return jnp.sqrt(sq)


@root.defjvp
def _root_jvp(primals, tangents):
  (sq,), (t,) = primals, tangents
  out = jnp.sqrt(sq)
  positive = sq > 0
  return out, jnp.where(positive, t / (2 * jnp.where(positive, out, 1.0)), 0.0)


def sq_norm(tree: Any) -> jax.Array:
  """``<tree, tree>`` over all leaves, accumulated in at least float32."""
  leaves = jax.tree.leaves(tree)
  acc = accumulator_dtype(leaves)
  return sum(
    (jnp.sum(abs_sq(x.astype(probe_dtype(x.dtype)))).astype(acc) for x in leaves),
    jnp.zeros([], acc),
  )


def axpy(params: Any, a: jax.Array, x: Any) -> Any:
  """``params + a * x`` computed at each leaf's probe precision, cast back."""

  def leaf(p, v):
    wide = probe_dtype(p.dtype)
    return (p.astype(wide) + jnp.asarray(a).astype(jnp.finfo(wide).dtype) * v.astype(wide)).astype(
      p.dtype
    )

  return jax.tree.map(leaf, params, x)


def cast_like(tree: Any, like: Any) -> Any:
  """``tree`` with each leaf in the dtype of the matching leaf of ``like``."""
  return jax.tree.map(lambda x, p: x.astype(p.dtype), tree, like)


def scale_step(step: Any, scale: Optional[jax.Array]) -> Any:
  """``scale * step`` leaf by leaf, in each leaf's dtype (None: ``step``)."""
  if scale is None:
    return step
  return jax.tree.map(lambda u: u * jnp.asarray(scale).astype(u.dtype), step)


def scale_dot_and_sq_norm(
  dot: jax.Array, sq_norm: jax.Array, scale: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """``<a, c b>`` and ``<c b, c b>`` from ``<a, b>`` and ``<b, b>``."""
  c = jnp.asarray(scale).astype(dot.dtype)
  return dot * c, sq_norm * (c * c)


def unit_direction(direction: Any) -> tuple[Any, jax.Array]:
  """Returns ``(direction / ||direction||, ||direction||)``; zero stays zero.

  Differentiable everywhere: a zero direction has a zero (not NaN) gradient.
  """
  sq = sq_norm(direction)
  # The norm and 1 / norm (0 for a zero direction) as a square root and a
  # division, which XLA computes once for all the leaves that read them. A
  # select or compare on the sum of squares, which is cheap, it copies into
  # each leaf's kernel with the whole chain of per-leaf sums: a compile time
  # quadratic in the number of leaves (benchmarks/compile_time.py).
  norm = root(sq)
  inv = norm / jnp.where(sq > 0, sq, 1.0)
  return jax.tree.map(lambda d: d * inv.astype(d.dtype), direction), norm
