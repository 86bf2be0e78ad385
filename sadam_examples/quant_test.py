"""Tests for sadam_examples.quant."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from sadam_examples import quant

BITS = (1, 2, 4, 8)


def _x(shape=(16, 8), seed=0):
  # numpy, not jax.random: compiling threefry for every shape is slow on CPU.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _num_levels(x, axis=None):
  """Largest number of distinct values per channel (or in the whole tensor)."""
  x = np.asarray(x)
  if axis is None:
    return len(np.unique(x))
  return max(len(np.unique(c)) for c in np.moveaxis(x, axis, 0))


def test_quant_range():
  assert quant.quant_range(4) == (-7, 7)
  assert quant.quant_range(4, narrow=False) == (-8, 7)
  assert quant.quant_range(4, signed=False) == (0, 15)
  assert quant.quant_range(2) == (-1, 1)
  with pytest.raises(ValueError):
    quant.quant_range(0)


@pytest.mark.parametrize('bits', BITS)
@pytest.mark.parametrize('axis', [None, -1])
def test_fake_quant_gradient_is_identity(bits, axis):
  x, cotangent = _x(), _x(seed=1)
  _, vjp = jax.vjp(lambda x: quant.fake_quant(x, bits, axis=axis), x)
  np.testing.assert_array_equal(vjp(cotangent)[0], cotangent)


@pytest.mark.parametrize('bits', BITS)
@pytest.mark.parametrize('axis', [None, -1])
def test_fake_quant_levels(bits, axis):
  x = _x((64, 4))
  q = quant.fake_quant(x, bits, axis=axis)
  assert q.shape == x.shape and q.dtype == x.dtype
  assert _num_levels(q, axis) <= 2**bits
  if bits > 1:  # The grid is codes * scale with integer codes.
    codes, scale = quant.quantize(x, bits, axis=axis)
    np.testing.assert_allclose(q, codes * scale, rtol=1e-6)
    np.testing.assert_array_equal(codes, jnp.round(codes))
    # absmax: the largest magnitude lands exactly on the top code.
    np.testing.assert_array_equal(
      jnp.max(jnp.abs(codes), axis=0 if axis is not None else None), 2 ** (bits - 1) - 1
    )


@pytest.mark.parametrize('bits', [1, 2, 4])
def test_unsigned_grid_uses_all_levels(bits):
  x = jnp.linspace(0.0, 3.0, 1000)
  q = quant.fake_quant(x, bits, signed=False)
  assert _num_levels(q) == 2**bits
  assert float(q.min()) == 0.0 and np.isclose(float(q.max()), 3.0)


def test_per_channel_scales_differ():
  x = _x((32, 4)) * jnp.array([0.1, 1.0, 10.0, 100.0])
  scale = quant.absmax_scale(x, 4, axis=-1)
  assert scale.shape == (1, 4)
  np.testing.assert_allclose(scale[0], jnp.max(jnp.abs(x), axis=0) / 7, rtol=1e-6)
  assert len(np.unique(np.asarray(scale))) == 4
  # Per tensor, the small channel collapses to zero; per channel it keeps levels.
  assert _num_levels(quant.fake_quant(x, 4)[:, 0]) == 1
  assert _num_levels(quant.fake_quant(x, 4, axis=-1)[:, 0]) > 4


def test_binarize():
  x = _x()
  q = quant.fake_quant(x, 1)
  mean_abs = jnp.mean(jnp.abs(x))
  np.testing.assert_allclose(jnp.abs(q), mean_abs, rtol=1e-6)
  np.testing.assert_array_equal(jnp.sign(q), jnp.where(x >= 0, 1.0, -1.0))
  per_channel = quant.binarize(x, axis=-1)
  np.testing.assert_allclose(jnp.abs(per_channel)[0], jnp.mean(jnp.abs(x), axis=0), rtol=1e-6)


def test_none_bits_is_identity():
  x = _x()
  assert quant.fake_quant(x, None) is x


def test_scale_grad():
  g = jax.grad(lambda x: quant.scale_grad(x, 0.25) * 3.0)(2.0)
  assert quant.scale_grad(2.0, 0.25) == 2.0 and g == 0.75


@pytest.mark.parametrize('signed', [True, False])
def test_lsq(signed):
  bits = 4
  x = _x((8, 8)) if signed else jnp.abs(_x((8, 8)))
  step = quant.lsq_init_step(x, bits, signed=signed)
  qmin, qmax = quant.quant_range(bits, signed=signed, narrow=False)
  np.testing.assert_allclose(step, 2 * jnp.mean(jnp.abs(x)) / np.sqrt(qmax), rtol=1e-6)
  q = quant.lsq_fake_quant(x, step, bits, signed=signed)
  codes = np.asarray(q / step)
  np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
  assert codes.min() >= qmin - 1e-4 and codes.max() <= qmax + 1e-4
  assert _num_levels(q) <= 2**bits

  step = step / 3  # Make part of x fall outside the clip range.
  loss = lambda x, s, **kw: jnp.sum(quant.lsq_fake_quant(x, s, bits, signed=signed, **kw))
  gx, gs = jax.grad(loss, argnums=(0, 1))(x, step)
  inside = (x / step >= qmin) & (x / step <= qmax)
  assert 0 < int(inside.sum()) < x.size
  np.testing.assert_allclose(gx, inside.astype(x.dtype), rtol=1e-6)  # Clipped STE.
  assert float(jnp.abs(gs).sum()) > 0
  # The step's gradient is scaled by 1 / sqrt(n * qmax).
  _, gs_unscaled = jax.grad(loss, argnums=(0, 1))(x, step, grad_scale=1.0)
  np.testing.assert_allclose(gs, gs_unscaled / np.sqrt(x.size * qmax), rtol=1e-5)


def test_lsq_per_channel_step():
  w = _x((8, 3)) * jnp.array([0.1, 1.0, 10.0])
  step = quant.lsq_init_step(w, 4, axis=-1)
  assert step.shape == (1, 3) and len(np.unique(np.asarray(step))) == 3
  g = jax.grad(lambda s: jnp.sum(quant.lsq_fake_quant(w, s, 4) ** 2))(step)
  assert g.shape == (1, 3) and bool(jnp.all(g != 0))


def _kernel_grid_check(module, x, bits, per_channel):
  """The kernel used in the forward pass is the fake-quantized kernel."""
  variables = module.init(jax.random.key(0), x)
  y, state = jax.jit(lambda v: module.apply(v, x, capture_intermediates=True))(variables)
  kernel = variables['params']['kernel']
  used = state['intermediates']['quant']['weight_quant']['__call__'][0]
  axis = -1 if per_channel else None
  np.testing.assert_allclose(used, quant.fake_quant(kernel, bits, axis=axis), rtol=1e-6)
  assert _num_levels(used, axis) <= 2**bits
  return variables, y


@pytest.mark.parametrize('per_channel', [False, True])
def test_quant_dense(per_channel):
  x = _x((4, 6))
  module = quant.QuantDense(3, bits=4, per_channel=per_channel)
  variables, y = _kernel_grid_check(module, x, 4, per_channel)
  p = variables['params']
  axis = -1 if per_channel else None
  np.testing.assert_allclose(
    y, x @ quant.fake_quant(p['kernel'], 4, axis=axis) + p['bias'], rtol=1e-5, atol=1e-6
  )
  # bits=None is exactly nn.Dense.
  np.testing.assert_array_equal(
    quant.QuantDense(3).apply(variables, x), nn.Dense(3).apply(variables, x)
  )


def test_quant_dense_quantizes_inputs():
  x = _x((4, 6))
  module = quant.QuantDense(3, bits=None, act_bits=2)
  variables = module.init(jax.random.key(0), x)
  p = variables['params']
  expected = quant.fake_quant(x, 2) @ p['kernel'] + p['bias']
  np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('per_channel', [False, True])
def test_quant_conv(per_channel):
  x = _x((2, 8, 8, 3))
  module = quant.QuantConv(5, (3, 3), bits=2, per_channel=per_channel, act_bits=4)
  variables, y = _kernel_grid_check(module, x, 2, per_channel)
  assert y.shape == (2, 8, 8, 5)
  reference = nn.Conv(5, (3, 3)).apply(
    {
      'params': {
        **variables['params'],
        'kernel': quant.fake_quant(
          variables['params']['kernel'], 2, axis=-1 if per_channel else None
        ),
      }
    },
    quant.fake_quant(x, 4),
  )
  np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)


def test_quant_layers_lsq_steps_get_gradients():
  x = _x((2, 8, 8, 3))
  module = quant.QuantConv(4, (3, 3), bits=4, per_channel=True, act_bits=8, method='lsq')
  params = module.init(jax.random.key(0), x)['params']
  steps = params['quant']
  assert steps['weight_quant']['step'].shape == (1, 1, 1, 4)
  assert steps['input_quant']['step'].size == 1
  grads = jax.jit(jax.grad(lambda p: jnp.sum(module.apply({'params': p}, x) ** 2)))(params)
  for g in jax.tree.leaves(grads['quant']):
    assert bool(jnp.all(g != 0))


def test_quantized_op_with_nnx():
  x = _x((4, 6))
  dot_general = quant.quantized_op(lax.dot_general, bits=4)
  layer = nnx.Linear(6, 3, dot_general=dot_general, rngs=nnx.Rngs(0))
  expected = x @ quant.fake_quant(layer.kernel[...], 4) + layer.bias[...]
  np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
  conv = nnx.Conv(
    3,
    2,
    (3,),
    conv_general_dilated=quant.quantized_op(lax.conv_general_dilated, bits=2),
    rngs=nnx.Rngs(0),
  )
  assert conv(_x((1, 10, 3))).shape == (1, 10, 2)
