"""The families of the non-smooth suite: their minimisers are minimisers.

Checks that every family's stated minimiser is one (the objective at it is
no larger than at random perturbations of it, in float64; the subgradient or
KKT optimality condition where the family has one; certified optima for the
linear programs, the max of quadratics and matrix completion), that the numpy
and jax objectives agree, and that instances are fixed by their seed and
varied across a family.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import nonsmooth_families as nf

NUM = 4  # Instances per family checked: both shape groups (3 for abs_sum).


def _instances(family):
  return nf.make_instances(family, NUM)


@pytest.mark.parametrize('family', [f for f in nf.FAMILIES if nf.FAMILIES[f].metric == 'distance'])
def test_minimiser_beats_perturbations(family):
  objective = nf.FAMILIES[family].objective
  rng = np.random.default_rng(0)
  for inst in _instances(family):
    w = inst.minimiser
    f_star = objective(inst.data, w, np)
    assert f_star == pytest.approx(inst.optimum, rel=1e-12, abs=1e-12)
    for scale in (1e-6, 1e-4, 1e-2, 1.0):
      for _ in range(20):
        u = rng.standard_normal(w.shape)
        value = objective(inst.data, w + scale * u / np.linalg.norm(u), np)
        assert value >= f_star - 1e-12 * (1 + abs(f_star))


def test_lasso_subgradient_condition():
  for inst in _instances('lasso'):
    d = inst.data
    assert nf.lasso_kkt(d['x'], d['y'], float(d['l1']), inst.minimiser) < 1e-10
    assert 0 < np.sum(inst.minimiser != 0) < len(inst.minimiser)


@pytest.mark.parametrize(
  'family, kkt', [('group_lasso', nf.group_lasso_kkt), ('l1_logistic', nf.l1_logistic_kkt)]
)
def test_prox_gradient_families_meet_their_optimality_condition(family, kkt):
  at_zero = 0
  for inst in _instances(family):
    d = inst.data
    assert kkt(d['x'], d['y'], float(d['l1']), inst.minimiser) < 1e-12
    at_zero += int(np.sum(inst.minimiser == 0))
  # The kinks are active: some coordinates of the minimisers sit exactly at zero.
  assert at_zero > 0


def test_abs_sum_subgradient_condition_and_figure1():
  insts = _instances('abs_sum')
  first = insts[0]
  np.testing.assert_array_equal(first.data['a'], [1.0, 1.0])
  np.testing.assert_array_equal(first.data['c'], [1.0, 1.0])
  assert float(first.data['mu']) == 1.0
  np.testing.assert_array_equal(first.minimiser, [1.0, 1.0])
  for inst in insts:
    a, c, mu, w = inst.data['a'], inst.data['c'], inst.data['mu'], inst.minimiser
    # 0 in mu w + a * sign(w - c), sign(0) = [-1, 1].
    smooth = w != c
    np.testing.assert_allclose(
      mu * w[smooth] + a[smooth] * np.sign(w[smooth] - c[smooth]), 0.0, atol=1e-12
    )
    assert np.all(np.abs(mu * w[~smooth]) <= a[~smooth] + 1e-12)


@pytest.mark.parametrize(
  'family',
  ['quantile', 'lad_tv', 'linf', 'lad_lasso', 'max_quad', 'nuclear', 'l1_svm', 'multiclass_hinge'],
)
def test_linear_program_optima_beat_perturbations(family):
  objective = nf.FAMILIES[family].objective
  rng = np.random.default_rng(0)
  for inst in _instances(family):
    f_star = objective(inst.data, inst.minimiser, np)
    assert f_star == pytest.approx(inst.optimum, rel=1e-12, abs=1e-12)
    for scale in (1e-6, 1e-3, 1.0):
      for _ in range(20):
        u = rng.standard_normal(inst.minimiser.shape)
        value = objective(inst.data, inst.minimiser + scale * u / np.linalg.norm(u), np)
        assert value >= f_star - 1e-9 * (1 + abs(f_star))  # The LP's tolerance.


def test_max_quad_and_nuclear_optima_are_certified():
  for inst in _instances('max_quad'):
    # f(w*) less a dual bound: f* is known to far below the bands compared.
    assert 0 <= inst.info['gap'] + 1e-12 and inst.info['gap'] < 1e-9
  for inst in _instances('nuclear'):
    k = inst.data['mask'].shape[0]
    assert nf.nuclear_kkt(inst.data, inst.minimiser) < 1e-9
    # The kink is active: the optimum has zero singular values.
    assert inst.info['rank'] < k


@pytest.mark.parametrize(
  'family', ['sharp_lad', 'phase_retrieval', 'quadratic_sensing', 'relu_neuron']
)
def test_planted_minimisers_are_sharp(family):
  objective = nf.FAMILIES[family].objective
  rng = np.random.default_rng(0)
  for inst in _instances(family):
    w = inst.minimiser
    assert inst.optimum == 0.0 and objective(inst.data, w, np) == 0.0
    # The loss grows linearly in every direction: a kink at the minimiser.
    for _ in range(20):
      u = rng.standard_normal(w.shape)
      u /= np.linalg.norm(u)
      slopes = [objective(inst.data, w + t * u, np) / t for t in (1e-6, 1e-4, 1e-2)]
      assert min(slopes) > 1e-3 and max(slopes) < 10 * min(slopes)
    # The start is away from it: there is a distance to close.
    assert objective(inst.data, inst.start, np) > 0.05


def test_lasso_crossing_minimiser_is_away_from_the_kinks_it_starts_across():
  for inst in _instances('lasso_crossing'):
    d = inst.data
    assert nf.lasso_kkt(d['x'], d['y'], float(d['l1']), inst.minimiser) < 1e-12
    assert np.abs(inst.minimiser).min() >= 0.5
    np.testing.assert_array_equal(np.sign(inst.start), -np.sign(inst.minimiser))


def test_svm_and_huber_optimality():
  for inst in _instances('svm'):
    d = inst.data
    assert nf.svm_kkt(d['x'], d['y'], float(d['lam']), inst.minimiser) < 1e-9
  for inst in _instances('huber'):
    assert np.linalg.norm(nf.huber_gradient(inst.data, inst.minimiser)) < 1e-10


def test_max_affine_optimality():
  for inst in _instances('max_affine'):
    d = inst.data
    assert nf.max_affine_kkt(d['a'], d['b'], float(d['mu']), inst.minimiser) < 1e-9


def test_relu_regression_and_net_optima():
  for inst in _instances('relu_regression'):
    assert np.all(inst.data['y'] <= 0)
    assert not np.any(inst.minimiser)
  for inst in _instances('relu_net'):
    assert inst.minimiser is None and inst.optimum == 0.0
    assert float(nf.relu_net_objective(inst.data, inst.start, np)) > 0


def test_fused_lasso_optimality():
  fused = 0
  for inst in _instances('fused_lasso'):
    y, lam, w = inst.data['y'], float(inst.data['lam']), inst.minimiser
    assert nf.fused_lasso_kkt(y, lam, w) < 1e-12
    # The kinks are active: neighbours fused into segments of one value.
    fused += int(np.sum(np.diff(w) == 0))
  assert fused > 0


def test_l1_svm_and_multiclass_hinge_optima_are_certified():
  for inst in _instances('l1_svm'):
    d = inst.data
    # f(w_LP) less the dual LP's value (a lower bound on f*): f* is exact.
    assert -1e-12 < inst.info['gap'] < 1e-9
    assert inst.info['gap'] == pytest.approx(
      inst.optimum - nf.l1_svm_dual(d['x'], d['y'], float(d['l1'])), abs=1e-15
    )
  for inst in _instances('multiclass_hinge'):
    # f(W(alpha)) less the dual at alpha.
    assert -1e-12 < inst.info['gap'] < 1e-9


def test_nnls_penalty_is_exact_with_kinks_at_the_minimiser():
  for inst in _instances('nnls_penalty'):
    d, w = inst.data, inst.minimiser
    assert nf.nnls_kkt(d['x'], d['y'], w) < 1e-12
    assert inst.info['plant'] < 1e-10
    # Zeros with multipliers in (0, c): the penalty is exact and every zero is a kink.
    g = d['x'].T @ (d['x'] @ w - d['y']) / len(d['y'])
    zero = w == 0
    assert zero.sum() >= 3
    assert np.all(g[zero] > 0) and np.all(g[zero] < float(d['c']))


def test_linf_penalty_optimality_with_ties():
  for inst in _instances('linf_penalty'):
    d, w = inst.data, inst.minimiser
    assert nf.linf_penalty_kkt(d['x'], d['y'], float(d['lam']), w) < 1e-12
    assert inst.info['plant'] < 1e-10
    assert inst.info['tied'] >= 3


def test_geometric_median_is_a_smooth_stationary_point():
  for inst in _instances('geometric_median'):
    a, w = inst.data['a'], inst.minimiser
    assert np.linalg.norm(nf.geometric_median_gradient(a, w)) < 1e-12
    # No data point is the Weber point: the loss is smooth at w*.
    assert nf.geometric_median_at_point(a) > 0
    assert np.min(np.linalg.norm(a - w, axis=1)) > 1e-3


def test_jax_and_numpy_objectives_agree():
  for family, fam in nf.FAMILIES.items():
    inst = nf.make_instances(family, 1)[0]
    data = {k: jnp.asarray(v, jnp.float32) for k, v in inst.data.items()}
    np.testing.assert_allclose(
      float(fam.objective(data, jnp.asarray(inst.start, jnp.float32))),
      fam.objective(inst.data, inst.start, np),
      rtol=1e-4,
    )


def test_instances_are_fixed_and_varied():
  a = nf.make_instances('lasso', 3)
  b = nf.make_instances('lasso', 5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.start, y.start)
    np.testing.assert_array_equal(x.data['x'], y.data['x'])
  assert len({inst.start.shape for inst in b}) == 2
  assert len({round(inst.info['l1'], 12) for inst in b}) == 5


@pytest.mark.parametrize('family', nf.SCALABLE)
def test_scale_multiplies_sizes_and_leaves_the_suite_instances_alone(family):
  plain, big = nf.make_instances(family, 3, scale=1), nf.make_instances(family, 3, scale=4)
  for small, large in zip(plain, big):
    if not small.info.get('figure1'):  # abs_sum's instance 0 is Figure 1 only at scale 1.
      assert large.start.size == 4 * small.start.size
  for a, b in zip(plain, nf.make_instances(family, 3)):
    np.testing.assert_array_equal(a.start, b.start)


def test_scale_is_refused_where_the_family_has_no_sizes_to_scale():
  with pytest.raises(ValueError, match='only relu_regression'):
    nf.make_instances('svm', 1, scale=2)


@pytest.mark.parametrize('family', nf.ROWS)
def test_a_minibatch_loss_is_an_unbiased_estimate_of_the_full_loss(family):
  # The loss averaged over every one-example minibatch of the ROWS keys is the
  # full loss (a mean over examples; the penalties read no rows), and a key
  # left out of ROWS would change it.
  inst = nf.make_instances(family, 2)[1]
  objective, rows = nf.FAMILIES[family].objective, nf.ROWS[family]
  n = inst.data[rows[0]].shape[0]
  assert all(inst.data[k].shape[0] == n for k in rows)
  w = inst.start + 0.1 * np.random.default_rng(0).standard_normal(inst.start.shape)
  one = lambda i: {k: v[i : i + 1] if k in rows else v for k, v in inst.data.items()}
  average = np.mean([objective(one(i), w, np) for i in range(n)])
  np.testing.assert_allclose(average, objective(inst.data, w, np), rtol=1e-10)


def test_tv2d_denoise_is_certified_by_its_duality_gap():
  fused = 0
  for inst in _instances('tv2d_denoise'):
    y, lam, w = inst.data['y'], float(inst.data['lam']), inst.minimiser
    x, u = nf.tv2d_denoise_solve(y, lam)
    np.testing.assert_array_equal(x, w)
    assert np.all(np.abs(u) <= 1.0)
    gap = nf.tv2d_denoise_gap(y, lam, w, u)
    assert gap == inst.info['gap'] and 0 <= gap < 1e-10
    # The same gap from the objective and the dual's value, D^T u built independently:
    # P(w) - (0.5 |y|^2 - 0.5 |y - lam D^T u|^2), with rounding of the values' size.
    h, k = y.shape
    horizontal, vertical = u[: h * (k - 1)].reshape(h, k - 1), u[h * (k - 1) :].reshape(h - 1, k)
    adjoint = np.zeros((h, k))
    adjoint[:, 1:] += horizontal
    adjoint[:, :-1] -= horizontal
    adjoint[1:, :] += vertical
    adjoint[:-1, :] -= vertical
    dual = 0.5 * np.sum(y**2) - 0.5 * np.sum((y - lam * adjoint) ** 2)
    assert abs(nf.tv2d_denoise_objective(inst.data, w, np) - dual) < 1e-10
    # The kinks are active: neighbours fused at the minimiser.
    image = w.reshape(y.shape)
    fused += int(np.sum(np.diff(image, axis=0) == 0) + np.sum(np.diff(image, axis=1) == 0))
  assert fused > 0


def test_elastic_net_kkt_with_a_nontrivial_support():
  for inst in _instances('elastic_net'):
    d, w = inst.data, inst.minimiser
    assert nf.elastic_net_kkt(d['x'], d['y'], float(d['l1']), float(d['l2']), w) < 1e-12
    assert 0 < np.sum(w != 0) < len(w)
    # The design's correlation is Toeplitz: neighbouring columns correlate at rho.
    assert 0.5 <= inst.info['rho'] <= 0.95


def test_enclosing_ball_centre_is_a_convex_combination_of_the_farthest_points():
  for inst in _instances('enclosing_ball'):
    a, w = inst.data['a'], inst.minimiser
    x, weights = nf.enclosing_ball_solve(a)
    np.testing.assert_array_equal(x, w)
    assert np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-12
    assert np.linalg.norm(w - weights @ a) < 1e-10
    dist = np.linalg.norm(a - w, axis=1)
    on = weights > 0
    # Every weighted point is at the max distance: 0 in conv{(w - a_i) / R: i active}.
    assert np.max(dist) - np.min(dist[on]) < 1e-10
    assert on.sum() >= 2 and inst.optimum == pytest.approx(dist.max(), rel=1e-15)
    cert = nf.enclosing_ball_certificate(a, w, weights)
    assert max(cert['spread'], cert['residual']) < 1e-10 and 0 <= cert['gap'] < 1e-10


def test_partial_l1_kinks_are_active_and_the_rest_is_least_squares():
  for inst in _instances('partial_l1'):
    d, w = inst.data, inst.minimiser
    kinked = d['l1'] > 0
    assert 1 <= kinked.sum() <= 3 and np.all(w[kinked] == 0) and np.all(w[~kinked] != 0)
    assert nf.partial_l1_kkt(d['x'], d['y'], d['l1'], w) < 1e-13
    g = d['x'].T @ (d['x'] @ w - d['y']) / len(d['y'])
    # Strictly inside the subdifferential: a kink, not a smooth minimum that happens to be 0.
    assert np.all(np.abs(g[kinked]) < d['l1'][kinked] / 1.4)


def test_rotated_l1_meets_its_subgradient_condition_off_the_axes():
  kinks = 0
  for inst in _instances('rotated_l1'):
    d, w = inst.data, inst.minimiser
    z = d['r'] @ w
    # 0 = mu (w - c) + R^T (a * s), s in the subdifferential of |.| at z.
    s = -(d['r'] @ (d['mu'] * (w - d['c']))) / d['a']
    at_kink = np.abs(z) < 1e-12  # R^T z rotated back: the zeros come back as rounding.
    assert np.all(np.abs(s[at_kink]) <= 1 + 1e-12)
    np.testing.assert_allclose(s[~at_kink], np.sign(z[~at_kink]), atol=1e-10)
    kinks += int(at_kink.sum())
    assert at_kink.sum() == inst.info['kinks']
    # The kinks lie along directions no coordinate follows.
    assert np.max(np.abs(d['r'])) < 0.99
  assert kinks > 0


def test_l1_median_is_the_coordinatewise_median_of_an_odd_number_of_points():
  for inst in _instances('l1_median'):
    a, w = inst.data['a'], inst.minimiser
    assert len(a) % 2 == 1
    # Every coordinate sits on a data point with as many points above it as below.
    assert np.all(np.any(a == w, axis=0))
    np.testing.assert_array_equal(np.sum(a > w, axis=0), np.sum(a < w, axis=0))


@pytest.mark.parametrize(
  'family, radius', [('relu_bias', 4.0), ('relu_small_l1', 2.0), ('relu_dead', 2.0)]
)
def test_relu_variants_have_nonpositive_targets_and_the_minimiser_at_zero(family, radius):
  for inst in _instances(family):
    d = inst.data
    assert np.all(d['y'] <= 0) and np.all(inst.minimiser == 0)
    assert inst.optimum == pytest.approx(np.mean(d['y'] ** 2), rel=1e-15)
    assert np.linalg.norm(inst.start) == pytest.approx(radius, rel=1e-12)
  small = [float(i.data['l1']) for i in _instances('relu_small_l1')]
  assert all(1e-4 <= l1 <= 1e-3 for l1 in small)


def test_quantized_regression_is_zero_on_the_planted_cell_only_and_straight_through():
  objective = nf.quantized_regression_objective
  rng = np.random.default_rng(0)
  for inst in _instances('quantized_regression'):
    q, delta = inst.minimiser, float(inst.data['delta'])
    assert inst.optimum == 0.0 and objective(inst.data, q, np) == 0.0
    # The whole cell of q* is a minimum; a step of one grid point in any
    # coordinate leaves it for a positive loss (X has full column rank).
    inside = q + rng.uniform(-0.49, 0.49, q.shape) * delta
    assert objective(inst.data, inside, np) == 0.0
    for i in rng.choice(q.size, 5, replace=False):
      for sign in (-1, 1):
        assert objective(inst.data, q + sign * delta * np.eye(q.size)[i], np) > 0
    assert objective(inst.data, inst.start, np) > 0
  # The gradient is the straight-through one: that of least squares at Q(w).
  inst = _instances('quantized_regression')[0]
  data = {k: jnp.asarray(v, jnp.float32) for k, v in inst.data.items()}
  w = jnp.asarray(inst.start, jnp.float32)
  x, y, delta = inst.data['x'], inst.data['y'], float(inst.data['delta'])
  rounded = delta * np.round(np.asarray(w, np.float64) / delta)
  expected = x.T @ (x @ rounded - y) / x.shape[0]
  got = jax.grad(lambda v: objective(data, v))(w)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-6)
