"""Beyond the paper: quantization-aware braking against a tuned AdamW.

The brief (section 6) measured that S-Adam's QAT gain equals AdamW at the
same effective learning rate. This study asks whether a brake that looks at
the quantizer itself does better: in QAT the singularities are the bin
boundaries, and chattering is a weight whose integer code goes up and down
step after step (Nagel et al., 2022). The candidates come from
:mod:`sadam_optax.quant_aware`; all methods are tuned on the same
learning-rate grid by validation accuracy and reported on the test set at the
target bit width and, with the same trained float weights, at one bit fewer
(Wenshoj et al., 2025, argue oscillations make networks robust to that).

Methods (``--methods``; each an optimizer of :mod:`experiments.optimizers`
and a schedule, :data:`experiments.configs.beyond_paper.METHODS`):

* ``adamw``: AdamW, constant lr, with the oscillation frequency recorded by
  ``scale_by_oscillation`` at brake strength 0 (damping exactly 1, so the
  updates are AdamW's).
* ``adamw-cosine``: AdamW with cosine decay to 0 (what users run).
* ``sadam-literal`` (+ ``@eff-lr``, AdamW at its effective lr): the paper.
* ``sadam`` (+ ``@eff-lr``): the library's default S-AdamW (estimator
  ``'uphill'``); ``sadam-secant`` (+ ``@eff-lr``): the default before 0.2.
* ``sam-adamw``: SAM (``optax.contrib.sam``, radius 0.05) around AdamW, so
  that it shares the Adam family's learning-rate grid.
* ``nagel-dampen``: AdamW + :func:`~sadam_optax.quant_aware.dampen_oscillations`.
* ``nagel-freeze``: AdamW + :func:`~sadam_optax.quant_aware.freeze_oscillating`.
* ``osc-brake``: AdamW + :func:`~sadam_optax.quant_aware.scale_by_oscillation`,
  per weight, exp rule; ``osc-brake-tensor``: per tensor;
  ``osc-brake-compound``: per tensor, compound rule.
* ``*-cosine`` variants of the candidates: the same with cosine decay.
* Ablations of ``sadam``: ``sadam-step`` (rho from two jvps along the step,
  + ``@eff-lr``), ``sadam-lam1`` / ``sadam-lam4`` (brake strength 1 and 4
  instead of 2), ``sadam-compound`` (the compounding brake rule),
  ``sadam-every4`` (rho measured every 4th step and carried). ``sadam-0.2``
  (the 0.2 default: no release), ``sadam-averaged`` (the damping averaged
  over probes, ``damping_decay=0.7``), ``sadam-envelope`` (harder readings
  at once, softer ones over about ten probes, ``damping_recovery=0.9``).

The configs are :mod:`experiments.configs.beyond_paper` (``--config
beyond_paper:VARIANT``, or its alias ``--preset VARIANT``); options given on
the command line override the config. Run (MNIST-1D CNN, 4 and 2 bits; the
default variant)::

  python -m experiments.beyond_paper

CIFAR-10 (the offline copy, see :func:`sadam_examples.data.cifar10_path`),
the paper's QATNet, 4 and 2 bits; learning rates chosen on the first
``--tune-seeds`` seeds, then the other seeds run at the chosen rate::

  python -m experiments.beyond_paper --config beyond_paper:cifar10

References:
  Nagel, Fournarakis, Bondarenko, Blankevoort, `Overcoming Oscillations in
  Quantization-Aware Training <https://arxiv.org/abs/2203.11086>`_, ICML 2022.

  Wenshoj, Pepin, Selvan, Oscillations Make Neural Networks Robust to
  Quantization, 2025.

  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments import configs
from experiments import optimizers
from experiments import qat
from experiments.configs import beyond_paper as beyond_paper_configs

BASELINES = ('adamw', 'adamw-cosine')
DIAGNOSTICS = ('osc_freq', 'osc_damping', 'frozen')
METHODS = beyond_paper_configs.METHODS


def register(bits: int) -> None:
  """Registers the optimizers of :func:`experiments.optimizers.quant_aware` at ``bits``."""
  for name, factory in optimizers.quant_aware(bits).items():
    optimizers.register(name, factory)


def _state_mean(opt_state: Any, field: str) -> np.ndarray | None:
  """Per-run mean of a state field over all its elements (None if absent)."""
  try:
    tree = optax.tree.get(opt_state, field)
  except (KeyError, ValueError):
    return None
  leaves = jax.tree.leaves(tree)
  if not leaves:  # optax.tree.get returns None for an absent field.
    return None
  total = sum(jnp.sum(x.reshape(x.shape[0], -1), axis=1) for x in leaves)
  size = sum(x[0].size for x in leaves)
  return np.asarray(total / size)


def train_runs(
  model: Any,
  low_model: Any,
  name: str,
  split: common.Split,
  budget: common.Budget,
  *,
  lrs: Sequence[float],
  seeds: Sequence[int],
  progress: Any = None,
) -> dict[str, Any]:
  """Trains ``name`` at each ``(lrs[i], seeds[i])`` (vmapped); final metrics.

  Uses the loop of :mod:`experiments.common`; the trained float weights are
  also evaluated with ``low_model`` (the same network one bit narrower).

  Returns:
    Per run: ``final_val_acc``, ``final_test_acc``, ``final_low_test_acc``,
    ``mean_damping`` (S-Adam; 1 otherwise), the run mean of each state field
    of :data:`DIAGNOSTICS` present; ``seconds`` for the grid.
  """
  init, epoch, evaluate, steps = common._trainer(model, name, split, budget)  # pylint: disable=protected-access
  evaluate_low = common._trainer(low_model, name, split, budget)[2]  # pylint: disable=protected-access
  lrs_a = jnp.asarray(lrs, jnp.float32)
  seeds_a = jnp.asarray(seeds, jnp.uint32)
  start = time.perf_counter()
  carry = init(lrs_a, seeds_a)
  for e in range(budget.epochs):
    carry, _ = epoch(lrs_a, seeds_a, carry, jnp.asarray(e))
    if progress is not None:
      progress.update(1)
  metrics, low = evaluate(carry), evaluate_low(carry)
  out = dict(
    final_val_acc=np.asarray(metrics['val_acc']).tolist(),
    final_test_acc=np.asarray(metrics['test_acc']).tolist(),
    final_low_test_acc=np.asarray(low['test_acc']).tolist(),
    mean_damping=(np.asarray(carry['damping']) / (steps * budget.epochs)).tolist(),
  )
  for field in DIAGNOSTICS:
    value = _state_mean(carry['opt'], field)
    if value is not None:
      out[field] = value.tolist()
  out['seconds'] = time.perf_counter() - start
  return out


def select(runs: dict[str, Any], grid: Sequence[Any], n_seeds: int) -> dict[str, Any]:
  """The grid point with the best mean validation accuracy, and its seeds."""
  shape = (len(grid), n_seeds)
  arr = lambda k: np.asarray(runs[k], np.float64).reshape(shape)
  best = int(np.argmax(arr('final_val_acc').mean(1)))
  entry = dict(
    grid={
      str(lr): dict(val_acc=float(v), test_acc=float(t), low_test_acc=float(low))
      for lr, v, t, low in zip(
        grid,
        arr('final_val_acc').mean(1),
        arr('final_test_acc').mean(1),
        arr('final_low_test_acc').mean(1),
      )
    },
    lr=grid[best],
    test_acc=arr('final_test_acc')[best].tolist(),
    val_acc=arr('final_val_acc')[best].tolist(),
    low_test_acc=arr('final_low_test_acc')[best].tolist(),
    mean_damping=arr('mean_damping')[best].tolist(),
    seconds=runs['seconds'],
  )
  for field in DIAGNOSTICS:
    if field in runs:
      entry[field] = float(arr(field)[best].mean())
  return _with_stats(entry)


def _with_stats(entry: dict[str, Any]) -> dict[str, Any]:
  """``entry`` with mean +- std of its seeds' test accuracies (both widths)."""
  entry['mean'], entry['std'] = common.mean_std(entry['test_acc'])
  entry['low_mean'], entry['low_std'] = common.mean_std(entry['low_test_acc'])
  return entry


def extend(entry: dict[str, Any], runs: dict[str, Any]) -> dict[str, Any]:
  """``entry`` (from :func:`select`) with more seeds' ``runs`` at its lr."""
  out = dict(entry)
  n_old = len(entry['test_acc'])
  for key in ('test_acc', 'val_acc', 'low_test_acc', 'mean_damping'):
    src = 'final_' + key if key != 'mean_damping' else key
    out[key] = list(entry[key]) + list(np.asarray(runs[src], np.float64))
  for field in DIAGNOSTICS:
    if field in entry and field in runs:
      new = np.asarray(runs[field], np.float64)
      out[field] = float((entry[field] * n_old + new.sum()) / (n_old + new.size))
  out['seconds'] = entry['seconds'] + runs['seconds']
  return _with_stats(out)


def tuned(
  net: Any,
  low: Any,
  name: str,
  split: common.Split,
  budget: common.Budget,
  *,
  grid: Sequence[float],
  seeds: Sequence[int],
  tune_seeds: int | None,
  progress: Any = None,
) -> dict[str, Any]:
  """``name`` at the lr of ``grid`` with the best mean validation accuracy.

  With ``tune_seeds`` < ``len(seeds)``, the grid runs the first
  ``tune_seeds`` seeds and the other seeds then run at the chosen lr only
  (every seed is reported); otherwise every seed runs at every lr.
  """
  seeds = list(seeds)
  n = len(seeds) if tune_seeds is None else min(tune_seeds, len(seeds))
  runs = train_runs(
    net,
    low,
    name,
    split,
    budget,
    lrs=[lr for lr in grid for _ in seeds[:n]],
    seeds=seeds[:n] * len(grid),
    progress=progress,
  )
  entry = select(runs, list(grid), n)
  if n == len(seeds):
    return entry
  more = train_runs(
    net,
    low,
    name,
    split,
    budget,
    lrs=[entry['lr']] * (len(seeds) - n),
    seeds=seeds[n:],
    progress=progress,
  )
  return extend(entry, more)


def study(
  split: common.Split,
  bits: int,
  *,
  methods: Sequence[str],
  seeds: Sequence[int],
  epochs: int,
  batch_size: int,
  grid: Sequence[float],
  model: str = 'cnn1d',
  tune_seeds: int | None = None,
  on_result: Any = None,
) -> dict[str, Any]:
  """Every method at ``bits``, tuned on ``grid``; controls after S-Adam."""
  import tqdm  # pylint: disable=g-import-not-at-top

  register(bits)
  net, low = qat.build_model(model, bits), qat.build_model(model, bits - 1)
  seeds = list(seeds)
  n_controls = sum(m in common.SADAM_ESTIMATORS for m in methods)
  stages = 1 if tune_seeds is None or tune_seeds >= len(seeds) else 2
  results: dict[str, Any] = {}
  with tqdm.tqdm(
    total=epochs * (stages * len(methods) + n_controls),
    desc=f'{bits}-bit',
    unit='epoch',
    file=sys.stdout,
    dynamic_ncols=True,
  ) as bar:
    for label in methods:
      name, kind = METHODS[label]
      budget = common.Budget(batch_size, epochs, schedule=kind)
      bar.set_postfix_str(label)
      results[label] = tuned(
        net, low, name, split, budget, grid=grid, seeds=seeds, tune_seeds=tune_seeds, progress=bar
      )
      bar.write(_summary(label, results[label]))
      if name in common.SADAM_ESTIMATORS:
        entry = results[label]
        lrs = [entry['lr'] * d for d in entry['mean_damping']]
        runs = train_runs(net, low, 'adamw', split, budget, lrs=lrs, seeds=seeds, progress=bar)
        control = select(runs, [None], len(seeds))
        control['lr'] = lrs
        results[label + common.CONTROL_SUFFIX] = control
        bar.write(_summary(label + common.CONTROL_SUFFIX, control))
      if on_result is not None:
        on_result(results)
  return results


def _summary(label: str, e: dict[str, Any]) -> str:
  lr = e['lr']
  lr = f'{np.mean(lr):.2g}*' if isinstance(lr, list) else f'{lr:g}'
  return (
    f'  {label:26s} lr {lr:8s} test {100 * e["mean"]:5.1f} +- '
    f'{100 * e["std"]:4.1f}  one bit fewer {100 * e["low_mean"]:5.1f} +- '
    f'{100 * e["low_std"]:4.1f}  ({e["seconds"]:.0f} s)'
  )


def _diff(a: dict[str, Any], b: dict[str, Any], key: str = 'mean') -> tuple[float, bool]:
  """``a - b`` in points and whether it exceeds two standard errors."""
  std = 'std' if key == 'mean' else 'low_std'
  d = 100 * (a[key] - b[key])
  se = 100 * np.sqrt(a[std] ** 2 / len(a['test_acc']) + b[std] ** 2 / len(b['test_acc']))
  return d, abs(d) >= 2 * se


def table(results: dict[str, Any], bits: int) -> str:
  """Markdown table of one bit width."""
  lines = [
    f'| method | lr (selected on val) | test % at {bits} bits | test % at '
    f'{bits - 1} bit(s) (same weights) | val % | vs tuned adamw (pts) '
    '| osc. freq | damping / frozen | seeds |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  ref = results.get('adamw')
  for label, e in results.items():
    lr = e['lr']
    lr = f'{np.mean(lr):.3g} (lr x damping)' if isinstance(lr, list) else f'{lr:g}'
    if ref is not None and label != 'adamw':
      d, sig = _diff(e, ref)
      versus = f'{d:+.1f}' + ('' if sig else ' (within 2 s.e.)')
    else:
      versus = '-'
    freq = f'{e["osc_freq"]:.4f}' if 'osc_freq' in e else '-'
    if 'frozen' in e:
      extra = f'frozen {100 * e["frozen"]:.1f}%'
    elif 'osc_damping' in e:
      extra = f'final damping {e["osc_damping"]:.3f}'
    elif np.mean(e['mean_damping']) < 1:  # An S-Adam brake.
      extra = f'mean damping {np.mean(e["mean_damping"]):.3f}'
    else:
      extra = '-'
    lines.append(
      f'| {label} | {lr} | {100 * e["mean"]:.1f} +- {100 * e["std"]:.1f} | '
      f'{100 * e["low_mean"]:.1f} +- {100 * e["low_std"]:.1f} | '
      f'{100 * np.mean(e["val_acc"]):.1f} | {versus} | {freq} | {extra} | '
      f'{len(e["test_acc"])} |'
    )
  return '\n'.join(lines)


def verdict(results: dict[str, Any]) -> list[str]:
  """Who wins: each method against the better tuned AdamW baseline."""
  base = [b for b in BASELINES if b in results]
  if not base:
    return []
  best = max(base, key=lambda b: results[b]['mean'])
  ref = results[best]
  lines = [f'Best tuned baseline: {best} ({100 * ref["mean"]:.1f} +- {100 * ref["std"]:.1f}).']
  winners = []
  for label, e in results.items():
    if label in base:
      continue
    d, sig = _diff(e, ref)
    dl, sigl = _diff(e, ref, 'low_mean')
    if d >= 1 and sig:
      winners.append(label)
    lines.append(
      f'- {label}: {d:+.1f} points at the target width'
      f'{"" if sig else " (within 2 s.e.)"}, {dl:+.1f} at one bit '
      f'fewer{"" if sigl else " (within 2 s.e.)"}.'
    )
  lines.append(
    'Beats the best tuned baseline by >= 1 point (and 2 s.e.): '
    + (', '.join(winners) if winners else 'none')
    + '.'
  )
  return lines


DATASET_NAMES = dict(mnist1d='MNIST-1D', cifar10='CIFAR-10')


def _protocol(c: dict[str, Any]) -> str:
  """How the learning rates were chosen, in words."""
  n = c.get('tune_seeds')
  if n is None or n >= c['seeds']:
    return (
      f'Every method is trained at every lr of {c["grid"]} with every '
      'seed; the lr with the best mean validation accuracy is selected '
      'and its test accuracy reported (mean +- sample std).'
    )
  return (
    f'Every method is trained at every lr of {c["grid"]} with the first '
    f'{n} seeds; the lr with the best mean validation accuracy of those '
    f'is selected, the other {c["seeds"] - n} seeds run at it, and the '
    f'test accuracy of all {c["seeds"]} seeds there is reported (mean +- '
    'sample std).'
  )


def markdown(payload: dict[str, Any]) -> str:
  """The readable report of a (possibly partial) payload."""
  c = payload['config']
  lines = [
    '# Beyond the paper: quantization-aware braking vs a tuned AdamW',
    '',
    f'Command: `{payload.get("command", common.command_line())}`  ',
    f'Hardware: {payload.get("hardware", common.hardware())}  ',
    f'Wall time: {payload["seconds"]:.0f} s',
    '',
    f'{DATASET_NAMES[c.get("dataset", "mnist1d")]} ({payload["data"]}), '
    f'{c["model"]} with weights and activations '
    f'fake-quantized (per-tensor absmax, identity STE), batch '
    f'{c["batch_size"]}, {c["epochs"]} epochs ({c["steps"]} steps), weight '
    f'decay 1e-2, Adam b1 {c.get("b1", 0.9)} / b2 {c.get("b2", 0.999)}, '
    f'seeds {c["seeds"]}. {_protocol(c)} '
    '"one bit fewer" evaluates the same trained '
    'float weights with the network quantized to bits-1 (1 bit: sign x mean|w| weights). '
    '"osc. freq": mean over all weights (biases included, they never '
    'oscillate) of the EMA (momentum 0.01) of sign-alternating code '
    'changes at the end of training. Settings of the candidates (not '
    f'tuned): osc-brake lam {optimizers.BRAKE_LAM} per weight, osc-brake-tensor lam '
    f'{optimizers.TENSOR_LAM} on the tensor mean, compound {optimizers.COMPOUND} per tensor, '
    f'dampening strength {optimizers.DAMPEN_STRENGTH} (grid units, decoupled), '
    f'freezing threshold {optimizers.FREEZE_THRESHOLD}. "adamw" records the '
    'oscillation frequency through scale_by_oscillation at lam 0 (damping '
    'exactly 1).',
    '',
  ]
  for label, results in payload['results'].items():
    bits = int(label.split('-')[0])
    lines += [f'## {label}', '', table(results, bits), '', *verdict(results), '']
  if payload.get('notes'):
    lines += ['## Notes', '', payload['notes'], '']
  return '\n'.join(lines)


def parser() -> argparse.ArgumentParser:
  """The command line: a config (:mod:`experiments.configs.beyond_paper`) and overrides."""
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  configs.add_arguments(p, name='beyond_paper')
  p.add_argument('--dataset', choices=sorted(DATASET_NAMES))
  p.add_argument('--model', choices=qat.MODELS)
  p.add_argument(
    '--tune-seeds', type=int, help='choose the lr on the first N seeds only (default: all)'
  )
  p.add_argument('--bits', type=int, nargs='+')
  p.add_argument('--seeds', type=int)
  p.add_argument('--epochs', type=int)
  p.add_argument('--batch-size', type=int)
  p.add_argument('--methods', nargs='+', choices=list(METHODS))
  p.add_argument('--grid', type=float, nargs='+')
  p.add_argument('--limit-train', type=int)
  p.add_argument('--limit-test', type=int)
  p.add_argument('--b1', type=float, help="Adam's first-moment decay for every method (0.9)")
  p.add_argument('--b2', type=float, help="Adam's second-moment decay for every method (0.999)")
  p.add_argument('--out', help='results file stem (default beyond_paper)')
  p.add_argument('--out-dir', default=str(common.RESULTS_DIR))
  p.add_argument('--notes', default='', help='free text appended to the .md')
  p.add_argument(
    '--merge',
    nargs='+',
    metavar='JSON',
    help='only merge these results files (e.g. one per bit width run in parallel) into --out',
  )
  return p


def merge(paths: Sequence[str], out: str, out_dir: str, notes: str) -> None:
  """Writes one report from several results files of this study."""
  payloads = [json.loads(Path(p).read_text()) for p in paths]
  merged = dict(
    payloads[0],
    notes=notes or payloads[0].get('notes', ''),
    results={},
    seconds=max(p['seconds'] for p in payloads),
    command=' ; '.join(p['command'] for p in payloads),
  )
  for p in payloads:  # Methods of one bit width may come from several runs.
    for label, methods in p['results'].items():
      merged['results'].setdefault(label, {}).update(methods)
  merged['config'] = dict(
    merged['config'], bits=sorted({b for p in payloads for b in p['config']['bits']}, reverse=True)
  )
  path = Path(out_dir) / f'{out}.json'
  path.write_text(json.dumps(merged, indent=1))
  path.with_suffix('.md').write_text(markdown(merged))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the study of the command line's config (or merges results files).

  Args:
    argv: the command line (None: ``sys.argv``).

  Returns:
    The JSON payload (empty after ``--merge``).
  """
  args = parser().parse_args(argv)
  config = configs.resolve(args, name='beyond_paper')
  if args.merge:
    merge(args.merge, config.out, args.out_dir, args.notes)
    return {}
  split = qat.load(config.dataset, limit_train=config.limit_train, limit_test=config.limit_test)
  payload: dict[str, Any] = dict(
    config=dict(
      dataclasses.asdict(config),
      steps=len(split.y_train) // config.batch_size * config.epochs,
    ),
    notes=args.notes,
    results={},
    data=f'{len(split.y_train)} train / {len(split.y_val)} val / {len(split.y_test)} test',
  )
  start = time.perf_counter()

  def save(label, results):
    payload['results'][label] = results
    payload['seconds'] = time.perf_counter() - start
    common.write_results(config.out, payload, markdown(payload), out_dir=args.out_dir)

  for bits in config.bits:
    label = f'{bits}-bit'
    with optimizers.defaults(b1=config.b1, b2=config.b2):
      results = study(
        split,
        bits,
        methods=config.methods,
        seeds=range(config.seeds),
        epochs=config.epochs,
        batch_size=config.batch_size,
        grid=config.grid,
        model=config.model,
        tune_seeds=config.tune_seeds,
        on_result=lambda r, label=label: save(label, r),
      )
    save(label, results)
    print(f'\n{label}\n{table(results, bits)}\n' + '\n'.join(verdict(results)), flush=True)
  return payload


if __name__ == '__main__':
  main()
