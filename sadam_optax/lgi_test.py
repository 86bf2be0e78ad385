"""Tests of the LGI estimators on functions whose kinks are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sadam_optax
from sadam_optax import lgi

KEY = jax.random.key(0)


def abs_loss(w):
  return jnp.sum(jnp.abs(w))


@pytest.mark.parametrize(
  'estimator, expected', [('step', 0.5), ('uphill', 0.5), ('secant', 1.0 - 1e-5)]
)
def test_estimators_fire_when_the_step_jumps_a_kink(estimator, expected):
  # From 0.1 by -0.2 across |w|'s kink at 0: slope -1, then +1 for the second
  # half. 'uphill' reads the share that rises: exactly 1/2.
  rho = lgi.estimate_lgi(abs_loss, jnp.array([0.1]), jnp.array([-0.2]), KEY, estimator=estimator)
  assert float(rho) >= expected - 1e-6


def test_uphill_share_on_known_slopes():
  # (start slope, mean slope) -> share of the step where the slope is > 0.
  cases = [
    ((-1.0, -1.0), 0.0),
    ((1.0, 1.0), 1.0),
    ((-1.0, 0.0), 0.5),
    ((-2.0, -0.5), 1 / 3),
    ((2.0, 0.5), 2 / 3),
    ((0.0, 0.0), 0.0),
    ((-1.0, -0.5), 0.0),
  ]
  for samples, share in cases:
    np.testing.assert_allclose(lgi.uphill_share(jnp.array(samples)), share, atol=1e-6)
  # An uphill step, however small or large the loss.
  for scale in (1e-20, 1e20):
    assert float(lgi.uphill_share(scale * jnp.array([1.0, 2.0]))) == 1.0


def test_step_estimator_is_zero_on_a_smooth_segment():
  rho = lgi.estimate_lgi(abs_loss, jnp.array([1.0]), jnp.array([-0.2]), KEY)
  assert rho < 1e-6
  quad = lambda w: jnp.sum(w**2)
  rho = lgi.estimate_lgi(quad, jnp.ones(100), -1e-3 * jnp.ones(100), KEY)
  assert rho < 0.05


def test_literal_estimator_is_high_on_smooth_functions():
  # Brief, section 2: on a smooth loss the literal reading gives about 1.
  quad = lambda w: jnp.sum(w**2)
  rhos = [
    lgi.estimate_lgi(quad, jnp.ones(50), None, k, estimator='literal')
    for k in jax.random.split(KEY, 20)
  ]
  assert 0.7 < np.mean(rhos) < 8 / 7 + 1e-6


@pytest.mark.parametrize('estimator', ['trajectory', 'secant'])
def test_two_slope_estimators_see_the_sign_change(estimator):
  # Across the kink of |w| at 0: slopes -1 then +1 (trajectory's two ends);
  # start slope -1 and secant 0 (secant). Both read rho = 1.
  rho = lgi.estimate_lgi(abs_loss, jnp.array([0.1]), jnp.array([-0.2]), KEY, estimator=estimator)
  np.testing.assert_allclose(rho, 1.0, atol=1e-5)
  rho = lgi.estimate_lgi(abs_loss, jnp.array([1.0]), jnp.array([-0.2]), KEY, estimator=estimator)
  assert rho < 1e-6


def test_instability_ratio_bounds_and_scale_invariance():
  y = jax.random.normal(KEY, (8, 1000)) + jnp.linspace(-2, 2, 1000)
  rho = lgi.instability_ratio(y)
  assert jnp.all((rho >= 0) & (rho < 1))
  np.testing.assert_allclose(lgi.instability_ratio(37.0 * y), rho, rtol=1e-5)
  assert lgi.instability_ratio(jnp.zeros(4)) == 0


def test_chunked_probes_equal_vmapped():
  w = jax.random.normal(KEY, (30,))
  step = -0.3 * jnp.sign(w)
  a = lgi.estimate_lgi(abs_loss, w, step, KEY, num_probes=8)
  b = lgi.estimate_lgi(abs_loss, w, step, KEY, num_probes=8, chunk_size=3)
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_jits_with_pytree_params_and_keeps_float32():
  params = {'w': jnp.ones((3, 2), jnp.bfloat16), 'b': jnp.zeros(2)}
  loss = lambda p: jnp.sum(jnp.abs(p['w'] - 0.9)) + jnp.sum(p['b'] ** 2)
  direction = jax.tree.map(lambda p: -0.2 * jnp.ones_like(p), params)
  for estimator in lgi.ESTIMATORS:
    rho = jax.jit(lgi.estimate_lgi, static_argnums=0, static_argnames='estimator')(
      loss, params, direction, KEY, estimator=estimator
    )
    assert rho.dtype == jnp.float32 and jnp.isfinite(rho)


def test_zero_step_gives_zero_rho():
  rho = lgi.estimate_lgi(abs_loss, jnp.array([0.0, 1.0]), jnp.zeros(2), KEY)
  assert rho == 0


def test_secant_is_zero_when_the_loss_changes_only_by_rounding():
  # A step along which the loss is flat: under jit the two loss values may
  # differ in their last bit (1.8e-12 here), the start slope is exactly 0,
  # and the ratio of the two would read rho = 0.25 (found by hypothesis).
  weights = jnp.array([1.0, 0.0])
  value = lambda w: 1e-3 * jnp.sum(weights * jnp.abs(w - 0.046875 * weights))
  rho = jax.jit(
    lambda p: lgi.estimate_lgi(
      value, p, jnp.array([0.0, 1.0]), jax.random.key(0), estimator='secant'
    )
  )(jnp.zeros(2))
  assert float(rho) == 0.0


def test_secant_reading_tells_rounding_from_a_flat_loss():
  value = lambda w: 1.0 + 0.5 * jnp.sum(w**2)
  reading = lambda w, step: lgi.secant_reading(value, w, step, jax.grad(value)(w))
  # Near the minimiser the loss changes along the step by ~1e-8 and <grad,
  # step> is as small, both below float32's rounding of 1: unresolved.
  samples, resolved = reading(jnp.array([1e-4]), jnp.array([-2e-4]))
  assert not bool(resolved)
  np.testing.assert_array_equal(samples, [0.0, 0.0])
  # The same kind of step farther out changes it by 0.05: resolved, read.
  samples, resolved = reading(jnp.array([0.5]), jnp.array([-0.1]))
  assert bool(resolved)
  np.testing.assert_allclose(samples, [-0.5, -0.45], rtol=1e-5)
  # No step, and a step where the loss is exactly flat (a dead ReLU): read
  # as smooth, not lost.
  assert bool(reading(jnp.array([1e-4]), jnp.zeros(1))[1])
  relu = lambda w: jnp.sum(jax.nn.relu(w)) + 1.0
  samples, resolved = lgi.secant_reading(relu, -jnp.ones(2), jnp.full(2, 0.1), jnp.zeros(2))
  assert bool(resolved)
  np.testing.assert_array_equal(samples, [0.0, 0.0])
  # secant_samples keeps its contract: the same zeros for a lost reading.
  np.testing.assert_array_equal(
    lgi.secant_samples(value, jnp.array([1e-4]), jnp.array([-2e-4]), jnp.array([1e-4])), 0.0
  )


def test_secant_still_reads_a_real_rise_on_a_tiny_loss():
  # Scale does not matter when the change is above rounding: |w| at 1e-6.
  value = lambda w: 1e-6 * jnp.sum(jnp.abs(w))
  samples = lgi.secant_samples(
    value, jnp.array([0.5]), jnp.array([-1.0]), jax.grad(value)(jnp.array([0.5]))
  )
  np.testing.assert_allclose(samples, [-1e-6, 0.0], atol=1e-12)


def test_unknown_estimator():
  with pytest.raises(ValueError, match='estimator'):
    lgi.estimate_lgi(abs_loss, jnp.ones(1), jnp.ones(1), KEY, estimator='sphere')


def test_secant_ratio_of_a_linear_slope():
  # Slope 1 - 2t over the step (a parabola's minimum halfway): mean 0, so
  # rho = 1; slope from 1 to 0 (the step ends at the minimum): mean 1/2,
  # Var = 1/12, rho = (1/12) / (1/4 + 1/12) = 1/4.
  np.testing.assert_allclose(lgi.secant_ratio(jnp.array([1.0, 0.0])), 1.0, rtol=1e-5)
  np.testing.assert_allclose(lgi.secant_ratio(jnp.array([1.0, 0.5])), 0.25, rtol=1e-5)
  quad = lambda w: jnp.sum((w - 1.0) ** 2)
  rho = lgi.estimate_lgi(quad, jnp.zeros(3), jnp.ones(3), KEY, estimator='secant')
  np.testing.assert_allclose(rho, 0.25, rtol=1e-4)


def test_secant_uses_the_value_and_gradient_it_is_given():
  w, step = jnp.array([0.1, 2.0]), jnp.array([-0.2, -0.2])
  value, grad = jax.value_and_grad(abs_loss)(w)
  given = lgi.secant_samples(abs_loss, w, step, grad, value)
  computed = lgi.secant_samples(abs_loss, w, step, grad)
  np.testing.assert_allclose(given, computed, rtol=1e-6)
  # A gradient that is not the loss's (halved, as clipping would) moves s0.
  off = lgi.secant_samples(abs_loss, w, step, jax.tree.map(lambda g: g / 2, grad), value)
  np.testing.assert_allclose(off[0], given[0] / 2, rtol=1e-6)


def test_random_jvp_matches_a_numpy_reference():
  # Y_i = <g, u_i> along the same directions; rho = Var / (E^2 + Var + eps)
  # with the biased variance (the paper's formula).
  f = lambda w: jnp.sum(jnp.sin(w['a'])) + jnp.sum(w['b'] ** 3)
  params = {'a': jnp.linspace(-1.0, 2.0, 7), 'b': jnp.arange(6.0).reshape(2, 3) / 5}
  key, k = jax.random.key(3), 16
  rho = lgi.estimate_lgi(f, params, None, key, estimator='random-jvp', num_probes=k)
  dirs = jax.tree.map(np.asarray, lgi.random_directions(key, params, k))
  g = jax.tree.map(np.asarray, jax.grad(f)(params))
  y = np.array(
    [
      sum(
        np.sum(gl.astype(np.float64) * dl[i])
        for gl, dl in zip(jax.tree.leaves(g), jax.tree.leaves(dirs))
      )
      for i in range(k)
    ]
  )
  assert all(
    np.allclose(
      np.sum(np.concatenate([np.ravel(dl[i]) for dl in jax.tree.leaves(dirs)]) ** 2), 1.0, rtol=1e-5
    )
    for i in range(k)
  )
  ref = np.var(y) / (np.mean(y) ** 2 + np.var(y) + lgi.PAPER_EPS)
  np.testing.assert_allclose(float(rho), ref, atol=1e-5)


@pytest.mark.parametrize('k', [4, 8, 16])
def test_random_jvp_is_high_at_smooth_points(k):
  # The mean of <g, u> over symmetric directions is 0: rho ~ 1 - 1/k
  # wherever the loss is smooth, however smooth.
  quad = lambda w: 0.5 * jnp.sum(w**2)
  rhos = [
    lgi.estimate_lgi(
      quad, jnp.linspace(1.0, 3.0, 200), None, key, estimator='random-jvp', num_probes=k
    )
    for key in jax.random.split(KEY, 200)
  ]
  assert abs(np.mean(rhos) - (1 - 1 / k)) < 0.05


def test_estimate_lgi_refuses_missing_direction_and_vector_losses():
  w = jnp.array([0.1, -0.3])
  for estimator in ('secant', 'step', 'trajectory'):
    with pytest.raises(ValueError, match='direction='):
      lgi.estimate_lgi(abs_loss, w, None, KEY, estimator=estimator)
    with pytest.raises(ValueError, match='scalar'):
      lgi.estimate_lgi(jnp.abs, w, -w, KEY, estimator=estimator)
  with pytest.raises(ValueError, match='scalar'):
    lgi.estimate_lgi(jnp.abs, w, None, KEY, estimator='literal')
  # A (loss, aux) function: the message says how to pass the loss alone.
  with pytest.raises(ValueError, match=r'f\(p\)\[0\]'):
    lgi.estimate_lgi(lambda p: (abs_loss(p), p), w, -w, KEY, estimator='secant')


@pytest.mark.parametrize('estimator', ['secant', 'step', 'trajectory'])
def test_float64_smooth_quadratic_reads_zero(estimator):
  with jax.enable_x64(True):
    quad = lambda w: 0.5 * jnp.sum(w**2)
    w = jnp.linspace(1.0, 2.0, 10, dtype=jnp.float64)
    rho = lgi.estimate_lgi(quad, w, -1e-9 * w, KEY, estimator=estimator)
    assert float(rho) < 1e-3


def test_complex_params_keep_their_imaginary_part():
  # A smooth loss of complex parameters: no kink along the step.
  f = lambda z: jnp.sum(jnp.abs(z - (1 + 2j)) ** 2)
  z = jnp.array([0.3 + 0.1j, -0.2 + 0.5j])
  step = -0.01 * jnp.conj(jax.grad(f)(z))
  for estimator in ('secant', 'step', 'trajectory'):
    rho = lgi.estimate_lgi(f, z, step, KEY, estimator=estimator)
    assert float(rho) < 1e-2, estimator


@pytest.mark.parametrize('scale', [1e18, 1e30])
def test_ratios_are_scale_free(scale):
  y = jnp.array([1.0, -0.5, 2.0, 0.25])
  for ratio in (lgi.instability_ratio, lgi.paper_ratio):
    np.testing.assert_allclose(ratio(scale * y), ratio(y), rtol=1e-5)
  np.testing.assert_allclose(lgi.secant_ratio(scale * y[:2]), lgi.secant_ratio(y[:2]), rtol=1e-5)
  assert np.isfinite(float(lgi.literal_ratio(scale * y)))


def test_probe_placement_is_a_parameter_and_checked():
  # 'slices' (one random point per slice) is the validation's ablation.
  w, step = jnp.array([1.0]), jnp.array([-1.02])
  kwargs = dict(estimator='step', num_probes=4, probe_radius=1e-3)
  ends = lgi.estimate_lgi(abs_loss, w, step, KEY, **kwargs)
  slices = lgi.estimate_lgi(abs_loss, w, step, KEY, probe_placement='slices', **kwargs)
  np.testing.assert_allclose(ends, 0.75, atol=1e-3)
  assert float(slices) != float(ends)
  with pytest.raises(ValueError, match='probe_placement'):
    lgi.estimate_lgi(abs_loss, w, step, KEY, probe_placement='middle', **kwargs)


def test_secant_with_a_step_scale_reads_the_scaled_step():
  # step_scale * step, never materialised: the same samples up to rounding.
  w = jnp.linspace(-1.0, 1.0, 9000)
  direction = jnp.cos(jnp.arange(9000.0))
  value, grad = jax.value_and_grad(abs_loss)(w)
  scale = jnp.float32(-0.37)
  scaled = jax.jit(lambda d: lgi.secant_samples(abs_loss, w, d, grad, value, step_scale=scale))
  plain = jax.jit(lambda d: lgi.secant_samples(abs_loss, w, d * scale, grad, value))
  np.testing.assert_allclose(scaled(direction), plain(direction), rtol=1e-5)


def test_a_loss_that_ignores_the_params_it_is_handed_is_refused():
  # The nnx slip: value_fn closes over the model's own parameters, so the
  # loss is flat along every step and the brake would hold a constant.
  w0 = jnp.array([1.0, -2.0])
  frozen = lambda p: jnp.sum(w0**2)
  with pytest.raises(ValueError, match='does not depend on the params'):
    lgi.check_value_fn(frozen, w0)
  opt = sadam_optax.sadam(1e-2)
  with pytest.raises(ValueError, match='nnx_value_fn'):
    jax.jit(lambda w, s: opt.update(w, s, w, value_fn=frozen))(w0, opt.init(w0))
  # Reading only part of the params, or through a nested jit, is fine.
  lgi.check_value_fn(lambda p: jnp.sum(p['a'] ** 2), {'a': w0, 'b': w0})
  lgi.check_value_fn(jax.jit(lambda p: jnp.sum(p**2)), w0)


def test_a_closure_behind_a_nested_call_is_refused():
  # The call reads its argument only to pass it on: the loss inside comes
  # from the closed-over parameters, so it is as flat as a plain closure.
  w0 = jnp.array([1.0, -2.0])
  loss = lambda q, r: jnp.sum(r**2)
  for call in (jax.jit(loss), jax.checkpoint(loss)):
    with pytest.raises(ValueError, match='does not depend on the params'):
      lgi.check_value_fn(lambda p, call=call: call(p, w0), w0)
  # A call that reads its argument through a branch or a loop still passes.
  lgi.check_value_fn(jax.jit(lambda p: jax.lax.cond(p[0] > 0, jnp.sum, jnp.prod, p)), w0)
  body = lambda c, _: (c * 2.0, None)
  lgi.check_value_fn(lambda p: jnp.sum(jax.lax.scan(body, p, None, length=3)[0]), w0)
  lgi.check_value_fn(lambda p: jax.jit(loss)(w0, p) + jax.jit(loss)(p, w0), w0)


@pytest.mark.parametrize(
  'value_fn', [lambda p: jnp.sum(p.w), lambda p: jnp.sum(p['v'])], ids=['attribute', 'key']
)
def test_a_loss_that_fails_on_the_params_names_value_fn(value_fn):
  with pytest.raises(ValueError, match='could not evaluate value_fn'):
    lgi.check_value_fn(value_fn, {'w': jnp.zeros(3)})


def test_a_float32_weight_whose_step_rounds_away_reads_no_overshoot():
  # A pure descent step: w = 1e5 + 8 has a step below half its ulp (0.0078),
  # so it does not move; before 0.6.2 its share of <grad, step> read as a
  # descent that never came and the secant as an overshoot (rho 0.31).
  params = {'big': jnp.float32(1e5 + 8), 'small': jnp.array([1.0, -2.0], jnp.float32)}

  def loss(p):
    return (p['big'] - 1e5) ** 2 + jnp.sum(p['small'] ** 2)

  grad = jax.grad(loss)(params)
  step = jax.tree.map(lambda g: -1e-3 * jnp.sign(g), grad)
  assert float(params['big'] + step['big']) == float(params['big'])
  samples, resolved = lgi.secant_reading(loss, params, step, grad)
  assert bool(resolved)
  assert float(lgi.uphill_share(samples)) == 0.0


def test_a_loss_that_is_not_a_real_float_is_refused_with_the_fix():
  w = jnp.ones(3)
  for bad in (
    lambda p: jnp.round(100 * jnp.sum(p**2)).astype(jnp.int32),
    lambda p: jnp.sum(p) > 1,
    lambda p: jnp.sum(p).astype(jnp.complex64),
  ):
    with pytest.raises(ValueError, match=r'real floating-point loss.*astype\(jnp.float32\)'):
      lgi.check_value_fn(bad, w)


def test_a_value_fn_that_fails_to_trace_gets_advice_on_binding_the_batch():
  def loss_fn(p, batch):
    return jnp.sum((p - batch) ** 2)

  with pytest.raises(ValueError, match=r'loss_fn\(p, batch\)'):
    lgi.check_value_fn(loss_fn, {'w': jnp.ones(3), 'b': jnp.ones(())})


def test_probes_one_at_a_time_are_not_vmapped():
  # A host callback without a vmap rule works inside the loss of 'literal'.
  def loss(w):
    host_sum = jax.pure_callback(
      lambda x: np.asarray(np.sum(np.abs(x)), np.float32), jax.ShapeDtypeStruct((), jnp.float32), w
    )
    return host_sum + 0.0 * jnp.sum(w)

  rho = lgi.estimate_lgi(
    loss, jnp.array([0.1, -0.2]), jnp.array([-0.2, 0.1]), KEY, estimator='literal'
  )
  assert np.isfinite(float(rho))


@pytest.mark.parametrize('estimator', [e for e in lgi.ESTIMATORS if e != 'trajectory'])
def test_an_empty_parameter_tree_reads_rho_0(estimator):
  rho = lgi.estimate_lgi(lambda p: jnp.float32(1.0), {}, {}, KEY, estimator=estimator)
  assert float(rho) == 0.0
