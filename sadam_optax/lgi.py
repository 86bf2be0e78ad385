"""Estimators of the Local Geometric Instability (LGI) rho.

rho measures how much the directional derivatives of the loss disagree near the
current parameters. Four readings are offered (see ``README.md`` and the
validation in ``experiments/lgi_validation.py`` for what each one detects):

* ``'secant'``: the cheapest reading of the slopes along the proposed step. The
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

from typing import Any, Callable, Literal, Optional

import jax
import jax.numpy as jnp
import optax

Estimator = Literal['secant', 'step', 'literal', 'trajectory']
ESTIMATORS = ('secant', 'step', 'literal', 'trajectory')

# Estimator-specific defaults. 'literal' follows the authors' scripts
# (k = 8, sigma = 0.01). 'step': the two ends of the step, with noise of 1% of its length, ranked
# chattering steps best in the validation (experiments/lgi_validation.py).
# 'secant' and 'trajectory' always read two slopes and use no radius.
DEFAULT_NUM_PROBES = {'secant': 2, 'step': 2, 'literal': 8, 'trajectory': 2}
DEFAULT_PROBE_RADIUS = {'secant': 0.01, 'step': 0.01, 'literal': 0.01,
                        'trajectory': 0.01}
# The authors' absolute epsilon and clip for the literal ratio.
LITERAL_EPS = 1e-6
LITERAL_CLIP = 10.0
# Relative epsilon of the other ratios: keeps rho < 1 and invariant to a
# positive rescaling of the loss.
RELATIVE_EPS = 1e-6
_TINY = 1e-30


def instability_ratio(samples: jax.Array) -> jax.Array:
  """Biased Var(Y) / (E[Y]^2 + Var(Y)) of samples, in [0, 1).

  Args:
    samples: directional derivatives along the first axis (reduced there).

  Returns:
    A float32 scalar (or array over the trailing axes) in [0, 1). 0 when all
    samples agree, close to 1 when their mean is 0 but they are not.
  """
  y = samples.astype(jnp.float32)
  mean = jnp.mean(y, axis=0)
  var = jnp.mean((y - mean) ** 2, axis=0)  # Two passes: no cancellation.
  return var / ((var + mean * mean) * (1.0 + RELATIVE_EPS) + _TINY)


def literal_ratio(samples: jax.Array) -> jax.Array:
  """The authors' ratio: unbiased Var(D) / (mean(D^2) + 1e-6), clipped at 10.

  Note that with the unbiased variance this lies in [0, k / (k - 1)], not in
  [0, 1): it is kept exactly as the reference scripts compute it.

  Args:
    samples: finite differences D, shape ``(k,)``.

  Returns:
    A float32 scalar.
  """
  d = samples.astype(jnp.float32)
  k = d.shape[0]
  var = jnp.var(d, axis=0) * k / (k - 1)
  return jnp.minimum(var / (jnp.mean(d * d, axis=0) + LITERAL_EPS),
                     LITERAL_CLIP)


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
  s0, s = samples.astype(jnp.float32)
  var = (s - s0) ** 2 / 3.0
  return var / ((var + s * s) * (1.0 + RELATIVE_EPS) + _TINY)


def tree_dot(a: Any, b: Any) -> jax.Array:
  """<a, b> over all leaves, accumulated in float32."""
  # Not jnp.vdot: it ravels its inputs, which an explicitly sharded array
  # refuses (jax.make_mesh's default axis type).
  return sum((jnp.sum(x.astype(jnp.float32) * y.astype(jnp.float32))
              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))),
             jnp.float32(0.0))


def _dot_and_sq_norm(a: Any, b: Any) -> tuple[jax.Array, jax.Array]:
  """``(<a, b>, <b, b>)`` over all leaves in float32, one reduction per leaf.

  One two-output reduction per leaf, not a scaled copy and two reductions:
  on the CPU each is a kernel, and on a 2-core ResNet-18 (62 leaves) those
  kernels made the secant's step 1.52x AdamW's instead of 1.29x, the cost of
  a forward pass (``benchmarks/README.md``).
  """
  zero = jnp.zeros([], jnp.float32)
  dot, sq = zero, zero
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    d, q = jax.lax.reduce((x * y, y * y), (zero, zero),
                          lambda p, r: (p[0] + r[0], p[1] + r[1]),
                          tuple(range(y.ndim)))
    dot, sq = dot + d, sq + q
  return dot, sq


def _global_norm(tree: Any) -> jax.Array:
  return optax.tree.norm(tree).astype(jnp.float32)


def _axpy(params: Any, a: jax.Array, x: Any) -> Any:
  """params + a * x in float32, cast back to each leaf's dtype."""
  return jax.tree.map(
      lambda p, v: (p.astype(jnp.float32) + a * v.astype(jnp.float32)).astype(
          p.dtype), params, x)


def _cast_like(tree: Any, like: Any) -> Any:
  """``tree`` with each leaf in the dtype of the matching leaf of ``like``."""
  return jax.tree.map(lambda x, p: x.astype(p.dtype), tree, like)


def unit_direction(direction: Any) -> tuple[Any, jax.Array]:
  """Returns ``(direction / ||direction||, ||direction||)``; zero stays zero."""
  norm = _global_norm(direction)
  inv = jnp.where(norm > 0, 1.0 / jnp.maximum(norm, _TINY), 0.0)
  return jax.tree.map(lambda d: (d * inv.astype(d.dtype)), direction), norm


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


def _map_probes(fn: Callable[[Any], jax.Array], xs: Any,
                chunk_size: Optional[int]) -> jax.Array:
  """Probes in chunks (``lax.map``); None: one at a time.

  One probe at a time was faster than vmapping them on every model
  benchmarked (vmapped probes at different parameters turn each convolution
  into a batched one) and adds the least memory; a chunk as large as the
  number of probes vmaps them all.
  """
  num = jax.tree.leaves(xs)[0].shape[0]
  if chunk_size is not None and chunk_size >= num:
    return jax.vmap(fn)(xs)
  return jax.lax.map(fn, xs, batch_size=chunk_size or 1)


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


def replica_mean(x: jax.Array, axis_name: Optional[str],
                 params: Any) -> jax.Array:
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
  stray = varying_axes(x).difference(
      *[varying_axes(p) for p in jax.tree.leaves(params)])
  if stray:
    raise ValueError(
        f'The probe values vary over the mapped axes {sorted(stray)}, the '
        'parameters do not: each data-parallel replica would measure rho on '
        'its own shard of the batch, brake by it, and the replicas would '
        'drift apart. Pass axis_name= the data axis to sadam / sadamw / '
        'lgi_probe / estimate_lgi (and pmean the gradients over it).')
  return x


def step_samples(value_fn: Callable[[Any], jax.Array], params: Any,
                 step: Any, key: jax.Array, *, num_probes: int,
                 probe_radius: float, chunk_size: Optional[int] = None,
                 axis_name: Optional[str] = None) -> jax.Array:
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

  Returns:
    float32 array of shape ``(num_probes,)``.
  """
  unit, norm = unit_direction(step)
  c_key, r_key = jax.random.split(key)
  t = jnp.linspace(0.0, 1.0, num_probes)
  c = jax.random.uniform(c_key, (num_probes,), minval=-1.0, maxval=1.0)
  noise = _rademacher_like(r_key, params)
  # jvp wants tangents in the primal's dtype; the step may be wider than the
  # params (e.g. float32 updates of bf16 params with mu_dtype=float32).
  tangent = _cast_like(unit, params)

  def probe(tc):
    t_i, c_i = tc
    point = _axpy(_axpy(params, t_i * norm, unit), c_i * probe_radius * norm,
                  noise)
    _, slope = jax.jvp(value_fn, (point,), (tangent,))
    return slope.astype(jnp.float32)

  return replica_mean(_map_probes(probe, (t, c), chunk_size), axis_name,
                      params)


def secant_samples(value_fn: Callable[[Any], jax.Array], params: Any,
                   step: Any, grad: Any, value: Optional[jax.Array] = None,
                   *, axis_name: Optional[str] = None) -> jax.Array:
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

  Returns:
    float32 array ``(s0, s)``; zeros when the step is zero, or when the loss
    changes over it by no more than its rounding and ``<grad, step>`` is as
    small (nothing to measure).
  """
  end = _axpy(params, jnp.float32(1.0), step)
  if all(not jnp.issubdtype(p.dtype, jnp.floating)
         or jnp.finfo(p.dtype).nmant >= jnp.finfo(jnp.float32).nmant
         for p in jax.tree.leaves(params)):
    moved = step
  else:
    # Measure along the segment actually travelled: in bfloat16 the end
    # point rounds, by up to a tenth of a small step.
    moved = jax.tree.map(
        lambda e, p: e.astype(jnp.float32) - p.astype(jnp.float32), end,
        params)
  dot, sq_norm = _dot_and_sq_norm(grad, moved)
  norm = jnp.sqrt(sq_norm)
  s0 = jnp.where(norm > 0, dot / jnp.maximum(norm, _TINY), 0.0)
  f0 = jnp.asarray(value_fn(params) if value is None else value)
  f1 = jnp.asarray(value_fn(end))
  # Only the difference matters: subtract before averaging over replicas.
  rise = f1.astype(jnp.float32) - f0.astype(jnp.float32)
  s = jnp.where(norm > 0, rise / jnp.maximum(norm, _TINY), 0.0)
  if axis_name is not None and _summed_over(axis_name, grad, rise):
    s0 = s0 / jax.lax.psum(1, axis_name)
  # A rise within the rounding of the loss, where the gradient predicts as
  # little, is rounding noise: rho of it would be anything in [0, 1).
  noise = 4 * max(_eps(f0), _eps(f1)) * (jnp.abs(f0) + jnp.abs(f1)).astype(
      jnp.float32)
  # A non-finite loss passes through, for the caller to count and discard.
  measurable = ((jnp.abs(rise) > noise) | (jnp.abs(s0) * norm > noise)
                | ~jnp.isfinite(noise))
  samples = jnp.where(measurable, jnp.stack([s0, s]), 0.0)
  return replica_mean(samples, axis_name, params)


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


def endpoint_samples(value_fn: Callable[[Any], jax.Array], params: Any,
                     step: Any, *, axis_name: Optional[str] = None
                     ) -> jax.Array:
  """Directional derivatives along ``step`` at both of its ends, shape (2,)."""
  unit, norm = unit_direction(step)
  ends = jnp.array([0.0, 1.0])

  tangent = _cast_like(unit, params)

  def probe(t):
    _, slope = jax.jvp(value_fn, (_axpy(params, t * norm, unit),), (tangent,))
    return slope.astype(jnp.float32)

  return replica_mean(jax.vmap(probe)(ends), axis_name, params)


def _normal_per_tensor(key: jax.Array, tree: Any) -> Any:
  """Gaussian directions normalised to unit norm separately per tensor."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))

  def draw(k, x):
    u = jax.random.normal(k, x.shape, jnp.float32)
    return (u / jnp.maximum(jnp.linalg.norm(u), _TINY)).astype(x.dtype)

  return jax.tree.unflatten(treedef,
                            [draw(k, x) for k, x in zip(keys, leaves)])


def literal_samples(value_fn: Callable[[Any], jax.Array], params: Any,
                    key: jax.Array, *, num_probes: int, probe_radius: float,
                    chunk_size: Optional[int] = None,
                    axis_name: Optional[str] = None) -> jax.Array:
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
    return value_fn(_axpy(params, jnp.float32(probe_radius), u)).astype(
        jnp.float32)

  fs = replica_mean(_map_probes(probe, jax.random.split(key, num_probes),
                                chunk_size), axis_name, params)
  return (fs - f0) / probe_radius


def estimate_lgi(value_fn: Callable[[Any], jax.Array], params: Any,
                 direction: Any, key: jax.Array, *,
                 estimator: Estimator = 'secant',
                 num_probes: Optional[int] = None,
                 probe_radius: Optional[float] = None,
                 chunk_size: Optional[int] = None,
                 axis_name: Optional[str] = None) -> jax.Array:
  """Estimates the Local Geometric Instability rho at ``params``.

  Example::

    >>> import jax, jax.numpy as jnp, sadam_optax
    >>> f = lambda w: jnp.sum(jnp.abs(w))
    >>> rho = sadam_optax.estimate_lgi(
    ...     f, jnp.array([0.1]), jnp.array([-0.2]), jax.random.key(0))
    >>> bool(rho > 0.5)   # the step jumps across the kink at 0
    True

  Args:
    value_fn: ``params -> scalar`` loss. Close over the batch (or bind it with
      ``functools.partial``); under ``jax.jit`` it cannot be an argument.
    params: the point at which to measure.
    direction: the proposed step (new params minus params); ignored by
      ``'literal'``, which probes random directions.
    key: a PRNG key (``jax.random.key``).
    estimator: ``'secant'``, ``'step'``, ``'literal'`` or ``'trajectory'``
      (module doc). Here ``'secant'`` computes the gradient and the loss at
      ``params`` itself; in an optimizer they come with the train step.
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

  Returns:
    rho, a float32 scalar: in [0, 1) for ``'secant'``, ``'step'`` and
    ``'trajectory'``; in
    [0, k / (k - 1)] for ``'literal'`` (the authors' unbiased variance).

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  estimator = check_estimator(estimator)
  num_probes = resolve_num_probes(estimator, num_probes)
  probe_radius = resolve_probe_radius(estimator, probe_radius)
  if estimator == 'literal':
    return literal_ratio(literal_samples(
        value_fn, params, key, num_probes=num_probes,
        probe_radius=probe_radius, chunk_size=chunk_size,
        axis_name=axis_name))
  if estimator == 'trajectory':
    return instability_ratio(endpoint_samples(value_fn, params, direction,
                                              axis_name=axis_name))
  if estimator == 'secant':
    value, grad = jax.value_and_grad(value_fn)(params)
    return secant_ratio(secant_samples(value_fn, params, direction, grad,
                                       value, axis_name=axis_name))
  return instability_ratio(step_samples(
      value_fn, params, direction, key, num_probes=num_probes,
      probe_radius=probe_radius, chunk_size=chunk_size, axis_name=axis_name))


def check_estimator(estimator: str) -> str:
  if estimator not in ESTIMATORS:
    raise ValueError(f'estimator={estimator!r} is unknown: choose one of '
                     f'{ESTIMATORS}.')
  return estimator


def resolve_num_probes(estimator: str, num_probes: Optional[int]) -> int:
  """The estimator's default k, or ``num_probes`` checked to be a static int."""
  if num_probes is None:
    return DEFAULT_NUM_PROBES[estimator]
  if not isinstance(num_probes, int) or isinstance(num_probes, bool):
    raise ValueError(
        f'num_probes must be a static Python int, got {num_probes!r}. With '
        "optax.inject_hyperparams, pass static_args=('num_probes',).")
  if num_probes < 2:
    raise ValueError(f'num_probes={num_probes}: a variance needs at least 2 '
                     'probes; pass num_probes >= 2.')
  return num_probes


def resolve_probe_radius(estimator: str,
                         probe_radius: Optional[float]) -> Any:
  """The estimator's default radius, or ``probe_radius`` checked positive."""
  if probe_radius is None:
    return DEFAULT_PROBE_RADIUS[estimator]
  if isinstance(probe_radius, (int, float)) and not probe_radius > 0:
    raise ValueError(f'probe_radius={probe_radius}: it must be > 0.')
  return probe_radius
