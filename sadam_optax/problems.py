"""Non-smooth test problems with known kinks, for validating a kink detector.

Every problem is a ``NamedTuple`` of arrays (a pytree, so it can be passed to
``jax.jit``) with a ``value(params)`` method taking a flat 1-D parameter vector,
and a ``minimiser()`` method. The module-level ground-truth functions describe
the geometry of the segment ``params + t * step``, ``t in [0, 1]``, through
``phi(t) = value(params + t * step)``:

* :func:`first_kink_time` -- smallest ``t > 0`` at which the ray crosses a kink.
* :func:`crosses_kink` -- ``phi`` is non-differentiable somewhere in ``(0, 1)``.
* :func:`kink_distance` -- Euclidean distance from the segment to the kink set.
* :func:`endpoint_slopes` -- one-sided slopes ``phi'(0+)`` and ``phi'(1-)``.
* :func:`directional_sign_change` -- they have opposite signs ("chattering").
* :func:`subdiff_diameter_along` -- spread of the kink part of the directional
  derivatives along ``step / |step|`` over the probe region.
* :func:`sample_points` -- labelled ``(params, step)`` pairs for ROC studies.

The ground-truth functions take ``(problem, params, step)`` with (d,) arrays,
are pure, and run under ``jax.jit`` and ``jax.vmap`` (problems are pytrees).
The *probe region* of a segment with radius ``r`` is the set of points at
Euclidean distance at most ``r`` from the segment (a "capsule"); ``r = 0`` is
the segment itself. Kink sets are unions of hyperplanes (``abs_sum``,
``relu_net``) or the tie set of a max-affine function. Everything except
:func:`subdiff_diameter_along` with ``radius > 0`` is exact (closed form, no
sampling), up to a relative tolerance of ``1e-5`` for ties in ``max_affine``.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026 (Figure 1).
  Kumar, `GD doesn't make the cut: Three ways that non-differentiability
  affects neural network training <https://arxiv.org/abs/2401.08426>`_, 2024.
"""

from typing import Callable, NamedTuple, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

_TIE_RTOL = 1e-5


class AbsSum(NamedTuple):
  """``f(w) = sum_i weights_i |w_i - centers_i| + 0.5 * ridge * ||w||^2``.

  Kinks: the hyperplanes ``w_i = centers_i`` (for ``weights_i != 0``).

  Attributes:
    weights: (d,) non-negative weights ``a_i`` of the absolute values.
    centers: (d,) kink positions ``c_i``.
    ridge: scalar ``mu >= 0`` of the (smooth) quadratic term.
  """

  weights: jax.Array
  centers: jax.Array
  ridge: jax.Array

  def value(self, params: jax.Array) -> jax.Array:
    """Returns ``f(params)`` for a (d,) array (jittable)."""
    return jnp.sum(self.weights * jnp.abs(params - self.centers)) + 0.5 * self.ridge * jnp.sum(
      params**2
    )

  def minimiser(self) -> jax.Array:
    """The unique minimiser ``clip(c, -a / mu, a / mu)``; ``c`` if mu = 0."""
    mu = jnp.asarray(self.ridge)
    bound = self.weights / jnp.where(mu > 0, mu, 1.0)
    clipped = jnp.clip(self.centers, -bound, bound)
    return jnp.where(mu > 0, clipped, self.centers)


class MaxAffine(NamedTuple):
  """``f(w) = max_j slopes_j . (w - center) + 0.5 * ridge * ||w - center||^2``.

  I.e. ``max_j (A_j . w + b_j)`` with ``b_j = -A_j . center``; the quadratic is
  centred so that the minimiser stays known. Kinks: where the argmax ties.

  Attributes:
    slopes: (k, d) piece gradients ``A_j``; :func:`max_affine` makes their mean
      zero, so ``0`` is a subgradient at ``center``.
    center: (d,) point where all pieces tie (value 0); the minimiser.
    ridge: scalar ``mu >= 0``.
  """

  slopes: jax.Array
  center: jax.Array
  ridge: jax.Array

  def value(self, params: jax.Array) -> jax.Array:
    """Returns ``f(params)`` for a (d,) array (jittable)."""
    x = params - self.center
    return jnp.max(self.slopes @ x) + 0.5 * self.ridge * jnp.sum(x**2)

  def minimiser(self) -> jax.Array:
    """``center``: a minimiser if the slopes have zero mean (unique if
    mu > 0)."""
    return self.center


class ReluNet(NamedTuple):
  """Mean squared error of a 1-hidden-layer ReLU net, as a function of its
  flat parameter vector ``[W1 (h*m, row-major), b1 (h), w2 (h), b2 (1)]``:
  ``f = 0.5 * mean_n (w2 . relu(W1 x_n + b1) + b2 - y_n)^2``.

  Kinks: the hyperplanes ``W1[h] . x_n + b1[h] = 0`` of the pre-activations
  (linear in the parameters). A crossing is a genuine kink of ``f`` whenever
  the residual and ``w2[h]`` are non-zero there, i.e. generically.

  Attributes:
    inputs: (N, m) fixed data ``x_n``.
    targets: (N,) targets, produced by the teacher net ``solution``.
    init_params: (P,) a random initialisation, ``P = h * (m + 2) + 1``.
    solution: (P,) teacher parameters: a global minimiser (loss 0).
  """

  inputs: jax.Array
  targets: jax.Array
  init_params: jax.Array
  solution: jax.Array

  def value(self, params: jax.Array) -> jax.Array:
    """Returns the loss for a flat (P,) parameter vector (jittable)."""
    return 0.5 * jnp.mean((_relu_out(self, params) - self.targets) ** 2)

  def minimiser(self) -> jax.Array:
    """The teacher parameters (one of many global minimisers, by symmetry)."""
    return self.solution


Problem = Union[AbsSum, MaxAffine, ReluNet]


class KinkSamples(NamedTuple):
  """Labelled segments from :func:`sample_points`.

  Attributes:
    params: (n, d) start points.
    steps: (n, d) steps.
    labels: (n,) int32; 1 if the step crosses a kink, 0 if no kink lies within
      ``radius`` of the segment.
  """

  params: jax.Array
  steps: jax.Array
  labels: jax.Array


# ----------------------------------------------------------------- constructors
# Random problems and samples are drawn with NumPy from a generator seeded by
# the bits of the JAX key: reproducible, and free of XLA compilation.


def _rng(key: jax.Array) -> np.random.Generator:
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())


def _f32(x) -> jax.Array:
  return jnp.asarray(np.asarray(x, np.float32))


def figure1() -> AbsSum:
  """``f(x, y) = |x - 1| + |y - 1| + 0.5 (x^2 + y^2)``, minimum 1.0 at (1, 1).

  Returns:
    The :class:`AbsSum` of Figure 1 of Xu et al. (2026); kinks on x=1 and y=1.
  """
  return AbsSum(_f32(np.ones(2)), _f32(np.ones(2)), _f32(1.0))


def abs_sum(
  key: jax.Array,
  d: int,
  *,
  ridge: float = 1.0,
  weight_range: Tuple[float, float] = (0.5, 1.5),
  center_scale: float = 1.0,
) -> AbsSum:
  """Random weighted sum of absolute values plus a ridge, in ``d`` dimensions.

  Args:
    key: PRNG key.
    d: dimension.
    ridge: ``mu`` of ``0.5 * mu * ||w||^2``.
    weight_range: ``a_i ~ Uniform(weight_range)``.
    center_scale: ``c_i ~ center_scale * Normal(0, 1)``.

  Returns:
    An :class:`AbsSum`.
  """
  rng = _rng(key)
  weights = rng.uniform(weight_range[0], weight_range[1], d)
  return AbsSum(_f32(weights), _f32(center_scale * rng.standard_normal(d)), _f32(ridge))


def l1_toy(d: int, *, penalty: float = 1.0, ridge: float = 0.0) -> AbsSum:
  """LASSO toy ``penalty * ||w||_1 + 0.5 * ridge * ||w||^2``, minimiser 0.

  References:
    Kumar (2024), arXiv:2401.08426, Section on L1 regularisation.

  Args:
    d: dimension.
    penalty: L1 coefficient (> 0).
    ridge: ridge coefficient (>= 0).

  Returns:
    An :class:`AbsSum` with centers 0.
  """
  return AbsSum(_f32(np.full(d, penalty)), _f32(np.zeros(d)), _f32(ridge))


def max_affine(
  key: jax.Array, d: int, num_pieces: int = 8, *, ridge: float = 0.0, center_scale: float = 1.0
) -> MaxAffine:
  """Random max of ``num_pieces`` affine functions, all tied at ``center``.

  Args:
    key: PRNG key.
    d: dimension.
    num_pieces: number ``k >= 2`` of pieces.
    ridge: ``mu`` of ``0.5 * mu * ||w - center||^2``.
    center_scale: ``center ~ center_scale * Normal(0, I)``.

  Returns:
    A :class:`MaxAffine` with slopes ``~ Normal(0, I / d)`` minus their mean.
  """
  rng = _rng(key)
  slopes = rng.standard_normal((num_pieces, d)) / np.sqrt(d)
  return MaxAffine(
    _f32(slopes - slopes.mean(axis=0)), _f32(center_scale * rng.standard_normal(d)), _f32(ridge)
  )


def _relu_init(rng, in_dim, hidden):
  """He-normal W1, N(0, 0.01) b1, N(0, 1/h) w2, b2 = 0."""
  return np.concatenate(
    [
      rng.standard_normal(hidden * in_dim) * np.sqrt(2.0 / in_dim),
      0.1 * rng.standard_normal(hidden),
      rng.standard_normal(hidden) / np.sqrt(hidden),
      np.zeros(1),
    ]
  )


def relu_net(key: jax.Array, *, num_data: int = 8, in_dim: int = 4, hidden: int = 8) -> ReluNet:
  """A small teacher-student ReLU regression problem.

  Args:
    key: PRNG key.
    num_data: number ``N`` of data points (``N * hidden`` kink hyperplanes).
    in_dim: input dimension ``m``.
    hidden: hidden width ``h``; the parameter dimension is ``h * (m + 2) + 1``.

  Returns:
    A :class:`ReluNet` whose targets come from a random teacher net.
  """
  rng = _rng(key)
  inputs = rng.standard_normal((num_data, in_dim))
  teacher = _relu_init(rng, in_dim, hidden)
  init = _relu_init(rng, in_dim, hidden)
  hm = hidden * in_dim
  hid = np.maximum(inputs @ teacher[:hm].reshape(hidden, in_dim).T + teacher[hm : hm + hidden], 0.0)
  targets = hid @ teacher[hm + hidden : hm + 2 * hidden] + teacher[-1]
  return ReluNet(_f32(inputs), _f32(targets), _f32(init), _f32(teacher))


def _relu_unflatten(problem: ReluNet, params):
  m = problem.inputs.shape[1]
  h = (problem.init_params.shape[0] - 1) // (m + 2)
  hm = h * m
  return (params[:hm].reshape(h, m), params[hm : hm + h], params[hm + h : hm + 2 * h], params[-1])


def _relu_pre(problem: ReluNet, params):
  w1, b1, _, _ = _relu_unflatten(problem, params)
  return problem.inputs @ w1.T + b1  # (N, h); linear in params.


def _relu_out(problem: ReluNet, params, mask=None):
  _, _, w2, b2 = _relu_unflatten(problem, params)
  z = _relu_pre(problem, params)
  act = jax.nn.relu(z) if mask is None else jnp.where(mask, z, 0.0)
  return act @ w2 + b2


def restrict_to_line(
  problem: Problem, params: jax.Array, direction: jax.Array
) -> Callable[[jax.Array], jax.Array]:
  """The restriction of a problem's loss to a line.

  Args:
    problem: a problem, e.g. :func:`relu_net`.
    params: (d,) point of the line.
    direction: (d,) direction of the line.

  Returns:
    ``phi(t) = problem.value(params + t * direction)`` (jittable).
  """
  return lambda t: problem.value(params + t * direction)


# ----------------------------------------------------------------- ground truth


def _ma_lines(problem: MaxAffine, params, step):
  """Piece values at t=0, their slopes along step, and the tie tolerance."""
  v0 = problem.slopes @ (params - problem.center)
  beta = problem.slopes @ step
  tol = _TIE_RTOL * (1.0 + jnp.max(jnp.abs(v0)) + jnp.max(jnp.abs(beta)))
  return v0, beta, tol


def _ma_active_piece(v0, beta, tol):
  """The piece active on [0, eps): max value, ties broken by max slope."""
  tied = v0 >= jnp.max(v0) - tol
  return jnp.argmax(jnp.where(tied, beta, -jnp.inf))


def _zero_crossings(z0, dz):
  """Smallest t > 0 with z0 + t * dz = 0 over all entries (inf if none)."""
  safe = jnp.where(dz != 0, dz, 1.0)
  t = jnp.where(dz != 0, -z0 / safe, jnp.inf)
  return jnp.min(jnp.where(t > 0, t, jnp.inf))


def _relu_lines(problem: ReluNet, params, step):
  """Pre-activations at t=0, their rates, and the norms of their gradients."""
  norms = jnp.sqrt(jnp.sum(problem.inputs**2, axis=1) + 1.0)[:, None]
  return _relu_pre(problem, params), _relu_pre(problem, step), norms


def first_kink_time(problem: Problem, params: jax.Array, step: jax.Array) -> jax.Array:
  """Smallest ``t > 0`` at which ``params + t * step`` crosses a kink.

  Args:
    problem: a problem.
    params: (d,) start point.
    step: (d,) direction.

  Returns:
    Scalar ``t`` (``inf`` if the ray never crosses a kink).
  """
  if isinstance(problem, AbsSum):
    z0 = jnp.where(problem.weights != 0, params - problem.centers, jnp.inf)
    return _zero_crossings(z0, step)
  if isinstance(problem, MaxAffine):
    v0, beta, tol = _ma_lines(problem, params, step)
    j = _ma_active_piece(v0, beta, tol)
    gap, rate = jnp.maximum(v0[j] - v0, 0.0), beta - beta[j]
    t = jnp.where(rate > 0, gap / jnp.where(rate > 0, rate, 1.0), jnp.inf)
    return jnp.min(t)
  z0, dz, _ = _relu_lines(problem, params, step)
  return _zero_crossings(z0, dz)


def crosses_kink(problem: Problem, params: jax.Array, step: jax.Array) -> jax.Array:
  """Whether ``phi(t) = f(params + t step)`` has a kink at some ``t in (0, 1)``.

  For ``abs_sum`` some ``w_i - c_i`` changes sign strictly; for ``max_affine``
  the argmax changes; for ``relu_net`` some pre-activation changes sign.
  Segments that merely start or end on a kink do not count.

  Args:
    problem: a problem.
    params: (d,) start point.
    step: (d,) step.

  Returns:
    Scalar bool.
  """
  return first_kink_time(problem, params, step) < 1.0


def kink_distance(problem: Problem, params: jax.Array, step: jax.Array) -> jax.Array:
  """Euclidean distance from the segment ``[params, params + step]`` to the
  kink set (0 if the segment crosses or touches it; exact, see module doc).

  Args:
    problem: a problem.
    params: (d,) start point.
    step: (d,) step.

  Returns:
    Scalar distance (``inf`` if there is no kink at all).
  """
  if isinstance(problem, AbsSum):
    z0 = params - problem.centers
    z1 = z0 + step
    dist = jnp.where(z0 * z1 <= 0, 0.0, jnp.minimum(jnp.abs(z0), jnp.abs(z1)))
    return jnp.min(jnp.where(problem.weights != 0, dist, jnp.inf))
  if isinstance(problem, MaxAffine):
    # Without a crossing, piece j is active on the whole segment; its region is
    # a polyhedron, and the distance to its boundary is the smallest distance
    # to the tie hyperplanes {v_j = v_i}, attained at an end of the segment.
    v0, beta, tol = _ma_lines(problem, params, step)
    j = _ma_active_piece(v0, beta, tol)
    gap0 = jnp.maximum(v0[j] - v0, 0.0)
    gap1 = jnp.maximum(gap0 + beta[j] - beta, 0.0)
    norm = jnp.linalg.norm(problem.slopes - problem.slopes[j], axis=1)
    dist = jnp.where(norm > 0, jnp.minimum(gap0, gap1) / jnp.where(norm > 0, norm, 1.0), jnp.inf)
    return jnp.where(crosses_kink(problem, params, step), 0.0, jnp.min(dist))
  z0, dz, norms = _relu_lines(problem, params, step)
  z1 = z0 + dz
  dist = jnp.where(z0 * z1 <= 0, 0.0, jnp.minimum(jnp.abs(z0), jnp.abs(z1)) / norms)
  return jnp.min(dist)


def endpoint_slopes(
  problem: Problem, params: jax.Array, step: jax.Array
) -> Tuple[jax.Array, jax.Array]:
  """One-sided slopes ``(phi'(0+), phi'(1-))`` of ``phi(t) = f(params + t s)``.

  Exact, also when an end lies on a kink (the side inside the segment is used).

  Args:
    problem: a problem.
    params: (d,) start point.
    step: (d,) step.

  Returns:
    Two scalars: the right derivative at ``t = 0``, the left one at ``t = 1``.
  """
  if isinstance(problem, AbsSum):
    a, s = problem.weights, step
    z0 = params - problem.centers
    z1 = z0 + s
    sgn0 = jnp.where(z0 != 0, jnp.sign(z0), jnp.sign(s))
    sgn1 = jnp.where(z1 != 0, jnp.sign(z1), -jnp.sign(s))
    d0 = jnp.sum(a * s * sgn0) + problem.ridge * jnp.dot(params, s)
    d1 = jnp.sum(a * s * sgn1) + problem.ridge * jnp.dot(params + s, s)
    return d0, d1
  if isinstance(problem, MaxAffine):
    v0, beta, tol = _ma_lines(problem, params, step)
    v1 = v0 + beta
    x0 = params - problem.center
    d0 = jnp.max(jnp.where(v0 >= jnp.max(v0) - tol, beta, -jnp.inf))
    d1 = jnp.min(jnp.where(v1 >= jnp.max(v1) - tol, beta, jnp.inf))
    return (d0 + problem.ridge * jnp.dot(x0, step), d1 + problem.ridge * jnp.dot(x0 + step, step))
  z0, dz, _ = _relu_lines(problem, params, step)
  z1 = z0 + dz

  def slope(theta, mask):
    masked = lambda p: 0.5 * jnp.mean((_relu_out(problem, p, mask) - problem.targets) ** 2)
    return jax.jvp(masked, (theta,), (step,))[1]

  return (
    slope(params, (z0 > 0) | ((z0 == 0) & (dz > 0))),
    slope(params + step, (z1 > 0) | ((z1 == 0) & (dz < 0))),
  )


def directional_sign_change(problem: Problem, params: jax.Array, step: jax.Array) -> jax.Array:
  """Whether ``phi'(0+)`` and ``phi'(1-)`` have strictly opposite signs.

  For convex problems this means the step overshoots the minimum of ``f``
  along its line ("chattering"), whether that minimum is a kink or not.

  Args:
    problem: a problem.
    params: (d,) start point.
    step: (d,) step.

  Returns:
    Scalar bool.
  """
  d0, d1 = endpoint_slopes(problem, params, step)
  return d0 * d1 < 0


def subdiff_diameter_along(
  problem: Problem, params: jax.Array, step: jax.Array, radius: float = 0.0
) -> jax.Array:
  """Spread of the kink part of the directional derivatives along ``u``.

  With ``u = step / |step|`` and the probe region ``R`` (points within
  ``radius`` of the segment), this is the diameter of ``{g . u}`` over
  subgradients ``g`` of the non-smooth part of ``f`` at points of ``R``. The
  smooth ridge terms are left out (they would add ``mu (|step| + 2 radius)``),
  so the value is exactly 0 when no kink lies in ``R``.

  * ``AbsSum``: ``sum_i 2 a_i |u_i|`` over the hyperplanes ``w_i = c_i`` that
    meet ``R``. Exact for ``radius = 0``; for ``radius > 0`` it is the
    Minkowski-sum (upper) bound, exact when those hyperplanes meet inside ``R``.
  * ``MaxAffine``: ``max - min`` of ``A_j . u`` over the pieces active in ``R``,
    found exactly by interval intersection in ``t`` (no sampling). For
    ``radius > 0`` piece j counts if at some segment point it is within
    ``radius |A_j - A_i|`` of every other piece i (a pairwise relaxation that
    can only over-count; exact for two pieces).
  * ``ReluNet``: the sum of the jumps ``|r_n w2_h (dz_nh / |step|)| / N`` of
    ``phi'`` over the pre-activation hyperplanes meeting ``R``, evaluated at the
    segment point closest to each (exact jumps for ``radius = 0``).

  Args:
    problem: a problem.
    params: (d,) start point.
    step: (d,) non-zero step.
    radius: radius of the probe region.

  Returns:
    Scalar ``>= 0``.
  """
  snorm = jnp.linalg.norm(step)
  if isinstance(problem, AbsSum):
    z0 = params - problem.centers
    z1 = z0 + step
    near = (z0 * z1 <= 0) | (jnp.minimum(jnp.abs(z0), jnp.abs(z1)) <= radius)
    return jnp.sum(jnp.where(near, 2 * problem.weights * jnp.abs(step), 0.0)) / snorm
  if isinstance(problem, MaxAffine):
    v0, beta, tol = _ma_lines(problem, params, step)
    gram = problem.slopes @ problem.slopes.T
    sq = jnp.diag(gram)
    pair = jnp.sqrt(jnp.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0))
    # Piece j beats piece i (up to the widening) where alpha + t * rate >= 0.
    alpha = v0[:, None] - v0[None, :] + radius * pair + tol
    rate = beta[:, None] - beta[None, :]
    safe = jnp.where(rate != 0, rate, 1.0)
    lo = jnp.max(jnp.where(rate > 0, -alpha / safe, 0.0), axis=1)
    hi = jnp.min(jnp.where(rate < 0, -alpha / safe, 1.0), axis=1)
    flat_ok = jnp.all((rate != 0) | (alpha >= 0), axis=1)
    active = (jnp.maximum(lo, 0.0) <= jnp.minimum(hi, 1.0)) & flat_ok
    b = beta / snorm
    return jnp.max(jnp.where(active, b, -jnp.inf)) - jnp.min(jnp.where(active, b, jnp.inf))
  z0, dz, norms = _relu_lines(problem, params, step)
  z1 = z0 + dz
  near = (z0 * z1 <= 0) | (jnp.minimum(jnp.abs(z0), jnp.abs(z1)) <= radius * norms)
  tstar = jnp.clip(-z0 / jnp.where(dz != 0, dz, 1.0), 0.0, 1.0)
  tstar = jnp.where(dz != 0, tstar, 0.0)  # (N, h)
  _, _, w2, b2 = _relu_unflatten(problem, params)
  _, _, w2s, b2s = _relu_unflatten(problem, step)
  zt = z0[:, None, :] + tstar[..., None] * dz[:, None, :]  # (N, h, h')
  w2t = w2 + tstar[..., None] * w2s  # (N, h, h')
  out = jnp.sum(w2t * jax.nn.relu(zt), axis=-1) + b2 + tstar * b2s
  resid = out - problem.targets[:, None]
  jump = jnp.abs(resid * (w2 + tstar * w2s) * dz) / snorm
  return jnp.sum(jnp.where(near, jump, 0.0)) / problem.inputs.shape[0]


# --------------------------------------------------------------------- sampling


def _steps(problem, params, noise, kind, scale):
  """(n, d) steps: random unit directions (``noise`` normalised) or minus
  normalised gradients."""
  if kind == 'random':
    u = noise
  elif kind == 'gradient':
    u = -jax.vmap(jax.grad(problem.value))(params)
  else:
    raise ValueError(f'step_kind must be random or gradient, got {kind!r}')
  norm = jnp.linalg.norm(u, axis=1, keepdims=True)
  return scale * u / jnp.where(norm > 0, norm, 1.0)


def _abs_sum_candidates(problem, noise, radius, scale, *, kink, kind):
  """Every coordinate at distance radius + |s_i| + Exp from its kink; for kink
  candidates one random coordinate instead sits at -tau * s_i (a crossing at
  t = tau). Iterated so that gradient steps are consistent with the point."""
  base, u, unif = noise
  m, d = base.shape
  sign = jnp.where(unif[:, :d] < 0.5, -1.0, 1.0)
  extra = -jnp.log1p(-unif[:, d : 2 * d]) * scale / np.sqrt(d)  # Exponential.
  tau = 0.1 + 0.8 * unif[:, -1:]
  hit = (jnp.arange(d) == jnp.floor(unif[:, -2:-1] * d)) & kink

  def place(s):
    z = jnp.where(hit, -tau * s, sign * (radius + jnp.abs(s) + extra))
    return problem.centers + z

  s = _steps(problem, base, u, 'random', scale)
  if kind == 'random':
    return place(s), s
  s = jax.lax.fori_loop(0, 5, lambda _, s: _steps(problem, place(s), u, kind, scale), s)
  return place(s), s


def _line_candidates(problem, noise, radius, scale, *, kink, kind):
  """Base points shifted along their step: to just before the first kink
  (crossing at t=tau) or to the nearest shift that keeps ``radius`` clear."""
  base, u, unif = noise
  if isinstance(problem, MaxAffine):
    base = problem.center + base
  else:
    base = problem.init_params + 0.1 * base
  s = _steps(problem, base, u, kind, scale)
  fkt = jax.vmap(first_kink_time, in_axes=(None, 0, 0))
  if kink:
    tau = 0.1 + 0.8 * unif[:, -1:]
    if kind == 'random':  # Nearest kink on the line, ahead or behind.
      ahead = fkt(problem, base, s)[:, None] - tau
      behind = -fkt(problem, base, -s)[:, None] - tau
      t = jnp.where(jnp.abs(ahead) <= jnp.abs(behind), ahead, behind)
      return jnp.where(jnp.isfinite(t), base + t * s, base), s

    def shift(_, p):
      ps = _steps(problem, p, u, kind, scale)
      t = fkt(problem, p, ps)[:, None]
      return jnp.where(jnp.isfinite(t), p + (t - tau) * ps, p)

    p = jax.lax.fori_loop(0, 4, shift, base)
    return p, _steps(problem, p, u, kind, scale)
  shifts = jnp.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0, 8.0, -8.0])
  m, d = base.shape
  q = (base[:, None, :] + shifts[:, None] * s[:, None, :]).reshape(-1, d)
  sq = (
    _steps(problem, q, jnp.repeat(u, shifts.size, axis=0), kind, scale)
    if kind == 'gradient'
    else jnp.repeat(s, shifts.size, axis=0)
  )
  ok = _is_smooth(problem, q, sq, radius).reshape(m, shifts.size)
  first = jnp.argmax(ok, axis=1) + shifts.size * jnp.arange(m)
  return q[first], sq[first]


def _is_smooth(problem, params, steps, radius):
  dist = jax.vmap(kink_distance, in_axes=(None, 0, 0))(problem, params, steps)
  return dist > radius


def _draw(problem, noise_kink, noise_smooth, radius, scale, *, kind):
  """Candidates of both classes and whether the ground truth confirms them."""
  make = _abs_sum_candidates if isinstance(problem, AbsSum) else _line_candidates
  pk, sk = make(problem, noise_kink, radius, scale, kink=True, kind=kind)
  ps, ss = make(problem, noise_smooth, radius, scale, kink=False, kind=kind)
  ok_kink = jax.vmap(crosses_kink, in_axes=(None, 0, 0))(problem, pk, sk)
  return (pk, sk, ok_kink), (ps, ss, _is_smooth(problem, ps, ss, radius))


_draw = jax.jit(_draw, static_argnames=('kind',))


def sample_points(
  problem: Problem,
  key: jax.Array,
  n: int,
  *,
  near_kink_fraction: float = 0.5,
  radius: float = 0.0,
  step_scale: float = 0.1,
  step_kind: str = 'random',
  max_rounds: int = 20,
) -> KinkSamples:
  """Labelled segments for ROC studies of a kink detector.

  Label 1 ("near kink"): the step crosses a kink (:func:`crosses_kink`), placed
  at ``t ~ Uniform(0.1, 0.9)`` along the step, so that this also holds in high
  dimension. Label 0 ("smooth"): no kink within ``radius`` of the segment
  (:func:`kink_distance` ``> radius``). Candidates are constructed to be of the
  wanted class and then checked against the ground truth; failures are
  redrawn. ``abs_sum`` points put every coordinate just beyond the reach of the
  step (``radius + |s_i| + Exp(step_scale / sqrt(d))`` from its kink); a kink
  sample moves one random coordinate onto the path. ``max_affine`` and
  ``relu_net`` points are base points (``center + N(0, I)``, resp.
  ``init_params + N(0, 0.01 I)``) shifted along their step. The randomness is
  drawn with NumPy, seeded from ``key``.

  Args:
    problem: a problem.
    key: PRNG key.
    n: number of samples.
    near_kink_fraction: fraction of label-1 samples (rounded).
    radius: clearance of the smooth samples (the probe-region radius).
    step_scale: Euclidean norm of every step.
    step_kind: ``'random'`` (uniform random direction) or ``'gradient'``
      (minus the normalised gradient at ``params``: a normalised GD step).
    max_rounds: redraw rounds before giving up.

  Returns:
    :class:`KinkSamples`, shuffled.

  Raises:
    RuntimeError: if the requested classes cannot be filled (for ``relu_net``
      use a small ``radius``/``step_scale``: its kinks are dense).
  """
  if step_kind not in ('random', 'gradient'):
    raise ValueError(f'step_kind must be random or gradient, got {step_kind!r}')
  rng = _rng(key)
  d = (
    problem.centers
    if isinstance(problem, AbsSum)
    else problem.center
    if isinstance(problem, MaxAffine)
    else problem.init_params
  ).shape[0]
  n_kink = int(round(n * near_kink_fraction))
  wanted = {1: n_kink, 0: n - n_kink}
  got = {1: [], 0: []}
  m = max(2 * max(wanted.values()), 8)  # Fixed batch: one compilation.

  def noise():
    return (
      rng.standard_normal((m, d), np.float32),
      rng.standard_normal((m, d), np.float32),
      rng.random((m, 2 * d + 2), np.float32),
    )

  for _ in range(max_rounds):
    drawn = _draw(problem, noise(), noise(), radius, step_scale, kind=step_kind)
    for label, (p, s, ok) in zip((1, 0), drawn):
      missing = wanted[label] - sum(q.shape[0] for q, _ in got[label])
      idx = np.flatnonzero(np.asarray(ok))[: max(missing, 0)]
      got[label].append((np.asarray(p)[idx], np.asarray(s)[idx]))
    if all(sum(q.shape[0] for q, _ in got[c]) >= wanted[c] for c in (0, 1)):
      break
  else:
    raise RuntimeError(
      f'sample_points could not fill both classes in {max_rounds} rounds; '
      'try a smaller radius or step_scale.'
    )
  parts = got[1] + got[0]
  labels = np.repeat(np.array([1, 0], np.int32), [n_kink, n - n_kink])
  perm = rng.permutation(n)
  return KinkSamples(
    jnp.asarray(np.concatenate([p for p, _ in parts])[perm]),
    jnp.asarray(np.concatenate([s for _, s in parts])[perm]),
    jnp.asarray(labels[perm]),
  )
