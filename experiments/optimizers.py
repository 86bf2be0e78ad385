"""The optimizers of the experiments by name: one registry.

A config names its optimizers by string (:mod:`experiments.configs`); this
module is the one place that maps each name to a factory and holds the
settings that come with it. A factory takes the learning rate and an
:class:`Options` (the seed of S-Adam's probes, the weight decay, ...) and reads
the options it needs; :func:`make` builds an optimizer by name.

Built-in names (:data:`BUILTIN`): ``'adamw'``; ``'sadam'`` (S-AdamW, the
default estimator ``'uphill'``), ``'sadam-secant'`` (the default before 0.2),
``'sadam-step'``, ``'sadam-literal'`` (the paper's estimator and probes: k 8,
sigma 0.01, no release, as :func:`sadam_optax.paper_sadamw`),
``'sadam-trajectory'``, ``'sadam-0.2'`` (the default of 0.2: ``'uphill'``
without the release), ``'sadam-averaged'`` (the damping averaged over
probes, ``damping_decay=0.7``), ``'sadam-envelope'`` (harder readings at
once, softer ones over about ten probes: ``damping_decay=0,
damping_recovery=0.9``), ``'sadam-every4'`` (the default probing
every 4th step), ``'sadam-0.4'`` (each reading as it comes whatever ``b2``,
the 0.4 default), ``'sadam-0.5'`` (the 0.5 default: a reading lost in the
loss's rounding reads as smooth; since 0.6 it keeps the last); the
version-named ones read such a step as smooth, as those versions did;
``'sadam-0.6'`` (the store keeps all the brake holds whatever ``b1``; since
0.7 it drops the uphill share where ``b1 >= 0.99``); ``'sadam-0.7'`` (the store
returns however small Adam's step; since 0.8 at most three times it on a
coordinate, and the version-named ones return without that cap);
``'sgd'`` (momentum), ``'prox-sgd'`` (momentum SGD then L1 soft-thresholding),
``'sam'`` (SAM around momentum SGD; two gradients per step, ``update`` needs
``grad_fn``).

Optimizers that need more than the options, such as the quantization-aware
candidates of :func:`quant_aware`, which close over the quantization grid of a
bit width, are added with :func:`register`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import optax

import sadam_optax
from sadam_optax import quant_aware as qa

ADAM_GRID = (1e-3, 3e-3, 1e-2)
SGD_GRID = (0.01, 0.03, 0.1)
SGD_FAMILY = ('sgd', 'prox-sgd', 'sam')
# The probes of the paper's scripts (:func:`sadam_optax.paper_sadamw`), whose
# brake discards what it takes (no release) and follows each reading (no average).
PAPER_PROBES = dict(
  num_probes=8, probe_radius=0.01, release=None, damping_decay=0.0, damping_recovery=None
)
# The S-AdamW names and their estimators; the comparison runs AdamW at the
# effective learning rate after each of them.
SADAM_ESTIMATORS = {
  'sadam': 'uphill',
  'sadam-secant': 'secant',
  'sadam-step': 'step',
  'sadam-literal': 'literal',
  'sadam-trajectory': 'trajectory',
  'sadam-0.2': 'uphill',
  'sadam-averaged': 'uphill',
  'sadam-envelope': 'uphill',
  'sadam-every4': 'uphill',
  'sadam-0.4': 'uphill',
  'sadam-0.5': 'uphill',
  'sadam-0.6': 'uphill',
  'sadam-0.7': 'uphill',
}
# Settings beyond the estimator, per S-AdamW name.
SADAM_SETTINGS = {
  'sadam-literal': PAPER_PROBES,
  'sadam-0.2': dict(release=None, damping_decay=0.0, damping_recovery=None, unresolved_fade=0.0),
  'sadam-averaged': dict(damping_decay=0.7),  # The damping averaged over probes.
  # Harder readings at once, softer ones averaged over about ten probes.
  'sadam-envelope': dict(damping_decay=0.0, damping_recovery=0.9),
  'sadam-every4': dict(probe_every=4),
  # Each reading as it comes whatever b2 (0.5: 'auto').
  'sadam-0.4': dict(damping_recovery=None, unresolved_fade=0.0, release_cap=None),
  # A reading lost in the loss's rounding reads as smooth (0.6 keeps the last).
  'sadam-0.5': dict(unresolved_fade=0.0, release_cap=None),
  # The store keeps all the brake holds whatever b1 (0.7: 'auto' drops the uphill share at b1 0.99).
  'sadam-0.6': dict(store_uphill=True, release_cap=None),
  # The store returns however small Adam's step (0.8: at most 3x it on a coordinate).
  'sadam-0.7': dict(release_cap=None),
}

# Settings of the quantization-aware candidates (one each, not tuned).
BRAKE_LAM = 25.0  # per weight: frequency 0.04 keeps exp(-1) of the step
TENSOR_LAM = 50.0  # per tensor: the mean frequency is smaller
COMPOUND = dict(lam=1.0, recovery=0.01, min_damping=1e-3)  # tightens above 0.01
DAMPEN_STRENGTH = 0.2
FREEZE_THRESHOLD = 0.03
MOMENTUM = 0.01


@dataclasses.dataclass(frozen=True)
class Options:
  """The options every factory receives; each reads the ones it needs.

  Attributes:
    seed: seed of S-Adam's probes (may be traced).
    weight_decay: decoupled weight decay of the Adam family.
    l1: Prox-SGD's L1 penalty.
    momentum: momentum of the SGD family.
    sam_radius: SAM's neighbourhood radius.
    lam: S-Adam's brake strength.
    b1: the first-moment decay of every Adam-family optimizer (as ``b2``).
    b2: the second-moment decay of every Adam-family optimizer (AdamW,
      S-AdamW, the Adam under the quantization-aware candidates and SAM).
  """

  seed: Any = 0
  weight_decay: float = 1e-2
  l1: float = 1e-4
  momentum: float = 0.9
  sam_radius: float = 0.05
  lam: float = 2.0
  b1: float = 0.9
  b2: float = 0.999


Factory = Callable[[Any, Options], optax.GradientTransformation]


# ------------------------------------------------------------ building blocks


def soft_threshold(threshold: Any) -> optax.GradientTransformation:
  """The proximal map of ``threshold * ||theta||_1``, applied after a step.

  Turns ``updates`` into ``prox(params + updates) - params`` with
  ``prox(z) = sign(z) max(|z| - threshold, 0)``: chained after a gradient
  step it makes proximal gradient descent on an L1 penalty.

  Args:
    threshold: ``lr * l1`` (a float or a traced scalar).

  Returns:
    An ``optax.GradientTransformation`` that needs ``params``.

  References:
    Parikh, Boyd, `Proximal Algorithms
    <https://web.stanford.edu/~boyd/papers/prox_algs.html>`_, 2014.
  """

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('soft_threshold needs params.')

    def prox(u, p):
      z = p + u
      return jnp.sign(z) * jnp.maximum(jnp.abs(z) - threshold, 0) - p

    return jax.tree.map(prox, updates, params), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def sam_around(
  base: Callable[..., optax.GradientTransformation], *, radius: float = 0.05, **base_kwargs: Any
) -> Callable[..., optax.GradientTransformationExtraArgs]:
  """A factory of SAM (``optax.contrib.sam``, opaque mode) around ``base``.

  Args:
    base: an optax alias taking the learning rate first (``optax.sgd``,
      ``optax.adamw``).
    radius: SAM's neighbourhood radius (the adversarial step's length).
    **base_kwargs: passed to ``base``.

  Returns:
    ``factory(learning_rate, **ignored)``; its ``update`` needs ``grad_fn``.

  References:
    Foret, Kleiner, Mobahi, Neyshabur, `Sharpness-Aware Minimization for
    Efficiently Improving Generalization <https://arxiv.org/abs/2010.01412>`_,
    2021.
  """

  def factory(learning_rate, **ignored):
    del ignored
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(radius))
    return _only_grad_fn(
      optax.contrib.sam(base(learning_rate, **base_kwargs), adversary, opaque_mode=True)
    )

  return factory


def _only_grad_fn(
  tx: optax.GradientTransformationExtraArgs,
) -> optax.GradientTransformationExtraArgs:
  """Hands ``tx.update`` only ``grad_fn`` of the extra keywords.

  ``optax.contrib.sam`` in opaque mode takes ``grad_fn`` and rejects any other
  keyword (``value_fn``), unlike optimizers built with
  ``optax.with_extra_args_support``.
  """

  def update_fn(updates, state, params=None, *, grad_fn=None, **unused):
    del unused
    return tx.update(updates, state, params, grad_fn=grad_fn)

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)


# ------------------------------------------------------------------ factories


def _adamw(learning_rate: Any, o: Options) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)


def _sadamw(**settings: Any) -> Factory:
  """S-AdamW with the options' weight decay, brake strength and seed, then ``settings``."""

  def factory(learning_rate: Any, o: Options) -> optax.GradientTransformation:
    options = dict(weight_decay=o.weight_decay, lam=o.lam, seed=o.seed, b1=o.b1, b2=o.b2)
    return sadam_optax.sadamw(learning_rate, **(options | settings))

  return factory


def _sgd(learning_rate: Any, o: Options) -> optax.GradientTransformation:
  return optax.sgd(learning_rate, momentum=o.momentum)


def _prox_sgd(learning_rate: Any, o: Options) -> optax.GradientTransformation:
  if callable(learning_rate):
    raise ValueError('prox-sgd takes a constant learning rate.')
  return optax.chain(_sgd(learning_rate, o), soft_threshold(learning_rate * o.l1))


def _sam(learning_rate: Any, o: Options) -> optax.GradientTransformation:
  return sam_around(optax.sgd, momentum=o.momentum, radius=o.sam_radius)(learning_rate)


BUILTIN: dict[str, Factory] = {
  'adamw': _adamw,
  **{
    name: _sadamw(estimator=estimator, **SADAM_SETTINGS.get(name, {}))
    for name, estimator in SADAM_ESTIMATORS.items()
  },
  'sgd': _sgd,
  'prox-sgd': _prox_sgd,
  'sam': _sam,
}
_REGISTERED: dict[str, Factory] = {}
_DEFAULTS: dict[str, Any] = {}


@contextlib.contextmanager
def defaults(**options: Any) -> Iterator[None]:
  """Within the block, :func:`make` uses these :class:`Options` unless a call names them.

  For a study's setting that every optimizer shares (``b2``, say) without
  threading it through the training loop.
  """
  unknown = set(options) - {f.name for f in dataclasses.fields(Options)}
  if unknown:
    raise ValueError(f'Unknown options {sorted(unknown)}; see experiments.optimizers.Options.')
  before = dict(_DEFAULTS)
  _DEFAULTS.update(options)
  try:
    yield
  finally:
    _DEFAULTS.clear()
    _DEFAULTS.update(before)


def quant_aware(bits: int) -> dict[str, Factory]:
  """The optimizers of :mod:`experiments.beyond_paper` at ``bits`` bits.

  The quantization-aware candidates of :mod:`sadam_optax.quant_aware` after
  AdamW, on the absmax grid of ``bits`` (settings: :data:`BRAKE_LAM`,
  :data:`TENSOR_LAM`, :data:`COMPOUND`, :data:`DAMPEN_STRENGTH`,
  :data:`FREEZE_THRESHOLD`, :data:`MOMENTUM`); SAM around AdamW; and
  ablations of the default S-AdamW (brake strength 1 and 4, the compound
  rule; rho every 4th step is the built-in ``'sadam-every4'``).

  Args:
    bits: the bit width of the quantization grid.

  Returns:
    ``{name: factory}``, for :func:`register`.
  """
  grid = qa.absmax_scale_fn(bits)

  def after_adamw(*transforms: optax.GradientTransformation) -> Factory:
    return lambda lr, o: optax.chain(_adamw(lr, o), *transforms)

  def brake(lam: float = 0.0, *, per_tensor: bool, rule: str = 'exp', **kw: Any):
    return qa.scale_by_oscillation(
      grid,
      brake=sadam_optax.damping_scale(lam, rule=rule, **kw),
      momentum=MOMENTUM,
      per_tensor=per_tensor,
    )

  def dampen(lr: Any, o: Options) -> optax.GradientTransformation:
    return optax.chain(
      optax.scale_by_adam(b1=o.b1, b2=o.b2),
      optax.add_decayed_weights(o.weight_decay),
      qa.dampen_oscillations(grid, strength=DAMPEN_STRENGTH),
      optax.scale_by_learning_rate(lr),
    )

  return {
    'qa-monitor': after_adamw(brake(0.0, per_tensor=True)),
    'qa-brake': after_adamw(brake(BRAKE_LAM, per_tensor=False)),
    'qa-brake-tensor': after_adamw(brake(TENSOR_LAM, per_tensor=True)),
    'qa-brake-compound': after_adamw(brake(per_tensor=True, rule='compound', **COMPOUND)),
    'qa-freeze': after_adamw(
      qa.freeze_oscillating(grid, threshold=FREEZE_THRESHOLD, momentum=MOMENTUM)
    ),
    'qa-dampen': dampen,
    'sam-adamw': lambda lr, o: sam_around(
      optax.adamw, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2
    )(lr),
    'sadam-lam1': _sadamw(lam=1.0),
    'sadam-lam4': _sadamw(lam=4.0),
    'sadam-compound': _sadamw(rule='compound'),
  }


# ------------------------------------------------------------------- registry


def register(name: str, factory: Factory) -> None:
  """Makes :func:`make` (hence the training loop) know ``name``.

  Registering a name again replaces its factory; built-in names cannot be
  replaced.

  Args:
    name: a name not in :data:`BUILTIN`.
    factory: ``factory(learning_rate, options)`` returning an optax
      transformation (extra-argument support is added).
  """
  if name in BUILTIN:
    raise ValueError(f'{name!r} is a built-in optimizer.')
  _REGISTERED[name] = factory


def names() -> tuple[str, ...]:
  """Every name :func:`make` knows now: built-in, then registered."""
  return (*BUILTIN, *_REGISTERED)


def make(name: str, learning_rate: Any, **options: Any) -> optax.GradientTransformationExtraArgs:
  """The optimizer ``name`` at ``learning_rate``.

  Args:
    name: one of :func:`names`.
    learning_rate: a float, traced scalar or schedule.
    **options: fields of :class:`Options` (the others keep its defaults).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extra keywords accepted).

  Raises:
    ValueError: for an unknown name (the message lists the known ones).
  """
  factory = BUILTIN.get(name) or _REGISTERED.get(name)
  if factory is None:
    raise ValueError(f'Unknown optimizer {name!r}; choose from {names()}.')
  return optax.with_extra_args_support(factory(learning_rate, Options(**(_DEFAULTS | options))))


def lr_grid(name: str) -> tuple[float, ...]:
  """The default learning-rate grid of an optimizer: Adam or SGD family."""
  return SGD_GRID if name in SGD_FAMILY else ADAM_GRID
