"""Tests of the quantization-aware transformations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax
from sadam_optax import quant_aware

# A unit grid on the kernel; the bias is not quantized.
UNIT_GRID = lambda params: {'w': jnp.ones(()), 'b': None}


def _path(values):
  """Params whose kernel's first weight takes ``values`` in turn; the second
  moves steadily upwards (crosses boundaries, never back)."""
  return [{'w': jnp.array([[v, 0.2 + 0.7 * i]]), 'b': jnp.array([v])} for i, v in enumerate(values)]


def _run(tx, params_seq):
  state = tx.init(params_seq[0])
  update = jax.jit(tx.update)
  outs = []
  for p in params_seq[1:]:
    u, state = update(jax.tree.map(jnp.ones_like, p), state, p)
    outs.append(u)
  return outs, state


def test_counts_only_sign_alternating_code_changes():
  params = _path([0.4, 0.6, 0.4, 0.6, 0.4])  # codes 0 1 0 1 0 for w[0, 0].
  stats = quant_aware.init_oscillation_stats(params[0], UNIT_GRID)
  for p in params[1:]:
    stats = quant_aware.update_oscillation_stats(stats, p, quant_aware._scales(UNIT_GRID, p), 0.5)
  # Changes +1, -1, +1, -1: the last three oscillate.
  np.testing.assert_allclose(stats.osc_freq['w'][0, 0], 0.875)
  assert stats.osc_freq['w'][0, 1] == 0  # Monotone crossings.
  assert float(stats.osc_freq['b'][0]) == 0  # Unquantized.
  assert stats.direction['w'][0, 0] == -1


def test_brake_slows_only_oscillating_weights():
  tx = quant_aware.scale_by_oscillation(
    UNIT_GRID, brake=sadam_optax.damping_scale(10.0), momentum=0.5
  )
  outs, state = _run(tx, _path([0.4, 0.6, 0.4, 0.6, 0.4]))
  np.testing.assert_allclose(outs[-1]['w'][0, 0], np.exp(-10 * 0.875), rtol=1e-5)
  assert outs[-1]['w'][0, 1] == 1 and outs[-1]['b'][0] == 1
  assert optax.tree.get(state, 'osc_damping')['w'].shape == (1, 2)


def test_per_tensor_compound_brake_compounds_and_recovers():
  brake = sadam_optax.damping_scale(1.0, rule='compound', recovery=0.05)
  tx = quant_aware.scale_by_oscillation(UNIT_GRID, brake=brake, momentum=0.5, per_tensor=True)
  chatter = [0.4, 0.6] * 4
  outs, _ = _run(tx, _path(chatter + [0.4] * 70))
  d = [float(o['w'][0, 0]) for o in outs]
  assert outs[0]['w'].shape == (1, 2) and d[0] == d[0] and d[1] < 1
  assert d[6] < d[3] < d[1]  # Tightens while chattering persists ...
  assert d[-1] > 0.99 > 0.1 > d[10]  # ... relaxes when it stops.
  assert all(float(o['b'][0]) == 1.0 for o in outs)


def test_freezing_stops_oscillating_weights_at_a_bin_centre():
  tx = quant_aware.freeze_oscillating(UNIT_GRID, threshold=0.3, momentum=0.5)
  outs, state = _run(tx, _path([0.4, 0.6, 0.4, 0.6, 0.4, 0.6]))
  frozen = state.frozen['w']
  assert frozen[0, 0] == 1 and frozen[0, 1] == 0
  assert outs[-1]['w'][0, 0] == 0  # Frozen: no update.
  assert outs[-1]['w'][0, 1] == 1 and outs[-1]['b'][0] == 1
  # The step that froze it snapped it to a bin centre (an integer here).
  first = next(i for i, o in enumerate(outs) if o['w'][0, 0] != 1)
  landed = float(_path([0.4, 0.6] * 3)[first + 1]['w'][0, 0] + outs[first]['w'][0, 0])
  assert landed == round(landed)


def test_dampening_pulls_towards_bin_centres():
  tx = quant_aware.dampen_oscillations(UNIT_GRID, strength=0.5)
  params = {'w': jnp.array([[0.3, 1.8]]), 'b': jnp.array([0.3])}
  zeros = jax.tree.map(jnp.zeros_like, params)
  u, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(u['w'], [[0.15, -0.1]], atol=1e-6)
  assert u['b'][0] == 0


def test_absmax_grid_and_training_chain(mlp_problem):
  params, loss_fn, (xs, ys) = mlp_problem
  scale_fn = quant_aware.absmax_scale_fn(4)
  scales = scale_fn(params)
  assert scales['b0'] is None
  np.testing.assert_allclose(scales['w0'], jnp.max(jnp.abs(params['w0'])) / 7)
  with pytest.raises(ValueError):
    quant_aware.absmax_scale_fn(1)
  tx = optax.chain(
    optax.scale_by_adam(),
    quant_aware.dampen_oscillations(scale_fn),
    optax.scale_by_learning_rate(3e-2),
    quant_aware.scale_by_oscillation(scale_fn, per_tensor=True),
    quant_aware.freeze_oscillating(scale_fn),
  )
  state = tx.init(params)

  @jax.jit
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for x, y in zip(xs, ys):
    params, state, loss = step(params, state, x, y)
    losses.append(float(loss))
  assert np.mean(losses[-4:]) < losses[0]
  assert all(np.isfinite(losses))


@pytest.mark.parametrize(
  'make',
  [
    lambda fn: quant_aware.scale_by_oscillation(fn),
    lambda fn: quant_aware.scale_by_oscillation(fn, per_tensor=True),
    lambda fn: quant_aware.freeze_oscillating(fn),
    lambda fn: quant_aware.dampen_oscillations(fn),
  ],
  ids=['brake', 'brake_per_tensor', 'freeze', 'dampen'],
)
@pytest.mark.parametrize(
  'scale_fn', [UNIT_GRID, quant_aware.absmax_scale_fn(4)], ids=['fixed_tree', 'absmax']
)
def test_tree_map_params_and_state_shardings(make, scale_fn):
  """A fixed tree of scales used to break optax.tree.map_params."""
  parallel = pytest.importorskip('sadam_examples.parallel')
  tx = make(scale_fn)
  params = {'w': jnp.array([[0.4, 1.2]]), 'b': jnp.array([0.1])}
  state = tx.init(params)
  marked = optax.tree.map_params(
    tx, lambda _: 'param', state, transform_non_params=lambda _: 'other'
  )
  copies = [x for x in jax.tree.leaves(marked) if x == 'param']
  assert len(copies) % 2 == 0  # Whole copies of {'w', 'b'}, if any.
  # Everything but the step count is per weight (per tensor for the
  # per-tensor damping, which map_params cannot tell apart).
  assert len(copies) == len(jax.tree.leaves(state)) - (1 if 'count' in state._fields else 0)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = parallel.state_shardings(
    tx, params, jax.tree.map(lambda _: sharding, params), sharding
  )
  assert jax.tree.structure(shardings) == jax.tree.structure(state)
  placed = jax.jit(tx.init, out_shardings=shardings)(params)
  jax.tree.map(np.testing.assert_array_equal, placed, state)
