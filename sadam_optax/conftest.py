"""Shared fixtures of the core tests."""

import jax
import jax.numpy as jnp
import pytest


def mlp_init(key, sizes=(8, 32, 32, 3)):
  """Parameters of a small ReLU MLP as a dict of arrays."""
  params = {}
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, sub = jax.random.split(key)
    params[f'w{i}'] = jax.random.normal(sub, (m, n)) / jnp.sqrt(m)
    params[f'b{i}'] = jnp.zeros((n,))
  return params


def mlp_loss(params, x, y):
  h = x
  n = len(params) // 2
  for i in range(n):
    h = h @ params[f'w{i}'] + params[f'b{i}']
    if i < n - 1:
      h = jax.nn.relu(h)
  logp = jax.nn.log_softmax(h)
  return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


@pytest.fixture
def mlp_problem():
  """(params, loss_fn(params, x, y), batches): a small ReLU classifier."""
  key = jax.random.key(0)
  params = mlp_init(key)
  xs = jax.random.normal(jax.random.key(1), (30, 16, 8))
  ys = (xs[..., 0] + xs[..., 1] > 0).astype(jnp.int32) + (xs[..., 2] > 1)
  return params, mlp_loss, (xs, ys)


@pytest.fixture
def compiles():
  """A list that every XLA compilation appends to during the test."""
  events = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/backend_compile_duration':
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  yield events
  jax.monitoring.unregister_event_duration_listener(listener)
