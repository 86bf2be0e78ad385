"""S-Adam settles at a kink where Adam chatters: the chattering study, small.

Runs ``experiments.chattering --smoke`` end to end (Figure 1 and the L1 toy
in d = 100, lr 0.1, 1500 steps, 4 starts) and checks the target of the full
run in ``experiments/results/chattering.md``.
"""

import json

import pytest

from experiments import chattering

PAPER = chattering.Spec('sadam').label
COMPOUND = chattering.Spec('sadam', **chattering.RECOMMENDED).label


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('chattering')
  payload = chattering.main(['--smoke', '--out-dir', str(out)])
  return payload, out


def _verdict(payload, problem, optimizer):
  (row,) = [
    v for v in payload['verdicts'] if v['problem'] == problem and v['optimizer'] == optimizer
  ]
  return row


def test_writes_results_with_command_and_hardware(smoke):
  payload, out = smoke
  saved = json.loads((out / 'chattering.json').read_text())
  assert saved['command'].startswith('python -m experiments.')
  assert saved['hardware']
  assert saved['command'] in (out / 'chattering.md').read_text()
  for name in ('chattering_distance.png', 'chattering_figure1_paths.png'):
    assert (out / name).stat().st_size > 0
  # 2 problems x (3 optimizers + Adam at 2 S-Adams' effective lr).
  assert len(payload['rows']) == 10


@pytest.mark.parametrize('problem', ['figure1', 'l1_toy'])
def test_compound_brake_ends_ten_times_closer_than_adam(smoke, problem):
  row = _verdict(smoke[0], problem, COMPOUND)
  assert row['closer'] >= 10.0
  assert row['loss_band_narrower'] > 1.0
  assert row['norm_band_narrower'] > 1.0
  assert row['target']


@pytest.mark.parametrize('problem', ['figure1', 'l1_toy'])
def test_paper_rule_cannot_reach_the_target(smoke, problem):
  # exp(-lam * rho) shrinks a step by at most exp(-2) at lam = 2 (results).
  assert not _verdict(smoke[0], problem, PAPER)['target']


def test_runs_are_finite_and_the_brake_stays_in_range(smoke):
  for row in smoke[0]['rows']:
    m = row['metrics']
    assert all(v == v for v in m['final_distance']['values'])  # No NaN.
    assert 0.0 < m['mean_damping']['mean'] <= 1.0
