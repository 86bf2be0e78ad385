"""The paper's noisy regime: S-Adam at batch sizes 2, 4, 16 and 64.

MNIST-1D (generated locally), the 1-D CNN fake-quantized to 4 bits; for each
batch size, AdamW and S-Adam (``--optimizers``) are tuned on a learning-rate
grid by validation accuracy, and AdamW at S-Adam's effective learning rate
(lr times the mean damping of the same run) runs after each S-Adam, as in
:mod:`experiments.qat`. The number of epochs is the same at every batch size,
so small batches take more, noisier steps.

The configs are :mod:`experiments.configs.small_batch` (``default``,
``smoke``); options given on the command line override the config. Example::

  python -m experiments.small_batch --seeds 3 --epochs 10

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common
from experiments import configs
from experiments import qat
from experiments.configs import small_batch as small_batch_configs


def parser() -> argparse.ArgumentParser:
  """The command line: a config (:mod:`experiments.configs.small_batch`) and overrides."""
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  configs.add_arguments(p, name='small_batch')
  p.add_argument('--batch-sizes', type=int, nargs='+')
  p.add_argument('--optimizers', nargs='+', choices=common.OPTIMIZERS)
  p.add_argument('--bits', help="bit width; 'none' for float")
  p.add_argument('--seeds', type=int)
  p.add_argument('--epochs', type=int)
  p.add_argument('--lrs', type=float, nargs='+')
  p.add_argument('--limit-train', type=int, help='first N training examples')
  p.add_argument('--out', help='results file stem (default small_batch)')
  p.add_argument('--out-dir', default=str(common.RESULTS_DIR))
  return p


def run(config: small_batch_configs.Config, out_dir: Path | str) -> dict[str, Any]:
  """Runs the comparison at every batch size and writes the results.

  Args:
    config: the resolved config (:func:`experiments.configs.resolve`).
    out_dir: where ``<out>.json``, ``<out>.md`` and ``<out>.png`` go.

  Returns:
    The JSON payload.
  """
  start = time.perf_counter()
  split = qat.load('mnist1d', limit_train=config.limit_train)
  model = qat.build_model('cnn1d', qat.parse_bits(config.bits))
  grids = {o: config.lrs for o in config.optimizers}
  out_dir = Path(out_dir)
  payload: dict[str, Any] = dict(config=dataclasses.asdict(config), results={})
  for batch_size in config.batch_sizes:
    budget = common.Budget(batch_size, config.epochs)
    results = common.compare(
      model,
      split,
      budget,
      optimizers=config.optimizers,
      seeds=list(range(config.seeds)),
      grids=grids,
      desc=f'batch {batch_size}',
    )
    payload['results'][str(batch_size)] = results
    payload['seconds'] = time.perf_counter() - start
    common.write_results(config.out, payload, _markdown(config, payload), out_dir=out_dir)
    print(
      f'\nbatch {batch_size}\n{common.table(results)}\n' + '\n'.join(common.verdict(results)),
      flush=True,
    )
  _plot(payload['results'], out_dir / f'{config.out}.png')
  return payload


def _markdown(config: small_batch_configs.Config, payload: dict[str, Any]) -> str:
  """The readable report of a (possibly partial) payload."""
  names = list(next(iter(payload['results'].values())))
  header = '| batch | ' + ' | '.join(names) + ' |\n|---|' + '---|' * len(names)
  rows = []
  for batch, results in payload['results'].items():
    cells = [
      f'{100 * results[n]["mean"]:.1f} +- {100 * results[n]["std"]:.1f}'
      f' (lr {_lr(results[n]["lr"])})'
      for n in names
    ]
    rows.append(f'| {batch} | ' + ' | '.join(cells) + ' |')
  verdicts = [
    f'- batch {b}: ' + v[2:] for b, r in payload['results'].items() for v in common.verdict(r)
  ]
  return '\n'.join(
    [
      '# Small batches: MNIST-1D, 1-D CNN, '
      f'{"float" if qat.parse_bits(config.bits) is None else config.bits + "-bit"}',
      '',
      f'Command: `{common.command_line()}`  ',
      f'Hardware: {common.hardware()}  ',
      f'Wall time: {payload["seconds"]:.0f} s',
      '',
      f'Test accuracy %, mean +- std over {config.seeds} seeds, {config.epochs} '
      'epochs at every batch size, constant learning rate selected on a '
      f'validation split from {config.lrs}; `@eff-lr` is AdamW at lr x mean '
      "damping of the same seed's S-Adam run.",
      '',
      header,
      *rows,
      '',
      *verdicts,
      '',
      f'![curves]({config.out}.png)',
      '',
    ]
  )


def _lr(lr: Any) -> str:
  return f'{sum(lr) / len(lr):.2g}' if isinstance(lr, list) else f'{lr:g}'


def _plot(results: dict[str, Any], path: Path) -> None:
  """Final test accuracy against batch size, one line per optimizer."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  batches = [int(b) for b in results]
  fig, ax = plt.subplots(figsize=(6, 4))
  for name in next(iter(results.values())):
    mean = [100 * results[str(b)][name]['mean'] for b in batches]
    std = [100 * results[str(b)][name]['std'] for b in batches]
    style = '--' if common.CONTROL_SUFFIX in name else '-'
    ax.errorbar(batches, mean, yerr=std, fmt=style + 'o', capsize=3, label=name)
  ax.set(
    xscale='log', xlabel='batch size', ylabel='test accuracy %', title='MNIST-1D, small batches'
  )
  ax.set_xticks(batches, [str(b) for b in batches])
  ax.minorticks_off()
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the command line's config."""
  args = parser().parse_args(argv)
  run(configs.resolve(args, name='small_batch'), args.out_dir)


if __name__ == '__main__':
  main()
