"""S-Adam in real Flax models: nnx and linen, train-mode layers included.

Each model (Dropout, BatchNorm, LayerNorm, a small conv net, a tiny
transformer) trains 20 steps with ``sadamw`` under jit (``nnx.jit`` /
``jax.jit``) through the :mod:`sadam_optax.flax_utils` helpers: the loss
stays finite and goes down, rho varies across steps, and the train step
compiles once. Sizes are tiny: this runs on a CPU.
"""

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax
from sadam_optax import flax_utils

STEPS = 20
BATCH = 16
# The secant reading: its rho moves on descent steps too, so "rho varies"
# tests the probe on every model (the default 'uphill' reads 0 on a step
# that only descends, as most of these 20 are).
TX = lambda: sadam_optax.sadamw(3e-2, estimator='secant')


def xent(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def vector_data(key):
  x = jax.random.normal(key, (BATCH, 8))
  y = (x[:, 0] + x[:, 1] > 0).astype(jnp.int32) + (x[:, 2] > 0.5)
  return x, y


def image_data(key):
  x = jax.random.normal(key, (BATCH, 6, 6, 1))
  y = (x[:, :3].mean((1, 2, 3)) > x[:, 3:].mean((1, 2, 3))).astype(jnp.int32)
  return x, y


def token_data(key):
  x = jax.random.randint(key, (BATCH, 5), 0, 10)
  y = (x[:, 0] > x[:, -1]).astype(jnp.int32)  # Needs attention across.
  return x, y


# --------------------------------------------------------------------------
# nnx models.
# --------------------------------------------------------------------------


class NnxDropout(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 32, rngs=rngs)
    self.drop = nnx.Dropout(0.2, rngs=rngs)
    self.l2 = nnx.Linear(32, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(self.drop(nnx.relu(self.l1(x))))


class NnxBatchNorm(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 32, rngs=rngs)
    self.bn = nnx.BatchNorm(32, rngs=rngs)
    self.l2 = nnx.Linear(32, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.bn(self.l1(x))))


class NnxLayerNorm(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 32, rngs=rngs)
    self.ln = nnx.LayerNorm(32, rngs=rngs)
    self.l2 = nnx.Linear(32, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.ln(self.l1(x))))


class NnxConv(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.dense = nnx.Linear(3 * 3 * 4, 2, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), (2, 2))
    return self.dense(self.drop(x.reshape(x.shape[0], -1)))


class NnxTransformer(nnx.Module):
  def __init__(self, rngs, d=16):
    self.embed = nnx.Embed(10, d, rngs=rngs)
    self.pos = nnx.Param(jax.random.normal(rngs.params(), (5, d)) * 0.1)
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(2, d, dropout_rate=0.1, decode=False, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.mlp1 = nnx.Linear(d, 2 * d, rngs=rngs)
    self.mlp2 = nnx.Linear(2 * d, d, rngs=rngs)
    self.head = nnx.Linear(d, 2, rngs=rngs)

  def __call__(self, tokens):
    h = self.embed(tokens) + self.pos[...]
    h = h + self.attn(self.ln1(h))
    h = h + self.mlp2(nnx.gelu(self.mlp1(self.ln2(h))))
    return self.head(h.mean(1))


NNX_MODELS = {
  'dropout': (NnxDropout, vector_data),
  'batchnorm': (NnxBatchNorm, vector_data),
  'layernorm': (NnxLayerNorm, vector_data),
  'conv': (NnxConv, image_data),
  'transformer': (NnxTransformer, token_data),
}


@pytest.mark.parametrize('name', NNX_MODELS)
def test_nnx_model_trains(name):
  model_cls, data = NNX_MODELS[name]
  model = model_cls(nnx.Rngs(0, dropout=1))
  model.train()
  optimizer = nnx.Optimizer(model, TX(), wrt=nnx.Param)
  loss_fn = lambda m, x, y: xent(m(x), y)
  traces = []

  @nnx.jit
  def step(model, optimizer, x, y):
    traces.append(1)
    loss, grads, value_fn = flax_utils.nnx_value_and_grad(loss_fn, model, x, y, wrt=optimizer.wrt)
    optimizer.update(model, grads, value_fn=value_fn, value=loss)
    return loss, optax.tree.get(optimizer.opt_state, 'rho')

  x, y = data(jax.random.key(2))  # One batch, revisited: loss must fall.
  losses, rhos = zip(*[tuple(map(float, step(model, optimizer, x, y))) for _ in range(STEPS)])
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(rhos))
  assert np.mean(losses[-3:]) < 0.8 * losses[0]
  assert np.std(rhos[1:]) > 0
  assert len(traces) == 1
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


# --------------------------------------------------------------------------
# linen models.
# --------------------------------------------------------------------------


class LinenDropout(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.relu(nn.Dense(32)(x))
    return nn.Dense(3)(nn.Dropout(0.2, deterministic=not train)(x))


class LinenBatchNorm(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.BatchNorm(use_running_average=not train)(nn.Dense(32)(x))
    return nn.Dense(3)(nn.relu(x))


class LinenLayerNorm(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    del train
    return nn.Dense(3)(nn.relu(nn.LayerNorm()(nn.Dense(32)(x))))


class LinenConv(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.max_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
    return nn.Dense(2)(nn.Dropout(0.1, deterministic=not train)(x))


class LinenTransformer(nn.Module):
  d: int = 16

  @nn.compact
  def __call__(self, tokens, train):
    h = nn.Embed(10, self.d)(tokens)
    h = h + self.param('pos', nn.initializers.normal(0.1), (5, self.d))
    h = h + nn.MultiHeadDotProductAttention(2, dropout_rate=0.1, deterministic=not train)(
      nn.LayerNorm()(h)
    )
    m = nn.Dense(self.d)(nn.gelu(nn.Dense(2 * self.d)(nn.LayerNorm()(h))))
    return nn.Dense(2)((h + m).mean(1))


LINEN_MODELS = {
  'dropout': (LinenDropout, vector_data),
  'batchnorm': (LinenBatchNorm, vector_data),
  'layernorm': (LinenLayerNorm, vector_data),
  'conv': (LinenConv, image_data),
  'transformer': (LinenTransformer, token_data),
}


class State(flax_utils.TrainState):
  batch_stats: dict


@pytest.mark.parametrize('name', LINEN_MODELS)
def test_linen_model_trains(name):
  model_cls, data = LINEN_MODELS[name]
  model = model_cls()
  x, y = data(jax.random.key(2))
  variables = model.init(jax.random.key(0), x, train=False)
  state = State.create(
    apply_fn=model.apply,
    params=variables['params'],
    tx=TX(),
    batch_stats=variables.get('batch_stats', {}),
  )
  traces = []

  @jax.jit
  def step(state, x, y, key):
    traces.append(1)
    collections = {'batch_stats': state.batch_stats} if state.batch_stats else {}
    loss, grads, value_fn, new = flax_utils.linen_value_and_grad(
      state.apply_fn,
      lambda logits: xent(logits, y),
      state.params,
      x,
      variables=collections,
      rngs={'dropout': key},
      train=True,
    )
    state = state.apply_gradients(grads=grads, value_fn=value_fn, value=loss, **new)
    return state, loss, optax.tree.get(state.opt_state, 'rho')

  losses, rhos = [], []
  for i in range(STEPS):
    state, loss, rho = step(state, x, y, jax.random.key(100 + i))
    losses.append(float(loss))
    rhos.append(float(rho))
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(rhos))
  assert np.mean(losses[-3:]) < 0.8 * losses[0]
  assert np.std(rhos[1:]) > 0
  assert len(traces) == 1
  assert int(state.step) == STEPS
  if 'batch_stats' in variables:  # The gradient pass moved the averages.
    assert not all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(variables['batch_stats']))
    )
