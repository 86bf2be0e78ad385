"""Tests for sadam_examples.models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sadam_examples import models

# Narrow variants keep compilation fast; the architectures are unchanged.
CASES = {
  'qatnet': (models.QATNet(features=(8, 16)), (2, 16, 16, 3)),
  'qatnet_64': (models.QATNet(bits=2, features=(4, 4, 4)), (1, 64, 64, 1)),
  'cnn1d': (models.CNN1D(bits=4), (3, 40, 1)),
  'mlp': (models.MLP(hidden=(32, 16), bits=8), (3, 8, 8, 1)),
  'resnet18': (models.ResNet18(bits=4, width=4), (2, 8, 8, 3)),
}


def _collect(tree, name):
  """Every captured ``__call__`` output of submodules called ``name``."""
  found = []

  def visit(node):
    for key, value in node.items():
      if key == name:
        found.append(value['__call__'][0])
      elif isinstance(value, dict):
        visit(value)

  visit(tree)
  return found


def _variables(model, x, seed=0):
  """Random variables of the right structure, drawn with numpy.

  ``model.init`` would compile threefry for every parameter shape, which takes
  tens of seconds on a small CPU (the quant tests run real inits).
  """
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    if path[-1].key == 'var':
      return np.ones(shape.shape, shape.dtype)
    return (0.3 * rng.standard_normal(shape.shape)).astype(shape.dtype)

  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope='module', params=sorted(CASES))
def run(request):
  model, shape = CASES[request.param]
  x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
  variables = _variables(model, x)
  logits, state = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True))(variables, x)
  return model, x, variables, logits, state['intermediates']


def test_logits(run):
  model, x, _, logits, _ = run
  assert logits.shape == (x.shape[0], model.num_classes)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_weights_used_are_on_the_grid(run):
  model, _, variables, _, intermediates = run
  used = _collect(intermediates, 'weight_quant')
  kernels = [
    p
    for path, p in jax.tree_util.tree_leaves_with_path(variables['params'])
    if path[-1].key == 'kernel'
  ]
  assert len(used) == len(kernels) > 0  # Every layer is quantized.
  for w in map(np.asarray, used):
    assert len(np.unique(w)) <= 2**model.bits
    codes = w / (np.abs(w).max() / (2 ** (model.bits - 1) - 1))  # Per-tensor absmax.
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)


def test_activations_are_on_the_unsigned_grid(run):
  model, _, _, _, intermediates = run
  acts = _collect(intermediates, 'input_quant')
  assert acts  # Inputs of every layer but the first.
  for a in acts:
    assert float(a.min()) >= 0.0
    assert len(np.unique(np.asarray(a))) <= 2**model.bits


def test_float_model_has_the_same_parameters():
  x = jnp.ones((1, 40, 1))
  shapes = lambda m: jax.tree.map(jnp.shape, jax.eval_shape(m.init, jax.random.key(0), x))
  assert shapes(models.CNN1D()) == shapes(models.CNN1D(bits=4))
  params = shapes(models.CNN1D())['params']
  # The MNIST-1D baseline: 3 convs of 25 channels, 125 flattened features.
  assert params['QuantConv_0']['kernel'] == (5, 1, 25)
  assert params['QuantDense_0']['kernel'] == (125, 10)


def test_qatnet_depth_follows_input_size():
  def depth(size):
    x = jnp.ones((1, size, size, 3))
    params = jax.eval_shape(models.QATNet().init, jax.random.key(0), x)['params']
    return sum('QuantConv' in name for name in params)

  assert depth(32) == 2 and depth(64) == 3


def test_resnet18():
  x = jnp.ones((1, 32, 32, 3))
  variables = jax.eval_shape(models.ResNet18().init, jax.random.key(0), x)
  assert set(variables) == {'params', 'batch_stats'}
  params = variables['params']
  count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
  assert count == 11_173_962  # The CIFAR ResNet-18.
  assert params['QuantConv_0']['kernel'].shape == (3, 3, 3, 64)  # The CIFAR stem.
  kernels = [p for p in jax.tree.leaves(params) if p.ndim == 4]
  assert len(kernels) == 1 + 8 * 2 + 3  # Stem, 8 blocks of 2 convs, 3 projections.


def test_resnet18_batch_stats():
  model, shape = CASES['resnet18']
  x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
  variables = _variables(model, x)
  train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))
  logits, updates = train(variables, x)
  assert logits.shape == (x.shape[0], model.num_classes)
  old, new = variables['batch_stats'], updates['batch_stats']
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), old, new)))


def test_float_model_is_plain_flax():
  # bits=None: no `quant` child, the contraction runs inside the layer that owns
  # the kernel (what interception-based quantizers such as Qwix need), and the
  # output is the plain flax network's.
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 40, 1)), jnp.float32)
  model = models.CNN1D()
  variables = _variables(model, x)
  _, state = model.apply(variables, x, capture_intermediates=True)
  assert not _collect(state['intermediates'], 'quant')
  _, quantized = models.CNN1D(bits=4).apply(variables, x, capture_intermediates=True)
  assert _collect(quantized['intermediates'], 'weight_quant')

  class Plain(models.nn.Module):
    @models.nn.compact
    def __call__(self, x):
      for i, k in enumerate((5, 3, 3)):
        x = models.nn.relu(
          models.nn.Conv(25, (k,), strides=(2,), padding=((1, 1),), name=f'QuantConv_{i}')(x)
        )
      return models.nn.Dense(10, name='QuantDense_0')(x.reshape(x.shape[0], -1))

  np.testing.assert_allclose(
    model.apply(variables, x), Plain().apply(variables, x), rtol=1e-6, atol=1e-6
  )
