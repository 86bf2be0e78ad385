"""Chattering at a kink: does S-Adam settle where Adam oscillates?

Constant learning rates, the same starts for every optimizer, on two problems
with a non-smooth minimiser (:mod:`sadam_optax.problems`):

* ``figure1``: the paper's ``|x-1| + |y-1| + (x^2 + y^2)/2``, minimiser
  (1, 1); starts ``(1, 1) + 2 N(0, I)``;
* ``l1_toy``: ``||w||_1 + (mu/2) ||w||^2`` in d = 100 (mu = 0.01),
  minimiser 0; starts ``N(0, I)`` (Kumar 2024: subgradient methods oscillate
  in a band around the sparse minimiser instead of reaching it).

Optimizers: SGD, Adam, AdamW, RMSProp, and S-Adam with each estimator
(``'step'``, ``'literal'``, ``'trajectory'``) under the paper's brake
``rule='exp'`` (``exp(-lam rho)``) and under ``rule='compound'``
(``log d_t = clip(log d_{t-1} + recovery - lam rho_t, log min_damping, 0)``);
also ``step-slices``, the ablation of :mod:`experiments.lgi_validation`
(the ``'step'`` probe as the core had it before the validation: one random
point per slice of the step instead of both ends, k = 4, r = 0.1), swapped in
while tracing. After the
paper's S-Adam and the recommended one, Adam runs at their effective
learning rate (lr times the mean damping of the run): the control that tells
a brake from a smaller learning rate.

Measured over the last 10% of the steps, per start: the distance to the
minimiser at the last step (and its median over the window), the oscillation
band (range of the loss, range of ``||w||``), the rate of sign flips of the
update (share of coordinates whose update changed sign since the previous
step) and the mean damping. Reported as mean +- std over the starts.

``--sweep`` searches the brake's settings instead (lam, rule, recovery,
min_damping, num_probes, probe_radius, estimator): for each, the ratio of
Adam's final distance to S-Adam's and the ratio of the bands, on both
problems at both learning rates; the settings that reach the target (10x
closer, narrower band, everywhere) are listed. The numeric settings are
vmapped, so one compilation serves a whole grid.

Example::

  python -m experiments.chattering            # comparison (minutes)
  python -m experiments.chattering --sweep    # the settings search
  python -m experiments.chattering --smoke    # seconds, for the tests

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

  Kumar, `GD doesn't make the cut: Three ways that non-differentiability
  affects neural network training <https://arxiv.org/abs/2401.08426>`_, 2024.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import sadam_optax
from sadam_optax import lgi
from sadam_optax import problems
from experiments import common
from experiments import lgi_validation

ABLATION = lgi_validation.ABLATION  # 'step', former probe placement.
# The former default probe: one random point per slice, k = 4, r = 0.1.
FORMER_PROBE = dict(estimator=ABLATION, num_probes=4, probe_radius=0.1)
TARGET_RATIO = 10.0
WINDOW = 0.1  # Share of the steps over which the end state is measured.


# ------------------------------------------------------------------- problems


class Problem(NamedTuple):
  """A problem, its minimiser and the starts shared by every optimizer."""

  name: str
  problem: Any
  minimiser: jax.Array
  starts: jax.Array


def make_problem(name: str, *, dim: int = 100, num_starts: int = 8, seed: int = 0) -> Problem:
  """``'figure1'`` or ``'l1_toy'`` (module doc) with its random starts.

  Args:
    name: the problem.
    dim: dimension of ``l1_toy``.
    num_starts: number of starts.
    seed: seed of the starts.

  Returns:
    A :class:`Problem`.
  """
  key = jax.random.key(seed)
  if name == 'figure1':
    problem = problems.figure1()
    x_star = problem.minimiser()
    starts = x_star + 2.0 * jax.random.normal(key, (num_starts, 2))
  elif name == 'l1_toy':
    problem = problems.l1_toy(dim, penalty=1.0, ridge=0.01)
    x_star = problem.minimiser()
    starts = jax.random.normal(key, (num_starts, dim))
  else:
    raise ValueError(f'Unknown problem {name!r}: figure1 or l1_toy.')
  return Problem(name, problem, x_star, starts)


# ----------------------------------------------------------------- optimizers


@dataclasses.dataclass(frozen=True)
class Spec:
  """An optimizer of the study.

  Attributes:
    kind: ``'sgd'``, ``'adam'``, ``'adamw'``, ``'rmsprop'`` or ``'sadam'``.
    estimator: S-Adam's estimator.
    rule: S-Adam's brake rule, ``'exp'`` or ``'compound'``.
    lam: brake strength.
    recovery: ``'compound'``: log-damping regained per step.
    min_damping: ``'compound'``: the floor of the damping.
    num_probes: probes per step (None: the estimator's default).
    probe_radius: probe radius (None: the estimator's default).
  """

  kind: str
  estimator: str = 'step'
  rule: str = 'exp'
  lam: float = 2.0
  recovery: float = 0.1
  min_damping: float = 1e-3
  num_probes: int | None = None
  probe_radius: float | None = None

  @property
  def label(self) -> str:
    if self.kind != 'sadam':
      return self.kind
    text = f'sadam {self.estimator} {self.rule} lam={self.lam:g}'
    if self.rule == 'compound':
      text += f' rec={self.recovery:g} min={self.min_damping:g}'
    if self.num_probes is not None:
      text += f' k={self.num_probes}'
    if self.probe_radius is not None and self.estimator != 'trajectory':
      text += f' r={self.probe_radius:g}'
    return text


# The settings found by ``--sweep`` (see the results): the default of this
# study's compound rule.
RECOMMENDED = dict(rule='compound', lam=2.0, recovery=0.1, min_damping=0.03)


def comparison_specs() -> list[Spec]:
  """The optimizers of the comparison (module doc)."""
  specs = [Spec('sgd'), Spec('adam'), Spec('adamw'), Spec('rmsprop')]
  for estimator in ('step', 'literal', 'trajectory'):
    specs.append(Spec('sadam', estimator=estimator))  # The paper's rule.
    specs.append(Spec('sadam', estimator=estimator, **RECOMMENDED))
  # The 'step' probe as the core had it before the validation.
  specs += [Spec('sadam', **FORMER_PROBE), Spec('sadam', **FORMER_PROBE, **RECOMMENDED)]
  # How far can the paper's rule go with a stronger brake?
  specs += [Spec('sadam', lam=lam) for lam in (5.0, 10.0)]
  # The compound rule with the core's default floor (min_damping 1e-3).
  specs.append(Spec('sadam', rule='compound'))
  return specs


def brake_of(spec: Spec, lam: Any, recovery: Any, min_damping: Any) -> sadam_optax.Brake:
  """The brake, its numbers possibly traced (vmapped settings).

  ``damping_scale`` validates Python numbers; the sweep checks its grid with
  it once, then builds the :class:`sadam_optax.Brake` with traced values.
  """
  if all(isinstance(v, (int, float)) for v in (lam, recovery, min_damping)):
    return sadam_optax.damping_scale(
      lam, rule=spec.rule, recovery=recovery, min_damping=min_damping
    )
  return sadam_optax.Brake(lam=lam, rule=spec.rule, recovery=recovery, min_damping=min_damping)


def build(
  spec: Spec,
  lr: Any,
  *,
  lam: Any = None,
  recovery: Any = None,
  min_damping: Any = None,
  probe_radius: Any = None,
  seed: Any = 0,
) -> optax.GradientTransformationExtraArgs:
  """The optimizer of ``spec`` at learning rate ``lr``.

  S-Adam is ``singularity_aware(scale_by_adam(), ...)`` followed by the
  learning rate, which is ``sadam_optax.sadam`` with the brake's
  ``recovery`` and ``min_damping`` exposed. Numeric arguments may be traced
  and override those of ``spec``.

  Args:
    spec: the optimizer.
    lr: constant learning rate.
    lam: overrides ``spec.lam``.
    recovery: overrides ``spec.recovery``.
    min_damping: overrides ``spec.min_damping``.
    probe_radius: overrides ``spec.probe_radius``.
    seed: seed of the probes.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  if spec.kind == 'sgd':
    tx = optax.sgd(lr)
  elif spec.kind == 'adam':
    tx = optax.adam(lr)
  elif spec.kind == 'adamw':
    tx = optax.adamw(lr)
  elif spec.kind == 'rmsprop':
    tx = optax.rmsprop(lr)
  elif spec.kind == 'sadam':
    pick = lambda v, default: default if v is None else v
    # The ablation is the core's 'step' probe at its former placement.
    ablation = spec.estimator == ABLATION
    probe = sadam_optax.lgi_probe(
      estimator='step' if ablation else spec.estimator,
      num_probes=spec.num_probes,
      probe_radius=pick(probe_radius, spec.probe_radius),
      probe_placement='slices' if ablation else 'ends',
    )
    brake = brake_of(
      spec, pick(lam, spec.lam), pick(recovery, spec.recovery), pick(min_damping, spec.min_damping)
    )
    tx = optax.chain(
      sadam_optax.singularity_aware(
        optax.scale_by_adam(), probe=probe, brake=brake, step_size=lr, seed=seed
      ),
      optax.scale_by_learning_rate(lr),
    )
  else:
    raise ValueError(f'Unknown optimizer kind {spec.kind!r}.')
  return optax.with_extra_args_support(tx)


# ----------------------------------------------------------------- simulation


def _state_scalar(state: Any, name: str) -> jax.Array:
  value = optax.tree.get(state, name)
  return (
    jnp.float32(1.0 if name == 'damping' else 0.0) if value is None else value.astype(jnp.float32)
  )


def trajectory(
  spec: Spec, problem: Problem, start: jax.Array, lr: Any, *, steps: int, **overrides: Any
) -> dict[str, jax.Array]:
  """One run; per-step scalars (and the path itself in 2-D).

  Args:
    spec: the optimizer.
    problem: the problem.
    start: ``(d,)`` initial parameters.
    lr: learning rate (may be traced).
    steps: number of steps.
    **overrides: traced settings passed to :func:`build`.

  Returns:
    ``(steps,)`` arrays ``distance``, ``loss``, ``norm``, ``flips`` (share
    of coordinates whose update changed sign), ``damping``, ``rho``; and
    ``path`` ``(steps, 2)`` for 2-D problems.
  """
  value_fn = problem.problem.value
  opt = build(spec, lr, **overrides)

  def body(carry, _):
    w, state, previous = carry
    grads = jax.grad(value_fn)(w)
    updates, state = opt.update(grads, state, w, value_fn=value_fn)
    w = optax.apply_updates(w, updates)
    out = dict(
      distance=jnp.linalg.norm(w - problem.minimiser),
      loss=value_fn(w),
      norm=jnp.linalg.norm(w),
      flips=jnp.mean((jnp.sign(updates) * jnp.sign(previous) < 0).astype(jnp.float32)),
      damping=_state_scalar(state, 'damping'),
      rho=_state_scalar(state, 'rho'),
    )
    if w.shape[0] == 2:
      out['path'] = w
    return (w, state, updates), out

  init = (start, opt.init(start), jnp.zeros_like(start))
  return jax.lax.scan(body, init, None, length=steps)[1]


def end_metrics(run: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The end state of a run (module doc), from its per-step scalars."""
  w = max(1, int(round(WINDOW * run['loss'].shape[-1])))
  tail = {k: v[..., -w:] for k, v in run.items() if k != 'path'}
  steps = run['loss'].shape[-1]
  return dict(
    final_distance=run['distance'][..., -1],
    early_distance=run['distance'][..., steps // 10],
    run_damping=jnp.mean(run['damping'], axis=-1),
    median_distance=jnp.median(tail['distance'], axis=-1),
    loss_band=jnp.ptp(tail['loss'], axis=-1),
    norm_band=jnp.ptp(tail['norm'], axis=-1),
    flip_rate=jnp.mean(tail['flips'], axis=-1),
    mean_damping=jnp.mean(tail['damping'], axis=-1),
    mean_rho=jnp.mean(tail['rho'], axis=-1),
  )


@functools.partial(jax.jit, static_argnames=('spec', 'name', 'steps', 'keep'))
def _simulate(spec, problem_tuple, lrs, settings, *, name, steps, keep):
  """vmap over settings (leading axis of ``lrs`` / ``settings``) and starts."""
  problem = Problem(name, *problem_tuple)

  def one(lr, setting, start):
    run = trajectory(spec, problem, start, lr, steps=steps, **setting)
    metrics = end_metrics(run)
    if keep:
      metrics['curve_distance'] = run['distance']
      if 'path' in run:
        metrics['path'] = run['path']
    return metrics

  over_starts = jax.vmap(one, in_axes=(None, None, 0))
  return jax.vmap(over_starts, in_axes=(0, 0, None))(lrs, settings, problem.starts)


def simulate(
  spec: Spec,
  problem: Problem,
  lrs: Sequence[float],
  *,
  steps: int,
  settings: dict[str, Sequence[float]] | None = None,
  keep: bool = False,
) -> dict[str, np.ndarray]:
  """Runs ``spec`` from every start at each ``(lrs[i], settings[.][i])``.

  Args:
    spec: the optimizer.
    problem: the problem and its starts.
    lrs: learning rates, one per grid point.
    steps: steps per run.
    settings: traced overrides of :func:`build` (lam, recovery,
      min_damping, probe_radius), one value per grid point.
    keep: also return the distance curves (and the 2-D paths).

  Returns:
    :func:`end_metrics` arrays of shape ``(grid points, starts)`` (curves:
    ``(grid points, starts, steps)``).
  """
  settings = {k: jnp.asarray(v, jnp.float32) for k, v in (settings or {}).items()}
  out = _simulate(
    spec,
    tuple(problem[1:]),
    jnp.asarray(lrs, jnp.float32),
    settings,
    name=problem.name,
    steps=steps,
    keep=keep,
  )
  return {k: np.asarray(v) for k, v in out.items()}


# ----------------------------------------------------------------- comparison


def summarize(metrics: dict[str, np.ndarray], i: int) -> dict[str, Any]:
  """Mean, std and per-start values of grid point ``i``."""
  out = {}
  for k, v in metrics.items():
    if k in ('curve_distance', 'path'):
      continue
    values = np.asarray(v[i], np.float64)
    out[k] = dict(
      mean=float(values.mean()),
      std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
      values=values.tolist(),
    )
  return out


CONTROL = 'adam @ eff-lr of '


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Each S-Adam against Adam at the same problem and learning rate, and
  against Adam at its effective learning rate where that control ran."""
  by = {(r['problem'], r['lr'], r['optimizer']): r for r in rows}
  out = []
  for r in rows:
    base = by.get((r['problem'], r['lr'], 'adam'))
    if base is None or not r['optimizer'].startswith('sadam'):
      continue
    entry = dict(
      problem=r['problem'],
      lr=r['lr'],
      optimizer=r['optimizer'],
      **ratios(base['metrics'], r['metrics']),
    )
    control = by.get((r['problem'], r['lr'], CONTROL + r['optimizer']))
    if control is not None:
      c, m = control['metrics'], r['metrics']
      entry['control'] = dict(
        lr=control['control_lr'],
        closer=ratios(c, m)['closer'],
        early_closer=c['early_distance']['mean'] / max(m['early_distance']['mean'], 1e-12),
      )
    out.append(entry)
  return out


def ratios(adam: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
  """How much closer and calmer ``other`` ends than Adam (means over starts)."""
  # Below this, a band or a distance is float32 rounding: ratios are capped.
  floor = 1e-12
  ratio = lambda a, b: a / max(b, floor)
  closer = ratio(adam['final_distance']['mean'], other['final_distance']['mean'])
  loss_band = ratio(adam['loss_band']['mean'], other['loss_band']['mean'])
  norm_band = ratio(adam['norm_band']['mean'], other['norm_band']['mean'])
  return dict(
    closer=closer,
    loss_band_narrower=loss_band,
    norm_band_narrower=norm_band,
    target=bool(closer >= TARGET_RATIO and loss_band > 1 and norm_band > 1),
  )


def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
  """The comparison of the module doc; writes JSON, markdown and plots."""
  specs = (
    comparison_specs()
    if not args.smoke
    else [Spec('adam'), Spec('sadam'), Spec('sadam', **RECOMMENDED)]
  )
  controlled = {Spec('sadam'), Spec('sadam', **RECOMMENDED)}
  rows, curves = [], {}
  total = len(args.problems) * len(specs)
  with tqdm.tqdm(total=total, desc='chattering', file=sys.stdout, dynamic_ncols=True) as bar:
    for name in args.problems:
      problem = make_problem(name, dim=args.dim, num_starts=args.starts, seed=args.seed)
      steps = args.steps[name]
      for spec in specs:
        bar.set_postfix_str(f'{name} {spec.label}')
        metrics = simulate(spec, problem, args.lrs, steps=steps, keep=True)
        for i, lr in enumerate(args.lrs):
          rows.append(
            dict(
              problem=name, lr=lr, optimizer=spec.label, steps=steps, metrics=summarize(metrics, i)
            )
          )
          curves[(name, lr, spec.label)] = metrics
        if spec in controlled:
          # The control the brief asks for: Adam at S-Adam's effective lr
          # (lr times its mean damping over the whole run, mean over starts).
          lrs = [lr * float(np.mean(metrics['run_damping'][i])) for i, lr in enumerate(args.lrs)]
          control = simulate(Spec('adam'), problem, lrs, steps=steps)
          for i, lr in enumerate(args.lrs):
            rows.append(
              dict(
                problem=name,
                lr=lr,
                optimizer=CONTROL + spec.label,
                steps=steps,
                control_lr=lrs[i],
                metrics=summarize(control, i),
              )
            )
        bar.update(1)
  out_dir = Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  plot_distances(curves, args, out_dir / f'{args.out}_distance.png')
  if 'figure1' in args.problems:
    plot_paths(curves, args, out_dir / f'{args.out}_figure1_paths.png')
  payload = dict(config=_config(args), recommended=RECOMMENDED, rows=rows, verdicts=verdicts(rows))
  return _write(args, payload, comparison_markdown)


def _config(args: argparse.Namespace) -> dict[str, Any]:
  return dict(
    problems=args.problems,
    lrs=args.lrs,
    steps=args.steps,
    starts=args.starts,
    dim=args.dim,
    seed=args.seed,
    window=WINDOW,
    out=args.out,
  )


def _write(args: argparse.Namespace, payload: dict[str, Any], render: Any) -> dict[str, Any]:
  full = dict(
    command=common.command_line(),
    hardware=common.hardware(),
    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    **payload,
  )
  common.write_results(args.out, payload, render(full), out_dir=args.out_dir)
  return full


# ---------------------------------------------------------------------- sweep


def sweep_grid(smoke: bool = False) -> list[tuple[Spec, dict[str, list]]]:
  """(static spec, vmapped settings) pairs of the search.

  Static: rule, estimator, num_probes (one compilation each). Vmapped: lam,
  recovery, min_damping, probe_radius.
  """
  if smoke:
    lams, recs, floors = [2.0], [0.1], [1e-3, 0.03]
    radii, ks = [lgi.DEFAULT_PROBE_RADIUS['step']], [lgi.DEFAULT_NUM_PROBES['step']]
  else:
    lams, recs = [1.0, 2.0, 5.0], [0.03, 0.1, 0.3]
    floors, radii, ks = [1e-3, 1e-2, 0.03, 0.1], [0.01, 0.1, 0.3], [2, 4, 16]
  out = []
  for estimator in ('step', 'trajectory', ABLATION):
    for k in {'step': ks, 'trajectory': [None], ABLATION: [4]}[estimator]:
      rs = [0.1] if estimator == 'trajectory' else radii
      exp_lams = sorted({*lams, 10.0, 20.0}) if not smoke else lams
      exp = list(itertools.product(exp_lams, [0.1], [1e-3], rs))
      compound = list(itertools.product(lams, recs, floors, rs))
      for rule, grid in (('exp', exp), ('compound', compound)):
        for lam, rec, floor, _ in grid:  # Validates every setting once.
          sadam_optax.damping_scale(lam, rule=rule, recovery=rec, min_damping=floor)
        columns = list(zip(*grid))
        out.append(
          (
            Spec('sadam', estimator=estimator, rule=rule, num_probes=k),
            dict(
              lam=list(columns[0]),
              recovery=list(columns[1]),
              min_damping=list(columns[2]),
              probe_radius=list(columns[3]),
            ),
          )
        )
  return out


def run_sweep(args: argparse.Namespace) -> dict[str, Any]:
  """The settings search of the module doc; writes JSON and markdown."""
  grid = sweep_grid(args.smoke)
  results: dict[tuple, dict] = {}
  adam: dict[tuple, dict] = {}
  total = len(args.problems) * (len(grid) + 1)
  with tqdm.tqdm(total=total, desc='sweep', file=sys.stdout, dynamic_ncols=True) as bar:
    for name in args.problems:
      problem = make_problem(name, dim=args.dim, num_starts=args.starts, seed=args.seed)
      steps = args.steps[name]
      base = simulate(Spec('adam'), problem, args.lrs, steps=steps)
      for i, lr in enumerate(args.lrs):
        adam[(name, lr)] = summarize(base, i)
      bar.update(1)
      for spec, settings in grid:
        bar.set_postfix_str(f'{name} {spec.estimator} {spec.rule} k={spec.num_probes}')
        n = len(settings['lam'])
        lrs = [lr for lr in args.lrs for _ in range(n)]
        tiled = {k: v * len(args.lrs) for k, v in settings.items()}
        metrics = simulate(spec, problem, lrs, steps=steps, settings=tiled)
        for j in range(len(lrs)):
          setting = {k: v[j] for k, v in tiled.items()}
          label = dataclasses.replace(spec, **{k: v for k, v in setting.items()}).label
          entry = results.setdefault(
            label,
            dict(
              estimator=spec.estimator,
              rule=spec.rule,
              num_probes=spec.num_probes,
              **setting,
              cases={},
            ),
          )
          m = summarize(metrics, j)
          entry['cases'][f'{name} lr={lrs[j]:g}'] = dict(
            final_distance=m['final_distance']['mean'],
            loss_band=m['loss_band']['mean'],
            norm_band=m['norm_band']['mean'],
            mean_damping=m['mean_damping']['mean'],
            **ratios(adam[(name, lrs[j])], m),
          )
        bar.update(1)
  rows = []
  for label, entry in results.items():
    cases = entry['cases'].values()
    entry.update(
      label=label,
      all_targets=all(c['target'] for c in cases),
      worst_closer=min(c['closer'] for c in cases),
      worst_band=min(min(c['loss_band_narrower'], c['norm_band_narrower']) for c in cases),
    )
    rows.append(entry)
  rows.sort(key=lambda e: (not e['all_targets'], -e['worst_closer']))
  payload = dict(
    config=_config(args), adam={f'{k[0]} lr={k[1]:g}': v for k, v in adam.items()}, settings=rows
  )
  return _write(args, payload, sweep_markdown)


# ---------------------------------------------------------------------- plots


def plot_distances(
  curves: dict[tuple, dict[str, np.ndarray]], args: argparse.Namespace, path: Path
) -> None:
  """Distance to the minimiser against the step (median over starts)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  shown = (
    'sgd',
    'adam',
    'rmsprop',
    Spec('sadam').label,
    Spec('sadam', **RECOMMENDED).label,
    Spec('sadam', estimator='trajectory', **RECOMMENDED).label,
  )
  cells = [(p, lr) for p in args.problems for lr in args.lrs]
  fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 3.8), squeeze=False)
  for ax, (name, lr) in zip(axes[0], cells):
    for label in shown:
      m = curves.get((name, lr, label))
      if m is None:
        continue
      i = list(args.lrs).index(lr)
      ax.plot(np.median(m['curve_distance'][i], axis=0), lw=0.8, label=label)
    ax.set(
      yscale='log', xlabel='step', ylabel='distance to the minimiser', title=f'{name}, lr = {lr:g}'
    )
    ax.title.set_fontsize(9)
  axes[0, 0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_paths(
  curves: dict[tuple, dict[str, np.ndarray]], args: argparse.Namespace, path: Path
) -> None:
  """Figure 1: where Adam and S-Adam spend the last steps, every start.

  Offsets from the minimiser on symmetric-log axes, so that bands that
  differ by orders of magnitude show side by side.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  shown = (
    ('adam', 'o', 6),
    (Spec('sadam').label, 's', 5),
    (Spec('sadam', **RECOMMENDED).label, '^', 12),
  )
  fig, axes = plt.subplots(1, len(args.lrs), figsize=(5.2 * len(args.lrs), 4.6), squeeze=False)
  for ax, lr in zip(axes[0], args.lrs):
    i = list(args.lrs).index(lr)
    for label, marker, size in shown:
      m = curves.get(('figure1', lr, label))
      if m is None:
        continue
      xy = m['path'][i]  # (starts, steps, 2)
      tail = xy[:, -max(1, int(WINDOW * xy.shape[1])) :].reshape(-1, 2) - 1.0
      ax.scatter(tail[:, 0], tail[:, 1], s=size, marker=marker, alpha=0.5, label=label)
    ax.set_xscale('symlog', linthresh=1e-6)
    ax.set_yscale('symlog', linthresh=1e-6)
    ax.set(
      xlabel='x - 1',
      ylabel='y - 1',
      title=f'Figure 1, lr = {lr:g}: last {WINDOW:.0%} of the steps, {xy.shape[0]} starts',
    )
    ax.title.set_fontsize(9)
    ax.tick_params(labelsize=6)
    ax.axvline(0.0, color='gray', lw=0.4)
    ax.axhline(0.0, color='gray', lw=0.4)
  axes[0, 0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ------------------------------------------------------------------- markdown


def _x(ratio: float) -> str:
  return '> 1e6' if ratio > 1e6 else f'{ratio:.3g}'


def _pm(m: dict[str, Any]) -> str:
  return f'{m["mean"]:.2e} +- {m["std"]:.1e}'


def _header(payload: dict[str, Any], title: str) -> list[str]:
  cfg = payload['config']
  steps = ', '.join(f'{k} {v}' for k, v in cfg['steps'].items())
  return [
    f'# {title}',
    '',
    f'Command: `{payload["command"]}`  ',
    f'Hardware: {payload["hardware"]}  ',
    f'Date: {payload["date"]}  ',
    f'Problems: {", ".join(cfg["problems"])} (l1_toy: d = {cfg["dim"]}, '
    f'penalty 1, ridge 0.01); constant learning rates {cfg["lrs"]}; '
    f'steps: {steps}; {cfg["starts"]} starts (mean +- std over them); '
    f'end state over the last {cfg["window"]:.0%} of the steps. S-Adam '
    "probes with the core's defaults unless its label says otherwise "
    f"('step': k = {lgi.DEFAULT_NUM_PROBES['step']}, r = "
    f"{lgi.DEFAULT_PROBE_RADIUS['step']:g}; 'literal': k = "
    f'{lgi.DEFAULT_NUM_PROBES["literal"]}, sigma = '
    f'{lgi.DEFAULT_PROBE_RADIUS["literal"]:g}).',
    '',
  ]


def comparison_markdown(payload: dict[str, Any]) -> str:
  """The readable comparison: verdicts, then the full table."""
  lines = _header(payload, 'Chattering at a kink: S-Adam against Adam')
  lines += [
    '## Against Adam at the same learning rate (target: >= 10x closer '
    'at the end, narrower loss and norm bands)',
    '',
    '| problem | lr | S-Adam | closer (x) | loss band narrower (x) | '
    'norm band narrower (x) | target | Adam at the effective lr: its '
    'lr; S-Adam closer at the end (x); closer at 10% of the run (x) |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for v in payload['verdicts']:
    c = v.get('control')
    control = f'{c["lr"]:.3g}; {_x(c["closer"])}; {_x(c["early_closer"])}' if c else '-'
    lines.append(
      f'| {v["problem"]} | {v["lr"]:g} | {v["optimizer"]} | '
      f'{_x(v["closer"])} | {_x(v["loss_band_narrower"])} | '
      f'{_x(v["norm_band_narrower"])} | '
      f'{"yes" if v["target"] else "no"} | {control} |'
    )
  lines += [
    '',
    'Read the last column before crediting the brake: Adam at '
    "S-Adam's effective learning rate (lr times S-Adam's mean damping "
    'over the run, a constant) is the control that a smaller step size '
    'passes too. Where S-Adam is not clearly closer than it at the '
    'end, '
    'its gain at the end is that of a smaller learning rate, found '
    'automatically; the column at 10% of the run shows whether it also '
    'gets there sooner. Note on Figure 1: its minimiser sits at an '
    'edge '
    'of the subdifferential (the slope of |x-1| + x^2/2 tends to 0 '
    'from the left), so plain gradient descent converges there; it is '
    "Adam's normalised step that chatters.",
    '',
    '## All optimizers',
    '',
    '| problem | lr | optimizer | final distance | median distance '
    '(window) | distance at 10% of the run | loss band | norm band | '
    'sign-flip rate | mean damping (window) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in payload['rows']:
    m = r['metrics']
    damping = f'{m["mean_damping"]["mean"]:.3g}' if r['optimizer'].startswith('sadam') else '-'
    lines.append(
      f'| {r["problem"]} | {r["lr"]:g} | {r["optimizer"]} | '
      f'{_pm(m["final_distance"])} | {_pm(m["median_distance"])} | '
      f'{_pm(m["early_distance"])} | '
      f'{_pm(m["loss_band"])} | {_pm(m["norm_band"])} | '
      f'{m["flip_rate"]["mean"]:.3f} | {damping} |'
    )
  stem = payload['config']['out']
  lines += [
    '',
    f'Plots: `{stem}_distance.png` (distance against the step, '
    f'median over starts), `{stem}_figure1_paths.png` (where the '
    'last steps land on Figure 1, every start).',
    '',
  ]
  return '\n'.join(lines)


def sweep_markdown(payload: dict[str, Any]) -> str:
  """The readable search: the settings that reach the target, then all."""
  lines = _header(payload, 'Which brake settings stop the chattering?')
  rows = payload['settings']
  passing = [r for r in rows if r['all_targets']]
  lines += [
    f'{len(passing)} of {len(rows)} settings reach the target (>= '
    f'{TARGET_RATIO:g}x closer than Adam and narrower loss and norm '
    'bands) on every problem and learning rate. Sorted by the worst '
    'case of "closer".',
    '',
  ]
  exp = [r for r in rows if r['rule'] == 'exp']
  if exp:
    best = max(exp, key=lambda r: r['worst_closer'])
    lines += [
      f"The paper's rule (exp): {sum(r['all_targets'] for r in exp)} "
      f'of {len(exp)} settings reach the target; the best worst case '
      'is '
      f'{_x(best["worst_closer"])}x closer ({best["label"]}). One step '
      "of exp(-lam rho) shrinks Adam's step by at most exp(-lam); a "
      'large lam also brakes the steps that still make progress.',
      '',
    ]
  recommended = Spec(
    'sadam',
    num_probes=lgi.DEFAULT_NUM_PROBES['step'],
    probe_radius=lgi.DEFAULT_PROBE_RADIUS['step'],
    **RECOMMENDED,
  ).label
  for r in rows:
    if r['label'] == recommended:
      lines += [
        f'Recommended default ({recommended}): all targets '
        f'{"reached" if r["all_targets"] else "NOT reached"}, worst '
        f'case {_x(r["worst_closer"])}x closer, bands '
        f'{_x(r["worst_band"])}x narrower.',
        '',
      ]
  cases = list(rows[0]['cases']) if rows else []
  lines += [
    '| setting | all targets | worst closer (x) | worst band '
    'narrower (x) | ' + ' | '.join(f'closer, {c}' for c in cases) + ' |',
    '|---' * (4 + len(cases)) + '|',
  ]
  for r in rows:
    lines.append(
      f'| {r["label"]} | {"yes" if r["all_targets"] else "no"} | '
      f'{_x(r["worst_closer"])} | {_x(r["worst_band"])} | '
      + ' | '.join(_x(r['cases'][c]['closer']) for c in cases)
      + ' |'
    )
  lines.append('')
  return '\n'.join(lines)


# ------------------------------------------------------------------------ run

DEFAULT_STEPS = {'figure1': 4000, 'l1_toy': 10_000}


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument(
    '--problems', nargs='+', default=['figure1', 'l1_toy'], choices=['figure1', 'l1_toy']
  )
  p.add_argument('--lrs', type=float, nargs='+', default=[0.01, 0.1])
  p.add_argument(
    '--steps',
    type=int,
    nargs='+',
    help=f'steps per problem, in the order of --problems (default {DEFAULT_STEPS})',
  )
  p.add_argument('--starts', type=int, default=8)
  p.add_argument('--dim', type=int, default=100, help='dimension of l1_toy')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument(
    '--sweep', action='store_true', help='search the brake settings instead of comparing'
  )
  p.add_argument(
    '--smoke',
    action='store_true',
    help='tiny run for the tests: lr 0.1, 1500 steps, 4 starts, '
    'Adam and S-Adam (exp and compound) only',
  )
  p.add_argument('--out', help='results stem (default chattering or chattering_sweep)')
  p.add_argument('--out-dir', default=str(common.RESULTS_DIR))
  return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
  """Fills the defaults that depend on other arguments."""
  if args.smoke:
    args.lrs, args.starts = [0.1], 4
    args.steps = args.steps or [1500] * len(args.problems)
  steps = args.steps or [DEFAULT_STEPS[p] for p in args.problems]
  if len(steps) != len(args.problems):
    raise ValueError('--steps takes one number per problem.')
  args.steps = dict(zip(args.problems, steps))
  if args.out is None:
    args.out = 'chattering_sweep' if args.sweep else 'chattering'
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = resolve(parser().parse_args(argv))
  start = time.perf_counter()
  out = run_sweep(args) if args.sweep else run_comparison(args)
  print(f'done in {time.perf_counter() - start:.0f} s: {Path(args.out_dir) / args.out}.md')
  return out


if __name__ == '__main__':
  main()
