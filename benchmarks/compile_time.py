"""Compile time of the train step: AdamW against S-AdamW's readings.

Each setting's full train step (gradient, optimizer update, apply; the same
function :mod:`benchmarks.step_time` times) is traced and lowered
(``jax.jit(step).lower``), then compiled (``.compile()``), after
``jax.clear_caches()`` so that nothing is reused from an earlier setting. In
each repetition the settings run in a new random order; a setting's ratio is
the median over repetitions of its trace-lower-compile time over AdamW's in
the same repetition. The compiled HLO's size (lines of its text, number of
fusions: what XLA has to generate code for) does not depend on the machine's
load, and shows how the cost grows with the number of parameter leaves: the
optimizer's work is per leaf, whatever a leaf's size.

Models: ``mlp`` (784-512x3-10, 8 leaves), ``resnet18`` (CIFAR stem, width
16, batch 16: 62 leaves), ``deep_mlp`` (150 hidden layers of width 32: 302
leaves, as many as a 24-layer transformer has).

Usage (from the repository root)::

  python -m benchmarks.compile_time
  python -m benchmarks.compile_time --models deep_mlp --settings adamw trajectory 'step k2' \
    --library 52cd3ba   # the library at a commit (the benchmark as it is)

Writes ``benchmarks/results/compile_time_<hardware>[-<tag>].json`` and ``.md``
(the tag defaults to the commit given as ``--library``).
"""

import argparse
import dataclasses
import os
import pathlib
import random
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
import tqdm

import sadam_optax

from benchmarks import settings as settings_lib
from benchmarks import step_time

RESULTS = pathlib.Path(__file__).resolve().parent / 'results'

TASKS = {
  'mlp': lambda: step_time.mlp_task(batch=32),
  'resnet18': lambda: step_time.resnet18_task(batch=16, width=16),
  'deep_mlp': lambda: dataclasses.replace(
    step_time.mlp_task(batch=32, in_dim=32, hidden=(32,) * 150),
    description='MLP 32-32x150-10, batch 32, float32',
  ),
  # For the tests: seconds on a CPU.
  'tiny': lambda: step_time.mlp_task(batch=4, in_dim=8, hidden=(8, 8)),
}

SETTINGS = {
  'adamw': settings_lib.Setting(kind=settings_lib.ADAMW),
  'adamw+forward': settings_lib.Setting(kind=settings_lib.FORWARD_FLOOR),
  'uphill': settings_lib.Setting(estimator='uphill'),  # The default.
  'uphill every4 (two steps)': settings_lib.Setting(
    estimator='uphill', probe_every=4, two_steps=True
  ),
  'secant': settings_lib.Setting(estimator='secant'),
  'trajectory': settings_lib.Setting(estimator='trajectory'),
  'step k2': settings_lib.Setting(num_probes=2),
  'literal k8': settings_lib.Setting(estimator='literal', num_probes=8),  # The paper's.
}


def measure(
  task: step_time.Task, setting: settings_lib.Setting, params: Any, model_state: Any
) -> dict[str, Any]:
  """Seconds to trace and lower, to compile, and the compiled HLO's size.

  A two-step setting (:func:`sadam_optax.every_k`) compiles both steps: the
  times and sizes are their sums.
  """
  optimizer = settings_lib.make_optimizer(setting, learning_rate=1e-3, weight_decay=1e-4)
  opt_state = settings_lib.init_state(setting, optimizer, params)
  train_step = step_time.make_train_step(task, setting, optimizer)
  args = (params, model_state, opt_state, *task.batch)
  jax.clear_caches()
  start = time.perf_counter()
  if setting.two_steps:
    every = sadam_optax.every_k(train_step, setting.probe_every)
    lowered = (every.probed.lower(*args), every.carried.lower(*args))
  else:
    lowered = (jax.jit(train_step).lower(*args),)
  traced = time.perf_counter()
  texts = [low.compile().as_text() for low in lowered]
  done = time.perf_counter()
  return dict(
    lower_s=traced - start,
    compile_s=done - traced,
    hlo_lines=sum(t.count('\n') for t in texts),
    fusions=sum(t.count(' fusion(') for t in texts),
  )


def run_model(
  model: str, names: Sequence[str], *, reps: int, seed: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """``(model description, one row per setting)`` over ``reps`` repetitions."""
  task = TASKS[model]()
  params, model_state = task.init(jax.random.key(0))
  info = dict(
    model=model,
    description=task.description,
    leaves=len(jax.tree.leaves(params)),
    parameters=int(sum(x.size for x in jax.tree.leaves(params))),
  )
  order = random.Random(seed)
  runs = {name: [] for name in names}
  for _ in tqdm.trange(reps, desc=f'{model} repetitions'):
    shuffled = list(names)
    order.shuffle(shuffled)
    for name in shuffled:
      runs[name].append(measure(task, SETTINGS[name], params, model_state))
  base = [r['lower_s'] + r['compile_s'] for r in runs['adamw']]
  rows = []
  for name in names:
    total = [r['lower_s'] + r['compile_s'] for r in runs[name]]
    rows.append(
      dict(
        setting=name,
        options=SETTINGS[name].options(),
        lower_s=float(np.median([r['lower_s'] for r in runs[name]])),
        compile_s=float(np.median([r['compile_s'] for r in runs[name]])),
        ratio=float(np.median(np.divide(total, base))),
        ratio_range=[float(np.min(np.divide(total, base))), float(np.max(np.divide(total, base)))],
        hlo_lines=runs[name][0]['hlo_lines'],
        fusions=runs[name][0]['fusions'],
      )
    )
  return info, rows


def markdown(result: dict[str, Any]) -> str:
  lines = [
    '# Compile time of the train step',
    '',
    step_time.hardware_line(result['hardware']),
    f'Command: `{result["command"]}`; sadam_optax: {result["library"]}.',
    '',
    'Seconds to trace and lower, and to compile, the whole jitted train step (median of '
    f'{result["reps"]} repetitions, settings in a new random order each time, caches cleared '
    'before each); x AdamW: the median of the ratios to AdamW in the same repetition [min, max]. '
    'HLO lines and fusions: the size of the compiled program (two-step settings: both steps).',
    '',
  ]
  for model in result['models']:
    lines += [
      f'## {model["model"]}: {model["description"]}; {model["leaves"]} leaves, '
      f'{model["parameters"]:,} parameters',
      '',
      '| setting | trace+lower s | compile s | x AdamW | HLO lines | fusions |',
      '|---|---|---|---|---|---|',
    ]
    for r in model['rows']:
      lo, hi = r['ratio_range']
      lines.append(
        f'| {r["setting"]} | {r["lower_s"]:.2f} | {r["compile_s"]:.2f} | '
        f'{r["ratio"]:.2f} [{lo:.2f}, {hi:.2f}] | {r["hlo_lines"]:,} | {r["fusions"]:,} |'
      )
    lines.append('')
  return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--models', nargs='+', default=['mlp', 'resnet18', 'deep_mlp'], choices=TASKS)
  p.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=SETTINGS)
  p.add_argument('--reps', type=int, default=3)
  p.add_argument('--tag', default='', help='suffix of the results files')
  p.add_argument('--out-dir', type=pathlib.Path, default=RESULTS)
  p.add_argument('--library', default='', help='measure sadam_optax at this git commit')
  # Set by --library for the process it starts.
  p.add_argument('--running-library', default='', help=argparse.SUPPRESS)
  p.add_argument('--recorded-command', default='', help=argparse.SUPPRESS)
  return p.parse_args(argv)


def run_at_commit(args: argparse.Namespace, argv: Sequence[str]) -> None:
  """Runs this benchmark in a process that imports ``sadam_optax`` at ``args.library``."""
  from benchmarks import ab_library  # pylint: disable=g-import-not-at-top

  # argv without --library and its value.
  rest = [
    a
    for i, a in enumerate(argv)
    if a != '--library' and not a.startswith('--library=') and argv[i - 1 : i] != ['--library']
  ]
  with tempfile.TemporaryDirectory() as tmp:
    ab_library.checkout_library(args.library, pathlib.Path(tmp))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, str(ab_library.REPO)]))
    subprocess.run(
      [sys.executable, '-m', 'benchmarks.compile_time', *rest]
      + ['--running-library', args.library, '--out-dir', str(args.out_dir.resolve())]
      + ['--recorded-command', 'python -m benchmarks.compile_time ' + shlex.join(argv)]
      + ([] if args.tag else ['--tag', args.library]),
      cwd=tmp,
      env=env,
      check=True,
    )


def main(argv: Optional[Sequence[str]] = None) -> Optional[dict[str, Any]]:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  if args.library:
    run_at_commit(args, argv)
    return None
  names = ['adamw'] + [s for s in args.settings if s != 'adamw']
  hw = step_time.hardware()
  models = []
  for model in args.models:
    info, rows = run_model(model, names, reps=args.reps)
    models.append(dict(info, rows=rows))
  result = dict(
    hardware=hw,
    reps=args.reps,
    models=models,
    library=args.running_library or 'working tree',
    command=args.recorded_command or 'python -m benchmarks.compile_time ' + shlex.join(argv),
  )
  step_time.write_named(result, args.out_dir, 'compile_time', args.tag, markdown(result))
  return result


if __name__ == '__main__':
  main()
