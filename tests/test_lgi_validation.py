"""rho detects chattering: the LGI validation, small (d = 2 and 100).

Runs ``experiments.lgi_validation --smoke`` end to end (Figure 1 in 2-D and a
random ``abs_sum`` in 100-D, 200 segments each) and checks what the full run
in ``experiments/results/lgi_validation.md`` shows at scale.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sadam_optax
from experiments import lgi_validation


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('lgi_validation')
  payload = lgi_validation.main(['--smoke', '--out-dir', str(out)])
  return payload, out


def _targets(payload):
  return {row['dim']: row for row in payload['targets']}


def test_writes_results_with_command_and_hardware(smoke):
  payload, out = smoke
  saved = json.loads((out / 'lgi_validation.json').read_text())
  assert saved['command'].startswith('python -m experiments.')
  assert 'cpu' in saved['hardware'] or 'gpu' in saved['hardware']
  report = (out / 'lgi_validation.md').read_text()
  assert saved['command'] in report
  for name in ('lgi_validation_figure1.png', 'lgi_validation_auc.png'):
    assert (out / name).stat().st_size > 0
  assert set(_targets(payload)) == {2, 100}


@pytest.mark.parametrize('dim', [2, 100])
def test_default_rho_is_large_where_the_step_chatters(smoke, dim):
  assert _targets(smoke[0])[dim]['rho_chatter'] >= 0.3


def test_default_rho_is_small_where_the_loss_is_smooth(smoke):
  # Only the 2-D problems have smooth segments in the small run.
  assert _targets(smoke[0])[2]['rho_smooth'] < 0.05


@pytest.mark.parametrize('dim', [2, 100])
def test_default_detects_chattering_and_literal_does_not(smoke, dim):
  row = _targets(smoke[0])[dim]
  assert row['auc_chatter'] >= 0.8
  # The random-direction reading is at chance or inverted (brief, section 2).
  assert row['literal_auc_chatter'] <= 0.6
  assert row['auc_chatter'] >= row['literal_auc_chatter'] + 0.3


def test_literal_brakes_hardest_where_the_loss_is_smooth(smoke):
  row = _targets(smoke[0])[2]
  assert row['literal_rho_smooth'] > 0.8
  assert row['literal_rho_smooth'] > row['literal_rho_chatter']


@pytest.mark.parametrize('dim', [2, 100])
def test_default_reaches_the_auc_target(smoke, dim):
  assert _targets(smoke[0])[dim]['auc_chatter'] >= 0.95


@pytest.mark.parametrize('dim', [2, 100])
def test_probing_both_ends_beats_the_former_placement(smoke, dim):
  row = _targets(smoke[0])[dim]
  assert row['auc_chatter'] >= row['ablation_auc_chatter'] + 0.03


def test_figure1_map_brakes_at_the_kinks_only_with_the_default(smoke):
  maps = smoke[0]['figure1']
  step = maps[lgi_validation.DEFAULT_STEP.label]
  literal = maps[lgi_validation.DEFAULT_LITERAL.label]
  assert step['mean_rho_chatter'] > 5 * step['mean_rho_elsewhere']
  assert literal['mean_rho_elsewhere'] > literal['mean_rho_chatter']


def test_probing_both_ends_sees_an_overshoot_in_the_last_slice():
  # |w| from 1 with the step -1.02: the slope flips from -1 to +1 at t = 0.98.
  loss = lambda w: jnp.sum(jnp.abs(w))
  params, step = jnp.array([1.0]), jnp.array([-1.02])
  keys = jax.random.split(jax.random.key(0), 64)

  def rho(key, former):
    return sadam_optax.estimate_lgi(
      loss,
      params,
      step,
      key,
      estimator='step',
      num_probes=4,
      probe_radius=1e-3,
      probe_placement='slices' if former else 'ends',
    )

  core = np.asarray(jax.jit(jax.vmap(lambda k: rho(k, False)))(keys))
  former = np.asarray(jax.jit(jax.vmap(lambda k: rho(k, True)))(keys))
  np.testing.assert_allclose(core, 0.75, atol=1e-3)  # Samples -1, -1, -1, +1.
  assert np.mean(former > 0.5) < 0.3  # Its last probe rarely passes t = 0.98.
  # The secant readings take the slope as linear: a flip this late barely
  # moves the mean slope, so they read almost nothing (a known blind spot).
  for estimator in ('secant', 'uphill'):
    late = sadam_optax.estimate_lgi(loss, params, step, keys[0], estimator=estimator)
    assert late < 0.01, estimator
