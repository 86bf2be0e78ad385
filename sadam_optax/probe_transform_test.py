"""Tests of lgi_probe: rho recorded, the step left as it is."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax


def test_lgi_probe_records_rho_and_leaves_the_step_unchanged():
  loss = lambda w: jnp.sum(jnp.abs(w))
  w = jnp.array([0.1, -0.1])
  watched = optax.chain(optax.adamw(0.3), sadam_optax.lgi_probe())
  plain = optax.adamw(0.3)
  g = jax.grad(loss)(w)
  u, state = watched.update(g, watched.init(w), w, value_fn=loss, grad=g)
  ref, _ = plain.update(g, plain.init(w), w)
  np.testing.assert_array_equal(u, ref)
  # The step of 0.3 jumps the kinks at 0: the loss rises over most of it.
  expected = sadam_optax.estimate_lgi(loss, w, ref, jax.random.key(0))
  assert float(optax.tree.get(state, 'rho')) == pytest.approx(float(expected), rel=1e-6)
  assert float(expected) > 0.5


@pytest.mark.parametrize('estimator', ['uphill', 'secant', 'step'])
def test_a_nan_step_is_counted_and_keeps_the_last_rho(estimator):
  # NaN gradients make Adam's step NaN: the reading is discarded and counted,
  # as the state's docs say, not read as a zero step (rho 0).
  loss = lambda w: jnp.sum(jnp.abs(w - 1.0))
  opt = sadam_optax.sadam(0.5, estimator=estimator)
  w = jnp.array([0.9, 1.2])
  state = opt.init(w)
  g = jax.grad(loss)(w)
  _, state = opt.update(g, state, w, value_fn=loss, grad=g)
  rho = float(optax.tree.get(state, 'rho'))
  assert rho > 0  # The step of 0.5 jumps both kinks.
  nan = jnp.full_like(g, jnp.nan)
  _, state = opt.update(nan, state, w, value_fn=loss, grad=nan)
  assert int(optax.tree.get(state, 'nonfinite_probes')) == 1
  assert float(optax.tree.get(state, 'rho')) == rho


@pytest.mark.parametrize('estimator', ['uphill', 'secant'])
def test_a_step_out_of_the_losss_domain_reads_uphill_all_the_way(estimator):
  # w - log(w): defined for w > 0, minimum at 1. From w = 1.5 a step of -2 ends where the loss
  # is NaN; the gradient and the loss at the start are finite. Carrying the last rho (0, a
  # descent so far) would take the step in full.
  loss = lambda w: jnp.sum(w - jnp.log(w))
  probe = sadam_optax.lgi_probe(estimator=estimator)
  w = jnp.array([1.5])
  g = jax.grad(loss)(w)
  _, state = probe.update(jnp.array([-2.0]), probe.init(w), w, value_fn=loss, grad=g, value=loss(w))
  assert float(state.rho) == 1.0 and int(state.nonfinite_probes) == 1
  # A loss already NaN at the start says nothing about the step: the last rho stays.
  _, state = probe.update(
    jnp.array([-0.1]),
    state._replace(rho=jnp.float32(0.25)),
    w,
    value_fn=loss,
    grad=g,
    value=jnp.float32(jnp.nan),
  )
  assert float(state.rho) == 0.25 and int(state.nonfinite_probes) == 2


def test_the_brake_keeps_adam_inside_the_losss_domain_at_a_learning_rate_that_leaves_it():
  loss = lambda p: jnp.sum(p['w'] - jnp.log(p['w']))

  def run(opt):
    p = {'w': jnp.array([3.0, 0.2])}

    def body(carry, _):
      p, state = carry
      value, g = jax.value_and_grad(loss)(p)
      u, state = opt.update(g, state, p, value_fn=loss, value=value)
      return (optax.apply_updates(p, u), state), None

    (p, _), _ = jax.lax.scan(body, (p, opt.init(p)), length=500)
    return float(loss(p))

  for lr in (2.0, 20.0):
    assert np.isnan(run(optax.with_extra_args_support(optax.adam(lr))))
    assert run(sadam_optax.sadam(lr)) == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize('fade', [0.0, 0.5, 0.99, 1.0])
def test_a_reading_lost_in_rounding_keeps_the_last_rho_faded(fade):
  # 1000 + |w|: a step of 0.3 across the kink is read; one of 1e-6 changes the
  # loss by less than the rounding of 1000 (6e-5), and so would the gradient
  # predict: nothing is read, the last rho stays, faded.
  loss = lambda w: 1e3 + jnp.sum(jnp.abs(w))
  probe = sadam_optax.lgi_probe(unresolved_fade=fade)
  w = jnp.array([0.1])
  g = jax.grad(loss)(w)
  _, state = probe.update(jnp.array([-0.3]), probe.init(w), w, value_fn=loss, grad=g)
  rho = float(state.rho)
  assert rho > 0.5 and int(state.unresolved_probes) == 0
  _, state = probe.update(jnp.array([-1e-6]), state, w, value_fn=loss, grad=g)
  assert float(state.rho) == pytest.approx(fade * rho, rel=1e-6)
  assert int(state.unresolved_probes) == 1
  assert int(state.nonfinite_probes) == 0


@pytest.mark.parametrize('fade', [-0.1, 1.5, float('nan'), 'half', None])
def test_an_unresolved_fade_outside_0_1_is_refused_by_name(fade):
  with pytest.raises(ValueError, match='unresolved_fade='):
    sadam_optax.lgi_probe(unresolved_fade=fade)
  with pytest.raises(ValueError, match='unresolved_fade='):
    sadam_optax.sadam(1e-3, unresolved_fade=fade)


def test_python_scalar_params_work_eagerly_as_in_optax():
  loss = lambda p: jnp.abs(p - 1.0)
  results = []
  for opt in (optax.adamw(0.1), sadam_optax.sadamw(0.1, lam=0.0), sadam_optax.sadamw(0.1)):
    p = 2.0
    v, g = jax.value_and_grad(loss)(p)
    u, _ = opt.update(g, opt.init(p), p, value_fn=loss, value=v)
    results.append(float(optax.apply_updates(p, u)))
  assert results[0] == results[1]
  assert 1.0 < results[2] < 2.0


@pytest.mark.parametrize('seed', [None, 1.5, '0', True])
def test_a_seed_that_is_not_an_integer_is_refused_by_name(seed):
  with pytest.raises(TypeError, match='seed'):
    sadam_optax.lgi_probe(seed=seed)
  with pytest.raises(TypeError, match='seed'):
    sadam_optax.sadamw(1e-3, seed=seed)


def test_value_from_a_has_aux_loss_is_refused_with_the_fix():
  loss = lambda w: (jnp.sum(w**2), {'norm': jnp.sum(w)})
  opt = sadam_optax.sadam(1e-2)
  w = jnp.ones(3)
  value, g = jax.value_and_grad(loss, has_aux=True)(w)
  with pytest.raises(ValueError, match='has_aux=True'):
    opt.update(g, opt.init(w), w, value_fn=lambda p: loss(p)[0], value=value)


def test_value_fn_gets_its_own_keywords_but_never_the_probes():
  # optax's convention: extra keywords that value_fn names are forwarded
  # (here the batch x); the ones update() takes for itself are not, so a loss
  # with a keyword called `value` keeps its default instead of being replaced.
  def loss(w, x=None, value=None, grad=None, probe_now=None):
    assert value is None and grad is None and probe_now is None
    return jnp.sum(jnp.abs(w - x))

  w, x = jnp.array([0.3, -0.2]), jnp.array([0.1, 0.1])
  opt = sadam_optax.sadam(0.5)
  g = jax.grad(loss)(w, x)
  value = loss(w, x)
  u, state = opt.update(g, opt.init(w), w, value_fn=loss, value=value, x=x)
  ref, ref_state = opt.update(
    g, opt.init(w), w, value_fn=lambda p: jnp.sum(jnp.abs(p - x)), value=value
  )
  np.testing.assert_array_equal(u, ref)
  assert float(optax.tree.get(state, 'rho')) == float(optax.tree.get(ref_state, 'rho')) > 0


def _loss_of_x(p, x=None):
  return jnp.sum(jnp.abs(x @ p['w'] + p['b'] - 1.0)) + 0.1 * jnp.sum(p['w'] ** 2)


@pytest.mark.parametrize(
  'forward_x, estimator', [(False, 'uphill'), (True, 'uphill'), (True, 'step'), (True, 'literal')]
)
def test_an_eager_update_compiles_nothing_after_warm_up(compiles, forward_x, estimator):
  # The probe's lax.reduce caches on its function's identity: a fresh lambda
  # per update recompiled it on every eager step (60 ms against AdamW's 3);
  # 'step' and 'literal' mapped their probes with lax.map, which compiled its
  # body anew on every eager step (0.6 s a step for 'literal' in 0.6.2).
  x = jnp.array([[1.0, 2.0, -1.0], [3.0, -1.0, 0.2]])
  loss = functools.partial(_loss_of_x, x=x)
  extra = {'value_fn': _loss_of_x, 'x': x} if forward_x else {'value_fn': loss}
  opt = sadam_optax.sadamw(1e-2, estimator=estimator)
  p = {'w': jnp.full((3, 4), 0.1), 'b': jnp.zeros(4)}
  state = opt.init(p)
  for i in range(5):
    if i == 2:
      compiles.clear()
    v, g = jax.value_and_grad(loss)(p)
    u, state = opt.update(g, state, p, value=v, **extra)
    p = optax.apply_updates(p, u)
  assert not compiles


def test_forwarded_python_keywords_reach_value_fn_as_they_came():
  def loss(w, x=None, train=True):
    assert isinstance(train, bool)
    return jnp.sum(jnp.abs(w - x)) * (2.0 if train else 1.0)

  w, x = jnp.array([0.3, -0.2]), jnp.array([0.1, 0.1])
  opt = sadam_optax.sadamw(0.5, probe_every=2)
  state = opt.init(w)
  for _ in range(3):
    g = jax.grad(loss)(w, x, train=False)
    _, state = opt.update(g, state, w, value_fn=loss, x=x, train=False)
  assert float(optax.tree.get(state, 'rho')) > 0


@pytest.mark.parametrize('value_fn', [jnp.array(3.0), 3.0, 'loss'])
def test_a_value_fn_that_is_not_a_function_is_refused_with_the_fix(value_fn):
  w = jnp.array([0.3, -0.2])
  for opt in (sadam_optax.sadamw(1e-2), sadam_optax.sadamw(1e-2, estimator='trajectory')):
    with pytest.raises(TypeError, match=r'value_fn= must be a function.*value=loss'):
      opt.update(jnp.ones(2), opt.init(w), w, value_fn=value_fn, value=jnp.array(3.0))
