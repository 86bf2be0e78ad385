"""Tests for sadam_optax.problems (ground truth checked against hand values)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sadam_optax import problems

KEY = jax.random.PRNGKey(0)


def _abs1d(weight=1.0, ridge=0.0):
  return problems.AbsSum(jnp.array([weight]), jnp.array([0.0]), jnp.asarray(ridge))


def _max1d():  # max(x, -x) = |x|.
  return problems.MaxAffine(jnp.array([[1.0], [-1.0]]), jnp.array([0.0]), jnp.asarray(0.0))


@jax.jit
def _truth_arrays(problem, params, step, radius):
  d0, d1 = problems.endpoint_slopes(problem, params, step)
  return dict(
    cross=problems.crosses_kink(problem, params, step),
    chatter=problems.directional_sign_change(problem, params, step),
    diam=problems.subdiff_diameter_along(problem, params, step, radius),
    dist=problems.kink_distance(problem, params, step),
    time=problems.first_kink_time(problem, params, step),
    d0=d0,
    d1=d1,
  )


def _truth(problem, params, step, radius=0.0):
  """All ground-truth quantities of one segment, as Python scalars."""
  out = _truth_arrays(
    problem, jnp.asarray(params, jnp.float32), jnp.asarray(step, jnp.float32), radius
  )
  return {k: (bool(v) if v.dtype == bool else float(v)) for k, v in out.items()}


_batch_truth = jax.jit(jax.vmap(_truth_arrays, (None, 0, 0, None)))
# Module-level jitted helpers take the problem as an argument, so that
# problems of equal shapes share one compilation.
_values = jax.jit(jax.vmap(lambda q, x: q.value(x), (None, 0)))
_grads = jax.jit(jax.vmap(lambda q, x: jax.grad(q.value)(x), (None, 0)))


def test_figure1_values_and_minimiser():
  f = problems.figure1()
  # |1 - 1| + |1 - 1| + 0.5 * (1 + 1) = 1.0.
  np.testing.assert_allclose(f.value(jnp.array([1.0, 1.0])), 1.0)
  np.testing.assert_allclose(f.value(jnp.array([3.0, -2.0])), 11.5)
  np.testing.assert_allclose(f.minimiser(), [1.0, 1.0])


@pytest.mark.parametrize(
  'make',
  [
    problems.figure1,
    lambda: problems.abs_sum(KEY, 5, ridge=1.0, center_scale=3.0),  # clipped
    lambda: problems.abs_sum(KEY, 5, ridge=0.0),
    lambda: problems.l1_toy(5),
    lambda: problems.l1_toy(5, penalty=0.3, ridge=2.0),
    lambda: problems.max_affine(KEY, 5, 6),
    lambda: problems.max_affine(KEY, 5, 6, ridge=0.5),
    lambda: problems.relu_net(KEY),
  ],
)
def test_minimisers_are_minima(make):
  problem = make()
  x = problem.minimiser()
  rng = np.random.default_rng(0)
  scales = np.repeat([1e-3, 1e-2, 1e-1, 1.0], 50)[:, None]
  pts = x + scales * rng.standard_normal((scales.size, x.shape[0]))
  values = _values(problem, jnp.asarray(pts, jnp.float32))
  assert float(problem.value(x)) <= float(jnp.min(values)) + 1e-6


def test_abs_sum_minimiser_coordinatewise():
  problem = problems.abs_sum(KEY, 6, ridge=1.0, center_scale=3.0)
  a, c = np.asarray(problem.weights), np.asarray(problem.centers)
  grid = np.linspace(-10, 10, 200001)
  brute = [grid[np.argmin(a[i] * np.abs(grid - c[i]) + 0.5 * grid**2)] for i in range(6)]
  np.testing.assert_allclose(problem.minimiser(), brute, atol=1e-3)
  assert np.any(np.abs(brute - c) > 0.1)  # Some coordinates are clipped.
  np.testing.assert_allclose(problems.l1_toy(7).minimiser(), np.zeros(7))


# (params, step) -> crosses, chatter, diameter (radius 0), distance, d0, d1
_ABS_CASES = [
  ([-1.0], [2.0], True, True, 2.0, 0.0, -2.0, 2.0),
  ([1.0], [-3.0], True, True, 2.0, 0.0, -3.0, 3.0),
  ([-1.0], [0.5], False, False, 0.0, 0.5, -0.5, -0.5),
  ([-1.0], [1.0], False, False, 2.0, 0.0, -1.0, -1.0),  # Ends on the kink.
  ([0.0], [1.0], False, False, 2.0, 0.0, 1.0, 1.0),  # Starts on the kink.
]


@pytest.mark.parametrize('problem', [_abs1d(), _max1d()], ids=['abs', 'max'])
@pytest.mark.parametrize('case', _ABS_CASES)
def test_abs_value_1d_by_hand(problem, case):
  params, step, cross, chatter, diam, dist, d0, d1 = case
  truth = _truth(problem, params, step)
  assert truth['cross'] == cross
  assert truth['chatter'] == chatter
  np.testing.assert_allclose(
    [truth['diam'], truth['dist'], truth['d0'], truth['d1']], [diam, dist, d0, d1], atol=1e-6
  )
  expected = -params[0] / step[0]
  t = truth['time']
  assert t == pytest.approx(expected) if expected > 0 else np.isinf(t)


def test_abs_1d_radius_and_smooth_chattering():
  # |x| from -1 to -0.5: the kink at 0 is 0.5 away from the segment.
  assert _truth(_abs1d(), [-1.0], [0.5], radius=0.4)['diam'] == 0.0
  assert _truth(_abs1d(), [-1.0], [0.5], radius=0.6)['diam'] == 2.0
  # 0.5 x^2 from -1 to 1: chattering without any kink.
  truth = _truth(_abs1d(weight=0.0, ridge=1.0), [-1.0], [2.0])
  assert truth['chatter'] and not truth['cross']
  assert truth['diam'] == 0.0 and np.isinf(truth['dist'])


def test_figure1_by_hand():
  f = problems.figure1()
  truth = _truth(f, [0.0, 0.0], [2.0, 2.0])  # Both kinks at t = 0.5.
  assert truth['cross'] and truth['chatter']
  np.testing.assert_allclose(
    [truth['diam'], truth['d0'], truth['d1']], [2 * np.sqrt(2), -4.0, 12.0], rtol=1e-6
  )
  truth = _truth(f, [0.0, 0.0], [0.5, 0.5])
  assert not truth['cross'] and not truth['chatter']
  np.testing.assert_allclose([truth['dist'], truth['d1']], [0.5, -0.5])
  # Along x only: kink x=1 is 0.5 away, kink y=1 is 1 away but u_y = 0.
  for radius, diam in [(0.4, 0.0), (0.6, 2.0), (1.1, 2.0)]:
    assert _truth(f, [0.0, 0.0], [0.5, 0.0], radius)['diam'] == diam


def test_relu_by_hand():
  # One datum x = 1, target -1, one hidden unit: theta = (W1, b1, w2, b2).
  net = problems.ReluNet(jnp.array([[1.0]]), jnp.array([-1.0]), jnp.zeros(4), jnp.zeros(4))
  theta = jnp.array([-1.0, 0.0, 1.0, 0.0])
  np.testing.assert_allclose(net.value(theta), 0.5)
  # z = W1 + b1 goes from -1 to 1, crossing 0 at t = 1/2 where the residual is
  # 1: phi'(0+) = 0, phi'(1-) = r * w2 * dz = 2 * 1 * 2, jump 1 * 1 * 2 / |s|.
  truth = _truth(net, theta, [2.0, 0.0, 0.0, 0.0])
  assert truth['cross'] and not truth['chatter']
  np.testing.assert_allclose(
    [truth['d0'], truth['d1'], truth['diam'], truth['dist']], [0.0, 4.0, 1.0, 0.0], atol=1e-6
  )
  truth = _truth(net, theta, [0.5, 0.0, 0.0, 0.0])
  assert not truth['cross'] and truth['diam'] == 0.0
  np.testing.assert_allclose(truth['dist'], 0.5 / np.sqrt(2.0), rtol=1e-6)
  assert _truth(net, theta, [0.5, 0.0, 0.0, 0.0], radius=0.36)['diam'] > 0


def test_abs_sum_diameter_by_hand():
  problem = problems.abs_sum(KEY, 6)
  a, c = np.asarray(problem.weights), np.asarray(problem.centers)
  z0 = np.array([-0.1, 1.0, -2.0, 0.3, 1.5, 0.25])  # params - centers
  step = np.array([0.3, 0.2, 0.1, -0.5, -0.2, 0.1])
  # Coordinates 0 and 3 change sign; coordinate 5 stays 0.25 away; the others
  # stay >= 0.8 away.
  u = np.abs(step) / np.linalg.norm(step)
  p, s = jnp.asarray(c + z0, jnp.float32), jnp.asarray(step, jnp.float32)
  for radius, crossed in [(0.0, [0, 3]), (0.2, [0, 3]), (0.3, [0, 3, 5])]:
    got = _truth(problem, p, s, radius)['diam']
    np.testing.assert_allclose(got, 2 * np.sum(a[crossed] * u[crossed]), rtol=1e-5)
  np.testing.assert_allclose(
    _truth(problem, p.at[0].add(0.5), s.at[3].set(0.0))['dist'], 0.25, rtol=1e-5
  )


@pytest.mark.parametrize(
  'make',
  [
    lambda: problems.abs_sum(KEY, 8),
    lambda: problems.max_affine(KEY, 3, 6, ridge=0.3),
  ],
)
def test_diameter_is_slope_jump_for_convex_problems(make):
  # For convex f, phi'(1-) - phi'(0+) = |s| * diameter + ridge * |s|^2.
  problem = make()
  rng = np.random.default_rng(1)
  d = problem.minimiser().shape[0]
  p = jnp.asarray(problem.minimiser() + rng.standard_normal((50, d)), jnp.float32)
  s = jnp.asarray(2.0 * rng.standard_normal((50, d)), jnp.float32)
  truth = _batch_truth(problem, p, s, 0.0)
  snorm = jnp.linalg.norm(s, axis=1)
  np.testing.assert_allclose(
    truth['d1'] - truth['d0'],
    snorm * truth['diam'] + problem.ridge * snorm**2,
    rtol=1e-4,
    atol=1e-4,
  )
  assert np.mean(np.asarray(truth['diam']) > 0) > 0.3


def test_max_affine_against_dense_sampling():
  problem = problems.max_affine(KEY, 3, 6)
  a, c = np.asarray(problem.slopes), np.asarray(problem.center)
  rng = np.random.default_rng(2)
  ps = c + rng.standard_normal((50, 3))
  ss = 1.5 * rng.standard_normal((50, 3))
  args = (problem, jnp.asarray(ps, jnp.float32), jnp.asarray(ss, jnp.float32))
  truth = {k: np.asarray(v) for k, v in _batch_truth(*args, 0.0).items()}
  wide = np.asarray(_batch_truth(*args, 0.3)['diam'])
  ts = np.linspace(0.0, 1.0, 20001)
  for n, (p, s) in enumerate(zip(ps, ss)):
    pieces = np.unique(np.argmax((p - c + ts[:, None] * s) @ a.T, axis=1))
    b = a[pieces] @ s / np.linalg.norm(s)
    assert truth['cross'][n] == (pieces.size > 1)
    np.testing.assert_allclose(truth['diam'][n], b.max() - b.min(), atol=1e-5)
    assert wide[n] >= truth['diam'][n] - 1e-6
    dist = truth['dist'][n]
    if pieces.size == 1 and dist > 1e-3:
      # No kink inside the capsule of radius 0.99 dist ...
      x = p + rng.uniform(size=(2000, 1)) * s
      v = rng.standard_normal((2000, 3))
      v *= 0.99 * dist * rng.uniform(size=(2000, 1)) / np.linalg.norm(v, axis=1, keepdims=True)
      assert np.all(np.argmax((x + v - c) @ a.T, axis=1) == pieces[0])
      # ... but one within 1.001 dist of an end of the segment.
      j, found = pieces[0], False
      for e in (p, p + s):
        gap = a[j] @ (e - c) - a @ (e - c)
        for i in np.flatnonzero(np.arange(6) != j):
          da = a[i] - a[j]
          y = e + 1.0005 * gap[i] / (da @ da) * da
          if np.linalg.norm(y - e) <= 1.001 * dist:
            found |= np.argmax(a @ (y - c)) != j
      assert found


@pytest.mark.parametrize(
  'make',
  [
    lambda: problems.max_affine(KEY, 3, 6, ridge=0.3),
    lambda: problems.relu_net(KEY),
  ],
)
def test_endpoint_slopes_match_finite_differences(make):
  problem = make()
  rng = np.random.default_rng(3)
  d = problem.minimiser().shape[0]
  p = jnp.asarray(problem.minimiser() + rng.standard_normal((50, d)), jnp.float32)
  s = jnp.asarray(0.3 * rng.standard_normal((50, d)), jnp.float32)
  h = 1e-3
  truth = _batch_truth(problem, p, s, 0.0)
  back = _batch_truth(problem, p + s, -s, 0.0)['time']
  fd0 = (_values(problem, p + h * s) - _values(problem, p)) / h
  fd1 = (_values(problem, p + s) - _values(problem, p + (1.0 - h) * s)) / h
  ok0, ok1 = truth['time'] > h, back > h  # No kink within h of that end.
  assert int(ok0.sum()) > 25 and int(ok1.sum()) > 25
  np.testing.assert_allclose(fd0[ok0], truth['d0'][ok0], rtol=3e-2, atol=1e-2)
  np.testing.assert_allclose(fd1[ok1], truth['d1'][ok1], rtol=3e-2, atol=1e-2)


def test_jittable():
  # Every ground-truth function also runs under jit in the tests above.
  for problem in [problems.figure1(), problems.relu_net(KEY)]:
    p = problem.minimiser() + 0.5
    np.testing.assert_allclose(jax.jit(problem.value)(p), problem.value(p), rtol=1e-6)
  line = problems.restrict_to_line(problems.figure1(), jnp.zeros(2), jnp.array([3.0, -2.0]))
  np.testing.assert_allclose(jax.jit(line)(1.0), 11.5)


def _numpy_crosses(problem, p, s):
  """Independent check: kink-defining quantities at both ends differ."""
  p, s = np.asarray(p, np.float64), np.asarray(s, np.float64)
  if isinstance(problem, problems.AbsSum):
    z0 = p - np.asarray(problem.centers)
    return np.any(np.sign(z0) != np.sign(z0 + s), axis=1)
  if isinstance(problem, problems.MaxAffine):  # Convex: argmax never returns.
    a, c = np.asarray(problem.slopes), np.asarray(problem.center)
    return np.argmax((p - c) @ a.T, 1) != np.argmax((p + s - c) @ a.T, 1)
  x = np.asarray(problem.inputs, np.float64)
  h = (p.shape[1] - 1) // (x.shape[1] + 2)

  def pre(theta):  # (n, N, h) pre-activations of the flat parameters.
    w1 = theta[:, : h * x.shape[1]].reshape(-1, h, x.shape[1])
    return np.einsum('khm,nm->knh', w1, x) + theta[:, None, h * x.shape[1] : h * x.shape[1] + h]

  return np.any(np.sign(pre(p)) != np.sign(pre(p + s)), axis=(1, 2))


# Pairs of cases with equal shapes and step kind share their compilations.
_SAMPLE_CASES = [
  ('abs_sum', 2, 'gradient', 0.0),
  ('figure1', 2, 'gradient', 0.05),
  ('abs_sum', 100, 'random', 0.01),
  ('l1_toy', 100, 'random', 0.0),
  ('abs_sum', 10_000, 'gradient', 0.01),
  ('max_affine', 2, 'random', 0.05),
  ('max_affine', 100, 'gradient', 0.0),
  ('max_affine', 10_000, 'random', 0.01),
  ('relu_net', 49, 'random', 1e-3),
]


def _labels_truth_one(problem, params, step, radius):
  return (
    problems.crosses_kink(problem, params, step),
    problems.kink_distance(problem, params, step),
    problems.subdiff_diameter_along(problem, params, step, radius),
  )


_labels_truth = jax.jit(jax.vmap(_labels_truth_one, (None, 0, 0, None)))


@pytest.mark.parametrize('name,d,kind,radius', _SAMPLE_CASES)
def test_sample_points(name, d, kind, radius):
  problem = {
    'abs_sum': lambda: problems.abs_sum(KEY, d),
    'l1_toy': lambda: problems.l1_toy(d),
    'figure1': problems.figure1,
    'max_affine': lambda: problems.max_affine(KEY, d),
    'relu_net': lambda: problems.relu_net(KEY),
  }[name]()
  scale = 0.01 if name == 'relu_net' else 0.1
  n = 32
  smp = problems.sample_points(
    problem, jax.random.PRNGKey(1), n, radius=radius, step_scale=scale, step_kind=kind
  )
  assert smp.params.shape == smp.steps.shape == (n, d)
  labels = np.asarray(smp.labels)
  assert labels.sum() == n // 2 and set(labels) == {0, 1}
  np.testing.assert_allclose(np.linalg.norm(smp.steps, axis=1), scale, rtol=1e-4)
  if kind == 'gradient':
    grads = _grads(problem, smp.params)
    cos = -np.sum(grads * smp.steps, 1) / (np.linalg.norm(grads, axis=1) * scale)
    np.testing.assert_allclose(cos, 1.0, atol=1e-3)
  cross, dist, diam = (np.asarray(x) for x in _labels_truth(problem, smp.params, smp.steps, radius))
  np.testing.assert_array_equal(cross, labels == 1)
  np.testing.assert_array_equal(_numpy_crosses(problem, smp.params, smp.steps), labels == 1)
  assert np.all(dist[labels == 0] > radius)
  assert np.all(diam[labels == 0] == 0.0) and np.all(diam[labels == 1] > 0)


def test_sample_points_options():
  problem = problems.figure1()
  smp = problems.sample_points(
    problem, KEY, 32, near_kink_fraction=0.25, radius=0.05, step_scale=0.1
  )
  assert int(smp.labels.sum()) == 8
  again = problems.sample_points(
    problem, KEY, 32, near_kink_fraction=0.25, radius=0.05, step_scale=0.1
  )
  np.testing.assert_array_equal(smp.params, again.params)  # Reproducible.
  with pytest.raises(ValueError):
    problems.sample_points(problem, KEY, 8, step_kind='sign')
  with pytest.raises(RuntimeError):  # ReLU kinks are far denser than this.
    problems.sample_points(
      problems.relu_net(KEY), KEY, 32, radius=1.0, step_scale=0.01, max_rounds=2
    )
