"""Tests of sadam / sadamw: equality with optax, conformance, bad input.

The checks that every configuration must pass (lam=0 against optax, one
compilation, dtypes, extra arguments, MultiSteps, convergence on a
parabola, ...) are in :mod:`sadam_optax.common_test`.
"""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax
from sadam_optax import lgi


def run(opt, params, loss_fn, batches, *, with_value_fn=True):
  """Trains over all batches with a jitted step; returns params and states."""
  state = opt.init(params)

  @jax.jit
  def step(params, state, x, y):
    loss_of = functools.partial(loss_fn, x=x, y=y)
    grads = jax.grad(loss_of)(params)
    kwargs = {'value_fn': loss_of} if with_value_fn else {}
    updates, state = opt.update(grads, state, params, **kwargs)
    return optax.apply_updates(params, updates), state, updates

  states = []
  for x, y in zip(*batches):
    params, state, _ = step(params, state, x, y)
    states.append(state)
  return params, states


def test_lam_zero_equals_adamw_exactly_with_schedule_and_mask(mlp_problem):
  params, loss_fn, batches = mlp_problem
  sched = optax.cosine_decay_schedule(1e-2, 100)
  mask = lambda p: {k: k.startswith('w') for k in p}
  ours, _ = run(
    sadam_optax.sadamw(sched, weight_decay=1e-2, mask=mask, lam=0.0), params, loss_fn, batches
  )
  ref, _ = run(
    optax.adamw(sched, weight_decay=1e-2, mask=mask), params, loss_fn, batches, with_value_fn=False
  )
  jax.tree.map(np.testing.assert_array_equal, ours, ref)


def test_constant_rho_equals_adam_at_braked_learning_rate(mlp_problem):
  params, loss_fn, batches = mlp_problem
  c, lam, lr = 0.3, 2.0, 1e-2
  constant = lambda samples: jnp.float32(c)
  with (
    mock.patch.object(lgi, 'instability_ratio', constant),
    mock.patch.object(lgi, 'secant_ratio', constant),
    mock.patch.object(lgi, 'uphill_share', constant),
  ):
    # release=None and each reading as it comes: the paper's brake, a cut of
    # the learning rate when rho is constant.
    ours, states = run(
      sadam_optax.sadam(lr, lam=lam, release=None, damping_decay=0.0), params, loss_fn, batches
    )
  ref, _ = run(optax.adam(lr * np.exp(-lam * c)), params, loss_fn, batches, with_value_fn=False)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), ours, ref)
  np.testing.assert_allclose(optax.tree.get(states[-1], 'damping'), np.exp(-lam * c), rtol=1e-6)


def _converge(opt, loss, w0, steps):
  state = opt.init(w0)

  def body(carry, _):
    w, state = carry
    u, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
    return (optax.apply_updates(w, u), state), None

  (w, state), _ = jax.jit(lambda c: jax.lax.scan(body, c, length=steps))((w0, state))
  return w, state


def test_converges_on_rosenbrock():
  loss = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
  w, _ = _converge(sadam_optax.sadam(1e-2), loss, jnp.array([-1.0, 1.0]), 5000)
  np.testing.assert_allclose(w, jnp.ones(2), atol=5e-2)


def test_explicit_moment_dtype():
  params = jnp.ones(4, jnp.bfloat16)
  state = sadam_optax.sadam(mu_dtype=jnp.float32).init(params)
  assert optax.tree.get(state, 'mu').dtype == jnp.float32


def test_inject_hyperparams_over_learning_rate_and_lam(mlp_problem):
  params, loss_fn, batches = mlp_problem
  opt = optax.inject_hyperparams(sadam_optax.sadam)(learning_rate=1e-2, lam=1.0)
  ours, states = run(opt, params, loss_fn, batches)
  assert float(states[-1].hyperparams['lam']) == 1.0
  assert jax.tree.all(jax.tree.map(lambda p: jnp.all(jnp.isfinite(p)), ours))
  # lam injected as 0 reproduces Adam. A traced lam keeps the multiply by
  # 1.0 in the graph, which XLA may fuse differently: equal to float32 ulps.
  opt0 = optax.inject_hyperparams(sadam_optax.sadam)(learning_rate=1e-2, lam=0.0)
  zero, _ = run(opt0, params, loss_fn, batches)
  ref, _ = run(optax.adam(1e-2), params, loss_fn, batches, with_value_fn=False)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5), zero, ref)


def test_inject_hyperparams_needs_static_num_probes():
  opt = optax.inject_hyperparams(sadam_optax.sadam)(learning_rate=1e-2, num_probes=4)
  w = jnp.ones(3)
  with pytest.raises(ValueError, match="static_args=\\('num_probes',\\)"):
    opt.init(w)
  opt = optax.inject_hyperparams(sadam_optax.sadam, static_args=('num_probes',))(
    learning_rate=1e-2, num_probes=4
  )
  opt.update(w, opt.init(w), w, value_fn=jnp.sum)


@pytest.mark.parametrize('estimator', ['secant', 'step'])
def test_same_seed_same_trajectory_bit_for_bit(mlp_problem, estimator):
  params, loss_fn, batches = mlp_problem
  batches = jax.tree.map(lambda b: b[:10], batches)
  make = lambda seed: sadam_optax.sadam(1e-2, seed=seed, estimator=estimator)
  a, _ = run(make(3), params, loss_fn, batches)
  b, _ = run(make(3), params, loss_fn, batches)
  c, _ = run(make(4), params, loss_fn, batches)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # 'step' draws its probe points from the seed; 'secant' draws nothing.
  assert np.array_equal(a['w0'], c['w0']) == (estimator == 'secant')


def test_probe_every_carries_rho():
  loss = lambda w: jnp.sum(jnp.abs(w))
  opt = sadam_optax.sadam(0.5, probe_every=3)
  w = jnp.array([0.1, -0.2])
  state = opt.init(w)
  rhos = []
  for _ in range(7):
    u, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
    w = optax.apply_updates(w, u)
    rhos.append(float(optax.tree.get(state, 'rho')))
  assert rhos[1] == rhos[0] and rhos[2] == rhos[0]
  assert rhos[4] == rhos[3] and rhos[5] == rhos[3]


@pytest.mark.parametrize('estimator', lgi.ESTIMATORS)
def test_nonfinite_loss_at_probes_never_reaches_params(estimator):
  def loss(w):  # NaN (value and slope) in a band that the probes visit.
    bad = jnp.where(jnp.abs(w[0] - 0.25) < 0.2, jnp.nan, 0.0)
    return jnp.sum(jnp.abs(w - 0.3)) + bad * w[0]

  opt = sadam_optax.sadam(0.1, estimator=estimator)
  w = jnp.array([0.0, 1.0])
  state = opt.init(w)
  step = jax.jit(lambda w, s, g: opt.update(g, s, w, value_fn=loss))
  for _ in range(50):
    g = jax.grad(lambda w: jnp.sum(jnp.abs(w - 0.3)))(w)
    u, state = step(w, state, g)
    w = optax.apply_updates(w, u)
    assert np.all(np.isfinite(w))
    assert 0 < float(optax.tree.get(state, 'damping')) <= 1
  if estimator != 'trajectory':  # It never calls the loss.
    assert int(optax.tree.get(state, 'nonfinite_probes')) > 0


@pytest.mark.parametrize(
  'kwargs, name',
  [
    (dict(lam=-1.0), 'lam'),
    (dict(num_probes=1), 'num_probes'),
    (dict(num_probes=2.5), 'num_probes'),
    (dict(probe_radius=0.0), 'probe_radius'),
    (dict(probe_radius=-1e-3), 'probe_radius'),
    (dict(b1=1.0), 'b1'),
    (dict(b2=-0.1), 'b2'),
    (dict(eps=float('nan')), 'eps'),
    (dict(eps=-1e-8), 'eps'),
    (dict(eps_root=float('inf')), 'eps_root'),
    (dict(lam=float('inf')), 'lam'),
    (dict(lam=1e39), 'lam'),  # Finite in float64, infinite in the brake's float32.
    (dict(b1=jnp.float32(1.0)), 'b1'),
    (dict(b2=jnp.float32(float('nan'))), 'b2'),
    (dict(eps=jnp.float32(-1.0)), 'eps'),
    (dict(probe_every=0), 'probe_every'),
    (dict(estimator='random'), 'estimator'),
    (dict(rule='linear'), 'rule'),
  ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
  with pytest.raises(ValueError, match=name):
    sadam_optax.sadam(1e-3, **kwargs)


@pytest.mark.parametrize('lam, error', [('2', TypeError), ([1.0, 2.0], ValueError)])
def test_a_lam_that_is_not_a_scalar_number_is_refused(lam, error):
  with pytest.raises(error, match='lam'):
    sadam_optax.sadamw(1e-3, lam=lam)


@pytest.mark.parametrize(
  'kwargs, name',
  [
    (dict(learning_rate=float('nan')), 'learning_rate'),
    (dict(learning_rate=-1e-2), 'learning_rate'),
    (dict(learning_rate=optax.constant_schedule(-1e-2)), 'learning_rate'),
    (dict(learning_rate=1e-2, weight_decay=float('nan')), 'weight_decay'),
  ],
)
def test_a_learning_rate_or_weight_decay_that_would_ruin_the_params_is_refused(kwargs, name):
  for make in (sadam_optax.sadamw, sadam_optax.paper_sadamw):
    with pytest.raises(ValueError, match=f'{name}='):
      make(**kwargs)


def test_learning_rate_none_is_refused_with_the_chain_form():
  # optax reads None as "scaled later"; the probe would read +Adam's direction.
  for make in (sadam_optax.sadam, sadam_optax.sadamw, sadam_optax.paper_sadamw):
    with pytest.raises(ValueError, match='learning_rate=None.*step_size=lr'):
      make(None)


def test_options_after_eps_are_keyword_only():
  # optax.adamw's fifth positional argument is eps_root: a call written for
  # it must fail here, not set weight_decay.
  with pytest.raises(TypeError):
    sadam_optax.sadamw(1e-2, 0.9, 0.999, 1e-8, 1e-3)
  assert sadam_optax.sadamw(1e-2, 0.9, 0.999, 1e-8, weight_decay=1e-3)


def test_singularity_aware_refuses_a_function_in_place_of_an_optimizer():
  with pytest.raises(TypeError, match='GradientTransformation'):
    sadam_optax.singularity_aware(lambda: optax.adam(1e-3))


@pytest.mark.parametrize(
  'make, other, owner',
  [
    (lambda: sadam_optax.sadamw(1e-2), lambda: optax.adamw(1e-2), 'singularity_aware'),
    (
      lambda: optax.chain(optax.scale_by_adam(), sadam_optax.damping_scale(2.0, step_size=1e-2)),
      lambda: optax.chain(optax.scale_by_adam(), optax.scale(-1e-2)),
      'damping_scale',
    ),
    (
      lambda: optax.chain(optax.adam(1e-2), sadam_optax.lgi_probe()),
      lambda: optax.chain(optax.adam(1e-2), optax.adam(1e-2)),
      'lgi_probe',
    ),
  ],
)
def test_a_state_from_another_optimizer_is_refused_with_the_fix(make, other, owner):
  params = {'w': jnp.ones(3)}
  loss = lambda p: jnp.sum(jnp.abs(p['w']))
  grads = jax.grad(loss)(params)
  with pytest.raises(TypeError, match=f'{owner} was handed a state of type .*opt.init'):
    make().update(grads, other().init(params), params, value_fn=loss, grad=grads)
  # Its own state, rebuilt from leaves (a restored checkpoint), is accepted.
  state = make().init(params)
  restored = jax.tree.unflatten(jax.tree.structure(state), jax.tree.leaves(state))
  make().update(grads, restored, params, value_fn=loss, grad=grads)


def test_lazy_submodules_are_attributes():
  assert sadam_optax.flax_utils.nnx_value_fn
  assert sadam_optax.problems
  with pytest.raises(AttributeError):
    sadam_optax.no_such_module


def test_missing_value_fn_says_how_to_pass_it():
  opt = sadam_optax.sadam()
  w = jnp.ones(2)
  with pytest.raises(ValueError, match='value_fn=.*functools.partial'):
    opt.update(w, opt.init(w), w)
  # The trajectory estimator needs no loss.
  opt = sadam_optax.sadam(estimator='trajectory')
  opt.update(w, opt.init(w), w)


def test_paper_preset():
  opt = sadam_optax.paper_sadamw()
  w = jnp.ones(5)
  u, state = opt.update(w, opt.init(w), w, value_fn=lambda p: jnp.sum(p**2))
  assert np.all(np.isfinite(u))
  # On a smooth loss the literal rho is about 1 (brief, section 2).
  assert float(optax.tree.get(state, 'rho')) > 0.3


def _trajectory(opt, steps=60):
  """Parameters after ``steps`` jitted steps on a kinked loss whose brake softens and hardens."""
  loss = lambda w: jnp.sum(jnp.abs(w - 0.3)) + 0.5 * jnp.sum((w * jnp.arange(1.0, 6.0)) ** 2)
  w = jnp.linspace(-1.0, 1.0, 5)
  state = opt.init(w)

  @jax.jit
  def step(w, state):
    value, g = jax.value_and_grad(loss)(w)
    u, state = opt.update(g, state, w, value_fn=loss, value=value)
    return optax.apply_updates(w, u), state

  for _ in range(steps):
    w, state = step(w, state)
  return np.asarray(w)


@pytest.mark.parametrize('alias', [sadam_optax.sadam, sadam_optax.sadamw])
def test_auto_damping_recovery_is_the_envelope_only_with_a_short_b2_and_no_heavy_momentum(alias):
  kinds = dict(
    auto=dict(),
    envelope=dict(damping_decay=0.0, damping_recovery=0.9),
    each_reading=dict(damping_recovery=None),
  )
  for b1, b2, same in (
    (0.9, 0.95, 'envelope'),
    (0.9, 0.99, 'envelope'),
    (0.98, 0.95, 'envelope'),
    (0.9, 0.999, 'each_reading'),
    (0.99, 0.95, 'each_reading'),
  ):
    w = {kind: _trajectory(alias(3e-2, b1=b1, b2=b2, **kw)) for kind, kw in kinds.items()}
    other = 'each_reading' if same == 'envelope' else 'envelope'
    np.testing.assert_array_equal(w['auto'], w[same])
    assert not np.array_equal(w['auto'], w[other]), f'b1={b1}, b2={b2}: the run tells them apart'
  # A damping_decay chosen by hand keeps its plain average whatever b2.
  averaged = dict(damping_decay=0.7)
  np.testing.assert_array_equal(
    _trajectory(alias(3e-2, b2=0.95, **averaged)),
    _trajectory(alias(3e-2, b2=0.95, damping_recovery=None, **averaged)),
  )


def test_auto_damping_recovery_follows_a_traced_b2():
  def injected(b2, b1=0.9, **kw):  # b1 and b2 reach sadam traced, as float32 arrays.
    return _trajectory(optax.inject_hyperparams(sadam_optax.sadam)(3e-2, b1=b1, b2=b2, **kw))

  envelope, each_reading = (
    injected(0.95, damping_recovery=0.9),
    injected(0.95, damping_recovery=0.0),
  )
  assert np.abs(envelope - each_reading).max() > 1e-3
  np.testing.assert_allclose(injected(0.95), envelope, rtol=0, atol=1e-6)
  np.testing.assert_allclose(
    injected(0.999), injected(0.999, damping_recovery=0.0), rtol=0, atol=1e-6
  )
  for b1, b2, decay, expected in (
    (0.9, 0.95, 0.0, 0.9),
    (0.9, 0.999, 0.0, 0.0),
    (0.99, 0.95, 0.0, 0.0),
    (0.9, 0.95, 0.7, 0.7),
  ):
    args = (jnp.float32(b1), jnp.float32(b2), jnp.float32(decay))
    assert float(jax.jit(sadam_optax.auto_damping_recovery)(*args)) == pytest.approx(expected)


def test_auto_damping_recovery_needs_b2_outside_the_aliases():
  assert sadam_optax.auto_damping_recovery(0.9, 0.95) == 0.9
  assert sadam_optax.auto_damping_recovery(0.9, 0.999) is None
  assert sadam_optax.auto_damping_recovery(0.99, 0.95) is None
  assert sadam_optax.auto_damping_recovery(0.9, 0.95, damping_decay=0.7) is None
  for make in (sadam_optax.damping_scale, functools.partial(sadam_optax.sadam, 1e-3)):
    with pytest.raises(ValueError, match='damping_recovery=.*number'):
      make(damping_recovery='soon')
  with pytest.raises(ValueError, match=r'auto_damping_recovery\(b1, b2\)'):
    sadam_optax.damping_scale(damping_recovery='auto')


@pytest.mark.parametrize('alias', [sadam_optax.sadam, sadam_optax.sadamw])
def test_auto_store_uphill_drops_the_uphill_share_only_with_heavy_momentum(alias):
  for b1, b2, same in (
    (0.9, 0.999, True),
    (0.98, 0.95, True),
    (0.99, 0.999, False),
    (0.995, 0.95, False),
  ):
    w = {
      kind: _trajectory(alias(3e-2, b1=b1, b2=b2, **kw))
      for kind, kw in (
        ('auto', {}),
        (True, dict(store_uphill=True)),
        (False, dict(store_uphill=False)),
      )
    }
    np.testing.assert_array_equal(w['auto'], w[same])
    assert not np.array_equal(w['auto'], w[not same]), f'b1={b1}: the run tells them apart'


def test_auto_store_uphill_follows_a_traced_b1_and_is_refused_outside_the_aliases():
  def injected(b1, **kw):  # b1 reaches sadam traced, as a float32 array.
    return _trajectory(optax.inject_hyperparams(sadam_optax.sadam)(3e-2, b1=b1, **kw))

  for b1 in (0.9, 0.99):
    np.testing.assert_allclose(
      injected(b1), injected(b1, store_uphill=b1 < 0.99), rtol=0, atol=1e-6
    )
  assert sadam_optax.auto_store_uphill(0.9) is True
  assert sadam_optax.auto_store_uphill(0.99) is False
  assert not bool(jax.jit(sadam_optax.auto_store_uphill)(jnp.float32(0.99)))
  assert bool(jax.jit(sadam_optax.auto_store_uphill)(jnp.float32(0.98)))
  with pytest.raises(ValueError, match=r'auto_store_uphill\(b1\)'):
    sadam_optax.damping_scale(store_uphill='auto')
  with pytest.raises(ValueError, match='True or False'):
    sadam_optax.sadam(1e-3, store_uphill='no')
  with pytest.raises(TypeError, match='True or False'):
    sadam_optax.damping_scale(store_uphill=0.5)


def test_a_state_cast_as_a_whole_keeps_training():
  # optax.tree.cast casts the probe's key data too (uint32 -> float32).
  opt = sadam_optax.sadam(1e-2)
  w = jnp.array([1.0, -2.0])
  state = optax.tree.cast(opt.init(w), jnp.float32)
  loss = lambda p: jnp.sum(jnp.abs(p))
  step = jax.jit(lambda w, s: opt.update(jax.grad(loss)(w), s, w, value_fn=loss))
  for _ in range(3):
    updates, state = step(w, state)
    w = optax.apply_updates(w, updates)
  assert optax.tree.get(state, 'probe_key').dtype == jnp.float32
  assert np.all(np.isfinite(w)) and float(loss(w)) < 3.0


@pytest.mark.parametrize('alias', [sadam_optax.sadam, sadam_optax.sadamw])
def test_a_learning_rate_array_must_be_one_number(alias):
  with pytest.raises(ValueError, match=r'shape \(3,\).*scalar'):
    alias(jnp.full((3,), 1e-2))
  w = jnp.array([1.0, -2.0, 0.5])
  loss = lambda p: jnp.sum(jnp.abs(p))
  opt = alias(jnp.full((1,), 1e-2))  # One number, as optax broadcasts it.
  updates, _ = opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss)
  assert updates.shape == w.shape


def test_a_chain_step_size_array_must_be_one_number():
  opt = optax.chain(
    optax.scale_by_adam(), sadam_optax.damping_scale(2.0, step_size=jnp.full((3,), 1e-2))
  )
  w = jnp.array([1.0, -2.0, 0.5])
  loss = lambda p: jnp.sum(jnp.abs(p))
  with pytest.raises(ValueError, match=r'must be a scalar, got shape \(3,\)'):
    opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss, grad=jax.grad(loss)(w))


@pytest.mark.parametrize('option', ['learning_rate', 'b1', 'b2', 'eps', 'weight_decay'])
def test_an_option_given_as_text_is_refused_by_name(option):
  with pytest.raises(TypeError, match=f'{option}=.*not text'):
    sadam_optax.sadamw(**{option: '0.1'})


@pytest.mark.parametrize('value', ['1.0', True, jnp.int32(1) > 0, object()])
def test_a_value_that_is_not_a_number_is_refused(value):
  w = jnp.ones(2)
  opt = sadam_optax.sadam(1e-2)
  loss = lambda p: jnp.sum(p**2)
  with pytest.raises(ValueError, match='value= must be the loss'):
    opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss, value=value)
