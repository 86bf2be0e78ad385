"""Non-smooth benchmark suite: does a braked Adam end closer than Adam?

Thirty-five families of random convex (and four non-convex) problems whose
minimiser, or optimal value, is known to high precision. Every method starts
every instance from the same point and runs a constant learning rate; the end
state is compared with plain Adam's, instance by instance.

Families: :data:`experiments.nonsmooth_families.FAMILIES` (thirty-six, numbered
there; every instance knows its minimiser ``w*`` or its optimal value ``f*``).

Metric per run: ``m_t`` = ``||w_t - w*||`` (families 1-6, 10, 11, 16, 20, 21, 23, 25-35)
or ``f(w_t) - f*`` (families 7-9, 12-15, 17-19, 22, 24, 36). The *band* is ``m_t`` over the last
10% of the steps (its mean, ``band``, and its max, ``band_max``); also the
first step at which
``m_t <= tol * m_0`` (``tol = 1e-2``). Bands below ``1e-6 * m_0`` are float32
rounding and are floored there before any comparison.

Per (family, lr, method), over instances: win rate (share of instances whose
band is ``<=`` Adam's), the median of ``band / band_Adam``, the mean damping
(``optax.tree.get(state, 'damping')``, 1 for methods without it), and the
mean damping applied on steps that move away from ``w*`` (``m_{t+1} > m_t``)
versus toward it.

*Adam converges to a band* in a (family, lr) cell when, on at least 90% of
the instances, Adam's run is finite, its band is ``<= 0.5 m_0``, it has
plateaued (its band is at least half its mean over the preceding 10% of the
steps: a band, not a descent still under way) and it is a band, not the
point (``>= 10x`` the float32 floor, ``1e-5 m_0``). The verdicts only count
those cells. Headline verdict per family for a method: in every converged
cell, win rate ``>= 95%`` and median ratio ``<= 0.5``. Beside it, a
diagnostic that changes no verdict (:func:`losses`): how many instances a
method loses, and on how many of them Adam was still closing in (its band
below ``SETTLED = 0.95`` x its previous window's).

Methods (``METHODS``, name -> factory of the learning rate): Adam, Adam with
cosine decay to 0, ``sadam_optax.sadam`` with every estimator and rule,
``sadam-no-release`` (the default of 0.2: what the brake takes is lost),
``sadam-0.3`` (the release that never waits), ``sadam-0.4`` (each reading as it
comes whatever ``b2``; since 0.5 ``sadam`` is ``sadam-envelope`` below b2 0.999),
``sadam-0.5`` (a reading lost in the loss's rounding reads as smooth; since 0.6
it keeps the last, ``unresolved_fade=0.99``; the version-named methods and
``sadam-no-release`` all read such a step as smooth, as those versions did;
``sadam-fade-F`` for other fades), ``sadam-0.6`` (the store keeps all the
brake holds whatever ``b1``; since 0.7 it drops the uphill share where
``b1 >= 0.99``, and the version-named methods keep all of it, as those
versions did), ``sadam-0.7`` (the store returns ``release`` of itself however
small Adam's step; since 0.8 at most three times Adam's step on a coordinate, and
the version-named methods return without that cap, as those versions did),
``sadam-cap-C`` (other caps, C = 1, 10, 100),
``sadam-drop-uphill`` (the store drops it whatever ``b1``),
``sadam-averaged`` (the damping
averaged over probes, ``damping_decay=0.7``), ``sadam-envelope`` (harder
readings at once, softer ones over about ten probes, ``damping_recovery=0.9``),
``sadam-compound-release`` (the compound rule made to return what it takes),
and ``sadam-late``, an oracle braked like the default over the last sixth of
the run only (it reaches Adam's band as fast as Adam, then brakes);
after each method named in ``controls`` (default: the core's default,
``'sadam'``), Adam runs at that method's effective learning rate, ``lr`` times
the run's mean damping, per instance (``adam@eff-lr(sadam)``). Every method is
called as ``opt.update(g, state, w, value_fn=loss_of_w, value=loss)``; plain
optax transformations are wrapped by ``optax.with_extra_args_support``. A
factory may take ``steps=`` (the run length; used by the cosine schedule).

Minibatches (``--batch B``, held-out noise): on the families whose loss is a
mean over examples (:data:`experiments.nonsmooth_families.ROWS`), each step's
gradient, value and probe read the loss of ``B`` examples drawn afresh, the
same draws for every method; the band still reads the full loss.

Speed: one jitted ``lax.scan`` over the steps per (method, shape group),
``vmap``-ed over the instances of a shape and over the learning rates, which
are traced, so one compilation serves all of them.

Example::

  python -m experiments.nonsmooth_suite                    # full (minutes)
  python -m experiments.nonsmooth_suite --smoke            # seconds
  python -m experiments.nonsmooth_suite --methods adam sadam sadam-step \\
      --families lasso svm --lrs 0.01 --steps 1000 --out /tmp/mine
  python -m experiments.nonsmooth_suite --batch 16 --out /tmp/noisy  # minibatches

  # From Python, with a candidate variant:
  from experiments import nonsmooth_suite as ns
  results = ns.run_suite({'adam': ns.METHODS['adam'],
                          'mine': lambda lr: sadam_optax.sadam(lr, lam=5.0)},
                         controls=('mine',))

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026 (Figure 1).

  Kumar, `GD doesn't make the cut: Three ways that non-differentiability
  affects neural network training <https://arxiv.org/abs/2401.08426>`_, 2024.

"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import re
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
from experiments.nonsmooth_families import (
  FAMILIES,
  ROWS,
  SCALABLE,
  SEED,
  Family,
  Instance,
  make_instances,
)

Factory = Callable[..., optax.GradientTransformation]

LRS = (1e-3, 1e-2, 3e-2)
STEPS = 3000
INSTANCES = 24
B1, B2 = 0.9, 0.999  # Adam's moments for every method (optax's defaults; --betas).
WINDOW = 0.1  # Share of the steps over which the band is measured.
TOL = 1e-2  # Steps to reach m_t <= TOL * m_0.
FLOOR = 1e-6  # Bands below FLOOR * m_0 are float32 rounding.
CONVERGED_BAND = 0.5  # Adam converges: band <= CONVERGED_BAND * m_0, ...
PLATEAU = 0.5  # ... band >= PLATEAU * (mean over the previous window), ...
BANDED = 10.0  # ... band >= BANDED * FLOOR * m_0 (a band, not the point), ...
CELL_SHARE = 0.9  # ... on at least this share of the instances.
SETTLED = 0.95  # Diagnostic only: Adam's band >= SETTLED * previous window: settled.
WIN_TARGET = 0.95
RATIO_TARGET = 0.5
DEFAULT = 'sadam'
BASELINE = 'adam'
CONTROL = 'adam@eff-lr({})'
LATE_SHARE = 1 / 6  # sadam-late brakes over this last share of the steps.
CURVE_POINTS = 200  # Points of the decimated median curves of the figures.


# ------------------------------------------------------------------- methods


# Every factory takes Adam's b1 and b2 (``--betas``): held-out settings run
# Adam and the brakes with the same moments.


def adam(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """``optax.adam`` at a constant learning rate."""
  return optax.adam(lr, b1=b1, b2=b2)


def adam_cosine(
  lr: Any, *, steps: int = STEPS, b1: float = B1, b2: float = B2
) -> optax.GradientTransformation:
  """``optax.adam`` with cosine decay from ``lr`` to 0 over ``steps``."""
  return optax.adam(optax.cosine_decay_schedule(lr, steps), b1=b1, b2=b2)


def sadam_cosine(
  lr: Any, *, steps: int = STEPS, b1: float = B1, b2: float = B2
) -> optax.GradientTransformation:
  """The default S-Adam under :func:`adam_cosine`'s schedule (``--baseline adam-cosine``)."""
  return sadam_optax.sadam(optax.cosine_decay_schedule(lr, steps), b1, b2)


def warmup_cosine(lr: Any, steps: int) -> optax.Schedule:
  """``optax.warmup_cosine_decay_schedule(0, lr, steps // 10, steps)``.

  Built from :func:`optax.join_schedules` because optax's own checks its
  arguments in Python, which a traced ``lr`` (the suite vmaps over it) fails.
  """
  warmup = steps // 10
  return optax.join_schedules(
    [optax.linear_schedule(0.0, lr, warmup), optax.cosine_decay_schedule(lr, steps - warmup)],
    [warmup],
  )


def adam_warmup_cosine(
  lr: Any, *, steps: int = STEPS, b1: float = B1, b2: float = B2
) -> optax.GradientTransformation:
  """``optax.adam`` with :func:`warmup_cosine` (a linear warmup over 10% of the run)."""
  return optax.adam(warmup_cosine(lr, steps), b1=b1, b2=b2)


def sadam_warmup_cosine(
  lr: Any, *, steps: int = STEPS, b1: float = B1, b2: float = B2
) -> optax.GradientTransformation:
  """The default S-Adam with :func:`warmup_cosine` (``--baseline adam-warmup-cosine``)."""
  return sadam_optax.sadam(warmup_cosine(lr, steps), b1, b2)


def _sadam(estimator: str, rule: str) -> Factory:
  def factory(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
    return sadam_optax.sadam(lr, b1, b2, estimator=estimator, rule=rule)

  factory.__doc__ = f'sadam_optax.sadam(lr, estimator={estimator!r}, rule={rule!r})'
  return factory


def sadam_late(
  lr: Any, *, steps: int = STEPS, lam: float = 2.0, b1: float = B1, b2: float = B2
) -> optax.GradientTransformation:
  """The default braked only over the last :data:`LATE_SHARE` of the run.

  An oracle, not a method: it knows when the run ends. Adam until then, so it
  reaches Adam's band as fast as Adam; the default's brake after. Where even
  this loses to Adam, Adam was still converging when the brake came on, and
  no brake that only shortens steps can win on that instance.
  """
  start = int(round((1.0 - LATE_SHARE) * steps))
  return sadam_optax.sadam(lr, b1, b2, lam=lambda count: jnp.where(count >= start, lam, 0.0))


def sadam_no_release(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The 0.2 default: the brake without the release (what it takes is lost), not averaged."""
  return sadam_optax.sadam(
    lr, b1, b2, release=None, damping_decay=0.0, damping_recovery=None, unresolved_fade=0.0
  )


def sadam_no_wait(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The 0.3 default: the release returns the store everywhere, uphill or not, not averaged."""
  return sadam_optax.sadam(
    lr,
    b1,
    b2,
    release_waits=False,
    damping_decay=0.0,
    damping_recovery=None,
    unresolved_fade=0.0,
    store_uphill=True,
    release_cap=None,
  )


def sadam_averaged(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The default with the damping averaged over probes (``damping_decay=0.7``)."""
  return sadam_optax.sadam(lr, b1, b2, damping_decay=0.7)


def sadam_envelope(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The default whose damping takes harder readings at once and lets go over ~10 probes."""
  return sadam_optax.sadam(lr, b1, b2, damping_decay=0.0, damping_recovery=0.9)


def sadam_0_4(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The 0.4 default: each reading as it comes whatever ``b2`` (0.5: the envelope below 0.999)."""
  return sadam_optax.sadam(
    lr, b1, b2, damping_recovery=None, unresolved_fade=0.0, store_uphill=True, release_cap=None
  )


def sadam_0_5(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The 0.5 default: a reading lost in the loss's rounding reads as smooth (0.6 keeps the last)."""
  return sadam_optax.sadam(lr, b1, b2, unresolved_fade=0.0, store_uphill=True, release_cap=None)


def sadam_0_6(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The 0.6 default: the store keeps the uphill share of what the brake holds whatever ``b1``."""
  return sadam_optax.sadam(lr, b1, b2, store_uphill=True, release_cap=None)


def sadam_0_7(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The 0.7 default: the store returns ``release`` of itself however small Adam's step."""
  return sadam_optax.sadam(lr, b1, b2, release_cap=None)


def sadam_drop_uphill(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The default whose store drops the uphill share of what the brake holds whatever ``b1``."""
  return sadam_optax.sadam(lr, b1, b2, store_uphill=False)


def sadam_every4(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
  """The default probing every 4th step: rho and the damping carried between probes."""
  return sadam_optax.sadam(lr, b1, b2, probe_every=4)


def sadam_compound_release(
  lr: Any, *, b1: float = B1, b2: float = B2
) -> optax.GradientTransformation:
  """The compound rule with the exp rule's release (its ``'auto'`` discards)."""
  return sadam_optax.sadam(
    lr, b1, b2, rule='compound', release=sadam_optax.transform.DEFAULT_RELEASE
  )


METHODS: dict[str, Factory] = {
  'adam': adam,
  'adam-cosine': adam_cosine,
  'sadam-cosine': sadam_cosine,
  'adam-warmup-cosine': adam_warmup_cosine,
  'sadam-warmup-cosine': sadam_warmup_cosine,
  'sadam-late': sadam_late,
  'sadam-no-release': sadam_no_release,
  'sadam-0.3': sadam_no_wait,
  'sadam-averaged': sadam_averaged,
  'sadam-envelope': sadam_envelope,
  'sadam-0.4': sadam_0_4,
  'sadam-0.5': sadam_0_5,
  'sadam-0.6': sadam_0_6,
  'sadam-0.7': sadam_0_7,
  'sadam-drop-uphill': sadam_drop_uphill,
  'sadam-every4': sadam_every4,
  'sadam-compound-release': sadam_compound_release,
}
for _rule in ('exp', 'compound'):
  for _est in ('uphill', 'secant', 'step', 'literal', 'trajectory', 'random-jvp'):
    _name = (
      'sadam' + ('' if _est == 'uphill' else f'-{_est}') + ('' if _rule == 'exp' else '-compound')
    )
    METHODS[_name] = _sadam(_est, _rule)


def _faded(fade: float) -> Factory:
  def factory(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
    return sadam_optax.sadam(lr, b1, b2, unresolved_fade=fade)

  factory.__doc__ = f'sadam_optax.sadam(lr, unresolved_fade={fade})'
  return factory


# The fade of a reading lost in the loss's rounding (0.6's default 0.99; 0 is sadam-0.5).
for _fade in (0.5, 0.9, 0.999, 1.0):
  METHODS[f'sadam-fade-{_fade:g}'] = _faded(_fade)


def _capped(cap: float) -> Factory:
  def factory(lr: Any, *, b1: float = B1, b2: float = B2) -> optax.GradientTransformation:
    return sadam_optax.sadam(lr, b1, b2, release_cap=cap)

  factory.__doc__ = f'sadam_optax.sadam(lr, release_cap={cap})'
  return factory


# Other caps of what the store returns, in Adam's steps (0.8's default 3; None is sadam-0.7).
for _cap in (1.0, 10.0, 100.0):
  METHODS[f'sadam-cap-{_cap:g}'] = _capped(_cap)


def build(
  factory: Factory, lr: Any, *, steps: int, betas: tuple[float, float] = (B1, B2)
) -> optax.GradientTransformationExtraArgs:
  """``factory(lr)`` (``steps=``, ``b1=``, ``b2=`` where it takes them), extra args accepted."""
  takes = inspect.signature(factory).parameters
  kwargs: dict[str, Any] = {'steps': steps} if 'steps' in takes else {}
  if 'b1' in takes and 'b2' in takes:
    kwargs.update(b1=betas[0], b2=betas[1])
  elif tuple(betas) != (B1, B2):
    raise ValueError(f'betas={betas}: the method {factory!r} takes no b1= and b2=.')
  return optax.with_extra_args_support(factory(lr, **kwargs))


# ------------------------------------------------------------------- running


def _group_by_shape(instances: Sequence[Instance]) -> list[list[int]]:
  groups: dict[Any, list[int]] = {}
  for i, inst in enumerate(instances):
    key = (inst.start.shape, tuple(sorted((k, np.shape(v)) for k, v in inst.data.items())))
    groups.setdefault(key, []).append(i)
  return list(groups.values())


def _trace(
  family: Family,
  factory: Factory,
  steps: int,
  betas: tuple[float, float],
  batch: int | None = None,
):
  """Jitted runs: vmap over instances (axis 0) and their lrs (axis 1).

  With ``batch``, step ``t`` of an instance reads the loss of ``batch`` rows
  (:data:`ROWS`) drawn without replacement by ``fold_in(key, t)``: its
  gradient, its value and the probe's ``value_fn``, as a training loop closes
  ``value_fn`` over its minibatch. The metric reads the full loss. The key is
  the instance's, so every method sees the same minibatches.
  """
  rows = ROWS[family.name] if batch else ()

  def one(data, start, w_star, optimum, key, lr):
    loss = lambda w: family.objective(data, w, jnp)
    opt = build(factory, lr, steps=steps, betas=betas)
    if family.metric == 'distance':
      metric = lambda w, value: jnp.linalg.norm(w - w_star)
    else:
      metric = lambda w, value: jnp.maximum(value - optimum, 0.0)

    def minibatch_loss(t):
      n = data[rows[0]].shape[0]
      idx = jax.random.choice(jax.random.fold_in(key, t), n, (min(batch, n),), replace=False)
      part = {k: v[idx] if k in rows else v for k, v in data.items()}
      return lambda w: family.objective(part, w, jnp)

    def body(carry, t):
      w, state, value, m = carry
      step_loss = loss
      if rows:
        step_loss = minibatch_loss(t)
        value = step_loss(w)
      g = jax.grad(step_loss)(w)
      updates, state = opt.update(g, state, w, value_fn=step_loss, value=value)
      w = optax.apply_updates(w, updates)
      value = loss(w)
      m_new = metric(w, value)
      damping = jnp.asarray(optax.tree.get(state, 'damping', default=1.0), jnp.float32)
      return (w, state, value, m_new), (m_new, damping)

    value0 = loss(start)
    m0 = metric(start, value0)
    carry = (start, opt.init(start), value0, m0)
    _, (ms, dampings) = jax.lax.scan(body, carry, jnp.arange(steps))
    return m0, ms, dampings

  over_lrs = jax.vmap(one, in_axes=(None, None, None, None, None, 0))
  return jax.jit(jax.vmap(over_lrs, in_axes=(0, 0, 0, 0, 0, 0)))


def run_metrics(m0: np.ndarray, ms: np.ndarray, dampings: np.ndarray) -> dict[str, np.ndarray]:
  """End-state metrics of runs (module doc), per leading index.

  Args:
    m0: (...,) metric at the start.
    ms: (..., steps) metric after each step.
    dampings: (..., steps) damping applied at each step.

  Returns:
    ``band``, ``band_max``, ``previous_band`` (mean over the window before),
    ``steps_to_tol`` (-1 if never), ``mean_damping`` (over the run),
    ``damping_away``/``damping_toward`` (mean damping on steps that move
    away from / toward the minimiser; NaN if none) and ``share_away``, each
    of shape (...,); ``m0``.
  """
  m0 = np.asarray(m0, np.float64)
  ms = np.asarray(ms, np.float64)
  steps = ms.shape[-1]
  w = max(1, int(np.ceil(WINDOW * steps)))
  tail = ms[..., -w:]
  before = ms[..., max(0, steps - 2 * w) : steps - w]
  floor = FLOOR * m0
  finite = np.all(np.isfinite(tail), axis=-1)
  band = np.where(finite, np.maximum(tail.mean(axis=-1), floor), np.inf)
  band_max = np.where(finite, np.maximum(tail.max(axis=-1), floor), np.inf)
  previous = np.maximum(before.mean(axis=-1), floor) if before.shape[-1] else band
  hit = ms <= TOL * m0[..., None]
  steps_to_tol = np.where(hit.any(axis=-1), np.argmax(hit, axis=-1) + 1, -1)
  previous_m = np.concatenate([m0[..., None], ms[..., :-1]], axis=-1)
  away = ms > previous_m
  d = np.asarray(dampings, np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    damping_away = (d * away).sum(-1) / away.sum(-1)
    damping_toward = (d * ~away).sum(-1) / (~away).sum(-1)
  return dict(
    m0=m0,
    band=band,
    band_max=band_max,
    previous_band=previous,
    steps_to_tol=steps_to_tol,
    mean_damping=d.mean(axis=-1),
    damping_away=damping_away,
    damping_toward=damping_toward,
    share_away=away.mean(axis=-1),
  )


def run_family(
  family: str,
  instances: Sequence[Instance],
  factory: Factory,
  lrs: np.ndarray,
  *,
  steps: int,
  betas: tuple[float, float] = (B1, B2),
  batch: int | None = None,
  seed: int = SEED,
) -> tuple[dict, np.ndarray]:
  """Runs one method on every instance of a family at every lr.

  Args:
    family: a name of :data:`FAMILIES`.
    instances: its instances.
    factory: the method.
    lrs: (instances, lrs) learning rates (per instance: the controls).
    steps: steps per run.
    betas: Adam's ``(b1, b2)``, passed to factories that take them.
    batch: rows per minibatch (:func:`_trace`); None: the full loss.
    seed: with ``batch``, the seed of the minibatches (instance ``i``'s key
      is ``fold_in(key(seed), i)``).

  Returns:
    :func:`run_metrics` arrays of shape (instances, lrs), and the median over
    instances of ``m_t / m_0``, decimated: (lrs, points).
  """
  fam = FAMILIES[family]
  lrs = np.asarray(lrs, np.float32)
  metrics: dict[str, np.ndarray] = {}
  points = np.unique(np.linspace(0, steps - 1, CURVE_POINTS).astype(int))
  curves = np.zeros((len(instances), lrs.shape[1], len(points)))
  run = _trace(fam, factory, steps, betas, batch)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(len(instances)))
  for group in _group_by_shape(instances):
    stack = lambda get: jnp.asarray(
      np.stack(  # pylint: disable=g-long-lambda
        [np.asarray(get(instances[i]), np.float32) for i in group]
      )
    )
    data = {k: stack(lambda inst, k=k: inst.data[k]) for k in instances[group[0]].data}
    start = stack(lambda inst: inst.start)
    w_star = stack(lambda inst: inst.start if inst.minimiser is None else inst.minimiser)
    optimum = stack(lambda inst: inst.optimum)
    m0, ms, dampings = jax.device_get(
      run(data, start, w_star, optimum, keys[np.asarray(group)], jnp.asarray(lrs[group]))
    )
    out = run_metrics(m0, ms, dampings)
    for k, v in out.items():
      metrics.setdefault(k, np.zeros(lrs.shape))[group] = v
    curves[group] = np.asarray(ms, np.float64)[..., points] / np.asarray(m0, np.float64)[..., None]
  return metrics, np.median(curves, axis=0)


def compare(adam_band: np.ndarray, band: np.ndarray) -> dict[str, float]:
  """Win rate and median band ratio of a method against Adam.

  Args:
    adam_band: (instances,) Adam's bands (floored, inf if not finite).
    band: (instances,) the method's.

  Returns:
    ``win_rate`` (share with ``band <= adam_band``) and ``median_ratio``
    (median of ``band / adam_band``).
  """
  adam_band = np.asarray(adam_band, np.float64)
  band = np.asarray(band, np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    ratio = np.where(np.isinf(adam_band) & np.isinf(band), 1.0, band / adam_band)
  return dict(win_rate=float(np.mean(band <= adam_band)), median_ratio=float(np.median(ratio)))


def losses(adam: dict[str, np.ndarray], band: np.ndarray) -> dict[str, int]:
  """Instances a method loses to Adam, and how many of them Adam had not settled.

  A diagnostic beside the verdict (which it does not change): a brake that
  holds part of a step back arrives late, so it loses where Adam is still
  closing in at the end of the run even in a cell that counts as converged.

  Args:
    adam: Adam's ``band`` and ``previous_band``, (instances,).
    band: the method's bands, (instances,).

  Returns:
    ``losses`` (band above Adam's) and ``losses_adam_falling`` (of those,
    Adam's band below :data:`SETTLED` x its previous window's).
  """
  adam_band = np.asarray(adam['band'], np.float64)
  lost = np.asarray(band, np.float64) > adam_band
  with np.errstate(invalid='ignore'):
    falling = adam_band < SETTLED * np.asarray(adam['previous_band'], np.float64)
  return dict(losses=int(lost.sum()), losses_adam_falling=int((lost & falling).sum()))


def adam_converges(metrics: dict[str, np.ndarray], *, plateau: float = PLATEAU) -> dict[str, Any]:
  """The criterion of the module doc for one (family, lr) cell of Adam.

  Args:
    metrics: Adam's :func:`run_metrics` arrays, (instances,).
    plateau: Adam's band must be at least this share of its previous
      window's (:data:`PLATEAU`; closer to 1 counts fewer cells, those
      where Adam is still closing in drop out).

  Returns:
    ``converged`` (bool) and the shares of instances that are finite, within
    ``CONVERGED_BAND * m_0``, plateaued, and above ``BANDED * FLOOR * m_0``.
  """
  band, m0 = metrics['band'], metrics['m0']
  finite = np.isfinite(band)
  small = finite & (band <= CONVERGED_BAND * m0)
  settled = finite & (band >= plateau * metrics['previous_band'])
  banded = finite & (band >= BANDED * FLOOR * m0)
  ok = small & settled & banded
  return dict(
    converged=bool(np.mean(ok) >= CELL_SHARE),
    share=float(np.mean(ok)),
    finite=float(np.mean(finite)),
    small=float(np.mean(small)),
    plateau=float(np.mean(settled)),
    banded=float(np.mean(banded)),
  )


def verdict(cells: Sequence[dict[str, Any]]) -> str:
  """``'pass'``, ``'fail'`` or ``'n/a'`` over one family's cells of a method.

  Args:
    cells: dicts with ``converged`` (Adam's criterion), ``win_rate`` and
      ``median_ratio``.

  Returns:
    ``'n/a'`` if Adam converges in no cell; ``'pass'`` if every converged
    cell has win rate ``>= WIN_TARGET`` and median ratio
    ``<= RATIO_TARGET``; ``'fail'`` otherwise.
  """
  counted = [c for c in cells if c['converged']]
  if not counted:
    return 'n/a'
  return 'pass' if all(map(meets_bar, counted)) else 'fail'


def meets_bar(cell: dict[str, Any]) -> bool:
  """Whether a cell meets the bar: :data:`WIN_TARGET` and :data:`RATIO_TARGET`."""
  return cell['win_rate'] >= WIN_TARGET and cell['median_ratio'] <= RATIO_TARGET


def _listed(x: np.ndarray) -> list:
  return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, np.float64)]


def run_suite(
  methods: dict[str, Factory],
  *,
  families: Sequence[str] = tuple(FAMILIES),
  lrs: Sequence[float] = LRS,
  steps: int = STEPS,
  instances: int = INSTANCES,
  seed: int = SEED,
  baseline: str = BASELINE,
  controls: Sequence[str] = (DEFAULT,),
  betas: tuple[float, float] = (B1, B2),
  scale: int = 1,
  batch: int | None = None,
  progress: bool = True,
) -> dict[str, Any]:
  """Runs every method on every instance of every family at every lr.

  Args:
    methods: name -> factory of the learning rate (a traced scalar) returning
      any optax transformation; a factory may take ``steps=``. Must contain
      ``baseline``.
    families: names of :data:`FAMILIES`.
    lrs: constant learning rates.
    steps: steps per run.
    instances: instances per family.
    seed: seed of the instances.
    baseline: the method every other is compared with (Adam).
    controls: methods after which Adam runs at their effective learning rate
      (per instance: lr times that run's mean damping), named
      ``adam@eff-lr(<name>)``; names absent from ``methods`` are skipped.
    betas: Adam's ``(b1, b2)`` for every method (each factory must take
      ``b1=`` and ``b2=`` unless they are optax's defaults).
    scale: multiplies the instances' sizes (n and d; families of
      :data:`experiments.nonsmooth_families.SCALABLE` only).
    batch: rows per minibatch: each step's gradient, value and probe read
      the loss of ``batch`` examples drawn afresh (families of
      :data:`experiments.nonsmooth_families.ROWS` only; the same draws for
      every method); None: the full loss.
    progress: print one line per (family, method).

  Returns:
    A JSON-serialisable dict: ``config``, ``instances`` (per family: their
    ``info``), ``runs`` (family -> method -> per-lr per-instance metrics),
    ``cells`` (one row per family, lr, method: win rate, median ratio, mean
    damping, Adam's convergence), ``verdicts`` (family -> method -> pass /
    fail / n/a), ``diagnostics`` and ``curves`` (medians of ``m_t / m_0``;
    for the figures).
  """
  if baseline not in methods:
    raise ValueError(f'methods must contain the baseline {baseline!r}.')
  unknown = [f for f in families if f not in FAMILIES]
  if unknown:
    raise ValueError(f'Unknown families {unknown}; known: {list(FAMILIES)}.')
  if batch is not None:
    whole = [f for f in families if f not in ROWS]
    if whole or batch < 1:
      raise ValueError(
        f'batch={batch}: needs a positive size and families whose loss is a mean over '
        f'examples ({", ".join(ROWS)}), not {whole}.'
      )
  lrs = [float(lr) for lr in lrs]
  out: dict[str, Any] = dict(
    config=dict(
      families=list(families),
      lrs=lrs,
      steps=steps,
      instances=instances,
      seed=seed,
      methods=list(methods),
      baseline=baseline,
      controls=list(controls),
      betas=list(betas),
      scale=scale,
      batch=batch,
      window=WINDOW,
      tol=TOL,
      floor=FLOOR,
      converged_band=CONVERGED_BAND,
      plateau=PLATEAU,
      banded=BANDED,
      cell_share=CELL_SHARE,
      win_target=WIN_TARGET,
      ratio_target=RATIO_TARGET,
    ),
    instances={},
    runs={},
    cells=[],
    verdicts={},
    curves={},
    timings={},
  )
  order = [baseline] + [m for m in methods if m != baseline]
  for family in families:
    t0 = time.time()
    insts = make_instances(family, instances, seed=seed, scale=scale)
    out['instances'][family] = [inst.info for inst in insts]
    grid = np.tile(np.asarray(lrs), (len(insts), 1))
    runs: dict[str, dict[str, np.ndarray]] = {}
    curves: dict[str, np.ndarray] = {}
    queue = [(name, methods[name], grid) for name in order]
    while queue:
      name, factory, lr_grid = queue.pop(0)
      t1 = time.time()
      runs[name], curves[name] = run_family(
        family, insts, factory, lr_grid, steps=steps, betas=betas, batch=batch, seed=seed
      )
      out['timings'][f'{family}/{name}'] = round(time.time() - t1, 2)
      if progress:
        print(f'  {family:16s} {name:28s} {time.time() - t1:6.1f} s', file=sys.stderr, flush=True)
      if name in controls:
        queue.insert(
          0, (CONTROL.format(name), methods[baseline], grid * runs[name]['mean_damping'])
        )
    out['timings'][family] = round(time.time() - t0, 2)
    out['runs'][family] = {
      name: {k: [_listed(v[:, j]) for j in range(len(lrs))] for k, v in r.items()}
      for name, r in runs.items()
    }
    out['curves'][family] = {name: c.tolist() for name, c in curves.items()}
  return summarize(out)


def _array(values: Sequence[Any]) -> np.ndarray:
  return np.asarray([np.inf if v is None else v for v in values], np.float64)


def summarize(results: dict[str, Any], *, plateau: float = PLATEAU) -> dict[str, Any]:
  """Fills ``cells``, ``verdicts`` and ``diagnostics`` from ``runs``.

  Pure function of the stored per-instance metrics, so a changed criterion
  can be re-applied to saved results without rerunning.

  Args:
    results: :func:`run_suite`'s output (or its JSON).
    plateau: Adam's plateau criterion (:func:`adam_converges`).

  Returns:
    ``results`` with those three entries replaced.
  """
  cfg = results['config']
  baseline = cfg['baseline']
  cells, verdicts = [], {}
  for family, runs in results['runs'].items():
    get = lambda name, key, j: _array(runs[name][key][j])  # pylint: disable=g-long-lambda,cell-var-from-loop
    for j, lr in enumerate(cfg['lrs']):
      conv = adam_converges(
        {k: get(baseline, k, j) for k in ('band', 'm0', 'previous_band')}, plateau=plateau
      )
      for name in runs:
        band, m0 = get(name, 'band', j), get(name, 'm0', j)
        cells.append(
          dict(
            family=family,
            lr=lr,
            method=name,
            adam_converged=conv['converged'],
            adam_criterion=conv,
            **compare(get(baseline, 'band', j), band),
            **losses({k: get(baseline, k, j) for k in ('band', 'previous_band')}, band),
            mean_damping=float(np.mean(get(name, 'mean_damping', j))),
            median_band=float(np.median(band / m0)),
            reached_tol=float(np.mean(get(name, 'steps_to_tol', j) > 0)),
          )
        )
    verdicts[family] = {
      name: 'baseline'
      if name == baseline
      else verdict(
        [
          dict(converged=c['adam_converged'], **c)
          for c in cells
          if c['family'] == family and c['method'] == name
        ]
      )
      for name in runs
    }
  table = [
    away_toward(results, family=f, lr=lr, method=m)
    for m in (DEFAULT, 'sadam-secant', 'sadam-step', 'sadam-compound')
    for f in results['runs']
    for lr in cfg['lrs']
  ]
  results.update(
    cells=cells,
    verdicts=verdicts,
    diagnostics=away_toward(results),
    away_toward=[row for row in table if row],
  )
  return results


def away_toward(
  results: dict[str, Any],
  *,
  family: str = 'relu_regression',
  lr: float = 1e-2,
  method: str = DEFAULT,
) -> dict[str, Any]:
  """Mean damping on steps away from / toward the minimiser (module doc).

  Args:
    results: :func:`run_suite`'s output.
    family: the family.
    lr: the learning rate.
    method: the method.

  Returns:
    Means over the instances (NaN-free instances only), or ``{}`` if that
    run is absent.
  """
  runs = results['runs'].get(family, {}).get(method)
  lrs = results['config']['lrs']
  if runs is None or lr not in lrs:
    return {}
  j = lrs.index(lr)

  def mean(key):
    values = np.asarray(runs[key][j], np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float('nan')

  return dict(
    family=family,
    lr=lr,
    method=method,
    damping_away=mean('damping_away'),
    damping_toward=mean('damping_toward'),
    share_away=mean('share_away'),
    mean_damping=mean('mean_damping'),
  )


# ------------------------------------------------------------------- reports


def _fmt(x: Any) -> str:
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return '-'
  return f'{x:.3g}' if isinstance(x, float) else str(x)


def _losses(cell: dict[str, Any]) -> str:
  if 'losses' not in cell:  # Results stored before the diagnostic.
    return '-'
  return f'{cell["losses"]} ({cell["losses_adam_falling"]})'


def markdown(payload: dict[str, Any]) -> str:
  """The readable report: headline, verdicts, every cell."""
  cfg = payload['config']
  excess = ', '.join(f for f in cfg['families'] if FAMILIES[f].metric == 'excess')
  b1, b2 = cfg.get('betas', (B1, B2))  # Results written before --betas ran at optax's.
  lines = [
    '# Non-smooth benchmark suite: methods against Adam, instance by instance',
    '',
    f'Command: `{payload["command"]}`  ',
    f'Hardware: {payload["hardware"]}  ',
    f'Core (sadam_optax) at: {payload.get("core", "-")}  ',
    f'Date: {payload["date"]}; wall time {payload.get("wall_s", 0):.0f} s  ',
    f'Families: {", ".join(cfg["families"])}; {cfg["instances"]} '
    f'instances each (seed {cfg["seed"]}); constant lrs {cfg["lrs"]}; '
    f'{cfg["steps"]} steps; Adam b1 {b1}, b2 {b2} for every method; same start per '
    'instance for every method.',
    '',
  ]
  if cfg.get('scale', 1) != 1:
    lines += [
      f'Sizes: n and d of every instance {cfg["scale"]}x those listed below (`--scale`; '
      "abs_sum's instance 0 is not Figure 1 then).",
      '',
    ]
  if cfg.get('batch'):
    lines += [
      f'Minibatches: each step reads the loss of {cfg["batch"]} examples drawn afresh '
      '(`--batch`; its gradient, its value and the probe), the same draws for every method; '
      'the band reads the full loss.',
      '',
    ]
  if cfg.get('baseline', BASELINE) != BASELINE:
    lines += [
      f'Baseline: `{cfg["baseline"]}`; every "Adam" below means it, and the lrs are the '
      "schedules' peaks.",
      '',
    ]
  lines += [
    'Band: the distance to the minimiser'
    + (f' ({excess}: the excess loss) ' if excess else ' ')
    + f'averaged over the last {cfg["window"]:.0%} of the steps, floored at '
    f"{cfg['floor']:g} x its initial value. Win: band <= Adam's on the "
    "same instance. Ratio: band / Adam's band (median over instances). "
    'Adam converges (column "Adam conv."): on >= '
    f'{cfg["cell_share"]:.0%} of the instances Adam is finite, its band is '
    f'<= {cfg["converged_band"]} x the initial distance, and it has '
    f'plateaued (band >= {cfg["plateau"]} x its mean over the previous '
    f'window), and its band is >= {cfg.get("banded", BANDED):g} x the '
    'floor (a band, not the point). Verdict per family: in every lr where Adam converges, win '
    f'rate >= {cfg["win_target"]:.0%} and median ratio <= '
    f'{cfg["ratio_target"]}; n/a where Adam converges at no lr.',
    '',
  ]
  for family in cfg['families']:
    lines.append(f'- `{family}`: {FAMILIES[family].summary}')
  lines.append('')
  cells = payload['cells']
  preferred = (
    'sadam',
    'sadam-cosine',
    'sadam-warmup-cosine',
    'sadam-secant',
    'sadam-step',
    'sadam-compound',
    'sadam-late',
  )
  # Methods from outside the registry (candidates) are what a report is about.
  headline = [m for m in preferred if m in cfg['methods']] + [
    m for m in cfg['methods'] if m not in METHODS
  ]
  if headline:
    lines += [
      '## Headline: win rate / median ratio against Adam',
      '',
      '| family | lr | Adam conv. | ' + ' | '.join(headline) + ' |',
      '|---|---|---|' + '---|' * len(headline),
    ]
    for family in cfg['families']:
      for lr in cfg['lrs']:
        row = {c['method']: c for c in cells if c['family'] == family and c['lr'] == lr}
        conv = row[cfg['baseline']]['adam_converged']
        lines.append(
          f'| {family} | {lr:g} | {"yes" if conv else "no"} | '
          + ' | '.join(f'{row[m]["win_rate"]:.0%} / {row[m]["median_ratio"]:.3g}' for m in headline)
          + ' |'
        )
    lines.append('')
  methods = list(payload['verdicts'][cfg['families'][0]])
  lines += [
    '## Verdicts per family',
    '',
    '| method | ' + ' | '.join(cfg['families']) + ' |',
    '|---|' + '---|' * len(cfg['families']),
  ]
  for m in methods:
    lines.append(
      f'| {m} | ' + ' | '.join(payload['verdicts'][f].get(m, '-') for f in cfg['families']) + ' |'
    )
  lost = [
    c for c in cells if c['method'] in headline and c['adam_converged'] and c.get('losses', 0) > 0
  ]
  if lost:
    lines += [
      '',
      '## Losses in the counted cells',
      '',
      'Instances where a headline method ends with a wider band than Adam, in the cells where '
      'Adam converges; in brackets those where Adam itself had not settled (its band below '
      f'{SETTLED} x its mean over the previous window: still closing in). A diagnostic: the '
      'verdicts count every loss.',
      '',
    ]
    lines += [
      f'- {c["method"]}, {c["family"]} lr {c["lr"]:g}: {c["losses"]} of '
      f'{cfg["instances"]} ({c["losses_adam_falling"]})'
      for c in lost
    ]
  diag = payload.get('diagnostics') or {}
  if diag:
    lines += [
      '',
      '## Damping on steps away from / toward the minimiser',
      '',
      f'{diag["method"]} on {diag["family"]} at lr {diag["lr"]:g} '
      '(means over instances of the per-run mean damping on each kind '
      'of step): away '
      f'{diag["damping_away"]:.3f}, toward '
      f'{diag["damping_toward"]:.3f}; share of steps away '
      f'{diag["share_away"]:.3f}; mean damping '
      f'{diag["mean_damping"]:.3f}.',
    ]
  rows = payload.get('away_toward') or []
  if rows:
    lines += [
      '',
      'Every family (mean damping on steps away / toward; share of steps away'
      + (f'; {excess}: steps that raise / lower the loss):' if excess else '):'),
      '',
      '| method | family | lr | away | toward | share away |',
      '|---|---|---|---|---|---|',
    ]
    lines += [
      f'| {r["method"]} | {r["family"]} | {r["lr"]:g} | '
      f'{_fmt(r["damping_away"])} | {_fmt(r["damping_toward"])} | '
      f'{r["share_away"]:.3f} |'
      for r in rows
    ]
  lines += [
    '',
    '## Every cell',
    '',
    '| family | lr | method | Adam conv. | win rate | median ratio '
    '| median band / m0 | reached tol | mean damping | losses (Adam still falling) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for c in cells:
    lines.append(
      f'| {c["family"]} | {c["lr"]:g} | {c["method"]} | '
      f'{"yes" if c["adam_converged"] else "no"} | {c["win_rate"]:.0%} | '
      f'{_fmt(c["median_ratio"])} | {_fmt(c["median_band"])} | '
      f'{c["reached_tol"]:.0%} | {c["mean_damping"]:.3f} | '
      f'{_losses(c)} |'
    )
  lines += [
    '',
    "Adam's convergence criterion per cell (shares of "
    'instances: finite / small band / plateaued / above the floor):',
    '',
  ]
  for c in cells:
    if c['method'] == cfg['baseline']:
      a = c['adam_criterion']
      lines.append(
        f'- {c["family"]} lr {c["lr"]:g}: {a["finite"]:.0%} / '
        f'{a["small"]:.0%} / {a["plateau"]:.0%} / '
        f'{a.get("banded", 1.0):.0%}'
      )
  return '\n'.join(lines) + '\n'


def plot(payload: dict[str, Any], family: str, path: Path) -> None:
  """Median ``m_t / m_0`` against the step, one panel per lr."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  cfg = payload['config']
  curves = payload['curves'][family]
  steps = cfg['steps']
  x = np.unique(np.linspace(0, steps - 1, CURVE_POINTS).astype(int)) + 1
  lrs = cfg['lrs']
  fig, axes = plt.subplots(1, len(lrs), figsize=(5 * len(lrs), 4), squeeze=False)
  for j, (ax, lr) in enumerate(zip(axes[0], lrs)):
    for name, c in curves.items():
      style = '--' if name.startswith('adam@') else (':' if 'compound' in name else '-')
      width = 2.2 if name in (cfg['baseline'], DEFAULT) else 1.0
      ax.plot(x, np.maximum(np.asarray(c[j], np.float64), 1e-9), style, lw=width, label=name)
    ax.set(
      xscale='log',
      yscale='log',
      xlabel='step',
      title=f'{family}, lr {lr:g}',
      ylabel='median m_t / m_0' if j == 0 else None,
    )
  axes[0][0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def core_version() -> str:
  """The git commit of the checkout and whether ``sadam_optax/`` differs
  from it (the core may change between runs: record which one ran)."""
  root = Path(__file__).resolve().parent.parent
  git = lambda *a: (
    subprocess.run(  # pylint: disable=g-long-lambda
      ['git', *a], cwd=root, capture_output=True, text=True, check=False
    ).stdout
  )
  commit = git('rev-parse', '--short', 'HEAD').strip() or 'unknown'
  dirty = git('status', '--porcelain', '--', 'sadam_optax')
  return commit + (
    ' + uncommitted changes in sadam_optax/: '
    + ', '.join(line[3:] for line in dirty.splitlines() if line)
    if dirty
    else ''
  )


def dumps(payload: dict[str, Any]) -> str:
  """JSON with every list of numbers on one line; curves to 4 digits."""
  payload = dict(payload)
  payload['curves'] = {
    f: {m: [[float(f'{v:.4g}') for v in row] for row in c] for m, c in curves.items()}
    for f, curves in payload.get('curves', {}).items()
  }
  text = json.dumps(payload, indent=1)
  return re.sub(
    r'\[[-0-9.eE,\s]*\]|\[[-0-9.eEnul,\s]*\]',
    lambda m: re.sub(r'\s+', '', m.group(0)).replace(',', ', '),
    text,
  )


def failing_cells(results: dict[str, Any], method: str) -> tuple[list[dict[str, Any]], int]:
  """The counted cells where ``method`` misses the bar, and how many cells count.

  Args:
    results: :func:`summarize`'s output (or a saved JSON).
    method: a method in ``results``.

  Returns:
    ``(failing cells, number of counted cells)``.
  """
  counted = [c for c in results['cells'] if c['method'] == method and c['adam_converged']]
  failing = [c for c in counted if not meets_bar(c)]
  return failing, len(counted)


def _load(path: str | Path, families: Sequence[str] | None) -> dict[str, Any]:
  """A saved run, cut down to ``families`` (all of them when None)."""
  stored = json.loads(Path(path).read_text())
  if families is not None:
    stored['runs'] = {f: r for f, r in stored['runs'].items() if f in families}
    stored['cells'] = [c for c in stored['cells'] if c['family'] in families]
  return stored


def recount(
  paths: Sequence[str | Path],
  *,
  methods: Sequence[str],
  plateau: float,
  families: Sequence[str] | None = None,
) -> str:
  """Saved runs re-counted with another plateau criterion, as a Markdown table.

  Counting is a pure function of the stored per-instance bands
  (:func:`summarize`), so no run is repeated. A plateau closer to 1 drops
  the cells where Adam is still closing in at the end of the run.

  Args:
    paths: JSON files written by :func:`write`.
    methods: the methods to count (each against the files' baseline).
    plateau: the criterion to compare with :data:`PLATEAU`.
    families: count only these (all when None), so that runs with a family
      added can be compared with runs without it.

  Returns:
    One row per file and a total: failing / counted cells per method under
    both criteria; then, over every cell whether it counts or not, the cells
    where the method ends wider than the baseline at the median and the
    instance runs it loses.
  """
  rules = (PLATEAU, plateau)
  head = ' | '.join(f'{m}, plateau {r:g}' for m in methods for r in rules)
  lines = [f'| file | {head} |', '|---' * (1 + len(methods) * len(rules)) + '|']
  totals = np.zeros((len(methods), len(rules), 2), int)
  for path in paths:
    stored = _load(path, families)
    counts = [summarize(dict(stored), plateau=rule) for rule in rules]
    row = []
    for i, method in enumerate(methods):
      for k, summary in enumerate(counts):
        failing, counted = failing_cells(summary, method)
        totals[i, k] += (len(failing), counted)
        row.append(f'{len(failing)} / {counted}')
    lines.append(f'| {Path(path).stem} | ' + ' | '.join(row) + ' |')
  total = [f'{f} / {c}' for per in totals for f, c in per]
  lines.append('| total | ' + ' | '.join(total) + ' |')
  return '\n'.join(lines) + '\n\n' + _everywhere(paths, methods, families)


def _everywhere(
  paths: Sequence[str | Path], methods: Sequence[str], families: Sequence[str] | None
) -> str:
  """Per file and method, over every cell: wider than the baseline at the median, and losses."""
  head = ' | '.join(f'{m}: cells wider at the median, instances lost' for m in methods)
  lines = [f'| file (every cell) | {head} |', '|---' * (1 + len(methods)) + '|']
  totals = np.zeros((len(methods), 4), int)
  for path in paths:
    stored = _load(path, families)
    row = []
    for i, method in enumerate(methods):
      mine = [c for c in stored['cells'] if c['method'] == method]
      wider = sum(c['median_ratio'] > 1 for c in mine)
      lost = sum(c['losses'] for c in mine)
      counts = (wider, len(mine), lost, len(mine) * stored['config']['instances'])
      totals[i] += counts
      row.append('{} / {}, {} / {}'.format(*counts))
    lines.append(f'| {Path(path).stem} | ' + ' | '.join(row) + ' |')
  lines.append('| total | ' + ' | '.join('{} / {}, {} / {}'.format(*t) for t in totals) + ' |')
  return '\n'.join(lines)


def write(payload: dict[str, Any], stem: str | Path) -> Path:
  """Writes ``<stem>.json``, ``<stem>.md`` and ``<stem>_<family>.png``.

  Args:
    payload: :func:`run_suite`'s output (command, hardware and date are
      added).
    stem: path without suffix, e.g. ``experiments/results/nonsmooth_suite``.

  Returns:
    The path of the JSON file.
  """
  stem = Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  payload = dict(
    command=common.command_line(),
    hardware=common.hardware(),
    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    core=core_version(),
    **payload,
  )
  path = stem.with_name(stem.name + '.json')
  path.write_text(dumps(payload))
  stem.with_name(stem.name + '.md').write_text(markdown(payload))
  for family in payload['config']['families']:
    plot(payload, family, stem.with_name(f'{stem.name}_{family}.png'))
  return path


# ----------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument(
    '--methods',
    nargs='+',
    default=list(METHODS),
    choices=list(METHODS),
    metavar='NAME',
    help=f'from METHODS: {", ".join(METHODS)}',
  )
  p.add_argument(
    '--families',
    nargs='+',
    default=list(FAMILIES),
    choices=list(FAMILIES),
    metavar='FAMILY',
    help='the families to run (with --recount: to count); default all',
  )
  p.add_argument('--lrs', type=float, nargs='+', default=list(LRS))
  p.add_argument('--steps', type=int, default=STEPS)
  p.add_argument('--instances', type=int, default=INSTANCES)
  p.add_argument('--seed', type=int, default=SEED)
  p.add_argument(
    '--betas',
    type=float,
    nargs=2,
    default=[B1, B2],
    metavar=('B1', 'B2'),
    help="Adam's moments for every method (held-out settings)",
  )
  p.add_argument(
    '--baseline',
    default=BASELINE,
    choices=list(METHODS),
    help='the method every other is compared with (adam-cosine for the scheduled ones)',
  )
  p.add_argument(
    '--controls',
    nargs='*',
    default=[DEFAULT],
    help="methods followed by Adam at their effective lr (default: 'sadam'; the flag alone: none)",
  )
  p.add_argument(
    '--scale',
    type=int,
    default=1,
    help='multiplies n and d of every instance (held-out sizes; only ' + ', '.join(SCALABLE) + ')',
  )
  p.add_argument(
    '--batch',
    type=int,
    help='rows per minibatch, drawn afresh each step (held-out noise; families with examples '
    'only, and all of them when --families is not given)',
  )
  p.add_argument(
    '--out', default=str(common.RESULTS_DIR / 'nonsmooth_suite'), help='results path without suffix'
  )
  p.add_argument(
    '--recount',
    nargs='+',
    metavar='JSON',
    help='re-count saved results (no run): failing / counted cells under --plateau and '
    f"{PLATEAU} (the verdicts' criterion), for --methods; then, over every cell, those wider "
    'than the baseline at the median and the instance runs lost',
  )
  p.add_argument(
    '--plateau',
    type=float,
    default=0.9,
    help="with --recount: Adam's band over the last window at least this share of the one before",
  )
  p.add_argument(
    '--smoke', action='store_true', help='tiny: 1 instance, 60 steps, lr 1e-2, adam and sadam'
  )
  return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parser().parse_args(argv)
  if args.recount:
    methods = [m for m in args.methods if m != args.baseline]
    if len(methods) == len(METHODS) - 1:  # Not chosen: the default.
      methods = [DEFAULT]
    print(recount(args.recount, methods=methods, plateau=args.plateau, families=args.families))
    return {}
  if args.smoke:
    args.methods = [m for m in args.methods if m in (BASELINE, DEFAULT)] or [BASELINE, DEFAULT]
    args.instances, args.steps, args.lrs = 1, 60, [1e-2]
  if args.batch and args.families == list(FAMILIES):  # Not chosen: those with examples.
    args.families = [f for f in FAMILIES if f in ROWS]
  names = [args.baseline] + [m for m in args.methods if m != args.baseline]
  t0 = time.time()
  payload = run_suite(
    {m: METHODS[m] for m in names},
    families=args.families,
    lrs=args.lrs,
    steps=args.steps,
    instances=args.instances,
    seed=args.seed,
    baseline=args.baseline,
    controls=args.controls,
    betas=tuple(args.betas),
    scale=args.scale,
    batch=args.batch,
  )
  payload['wall_s'] = round(time.time() - t0, 1)
  path = write(payload, args.out)
  print(path.with_suffix('.md').read_text())
  return json.loads(path.read_text())


if __name__ == '__main__':
  main()
