"""Prototypes of cheaper probing, proposed for the core and measured here.

Nothing here is part of ``sadam_optax``: these functions exist so that the
benchmarks can measure a proposal side by side with the library before the
core adopts it.

* :func:`packed_rademacher_like`: the shared Rademacher noise from one bit per
  parameter (``ceil(n / 32)`` random words, one PRNG call for the whole tree)
  instead of one random word per parameter and one PRNG call per leaf.
* :func:`secant_ratio` and :func:`end_ratio`: two-sample readings of the
  ``'step'`` estimator on the current batch that reuse what the train step
  already computed (the loss and the gradient at the parameters), and
  :func:`two_sample_sadamw`, S-AdamW braked by them.
"""

import contextlib
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sadam_optax import lgi

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
    out.append(signs[start:start + n].reshape(x.shape).astype(x.dtype))
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


def _start_slope(grads: Any, step: Any) -> tuple[Any, jax.Array, jax.Array]:
  """(unit step, ||step||, slope of the loss along the step at its start)."""
  unit, norm = lgi.unit_direction(step)
  slope = sum((jnp.vdot(g.astype(jnp.float32), u.astype(jnp.float32))
               for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(unit))),
              jnp.float32(0.0))
  return unit, norm, slope


def secant_ratio(value_fn: Callable[[Any], jax.Array], params: Any,
                 step: Any, grads: Any, value: jax.Array) -> jax.Array:
  """rho from the start slope and the secant slope of the step: 1 forward.

  The slope at the start, ``s0 = <g, u>``, and the loss at the start come with
  the gradient; one forward pass at ``params + step`` gives the secant slope
  ``s = (f(params + step) - f(params)) / ||step||``, the mean of the slope
  over the segment. If the slope varies linearly along the segment, its
  variance over the segment is ``(s - s0)^2 / 3``, whence
  ``rho = Var / (s^2 + Var)`` as in the dense estimator.

  Args:
    value_fn: ``params -> scalar`` loss on the current batch.
    params: the parameters.
    step: the proposed step.
    grads: the gradient of the same loss at ``params``.
    value: the loss at ``params``.

  Returns:
    rho, a float32 scalar in [0, 1).
  """
  _, norm, s0 = _start_slope(grads, step)
  end = jax.tree.map(lambda p, d: p + d, params, step)
  delta = value_fn(end).astype(jnp.float32) - value.astype(jnp.float32)
  secant = delta / jnp.maximum(norm, 1e-30)
  var = (secant - s0) ** 2 / 3.0
  return jnp.where(norm > 0, var / (secant ** 2 + var + 1e-30), 0.0)


def end_ratio(value_fn: Callable[[Any], jax.Array], params: Any, step: Any,
              grads: Any) -> jax.Array:
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
  unit, _, s0 = _start_slope(grads, step)
  end = jax.tree.map(lambda p, d: p + d, params, step)
  _, s1 = jax.jvp(value_fn, (end,), (unit,))
  return lgi.instability_ratio(jnp.stack([s0, s1.astype(jnp.float32)]))


READINGS = {'secant': 'one forward pass', 'ends': 'one jvp'}


class TwoSampleState(NamedTuple):
  """State of :func:`two_sample_sadamw`: Adam's state and the last rho."""
  rho: jax.Array
  adam: optax.OptState


def two_sample_sadamw(learning_rate: float, *, weight_decay: float = 1e-4,
                      lam: float = 2.0, reading: str = 'secant'
                      ) -> optax.GradientTransformationExtraArgs:
  """S-AdamW whose rho is :func:`secant_ratio` or :func:`end_ratio`.

  A prototype of a cheaper ``'step'`` reading: the brake
  ``exp(-lam * rho)`` on Adam's step, decoupled weight decay unbraked, as in
  ``sadam_optax.sadamw``.

  Args:
    learning_rate: the learning rate (a constant, in this prototype).
    weight_decay: decoupled weight decay.
    lam: brake strength.
    reading: ``'secant'`` (one forward pass) or ``'ends'`` (one jvp).

  Returns:
    A transformation whose ``update(grads, state, params, value_fn=...,
    value=...)`` needs the loss function and takes the loss at ``params``
    (the keyword optax's line searches use; None: ``value_fn(params)``, one
    more forward pass, as when ``value_fn`` sees a sub-batch).
  """
  if reading not in READINGS:
    raise ValueError(f'reading={reading!r}: choose one of {tuple(READINGS)}.')
  adam = optax.scale_by_adam()

  def init_fn(params):
    return TwoSampleState(rho=jnp.zeros([], jnp.float32),
                          adam=adam.init(params))

  def update_fn(grads, state, params, *, value_fn, value=None, **extra):
    del extra
    direction, adam_state = adam.update(grads, state.adam, params)
    step = jax.tree.map(lambda d: -learning_rate * d, direction)
    if reading == 'secant':
      rho = secant_ratio(value_fn, params, step, grads,
                         value_fn(params) if value is None else value)
    else:
      rho = end_ratio(value_fn, params, step, grads)
    damping = jnp.exp(-lam * rho)
    updates = jax.tree.map(
        lambda s, p: damping * s - learning_rate * weight_decay * p, step,
        params)
    return updates, TwoSampleState(rho=rho, adam=adam_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
