"""The QAT experiments run end to end in a tiny setting and write valid results."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import common
from experiments import qat
from experiments import small_batch

CHANCE = 0.1  # MNIST-1D has 10 balanced classes.


def test_soft_threshold_is_the_l1_prox():
  params = jnp.array([1.0, -0.05, 0.2])
  updates, _ = common.soft_threshold(0.1).update(
    jnp.array([0.0, 0.0, -0.15]), optax.EmptyState(), params
  )
  np.testing.assert_allclose(params + updates, [0.9, 0.0, 0.0], atol=1e-7)


def test_every_optimizer_takes_the_same_update_call():
  params = {'w': jnp.ones(3)}
  loss = lambda p: jnp.sum(jnp.abs(p['w'] - 0.5))
  grads = {'w': jnp.ones(3)}
  for name in common.OPTIMIZERS:
    opt = common.make_optimizer(name, 0.1)
    updates, _ = opt.update(
      grads, opt.init(params), params, value_fn=loss, grad_fn=lambda p, _: grads
    )
    assert np.all(np.isfinite(updates['w'])), name


def test_qat_smoke_writes_results_above_chance(tmp_path):
  qat.main(['--preset', 'smoke', '--limit-train', '2000', '--out-dir', str(tmp_path)])
  payload = json.loads((tmp_path / 'qat_smoke.json').read_text())
  results = payload['results']['4-bit']
  assert set(results) == {'adamw', 'sadam', 'sadam@eff-lr'}
  for name, entry in results.items():
    assert len(entry['test_acc']) == 2, name
    assert entry['mean'] > 2 * CHANCE, (name, entry['mean'])
  damping = results['sadam']['mean_damping']
  assert all(0 < d <= 1 for d in damping)
  # The control runs at S-Adam's lr times the damping of the same seed.
  np.testing.assert_allclose(
    results['sadam@eff-lr']['lr'], [results['sadam']['lr'] * d for d in damping]
  )
  assert (tmp_path / 'qat_smoke.md').read_text().count('| sadam') == 2
  assert (tmp_path / 'qat_smoke_4-bit.png').stat().st_size > 0


def test_width_sets_resnet18_channels_and_is_refused_elsewhere():
  assert qat.build_model('resnet18', 4, width=16).width == 16
  assert qat.build_model('resnet18', 4).width == 64
  with pytest.raises(ValueError, match='resnet18 only'):
    qat.build_model('qatnet', 4, width=16)


def test_small_batch_smoke_writes_results_above_chance(tmp_path):
  small_batch.main(
    [
      '--batch-sizes',
      '16',
      '--optimizers',
      'adamw',
      '--seeds',
      '1',
      '--epochs',
      '1',
      '--lrs',
      '3e-3',
      '--limit-train',
      '1000',
      '--out-dir',
      str(tmp_path),
    ]
  )
  payload = json.loads((tmp_path / 'small_batch.json').read_text())
  entry = payload['results']['16']['adamw']
  assert entry['mean'] > CHANCE
  assert 'hardware' in payload and 'command' in payload


def test_python_and_scan_step_loops_train_alike(monkeypatch):
  # The CPU default dispatches steps from Python (convolutions inside a scan
  # run ~20x slower there); both loops must train the same runs.
  split = qat.load('mnist1d', limit_train=400)
  model = qat.build_model('cnn1d', 4)
  budget = common.Budget(batch_size=60, epochs=1)
  out = {}
  for loop in ('scan', 'python'):
    monkeypatch.setenv('SADAM_STEP_LOOP', loop)
    assert common.step_loop() == loop
    out[loop] = common.train_grid(model, 'sadam', split, budget, lrs=[1e-2], seeds=[0])
  for key in ('final_train_loss', 'mean_damping'):
    np.testing.assert_allclose(out['python'][key], out['scan'][key], rtol=1e-3, err_msg=key)
  monkeypatch.setenv('SADAM_STEP_LOOP', 'unrolled')
  with pytest.raises(ValueError, match='SADAM_STEP_LOOP'):
    common.step_loop()
