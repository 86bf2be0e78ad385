"""Data-parallel S-Adam under shard_map and pmap, on 8 simulated host devices.

Run by ``tests/test_multidevice.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import sadam_optax
from sadam_examples.parallel import replica_divergence

NUM_DEVICES = 8
STEPS, GLOBAL_BATCH, DIM, HIDDEN = 50, 64, 6, 16

if jax.device_count() != NUM_DEVICES:
  pytest.skip(
    f'needs {NUM_DEVICES} devices: set XLA_FLAGS='
    f'--xla_force_host_platform_device_count={NUM_DEVICES}',
    allow_module_level=True,
  )

MESH = jax.make_mesh((NUM_DEVICES,), ('data',), axis_types=(jax.sharding.AxisType.Explicit,))


def init_params():
  k0, k1 = jax.random.split(jax.random.key(0))
  return {
    'w0': jax.random.normal(k0, (DIM, HIDDEN)) / np.sqrt(DIM),
    'b0': jnp.zeros(HIDDEN),
    'w1': jax.random.normal(k1, (HIDDEN, 1)) / np.sqrt(HIDDEN),
  }


def batches():
  """STEPS batches of the global batch: inputs and L1 regression targets."""
  kx, kn = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (STEPS, GLOBAL_BATCH, DIM))
  y = jnp.sin(x[..., :1]) + 0.1 * jax.random.normal(kn, x[..., :1].shape)
  return x, y


def loss_fn(params, x, y):
  """Mean absolute error of a ReLU net: kinks in the loss and the model."""
  h = jax.nn.relu(x @ params['w0'] + params['b0'])
  return jnp.mean(jnp.abs(h @ params['w1'] - y))


def train(opt, params, xs, ys, *, grad_axis=None, track_spread=False):
  """STEPS S-Adam steps; under a mapped axis, the gradient is pmean'd."""

  def body(carry, batch):
    p, s = carry
    loss_of = functools.partial(loss_fn, x=batch[0], y=batch[1])
    g = jax.grad(loss_of)(p)
    if grad_axis is not None:
      g = jax.lax.pmean(g, grad_axis)
    u, s = opt.update(g, s, p, value_fn=loss_of)
    p = optax.apply_updates(p, u)
    spread = replica_divergence((p, s), grad_axis) if track_spread else jnp.float32(0.0)
    return (p, s), (optax.tree.get(s, 'rho'), spread)

  (p, s), (rhos, spreads) = jax.lax.scan(body, (params, opt.init(params)), (xs, ys))
  return p, rhos, spreads


# The release's wait compares the sign of each gradient coordinate with the
# store's: where a coordinate of the pmean'd gradient is within rounding of 0,
# the reduction order can flip that decision (a tenth of the rate or all of
# it), a difference later steps carry. The plumbing is checked without the
# wait, to rounding; the default (with it) to a looser tolerance.
EXACT = dict(release_waits=False)


@functools.cache
def single_device(estimator, waits=False):
  """The reference: one device, the whole global batch."""
  opt = sadam_optax.sadam(1e-2, estimator=estimator, **({} if waits else EXACT))
  xs, ys = batches()
  return jax.jit(functools.partial(train, opt))(init_params(), xs, ys)


def per_replica(tree):
  """Stacks each replica's copy along a new leading axis."""
  return jax.tree.map(lambda a: a[None], tree)


def shard_mapped(estimator, *, axis_name, waits=False):
  """Every replica's params, rhos and divergence, batch split over 'data'."""
  opt = sadam_optax.sadam(
    1e-2, estimator=estimator, axis_name=axis_name, **({} if waits else EXACT)
  )

  def replica(params, xs, ys):
    return per_replica(train(opt, params, xs, ys, grad_axis='data', track_spread=True))

  fn = jax.shard_map(
    replica, mesh=MESH, in_specs=(P(), P(None, 'data'), P(None, 'data')), out_specs=P('data')
  )
  xs, ys = jax.device_put(batches(), jax.NamedSharding(MESH, P(None, 'data')))
  params = jax.device_put(init_params(), jax.NamedSharding(MESH, P()))
  return jax.jit(fn)(params, xs, ys)


def pmapped(estimator, *, axis_name, waits=False):
  opt = sadam_optax.sadam(
    1e-2, estimator=estimator, axis_name=axis_name, **({} if waits else EXACT)
  )
  xs, ys = batches()
  split = lambda a: jnp.moveaxis(  # pylint: disable=g-long-lambda
    a.reshape(STEPS, NUM_DEVICES, -1, a.shape[-1]), 1, 0
  )
  params = jax.tree.map(lambda a: jnp.broadcast_to(a, (NUM_DEVICES,) + a.shape), init_params())
  fn = jax.pmap(
    functools.partial(train, opt, grad_axis='data', track_spread=True), axis_name='data'
  )
  return fn(params, split(xs), split(ys))


def assert_replicas_identical(tree):
  for leaf in jax.tree.leaves(tree):
    leaf = np.asarray(leaf)
    for i in range(1, NUM_DEVICES):
      np.testing.assert_array_equal(leaf[i], leaf[0])


def assert_matches(replicated, reference, *, rtol=2e-4, atol=2e-5, rho_atol=2e-4):
  """Replica 0 equals the single-device run (reduction order aside)."""
  (p, rhos, _), (p_ref, rhos_ref, _) = replicated, reference
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a)[0], b, rtol=rtol, atol=atol), p, p_ref
  )
  np.testing.assert_allclose(np.asarray(rhos)[0], rhos_ref, atol=rho_atol)


@pytest.mark.parametrize(
  'estimator, axis_name',
  [
    ('secant', 'data'),
    ('step', 'data'),
    ('literal', 'data'),
    # Its rho comes from the gradients alone: once they are pmean'd, the
    # replicas agree without axis_name.
    ('trajectory', None),
  ],
)
def test_shard_map_replicas_agree(estimator, axis_name):
  # 'secant' also checks the gradient's scale: under shard_map JAX returns it
  # summed over the replicas, not averaged (lgi._summed_over).
  out = shard_mapped(estimator, axis_name=axis_name)
  assert_replicas_identical(out[:2])
  assert float(jnp.max(out[2])) == 0.0  # replica_divergence, every step.
  assert_matches(out, single_device(estimator))
  assert float(jnp.max(out[1])) > 0.0, 'rho never moved: a vacuous test'


@pytest.mark.parametrize('estimator', ['secant', 'step'])
def test_pmap_replicas_agree_with_axis_name(estimator):
  out = pmapped(estimator, axis_name='data')
  assert_replicas_identical(out[:2])
  assert float(jnp.max(out[2])) == 0.0
  assert_matches(out, single_device(estimator))


@pytest.mark.parametrize('estimator', ['uphill', 'step'])
def test_the_default_with_its_wait_agrees_within_rounding_flips(estimator):
  out = shard_mapped(estimator, axis_name='data', waits=True)
  assert_replicas_identical(out[:2])  # The replicas themselves stay bitwise equal.
  assert float(jnp.max(out[2])) == 0.0
  # 50 steps: parameters of about 0.2, flips of the wait near zero gradients.
  assert_matches(out, single_device(estimator, waits=True), rtol=1e-2, atol=1e-3, rho_atol=5e-2)


def test_pmap_without_axis_name_drifts_silently():
  """pmap cannot tell: each replica brakes by the rho of its own shard."""
  _, rhos, spreads = pmapped('step', axis_name=None)
  rhos = np.asarray(rhos)
  assert not np.array_equal(rhos[1], rhos[0])
  # replica_divergence is the check that makes the drift visible.
  assert float(jnp.max(spreads)) > 1e-4


@pytest.mark.parametrize('estimator', ['secant', 'step'])
def test_shard_map_without_axis_name_fails_loudly(estimator):
  """shard_map's replication check refuses parameters from a per-device rho."""
  with pytest.raises((TypeError, ValueError), match='axis_name'):
    shard_mapped(estimator, axis_name=None)
