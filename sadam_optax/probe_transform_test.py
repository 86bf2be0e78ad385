"""Tests of lgi_probe: rho recorded, the step left as it is."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax


def test_lgi_probe_records_rho_and_leaves_the_step_unchanged():
  loss = lambda w: jnp.sum(jnp.abs(w))
  w = jnp.array([0.1, -0.1])
  watched = optax.chain(optax.adamw(0.3), sadam_optax.lgi_probe())
  plain = optax.adamw(0.3)
  g = jax.grad(loss)(w)
  u, state = watched.update(g, watched.init(w), w, value_fn=loss, grad=g)
  ref, _ = plain.update(g, plain.init(w), w)
  np.testing.assert_array_equal(u, ref)
  # The step of 0.3 jumps the kinks at 0: the loss rises over most of it.
  expected = sadam_optax.estimate_lgi(loss, w, ref, jax.random.key(0))
  assert float(optax.tree.get(state, 'rho')) == pytest.approx(float(expected), rel=1e-6)
  assert float(expected) > 0.5
