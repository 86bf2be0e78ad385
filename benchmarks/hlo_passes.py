"""Passes over the parameters in the compiled train steps of the step-time table.

XLA:CPU writes every array that has several consumers in a kernel of its own
(it has no multi-output fusion), and on a small memory-bound model those
passes over the parameters are what a probe costs beyond its forward pass.
This counts them in the optimized HLO of each setting's jitted train step
(the one :mod:`benchmarks.step_time` times), with XLA's own bytes accessed
(``compile().cost_analysis()``): both deterministic for a given JAX version.
With ``--profile`` it also adds the kernels' time, from the JAX profiler's
trace of a few steps (noisy on a shared machine: the minimum over repetitions).

Usage (from the repository root)::

  python -m benchmarks.hlo_passes --model mlp
  python -m benchmarks.hlo_passes --model mlp --profile --dump /tmp/hlo
  python -m benchmarks.hlo_passes --model mlp --baseline 63f29d2

Writes ``benchmarks/results/hlo_passes_<model>.md`` (``_<commit>`` with
``--baseline <commit>``: the library as it was at that commit).
"""

import argparse
import collections
import contextlib
import glob
import math
import pathlib
import re
import sys
import tempfile
from typing import Any, Optional, Sequence

import jax

from benchmarks import settings as settings_lib
from benchmarks import step_time

DEFAULT_SETTINGS = (
  'adamw',
  'adamw+forward',
  'uphill',
  'uphill every4',
  'uphill every4 (two steps)',
)
# One HLO instruction: name, result shape (a tuple or an array), opcode, operands.
_INSTRUCTION = re.compile(r'\s*(?:ROOT )?%(\S+) = (\(.*?\)|\S+?)(?:\{[^}]*\})? ([\w-]+)\((.*?)\)')
_FREE = ('parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast')


def _elements(shape: str) -> int:
  m = re.match(r'\w+\[([\d,]*)\]', shape)
  return math.prod(int(d) for d in m.group(1).split(',') if d) if m else 0


def _computations(text: str) -> dict[str, str]:
  """Name -> body of every computation of an HLO module."""
  return {
    m.group(1): m.group(0) for m in re.finditer(r'^(?:ENTRY )?%(\S+) .*?^}', text, re.M | re.S)
  }


def kernels(text: str) -> list[tuple[str, str, str, list[str]]]:
  """``(name, shape, opcode, operands)`` of the kernels of the step.

  The instructions of the entry computation and of the branches of its
  conditionals (the probe inside ``lax.cond``), not those inside fusions.
  """
  bodies = _computations(text)
  entry = re.search(r'^ENTRY %(\S+) ', text, re.M).group(1)
  todo, out = [entry], []
  while todo:
    for line in bodies[todo.pop()].splitlines()[1:-1]:
      m = _INSTRUCTION.match(line)
      if not m:
        continue
      if m.group(3) == 'conditional':
        todo += re.findall(
          r'%([\w.\-]+)', re.search(r'branch_computations=\{(.*?)\}', line).group(1)
        )
      if m.group(3) not in _FREE:
        out.append((m.group(1), m.group(2), m.group(3), re.findall(r'%([\w.\-]+)', m.group(4))))
  return out


def _shapes(text: str) -> dict[str, str]:
  """Instruction name -> result shape, over the whole module."""
  return {m.group(1): m.group(2) for m in map(_INSTRUCTION.match, text.splitlines()) if m}


def count_passes(
  text: str, weight_shapes: Sequence[str], *, opcodes: Optional[Sequence[str]] = None
) -> dict[str, Any]:
  """Kernels, and per weight leaf: arrays of its shape written, reductions.

  Args:
    text: the optimized HLO (``compiled.as_text()``).
    weight_shapes: the weight leaves' shapes as HLO prints them
      (``'f32[784,512]'``), one per leaf, none of them an activation's.
    opcodes: count only the writes of these kernels (``('fusion',)``: not the
      gradient's dot nor XLA's copies); None: all.

  Returns:
    ``kernels``: kernels in all; ``writes``: kernels writing an array of a
    weight's shape, per leaf; ``reductions``: kernels reducing such an array
    to scalars, per leaf (``reduction_kernels``: their names).
  """
  ks = kernels(text)
  shapes = _shapes(text)
  weights = set(weight_shapes)
  writes = sum(shape in weights and (not opcodes or op in opcodes) for _, shape, op, _ in ks)
  reductions = [
    name
    for name, shape, _, ops in ks
    if shape.startswith('(f32[]') and any(shapes.get(o) in weights for o in ops)
  ]
  return dict(
    kernels=len(ks),
    writes=writes / len(weight_shapes),
    reductions=len(reductions) / len(weight_shapes),
    reduction_kernels=reductions,
  )


def profile(compiled: Any, task: step_time.Task, carry: Any, *, steps: int, reps: int) -> dict:
  """Kernel name -> microseconds per step (summed over threads, min over reps)."""
  times = collections.defaultdict(list)
  runner = step_time.Runner(
    setting=settings_lib.Setting(kind=settings_lib.ADAMW),
    compiled=compiled,
    carry=carry,
    compile_s=0.0,
    memory={},
    state_bytes=0,
  )
  runner.run(task.batch, 2)
  for _ in range(reps):
    with tempfile.TemporaryDirectory() as d:
      with jax.profiler.trace(d):
        runner.run(task.batch, steps)
      data = jax.profiler.ProfileData.from_file(glob.glob(f'{d}/**/*.xplane.pb', recursive=True)[0])
    rep = collections.Counter()
    for plane in data.planes:
      for line in plane.lines:
        for event in line.events:
          rep[event.name] += event.duration_ns / 1e3 / steps
    for name, us in rep.items():
      times[name].append(us)
  return {name: min(v) for name, v in times.items() if len(v) == reps}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', choices=('mlp', 'resnet18'), default='mlp')
  p.add_argument('--batch', type=int, default=None)
  p.add_argument('--width', type=int, default=16, help='ResNet-18 channels of the first stage')
  p.add_argument('--only', nargs='*', default=list(DEFAULT_SETTINGS))
  p.add_argument('--profile', action='store_true', help='add kernel times (JAX profiler)')
  p.add_argument('--reps', type=int, default=3, help='profiled repetitions')
  p.add_argument('--dump', type=pathlib.Path, default=None, help='write each HLO there')
  p.add_argument('--baseline', default=None, help='count the library at this git commit instead')
  p.add_argument('--tag', default='', help='suffix of the results file (default: the baseline)')
  p.add_argument('--out-dir', type=pathlib.Path, default=step_time.RESULTS)
  return p.parse_args(argv)


@contextlib.contextmanager
def library_at(commit: Optional[str]):
  """The benchmarks build their optimizers from ``sadam_optax`` at ``commit``."""
  if commit is None:
    yield
    return
  from benchmarks import ab_library  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    library = ab_library.import_library(ab_library.checkout_library(commit, pathlib.Path(tmp)))
    saved = settings_lib.sadam_optax, step_time.sadam_optax
    settings_lib.sadam_optax = step_time.sadam_optax = library
    try:
      yield
    finally:
      settings_lib.sadam_optax, step_time.sadam_optax = saved
      ab_library.import_library(None)


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
  args = parse_args(argv)
  if args.model == 'mlp':
    task = step_time.mlp_task(batch=args.batch or 128)
  else:
    task = step_time.resnet18_task(batch=args.batch or 16, width=args.width)
  params, _ = task.init(jax.random.key(0))
  # Weight leaves only: a bias's shape is an activation's row.
  weights = [f'f32[{",".join(map(str, p.shape))}]' for p in jax.tree.leaves(params) if p.ndim > 1]
  weights = [w for w in weights if _elements(w) >= 4096]
  rows = []
  for setting in settings_lib.cost_settings():
    if setting.name not in args.only:
      continue
    with library_at(args.baseline):
      lowered, runner = step_time.lower_setting(
        task, setting, learning_rate=1e-3, weight_decay=1e-4, lam=2.0
      )
    parts = lowered[:2] if isinstance(lowered, tuple) else (lowered,)
    for part, lowered_part in zip(('probed', 'carried') if len(parts) == 2 else ('',), parts):
      compiled = lowered_part.compile()
      text = compiled.as_text()
      name = f'{setting.name} {part}'.strip()
      if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        (args.dump / f'{task.name}_{name.replace(" ", "_")}.hlo').write_text(text)
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      row = dict(name=name, mib=cost['bytes accessed'] / 2**20, **count_passes(text, weights))
      if args.profile:
        # A copy: the step donates its inputs, and a two-step pair shares them.
        carry = jax.tree.map(lambda x: x.copy(), runner.carry)
        times = profile(compiled, task, carry, steps=8, reps=args.reps)
        names = {k for k, _, _, _ in kernels(text)}
        row['kernel_ms'] = sum(t for k, t in times.items() if k in names) / 1e3
        row['reduction_ms'] = sum(times.get(k, 0.0) for k in row['reduction_kernels']) / 1e3
      rows.append(row)
      print({k: v for k, v in row.items() if k != 'reduction_kernels'}, flush=True)
  text = markdown(task, rows, argv)
  args.out_dir.mkdir(parents=True, exist_ok=True)
  suffix = f'_{args.tag or args.baseline}' if (args.tag or args.baseline) else ''
  (args.out_dir / f'hlo_passes_{task.name}{suffix}.md').write_text(text)
  print(text)
  return rows


def markdown(task: step_time.Task, rows: list[dict[str, Any]], argv: Any) -> str:
  profiled = all('kernel_ms' in r for r in rows)
  command = ' '.join(sys.argv[1:] if argv is None else argv)
  lines = [
    f'# Passes over the parameters: {task.description}',
    '',
    f'jax {jax.__version__}, {jax.devices()[0].platform}. Command: '
    f'`python -m benchmarks.hlo_passes {command}`',
    '',
    'Per weight leaf: kernels writing an array of its shape, and kernels reducing one to '
    "scalars; MiB: XLA's bytes accessed for the whole step (a conditional counts both "
    'branches).'
    + (
      ' Kernel ms: profiled kernel time per step, summed over threads (all kernels, and the '
      'weight-sized reductions).'
      if profiled
      else ''
    ),
    '',
    '| train step | kernels | weight-sized writes per leaf | reductions per leaf | MiB |'
    + (' kernel ms | reductions ms |' if profiled else ''),
    '|---|---|---|---|---|' + ('---|---|' if profiled else ''),
  ]
  for r in rows:
    lines.append(
      f'| {r["name"]} | {r["kernels"]} | {r["writes"]:g} | {r["reductions"]:g} | {r["mib"]:.1f} |'
      + (f' {r["kernel_ms"]:.2f} | {r["reduction_ms"]:.2f} |' if profiled else '')
    )
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  main()
