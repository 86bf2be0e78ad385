"""The singularity-aware brake around any optax optimizer.

``singularity_aware(inner, ...)`` runs ``inner``, measures the Local Geometric
Instability rho along the step that ``inner`` proposes (:mod:`lgi`), and
multiplies that step by a damping factor in (0, 1]. The probe is configured by
:func:`lgi_probe`, the brake by :func:`damping_scale`. The brake only ever acts
on ``inner``'s output: placed before Adam it would almost cancel, since Adam's
direction is invariant to rescaling the gradient, so :func:`damping_scale` is
deliberately not a transformation that could be chained in front of one.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

import inspect
from typing import Any, Callable, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from sadam_optax import lgi

ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]
BrakeRule = Literal['exp', 'compound']
BRAKE_RULES = ('exp', 'compound')


# --------------------------------------------------------------------------
# Configuration: the probe and the brake.
# --------------------------------------------------------------------------


class LGIProbe(NamedTuple):
  """How rho is measured. Build it with :func:`lgi_probe`.

  Attributes:
    estimator: ``'secant'``, ``'step'``, ``'literal'`` or ``'trajectory'``
      (see :mod:`lgi`).
    num_probes: probes per measurement, a static int >= 2.
    probe_radius: estimator-specific radius (see :func:`lgi.estimate_lgi`).
    probe_every: measure every this many steps and carry rho in between.
    chunk_size: probes evaluated at once (None: one at a time).
    axis_name: mapped axis over which probe values are averaged.
  """
  estimator: str
  num_probes: int
  probe_radius: Any
  probe_every: Any
  chunk_size: Optional[int]
  axis_name: Optional[str]


def lgi_probe(*, estimator: lgi.Estimator = 'secant',
              num_probes: Optional[int] = None,
              probe_radius: Optional[float] = None,
              probe_every: int = 1,
              chunk_size: Optional[int] = None,
              axis_name: Optional[str] = None) -> LGIProbe:
  """Configures the measurement of rho.

  Args:
    estimator: which reading of rho (module doc of :mod:`lgi`).
      ``'secant'`` (default): the start slope of the proposed step (from the
      gradient) against its mean slope (one forward pass at the step's end);
      it detects kinks as ``'step'`` does and costs one forward pass, none more
      when ``update`` gets ``value=`` the loss at ``params``. ``'step'``:
      directional derivatives (jvp) at ``num_probes`` points of the step.
      ``'literal'`` reproduces the paper's scripts; ``'trajectory'`` needs no
      extra pass of the loss but stores the previous step (one more copy of
      the parameters) and mixes two batches.
    num_probes: probes per measurement, a static int >= 2 (None: 2 for
      ``'step'``, its two ends; 8 for ``'literal'``; ``'secant'`` and
      ``'trajectory'`` always read two slopes).
    probe_radius: > 0; relative noise radius for ``'step'`` (default 0.01),
      absolute finite-difference sigma for ``'literal'`` (default 0.01).
    probe_every: probe on every ``probe_every``-th step (first step included)
      and carry rho in between; cost of the probes divides by it.
    chunk_size: evaluate at most this many probes at once (``lax.map``),
      bounding activation memory; ``num_probes`` or more vmaps all of them.
      Default None, one probe at a time: it was faster on every model benchmarked (vmapping probes
      at different parameters turns each convolution into a batched one) and
      adds the least memory (``benchmarks/results/``).
    axis_name: name of a ``shard_map``/``pmap`` data axis. The probe values
      are averaged over it, so every replica sees the rho of the global batch.

  Returns:
    An :class:`LGIProbe`.
  """
  lgi.check_estimator(estimator)
  if isinstance(probe_every, (int, float)) and probe_every < 1:
    raise ValueError(f'probe_every={probe_every}: it must be an int >= 1.')
  if chunk_size is not None and (not isinstance(chunk_size, int)
                                 or chunk_size < 1):
    raise ValueError(f'chunk_size={chunk_size!r}: use None or an int >= 1.')
  return LGIProbe(
      estimator=estimator,
      num_probes=lgi.resolve_num_probes(estimator, num_probes),
      probe_radius=lgi.resolve_probe_radius(estimator, probe_radius),
      probe_every=probe_every, chunk_size=chunk_size, axis_name=axis_name)


class Brake(NamedTuple):
  """The damping rule. Build it with :func:`damping_scale`.

  Not a gradient transformation: wrap the optimizer with
  :func:`singularity_aware` so that the brake acts on its output.

  Attributes:
    lam: brake strength, a float >= 0 or a schedule of the step count.
    rule: ``'exp'`` (the paper) or ``'compound'``.
    recovery: ``'compound'`` only: log-damping regained per probed step.
    min_damping: ``'compound'`` only: the floor of the damping.
  """
  lam: ScalarOrSchedule
  rule: str
  recovery: float
  min_damping: float

  @property
  def init(self):
    raise TypeError(_NOT_A_TRANSFORM)

  @property
  def update(self):
    raise TypeError(_NOT_A_TRANSFORM)


_NOT_A_TRANSFORM = (
    'damping_scale(...) is not a gradient transformation and cannot be '
    'chained: braking the gradient before Adam would nearly cancel out. Wrap '
    'the optimizer instead: singularity_aware(optax.scale_by_adam(), '
    'brake=damping_scale(...)), or use sadam_optax.sadam / sadamw.')


def damping_scale(lam: ScalarOrSchedule = 2.0, *, rule: BrakeRule = 'exp',
                  recovery: float = 0.1, min_damping: float = 0.03) -> Brake:
  """Configures the brake applied to the optimizer's step.

  * ``'exp'``: the paper's rule, ``damping = exp(-lam * rho)``. One step can
    shrink by at most ``exp(-lam)``.
  * ``'compound'``: ``log d_t = clip(log d_{t-1} + recovery - lam * rho_t,
    log(min_damping), 0)``: the brake tightens while chattering persists and
    relaxes (by ``exp(recovery)`` per probe) when it stops.

  Args:
    lam: brake strength >= 0 (a float or a schedule of the step count). 0
      turns the brake off exactly.
    rule: ``'exp'`` or ``'compound'``.
    recovery: ``'compound'`` only, > 0.
    min_damping: ``'compound'`` only, in (0, 1]. 0.03 passed the chattering
      study everywhere; 1e-3 froze coordinates still travelling to the
      minimiser (``experiments/results/chattering_sweep.md``).

  Returns:
    A :class:`Brake`.

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  if isinstance(lam, (int, float)) and lam < 0:
    raise ValueError(f'lam={lam}: the brake strength must be >= 0 (0 turns '
                     'it off).')
  if rule not in BRAKE_RULES:
    raise ValueError(f'rule={rule!r} is unknown: choose one of {BRAKE_RULES}.')
  # Python numbers only: under optax.inject_hyperparams they arrive traced.
  if isinstance(recovery, (int, float)) and not recovery > 0:
    raise ValueError(f'recovery={recovery}: it must be > 0.')
  if isinstance(min_damping, (int, float)) and not 0 < min_damping <= 1:
    raise ValueError(f'min_damping={min_damping}: it must lie in (0, 1].')
  return Brake(lam=lam, rule=rule, recovery=recovery, min_damping=min_damping)


def _at(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """A constant or a schedule evaluated at ``count``, as float32."""
  return jnp.asarray(value(count) if callable(value) else value, jnp.float32)


def brake_factor(brake: Brake, rho: jax.Array, previous: jax.Array,
                 count: jax.Array) -> jax.Array:
  """The damping in (0, 1] for ``rho`` (``previous``: last damping)."""
  lam = _at(brake.lam, count)
  if brake.rule == 'exp':
    return jnp.exp(-lam * rho)
  log_d = jnp.log(previous) + brake.recovery - lam * rho
  return jnp.exp(jnp.clip(log_d, jnp.log(brake.min_damping), 0.0))


# --------------------------------------------------------------------------
# The transformation.
# --------------------------------------------------------------------------


class SingularityAwareState(NamedTuple):
  """State of :func:`singularity_aware`.

  Attributes:
    count: steps taken (int32).
    probe_key: PRNG key of the probes, split on every probed step.
    rho: the last measured Local Geometric Instability (float32).
    damping: the last damping factor applied to the step (float32).
    nonfinite_probes: probed steps whose probes returned NaN or inf; rho was
      carried over on those (int32).
    prev_direction: ``'trajectory'`` only: the previous step, unit norm
      (an empty tuple otherwise).
    prev_slope: ``'trajectory'`` only: the previous gradient's directional
      derivative along the previous step (float32).
    inner_state: the state of the wrapped optimizer.
  """
  count: jax.Array
  probe_key: jax.Array
  rho: jax.Array
  damping: jax.Array
  nonfinite_probes: jax.Array
  prev_direction: Any
  prev_slope: jax.Array
  inner_state: optax.OptState


def value_fn_kwargs(value_fn: Callable[..., Any],
                    extra_args: dict[str, Any]) -> dict[str, Any]:
  """The extra keyword arguments that ``value_fn``'s signature names.

  Same convention as optax's line searches: other keywords are ignored.
  """
  names = inspect.signature(value_fn).parameters
  return {k: v for k, v in extra_args.items() if k in names}


def _missing_value_fn(estimator: str) -> ValueError:
  return ValueError(
      f"singularity_aware with estimator='{estimator}' needs the loss: call "
      'update(grads, state, params, value_fn=loss_of_params), where '
      'loss_of_params(params) -> scalar. Inside a jitted train step, close '
      'over the batch (value_fn=lambda p: loss(p, batch)) or bind it with '
      'functools.partial: a function cannot be an argument of a jitted call. '
      'If you did pass value_fn, a wrapper dropped it on the way (optax.'
      'lookahead, optax.contrib.sam and MultiSteps(...).gradient_'
      'transformation() do): use optax.MultiSteps itself, or '
      "estimator='trajectory', which needs no loss.")


def _check_params(params: Any) -> None:
  if params is None:
    raise ValueError('singularity_aware needs params: call update(grads, '
                     'state, params, ...).')
  if any(isinstance(x, optax.MaskedNode) for x in jax.tree.leaves(
      params, is_leaf=lambda x: isinstance(x, optax.MaskedNode))):
    raise ValueError(
        'singularity_aware sees masked parameters: it sits inside '
        'optax.masked / optax.partition (multi_transform), which hand it a '
        'pruned tree on which the loss cannot be evaluated. Put '
        'singularity_aware outside: mask the inner optimizer instead, '
        'e.g. singularity_aware(optax.partition(...)), or use sadamw(mask=...).')


def _check_value_fn(value_fn: Callable[[Any], Any], params: Any) -> None:
  """Fails clearly when ``value_fn`` cannot give a scalar loss at ``params``.

  Abstract evaluation: costs one more trace of the loss, nothing at run time.
  """
  try:
    out = jax.eval_shape(value_fn, params)
  except (TypeError, ValueError, IndexError, KeyError) as e:
    shapes = jax.tree.map(lambda x: getattr(x, 'shape', x), params)
    raise ValueError(
        'singularity_aware could not evaluate value_fn at the params it '
        f'received (shapes {shapes}): {type(e).__name__}: {e}. If it sits '
        'inside optax.flatten, which hands it one flat vector in place of '
        'your parameter tree, move it outside (S-Adam gains nothing from '
        'flattening); otherwise check that value_fn takes the params passed '
        'to update().') from e
  if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
    raise ValueError(
        'value_fn must return the loss as a scalar, got '
        f'{jax.tree.map(lambda x: getattr(x, "shape", x), out)}: reduce it '
        '(e.g. jnp.mean over the batch).')


def singularity_aware(
    inner: optax.GradientTransformation,
    *,
    probe: Optional[LGIProbe] = None,
    brake: Optional[Brake] = None,
    step_size: Optional[ScalarOrSchedule] = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """Brakes any optimizer's step where the loss is locally non-smooth.

  Runs ``inner``, measures rho along the step it proposes, and multiplies the
  step by ``damping in (0, 1]``. Works around any optax optimizer
  (``optax.scale_by_adam``, ``optax.sgd``, ``optax.lion``, ...).

  Example::

    >>> import jax, jax.numpy as jnp, optax, sadam_optax
    >>> loss = lambda w: jnp.sum(jnp.abs(w - 1.0))
    >>> opt = sadam_optax.singularity_aware(optax.sgd(0.1))
    >>> w = jnp.zeros(3)
    >>> state = opt.init(w)
    >>> @jax.jit
    ... def step(w, state):
    ...   g = jax.grad(loss)(w)
    ...   u, state = opt.update(g, state, w, value_fn=loss)
    ...   return optax.apply_updates(w, u), state
    >>> w, state = step(w, state)
    >>> float(optax.tree.get(state, 'damping')) <= 1.0
    True

  Args:
    inner: the optimizer whose output is braked.
    probe: how rho is measured (:func:`lgi_probe`; default ``lgi_probe()``).
    brake: the damping rule (:func:`damping_scale`; default
      ``damping_scale(2.0)``).
    step_size: how ``inner``'s output maps to the step in parameter space.
      None: ``inner`` already returns the step (``optax.sgd(lr)``). A float
      or schedule: the step is ``-step_size * output`` (for
      ``optax.scale_by_adam()``, pass the learning rate or its schedule).
    seed: seed of the probes' PRNG key; same seed, same trajectory.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its ``update`` takes
    ``value_fn=`` (``params -> scalar`` loss) and forwards to it the extra
    keyword arguments its signature names. With ``'secant'`` it also reads
    ``value=`` (the loss at ``params``, saving a forward pass) and ``grad=``
    (the loss's gradient, if the ``updates`` it receives are not: after
    clipping, say), the keywords of optax's line searches. Other keywords are
    ignored.

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  probe = lgi_probe() if probe is None else probe
  brake = damping_scale() if brake is None else brake
  if not isinstance(probe, LGIProbe):
    raise TypeError(f'probe must come from lgi_probe(...), got {probe!r}.')
  if not isinstance(brake, Brake):
    raise TypeError(f'brake must come from damping_scale(...), got {brake!r}.')
  inner = optax.with_extra_args_support(inner)
  trajectory = probe.estimator == 'trajectory'
  brake_off = isinstance(brake.lam, (int, float)) and brake.lam == 0

  def init_fn(params):
    return SingularityAwareState(
        count=jnp.zeros([], jnp.int32),
        probe_key=jax.random.key(seed),
        rho=jnp.zeros([], jnp.float32),
        damping=jnp.ones([], jnp.float32),
        nonfinite_probes=jnp.zeros([], jnp.int32),
        prev_direction=(optax.tree.zeros_like(params) if trajectory else ()),
        prev_slope=jnp.zeros([], jnp.float32),
        inner_state=inner.init(params))

  def proposed_step(inner_updates, count):
    if step_size is None:
      return inner_updates
    scale = -_at(step_size, count)
    return jax.tree.map(lambda u: u * scale.astype(u.dtype), inner_updates)

  def measure(key, value_fn, params, step, grad, value):
    if probe.estimator == 'secant':
      samples = lgi.secant_samples(value_fn, params, step, grad, value,
                                   axis_name=probe.axis_name)
      return lgi.secant_ratio(samples), samples
    if probe.estimator == 'literal':
      samples = lgi.literal_samples(
          value_fn, params, key, num_probes=probe.num_probes,
          probe_radius=probe.probe_radius, chunk_size=probe.chunk_size,
          axis_name=probe.axis_name)
      return lgi.literal_ratio(samples), samples
    samples = lgi.step_samples(
        value_fn, params, step, key, num_probes=probe.num_probes,
        probe_radius=probe.probe_radius, chunk_size=probe.chunk_size,
        axis_name=probe.axis_name)
    return lgi.instability_ratio(samples), samples

  def probes_now(count):
    if trajectory or (isinstance(probe.probe_every, int)
                      and probe.probe_every == 1):
      return None  # Every step, statically.
    return count % probe.probe_every == 0

  def probed_rho(state, value_fn, params, step, grad, value):
    """(rho, finite, key) on probing steps; carried rho otherwise."""
    key, sub = jax.random.split(state.probe_key)

    def run(_):
      rho, samples = measure(sub, value_fn, params, step, grad, value)
      return rho, jnp.all(jnp.isfinite(samples))

    now = probes_now(state.count)
    if now is None:
      rho, finite = run(None)
    else:
      rho, finite = jax.lax.cond(now, run,
                                 lambda _: (state.rho, jnp.bool_(True)), None)
    return rho, finite, key

  def trajectory_rho(state, grads, params, step):
    """rho from the previous step's slopes at both ends; no extra pass."""
    end_slope = lgi.tree_dot(grads, state.prev_direction)
    samples = jnp.stack([state.prev_slope, end_slope])
    unit, _ = lgi.unit_direction(step)
    new_slope = lgi.tree_dot(grads, unit)
    # Replicated params make a per-replica slope an error (no axis_name, or
    # gradients not pmean'd); without params, compare with the gradients.
    at = grads if params is None else params
    samples = lgi.replica_mean(samples, probe.axis_name, at)
    new_slope = lgi.replica_mean(new_slope, probe.axis_name, at)
    # The first step has no previous step: rho stays 0.
    rho = jnp.where(state.count > 0, lgi.instability_ratio(samples), 0.0)
    return rho, jnp.all(jnp.isfinite(samples)), unit, new_slope

  def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
    forwarded = dict(extra_args)
    if value_fn is not None:
      forwarded['value_fn'] = value_fn
    inner_updates, inner_state = inner.update(
        updates, state.inner_state, params, **forwarded)
    step = proposed_step(inner_updates, state.count)
    prev_direction, prev_slope, key = (state.prev_direction, state.prev_slope,
                                       state.probe_key)
    if trajectory:
      rho, finite, prev_direction, prev_slope = trajectory_rho(
          state, updates, params, step)
    else:
      if value_fn is None:
        raise _missing_value_fn(probe.estimator)
      _check_params(params)
      loss = value_fn
      kwargs = value_fn_kwargs(value_fn, extra_args)
      if kwargs:
        loss = lambda p: value_fn(p, **kwargs)  # pylint: disable=g-long-lambda
      _check_value_fn(loss, params)
      # 'secant' reads the start slope and the loss at params from what the
      # train step already has: grad= and value= (optax's line-search
      # keywords), else the incoming gradients and one more forward pass.
      grad = extra_args.get('grad')
      rho, finite, key = probed_rho(
          state, loss, params, step, updates if grad is None else grad,
          extra_args.get('value'))
    # A probe that saw NaN or inf keeps the last rho: nothing non-finite
    # reaches the damping, so the parameters stay finite.
    rho = jnp.where(finite, rho, state.rho)
    damping = brake_factor(brake, rho, state.damping, state.count)
    now = probes_now(state.count)
    if brake.rule == 'compound' and now is not None:
      damping = jnp.where(now, damping, state.damping)  # Compound per probe.
    if brake_off:
      # Leave the update graph untouched: a multiply by a traced 1.0 lets XLA
      # fuse the later weight decay differently (1 ulp away from optax.adamw).
      braked = inner_updates
    else:
      braked = jax.tree.map(lambda u: u * damping.astype(u.dtype),
                            inner_updates)
    new_state = SingularityAwareState(
        count=optax.safe_increment(state.count),
        probe_key=key, rho=rho, damping=damping,
        nonfinite_probes=state.nonfinite_probes + jnp.where(finite, 0, 1),
        prev_direction=prev_direction, prev_slope=prev_slope,
        inner_state=inner_state)
    return braked, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
