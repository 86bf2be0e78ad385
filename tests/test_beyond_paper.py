"""End-to-end smoke test of experiments/beyond_paper.py (seconds)."""

import json

import pytest

from experiments import beyond_paper
from experiments import common


def test_smoke_run_writes_both_bit_widths_and_diagnostics(tmp_path):
  beyond_paper.main(
    [
      '--preset',
      'smoke',
      '--methods',
      'adamw',
      'nagel-freeze',
      '--limit-train',
      '200',
      '--out-dir',
      str(tmp_path),
    ]
  )
  payload = json.loads((tmp_path / 'beyond_paper.json').read_text())
  results = payload['results']['4-bit']
  assert set(results) == {'adamw', 'nagel-freeze'}
  for entry in results.values():
    assert len(entry['test_acc']) == len(entry['low_test_acc']) == 2
    assert all(0 <= a <= 1 for a in entry['test_acc'] + entry['low_test_acc'])
  # AdamW carries the oscillation monitor (damping exactly 1).
  assert results['adamw']['osc_damping'] == 1.0
  assert 0 <= results['adamw']['osc_freq'] <= 1
  assert 0 <= results['nagel-freeze']['frozen'] <= 1
  report = (tmp_path / 'beyond_paper.md').read_text()
  assert 'test % at 3 bit(s)' in report and '| nagel-freeze |' in report
  assert 'Beats the best tuned baseline' in report


def test_two_stage_tuning_reports_every_seed_at_the_chosen_lr(tmp_path):
  # Grid on the first seed only, then seeds 1 and 2 at the chosen lr.
  beyond_paper.main(
    [
      '--config',
      'beyond_paper:smoke',
      '--methods',
      'adamw',
      '--seeds',
      '3',
      '--tune-seeds',
      '1',
      '--grid',
      '1e-3',
      '1e-2',
      '--limit-train',
      '200',
      '--out-dir',
      str(tmp_path),
    ]
  )
  payload = json.loads((tmp_path / 'beyond_paper.json').read_text())
  entry = payload['results']['4-bit']['adamw']
  assert len(entry['test_acc']) == len(entry['val_acc']) == 3
  assert len(entry['mean_damping']) == 3
  assert entry['lr'] in (1e-3, 1e-2) and set(entry['grid']) == {'0.001', '0.01'}
  assert abs(entry['mean'] - sum(entry['test_acc']) / 3) < 1e-9
  report = (tmp_path / 'beyond_paper.md').read_text()
  assert 'with the first 1 seeds' in report and 'all 3 seeds' in report and 'MNIST-1D' in report


def test_builtin_optimizer_names_cannot_be_replaced():
  with pytest.raises(ValueError):
    common.register_optimizer('adamw', lambda lr, **_: None)
