"""Why the experiments dispatch steps from Python on the CPU.

Times one AdamW train step of a 4-bit QATNet (CIFAR shape, batch 128) and of
the 4-bit 1-D CNN of MNIST-1D (batch 100) four ways: a plain jitted step, the
same step inside a ``lax.scan`` (what one compiled epoch does), inside a
fully unrolled scan, and vmapped over several runs (what a vmapped grid does)
against looping over the runs. All ways are timed in one process, side by
side, so compare them as ratios.

Usage (from the repository root)::

  python -m benchmarks.cpu_loops

Writes ``benchmarks/results/cpu_loops_<hardware>.json`` and ``.md``.
"""

import argparse
import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from benchmarks import step_time

RESULTS = pathlib.Path(__file__).resolve().parent / 'results'
SCAN_LENGTH = 4


def task(name: str) -> tuple[Callable[..., Any], Any, Any, int]:
  """(step, params, opt_state, runs) of a model in its experiment's shape."""
  from sadam_examples import models  # pylint: disable=g-import-not-at-top

  if name == 'qatnet':
    model, shape, runs = models.QATNet(bits=4), (128, 32, 32, 3), 9
  else:
    model, shape, runs = models.CNN1D(bits=4), (100, 40, 1), 20
  x = jax.random.normal(jax.random.key(0), shape)
  y = jnp.zeros(shape[0], jnp.int32)
  params = model.init(jax.random.key(1), x[:1])['params']
  opt = optax.adamw(1e-3)

  def loss(p):
    logits = model.apply({'params': p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(p, s):
    updates, s = opt.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, updates), s

  return step, params, opt.init(params), runs


def seconds_per_call(fn: Callable[..., Any], args: Any, reps: int) -> float:
  """Median wall time of ``fn(*args)`` after a warm-up call."""
  out = fn(*args)
  jax.block_until_ready(out)
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def measure(name: str, reps: int) -> dict[str, Any]:
  """Seconds per step (per run-step for the grid variants) of each way."""
  step, params, state, runs = task(name)

  def scanned(unroll):
    def many(p, s):
      return jax.lax.scan(
        lambda c, _: (step(*c), None), (p, s), None, length=SCAN_LENGTH, unroll=unroll
      )[0]

    return jax.jit(many)

  stack = lambda t: jax.tree.map(lambda a: jnp.stack([a] * runs), t)
  plain = jax.jit(step)
  vmapped = jax.jit(jax.vmap(step))
  looped = lambda p, s: [plain(p, s) for _ in range(runs)]
  return dict(
    model=name,
    runs=runs,
    plain=seconds_per_call(plain, (params, state), reps),
    scan=seconds_per_call(scanned(1), (params, state), reps) / SCAN_LENGTH,
    scan_unrolled=seconds_per_call(scanned(SCAN_LENGTH), (params, state), reps) / SCAN_LENGTH,
    runs_vmapped=seconds_per_call(vmapped, (stack(params), stack(state)), reps) / runs,
    runs_looped=seconds_per_call(looped, (params, state), reps) / runs,
  )


def markdown(result: dict[str, Any]) -> str:
  lines = [
    "# Loops on the CPU: one AdamW step of the experiments' models",
    '',
    f'Command: `{result["command"]}`  ',
    step_time.hardware_line(result['hardware']),
    '',
    f'Median of {result["reps"]} calls after a warm-up, seconds per step '
    f'(per run and step for the grids); scans of {SCAN_LENGTH} steps. '
    'Ratios are to the plain jitted step (scan rows) and to looping over '
    'the runs (vmapped row).',
    '',
    '| model | plain step | in lax.scan | in unrolled scan | runs vmapped | runs looped |',
    '|---|---|---|---|---|---|',
  ]
  for r in result['rows']:
    lines.append(
      f'| {r["model"]} ({r["runs"]} runs) | {r["plain"]:.4f} s | '
      f'{r["scan"]:.4f} s ({r["scan"] / r["plain"]:.1f}x) | '
      f'{r["scan_unrolled"]:.4f} s ({r["scan_unrolled"] / r["plain"]:.1f}x)'
      f' | {r["runs_vmapped"]:.4f} s '
      f'({r["runs_vmapped"] / r["runs_looped"]:.1f}x) | '
      f'{r["runs_looped"]:.4f} s |'
    )
  return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--models', nargs='+', default=['qatnet', 'cnn1d'], choices=['qatnet', 'cnn1d'])
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--out-dir', type=pathlib.Path, default=RESULTS)
  args = p.parse_args(argv)
  hw = step_time.hardware()
  result = dict(
    command='python -m benchmarks.cpu_loops' + ''.join(f' {a}' for a in (argv or [])),
    hardware=hw,
    reps=args.reps,
    rows=[measure(m, args.reps) for m in args.models],
  )
  text = markdown(result)
  step_time.write(result, args.out_dir, f'cpu_loops_{step_time.hardware_tag(hw)}', text)
  print(text)
  return result


if __name__ == '__main__':
  main()
