"""Experiments as configuration code: the registry of optimizers and the configs."""

import dataclasses
import importlib
import json
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sadam_optax
from experiments import beyond_paper
from experiments import common
from experiments import configs
from experiments import optimizers
from experiments import qat
from experiments import small_batch

SCRIPTS = {'qat': qat, 'beyond_paper': beyond_paper, 'small_batch': small_batch}
VARIANTS = [
  (name, variant)
  for name in configs.modules()
  for variant in importlib.import_module(f'experiments.configs.{name}').VARIANTS
]


def _resolve(name, argv):
  return configs.resolve(SCRIPTS[name].parser().parse_args(argv), name=name)


def _optimizer_names(name, config):
  """The registry names a config trains with."""
  if name == 'beyond_paper':
    return {beyond_paper.METHODS[m][0] for m in config.methods}
  return set(config.optimizers)


def _known(name, config):
  """The registry's names when the config's script runs."""
  known = set(optimizers.BUILTIN)
  if name == 'beyond_paper':  # It registers the quantization-aware ones per bit width.
    for bits in config.bits:
      known |= set(optimizers.quant_aware(bits))
  return known


def qat_config(variant):
  return configs.load(f'qat:{variant}')


def test_every_config_module_has_a_script_and_a_smoke_variant():
  assert set(configs.modules()) == set(SCRIPTS)
  for name in SCRIPTS:
    assert 'smoke' in importlib.import_module(f'experiments.configs.{name}').VARIANTS


@pytest.mark.parametrize('name,variant', VARIANTS)
def test_every_variant_names_only_optimizers_of_the_registry(name, variant):
  config = configs.load(f'{name}:{variant}')
  assert _optimizer_names(name, config) <= _known(name, config), (name, variant)


@pytest.mark.parametrize('name,variant', VARIANTS)
def test_preset_and_config_give_the_same_config(name, variant):
  by_preset = _resolve(name, ['--preset', variant])
  assert by_preset == _resolve(name, ['--config', f'{name}:{variant}'])
  assert by_preset == _resolve(name, ['--config', f'experiments/configs/{name}.py:{variant}'])
  assert by_preset == configs.load(f'{name}:{variant}')


def test_defaults_are_the_old_defaults():
  assert _resolve('qat', []) == _resolve('qat', ['--config', 'qat']) == qat_config('quick')
  assert _resolve('qat', []).out == 'qat_quick'
  assert _resolve('beyond_paper', []) == configs.load('beyond_paper:default')
  assert _resolve('small_batch', []).batch_sizes == [2, 4, 16, 64]
  assert _resolve('small_batch', []).lrs == list(common.ADAM_GRID)


def test_command_line_options_override_the_config():
  config = _resolve('qat', ['--preset', 'resnet18', '--width', '16', '--no-controls'])
  assert config == dataclasses.replace(qat_config('resnet18'), width=16, no_controls=True)
  # Options left out keep the config's values, flags included.
  assert _resolve('qat', ['--preset', 'quick', '--seeds', '5']).no_controls is False
  assert _resolve('qat', ['--preset', 'quick', '--schedule', 'cosine']).schedule == 'cosine'


def test_variants_are_fresh_copies():
  config = qat_config('quick')
  config.optimizers.append('sgd')
  assert qat_config('quick').optimizers == ['adamw', 'sadam-literal', 'sadam']


# The command lines of the README, the docs and the committed results.
COMMANDS = [
  'qat --preset quick --out-dir runs',
  'qat --preset mnist1d --out qat_mnist1d_cpu',
  'qat --preset cifar10 --limit-train 5000 --out qat_cifar10_cpu',
  'qat --preset resnet18 --width 16 --limit-train 5000 --limit-test 5000 --lrs 3e-4 1e-3 3e-3'
  ' --optimizers adamw sadam --out qat_resnet18_w16_cpu --out-dir /tmp/runs/r18',
  'qat --preset quick --bits 2 --out qat_quick_2bit',
  'beyond_paper --preset cifar10 --bits 4 --grid 3e-3 --methods adamw sadam sadam-step'
  " sadam-lam1 sadam-lam4 sadam-compound sadam-every4 --out ablation --notes 'a note'",
  'beyond_paper --bits 4 --seeds 5 --epochs 30 --methods sadam sadam-secant --out crosscheck',
  'small_batch --out small_batch_cpu',
  'small_batch --seeds 3 --epochs 10',
]


@pytest.mark.parametrize('command', COMMANDS)
def test_documented_command_lines_still_parse(command):
  name, *argv = shlex.split(command)
  config = _resolve(name, argv)
  assert isinstance(config, importlib.import_module(f'experiments.configs.{name}').Config)
  assert dict(zip(argv, argv[1:])).get('--out') in (None, config.out)


def test_config_files_of_your_own_and_wrong_configs(tmp_path):
  mine = tmp_path / 'mine.py'
  mine.write_text(
    'import dataclasses\n'
    'from experiments.configs import qat\n'
    'def get_config(arg=None):\n'
    '  return dataclasses.replace(qat.get_config(arg), seeds=7)\n'
  )
  config = _resolve('qat', ['--config', f'{mine}:smoke'])
  assert config == dataclasses.replace(qat_config('smoke'), seeds=7)
  with pytest.raises(ValueError, match='not a config of qat'):
    _resolve('qat', ['--config', 'small_batch:smoke'])
  with pytest.raises(ValueError, match='quick'):
    _resolve('qat', ['--config', 'qat:nope'])
  with pytest.raises(ValueError, match='small_batch'):
    configs.load('nope')
  with pytest.raises(SystemExit):  # One or the other.
    qat.parser().parse_args(['--preset', 'quick', '--config', 'qat:quick'])


def test_unknown_optimizer_names_the_known_ones():
  with pytest.raises(ValueError, match="'sadam-literal'"):
    common.make_optimizer('adam', 1e-3)
  with pytest.raises(ValueError, match='built-in'):
    optimizers.register('sgd', lambda lr, o: None)


def test_registry_builds_the_library_presets():
  # 'sadam-literal' is the paper's preset, 'sadam' the library's default S-AdamW.
  params = {'w': jnp.linspace(-1.0, 1.0, 5)}
  loss = lambda p: jnp.sum(jnp.abs(p['w'] - 0.2))
  value, grads = jax.value_and_grad(loss)(params)
  pairs = [
    ('sadam-literal', sadam_optax.paper_sadamw(0.1, seed=3)),
    ('sadam', sadam_optax.sadamw(0.1, weight_decay=1e-2, seed=3)),
  ]
  for name, reference in pairs:
    ours = common.make_optimizer(name, 0.1, seed=3)
    got, _ = ours.update(grads, ours.init(params), params, value_fn=loss, value=value)
    want, _ = reference.update(grads, reference.init(params), params, value_fn=loss, value=value)
    np.testing.assert_array_equal(got['w'], want['w'], err_msg=name)


def test_small_batch_smoke_config_runs_end_to_end(tmp_path):
  small_batch.main(['--config', 'small_batch:smoke', '--out-dir', str(tmp_path)])
  payload = json.loads((tmp_path / 'small_batch.json').read_text())
  assert payload['config'] == dataclasses.asdict(configs.load('small_batch:smoke'))
  assert set(payload['results']['16']) == {'adamw', 'sadam', 'sadam@eff-lr'}
  assert (tmp_path / 'small_batch.png').stat().st_size > 0
