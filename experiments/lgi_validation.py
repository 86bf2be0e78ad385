"""Does rho detect non-smoothness? Kink detection on problems with known kinks.

For every estimator of :func:`sadam_optax.estimate_lgi` (``'step'``,
``'literal'``, ``'trajectory'``) and number of probes k, rho is measured on
labelled segments ``[x, x + s]`` of the problems of
:mod:`sadam_optax.problems`, in dimension 2, 100 and 10^4, and compared with
the exact ground truth of each segment:

* ``chatter``: the step crosses a kink and the directional derivative along
  it changes sign between its two ends (the step overshoots; what the brake is
  meant to stop);
* ``crosses``: the step crosses a kink, sign change or not;
* ``overshoot``: the slope changes sign between the ends, kink or not (on
  ``relu_net``, whose loss is piecewise quadratic, a step can overshoot a
  smooth minimum along its line);
* ``smooth``: no kink within ``R = r |s|`` of the segment, ``r`` the default
  probe radius of ``'step'`` (the capsule that holds every probe of the
  default ``'step'`` estimator);
* ``diameter``: the diameter of the subdifferential, over that capsule,
  projected on the step (:func:`problems.subdiff_diameter_along`).

Reported per (problem, estimator, k): the ROC AUC of rho for ``chatter``,
``crosses`` and ``overshoot``, the mean rho on chattering and on smooth
segments, and the Spearman correlation of rho with the diameter.

Two populations of segments:

* ``optimizer`` (the main one): what an Adam-like optimizer proposes near a
  non-smooth minimiser ``x*``. The step is ``s = -lr * sign(grad f(x))``
  (Adam's step when its moments agree in sign), at ``x = x* + c * lr * z``,
  ``z ~ N(0, I)``, with the scale ``c`` log-uniform over 1.5 decades on
  either side of the scale at which half of the steps chatter (calibrated per
  problem), so that both labels are well represented at every dimension.
* ``sampler``: :func:`problems.sample_points`, normalised-gradient steps of
  norm 0.1 that either cross one kink or keep ``R`` clear of every kink.

The ``'literal'`` estimator probes random directions at an absolute radius
0.01 around ``x`` and ignores the step; it is scored against the same labels.
``'trajectory'`` here evaluates its two slopes (at both ends of the step)
explicitly, as :func:`sadam_optax.estimate_lgi` does.

``step-slices`` is an ablation of the probe placement: the ``'step'``
estimator as the core had it before this study, with one random point in
each slice of width 1/k of the step instead of the grid ``t = 0, 1/(k-1),
..., 1`` that includes both ends (``probe_placement='slices'`` of
:func:`sadam_optax.estimate_lgi`). The ends decide the label: this study is why the
core now probes them.

Also writes the paper's Figure 1 as heat maps of rho over the plane, one per
estimator (``lgi_validation_figure1.png``), with the step
``-lr * sign(grad f)`` at every grid point.

Example::

  python -m experiments.lgi_validation             # full run (minutes)
  python -m experiments.lgi_validation --smoke     # seconds, for the tests

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026 (Figure 1).

  Burke, Lewis, Overton, `A Robust Gradient Sampling Algorithm for Nonsmooth,
  Nonconvex Optimization <https://doi.org/10.1137/030601296>`_, 2005.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from sklearn import metrics
import tqdm

import sadam_optax
from sadam_optax import lgi
from sadam_optax import problems
from experiments import common

STEP_RADIUS = lgi.DEFAULT_PROBE_RADIUS['step']
ABLATION = 'step-slices'  # The former probe placement.
TARGET_AUC = 0.95
TARGET_CHATTER_RHO = 0.3
TARGET_SMOOTH_RHO = 0.05


# ------------------------------------------------------------------- problems


class Case(NamedTuple):
  """A problem at a dimension, and the learning rate of its sign steps."""

  name: str
  dim: int
  problem: Any
  lr: float


def make_cases(
  dims: Sequence[int],
  *,
  seed: int = 0,
  names: Sequence[str] = ('figure1', 'abs_sum', 'max_affine', 'relu_net'),
) -> list[Case]:
  """The problems of the study at each dimension.

  ``figure1`` is 2-D only; ``relu_net`` (8 hidden units, 10 inputs: 97
  parameters) is added once, when 100 is among ``dims``.

  Args:
    dims: dimensions of ``abs_sum`` and ``max_affine``.
    seed: seed of the random problems.
    names: which problems.

  Returns:
    A list of :class:`Case`.
  """
  key = jax.random.key(seed)
  cases = []
  for d in dims:
    if d == 2 and 'figure1' in names:
      cases.append(Case('figure1', 2, problems.figure1(), 0.1))
    if 'abs_sum' in names:
      cases.append(Case('abs_sum', d, problems.abs_sum(key, d), 0.1))
    if 'max_affine' in names:
      cases.append(Case('max_affine', d, problems.max_affine(key, d), 0.1))
    if d == 100 and 'relu_net' in names:
      net = problems.relu_net(key, num_data=8, in_dim=10, hidden=8)
      cases.append(Case('relu_net', int(net.solution.shape[0]), net, 0.01))
  return cases


# ------------------------------------------------------------------- segments


def sign_steps(problem: Any, params: jax.Array, lr: float) -> jax.Array:
  """Adam-like steps ``-lr * sign(grad f(x))`` at each row of ``params``."""
  return -lr * jnp.sign(jax.vmap(jax.grad(problem.value))(params))


@functools.partial(jax.jit, static_argnames=('n',))
def _chatter_fraction(problem, key, scale, lr, *, n):
  x = problem.minimiser() + scale * lr * jax.random.normal(key, (n, problem.minimiser().shape[0]))
  s = sign_steps(problem, x, lr)
  return jnp.mean(jax.vmap(_chatter, (None, 0, 0))(problem, x, s))


def _chatter(problem, x, s):
  return problems.crosses_kink(problem, x, s) & problems.directional_sign_change(problem, x, s)


def half_chatter_scale(case: Case, key: jax.Array, *, n: int = 128) -> float:
  """The scale ``c`` at which half of the sign steps chatter.

  Scans ``c`` over ``10^-3 .. 10^4`` and interpolates (in log scale) where the
  chattering fraction falls to one half after its peak. (Below the peak,
  ``max_affine`` points sit within the tie tolerance of the ground truth,
  whose labels are then not meaningful.)

  Args:
    case: the problem.
    key: PRNG key.
    n: points per scale.

  Returns:
    ``c`` (a float).
  """
  scales = np.logspace(-3, 4, 29)
  frac = np.array([float(_chatter_fraction(case.problem, key, c, case.lr, n=n)) for c in scales])
  peak = int(np.argmax(frac))
  below = np.flatnonzero(frac[peak:] <= 0.5) + peak
  if below.size == 0:
    return float(scales[-1])
  i = int(below[0])
  if i == 0:
    return float(scales[0])
  w = (frac[i - 1] - 0.5) / max(frac[i - 1] - frac[i], 1e-9)
  return float(10 ** (np.log10(scales[i - 1]) + w * np.log10(scales[i] / scales[i - 1])))


def optimizer_segments(
  case: Case, key: jax.Array, n: int, *, spread: float = 1.5
) -> tuple[jax.Array, jax.Array]:
  """The ``optimizer`` population of the module doc.

  Args:
    case: the problem.
    key: PRNG key.
    n: number of segments.
    spread: decades on either side of the half-chattering scale.

  Returns:
    ``(params, steps)``, both ``(n, d)``.
  """
  k_cal, k_scale, k_z = jax.random.split(key, 3)
  center = half_chatter_scale(case, k_cal)
  x_star = case.problem.minimiser()
  scale = center * 10 ** jax.random.uniform(k_scale, (n, 1), minval=-spread, maxval=spread)
  x = x_star + scale * case.lr * jax.random.normal(k_z, (n, x_star.shape[0]))
  return x, sign_steps(case.problem, x, case.lr)


def sampler_segments(case: Case, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
  """The ``sampler`` population: :func:`problems.sample_points`."""
  step_scale = 0.1
  pts = problems.sample_points(
    case.problem,
    key,
    n,
    radius=STEP_RADIUS * step_scale,
    step_scale=step_scale,
    step_kind='gradient',
  )
  return pts.params, pts.steps


@jax.jit
def ground_truth(problem: Any, params: jax.Array, steps: jax.Array) -> dict[str, jax.Array]:
  """Exact labels of each segment (module doc), vmapped over rows.

  Args:
    problem: a problem of :mod:`sadam_optax.problems`.
    params: ``(n, d)`` starts.
    steps: ``(n, d)`` steps.

  Returns:
    ``chatter``, ``overshoot`` (sign change, kink or not), ``crosses``,
    ``smooth`` (bool) and ``diameter`` (float), each of shape ``(n,)``.
  """
  radius = STEP_RADIUS * jnp.linalg.norm(steps, axis=1)  # The default's.

  def one(x, s, r):
    return dict(
      chatter=_chatter(problem, x, s),
      overshoot=problems.directional_sign_change(problem, x, s),
      crosses=problems.crosses_kink(problem, x, s),
      smooth=problems.kink_distance(problem, x, s) > r,
      diameter=problems.subdiff_diameter_along(problem, x, s, r),
    )

  return jax.vmap(one)(params, steps, radius)


# ----------------------------------------------------------------- estimators


class Estimator(NamedTuple):
  """One configuration of rho: estimator name, k and the probe radius."""

  name: str
  num_probes: int
  probe_radius: float | None = None

  @property
  def label(self) -> str:
    radius = '' if self.probe_radius is None else f' r={self.probe_radius:g}'
    k = '' if self.name in ('trajectory', 'secant', 'uphill') else (f' k={self.num_probes}')
    return f'{self.name}{k}{radius}'


# The core's defaults, and the default of 'step' before this study.
DEFAULT = Estimator(lgi.DEFAULT_ESTIMATOR, 2)  # sadam_optax's default.
SECANT = Estimator('secant', 2)  # The default before 0.2.
DEFAULT_STEP = Estimator('step', lgi.DEFAULT_NUM_PROBES['step'])
DEFAULT_LITERAL = Estimator('literal', lgi.DEFAULT_NUM_PROBES['literal'])
FORMER_DEFAULT = Estimator(ABLATION, 4, 0.1)


def rho_of(
  estimator: Estimator, value_fn: Any, params: jax.Array, step: jax.Array, key: jax.Array
) -> jax.Array:
  """rho of one segment by one estimator configuration."""
  ablation = estimator.name == ABLATION
  return sadam_optax.estimate_lgi(
    value_fn,
    params,
    step,
    key,
    estimator='step' if ablation else estimator.name,
    num_probes=estimator.num_probes,
    probe_radius=estimator.probe_radius,
    probe_placement='slices' if ablation else 'ends',
  )


@functools.partial(jax.jit, static_argnames=('estimator', 'batch'))
def measure(
  problem: Any,
  params: jax.Array,
  steps: jax.Array,
  key: jax.Array,
  *,
  estimator: Estimator,
  batch: int = 128,
) -> jax.Array:
  """rho at each segment, ``batch`` segments vmapped at a time.

  Args:
    problem: a problem.
    params: ``(n, d)``.
    steps: ``(n, d)``.
    key: PRNG key (one subkey per segment).
    estimator: the configuration.
    batch: segments evaluated at once (bounds memory at d = 10^4).

  Returns:
    ``(n,)`` float32.
  """
  n = params.shape[0]
  keys = jax.random.split(key, n)
  one = lambda a: rho_of(estimator, problem.value, *a)
  # A chunk size that divides n: a remainder would be compiled separately.
  chunk = max(c for c in range(1, min(batch, n) + 1) if n % c == 0)
  return jax.lax.map(one, (params, steps, keys), batch_size=chunk)


def estimator_grid(
  ks: Sequence[int],
  *,
  literal_ks: Sequence[int] = (8,),
  radii: Sequence[float] = (),
  ablation: bool = True,
) -> list[Estimator]:
  """The estimator configurations of a run.

  Args:
    ks: numbers of probes of ``'step'`` (and of the ablation), at the
      default radius.
    literal_ks: numbers of probes of ``'literal'``.
    radii: other probe radii of ``'step'``, at its default k.
    ablation: include ``step-slices`` (at ``ks``, and the former default
      k = 4, r = 0.1).

  Returns:
    A list of :class:`Estimator`; ``'trajectory'`` and ``'secant'`` once
    (they read 2 samples).
  """
  k0 = DEFAULT_STEP.num_probes
  grid = [Estimator('step', k) for k in ks]
  grid += [Estimator('step', k0, r) for r in radii]
  grid += [Estimator('literal', k) for k in literal_ks]
  grid.append(Estimator('trajectory', 2))
  grid.append(SECANT)
  grid.append(DEFAULT)
  if ablation:
    grid += [Estimator(ABLATION, k) for k in ks]
    grid.append(FORMER_DEFAULT)
  return list(dict.fromkeys(grid))


# -------------------------------------------------------------------- scoring


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """ROC AUC, or None when only one class is present."""
  labels = np.asarray(labels, bool)
  if labels.all() or not labels.any():
    return None
  return float(metrics.roc_auc_score(labels, scores))


def _mean(x: np.ndarray, mask: np.ndarray) -> float | None:
  return float(np.mean(x[mask])) if np.any(mask) else None


def score(rho: np.ndarray, truth: dict[str, np.ndarray]) -> dict[str, Any]:
  """The metrics of one (population, problem, estimator).

  Args:
    rho: ``(n,)`` rho values.
    truth: :func:`ground_truth` as numpy arrays.

  Returns:
    ``auc_chatter``, ``auc_crosses``, ``auc_overshoot``, ``rho_chatter``,
    ``rho_smooth``,
    ``rho_crosses_no_sign_change`` (means; None where a class is empty),
    ``spearman_diameter`` and the class counts.
  """
  chatter, crosses, smooth = truth['chatter'], truth['crosses'], truth['smooth']
  spearman = stats.spearmanr(rho, truth['diameter'])[0]
  return dict(
    auc_chatter=auc(chatter, rho),
    auc_crosses=auc(crosses, rho),
    auc_overshoot=auc(truth['overshoot'], rho),
    rho_chatter=_mean(rho, chatter),
    rho_smooth=_mean(rho, smooth),
    rho_crosses_no_sign_change=_mean(rho, crosses & ~chatter),
    spearman_diameter=None if np.isnan(spearman) else float(spearman),
    n=int(rho.size),
    n_chatter=int(chatter.sum()),
    n_crosses=int(crosses.sum()),
    n_smooth=int(smooth.sum()),
  )


def pooled(
  records: list[dict[str, Any]],
  rhos: dict[tuple, np.ndarray],
  truths: dict[tuple, dict[str, np.ndarray]],
  *,
  population: str,
) -> list[dict[str, Any]]:
  """Scores pooled over the problems of one dimension class (2, 100, 10^4).

  ``relu_net`` (97 parameters) pools with dimension 100.
  """
  out = []
  classes = sorted({dim_class(r['dim']) for r in records if r['population'] == population})
  labels = sorted({r['estimator'] for r in records})
  for dc in classes:
    for label in labels:
      keys = [k for k in rhos if k[0] == population and dim_class(k[2]) == dc and k[3] == label]
      if not keys:
        continue
      rho = np.concatenate([rhos[k] for k in keys])
      truth = {f: np.concatenate([truths[k[:3]][f] for k in keys]) for f in truths[keys[0][:3]]}
      out.append(
        dict(
          population=population,
          dim=dc,
          estimator=label,
          problems=sorted({k[1] for k in keys}),
          **score(rho, truth),
        )
      )
  return out


def dim_class(d: int) -> int:
  """2, 100 or 10^4: the dimension class a problem's dimension belongs to."""
  return min((2, 100, 10_000), key=lambda c: abs(np.log(d / c)))


# ------------------------------------------------------------------ Figure 1


def figure1_maps(
  estimators: Sequence[Estimator],
  *,
  lr: float = 0.2,
  resolution: int = 161,
  draws: int = 4,
  extent: tuple[float, float] = (-1.0, 3.0),
  seed: int = 0,
) -> dict[str, np.ndarray]:
  """rho over the plane for Figure 1's function, mean over ``draws`` keys.

  The step at each grid point is ``-lr * sign(grad f)``; with ``lr = 0.2``
  the steps that start within 0.2 of a kink line cross it.

  Args:
    estimators: the configurations to map.
    lr: step length per coordinate.
    resolution: grid points per axis.
    draws: independent probe draws averaged per point.
    extent: the square ``[lo, hi]^2``.
    seed: PRNG seed.

  Returns:
    ``{label: (resolution, resolution) array}`` plus ``'x'``, ``'y'`` and the
    ground truth ``'chatter'`` and ``'diameter'``.
  """
  problem = problems.figure1()
  axis = np.linspace(*extent, resolution, dtype=np.float32)
  gx, gy = np.meshgrid(axis, axis)
  params = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=1))
  steps = sign_steps(problem, params, lr)
  truth = {
    k: np.asarray(v).reshape(gx.shape) for k, v in ground_truth(problem, params, steps).items()
  }
  out = dict(x=axis, y=axis, chatter=truth['chatter'], diameter=truth['diameter'])
  for i, est in enumerate(estimators):
    keys = jax.random.split(jax.random.key(seed + i), draws)
    rho = np.mean(
      [np.asarray(measure(problem, params, steps, k, estimator=est, batch=4096)) for k in keys],
      axis=0,
    )
    out[est.label] = rho.reshape(gx.shape)
  return out


def plot_figure1(
  maps: dict[str, np.ndarray], labels: Sequence[str], path: Path, *, lr: float
) -> None:
  """Heat maps of rho (one panel per estimator) and the ground truth."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  panels = [('chatter', 'ground truth: step overshoots a kink')] + [
    (label, f'rho, {label}') for label in labels
  ]
  cols = 3
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
  extent = (maps['x'][0], maps['x'][-1], maps['y'][0], maps['y'][-1])
  for ax, (key, title) in zip(axes.ravel(), panels):
    image = ax.imshow(
      np.asarray(maps[key], np.float32),
      origin='lower',
      extent=extent,
      cmap='magma',
      vmin=0.0,
      vmax=max(1.0, float(np.max(maps[key]))),
    )
    ax.axvline(1.0, color='c', lw=0.5, ls=':')
    ax.axhline(1.0, color='c', lw=0.5, ls=':')
    ax.set(title=title, xlabel='x', ylabel='y')
    ax.title.set_fontsize(9)
    fig.colorbar(image, ax=ax, fraction=0.046)
  for ax in axes.ravel()[len(panels) :]:
    ax.axis('off')
  fig.suptitle(
    'f(x, y) = |x-1| + |y-1| + (x^2 + y^2)/2, step -lr sign(grad f)'
    f', lr = {lr:g}; mean rho over probe draws',
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_auc(pooled_rows: list[dict[str, Any]], path: Path) -> None:
  """AUC of chattering detection against k, one panel per dimension."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  rows = [r for r in pooled_rows if r['population'] == 'optimizer']
  dims = sorted({r['dim'] for r in rows})
  fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.6), squeeze=False)
  for ax, d in zip(axes[0], dims):
    for name, style in (
      ('uphill', '^'),
      ('secant', 'v'),
      ('step', 'o-'),
      ('literal', 's-'),
      ('trajectory', '^'),
      (ABLATION, 'd--'),
    ):
      pts = sorted(
        (_k_of(r['estimator']), r['auc_chatter'])
        for r in rows
        if r['dim'] == d
        and _name_of(r['estimator']) == name
        and ' r=' not in r['estimator']
        and r['auc_chatter'] is not None
      )
      if pts:
        ax.plot(*zip(*pts), style, label=name)
    ax.axhline(TARGET_AUC, color='gray', lw=0.7, ls=':')
    ax.axhline(0.5, color='gray', lw=0.5)
    ax.set_xscale('log', base=2)
    ax.minorticks_off()
    ax.set(xlabel='probes k', ylabel='ROC AUC (chattering)', title=f'd ~ {d}', ylim=(0, 1.02))
    ax.set_xticks([2, 4, 8, 16, 32], ['2', '4', '8', '16', '32'])
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _name_of(label: str) -> str:
  return label.split(' ')[0]


def _k_of(label: str) -> int:
  for part in label.split(' '):
    if part.startswith('k='):
      return int(part[2:])
  return 2


# ------------------------------------------------------------------ reporting


def _fmt(x: Any, digits: int = 3) -> str:
  return '-' if x is None else f'{x:.{digits}f}'


def markdown(payload: dict[str, Any]) -> str:
  """The readable results: targets, pooled and per-problem tables."""
  lines = [
    '# Does rho detect non-smoothness? (LGI validation)',
    '',
    f'Command: `{payload["command"]}`  ',
    f'Hardware: {payload["hardware"]}  ',
    f'Date: {payload["date"]}; wall time {payload["seconds"]:.0f} s; '
    f'{payload["config"]["points"]} segments per problem and population.',
    '',
    'Labels (exact, from `sadam_optax.problems`): *chatter* = the step '
    'crosses a kink and the slope along it changes sign between its ends; '
    f'*crosses* = it crosses a kink; *smooth* = no kink within R = '
    f'{STEP_RADIUS:g} |s| '
    'of the segment; *overshoot* = the slope changes sign between the '
    'ends, kink or not (a smooth minimum along the line also counts). '
    'Spearman: rho against the subdifferential diameter '
    'over that capsule, projected on the step. Steps: `-lr sign(grad f)` '
    '(population *optimizer*) or normalised gradient steps of norm 0.1 '
    '(population *sampler*, `problems.sample_points`). '
    f'`step` probes `t = linspace(0, 1, k)` (both ends); `{ABLATION}` is '
    'the ablation with its former placement (one random point per slice '
    'of width 1/k).',
    '',
    f'## Targets (default estimator: {DEFAULT.label}; population '
    '*optimizer*, pooled over the problems of each dimension)',
    '',
    '| d | AUC chatter (>= 0.95) | mean rho, chatter (>= 0.3) | mean rho, '
    f'smooth (< 0.05; both populations) | {DEFAULT_STEP.label} r='
    f'{STEP_RADIUS:g}: AUC / rho chatter / rho smooth | '
    f'{DEFAULT_LITERAL.label}: AUC / rho chatter / rho smooth | former '
    f'default ({FORMER_DEFAULT.label}) AUC |',
    '|---|---|---|---|---|---|---|',
  ]
  for row in payload['targets']:
    lines.append(
      f'| {row["dim"]} | {_fmt(row["auc_chatter"])} '
      f'{_ok(row["auc_chatter"], TARGET_AUC)} | {_fmt(row["rho_chatter"])} '
      f'{_ok(row["rho_chatter"], TARGET_CHATTER_RHO)} | '
      f'{_fmt(row["rho_smooth"])} '
      f'{_ok(row["rho_smooth"], TARGET_SMOOTH_RHO, below=True)} | '
      f'{_fmt(row["step_auc_chatter"])} / '
      f'{_fmt(row["step_rho_chatter"])} / '
      f'{_fmt(row["step_rho_smooth"])} | '
      f'{_fmt(row["literal_auc_chatter"])} / '
      f'{_fmt(row["literal_rho_chatter"])} / '
      f'{_fmt(row["literal_rho_smooth"])} | '
      f'{_fmt(row["ablation_auc_chatter"])} |'
    )
  lines += [''] + reading(payload)
  header = (
    '| population | d | estimator | AUC chatter | AUC crosses | AUC '
    'overshoot | rho chatter | rho smooth | rho crosses w/o sign '
    'change | Spearman (diameter) | n (chatter / crosses / smooth) |'
  )
  rule = '|---' * 11 + '|'
  lines += ['', '## Pooled over the problems of each dimension', '', header, rule]
  lines += [_row(r, r['population'], r['dim']) for r in payload['pooled']]
  lines += ['', '## Per problem', '', header.replace('| d |', '| problem (d) |'), rule]
  lines += [_row(r, r['population'], f'{r["problem"]} ({r["dim"]})') for r in payload['records']]
  stem = payload['config']['out']
  lines += [
    '',
    f'Plots: `{stem}_auc.png` (AUC against k), `{stem}_figure1.png` (Figure 1 heat maps).',
    '',
  ]
  return '\n'.join(lines)


def reading(payload: dict[str, Any]) -> list[str]:
  """Plain sentences on the targets, written from the numbers."""
  rows = {(r['population'], r['dim'], r['estimator']): r for r in payload['pooled']}
  step, former = DEFAULT.label, FORMER_DEFAULT.label
  out = ['## Reading', '']
  for t in payload['targets']:
    d = t['dim']
    literal = t['literal_auc_chatter']
    text = (
      f'- d ~ {d}: the default ({step}) ranks chattering steps above the '
      f'others with AUC {_fmt(t["auc_chatter"])}; {DEFAULT_STEP.label} '
      f'{_fmt(t["step_auc_chatter"])}; the former default '
      f'({former}) {_fmt(t["ablation_auc_chatter"])}; the literal '
      f'estimator {_fmt(literal)}'
      + (' (at or below chance)' if literal is not None and literal <= 0.55 else '')
      + '.'
    )
    row = rows.get(('optimizer', d, step))
    if row is not None:
      text += (
        f' AUC for any overshoot (kink or not): '
        f'{_fmt(row["auc_overshoot"])}. Steps that cross a kink '
        'without a sign change get mean rho '
        f'{_fmt(row["rho_crosses_no_sign_change"])}.'
      )
    out.append(text)
  for r in payload['records']:
    if (r['problem'], r['population'], r['estimator']) == ('relu_net', 'optimizer', step):
      out.append(
        f'- relu_net (d = {r["dim"]}): its loss is piecewise quadratic, so '
        'a step can also overshoot a smooth minimum along its line; rho '
        f'flags those too (AUC overshoot {_fmt(r["auc_overshoot"])} '
        f'against AUC chatter {_fmt(r["auc_chatter"])}), and its smooth '
        f'segments get mean rho {_fmt(r["rho_smooth"])} (curvature along '
        'the step).'
      )
  out += [
    '',
    'Probe placement: with one random point per slice of width '
    '1/k (the former placement), a sign change in the first or last '
    "slice is seen only when that slice's probe falls beyond it, and "
    'rho = Var/(mean^2 + Var) then counts one probe against k - 1, so '
    'a short overshoot weighs little. The two-end reading (trajectory, '
    'here with explicit ends) has rho > 1/2 exactly when the slopes at '
    'the ends have opposite signs; probing both ends keeps that while '
    'the interior probes and the noise stay.',
    '',
  ]
  return out


def _ok(x: float | None, target: float, *, below: bool = False) -> str:
  if x is None:
    return ''
  return '(pass)' if (x < target if below else x >= target) else '(FAIL)'


def _row(r: dict[str, Any], population: str, where: Any) -> str:
  return (
    f'| {population} | {where} | {r["estimator"]} | '
    f'{_fmt(r["auc_chatter"])} | {_fmt(r["auc_crosses"])} | '
    f'{_fmt(r["auc_overshoot"])} | '
    f'{_fmt(r["rho_chatter"])} | {_fmt(r["rho_smooth"])} | '
    f'{_fmt(r["rho_crosses_no_sign_change"])} | '
    f'{_fmt(r["spearman_diameter"], 2)} | {r["n_chatter"]} / '
    f'{r["n_crosses"]} / {r["n_smooth"]} |'
  )


def targets(pooled_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The issue's targets per dimension class, from the pooled scores."""

  def find(population, d, label):
    for r in pooled_rows:
      if (r['population'], r['dim'], r['estimator']) == (population, d, label):
        return r
    return None

  def level(label, d):
    """(the optimizer population's row, mean rho smooth over both)."""
    rows = [
      r
      for r in (find('optimizer', d, label), find('sampler', d, label))
      if r is not None and r['n_smooth']
    ]
    smooth = (
      (sum(r['rho_smooth'] * r['n_smooth'] for r in rows) / sum(r['n_smooth'] for r in rows))
      if rows
      else None
    )
    return find('optimizer', d, label), smooth

  out = []
  for d in sorted({r['dim'] for r in pooled_rows}):
    step, rho_smooth = level(DEFAULT.label, d)
    ref, ref_smooth = level(DEFAULT_STEP.label, d)
    literal, lit_rho_smooth = level(DEFAULT_LITERAL.label, d)
    former = find('optimizer', d, FORMER_DEFAULT.label)
    out.append(
      dict(
        dim=d,
        auc_chatter=step and step['auc_chatter'],
        rho_chatter=step and step['rho_chatter'],
        rho_smooth=rho_smooth,
        step_auc_chatter=ref and ref['auc_chatter'],
        step_rho_chatter=ref and ref['rho_chatter'],
        step_rho_smooth=ref_smooth,
        literal_auc_chatter=literal and literal['auc_chatter'],
        literal_rho_chatter=literal and literal['rho_chatter'],
        literal_rho_smooth=lit_rho_smooth,
        ablation_auc_chatter=former and former['auc_chatter'],
      )
    )
  return out


# ------------------------------------------------------------------------ run


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--dims', type=int, nargs='+', default=[2, 100, 10_000])
  p.add_argument('--ks', type=int, nargs='+', default=[2, 4, 8, 16, 32])
  p.add_argument('--literal-ks', type=int, nargs='+', help="probes of 'literal' (default: --ks)")
  p.add_argument(
    '--radii',
    type=float,
    nargs='*',
    default=[0.001, 0.1],
    help="other probe radii of 'step' at its default k (ablation)",
  )
  p.add_argument('--problems', nargs='+', default=['figure1', 'abs_sum', 'max_affine', 'relu_net'])
  p.add_argument(
    '--populations', nargs='+', default=['optimizer', 'sampler'], choices=['optimizer', 'sampler']
  )
  p.add_argument('--points', type=int, default=1000, help='segments per problem and population')
  p.add_argument('--no-ablation', action='store_true', help=f'skip the {ABLATION} ablation')
  p.add_argument('--map-resolution', type=int, default=161)
  p.add_argument('--map-draws', type=int, default=4)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument(
    '--smoke',
    action='store_true',
    help='tiny run for the tests: Figure 1 (d 2) and abs_sum '
    "(d 100), k 4 (8 for 'literal'), 200 segments, a coarse "
    'Figure 1 map',
  )
  p.add_argument('--out', default='lgi_validation')
  p.add_argument('--out-dir', default=str(common.RESULTS_DIR))
  return p


def _apply_smoke(args: argparse.Namespace) -> argparse.Namespace:
  if args.smoke:
    args.dims, args.ks, args.radii = [2, 100], [DEFAULT_STEP.num_probes], []
    args.literal_ks = [DEFAULT_LITERAL.num_probes]
    args.problems = ['figure1', 'abs_sum']
    args.populations, args.points = ['optimizer'], 200
    args.map_resolution, args.map_draws = 21, 1
  return args


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Runs the study and writes JSON, markdown and plots.

  Args:
    args: the parsed command line (:func:`parser`).

  Returns:
    The JSON payload.
  """
  args = _apply_smoke(args)
  start = time.perf_counter()
  out_dir = Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  cases = make_cases(args.dims, seed=args.seed, names=args.problems)
  grid = estimator_grid(
    args.ks, literal_ks=args.literal_ks or args.ks, radii=args.radii, ablation=not args.no_ablation
  )
  records, rhos, truths, skipped = [], {}, {}, []
  key = jax.random.key(args.seed)
  total = len(cases) * len(args.populations) * len(grid)
  with tqdm.tqdm(total=total, desc='lgi validation', file=sys.stdout, dynamic_ncols=True) as bar:
    for population in args.populations:
      for case in cases:
        key, k_pts, k_rho = jax.random.split(key, 3)
        make = optimizer_segments if population == 'optimizer' else sampler_segments
        try:
          params, steps = make(case, k_pts, args.points)
        except RuntimeError as err:  # sample_points: kinks too dense.
          skipped.append(
            dict(population=population, problem=case.name, dim=case.dim, reason=str(err))
          )
          bar.update(len(grid))
          continue
        truth = {k: np.asarray(v) for k, v in ground_truth(case.problem, params, steps).items()}
        truths[(population, case.name, case.dim)] = truth
        for est in grid:
          bar.set_postfix_str(f'{population} {case.name} d={case.dim} {est.label}')
          rho = np.asarray(measure(case.problem, params, steps, k_rho, estimator=est))
          rhos[(population, case.name, case.dim, est.label)] = rho
          records.append(
            dict(
              population=population,
              problem=case.name,
              dim=case.dim,
              estimator=est.label,
              **score(rho, truth),
            )
          )
          bar.update(1)
  pooled_rows = [
    row
    for population in args.populations
    for row in pooled(records, rhos, truths, population=population)
  ]
  map_estimators = [DEFAULT, DEFAULT_STEP, DEFAULT_LITERAL, Estimator('trajectory', 2)]
  if not args.no_ablation:
    map_estimators.append(FORMER_DEFAULT)
  fig_lr = 0.2
  maps = figure1_maps(
    map_estimators, lr=fig_lr, resolution=args.map_resolution, draws=args.map_draws, seed=args.seed
  )
  labels = [e.label for e in map_estimators]
  plot_figure1(maps, labels, out_dir / f'{args.out}_figure1.png', lr=fig_lr)
  plot_auc(pooled_rows, out_dir / f'{args.out}_auc.png')
  figure1_summary = {
    label: dict(
      mean_rho_chatter=float(maps[label][maps['chatter']].mean()),
      mean_rho_elsewhere=float(maps[label][~maps['chatter']].mean()),
    )
    for label in labels
  }
  payload = dict(
    config=dict(
      dims=args.dims,
      ks=args.ks,
      literal_ks=args.literal_ks,
      radii=args.radii,
      problems=args.problems,
      populations=args.populations,
      points=args.points,
      seed=args.seed,
      out=args.out,
      cases=[dict(name=c.name, dim=c.dim, lr=c.lr) for c in cases],
      figure1=dict(lr=fig_lr, resolution=args.map_resolution, draws=args.map_draws),
      step_region_radius=f'{STEP_RADIUS} |s|',
    ),
    targets=targets(pooled_rows),
    pooled=pooled_rows,
    records=records,
    skipped=skipped,
    figure1=figure1_summary,
    seconds=time.perf_counter() - start,
  )
  full = dict(
    command=common.command_line(),
    hardware=common.hardware(),
    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    **payload,
  )
  common.write_results(args.out, payload, markdown(full), out_dir=out_dir)
  return full


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return run(parser().parse_args(argv))


if __name__ == '__main__':
  main()
