"""Save and restore a whole training state with Orbax, PRNG keys included.

A resumed run follows the uninterrupted one bit for bit when everything that
feeds the train step is in the saved tree: the parameters, the optimizer state
(S-Adam keeps its probe key, step count, rho and damping there), the key of the
data order, and the step. Typed PRNG keys (``jax.random.key``) are stored as
their raw ``uint32`` data and wrapped again on restore, so this works whatever
the Orbax version's own support for key arrays. Restoring into an abstract
tree (``jax.eval_shape``) with shardings places every array where the
shardings say, on one host or many (every process must call these functions).

Example::

  like = jax.eval_shape(init_train_state)     # the structure, no compute
  if latest_step(ckpt_dir) is None:
    state = init_train_state()
  else:
    state = restore(ckpt_dir, like)
  for step in range(int(state['step']), num_steps):
    state = train_step(state)
    if (step + 1) % 100 == 0:
      save(ckpt_dir, step + 1, state)
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

PathLike = Union[str, os.PathLike]


def _is_key(x: Any) -> bool:
  dtype = getattr(x, 'dtype', None)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _key_impl(like: Any) -> Any:
  """The PRNG implementation of a key array or of its abstract value."""
  return jax.random.key_impl(jnp.zeros((0,), like.dtype))


def keys_to_data(tree: Any) -> Any:
  """Replaces every typed key array by its raw ``uint32`` data.

  Args:
    tree: a pytree of arrays, possibly holding ``jax.random.key`` arrays.

  Returns:
    The same tree with ``jax.random.key_data(k)`` in place of each key ``k``.
  """
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def data_to_keys(tree: Any, like: Any) -> Any:
  """Inverse of :func:`keys_to_data`, guided by a tree with the key arrays.

  Args:
    tree: a tree from :func:`keys_to_data` (or restored from a checkpoint).
    like: the original tree or its abstract value (``jax.eval_shape``); its
      key leaves give the PRNG implementation.

  Returns:
    ``tree`` with the leaves that are keys in ``like`` wrapped as keys.
  """
  return jax.tree.map(
    lambda x, ref: jax.random.wrap_key_data(x, impl=_key_impl(ref)) if _is_key(ref) else x,
    tree,
    like,
  )


def _abstract(like: Any) -> Any:
  """Abstract restore target of ``like``, with keys replaced by their data."""

  def leaf(x):
    sharding = getattr(x, 'sharding', None)
    if _is_key(x):
      data = jax.eval_shape(jax.random.key_data, x)
      # A key's data has one more (trailing, unsharded) axis than the key.
      if isinstance(sharding, jax.sharding.NamedSharding):
        spec = tuple(sharding.spec) + (None,) * (data.ndim - len(sharding.spec))
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))
      elif sharding is not None and not isinstance(sharding, jax.sharding.SingleDeviceSharding):
        sharding = None  # Other shardings: let Orbax place it.
      return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree.map(leaf, like)


def _manager(directory: PathLike, max_to_keep: Optional[int] = None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(directory: PathLike, step: int, state: Any, *, max_to_keep: Optional[int] = None) -> None:
  """Writes ``state`` as checkpoint ``step`` under ``directory`` and waits.

  Args:
    directory: the run's checkpoint directory (created if missing).
    step: the checkpoint's number, usually the training step reached.
    state: a pytree of arrays (params, optimizer state, keys, step, ...).
    max_to_keep: keep at most this many checkpoints, deleting the oldest;
      None keeps all.
  """
  with _manager(directory, max_to_keep) as manager:
    manager.save(step, args=ocp.args.StandardSave(keys_to_data(state)))
    manager.wait_until_finished()


def restore(directory: PathLike, like: Any, *, step: Optional[int] = None) -> Any:
  """Reads a checkpoint written by :func:`save` into the layout of ``like``.

  Args:
    directory: the run's checkpoint directory.
    like: the state's structure: a concrete state or its abstract value
      (``jax.eval_shape(init_fn)``, ``jax.ShapeDtypeStruct`` leaves, with
      ``sharding=`` to restore sharded). Dtypes, shapes, container types
      (named tuples of optax states) and shardings come from it.
    step: which checkpoint; None takes the latest.

  Returns:
    The restored state, with typed PRNG keys.

  Raises:
    FileNotFoundError: no checkpoint (or not ``step``) in ``directory``.
  """
  with _manager(directory) as manager:
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise FileNotFoundError(
        f'no checkpoint {"" if step is None else step} in {directory}; '
        f'found steps {list(manager.all_steps())}.'
      )
    data = manager.restore(step, args=ocp.args.StandardRestore(_abstract(like)))
  return data_to_keys(data, like)


def latest_step(directory: PathLike) -> Optional[int]:
  """The number of the newest checkpoint in ``directory``, or None."""
  if not os.path.isdir(directory):
    return None
  with _manager(directory) as manager:
    return manager.latest_step()
