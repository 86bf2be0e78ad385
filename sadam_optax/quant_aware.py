"""Quantization-aware transformations: oscillations across the quantizer's bins.

In quantization-aware training (QAT) the loss seen by the forward pass is
piecewise constant in each weight; its singularities are the boundaries of the
quantizer's bins. The chattering there is a weight whose integer code
``round(w / scale)`` moves up, then down, then up again, step after step
(Nagel et al., 2022). Counting those sign-alternating code changes costs no
extra pass of the loss: it needs the parameters and the quantization grid
only. This module measures that oscillation frequency and offers three ways
to act on it, each a composable optax transformation:

* :func:`dampen_oscillations`: pull each weight towards the centre of its bin
  (Nagel et al.'s oscillation dampening, decoupled from the gradient).
* :func:`freeze_oscillating`: stop updating weights whose oscillation
  frequency exceeds a threshold (Nagel et al.'s iterative weight freezing).
* :func:`scale_by_oscillation`: the singularity-aware brake of S-Adam driven
  by the oscillation frequency, per weight or per tensor, with the ``'exp'``
  or ``'compound'`` rule of :func:`sadam_optax.damping_scale`.

The grid is given by ``quant_scale_fn(params)``: a tree like ``params`` whose
leaves are each tensor's quantization step (broadcastable against it) or
``None`` for tensors that are not quantized. :func:`absmax_scale_fn` builds
the per-tensor absmax grid of symmetric ``bits``-bit fake quantization.

References:
  Nagel, Fournarakis, Bondarenko, Blankevoort, `Overcoming Oscillations in
  Quantization-Aware Training <https://arxiv.org/abs/2203.11086>`_, ICML 2022.

  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sadam_optax import transform

QuantScaleFn = Callable[[optax.Params], Any]


def absmax_scale_fn(bits: int, *, min_ndim: int = 2) -> QuantScaleFn:
  """The grid of per-tensor absmax symmetric fake quantization.

  ``scale = max|w| / (2^(bits-1) - 1)``, the narrow signed grid of
  ``sadam_examples.quant.fake_quant``; tensors with fewer than ``min_ndim``
  dimensions (biases) are taken as unquantized.

  Args:
    bits: weight bit width, >= 2.
    min_ndim: the smallest rank of a quantized tensor.

  Returns:
    ``quant_scale_fn(params) -> tree of scales (None where unquantized)``.
  """
  if bits < 2:
    raise ValueError(f'bits={bits}: the symmetric absmax grid needs bits >= 2.')
  qmax = 2 ** (bits - 1) - 1

  def scale_fn(params):
    def leaf(p):
      if jnp.ndim(p) < min_ndim:
        return None
      return jnp.maximum(jnp.max(jnp.abs(p)).astype(jnp.float32), 1e-8) / qmax

    return jax.tree.map(leaf, params)

  return scale_fn


def _scales(quant_scale_fn: QuantScaleFn, params: optax.Params) -> Any:
  """``quant_scale_fn(params)`` with ``inf`` for unquantized leaves.

  An infinite step keeps the code of an unquantized weight at 0 forever, so
  it never oscillates, is never frozen and is never braked. A ``params``
  tree without leaves (the placeholder of ``optax.tree.map_params``, or no
  parameters at all) has nothing to quantize: ``quant_scale_fn`` is not
  called, so a fixed tree of scales cannot mismatch it.
  """
  if not jax.tree.leaves(params):
    return params
  scales = quant_scale_fn(params)
  return jax.tree.map(
    lambda s, p: jnp.full((), jnp.inf, jnp.float32) if s is None else jnp.asarray(s, jnp.float32),
    scales,
    params,
    is_leaf=lambda x: x is None,
  )


def _codes(params: optax.Params, scales: Any) -> Any:
  return jax.tree.map(lambda p, s: jnp.round(p.astype(jnp.float32) / s), params, scales)


class OscillationStats(NamedTuple):
  """Per-weight oscillation statistics (trees like ``params``, float32).

  Attributes:
    code: the integer code ``round(w / scale)`` at the last update.
    direction: sign (-1, 0, +1) of the last change of the code.
    osc_freq: EMA of the oscillation indicator (a code change opposite to the
      previous one), the frequency of Nagel et al. (2022), in [0, 1].
  """

  code: Any
  direction: Any
  osc_freq: Any


def init_oscillation_stats(params: optax.Params, quant_scale_fn: QuantScaleFn) -> OscillationStats:
  """Statistics at the start: current codes, no direction, frequency 0.

  Args:
    params: the parameters.
    quant_scale_fn: the quantization grid (module docstring).

  Returns:
    An :class:`OscillationStats`.
  """
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  return OscillationStats(_codes(params, _scales(quant_scale_fn, params)), zeros, zeros)


def update_oscillation_stats(
  stats: OscillationStats, params: optax.Params, scales: Any, momentum: float
) -> OscillationStats:
  """Counts the code changes since the last call.

  Args:
    stats: the previous statistics.
    params: the current parameters (after the previous step).
    scales: their quantization steps (``inf`` where unquantized).
    momentum: EMA weight of the newest indicator (Nagel et al. use 0.01).

  Returns:
    The new :class:`OscillationStats`.
  """
  code = _codes(params, scales)

  def leaf(new, old, direction, freq):
    delta = jnp.sign(new - old)
    oscillated = (delta != 0) & (delta == -direction)
    freq = (1 - momentum) * freq + momentum * oscillated.astype(jnp.float32)
    return jnp.where(delta != 0, delta, direction), freq

  pairs = jax.tree.map(leaf, code, stats.code, stats.direction, stats.osc_freq)
  is_pair = lambda x: isinstance(x, tuple)
  first = jax.tree.map(lambda t: t[0], pairs, is_leaf=is_pair)
  second = jax.tree.map(lambda t: t[1], pairs, is_leaf=is_pair)
  return OscillationStats(code, first, second)


def _check_momentum(momentum: float) -> None:
  if not 0 < momentum <= 1:
    raise ValueError(f'momentum={momentum}: it must lie in (0, 1].')


# --------------------------------------------------------------- dampening


def dampen_oscillations(
  quant_scale_fn: QuantScaleFn, *, strength: float = 0.1
) -> optax.GradientTransformation:
  """Pulls every quantized weight towards the centre of its bin.

  Adds ``strength * (w / scale - round(w / scale))`` to the updates: the
  gradient of Nagel et al.'s dampening regularizer ``||w - q(w)||^2 / 2`` in
  units of the grid step, applied decoupled (like ``add_decayed_weights``).
  Place it after the adaptive scaling and before the learning rate, e.g.
  ``chain(scale_by_adam(), dampen_oscillations(fn), scale_by_learning_rate(lr))``:
  a weight at a bin boundary then moves up to ``strength / 2`` of a unit Adam
  step towards the bin centre.

  Args:
    quant_scale_fn: the quantization grid (module docstring).
    strength: >= 0; 0 is the identity.

  Returns:
    An ``optax.GradientTransformation`` that needs ``params``.

  References:
    Nagel et al., `Overcoming Oscillations in Quantization-Aware Training
    <https://arxiv.org/abs/2203.11086>`_, ICML 2022 (section 4.1).
  """
  if strength < 0:
    raise ValueError(f'strength={strength}: it must be >= 0.')

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('dampen_oscillations needs params.')
    scales = _scales(quant_scale_fn, params)

    def leaf(u, p, s):
      r = p.astype(jnp.float32) / s
      pull = jnp.where(jnp.isfinite(s), r - jnp.round(r), 0.0)
      return (u + strength * pull).astype(u.dtype)

    return jax.tree.map(leaf, updates, params, scales), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


# ----------------------------------------------------------------- freezing


class FreezeOscillatingState(NamedTuple):
  """State of :func:`freeze_oscillating`.

  Attributes:
    stats: the :class:`OscillationStats`.
    ema_code: EMA of each weight's integer code (the state it is frozen to).
    frozen: 1.0 where the weight is frozen, else 0.0 (float32, like params).
  """

  stats: OscillationStats
  ema_code: Any
  frozen: Any


def freeze_oscillating(
  quant_scale_fn: QuantScaleFn, *, threshold: float = 0.02, momentum: float = 0.01
) -> optax.GradientTransformation:
  """Iterative weight freezing: stops weights that oscillate too often.

  When a weight's oscillation frequency exceeds ``threshold`` it is set to
  the centre of the bin of its EMA code, ``round(ema_code) * scale``, and its
  updates are zero from then on (weight decay included: chain this last).

  Args:
    quant_scale_fn: the quantization grid (module docstring).
    threshold: freezing threshold on the frequency, in (0, 1].
    momentum: EMA weight of the frequency and of the code.

  Returns:
    An ``optax.GradientTransformation`` that needs ``params``.

  References:
    Nagel et al., `Overcoming Oscillations in Quantization-Aware Training
    <https://arxiv.org/abs/2203.11086>`_, ICML 2022 (section 4.2).
  """
  _check_momentum(momentum)
  if not 0 < threshold <= 1:
    raise ValueError(f'threshold={threshold}: it must lie in (0, 1].')

  def init_fn(params):
    stats = init_oscillation_stats(params, quant_scale_fn)
    return FreezeOscillatingState(stats, stats.code, jax.tree.map(jnp.zeros_like, stats.osc_freq))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('freeze_oscillating needs params.')
    scales = _scales(quant_scale_fn, params)
    stats = update_oscillation_stats(state.stats, params, scales, momentum)
    ema = jax.tree.map(lambda e, c: (1 - momentum) * e + momentum * c, state.ema_code, stats.code)
    frozen = jax.tree.map(
      lambda f, was: jnp.maximum(was, (f > threshold).astype(jnp.float32)),
      stats.osc_freq,
      state.frozen,
    )

    def leaf(u, p, s, e, now, was):
      snap = jnp.round(e) * s - p.astype(jnp.float32)
      newly = (now > 0) & (was == 0)
      return jnp.where(newly, snap, jnp.where(now > 0, 0.0, u)).astype(u.dtype)

    updates = jax.tree.map(leaf, updates, params, scales, ema, frozen, state.frozen)
    return updates, FreezeOscillatingState(stats, ema, frozen)

  return optax.GradientTransformation(init_fn, update_fn)


# -------------------------------------------------------------------- brake


class ScaleByOscillationState(NamedTuple):
  """State of :func:`scale_by_oscillation`.

  Attributes:
    count: steps taken (int32), for a scheduled brake strength.
    stats: the :class:`OscillationStats`.
    osc_damping: the damping applied at the last step (per weight, or one
      scalar per tensor with ``per_tensor``), in (0, 1].
  """

  count: jax.Array
  stats: OscillationStats
  osc_damping: Any


def scale_by_oscillation(
  quant_scale_fn: QuantScaleFn,
  *,
  brake: Optional[transform.Brake] = None,
  momentum: float = 0.01,
  per_tensor: bool = False,
) -> optax.GradientTransformation:
  """The singularity-aware brake with the oscillation frequency as rho.

  ``updates *= damping``, with ``damping = brake_factor(brake, rho, ...)`` and
  ``rho`` the oscillation frequency of each weight (or its mean over the
  tensor with ``per_tensor``). Unlike the LGI of S-Adam it needs no probe of
  the loss. Place it after the optimizer, e.g.
  ``chain(optax.adamw(lr), scale_by_oscillation(fn))`` (the brake then also
  scales the decoupled weight decay).

  Args:
    quant_scale_fn: the quantization grid (module docstring).
    brake: :func:`sadam_optax.damping_scale` (default ``lam=25``, ``'exp'``:
      a weight crossing back every 25 steps, frequency 0.04, keeps
      ``exp(-1)`` of its step). With ``'compound'`` the brake tightens while
      the frequency stays above ``recovery / lam`` and relaxes below.
    momentum: EMA weight of the frequency.
    per_tensor: one damping per tensor (from its mean frequency) instead of
      one per weight.

  Returns:
    An ``optax.GradientTransformation`` that needs ``params``.

  References:
    Nagel et al., `Overcoming Oscillations in Quantization-Aware Training
    <https://arxiv.org/abs/2203.11086>`_, ICML 2022.

    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  _check_momentum(momentum)
  brake = transform.damping_scale(25.0) if brake is None else brake
  # lam=0 statically: leave the updates untouched (a multiply by a traced
  # 1.0 can change XLA's fusion by an ulp), as singularity_aware does.
  lam = getattr(brake, 'brake', brake).lam
  brake_off = isinstance(lam, (int, float)) and lam == 0

  def reduce(freq):
    return jax.tree.map(jnp.mean, freq) if per_tensor else freq

  def init_fn(params):
    stats = init_oscillation_stats(params, quant_scale_fn)
    return ScaleByOscillationState(
      jnp.zeros([], jnp.int32), stats, jax.tree.map(jnp.ones_like, reduce(stats.osc_freq))
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('scale_by_oscillation needs params.')
    scales = _scales(quant_scale_fn, params)
    stats = update_oscillation_stats(state.stats, params, scales, momentum)
    damping = jax.tree.map(
      lambda rho, prev: transform.brake_factor(brake, rho, prev, state.count),
      reduce(stats.osc_freq),
      state.osc_damping,
    )
    if not brake_off:
      updates = jax.tree.map(lambda u, d: (u * d).astype(u.dtype), updates, damping)
    return updates, ScaleByOscillationState(optax.safe_increment(state.count), stats, damping)

  return optax.GradientTransformation(init_fn, update_fn)
