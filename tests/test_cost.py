"""What S-Adam costs beyond AdamW: state bytes, compilations, transfers, memory.

Also runs the cost and quality benchmarks end to end in their smoke settings.
"""

import functools
import json
import os
import pathlib
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import optax
import pytest

import sadam_optax
from sadam_optax import lgi

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import hlo_passes  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import rho_quality  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import settings as settings_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import step_time  # pylint: disable=g-import-not-at-top,wrong-import-position

KIB = 1024


def _problem(batch=64, dim=16, hidden=32, classes=4):
  """A two-layer ReLU network (two leaves: few PRNG call sites to compile)."""
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  params = {
    'w1': jax.random.normal(k1, (dim, hidden)) / dim**0.5,
    'w2': jax.random.normal(k2, (hidden, classes)) / hidden**0.5,
  }
  x = jax.random.normal(k3, (batch, dim))
  y = jax.random.randint(k4, (batch,), 0, classes)

  def loss(p, x, y):
    logits = jax.nn.relu(x @ p['w1']) @ p['w2']
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, loss, (x, y)


def _train_step(opt, loss):
  """A jitted step that closes value_fn over the batch; counts its traces."""
  traces = []

  @jax.jit
  def step(params, state, x, y):
    traces.append(1)
    grads = jax.grad(loss)(params, x, y)
    updates, state = opt.update(grads, state, params, value_fn=lambda p: loss(p, x, y))
    return optax.apply_updates(params, updates), state

  return step, traces


@pytest.fixture(scope='module')
def problem():
  return _problem()


@pytest.mark.parametrize(
  'options', [{}, {'probe_every': 16, 'num_probes': 2}, {'estimator': 'literal'}]
)
def test_state_is_adamw_plus_the_release_store(problem, options):
  params, _, _ = problem
  adamw = settings_lib.tree_bytes(optax.adamw(1e-3).init(params))
  sadamw = settings_lib.tree_bytes(sadam_optax.sadamw(1e-3, **options).init(params))
  # The store of the held-back steps is one array like the parameters.
  assert settings_lib.tree_bytes(params) < sadamw - adamw <= settings_lib.tree_bytes(params) + KIB
  discard = settings_lib.tree_bytes(sadam_optax.sadamw(1e-3, release=None, **options).init(params))
  assert 0 < discard - adamw <= KIB


def test_trajectory_state_holds_one_more_copy_of_params(problem):
  params, _, _ = problem
  extra = settings_lib.tree_bytes(
    sadam_optax.sadamw(1e-3, estimator='trajectory', release=None).init(params)
  ) - settings_lib.tree_bytes(optax.adamw(1e-3).init(params))
  assert settings_lib.tree_bytes(params) <= extra <= (settings_lib.tree_bytes(params) + KIB)


@pytest.mark.parametrize('options', [{}, {'probe_every': 3}])
def test_one_compilation_no_host_transfer_rho_on_device(problem, options):
  params, loss, (x, y) = problem
  opt = sadam_optax.sadamw(1e-2, **options)
  step, traces = _train_step(opt, loss)
  # Explicit transfers first; inside the loop everything stays on device.
  params, state, x, y = jax.device_put((params, opt.init(params), x, y))
  with jax.transfer_guard('disallow'):
    for _ in range(5):  # Probed and (probe_every=3) carried steps.
      params, state = step(params, state, x, y)
    rho = optax.tree.get(state, 'rho')
  assert isinstance(rho, jax.Array)
  assert len(traces) == 1
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert 0.0 <= float(rho) < 1.0


def test_step_has_no_host_callback(problem):
  params, loss, (x, y) = problem
  opt = sadam_optax.sadamw(1e-2, probe_every=2)
  step, _ = _train_step(opt, loss)
  jaxpr = str(jax.make_jaxpr(step)(params, opt.init(params), x, y))
  assert 'callback' not in jaxpr
  assert 'cond' in jaxpr  # probe_every > 1 skips the probes on device.


def _probe_temp_bytes(chunk_size, *, num_probes=8):
  """XLA's working memory of one rho estimate on a wide batch."""
  params, loss, (x, y) = _problem(batch=512, dim=8, hidden=256)
  estimate = functools.partial(
    sadam_optax.estimate_lgi,
    lambda p: loss(p, x, y),
    estimator='step',
    num_probes=num_probes,
    chunk_size=chunk_size,
  )
  compiled = jax.jit(estimate).lower(params, params, jax.random.key(0)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_chunk_size_bounds_probe_memory():
  activation = 512 * 256 * 4  # One probe's hidden layer, float32.
  vmapped, chunked = _probe_temp_bytes(8), _probe_temp_bytes(None)
  assert vmapped >= 8 * activation  # All probes' activations at once.
  assert chunked <= 4 * activation  # One probe at a time.
  assert chunked <= vmapped / 3


def test_step_time_smoke(tmp_path):
  result = step_time.main(
    ['--smoke', '--only', 'step k4 every4', 'adamw+forward', '--out-dir', str(tmp_path)]
  )
  rows = {r['name']: r for r in result['rows']}
  assert set(rows) == {'adamw', 'step k4 every4', 'adamw+forward'}
  assert rows['adamw+forward']['state_bytes_over_adamw'] == 0
  assert rows['adamw']['ratio'] == 1.0
  assert rows['step k4 every4']['ratio'] > 0
  # AdamW's state is two arrays like the parameters; the release store is one more.
  params_bytes = rows['adamw']['state_bytes'] // 2
  assert rows['step k4 every4']['state_bytes_over_adamw'] <= params_bytes + KIB
  assert rows['step k4 every4']['memory']['temp'] is not None
  saved = json.loads(next(tmp_path.glob('step_time_smoke_*.json')).read_text())
  assert saved['rows'][0]['name'] == 'adamw'
  assert '| step k4 every4 |' in next(tmp_path.glob('*.md')).read_text()


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='sets glibc malloc thresholds')
def test_malloc_thresholds_smoke(tmp_path):
  # In a child process: mallopt changes the allocator of the whole process.
  repo = pathlib.Path(__file__).resolve().parents[1]
  subprocess.run(
    [sys.executable, '-m', 'benchmarks.malloc_thresholds', '--smoke', '--out-dir', str(tmp_path)],
    cwd=repo,
    check=True,
    capture_output=True,
  )
  saved = json.loads(next(tmp_path.glob('malloc_thresholds_smoke_*.json')).read_text())
  assert list(saved['phases']) == ['glibc defaults', 'thresholds set']
  for phase in saved['phases'].values():
    assert set(phase) == {
      'adamw+forward',
      'uphill',
      'uphill no-release',
      'uphill every4',
      'uphill every4 (two steps)',
    }
    assert all(r['median'] > 0 for r in phase.values())
  assert '| uphill | ' in next(tmp_path.glob('*.md')).read_text()


@pytest.mark.slow
def test_gpu_session_script_tiny(tmp_path):
  """The one-call GPU script, end to end on a CPU (its two steps run tiny in the default suite)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(__file__).resolve().parent.parent
  env = {k: v for k, v in os.environ.items() if k != 'SADAM_STEP_LOOP'}
  env.update(
    TINY='1',
    OUT=str(tmp_path / 'out'),
    STUDY_DIR=str(tmp_path / 'study'),
    PATH=f'{pathlib.Path(sys.executable).parent}:{os.environ["PATH"]}',
  )
  done = subprocess.run(
    ['bash', 'benchmarks/gpu_session.sh'], cwd=root, env=env, capture_output=True, text=True
  )
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  assert '14 done, 0 partial' in done.stdout
  out = tmp_path / 'out'
  assert list(out.glob('step_time_tiny_*.json'))
  with tarfile.open(out / 'study.tar.gz') as tar:
    names = tar.getnames()
  assert sum(n.endswith('.json') for n in names) == 14


def test_gpu_step_time_tiny(tmp_path):
  from benchmarks import gpu_step_time  # pylint: disable=g-import-not-at-top

  result = gpu_step_time.main(['--tiny', '--out-dir', str(tmp_path)])
  rows = {r['name']: r for r in result['rows']}
  assert list(rows) == [
    'adamw',
    'sam',
    'adamw+forward',
    'uphill',
    'uphill every4 (two steps)',
    'step k2 chunk1',
  ]
  assert all(r['ratio'] > 0 and 'error' not in r for r in rows.values())
  # Both compiled steps of the two-step row ran, in the proportion 1:3.
  params_bytes = rows['adamw']['state_bytes'] // 2  # The release store: one more such array.
  assert rows['uphill every4 (two steps)']['state_bytes_over_adamw'] <= params_bytes + KIB
  assert result['reps'] == 2 and result['steps'] % 4 == 0
  saved = json.loads(next(tmp_path.glob('step_time_tiny_*.json')).read_text())
  assert [r['name'] for r in saved['rows']] == list(rows)
  assert '| uphill every4 (two steps) |' in next(tmp_path.glob('step_time_tiny_*.md')).read_text()


def test_two_step_runner_alternates_probed_and_carried_steps():
  task = step_time.mlp_task(batch=8, in_dim=16, hidden=(32,))
  setting = settings_lib.Setting(estimator='uphill', probe_every=4, two_steps=True)
  lowered, runner = step_time.lower_setting(
    task, setting, learning_rate=1e-3, weight_decay=1e-4, lam=2.0
  )
  runner = step_time._compile(lowered, runner)  # pylint: disable=protected-access
  assert runner.error is None
  probed, carried = [], []
  every = runner.compiled
  every.probed = _counting(every.probed, probed)
  every.carried = _counting(every.carried, carried)
  runner.run(task.batch, 8)
  assert (len(probed), len(carried)) == (2, 6) and runner.count == 8


def _counting(fn, calls):
  def counted(*args):
    calls.append(1)
    return fn(*args)

  return counted


def test_rho_quality_smoke(tmp_path):
  result = rho_quality.main(
    [
      '--steps',
      '30',
      '--seeds',
      '0',
      '--batch',
      '50',
      '--only',
      'step k2',
      'secant',
      '--out-dir',
      str(tmp_path),
    ]
  )
  agg = result['aggregate']
  # Two dense references with independent probes agree: rho is reproducible.
  assert agg['step k16 dense B']['spearman'][0] > 0.8
  assert agg['step k16 dense A']['spearman'][0] == pytest.approx(1.0)
  for name in ('step k2', 'secant'):
    assert -1.0 <= agg[name]['spearman'][0] <= 1.0
    assert 0.0 <= agg[name]['mean_rho'][0] < 1.0
  assert (tmp_path / 'rho_quality.md').exists()


def _flops(fn, *args):
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (analysis[0] if isinstance(analysis, list) else analysis)['flops']


def test_secant_costs_one_forward_pass_in_flops():
  params, loss, (x, y) = _problem(batch=256, dim=64, hidden=256)
  loss_of = lambda p: loss(p, x, y)

  def step_flops(opt, **kw):
    def step(p, s):
      value, grads = jax.value_and_grad(loss_of)(p)
      extra = {k: value if v == 'value' else v for k, v in kw.items()}
      return opt.update(grads, s, p, **extra)

    return _flops(step, params, opt.init(params))

  adamw = step_flops(optax.adamw(1e-3))
  with_value = step_flops(sadam_optax.sadamw(1e-3), value_fn=loss_of, value='value')
  without = step_flops(sadam_optax.sadamw(1e-3), value_fn=loss_of)
  forward = _flops(loss_of, params)
  assert forward < with_value - adamw <= 1.2 * forward
  # Under jit XLA merges the second forward pass at params with the train
  # step's own: value= saves nothing there (it does outside jit).
  assert without == with_value


def test_cpu_loops_smoke(tmp_path):
  from benchmarks import cpu_loops  # pylint: disable=g-import-not-at-top

  result = cpu_loops.main(['--models', 'cnn1d', '--reps', '1', '--out-dir', str(tmp_path)])
  row = result['rows'][0]
  assert all(row[k] > 0 for k in ('plain', 'scan', 'scan_unrolled', 'runs_vmapped', 'runs_looped'))
  assert '| cnn1d (20 runs) |' in next(tmp_path.glob('cpu_loops_*.md')).read_text()


def test_compile_time_smoke(tmp_path):
  from benchmarks import compile_time  # pylint: disable=g-import-not-at-top

  result = compile_time.main(
    ['--models', 'tiny', '--settings', 'uphill', 'trajectory', '--reps', '1']
    + ['--out-dir', str(tmp_path)]
  )
  rows = {r['setting']: r for r in result['models'][0]['rows']}
  assert set(rows) == {'adamw', 'uphill', 'trajectory'}
  # AdamW's program is the smallest: the probe adds to it.
  assert rows['adamw']['fusions'] < min(rows['uphill']['fusions'], rows['trajectory']['fusions'])
  assert all(r['compile_s'] > 0 for r in rows.values())
  assert '| uphill |' in next(tmp_path.glob('compile_time_*.md')).read_text()


@pytest.mark.parametrize('estimator', lgi.ESTIMATORS)
def test_compiled_step_grows_linearly_with_the_number_of_leaves(estimator):
  """No scalar that every leaf reads may be a cheap function of per-leaf sums.

  XLA copies cheap producers into each consumer's kernel: a compare or
  select on a sum over the leaves drags the whole chain of per-leaf sums into
  every leaf's kernel, a program (and compile time) quadratic in the number
  of leaves. The step's norm and its inverse did, in 'trajectory' (13.19x
  AdamW's compile time at 302 leaves) and in 'step' with its probes vmapped
  (26.95x; benchmarks/results/compile_time_cpu2-52cd3ba.md).
  """

  def loss(ws):  # A deep linear-ReLU chain, one 4x4 leaf a layer.
    x = jnp.ones((2, 4))
    for w in ws:
      x = jax.nn.relu(x @ w)
    return jnp.sum(x)

  # chunk_size=8 vmaps the probes of 'step' and 'literal' (a loop keeps the
  # norm out of the leaves' kernels); the other readings ignore it.
  opt = sadam_optax.sadamw(1e-2, estimator=estimator, chunk_size=8)

  def lines(n):
    params = [jnp.eye(4) * 1.1] * n

    def step(params, state):
      value, grads = jax.value_and_grad(loss)(params)
      updates, state = opt.update(grads, state, params, value_fn=loss, value=value)
      return optax.apply_updates(params, updates), state

    return jax.jit(step).lower(params, opt.init(params)).compile().as_text().count('\n')

  a, b, c = lines(6), lines(12), lines(18)
  # Linear: equal increments (before the fix: 1.17 for 'trajectory', 1.06
  # for 'step'; after it at most 1.00).
  assert c - b <= 1.03 * (b - a), (a, b, c)


def test_forward_floor_costs_adamw_plus_one_forward_pass():
  # The floor row of the step-time table must really run its forward pass
  # (it is an output, so XLA cannot drop it).
  task = step_time.mlp_task(batch=16, hidden=(32,))
  params, model_state = task.init(jax.random.key(0))

  def flops(kind):
    setting = settings_lib.Setting(kind=kind)
    opt = settings_lib.make_optimizer(setting, learning_rate=1e-3, weight_decay=1e-2)
    step = step_time.make_train_step(task, setting, opt)
    return _flops(step, params, model_state, opt.init(params), *task.batch)

  forward = _flops(lambda p: task.loss(p, model_state, *task.batch)[0], params)
  extra = flops(settings_lib.FORWARD_FLOOR) - flops(settings_lib.ADAMW)
  assert 0.9 * forward <= extra <= 1.3 * forward


def _passes(opt, *, floor=False, opcodes=('fusion',), **update_kwargs):
  """Passes over the weights in the compiled train step (benchmarks.hlo_passes).

  A two-layer ReLU network whose weight shapes no activation shares (batch 32);
  the step donates the parameters and the state, as training loops do.
  ``update_kwargs`` go to ``opt.update`` (``probe_now=``).
  """
  params, loss, (x, y) = _problem(batch=32, dim=48, hidden=256, classes=8)

  def step(p, s, x, y):
    value, grads = jax.value_and_grad(loss)(p, x, y)
    updates, s = opt.update(
      grads, s, p, value_fn=lambda q: loss(q, x, y), value=value, grad=grads, **update_kwargs
    )
    new = optax.apply_updates(p, updates)
    return new, s, (loss(new, x, y) if floor else value)

  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt.init(params), x, y).compile()
  counts = hlo_passes.count_passes(
    compiled.as_text(), ['f32[48,256]', 'f32[256,8]'], opcodes=opcodes
  )
  return counts['writes'], counts['reductions']


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='counts XLA:CPU kernels')
def test_probe_adds_two_weight_sized_passes_to_the_floor():
  # XLA:CPU writes every array with several consumers in a kernel of its own.
  # AdamW + one forward pass (the floor) writes mu, nu and the new weights in
  # fused kernels (the gradient in its dot); the probe adds Adam's direction
  # (read by the end point, the reductions and the braked update) and the end
  # point, never a scaled copy of the step, and one two-output reduction per
  # leaf; inside lax.cond (probe_every > 1) too, where the scaled step used to
  # be one more pass.
  adamw = optax.with_extra_args_support(optax.adamw(1e-3))
  assert _passes(adamw, floor=True) == (3, 0)  # Fused kernels: mu, nu, the weights.
  assert _passes(sadam_optax.sadamw(1e-3, release=None)) == (5, 1)
  assert _passes(sadam_optax.sadamw(1e-3, probe_every=4, release=None)) == (5, 1)
  # The release writes its store once more per leaf, and nothing else.
  assert _passes(sadam_optax.sadamw(1e-3)) == (6, 1)
  assert _passes(sadam_optax.sadamw(1e-3, probe_every=4)) == (6, 1)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='counts XLA:CPU kernels')
@pytest.mark.parametrize('options', [{}, {'release': None}, {'rule': 'compound'}])
def test_step_without_the_probe_makes_adamws_passes(options):
  # every_k's carried step (probe_now=False) leaves the store alone: it makes
  # AdamW's passes over the weights, the damping a scalar folded into them.
  adamw = optax.with_extra_args_support(optax.adamw(1e-3))
  carried = _passes(sadam_optax.sadamw(1e-3, **options), probe_now=False)
  assert carried == _passes(adamw) == (3, 0)
  assert _passes(sadam_optax.sadamw(1e-3, **options), probe_now=True)[0] > 3


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='counts XLA:CPU kernels')
@pytest.mark.parametrize('waits', [True, False])
def test_donated_store_is_updated_in_place(waits):
  # The braked step is read from the new store, so the old one has a single
  # reader and XLA writes the new store over it; two readers of it (the 0.4.0
  # code) made XLA copy the store first, one more pass over the parameters.
  opt = sadam_optax.sadamw(1e-3, release_waits=waits)
  writes, _ = _passes(opt, opcodes=('copy',))
  assert writes == 0
  # release=1 cannot be read back from the new store (it is emptied): two readers.
  assert (
    _passes(sadam_optax.sadamw(1e-3, release=1.0, release_waits=waits), opcodes=('copy',))[0] == 1
  )


def test_eager_step_smoke_compiles_nothing_after_warm_up(tmp_path):
  from benchmarks import eager_step  # pylint: disable=g-import-not-at-top

  result = eager_step.main(
    ['--estimators', 'uphill', 'literal', '--steps', '2', '--reps', '1', '--out-dir', str(tmp_path)]
  )
  rows = {(r['library'], r['setting']): r for r in result['rows']}
  assert set(rows) == {('optax', 'adamw'), ('working tree', 'uphill'), ('working tree', 'literal')}
  assert all(r['compiles_per_step'] == 0 for r in rows.values())
  assert list(tmp_path.glob('eager_step_*.md'))
