"""A resumable study runner: QAT comparisons run to convergence, over sittings.

Every training run of a study is a :class:`RunConfig` (model, data,
optimizer and its options, learning rate, schedule, seed, batch size, epochs,
step loop) plus a code version; its key is a stable hash of all of that
(:func:`run_key`). A finished run is written to
``experiments/results/study/<study>/runs/<key>.json`` (its configuration
stored beside the per-epoch curves: test accuracy and loss, validation
accuracy and loss, train loss, mean damping, seconds). At each epoch's end
the whole training state (parameters, optimizer state with S-Adam's probe
key, the summed damping, the curves so far, the epoch, which with the seed
sets the data order) is saved with Orbax under the git-ignored
``experiments/.study_ckpt/<key>/``. Rerunning the same command skips finished
runs and resumes a stopped one from its last epoch checkpoint, bit for bit
(``tests/test_study.py``): a study of many CPU-hours accumulates over several
sittings.

The code version in a key is not the git commit: it is :data:`STUDY_VERSION`
(this runner's protocol) and optax's version for every run, plus, for S-Adam
runs only, ``sadam_optax.__version__`` and the defaults of
:func:`sadam_optax.sadamw` and :func:`sadam_optax.paper_sadamw`. AdamW runs do
not depend on S-Adam's code, so a change there keeps their results; a changed
S-Adam default (estimator, brake rule) gives S-Adam runs new keys instead of
silently mixing with old ones. Bump :data:`STUDY_VERSION` or
``sadam_optax.__version__`` when semantics change without a default changing.

Studies (configuration as code, one function each, :data:`STUDIES`):

* ``cifar10_qatnet_cpu``: the authors' QAT protocol at full size (brief,
  section 6): QATNet 4-bit, the 50,000 CIFAR-10 training images less a fixed
  10% validation split (45,000 train, 5,000 validation, used only to choose
  learning rates), the 10,000 test images, batch 128, 10 epochs, weight decay
  1e-2, 3 seeds. Arms: AdamW (lr grid 1e-4..3e-3), S-AdamW with the
  defaults of 0.3 (``'sadamw-0.3'``: the release never waits, grid
  3e-4..3e-3), S-AdamW with the library's defaults (``'sadamw'``, since 0.4:
  1e-3, constant and cosine), S-AdamW with the envelope damping
  (``'sadamw-envelope'``: ``damping_decay=0, damping_recovery=0.9``, lr
  1e-3, queued last, 2026-12-01), S-AdamW with the
  defaults of 0.2 (``'sadamw-0.2'``: no release, lr 1e-3), the paper's preset
  (:func:`sadam_optax.paper_sadamw`, lr 1e-3), AdamW at each S-Adam run's
  effective lr (lr x mean damping of the same seed, scheduled once that run
  is finished), AdamW with cosine decay (1e-3, 3e-4), S-AdamW with cosine
  decay (1e-3, with its control, cosine too), both with cosine at 3e-3 (the
  grid's edge once cosine was selected). The queue runs the most
  informative runs first: seed 0 of AdamW 1e-3 and 3e-4, the paper preset
  and S-AdamW 0.2 at 1e-3, with their controls; then seeds 1 and 2; then
  0.3's default at 1e-3 (queued when 0.3 made the release the default);
  then cosine (AdamW, then S-AdamW 0.3); then 0.4's default at 1e-3,
  constant and cosine (queued when it came); then, seed by seed, cosine at
  3e-3 and the rest of the grids.
* ``gpu_resnet18``: ResNet-18 (CIFAR stem) 4-bit on the full training set,
  AdamW / S-AdamW default / S-AdamW 0.2 / the paper's preset at lr 1e-3 (0.3's
  default is not queued there), and the
  effective-lr controls, 2 seeds; the data live on the accelerator (the
  epoch is one jitted scan there). ``--epochs`` sets the budget. ``--tiny``
  runs the same code path on synthetic 8x8 images with a width-4 ResNet cut
  to two one-block stages, on a CPU (the test; with ``SADAM_STEP_LOOP=scan``
  it takes the accelerator's path: vmapped runs, one scan per epoch).

Example (from the repository root; the CPU study takes many CPU-hours, so run
it in the background, niced, and rerun the same command to resume)::

  nohup nice -n 15 python -m experiments.study cifar10_qatnet_cpu \\
      > /tmp/study.log 2>&1 &
  python -m experiments.study cifar10_qatnet_cpu --status   # done/partial/pending
  python -m experiments.study cifar10_qatnet_cpu --report   # .md table + PNG curves
  python -m experiments.study cifar10_qatnet_cpu --max-minutes 60  # one sitting

To resume after an interruption (a killed process, a reboot), run the first
command again: finished runs are skipped, a partial run restarts from its
last epoch checkpoint (kept in ``experiments/.study_ckpt/``, which must
survive; without it a partial run starts over). ``--max-minutes`` stops
cleanly between epochs. The report (``experiments/results/study/<study>.md``
and ``<study>_curves.png``) is rewritten after every finished run; commit
``experiments/results/study/`` (small JSON, markdown, PNG; ``git add -f`` for
the ``runs/`` files while a ``runs/`` pattern is in ``.gitignore``).

A process uses the ``sadam_optax`` it imported at its start (its fingerprint
is stored in each result as ``source``). After S-Adam's code changes, stop
the background process (``kill <pid>``; at most the current epoch is lost)
and start it again, so that its S-Adam runs use, and are keyed by, the new
code; AdamW runs carry on from their checkpoints under unchanged keys.

Sizing (measured on the 2-core CPU machine this study was launched on,
QATNet 4-bit, batch 128, real CIFAR-10 batches, a few steps after
compilation, other jobs running): AdamW 222-230 ms a step, S-AdamW
(defaults) 406-483 ms, the paper's preset 430-443 ms; an epoch is 351 steps
plus evaluating 15,000 images (about 5 s), so a 10-epoch run is about 14
minutes (AdamW) and 27 minutes (S-Adam) of the whole machine: the first six
runs (seed 0 of the four main arms and the two controls) about 2 hours, the
18 runs of the three seeds about 5.5 hours, all 42 runs (30 AdamW, 12 S-Adam)
about 12 hours. Shared with other jobs at nice 15 it takes far longer: the
first AdamW epoch took 1,771 s instead of about 85.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

  Loshchilov, Hutter, `Decoupled Weight Decay Regularization
  <https://arxiv.org/abs/1711.05101>`_, 2019.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sadam_optax
from experiments import common
from experiments import qat

# The runner's protocol; bump it when the training or evaluation changes.
STUDY_VERSION = 'study-1'
RESULTS_ROOT = common.RESULTS_DIR / 'study'
CKPT_ROOT = Path(__file__).resolve().parent / '.study_ckpt'
OPTIMIZERS = ('adamw', 'sadamw', 'sadamw-0.3', 'sadamw-0.2', 'paper_sadamw', 'sadamw-envelope')
SADAM_OPTIMIZERS = ('sadamw', 'sadamw-0.3', 'sadamw-0.2', 'paper_sadamw', 'sadamw-envelope')
# Candidates for a default, queued on the CPU study only (not on the accelerator's).
CANDIDATES = ('sadamw-envelope',)
# The name each optimizer's runs are stored under: 'sadamw-0.2' is the
# library's default before the release existed (0.2); its runs keep the keys
# they were stored under as 'sadamw'. 'sadamw-0.3' (the release without the
# wait, ``release_waits=False``) keeps the keys of 0.3's 'sadamw'.
STORED_AS = {'sadamw-0.2': 'sadamw', 'sadamw-0.3': 'sadamw-release', 'sadamw': 'sadamw-release'}
# The library version a former default's runs are keyed under (what ran them).
LIBRARY_OF = {'sadamw-0.3': '0.3.0'}
# The S-Adam optimizers that discard what the brake takes (release None).
WITHOUT_RELEASE = ('sadamw-0.2', 'paper_sadamw')
# The S-Adam names as stored results carry them (their ``config``).
SADAM_STORED = tuple(STORED_AS.get(o, o) for o in SADAM_OPTIMIZERS)
# Library versions that changed only what the optimizers without a release
# do not use: their runs keep the keys of the version before.
SAME_WITHOUT_RELEASE = {'0.3.0': '0.2.0', '0.4.0': '0.2.0'}
# Library versions that changed only what runs with b2 < 0.999 do (every study runs optax's
# 0.999): their runs keep the keys of the version before.
SAME_AT_LONG_B2 = {'0.5.0': '0.4.0'}
# Library versions that changed only what a reading lost in the loss's rounding does (0.6): in
# minibatch QAT every reading resolves (the QAT cross-checks of 0.6, MNIST-1D and the CIFAR-10
# subset, 5 seeds each: the same accuracies and dampings to the last digit with
# unresolved_fade=0), so their runs keep the keys of the version before.
SAME_WHERE_READINGS_RESOLVE = {'0.6.0': '0.5.0'}
# Library versions that changed no number a run computes (0.6.1: input checks, the Flax helpers'
# keywords, an eager recompilation; 0.6.3: how 'step' and 'literal' map their probes when called
# eagerly, and the study jits its step; 0.7.1: the nnx helpers' extra NNX arguments and every_k's
# jit=): their runs keep the keys of the version before.
SAME_NUMBERS = {'0.6.1': '0.6.0', '0.6.3': '0.6.2', '0.7.1': '0.7.0'}
# Library versions that changed only steps on which a coordinate's step rounds away entirely (0.6.2:
# the secant's start slope drops it) and how 'literal' maps its probes: the first epoch of each
# S-Adam arm of the CPU study ends in the same state, byte for byte, under 0.6.1 and 0.6.2
# (`--fingerprint sadamw sadamw-0.3 sadamw-0.2 sadamw-envelope paper_sadamw`), so their runs keep
# the keys of the version before.
SAME_WHERE_STEPS_MOVE = {'0.6.2': '0.6.1'}
# Library versions that changed only what runs with Adam's b1 >= 0.99 do (0.7: the store drops the
# uphill share of what the brake holds; every study runs optax's b1 0.9, where the update is the
# same program): their runs keep the keys of the version before.
SAME_AT_LIGHT_MOMENTUM = {'0.7.0': '0.6.3'}
# Library versions that changed only the default's store (0.8: it returns at most three times
# Adam's step on a coordinate): every arm but 'sadamw' pins release_cap=None or runs no release,
# so their runs keep the keys of the version before.
SAME_WITHOUT_CAP = {'0.8.0': '0.7.1'}
# Each version above keeps the keys of the one it names, and that one of its own, and so on.
SAME_AS_BEFORE = {
  **SAME_AT_LONG_B2,
  **SAME_WHERE_READINGS_RESOLVE,
  **SAME_NUMBERS,
  **SAME_WHERE_STEPS_MOVE,
  **SAME_AT_LIGHT_MOMENTUM,
}
# Per-epoch curves, in this order in the checkpoint's ``curves`` array.
CURVES = ('train_loss', 'val_acc', 'val_loss', 'test_acc', 'test_loss', 'mean_damping', 'seconds')
TINY_SIZE = 8  # Side of the synthetic images of ``--tiny``.
# What earlier measurements say, shown above a study's table.
ANCHORS = {
  'cifar10_qatnet_cpu': (
    'Anchor (brief, section 6: an independent prototype of this protocol '
    'on one H100, 8 epochs, 3 seeds, test accuracy): AdamW 1e-3 51.4 +- '
    "1.2, the paper's S-Adam 61.8 +- 0.6, AdamW at its effective lr "
    '61.4 +- 0.6, AdamW 3e-4 61.5 +- 0.8. Compare the epoch-8 column.'
  ),
}


def source_fingerprint() -> dict[str, Any]:
  """What S-Adam code this process imported (recorded, not keyed).

  Returns:
    The sha256 of the ``sadam_optax`` sources as imported, the git commit
    and whether ``sadam_optax/`` had uncommitted changes (None outside git).
  """
  package = Path(sadam_optax.__file__).resolve().parent
  digest = hashlib.sha256()
  for path in sorted(package.glob('*.py')):
    digest.update(path.name.encode() + path.read_bytes())

  def git(*args):
    try:
      return subprocess.run(
        ['git', *args], cwd=package, capture_output=True, text=True, timeout=10, check=True
      ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return None

  status = git('status', '--porcelain', '--', '.')
  return dict(
    sadam_optax_sha256=digest.hexdigest()[:16],
    commit=git('rev-parse', 'HEAD'),
    sadam_optax_dirty=None if status is None else bool(status),
  )


_SOURCE = source_fingerprint()  # At import: the code the runs really use.


# -------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One training run; with the code version it makes the run's key.

  Attributes:
    model: ``'qatnet'`` or ``'resnet18'`` (:func:`experiments.qat.build_model`),
      ``'resnet-tiny'`` for tests (:func:`build_model`).
    bits: bit width of weights and activations (None: float).
    width: ResNet-18's first-stage channels (None: the model's default).
    dataset: ``'cifar10'`` (the offline copy) or ``'synthetic'`` (tests).
    limit_train: fixed random subset of the training set (None: all).
    limit_test: likewise for the test set.
    val_fraction: share of the training set held out for validation.
    optimizer: one of :data:`OPTIMIZERS`.
    lr: peak learning rate.
    weight_decay: decoupled weight decay (not braked).
    schedule: ``'constant'`` or ``'cosine'`` (decay to 0 over the run).
    seed: initialization, data order and S-Adam's probes.
    batch_size: examples per step.
    epochs: passes over the training set.
    loop: the step loop (:func:`experiments.common.step_loop`); the two
      round differently, so they are different runs.
  """

  model: str
  bits: int | None
  width: int | None
  dataset: str
  limit_train: int | None
  limit_test: int | None
  val_fraction: float
  optimizer: str
  lr: float
  weight_decay: float
  schedule: str
  seed: int
  batch_size: int
  epochs: int
  loop: str


def _defaults(fn: Callable[..., Any]) -> dict[str, str]:
  return {
    k: repr(p.default)
    for k, p in inspect.signature(fn).parameters.items()
    if p.default is not inspect.Parameter.empty
  }


def code_version(optimizer: str) -> dict[str, Any]:
  """The code a run of ``optimizer`` depends on (part of its key).

  Args:
    optimizer: one of :data:`OPTIMIZERS`.

  Returns:
    The study and optax versions; for S-Adam optimizers also
    ``sadam_optax.__version__`` and the defaults of ``sadamw`` and
    ``paper_sadamw`` (so a changed default makes new keys).
  """
  version = dict(study=STUDY_VERSION, optax=optax.__version__)
  if optimizer in SADAM_OPTIMIZERS:
    defaults = _defaults(sadam_optax.sadamw)
    release = defaults.pop('release')  # Keyed only where it is used.
    waits = defaults.pop('release_waits')  # Since 0.4; keyed only for 'sadamw'.
    if defaults.get('damping_decay') in ('0', '0.0'):  # The paper's rule, as before the option.
      defaults.pop('damping_decay')
    # None: the decay's, as before the option; 'auto' (0.5) is None at the study's b2 0.999.
    if defaults.get('damping_recovery') in ('None', "'auto'"):
      defaults.pop('damping_recovery')
    # Since 0.6; keyed by the library version (the former defaults' arms pin 0, as they ran).
    defaults.pop('unresolved_fade', None)
    # Since 0.7; 'auto' is True (the store as before) at the study's b1 0.9.
    if defaults.get('store_uphill') in ("'auto'", 'True'):
      defaults.pop('store_uphill')
    # Since 0.8; keyed by the library version ('sadamw' alone runs it).
    defaults.pop('release_cap', None)
    current = sadam_optax.__version__
    if optimizer != 'sadamw':
      current = SAME_WITHOUT_CAP.get(current, current)
    while current in SAME_AS_BEFORE:
      current = SAME_AS_BEFORE[current]
    library = LIBRARY_OF.get(optimizer, current)
    if optimizer in WITHOUT_RELEASE:
      library = SAME_WITHOUT_RELEASE.get(library, library)
    version.update(
      sadam_optax=library,
      sadamw_defaults=defaults,
      paper_sadamw_defaults=_defaults(sadam_optax.paper_sadamw),
    )
    if optimizer not in WITHOUT_RELEASE:
      version['release'] = release
    if optimizer in ('sadamw', *CANDIDATES):
      version['release_waits'] = waits
  return version


def key_payload(config: RunConfig) -> dict[str, Any]:
  """Everything the key hashes: the configuration and the code version."""
  stored = dataclasses.replace(config, optimizer=STORED_AS.get(config.optimizer, config.optimizer))
  return dict(config=dataclasses.asdict(stored), code=code_version(config.optimizer))


def run_key(config: RunConfig) -> str:
  """A stable 16-hex-digit hash of :func:`key_payload`."""
  text = json.dumps(key_payload(config), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Run:
  """A run of a study, labelled for the report.

  Attributes:
    cell: the report's row (runs of a cell differ only by seed).
    seed: the run's seed.
    config: the run; None while it waits for ``parent`` (a control).
    family: a learning-rate grid the report selects from on validation
      accuracy (None: not a grid point).
    parent: for an effective-lr control, the S-Adam run it copies.
    primary: drawn in the report's figure whether selected or not (other
      grid points are drawn only when selected).
  """

  cell: str
  seed: int
  config: RunConfig | None
  family: str | None = None
  parent: RunConfig | None = None
  primary: bool = False


# ----------------------------------------------------------------- the runner


@dataclasses.dataclass
class Study:
  """Where a study's results and checkpoints live, and what has finished.

  Attributes:
    name: the study's name (its results folder).
    results_root: parent of the study's results folder.
    ckpt_root: parent of the per-run checkpoint folders.
  """

  name: str
  results_root: Path = RESULTS_ROOT
  ckpt_root: Path = CKPT_ROOT

  @property
  def runs_dir(self) -> Path:
    return Path(self.results_root) / self.name / 'runs'

  def result_path(self, config: RunConfig) -> Path:
    return self.runs_dir / f'{run_key(config)}.json'

  def ckpt_dir(self, config: RunConfig) -> Path:
    return Path(self.ckpt_root) / run_key(config)

  def finished(self, config: RunConfig) -> dict[str, Any] | None:
    """The stored result of ``config``, or None if it has not finished."""
    path = self.result_path(config)
    return json.loads(path.read_text()) if path.exists() else None

  def epochs_done(self, config: RunConfig) -> int:
    """Epochs in the latest checkpoint of an unfinished run (0: none)."""
    directory = self.ckpt_dir(config)
    if not directory.is_dir():
      return 0
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
    return max(steps, default=0)


_DATA: dict[tuple, common.Split] = {}
_TRAINERS: dict[tuple, tuple] = {}


def load_split(config: RunConfig) -> common.Split:
  """The run's train/validation/test arrays (cached per process).

  ``'cifar10'`` is read from the offline copy
  (:func:`sadam_examples.data.cifar10_path`, ``$SADAM_CIFAR10``) and
  standardised per channel; ``'synthetic'`` is a tiny learnable problem
  (8x8 RGB images, 10 classes set by a fixed random linear map).
  """
  spec = (config.dataset, config.limit_train, config.limit_test, config.val_fraction)
  if spec not in _DATA:
    if config.dataset == 'cifar10':
      from sadam_examples import data  # pylint: disable=g-import-not-at-top

      arrays = data.load_cifar10(
        limit_train=config.limit_train, limit_test=config.limit_test, normalize=True
      )
    elif config.dataset == 'synthetic':
      rng = np.random.default_rng(0)
      n = (config.limit_train or 512) + (config.limit_test or 128)
      x = rng.standard_normal((n, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
      w = rng.standard_normal((TINY_SIZE * TINY_SIZE * 3, 10))
      y = np.argmax(x.reshape(n, -1) @ w, axis=1).astype(np.int32)
      m = config.limit_train or 512
      arrays = x[:m], y[:m], x[m:], y[m:]
    else:
      raise ValueError(f'Unknown dataset {config.dataset!r}.')
    _DATA[spec] = common.split_validation(arrays, fraction=config.val_fraction)
  return _DATA[spec]


def build_model(config: RunConfig) -> Any:
  """The run's classifier: :func:`experiments.qat.build_model`, or for
  ``'resnet-tiny'`` (``--tiny``) a ResNet-18 cut to one block in each of two
  stages (the same module and code path, a fraction of the compile time)."""
  if config.model == 'resnet-tiny':
    from sadam_examples import models  # pylint: disable=g-import-not-at-top

    return models.ResNet18(bits=config.bits, width=config.width or 4, stage_sizes=(1, 1))
  return qat.build_model(config.model, config.bits, width=config.width)


def _register(optimizer: str, weight_decay: float) -> str:
  """Registers ``optimizer`` at ``weight_decay`` with the training loop."""
  name = f'study:{optimizer}:wd={weight_decay!r}'
  if optimizer == 'adamw':
    make = lambda lr, seed: optax.adamw(lr, weight_decay=weight_decay)
  elif optimizer == 'sadamw':  # The library's defaults, the study's decay.
    make = lambda lr, seed: sadam_optax.sadamw(lr, weight_decay=weight_decay, seed=seed)
  elif optimizer == 'sadamw-0.3':  # The defaults of 0.3: the release never waits.
    make = lambda lr, seed: sadam_optax.sadamw(
      lr,
      weight_decay=weight_decay,
      seed=seed,
      release_waits=False,
      unresolved_fade=0.0,
      release_cap=None,
    )
  elif optimizer == 'sadamw-0.2':  # The defaults of 0.2: no release.
    make = lambda lr, seed: sadam_optax.sadamw(
      lr, weight_decay=weight_decay, seed=seed, release=None, unresolved_fade=0.0
    )
  elif optimizer == 'paper_sadamw':
    make = lambda lr, seed: sadam_optax.paper_sadamw(lr, weight_decay=weight_decay, seed=seed)
  elif optimizer == 'sadamw-envelope':  # Harder readings at once, softer over ~10 probes.
    make = lambda lr, seed: sadam_optax.sadamw(
      lr,
      weight_decay=weight_decay,
      seed=seed,
      damping_decay=0.0,
      damping_recovery=0.9,
      release_cap=None,  # As it ran (0.5-0.7).
    )
  else:
    raise ValueError(f'Unknown optimizer {optimizer!r}; choose from {OPTIMIZERS}.')
  common.register_optimizer(name, lambda lr, *, seed, weight_decay: make(lr, seed))
  return name


def trainer(config: RunConfig) -> tuple:
  """``common._trainer`` of the run's model, data, optimizer and budget.

  Cached per process: runs differing only by lr or seed share the compiled
  functions.
  """
  spec = (
    config.model,
    config.bits,
    config.width,
    config.dataset,
    config.limit_train,
    config.limit_test,
    config.val_fraction,
    config.optimizer,
    config.weight_decay,
    config.schedule,
    config.batch_size,
    config.epochs,
  )
  if spec not in _TRAINERS:
    model = build_model(config)
    budget = common.Budget(config.batch_size, config.epochs, schedule=config.schedule)
    name = _register(config.optimizer, config.weight_decay)
    _TRAINERS[spec] = common._trainer(  # pylint: disable=protected-access
      model, name, load_split(config), budget
    )
  return _TRAINERS[spec]


def train_run(
  study: Study,
  config: RunConfig,
  *,
  deadline: float | None = None,
  stop_after: int | None = None,
  timing: dict[str, float] | None = None,
  log: Callable[[str], None] = print,
) -> bool:
  """Trains ``config`` from its last checkpoint to the end, or until stopped.

  Args:
    study: where the result and checkpoints go.
    config: the run.
    deadline: ``time.time()`` after which no new epoch starts (an epoch
      starts only if the longest one so far fits before it).
    stop_after: stop once the checkpoint holds this many epochs (a test
      hook: an interruption at an epoch boundary).
    timing: ``{'epoch_seconds': longest epoch so far}``, shared between runs
      (updated here) so that a run's first epoch is also checked against
      ``deadline``.
    log: where progress lines go.

  Returns:
    Whether the run finished (its result is written and its checkpoints
    deleted).
  """
  # pylint: disable=g-import-not-at-top
  from sadam_examples import checkpoint

  if study.finished(config) is not None:
    return True
  if config.loop != common.step_loop():
    raise ValueError(
      f'Run {run_key(config)} is keyed for the {config.loop!r} '
      f'step loop, this process uses {common.step_loop()!r}.'
    )
  init, epoch, evaluate, steps = trainer(config)
  lrs = jnp.asarray([config.lr], jnp.float32)
  seeds = jnp.asarray([config.seed], jnp.uint32)
  state = dict(
    carry=init(lrs, seeds),
    curves=jnp.full((config.epochs, len(CURVES)), jnp.nan),
    epoch=jnp.zeros([], jnp.int32),
  )
  directory = study.ckpt_dir(config)
  key = run_key(config)
  if checkpoint.latest_step(directory) is not None:
    state = checkpoint.restore(directory, state)
    log(f'[{key}] resumed at epoch {int(state["epoch"])}')
  curves = np.asarray(state['curves'], np.float64)
  timing = {} if timing is None else timing
  for e in range(int(state['epoch']), config.epochs):
    if stop_after is not None and e >= stop_after:
      return False
    longest = timing.get('epoch_seconds')
    if deadline is not None and longest is not None and time.time() + longest > deadline:
      return False
    start = time.perf_counter()
    damping_before = float(state['carry']['damping'][0])
    carry, loss = epoch(lrs, seeds, state['carry'], jnp.asarray(e))
    metrics = jax.tree.map(lambda a: float(a[0]), evaluate(carry))
    last = time.perf_counter() - start
    timing['epoch_seconds'] = max(last, timing.get('epoch_seconds', 0.0))
    row = dict(
      train_loss=float(loss[0]),
      **metrics,
      mean_damping=(float(carry['damping'][0]) - damping_before) / steps,
      seconds=last,
    )
    curves[e] = [row[k] for k in CURVES]
    state = dict(
      carry=carry, curves=jnp.asarray(curves, jnp.float32), epoch=jnp.asarray(e + 1, jnp.int32)
    )
    checkpoint.save(directory, e + 1, state, max_to_keep=2)
    log(
      f'[{key}] {config.optimizer} lr {config.lr:g} {config.schedule} seed '
      f'{config.seed}: epoch {e + 1}/{config.epochs} test '
      f'{100 * row["test_acc"]:.2f} val {100 * row["val_acc"]:.2f} damping '
      f'{row["mean_damping"]:.3f} ({last:.0f} s)'
    )
  curves = np.asarray(state['curves'], np.float64)  # As checkpointed.
  _write_result(
    study, config, curves, float(state['carry']['damping'][0]) / (steps * config.epochs)
  )
  shutil.rmtree(directory, ignore_errors=True)
  return True


def _write_result(study: Study, config: RunConfig, curves: np.ndarray, mean_damping: float) -> None:
  """Writes the run's JSON (atomically)."""
  result = {k: curves[:, i].tolist() for i, k in enumerate(CURVES)}
  payload = dict(
    key=run_key(config),
    **key_payload(config),
    final={k: result[k][-1] for k in CURVES if k not in ('seconds',)},
    mean_damping=mean_damping,
    wall_seconds=float(np.sum(curves[:, -1])),
    curves=result,
    hardware=common.hardware(),
    source=_SOURCE,
    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  )
  path = study.result_path(config)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
  tmp.write_text(json.dumps(payload, indent=1))
  os.replace(tmp, path)


def control_lr(parent_result: dict[str, Any]) -> float:
  """S-Adam's effective lr, ``lr x mean damping``, to 3 significant digits."""
  lr = parent_result['config']['lr'] * parent_result['mean_damping']
  return float(f'{lr:.3g}')


def queue(study_fn: Callable[..., list[Run]], study: Study, **options: Any) -> list[Run]:
  """The study's runs in queue order, controls resolved where possible."""
  return study_fn(finished=study.finished, **options)


def fingerprint(runs: Sequence[Run], optimizers: Sequence[str]) -> dict[str, str]:
  """The training state after one epoch of each optimizer's first run, hashed.

  How a library version that should compute the same numbers is checked on the
  study's own protocol without rerunning it: equal digests under two versions
  (one epoch, every byte of the parameters, moments and S-Adam's state).

  Args:
    runs: the study's queue (:func:`queue`).
    optimizers: names of :data:`OPTIMIZERS`; each one's first queued run is
      trained for one epoch.

  Returns:
    ``{optimizer: the first 16 hex digits of the state's sha256}``.
  """
  digests = {}
  for optimizer in optimizers:
    config = next(
      (r.config for r in runs if r.config is not None and r.config.optimizer == optimizer), None
    )
    if config is None:
      raise ValueError(f'No run of {optimizer!r} is queued in this study.')
    config = dataclasses.replace(config, epochs=1)
    init, epoch, _, _ = trainer(config)
    lrs = jnp.asarray([config.lr], jnp.float32)
    seeds = jnp.asarray([config.seed], jnp.uint32)
    carry, _ = epoch(lrs, seeds, init(lrs, seeds), jnp.asarray(0))
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(carry):
      digest.update(np.asarray(leaf).tobytes())
    digests[optimizer] = digest.hexdigest()[:16]
  return digests


def run_study(
  study_fn: Callable[..., list[Run]],
  study: Study,
  *,
  max_minutes: float | None = None,
  stop_after: int | None = None,
  on_finish: Callable[[], None] | None = None,
  log: Callable[[str], None] = print,
  **options: Any,
) -> int:
  """Runs every unfinished run of the study in queue order.

  The queue is rebuilt after each run, so controls become runnable as soon
  as their S-Adam run has finished.

  Args:
    study_fn: a study definition (:data:`STUDIES`).
    study: where results and checkpoints go.
    max_minutes: stop cleanly between epochs after this long.
    stop_after: test hook, see :func:`train_run` (stops the first run).
    on_finish: called after each finished run (writes the report).
    log: where progress lines go.
    **options: passed to ``study_fn``.

  Returns:
    The number of runs finished in this call.
  """
  deadline = None if max_minutes is None else time.time() + 60 * max_minutes
  done, timing = 0, {}
  while True:
    pending = [
      r
      for r in queue(study_fn, study, **options)
      if r.config is not None and study.finished(r.config) is None
    ]
    if not pending:
      log(
        'study complete'
        if all(r.config is not None for r in queue(study_fn, study, **options))
        else 'nothing runnable'
      )
      return done
    if deadline is not None and time.time() > deadline:
      log('stopped: --max-minutes reached')
      return done
    run = pending[0]
    log(f'[{run_key(run.config)}] start {run.cell} seed {run.seed}')
    if not train_run(
      study, run.config, deadline=deadline, stop_after=stop_after, timing=timing, log=log
    ):
      log(
        f'[{run_key(run.config)}] stopped after epoch '
        f'{study.epochs_done(run.config)}; rerun the command to resume'
      )
      return done
    done += 1
    if on_finish is not None:
      on_finish()


# -------------------------------------------------------------------- studies


def _base(**overrides: Any) -> dict[str, Any]:
  base = dict(
    model='qatnet',
    bits=4,
    width=None,
    dataset='cifar10',
    limit_train=None,
    limit_test=None,
    val_fraction=0.1,
    weight_decay=1e-2,
    schedule='constant',
    batch_size=128,
    epochs=10,
    loop=common.step_loop(),
  )
  base.update(overrides)
  return base


def _control(parent: Run, finished: Callable[[RunConfig], Any]) -> Run:
  """AdamW at the effective lr of ``parent``'s run (waits until it is done)."""
  cell = f'adamw at the effective lr of [{parent.cell}]'
  result = finished(parent.config)
  if result is None:
    return Run(cell, parent.seed, None, parent=parent.config, primary=parent.primary)
  config = dataclasses.replace(parent.config, optimizer='adamw', lr=control_lr(result))
  return Run(cell, parent.seed, config, parent=parent.config, primary=parent.primary)


def cifar10_qatnet_cpu(
  *, finished: Callable[[RunConfig], Any], tiny: bool = False, epochs: int | None = None
) -> list[Run]:
  """The authors' QAT protocol at full size, on the CPU (module docstring).

  Args:
    finished: the stored result of a run, or None (:meth:`Study.finished`).
    tiny: synthetic data and 2 epochs (seconds; for tests).
    epochs: override the 10 epochs.

  Returns:
    The runs in queue order.
  """
  base = _base()
  seeds = (0, 1, 2)
  if tiny:
    base.update(dataset='synthetic', limit_train=320, limit_test=64, batch_size=32, epochs=2)
  if epochs is not None:
    base['epochs'] = epochs

  def arm(cell, optimizer, lr, seed, family=None, primary=False, **kw):
    config = RunConfig(**{**base, **kw}, optimizer=optimizer, lr=lr, seed=seed)
    return Run(cell, seed, config, family=family, primary=primary)

  def first(seed):  # The most informative runs of one seed.
    return [
      arm('adamw lr 0.001', 'adamw', 1e-3, seed, 'adamw', True),
      arm('adamw lr 0.0003', 'adamw', 3e-4, seed, 'adamw', True),
      arm('paper_sadamw lr 0.001', 'paper_sadamw', 1e-3, seed, primary=True),
      arm('sadamw-0.2 (no release) lr 0.001', 'sadamw-0.2', 1e-3, seed, 'sadamw-0.2', True),
    ]

  def with_controls(runs):
    return runs + [_control(r, finished) for r in runs if r.config.optimizer in SADAM_OPTIMIZERS]

  def cosine(name, optimizer, lr, seed):
    return arm(f'{name}-cosine lr {lr:g}', optimizer, lr, seed, f'{name}-cosine', schedule='cosine')

  runs = []
  for seed in seeds:
    runs += with_controls(first(seed))
  for seed in seeds:  # The default of 0.3 (the release), queued when it came.
    default = arm('sadamw-0.3 lr 0.001', 'sadamw-0.3', 1e-3, seed, 'sadamw-0.3', True)
    runs += with_controls([default])
  for seed in seeds:
    for lr in (1e-3, 3e-4):
      runs.append(cosine('adamw', 'adamw', lr, seed))
  for seed in seeds:  # The same schedule for all: cosine led AdamW's first seed.
    runs += with_controls([cosine('sadamw-0.3', 'sadamw-0.3', 1e-3, seed)])
  for seed in seeds:  # The default since 0.4 (the release waits uphill), queued when it came.
    runs += with_controls(
      [
        arm('sadamw lr 0.001', 'sadamw', 1e-3, seed, 'sadamw', True),
        cosine('sadamw', 'sadamw', 1e-3, seed),
      ]
    )
  for seed in seeds:
    # Cosine was selected for both; 1e-3 was its grid's top edge.
    runs += with_controls(
      [cosine('adamw', 'adamw', 3e-3, seed), cosine('sadamw-0.3', 'sadamw-0.3', 3e-3, seed)]
    )
    runs += with_controls(
      [
        arm('adamw lr 0.0001', 'adamw', 1e-4, seed, 'adamw'),
        arm('adamw lr 0.003', 'adamw', 3e-3, seed, 'adamw'),
        arm('sadamw-0.3 lr 0.0003', 'sadamw-0.3', 3e-4, seed, 'sadamw-0.3'),
        arm('sadamw-0.3 lr 0.003', 'sadamw-0.3', 3e-3, seed, 'sadamw-0.3'),
      ]
    )
  for seed in seeds:  # The envelope damping, a candidate default (queued 2026-12-01).
    envelope = arm('sadamw-envelope lr 0.001', 'sadamw-envelope', 1e-3, seed, 'sadamw-envelope')
    runs += with_controls([envelope])
  return runs


def gpu_resnet18(
  *, finished: Callable[[RunConfig], Any], tiny: bool = False, epochs: int | None = None
) -> list[Run]:
  """ResNet-18 4-bit on full CIFAR-10 for one accelerator (module docstring).

  Args:
    finished: the stored result of a run, or None (:meth:`Study.finished`).
    tiny: synthetic 8x8 data, a width-4 ResNet cut to two one-block stages
      (:func:`build_model`), 2 epochs (seconds on a CPU; the same code
      path).
    epochs: override the default budget (10 epochs). Sized on one H200
      (``gpu_resnet18.md``): an epoch takes 1.8 s with AdamW, 2.3 s with
      S-AdamW and 6.4 s with the paper's preset, each optimizer compiles in
      28-53 s, and the 10 runs of 7 epochs took 371 s of epochs, about 8
      minutes with loading and checkpoints; 10 epochs fit a 9-minute call
      only without the cost table beside them.

  Returns:
    The runs in queue order.
  """
  base = _base(model='resnet18', epochs=10)
  if tiny:
    base.update(
      model='resnet-tiny',
      dataset='synthetic',
      limit_train=320,
      limit_test=64,
      width=4,
      batch_size=32,
      epochs=2,
    )
  if epochs is not None:
    base['epochs'] = epochs
  runs = []
  for seed in (0, 1):
    arms = [
      Run(f'{o} lr 0.001', seed, RunConfig(**base, optimizer=o, lr=1e-3, seed=seed), primary=True)
      for o in OPTIMIZERS
      if o not in LIBRARY_OF and o not in CANDIDATES  # Former defaults ran; candidates: CPU.
    ]
    runs += arms + [_control(r, finished) for r in arms if r.config.optimizer in SADAM_OPTIMIZERS]
  return runs


STUDIES: dict[str, Callable[..., list[Run]]] = dict(
  cifar10_qatnet_cpu=cifar10_qatnet_cpu, gpu_resnet18=gpu_resnet18
)


# -------------------------------------------------------------------- reports


def status_table(runs: Sequence[Run], study: Study) -> str:
  """A plain-text table: each run's key, cell, seed and state."""
  lines = [f'{"key":16s}  {"state":14s} seed  cell']
  counts = dict(done=0, partial=0, pending=0, waiting=0)
  for r in runs:
    if r.config is None:
      state, key = 'waiting', f'({run_key(r.parent)[:8]}..)'
      counts['waiting'] += 1
    elif study.finished(r.config) is not None:
      state, key = 'done', run_key(r.config)
      counts['done'] += 1
    elif study.epochs_done(r.config):
      state = f'partial {study.epochs_done(r.config)}/{r.config.epochs}'
      key = run_key(r.config)
      counts['partial'] += 1
    else:
      state, key = 'pending', run_key(r.config)
      counts['pending'] += 1
    lr = '' if r.config is None else f' (lr {r.config.lr:.3g})'
    lines.append(f'{key:16s}  {state:14s} {r.seed:4d}  {r.cell}{lr}')
  lines.append(', '.join(f'{v} {k}' for k, v in counts.items()))
  return '\n'.join(lines)


def _cells(runs: Sequence[Run], study: Study) -> dict[str, dict[str, Any]]:
  """Per report row: its family, seeds planned and results finished."""
  cells: dict[str, dict[str, Any]] = {}
  for r in runs:
    cell = cells.setdefault(
      r.cell, dict(family=r.family, planned=0, results=[], partial=0, primary=r.primary)
    )
    cell['planned'] += 1
    result = None if r.config is None else study.finished(r.config)
    if result is not None:
      cell['results'].append(result)
    elif r.config is not None and study.epochs_done(r.config):
      cell['partial'] += 1
  return cells


def select_on_validation(cells: dict[str, dict[str, Any]]) -> set[str]:
  """Per family, the cell with the best mean validation accuracy.

  The mean is over the seeds that every finished cell of the family has, so
  that a grid point with one seed is compared with the others on that seed,
  not with their 3-seed means (all of a cell's seeds when they share none).

  Args:
    cells: :func:`_cells`'s rows.

  Returns:
    The names of the selected cells.
  """
  by_family: dict[str, dict[str, dict[int, float]]] = {}
  for name, c in cells.items():
    if c['family'] and c['results']:
      vals = {r['config']['seed']: r['final']['val_acc'] for r in c['results']}
      by_family.setdefault(c['family'], {})[name] = vals
  selected = set()
  for family in by_family.values():
    shared = set.intersection(*(set(v) for v in family.values()))
    score = lambda name: np.mean([v for s, v in family[name].items() if not shared or s in shared])
    selected.add(max(family, key=score))
  return selected


def _fmt(values: Sequence[float]) -> str:
  if not values:
    return '-'
  if len(values) == 1:
    return f'{100 * values[0]:.1f} (1 seed)'
  mean, std = common.mean_std(values)
  return f'{100 * mean:.1f} +- {100 * std:.1f}'


def report(
  name: str,
  runs: Sequence[Run],
  study: Study,
  *,
  out_dir: Path | str | None = None,
  command: str | None = None,
) -> Path:
  """Writes ``<name>.md`` (table, mean +- std over finished seeds) and
  ``<name>_curves.png`` (test accuracy and loss per epoch, mean and min-max
  over finished seeds, of the primary cells and the selected grid points).

  Args:
    name: the study's name.
    runs: its runs (:func:`queue`).
    study: where the results are.
    out_dir: where the report goes (default: the study's results root).
    command: the command that runs the study (default: its name alone).

  Returns:
    The path of the markdown file.
  """
  out_dir = Path(out_dir or study.results_root)
  out_dir.mkdir(parents=True, exist_ok=True)
  cells = _cells(runs, study)
  selected = select_on_validation(cells)
  example = next((r.config for r in runs if r.config is not None), None)
  hardware = sorted({r['hardware'] for c in cells.values() for r in c['results']})
  lines = [
    f'# Study `{name}`',
    '',
    f'Command: `{command or f"python -m experiments.study {name}"}` (resumable; '
    f'`--status` lists every run). Results: `{name}/runs/<key>.json`.',
    '',
  ]
  if example is not None:
    lines += [
      f'Protocol: {example.model} {example.bits}-bit'
      + (f' (width {example.width})' if example.width else '')
      + f', {example.dataset} (training set less a {example.val_fraction:.0%} '
      'validation split, which alone chooses learning rates; the full test '
      f'set), batch {example.batch_size}, {example.epochs} epochs, weight '
      f'decay {example.weight_decay:g}, step loop {example.loop}. Cells: '
      'mean +- sample std of the final test accuracy over the finished '
      'seeds; a cell with fewer seeds than planned is marked incomplete '
      'and is not yet a result. "selected" marks the grid point with the '
      'best mean validation accuracy among the finished ones of its '
      'family, over the seeds they all have. Effective-lr controls: AdamW '
      'at lr x mean damping of the '
      "same seed's S-Adam run.",
      '',
    ]
  if name.removesuffix('_tiny') in ANCHORS:
    lines += [ANCHORS[name.removesuffix('_tiny')], '']
  lines += [
    f'Hardware: {"; ".join(hardware) or "-"}',
    '',
    '| cell | seeds finished | test acc % (final) | test acc % at '
    'epoch 8 | val acc % | test loss | mean damping | lr | note |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for cell_name, c in cells.items():
    res = c['results']
    n = len(res)
    note = []
    if n < c['planned']:
      note.append(
        f'INCOMPLETE ({n} of {c["planned"]} seeds'
        + (f', {c["partial"]} partial' if c['partial'] else '')
        + ')'
      )
    if cell_name in selected:
      note.append(f'selected ({c["family"]})')
    at8 = [r['curves']['test_acc'][7] for r in res if len(r['curves']['test_acc']) >= 8]
    lrs = sorted({r['config']['lr'] for r in res})
    lr = (
      '-' if not lrs else f'{lrs[0]:.3g}' if len(lrs) == 1 else ', '.join(f'{v:.3g}' for v in lrs)
    )
    damping = (
      [r['mean_damping'] for r in res]
      if res and res[0]['config']['optimizer'] in SADAM_STORED
      else []
    )
    loss = [r['final']['test_loss'] for r in res]
    lines.append(
      f'| {cell_name} | {n}/{c["planned"]} | '
      f'{_fmt([r["final"]["test_acc"] for r in res])} | {_fmt(at8)} | '
      f'{_fmt([r["final"]["val_acc"] for r in res])} | '
      + (f'{np.mean(loss):.3f}' if loss else '-')
      + ' | '
      + (f'{np.mean(damping):.3f}' if damping else '-')
      + f' | {lr} | {"; ".join(note)} |'
    )
  lines += ['', f'![learning curves]({name}_curves.png)', '']
  path = out_dir / f'{name}.md'
  path.write_text('\n'.join(lines))
  _plot(
    {k: c for k, c in cells.items() if c['primary'] or k in selected},
    out_dir / f'{name}_curves.png',
    title=name,
  )
  return path


def _plot(cells: dict[str, dict[str, Any]], path: Path, *, title: str) -> None:
  """Test accuracy and loss per epoch: mean line, min-max band over seeds."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  colors = plt.get_cmap('tab20').colors
  for i, (cell_name, c) in enumerate(cells.items()):
    if not c['results']:
      continue
    for ax, key in zip(axes, ('test_acc', 'test_loss')):
      curves = np.asarray([r['curves'][key] for r in c['results']])
      x = np.arange(1, curves.shape[1] + 1)
      style = '--' if cell_name.startswith('adamw at') else '-'
      color = colors[i % len(colors)]
      ax.plot(x, curves.mean(0), style, color=color, label=f'{cell_name} ({len(curves)})')
      ax.fill_between(x, curves.min(0), curves.max(0), color=color, alpha=0.15)
  axes[0].set(xlabel='epoch', ylabel='test accuracy', title=title)
  axes[1].set(xlabel='epoch', ylabel='test loss')
  if axes[0].lines:
    axes[0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ----------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('study', choices=sorted(STUDIES))
  p.add_argument('--status', action='store_true', help='print done/partial/pending runs and exit')
  p.add_argument(
    '--report', action='store_true', help='write the .md table and PNG curves and exit'
  )
  p.add_argument('--max-minutes', type=float, help='stop cleanly between epochs after this long')
  p.add_argument(
    '--tiny', action='store_true', help='synthetic data, tiny model, 2 epochs (seconds; CPU)'
  )
  p.add_argument('--epochs', type=int, help="override the study's epochs")
  p.add_argument(
    '--fingerprint',
    nargs='+',
    metavar='OPTIMIZER',
    help="print the hashed state after one epoch of each optimizer's first run and exit "
    '(to compare library versions on this protocol)',
  )
  p.add_argument('--results-root', default=str(RESULTS_ROOT))
  p.add_argument('--ckpt-root', default=str(CKPT_ROOT))
  return p


def main(argv: Sequence[str] | None = None) -> None:
  args = parser().parse_args(argv)
  name = args.study + ('_tiny' if args.tiny else '')
  study = Study(name, Path(args.results_root), Path(args.ckpt_root))
  study_fn = STUDIES[args.study]
  options = dict(tiny=args.tiny, epochs=args.epochs)
  log = lambda line: print(
    f'{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} {line}', flush=True
  )
  if args.status:
    print(status_table(queue(study_fn, study, **options), study))
    return
  if args.fingerprint:
    digests = fingerprint(queue(study_fn, study, **options), args.fingerprint)
    print(json.dumps(dict(sadam_optax=sadam_optax.__version__, **digests)))
    return
  command = ' '.join(
    [f'SADAM_STEP_LOOP={loop}' for loop in [os.environ.get('SADAM_STEP_LOOP')] if loop]
    + ['python -m experiments.study', args.study]
    + ['--tiny'] * args.tiny
    + [f'--epochs {args.epochs}'] * (args.epochs is not None)
  )
  write = lambda: report(name, queue(study_fn, study, **options), study, command=command)
  if args.report:
    print(write())
    return
  log(f'{name}: {common.hardware()}')
  done = run_study(
    study_fn, study, max_minutes=args.max_minutes, on_finish=write, log=log, **options
  )
  log(f'{done} runs finished in this call')
  print(status_table(queue(study_fn, study, **options), study), flush=True)


if __name__ == '__main__':
  sys.exit(main())
