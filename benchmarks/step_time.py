"""Step time and peak memory of AdamW, SAM and S-AdamW at several settings.

The row ``adamw+forward`` (AdamW plus one loss-only forward pass at the new
parameters) is the floor of any S-Adam reading that evaluates the loss along
the step, as the default ``'secant'`` does.

Every setting is timed as a full jitted train step (gradient, optimizer
update, apply), compiled ahead of time once, on the same batch and model,
over blocks of steps (a multiple of every ``probe_every``, so that carried
and probed steps count in their proportion) ended by ``block_until_ready``.
In each repetition the settings run in a new random order, each block right
after a block of AdamW; a setting's ratio is the median over repetitions of
its time over that AdamW block's. Memory: XLA's compiled memory analysis
(arguments + outputs - donated aliases + temporaries) and, on a GPU, the
device's peak bytes in use, read after each setting's first step with the
settings run in increasing order of compiled peak (the counter only grows).

Usage (from the repository root)::

  python -m benchmarks.step_time --model mlp
  python -m benchmarks.step_time --model resnet18 --batch 16 --width 16
  python -m benchmarks.step_time --model resnet18 --batch 256   # GPU

Writes ``benchmarks/results/step_time_<model>_<hardware>.json`` and ``.md``.
"""

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import sadam_optax
from sadam_optax import probing

from benchmarks import proposals
from benchmarks import settings as settings_lib

RESULTS = pathlib.Path(__file__).resolve().parent / 'results'
MIB = 2.0**20


# --------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Task:
  """A model, its loss and one fixed batch.

  Attributes:
    name: short name of the model.
    description: model and batch, for the results.
    init: ``key -> (params, model_state)``.
    loss: ``(params, model_state, x, y) -> (loss, new_model_state)``.
    batch: ``(x, y)``.
  """

  name: str
  description: str
  init: Callable[[jax.Array], tuple[Any, Any]]
  loss: Callable[..., tuple[jax.Array, Any]]
  batch: tuple[jax.Array, jax.Array]


def _synthetic_batch(shape: Sequence[int], num_classes: int) -> tuple[jax.Array, jax.Array]:
  """Fixed random inputs and labels (the timing does not depend on data)."""
  kx, ky = jax.random.split(jax.random.key(1234))
  return (
    jax.random.normal(kx, tuple(shape), jnp.float32),
    jax.random.randint(ky, (shape[0],), 0, num_classes),
  )


def _cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def mlp_task(
  *,
  batch: int = 128,
  in_dim: int = 784,
  hidden: Sequence[int] = (512, 512, 512),
  num_classes: int = 10,
) -> Task:
  """A ReLU MLP on flat (MNIST-shaped) inputs; no model state."""
  from sadam_examples import models  # pylint: disable=g-import-not-at-top

  model = models.MLP(num_classes=num_classes, hidden=tuple(hidden))
  x, y = _synthetic_batch((batch, in_dim), num_classes)

  def loss(params, model_state, x, y):
    return _cross_entropy(model.apply({'params': params}, x), y), model_state

  return Task(
    name='mlp',
    description=(
      f'MLP {in_dim}-{"-".join(map(str, hidden))}-{num_classes}, batch {batch}, float32'
    ),
    init=lambda key: (model.init(key, x[:1])['params'], {}),
    loss=loss,
    batch=(x, y),
  )


def resnet18_task(
  *, batch: int = 256, width: int = 64, image_size: int = 32, num_classes: int = 10
) -> Task:
  """The CIFAR-shaped ResNet-18 (BatchNorm in train mode inside the loss)."""
  from sadam_examples import models  # pylint: disable=g-import-not-at-top

  model = models.ResNet18(num_classes=num_classes, width=width)
  x, y = _synthetic_batch((batch, image_size, image_size, 3), num_classes)

  def init(key):
    variables = model.init(key, x[:2])
    return variables['params'], variables['batch_stats']

  def loss(params, batch_stats, x, y):
    logits, updates = model.apply(
      {'params': params, 'batch_stats': batch_stats}, x, train=True, mutable=['batch_stats']
    )
    return _cross_entropy(logits, y), updates['batch_stats']

  return Task(
    name='resnet18',
    description=(
      f'ResNet-18 (CIFAR stem, width {width}), {image_size}x{image_size}x3, batch {batch}, float32'
    ),
    init=init,
    loss=loss,
    batch=(x, y),
  )


# --------------------------------------------------------------------------
# Train steps.
# --------------------------------------------------------------------------


def make_train_step(
  task: Task, setting: settings_lib.Setting, optimizer: optax.GradientTransformationExtraArgs
) -> Callable[..., Any]:
  """``(params, model_state, opt_state, x, y) -> (same..., loss)``.

  It takes a keyword ``probe_now`` (None, or a Python bool passed on to the
  optimizer: :func:`sadam_optax.every_k`). The S-AdamW probes see ``value_fn``
  closing over the batch, or over its
  first ``probe_fraction`` (the probe-sub-batch pattern), and ``value=`` the
  loss at ``params`` when the probes see the whole batch (the two-sample
  proposals reuse it); SAM takes a second
  gradient at the ascent point ``params + r g / ||g||`` and steps AdamW with
  it; the forward floor evaluates the loss at the new parameters as well.
  """
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)

  def step(params, model_state, opt_state, x, y, *, probe_now=None):
    (loss, new_model_state), grads = grad_fn(params, model_state, x, y)
    if setting.kind == settings_lib.SAM:
      scale = settings_lib.SAM_RADIUS / (optax.tree.norm(grads) + 1e-12)
      ascent = jax.tree.map(lambda p, g: p + scale * g, params, grads)
      (_, new_model_state), grads = grad_fn(ascent, model_state, x, y)
    xs, ys = settings_lib.probe_batch((x, y), setting.probe_fraction)
    value_fn = lambda p: task.loss(p, model_state, xs, ys)[0]
    extra = {} if probe_now is None else dict(probe_now=probe_now)
    updates, opt_state = optimizer.update(
      grads,
      opt_state,
      params,
      value_fn=value_fn,
      value=settings_lib.probe_value(loss, setting),
      **extra,
    )
    new_params = optax.apply_updates(params, updates)
    if setting.kind == settings_lib.FORWARD_FLOOR:
      # An output, so that XLA cannot drop the pass.
      loss = jnp.stack([loss, value_fn(new_params)])
    return new_params, new_model_state, opt_state, loss

  return step


@dataclasses.dataclass
class Runner:
  """One compiled setting, its carried training state and its measurements.

  ``compiled`` is one compiled step, or (two-step settings) a
  :class:`probing.EveryK` of two, called with the step count
  ``count``.
  """

  setting: settings_lib.Setting
  compiled: Any
  carry: tuple[Any, Any, Any]
  compile_s: float
  memory: dict[str, Optional[int]]
  state_bytes: int
  times: list[float] = dataclasses.field(default_factory=list)
  ratios: list[float] = dataclasses.field(default_factory=list)
  device_peak: Optional[int] = None
  error: Optional[str] = None
  count: int = 0

  def run(self, batch: tuple[jax.Array, jax.Array], steps: int) -> float:
    """Runs ``steps`` steps; returns seconds per step."""
    params, model_state, opt_state = self.carry
    two = isinstance(self.compiled, probing.EveryK)
    start = time.perf_counter()
    for _ in range(steps):
      args = (params, model_state, opt_state, *batch)
      params, model_state, opt_state, loss = (
        self.compiled(self.count, *args) if two else self.compiled(*args)
      )
      self.count += 1
    jax.block_until_ready((params, model_state, opt_state, loss))
    elapsed = (time.perf_counter() - start) / steps
    self.carry = (params, model_state, opt_state)
    return elapsed


def memory_stats(compiled: Any) -> dict[str, Optional[int]]:
  """XLA's compiled memory analysis; ``peak`` = args + outputs - aliases + temp.

  All None when ``compiled`` is None (a failed compilation) or the backend
  gives no analysis.
  """
  try:
    m = None if compiled is None else compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # Not on every backend.
    m = None
  if m is None:
    return dict(argument=None, output=None, alias=None, temp=None, peak=None)
  return dict(
    argument=m.argument_size_in_bytes,
    output=m.output_size_in_bytes,
    alias=m.alias_size_in_bytes,
    temp=m.temp_size_in_bytes,
    peak=(
      m.argument_size_in_bytes
      + m.output_size_in_bytes
      - m.alias_size_in_bytes
      + m.temp_size_in_bytes
    ),
  )


def lower_setting(
  task: Task,
  setting: settings_lib.Setting,
  *,
  learning_rate: float,
  weight_decay: float,
  lam: float,
) -> tuple[Any, Runner]:
  """Initialises and traces one setting; returns (lowered, runner stub)."""
  optimizer = settings_lib.make_optimizer(
    setting, learning_rate=learning_rate, weight_decay=weight_decay, lam=lam
  )
  params, model_state = task.init(jax.random.key(0))
  opt_state = settings_lib.init_state(setting, optimizer, params)
  train_step = make_train_step(task, setting, optimizer)
  noise = proposals.packed_noise() if setting.noise == 'packed' else contextlib.nullcontext()
  args = (params, model_state, opt_state, *task.batch)
  with noise:
    if setting.two_steps:
      every = sadam_optax.every_k(train_step, setting.probe_every, donate_argnums=(0, 1, 2))
      lowered = (every.probed.lower(*args), every.carried.lower(*args), setting.probe_every)
    else:
      lowered = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(*args)
  return lowered, Runner(
    setting=setting,
    compiled=None,
    carry=(params, model_state, opt_state),
    compile_s=0.0,
    memory={},
    state_bytes=settings_lib.tree_bytes(opt_state),
  )


def _compile(lowered: Any, runner: Runner) -> Runner:
  """Compiles one setting; a failure (say, out of memory) is recorded.

  A two-step setting (``lowered`` = probed, carried, k) compiles both; its
  memory is the larger of the two, its compile time their sum.
  """
  start = time.perf_counter()
  try:
    if isinstance(lowered, tuple):
      probed, carried, k = lowered
      probed, carried = probed.compile(), carried.compile()
      runner.compiled = probing.EveryK(probed, carried, k=k, offset=0)
      runner.memory = max(
        (memory_stats(c) for c in (probed, carried)), key=lambda m: m['peak'] or 0
      )
    else:
      runner.compiled = lowered.compile()
      runner.memory = memory_stats(runner.compiled)
  except Exception as e:  # pylint: disable=broad-except
    runner.error = f'{type(e).__name__}: {e}'[:500]
    runner.memory = memory_stats(None)
  runner.compile_s = time.perf_counter() - start
  return runner


def build_runners(
  task: Task, settings: Sequence[settings_lib.Setting], *, workers: int, **options: Any
) -> list[Runner]:
  """Traces the settings one by one, then compiles ``workers`` at a time.

  Tracing is sequential (the packed-noise proposal patches the library while
  its setting is traced); XLA compiles in parallel threads.
  """
  lowered = [lower_setting(task, s, **options) for s in tqdm.tqdm(settings, desc='trace')]
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = [pool.submit(_compile, *pair) for pair in lowered]
    return [f.result() for f in tqdm.tqdm(futures, desc='compile')]


def device_peak_bytes() -> Optional[int]:
  """The device's peak bytes in use so far (None where not reported)."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get('peak_bytes_in_use')


def warm_up(runners: Sequence[Runner], batch: tuple[jax.Array, jax.Array]) -> None:
  """First steps, in increasing order of compiled peak memory.

  The device's peak counter only grows, so each setting's reading is its own
  peak whenever it exceeds those of the settings run before it.
  """
  order = sorted(runners, key=lambda r: r.memory['peak'] or 0)
  for r in tqdm.tqdm(order, desc='warm-up'):
    # A two-step setting runs both of its executables.
    r.run(batch, r.setting.probe_every if r.setting.two_steps else 1)
    r.device_peak = device_peak_bytes()


def time_runners(
  runners: Sequence[Runner],
  batch: tuple[jax.Array, ...],
  *,
  reps: int,
  steps: int,
  deadline: Optional[float] = None,
  on_rep: Callable[[], None] = lambda: None,
  seed: int = 0,
) -> None:
  """Paired, interleaved timing.

  Each repetition visits the settings in a new random order and times every
  one right after a block of AdamW: the pair's ratio is little affected by
  load that drifts over seconds (other jobs on a shared machine).

  Args:
    runners: the compiled settings, AdamW among them.
    batch: the batch every step sees.
    reps: repetitions.
    steps: steps per block.
    deadline: ``time.perf_counter()`` value after which no repetition starts.
    on_rep: called after every repetition (to save partial results).
    seed: seed of the shuffling.
  """
  rng = np.random.default_rng(seed)
  base = next(r for r in runners if r.setting.kind == settings_lib.ADAMW)
  for _ in tqdm.trange(reps, desc='timing'):
    if deadline is not None and time.perf_counter() > deadline:
      print('Deadline reached: fewer repetitions.', flush=True)
      break
    for i in rng.permutation(len(runners)):
      runner = runners[i]
      reference = base.run(batch, steps)
      base.times.append(reference)
      if runner is not base:
        runner.times.append(runner.run(batch, steps))
        runner.ratios.append(runner.times[-1] / reference)
    base.ratios.append(1.0)
    on_rep()


# --------------------------------------------------------------------------
# Results.
# --------------------------------------------------------------------------


# Environment that changes step times on the CPU: glibc mmaps (and page-faults)
# every allocation above its threshold, at most 32 MiB unless set, and XLA:CPU
# allocates a step's temporary buffer on every call.
TIMING_ENV = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'LD_PRELOAD', 'XLA_FLAGS')


def env_prefix() -> str:
  """The timing-relevant environment variables that are set, as a shell prefix."""
  return ''.join(f'{k}={os.environ[k]} ' for k in TIMING_ENV if os.environ.get(k))


def hardware() -> dict[str, Any]:
  """What ran the benchmark."""
  device = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if 'model name' in line]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return dict(
    platform=device.platform,
    device=device.device_kind,
    cpu=cpu,
    cpu_cores=cores,
    jax=jax.__version__,
    optax=optax.__version__,
    load_average=list(os.getloadavg()),
  )


def hardware_line(hw: dict[str, Any]) -> str:
  """What :func:`hardware` found, as one sentence of a results file."""
  return (
    f'Hardware: {hw["device"]} ({hw["platform"]}); CPU {hw["cpu"]}, {hw["cpu_cores"]} cores; '
    f'jax {hw["jax"]}, optax {hw["optax"]}. Load average (1, 5, 15 min) at the start: '
    + ', '.join(f'{x:.1f}' for x in hw['load_average'])
    + ' (other jobs shared the machine when it exceeds the core count).'
  )


def hardware_tag(hw: dict[str, Any]) -> str:
  """``cpu<cores>`` or the GPU's model, e.g. ``h100``."""
  if hw['platform'] == 'cpu':
    return f'cpu{hw["cpu_cores"]}'
  words = [w.lower() for w in hw['device'].split() if w.lower() != 'nvidia']
  return words[0] if words else hw['platform']


def summarize(runners: Sequence[Runner]) -> list[dict[str, Any]]:
  """Per setting: median time, ratios to AdamW, memory, state size.

  ``ratio``: median over the paired ratios; ``ratio_of_min``: the setting's
  fastest block over AdamW's fastest (the least disturbed by other load).
  """
  base = next(r for r in runners if r.setting.kind == settings_lib.ADAMW)
  rows = []
  for r in runners:
    if not r.times:
      rows.append(
        dict(
          name=r.setting.name,
          options=r.setting.options(),
          error=r.error or 'not timed',
          memory=r.memory,
        )
      )
      continue
    ratios = np.array(r.ratios)
    rows.append(
      dict(
        name=r.setting.name,
        options=r.setting.options(),
        ms_per_step=1e3 * float(np.median(r.times)),
        ratio=float(np.median(ratios)),
        ratio_min=float(ratios.min()),
        ratio_max=float(ratios.max()),
        ratio_of_min=float(min(r.times) / min(base.times)),
        times_s=r.times,
        compile_s=r.compile_s,
        memory=r.memory,
        device_peak=r.device_peak,
        state_bytes=r.state_bytes,
        state_bytes_over_adamw=r.state_bytes - base.state_bytes,
      )
    )
  return rows


def _mib(x: Optional[int]) -> str:
  return '-' if x is None else f'{x / MIB:.1f}'


def markdown(result: dict[str, Any]) -> str:
  """A readable table of one run."""
  hw = result['hardware']
  lines = [
    f'# Step time and memory: {result["task"]}',
    '',
    f'Hardware: {hw["device"]} ({hw["platform"]}); CPU {hw["cpu"]}, '
    f'{hw["cpu_cores"]} cores; jax {hw["jax"]}, optax {hw["optax"]}. '
    'Load average (1, 5, 15 min) at the start: '
    + ', '.join(f'{x:.1f}' for x in hw['load_average'])
    + ' (other jobs shared '
    'the machine when it exceeds the core count)'
    + (
      '; at the end: ' + ', '.join(f'{x:.1f}' for x in result['load_average_end'])
      if result.get('load_average_end')
      else ''
    )
    + '.',
    f'Command: `{result["command"]}`',
    '',
    f'{result["reps"]} repetitions; in each, every setting (in a new '
    f'random order) runs a block of {result["steps"]} steps right after a '
    'block of AdamW. x AdamW: median of the paired ratios [min, max]; '
    "x AdamW (fastest): fastest block over AdamW's fastest. ms/step: "
    'median. Memory in MiB: XLA compiled '
    'analysis (temp = working memory of the step; peak = args + outputs - '
    'donated + temp)'
    + (
      "; device peak = the GPU allocator's peak bytes "
      'after the first step (settings run in '
      'increasing compiled-peak order)'
      if hw['platform'] != 'cpu'
      else ''
    )
    + '. State: '
    "bytes of the optimizer state over AdamW's.",
    '',
    '| setting | ms/step | x AdamW | [min, max] | x AdamW (fastest) | '
    'temp MiB | peak MiB |'
    + (' device peak MiB |' if hw['platform'] != 'cpu' else '')
    + ' state +bytes | compile s |',
    '|---|---|---|---|---|---|---|' + ('---|' if hw['platform'] != 'cpu' else '') + '---|---|',
  ]
  for row in result['rows']:
    if 'error' in row:
      lines.append(f'| {row["name"]} | failed: {row["error"][:80]} |')
      continue
    device = f' {_mib(row["device_peak"])} |' if hw['platform'] != 'cpu' else ''
    lines.append(
      f'| {row["name"]} | {row["ms_per_step"]:.2f} | {row["ratio"]:.2f} | '
      f'[{row["ratio_min"]:.2f}, {row["ratio_max"]:.2f}] | '
      f'{row.get("ratio_of_min", float("nan")):.2f} | '
      f'{_mib(row["memory"]["temp"])} | {_mib(row["memory"]["peak"])} |'
      f'{device} {row["state_bytes_over_adamw"]} | '
      f'{row["compile_s"]:.1f} |'
    )
  return '\n'.join(lines) + '\n'


def write(
  result: dict[str, Any], out_dir: pathlib.Path, stem: str, text: str | None = None
) -> None:
  """Writes ``stem.json`` and ``stem.md`` (``text``, or this table)."""
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / f'{stem}.json').write_text(json.dumps(result, indent=1))
  (out_dir / f'{stem}.md').write_text(markdown(result) if text is None else text)


def write_named(
  result: dict[str, Any], out_dir: pathlib.Path, name: str, tag: str, text: str
) -> None:
  """Writes and prints ``<name>_<hardware>[-<tag>].json`` and ``.md`` (``text``)."""
  stem = f'{name}_{hardware_tag(result["hardware"])}' + (f'-{tag}' if tag else '')
  write(result, out_dir, stem, text)
  print(text)


# --------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', choices=('mlp', 'resnet18'), default='mlp')
  p.add_argument(
    '--batch',
    type=int,
    default=None,
    help='batch size (default: 128 for the MLP, 256 for ResNet-18)',
  )
  p.add_argument('--width', type=int, default=64, help='ResNet-18 channels of the first stage')
  p.add_argument('--hidden', type=int, nargs='+', default=[512, 512, 512], help='MLP hidden widths')
  p.add_argument('--in-dim', type=int, default=784, help='MLP input width (3072: CIFAR-shaped)')
  p.add_argument('--classes', type=int, default=10, help='MLP output width')
  p.add_argument('--reps', type=int, default=7)
  p.add_argument(
    '--steps', type=int, default=32, help='steps per timed block; a multiple of every probe_every'
  )
  p.add_argument(
    '--only', nargs='*', default=None, help='names of the settings to run (AdamW always runs)'
  )
  p.add_argument(
    '--workers', type=int, default=None, help='parallel compilations (default: CPU cores)'
  )
  p.add_argument('--lr', type=float, default=1e-3)
  p.add_argument('--weight-decay', type=float, default=1e-4)
  p.add_argument('--lam', type=float, default=2.0)
  p.add_argument(
    '--deadline',
    type=float,
    default=None,
    help='seconds from the start after which no timing '
    'repetition starts (results are saved after each one)',
  )
  p.add_argument('--tag', default=None, help='hardware tag of the output files (default: detected)')
  p.add_argument('--out-dir', type=pathlib.Path, default=RESULTS)
  p.add_argument(
    '--smoke', action='store_true', help='tiny model, few settings and steps (for tests)'
  )
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  args = parse_args(argv)
  settings = settings_lib.cost_settings()
  if args.smoke:
    task = mlp_task(batch=8, in_dim=16, hidden=(32,))
    keep = (
      'adamw',
      'sam',
      'adamw+forward',
      'uphill',
      'secant',
      'step k4',
      'step k4 every4',
      'uphill every4 (two steps)',
      'trajectory',
    )
    settings = [s for s in settings if s.name in keep]
    args.reps, args.steps = 2, 4
  elif args.model == 'mlp':
    task = mlp_task(
      batch=args.batch or 128, hidden=args.hidden, in_dim=args.in_dim, num_classes=args.classes
    )
  else:
    task = resnet18_task(batch=args.batch or 256, width=args.width)
  if args.only:
    unknown = set(args.only) - {s.name for s in settings}
    if unknown:
      raise SystemExit(
        f'Unknown settings {sorted(unknown)}; choose among {[s.name for s in settings]}.'
      )
    settings = [s for s in settings if s.name in args.only or s.kind == settings_lib.ADAMW]
  every = math.lcm(*(s.probe_every for s in settings))
  if args.steps % every:
    raise SystemExit(f'--steps {args.steps} must be a multiple of {every}.')
  start = time.perf_counter()
  hw = hardware()
  print(f'{task.description} on {hw["device"]} ({hw["cpu_cores"]} cores)', flush=True)
  runners = build_runners(
    task,
    settings,
    workers=args.workers or hw['cpu_cores'],
    learning_rate=args.lr,
    weight_decay=args.weight_decay,
    lam=args.lam,
  )
  failed = [r for r in runners if r.error]
  for r in failed:
    print(f'{r.setting.name} failed to compile: {r.error}', flush=True)
  live = [r for r in runners if not r.error]
  warm_up(live, task.batch)
  stem = f'step_time_{"smoke" if args.smoke else task.name}_' + (args.tag or hardware_tag(hw))
  result = dict(
    task=task.description,
    model=task.name,
    hardware=hw,
    command=env_prefix()
    + 'python -m benchmarks.step_time '
    + ' '.join(sys.argv[1:] if argv is None else argv),
    reps=0,
    steps=args.steps,
    lr=args.lr,
    weight_decay=args.weight_decay,
    lam=args.lam,
    rows=[],
  )

  def save():
    result.update(
      reps=len(live[0].ratios), rows=summarize(runners), load_average_end=list(os.getloadavg())
    )
    write(result, args.out_dir, stem)

  time_runners(
    live,
    task.batch,
    reps=args.reps,
    steps=args.steps,
    deadline=None if args.deadline is None else start + args.deadline,
    on_rep=save,
  )
  print(markdown(result))
  return result


if __name__ == '__main__':
  main()
