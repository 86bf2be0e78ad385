"""End-to-end smoke test of experiments/beyond_paper.py (seconds)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax
from experiments import beyond_paper
from experiments import common
from experiments import optimizers


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


def test_b2_option_reaches_every_adam_family_optimizer_and_is_scoped():
  loss = lambda w: jnp.sum(jnp.abs(w - 0.3)) + 0.5 * jnp.sum(w**2)

  def steps(opt, n=5):
    w = jnp.linspace(-1.0, 1.0, 4)
    state = opt.init(w)
    for _ in range(n):
      value, g = jax.value_and_grad(loss)(w)
      u, state = opt.update(g, state, w, value_fn=loss, value=value)
      w = optax.apply_updates(w, u)
    return np.asarray(w)

  with optimizers.defaults(b2=0.95):
    adamw, sadamw = optimizers.make('adamw', 1e-2), optimizers.make('sadam', 1e-2)
    explicit = optimizers.make('adamw', 1e-2, b2=0.999)  # A call's own option wins.
  np.testing.assert_array_equal(steps(adamw), steps(optax.adamw(1e-2, b2=0.95, weight_decay=1e-2)))
  np.testing.assert_array_equal(
    steps(sadamw), steps(sadam_optax.sadamw(1e-2, b2=0.95, weight_decay=1e-2))
  )
  np.testing.assert_array_equal(steps(explicit), steps(optax.adamw(1e-2, weight_decay=1e-2)))
  after = optimizers.make('adamw', 1e-2)  # The block's options end with it.
  np.testing.assert_array_equal(steps(after), steps(optax.adamw(1e-2, weight_decay=1e-2)))
  with pytest.raises(ValueError, match='b3'):
    with optimizers.defaults(b3=0.9):
      pass
