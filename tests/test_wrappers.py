"""Which optax wrappers S-Adam works in, and how the others fail.

Works: ``optax.inject_hyperparams`` (learning_rate, lam; ``num_probes`` as a
static arg), ``optax.MultiSteps`` (probes paid on every micro-step),
``optax.apply_if_finite``, ``optax.chain`` with clipping, and
``optax.lookahead`` / ``optax.contrib.sam(opaque_mode=True)`` with
``estimator='trajectory'`` (no loss needed).

Cannot work: ``optax.masked`` and ``optax.partition`` (pruned params),
``optax.flatten`` (a flat vector), ``MultiSteps(...).gradient_transformation()``
inside a chain, ``optax.lookahead`` and ``optax.contrib.sam`` with a loss
(neither forwards ``value_fn``). Transparent ``optax.contrib.sam`` also breaks
on any state holding a ``jax.random.key`` (``optax.add_noise`` included).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax

X = jnp.array([[1.0, 2.0, -1.0, 0.5], [3.0, -1.0, 0.2, 0.0], [0.5, 0.5, 1.0, -2.0]])


def init_params():
  return {
    'w': jnp.array([[0.5, -0.3, 0.2], [0.2, 0.1, -0.4], [0.0, 0.3, 0.1], [-0.2, 0.4, 0.3]]),
    'b': jnp.array([0.1, -0.2, 0.05]),
  }


def loss(params):
  return jnp.mean(jnp.abs(X @ params['w'] + params['b'] - 1.0))


def run(opt, steps=6, *, grads_fn=jax.grad(loss), **update_kwargs):
  """Jitted train steps; returns the final params and state."""

  @jax.jit
  def step(params, state):
    updates, state = opt.update(grads_fn(params), state, params, **update_kwargs)
    return optax.apply_updates(params, updates), state

  params = init_params()
  state = opt.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


@functools.cache
def reference():
  return run(sadam_optax.sadam(1e-2), value_fn=loss)


def assert_trees_close(a, b, **tols):
  jax.tree.map(functools.partial(np.testing.assert_allclose, **tols), a, b)


# --------------------------------------------------------------------------
# Wrappers that work.
# --------------------------------------------------------------------------


def test_inject_hyperparams_lam_changed_mid_run():
  """lam lives in the state: setting it to 0 turns the brake off from then.

  (That inject_hyperparams(sadam) equals sadam, and num_probes must be a
  static arg, is tested in sadam_optax/alias_test.py.)
  """
  # 'secant' brakes these descent steps too ('uphill' reads 0 on them).
  opt = optax.inject_hyperparams(sadam_optax.sadam, static_args=('estimator',))(
    learning_rate=1e-2, lam=2.0, estimator='secant'
  )
  params = init_params()
  state = opt.init(params)
  step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p, value_fn=loss))
  dampings = []
  for i in range(6):
    if i == 3:  # Same dtype as before: no recompilation.
      state.hyperparams['lam'] = jnp.zeros_like(state.hyperparams['lam'])
      state.hyperparams['learning_rate'] = jnp.full_like(state.hyperparams['learning_rate'], 5e-3)
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    dampings.append(float(optax.tree.get(state, 'damping')))
  assert min(dampings[:3]) < 1.0, 'the brake never acted: a vacuous test'
  assert dampings[3:] == [1.0, 1.0, 1.0]
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_multisteps_equals_one_step_per_k_micro_steps():
  """Same gradient on every micro-step: one S-Adam step per k of them.

  The inner update (and its probes) runs on every micro-step and is kept only
  on the k-th: the probes cost k times, and rho sees the last micro-batch.
  """
  k = 3
  params, state = run(optax.MultiSteps(sadam_optax.sadam(1e-2), k), steps=6 * k, value_fn=loss)
  assert_trees_close(params, reference()[0], rtol=1e-5, atol=1e-6)
  assert int(optax.tree.get(state, 'gradient_step')) == 6


def test_apply_if_finite_forwards_value_fn():
  """apply_if_finite passes **extra_args on, value_fn included."""
  params, state = run(optax.apply_if_finite(sadam_optax.sadam(1e-2), 3), value_fn=loss)
  assert_trees_close(params, reference()[0], rtol=1e-6, atol=1e-7)
  assert int(state.total_notfinite) == 0


def test_chain_with_clipping_equals_clipped_gradients():
  clip = optax.clip_by_global_norm(0.1)
  params, _ = run(optax.chain(clip, sadam_optax.sadam(1e-2)), value_fn=loss)
  clipped = lambda p: clip.update(jax.grad(loss)(p), clip.init(p))[0]
  expected, _ = run(sadam_optax.sadam(1e-2), grads_fn=clipped, value_fn=loss)
  assert_trees_close(params, expected, rtol=1e-6, atol=1e-7)


def test_lookahead_with_trajectory_estimator():
  opt = optax.lookahead(
    sadam_optax.sadam(1e-2, estimator='trajectory'), sync_period=2, slow_step_size=0.5
  )
  params = optax.LookaheadParams.init_synced(init_params())
  state = opt.init(params)
  step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p.fast), s, p))
  for _ in range(4):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
  assert float(loss(params.slow)) < float(loss(init_params()))


def test_opaque_sam_with_trajectory_estimator():
  opt = optax.contrib.sam(
    sadam_optax.sadam(1e-2, estimator='trajectory'), optax.sgd(1e-2), opaque_mode=True
  )
  grad_fn = lambda p, _: jax.grad(loss)(p)
  step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p, grad_fn=grad_fn))
  params = init_params()
  state = opt.init(params)
  for _ in range(4):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < float(loss(init_params()))


# --------------------------------------------------------------------------
# Wrappers that cannot work, and what they say.
# --------------------------------------------------------------------------


def update_once(opt, **update_kwargs):
  """One update, traced and compiled (eager dispatch would cost more)."""
  params = init_params()
  return jax.jit(functools.partial(opt.update, **update_kwargs))(
    jax.grad(loss)(params), opt.init(params), params
  )


@pytest.mark.parametrize(
  'wrap',
  [
    lambda o: optax.masked(o, {'w': True, 'b': False}),
    lambda o: optax.partition({'s': o, 'a': optax.adam(1e-2)}, {'w': 's', 'b': 'a'}),
  ],
  ids=['masked', 'partition'],
)
def test_masking_wrappers_say_to_move_sadam_outside(wrap):
  # sadamw(mask=...) is named only to say that it masks the weight decay alone.
  with pytest.raises(ValueError, match='outside.*masks only the weight decay'):
    update_once(wrap(sadam_optax.sadam(1e-2)), value_fn=loss)


def test_flatten_fails():
  """optax.flatten hands S-Adam a flat vector that value_fn cannot take."""
  with pytest.raises((TypeError, ValueError)):
    update_once(optax.flatten(sadam_optax.sadam(1e-2)), value_fn=loss)


def test_flatten_fails_with_advice():
  with pytest.raises(ValueError, match='optax.flatten'):
    update_once(optax.flatten(sadam_optax.sadam(1e-2)), value_fn=loss)


def test_multisteps_gradient_transformation_in_chain_drops_value_fn():
  inner = optax.MultiSteps(sadam_optax.sadam(1e-2), 2)
  chained = optax.chain(optax.clip(1.0), inner.gradient_transformation())
  with pytest.raises(ValueError, match='MultiSteps'):
    update_once(chained, value_fn=loss)


@pytest.mark.parametrize(
  'wrap',
  [
    lambda o: optax.lookahead(o, sync_period=2, slow_step_size=0.5),
    lambda o: optax.contrib.sam(o, optax.sgd(1e-2)),
  ],
  ids=['lookahead', 'sam'],
)
def test_wrappers_without_extra_args(wrap):
  """They reject value_fn (optax's TypeError); without it, S-Adam advises."""
  opt = wrap(sadam_optax.sadam(1e-2))
  params = init_params()
  if 'lookahead' in repr(opt.update):
    params = optax.LookaheadParams.init_synced(params)
  grads = jax.grad(loss)(init_params())
  state = opt.init(params)
  with pytest.raises(TypeError, match="unexpected keyword argument 'value_fn'"):
    opt.update(grads, state, params, value_fn=loss)
  with pytest.raises(ValueError, match="lookahead.*sam.*'trajectory'"):
    opt.update(grads, state, params)


def test_transparent_sam_runs_on_a_raw_key_in_state():
  """optax.contrib.sam mixes states arithmetically, which a typed key refuses.

  S-Adam keeps raw uint32 key data (as optax's own states serialise), so
  transparent SAM runs; optax.add_noise's typed key still fails there (an
  optax issue).
  """
  updates, _ = update_once(
    optax.contrib.sam(sadam_optax.sadam(1e-2, estimator='trajectory'), optax.sgd(1e-2))
  )
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
  with pytest.raises(TypeError, match='key'):
    update_once(
      optax.contrib.sam(optax.chain(optax.add_noise(0.1, 0.5, 0), optax.sgd(1e-2)), optax.sgd(1e-2))
    )
