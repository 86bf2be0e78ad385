"""Configs of :mod:`experiments.small_batch`: S-Adam at small batch sizes.

Variants: ``default`` (batch sizes 2, 4, 16 and 64, 3 seeds, 10 epochs; the
committed ``small_batch_cpu`` run) and ``smoke`` (batch 16, one seed, one
epoch on 1000 examples: seconds, for CI).

Example::

  python -m experiments.small_batch --config small_batch:smoke --out-dir runs
"""

from __future__ import annotations

import dataclasses

from experiments import configs
from experiments import optimizers


@dataclasses.dataclass(frozen=True)
class Config:
  """The options of :func:`experiments.small_batch.run`.

  Attributes:
    batch_sizes: the batch sizes compared, each with the same epochs.
    optimizers: names of :mod:`experiments.optimizers`.
    bits: the bit width (``'none'`` for float).
    seeds: seeds per learning rate.
    epochs: passes over the training set at every batch size.
    lrs: the learning-rate grid of every optimizer (the Adam family's).
    limit_train: the first N training examples (None: all).
    out: the results file stem.
  """

  batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [2, 4, 16, 64])
  optimizers: list[str] = dataclasses.field(
    default_factory=lambda: ['adamw', 'sadam', 'sadam-literal']
  )
  bits: str = '4'
  seeds: int = 3
  epochs: int = 10
  # (The committed results used (3e-4, 1e-3, 3e-3), and every optimizer
  # picked its top: too low a grid.)
  lrs: list[float] = dataclasses.field(default_factory=lambda: list(optimizers.ADAM_GRID))
  limit_train: int | None = None
  out: str = 'small_batch'


VARIANTS: dict[str, Config] = {
  'default': Config(),
  'smoke': Config(
    batch_sizes=[16],
    optimizers=['adamw', 'sadam'],
    seeds=1,
    epochs=1,
    lrs=[1e-2],
    limit_train=1000,
  ),
}


def get_config(arg: str | None = None) -> Config:
  """The variant ``arg`` (None: ``'default'``) of :data:`VARIANTS`."""
  return configs.variant(VARIANTS, arg, default='default')
