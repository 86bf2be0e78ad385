"""Prototypes of cheaper probing, proposed for the core and measured here.

Nothing here is part of ``sadam_optax``: these functions exist so that the
benchmarks can measure a proposal side by side with the library before the
core adopts it.

* :func:`packed_rademacher_like`: the shared Rademacher noise from one bit per
  parameter (``ceil(n / 32)`` random words, one PRNG call for the whole tree)
  instead of one random word per parameter and one PRNG call per leaf.
* :func:`end_ratio`: a two-sample reading of the ``'step'`` estimator on the
  current batch that reuses the gradient the train step already computed
  (the slope at the start of the step) and pays one jvp at its end, and
  :func:`two_sample_sadamw`, S-AdamW braked by it. Its sibling, the secant
  reading (one forward pass), was measured here first and is now the core's
  default estimator, ``'secant'``.
"""

import contextlib
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sadam_optax import lgi
from sadam_optax import tree_math


def packed_rademacher_like(key: jax.Array, tree: Any) -> Any:
  """One unit-norm Rademacher vector over all leaves, one bit per entry.

  Same distribution as ``sadam_optax.lgi._rademacher_like`` (independent
  +-1 entries scaled by ``1 / sqrt(n)``), from ``ceil(n / 32)`` random words
  drawn by one PRNG call.

  Args:
    key: a PRNG key.
    tree: the parameters (shapes and dtypes of the result).

  Returns:
    A tree like ``tree``.
  """
  leaves, treedef = jax.tree.flatten(tree)
  sizes = [x.size for x in leaves]
  total = max(sum(sizes), 1)
  words = jax.random.bits(key, (-(-total // 32),), jnp.uint32)
  bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
  scale = 1.0 / jnp.sqrt(jnp.float32(total))
  signs = (bits.reshape(-1)[:total].astype(jnp.float32) * 2.0 - 1.0) * scale
  out, start = [], 0
  for x, n in zip(leaves, sizes):
    out.append(signs[start : start + n].reshape(x.shape).astype(x.dtype))
    start += n
  return jax.tree.unflatten(treedef, out)


@contextlib.contextmanager
def packed_noise() -> Iterator[None]:
  """Traces the library with :func:`packed_rademacher_like` (benchmarks only).

  Patches the module function while the caller traces its step: hold it only
  around ``jax.jit(...).lower(...)``, and trace nothing else meanwhile (not
  thread-safe).
  """
  original = lgi._rademacher_like  # pylint: disable=protected-access
  lgi._rademacher_like = packed_rademacher_like  # pylint: disable=protected-access
  try:
    yield
  finally:
    lgi._rademacher_like = original  # pylint: disable=protected-access


def _start_slope(grads: Any, step: Any) -> tuple[Any, jax.Array]:
  """(unit step, slope of the loss along the step at its start)."""
  unit, _ = tree_math.unit_direction(step)
  return unit, tree_math.tree_dot(grads, unit)


def end_ratio(
  value_fn: Callable[[Any], jax.Array], params: Any, step: Any, grads: Any
) -> jax.Array:
  """rho of the slopes at both ends of the step on this batch: 1 jvp.

  The start slope comes with the gradient; one jvp at ``params + step`` gives
  the end slope (``estimate_lgi(..., estimator='trajectory')`` pays both).

  Args:
    value_fn: ``params -> scalar`` loss on the current batch.
    params: the parameters.
    step: the proposed step.
    grads: the gradient of the same loss at ``params``.

  Returns:
    rho, a float32 scalar in [0, 1).
  """
  unit, s0 = _start_slope(grads, step)
  end = jax.tree.map(lambda p, d: p + d, params, step)
  _, s1 = jax.jvp(value_fn, (end,), (unit,))
  return lgi.instability_ratio(jnp.stack([s0, s1.astype(jnp.float32)]))


READINGS = {'ends': 'one jvp'}


class TwoSampleState(NamedTuple):
  """State of :func:`two_sample_sadamw`: Adam's state and the last rho."""

  rho: jax.Array
  adam: optax.OptState


def two_sample_sadamw(
  learning_rate: float, *, weight_decay: float = 1e-4, lam: float = 2.0, reading: str = 'secant'
) -> optax.GradientTransformationExtraArgs:
  """S-AdamW whose rho is :func:`end_ratio`.

  A prototype of a cheaper ``'step'`` reading: the brake
  ``exp(-lam * rho)`` on Adam's step, decoupled weight decay unbraked, as in
  ``sadam_optax.sadamw``.

  Args:
    learning_rate: the learning rate (a constant, in this prototype).
    weight_decay: decoupled weight decay.
    lam: brake strength.
    reading: ``'ends'`` (one jvp).

  Returns:
    A transformation whose ``update(grads, state, params, value_fn=...)``
    needs the loss function.
  """
  if reading not in READINGS:
    raise ValueError(f'reading={reading!r}: choose one of {tuple(READINGS)}.')
  adam = optax.scale_by_adam()

  def init_fn(params):
    return TwoSampleState(rho=jnp.zeros([], jnp.float32), adam=adam.init(params))

  def update_fn(grads, state, params, *, value_fn, **extra):
    del extra
    direction, adam_state = adam.update(grads, state.adam, params)
    step = jax.tree.map(lambda d: -learning_rate * d, direction)
    rho = end_ratio(value_fn, params, step, grads)
    damping = jnp.exp(-lam * rho)
    updates = jax.tree.map(
      lambda s, p: damping * s - learning_rate * weight_decay * p, step, params
    )
    return updates, TwoSampleState(rho=rho, adam=adam_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
