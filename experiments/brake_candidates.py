"""Brake candidates that were tried against the max-affine failure, and lost.

The 0.2 default S-Adam failed the non-smooth suite on max-affine plus ridge at
lr 1e-2 (win rate 50%, median band ratio 1.3 after 3,000 steps), because Adam
is still travelling along a valley there and braking slows it. (0.3's release,
which returns what the brake takes, passes it; see the findings page.)
Each candidate here tries to brake only the steps that chatter in place,
not those that travel. They are prototypes kept so that the figures quoted
in the documentation can be rerun, not parts of the library:

* ``progress-gate``: the brake's exponent is scaled by how little the loss
  falls: ``1 - e / e0`` clipped to [0, 1], with ``e = -EMA(df) / EMA(|df|)``
  over the loss changes ``df`` between consecutive steps.
* ``plateau-gate``: the brake is on only once the loss has plateaued: a fast
  and a slow EMA of the loss differ by less than ``p0`` times the loss's
  spread around the fast one.
* ``directional``: only the step's component along the last change of the
  gradient (the normal of the kink just crossed) is braked.
* ``cautious``: only the coordinates whose step goes against the current
  gradient are braked.

Every candidate reads rho as the default does (``'uphill'``, from the start
slope and the secant of the proposed step) and brakes by ``exp(-lam rho)``,
discarding what it takes (no release), as 0.2 did.

Example::

  python -m experiments.brake_candidates            # max-affine, ~1 minute
  python -m experiments.brake_candidates --smoke    # seconds

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

  Liang, Chen, Liu, Liu, `Cautious Optimizers: Improving Training with One
  Line of Code <https://arxiv.org/abs/2411.16085>`_, 2024.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from experiments import common
from experiments import nonsmooth_suite as ns
from sadam_optax import lgi
from sadam_optax import tree_math

LAM = 2.0


class CandidateState(NamedTuple):
  """State of a candidate brake.

  Attributes:
    adam: ``optax.scale_by_adam``'s state.
    memory: the candidate's own memory (a pytree; see each candidate).
    damping: the mean damping of the last step (read by the suite).
  """

  adam: optax.ScaleByAdamState
  memory: Any
  damping: jax.Array


# A rule maps (step, grad, rho, value, memory) to (braked step, memory, damping).
Rule = Callable[[Any, Any, jax.Array, jax.Array, Any], tuple[Any, Any, jax.Array]]


def braked_adam(
  lr: Any, rule: Rule, init_memory: Callable[[Any], Any]
) -> optax.GradientTransformationExtraArgs:
  """Adam whose proposed step is braked by ``rule``, rho read as the default.

  Args:
    lr: learning rate.
    rule: the candidate's brake (see :data:`Rule`).
    init_memory: ``params -> memory`` of the rule.

  Returns:
    A transformation whose ``update`` needs ``value_fn=`` and ``value=``.
  """
  adam = optax.scale_by_adam()

  def init(params):
    return CandidateState(adam.init(params), init_memory(params), jnp.ones([], jnp.float32))

  def update(grad, state, params=None, *, value_fn=None, value=None, **extra):
    del extra
    direction, adam_state = adam.update(grad, state.adam, params)
    step = jax.tree.map(lambda u: -lr * u, direction)
    rho = lgi.uphill_share(lgi.secant_samples(value_fn, params, step, grad, value))
    braked, memory, damping = rule(step, grad, rho, jnp.asarray(value, jnp.float32), state.memory)
    return braked, CandidateState(adam_state, memory, jnp.mean(damping))

  return optax.GradientTransformationExtraArgs(init, update)


def _scalar_memory(*values: float) -> Callable[[Any], tuple]:
  return lambda params: tuple(jnp.asarray(v, jnp.float32) for v in values)


def progress_gate(lr: Any, *, decay: float = 0.998, e0: float = 0.02) -> Any:
  """Brake scaled down while the loss keeps falling (module doc)."""

  def rule(step, grad, rho, value, memory):
    prev, ema, ema_abs = memory
    seen = jnp.isfinite(prev)
    df = jnp.where(seen, value - prev, 0.0)
    ema = jnp.where(seen, decay * ema + (1 - decay) * df, ema)
    ema_abs = jnp.where(seen, decay * ema_abs + (1 - decay) * jnp.abs(df), ema_abs)
    progress = jnp.where(ema_abs > 0, -ema / jnp.where(ema_abs > 0, ema_abs, 1.0), 0.0)
    d = jnp.exp(-LAM * rho * jnp.clip(1.0 - progress / e0, 0.0, 1.0))
    return jax.tree.map(lambda s: d * s, step), (value, ema, ema_abs), d

  return braked_adam(lr, rule, _scalar_memory(jnp.nan, 0.0, 0.0))


def plateau_gate(lr: Any, *, fast: float = 0.9, slow: float = 0.995, p0: float = 1.0) -> Any:
  """Brake on only once the loss has plateaued (module doc)."""

  def rule(step, grad, rho, value, memory):
    count, ema_fast, ema_slow, ema_var = memory
    count = count + 1
    ema_fast = fast * ema_fast + (1 - fast) * value
    ema_slow = slow * ema_slow + (1 - slow) * value
    level_fast = ema_fast / (1 - fast**count)  # Bias-corrected, as Adam's moments.
    level_slow = ema_slow / (1 - slow**count)
    ema_var = fast * ema_var + (1 - fast) * (value - level_fast) ** 2
    spread = jnp.sqrt(ema_var / (1 - fast**count))
    falling = (level_slow - level_fast) / (spread + jnp.finfo(jnp.float32).tiny)
    gate = jnp.clip(1.0 - falling / p0, 0.0, 1.0)
    gate = jnp.where(count > 1.0 / (1 - slow), gate, 0.0)  # No window yet: no verdict.
    d = jnp.exp(-LAM * rho * gate)
    return jax.tree.map(lambda s: d * s, step), (count, ema_fast, ema_slow, ema_var), d

  return braked_adam(lr, rule, _scalar_memory(0.0, 0.0, 0.0, 0.0))


def directional(lr: Any) -> Any:
  """Only the step's component along the last gradient change is braked."""

  def rule(step, grad, rho, value, memory):
    change = jax.tree.map(lambda g, p: g - p, grad, memory)
    sq = tree_math.tree_dot(change, change)
    started = tree_math.tree_dot(memory, memory) > 0
    along = tree_math.tree_dot(step, change) / jnp.where(sq > 0, sq, 1.0)
    coef = jnp.where(started & (sq > 0), along, 0.0)  # No previous gradient: nothing braked.
    d = jnp.exp(-LAM * rho)
    braked = jax.tree.map(lambda s, c: s - (1 - d) * coef * c, step, change)
    return braked, grad, d

  return braked_adam(lr, rule, lambda params: jax.tree.map(jnp.zeros_like, params))


def cautious(lr: Any) -> Any:
  """Only the coordinates whose step goes against the gradient are braked."""

  def rule(step, grad, rho, value, memory):
    d = jnp.exp(-LAM * rho)
    braked = jax.tree.map(lambda s, g: jnp.where(s * g > 0, d * s, s), step, grad)
    return braked, memory, d

  return braked_adam(lr, rule, lambda params: ())


CANDIDATES: dict[str, ns.Factory] = {
  'progress-gate': progress_gate,
  'plateau-gate': plateau_gate,
  'directional': directional,
  'cautious': cautious,
}


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--families', nargs='+', default=['max_affine'], choices=list(ns.FAMILIES))
  p.add_argument('--lrs', type=float, nargs='+', default=[1e-2, 3e-2])
  p.add_argument('--steps', type=int, default=ns.STEPS)
  p.add_argument('--instances', type=int, default=ns.INSTANCES)
  p.add_argument('--out', default=str(common.RESULTS_DIR / 'brake_candidates'))
  p.add_argument('--smoke', action='store_true', help='2 instances, 60 steps')
  return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parser().parse_args(argv)
  if args.smoke:
    args.instances, args.steps = 2, 60
  methods = {
    ns.BASELINE: ns.METHODS[ns.BASELINE],
    ns.DEFAULT: ns.METHODS[ns.DEFAULT],
    'sadam-late': ns.METHODS['sadam-late'],
    **CANDIDATES,
  }
  t0 = time.time()
  payload = ns.run_suite(
    methods,
    families=args.families,
    lrs=args.lrs,
    steps=args.steps,
    instances=args.instances,
    controls=(),
  )
  payload['wall_s'] = round(time.time() - t0, 1)
  path = ns.write(payload, args.out)
  print(path.with_suffix('.md').read_text())
  return payload


if __name__ == '__main__':
  main()
