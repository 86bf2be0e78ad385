"""An optimizer update called eagerly: compilations per step and time per step.

A notebook that calls ``opt.update`` outside ``jax.jit`` runs it op by op;
each op compiles once and is cached, so after the first steps nothing should
compile. Anything that builds a new function per call (a ``lax.map`` or
``lax.reduce`` over a fresh closure) compiles on every step instead. This
times ``update`` + ``apply_updates`` eagerly (the gradient jitted, as a
notebook would have it) for AdamW and each of S-AdamW's readings with the
library's defaults, and counts XLA compilations after a warm-up. With
``--baseline COMMIT`` the library at that commit runs beside the working
tree, in the same process and the same repetitions.

Usage (from the repository root)::

  python -m benchmarks.eager_step --baseline d63d31b

Writes ``benchmarks/results/eager_step_<hardware>[-<tag>].json`` and ``.md``.
"""

import argparse
import pathlib
import shlex
import statistics
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import jax
import optax

import sadam_optax
from benchmarks import ab_library
from benchmarks import step_time

RESULTS = pathlib.Path(__file__).resolve().parent / 'results'
ESTIMATORS = ('uphill', 'secant', 'trajectory', 'step', 'literal', 'random-jvp')


def measure(
  opt: Any, task: step_time.Task, params: Any, *, steps: int, warmup: int
) -> dict[str, float]:
  """Compilations after ``warmup`` eager steps and the median seconds of the next ``steps``."""
  loss = lambda p: task.loss(p, {}, *task.batch)[0]
  value_and_grad = jax.jit(jax.value_and_grad(loss))
  state = opt.init(params)
  compiles, times = [], []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for i in range(warmup + steps):
      if i == warmup:
        compiles.clear()
      start = time.perf_counter()
      value, grad = value_and_grad(params)
      updates, state = opt.update(grad, state, params, value=value, value_fn=loss)
      params = jax.block_until_ready(optax.apply_updates(params, updates))
      if i >= warmup:
        times.append(time.perf_counter() - start)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return dict(compiles_per_step=len(compiles) / steps, seconds=statistics.median(times))


def run(
  libraries: dict[str, Any],
  task: step_time.Task,
  *,
  estimators: Sequence[str],
  steps: int,
  warmup: int,
  reps: int,
) -> list[dict[str, Any]]:
  """Rows per (library, estimator): compilations per step, median ms, x AdamW of the same rep."""
  params, _ = task.init(jax.random.key(0))
  adamw = optax.with_extra_args_support(optax.adamw(1e-3, weight_decay=1e-4))
  cells: dict[tuple[str, str], list[dict[str, float]]] = {}
  for _ in range(reps):
    base = measure(adamw, task, params, steps=steps, warmup=warmup)
    cells.setdefault(('optax', 'adamw'), []).append(dict(base, ratio=1.0))
    for name, lib in libraries.items():
      for est in estimators:
        opt = lib.sadamw(1e-3, weight_decay=1e-4, estimator=est)
        m = measure(opt, task, params, steps=steps, warmup=warmup)
        cells.setdefault((name, est), []).append(dict(m, ratio=m['seconds'] / base['seconds']))
  return [
    dict(
      library=name,
      setting=est,
      compiles_per_step=max(m['compiles_per_step'] for m in ms),
      ms=1e3 * statistics.median(m['seconds'] for m in ms),
      ratio=statistics.median(m['ratio'] for m in ms),
    )
    for (name, est), ms in cells.items()
  ]


def markdown(result: dict[str, Any]) -> str:
  lines = [
    '# An optimizer update called eagerly',
    '',
    step_time.hardware_line(result['hardware']),
    f'Command: `{result["command"]}`.',
    '',
    f'ReLU {result["model"]}; per step: the jitted gradient, then `opt.update` and '
    f'`optax.apply_updates` eagerly, the library defaults of each reading. After '
    f'{result["warmup"]} warm-up steps, {result["steps"]} steps timed, {result["reps"]} '
    'repetitions: XLA compilations per step (the most in any repetition), the median step, '
    "and the median ratio to AdamW's step in the same repetition.",
    '',
    '| library | reading | compilations per step | ms per step | x AdamW |',
    '|---|---|---|---|---|',
  ]
  for r in result['rows']:
    lines.append(
      f'| {r["library"]} | {r["setting"]} | {r["compiles_per_step"]:.2f} | {r["ms"]:.1f} | '
      f'{r["ratio"]:.2f} |'
    )
  return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  argv = sys.argv[1:] if argv is None else list(argv)
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--baseline', default='', help='also run sadam_optax at this git commit')
  p.add_argument('--estimators', nargs='+', default=list(ESTIMATORS), choices=ESTIMATORS)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--reps', type=int, default=3)
  p.add_argument('--tag', default='', help='suffix of the results files')
  p.add_argument('--out-dir', type=pathlib.Path, default=RESULTS)
  args = p.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    libraries = {}
    if args.baseline:
      path = ab_library.checkout_library(args.baseline, pathlib.Path(tmp))
      libraries[args.baseline] = ab_library.import_library(path)
      libraries['working tree'] = ab_library.import_library(None)
    else:  # The library as imported: a re-import would leave two copies of its classes about.
      libraries['working tree'] = sadam_optax
    task = step_time.mlp_task(batch=32, in_dim=32, hidden=(64,))
    rows = run(
      libraries,
      task,
      estimators=args.estimators,
      steps=args.steps,
      warmup=args.warmup,
      reps=args.reps,
    )
  hw = step_time.hardware()
  result = dict(
    hardware=hw,
    command='python -m benchmarks.eager_step ' + shlex.join(argv),
    model=task.description,
    steps=args.steps,
    warmup=args.warmup,
    reps=args.reps,
    rows=rows,
  )
  step_time.write_named(result, args.out_dir, 'eager_step', args.tag, markdown(result))
  return result


if __name__ == '__main__':
  main()
