"""What the probes' shared noise costs: PRNG implementation and bit packing.

Times, for the parameters of a model, the generation of the unit Rademacher
vector that the ``'step'`` estimator draws once per probed step: the
library's (one PRNG call per leaf, one random word per entry) and the
proposal :func:`benchmarks.proposals.packed_rademacher_like` (one call, one
bit per entry), under the threefry, rbg and unsafe_rbg implementations. The
compile time is reported too: on the CPU it grows with the number of leaves.

Usage (from the repository root)::

  python -m benchmarks.prng

Writes ``benchmarks/results/prng_<hardware>.json`` and ``.md``.
"""

import argparse
import pathlib
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import tqdm

from benchmarks import proposals
from benchmarks import step_time
from sadam_optax import lgi

RESULTS = pathlib.Path(__file__).resolve().parent / 'results'
IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')
NOISES = {
  'per-leaf (library)': lgi._rademacher_like,  # pylint: disable=protected-access
  'packed bits (proposal)': proposals.packed_rademacher_like,
}


def measure(
  fn: Callable[[jax.Array, Any], Any], params: Any, impl: str, *, reps: int
) -> dict[str, float]:
  """Compile seconds and median milliseconds of ``fn(key, params)``."""
  key = jax.random.key(0, impl=impl)
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(key, params).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(key, params))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(key, params))
    times.append(time.perf_counter() - start)
  return dict(compile_s=compile_s, ms=1e3 * float(np.median(times)))


def markdown(result: dict[str, Any]) -> str:
  lines = [
    "# The probes' shared noise: PRNG implementation and bit packing",
    '',
    step_time.hardware_line(result['hardware']),
    f'Command: `{result["command"]}`',
    '',
    'One unit Rademacher vector over all parameters (what a probed step '
    f'draws), median of {result["reps"]} calls; compile: seconds to compile '
    'the generator alone.',
    '',
    '| parameters | noise | PRNG | ms | compile s |',
    '|---|---|---|---|---|',
  ]
  for row in result['rows']:
    lines.append(
      f'| {row["model"]} | {row["noise"]} | {row["impl"]} | '
      f'{row["ms"]:.2f} | {row["compile_s"]:.2f} |'
    )
  return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--models', nargs='+', default=['mlp', 'resnet18'], choices=('mlp', 'resnet18'))
  p.add_argument('--reps', type=int, default=20)
  p.add_argument('--out-dir', type=pathlib.Path, default=RESULTS)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  args = parse_args(argv)
  tasks = {
    'mlp': lambda: step_time.mlp_task(batch=2),
    'resnet18': lambda: step_time.resnet18_task(batch=2),
  }
  hw = step_time.hardware()
  rows = []
  for model in args.models:
    params, _ = tasks[model]().init(jax.random.key(0))
    label = (
      f'{model}: {sum(x.size for x in jax.tree.leaves(params)):,} in '
      f'{len(jax.tree.leaves(params))} leaves'
    )
    for noise, fn in NOISES.items():
      for impl in tqdm.tqdm(IMPLS, desc=f'{model} {noise}'):
        rows.append(
          dict(model=label, noise=noise, impl=impl, **measure(fn, params, impl, reps=args.reps))
        )
  result = dict(
    hardware=hw,
    reps=args.reps,
    rows=rows,
    command='python -m benchmarks.prng ' + ' '.join(sys.argv[1:] if argv is None else argv),
  )
  step_time.write(result, args.out_dir, f'prng_{step_time.hardware_tag(hw)}', markdown(result))
  print(markdown(result))
  return result


if __name__ == '__main__':
  main()
