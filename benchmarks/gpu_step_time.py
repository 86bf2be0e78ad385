"""The GPU cost table in one call of at most 5 minutes.

ResNet-18 (CIFAR stem, width 64), batch 256, float32, one GPU: AdamW, the
forward floor (``adamw+forward``: AdamW plus one loss-only forward pass at the
new parameters), the default S-AdamW (``'uphill'``, one forward pass per
step), the default probed every 4th step with two compiled train steps
(:func:`sadam_optax.every_k`; the other three steps compile without the
probe), ``'step'`` with 2 probes one at a time (``step k2 chunk1``, the
estimator's own default) and SAM. Timed by :mod:`benchmarks.step_time`
(interleaved blocks, each right after a block of AdamW; compiled ahead of
time, one compilation at a time), so the JSON and markdown are the CPU runs'.

Usage (from the repository root, on a machine with one GPU and a CUDA jax)::

  python -m benchmarks.gpu_step_time                 # about 2 to 3 minutes
  python -m benchmarks.gpu_step_time --tiny          # CPU, seconds (tests)

Writes ``benchmarks/results/step_time_resnet18_gpu.json`` and ``.md`` (the
hardware is recorded inside); ``--tiny`` writes ``step_time_tiny_<hw>.*``.
"""

import argparse
import os
import pathlib
import sys
import time
from typing import Any, Optional, Sequence

import jax

from benchmarks import settings as settings_lib
from benchmarks import step_time

# The rows, by their names in benchmarks.settings (AdamW always runs).
SETTINGS = ('sam', 'adamw+forward', 'uphill', 'uphill every4 (two steps)', 'step k2 chunk1')
# Seconds after the start past which no timing repetition starts: warm-up,
# tracing and compiling take about 1 to 2 minutes on an H100, a repetition
# about 5 s, so the whole call stays within 5 minutes.
DEADLINE_S = 210.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument(
    '--tiny',
    action='store_true',
    help='the same rows on a tiny MLP (16-32-10, batch 8), 2 '
    'repetitions of 4 steps: seconds on a CPU (for the tests; '
    'a ResNet-18 of any width compiles for minutes there)',
  )
  p.add_argument('--reps', type=int, default=7)
  p.add_argument('--steps', type=int, default=32, help='steps per timed block, a multiple of 4')
  p.add_argument('--deadline', type=float, default=DEADLINE_S)
  p.add_argument('--tag', default='gpu', help='hardware tag of the files')
  p.add_argument('--out-dir', type=pathlib.Path, default=step_time.RESULTS)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """Builds, compiles and times the rows; writes and returns the result."""
  args = parse_args(argv)
  start = time.perf_counter()
  if args.tiny:
    task = step_time.mlp_task(batch=8, in_dim=16, hidden=(32,))
    args.reps, args.steps = 2, 4
  else:
    task = step_time.resnet18_task(batch=256, width=64)
    if jax.devices()[0].platform != 'gpu':
      print('No GPU: this is the GPU table (use --tiny on a CPU).', file=sys.stderr)
  names = ('adamw',) + SETTINGS
  settings = [s for s in settings_lib.cost_settings() if s.name in names]
  assert len(settings) == len(names), [s.name for s in settings]
  if args.steps % 4:
    raise SystemExit(f'--steps {args.steps} must be a multiple of 4.')
  hw = step_time.hardware()
  print(f'{task.description} on {hw["device"]}', flush=True)
  runners = step_time.build_runners(
    task, settings, workers=1, learning_rate=1e-3, weight_decay=1e-4, lam=2.0
  )
  for r in runners:
    if r.error:
      print(f'{r.setting.name} failed to compile: {r.error}', flush=True)
  live = [r for r in runners if not r.error]
  step_time.warm_up(live, task.batch)
  stem = (
    'step_time_tiny_' + step_time.hardware_tag(hw)
    if args.tiny
    else f'step_time_{task.name}_{args.tag}'
  )
  command = 'python -m benchmarks.gpu_step_time ' + ' '.join(sys.argv[1:] if argv is None else argv)
  result = dict(
    task=task.description,
    model=task.name,
    hardware=hw,
    command=command,
    reps=0,
    steps=args.steps,
    lr=1e-3,
    weight_decay=1e-4,
    lam=2.0,
    rows=[],
  )

  def save():
    result.update(
      reps=len(live[0].ratios),
      rows=step_time.summarize(runners),
      seconds=time.perf_counter() - start,
      load_average_end=list(os.getloadavg()),
    )
    step_time.write(result, args.out_dir, stem)

  step_time.time_runners(
    live, task.batch, reps=args.reps, steps=args.steps, deadline=start + args.deadline, on_rep=save
  )
  save()
  print(step_time.markdown(result), flush=True)
  return result


if __name__ == '__main__':
  main()
