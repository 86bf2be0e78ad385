"""The probe as an optax transformation: rho along the step, recorded.

:func:`lgi_probe` measures the Local Geometric Instability rho along the step
it receives (:mod:`sadam_optax.lgi`) and records it in its state, leaving the
updates unchanged: a diagnostic to place last in any chain. It is also the
probe configuration that :func:`sadam_optax.damping_scale` takes, and
:func:`measure` is the one reading both call.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

import inspect
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sadam_optax import lgi
from sadam_optax import tree_math

# What a reading lost in the loss's rounding keeps of the last rho, per such
# probe. Reading the step as smooth (0, the rule before 0.6) released the brake
# on most steps near a float32 minimiser and braked only the few large enough
# to measure: on Huber regression at lr 1e-3 over 10,000 steps the default
# ended wider than Adam at the median (docs: findings, nonsmooth suite).
# Fading lets go of a reading that no later step confirms (a loss computed in
# bfloat16 resolves few) over about a hundred probes.
UNRESOLVED_FADE = 0.99


class LGIProbeState(NamedTuple):
  """State of :func:`lgi_probe` (and of the probe inside the brake).

  Attributes:
    count: steps seen (int32).
    probe_key: raw PRNG key data (uint32) of the probes, split on every probed
      step; raw so that the state serialises like optax's own.
    rho: the last measured Local Geometric Instability (float32).
    nonfinite_probes: probed steps whose probes returned NaN or inf (int32);
      rho was carried over on those, except where a secant reading
      (``'uphill'``, ``'secant'``) saw the loss turn non-finite along a finite
      step from a finite start: that step leaves the loss's domain and reads
      as uphill all the way, rho 1 (since 0.8).
    unresolved_probes: probed steps whose reading was lost in the loss's
      rounding (the loss changed along the step by no more than its last
      bits: :func:`sadam_optax.lgi.secant_reading`); rho was carried over on
      those, faded by the probe's ``unresolved_fade`` (int32).
    prev_direction: ``'trajectory'`` only: the previous step, unit norm, in
      the parameters' dtypes (an empty tuple otherwise).
    prev_slope: ``'trajectory'`` only: the previous gradient's directional
      derivative along the previous step (float32).
  """

  count: jax.Array
  probe_key: jax.Array
  rho: jax.Array
  nonfinite_probes: jax.Array
  unresolved_probes: jax.Array
  prev_direction: Any
  prev_slope: jax.Array


class LGIProbe(optax.GradientTransformationExtraArgs):
  """A probe: a transformation that records rho, and the probe's settings.

  Build it with :func:`lgi_probe`. Its settings are attributes:
  ``estimator``, ``num_probes``, ``probe_radius``, ``probe_every``,
  ``probe_offset``, ``chunk_size``, ``axis_name``, ``seed``,
  ``probe_placement``, ``unresolved_fade``.
  """


def every_step(probe: LGIProbe) -> bool:
  """Statically every step (a traced ``probe_every`` decides at run time)."""
  return isinstance(probe.probe_every, int) and probe.probe_every == 1


def probe_due(probe: LGIProbe, count: jax.Array) -> jax.Array:
  """Whether ``count`` is a probed step: the first, then every k-th."""
  k = jnp.maximum(probe.probe_every, 1)  # Traced (inject_hyperparams).
  return (count == 0) | (count % k == probe.probe_offset)


def init_probe_state(probe: LGIProbe, params: Any) -> LGIProbeState:
  trajectory = probe.estimator == 'trajectory'
  return LGIProbeState(
    count=jnp.zeros([], jnp.int32),
    probe_key=jax.random.key_data(jax.random.key(probe.seed)),
    rho=jnp.zeros([], jnp.float32),
    nonfinite_probes=jnp.zeros([], jnp.int32),
    unresolved_probes=jnp.zeros([], jnp.int32),
    prev_direction=(optax.tree.zeros_like(params) if trajectory else ()),
    prev_slope=jnp.zeros([], jnp.float32),
  )


# Keywords of ``update`` that S-Adam reads itself; never forwarded to value_fn.
OWN_ARGS = ('value_fn', 'value', 'grad', 'probe_now')


def value_fn_kwargs(value_fn: Callable[..., Any], extra_args: dict[str, Any]) -> dict[str, Any]:
  """The extra keyword arguments that ``value_fn``'s signature names.

  Same convention as optax's line searches: other keywords are ignored, and
  so are the ones ``update`` takes for itself (:data:`OWN_ARGS`), as optax's
  line searches never hand ``value`` or ``grad`` to the loss: a loss with a
  keyword of that name keeps its own default.
  """
  _check_callable(value_fn)
  names = inspect.signature(value_fn).parameters
  return {k: v for k, v in extra_args.items() if k in names and k not in OWN_ARGS}


def _check_callable(value_fn: Any) -> None:
  if not callable(value_fn):
    kind = 'jax.Array' if isinstance(value_fn, jax.Array) else type(value_fn).__name__
    raise TypeError(
      f'value_fn= must be a function of the params returning the scalar loss, got a {kind} '
      f'({repr(value_fn)[:60]}): pass value_fn=loss_of_params (e.g. lambda p: loss(p, batch)), '
      'and the loss value itself as value=loss.'
    )


def _missing_value_fn(estimator: str) -> ValueError:
  return ValueError(
    f"S-Adam's probe (estimator='{estimator}') needs the loss: call "
    'update(grads, state, params, value_fn=loss_of_params), where '
    'loss_of_params(params) -> scalar. Inside a jitted train step, close '
    'over the batch (value_fn=lambda p: loss(p, batch)) or bind it with '
    'functools.partial: a function cannot be an argument of a jitted call. '
    'If you did pass value_fn, a wrapper dropped it on the way: '
    'flax.training.train_state.TrainState.apply_gradients does (use '
    'sadam_optax.flax_utils.TrainState, a drop-in subclass that passes it), '
    'and so do optax.lookahead, optax.contrib.sam and '
    'MultiSteps(...).gradient_transformation() (use optax.MultiSteps itself, '
    "or estimator='trajectory', which needs no loss)."
  )


def _missing_grad(estimator: str) -> ValueError:
  return ValueError(
    f"estimator='{estimator}' reads the slope of the loss from its "
    'gradient, and here the updates it receives are not the gradient (it '
    'sits after another transformation in a chain): pass grad=grads to '
    'update(), the gradient of the loss with respect to params.'
  )


def _check_params(params: Any) -> None:
  if params is None:
    raise ValueError("S-Adam's probe needs params: call update(grads, state, params, ...).")
  if any(
    isinstance(x, optax.MaskedNode)
    for x in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  ):
    raise ValueError(
      "S-Adam's probe sees masked parameters: it sits inside "
      'optax.masked / optax.partition (multi_transform), which hand it a '
      'pruned tree on which the loss cannot be evaluated. Put it outside: '
      'mask the inner optimizer instead, e.g. '
      'singularity_aware(optax.partition(...)). (sadamw(mask=...) masks only '
      "the weight decay, as optax.adamw's does: every parameter still trains.)"
    )


def check_state(state: Any, expected: type, owner: str) -> None:
  """Refuses a state that ``owner``'s ``init`` did not make, saying how to get one.

  Args:
    state: the state handed to ``update``.
    expected: the state's ``NamedTuple`` class.
    owner: the transformation's name, for the message.

  Raises:
    TypeError: ``state`` is not an ``expected`` (another optimizer's state, a
      checkpoint restored without a target, None).
  """
  if not isinstance(state, expected):
    raise TypeError(
      f'{owner} was handed a state of type {type(state).__name__}, not the {expected.__name__} '
      "that its init makes: start from this optimizer's own state (opt_state = opt.init(params)); "
      "restore a checkpoint into opt.init(params) as its target; another optimizer's state "
      'cannot be reused.'
    )


def _check_value(value: Any) -> None:
  if isinstance(value, (tuple, list, dict)):
    raise ValueError(
      f'value= must be the loss at params as a scalar, got a {type(value).__name__}: '
      'pass the loss alone (with jax.value_and_grad(f, has_aux=True), '
      '(loss, aux), grads = ... and value=loss).'
    )
  if value is None:
    return
  try:
    dtype = None if isinstance(value, (str, bytes, bool)) else jnp.result_type(value)
  except TypeError:
    dtype = None
  if dtype is None or not (
    jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
  ):
    raise ValueError(
      f'value= must be the loss at params as a real number, got {value!r:.60}: pass the '
      'float loss that value_fn returns at params.'
    )
  if jnp.shape(value) != ():
    raise ValueError(
      f'value= must be the loss at params as a scalar, got shape '
      f'{jnp.shape(value)}: reduce it (e.g. jnp.mean over the batch).'
    )


def _check_fade(fade: Any) -> None:
  if isinstance(fade, jax.core.Tracer):  # Under optax.inject_hyperparams.
    return
  try:
    ok = 0 <= float(fade) <= 1
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(
      f"unresolved_fade={fade!r}: a share in [0, 1] (0 reads a step lost in the loss's "
      'rounding as smooth, 1 keeps the last reading).'
    )


def _check_seed(seed: Any) -> None:
  # Traced under optax.inject_hyperparams: jax.random.key checks it then.
  if isinstance(seed, jax.core.Tracer):
    return
  dtype = getattr(seed, 'dtype', None)
  integer = (
    jnp.issubdtype(dtype, jnp.integer) and jnp.ndim(seed) == 0
    if dtype is not None
    else isinstance(seed, int) and not isinstance(seed, bool)
  )
  if not integer:
    raise TypeError(f"seed={seed!r}: the probes' PRNG seed must be an integer (e.g. seed=0).")


def _loss_of(value_fn: Callable[..., Any], extra_args: dict[str, Any]) -> Callable[[Any], Any]:
  kwargs = value_fn_kwargs(value_fn, extra_args)
  if not kwargs:
    return value_fn
  return lambda p: value_fn(p, **kwargs)


def _trajectory(probe: LGIProbe, state: LGIProbeState, grad: Any, params: Any, step: Any):
  """rho from the previous step's slopes at both ends; no extra pass."""
  end_slope = tree_math.tree_dot(grad, state.prev_direction).astype(jnp.float32)
  samples = jnp.stack([state.prev_slope, end_slope])
  unit, _ = tree_math.unit_direction(step)
  new_slope = tree_math.tree_dot(grad, unit).astype(jnp.float32)
  samples = lgi.replica_mean(samples, probe.axis_name, params)
  new_slope = lgi.replica_mean(new_slope, probe.axis_name, params)
  # The first step has no previous step: rho stays 0.
  rho = jnp.where(state.count > 0, lgi.instability_ratio(samples), 0.0)
  # Stored in the parameters' dtypes: the state keeps its types under jit,
  # lax.scan and lax.cond whatever the step's dtype (mu_dtype=float32).
  unit = jax.tree.map(lambda u, p: u.astype(p.dtype), unit, params)
  return rho, jnp.all(jnp.isfinite(samples)), unit, new_slope


def measure(
  probe: LGIProbe,
  state: LGIProbeState,
  step: Any,
  params: Any,
  *,
  grad: Any,
  value_fn: Optional[Callable[..., Any]],
  extra_args: dict[str, Any],
  step_scale: Optional[jax.Array] = None,
) -> LGIProbeState:
  """One step of the probe: rho along ``step``, in the returned state.

  Args:
    probe: the probe's settings (:func:`lgi_probe`).
    state: its state.
    step: the proposed step in parameter space (new params minus params).
    params: the current parameters.
    grad: the loss's gradient at ``params`` (None where not known).
    value_fn: ``params -> scalar`` loss (None allowed for ``'trajectory'``).
    extra_args: the ``update`` call's other keywords: ``value=`` (the loss at
      ``params``), ``probe_now=`` (a Python bool: probe on this step or
      carry rho, decided when tracing) and those ``value_fn`` names.
    step_scale: a scalar; if given, the step is ``step_scale * step``, formed
      only where a reading needs it (:func:`sadam_optax.lgi.secant_samples`
      never materialises it, inside or outside a ``lax.cond``).

  Returns:
    The new :class:`LGIProbeState`; a probe that saw NaN or inf keeps the
    last rho (nothing non-finite reaches the damping), except a secant
    reading of a step that leaves the loss's domain, which reads 1; one
    whose reading was lost in the loss's rounding keeps it faded by
    ``unresolved_fade``.
  """
  e = probe.estimator
  _check_params(params)
  if value_fn is not None:
    _check_callable(value_fn)
  # Python scalars as parameters (optax takes them, eagerly): leaves need a dtype.
  params = jax.tree.map(jnp.asarray, params)
  if e in lgi.NEEDS_GRAD:
    if grad is None:
      raise _missing_grad(e)
    lgi.check_like_params(grad, params, 'grad')
  value = extra_args.get('value')
  _check_value(value)
  probe_now = extra_args.get('probe_now')
  if probe_now is not None and not isinstance(probe_now, bool):
    raise ValueError(f'probe_now= must be a Python bool (decided when tracing), got {probe_now!r}.')
  prev_direction, prev_slope = state.prev_direction, state.prev_slope
  key = state.probe_key
  escaped = jnp.bool_(False)
  if e == 'trajectory':
    step = tree_math.scale_step(step, step_scale)
    rho, finite, prev_direction, prev_slope = _trajectory(probe, state, grad, params, step)
    resolved = jnp.bool_(True)
  else:
    if value_fn is None:
      raise _missing_value_fn(e)
    loss = _loss_of(value_fn, extra_args)
    lgi.check_value_fn(loss, params, estimator=e)
    # A state cast as a whole (optax.tree.cast) holds the key data as floats:
    # read them back as integers, return them in the dtype they came in.
    key, sub = jax.random.split(jax.random.wrap_key_data(state.probe_key.astype(jnp.uint32)))
    key = jax.random.key_data(key).astype(state.probe_key.dtype)

    def run(_):
      rho, samples, resolved = lgi.read_rho(
        e,
        loss,
        params,
        step,
        sub,
        grad=grad,
        value=value,
        num_probes=probe.num_probes,
        probe_radius=probe.probe_radius,
        chunk_size=probe.chunk_size,
        axis_name=probe.axis_name,
        placement=probe.probe_placement,
        step_scale=step_scale,
      )
      return (
        rho.astype(jnp.float32),
        jnp.all(jnp.isfinite(samples)),
        resolved,
        _left_the_domain(e, samples, value),
      )

    def carry(_):
      return state.rho, jnp.bool_(True), jnp.bool_(True), jnp.bool_(False)

    if probe_now is not None:
      rho, finite, resolved, escaped = (run if probe_now else carry)(None)
    elif every_step(probe):
      rho, finite, resolved, escaped = run(None)
    else:
      rho, finite, resolved, escaped = jax.lax.cond(probe_due(probe, state.count), run, carry, None)
  unresolved = finite & ~resolved
  faded = jnp.asarray(probe.unresolved_fade, jnp.float32) * state.rho
  # A step that leaves the loss's domain reads as uphill all the way; any
  # other non-finite reading keeps the last rho.
  kept = jnp.where(escaped, jnp.float32(1.0), state.rho)
  rho = jnp.where(finite, jnp.where(resolved, rho, faded), kept)
  return LGIProbeState(
    count=optax.safe_increment(state.count),
    probe_key=key,
    rho=rho,
    nonfinite_probes=state.nonfinite_probes + jnp.where(finite, 0, 1),
    unresolved_probes=state.unresolved_probes + jnp.where(unresolved, 1, 0),
    prev_direction=prev_direction,
    prev_slope=prev_slope,
  )


def _left_the_domain(estimator: str, samples: jax.Array, value: Any) -> jax.Array:
  """Whether a secant reading saw the loss turn non-finite along a finite step.

  The start slope, from the gradient, is finite and so is the loss at the
  start (where ``value`` tells it), but the mean slope is not: the loss at
  the step's end is NaN or inf. That step leaves where the loss is defined
  (a log or a square root of a negative, an overflow): the hardest brake,
  where carrying the last rho would take it in full.
  """
  if estimator not in lgi.SECANT_READINGS:
    return jnp.bool_(False)
  start = jnp.bool_(True) if value is None else jnp.all(jnp.isfinite(jnp.asarray(value)))
  return jnp.isfinite(samples[0]) & ~jnp.isfinite(samples[1]) & start


def lgi_probe(
  *,
  estimator: lgi.Estimator = lgi.DEFAULT_ESTIMATOR,
  num_probes: Optional[int] = None,
  probe_radius: Optional[float] = None,
  probe_every: int = 1,
  probe_offset: int = 0,
  chunk_size: Optional[int] = None,
  axis_name: Optional[str] = None,
  seed: int = 0,
  probe_placement: str = 'ends',
  unresolved_fade: float = UNRESOLVED_FADE,
) -> LGIProbe:
  """Measures rho along the step, as a transformation and a configuration.

  As a transformation it records rho in its state and returns the updates
  unchanged: place it last in a chain, where the updates are the step, to
  watch rho under any optimizer::

    opt = optax.chain(optax.adamw(1e-3), sadam_optax.lgi_probe())
    updates, state = opt.update(grads, state, params, value_fn=loss_of,
                                value=loss, grad=grads)
    rho = optax.tree.get(state, 'rho')

  As a configuration it is the ``probe=`` of :func:`damping_scale` and
  :func:`singularity_aware`.

  Args:
    estimator: which reading of rho (:mod:`sadam_optax.lgi`).
      ``'uphill'`` (default): the share of the step along which the loss
      rises, from the start slope of the step (from ``grad=``) and its mean
      slope (one forward pass at the step's end, none more with ``value=``).
      ``'secant'`` (the 0.1 default): the variance of the same two slopes.
      ``'step'``: directional derivatives (jvp, or vjp
      where the loss has a ``custom_vjp``) at ``num_probes`` points of the
      step. ``'literal'``: the authors' scripts (finite differences along
      random directions). ``'random-jvp'``: the paper's text (jvps along
      random directions at the current point; high wherever the loss is
      smooth). ``'trajectory'``: no extra pass (consecutive gradients).
    num_probes: probes per measurement, a static int >= 2 (None: 2 for
      ``'step'``, 8 for ``'literal'`` and ``'random-jvp'``; ``'uphill'``,
      ``'secant'`` and ``'trajectory'`` always read two slopes).
    probe_radius: > 0; relative noise radius for ``'step'`` (default 0.01),
      absolute finite-difference sigma for ``'literal'`` (default 0.01).
    probe_every: probe on the first step and then every ``probe_every``-th,
      carrying rho in between (a static int >= 1). The brake's store (its
      ``release``) takes and returns on the probed steps only; the steps in
      between are braked by the carried damping and what that holds back is
      dropped, so that they cost AdamW's passes. Under ``jit`` the skipped
      probe sits in a ``lax.cond``; to compile the skipped steps without it,
      pass ``probe_now=False`` / ``True`` to ``update`` from Python instead.
    probe_offset: probe where ``count % probe_every == probe_offset`` (and on
      the first step); 9 with ``probe_every=10`` probes steps 1, 10, 20, ...
      as the authors' lazy variant does.
    chunk_size: evaluate at most this many probes at once (``lax.map``); None
      (default): one at a time, the fastest in our benchmarks; ``num_probes``
      or more: all at once (vmapped). ``'random-jvp'`` always vmaps.
    axis_name: name of a ``shard_map``/``pmap`` data axis. The probe values
      are averaged over it, so every replica sees the rho of the global batch.
    seed: seed of the probes' PRNG key (``'step'``, ``'literal'``,
      ``'random-jvp'``; the others draw nothing).
    probe_placement: ``'step'`` only: ``'ends'`` (default, probes evenly
      spaced with both ends) or ``'slices'`` (one random point per slice, the
      placement the validation replaced; kept for the ablation).
    unresolved_fade: in [0, 1]: what a reading lost in the loss's rounding
      keeps of the last rho (``'uphill'`` and ``'secant'``; the others always
      resolve). Default 0.99: the last reading, let go over about a hundred
      such probes; 0 reads such a step as smooth (the rule before 0.6), 1
      keeps the last reading until another resolves.

  Returns:
    An :class:`LGIProbe`: an ``optax.GradientTransformationExtraArgs`` whose
    state is an :class:`LGIProbeState`.
  """
  lgi.check_estimator(estimator)
  lgi.check_placement(probe_placement)
  num_probes = lgi.resolve_num_probes(estimator, num_probes)
  probe_radius = lgi.resolve_probe_radius(estimator, probe_radius)
  if not isinstance(probe_every, jax.core.Tracer):
    # Traced under optax.inject_hyperparams: then read at run time.
    probe_every = lgi.static_int('probe_every', probe_every, minimum=1, arrays=True)
  probe_offset = lgi.static_int('probe_offset', probe_offset, minimum=0)
  if isinstance(probe_every, int) and 1 < probe_every <= probe_offset:
    raise ValueError(
      f'probe_offset={probe_offset}: it must be smaller than probe_every={probe_every}.'
    )
  if chunk_size is not None:
    chunk_size = lgi.static_int('chunk_size', chunk_size, minimum=1)
  _check_seed(seed)
  _check_fade(unresolved_fade)

  def init_fn(params):
    return init_probe_state(probe, params)

  def update_fn(updates, state, params=None, *, value_fn=None, grad=None, **extra_args):
    check_state(state, LGIProbeState, 'lgi_probe')
    return updates, measure(
      probe, state, updates, params, grad=grad, value_fn=value_fn, extra_args=extra_args
    )

  probe = LGIProbe(init_fn, update_fn)
  probe.__dict__.update(
    estimator=estimator,
    num_probes=num_probes,
    probe_radius=probe_radius,
    probe_every=probe_every,
    probe_offset=probe_offset,
    chunk_size=chunk_size,
    axis_name=axis_name,
    seed=seed,
    probe_placement=probe_placement,
    unresolved_fade=unresolved_fade,
  )
  return probe
