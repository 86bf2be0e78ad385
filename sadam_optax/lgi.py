"""Estimators of the Local Geometric Instability (LGI) rho.

rho measures how much the directional derivatives of the loss disagree near the
current parameters, read along the step the optimizer proposes. The readings
(the documentation's validation and chattering pages say what each detects):

* ``'uphill'`` (the default): the share of the step along which the loss
  rises. The slope at the step's start comes with the gradient, its mean over
  the step from one forward pass at the end (the secant); read as a slope
  that changes linearly, they give the end slope, and rho is the fraction of
  the step where the slope is positive: 0 for a descent step, 1 for a step
  that goes uphill all the way (momentum carrying the iterate away from a
  minimiser), the overshoot's share for a step that crosses a valley. On the
  non-smooth benchmark suite it is the reading that shrinks Adam's band at a
  kink instead of widening it.
* ``'secant'``: the same two slopes of the slopes along the proposed step. The
  slope at its start comes with the gradient, the mean slope over it from one
  forward pass at its end (the secant); their gap, read as a linear change of
  slope, gives rho. One forward pass per step (none more when the train step
  passes the loss it already has as ``value=``).
* ``'step'``: gradient sampling along the proposed step. Directional derivatives
  of the loss along the step, taken at random points of the segment from the
  parameters to the proposed new parameters (plus a little isotropic noise).
  Near 0 where the loss is smooth along the step, large where the directional
  derivative changes sign along it (the step jumps across a kink: chattering).
* ``'literal'``: the paper's reading as its authors' scripts implement it:
  one-sided finite differences of the loss along random Gaussian directions
  normalised per parameter tensor.
* ``'trajectory'``: no extra pass. The directional derivative along the previous
  step at both of its ends; the transformation gets both from consecutive
  gradients, :func:`estimate_lgi` evaluates them explicitly.

Everything here is a pure function of ``(value_fn, params, direction, key)``
and runs under ``jax.jit``; reductions are accumulated in float32.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

  Burke, Lewis, Overton, `A Robust Gradient Sampling Algorithm for Nonsmooth,
  Nonconvex Optimization <https://doi.org/10.1137/030601296>`_, 2005.
"""

import functools
from typing import Any, Callable, Literal, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

try:
  from jax.extend.core import Literal as _Literal
except ImportError:  # jax < 0.4.36
  from jax.core import Literal as _Literal

from sadam_optax import tree_math

Estimator = Literal['uphill', 'secant', 'step', 'literal', 'trajectory', 'random-jvp']
ESTIMATORS = ('uphill', 'secant', 'step', 'literal', 'trajectory', 'random-jvp')
DEFAULT_ESTIMATOR = 'uphill'
# Estimators whose reading needs the loss's gradient at ``params``.
NEEDS_GRAD = ('uphill', 'secant', 'trajectory')
# Where 'step' places its probes along the step (see step_samples).
PLACEMENTS = ('ends', 'slices')
# Estimators that read the secant's two slopes.
SECANT_READINGS = ('uphill', 'secant')

# Estimator-specific defaults. 'literal' follows the authors' scripts
# (k = 8, sigma = 0.01). 'step': the two ends of the step, with noise of 1% of its length, ranked
# chattering steps best in the validation (experiments/lgi_validation.py).
# 'uphill', 'secant' and 'trajectory' always read two slopes, no radius.
DEFAULT_NUM_PROBES = {
  'uphill': 2,
  'secant': 2,
  'step': 2,
  'literal': 8,
  'trajectory': 2,
  'random-jvp': 8,
}
DEFAULT_PROBE_RADIUS = {
  'uphill': 0.01,
  'secant': 0.01,
  'step': 0.01,
  'literal': 0.01,
  'trajectory': 0.01,
  'random-jvp': 0.01,
}
# The authors' absolute epsilon and clip for the literal ratio.
LITERAL_EPS = 1e-6
LITERAL_CLIP = 10.0
# Relative epsilon of the other ratios: keeps rho < 1 and invariant to a
# positive rescaling of the loss.
RELATIVE_EPS = 1e-6
# The paper's absolute epsilon in rho = Var / (E^2 + Var + eps).
PAPER_EPS = 1e-8
_TINY = 1e-30


def _scale_free(y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(y / m, m)`` with ``m = max |y|`` over the first axis (1 where 0).

  The ratios square the samples: dividing by their largest magnitude first
  keeps them finite for any finite loss (a loss of 1e18 squares to inf in
  float32) without changing a ratio that is invariant to scale.
  """
  m = jnp.max(jnp.abs(y), axis=0)
  m = jnp.where((m > 0) & jnp.isfinite(m), m, 1.0)
  return y / m, m


def instability_ratio(samples: jax.Array) -> jax.Array:
  """Biased Var(Y) / (E[Y]^2 + Var(Y)) of samples, in [0, 1).

  Args:
    samples: directional derivatives along the first axis (reduced there).

  Returns:
    A float32 scalar (or array over the trailing axes) in [0, 1). 0 when all
    samples agree, close to 1 when their mean is 0 but they are not.
  """
  y, _ = _scale_free(samples.astype(jnp.float32))
  mean = jnp.mean(y, axis=0)
  var = jnp.mean((y - mean) ** 2, axis=0)  # Two passes: no cancellation.
  return _safe_ratio(var, (var + mean * mean) * (1.0 + RELATIVE_EPS))


def literal_ratio(samples: jax.Array) -> jax.Array:
  """The authors' ratio: unbiased Var(D) / (mean(D^2) + 1e-6), clipped at 10.

  Note that with the unbiased variance this lies in [0, k / (k - 1)], not in
  [0, 1): it is kept exactly as the reference scripts compute it.

  Args:
    samples: finite differences D, shape ``(k,)``.

  Returns:
    A float32 scalar.
  """
  d, m = _scale_free(samples.astype(jnp.float32))
  k = d.shape[0]
  var = jnp.var(d, axis=0) * k / (k - 1)
  # The absolute epsilon, in the units of the rescaled samples.
  eps = LITERAL_EPS / m / m
  return jnp.minimum(var / (jnp.mean(d * d, axis=0) + eps), LITERAL_CLIP)


def secant_ratio(samples: jax.Array) -> jax.Array:
  """rho of a slope that changes linearly from ``s0`` to a mean of ``s``.

  A slope varying linearly over the step, starting at ``s0`` with mean ``s``,
  has variance ``(s - s0)^2 / 3`` over the step; rho is then
  ``Var / (s^2 + Var)`` as in :func:`instability_ratio`.

  Args:
    samples: ``(s0, s)``: the slope at the start of the step and the mean
      slope over it (the secant), shape ``(2,)``.

  Returns:
    A float32 scalar in [0, 1): 1 when the secant is flat but the start slope
    is not (the step crossed a valley), 0 when the two agree.
  """
  y, _ = _scale_free(samples.astype(jnp.float32))
  s0, s = y
  var = (s - s0) ** 2 / 3.0
  return _safe_ratio(var, (var + s * s) * (1.0 + RELATIVE_EPS))


def uphill_share(samples: jax.Array) -> jax.Array:
  """The share of the step along which the loss rises.

  The slope along the step is read as changing linearly from ``s0`` at the
  start to ``s1 = 2 s - s0`` at the end (so that its mean is the secant
  ``s``); rho is the fraction of the step where it is positive.

  Args:
    samples: ``(s0, s)``: the slope at the start of the step and the mean
      slope over it, shape ``(2,)``.

  Returns:
    A float32 scalar in [0, 1]: 0 for a descent step (or nothing measured),
    1 for a step uphill all the way, ``s1 / (s1 - s0)`` for a step that
    crosses a valley (its overshoot's share).
  """
  y, _ = _scale_free(samples.astype(jnp.float32))
  s0, s = y
  s1 = 2.0 * s - s0
  up_all = (s0 >= 0) & (s1 >= 0) & ((s0 > 0) | (s1 > 0))
  # Opposite signs: the slope is positive on the far side of its zero.
  cross = (s0 < 0) & (s1 > 0) | (s0 > 0) & (s1 < 0)
  zero_at = s0 / jnp.where(cross, s0 - s1, 1.0)  # In (0, 1) where crossing.
  share = jnp.where(s1 > 0, 1.0 - zero_at, zero_at)
  return jnp.where(up_all, 1.0, jnp.where(cross, share, 0.0))


def _safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den``, 0 where ``den`` is 0, with finite gradients there."""
  positive = den > 0
  return jnp.where(positive, num / jnp.where(positive, den, 1.0), 0.0)


def paper_ratio(samples: jax.Array) -> jax.Array:
  """The paper's ``Var(Y) / (E[Y]^2 + Var(Y) + eps)``, biased variance.

  Args:
    samples: directional derivatives Y, shape ``(k,)``.

  Returns:
    A float32 scalar in [0, 1).
  """
  y, m = _scale_free(samples.astype(jnp.float32))
  mean = jnp.mean(y, axis=0)
  var = jnp.mean((y - mean) ** 2, axis=0)
  return var / (mean * mean + var + PAPER_EPS / m / m)


def _rademacher_like(key: jax.Array, tree: Any) -> Any:
  """One Rademacher (+-1) vector over all leaves, normalised to unit norm.

  Rademacher signs need one random bit per entry, far cheaper than a Gaussian
  (brief, section 3: fresh Gaussians per probe dominate on small models).
  """
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  size = sum(x.size for x in leaves)
  scale = 1.0 / jnp.sqrt(jnp.float32(max(size, 1)))
  signs = [
    (jax.random.rademacher(k, x.shape, jnp.float32) * scale).astype(x.dtype)
    for k, x in zip(keys, leaves)
  ]
  return jax.tree.unflatten(treedef, signs)


def _map_probes(fn: Callable[[Any], jax.Array], xs: Any, chunk_size: Optional[int]) -> jax.Array:
  """Probes in chunks (``lax.map``); None: one at a time.

  One probe at a time was faster than vmapping them on every model
  benchmarked (vmapped probes at different parameters turn each convolution
  into a batched one) and adds the least memory; a chunk as large as the
  number of probes vmaps them all.
  """
  num = jax.tree.leaves(xs)[0].shape[0]
  if chunk_size is not None and chunk_size >= num:
    return jax.vmap(fn)(xs)
  if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs)):
    # Eagerly (concrete probes: under jit they are traced), lax.map traces and
    # compiles fn anew on every call, as fn closes over this step's arrays
    # (0.6.2: 0.6 s a step for 'literal', 70x the default's); one probe at a
    # time in Python runs fn op by op and compiles nothing after the first step.
    return jnp.stack([fn(jax.tree.map(lambda x, i=i: x[i], xs)) for i in range(num)])
  if chunk_size is None or chunk_size == 1:
    # batch_size=1 would vmap each probe (a batched convolution, and a
    # host callback inside the loss would need a vmap rule).
    return jax.lax.map(fn, xs)
  return jax.lax.map(fn, xs, batch_size=chunk_size)


def varying_axes(x: Any) -> frozenset:
  """The ``shard_map`` mesh axes over which ``x`` varies.

  Read from the type JAX tracks under ``shard_map(..., check_vma=True)`` (its
  default); empty where JAX does not track it (``pmap``, ``check_vma=False``,
  outside any mapped function, older JAX).
  """
  typeof = getattr(jax, 'typeof', None)
  if typeof is None:
    return frozenset()
  aval = typeof(x)
  vma = getattr(aval, 'vma', None)  # JAX < 0.10.
  if vma is None:
    vma = getattr(getattr(aval, 'mat', None), 'varying', frozenset())
  return frozenset(vma)


def replica_mean(x: jax.Array, axis_name: Optional[str], params: Any) -> jax.Array:
  """Averages probe values over ``axis_name``; fails if replicas disagree.

  Under ``shard_map`` with the batch split, a value computed from the local
  batch varies over the data axis while replicated parameters do not. If it
  still varies after the average, every replica would brake by its own rho
  and the replicas would drift apart: raise instead.

  Args:
    x: probe values (or slopes) computed on this replica.
    axis_name: the mapped data axis, or None.
    params: the parameters the values were measured at.

  Returns:
    ``x`` averaged over ``axis_name`` (unchanged if None).

  Raises:
    ValueError: ``x`` varies over a mapped axis over which ``params`` do not.
  """
  if axis_name is not None:
    x = jax.lax.pmean(x, axis_name)
  stray = varying_axes(x).difference(*[varying_axes(p) for p in jax.tree.leaves(params)])
  if stray:
    raise ValueError(
      f'The probe values vary over the mapped axes {sorted(stray)}, the '
      'parameters do not: each data-parallel replica would measure rho on '
      'its own shard of the batch, brake by it, and the replicas would '
      'drift apart. Pass axis_name= the data axis to sadam / sadamw / '
      'lgi_probe / estimate_lgi (and pmean the gradients over it).'
    )
  return x


def jvp_slope(value_fn: Callable[[Any], jax.Array], point: Any, tangent: Any) -> jax.Array:
  """The directional derivative of ``value_fn`` at ``point`` (forward mode)."""
  return jax.jvp(value_fn, (point,), (tangent,))[1]


def vjp_slope(value_fn: Callable[[Any], jax.Array], point: Any, tangent: Any) -> jax.Array:
  """The same slope from the gradient (reverse mode).

  For losses that forward mode cannot differentiate: a ``jax.custom_vjp``
  such as a straight-through quantizer (Qwix's) has no jvp rule.
  """
  return tree_math.tree_dot(tree_math.optax_grad(jax.grad(value_fn)(point)), tangent)


def _primitive_names(jaxpr: Any):
  """Names of the primitives in ``jaxpr`` and in the jaxprs it holds."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, 'jaxpr', sub)  # A ClosedJaxpr holds a Jaxpr.
        if hasattr(sub, 'eqns'):
          yield from _primitive_names(sub)


def slope_fn(value_fn: Callable[[Any], jax.Array], params: Any) -> Callable[..., jax.Array]:
  """:func:`jvp_slope`, or :func:`vjp_slope` where the loss has no jvp.

  Decided from the loss's jaxpr (one more trace, nothing at run time): JAX
  refuses forward mode through a ``custom_vjp`` only when it lowers the
  function, too late to fall back.
  """
  names = _primitive_names(jax.make_jaxpr(value_fn)(params).jaxpr)
  return vjp_slope if any('custom_vjp' in n for n in names) else jvp_slope


def step_samples(
  value_fn: Callable[[Any], jax.Array],
  params: Any,
  step: Any,
  key: jax.Array,
  *,
  num_probes: int,
  probe_radius: float,
  chunk_size: Optional[int] = None,
  axis_name: Optional[str] = None,
  placement: str = 'ends',
) -> jax.Array:
  """Directional derivatives along ``step`` at random points of the step.

  Probe i sits at ``params + t_i * step + c_i * probe_radius * ||step|| * r``
  with t_i evenly spaced over [0, 1] *including both ends*, c_i uniform in
  [-1, 1] and r one Rademacher unit vector shared by all probes (one random
  bit per parameter per step). Both ends matter: a step that overshoots has
  slopes of opposite signs there, and stratified random points inside the
  slices missed a sign change near an end (validation: AUC 0.85 against 0.97
  at d = 2, ``experiments/results/lgi_validation.md``).

  Args:
    value_fn: ``params -> scalar`` loss.
    params: the current parameters.
    step: the proposed step (new params minus params), same tree as params.
    key: a PRNG key.
    num_probes: k, the number of probe points (static).
    probe_radius: isotropic noise radius, relative to ``||step||``.
    chunk_size: probes evaluated at once; None: one at a time.
    axis_name: a mapped axis over which the samples are averaged, so that
      data-parallel replicas see the derivative of the global-batch loss.

    placement: ``'ends'`` (default): ``t`` evenly spaced with both ends;
      ``'slices'``: one uniform random ``t`` in each slice of width ``1/k``,
      the placement before the validation (kept as its ablation).

  Returns:
    float32 array of shape ``(num_probes,)``.
  """
  unit, norm = tree_math.unit_direction(step)
  if placement == 'ends':
    c_key, r_key = jax.random.split(key)
    t = jnp.linspace(0.0, 1.0, num_probes)
  else:
    t_key, c_key, r_key = jax.random.split(key, 3)
    t = (jnp.arange(num_probes) + jax.random.uniform(t_key, (num_probes,))) / num_probes
  c = jax.random.uniform(c_key, (num_probes,), minval=-1.0, maxval=1.0)
  noise = _rademacher_like(r_key, params)
  # jvp wants tangents in the primal's dtype; the step may be wider than the
  # params (e.g. float32 updates of bf16 params with mu_dtype=float32).
  tangent = tree_math.cast_like(unit, params)

  def probe(tc, slope_at):
    t_i, c_i = tc
    point = tree_math.axpy(
      tree_math.axpy(params, t_i * norm, unit), c_i * probe_radius * norm, noise
    )
    return slope_at(value_fn, point, tangent).astype(jnp.float32)

  slope_at = slope_fn(value_fn, params)
  return replica_mean(
    _map_probes(functools.partial(probe, slope_at=slope_at), (t, c), chunk_size), axis_name, params
  )


def secant_samples(
  value_fn: Callable[[Any], jax.Array],
  params: Any,
  step: Any,
  grad: Any,
  value: Optional[jax.Array] = None,
  *,
  axis_name: Optional[str] = None,
  step_scale: Optional[jax.Array] = None,
) -> jax.Array:
  """The slopes of :func:`secant_reading`, zeros where it did not resolve them."""
  samples, _ = secant_reading(
    value_fn, params, step, grad, value, axis_name=axis_name, step_scale=step_scale
  )
  return samples


def secant_reading(
  value_fn: Callable[[Any], jax.Array],
  params: Any,
  step: Any,
  grad: Any,
  value: Optional[jax.Array] = None,
  *,
  axis_name: Optional[str] = None,
  step_scale: Optional[jax.Array] = None,
) -> tuple[jax.Array, jax.Array]:
  """The slope along ``step`` at its start and its mean over the step.

  ``s0 = <grad, u>`` with ``u = step / ||step||`` costs no pass of the loss;
  ``s = (f(params + step) - f(params)) / ||step||`` costs one forward pass,
  and one more when ``value`` (the loss at ``params``) is not given.

  Args:
    value_fn: ``params -> scalar`` loss.
    params: the current parameters.
    step: the proposed step (new params minus params).
    grad: the gradient of ``value_fn`` at ``params``. With another gradient
      (clipped, say) ``s0`` is off and rho with it.
    value: ``value_fn(params)``, if the caller already has it; it must be the
      same function at the same point, or the secant is off.
    axis_name: a mapped axis over which the slopes are averaged.
    step_scale: a scalar; if given, the step is ``step_scale * step``
      (:func:`tree_math.scale_step`). The step is then never materialised: the end
      point computes it in its own pass and the reductions run over ``step``,
      scaled as scalars.

  Returns:
    ``(samples, resolved)``: the float32 array ``(s0, s)``, and whether the
    reading says anything (a bool scalar). The samples are zeros when the
    step is zero or the loss is exactly flat along it (resolved: nothing to
    brake), and when the loss changes over the step by no more than its
    rounding while ``<grad, step>`` is as small: then the rise is rounding
    noise and ``resolved`` is False. Near a minimiser in float32 that is most
    steps, and a probe should keep its last reading rather than read the
    step as smooth (:func:`sadam_optax.probe_transform.measure`). With
    ``axis_name``, resolved where any replica resolved the reading.
  """
  # XLA:CPU writes each array with several consumers in a pass of its own:
  # the scaled step feeds the end point only (fused there), the reductions
  # read the step as it came.
  end = tree_math.axpy(params, jnp.float32(1.0), tree_math.scale_step(step, step_scale))
  if all(
    not jnp.issubdtype(p.dtype, jnp.floating)
    or jnp.finfo(p.dtype).nmant >= jnp.finfo(jnp.float32).nmant
    for p in jax.tree.leaves(params)
  ):
    # A coordinate whose step is below half its ulp (a large weight at a small
    # lr) does not move: its share of <grad, step> would read as a descent
    # that never came, the secant as an overshoot. It is dropped; the others
    # keep their nominal step (their rounding is a fraction of an ulp). Tested
    # on the step taken backwards, which XLA fuses into this reduction, where
    # reading the end point again costs a pass; the two agree except for a
    # weight at a power of two, the one point where the ulps either side differ.
    back = tree_math.axpy(params, jnp.float32(-1.0), tree_math.scale_step(step, step_scale))
    seen = jax.tree.map(lambda b, p, u: jnp.where(b != p, u, jnp.zeros_like(u)), back, params, step)
    dot, sq_norm = tree_math.dot_and_sq_norm(grad, seen)
    if step_scale is not None:
      dot, sq_norm = tree_math.scale_dot_and_sq_norm(dot, sq_norm, step_scale)
  else:
    # Measure along the segment actually travelled: in bfloat16 the end
    # point rounds, by up to a tenth of a small step.
    moved = jax.tree.map(lambda e, p: e.astype(jnp.float32) - p.astype(jnp.float32), end, params)
    dot, sq_norm = tree_math.dot_and_sq_norm(grad, moved)
  norm = tree_math.safe_sqrt(sq_norm)
  safe_norm = jnp.where(norm > 0, norm, 1.0)
  s0 = jnp.where(norm > 0, dot / safe_norm, 0.0)
  f0 = jnp.asarray(value_fn(params) if value is None else value)
  f1 = jnp.asarray(value_fn(end))
  # Only the difference matters: subtract before averaging over replicas.
  acc = jnp.promote_types(tree_math.probe_dtype(f0.dtype), tree_math.probe_dtype(f1.dtype))
  rise = f1.astype(acc) - f0.astype(acc)
  s = jnp.where(norm > 0, rise / safe_norm.astype(acc), 0.0)
  if axis_name is not None and _summed_over(axis_name, grad, rise):
    s0 = s0 / jax.lax.psum(1, axis_name)
  # A rise within the rounding of the loss, where the gradient predicts as
  # little, is rounding noise: rho of it would be anything in [0, 1).
  noise = 4 * max(_eps(f0), _eps(f1)) * (jnp.abs(f0) + jnp.abs(f1)).astype(acc)
  # A non-finite loss passes through, for the caller to count and discard.
  measurable = (jnp.abs(rise) > noise) | (jnp.abs(s0) * norm > noise) | ~jnp.isfinite(noise)
  samples = jnp.where(measurable, jnp.stack([s0.astype(acc), s]), 0.0)
  # So does a non-finite step or gradient (norm > 0 is False for NaN).
  samples = jnp.where(jnp.isfinite(dot) & jnp.isfinite(sq_norm), samples, jnp.nan)
  # Exactly flat (or no step): a reading of 0 that is no rounding artefact.
  resolved = measurable | ((rise == 0) & (dot == 0))
  # One average for both, so that the replicas agree on whether to hold.
  mean = replica_mean(jnp.append(samples, resolved.astype(samples.dtype)), axis_name, params)
  return mean[:2], mean[2] > 0


def _eps(x: jax.Array) -> float:
  """Machine epsilon of ``x``'s dtype (float32's for non-float dtypes)."""
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
  return float(jnp.finfo(dtype).eps)


def _summed_over(axis_name: str, grad: Any, local: jax.Array) -> bool:
  """Whether ``grad`` is the sum, not the mean, of per-replica gradients.

  Under ``shard_map`` JAX returns the gradient of a per-replica loss with
  respect to replicated parameters already summed over the data axis (the
  transpose of their implicit broadcast), and a ``pmean`` of it changes
  nothing: it is the mean loss's gradient times the axis size. That shows in
  the types: the loss varies over the axis, the gradient does not. Under
  ``pmap`` nothing is tracked, and the caller's ``pmean`` gives the mean.
  """
  if axis_name not in varying_axes(local):
    return False
  return not any(axis_name in varying_axes(g) for g in jax.tree.leaves(grad))


def endpoint_samples(
  value_fn: Callable[[Any], jax.Array], params: Any, step: Any, *, axis_name: Optional[str] = None
) -> jax.Array:
  """Directional derivatives along ``step`` at both of its ends, shape (2,)."""
  unit, norm = tree_math.unit_direction(step)
  ends = jnp.array([0.0, 1.0])

  tangent = tree_math.cast_like(unit, params)

  def probe(t, slope_at):
    return slope_at(value_fn, tree_math.axpy(params, t * norm, unit), tangent).astype(jnp.float32)

  slope_at = slope_fn(value_fn, params)
  return replica_mean(
    jax.vmap(functools.partial(probe, slope_at=slope_at))(ends), axis_name, params
  )


def _normal_per_tensor(key: jax.Array, tree: Any) -> Any:
  """Gaussian directions normalised to unit norm separately per tensor."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))

  def draw(k, x):
    u = jax.random.normal(k, x.shape, jnp.float32)
    return (u / jnp.maximum(jnp.linalg.norm(u), _TINY)).astype(x.dtype)

  return jax.tree.unflatten(treedef, [draw(k, x) for k, x in zip(keys, leaves)])


def literal_samples(
  value_fn: Callable[[Any], jax.Array],
  params: Any,
  key: jax.Array,
  *,
  num_probes: int,
  probe_radius: float,
  chunk_size: Optional[int] = None,
  axis_name: Optional[str] = None,
) -> jax.Array:
  """One-sided finite differences along per-tensor-normalised Gaussians.

  ``D_i = (f(params + sigma * u_i) - f(params)) / sigma``: forward passes
  only, as in the authors' scripts (so the perturbation has norm
  ``sigma * sqrt(number of tensors)``).

  Args:
    value_fn: ``params -> scalar`` loss.
    params: the current parameters.
    key: a PRNG key.
    num_probes: k (static).
    probe_radius: sigma, absolute.
    chunk_size: probes evaluated at once; None: one at a time.
    axis_name: a mapped axis over which the loss values are averaged.

  Returns:
    float32 array of shape ``(num_probes,)``.
  """
  f0 = replica_mean(value_fn(params).astype(jnp.float32), axis_name, params)

  def probe(k):
    u = _normal_per_tensor(k, params)
    return value_fn(tree_math.axpy(params, jnp.float32(probe_radius), u)).astype(jnp.float32)

  fs = replica_mean(
    _map_probes(probe, jax.random.split(key, num_probes), chunk_size), axis_name, params
  )
  return (fs - f0) / probe_radius


def random_directions(key: jax.Array, params: Any, num: int) -> Any:
  """``num`` Gaussian directions of unit global norm, stacked on axis 0.

  Uniform on the unit sphere of the whole parameter vector, in each leaf's
  dtype.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  draws = [jax.random.normal(k, (num,) + x.shape, jnp.float32) for k, x in zip(keys, leaves)]
  sq = sum(jnp.sum(d * d, axis=tuple(range(1, d.ndim))) for d in draws)
  inv = 1.0 / jnp.sqrt(jnp.maximum(sq, _TINY))
  return jax.tree.unflatten(
    treedef,
    [
      (d * inv.reshape((num,) + (1,) * (d.ndim - 1))).astype(x.dtype) for d, x in zip(draws, leaves)
    ],
  )


def random_jvp_samples(
  value_fn: Callable[[Any], jax.Array],
  params: Any,
  key: jax.Array,
  *,
  num_probes: int,
  axis_name: Optional[str] = None,
) -> jax.Array:
  """Directional derivatives at ``params`` along random unit directions.

  The reading of the paper's text and of its authors' ``torch.func`` variant:
  ``Y_i = jvp of the loss at params along u_i``, the ``u_i``
  (:func:`random_directions`) vmapped. Each ``Y_i`` equals ``<g, u_i>``, whose
  mean over symmetric directions is 0, so rho is about ``1 - 1/k`` wherever
  the loss is smooth: the brake then acts as a learning-rate cut (see the
  validation in the documentation). Kept for fidelity and comparison.

  Args:
    value_fn: ``params -> scalar`` loss.
    params: the current parameters.
    key: a PRNG key.
    num_probes: k, the number of directions (static).
    axis_name: a mapped axis over which the samples are averaged.

  Returns:
    float32 array of shape ``(num_probes,)``.
  """
  directions = random_directions(key, params, num_probes)

  def probe(u, slope_at):
    return slope_at(value_fn, params, u).astype(jnp.float32)

  slope_at = slope_fn(value_fn, params)
  return replica_mean(
    jax.vmap(functools.partial(probe, slope_at=slope_at))(directions), axis_name, params
  )


def estimate_lgi(
  value_fn: Callable[[Any], jax.Array],
  params: Any,
  direction: Any,
  key: jax.Array,
  *,
  estimator: Estimator = DEFAULT_ESTIMATOR,
  num_probes: Optional[int] = None,
  probe_radius: Optional[float] = None,
  chunk_size: Optional[int] = None,
  axis_name: Optional[str] = None,
  probe_placement: str = 'ends',
) -> jax.Array:
  """Estimates the Local Geometric Instability rho at ``params``.

  Example::

    >>> import jax, jax.numpy as jnp, sadam_optax
    >>> f = lambda w: jnp.sum(jnp.abs(w))
    >>> rho = sadam_optax.estimate_lgi(
    ...     f, jnp.array([0.1]), jnp.array([-0.3]), jax.random.key(0))
    >>> round(float(rho), 3)   # past the kink at 0 the loss rises: 5/8
    0.625

  Args:
    value_fn: ``params -> scalar`` loss. Close over the batch (or bind it with
      ``functools.partial``); under ``jax.jit`` it cannot be an argument.
    params: the point at which to measure.
    direction: the proposed step (new params minus params); ignored by
      ``'literal'``, which probes random directions.
    key: a PRNG key (``jax.random.key``).
    estimator: ``'uphill'`` (default), ``'secant'``, ``'step'``,
      ``'literal'``, ``'random-jvp'`` or ``'trajectory'`` (module doc). Here
      the secant readings compute the gradient and the loss at ``params``
      themselves; in an optimizer they come with the train step.
    num_probes: number of probes, a static int >= 2; None takes the
      estimator's default (2 for ``'step'``: the two ends of the step; 8 for
      ``'literal'``; ``'secant'`` and ``'trajectory'`` always read two
      slopes).
    probe_radius: ``'step'``: noise radius relative to the step's norm
      (default 0.01); ``'literal'``: sigma of the finite differences (default
      0.01, the authors' value); unused by ``'trajectory'``.
    chunk_size: evaluate probes in chunks of this size (``lax.map``) to bound
      activation memory; None (default): one at a time; ``num_probes`` or
      more: all at once (vmapped).
    axis_name: a ``shard_map``/``pmap`` axis over which probe values are
      averaged, so that data-parallel replicas agree on rho.
    probe_placement: ``'step'`` only: ``'ends'`` (default) or ``'slices'``
      (the former placement, an ablation; see :func:`step_samples`).

  Returns:
    rho, a float32 scalar: in [0, 1] for ``'uphill'``; in [0, 1) for
    ``'secant'``, ``'step'``, ``'random-jvp'`` and ``'trajectory'``; in
    [0, k / (k - 1)] for ``'literal'`` (the authors' unbiased variance).

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  estimator = check_estimator(estimator)
  check_placement(probe_placement)
  num_probes = resolve_num_probes(estimator, num_probes)
  probe_radius = resolve_probe_radius(estimator, probe_radius)
  check_value_fn(value_fn, params, estimator=estimator)
  grad = value = None
  if estimator not in ('literal', 'random-jvp'):
    check_direction(direction, params, estimator)
  if estimator in SECANT_READINGS:
    value, grad = jax.value_and_grad(value_fn)(params)
    grad = tree_math.optax_grad(grad)
  if estimator == 'trajectory':
    return instability_ratio(endpoint_samples(value_fn, params, direction, axis_name=axis_name))
  rho, _, _ = read_rho(
    estimator,
    value_fn,
    params,
    direction,
    key,
    grad=grad,
    value=value,
    num_probes=num_probes,
    probe_radius=probe_radius,
    chunk_size=chunk_size,
    axis_name=axis_name,
    placement=probe_placement,
  )
  return rho


def read_rho(
  estimator: str,
  value_fn: Callable[[Any], jax.Array],
  params: Any,
  step: Any,
  key: jax.Array,
  *,
  grad: Any,
  value: Optional[jax.Array],
  num_probes: int,
  probe_radius: float,
  chunk_size: Optional[int],
  axis_name: Optional[str],
  placement: str = 'ends',
  step_scale: Optional[jax.Array] = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(rho, samples, resolved)`` of one reading of the loss (every estimator but
  ``'trajectory'``, which reads consecutive gradients instead).

  The one place that maps an estimator to its samples and its ratio; the
  transformations and :func:`estimate_lgi` both call it.

  Args:
    estimator: a name of :data:`ESTIMATORS` other than ``'trajectory'``.
    value_fn: ``params -> scalar`` loss.
    params: the current parameters.
    step: the proposed step (unused by ``'literal'`` and ``'random-jvp'``).
    key: a PRNG key (used by ``'step'``, ``'literal'``, ``'random-jvp'``).
    grad: the loss's gradient at ``params`` (the secant readings).
    value: the loss at ``params``, or None (the secant readings).
    num_probes: k, static.
    probe_radius: the estimator's radius.
    chunk_size: probes evaluated at once; None: one at a time.
    axis_name: a mapped axis over which the samples are averaged.
    placement: where ``'step'`` places its probes (:func:`step_samples`).
    step_scale: a scalar; if given, the step is ``step_scale * step``, formed
      where it is used (:func:`secant_samples`).

  Returns:
    ``(rho, samples, resolved)``: rho (float32 scalar), the samples it was
    computed from, and whether they resolved anything (a bool scalar; False
    only for a secant reading lost in the loss's rounding, whose rho is 0:
    :func:`secant_reading`).
  """
  resolved = jnp.bool_(True)
  if not jax.tree.leaves(params):  # Nothing to move, nothing to read.
    return jnp.float32(0.0), jnp.zeros((2,), jnp.float32), resolved
  if estimator in SECANT_READINGS:
    samples, resolved = secant_reading(
      value_fn, params, step, grad, value, axis_name=axis_name, step_scale=step_scale
    )
    return (uphill_share if estimator == 'uphill' else secant_ratio)(samples), samples, resolved
  if estimator == 'random-jvp':
    samples = random_jvp_samples(value_fn, params, key, num_probes=num_probes, axis_name=axis_name)
    return paper_ratio(samples), samples, resolved
  probes = dict(
    num_probes=num_probes, probe_radius=probe_radius, chunk_size=chunk_size, axis_name=axis_name
  )
  if estimator == 'literal':
    samples = literal_samples(value_fn, params, key, **probes)
    return literal_ratio(samples), samples, resolved
  step = tree_math.scale_step(step, step_scale)
  samples = step_samples(value_fn, params, step, key, placement=placement, **probes)
  return instability_ratio(samples), samples, resolved


def _shapes(tree: Any) -> Any:
  return jax.tree.map(lambda x: getattr(x, 'shape', type(x).__name__), tree)


def check_direction(direction: Any, params: Any, estimator: str, name: str = 'direction') -> None:
  """Fails clearly unless ``direction`` is a tree like ``params``."""
  if direction is None:
    raise ValueError(
      f"estimator='{estimator}' measures rho along a step: pass {name}= "
      'the proposed step (new params minus params), a tree like params.'
    )
  check_like_params(direction, params, name)


def check_like_params(tree: Any, params: Any, name: str) -> None:
  """Fails clearly unless ``tree`` has the structure and shapes of params."""
  same = jax.tree.structure(tree) == jax.tree.structure(params) and all(
    jnp.shape(a) == jnp.shape(b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(params))
  )
  if not same:
    raise ValueError(
      f'{name}= must be a tree with the structure and shapes of params '
      f'({_shapes(params)}), got {_shapes(tree)}. Pass the gradient of the '
      'loss with respect to params only (not (loss, grads)).'
    )


def check_value_fn(
  value_fn: Callable[[Any], Any], params: Any, *, estimator: str = DEFAULT_ESTIMATOR
) -> None:
  """Fails clearly unless ``value_fn`` gives a scalar loss at ``params``.

  Abstract evaluation: one more trace of the loss, nothing at run time.

  Raises:
    ValueError: ``value_fn`` fails at ``params``, returns a non-scalar or
      a loss that does not depend on ``params``, or (``'literal'``) returns a
      loss too narrow for finite differences.
  """
  try:
    jaxpr, out = jax.make_jaxpr(value_fn, return_shape=True)(params)
  except Exception as e:  # pylint: disable=broad-except; re-raised with what to change.
    raise ValueError(
      'S-Adam could not evaluate value_fn at the params it received '
      f'(shapes {_shapes(params)}): {type(e).__name__}: {e} {_trace_advice(e, params)}'
    ) from e
  if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
    fix = (
      'return the loss alone (for a (loss, aux) function f, pass value_fn=lambda p: f(p)[0]).'
      if isinstance(out, (tuple, list, dict))
      else 'reduce it (e.g. jnp.mean over the batch).'
    )
    raise ValueError(f'value_fn must return the loss as a scalar, got {_shapes(out)}: {fix}')
  if not jnp.issubdtype(out.dtype, jnp.floating):
    # An integer or boolean loss has no slope and rounds every rise to a
    # step of 1 (the brake would read noise); jax.grad refuses them too.
    raise ValueError(
      f'value_fn must return a real floating-point loss, got {out.dtype}: return it as '
      'float32 (loss.astype(jnp.float32)).'
    )
  if jaxpr.jaxpr.invars and not _reads_inputs(jaxpr.jaxpr):
    # A closure over the model (nnx) or over the params of another step: the
    # probe would read a flat loss along every step and brake by a constant.
    raise ValueError(
      'value_fn(params) does not depend on the params it is handed: it must compute '
      'the loss from them (e.g. lambda p: loss_fn(p, batch)), not from parameters it '
      'closes over. With Flax nnx, build it with '
      'sadam_optax.flax_utils.nnx_value_fn(model, loss_fn).'
    )
  if (
    estimator == 'literal'
    and jnp.issubdtype(out.dtype, jnp.floating)
    and jnp.finfo(out.dtype).nmant < jnp.finfo(jnp.float32).nmant
  ):
    raise ValueError(
      f"estimator='literal' takes finite differences of the loss, which "
      f'in {out.dtype} round to 0 and silently turn the brake off: return '
      'the loss in float32 (loss.astype(jnp.float32)).'
    )


def _trace_advice(error: Exception, params: Any) -> str:
  """What to change when tracing ``value_fn`` at ``params`` failed with ``error``."""
  if type(error).__module__.startswith('flax') or isinstance(
    error, jax.errors.UnexpectedTracerError
  ):
    # nnx raises when a traced function mutates a module it closes over
    # (BatchNorm statistics, dropout RNG counts): S-Adam traces value_fn
    # again at other points, so it must be pure.
    return (
      'value_fn must be a pure function of the params it is handed; it seems to '
      'close over a model whose state it mutates (BatchNorm statistics, dropout '
      'RNG counts). Build it with sadam_optax.flax_utils.nnx_value_fn(model, '
      'loss_fn) (nnx) or linen_value_fn (linen).'
    )
  advice = (
    'Check that value_fn takes the params passed to update() as its only argument (bind '
    'the batch: value_fn=lambda p: loss_fn(p, batch)) and is traceable by JAX.'
  )
  leaves = jax.tree.leaves(params)
  if len(leaves) == 1 and jnp.ndim(leaves[0]) == 1:
    advice += (
      ' If it sits inside optax.flatten, which hands it one flat vector in '
      'place of your parameter tree, move it outside (S-Adam gains '
      'nothing from flattening).'
    )
  return advice


# Calls whose sub-jaxpr maps the equation's inputs to its outputs one to one
# (unlike scan or while, whose carries loop back).
_CALLS = {'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr', 'remat2': 'jaxpr'}
_CALLS.update(custom_jvp_call='call_jaxpr', custom_vjp_call='call_jaxpr')


def _inputs_read(jaxpr: Any, outputs: Sequence[int]) -> set:
  """Indices of the inputs of ``jaxpr`` that its ``outputs`` are computed from.

  Walks the equations backwards from those outputs, into nested calls (a
  ``jit`` that closes over other parameters must not pass for one that
  reads its argument); any other equation with a sub-jaxpr (``cond``,
  ``scan``) counts as reading all its inputs, so the answer errs towards
  reading.
  """
  outvars = [jaxpr.outvars[i] for i in outputs]
  needed = {v for v in outvars if not isinstance(v, _Literal)}
  for eqn in reversed(jaxpr.eqns):
    wanted = [i for i, v in enumerate(eqn.outvars) if v in needed]
    if not wanted:
      continue
    sub = eqn.params.get(_CALLS.get(eqn.primitive.name, ''))
    sub = getattr(sub, 'jaxpr', sub)  # A ClosedJaxpr or a Jaxpr.
    if (
      sub is not None
      and len(sub.invars) == len(eqn.invars)
      and len(sub.outvars) == len(eqn.outvars)
    ):
      reads = [eqn.invars[i] for i in _inputs_read(sub, wanted)]
    else:
      reads = eqn.invars
    needed.update(v for v in reads if not isinstance(v, _Literal))
  return {i for i, v in enumerate(jaxpr.invars) if v in needed}


def _reads_inputs(jaxpr: Any) -> bool:
  """Whether the output of ``jaxpr`` is computed from any of its inputs."""
  return bool(_inputs_read(jaxpr, range(len(jaxpr.outvars))))


def static_int(name: str, value: Any, *, minimum: int, arrays: bool = False) -> int:
  """``value`` as a Python int >= ``minimum``, or a clear error.

  Accepts Python and NumPy integers (and, with ``arrays``, concrete integer
  JAX arrays); refuses floats, bools and JAX arrays, which is what
  ``optax.inject_hyperparams`` makes of an argument not in ``static_args``.
  """
  if isinstance(value, jax.Array) and not arrays:
    raise ValueError(
      f'{name} must be a static Python int, got a JAX array: with '
      f"optax.inject_hyperparams, pass static_args=('{name}',)."
    )
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
      f'{name} must be a static int, got a traced value: with '
      f"optax.inject_hyperparams, pass static_args=('{name}',)."
    )
  integral = isinstance(value, (int, np.integer)) or (
    isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.integer) and value.ndim == 0
  )
  if isinstance(value, bool) or not integral:
    raise ValueError(f'{name}={value!r}: it must be an int >= {minimum}.')
  value = int(value)
  if value < minimum:
    raise ValueError(f'{name}={value}: it must be an int >= {minimum}.')
  return value


def check_placement(placement: str) -> str:
  if placement not in PLACEMENTS:
    raise ValueError(f'probe_placement={placement!r} is unknown: choose one of {PLACEMENTS}.')
  return placement


def check_estimator(estimator: str) -> str:
  if estimator not in ESTIMATORS:
    raise ValueError(f'estimator={estimator!r} is unknown: choose one of {ESTIMATORS}.')
  return estimator


def resolve_num_probes(estimator: str, num_probes: Optional[int]) -> int:
  """The estimator's default k, or ``num_probes`` checked to be a static int."""
  if num_probes is None:
    return DEFAULT_NUM_PROBES[estimator]
  return static_int('num_probes', num_probes, minimum=2)


def resolve_probe_radius(estimator: str, probe_radius: Optional[float]) -> Any:
  """The estimator's default radius, or ``probe_radius`` checked positive."""
  if probe_radius is None:
    return DEFAULT_PROBE_RADIUS[estimator]
  if isinstance(probe_radius, (int, float)) and not probe_radius > 0:
    raise ValueError(f'probe_radius={probe_radius}: it must be > 0.')
  return probe_radius
