"""The singularity-aware brake as optax gradient transformations.

Two transformations, one job each (the probe that reads rho is
:func:`sadam_optax.lgi_probe`, in :mod:`sadam_optax.probe_transform`):

* :func:`damping_scale` measures rho along the step it receives and brakes
  that step by a damping in (0, 1]. It acts on the adaptive step:
  ``optax.chain(optax.scale_by_adam(), damping_scale(2.0, step_size=lr),
  optax.add_decayed_weights(wd), optax.scale_by_learning_rate(lr))`` is
  :func:`sadam_optax.sadamw` (pass ``grad=`` and ``value=`` to ``update``).
* :func:`singularity_aware` wraps any optimizer with the same brake and hands
  it the incoming gradient itself, so ``grad=`` is optional.

Why the brake comes after Adam, although the design card draws
``lgi_probe -> damping_scale -> scale_by_adam``: Adam's direction
``m / sqrt(v)`` is invariant to a rescaling of the gradient, so a brake on
the gradient before Adam nearly cancels (a constant 0.135 there leaves the
step's norm at 1.000x). The arrow is the order of the ideas (measure, brake,
step), not of the chain. :func:`damping_scale` refuses to run where it can
tell it sees the raw gradient.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

from typing import Any, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sadam_optax import probe_transform

ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]
BrakeRule = Literal['exp', 'compound']
BRAKE_RULES = ('exp', 'compound')
# Share of the held-back step returned per step (a time constant of 100 steps): on the non-smooth
# suite 0.005-0.01 pass every family with 'exp', 0.02 loses max-affine again (chosen in 0.3,
# before the store waited where its return goes uphill). 'compound' holds up
# to 97% of every step, and returned 100 steps late that swings 7-33x wider than Adam: it keeps
# discarding (docs: findings, the release).
DEFAULT_RELEASE = 0.01
RELEASE_BY_RULE = {'exp': DEFAULT_RELEASE, 'compound': None}
# Where returning the store would go uphill it returns at this share of the rate (0.4): waiting
# there kept S-Adam's band below Adam's with b2 0.95 (0.3, never waiting: 17 failing cells of the
# suite, 8 with the wait); never returning there held travel back for good (max-affine at lr
# 3e-3: 4.1x Adam's band on one instance with 0, 1.8x with 0.1).
UPHILL_RELEASE_SHARE = 0.1
# The store returns on each coordinate at most this multiple of the step it brakes there (0.8).
# In steady travel it returns (1 - damping) of that step, below the cap; where Adam comes to rest
# (the gradient vanishes on a flat minimum, as a straight-through quantizer's does on the cell of
# its minimiser) the store's return would be the whole step: it pushed the iterate out of such a
# cell again and again (least squares through a quantizer, seed 0: 0.7's band at most Adam's on 17
# and 7 of 24 instances at lr 1e-2 and 3e-2, the cap's on 24 and 19). A cap of 1 lost more instance
# runs of the suite where Adam is still travelling (295 of 2,592 against 270; 0.7 291), 10 and more
# let the store push the iterate out of the cell again (docs: findings).
DEFAULT_RELEASE_CAP = 3.0
# The damping's average over probes is opt-in (damping_decay > 0): it ends the widening of Adam's
# band across smooth valleys with a short b2 (Huber at lr 1e-3, b1 0.9 / b2 0.95: 42% -> 83% of
# instances at most Adam's band; 45 -> 37 failing cells over sixteen instance sets of the suite)
# but loses the step-by-step modulation that helps quantization-aware training at a too-high lr
# (CIFAR-10 4-bit, lr 3e-3, 5 seeds: 46.9 +- 1.0 at 0, 42.9 +- 2.0 at 0.7; docs: findings).
DEFAULT_DAMPING_DECAY = 0.0
# The decay for readings that brake less than the last damping; None: damping_decay's. With
# damping_decay=0 and damping_recovery=0.9 the damping takes a harder reading at once and lets go of
# it over about ten probes (an envelope). The aliases' 'auto' (since 0.5) uses it where Adam's
# second moment is shorter than optax's default (b2 < 0.999): there it ends the widening of the
# band across smooth valleys (over thirteen short-b2 settings of Adam's moments, 75 failing cells
# of the non-smooth suite against 96; Huber at lr 1e-3 with b1 0.9-0.95 from 33-54% of instances
# at most Adam's band to 88-100%). With b2 0.999 it stays off: there it failed as many cells
# (14 against 13), ended wider than Adam at the median with b1 0.99, and on the full CIFAR-10
# study was a learning-rate cut (docs: findings).
DEFAULT_DAMPING_RECOVERY = None
ENVELOPE_RECOVERY = 0.9
LONG_B2 = 0.999  # optax's default: a second moment at least this long keeps the plain damping.
# With momentum this heavy the envelope ended wider than Adam at the median more often than the
# plain damping at every b2 tried (0.95, 0.99, 0.999; docs: findings): it keeps the plain damping.
HEAVY_B1 = 0.99
# With momentum that heavy the store also drops the uphill share of what the brake holds (the
# aliases' 'auto', since 0.7). Adam's step keeps going the way the momentum points for about a
# hundred steps after the iterate has passed a minimiser; the brake holds back most of those steps
# and, kept, the store handed them back later as a push away from it: on the non-smooth suite with
# b1 0.99 (seed 0) the default ended 2.7-2.9x wider than Adam at the median on 2-D TV denoising
# at lr 1e-2 and 3e-2 and 1.9x on the fused LASSO at 3e-2; dropping that share ends them at
# 0.19-0.22 (18 failing cells of 65 -> 9). With b1 0.9 it costs travel (seed 4: 9 -> 13, the
# lr-1e-3 cells where Adam is still closing in), so lighter momentum keeps the whole store (docs:
# findings).
StoreUphill = Union[bool, jax.Array, Literal['auto']]
Recovery = Union[float, None, Literal['auto']]
Release = Union[float, None, Literal['auto']]
ReleaseCap = Optional[float]


# --------------------------------------------------------------------------
# The brake.
# --------------------------------------------------------------------------


class Brake(NamedTuple):
  """The damping rule of :func:`damping_scale`.

  Attributes:
    lam: brake strength, a float >= 0 or a schedule of the step count.
    rule: ``'exp'`` (the paper) or ``'compound'``.
    recovery: ``'compound'`` only: log-damping regained per probed step.
    min_damping: ``'compound'`` only: the floor of the damping.
    release: share of the held-back part of past steps returned per step,
      in (0, 1]; None discards it (the paper's brake); ``'auto'``: 0.01
      with ``'exp'``, None with ``'compound'``.
    release_waits: the store mostly waits on the coordinates where
      returning it would go uphill along the gradient (since 0.4; False: as
      0.3).
    release_cap: the store returns on each coordinate at most this multiple
      of the step it brakes there (since 0.8; None: no cap, as 0.7).
    damping_decay: ``'exp'`` only: how gradually the damping follows a
      reading that brakes harder than it: the decay of a moving average
      over probes, in [0, 1) (0, the default: at once).
    damping_recovery: ``'exp'`` only: the same for a reading that brakes
      less (0: at once); None or equal to ``damping_decay``: a plain moving
      average.
    store_uphill: the store keeps all that the brake holds back (True) or
      only the share ``1 - rho`` that lay downhill along the step (False:
      the uphill share is dropped); may be a traced bool.
  """

  lam: ScalarOrSchedule
  rule: str
  recovery: float
  min_damping: float
  release: Release = 'auto'
  release_waits: bool = True
  release_cap: ReleaseCap = DEFAULT_RELEASE_CAP
  damping_decay: float = DEFAULT_DAMPING_DECAY
  damping_recovery: Optional[float] = DEFAULT_DAMPING_RECOVERY
  store_uphill: Any = True


class DampingScaleState(NamedTuple):
  """State of :func:`damping_scale`.

  Attributes:
    damping: the last damping factor applied to the step (float32); with
      ``'exp'`` and a ``damping_decay`` or ``damping_recovery`` > 0, the
      average the next probe updates.
    probe_state: the probe's :class:`LGIProbeState` (``rho`` is there).
    held: the part of past steps the brake held back and has not returned
      yet, like the updates (an empty tuple when ``release`` is None).
  """

  damping: jax.Array
  probe_state: probe_transform.LGIProbeState
  held: Any = ()


class DampingScale(optax.GradientTransformationExtraArgs):
  """The brake as a transformation. Build it with :func:`damping_scale`.

  Its settings are attributes: ``brake`` (a :class:`Brake`), ``probe`` (an
  :class:`LGIProbe`) and ``step_size``.
  """


def known_value(value: Any) -> Optional[np.ndarray]:
  """``value`` as a NumPy array where it is known now (a number, a NumPy or
  a concrete JAX array), else None (a tracer, or not a number)."""
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    return np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    return None


def check_lam(lam: ScalarOrSchedule) -> None:
  """Refuses a negative, infinite or NaN brake strength wherever it can be seen.

  Numbers, NumPy and concrete JAX arrays are checked here, a schedule at its
  first step; a traced ``lam`` (``optax.inject_hyperparams`` inside ``jit``)
  cannot be, and a negative or non-finite one turns the brake off (damping 1).
  """
  if isinstance(lam, (str, bytes)):
    raise TypeError(f'lam={lam!r}: the brake strength must be a number or a schedule, not text.')
  value = known_value(lam(0) if callable(lam) else lam)
  if value is not None and value.shape != ():
    raise ValueError(
      f'lam={lam!r}: the brake strength must be a scalar (one brake for the whole step), '
      f'got shape {value.shape}.'
    )
  # An infinite lam would give exp(-inf * 0) = NaN on every smooth step; the
  # brake reads lam in float32, where 1e39 is already infinite.
  if value is not None and not np.all((value >= 0) & (value <= np.finfo(np.float32).max)):
    raise ValueError(
      f'lam={lam!r}: the brake strength must be a finite float32 number >= 0 (0 turns the '
      'brake off).'
    )


def _at(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """A constant or a schedule evaluated at ``count``, as float32."""
  return jnp.asarray(value(count) if callable(value) else value, jnp.float32)


def brake_factor(
  brake: Union[Brake, 'DampingScale'], rho: jax.Array, previous: jax.Array, count: jax.Array
) -> jax.Array:
  """The damping in (0, 1] for ``rho`` (``previous``: last damping).

  Args:
    brake: a :class:`Brake` (or the :func:`damping_scale` that holds one).
    rho: the measured instability, >= 0.
    previous: the damping of the last step (``'compound'`` only).
    count: the step count, for a scheduled ``lam``.

  Returns:
    float32 damping in (0, 1].
  """
  brake = getattr(brake, 'brake', brake)
  lam = _at(brake.lam, count)
  # Traced NaN, infinite or negative: brake off (inf * 0 would be NaN).
  lam = jnp.where(jnp.isfinite(lam) & (lam >= 0), lam, 0.0)
  rho = jnp.maximum(rho.astype(jnp.float32), 0.0)
  if brake.rule == 'exp':
    return jnp.exp(-lam * rho)
  log_d = jnp.log(previous) + brake.recovery - lam * rho
  return jnp.exp(jnp.clip(log_d, jnp.log(brake.min_damping), 0.0))


def _recovery(brake: Brake) -> Any:
  """The decay for readings that brake less than the last damping."""
  return brake.damping_decay if brake.damping_recovery is None else brake.damping_recovery


def _smooths(brake: Brake) -> bool:
  """Whether the damping averages its readings (``'exp'`` with a decay that may be > 0)."""
  zero = lambda decay: isinstance(decay, (int, float)) and decay == 0  # noqa: E731
  return brake.rule == 'exp' and not (zero(brake.damping_decay) and zero(_recovery(brake)))


def averaged_damping(
  brake: Brake, reading: jax.Array, previous: jax.Array, count: jax.Array
) -> jax.Array:
  """``decay * previous + (1 - decay) * reading``: the damping of a probed step.

  ``decay`` is ``damping_decay`` where the reading brakes harder than the
  last damping, ``damping_recovery`` where it brakes less. A damping that
  follows each reading brakes the steps of an oscillation by its phase (the
  overshooting half harder); across a smooth valley that shifts where the
  iterate settles instead of narrowing its band. Taking a harder reading at
  once and letting go of it over several probes (an envelope: decay 0,
  recovery > 0) keeps the brake near its hardest recent reading, so it loses
  the phase and still answers a sudden instability on the step it appears.

  Args:
    brake: the :class:`Brake` (its ``damping_decay`` and
      ``damping_recovery``; ``'exp'`` only).
    reading: ``exp(-lam * rho)`` of this probe.
    previous: the damping of the last step.
    count: the step count, for a scheduled ``lam``.

  Returns:
    float32 damping in (0, 1]; 1 where ``lam`` is 0 (or traced negative,
    NaN or infinite): a brake turned off is off at once.
  """
  if not _smooths(brake):
    return reading
  harder = jnp.asarray(brake.damping_decay, jnp.float32)
  softer = jnp.asarray(_recovery(brake), jnp.float32)
  decay = jnp.where(reading < previous, harder, softer)
  lam = _at(brake.lam, count)
  braking = jnp.isfinite(lam) & (lam > 0)
  return jnp.where(braking, decay * previous + (1 - decay) * reading, reading)


def check_decay(name: str, value: Any) -> None:
  """Refuses a decay ``name=value`` outside [0, 1) where it can be seen (traced: not checked)."""
  if isinstance(value, str):
    hint = ''
    if value == 'auto':  # Only the aliases know Adam's b2.
      hint = "; for the aliases' 'auto' pass sadam_optax.auto_damping_recovery(b1, b2)"
    raise ValueError(f'{name}={value!r}: the decay must be a number in [0, 1){hint}.')
  concrete = known_value(value)
  if concrete is not None and not (concrete.shape == () and 0 <= concrete < 1):
    raise ValueError(
      f'{name}={value!r}: the decay of the averaged damping must lie in [0, 1) '
      '(0 takes each reading as it comes; 1 would never move).'
    )


def auto_damping_recovery(b1: Any, b2: Any, damping_decay: Any = DEFAULT_DAMPING_DECAY) -> Any:
  """The ``damping_recovery`` that the aliases' ``'auto'`` stands for.

  The envelope (:data:`ENVELOPE_RECOVERY`) where Adam's second moment is
  shorter than optax's default (``b2 < 0.999``), its momentum is not heavy
  (``b1 < 0.99``) and the damping follows its readings (``damping_decay``
  0); None (``damping_decay``'s) otherwise, so a ``damping_decay`` chosen by
  hand keeps its plain average. For the chain form, whose
  :func:`damping_scale` does not see Adam's moments:
  ``damping_scale(..., damping_recovery=auto_damping_recovery(b1, b2))``.

  Args:
    b1: Adam's first-moment decay.
    b2: Adam's second-moment decay (either may be traced under
      ``optax.inject_hyperparams``).
    damping_decay: the decay for readings that brake harder.

  Returns:
    0.9 or None where all three are known now, else a traced float32 decay
    (0.9 or ``damping_decay``).
  """
  check_decay('damping_decay', damping_decay)
  decay, momentum, memory = (known_value(x) for x in (damping_decay, b1, b2))
  if decay is not None and decay != 0:
    return None
  if decay is not None and momentum is not None and memory is not None:
    return ENVELOPE_RECOVERY if memory < LONG_B2 and momentum < HEAVY_B1 else None
  envelope = (
    (jnp.asarray(damping_decay) == 0) & (jnp.asarray(b2) < LONG_B2) & (jnp.asarray(b1) < HEAVY_B1)
  )
  return jnp.where(envelope, ENVELOPE_RECOVERY, jnp.asarray(damping_decay, jnp.float32))


def resolve_damping_recovery(
  damping_recovery: Recovery, b1: Any, b2: Any, damping_decay: Any
) -> Any:
  """``damping_recovery`` with ``'auto'`` resolved for Adam's ``b1`` and ``b2``."""
  if isinstance(damping_recovery, str) and damping_recovery == 'auto':
    return auto_damping_recovery(b1, b2, damping_decay)
  return damping_recovery


def auto_store_uphill(b1: Any) -> Any:
  """The ``store_uphill`` that the aliases' ``'auto'`` stands for.

  False (the store drops the uphill share of what the brake holds) where
  Adam's momentum is heavy (``b1 >= 0.99``), True below. For the chain form,
  whose :func:`damping_scale` does not see ``b1``:
  ``damping_scale(..., store_uphill=auto_store_uphill(b1))``.

  Args:
    b1: Adam's first-moment decay (may be traced under
      ``optax.inject_hyperparams``).

  Returns:
    A Python bool where ``b1`` is known now, else a traced bool.
  """
  momentum = known_value(b1)
  if momentum is not None:
    return bool(momentum < HEAVY_B1)
  return jnp.asarray(b1) < HEAVY_B1


def resolve_store_uphill(store_uphill: StoreUphill, b1: Any) -> Any:
  """``store_uphill`` with ``'auto'`` resolved for Adam's ``b1``."""
  if isinstance(store_uphill, str) and store_uphill == 'auto':
    return auto_store_uphill(b1)
  return store_uphill


def check_store_uphill(store_uphill: Any) -> Any:
  """A bool (or traced bool) ``store_uphill``, refused with the fix otherwise."""
  if isinstance(store_uphill, (bool, np.bool_)):
    return bool(store_uphill)
  if isinstance(store_uphill, str):
    hint = ''
    if store_uphill == 'auto':  # Only the aliases know Adam's b1.
      hint = "; for the aliases' 'auto' pass sadam_optax.auto_store_uphill(b1)"
    raise ValueError(f'store_uphill={store_uphill!r}: it must be True or False{hint}.')
  if (
    isinstance(store_uphill, jax.Array)
    and store_uphill.shape == ()
    and (store_uphill.dtype == jnp.bool_)
  ):
    return store_uphill
  raise TypeError(f'store_uphill={store_uphill!r}: it must be True or False (or a traced bool).')


def check_release_cap(cap: Any) -> ReleaseCap:
  """A release cap that is None or a number > 0 (traced allowed), refused with the fix otherwise."""
  if cap is None or isinstance(cap, jax.core.Tracer):
    return cap
  value = None if isinstance(cap, (str, bool)) else known_value(cap)
  if value is None or value.size != 1 or not value > 0 or not np.isfinite(value):
    raise ValueError(
      f'release_cap={cap!r}: the most the store returns on a coordinate, as a multiple of the '
      'step there, must be a finite number > 0, or None for no cap.'
    )
  return cap


def resolve_release(release: Release, rule: str) -> Optional[float]:
  """The release a rule uses: ``'auto'`` resolved, anything else checked.

  Refuses a release outside (0, 1] (None: the held-back step is discarded).
  """
  if isinstance(release, str) and release == 'auto':
    return RELEASE_BY_RULE[rule]
  if release is None or isinstance(release, jax.core.Tracer):
    return release
  value = None if isinstance(release, str) else known_value(release)
  if value is None or value.shape != () or not 0 < value <= 1:
    raise ValueError(
      f'release={release!r}: the share of the held-back step returned per step must lie in '
      "(0, 1], or 'auto'; pass release=None to discard it (the paper's brake)."
    )
  return release


def brake_and_release(
  updates: Any,
  held: Any,
  damping: jax.Array,
  release: Optional[float],
  *,
  grad: Any = None,
  step_sign: Any = 1.0,
  store_now: Any = None,
  intake: Any = None,
  cap: ReleaseCap = None,
):
  """``(damping * updates + rate * held, new held)``.

  The brake holds back ``(1 - damping)`` of each step and returns ``rate``
  of what it holds on every step, so the sum of the steps is the sum of the
  undamped ones: parts held on steps that chatter back and forth cancel in
  the store, a component that keeps one direction (the iterate still
  travelling) arrives late instead of never. ``rate`` is ``release``, and a
  tenth of it (``UPHILL_RELEASE_SHARE``) on the coordinates where
  returning the store would go uphill along the gradient (to first order):
  there it mostly waits. What was held back was read as going uphill once;
  returned blindly it pushes the iterate away from the minimiser it was
  held from (with a short second-moment memory, ``b2`` 0.95, that made the
  band wider than Adam's).

  Args:
    updates: the step to brake.
    held: the store (like ``updates``), or ``()`` when ``release`` is None.
    damping: float32 scalar in (0, 1].
    release: share of the store returned per step, or None (discard).
    grad: the loss's gradient at the parameters (like ``updates``), or None
      to return the store everywhere.
    step_sign: the sign of the map from ``updates`` to the parameters' step
      (-1 for Adam's direction, scaled by ``-lr`` later in the chain).
    store_now: None (the store acts on every step), or a traced bool: where
      False the step is ``damping * updates`` and the store stays as it is
      (the steps between probes). A 0/1 factor on the rate and the intake
      keeps it one fused pass, where a select would be one more.
    intake: None (the store takes all that the brake holds back), or a
      float32 scalar in [0, 1]: the share of it the store takes (the rest is
      dropped).
    cap: None, or a float > 0: on each coordinate the store returns at most
      ``cap * |updates|`` (what stays is returned later), so that where the
      step comes to rest the store does not push on alone.

  Returns:
    ``(braked updates, new store)``.
  """
  if release is None:
    return jax.tree.map(lambda u: u * damping.astype(u.dtype), updates), held

  def now(x, dtype):  # x, or x * 0 where the store waits for the next probe.
    return x if store_now is None else x * store_now.astype(dtype)

  def taken(d, dtype):  # What the store takes of a step: all it held back, or a share.
    return now(1 - d if intake is None else intake.astype(dtype) * (1 - d), dtype)

  def rate(h, g, dtype):
    r = jnp.asarray(release, dtype)
    if g is not None:
      # Signs, not the product: a product of two small floats can underflow.
      uphill = jnp.sign(g).astype(dtype) * jnp.sign(h).astype(dtype) * step_sign > 0
      r = jnp.where(uphill, r * UPHILL_RELEASE_SHARE, r)
    return now(r, dtype)

  def capped(r, u):  # What the store returns, at most cap * |u| a coordinate.
    return r if cap is None else jnp.clip(r, -cap * jnp.abs(u), cap * jnp.abs(u))

  def returned(u, h, g, dtype):
    return capped(rate(h, g, dtype) * h.astype(dtype), u.astype(dtype))

  def braked(u, h, g):
    return damping.astype(u.dtype) * u + returned(u, h, g, u.dtype)

  def kept(u, h, g):  # In the store's own dtype: a scan's carry keeps its type.
    d = damping.astype(h.dtype)
    if cap is None:  # The same as below, in 0.7's arithmetic (bit for bit).
      return (1 - rate(h, g, h.dtype)) * h + taken(d, h.dtype) * u.astype(h.dtype)
    return h - returned(u, h, g, h.dtype) + taken(d, h.dtype) * u.astype(h.dtype)

  def braked_from_new(u, new, g):
    # The same step, read from the new store: x = new - (1 - d) u is what
    # stayed of h; it has h's sign, which picks the rate, and it was returned
    # r h = r / (1 - r) x, or cap * |u| where that is less (then
    # r / (1 - r) |x| is more: the two cases part at the same point). Reading
    # the old store in one pass only lets XLA update a donated store in
    # place; two readers of it cost a copy of the store, one more pass over
    # the parameters (XLA:CPU).
    d = damping.astype(u.dtype)
    x = new.astype(u.dtype) - taken(d, u.dtype) * u
    r = rate(x, g, u.dtype)
    return d * u + capped(r / (1 - r) * x, u)

  def leafwise(fn, u_tree, h_tree):
    if grad is None:
      return jax.tree.map(lambda u, h: fn(u, h, None), u_tree, h_tree)
    return jax.tree.map(fn, u_tree, h_tree, grad)

  if isinstance(release, jax.core.Tracer) or not float(release) < 1:
    # 1 - rate is 0 (or unknown at trace time): read the old store twice.
    return leafwise(braked, updates, held), leafwise(kept, updates, held)
  new = leafwise(kept, updates, held)
  return leafwise(braked_from_new, updates, new), new


def _brake_is_off(brake: Brake) -> bool:
  """lam is statically 0 (a Python or NumPy number): no probe, the step untouched.

  A JAX array is not read here: ``optax.inject_hyperparams`` builds the
  transformation with concrete arrays at ``init`` and traced ones in a jitted
  ``update``, and both must give the state the same structure.
  """
  return isinstance(brake.lam, (int, float, np.number)) and brake.lam == 0


def _step_scale(step_size: Optional[ScalarOrSchedule], count: jax.Array) -> Optional[jax.Array]:
  """The factor from the updates to the step (None: they are the step)."""
  if step_size is None:
    return None
  size = jnp.asarray(_at(step_size, count))
  if size.size != 1:
    # optax broadcasts an array learning rate over each leaf; the probe
    # reads one step, so one number scales it.
    raise ValueError(
      f'The learning rate (step_size) must be a scalar, got shape {size.shape}: S-Adam reads '
      'the loss along one step. For per-parameter rates, scale in the chain: '
      'optax.chain(optax.scale_by_adam(), <your scaling>, damping_scale(2.0, step_size=1.0), '
      'optax.scale(-1.0)).'
    )
  return -size.reshape(())


def brake_update(
  scale: DampingScale,
  updates: Any,
  state: DampingScaleState,
  params: Any,
  *,
  grad: Any,
  value_fn: Any,
  extra_args: dict[str, Any],
) -> tuple[Any, DampingScaleState]:
  """Measures rho along the step ``updates`` propose and brakes them.

  The one place where the brake acts; :func:`damping_scale` and
  :func:`singularity_aware` call it.

  Args:
    scale: the brake's settings (:func:`damping_scale`).
    updates: the adaptive step (Adam's output).
    state: the brake's state.
    params: the current parameters.
    grad: the loss's gradient at ``params``, or None.
    value_fn: ``params -> scalar`` loss, or None.
    extra_args: the other keywords of the ``update`` call.

  Returns:
    ``(braked updates, new state)``.
  """
  probe_transform.check_state(state, DampingScaleState, 'damping_scale')
  brake, probe = scale.brake, scale.probe
  if _brake_is_off(brake):
    # Statically off: no probe, no loss needed, the graph of optax.adam.
    probe_state = state.probe_state._replace(count=optax.safe_increment(state.probe_state.count))
    return updates, state._replace(probe_state=probe_state)
  # The step is step_scale * updates, formed where a reading needs it: a
  # scaled copy of the updates would be one more pass over the parameters.
  step_scale = _step_scale(scale.step_size, state.probe_state.count)
  probe_state = probe_transform.measure(
    probe,
    state.probe_state,
    updates,
    params,
    grad=grad,
    value_fn=value_fn,
    extra_args=extra_args,
    step_scale=step_scale,
  )
  rho = probe_state.rho
  if brake.rule == 'compound':
    # It compounds each reading into the damping: a reading carried over a
    # step lost in the loss's rounding would count again on each such step.
    lost = probe_state.unresolved_probes != state.probe_state.unresolved_probes
    rho = jnp.where(lost, 0.0, rho)
  damping = brake_factor(brake, rho, state.damping, state.probe_state.count)
  damping = averaged_damping(brake, damping, state.damping, state.probe_state.count)
  due = _probed(probe, state.probe_state.count, extra_args.get('probe_now'))
  if (brake.rule == 'compound' or _smooths(brake)) and due is not True:
    # Both rules remember the last damping: they update it once per probe,
    # not per carried step.
    damping = jnp.where(due, damping, state.damping)
  braked, held = brake_and_release(
    updates,
    state.held,
    damping,
    # A step known not to probe leaves the store for the next probed step:
    # reading and writing it costs two passes over the parameters, which would
    # make the step dearer than AdamW's. What the brake holds back is dropped.
    None if due is False else brake.release,
    grad=grad if brake.release_waits else None,
    step_sign=1.0 if step_scale is None else jnp.sign(step_scale),
    # Traced (probe_every > 1 in one compiled step): a lax.cond or a select
    # around the store costs XLA:CPU one more pass on every step.
    store_now=None if isinstance(due, bool) else due,
    intake=_intake(brake.store_uphill, rho),
    cap=brake.release_cap,
  )
  return braked, DampingScaleState(damping=damping, probe_state=probe_state, held=held)


def _intake(store_uphill: Any, rho: jax.Array) -> Optional[jax.Array]:
  """The share of the held-back step the store takes: None (all) or ``1 - rho``.

  With the ``'uphill'`` reading rho is the share of the step along which the
  loss rises, so ``1 - rho`` is the share that went downhill: what the store
  hands back later is the part of the step that was going the right way.
  """
  if store_uphill is True:
    return None
  downhill = jnp.clip(1.0 - rho.astype(jnp.float32), 0.0, 1.0)
  return jnp.where(store_uphill, 1.0, downhill)


def _probed(probe: probe_transform.LGIProbe, count: jax.Array, probe_now: Optional[bool]) -> Any:
  """Whether this step probes: True or False when known while tracing, else traced."""
  if probe_now is not None:
    return probe_now
  return True if probe_transform.every_step(probe) else probe_transform.probe_due(probe, count)


def damping_scale(
  lam: ScalarOrSchedule = 2.0,
  *,
  probe: Optional[probe_transform.LGIProbe] = None,
  step_size: Optional[ScalarOrSchedule] = None,
  rule: BrakeRule = 'exp',
  recovery: float = 0.1,
  min_damping: float = 0.03,
  release: Release = 'auto',
  release_waits: bool = True,
  release_cap: ReleaseCap = DEFAULT_RELEASE_CAP,
  damping_decay: float = DEFAULT_DAMPING_DECAY,
  damping_recovery: Optional[float] = DEFAULT_DAMPING_RECOVERY,
  store_uphill: Any = True,
  seed: Optional[int] = None,
) -> DampingScale:
  """Brakes the adaptive step where the loss is locally non-smooth.

  Measures rho along the step it receives (with ``probe``) and multiplies the
  step by a damping in (0, 1]:

  * ``'exp'``: the paper's rule, ``damping = exp(-lam * rho)`` (with a
    ``damping_decay`` or ``damping_recovery`` > 0, averaged over probes:
    ``d_t = beta * d_{t-1} + (1 - beta) * exp(-lam * rho_t)``, ``beta`` the
    decay where the reading brakes harder than ``d_{t-1}``, the recovery
    where it brakes less). A step shrinks by
    at most ``exp(-lam)`` (``exp(-10 lam)`` with ``'literal'``, whose ratio
    the authors clip at 10).
  * ``'compound'``: ``log d_t = clip(log d_{t-1} + recovery - lam * rho_t,
    log(min_damping), 0)``: the brake tightens while chattering persists and
    relaxes (by ``exp(recovery)`` per probe) when it stops.

  What the damping takes from a step is not lost: it is held back and
  returned at ``release`` of the store per step, so the brake delays the
  parts of steps read as unstable instead of shortening the run's path.
  Parts held on steps that chatter across a kink cancel in the store; a
  direction the iterate keeps travelling in arrives about ``1 / release``
  steps late. Where ``grad=`` is known, the store mostly waits (a tenth of
  the rate) on the coordinates where returning it would go uphill along
  that gradient (first order).
  ``release=None`` discards them (the paper's brake, which amounts to a
  cut of the learning rate by the mean damping).

  Place it after the adaptive scaling, never on the raw gradient (the
  module's docstring says why)::

    lr = 1e-3
    opt = optax.chain(
        optax.scale_by_adam(),
        sadam_optax.damping_scale(2.0, probe=sadam_optax.lgi_probe(),
                                  step_size=lr),
        optax.add_decayed_weights(1e-4),
        optax.scale_by_learning_rate(lr))
    updates, state = opt.update(grads, state, params, value_fn=loss_of,
                                value=loss, grad=grads)

  That chain is :func:`sadam_optax.sadamw` ``(lr, weight_decay=1e-4)``, bit
  for bit. In a chain the updates it receives are not the gradient, so the
  estimators that read the gradient (``'uphill'``, ``'secant'``,
  ``'trajectory'``) need
  ``grad=``; it refuses to run when ``grad=`` is the very array it receives
  (it then sits before the adaptive scaling).

  Args:
    lam: brake strength >= 0 (a float or a schedule of the step count). 0
      (a Python or NumPy number) turns the brake off exactly, and skips the
      probe.
    probe: how rho is measured (:func:`lgi_probe`; default ``lgi_probe()``).
    step_size: how the updates it receives map to the step in parameter
      space: None if they are the step (after ``scale_by_learning_rate``);
      the learning rate (float or schedule) if they are Adam's direction, to
      be scaled by ``-step_size`` later in the chain.
    rule: ``'exp'`` or ``'compound'``.
    recovery: ``'compound'`` only, > 0.
    min_damping: ``'compound'`` only, in (0, 1]. 0.03 passed the chattering
      study everywhere; 1e-3 froze coordinates still travelling to the
      minimiser.
    release: share of the held-back part of past steps returned per step
      (per probed step with ``probe_every > 1``), in (0, 1], or None to
      discard it. ``'auto'`` (default): 0.01 with
      ``'exp'``, None with ``'compound'`` (whose damping sits near its floor
      while chattering lasts: returned late, the held steps swing wider
      than Adam). The store is one more array like the parameters in the
      state.
    release_waits: where ``grad=`` is known, the store returns at a tenth
      of the rate on the coordinates where returning it would go uphill
      along it (to first order); False returns it everywhere (the 0.3
      brake).
    release_cap: the store returns on each coordinate at most this
      multiple of the step it brakes there (default 3; None: no cap, the
      0.7 brake). In steady travel the store returns ``1 - damping`` of the
      step, below the cap; where the step comes to rest (a flat minimum, a
      straight-through quantizer's cell) the store would push on alone and
      carry the iterate out again: it waits there.
    damping_decay: ``'exp'`` only: decay of the average over probes that
      the damping is, in [0, 1); 0 (the default, the paper's rule) takes
      each reading as it comes. A damping that follows each reading brakes
      an oscillation's overshooting half harder than the other: across a
      smooth valley that moves the iterate along its flat directions (the
      non-smooth suite, Huber regression with ``b2=0.95``), which 0.7
      mostly ends; in quantization-aware training at a too-high lr that
      same modulation is what helps (CIFAR-10 4-bit: 0.7 loses 4 points
      to 0). ``'compound'`` ignores it.
    damping_recovery: ``'exp'`` only: the decay for readings that brake
      less than the last damping, in [0, 1); None (the default): the same as
      ``damping_decay``. ``damping_decay=0, damping_recovery=0.9``
      takes a harder reading at once and lets go of it over about ten
      probes: the brake stays near its hardest recent reading, which ends
      the widening across smooth valleys with a short ``b2`` as the plain
      average does and keeps the CIFAR-10 QAT result of the default (docs:
      findings, the non-smooth suite). The aliases choose it by Adam's
      moments (``'auto'``); this transformation does not see them: pass
      :func:`auto_damping_recovery` of them to match the aliases. ``'compound'``
      ignores it.
    store_uphill: with a ``release``: True (default) stores all that the
      brake holds back; False stores only the share ``1 - rho`` of it that
      lay downhill along the step (rho as the ``'uphill'`` reading, the
      share along which the loss rises) and drops the rest. With heavy
      momentum (``b1 >= 0.99``) a kept uphill share comes back as a push away
      from the minimiser the momentum carried the iterate past; the aliases
      choose False there (``'auto'``); pass :func:`auto_store_uphill` of
      ``b1`` to match them.
    seed: seed of the probes' PRNG key (None: the probe's own).

  Returns:
    A :class:`DampingScale`: an ``optax.GradientTransformationExtraArgs``
    whose state is a :class:`DampingScaleState`.

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  check_lam(lam)
  if rule not in BRAKE_RULES:
    raise ValueError(f'rule={rule!r} is unknown: choose one of {BRAKE_RULES}.')
  # Python numbers only: under optax.inject_hyperparams they arrive traced.
  if isinstance(recovery, (int, float)) and not recovery > 0:
    raise ValueError(f'recovery={recovery}: it must be > 0.')
  if isinstance(min_damping, (int, float)) and not 0 < min_damping <= 1:
    raise ValueError(f'min_damping={min_damping}: it must lie in (0, 1].')
  release = resolve_release(release, rule)
  release_cap = check_release_cap(release_cap)
  check_decay('damping_decay', damping_decay)
  if damping_recovery is not None:  # None: damping_decay's (_recovery).
    check_decay('damping_recovery', damping_recovery)
  store_uphill = check_store_uphill(store_uphill)
  probe = probe_transform.lgi_probe() if probe is None else probe
  if not isinstance(probe, probe_transform.LGIProbe):
    raise TypeError(f'probe must come from lgi_probe(...), got {probe!r}.')
  if seed is not None:
    probe = _with_seed(probe, seed)

  brake = Brake(
    lam=lam,
    rule=rule,
    recovery=recovery,
    min_damping=min_damping,
    release=release,
    release_waits=bool(release_waits),
    release_cap=release_cap,
    damping_decay=damping_decay,
    damping_recovery=damping_recovery,
    store_uphill=store_uphill,
  )

  def init_fn(params):
    stores = release is not None and not _brake_is_off(brake)
    return DampingScaleState(
      damping=jnp.ones([], jnp.float32),
      probe_state=probe_transform.init_probe_state(probe, params),
      held=optax.tree.zeros_like(params) if stores else (),
    )

  def update_fn(updates, state, params=None, *, value_fn=None, grad=None, **extra_args):
    if grad is not None and grad is updates:
      raise ValueError(
        'damping_scale received the raw gradient (grad= is the updates '
        'it was handed): it sits before the adaptive scaling, where a '
        "brake nearly cancels (Adam's direction ignores the gradient's "
        'scale). Place it after optax.scale_by_adam() in the chain.'
      )
    return brake_update(
      scale, updates, state, params, grad=grad, value_fn=value_fn, extra_args=extra_args
    )

  scale = DampingScale(init_fn, update_fn)
  scale.__dict__.update(
    brake=brake,
    probe=probe,
    step_size=step_size,
  )
  return scale


# --------------------------------------------------------------------------
# The wrapper.
# --------------------------------------------------------------------------


class SingularityAwareState(NamedTuple):
  """State of :func:`singularity_aware`.

  Attributes:
    inner_state: the state of the wrapped optimizer.
    brake_state: the brake's :class:`DampingScaleState`.
  """

  inner_state: optax.OptState
  brake_state: DampingScaleState


def singularity_aware(
  inner: optax.GradientTransformation,
  *,
  probe: Optional[probe_transform.LGIProbe] = None,
  brake: Optional[Union[DampingScale, Brake]] = None,
  step_size: Optional[ScalarOrSchedule] = None,
  seed: Optional[int] = None,
) -> optax.GradientTransformationExtraArgs:
  """Brakes any optimizer's step where the loss is locally non-smooth.

  Runs ``inner``, measures rho along the step it proposes, and multiplies the
  step by ``damping in (0, 1]``. Works around any optax optimizer
  (``optax.scale_by_adam``, ``optax.sgd``, ``optax.lion``, ...). Unlike
  :func:`damping_scale` in a chain, it sees the gradient itself, so
  ``grad=`` is needed only when the incoming updates are not the gradient
  (clipped, say).

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
    brake: the brake (:func:`damping_scale`; default ``damping_scale(2.0)``).
      Its own ``probe`` and ``step_size`` are replaced by the ones given
      here.
    step_size: how ``inner``'s output maps to the step in parameter space.
      None: ``inner`` already returns the step (``optax.sgd(lr)``). A float
      or schedule: the step is ``-step_size * output`` (for
      ``optax.scale_by_adam()``, pass the learning rate or its schedule:
      with None the probe reads Adam's direction, which points uphill, as
      the step and brakes every step by ``exp(-lam)``).
    seed: seed of the probes' PRNG key (None: the probe's own, 0 by
      default); same seed, same trajectory.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its ``update`` takes
    ``value_fn=`` (``params -> scalar`` loss) and forwards to it the extra
    keyword arguments its signature names. It also reads ``value=`` (the loss
    at ``params``, saving a forward pass), ``grad=`` (the loss's gradient, if
    the ``updates`` it receives are not) and ``probe_now=`` (a Python bool).

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  probe = probe_transform.lgi_probe() if probe is None else probe
  if not isinstance(probe, probe_transform.LGIProbe):
    raise TypeError(f'probe must come from lgi_probe(...), got {probe!r}.')
  if brake is None:
    brake = Brake(lam=2.0, rule='exp', recovery=0.1, min_damping=0.03)
  elif isinstance(brake, DampingScale):
    brake = brake.brake
  elif isinstance(brake, Brake):
    check_lam(brake.lam)
  else:
    raise TypeError(f'brake must come from damping_scale(...), got {brake!r}.')
  if not isinstance(inner, optax.GradientTransformation):
    raise TypeError(
      f'inner must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), got {inner!r}: '
      'pass the optimizer, not a function that builds it.'
    )
  scale = damping_scale(
    brake.lam,
    probe=probe,
    step_size=step_size,
    rule=brake.rule,
    recovery=brake.recovery,
    min_damping=brake.min_damping,
    release=brake.release,
    release_waits=brake.release_waits,
    release_cap=brake.release_cap,
    damping_decay=brake.damping_decay,
    damping_recovery=brake.damping_recovery,
    store_uphill=brake.store_uphill,
    seed=seed,
  )
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return SingularityAwareState(inner_state=inner.init(params), brake_state=scale.init(params))

  def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
    probe_transform.check_state(state, SingularityAwareState, 'singularity_aware')
    forwarded = dict(extra_args)
    if value_fn is not None:
      forwarded['value_fn'] = value_fn
    inner_updates, inner_state = inner.update(updates, state.inner_state, params, **forwarded)
    grad = extra_args.pop('grad', None)
    braked, brake_state = brake_update(
      scale,
      inner_updates,
      state.brake_state,
      params,
      grad=updates if grad is None else grad,
      value_fn=value_fn,
      extra_args=extra_args,
    )
    return braked, SingularityAwareState(inner_state=inner_state, brake_state=brake_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _with_seed(probe: probe_transform.LGIProbe, seed: int) -> probe_transform.LGIProbe:
  """The same probe settings with another seed."""
  settings = {
    k: getattr(probe, k)
    for k in (
      'estimator',
      'num_probes',
      'probe_radius',
      'probe_every',
      'probe_offset',
      'chunk_size',
      'axis_name',
      'probe_placement',
      'unresolved_fade',
    )
  }
  return probe_transform.lgi_probe(**settings, seed=seed)
