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
