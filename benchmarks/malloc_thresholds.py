"""Step time under glibc's default malloc and with its thresholds set.

XLA:CPU allocates a step's buffers on every call. With its default, dynamic
thresholds glibc may hand large blocks back to the system after a step and
page-fault them in again on the next one; setting a threshold (``mallopt``, or
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment)
turns that adjustment off for the whole process. This times the same compiled
train steps twice in one process, first under the defaults and then after
``mallopt`` (glibc cannot go back to its dynamic mode), as
:mod:`benchmarks.step_time` times them: paired blocks (every setting right
after a block of AdamW, in a new random order each repetition), the median of
the ratios.

Usage (from the repository root)::

  python -m benchmarks.malloc_thresholds --model resnet18 --reps 7

Writes ``benchmarks/results/malloc_thresholds_<model>_<tag>.{json,md}``.
Linux with glibc only.
"""

import argparse
import ctypes
import json
import os
import pathlib
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks import settings as settings_lib
from benchmarks import step_time

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# Set values: blocks up to 1 GiB come from the heap, which is never trimmed.
MMAP_THRESHOLD = 2**30
TRIM_THRESHOLD = 2**31 - 1
SETTINGS = (
  'adamw+forward',
  'uphill',
  'uphill no-release',
  'uphill every4',
  'uphill every4 (two steps)',
)


def set_thresholds() -> None:
  """Fixes glibc's mmap and trim thresholds for this process (no way back)."""
  libc = ctypes.CDLL('libc.so.6')
  for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
    if libc.mallopt(param, value) != 1:
      raise RuntimeError(f'mallopt({param}, {value}) failed.')


def timed(runners: dict[str, step_time.Runner], task: Any, *, reps: int, steps: int) -> dict:
  """x AdamW per setting: the median of paired ratios, and their min and max."""
  base = runners['adamw']
  for runner in runners.values():
    runner.run(task.batch, steps)  # Warm-up under this phase's allocator.
  ratios = {name: [] for name in runners if name != 'adamw'}
  for rep in range(reps):
    for name in np.random.default_rng(rep).permutation(list(ratios)):
      reference = base.run(task.batch, steps)
      ratios[name].append(runners[name].run(task.batch, steps) / reference)
  return {
    name: dict(median=float(np.median(r)), min=float(np.min(r)), max=float(np.max(r)))
    for name, r in ratios.items()
  }


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', choices=('mlp', 'resnet18'), default='resnet18')
  p.add_argument('--reps', type=int, default=7)
  p.add_argument('--steps', type=int, default=None, help='steps per block (32 MLP, 16 ResNet)')
  p.add_argument('--smoke', action='store_true', help='a tiny MLP, 1 repetition of 2 steps')
  p.add_argument('--tag', default='cpu2')
  p.add_argument('--out-dir', type=pathlib.Path, default=step_time.RESULTS)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  args = parse_args(argv)
  if args.smoke:
    task, steps, reps = step_time.mlp_task(batch=8, in_dim=16, hidden=(16,)), 2, 1
  elif args.model == 'mlp':
    task, steps, reps = step_time.mlp_task(), args.steps or 32, args.reps
  else:
    task, steps, reps = step_time.resnet18_task(batch=16, width=16), args.steps or 16, args.reps
  by_name = {s.name: s for s in settings_lib.cost_settings()}
  runners = {}
  for name in ('adamw', *SETTINGS):
    lowered, runner = step_time.lower_setting(
      task, by_name[name], learning_rate=1e-3, weight_decay=1e-4, lam=2.0
    )
    runners[name] = step_time._compile(lowered, runner)  # pylint: disable=protected-access
  load_start = os.getloadavg()
  phases = {'glibc defaults': timed(runners, task, reps=reps, steps=steps)}
  set_thresholds()
  phases['thresholds set'] = timed(runners, task, reps=reps, steps=steps)
  command = (
    step_time.env_prefix()
    + 'python -m benchmarks.malloc_thresholds '
    + ' '.join(sys.argv[1:] if argv is None else argv)
  )
  result = dict(
    task=task.description,
    hardware=step_time.hardware(),
    command=command,
    date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
    load_average=dict(start=load_start, end=os.getloadavg()),
    reps=reps,
    steps=steps,
    thresholds=dict(mmap=MMAP_THRESHOLD, trim=TRIM_THRESHOLD),
    phases=phases,
  )
  stem = f'malloc_thresholds_{"smoke" if args.smoke else task.name}_{args.tag}'
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / f'{stem}.json').write_text(json.dumps(result, indent=1))
  text = markdown(result)
  (args.out_dir / f'{stem}.md').write_text(text)
  print(text)
  return result


def markdown(result: dict[str, Any]) -> str:
  phases = result['phases']
  names = list(next(iter(phases.values())))
  load = result['load_average']
  lines = [
    f'# glibc malloc thresholds and the step time: {result["task"]}',
    '',
    f'{result["hardware"]["cpu"]}, jax {result["hardware"]["jax"]}; load average at the start '
    f'{", ".join(f"{x:.1f}" for x in load["start"])}, at the end '
    f'{", ".join(f"{x:.1f}" for x in load["end"])}. {result["reps"]} paired repetitions of '
    f'{result["steps"]} steps per phase; x AdamW of the same phase: median [min, max]. The same '
    "compiled steps, first under glibc's dynamic thresholds, then with mmap threshold "
    f'{result["thresholds"]["mmap"]} and trim threshold {result["thresholds"]["trim"]} (mallopt).',
    f'Command: `{result["command"]}` ({result["date"]})',
    '',
    '| setting | ' + ' | '.join(phases) + ' |',
    '|---|' + '---|' * len(phases),
  ]
  for name in names:
    cells = [
      f'{p[name]["median"]:.3f} [{p[name]["min"]:.2f}, {p[name]["max"]:.2f}]'
      for p in phases.values()
    ]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  main()
