"""Tests of the tree arithmetic the probe reads its slopes with."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sadam_optax import tree_math


@pytest.mark.parametrize('shape', [(5,), (64, 256), (784, 512), (3, 3, 37, 29), (8209,), (2, 4099)])
def test_dot_and_sq_norm_matches_float64(shape):
  # Large leaves are summed block by block (XLA:CPU's serial reduction chain
  # made shorter): the same sums, rounded in another order.
  ka, kb = jax.random.split(jax.random.key(len(shape)))
  a = {'w': jax.random.normal(ka, shape), 'b': jnp.linspace(-1.0, 1.0, 7)}
  b = {'w': jax.random.normal(kb, shape), 'b': jnp.arange(7.0)}
  dot, sq = jax.jit(tree_math.dot_and_sq_norm)(a, b)
  wide = lambda t: np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(t)])
  np.testing.assert_allclose(dot, wide(a) @ wide(b), rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(sq, wide(b) @ wide(b), rtol=1e-5)


def test_chain_split_blocks_evenly_along_an_axis():
  split = tree_math.chain_split
  for shape in [(784, 512), (3, 3, 64, 64), (9, 1031), (512, 10)]:
    axis, k = split(jnp.zeros(shape))
    assert 1 <= k <= 8 and shape[axis] % k == 0
  assert split(jnp.zeros((784, 512))) == (0, 8)
  assert split(jnp.zeros((3, 3, 64, 64))) == (2, 8)
  assert split(jnp.zeros((10, 10)))[1] == 1  # Small: one chain.


def test_unit_direction_values_and_finite_gradient_at_zero():
  d = {'w': jnp.array([[3.0, 0.0]]), 'b': jnp.array([4.0])}
  unit, norm = jax.jit(tree_math.unit_direction)(d)
  assert float(norm) == 5.0
  np.testing.assert_allclose(unit['w'], [[0.6, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(unit['b'], [0.8], rtol=1e-6)
  # A zero step: zero unit, zero norm, and zero (not NaN) derivatives.
  zero = jax.tree.map(jnp.zeros_like, d)
  unit, norm = tree_math.unit_direction(zero)
  assert float(norm) == 0.0 and all(np.all(u == 0) for u in jax.tree.leaves(unit))
  grads = jax.grad(lambda t: tree_math.unit_direction(t)[1])(zero)
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads))
  # Away from zero the norm's gradient is the unit direction.
  grads = jax.grad(lambda t: tree_math.unit_direction(t)[1])(d)
  np.testing.assert_allclose(grads['w'], [[0.6, 0.0]], rtol=1e-6)


def test_root_is_sqrt_with_derivative_zero_at_zero():
  x = jnp.array([0.0, 0.25, 4.0])
  np.testing.assert_array_equal(tree_math.root(x), jnp.sqrt(x))
  np.testing.assert_array_equal(tree_math.root(x), tree_math.safe_sqrt(x))
  np.testing.assert_allclose(jax.vmap(jax.grad(tree_math.root))(x), [0.0, 1.0, 0.25])


def test_dot_and_sq_norm_compiles_once_eagerly(compiles):
  # lax.reduce caches its computation on the function object: a fresh lambda
  # per call compiled a new reduction on every eager call.
  a = {'w': jnp.ones((3, 4)), 'b': jnp.arange(4.0)}
  b = {'w': jnp.full((3, 4), 2.0), 'b': jnp.ones(4)}
  first = tree_math.dot_and_sq_norm(a, b)
  compiles.clear()
  again = tree_math.dot_and_sq_norm(a, b)
  assert not compiles
  assert tuple(map(float, again)) == tuple(map(float, first)) == (30.0, 52.0)
