"""Probe every k-th step at 1/k of the cost: two compiled train steps.

``lgi_probe(probe_every=k)`` skips the probe on the other steps inside one
compiled step, with a ``lax.cond`` around the probe's forward pass. On XLA:CPU
(and on a GPU, where the predicate is read back) that conditional costs about
as much as it saves. :func:`every_k` compiles the train step twice instead,
once with the probe (``probe_now=True``) and once without it
(``probe_now=False``: rho and the damping carried, the brake's store left
alone: AdamW's passes over the parameters plus a few scalars), and
picks one from Python by the step count. Both versions share one optimizer
state, so the trajectory is the one ``probe_every=k`` gives (bit for bit in
the tests; where XLA fuses the two programs differently, to float32 rounding).

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

import functools
import operator
import sys
from typing import Any, Callable

import jax

from sadam_optax import lgi


class EveryK:
  """A train step compiled with and without the probe. See :func:`every_k`.

  Attributes:
    probed: the jitted step with ``probe_now=True``.
    carried: the jitted step with ``probe_now=False`` (rho carried).
    k: probe every ``k``-th step.
    offset: probe where ``step % k == offset``, and on step 0.
    jit: the transform that compiled both (``jax.jit`` or ``nnx.jit``).
  """

  def __init__(
    self,
    probed: Callable[..., Any],
    carried: Callable[..., Any],
    *,
    k: int,
    offset: int,
    jit: Callable[..., Any] = jax.jit,
  ):
    self.probed, self.carried, self.k, self.offset = probed, carried, k, offset
    self.jit = jit
    # Under jax.jit the arguments are checked for NNX objects until one call
    # passes: a train loop hands the same kinds every step, and a flatten of
    # the whole tree on each step would cost the loop's Python time.
    self._unchecked = jit is jax.jit

  def probes_at(self, step: Any) -> bool:
    """Whether step ``step`` (0 for the first) probes.

    The rule of ``lgi_probe(probe_every=k, probe_offset=offset)``: the first
    step, then every step where ``step % k == offset``.

    Args:
      step: the number of steps taken before this one: a Python int, a NumPy
        integer or a concrete integer array (read back to the host).

    Returns:
      A Python bool.
    """
    if isinstance(step, jax.core.Tracer):
      raise TypeError(
        'every_k chooses between two compiled steps from Python: call it '
        'with a Python int step count, not inside jit, scan or vmap '
        f'(got a traced {step}).'
      )
    try:
      step = operator.index(step)
    except TypeError:
      step = int(step)  # A concrete 0-d integer array.
    return step == 0 or step % self.k == self.offset

  def __call__(self, step: Any, *args: Any, **kwargs: Any) -> Any:
    """Runs step number ``step``: ``probed`` or ``carried`` on the arguments."""
    fn = self.probed if self.probes_at(step) else self.carried
    if self._unchecked:
      _refuse_nnx_objects(args, kwargs)
      self._unchecked = False
    return fn(*args, **kwargs)

  def __repr__(self) -> str:
    return f'EveryK(k={self.k}, offset={self.offset})'


def _refuse_nnx_objects(args: Any, kwargs: Any) -> None:
  """Refuses NNX objects among a ``jax.jit`` step's arguments, with the fix.

  ``jax.jit`` treats an ``nnx.Module`` or ``nnx.Optimizer`` as a pytree and
  drops whatever the step writes to it: the step would run and train nothing.
  """
  nnx_graph = sys.modules.get('flax.nnx.graph')
  if nnx_graph is None:  # flax.nnx never imported: no NNX object can be here.
    return
  found = [
    type(x).__name__
    for x in jax.tree.leaves((args, kwargs), is_leaf=nnx_graph.is_graph_node)
    if nnx_graph.is_graph_node(x)
  ]
  if found:
    raise TypeError(
      f'every_k compiled this step with jax.jit, which drops what the step writes to the NNX '
      f'objects it is given ({", ".join(sorted(set(found)))}): the model would not train. Pass '
      'every_k(train_step, k, jit=nnx.jit) for a step over NNX objects.'
    )


def every_k(
  train_step: Callable[..., Any],
  k: int,
  *,
  offset: int = 0,
  jit: Callable[..., Any] = jax.jit,
  **jit_kwargs: Any,
) -> EveryK:
  """Probes rho every ``k``-th step, the other steps compiled without the probe.

  ``train_step`` takes a keyword ``probe_now`` (a Python bool) and passes it
  to the optimizer's ``update``. ``every_k`` jits it twice, with
  ``probe_now=True`` and with ``probe_now=False``, and the returned callable
  takes the step count first and runs the right one: two compilations in
  all, whatever the number of steps. It keeps no state: the caller owns the
  step count (the loop index, or the checkpointed step after a resume), so
  checkpointing and resuming need nothing more.

  The optimizer keeps ``probe_every=1`` (its default): ``probe_now=`` decides
  instead. The trajectory is the one of ``probe_every=k`` with
  ``probe_offset=offset`` without its ``lax.cond`` (bit for bit in the tests;
  to float32 rounding where XLA fuses the programs differently).

  Example::

    >>> import functools, jax, jax.numpy as jnp, optax, sadam_optax
    >>> loss = lambda w, x: jnp.mean(jnp.abs(x @ w - 1.0))
    >>> opt = sadam_optax.sadamw(1e-2)
    >>> def train_step(w, state, x, *, probe_now):
    ...   value, grads = jax.value_and_grad(loss)(w, x)
    ...   updates, state = opt.update(
    ...       grads, state, w, value_fn=functools.partial(loss, x=x),
    ...       value=value, grad=grads, probe_now=probe_now)
    ...   return optax.apply_updates(w, updates), state
    >>> step = sadam_optax.every_k(train_step, 4, donate_argnums=(0, 1))
    >>> w, x = jnp.zeros(3), jnp.ones((8, 3))
    >>> state = opt.init(w)
    >>> for i in range(10):  # Probes steps 0, 4 and 8.
    ...   w, state = step(i, w, state, x)
    >>> step.probes_at(8), step.probes_at(9)
    (True, False)

  Args:
    train_step: ``train_step(*args, probe_now: bool, **kwargs)``, not jitted
      (every_k jits it).
    k: probe every ``k``-th step, a static int >= 1 (1: every step, one
      compilation).
    offset: probe where ``step % k == offset`` (and on step 0), as
      ``lgi_probe``'s ``probe_offset``; an int in ``[0, k)``.
    jit: the transform that compiles both versions: ``jax.jit``, or
      ``nnx.jit`` for a step that takes NNX objects (a model, an
      ``nnx.Optimizer``) and updates them in place; ``jax.jit`` would drop
      those updates, so with it such arguments are refused.
    **jit_kwargs: passed to ``jit`` for both versions (``donate_argnums``,
      ``static_argnums``, shardings, ...).

  Returns:
    An :class:`EveryK`: call it as ``step(step_count, *args, **kwargs)``. Its
    ``probed`` and ``carried`` attributes are the two jitted functions (to
    ``lower`` and ``compile`` ahead of time, say).

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  k = lgi.static_int('k', k, minimum=1)
  offset = lgi.static_int('offset', offset, minimum=0)
  if k > 1 and offset >= k:
    raise ValueError(f'offset={offset} must be smaller than k={k}.')
  probed = jit(functools.partial(train_step, probe_now=True), **jit_kwargs)
  carried = probed if k == 1 else jit(functools.partial(train_step, probe_now=False), **jit_kwargs)
  return EveryK(probed, carried, k=k, offset=0 if k == 1 else offset, jit=jit)
