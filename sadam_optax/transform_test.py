"""Tests of singularity_aware and damping_scale (the brake around the probe)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from unittest import mock

import sadam_optax


def _quadratic_kink_problem():
  target = jnp.array([1.0, -2.0, 0.5, 0.0])
  loss = lambda w: jnp.sum(jnp.abs(w - target)) + 0.1 * jnp.sum(w**2)
  return loss, jnp.zeros(4)


def test_damping_scale_before_adam_fails_with_the_order_rule():
  loss, w = _quadratic_kink_problem()
  opt = optax.chain(sadam_optax.damping_scale(2.0), optax.scale_by_adam())
  g = jax.grad(loss)(w)
  with pytest.raises(ValueError, match='after optax.scale_by_adam'):
    opt.update(g, opt.init(w), w, value_fn=loss, grad=g)


def test_damping_scale_in_a_chain_needs_grad():
  loss, w = _quadratic_kink_problem()
  opt = optax.chain(
    optax.scale_by_adam(),
    sadam_optax.damping_scale(2.0, step_size=0.1),
    optax.scale_by_learning_rate(0.1),
  )
  with pytest.raises(ValueError, match='grad=grads'):
    opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss)
  traj = optax.chain(
    optax.scale_by_adam(),
    sadam_optax.damping_scale(2.0, probe=sadam_optax.lgi_probe(estimator='trajectory')),
  )
  with pytest.raises(ValueError, match='grad=grads'):
    traj.update(jax.grad(loss)(w), traj.init(w), w)


@pytest.mark.parametrize('estimator', ['secant', 'step', 'literal', 'trajectory', 'random-jvp'])
@pytest.mark.parametrize('rule', ['exp', 'compound'])
def test_chain_form_equals_sadamw_bit_for_bit(estimator, rule):
  # The design card's chain, with the brake after Adam, is sadamw.
  loss, w = _quadratic_kink_problem()
  lr, wd = 0.05, 1e-2
  chain = optax.chain(
    optax.scale_by_adam(),
    sadam_optax.damping_scale(
      2.0, probe=sadam_optax.lgi_probe(estimator=estimator), step_size=lr, rule=rule
    ),
    optax.add_decayed_weights(wd),
    optax.scale_by_learning_rate(lr),
  )
  alias = sadam_optax.sadamw(lr, weight_decay=wd, estimator=estimator, rule=rule)

  def run(opt, **keywords):
    @jax.jit
    def step(w, state):
      value, g = jax.value_and_grad(loss)(w)
      u, state = opt.update(g, state, w, value_fn=loss, value=value, grad=g, **keywords)
      return optax.apply_updates(w, u), state

    params, state = w, opt.init(w)
    for _ in range(25):
      params, state = step(params, state)
    return params, float(optax.tree.get(state, 'rho'))

  w_chain, rho_chain = run(chain)
  w_alias, rho_alias = run(alias)
  np.testing.assert_array_equal(w_chain, w_alias)
  assert rho_chain == rho_alias


def test_probe_now_compiles_the_skipped_step_without_the_probe():
  loss, w = _quadratic_kink_problem()
  opt = sadam_optax.sadam(0.1)
  g = jax.grad(loss)(w)
  calls = []

  def counted(p):
    calls.append(1)
    return loss(p)

  state = opt.init(w)
  jax.make_jaxpr(
    lambda w, g, s: opt.update(g, s, w, value_fn=counted, value=loss(w), probe_now=False)
  )(w, g, state)
  assert len(calls) == 1  # The value_fn check only: no probe traced.
  _, skipped = opt.update(g, state, w, value_fn=loss, probe_now=False)
  _, probed = opt.update(g, state, w, value_fn=loss, probe_now=True)
  assert float(optax.tree.get(skipped, 'rho')) == 0.0
  assert float(optax.tree.get(probed, 'rho')) > 0.0
  with pytest.raises(ValueError, match='Python bool'):
    opt.update(g, state, w, value_fn=loss, probe_now=jnp.bool_(True))


def test_lam_zero_needs_no_loss_and_probes_nothing():
  loss, w = _quadratic_kink_problem()
  opt = sadam_optax.sadamw(0.1, lam=0.0)
  ref = optax.adamw(0.1, weight_decay=1e-4)
  g = jax.grad(loss)(w)
  u, _ = opt.update(g, opt.init(w), w)  # No value_fn: nothing to measure.
  r, _ = ref.update(g, ref.init(w), w)
  np.testing.assert_array_equal(u, r)


def test_brake_acts_after_adam_not_on_the_gradient():
  # Adam's direction is invariant to rescaling the gradient; the brake must
  # shrink the step itself, by exactly the damping it reports.
  loss = lambda w: jnp.sum(jnp.abs(w))
  w = jnp.array([0.05, -0.05, 0.05])
  adam = optax.adam(0.1)
  braked = sadam_optax.singularity_aware(optax.adam(0.1), brake=sadam_optax.damping_scale(5.0))
  g = jax.grad(loss)(w)
  ref, _ = adam.update(g, adam.init(w), w)
  ours, state = braked.update(g, braked.init(w), w, value_fn=loss)
  damping = float(optax.tree.get(state, 'damping'))
  assert damping < 0.5  # The step of 0.1 jumps across the kink at 0.
  np.testing.assert_allclose(ours, damping * ref, rtol=1e-6)


@pytest.mark.parametrize(
  'inner',
  [optax.sgd(0.05, momentum=0.9), optax.lion(0.01), optax.adafactor(0.05), optax.adabelief(0.05)],
  ids=['sgd', 'lion', 'adafactor', 'adabelief'],
)
def test_wraps_any_optimizer(inner):
  target = jnp.array([[1.0, -1.0], [0.5, 2.0]])
  loss = lambda w: jnp.sum(jnp.abs(w - target))
  opt = sadam_optax.singularity_aware(inner)
  w = jnp.zeros((2, 2))
  state = opt.init(w)

  @jax.jit
  def step(w, state):
    u, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
    return optax.apply_updates(w, u), state

  first = loss(w)
  for _ in range(300):
    w, state = step(w, state)
  assert loss(w) < 0.5 * first
  assert np.all(np.isfinite(w))


def test_lam_schedule_and_compound_rule():
  loss = lambda w: jnp.sum(jnp.abs(w))
  for brake in (
    sadam_optax.damping_scale(optax.linear_schedule(0.0, 4.0, 10)),
    sadam_optax.damping_scale(1.0, rule='compound'),
  ):
    opt = sadam_optax.singularity_aware(optax.sgd(0.1), brake=brake)
    w = jnp.array([0.05])
    state = opt.init(w)
    dampings = []
    for _ in range(12):
      u, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      w = optax.apply_updates(w, u)
      dampings.append(float(optax.tree.get(state, 'damping')))
    assert min(dampings) < 0.5 * dampings[0]  # It tightens over time.
    assert all(0 < d <= 1 for d in dampings)


def test_compound_brake_tightens_beyond_one_step_and_relaxes():
  brake = sadam_optax.damping_scale(2.0, rule='compound', recovery=0.5, min_damping=1e-4)
  factor = sadam_optax.transform.brake_factor
  d = jnp.float32(1.0)
  for _ in range(5):
    d = factor(brake, jnp.float32(0.9), d, jnp.int32(0))
  assert float(d) < np.exp(-2.0) ** 3  # Below any single exp(-lam) step.
  for _ in range(30):
    d = factor(brake, jnp.float32(0.0), d, jnp.int32(0))
  assert float(d) == 1.0


def _dampings_at_constant_rho(rho, steps, **kwargs):
  """The damping after each step of sadam on |w| with rho patched to a constant."""
  loss = lambda w: jnp.sum(jnp.abs(w))
  constant = lambda samples: jnp.float32(rho)
  opt = sadam_optax.sadam(0.05, lam=2.0, **kwargs)
  w = jnp.array([0.3, -0.2])
  state = opt.init(w)
  update = jax.jit(lambda g, s, w: opt.update(g, s, w, value_fn=loss, grad=g))
  out = []
  with mock.patch.object(sadam_optax.lgi, 'uphill_share', constant):
    for _ in range(steps):
      g = jax.grad(loss)(w)
      u, state = update(g, state, w)
      w = optax.apply_updates(w, u)
      out.append(float(optax.tree.get(state, 'damping')))
  return np.array(out)


def test_damping_is_an_average_of_the_readings_over_probes():
  reading = np.exp(-2.0 * 0.4)
  n = np.arange(1, 9)
  np.testing.assert_allclose(
    _dampings_at_constant_rho(0.4, 8, damping_decay=0.7),
    reading + 0.7**n * (1 - reading),
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    _dampings_at_constant_rho(0.4, 8, damping_decay=0.5),
    reading + 0.5**n * (1 - reading),
    rtol=1e-6,
  )
  # 0 (the default): each reading as it comes, the paper's rule.
  np.testing.assert_allclose(_dampings_at_constant_rho(0.4, 3), reading, rtol=1e-6)


def test_averaged_damping_moves_only_on_probed_steps():
  d = _dampings_at_constant_rho(0.4, 9, probe_every=3, damping_decay=0.7)
  reading = np.exp(-2.0 * 0.4)
  probes = reading + 0.7 ** np.arange(1, 4) * (1 - reading)
  np.testing.assert_allclose(d, np.repeat(probes, 3), rtol=1e-6)


def test_averaged_damping_takes_harder_readings_at_once_and_recovers_slowly():
  brake = sadam_optax.damping_scale(2.0, damping_decay=0.0, damping_recovery=0.9).brake
  step = lambda reading, previous: float(
    sadam_optax.transform.averaged_damping(
      brake, jnp.float32(reading), jnp.float32(previous), jnp.int32(0)
    )
  )
  assert step(0.2, 1.0) == pytest.approx(0.2)  # Harder: at once.
  assert step(0.8, 0.2) == pytest.approx(0.9 * 0.2 + 0.1 * 0.8)  # Softer: slowly.
  assert step(0.1, 0.26) == pytest.approx(0.1)
  # A plain average: the same decay both ways, given or left to None.
  for both in (
    sadam_optax.damping_scale(2.0, damping_decay=0.7, damping_recovery=0.7).brake,
    sadam_optax.damping_scale(2.0, damping_decay=0.7).brake,
    sadam_optax.transform.Brake(2.0, 'exp', 0.1, 0.03, damping_decay=0.7),
  ):
    for reading, previous in ((0.2, 1.0), (0.8, 0.2)):
      out = sadam_optax.transform.averaged_damping(
        both, jnp.float32(reading), jnp.float32(previous), jnp.int32(0)
      )
      assert float(out) == pytest.approx(0.7 * previous + 0.3 * reading)
  off = sadam_optax.damping_scale(lambda count: 0.0 * count, damping_recovery=0.9).brake
  out = sadam_optax.transform.averaged_damping(off, jnp.float32(1.0), jnp.float32(0.2), 0)
  assert float(out) == 1.0  # A brake turned off lets go at once.


def test_damping_follows_its_envelope_recurrence_along_a_run():
  loss = lambda w: jnp.sum(jnp.abs(w - 0.3)) + 0.5 * jnp.sum((w * jnp.arange(1.0, 6.0)) ** 2)
  opt = sadam_optax.sadam(3e-2, lam=2.0, damping_decay=0.0, damping_recovery=0.9)
  w = jnp.linspace(-1.0, 1.0, 5)
  state = opt.init(w)
  update = jax.jit(lambda g, s, w, v: opt.update(g, s, w, value_fn=loss, value=v))
  previous, softer = 1.0, 0
  for _ in range(120):
    value, g = jax.value_and_grad(loss)(w)
    u, state = update(g, state, w, value)
    w = optax.apply_updates(w, u)
    reading = float(np.exp(-2.0 * np.float32(optax.tree.get(state, 'rho'))))
    expected = reading if reading < previous else 0.9 * previous + 0.1 * reading
    softer += reading >= previous
    previous = float(optax.tree.get(state, 'damping'))
    assert previous == pytest.approx(expected, rel=1e-5, abs=1e-6)
  assert 0 < softer < 120  # Both branches ran.


def test_compound_rule_ignores_the_damping_average():
  loss = lambda w: jnp.sum(jnp.abs(w))
  runs = []
  for decay in (0.0, 0.7):
    brake = sadam_optax.damping_scale(
      1.0, rule='compound', damping_decay=decay, damping_recovery=decay
    )
    opt = sadam_optax.singularity_aware(optax.sgd(0.1), brake=brake)
    w = jnp.array([0.05, -0.3])
    state = opt.init(w)
    for _ in range(6):
      u, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      w = optax.apply_updates(w, u)
    runs.append(w)
  np.testing.assert_array_equal(*runs)


@pytest.mark.parametrize('decay', [-0.1, 1.0, 1.5, float('nan'), np.array([0.5, 0.5])])
@pytest.mark.parametrize('name', ['damping_decay', 'damping_recovery'])
def test_bad_damping_decay_raises_value_error_naming_it(decay, name):
  with pytest.raises(ValueError, match=f'{name}='):
    sadam_optax.sadam(**{name: decay})
  with pytest.raises(ValueError, match=f'{name}='):
    sadam_optax.damping_scale(**{name: decay})
  with pytest.raises(ValueError, match=f'{name}='):
    sadam_optax.sadamw(**{name: decay})


def test_bad_probe_and_brake_configuration():
  with pytest.raises(TypeError, match='lgi_probe'):
    sadam_optax.singularity_aware(optax.sgd(0.1), probe={'num_probes': 4})
  with pytest.raises(ValueError, match='chunk_size'):
    sadam_optax.lgi_probe(chunk_size=0)
  with pytest.raises(ValueError, match='min_damping'):
    sadam_optax.damping_scale(rule='compound', min_damping=0.0)
  for every in (2.5, jnp.int32(0), 0, True):
    with pytest.raises(ValueError, match='probe_every'):
      sadam_optax.sadamw(probe_every=every)
  assert sadam_optax.lgi_probe(probe_every=np.int64(3)).probe_every == 3
  for lam in (
    -1.0,
    np.float32(-0.5),
    jnp.array(float('nan')),
    np.array([1.0, -1.0]),
    optax.constant_schedule(-2.0),
  ):
    with pytest.raises(ValueError, match='lam='):
      sadam_optax.sadamw(lam=lam)


def test_inject_hyperparams_static_ints_say_static_args():
  w = jnp.ones(3)
  # Every numeric default becomes a traced hyperparameter: probe_every too.
  opt = optax.inject_hyperparams(sadam_optax.sadamw)(probe_every=2)
  jax.jit(opt.init)(w)
  for name, value in (('chunk_size', 2), ('num_probes', 4)):
    opt = optax.inject_hyperparams(sadam_optax.sadamw)(**{name: value})
    with pytest.raises(ValueError, match='static_args'):
      jax.jit(opt.init)(w)
    opt = optax.inject_hyperparams(sadam_optax.sadamw, static_args=(name,))(**{name: value})
    opt.init(w)


@pytest.mark.parametrize('lam', [-3.0, np.inf, np.nan])
def test_traced_bad_lam_turns_the_brake_off(lam):
  loss, w = _quadratic_kink_problem()
  opt = optax.inject_hyperparams(sadam_optax.sadamw)(learning_rate=0.3, lam=1.0)
  state = opt.init(w)
  state.hyperparams['lam'] = jnp.float32(lam)
  g = jax.grad(loss)(w)
  updates, state = jax.jit(lambda s: opt.update(g, s, w, value_fn=loss))(state)
  assert float(optax.tree.get(state, 'damping')) == 1.0
  assert bool(jnp.all(jnp.isfinite(updates)))


def test_schedule_that_reaches_an_infinite_lam_keeps_the_parameters_finite():
  # Checked at its first step only; from step 5 on the brake is off, not NaN.
  loss, w = _quadratic_kink_problem()
  lam = lambda count: jnp.where(count < 5, 2.0, jnp.inf)
  opt = sadam_optax.sadamw(0.3, lam=lam)
  state = opt.init(w)

  @jax.jit
  def step(w, state):
    updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
    return optax.apply_updates(w, updates), state

  for _ in range(10):
    w, state = step(w, state)
  assert bool(jnp.all(jnp.isfinite(w)))
  assert float(optax.tree.get(state, 'damping')) == 1.0


def test_grad_and_value_of_the_wrong_shape_fail_clearly():
  loss, w = _quadratic_kink_problem()
  opt = sadam_optax.sadamw(0.1)
  value, g = jax.value_and_grad(loss)(w)
  with pytest.raises(ValueError, match='grad='):
    opt.update(g, opt.init(w), w, value_fn=loss, grad=(value, g))
  params = {'a': w, 'b': w}
  tree_loss = lambda p: loss(p['a']) + loss(p['b'])
  grads = jax.grad(tree_loss)(params)
  with pytest.raises(ValueError, match='grad='):
    opt.update(grads, opt.init(params), params, value_fn=tree_loss, grad={'a': grads['a']})
  with pytest.raises(ValueError, match='value='):
    opt.update(g, opt.init(w), w, value_fn=loss, value=jnp.ones(8))


def test_step_estimator_runs_through_a_custom_vjp_quantizer():
  @jax.custom_vjp
  def ste_round(x):
    return jnp.round(x)

  ste_round.defvjp(lambda x: (jnp.round(x), None), lambda _, g: (g,))
  loss = lambda w: jnp.sum((ste_round(4 * w) / 4 - 0.3) ** 2)
  opt = sadam_optax.sadam(0.1, estimator='step')
  w = jnp.array([0.1, 0.6])
  u, state = jax.jit(lambda w: opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss))(w)
  assert np.all(np.isfinite(u))
  assert np.isfinite(float(optax.tree.get(state, 'rho')))


def test_literal_refuses_a_bfloat16_loss():
  loss = lambda w: jnp.sum(jnp.abs(w)).astype(jnp.bfloat16)
  opt = sadam_optax.paper_sadamw()
  w = jnp.ones(4)
  with pytest.raises(ValueError, match='float32'):
    opt.update(jnp.ones(4), opt.init(w), w, value_fn=loss)


def test_gradient_through_the_first_update_is_finite():
  loss, w = _quadratic_kink_problem()
  for estimator in ('trajectory', 'secant'):
    opt = sadam_optax.sadam(0.1, estimator=estimator)

    def after_one_step(w0):
      u, _ = opt.update(jax.grad(loss)(w0), opt.init(w0), w0, value_fn=loss)
      return loss(optax.apply_updates(w0, u))

    assert np.all(np.isfinite(jax.grad(after_one_step)(w + 0.3))), estimator


def test_state_serialises_with_flax():
  serialization = pytest.importorskip('flax.serialization')
  loss, w = _quadratic_kink_problem()
  opt = sadam_optax.sadamw(1e-3, estimator='step')
  state = opt.init(w)
  _, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
  restored = serialization.from_bytes(opt.init(w), serialization.to_bytes(state))
  jax.tree.map(np.testing.assert_array_equal, restored, state)


def test_paper_lazy_variant_probes_steps_1_10_20():
  loss, w = _quadratic_kink_problem()
  opt = sadam_optax.paper_sadamw(0.05, lazy=True)
  state = opt.init(w)
  step = jax.jit(lambda w, s: opt.update(jax.grad(loss)(w), s, w, value_fn=loss))
  rhos = []
  for _ in range(21):
    u, state = step(w, state)
    w = optax.apply_updates(w, u)
    rhos.append(float(optax.tree.get(state, 'rho')))
  changed = [i + 1 for i in range(21) if i == 0 or rhos[i] != rhos[i - 1]]
  assert changed == [1, 10, 20]


def test_masked_params_fail_with_advice():
  opt = optax.masked(sadam_optax.sadam(), {'a': True, 'b': False})
  params = {'a': jnp.ones(2), 'b': jnp.ones(2)}
  loss = lambda p: jnp.sum(p['a'] ** 2)
  with pytest.raises(ValueError, match='outside'):
    opt.update(params, opt.init(params), params, value_fn=loss)


def _count_calls(loss):
  calls = []

  def counted(w):
    calls.append(1)
    return loss(w)

  return counted, calls


def test_secant_costs_one_forward_pass_when_given_the_value():
  loss = lambda w: jnp.sum(jnp.abs(w - 1.0))
  opt = sadam_optax.sadam(0.1, estimator='secant')
  w = jnp.array([0.95, 3.0])
  value, g = jax.value_and_grad(loss)(w)
  results = []
  for kwargs in ({}, {'value': value}):
    counted, calls = _count_calls(loss)
    # Traced once; eval_shape (the value_fn check) also traces it once.
    jax.make_jaxpr(lambda w, g: opt.update(g, opt.init(w), w, value_fn=counted, **kwargs))(w, g)
    results.append(len(calls) - 1)
    u, state = opt.update(g, opt.init(w), w, value_fn=loss, **kwargs)
    results.append(float(optax.tree.get(state, 'rho')))
  assert results[0] == 2 and results[2] == 1  # Forward passes.
  np.testing.assert_allclose(results[1], results[3], rtol=1e-6)
  # Adam's first step: 0.1 * sign(g) = (0.1, -0.1); the first coordinate
  # crosses its kink. s0 = -sqrt(2), secant = -0.1 / (0.1 sqrt(2)), so
  # Var = 1/6 and rho = (1/6) / (1/2 + 1/6) = 1/4.
  assert results[1] == pytest.approx(0.25, rel=1e-4)


def test_secant_reads_grad_keyword_in_place_of_clipped_updates():
  loss = lambda w: jnp.sum(jnp.abs(w - 1.0))
  w = jnp.array([0.95, 3.0])
  g = jax.grad(loss)(w)
  # Adam's first step is lr * sign(g) whatever the gradient's scale.
  opt = sadam_optax.singularity_aware(
    optax.adam(0.1), probe=sadam_optax.lgi_probe(estimator='secant')
  )
  _, ref = opt.update(g, opt.init(w), w, value_fn=loss)
  _, off = opt.update(g / 4, opt.init(w), w, value_fn=loss)
  _, fixed = opt.update(g / 4, opt.init(w), w, value_fn=loss, grad=g)
  rho = lambda s: float(optax.tree.get(s, 'rho'))
  assert rho(off) != pytest.approx(rho(ref))
  # Same direction, the true gradient for the start slope: rho as unclipped.
  assert rho(fixed) == pytest.approx(rho(ref), rel=1e-5)


# --------------------------------------------------------------------------- the release


def _released(updates, damping, release):
  """Braked steps and the final store for a sequence of updates."""
  held = jnp.zeros_like(updates[0])
  steps = []
  for u, d in zip(updates, damping):
    step, held = sadam_optax.transform.brake_and_release(u, held, jnp.float32(d), release)
    steps.append(step)
  return jnp.stack(steps), held


def test_release_conserves_the_path_and_cancels_chattering():
  rng = np.random.default_rng(0)
  updates = jnp.asarray(rng.normal(size=(200, 5)), jnp.float32)
  damping = rng.uniform(0.05, 1.0, size=200)
  steps, held = _released(updates, damping, 0.01)
  # Nothing is lost: what the brake took is either returned or still held.
  np.testing.assert_allclose(steps.sum(0) + held, updates.sum(0), rtol=1e-5, atol=1e-4)
  # A direction kept on every step: the braked steps reach the full step.
  steps, _ = _released(jnp.ones((2000, 1)), np.full(2000, 0.3), 0.01)
  np.testing.assert_allclose(steps[-1], 1.0, rtol=1e-4)
  # Chattering (+1, -1, ...) braked alike: the store never holds more than
  # one step's held part (0.7) and the steps stay braked (0.3 + 0.01 * 0.35).
  chatter = jnp.asarray(np.tile([1.0, -1.0], 1000)[:, None], jnp.float32)
  steps, held = _released(chatter, np.full(2000, 0.3), 0.01)
  assert float(jnp.max(jnp.abs(steps[-100:]))) < 0.31
  assert float(jnp.abs(held[0])) < 0.7


def test_release_waits_where_returning_the_store_goes_uphill():
  brake_and_release = sadam_optax.transform.brake_and_release
  u = jnp.zeros(4, jnp.float32)
  held = jnp.asarray([1.0, 1.0, -1.0, 2.0], jnp.float32)
  grad = jnp.asarray([1.0, -1.0, -1.0, 0.0], jnp.float32)
  # Adam's direction, scaled by -lr later: the store's step is -h, downhill
  # where h has the gradient's sign (0 and 2), uphill where not (1: it
  # mostly waits, returning a tenth of the rate); with no slope (grad[3] =
  # 0) it is returned.
  step, kept = brake_and_release(u, held, jnp.float32(0.5), 0.1, grad=grad, step_sign=-1.0)
  np.testing.assert_allclose(step, [0.1, 0.01, -0.1, 0.2], rtol=1e-6)
  np.testing.assert_allclose(kept, [0.9, 0.99, -0.9, 1.8], rtol=1e-6)
  # The updates are the step itself: the store's step is +h, and the
  # coordinates that wait flip.
  step, _ = brake_and_release(u, held, jnp.float32(0.5), 0.1, grad=grad, step_sign=1.0)
  np.testing.assert_allclose(step, [0.01, 0.1, -0.01, 0.2], rtol=1e-6)
  # Without a gradient the store is returned everywhere.
  step, _ = brake_and_release(u, held, jnp.float32(0.5), 0.1)
  np.testing.assert_allclose(step, 0.1 * held, rtol=1e-6)
  # Nothing is lost either way: steps plus the store are the steps proposed.
  rng = np.random.default_rng(1)
  updates = jnp.asarray(rng.normal(size=(100, 5)), jnp.float32)
  grads = jnp.asarray(rng.normal(size=(100, 5)), jnp.float32)
  store, total = jnp.zeros(5), jnp.zeros(5)
  for t in range(100):
    step, store = brake_and_release(
      updates[t], store, jnp.float32(rng.uniform(0.1, 1)), 0.01, grad=grads[t], step_sign=-1.0
    )
    total = total + step
  np.testing.assert_allclose(total + store, updates.sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('release', [0.01, 1.0])  # 1.0: the two-reader form.
def test_store_returns_at_most_cap_times_the_step_and_keeps_the_rest(release):
  brake_and_release = sadam_optax.transform.brake_and_release
  u = jnp.asarray([1.0, -1e-3, 0.0, 2.0, -0.5], jnp.float32)
  held = jnp.asarray([50.0, 40.0, -30.0, 0.5, 1.0], jnp.float32)
  d = jnp.float32(0.5)
  step, kept = brake_and_release(u, held, d, release, cap=3.0)
  returned = np.clip(release * np.asarray(held), -3 * np.abs(u), 3 * np.abs(u))
  np.testing.assert_allclose(step, 0.5 * np.asarray(u) + returned, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(kept, held - returned + 0.5 * u, rtol=1e-6, atol=1e-6)
  # Where the step is 0 the store waits whole; nothing is lost.
  assert float(kept[2]) == -30.0 and float(step[2]) == 0.0
  np.testing.assert_allclose(step + kept, held + u, rtol=1e-6)
  # No cap: the 0.7 release, bit for bit.
  plain = brake_and_release(u, held, d, release)
  jax.tree.map(
    np.testing.assert_array_equal, brake_and_release(u, held, d, release, cap=None), plain
  )
  # In steady travel the store returns 1 - d of the step, below the cap: the cap never binds.
  store = jnp.zeros(1)
  for _ in range(3000):
    step, store = brake_and_release(jnp.ones(1), store, jnp.float32(0.3), 0.01, cap=1.0)
  np.testing.assert_allclose(step, 1.0, rtol=1e-4)


def test_release_cap_is_the_default_and_a_bad_one_fails_with_advice():
  w = jnp.zeros(2)
  assert sadam_optax.damping_scale().brake.release_cap == 3.0
  opt = sadam_optax.sadam(1e-2)
  assert sadam_optax.Brake(lam=2.0, rule='exp', recovery=0.1, min_damping=0.03).release_cap == 3.0
  assert optax.tree.get(opt.init(w), 'held').shape == (2,)
  for cap in (0.0, -1.0, float('nan'), float('inf'), 'big', (1.0, 2.0)):
    with pytest.raises(ValueError, match='release_cap'):
      sadam_optax.sadam(1e-2, release_cap=cap)


def test_where_the_gradient_vanishes_the_store_does_not_push_the_iterate_out():
  # Least squares through a straight-through quantizer, planted on the grid: the loss is 0 on
  # the planted cell and its gradient vanishes there. The store built while crossing cells
  # returned at its own rate carried the iterate out of that cell again and again; capped at
  # three times Adam's step, which dies away inside it, it waits.
  rng = np.random.default_rng(3)
  n, dim, delta = 40, 10, 0.05
  x = jnp.asarray(rng.normal(size=(n, dim)), jnp.float32)
  q = delta * rng.integers(-8, 9, dim)
  y = x @ jnp.asarray(q, jnp.float32)

  def loss(w):
    s = w / delta
    r = x @ (delta * (s + jax.lax.stop_gradient(jnp.round(s) - s))) - y
    return 0.5 * jnp.mean(r * r)

  def exits(opt):
    w0 = jnp.asarray(q + rng_start, jnp.float32)

    def body(carry, _):
      w, state = carry
      value, g = jax.value_and_grad(loss)(w)
      u, state = opt.update(g, state, w, value_fn=loss, value=value)
      w = optax.apply_updates(w, u)
      return (w, state), jnp.all(jnp.round(w / delta) == jnp.round(q / delta))

    _, inside = jax.jit(lambda: jax.lax.scan(body, (w0, opt.init(w0)), length=3000))()
    inside = np.asarray(inside)
    return int(np.sum(inside[:-1] & ~inside[1:])), bool(inside[-300:].all())

  rng_start = rng.normal(size=dim)
  rng_start *= 2.0 / np.linalg.norm(rng_start)
  capped, uncapped = (
    exits(sadam_optax.sadam(1e-2)),
    exits(sadam_optax.sadam(1e-2, release_cap=None)),
  )
  assert capped[1] and 3 * capped[0] < uncapped[0]  # 11 exits against 67.


def test_store_takes_only_the_downhill_share_when_told():
  brake_and_release = sadam_optax.transform.brake_and_release
  u = jnp.asarray([1.0, -2.0, 0.5], jnp.float32)
  held = jnp.asarray([0.2, 0.0, -0.4], jnp.float32)
  d = jnp.float32(0.25)
  step_all, kept_all = brake_and_release(u, held, d, 0.1)
  # The step is the same; the store takes intake x (1 - d) of it.
  for intake in (0.0, 0.4, 1.0):
    step, kept = brake_and_release(u, held, d, 0.1, intake=jnp.float32(intake))
    np.testing.assert_allclose(step, step_all, rtol=1e-6)
    np.testing.assert_allclose(kept, 0.9 * held + intake * 0.75 * u, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(kept_all, 0.9 * held + 0.75 * u, rtol=1e-6)
  # The store's intake is 1 - rho (rho the uphill share), whatever the reading's range.
  intake = sadam_optax.transform._intake
  assert intake(True, jnp.float32(0.3)) is None
  for rho, share in ((0.0, 1.0), (0.3, 0.7), (1.0, 0.0), (4.0, 0.0)):
    assert float(intake(False, jnp.float32(rho))) == pytest.approx(share)
  assert float(intake(jnp.bool_(True), jnp.float32(0.3))) == 1.0


def test_without_the_uphill_share_a_step_uphill_all_the_way_leaves_the_store_empty():
  # Momentum carrying the iterate away from the minimiser of |w|: the step
  # goes uphill from its start (rho 1), the brake holds most of it back, and
  # the store keeps none of it, so nothing comes back later to push it away.
  loss = lambda w: jnp.sum(jnp.abs(w))
  w = jnp.asarray([0.5], jnp.float32)
  adam_direction = jnp.asarray([-1.0], jnp.float32)  # Scaled by -lr: the step is +lr.
  grad = jax.grad(loss)(w)
  for store_uphill, stored in ((True, True), (False, False)):
    scale = sadam_optax.damping_scale(2.0, step_size=0.1, store_uphill=store_uphill)
    braked, state = scale.update(
      adam_direction, scale.init(w), w, value_fn=loss, value=loss(w), grad=grad
    )
    assert float(state.probe_state.rho) == pytest.approx(1.0)
    np.testing.assert_allclose(braked, np.exp(-2.0) * adam_direction, rtol=1e-6)
    assert (float(jnp.abs(state.held[0])) > 0.5) is stored


def test_release_none_discards_and_keeps_no_store():
  opt = sadam_optax.sadam(1e-2, release=None)
  w = jnp.zeros(3)
  assert optax.tree.get(opt.init(w), 'held') == ()
  steps, held = _released(jnp.ones((10, 1)), np.full(10, 0.5), None)
  np.testing.assert_array_equal(steps, 0.5)
  # lam=0: no store either (the state of optax.adam plus scalars).
  assert optax.tree.get(sadam_optax.sadam(1e-2, lam=0.0).init(w), 'held') == ()
  # 'auto': the compound rule discards (its damping sits near its floor), 'exp' stores.
  assert optax.tree.get(sadam_optax.sadam(1e-2, rule='compound').init(w), 'held') == ()
  assert optax.tree.get(sadam_optax.sadam(1e-2).init(w), 'held').shape == (3,)
  compound = sadam_optax.Brake(lam=1.0, rule='compound', recovery=0.1, min_damping=0.03)
  wrapped = sadam_optax.singularity_aware(optax.sgd(0.1), brake=compound)
  assert optax.tree.get(wrapped.init(w), 'held') == ()


@pytest.mark.parametrize('release', [0.0, -0.1, 1.5, float('nan'), (0.1, 0.2), 'fast'])
def test_bad_release_fails_with_advice(release):
  with pytest.raises(ValueError, match='release=None'):
    sadam_optax.sadam(1e-2, release=release)


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16, jnp.float32])
def test_release_keeps_the_dtypes_under_scan(dtype):
  loss, w = _quadratic_kink_problem()
  w = w.astype(dtype)
  opt = sadam_optax.sadamw(1e-2)
  f = lambda w: loss(w.astype(jnp.float32))

  def body(carry, _):
    w, state = carry
    value, g = jax.value_and_grad(f)(w)
    u, state = opt.update(g, state, w, value_fn=f, value=value)
    return (optax.apply_updates(w, u), state), None

  (w_end, state), _ = jax.lax.scan(body, (w, opt.init(w)), length=20)
  assert w_end.dtype == dtype
  assert optax.tree.get(state, 'held').dtype == dtype
  assert bool(jnp.all(jnp.isfinite(w_end.astype(jnp.float32))))


@pytest.mark.parametrize('release', [0.01, 1.0])  # 1.0: the two-reader form.
def test_store_waits_for_the_probed_steps(release):
  brake_and_release = sadam_optax.transform.brake_and_release
  rng = np.random.default_rng(2)
  u, held, grad = (jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(3))
  d = jnp.float32(0.4)
  args = dict(grad=grad, step_sign=-1.0)
  # A step between probes (store_now False): braked by the damping, the
  # store as it was; a probed one: what the store does on every step.
  step, kept = brake_and_release(u, held, d, release, store_now=jnp.bool_(False), **args)
  np.testing.assert_array_equal(step, d * u)
  np.testing.assert_array_equal(kept, held)
  every = brake_and_release(u, held, d, release, **args)
  probed = brake_and_release(u, held, d, release, store_now=jnp.bool_(True), **args)
  jax.tree.map(np.testing.assert_array_equal, probed, every)


@pytest.mark.parametrize('probe_every', [3, 'traced'])
def test_steps_between_probes_leave_the_store_and_brake_by_the_carried_damping(probe_every):
  loss, w = _quadratic_kink_problem()
  if probe_every == 'traced':
    opt = optax.inject_hyperparams(sadam_optax.sadam, static_args=('estimator',))(
      1e-1, probe_every=3
    )
  else:
    opt = sadam_optax.sadam(1e-1, probe_every=probe_every)
  adam = optax.adam(1e-1)
  update = jax.jit(lambda g, s, w, v: opt.update(g, s, w, value_fn=loss, value=v, grad=g))
  state, adam_state = opt.init(w), adam.init(w)
  for t in range(9):
    value, g = jax.value_and_grad(loss)(w)
    held = optax.tree.get(state, 'held')
    u, state = update(g, state, w, value)
    adam_u, adam_state = adam.update(g, adam_state, w)
    damping = optax.tree.get(state, 'damping')
    if t % 3:  # Steps 1, 2, 4, 5, 7, 8 carry rho.
      np.testing.assert_array_equal(optax.tree.get(state, 'held'), held)
      np.testing.assert_allclose(u, damping * adam_u, rtol=1e-5)  # A traced lr rounds apart.
    w = optax.apply_updates(w, u)
  assert float(jnp.max(jnp.abs(optax.tree.get(state, 'held')))) > 0  # Probed steps stored.


def _dampings_through_lost_readings(**kwargs):
  # 1000 + |w| from w = 0.1: a first step of 0.3 jumps the kink and is read;
  # the next ones, of 1e-6, change the loss by less than its rounding.
  loss = lambda w: 1e3 + jnp.sum(jnp.abs(w))
  lr = lambda count: jnp.where(count == 0, 0.3, 1e-6)
  opt = sadam_optax.sadam(lr, **kwargs)
  w = jnp.array([0.1])
  state = opt.init(w)
  dampings = []
  for _ in range(4):
    g = jax.grad(loss)(w)
    updates, state = opt.update(g, state, w, value_fn=loss, grad=g)
    w = optax.apply_updates(w, updates)
    dampings.append(float(optax.tree.get(state, 'damping')))
  assert int(optax.tree.get(state, 'unresolved_probes')) == 3
  return np.array(dampings)


def test_a_lost_reading_keeps_the_exp_brake_and_relaxes_the_compound_one():
  # 'exp': the damping of the last reading, faded (0.5 reads such steps as smooth).
  kept = _dampings_through_lost_readings(unresolved_fade=1.0)
  faded = _dampings_through_lost_readings()
  smooth = _dampings_through_lost_readings(unresolved_fade=0.0)
  assert kept[0] < 0.5
  np.testing.assert_allclose(kept, kept[0])
  assert kept[0] < faded[1] < faded[2] < faded[3] < 1.0
  np.testing.assert_array_equal(smooth[1:], 1.0)
  # 'compound' compounds every reading: carried over lost steps it would count
  # the last one again on each. They read as smooth whatever the fade: it relaxes.
  compound = [_dampings_through_lost_readings(rule='compound', unresolved_fade=f) for f in (0, 1)]
  np.testing.assert_array_equal(compound[0], compound[1])
  assert compound[0][0] < compound[0][1] < compound[0][2]
