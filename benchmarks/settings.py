"""The optimizer settings compared by the cost and quality benchmarks.

One :class:`Setting` names an optimizer (AdamW, SAM, or S-AdamW with one way
of probing rho) and how its probes are fed: on the whole batch or on a
sub-batch (``value_fn`` closing over ``batch[:n]``), with the default PRNG or
another implementation of it. :mod:`benchmarks.step_time` times them and
:mod:`benchmarks.rho_quality` measures how well their rho follows a dense
reference, so both tables share these names.
"""

import dataclasses
import math
from typing import Any, Optional

import jax
import optax

import sadam_optax
from sadam_optax import lgi

from benchmarks import proposals

# Optimizer families. FORWARD_FLOOR is AdamW plus one forward pass of the loss
# at the updated parameters, its value thrown away: what any reading of the
# loss along the step costs at least.
ADAMW, SAM, SADAMW = 'adamw', 'sam', 'sadamw'
FORWARD_FLOOR = 'adamw+forward'
# SAM's neighbourhood radius (Foret et al., 2021, their default).
SAM_RADIUS = 0.05


@dataclasses.dataclass(frozen=True)
class Setting:
  """One optimizer configuration.

  Attributes:
    kind: ``'adamw'``, ``'sam'`` (two gradients per step, on AdamW),
      ``'adamw+forward'`` (AdamW and one loss-only forward pass, a cost
      floor) or ``'sadamw'``.
    estimator: S-AdamW's estimator (``'secant'``, ``'step'``, ``'literal'``,
      ``'trajectory'``), or a prototype reading of
      :mod:`benchmarks.proposals` (``'ends'``).
    num_probes: probes per measurement (None: the estimator's default).
    probe_every: probe every this many steps, rho carried in between.
    chunk_size: probes evaluated at once (None: all of them, vmapped).
    probe_fraction: share of the batch the probes see (``batch[:n]``).
    prng_impl: PRNG implementation of the probe key (None: JAX's default,
      threefry), e.g. ``'rbg'`` or ``'unsafe_rbg'``.
    noise: ``'rademacher'`` (the library's) or ``'packed'`` (the proposal
      :func:`benchmarks.proposals.packed_rademacher_like`).
    seed: seed of the probe key.
    give_value: hand S-AdamW ``value=`` the loss the train step computed
      (what ``'secant'`` saves a forward pass with); False: it evaluates the
      loss at the parameters itself.
    two_steps: with ``probe_every > 1``, skip the probe by compiling the
      train step twice (``probe_now=True`` / ``False``, chosen from Python by
      the step count: :func:`sadam_optax.every_k`) instead of a
      ``lax.cond``; the same trajectory.
    release: the brake returns what it takes (the library's ``'auto'``);
      False: ``release=None``, the brake of 0.2 (no store in the state).
    release_waits: the store waits where returning it goes uphill (the
      default since 0.4); False: the release of 0.3.
  """

  kind: str = SADAMW
  estimator: str = 'step'
  num_probes: Optional[int] = None
  probe_every: int = 1
  chunk_size: Optional[int] = None
  probe_fraction: float = 1.0
  prng_impl: Optional[str] = None
  noise: str = 'rademacher'
  seed: int = 0
  give_value: bool = True
  two_steps: bool = False
  release: bool = True
  release_waits: bool = True

  @property
  def name(self) -> str:
    """A short readable label, unique among the settings of one table."""
    if self.kind != SADAMW:
      return self.kind
    k = self.num_probes
    parts = [self.estimator] + ([] if k is None else [f'k{k}'])
    if self.estimator in proposals.READINGS:
      parts.append('(proposal)')
    if self.probe_every > 1:
      parts.append(f'every{self.probe_every}')
      if self.two_steps:
        parts.append('(two steps)')
    if self.probe_fraction < 1:
      parts.append(f'sub1/{round(1 / self.probe_fraction)}')
    if self.chunk_size is not None:
      parts.append(f'chunk{self.chunk_size}')
    if self.prng_impl is not None:
      parts.append(self.prng_impl)
    if self.noise != 'rademacher':
      parts.append(self.noise)
    if not self.give_value:
      parts.append('no-value')
    if not self.release:
      parts.append('no-release')
    elif not self.release_waits:
      parts.append('no-wait')
    return ' '.join(parts)

  def options(self) -> dict[str, Any]:
    """JSON-ready description of the setting."""
    return dataclasses.asdict(self)


def make_optimizer(
  setting: Setting, *, learning_rate: float, weight_decay: float, lam: float = 2.0
) -> optax.GradientTransformationExtraArgs:
  """The optimizer of ``setting`` (SAM's base optimizer is AdamW).

  Args:
    setting: the configuration.
    learning_rate: the learning rate.
    weight_decay: decoupled weight decay.
    lam: S-AdamW's brake strength (0 measures rho without braking: the
      optimizer is then AdamW exactly).

  Returns:
    A transformation whose ``update`` accepts ``value_fn=``.
  """
  if setting.kind in (ADAMW, SAM, FORWARD_FLOOR):
    return optax.with_extra_args_support(optax.adamw(learning_rate, weight_decay=weight_decay))
  if setting.estimator in proposals.READINGS:
    return proposals.two_sample_sadamw(
      learning_rate, weight_decay=weight_decay, lam=lam, reading=setting.estimator
    )
  return sadam_optax.sadamw(
    learning_rate,
    weight_decay=weight_decay,
    lam=lam,
    estimator=setting.estimator,
    num_probes=setting.num_probes,
    # Two steps: probe_now= decides, from Python (sadam_optax.every_k).
    probe_every=1 if setting.two_steps else setting.probe_every,
    chunk_size=vmap_or_chunk(setting),
    seed=setting.seed,
    release='auto' if setting.release else None,
    release_waits=setting.release_waits,
  )


def vmap_or_chunk(setting: Setting) -> int:
  """The library's chunk_size for a setting: None here means all vmapped."""
  if setting.chunk_size is not None:
    return setting.chunk_size
  num = setting.num_probes
  return num if num is not None else lgi.DEFAULT_NUM_PROBES[setting.estimator]


def init_state(
  setting: Setting, optimizer: optax.GradientTransformation, params: Any
) -> optax.OptState:
  """``optimizer.init(params)`` with the setting's PRNG implementation."""
  state = optimizer.init(params)
  if setting.prng_impl is None:
    return state
  return with_prng_impl(state, setting.prng_impl, seed=setting.seed)


def is_key(x: Any) -> bool:
  """Whether ``x`` is a typed PRNG key array."""
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def with_prng_impl(state: Any, impl: str, *, seed: int = 0) -> Any:
  """Replaces every typed PRNG key of ``state`` by a key of ``impl``.

  The probes split the key they find in the state, so this switches their
  random numbers to another implementation without touching the library.

  Args:
    state: an optimizer state.
    impl: a ``jax.random.key`` implementation name (``'threefry2x32'``,
      ``'rbg'``, ``'unsafe_rbg'``).
    seed: the new keys' seed.

  Returns:
    The state with its keys replaced.
  """
  return jax.tree.map(lambda x: jax.random.key(seed, impl=impl) if is_key(x) else x, state)


def tree_bytes(tree: Any) -> int:
  """Bytes held by the arrays of a pytree (a PRNG key counts its key data)."""
  return sum((jax.random.key_data(x) if is_key(x) else x).nbytes for x in jax.tree.leaves(tree))


def probe_batch(batch: tuple[Any, ...], fraction: float) -> tuple[Any, ...]:
  """The first ``ceil(fraction * n)`` examples of every array of ``batch``."""
  if fraction >= 1:
    return batch
  n = math.ceil(fraction * len(batch[0]))
  return tuple(b[:n] for b in batch)


def probe_value(value: jax.Array, setting: Setting) -> Optional[jax.Array]:
  """The loss at the parameters, if the probes see the batch it was taken on."""
  return value if setting.probe_fraction >= 1 and setting.give_value else None


def cost_settings() -> list[Setting]:
  """Everything the step-time benchmark compares, AdamW first."""
  return [
    Setting(kind=ADAMW),
    Setting(kind=SAM),
    Setting(kind=FORWARD_FLOOR),
    Setting(estimator='uphill'),  # The library's default.
    Setting(estimator='uphill', probe_every=2),
    Setting(estimator='uphill', probe_every=4),
    Setting(estimator='uphill', probe_every=8),
    Setting(estimator='uphill', probe_every=2, two_steps=True),
    Setting(estimator='uphill', probe_every=4, two_steps=True),
    Setting(estimator='uphill', probe_every=8, two_steps=True),
    Setting(estimator='uphill', release_waits=False),  # The 0.3 default.
    Setting(estimator='uphill', release=False),  # The 0.2 default.
    Setting(estimator='uphill', probe_every=4, two_steps=True, release=False),
    Setting(estimator='secant'),  # Its ratio, the same two slopes.
    Setting(estimator='secant', give_value=False),
    Setting(estimator='secant', probe_every=4),
    Setting(num_probes=2, chunk_size=1),  # The default before 'secant'.
    Setting(num_probes=4),
    Setting(num_probes=4, chunk_size=1),
    Setting(num_probes=4, prng_impl='rbg'),
    Setting(num_probes=4, prng_impl='unsafe_rbg'),
    Setting(num_probes=4, noise='packed'),
    Setting(num_probes=2),
    Setting(num_probes=4, probe_fraction=0.25),
    Setting(num_probes=4, probe_every=4),
    Setting(num_probes=2, probe_every=8),
    Setting(num_probes=4, probe_every=16),
    Setting(num_probes=2, probe_every=16),
    Setting(num_probes=4, probe_every=32),
    Setting(estimator='trajectory'),
    Setting(estimator='secant', probe_fraction=0.25),
    Setting(estimator='secant', probe_fraction=0.125),
    Setting(estimator='ends'),
    Setting(estimator='literal', num_probes=8),  # The paper's preset.
    Setting(estimator='literal', num_probes=2, probe_every=8),  # 'Lazy'.
  ]


def quality_settings() -> list[Setting]:
  """The cheap settings whose rho the quality study compares (S-AdamW only).

  Chunking, the noise's bit packing, computing the loss again
  (``no-value``) and skipping the probe with two compiled steps instead of a
  ``lax.cond`` do not change what rho estimates (the same points, evaluated
  in another order; the same distribution; the same loss; the same
  trajectory), so they are left out; one other PRNG implementation is in, as
  a check.
  """
  return [
    s
    for s in cost_settings()
    if s.kind == SADAMW
    and s.chunk_size is None
    and s.give_value
    and s.noise == 'rademacher'
    and s.prng_impl != 'unsafe_rbg'
    and not s.two_steps
  ]


def dense_reference(estimator: str, *, seed: int) -> Setting:
  """The dense reference of an estimator family: 16 probes every step."""
  family = 'literal' if estimator == 'literal' else 'step'
  return Setting(estimator=family, num_probes=16, seed=seed)
