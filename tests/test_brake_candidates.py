"""The brake candidates kept for the max-affine study run and brake what they say."""

import jax
import jax.numpy as jnp
import optax

from experiments import brake_candidates as bc

LOSS = lambda w: jnp.sum(jnp.abs(w - 1.0))


def _first_steps(tx, w, steps=2):
  state, out = tx.init(w), []
  for _ in range(steps):
    g = jax.grad(LOSS)(w)
    u, state = tx.update(g, state, w, value_fn=LOSS, value=LOSS(w))
    out.append(u)
    w = w + u
  return out


def test_directional_brakes_nothing_before_a_gradient_change():
  w = jnp.array([0.3, -0.2])
  (u,) = _first_steps(bc.directional(0.1), w, steps=1)
  (v,) = _first_steps(optax.with_extra_args_support(optax.adam(0.1)), w, steps=1)
  assert jnp.array_equal(u, v)


def test_cautious_keeps_descending_coordinates():
  # Coordinate 0 crosses its kink at 1 (braked once uphill); coordinate 1 is far from it.
  w = jnp.array([0.95, -3.0])
  steps = _first_steps(bc.cautious(0.1), w, steps=3)
  plain = _first_steps(optax.with_extra_args_support(optax.adam(0.1)), w, steps=3)
  for u, v in zip(steps, plain):
    assert u[1] == v[1]  # Always descending: never braked.
    assert abs(u[0]) <= abs(v[0])


def test_smoke(tmp_path):
  payload = bc.main(['--smoke', '--lrs', '0.01', '--out', str(tmp_path / 'bc')])
  methods = {c['method'] for c in payload['cells']}
  assert set(bc.CANDIDATES) <= methods
  assert (tmp_path / 'bc.md').read_text().count('plateau-gate') >= 2
