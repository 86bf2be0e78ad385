"""Tests of singularity_aware, lgi_probe and damping_scale."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax


def test_brake_cannot_be_chained_before_adam():
  with pytest.raises(TypeError, match='singularity_aware'):
    optax.chain(sadam_optax.damping_scale(2.0), optax.scale_by_adam())
  with pytest.raises(TypeError, match='singularity_aware'):
    optax.chain(optax.scale_by_adam(), sadam_optax.damping_scale(2.0))


def test_brake_acts_after_adam_not_on_the_gradient():
  # Adam's direction is invariant to rescaling the gradient; the brake must
  # shrink the step itself, by exactly the damping it reports.
  loss = lambda w: jnp.sum(jnp.abs(w))
  w = jnp.array([0.05, -0.05, 0.05])
  adam = optax.adam(0.1)
  braked = sadam_optax.singularity_aware(
      optax.adam(0.1), brake=sadam_optax.damping_scale(5.0))
  g = jax.grad(loss)(w)
  ref, _ = adam.update(g, adam.init(w), w)
  ours, state = braked.update(g, braked.init(w), w, value_fn=loss)
  damping = float(optax.tree.get(state, 'damping'))
  assert damping < 0.5  # The step of 0.1 jumps across the kink at 0.
  np.testing.assert_allclose(ours, damping * ref, rtol=1e-6)


@pytest.mark.parametrize('inner', [
    optax.sgd(0.05, momentum=0.9), optax.lion(0.01), optax.adafactor(0.05),
    optax.adabelief(0.05)], ids=['sgd', 'lion', 'adafactor', 'adabelief'])
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
  for brake in (sadam_optax.damping_scale(optax.linear_schedule(0.0, 4.0,
                                                                10)),
                sadam_optax.damping_scale(1.0, rule='compound')):
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
  brake = sadam_optax.damping_scale(2.0, rule='compound', recovery=0.5,
                                    min_damping=1e-4)
  factor = sadam_optax.transform.brake_factor
  d = jnp.float32(1.0)
  for _ in range(5):
    d = factor(brake, jnp.float32(0.9), d, jnp.int32(0))
  assert float(d) < np.exp(-2.0) ** 3  # Below any single exp(-lam) step.
  for _ in range(30):
    d = factor(brake, jnp.float32(0.0), d, jnp.int32(0))
  assert float(d) == 1.0


def test_bad_probe_and_brake_configuration():
  with pytest.raises(TypeError, match='lgi_probe'):
    sadam_optax.singularity_aware(optax.sgd(0.1), probe={'num_probes': 4})
  with pytest.raises(ValueError, match='chunk_size'):
    sadam_optax.lgi_probe(chunk_size=0)
  with pytest.raises(ValueError, match='min_damping'):
    sadam_optax.damping_scale(rule='compound', min_damping=0.0)


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
  opt = sadam_optax.sadam(0.1)  # The default estimator: 'secant'.
  w = jnp.array([0.95, 3.0])
  value, g = jax.value_and_grad(loss)(w)
  results = []
  for kwargs in ({}, {'value': value}):
    counted, calls = _count_calls(loss)
    # Traced once; eval_shape (the value_fn check) also traces it once.
    jax.make_jaxpr(lambda w, g: opt.update(g, opt.init(w), w,
                                           value_fn=counted, **kwargs))(w, g)
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
  opt = sadam_optax.singularity_aware(optax.adam(0.1))
  _, ref = opt.update(g, opt.init(w), w, value_fn=loss)
  _, off = opt.update(g / 4, opt.init(w), w, value_fn=loss)
  _, fixed = opt.update(g / 4, opt.init(w), w, value_fn=loss, grad=g)
  rho = lambda s: float(optax.tree.get(s, 'rho'))
  assert rho(off) != pytest.approx(rho(ref))
  # Same direction, the true gradient for the start slope: rho as unclipped.
  assert rho(fixed) == pytest.approx(rho(ref), rel=1e-5)
