"""S-Adam trains networks quantized by Google's Qwix (sadam_examples.qwix_example)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax

pytest.importorskip('qwix')
# qwix 0.1.8 uses flax APIs that flax 0.12 deprecates (nnx.VariableState, .value).
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning:qwix')
from sadam_examples import qwix_example  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def dataset():
  """A small separable 10-class problem with MNIST-1D's shapes, (N, 40, 1)."""
  rng = np.random.default_rng(0)
  centers = rng.standard_normal((10, 40, 1)).astype(np.float32)
  y = rng.integers(0, 10, 600).astype(np.int32)
  x = centers[y] + 0.5 * rng.standard_normal((600, 40, 1)).astype(np.float32)
  return x[:500], y[:500], x[500:], y[500:]


@pytest.mark.parametrize('api', ['nnx', 'linen'])
@pytest.mark.parametrize('name', ['adamw', 'sadamw'])
def test_trains_a_qwix_model(dataset, api, name):
  # At lr 3e-2 the steps overshoot often enough that the default brakes on
  # 17-20 of the 40 steps; at 3e-3 it braked 0-2 of them, depending on the CPU.
  tx = qwix_example.make_optimizer(name, 3e-2)
  if api == 'nnx':
    model = qwix_example.quantized_nnx(0, jnp.asarray(dataset[0][:2]), channels=8)
    run = qwix_example.train_nnx(model, tx, dataset, steps=40, batch_size=50)
  else:
    model = qwix_example.quantized_linen(channels=8)
    run = qwix_example.train_linen(model, tx, dataset, steps=40, batch_size=50)
  losses = np.asarray(run['losses'])
  assert np.all(np.isfinite(losses))
  assert losses[-10:].mean() < 0.8 * losses[:5].mean()
  damping = np.asarray(run['damping'])
  assert np.all((damping > 0) & (damping <= 1))
  if name == 'sadamw':
    assert np.sum(damping < 1) >= 5  # The brake read the quantized loss.


def test_qwix_quantizes_the_library_model():
  # sadam_examples.models.CNN1D(bits=None) runs its contractions in the layers
  # themselves, so Qwix matches them: the parameters are the float model's,
  # the output is not.
  x = jax.random.normal(jax.random.key(0), (4, 40, 1))
  float_model = qwix_example.quantized_linen(bits=None, channels=8)
  variables = float_model.init(jax.random.key(1), x)
  quantized = qwix_example.quantized_linen(bits=2, channels=8)
  assert jax.tree.map(jnp.shape, quantized.init(jax.random.key(1), x)) == jax.tree.map(
    jnp.shape, variables
  )
  low, high = quantized.apply(variables, x), float_model.apply(variables, x)
  assert low.shape == high.shape
  assert not np.allclose(low, high, atol=1e-3)


def test_step_estimator_runs_through_qwix_by_reverse_mode(dataset):
  # Qwix's straight-through estimator is a custom_vjp, which JAX cannot
  # differentiate forward: 'step' then takes its slopes by reverse mode.
  model = qwix_example.quantized_linen(channels=8)
  x, y = map(jnp.asarray, dataset[:2])
  params = model.init(jax.random.key(0), x[:1])['params']
  loss = lambda p: qwix_example.xent(model.apply({'params': p}, x[:50]), y[:50])
  opt = sadam_optax.sadamw(1e-3, estimator='step')
  updates, state = jax.jit(lambda p: opt.update(jax.grad(loss)(p), opt.init(p), p, value_fn=loss))(
    params
  )
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
  assert np.isfinite(float(optax.tree.get(state, 'rho')))
