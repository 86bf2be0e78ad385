"""Checkpoints: the whole training state through Orbax, and a bitwise resume.

``sadam_examples.checkpoint`` saves parameters, S-Adam's state (its PRNG key
included) and anything else in the tree; a run interrupted, restored in a
fresh process and continued follows the uninterrupted run bit for bit.
"""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sadam_optax
from sadam_examples import checkpoint

SCRIPT = pathlib.Path(__file__).parent / 'checkpoint_resume.py'
REPO = pathlib.Path(__file__).parents[1]


def train_state():
  params = {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(3)}
  opt = sadam_optax.sadamw(1e-3, estimator='trajectory')
  opt_state = opt.init(params)
  return {
    'params': params,
    'opt_state': opt_state,
    'key': jax.random.split(jax.random.key(7))[1],
    'keys_rbg': jax.random.split(jax.random.key(1, impl='rbg'), 3),
  }


def assert_states_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jax.random.key_impl(x) == jax.random.key_impl(y)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(x, y)


def test_round_trip_keeps_typed_keys_and_state_types(tmp_path):
  state = train_state()
  checkpoint.save(tmp_path, 3, state)
  restored = checkpoint.restore(tmp_path, jax.eval_shape(train_state))
  assert_states_equal(restored, state)
  assert type(restored['opt_state'][0]) is sadam_optax.SingularityAwareState
  # The restored key draws what the original draws.
  np.testing.assert_array_equal(
    jax.random.normal(restored['key'], (4,)), jax.random.normal(state['key'], (4,))
  )


def test_latest_step_max_to_keep_and_missing_steps(tmp_path):
  assert checkpoint.latest_step(tmp_path / 'none') is None
  state = train_state()
  for step in (1, 2, 3):
    checkpoint.save(tmp_path, step, state, max_to_keep=2)
  assert checkpoint.latest_step(tmp_path) == 3
  with pytest.raises(FileNotFoundError, match='found steps \\[2, 3\\]'):
    checkpoint.restore(tmp_path, state, step=1)
  assert_states_equal(checkpoint.restore(tmp_path, state, step=2), state)


def run_script(*args):
  result = subprocess.run(
    [sys.executable, str(SCRIPT), *map(str, args)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-4000:]


def test_resume_in_fresh_process_is_bitwise_identical(tmp_path):
  steps, save_at = 40, 17
  ckpt, full, resumed = tmp_path / 'ckpt', tmp_path / 'a.npz', tmp_path / 'b.npz'
  run_script(
    '--mode', 'full', '--ckpt', ckpt, '--steps', steps, '--save-at', save_at, '--out', full
  )
  run_script('--mode', 'resume', '--ckpt', ckpt, '--steps', steps, '--out', resumed)
  a, b = np.load(full), np.load(resumed)
  assert a['losses'].shape == (steps,) and b['losses'].shape == (steps - save_at,)
  np.testing.assert_array_equal(b['losses'], a['losses'][save_at:])
  assert a.files == b.files
  for name in a.files[1:]:  # Params, moments, probe key, rho, data key, step.
    np.testing.assert_array_equal(b[name], a[name], err_msg=name)
