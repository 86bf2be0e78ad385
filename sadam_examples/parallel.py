"""Helpers for S-Adam on several devices: a replica check, state shardings.

Data parallelism (``shard_map``, ``pmap``): with the batch split over
devices, each replica's ``value_fn`` sees its own shard, so without
``axis_name`` every replica measures its own rho, applies its own damping,
and the replicas drift apart although the gradients were ``pmean``'d.
``sadam(..., axis_name='data')`` averages the probe values over the axis, so
all replicas agree. ``shard_map`` (with its default
``check_vma=True``) refuses at trace time to return replicated parameters that
were computed from a per-device rho; ``pmap`` and ``shard_map(...,
check_vma=False)`` cannot tell, and the drift is silent. There,
:func:`replica_divergence` makes it visible: call it inside the mapped step
and log it, or assert that it is 0.

Under ``jax.jit`` with ``NamedSharding`` nothing is needed: the probes run on
the global arrays and rho comes out replicated. :func:`state_shardings` gives
the optimizer state the parameters' layout, so that ``init`` and ``update``
agree on it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def _as_float(x: jax.Array) -> jax.Array:
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return x.astype(jnp.float32)


def replica_divergence(tree: Any, axis_name: str) -> jax.Array:
  """Largest difference of any entry of ``tree`` between replicas.

  Call it inside the ``shard_map``/``pmap``-ed function on values that should
  be replicated (parameters, the optimizer state: PRNG keys are compared by
  their data).

  Example (inside the mapped train step)::

    spread = replica_divergence((params, opt_state), 'data')
    # log it; with axis_name passed to sadam it is exactly 0.

  Args:
    tree: a pytree of arrays.
    axis_name: the mapped axis over which the values should agree.

  Returns:
    A float32 scalar, identical on all replicas: ``max(pmax(x) - pmin(x))``
    over the entries of all leaves; 0 when every replica holds the same
    values, NaN when some entry is NaN.
  """
  spreads = [
    jnp.max(
      jax.lax.pmax(_as_float(x), axis_name) - jax.lax.pmin(_as_float(x), axis_name), initial=0.0
    )
    for x in jax.tree.leaves(tree)
  ]
  return jnp.max(jnp.stack(spreads)) if spreads else jnp.float32(0.0)


def state_shardings(
  opt: optax.GradientTransformation,
  params: Any,
  param_shardings: Any,
  replicated: jax.sharding.Sharding,
) -> Any:
  """Shardings of ``opt``'s state: each copy of the params laid out like them.

  Adam's moments (and ``'trajectory'``'s previous step) take the parameters'
  shardings; everything else (step counts, the probe key, rho, the damping)
  is replicated. Use it as ``out_shardings`` of a jitted ``opt.init``.

  Example::

    shardings = state_shardings(opt, params, param_shardings,
                                NamedSharding(mesh, P()))
    opt_state = jax.jit(opt.init, out_shardings=shardings)(params)

  Args:
    opt: the optimizer.
    params: the parameters, concrete or abstract (``jax.ShapeDtypeStruct``).
    param_shardings: a tree like ``params`` holding their shardings.
    replicated: the sharding for the state's other leaves.

  Returns:
    A tree of shardings with the structure of ``opt.init(params)``.
  """
  abstract_state = jax.eval_shape(opt.init, params)
  return optax.tree_map_params(
    opt,
    lambda _, sharding: sharding,
    abstract_state,
    param_shardings,
    transform_non_params=lambda _: replicated,
    is_leaf=lambda x: isinstance(x, jax.sharding.Sharding),
  )
