"""Mixed precision: bf16 parameters, float32 first moment, float32 probes.

The probe points are formed in float32 and cast to the parameters' dtype;
the probe values are reduced to rho in float32, so rho does not inherit
bfloat16's 8-bit mantissa.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax
from sadam_optax import lgi

STEPS = 200


def regression():
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (64, 8))
  y = jnp.abs(x @ jax.random.normal(kw, (8, 1)))
  params = {
    'w0': jax.random.normal(jax.random.key(1), (8, 16)) / 3,
    'w1': jax.random.normal(jax.random.key(2), (16, 1)) / 4,
  }

  def loss(p):  # The forward pass in the parameters' dtype, the mean in f32.
    h = jax.nn.relu(x.astype(p['w0'].dtype) @ p['w0'])
    err = (h @ p['w1']).astype(jnp.float32) - y
    return jnp.mean(jnp.abs(err))

  return params, loss


@jax.jit
def train(params):
  _, loss = regression()
  opt = sadam_optax.sadam(1e-2, mu_dtype=jnp.float32)

  def body(carry, _):
    p, s = carry
    value, grads = jax.value_and_grad(loss)(p)
    updates, s = opt.update(grads, s, p, value_fn=loss)
    return (optax.apply_updates(p, updates), s), value

  (params, state), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=STEPS)
  return params, state, updates_dtype(opt, params, state), losses


def updates_dtype(opt, params, state):
  _, loss = regression()
  updates, _ = opt.update(jax.grad(loss)(params), state, params, value_fn=loss)
  return jax.tree.map(lambda u: jnp.zeros((), u.dtype), updates)


def test_bf16_params_with_float32_moments_train_like_float32():
  params32, _ = regression()
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params32)
  p16, state16, upd16, losses16 = train(params16)
  _, _, _, losses32 = train(params32)

  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(p16))
  # As optax.adam(mu_dtype=float32): float32 updates, bf16 after applying.
  adam = optax.adam(1e-2, mu_dtype=jnp.float32)
  adam_updates, _ = adam.update(params16, adam.init(params16), params16)
  assert jax.tree.map(lambda u: u.dtype, upd16) == jax.tree.map(lambda u: u.dtype, adam_updates)
  mu, nu = optax.tree.get(state16, 'mu'), optax.tree.get(state16, 'nu')
  assert all(m.dtype == jnp.float32 for m in jax.tree.leaves(mu))
  assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(nu))  # optax.
  assert optax.tree.get(state16, 'rho').dtype == jnp.float32
  assert optax.tree.get(state16, 'damping').dtype == jnp.float32
  assert int(optax.tree.get(state16, 'nonfinite_probes')) == 0
  # The float32 run's progress until bf16's resolution stalls it (on this
  # problem after ~100 steps: 0.11 vs 0.07 at step 200, from 2.75).
  losses16, losses32 = np.asarray(losses16), np.asarray(losses32)
  np.testing.assert_allclose(losses16[:100], losses32[:100], rtol=0.1)
  assert losses16[-1] < 0.1 * losses16[0]


@pytest.mark.parametrize(
  'ratio,reference',
  [
    (lgi.instability_ratio, lambda y: np.var(y) / np.mean(y * y)),
    (lgi.literal_ratio, lambda y: np.var(y, ddof=1) / (np.mean(y * y) + lgi.LITERAL_EPS)),
  ],
)
def test_probe_reductions_accumulate_in_float32(ratio, reference):
  """bf16 samples near 1 with a tiny spread: bf16 arithmetic would cancel."""
  spread = np.array([-3, -1, 0, 1, 2, 4, -2, -1], np.float64) * 2.0**-7
  samples = jnp.asarray(1.0 + spread, jnp.bfloat16)
  exact = reference(np.asarray(samples, np.float64))
  got = ratio(samples)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), exact, rtol=1e-3)
  # What a bfloat16 reduction would give: off by far more than 1e-3.
  y = samples
  var16 = jnp.mean(y * y) - jnp.mean(y) ** 2
  assert abs(float(var16) - exact) > 10 * 1e-3 * exact


def test_estimate_lgi_on_bf16_params_is_float32():
  params32, loss = regression()
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params32)
  direction = jax.tree.map(lambda g: -1e-2 * g, jax.grad(loss)(params32))
  key = jax.random.key(3)
  estimate = jax.jit(functools.partial(sadam_optax.estimate_lgi, loss))
  rho32 = estimate(params32, direction, key)
  rho16 = estimate(params16, jax.tree.map(lambda d: d.astype(jnp.bfloat16), direction), key)
  assert rho16.dtype == rho32.dtype == jnp.float32
  assert 0.0 <= float(rho16) < 1.0
  np.testing.assert_allclose(float(rho16), float(rho32), atol=0.05)


def test_a_loss_wholly_in_bfloat16_resolves_no_reading_and_leaves_adam_alone():
  # The loss itself in bfloat16: at lr 1e-3 no step changes it by more than its
  # rounding (0.8% of it), nor would the gradient predict so. Every reading is
  # lost and counted; rho keeps its first value, 0, so the run is Adam's.
  params32, _ = regression()
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params32)
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (64, 8)).astype(jnp.bfloat16)
  y = jnp.abs(x @ jax.random.normal(kw, (8, 1)).astype(jnp.bfloat16))
  loss = lambda p: jnp.mean(jnp.abs(jax.nn.relu(x @ p['w0']) @ p['w1'] - y))

  def run(opt):
    def body(carry, _):
      p, s = carry
      value, grads = jax.value_and_grad(loss)(p)
      updates, s = opt.update(grads, s, p, value_fn=loss, value=value)
      return (optax.apply_updates(p, updates), s), None

    return jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), None, length=STEPS)[0])(params16)

  params, state = run(sadam_optax.sadam(1e-3, mu_dtype=jnp.float32))
  assert loss(params16).dtype == jnp.bfloat16
  assert int(optax.tree.get(state, 'unresolved_probes')) == STEPS
  assert float(optax.tree.get(state, 'rho')) == 0.0
  assert float(optax.tree.get(state, 'damping')) == 1.0
  adam, _ = run(optax.with_extra_args_support(optax.adam(1e-3, mu_dtype=jnp.float32)))
  jax.tree.map(np.testing.assert_array_equal, params, adam)
