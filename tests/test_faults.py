"""Faults: a loss that returns NaN or inf at random probes, NaN gradients.

S-Adam keeps the last finite rho when a probe sees NaN or inf, so nothing
non-finite reaches the damping, and counts the event in the state field
``nonfinite_probes`` (the secant readings read a step out of the loss's domain
as rho 1 instead: ``sadam_optax/probe_transform_test.py``). Non-finite
*gradients* are ``optax.apply_if_finite``'s business: it wraps S-Adam and
forwards ``value_fn``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax
from sadam_optax import problems

STEPS, DIM = 1000, 8
CLEAN, ALL_NAN, ALL_INF, SOME = 0, 1, 2, 3  # Fault modes of a step.


def problem() -> problems.AbsSum:
  return problems.abs_sum(jax.random.key(0), DIM, ridge=0.5)


def fault_modes(key: jax.Array) -> jax.Array:
  """Per step: clean (90%), NaN at every probe (3%), inf at every probe (3%),
  or NaN at about 10% of the probes, chosen by a hash of the probe point (4%).
  """
  return jax.random.choice(key, 4, (STEPS,), p=jnp.array([0.9, 0.03, 0.03, 0.04]))


def faulty_loss(value, mode):
  """``value`` times 1, NaN or inf: the probes' slopes turn non-finite too."""

  def loss(params):
    # A hash of the probe point: which of a step's probes fail is random.
    u = jnp.sin(jnp.sum(params) * 12.9898) * 43758.5453
    hit = (u - jnp.floor(u)) < 0.1
    factor = jnp.select(
      [mode == ALL_NAN, mode == ALL_INF, (mode == SOME) & hit], [jnp.nan, jnp.inf, jnp.nan], 1.0
    )
    return value(params) * factor

  return loss


@functools.partial(jax.jit, static_argnums=0)
def train(opt, prob, modes):
  """STEPS steps with clean gradients and a faulty value_fn."""

  def body(carry, mode):
    w, state = carry
    grads = jax.grad(prob.value)(w)
    updates, state = opt.update(grads, state, w, value_fn=faulty_loss(prob.value, mode))
    w = optax.apply_updates(w, updates)
    return (w, state), (
      w,
      optax.tree.get(state, 'rho'),
      optax.tree.get(state, 'damping'),
      optax.tree.get(state, 'nonfinite_probes'),
    )

  w0 = jnp.full(DIM, 2.0)
  _, trace = jax.lax.scan(body, (w0, opt.init(w0)), modes)
  return trace


@pytest.mark.parametrize('estimator', ['step', 'literal'])
def test_nonfinite_probes_are_counted_and_never_reach_params(estimator):
  prob = problem()
  modes = fault_modes(jax.random.key(1))
  ws, rhos, dampings, counts = train(sadam_optax.sadam(3e-2, estimator=estimator), prob, modes)
  ws, counts, modes = np.asarray(ws), np.asarray(counts), np.asarray(modes)

  assert np.all(np.isfinite(ws))
  assert np.all(np.isfinite(np.asarray(rhos)))
  assert np.all((np.asarray(dampings) > 0) & (np.asarray(dampings) <= 1))
  # Every step whose probes all fail is counted; of the steps where only
  # some probes fail, some are and some are not (a random subset).
  counted = np.diff(counts, prepend=0)
  assert np.all(counted[np.isin(modes, (ALL_NAN, ALL_INF))] == 1)
  assert np.all(counted[modes == CLEAN] == 0)
  some = counted[modes == SOME]
  assert 0 < some.sum() < some.size
  # The run still optimises: the distance to the minimiser shrank.
  start = np.linalg.norm(2.0 - np.asarray(prob.minimiser()))
  assert np.linalg.norm(ws[-1] - np.asarray(prob.minimiser())) < 0.1 * start


def test_apply_if_finite_skips_nonfinite_gradients():
  """NaN gradients at random steps: skipped, counted, S-Adam state kept."""
  prob = problem()
  bad = jax.random.bernoulli(jax.random.key(2), 0.05, (STEPS,))
  opt = optax.apply_if_finite(sadam_optax.sadam(3e-2), max_consecutive_errors=5)

  @jax.jit
  def run(bad):
    def body(carry, is_bad):
      w, state = carry
      grads = jax.grad(prob.value)(w) * jnp.where(is_bad, jnp.nan, 1.0)
      updates, state = opt.update(grads, state, w, value_fn=prob.value)
      w = optax.apply_updates(w, updates)
      return (w, state), jnp.all(jnp.isfinite(w))

    w0 = jnp.full(DIM, 2.0)
    (w, state), finite = jax.lax.scan(body, (w0, opt.init(w0)), bad)
    return w, state, finite

  w, state, finite = run(bad)
  assert bool(jnp.all(finite))
  assert int(state.total_notfinite) == int(bad.sum()) > 0
  # The skipped steps never reached S-Adam: its count only saw good ones.
  probe_state = state.inner_state[0].brake_state.probe_state
  assert int(probe_state.count) == STEPS - int(bad.sum())
