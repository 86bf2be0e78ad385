"""Flax helpers: pass the loss to S-Adam from linen and nnx training loops.

S-Adam reads rho from the loss along the proposed step, so ``update`` needs
``value_fn(params) -> scalar``. That function must be *pure*: S-Adam traces
it (``jax.eval_shape``), jvps or vmaps it at probe points, and those calls
must not mutate the model. Train-mode layers are where this matters:

* **BatchNorm** (train mode) normalises with the statistics of the batch at
  the probed parameters, as the training forward pass does, and never writes
  its running averages from a probe (the updated averages are discarded).
* **Dropout**, by default, uses the mask of the gradient's own forward pass,
  so the secant compares the loss at both ends of the step under the same
  mask (like with like). ``fresh_dropout=True`` draws a new mask at each
  probed point instead, as the authors' scripts do (their rho, hence their
  damping, then also measures the dropout noise).

For ``flax.nnx``, :func:`nnx_value_and_grad` returns ``(loss, grads,
value_fn)`` consistently; :func:`nnx_value_fn` builds the ``value_fn`` alone
from a snapshot of the model's non-parameter state (RNG counts, batch
statistics) taken when it is called: build it *before* the gradient so that
its dropout masks are the gradient's. For linen, :func:`linen_value_fn` and
:func:`linen_value_and_grad` do the same from ``apply_fn``, the
non-parameter collections (``batch_stats``, applied with
``mutable=['batch_stats']`` and the updates discarded) and
``rngs={'dropout': key}``. All four take ``has_aux=True`` for a ``loss_fn``
that returns ``(loss, aux)``, as ``jax.value_and_grad`` does: the
``value_fn`` then returns the loss alone.

``flax.training.train_state.TrainState.apply_gradients`` does not forward
extra keyword arguments to ``tx.update``, so S-Adam never sees ``value_fn``
there: use :class:`TrainState` below (a drop-in subclass) or
:func:`apply_gradients`. Both refuse a keyword that is neither a field of
the state nor one the optimizer reads, rather than drop it (give a
``TrainState`` subclass a ``batch_stats`` field for BatchNorm).
``flax.nnx.Optimizer.update(model, grads, **kwargs)`` does forward them.

Flax is imported when these helpers are first used, so ``import
sadam_optax`` stays light.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from sadam_optax import probe_transform

# Golden-ratio multiplier of Knuth's multiplicative hash (odd, 32 bits).
_HASH_MULTIPLIER = 0x9E3779B1


def apply_gradients(
  state: Any,
  *,
  grads: Any,
  update_kwargs: Optional[Mapping[str, Any]] = None,
  **kwargs: Any,
) -> Any:
  """``state.apply_gradients(grads=grads)`` that forwards keywords to ``tx``.

  Works with ``flax.training.train_state.TrainState`` itself (whose own
  ``apply_gradients`` drops them). Keywords are routed by
  :func:`split_state_kwargs`: a field of the state (``batch_stats`` of a
  subclass, say) is ``replace``-d into it; the keywords the optimizer's
  ``update`` reads (``value_fn``, ``value``, ``grad``, ``probe_now`` and
  those ``value_fn`` takes) go to ``tx.update``; any other raises a
  ``TypeError`` rather than being dropped silently.

  Example (inside a jitted train step)::

    loss_of = lambda p: loss_fn(p, batch)
    loss, grads = jax.value_and_grad(loss_of)(state.params)
    state = sadam_optax.flax_utils.apply_gradients(
        state, grads=grads, value_fn=loss_of, value=loss)

  Args:
    state: a ``flax.training.train_state.TrainState`` (or subclass).
    grads: gradients with the structure of ``state.params``.
    update_kwargs: further keywords for ``tx.update``, passed as they are
      (names that are also fields of the state, or that another
      transformation of the chain reads).
    **kwargs: fields of the state, ``replace``-d after the update, and the
      keywords of ``tx.update``: ``value_fn=`` for S-Adam (``params ->
      scalar`` loss), ``value=`` (the loss at ``state.params``), ``grad=``,
      ``probe_now=``.

  Returns:
    The state with ``step`` incremented, ``params`` and ``opt_state``
    updated and the given fields replaced.

  Raises:
    TypeError: a keyword that is neither a field of the state nor one that
      ``tx.update`` reads (see :func:`split_state_kwargs`).
  """
  fields, forwarded = split_state_kwargs(state, kwargs, update_kwargs)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params, **forwarded)
  return state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
    **fields,
  )


# Fields that apply_gradients computes itself: a keyword cannot set them.
_COMPUTED_FIELDS = ('step', 'params', 'opt_state')


def _update_arg_names(kwargs: Mapping[str, Any]) -> set[str]:
  """The keywords of ``kwargs`` that S-Adam's ``update`` reads or forwards."""
  names = set(probe_transform.OWN_ARGS)
  value_fn = kwargs.get('value_fn')
  if callable(value_fn):
    try:  # The keywords that update hands on to value_fn.
      names |= set(probe_transform.value_fn_kwargs(value_fn, dict(kwargs)))
    except (TypeError, ValueError):  # No signature: update forwards none.
      pass
  return names


def _dropped_keywords(state: Any, unknown: list[str]) -> TypeError:
  cls = type(state).__name__
  first = unknown[0]
  return TypeError(
    f'apply_gradients got {", ".join(repr(k) for k in unknown)}: neither a field of '
    f"{cls} nor a keyword that the optimizer's update reads (value_fn, value, grad, "
    'probe_now, or a keyword value_fn takes), so it would be dropped silently. '
    f'To keep it in the state (BatchNorm statistics, say), give the state a field: '
    f'class State(sadam_optax.flax_utils.TrainState): {first}: Any, then '
    f'State.create(..., {first}=...). To pass it to tx.update anyway: '
    f'apply_gradients(..., update_kwargs={{{first!r}: ...}}).'
  )


def split_state_kwargs(
  state: Any,
  kwargs: Mapping[str, Any],
  update_kwargs: Optional[Mapping[str, Any]] = None,
) -> tuple[dict, dict]:
  """Splits ``apply_gradients``' keywords into the state's fields and the rest.

  A keyword naming a field of ``state`` is for ``replace``; one that the
  optimizer's ``update`` reads (``value_fn``, ``value``, ``grad``,
  ``probe_now``, and the keywords ``value_fn``'s signature names, which
  ``update`` hands on to it) is for ``tx.update``. Any other keyword would
  be dropped silently (an optax ``GradientTransformationExtraArgs`` ignores
  keywords it does not know): it raises instead, unless it comes in
  ``update_kwargs``, which goes to ``tx.update`` unchecked.

  Args:
    state: a dataclass (a ``TrainState``).
    kwargs: keywords given to ``apply_gradients``.
    update_kwargs: keywords for ``tx.update``, passed as they are.

  Returns:
    ``(fields, others)``: the keywords naming a field of ``state`` (to be
    ``replace``-d into it) and those for ``tx.update`` (``update_kwargs``
    included).

  Raises:
    TypeError: a keyword that is neither a field of ``state`` nor one that
      ``tx.update`` reads, or one naming ``step``, ``params`` or
      ``opt_state`` (which ``apply_gradients`` sets itself).
  """
  names = {f.name for f in dataclasses.fields(state)} if dataclasses.is_dataclass(state) else set()
  fields = {k: v for k, v in kwargs.items() if k in names}
  others = {k: v for k, v in kwargs.items() if k not in names}
  computed = [k for k in _COMPUTED_FIELDS if k in fields]
  if computed:
    raise TypeError(
      f'apply_gradients got {", ".join(repr(k) for k in computed)}: it computes '
      'step, params and opt_state itself. To pass such a keyword to tx.update, use '
      f'update_kwargs={{{computed[0]!r}: ...}}.'
    )
  others.update(update_kwargs or {})
  known = _update_arg_names(others) | set(update_kwargs or {})
  unknown = sorted(k for k in others if k not in known)
  if unknown:
    raise _dropped_keywords(state, unknown)
  return fields, others


def _train_state_class():
  from flax.training import train_state  # pylint: disable=g-import-not-at-top

  class TrainState(train_state.TrainState):
    """A linen ``TrainState`` whose ``apply_gradients`` forwards to ``tx``.

    ``state.apply_gradients(grads=g, value_fn=loss_of_params, value=loss)``:
    keywords naming a field of the state (``batch_stats`` of a subclass,
    say) are ``replace``-d into it, as in flax's own class; those the
    optimizer's ``update`` reads (``value_fn``, ``value``, ``grad``,
    ``probe_now``) go to ``tx.update``; any other raises a ``TypeError``
    (give the state a field for it, or pass it in ``update_kwargs``).
    This class has no ``batch_stats``: with BatchNorm, subclass it::

      class State(sadam_optax.flax_utils.TrainState):
        batch_stats: Any

    Example::

      state = sadam_optax.flax_utils.TrainState.create(
          apply_fn=model.apply, params=params, tx=sadam_optax.sadamw(1e-3))
      loss_of = lambda p: loss_fn(state.apply_fn({'params': p}, x), y)
      loss, grads = jax.value_and_grad(loss_of)(state.params)
      state = state.apply_gradients(grads=grads, value_fn=loss_of,
                                    value=loss)
    """

    def apply_gradients(self, *, grads, update_kwargs=None, **kwargs):
      """Updates ``step``, ``params`` and ``opt_state``.

      Args:
        grads: gradients with the structure of ``params``.
        update_kwargs: an optional dict of further keywords for
          ``tx.update``, passed as they are (for names that are also
          fields of the state, or that another transformation reads).
        **kwargs: fields of the state are ``replace``-d; ``value_fn``,
          ``value``, ``grad``, ``probe_now`` (and the keywords ``value_fn``
          takes) are passed to ``tx.update``.

      Returns:
        The updated state.

      Raises:
        TypeError: a keyword that is neither a field of the state nor one
          that ``tx.update`` reads: it would be dropped silently.
      """
      return apply_gradients(self, grads=grads, update_kwargs=update_kwargs, **kwargs)

  return TrainState


def __getattr__(name: str) -> Any:
  # The TrainState subclass needs flax: build it on first access only.
  if name == 'TrainState':
    cls = _train_state_class()
    globals()['TrainState'] = cls
    return cls
  raise AttributeError(name)


# --------------------------------------------------------------------------
# Dropout masks: the gradient's own, or a fresh one per probed point.
# --------------------------------------------------------------------------


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
  """A uint32 hash of every bit of ``x`` (position-weighted, wrapping)."""
  x = jax.lax.stop_gradient(jnp.asarray(x))
  if jnp.iscomplexobj(x):
    x = jnp.stack([jnp.real(x), jnp.imag(x)])
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  size = jnp.dtype(x.dtype).itemsize
  if size < 4:
    bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f'uint{8 * size}')).astype(jnp.uint32)
  else:  # 8-byte words split into two uint32.
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  bits = bits.reshape(-1)
  weights = (jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)) * jnp.uint32(
    _HASH_MULTIPLIER
  )
  return jnp.sum(bits * weights, dtype=jnp.uint32)


def fingerprint(tree: Any) -> jax.Array:
  """A uint32 hash of all the bits of ``tree``'s leaves.

  Two probe points that differ in any bit almost surely get different
  fingerprints; the same point always gets the same one. No gradient flows
  through it.

  Args:
    tree: a pytree of arrays.

  Returns:
    A uint32 scalar.
  """
  h = jnp.uint32(0)
  for i, leaf in enumerate(jax.tree.leaves(tree)):
    h = h * jnp.uint32(_HASH_MULTIPLIER) + _leaf_fingerprint(leaf) + jnp.uint32(i)
  return h


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def fold_keys(tree: Any, data: jax.Array) -> Any:
  """Folds ``data`` into every typed PRNG key of ``tree``.

  Args:
    tree: a pytree whose leaves may be typed keys (``jax.random.key``, as in
      ``nnx.Rngs``) or anything else (left as is).
    data: a uint32 scalar.

  Returns:
    ``tree`` with each key replaced by ``jax.random.fold_in(key, data)``.
  """
  return jax.tree.map(lambda x: jax.random.fold_in(x, data) if _is_key(x) else x, tree)


# --------------------------------------------------------------------------
# Losses with auxiliary outputs (has_aux).
# --------------------------------------------------------------------------


def _loss_and_aux(out: Any, has_aux: bool, helper: str) -> tuple[Any, Any]:
  """``(loss, aux)`` of ``loss_fn``'s output (``aux`` None without has_aux).

  Checks the output's structure when tracing: a pair is refused without
  ``has_aux=True`` (JAX would only say that the gradient needs a scalar) and
  required with it.
  """
  pair = isinstance(out, (tuple, list))
  if has_aux:
    if not (pair and len(out) == 2):
      what = f'a {type(out).__name__} of {len(out)}' if pair else f'a {type(out).__name__}'
      raise ValueError(
        f'{helper}(..., has_aux=True): loss_fn must return a pair (loss, aux), as with '
        f'jax.value_and_grad(has_aux=True); it returned {what}.'
      )
    return out[0], out[1]
  if pair:
    raise ValueError(
      f'{helper}: loss_fn returned a {type(out).__name__} of {len(out)}, not a scalar loss. '
      'If it returns (loss, aux), e.g. (loss, logits) as in the Flax tutorials, pass '
      f'has_aux=True: {helper}(..., has_aux=True) differentiates the loss alone, returns '
      '(loss, aux) in place of the loss and gives S-Adam a value_fn of the loss alone.'
    )
  return out, None


# --------------------------------------------------------------------------
# flax.nnx
# --------------------------------------------------------------------------


def _paths(state: Any) -> list[str]:
  return [
    '/'.join(str(getattr(k, 'key', k)) for k in path)
    for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]
  ]


def _wrt_mismatch(wrt: Any, expected: Any, got: Any) -> ValueError:
  want, have = set(_paths(expected)), set(_paths(got))
  missing, extra = sorted(want - have), sorted(have - want)
  return ValueError(
    f'nnx_value_fn(..., wrt={wrt!r}) split the model into other variables '
    "than the params S-Adam received: the optimizer's wrt differs. Pass "
    'the same filter to both, e.g. nnx_value_fn(model, loss_fn, x, '
    'wrt=optimizer.wrt). Received but not in wrt: '
    f'{extra[:8]}; in wrt but not received: {missing[:8]}.'
  )


def _snapshot_nodes(tree: Any) -> Callable[[Any], Any]:
  """A function that rebuilds ``tree`` with fresh copies of its NNX objects.

  The arguments of a loss may hold NNX objects besides the model (an
  ``nnx.Rngs`` passed at call time for dropout, say). Each is split now into
  a pure snapshot and merged anew at every call, so a probe neither mutates
  the caller's object (from another trace level: flax refuses) nor sees the
  draws of an earlier probe. Everything else is passed as it is.

  Args:
    tree: the loss's extra arguments, e.g. ``(args, kwargs)``.

  Returns:
    ``rebuild(fold)``: ``tree`` with each NNX object replaced by a fresh copy
    of its snapshot whose state went through ``fold`` (a function of a pure
    state, e.g. folding a fingerprint into its keys).
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  is_node = nnx.graph.is_graph_node
  leaves, treedef = jax.tree.flatten(tree, is_leaf=is_node)

  def snapshot(node):
    graphdef, state = nnx.split(node)
    return graphdef, nnx.as_pure(state)

  snaps = [snapshot(x) if is_node(x) else None for x in leaves]

  def rebuild(fold: Callable[[Any], Any]) -> Any:
    fresh = [
      x if snap is None else nnx.merge(snap[0], fold(snap[1])) for x, snap in zip(leaves, snaps)
    ]
    return jax.tree.unflatten(treedef, fresh)

  return rebuild


def nnx_value_fn(
  model: Any,
  loss_fn: Callable[..., Any],
  *args: Any,
  wrt: Any = None,
  fresh_dropout: bool = False,
  has_aux: bool = False,
  **kwargs: Any,
) -> Callable[[Any], Any]:
  """A pure ``value_fn`` for ``nnx.Optimizer.update`` from a model and a loss.

  ``nnx.Optimizer`` hands S-Adam the parameters as a pure ``nnx.State``; the
  loss is computed on a copy of the model with those parameters and a
  snapshot of its other state (RNG streams, batch statistics, ...) taken
  now. Nothing is ever written back to ``model``, so the probes cannot
  mutate it, eagerly or under ``nnx.jit``:

  * BatchNorm in train mode normalises with the batch's statistics at the
    probed point; its running averages are not updated by probes.
  * Dropout draws its masks from the snapshot's RNG state: build the
    ``value_fn`` **before** the gradient's forward pass (which advances the
    RNG counts) and every probe uses the gradient's own mask. Or use
    :func:`nnx_value_and_grad`, which does it in that order for you.
    ``fresh_dropout=True`` folds a fingerprint of each probed point into the
    keys: a new mask at each point (the same point, the same mask).

  Example::

    @nnx.jit
    def train_step(model, optimizer, x, y):
      value_fn = nnx_value_fn(model, loss_fn, x, y, wrt=optimizer.wrt)
      loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
      optimizer.update(model, grads, value_fn=value_fn, value=loss)
      return loss

  Args:
    model: the ``nnx.Module`` being trained (RNG streams inside the model,
      e.g. ``nnx.Dropout(rate, rngs=rngs)``).
    loss_fn: ``loss_fn(model, *args, **kwargs) -> scalar``, or ``-> (loss,
      aux)`` with ``has_aux=True``.
    *args: passed to ``loss_fn`` after the model (the batch). NNX objects
      among them (an ``nnx.Rngs`` passed at call time) are snapshotted like
      the model's own state: each probe calls ``loss_fn`` with a fresh copy.
    wrt: the variable filter of the optimizer (default ``nnx.Param``); it
      must be the optimizer's ``wrt``, else ``value_fn`` raises a
      ``ValueError`` that says so.
    fresh_dropout: a new dropout mask at each probed point (the authors'
      scripts) instead of the gradient's mask.
    has_aux: ``loss_fn`` returns a pair ``(loss, aux)`` (``(loss, logits)``,
      say), as with ``nnx.value_and_grad(loss_fn, has_aux=True)``;
      ``value_fn`` returns the loss alone. Without it, a ``loss_fn`` that
      returns a tuple makes ``value_fn`` raise a ``ValueError``.
    **kwargs: passed to ``loss_fn``.

  Returns:
    ``value_fn(params_state) -> scalar``, a pure function of the parameters.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  wrt = nnx.Param if wrt is None else wrt
  graphdef, params, rest = nnx.split(model, wrt, ...)
  # Arrays, not the model's Variable objects: the snapshot cannot change.
  params, rest = nnx.as_pure(params), nnx.as_pure(rest)
  structure = jax.tree.structure(params)
  arguments = _snapshot_nodes((args, kwargs))

  def value_fn(new_params):
    new_params = nnx.as_pure(new_params)
    if jax.tree.structure(new_params) != structure:
      raise _wrt_mismatch(wrt, params, new_params)
    fold = (lambda st: fold_keys(st, fingerprint(new_params))) if fresh_dropout else (lambda st: st)
    call_args, call_kwargs = arguments(fold)
    out = loss_fn(nnx.merge(graphdef, new_params, fold(rest)), *call_args, **call_kwargs)
    return _loss_and_aux(out, has_aux, 'nnx_value_fn')[0]

  return value_fn


def nnx_value_and_grad(
  loss_fn: Callable[..., Any],
  model: Any,
  *args: Any,
  wrt: Any = None,
  fresh_dropout: bool = False,
  has_aux: bool = False,
  **kwargs: Any,
) -> tuple[Any, Any, Callable[[Any], Any]]:
  """``(loss, grads, value_fn)`` for ``nnx.Optimizer.update``, consistently.

  Builds :func:`nnx_value_fn` first, then runs ``nnx.value_and_grad``: the
  model's non-parameter state is updated by the gradient's forward pass (RNG
  counts advance, BatchNorm's running averages move) exactly as with
  ``nnx.value_and_grad`` alone, and ``value_fn`` reads the loss with the
  gradient's dropout masks (``fresh_dropout=False``), so ``value=loss``
  and the probes compare like with like.

  Example::

    @nnx.jit
    def train_step(model, optimizer, x, y):
      loss, grads, value_fn = sadam_optax.flax_utils.nnx_value_and_grad(
          loss_fn, model, x, y, wrt=optimizer.wrt)
      optimizer.update(model, grads, value_fn=value_fn, value=loss)
      return loss

  With ``loss_fn(model, x, y) -> (loss, logits)``, as in the Flax
  tutorials::

    (loss, logits), grads, value_fn = nnx_value_and_grad(
        loss_fn, model, x, y, wrt=optimizer.wrt, has_aux=True)

  Args:
    loss_fn: ``loss_fn(model, *args, **kwargs) -> scalar``, or ``-> (loss,
      aux)`` with ``has_aux=True``.
    model: the ``nnx.Module`` being trained.
    *args: passed to ``loss_fn`` after the model.
    wrt: the optimizer's variable filter (default ``nnx.Param``).
    fresh_dropout: see :func:`nnx_value_fn`.
    has_aux: ``loss_fn`` returns a pair ``(loss, aux)``, as with
      ``nnx.value_and_grad(loss_fn, has_aux=True)``: the gradient is the
      loss's, ``(loss, aux)`` is returned in place of the loss and
      ``value_fn`` returns the loss alone. Without it, a ``loss_fn`` that
      returns a tuple raises a ``ValueError`` that suggests it.
    **kwargs: passed to ``loss_fn``.

  Returns:
    ``(loss, grads, value_fn)``: the loss at the current parameters, its
    gradient (an ``nnx.State`` like ``nnx.grad``'s) and the pure
    ``value_fn``; ``((loss, aux), grads, value_fn)`` with ``has_aux=True``.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  wrt = nnx.Param if wrt is None else wrt
  value_fn = nnx_value_fn(
    model, loss_fn, *args, wrt=wrt, fresh_dropout=fresh_dropout, has_aux=has_aux, **kwargs
  )

  def loss_of(m, args, kwargs):
    loss, aux = _loss_and_aux(loss_fn(m, *args, **kwargs), has_aux, 'nnx_value_and_grad')
    return (loss, aux) if has_aux else loss

  # The arguments go through the transform, not a closure: NNX objects among
  # them (an nnx.Rngs for dropout) are then updated as the model is.
  value, grads = nnx.value_and_grad(loss_of, argnums=nnx.DiffState(0, wrt), has_aux=has_aux)(
    model, args, kwargs
  )
  return value, grads, value_fn


# --------------------------------------------------------------------------
# flax.linen
# --------------------------------------------------------------------------


def _linen_apply(apply_fn, params, args, variables, rngs, apply_kwargs):
  """``(outputs, mutated collections)`` of one linen forward pass."""
  apply_kwargs = dict(apply_kwargs)
  mutable = apply_kwargs.pop('mutable', list(variables) or False)
  if rngs is not None:
    apply_kwargs['rngs'] = rngs
  out = apply_fn({'params': params, **variables}, *args, mutable=mutable, **apply_kwargs)
  if mutable is False:
    return out, {}
  return out


def linen_value_fn(
  apply_fn: Callable[..., Any],
  loss_fn: Callable[[Any], Any],
  *args: Any,
  variables: Optional[Mapping[str, Any]] = None,
  rngs: Optional[Mapping[str, Any]] = None,
  fresh_dropout: bool = False,
  has_aux: bool = False,
  **apply_kwargs: Any,
) -> Callable[[Any], Any]:
  """A pure ``value_fn`` for a linen model from its ``apply_fn``.

  ``value_fn(params) = loss_fn(apply_fn({'params': params, **variables},
  *args, rngs=rngs, mutable=list(variables), **apply_kwargs))``, with the
  mutated collections discarded:

  * BatchNorm in train mode (``use_running_average=False``) normalises with
    the batch's statistics at the probed point; ``batch_stats`` are made
    mutable so that it can run, and the probes' updates are dropped.
  * Dropout draws its masks from ``rngs``: pass the key of the gradient's
    forward pass (``rngs={'dropout': key}``) and every probe uses the
    gradient's own mask. ``fresh_dropout=True`` folds a fingerprint of each
    probed point into those keys: a new mask at each point.

  Example (in a jitted train step, ``state`` holding ``batch_stats``)::

    value_fn = sadam_optax.flax_utils.linen_value_fn(
        state.apply_fn, lambda logits: xent(logits, y), x,
        variables={'batch_stats': state.batch_stats},
        rngs={'dropout': key}, train=True)
    state = state.apply_gradients(grads=grads, value_fn=value_fn)

  Args:
    apply_fn: the model's ``apply`` (``state.apply_fn``).
    loss_fn: ``loss_fn(outputs) -> scalar`` (close over the labels), or
      ``-> (loss, aux)`` with ``has_aux=True``.
    *args: passed to ``apply_fn`` after the variables (the inputs).
    variables: the non-parameter collections, e.g. ``{'batch_stats': bs}``
      (default none). They are applied as mutable unless ``apply_kwargs``
      gives ``mutable=``.
    rngs: the PRNG keys of the forward pass, e.g. ``{'dropout': key}``.
    fresh_dropout: a new dropout mask at each probed point.
    has_aux: ``loss_fn`` returns a pair ``(loss, aux)``; ``value_fn``
      returns the loss alone. Without it, a ``loss_fn`` that returns a tuple
      makes ``value_fn`` raise a ``ValueError``.
    **apply_kwargs: passed to ``apply_fn`` (``train=True``, ...).

  Returns:
    ``value_fn(params) -> scalar``, a pure function of the parameters.
  """
  variables = dict(variables or {})

  def value_fn(params):
    keys = rngs
    if fresh_dropout and rngs is not None:
      h = fingerprint(params)
      keys = {k: jax.random.fold_in(v, h) for k, v in rngs.items()}
    out, _ = _linen_apply(apply_fn, params, args, variables, keys, apply_kwargs)
    return _loss_and_aux(loss_fn(out), has_aux, 'linen_value_fn')[0]

  return value_fn


def linen_value_and_grad(
  apply_fn: Callable[..., Any],
  loss_fn: Callable[[Any], Any],
  params: Any,
  *args: Any,
  variables: Optional[Mapping[str, Any]] = None,
  rngs: Optional[Mapping[str, Any]] = None,
  fresh_dropout: bool = False,
  has_aux: bool = False,
  **apply_kwargs: Any,
) -> tuple[Any, Any, Callable[[Any], Any], dict]:
  """``(loss, grads, value_fn, new_variables)`` of a linen model, consistently.

  One forward and backward pass at ``params`` with ``rngs`` and
  ``variables`` (mutable, so BatchNorm updates its running averages), and
  the :func:`linen_value_fn` that reads the loss with the same masks.

  Example (in a jitted train step; ``state`` is a :class:`TrainState`
  subclass with a ``batch_stats`` field, which ``**new_vars`` replaces: the
  class itself has none and would raise a ``TypeError``)::

    class State(sadam_optax.flax_utils.TrainState):
      batch_stats: Any

    loss, grads, value_fn, new_vars = (
        sadam_optax.flax_utils.linen_value_and_grad(
            state.apply_fn, lambda logits: xent(logits, y), state.params, x,
            variables={'batch_stats': state.batch_stats},
            rngs={'dropout': key}, train=True))
    state = state.apply_gradients(grads=grads, value_fn=value_fn,
                                  value=loss, **new_vars)

  With ``loss_fn(logits) -> (loss, aux)``, pass ``has_aux=True``: the first
  result is then ``(loss, aux)``.

  Args:
    apply_fn: the model's ``apply``.
    loss_fn: ``loss_fn(outputs) -> scalar``, or ``-> (loss, aux)`` with
      ``has_aux=True``.
    params: the parameters (``variables['params']``).
    *args: passed to ``apply_fn`` after the variables.
    variables: the non-parameter collections (see :func:`linen_value_fn`).
    rngs: the PRNG keys of the forward pass.
    fresh_dropout: see :func:`linen_value_fn`.
    has_aux: ``loss_fn`` returns a pair ``(loss, aux)``, as with
      ``jax.value_and_grad(has_aux=True)``: the gradient is the loss's,
      ``(loss, aux)`` is returned in place of the loss and ``value_fn``
      returns the loss alone. Without it, a ``loss_fn`` that returns a tuple
      raises a ``ValueError`` that suggests it.
    **apply_kwargs: passed to ``apply_fn``.

  Returns:
    ``(loss, grads, value_fn, new_variables)``: the loss and gradient at
    ``params``, the pure ``value_fn`` and the collections as the forward
    pass left them (``{'batch_stats': ...}``, ``{}`` if none);
    ``((loss, aux), grads, value_fn, new_variables)`` with ``has_aux=True``.
  """
  variables = dict(variables or {})
  value_fn = linen_value_fn(
    apply_fn,
    loss_fn,
    *args,
    variables=variables,
    rngs=rngs,
    fresh_dropout=fresh_dropout,
    has_aux=has_aux,
    **apply_kwargs,
  )

  def with_updates(p):
    out, updates = _linen_apply(apply_fn, p, args, variables, rngs, apply_kwargs)
    loss, aux = _loss_and_aux(loss_fn(out), has_aux, 'linen_value_and_grad')
    return loss, (aux, dict(updates))

  (loss, (aux, new_variables)), grads = jax.value_and_grad(with_updates, has_aux=True)(params)
  return ((loss, aux) if has_aux else loss), grads, value_fn, new_variables
