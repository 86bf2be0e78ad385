"""Configs of :mod:`experiments.qat`: S-Adam against tuned baselines in QAT.

Variants: ``quick`` (the default; MNIST-1D, 4 bits, 3 seeds, minutes on 2 CPU
cores), ``mnist1d`` (4 and 2 bits, 5 seeds, every optimizer), ``float`` (the
float CNN with AdamW), ``cifar10`` (QATNet 4-bit on a CIFAR-10 subset, CPU),
``resnet18`` (CIFAR-10 ResNet-18 4-bit, for a GPU), ``smoke`` (seconds, for
CI). The results file stem is ``qat_<variant>``.

Example::

  python -m experiments.qat --config qat:cifar10 --optimizers adamw sadam
"""

from __future__ import annotations

import dataclasses

from experiments import configs

# Every optimizer of the comparison (names of experiments.optimizers).
ALL = ('adamw', 'sadam', 'sadam-literal', 'sadam-trajectory', 'prox-sgd', 'sgd', 'sam')


@dataclasses.dataclass(frozen=True)
class Config:
  """The options of :func:`experiments.qat.run`.

  Attributes:
    dataset: ``'mnist1d'``, ``'digits'`` or ``'cifar10'``.
    model: a model of :data:`experiments.qat.MODELS`.
    bits: bit widths, as strings (``'none'`` for float).
    optimizers: names of :mod:`experiments.optimizers`.
    seeds: seeds per learning rate.
    epochs: passes over the training set.
    batch_size: examples per step.
    limit_train: keep a fixed random subset of the training set (None: all).
    limit_test: likewise for the test set.
    lrs: one learning-rate grid for every optimizer (None: Adam family
      {1e-3, 3e-3, 1e-2}, SGD family {0.01, 0.03, 0.1}).
    width: channels of ResNet-18's first stage (None: 64).
    schedule: ``'constant'`` or ``'cosine'``.
    no_controls: skip AdamW at S-Adam's effective learning rate.
    out: the results file stem.
  """

  dataset: str
  model: str
  bits: list[str]
  optimizers: list[str]
  seeds: int
  epochs: int
  batch_size: int
  limit_train: int | None = None
  limit_test: int | None = None
  lrs: list[float] | None = None
  width: int | None = None
  schedule: str = 'constant'
  no_controls: bool = False
  out: str = 'qat'


_MNIST1D = dict(dataset='mnist1d', model='cnn1d', batch_size=100)
_VARIANTS = {
  'quick': Config(
    **_MNIST1D,
    bits=['4'],
    optimizers=['adamw', 'sadam-literal', 'sadam'],
    seeds=3,
    epochs=10,
  ),
  'mnist1d': Config(**_MNIST1D, bits=['4', '2'], optimizers=list(ALL), seeds=5, epochs=60),
  'float': Config(**_MNIST1D, bits=['none'], optimizers=['adamw'], seeds=5, epochs=60),
  'cifar10': Config(
    dataset='cifar10',
    model='qatnet',
    bits=['4'],
    optimizers=list(ALL),
    seeds=3,
    epochs=2,
    batch_size=128,
    limit_train=10000,
    limit_test=5000,
  ),
  'resnet18': Config(
    dataset='cifar10',
    model='resnet18',
    bits=['4'],
    optimizers=['adamw', 'sadam-literal', 'sadam'],
    seeds=3,
    epochs=2,
    batch_size=128,
    limit_train=20000,
    lrs=[3e-4, 1e-3],
  ),
  'smoke': Config(
    **_MNIST1D,
    bits=['4'],
    optimizers=['adamw', 'sadam'],
    seeds=2,
    epochs=2,
    lrs=[1e-2],
  ),
}
# The results file stem names the variant.
VARIANTS: dict[str, Config] = {
  name: dataclasses.replace(c, out=f'qat_{name}') for name, c in _VARIANTS.items()
}


def get_config(arg: str | None = None) -> Config:
  """The variant ``arg`` (None: ``'quick'``) of :data:`VARIANTS`."""
  return configs.variant(VARIANTS, arg, default='quick')
