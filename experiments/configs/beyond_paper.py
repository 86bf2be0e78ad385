"""Configs of :mod:`experiments.beyond_paper`: quantization-aware braking.

A method (:data:`METHODS`) is an optimizer of :mod:`experiments.optimizers`
and a learning-rate schedule. Variants: ``default`` (MNIST-1D CNN, 4 and 2
bits, 5 seeds, every method), ``cifar10`` (the paper's QATNet on a CIFAR-10
subset at the CPU budget of ``experiments/results/qat_cifar10_cpu.md``; the
learning rate is chosen on the first 2 seeds) and ``smoke`` (seconds, for CI).

Example::

  python -m experiments.beyond_paper --config beyond_paper:cifar10 --bits 4
"""

from __future__ import annotations

import dataclasses

from experiments import configs

GRID = (1e-3, 3e-3, 1e-2, 3e-2)
# label -> (optimizer name of experiments.optimizers, schedule), in the order
# they run.
METHODS: dict[str, tuple[str, str]] = {
  'adamw': ('qa-monitor', 'constant'),
  'adamw-cosine': ('qa-monitor', 'cosine'),
  'osc-brake': ('qa-brake', 'constant'),
  'nagel-freeze': ('qa-freeze', 'constant'),
  'nagel-dampen': ('qa-dampen', 'constant'),
  'osc-brake-tensor': ('qa-brake-tensor', 'constant'),
  'osc-brake-compound': ('qa-brake-compound', 'constant'),
  'sadam-literal': ('sadam-literal', 'constant'),
  'sadam': ('sadam', 'constant'),
  'sadam-secant': ('sadam-secant', 'constant'),
  'sadam-0.2': ('sadam-0.2', 'constant'),
  'sadam-averaged': ('sadam-averaged', 'constant'),
  'sadam-envelope': ('sadam-envelope', 'constant'),
  'sadam-0.4': ('sadam-0.4', 'constant'),
  'sadam-0.5': ('sadam-0.5', 'constant'),
  'sadam-0.6': ('sadam-0.6', 'constant'),
  'sadam-0.7': ('sadam-0.7', 'constant'),
  'sam-adamw': ('sam-adamw', 'constant'),
  'osc-brake-cosine': ('qa-brake', 'cosine'),
  'nagel-freeze-cosine': ('qa-freeze', 'cosine'),
  'osc-brake-compound-cosine': ('qa-brake-compound', 'cosine'),
  # Ablations of the default S-AdamW (run at its selected lr).
  'sadam-step': ('sadam-step', 'constant'),
  'sadam-lam1': ('sadam-lam1', 'constant'),
  'sadam-lam4': ('sadam-lam4', 'constant'),
  'sadam-compound': ('sadam-compound', 'constant'),
  'sadam-every4': ('sadam-every4', 'constant'),
}
# The methods of the 5-seed tables: the baselines the issue names, both
# S-AdamW readings and the candidates that did best in the first pass.
CIFAR_METHODS = [
  'adamw',
  'adamw-cosine',
  'osc-brake',
  'osc-brake-cosine',
  'nagel-dampen',
  'nagel-freeze',
  'sadam',
  'sam-adamw',
  'sadam-literal',
]


@dataclasses.dataclass(frozen=True)
class Config:
  """The options of :mod:`experiments.beyond_paper`.

  Attributes:
    dataset: ``'mnist1d'`` or ``'cifar10'``.
    model: a model of :data:`experiments.qat.MODELS`.
    bits: the target bit widths (each also evaluated at one bit fewer).
    seeds: seeds reported per method.
    epochs: passes over the training set.
    batch_size: examples per step.
    methods: labels of :data:`METHODS`.
    grid: the learning-rate grid of every method.
    tune_seeds: choose the learning rate on the first N seeds only (None:
      every seed runs every learning rate).
    limit_train: keep a fixed random subset of the training set (None: all).
    limit_test: likewise for the test set.
    b1: the first-moment decay of every Adam-family method (optax's 0.9 by
      default).
    b2: the second-moment decay of every Adam-family method (optax's 0.999
      by default).
    out: the results file stem.
  """

  dataset: str
  model: str
  bits: list[int]
  seeds: int
  epochs: int
  batch_size: int
  methods: list[str]
  grid: list[float]
  tune_seeds: int | None = None
  limit_train: int | None = None
  limit_test: int | None = None
  b1: float = 0.9
  b2: float = 0.999
  out: str = 'beyond_paper'


VARIANTS: dict[str, Config] = {
  'default': Config(
    dataset='mnist1d',
    model='cnn1d',
    bits=[4, 2],
    seeds=5,
    epochs=60,
    batch_size=100,
    methods=list(METHODS),
    grid=list(GRID),
  ),
  'cifar10': Config(
    dataset='cifar10',
    model='qatnet',
    bits=[4, 2],
    seeds=5,
    tune_seeds=2,
    epochs=2,
    batch_size=128,
    methods=CIFAR_METHODS,
    grid=[3e-4, 1e-3, 3e-3, 1e-2],
    limit_train=5000,
    limit_test=5000,
  ),
  'smoke': Config(
    dataset='mnist1d',
    model='cnn1d',
    bits=[4],
    seeds=2,
    epochs=1,
    batch_size=50,
    methods=['adamw', 'osc-brake', 'nagel-freeze'],
    grid=[1e-2],
    limit_train=400,
  ),
}


def get_config(arg: str | None = None) -> Config:
  """The variant ``arg`` (None: ``'default'``) of :data:`VARIANTS`."""
  return configs.variant(VARIANTS, arg, default='default')
