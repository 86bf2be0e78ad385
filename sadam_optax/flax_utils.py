"""Flax helpers: pass the loss to S-Adam from linen and nnx training loops.

``flax.training.train_state.TrainState.apply_gradients`` does not forward
extra keyword arguments to ``tx.update``, so S-Adam never sees ``value_fn``
there: use :class:`TrainState` below (a drop-in subclass) or
:func:`apply_gradients`. ``flax.nnx.Optimizer.update(model, grads, **kwargs)``
does forward them; :func:`nnx_value_fn` builds the ``value_fn`` it needs.
Flax is imported when these helpers are first used, so ``import sadam_optax``
stays light.
"""

from typing import Any, Callable

import optax


def apply_gradients(state: Any, *, grads: Any, **update_kwargs: Any) -> Any:
  """``state.apply_gradients(grads=grads)`` that forwards ``update_kwargs``.

  Example (inside a jitted train step)::

    loss_of = lambda p: loss_fn(p, batch)
    grads = jax.grad(loss_of)(state.params)
    state = sadam_optax.flax_utils.apply_gradients(
        state, grads=grads, value_fn=loss_of)

  Args:
    state: a ``flax.training.train_state.TrainState`` (or subclass).
    grads: gradients with the structure of ``state.params``.
    **update_kwargs: passed to ``state.tx.update``: ``value_fn=`` for S-Adam
      (``params -> scalar`` loss), and anything it forwards.

  Returns:
    The state with ``step`` incremented and ``params``, ``opt_state`` updated.
  """
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params,
                                       **update_kwargs)
  return state.replace(step=state.step + 1,
                       params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state)


def _train_state_class():
  from flax.training import train_state  # pylint: disable=g-import-not-at-top

  class TrainState(train_state.TrainState):
    """A linen ``TrainState`` whose ``apply_gradients`` forwards ``value_fn``.

    ``state.apply_gradients(grads=g, value_fn=loss_of_params)``; other
    keywords are ``replace``-d into the state, as in flax's own class.
    """

    def apply_gradients(self, *, grads, value_fn=None, update_kwargs=None,
                        **kwargs):
      extra = dict(update_kwargs or {})
      if value_fn is not None:
        extra['value_fn'] = value_fn
      return apply_gradients(self, grads=grads, **extra).replace(**kwargs)

  return TrainState


def __getattr__(name: str) -> Any:
  # The TrainState subclass needs flax: build it on first access only.
  if name == 'TrainState':
    cls = _train_state_class()
    globals()['TrainState'] = cls
    return cls
  raise AttributeError(name)


def nnx_value_fn(model: Any, loss_fn: Callable[..., Any], *args: Any,
                 wrt: Any = None, **kwargs: Any) -> Callable[[Any], Any]:
  """A ``value_fn`` for ``nnx.Optimizer.update`` from a model and a loss.

  ``nnx.Optimizer`` hands S-Adam a pure ``nnx.State`` of the parameters; the
  loss is computed on the model with that state merged back in. Works inside
  ``nnx.jit``.

  Example::

    @nnx.jit
    def train_step(model, optimizer, x, y):
      grads = nnx.grad(loss_fn)(model, x, y)
      optimizer.update(model, grads,
                       value_fn=nnx_value_fn(model, loss_fn, x, y))

  Args:
    model: the ``nnx.Module`` being trained.
    loss_fn: ``loss_fn(model, *args, **kwargs) -> scalar``.
    *args: passed to ``loss_fn`` after the model (the batch).
    wrt: the variable filter of the optimizer (default ``nnx.Param``).
    **kwargs: passed to ``loss_fn``.

  Returns:
    ``value_fn(params_state) -> scalar``.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  wrt = nnx.Param if wrt is None else wrt
  graphdef, _, rest = nnx.split(model, wrt, ...)

  def value_fn(params):
    return loss_fn(nnx.merge(graphdef, params, rest), *args, **kwargs)

  return value_fn
