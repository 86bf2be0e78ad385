"""S-Adam in Flax training loops: nnx.Optimizer and the linen TrainState helper."""

import functools

import flax
import flax.linen as nn
import flax.training.train_state
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn import datasets

import sadam_optax
from sadam_optax import flax_utils


@pytest.fixture(scope='module')
def digits():
  """Real 8x8 digits (bundled with scikit-learn), as NHWC float images."""
  x, y = datasets.load_digits(return_X_y=True)
  x = (x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
  return jnp.asarray(x[:1024].reshape(16, 64, 8, 8, 1)), jnp.asarray(
      y[:1024].reshape(16, 64).astype(np.int32))


def xent(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


class LinenCNN(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


class NnxCNN(nnx.Module):

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.dense = nnx.Linear(4 * 4 * 8, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(nnx.relu(self.conv(x)), (2, 2), (2, 2))
    return self.dense(x.reshape(x.shape[0], -1))


def test_linen_train_state_helper_trains(digits):
  xs, ys = digits
  model = LinenCNN()
  state = flax_utils.TrainState.create(
      apply_fn=model.apply, params=model.init(jax.random.key(0), xs[0]),
      tx=sadam_optax.sadamw(1e-2))

  @jax.jit
  def step(state, x, y):
    loss_of = lambda p: xent(state.apply_fn(p, x), y)
    loss, grads = jax.value_and_grad(loss_of)(state.params)
    return state.apply_gradients(grads=grads, value_fn=loss_of), loss

  losses = []
  for _ in range(3):
    for x, y in zip(xs, ys):
      state, loss = step(state, x, y)
      losses.append(float(loss))
  assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:4])
  assert int(state.step) == 48
  assert 0 < float(optax.tree.get(state.opt_state, 'damping')) <= 1


def test_linen_functional_helper_matches_subclass(digits):
  xs, ys = digits
  model = LinenCNN()
  params = model.init(jax.random.key(0), xs[0])
  loss_of = lambda p: xent(model.apply(p, xs[0]), ys[0])
  grads = jax.grad(loss_of)(params)
  tx = sadam_optax.sadamw(3e-3)
  plain = flax.training.train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=tx)
  ours = flax_utils.TrainState.create(apply_fn=model.apply, params=params,
                                      tx=tx)
  a = flax_utils.apply_gradients(plain, grads=grads, value_fn=loss_of)
  b = ours.apply_gradients(grads=grads, value_fn=loss_of)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_plain_train_state_drops_value_fn_with_a_clear_error(digits):
  xs, ys = digits
  model = LinenCNN()
  params = model.init(jax.random.key(0), xs[0])
  state = flax.training.train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=sadam_optax.sadamw(1e-2))
  with pytest.raises(ValueError, match='value_fn'):
    state.apply_gradients(grads=params)


def test_nnx_optimizer_trains(digits):
  xs, ys = digits
  model = NnxCNN(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, sadam_optax.sadam(1e-2), wrt=nnx.Param)
  loss_fn = lambda m, x, y: xent(m(x), y)

  @nnx.jit
  def step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads,
                     value_fn=flax_utils.nnx_value_fn(model, loss_fn, x, y))
    return loss

  losses = [float(step(model, optimizer, x, y))
            for _ in range(3) for x, y in zip(xs, ys)]
  assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:4])
  assert 0 < float(optax.tree.get(optimizer.opt_state, 'damping')) <= 1
