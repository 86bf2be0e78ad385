"""Property-based tests of estimate_lgi and the brake (hypothesis).

On random weighted sums of absolute values plus a ridge (the family of the
paper's Figure 1, :class:`sadam_optax.problems.AbsSum`), at random points and
steps:

* rho lies in [0, 1] for ``'uphill'``, in [0, 1) for ``'secant'``, ``'step'``
  and ``'trajectory'``, in [0, k / (k - 1)] for ``'literal'`` (the authors' unbiased variance);
* rho does not change when the loss is multiplied by a positive constant
  (``'literal'`` only while ``mean(D^2)`` dwarfs its absolute epsilon 1e-6);
* the damping never increases with ``lam``.

Every function under test is jitted once; the examples only feed it arrays.
"""

import functools

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax
from sadam_optax import lgi
from sadam_optax import problems

DIM = 6
SETTINGS = hypothesis.settings(max_examples=20, deadline=None, derandomize=True)


def vectors(lo, hi):
  return hnp.arrays(
    np.float32, DIM, elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=32)
  )


abs_sums = st.builds(
  lambda w, c, r: problems.AbsSum(jnp.asarray(w), jnp.asarray(c), jnp.float32(r)),
  vectors(0.0, 2.0),
  vectors(-2.0, 2.0),
  st.floats(0.0, 2.0),
)
points = vectors(-3.0, 3.0)
steps = vectors(-1.0, 1.0)
seeds = st.integers(0, 2**31 - 1)


@functools.cache
def rho_fn(estimator):
  """jit of (problem, params, direction, seed, scale) -> rho of scale * f."""

  def rho(problem, params, direction, seed, scale):
    value = lambda w: scale * problem.value(w)
    return sadam_optax.estimate_lgi(
      value, params, direction, jax.random.key(seed), estimator=estimator
    )

  return jax.jit(rho)


@jax.jit
def literal_mean_square(problem, params, seed):
  """mean(D^2) of the literal estimator's finite differences."""
  d = lgi.literal_samples(
    problem.value,
    params,
    jax.random.key(seed),
    num_probes=lgi.DEFAULT_NUM_PROBES['literal'],
    probe_radius=lgi.DEFAULT_PROBE_RADIUS['literal'],
  )
  return jnp.mean(d * d)


def upper_bound(estimator):
  if estimator == 'literal':
    k = lgi.DEFAULT_NUM_PROBES['literal']
    return k / (k - 1)
  return 1.0


@pytest.mark.parametrize('estimator', ['uphill', 'secant', 'step', 'trajectory', 'literal'])
@SETTINGS
@hypothesis.given(problem=abs_sums, params=points, direction=steps, seed=seeds)
def test_rho_in_range(estimator, problem, params, direction, seed):
  rho = float(rho_fn(estimator)(problem, params, direction, seed, 1.0))
  assert 0.0 <= rho
  if estimator == 'literal':
    assert rho <= upper_bound(estimator) * (1 + 1e-6)
  elif estimator == 'uphill':
    assert rho <= 1.0  # A step uphill all the way reads exactly 1.
  else:
    assert rho < 1.0


@pytest.mark.parametrize(
  'estimator, scales, atol',
  [
    ('uphill', (1e-3, 1e3), 1e-4),
    ('secant', (1e-3, 1e3), 1e-4),
    ('step', (1e-3, 1e3), 1e-4),
    ('trajectory', (1e-3, 1e3), 1e-4),
    # Finite differences over sigma = 0.01 in float32: ~1e-4 relative noise.
    ('literal', (0.5, 50.0), 5e-3),
  ],
)
@SETTINGS
@hypothesis.given(problem=abs_sums, params=points, direction=steps, seed=seeds, data=st.data())
def test_rho_invariant_to_positive_loss_scale(
  estimator, scales, atol, problem, params, direction, seed, data
):
  scale = data.draw(st.floats(*scales))
  fn = rho_fn(estimator)
  if estimator == 'literal':
    hypothesis.assume(float(literal_mean_square(problem, params, seed)) > 1e-2)
  np.testing.assert_allclose(
    fn(problem, params, direction, seed, scale),
    fn(problem, params, direction, seed, 1.0),
    atol=atol,
  )


def test_literal_rho_is_not_scale_invariant_below_its_epsilon():
  """The authors' absolute 1e-6 takes over when mean(D^2) is that small."""
  problem = problems.figure1()
  args = (problem, jnp.array([3.0, -2.0]), jnp.zeros(2), 0)
  fn = rho_fn('literal')
  assert float(fn(*args, 1.0)) > 0.5  # Random directions: about 1 - 1/k.
  assert float(fn(*args, 1e-5)) < 0.01


@functools.cache
def damping_fn(rule):
  """jit of (lam, params) -> damping after one S-Adam step on Figure 1."""
  value = problems.figure1().value

  def damping(lam, params):
    opt = optax.inject_hyperparams(sadam_optax.sadam, static_args=('rule',))(
      learning_rate=0.3, lam=lam, rule=rule
    )
    _, state = opt.update(jax.grad(value)(params), opt.init(params), params, value_fn=value)
    return optax.tree.get(state, 'damping')

  return jax.jit(damping)


@pytest.mark.parametrize('rule', ['exp', 'compound'])
@SETTINGS
@hypothesis.given(
  lams=st.lists(st.floats(0.0, 20.0), min_size=2, max_size=2),
  params=hnp.arrays(np.float32, 2, elements=st.floats(0.75, 1.25, width=32)),
)
def test_damping_monotone_in_lam(rule, lams, params):
  lo, hi = sorted(lams)
  fn = damping_fn(rule)
  d_lo, d_hi = float(fn(lo, params)), float(fn(hi, params))
  assert 0.0 < d_hi <= d_lo <= 1.0


def test_damping_monotone_is_not_vacuous():
  """Near the kink of Figure 1 the brake does act, and more with lam."""
  fn = damping_fn('exp')
  params = jnp.array([1.01, 0.99])
  assert float(fn(8.0, params)) < float(fn(2.0, params)) < 1.0
