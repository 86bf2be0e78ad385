"""Step time of two versions of the library, side by side in one run.

A change to the library's step cost is measured against the commit before it,
not against another run's table: on a shared machine the load moves between
runs more than a change moves the ratio. This copies ``sadam_optax`` as it is
at ``--baseline`` (a git commit) into a temporary folder, builds S-AdamW from
both versions on the same model, and times them with AdamW and the forward
floor as :mod:`benchmarks.step_time` does: paired blocks (every setting right
after a block of AdamW, in a new random order each repetition), the median of
the ratios.

Usage (from the repository root)::

  python -m benchmarks.ab_library --model mlp --baseline 63f29d2 \\
      --settings '' probe_every=4 two=4

Each ``--settings`` entry is a comma-separated list of ``sadamw`` keywords
(``''``: the defaults; ``two=4``: probe every 4th step with two compiled
steps, :func:`sadam_optax.every_k`). Prints a table and writes
``benchmarks/results/ab_library_<model>_<tag>.md``.
"""

import argparse
import importlib
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np

from benchmarks import settings as settings_lib
from benchmarks import step_time

REPO = pathlib.Path(__file__).resolve().parents[1]


def checkout_library(commit: str, into: pathlib.Path) -> pathlib.Path:
  """``sadam_optax`` at ``commit``, written under ``into``; returns ``into``."""
  files = subprocess.run(
    ['git', 'ls-tree', '-r', '--name-only', commit, 'sadam_optax'],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.split()
  for name in files:
    path = into / name
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = subprocess.run(
      ['git', 'show', f'{commit}:{name}'], cwd=REPO, capture_output=True, check=True
    ).stdout
    path.write_bytes(blob)
  return into


def import_library(path: Optional[pathlib.Path]) -> Any:
  """A fresh import of ``sadam_optax`` from ``path`` (None: the working tree)."""
  for name in [m for m in sys.modules if m == 'sadam_optax' or m.startswith('sadam_optax.')]:
    del sys.modules[name]
  sys.path.insert(0, str(path or REPO))
  try:
    return importlib.import_module('sadam_optax')
  finally:
    sys.path.pop(0)


def parse_settings(text: str) -> dict[str, Any]:
  pairs = [kv.split('=', 1) for kv in text.split(',') if kv]
  return {k: int(v) if v.lstrip('-').isdigit() else v for k, v in pairs}


def compile_sadamw(library: Any, task: step_time.Task, options: dict[str, Any]) -> step_time.Runner:
  """One compiled S-AdamW train step of ``library`` (a two-step pair with ``two``)."""
  options = dict(options)
  two = options.pop('two', 0)
  opt = library.sadamw(1e-3, weight_decay=1e-4, lam=2.0, **options)
  setting = settings_lib.Setting(
    estimator=options.get('estimator', 'uphill'),
    probe_every=two or options.get('probe_every', 1),
    two_steps=bool(two),
  )
  params, model_state = task.init(jax.random.key(0))
  state = opt.init(params)
  train_step = step_time.make_train_step(task, setting, opt)
  args = (params, model_state, state, *task.batch)
  if two:
    every = library.every_k(train_step, two, donate_argnums=(0, 1, 2))
    compiled = step_time.probing.EveryK(
      every.probed.lower(*args).compile(), every.carried.lower(*args).compile(), k=two, offset=0
    )
  else:
    compiled = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(*args).compile()
  return step_time.Runner(
    setting=setting,
    compiled=compiled,
    carry=(params, model_state, state),
    compile_s=0.0,
    memory={},
    state_bytes=0,
  )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', choices=('mlp', 'resnet18'), default='mlp')
  p.add_argument('--baseline', required=True, help='git commit of the other version')
  p.add_argument('--settings', nargs='+', default=[''], help="sadamw keywords; '' = defaults")
  p.add_argument('--reps', type=int, default=9)
  p.add_argument('--steps', type=int, default=None, help='steps per block (32 MLP, 16 ResNet)')
  p.add_argument('--tag', default='cpu2')
  p.add_argument('--out-dir', type=pathlib.Path, default=step_time.RESULTS)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, list[float]]:
  args = parse_args(argv)
  if args.model == 'mlp':
    task = step_time.mlp_task()
  else:
    task = step_time.resnet18_task(batch=16, width=16)
  steps = args.steps or (32 if args.model == 'mlp' else 16)
  entries = []
  for kind in (settings_lib.ADAMW, settings_lib.FORWARD_FLOOR):
    lowered, runner = step_time.lower_setting(
      task, settings_lib.Setting(kind=kind), learning_rate=1e-3, weight_decay=1e-4, lam=2.0
    )
    entries.append((kind, step_time._compile(lowered, runner)))  # pylint: disable=protected-access
  load_start = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    versions = {
      args.baseline: checkout_library(args.baseline, pathlib.Path(tmp)),
      'working tree': None,
    }
    for label, path in versions.items():
      library = import_library(path)
      for text in args.settings:
        name = f'{text or "default"} @ {label}'
        entries.append((name, compile_sadamw(library, task, parse_settings(text))))
  import_library(None)
  for _, runner in entries:
    runner.run(task.batch, steps)
  rng = np.random.default_rng(0)
  base = entries[0][1]
  ratios = {name: [] for name, _ in entries}
  for _ in range(args.reps):
    for i in rng.permutation(len(entries)):
      name, runner = entries[i]
      reference = base.run(task.batch, steps)
      ratios[name].append(runner.run(task.batch, steps) / reference)
  command = ' '.join(sys.argv[1:] if argv is None else argv)
  lines = [
    f'# Two versions of the library side by side: {task.description}',
    '',
    f'{step_time.hardware()["cpu"]}, {len(os.sched_getaffinity(0))} cores, jax {jax.__version__}; '
    f'load average at the start {", ".join(f"{x:.1f}" for x in load_start)}, at the end '
    f'{", ".join(f"{x:.1f}" for x in os.getloadavg())}. '
    f'{args.reps} paired repetitions of {steps} steps; x AdamW: median [min, max].',
    f'Command: `{step_time.env_prefix()}python -m benchmarks.ab_library {command}`',
    f'({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})',
    '',
    '| setting | x AdamW | [min, max] |',
    '|---|---|---|',
  ]
  for name, _ in entries:
    r = np.array(ratios[name])
    lines.append(f'| {name} | {np.median(r):.3f} | [{r.min():.2f}, {r.max():.2f}] |')
  text = '\n'.join(lines) + '\n'
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / f'ab_library_{task.name}_{args.tag}.md').write_text(text)
  print(text)
  return ratios


if __name__ == '__main__':
  main()
