"""Shared pieces of the experiments: a vmapped training loop, learning-rate
selection on a validation split, results writing; optimizers by name from the
registry of :mod:`experiments.optimizers`.

Every training run of a study is one point of a grid ``(learning rate, seed)``;
the grid is ``jax.vmap``-ed, so one compilation trains all its points at once,
and each epoch is one jitted ``lax.scan`` over the steps.

The comparison protocol (:func:`compare`): each optimizer is trained at every
learning rate of its grid and every seed; the learning rate with the best mean
validation accuracy is selected and the test accuracies of its seeds are
reported. After every S-Adam optimizer, the control that the paper lacks runs
automatically: AdamW at S-Adam's effective learning rate, ``lr * mean
damping`` of the same seed's run.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import optimizers

Array = jax.Array

# The registry's names, under the names this module has always had.
ADAM_GRID = optimizers.ADAM_GRID
SGD_GRID = optimizers.SGD_GRID
SGD_FAMILY = optimizers.SGD_FAMILY
SADAM_ESTIMATORS = optimizers.SADAM_ESTIMATORS
OPTIMIZERS = tuple(optimizers.BUILTIN)
soft_threshold = optimizers.soft_threshold
sam_around = optimizers.sam_around
lr_grid = optimizers.lr_grid
make_optimizer = optimizers.make
CONTROL_SUFFIX = '@eff-lr'
RESULTS_DIR = Path(__file__).resolve().parent / 'results'


# ----------------------------------------------------------------- optimizers


def register_optimizer(name: str, factory: Callable[..., optax.GradientTransformation]) -> None:
  """Makes :func:`make_optimizer` (hence the training loop) know ``name``.

  For studies whose optimizers need more than a learning rate (a quantization
  grid, say): the factory closes over the rest. Registering a name again
  replaces its factory. Built-in names cannot be replaced.

  Args:
    name: a new optimizer name.
    factory: ``factory(learning_rate, *, seed, weight_decay)`` returning an
      optax transformation (extra-argument support is added); adapted to
      the registry's ``factory(learning_rate, options)``
      (:func:`experiments.optimizers.register`).
  """
  optimizers.register(name, lambda lr, o: factory(lr, seed=o.seed, weight_decay=o.weight_decay))


def schedule(kind: str, total_steps: int) -> Callable[[Any], Any]:
  """Maps a peak learning rate to the schedule ``kind`` (constant, cosine)."""
  if kind == 'constant':
    return lambda lr: lr
  if kind == 'cosine':
    return lambda lr: optax.cosine_decay_schedule(lr, total_steps)
  raise ValueError(f'Unknown schedule {kind!r}.')


# ----------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Split:
  """Train, validation and test arrays (numpy, float inputs, int labels)."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def split_validation(data: Sequence[np.ndarray], *, fraction: float = 0.1, seed: int = 0) -> Split:
  """Holds out a fixed random ``fraction`` of the training set for validation.

  Args:
    data: ``(x_train, y_train, x_test, y_test)``.
    fraction: share of the training examples held out.
    seed: seed of the fixed split.

  Returns:
    A :class:`Split`.
  """
  x, y, x_test, y_test = data
  order = np.random.default_rng(seed).permutation(len(y))
  n_val = int(round(fraction * len(y)))
  val, train = order[:n_val], order[n_val:]
  return Split(x[train], y[train], x[val], y[val], x_test, y_test)


def _chunks(x: np.ndarray, y: np.ndarray, size: int):
  """Pads ``(x, y)`` to whole chunks of ``size``: ``(xs, ys, mask)``."""
  n = len(y)
  size = min(size, n)
  pad = -n % size
  xs = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
  ys = np.concatenate([y, np.zeros(pad, y.dtype)])
  mask = np.arange(n + pad) < n
  c = (n + pad) // size
  return (
    jnp.asarray(xs.reshape(c, size, *x.shape[1:])),
    jnp.asarray(ys.reshape(c, size)),
    jnp.asarray(mask.reshape(c, size)),
  )


# ------------------------------------------------------------------- training


def xent(logits: Array, labels: Array) -> Array:
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass(frozen=True)
class Budget:
  """How long and on what a run trains.

  Attributes:
    batch_size: examples per step.
    epochs: passes over the training set.
    schedule: ``'constant'`` (the paper's protocol) or ``'cosine'``.
    eval_batch: examples per evaluation chunk.
  """

  batch_size: int
  epochs: int
  schedule: str = 'constant'
  eval_batch: int = 1000


def step_loop() -> str:
  """``'scan'`` (one compiled epoch) or ``'python'`` (one call per step).

  On the CPU, XLA runs a convolution inside a loop (``lax.scan``,
  ``fori_loop``, ``lax.map``) far slower than the same convolution outside
  one (4-bit QATNet, batch 128, 2 cores: 21x; an unrolled scan is as fast as
  the plain step; ``benchmarks/results/cpu_loops_cpu2.md``), so there the
  steps, and the runs of a grid (see ``_trainer``), are dispatched from
  Python and evaluation chunks are unrolled. Elsewhere the epoch is one scan
  of all runs, vmapped.
  ``$SADAM_STEP_LOOP`` (``scan`` or ``python``) overrides the choice: the two
  round differently, so a run reproduces to the last digit only in its own.
  """
  loop = os.environ.get('SADAM_STEP_LOOP')
  if loop is None:
    return 'python' if jax.default_backend() == 'cpu' else 'scan'
  if loop not in ('scan', 'python'):
    raise ValueError(f'SADAM_STEP_LOOP={loop!r}: use scan or python.')
  return loop


def _trainer(model: Any, name: str, split: Split, budget: Budget):
  """``(init, epoch, evaluate, steps_per_epoch)`` of one optimizer.

  The three functions are jitted and vmapped over runs (on the CPU looped
  over them from Python, see :func:`step_loop`). A run is a
  ``(learning rate, seed)`` pair; the seed alone sets the initialization, the
  data order and S-Adam's probes, so runs of one seed at different learning
  rates, and an S-Adam run and its control, are paired. Models with
  non-parameter collections (BatchNorm statistics) train in ``train=True``
  mode and update them.
  """
  steps = len(split.y_train) // budget.batch_size
  lr_of = schedule(budget.schedule, steps * budget.epochs)
  x_train, y_train = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
  evals = {
    k: _chunks(getattr(split, f'x_{k}'), getattr(split, f'y_{k}'), budget.eval_batch)
    for k in ('val', 'test')
  }
  in_loops = step_loop() == 'scan'

  def forward(params, extra, x, train):
    if not extra:
      return model.apply({'params': params}, x, train=train), extra
    if not train:
      return model.apply({'params': params, **extra}, x), extra
    return model.apply({'params': params, **extra}, x, train=True, mutable=list(extra))

  def init(lr, seed):
    variables = model.init(jax.random.key(seed), x_train[:1])
    params = variables.pop('params')
    opt = make_optimizer(name, lr_of(lr), seed=seed)
    return dict(params=params, extra=dict(variables), opt=opt.init(params), damping=jnp.zeros([]))

  def step(lr, seed, carry, idx):
    x, y = x_train[idx], y_train[idx]

    def loss(params):
      logits, extra = forward(params, carry['extra'], x, True)
      return xent(logits, y), extra

    value_fn = lambda p: loss(p)[0]
    grad_fn = lambda p, _: jax.grad(value_fn)(p)
    (value, extra), grads = jax.value_and_grad(loss, has_aux=True)(carry['params'])
    opt = make_optimizer(name, lr_of(lr), seed=seed)
    updates, opt_state = opt.update(
      grads, carry['opt'], carry['params'], value_fn=value_fn, value=value, grad_fn=grad_fn
    )
    # S-Adam's brake (built-in or registered); 1 for other optimizers.
    damping = optax.tree.get(opt_state, 'damping', default=1.0)
    carry = dict(
      params=optax.apply_updates(carry['params'], updates),
      extra=extra,
      opt=opt_state,
      damping=carry['damping'] + damping,
    )
    return carry, value

  def batches(seed, index):
    order = jax.random.permutation(jax.random.fold_in(jax.random.key(seed), index), len(y_train))
    return order[: steps * budget.batch_size].reshape(steps, budget.batch_size)

  def epoch(lr, seed, carry, index):
    carry, losses = jax.lax.scan(lambda c, i: step(lr, seed, c, i), carry, batches(seed, index))
    return carry, losses.mean()

  def evaluate(carry):
    def chunk(args):
      x, y, mask = args
      logits, _ = forward(carry['params'], carry['extra'], x, False)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      hits = jnp.argmax(logits, -1) == y
      return jnp.sum(hits * mask), jnp.sum(losses * mask)

    out = {}
    for k, (xs, ys, mask) in evals.items():
      if in_loops:
        hits, losses = jax.lax.map(chunk, (xs, ys, mask))
      else:  # Unrolled: see step_loop.
        hits, losses = map(jnp.stack, zip(*[chunk(c) for c in zip(xs, ys, mask)]))
      n = jnp.sum(mask)
      out[f'{k}_acc'], out[f'{k}_loss'] = hits.sum() / n, losses.sum() / n
    return out

  vmapped = lambda f, axes: jax.jit(jax.vmap(f, in_axes=axes))
  if in_loops:
    return (vmapped(init, (0, 0)), vmapped(epoch, (0, 0, 0, None)), vmapped(evaluate, (0,)), steps)
  # On the CPU the runs are looped over too: vmapping them turns every
  # convolution into a grouped one, 2.5x slower there (cpu_loops_cpu2.md).
  step_one, batches_one, evaluate_one = map(jax.jit, (step, batches, evaluate))
  run_of = lambda tree, r: jax.tree.map(lambda a: a[r], tree)
  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

  def epoch_from_python(lrs, seeds, carry, index):
    carries, losses = [], []
    for r in range(len(lrs)):
      c, idx, run_losses = run_of(carry, r), batches_one(seeds[r], index), []
      for i in range(steps):
        c, loss = step_one(lrs[r], seeds[r], c, idx[i])
        run_losses.append(loss)
      carries.append(c)
      losses.append(jnp.mean(jnp.stack(run_losses)))
    return stack(carries), jnp.stack(losses)

  def evaluate_runs(carry):
    runs = carry['damping'].shape[0]
    return stack([evaluate_one(run_of(carry, r)) for r in range(runs)])

  return vmapped(init, (0, 0)), epoch_from_python, evaluate_runs, steps


def train_grid(
  model: Any,
  name: str,
  split: Split,
  budget: Budget,
  *,
  lrs: Sequence[float],
  seeds: Sequence[int],
  progress: Any = None,
) -> dict[str, Any]:
  """Trains optimizer ``name`` at each ``(lrs[i], seeds[i])``, all vmapped.

  Args:
    model: a flax linen classifier taking ``train=``.
    name: an optimizer of :data:`OPTIMIZERS`.
    split: the data.
    budget: batch size, epochs, schedule.
    lrs: peak learning rate of each run.
    seeds: seed of each run (same length as ``lrs``).
    progress: a tqdm bar advanced by one per epoch.

  Returns:
    Per run (lists of floats): ``train_loss`` and ``val_acc``, ``test_acc``,
    ``val_loss``, ``test_loss`` curves (one point per epoch), their final
    values as ``final_*``, ``mean_damping`` (S-Adam; 1.0 otherwise) and
    ``seconds`` for the whole grid.
  """
  init, epoch, evaluate, steps = _trainer(model, name, split, budget)
  lrs = jnp.asarray(lrs, jnp.float32)
  seeds = jnp.asarray(seeds, jnp.uint32)
  start = time.perf_counter()
  carry = init(lrs, seeds)
  curves: dict[str, list] = {}
  for e in range(budget.epochs):
    carry, loss = epoch(lrs, seeds, carry, jnp.asarray(e))
    metrics = dict(train_loss=loss, **evaluate(carry))
    for k, v in metrics.items():
      curves.setdefault(k, []).append(np.asarray(v))
    if progress is not None:
      progress.update(1)
  out = {k: np.stack(v, axis=1).tolist() for k, v in curves.items()}
  out.update({f'final_{k}': [row[-1] for row in out[k]] for k in curves})
  out['mean_damping'] = (np.asarray(carry['damping']) / (steps * budget.epochs)).tolist()
  out['seconds'] = time.perf_counter() - start
  return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def compare(
  model: Any,
  split: Split,
  budget: Budget,
  *,
  optimizers: Sequence[str],
  seeds: Sequence[int],
  grids: dict[str, Sequence[float]] | None = None,
  controls: bool = True,
  desc: str = '',
  on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
  """The comparison protocol of the module docstring.

  Args:
    model: a flax linen classifier.
    split: train/validation/test data.
    budget: batch size, epochs, schedule.
    optimizers: names from :data:`OPTIMIZERS`.
    seeds: the seeds every learning rate is trained with.
    grids: learning-rate grid per optimizer (default :func:`lr_grid`).
    controls: run AdamW at each S-Adam's effective learning rate.
    desc: label of the progress bar.
    on_result: called with the results so far after each optimizer (to save
      partial results of long runs).

  Returns:
    ``{optimizer: entry}`` (controls under ``'<sadam name>@eff-lr'``); an
    entry holds ``grid`` (lr -> mean val/test accuracy), ``lr`` (the
    selected one; per seed for controls), ``test_acc`` and ``val_acc`` per
    seed, ``mean``/``std`` of the test accuracy, ``mean_damping`` per seed,
    ``curves`` of the selected runs and ``seconds``.
  """
  import tqdm  # pylint: disable=g-import-not-at-top

  grids = dict(grids or {})
  seeds = list(seeds)
  n_controls = sum(o in SADAM_ESTIMATORS for o in optimizers) if controls else 0
  total = budget.epochs * (len(optimizers) + n_controls)
  results: dict[str, Any] = {}
  with tqdm.tqdm(
    total=total, desc=desc or 'epochs', unit='epoch', file=sys.stdout, dynamic_ncols=True
  ) as bar:
    for name in optimizers:
      grid = list(grids.get(name, lr_grid(name)))
      bar.set_postfix_str(name)
      runs = train_grid(
        model,
        name,
        split,
        budget,
        lrs=[lr for lr in grid for _ in seeds],
        seeds=seeds * len(grid),
        progress=bar,
      )
      results[name] = _select(runs, grid, len(seeds))
      bar.write(_summary(name, results[name]))
      if controls and name in SADAM_ESTIMATORS:
        entry = results[name]
        lrs = [entry['lr'] * d for d in entry['mean_damping']]
        bar.set_postfix_str(name + CONTROL_SUFFIX)
        runs = train_grid(model, 'adamw', split, budget, lrs=lrs, seeds=seeds, progress=bar)
        control = _select(runs, [None], len(seeds))
        control['lr'] = lrs
        results[name + CONTROL_SUFFIX] = control
        bar.write(_summary(name + CONTROL_SUFFIX, control))
      if on_result is not None:
        on_result(results)
  return results


def _select(runs: dict[str, Any], grid: Sequence[Any], n_seeds: int) -> dict[str, Any]:
  """Picks the grid point with the best mean validation accuracy."""
  shape = (len(grid), n_seeds)
  val = np.asarray(runs['final_val_acc']).reshape(shape)
  test = np.asarray(runs['final_test_acc']).reshape(shape)
  best = int(np.argmax(val.mean(axis=1)))
  pick = lambda key: np.asarray(runs[key]).reshape(*shape, -1)[best].tolist()
  picked = lambda key: np.asarray(runs[key]).reshape(shape)[best].tolist()
  mean, std = mean_std(test[best])
  return dict(
    grid={
      str(lr): dict(val_acc=float(v), test_acc=float(t))
      for lr, v, t in zip(grid, val.mean(1), test.mean(1))
    },
    lr=grid[best],
    test_acc=test[best].tolist(),
    val_acc=val[best].tolist(),
    mean=mean,
    std=std,
    mean_damping=picked('mean_damping'),
    curves={k: pick(k) for k in ('train_loss', 'val_acc', 'test_acc')},
    seconds=runs['seconds'],
  )


def _summary(name: str, entry: dict[str, Any]) -> str:
  lr = entry['lr']
  lr = f'{np.mean(lr):.2g} (mean)' if isinstance(lr, list) else f'{lr:g}'
  return (
    f'  {name:24s} lr {lr:14s} test {100 * entry["mean"]:5.1f} +- '
    f'{100 * entry["std"]:4.1f}  damping {np.mean(entry["mean_damping"]):.3f}'
    f'  ({entry["seconds"]:.0f} s)'
  )


# -------------------------------------------------------------------- results


def hardware() -> str:
  """A one-line description of the machine JAX runs on."""
  device = jax.devices()[0]
  kind = getattr(device, 'device_kind', device.platform)
  # XLA's flags can change float rounding (the optimization level does), so they are named.
  flags = os.environ.get('XLA_FLAGS', '').strip()
  return (
    f'{jax.default_backend()} ({kind}), {os.cpu_count()} logical CPUs '
    f'visible, {platform.machine()}, jax {jax.__version__}, '
    f'optax {optax.__version__}, step loop {step_loop()}'
    + (f', XLA_FLAGS={flags}' if flags else '')
  )


def command_line() -> str:
  """The command that started this process, as typed from the repo root."""
  module = Path(sys.argv[0]).stem
  return ' '.join([f'python -m experiments.{module}', *sys.argv[1:]])


def table(results: dict[str, Any]) -> str:
  """A markdown table: optimizer, selected lr, test accuracy, damping."""
  lines = [
    '| optimizer | lr (selected on validation) | test accuracy % (mean +- std) '
    '| val accuracy % | mean damping | seeds |',
    '|---|---|---|---|---|---|',
  ]
  for name, e in results.items():
    lr = e['lr']
    lr = f'{np.mean(lr):.3g} (lr x damping, mean over seeds)' if isinstance(lr, list) else f'{lr:g}'
    damping = f'{np.mean(e["mean_damping"]):.3f}' if name in SADAM_ESTIMATORS else '-'
    lines.append(
      f'| {name} | {lr} | {100 * e["mean"]:.1f} +- {100 * e["std"]:.1f} '
      f'| {100 * np.mean(e["val_acc"]):.1f} | {damping} | {len(e["test_acc"])} |'
    )
  return '\n'.join(lines)


def _difference(a: dict[str, Any], b: dict[str, Any]) -> str:
  """``a - b`` in points, flagged when under two standard errors."""
  d = 100 * (a['mean'] - b['mean'])
  se = 100 * np.sqrt(a['std'] ** 2 / len(a['test_acc']) + b['std'] ** 2 / len(b['test_acc']))
  return f'{d:+.1f}' + (' (within 2 s.e.)' if abs(d) < 2 * se else '')


def verdict(results: dict[str, Any]) -> list[str]:
  """Plain sentences: each S-Adam against the best baseline and its control.

  A difference smaller than two standard errors of the difference of the
  means (sample std over seeds) is flagged as within noise.
  """
  baselines = {
    k: v for k, v in results.items() if k not in SADAM_ESTIMATORS and CONTROL_SUFFIX not in k
  }
  lines = []
  if not baselines:
    return lines
  best = max(baselines, key=lambda k: baselines[k]['mean'])
  for name in SADAM_ESTIMATORS:
    if name not in results:
      continue
    e = results[name]
    line = (
      f'{name}: {100 * e["mean"]:.1f} +- {100 * e["std"]:.1f}, '
      f'{_difference(e, baselines[best])} points against the best tuned '
      f'baseline ({best}, {100 * baselines[best]["mean"]:.1f})'
    )
    if 'adamw' in results and best != 'adamw':
      line += f', {_difference(e, results["adamw"])} against tuned adamw'
    control = results.get(name + CONTROL_SUFFIX)
    if control is not None:
      line += (
        f', {_difference(e, control)} against AdamW at its effective '
        f'lr ({100 * control["mean"]:.1f})'
      )
    ahead = e['mean'] > baselines[best]['mean']
    lines.append(
      f'- {line}: it {"beats" if ahead else "does not beat"} the best tuned baseline on the mean.'
    )
  return lines


def write_results(
  stem: str, payload: dict[str, Any], markdown: str, *, out_dir: Path | str = RESULTS_DIR
) -> Path:
  """Writes ``<stem>.json`` and ``<stem>.md`` under ``out_dir``.

  Args:
    stem: file name without suffix.
    payload: JSON-serialisable results (command and hardware are added).
    markdown: the readable report.
    out_dir: the results folder.

  Returns:
    The path of the JSON file.
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  payload = dict(
    command=command_line(),
    hardware=hardware(),
    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    **payload,
  )
  path = out_dir / f'{stem}.json'
  path.write_text(json.dumps(payload, indent=1))
  (out_dir / f'{stem}.md').write_text(markdown)
  return path


def write_report(
  stem: str,
  payload: dict[str, Any],
  markdown: Callable[[dict[str, Any]], str],
  *,
  out_dir: Path | str = RESULTS_DIR,
) -> dict[str, Any]:
  """:func:`write_results` with a report made from what was stored, printed.

  Args:
    stem: file name without suffix.
    payload: JSON-serialisable results (command, hardware and date are added).
    markdown: the stored payload (with those fields) -> the readable report.
    out_dir: the results folder.

  Returns:
    The stored payload, as read back.
  """
  path = write_results(stem, payload, '', out_dir=out_dir)
  stored = json.loads(path.read_text())
  report = markdown(stored)
  path.with_suffix('.md').write_text(report)
  print(report)
  return stored


def plot_curves(results: dict[str, Any], path: Path | str, *, title: str) -> None:
  """Test accuracy and train loss per epoch (mean over seeds), one PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
  for name, e in results.items():
    style = '--' if CONTROL_SUFFIX in name else '-'
    for ax, key in ((ax_acc, 'test_acc'), (ax_loss, 'train_loss')):
      curve = np.mean(e['curves'][key], axis=0)
      ax.plot(np.arange(1, len(curve) + 1), curve, style, label=name)
  ax_acc.set(xlabel='epoch', ylabel='test accuracy', title=title)
  ax_loss.set(xlabel='epoch', ylabel='train loss (epoch mean)', yscale='log')
  ax_acc.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
