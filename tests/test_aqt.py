"""S-Adam trains a network quantized by Google's AQT (sadam_examples.aqt_example)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax

pytest.importorskip('aqt.jax.v2.flax.aqt_flax')
from sadam_examples import aqt_example  # pylint: disable=g-import-not-at-top,wrong-import-position
from sadam_examples import data  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_aqt_quantizes_the_matmuls():
  x = jax.random.normal(jax.random.key(0), (8, 40))
  quantized = aqt_example.AqtMLP(bits=2)
  params = quantized.init(jax.random.key(1), x)['params']
  float_out = aqt_example.AqtMLP(bits=None).apply({'params': params}, x)
  low = quantized.apply({'params': params}, x)
  assert low.shape == float_out.shape
  assert not np.allclose(low, float_out, atol=1e-3)  # 2-bit operands differ.


def test_sadamw_trains_an_aqt_network_above_chance():
  model = aqt_example.AqtMLP(bits=4, hidden=(64,))
  dataset = data.load_mnist1d()
  opt = sadam_optax.sadamw(3e-3, weight_decay=1e-2)
  acc = aqt_example.train(model, opt, dataset, steps=150, batch_size=100, seed=0)
  assert acc > 0.25  # Chance is 0.10.
  # The brake saw the quantized loss: rho is finite and damping in (0, 1].
  x, y = map(jnp.asarray, dataset[:2])
  params = model.init(jax.random.key(0), x[:1])['params']
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
    model.apply({'params': p}, x[:100]), y[:100]
  ).mean()
  update = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p, value_fn=loss))
  _, state = update(params, opt.init(params))
  damping = float(optax.tree.get(state, 'damping'))
  assert 0.0 < damping <= 1.0
