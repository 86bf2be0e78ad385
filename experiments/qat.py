"""Quantization-aware training: S-Adam against tuned baselines and the
effective-learning-rate control.

Optimizers (``--optimizers``): AdamW, S-AdamW with each estimator
(``sadam`` = the library's default, ``'uphill'``; ``sadam-secant``,
``sadam-step``, ``sadam-literal`` = the paper's scripts,
``sadam-trajectory``), SGD with momentum 0.9, Prox-SGD (momentum SGD then L1
soft-thresholding, l1 1e-4) and SAM on momentum SGD, all with the same
budget and schedule. Each is tuned on a small learning-rate grid by
validation accuracy (a held-out 10% of the training set, never the test
set); after each S-Adam, AdamW at S-Adam's effective learning rate (lr times
the mean damping of the same run) runs automatically. See
:func:`experiments.common.compare`.

Quick start (no download; MNIST-1D is generated locally; a few minutes on
2 CPU cores)::

  python -m experiments.qat --config qat:quick --out-dir runs

The configs and their variants are :mod:`experiments.configs.qat`: ``quick``
(the default), ``mnist1d`` (4 and 2 bits, 5 seeds), ``float`` (the float CNN
with AdamW), ``cifar10`` (QATNet 4-bit on a CIFAR-10 subset, CPU),
``resnet18`` (CIFAR-10 ResNet-18 4-bit, for a GPU), ``smoke`` (seconds, for
CI). ``--preset VARIANT`` is an alias of ``--config qat:VARIANT``. Any option
given on the command line overrides the config.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

  Greydanus, Kobak, `Scaling Down Deep Learning with MNIST-1D
  <https://arxiv.org/abs/2011.14439>`_, 2020.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common
from experiments import configs
from experiments.configs import qat as qat_configs


def load(
  dataset: str, *, limit_train: int | None = None, limit_test: int | None = None
) -> common.Split:
  """The dataset's train/validation/test split (validation: 10% of train).

  Args:
    dataset: ``'mnist1d'``, ``'digits'`` or ``'cifar10'`` (read from
      ``$SADAM_CIFAR10`` or the offline copy, see
      :func:`sadam_examples.data.cifar10_path`).
    limit_train: keep a fixed random subset of the training set.
    limit_test: likewise for the test set.

  Returns:
    A :class:`experiments.common.Split`.
  """
  from sadam_examples import data  # pylint: disable=g-import-not-at-top

  if dataset == 'mnist1d':
    arrays = data.load_mnist1d()
  elif dataset == 'digits':
    arrays = data.load_digits()
  elif dataset == 'cifar10':
    arrays = data.load_cifar10(limit_train=limit_train, limit_test=limit_test, normalize=True)
  else:
    raise ValueError(f'Unknown dataset {dataset!r}.')
  if dataset != 'cifar10' and (limit_train or limit_test):
    x, y, xt, yt = arrays
    arrays = x[:limit_train], y[:limit_train], xt[:limit_test], yt[:limit_test]
  return common.split_validation(arrays)


# The classifiers of sadam_examples.models that build_model knows.
MODELS = ('cnn1d', 'qatnet', 'mlp', 'resnet18')


def build_model(name: str, bits: int | None, *, width: int | None = None) -> Any:
  """A classifier of :mod:`sadam_examples.models` at ``bits`` (None: float).

  ``width`` sets ResNet-18's first-stage channels (None: its default, 64).
  """
  from sadam_examples import models  # pylint: disable=g-import-not-at-top

  factories = dict(
    cnn1d=models.CNN1D, qatnet=models.QATNet, mlp=models.MLP, resnet18=models.ResNet18
  )
  if name not in factories:
    raise ValueError(f'Unknown model {name!r}; choose from {MODELS}.')
  if width is None:
    return factories[name](bits=bits)
  if name != 'resnet18':
    raise ValueError(f'--width applies to resnet18 only, not {name!r}.')
  return factories[name](bits=bits, width=width)


def parse_bits(value: str) -> int | None:
  """A bit width of the command line: an int, None for float."""
  return None if value.lower() in ('none', 'float', '32') else int(value)


def parser() -> argparse.ArgumentParser:
  """The command line: a config (:mod:`experiments.configs.qat`) and overrides."""
  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  configs.add_arguments(p, name='qat')
  p.add_argument('--dataset', choices=['mnist1d', 'digits', 'cifar10'])
  p.add_argument('--model', choices=MODELS)
  p.add_argument(
    '--width',
    type=int,
    help="channels of resnet18's first stage (default 64; 16 trains on 2 CPU cores)",
  )
  p.add_argument('--bits', nargs='+', help="bit widths; 'none' for float")
  p.add_argument('--optimizers', nargs='+', choices=common.OPTIMIZERS)
  p.add_argument('--seeds', type=int, help='seeds per learning rate')
  p.add_argument('--epochs', type=int)
  p.add_argument('--batch-size', type=int)
  p.add_argument('--limit-train', type=int)
  p.add_argument('--limit-test', type=int)
  p.add_argument(
    '--lrs',
    type=float,
    nargs='+',
    help='one learning-rate grid for every optimizer '
    '(default: Adam family {1e-3,3e-3,1e-2}, SGD family '
    '{0.01,0.03,0.1})',
  )
  p.add_argument('--schedule', choices=['constant', 'cosine'])
  p.add_argument(
    '--no-controls',
    action='store_true',
    default=None,
    help="skip AdamW at S-Adam's effective learning rate",
  )
  p.add_argument('--out', help='results file stem (default qat_<variant>)')
  p.add_argument('--out-dir', default=str(common.RESULTS_DIR))
  p.add_argument('--render', metavar='JSON', help='only rewrite the .md beside this results file')
  return p


def resolve(args: argparse.Namespace) -> qat_configs.Config:
  """The config of ``--config``/``--preset``, overridden by the options given."""
  return configs.resolve(args, name='qat')


def run(config: qat_configs.Config, out_dir: Path | str) -> dict[str, Any]:
  """Runs the comparison for every bit width and writes the results.

  Args:
    config: the resolved config (:func:`resolve`).
    out_dir: where ``<out>.json``, ``<out>.md`` and the PNGs go.

  Returns:
    The JSON payload.
  """
  start = time.perf_counter()
  split = load(config.dataset, limit_train=config.limit_train, limit_test=config.limit_test)
  budget = common.Budget(config.batch_size, config.epochs, schedule=config.schedule)
  seeds = list(range(config.seeds))
  grids = {o: config.lrs for o in config.optimizers} if config.lrs else None
  payload: dict[str, Any] = dict(
    config=dataclasses.asdict(config),
    data=dict(train=len(split.y_train), val=len(split.y_val), test=len(split.y_test)),
    results={},
  )
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)

  def save(label: str, results: dict[str, Any]) -> None:
    payload['results'][label] = results
    payload['seconds'] = time.perf_counter() - start
    common.write_results(config.out, payload, markdown(payload), out_dir=out_dir)

  for bits_str in config.bits:
    bits = parse_bits(bits_str)
    label = 'float' if bits is None else f'{bits}-bit'
    model = build_model(config.model, bits, width=config.width)
    results = common.compare(
      model,
      split,
      budget,
      optimizers=config.optimizers,
      seeds=seeds,
      grids=grids,
      controls=not config.no_controls,
      desc=f'{config.dataset} {label}',
      on_result=lambda r, label=label: save(label, r),
    )
    common.plot_curves(
      results,
      out_dir / f'{config.out}_{label}.png',
      title=f'{config.dataset} {config.model} {label}',
    )
    save(label, results)
    print(
      f'\n{config.dataset} {config.model} {label}: test accuracy, '
      f'mean +- std over {len(seeds)} seeds\n{common.table(results)}\n'
      + '\n'.join(common.verdict(results)),
      flush=True,
    )
  return payload


def markdown(payload: dict[str, Any]) -> str:
  """The readable report of a results payload (also of partial results).

  Args:
    payload: the JSON payload written by :func:`run`.

  Returns:
    Markdown: command, hardware, protocol, one table per bit width.
  """
  config, data = payload['config'], payload['data']
  lines = [
    f'# QAT comparison: {config["dataset"]}, {config["model"]}'
    + (f' (width {config["width"]})' if config.get('width') else ''),
    '',
    f'Command: `{payload.get("command", common.command_line())}`  ',
    f'Hardware: {payload.get("hardware", common.hardware())}  ',
    f'Wall time: {payload["seconds"]:.0f} s (all bit widths, tuning grids and controls included)',
    '',
    f'Data: {data["train"]} training, {data["val"]} validation (held out of '
    f'the training set, used to select the learning rate), {data["test"]} '
    f'test examples. Batch {config["batch_size"]}, {config["epochs"]} '
    f'epochs, {config["schedule"]} learning rate, weight decay 1e-2 '
    '(Adam family). Each optimizer is trained at every learning rate of '
    'its grid with every seed; the learning rate with the best mean '
    'validation accuracy is selected and the test accuracy of its seeds is '
    'reported (mean +- sample std). `<sadam>@eff-lr` is AdamW at the '
    "effective learning rate lr x mean damping of the same seed's S-Adam "
    'run (the control the paper lacks). SAM takes two gradients per step.',
    '',
  ]
  for label, results in payload['results'].items():
    lines += [
      f'## {label}',
      '',
      common.table(results),
      '',
      *common.verdict(results),
      '',
      f'![curves]({config["out"]}_{label}.png)',
      '',
    ]
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the command line's config (or only re-renders a report with ``--render``)."""
  args = parser().parse_args(argv)
  if args.render:
    path = Path(args.render)
    path.with_suffix('.md').write_text(markdown(json.loads(path.read_text())))
    return
  run(resolve(args), args.out_dir)


if __name__ == '__main__':
  main()
