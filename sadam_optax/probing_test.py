"""Tests of every_k: probing every k-th step with two compiled train steps."""

import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax


def _problem():
  """A small ReLU network with an L1 loss: kinks, so rho and the brake act."""
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  params = {
    'w1': jax.random.normal(k1, (6, 16)) / 6**0.5,
    'w2': jax.random.normal(k2, (16, 2)) / 4.0,
  }
  x = jax.random.normal(k3, (32, 6))
  y = jax.random.normal(k4, (32, 2))

  def loss(p, x, y):
    return jnp.mean(jnp.abs(jax.nn.relu(x @ p['w1']) @ p['w2'] - y))

  return params, loss, (x, y)


def _train_step(opt, loss, calls=None):
  """A train step taking ``probe_now``; records value_fn calls when tracing."""

  def train_step(params, state, x, y, *, probe_now=None):
    value, grads = jax.value_and_grad(loss)(params, x, y)

    def value_fn(p):
      if calls is not None:
        calls.append(probe_now)
      return loss(p, x, y)

    extra = {} if probe_now is None else {'probe_now': probe_now}
    updates, state = opt.update(
      grads, state, params, value_fn=value_fn, value=value, grad=grads, **extra
    )
    return optax.apply_updates(params, updates), state

  return train_step


def _sadamw(probe, lr=0.2, rule='exp'):
  """sadamw(lr) with this probe (sadamw itself takes no probe_offset)."""
  return optax.chain(
    sadam_optax.singularity_aware(
      optax.scale_by_adam(),
      probe=probe,
      step_size=lr,
      brake=sadam_optax.damping_scale(2.0, rule=rule),
    ),
    optax.add_decayed_weights(1e-4),
    optax.scale_by_learning_rate(lr),
  )


def _num_dots(fn, *args):
  return str(jax.make_jaxpr(fn)(*args)).count('dot_general')


def test_carried_steps_trace_no_probe_and_probed_steps_do():
  params, loss, (x, y) = _problem()
  opt = sadam_optax.sadamw(0.05)
  calls = []
  step = sadam_optax.every_k(_train_step(opt, loss, calls), 4)
  state = opt.init(params)
  step(1, params, state, x, y)  # Traces the carried version.
  # The value_fn check (abstract evaluation, nothing at run time) only.
  assert calls == [False]
  calls.clear()
  step(0, params, state, x, y)  # Traces the probed version.
  assert calls == [True, True]  # The check and the forward pass at the end.
  # The carried step is AdamW's graph: its matrix products are the gradient's.
  adamw = optax.adamw(0.05)

  def adamw_step(params, state, x, y):
    grads = jax.grad(loss)(params, x, y)
    updates, state = adamw.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  adamw_dots = _num_dots(adamw_step, params, adamw.init(params), x, y)
  step_fn = _train_step(opt, loss)
  carried = _num_dots(functools.partial(step_fn, probe_now=False), params, state, x, y)
  probed = _num_dots(functools.partial(step_fn, probe_now=True), params, state, x, y)
  assert carried == adamw_dots
  assert probed == adamw_dots + 2  # One forward pass: two layers.


def test_two_compilations_over_many_steps():
  params, loss, (x, y) = _problem()
  opt = sadam_optax.sadamw(0.05)
  traces = []
  inner = _train_step(opt, loss)

  def train_step(*args, probe_now):
    traces.append(probe_now)
    return inner(*args, probe_now=probe_now)

  step = sadam_optax.every_k(train_step, 4, donate_argnums=(0, 1))
  params, state = params, opt.init(params)
  for i in range(20):
    params, state = step(i, params, state, x, y)
  assert sorted(traces) == [False, True]
  # pylint: disable=protected-access
  assert step.probed._cache_size() == 1
  assert step.carried._cache_size() == 1


def _compare_with_lax_cond(k, offset, *, exact, rule='exp'):
  """Runs probe_every=k (lax.cond) and every_k side by side; checks each step.

  Returns the rho of every step.
  """
  params, loss, (x, y) = _problem()
  opt_cond = _sadamw(sadam_optax.lgi_probe(probe_every=k, probe_offset=offset), rule=rule)
  opt_two = _sadamw(sadam_optax.lgi_probe(), rule=rule)
  cond_step = jax.jit(_train_step(opt_cond, loss))
  two_steps = sadam_optax.every_k(_train_step(opt_two, loss), k, offset=offset)
  p_cond, s_cond = params, opt_cond.init(params)
  p_two, s_two = params, opt_two.init(params)
  rhos = []
  for i in range(4 * k + 1):
    p_cond, s_cond = cond_step(p_cond, s_cond, x, y)
    p_two, s_two = two_steps(i, p_two, s_two, x, y)
    rhos.append(float(optax.tree.get(s_two, 'rho')))
    if exact:
      jax.tree.map(np.testing.assert_array_equal, (p_cond, s_cond), (p_two, s_two))
    else:
      # Equal but for FMA contraction (see the next test): within rounding
      # of one step, both going on from the same point.
      jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
        (p_cond, s_cond),
        (p_two, s_two),
      )
      p_two, s_two = p_cond, s_cond
  assert len(set(rhos)) > 2  # rho was measured, and changed.
  assert float(optax.tree.get(s_two, 'damping')) < 1.0  # The brake acted.
  return rhos


@pytest.mark.parametrize(
  'k,offset,rule', [(4, 0, 'exp'), (3, 2, 'exp'), (2, 1, 'exp'), (4, 0, 'compound')]
)
def test_equals_probe_every_with_lax_cond(k, offset, rule):
  # 'compound' compounds the damping once per probe, not on carried steps.
  _compare_with_lax_cond(k, offset, exact=False, rule=rule)


def test_equals_probe_every_with_lax_cond_bit_for_bit():
  # The two programs are the same arithmetic, fused differently: where the
  # CPU has FMA instructions, XLA contracts a multiply-add in one program and
  # not in the other (1 ulp in the parameters on some carried steps). Without
  # FMA (SSE4.2 only) they agree bit for bit, parameters included.
  code = (
    'from sadam_optax import probing_test as t; '
    '[t._compare_with_lax_cond(k, o, exact=True) '
    'for k, o in ((4, 0), (3, 2))]'
  )
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_cpu_max_isa=SSE4_2')
  root = pathlib.Path(__file__).resolve().parents[1]
  done = subprocess.run(
    [sys.executable, '-c', code],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]


def test_probes_at_follows_lgi_probe_rule():
  step = sadam_optax.every_k(lambda *, probe_now: probe_now, 10, offset=9)
  assert [i for i in range(31) if step.probes_at(i)] == [0, 9, 19, 29]
  assert bool(step(np.int32(19))) and not bool(step(jnp.asarray(20)))
  every = sadam_optax.every_k(lambda *, probe_now: probe_now, 1)
  assert every.probed is every.carried
  assert all(bool(every(i)) for i in range(5))


def test_refuses_bad_arguments():
  fn = lambda *, probe_now: probe_now
  with pytest.raises(ValueError, match='k=0'):
    sadam_optax.every_k(fn, 0)
  with pytest.raises(ValueError, match='offset=4'):
    sadam_optax.every_k(fn, 4, offset=4)
  step = sadam_optax.every_k(fn, 4)
  with pytest.raises(TypeError, match='Python int step count'):
    jax.jit(lambda i: step(i))(0)
