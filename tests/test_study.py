"""Tests of the resumable study runner (experiments/study.py), tiny settings."""

import dataclasses
import json

import numpy as np
import optax
import pytest

import sadam_optax
from experiments import study as study_lib


def _tiny_runs(**options):
  return study_lib.cifar10_qatnet_cpu(finished=lambda c: None, tiny=True, **options)


def _config(optimizer='sadamw', epochs=3):
  run = next(
    r for r in _tiny_runs(epochs=epochs) if r.config is not None and r.config.optimizer == optimizer
  )
  return run.config


def _fail(line):
  raise AssertionError(f'a finished run trained again: {line}')


def _without_seconds(result):
  curves = {k: v for k, v in result['curves'].items() if k != 'seconds'}
  return dict(
    curves=curves,
    final=result['final'],
    mean_damping=result['mean_damping'],
    key=result['key'],
    config=result['config'],
  )


def test_resumed_run_equals_uninterrupted(tmp_path):
  # The paper's preset: its state holds a probe key and a step count.
  config = _config('paper_sadamw', epochs=2)
  whole = study_lib.Study('whole', tmp_path / 'res', tmp_path / 'ck1')
  assert study_lib.train_run(whole, config, log=lambda _: None)
  stopped = study_lib.Study('stopped', tmp_path / 'res', tmp_path / 'ck2')
  assert not study_lib.train_run(stopped, config, stop_after=1, log=lambda _: None)
  assert stopped.finished(config) is None
  assert stopped.epochs_done(config) == 1
  assert study_lib.train_run(stopped, config, log=lambda _: None)
  assert not stopped.ckpt_dir(config).exists()  # Cleaned up when finished.
  a, b = whole.finished(config), stopped.finished(config)
  assert _without_seconds(a) == _without_seconds(b)
  assert len(a['curves']['test_acc']) == config.epochs
  assert 0 < a['mean_damping'] <= 1


def _fake_result(study, config, damping):
  """Stores a finished result of ``config`` without training it."""
  curves = np.full((config.epochs, len(study_lib.CURVES)), 0.5)
  study_lib._write_result(study, config, curves, damping)


def test_finished_runs_are_skipped_and_controls_follow(tmp_path):
  study = study_lib.Study('s', tmp_path / 'res', tmp_path / 'ck')
  fn = study_lib.cifar10_qatnet_cpu
  runs = study_lib.queue(fn, study, tiny=True)
  # The queue starts with AdamW; controls wait for their S-Adam run.
  assert [r.config.optimizer for r in runs[:4]] == ['adamw', 'adamw', 'paper_sadamw', 'sadamw-0.2']
  assert all(r.config is None for r in runs if r.parent is not None)
  for r, damping in zip(runs[:4], (1.0, 1.0, 0.25, 0.8)):
    _fake_result(study, r.config, damping)
  path = study.result_path(runs[0].config)
  before = path.read_text()
  assert study_lib.train_run(study, runs[0].config, log=_fail)  # Skipped.
  assert path.read_text() == before
  # The two controls of seed 0 are next, at lr x mean damping.
  runs = study_lib.queue(fn, study, tiny=True)
  controls = runs[4:6]
  assert [c.parent for c in controls] == [r.config for r in runs[2:4]]
  assert [c.config.lr for c in controls] == [2.5e-4, 8e-4]
  assert all(c.config.optimizer == 'adamw' for c in controls)
  table = study_lib.status_table(runs, study)
  assert '4 done' in table and '28 waiting' in table  # 3 envelope controls since 2026-12-01.
  # A run stopped before its first epoch is still pending, not partial.
  assert not study_lib.train_run(study, controls[0].config, stop_after=0, log=lambda _: None)
  assert study.epochs_done(controls[0].config) == 0
  report = study_lib.report('s', runs, study).read_text()
  assert 'INCOMPLETE (1 of 3 seeds)' in report
  # The current default's runs are stored as 'sadamw-release': its damping is reported too.
  default = next(r for r in runs if r.config is not None and r.config.optimizer == 'sadamw')
  _fake_result(study, default.config, 0.9)
  report = study_lib.report('s', study_lib.queue(fn, study, tiny=True), study).read_text()
  row = next(line for line in report.splitlines() if line.startswith('| sadamw lr 0.001 |'))
  assert '| 0.900 |' in row


def test_runs_stored_before_the_release_keep_their_keys(monkeypatch):
  # The 0.2 default's first CIFAR-10 run, as committed under
  # experiments/results/study/cifar10_qatnet_cpu/runs/ (key 114faa0126eca22f).
  base = dict(study_lib._base(loop='python'), optimizer='sadamw-0.2', lr=1e-3, seed=0)
  legacy = study_lib.RunConfig(**base)
  monkeypatch.setattr(optax, '__version__', '0.2.8')
  for version in ('0.2.0', '0.3.0'):  # 0.3 changed only the release, which it does not use.
    monkeypatch.setattr(sadam_optax, '__version__', version)
    assert study_lib.run_key(legacy) == '114faa0126eca22f'
  # The current default (with the release) is another run.
  assert study_lib.run_key(dataclasses.replace(legacy, optimizer='sadamw')) != '114faa0126eca22f'


def test_the_former_default_keeps_the_keys_it_ran_under(monkeypatch):
  # The 0.3 default's first CIFAR-10 run, as committed under
  # experiments/results/study/cifar10_qatnet_cpu/runs/ (key 3bae4689484bdd84).
  base = dict(study_lib._base(loop='python'), optimizer='sadamw-0.3', lr=1e-3, seed=0)
  config = study_lib.RunConfig(**base)
  monkeypatch.setattr(optax, '__version__', '0.2.8')
  assert study_lib.run_key(config) == '3bae4689484bdd84'
  # The default since 0.4 (the release waits uphill) is another run.
  assert study_lib.run_key(dataclasses.replace(config, optimizer='sadamw')) != '3bae4689484bdd84'


def test_the_0_4_default_keeps_its_keys_under_0_5_and_0_6(monkeypatch):
  # 0.5 changed the default only where b2 < 0.999; the study runs optax's 0.999. 0.6 changed only
  # what a reading lost in the loss's rounding does, and minibatch QAT resolves every one; 0.6.1
  # changed no number, 0.6.2 only steps whose step rounds away on a coordinate (the study's first
  # epoch ends byte for byte the same), 0.6.3 only eager calls (the study jits), 0.7 only runs with
  # b1 >= 0.99 (the study runs 0.9), 0.7.1 no number. The 0.4 default's
  # first CIFAR-10 run, as committed (key e5b7f25a5d607c26).
  base = dict(study_lib._base(loop='python'), optimizer='sadamw', lr=1e-3, seed=0)
  config = study_lib.RunConfig(**base)
  monkeypatch.setattr(optax, '__version__', '0.2.8')
  for version in ('0.4.0', '0.5.0', '0.6.0', '0.6.1', '0.6.2', '0.6.3', '0.7.0', '0.7.1'):
    monkeypatch.setattr(sadam_optax, '__version__', version)
    assert study_lib.run_key(config) == 'e5b7f25a5d607c26'


def test_0_8_changes_only_the_keys_of_the_default(monkeypatch):
  # 0.8 capped the default's store; every other arm pins release_cap=None or runs no release.
  monkeypatch.setattr(optax, '__version__', '0.2.8')
  keys = {}
  for version in ('0.7.1', '0.8.0'):
    monkeypatch.setattr(sadam_optax, '__version__', version)
    keys[version] = {o: study_lib.run_key(_config(o)) for o in study_lib.SADAM_OPTIMIZERS}
  changed = {o for o in study_lib.SADAM_OPTIMIZERS if keys['0.7.1'][o] != keys['0.8.0'][o]}
  assert changed == {'sadamw'}


def test_keys(monkeypatch):
  config = _config('sadamw')
  adamw = _config('adamw')
  key = study_lib.run_key(config)
  assert key == study_lib.run_key(dataclasses.replace(config))  # Stable.
  for change in (
    dict(lr=2e-3),
    dict(seed=5),
    dict(epochs=4),
    dict(schedule='cosine'),
    dict(batch_size=16),
  ):
    assert study_lib.run_key(dataclasses.replace(config, **change)) != key
  adamw_key = study_lib.run_key(adamw)
  # A new S-Adam version re-keys S-Adam runs only.
  monkeypatch.setattr(sadam_optax, '__version__', '99.0')
  assert study_lib.run_key(config) != key
  assert study_lib.run_key(adamw) == adamw_key
  json.dumps(study_lib.key_payload(config))  # Serialisable.


def test_gpu_preset_tiny_trains_one_run_on_cpu(tmp_path, monkeypatch):
  # The accelerator's path (data on the device, one scan per epoch) for one
  # S-Adam run of the preset; the whole preset is the slow test below.
  monkeypatch.setenv('SADAM_STEP_LOOP', 'scan')
  study = study_lib.Study('gpu_resnet18_tiny', tmp_path / 'res', tmp_path / 'ck')
  runs = study_lib.queue(study_lib.gpu_resnet18, study, tiny=True, epochs=1)
  configs = [r.config for r in runs if r.config is not None]
  assert len(runs) == 14 and len(configs) == 8  # The 6 controls wait for their parents.
  assert {c.model for c in configs} == {'resnet-tiny'}
  assert {c.loop for c in configs} == {'scan'}
  config = next(c for c in configs if c.optimizer in study_lib.SADAM_OPTIMIZERS)
  assert study_lib.train_run(study, config, log=lambda _: None)
  result = study.finished(config)
  assert len(result['curves']['test_acc']) == 1 and 0 < result['mean_damping'] <= 1


@pytest.mark.slow
def test_gpu_preset_tiny_runs_on_cpu(tmp_path, monkeypatch):
  # The accelerator's path: data on the device, one scan per epoch. All 14
  # runs and the report (127 s on the 2-core CPU): slow; CI runs the one-run
  # test above.
  monkeypatch.setenv('SADAM_STEP_LOOP', 'scan')
  root = tmp_path / 'res'
  study_lib.main(
    [
      'gpu_resnet18',
      '--tiny',
      '--epochs',
      '1',
      '--results-root',
      str(root),
      '--ckpt-root',
      str(tmp_path / 'ck'),
    ]
  )
  study = study_lib.Study('gpu_resnet18_tiny', root, tmp_path / 'ck')
  runs = study_lib.queue(study_lib.gpu_resnet18, study, tiny=True, epochs=1)
  assert len(runs) == 14 and all(r.config is not None for r in runs)
  assert all(study.finished(r.config) is not None for r in runs)
  assert {r.config.model for r in runs} == {'resnet-tiny'}
  assert {r.config.loop for r in runs} == {'scan'}
  report = (root / 'gpu_resnet18_tiny.md').read_text()
  assert 'INCOMPLETE' not in report and '2/2' in report
  # The report names the command that reproduces these keys.
  assert 'SADAM_STEP_LOOP=scan python -m experiments.study gpu_resnet18 --tiny --epochs 1' in report
  assert (root / 'gpu_resnet18_tiny_curves.png').exists()


def test_report_command_without_step_loop_override(tmp_path, monkeypatch):
  monkeypatch.delenv('SADAM_STEP_LOOP', raising=False)
  root = tmp_path / 'res'
  study_lib.main(['cifar10_qatnet_cpu', '--tiny', '--report', '--results-root', str(root)])
  report = (root / 'cifar10_qatnet_cpu_tiny.md').read_text()
  assert 'Command: `python -m experiments.study cifar10_qatnet_cpu --tiny`' in report


def test_selection_compares_grid_points_on_the_seeds_they_share():
  def cell(family, vals):
    results = [dict(config=dict(seed=s), final=dict(val_acc=v)) for s, v in vals.items()]
    return dict(family=family, results=results)

  cells = {
    # 3 seeds, mean 0.66; seed 0 alone 0.666.
    'sadamw lr 0.001': cell('sadamw', {0: 0.666, 1: 0.655, 2: 0.659}),
    # 1 seed: above the other's 3-seed mean, below its seed 0.
    'sadamw lr 0.0003': cell('sadamw', {0: 0.665}),
    'adamw lr 0.001': cell('adamw', {0: 0.60, 1: 0.70}),
    'adamw lr 0.003': cell('adamw', {1: 0.66}),
    'sadamw lr 0.003': cell('sadamw', {}),  # Nothing finished: not a candidate.
    'control': cell(None, {0: 0.99}),
  }
  assert study_lib.select_on_validation(cells) == {'sadamw lr 0.001', 'adamw lr 0.001'}
  # No seed in common: each cell's own mean.
  cells['adamw lr 0.003'] = cell('adamw', {2: 0.66})
  assert 'adamw lr 0.003' in study_lib.select_on_validation(cells)


def test_the_fingerprint_tells_optimizers_apart_and_repeats(tmp_path):
  study = study_lib.Study('cifar10_qatnet_cpu_tiny', tmp_path / 'results', tmp_path / 'ckpt')
  runs = study_lib.queue(study_lib.cifar10_qatnet_cpu, study, tiny=True)
  first = study_lib.fingerprint(runs, ['sadamw', 'adamw'])
  assert first == study_lib.fingerprint(runs, ['sadamw', 'adamw'])
  assert first['sadamw'] != first['adamw'] and len(first['sadamw']) == 16
  with pytest.raises(ValueError, match='No run of'):
    study_lib.fingerprint(runs, ['sgd'])
