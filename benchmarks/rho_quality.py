"""How well does a cheap rho follow a dense one? Measured along real training.

One shared trajectory: a 1-D CNN trained on MNIST-1D (generated offline by
``mnist1d``) with Adam. At every step, every setting of
:func:`benchmarks.settings.quality_settings` is updated with the same
gradient, parameters and batch, as S-AdamW with ``lam=1e-30`` (AdamW
exactly: the damping ``exp(-1e-30 rho)`` rounds to 1, so all of them propose
the same step; ``lam=0`` would skip the probe), and its rho is read from its
state: the rho it would brake with at that step, carried rho included for
``probe_every > 1``. Each is compared (Spearman, over steps) with a dense
reference of its family (16 probes every step; ``'trajectory'`` against the
``'step'`` family, whose step it approximates), and a setting that probes
every k-th step also with the same reading probed every step (what carrying
rho loses); two dense references with independent probe seeds give the
ceiling. The two-sample prototypes of
:mod:`benchmarks.proposals` (``ends``) is observed the same way.

Usage (from the repository root)::

  python -m benchmarks.rho_quality --steps 1000 --seeds 0 1 2

Writes ``benchmarks/results/rho_quality.json`` and ``.md``.
"""

import argparse
import dataclasses
import pathlib
import sys
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats
import tqdm

from benchmarks import settings as settings_lib
from benchmarks import step_time

RESULTS = pathlib.Path(__file__).resolve().parent / 'results'
DENSE_SEEDS = (101, 202)
# The observers' brake strength: > 0, so that rho is measured (lam=0 skips
# the probe), and so small that exp(-OBSERVE_LAM * rho) is 1.0 in float32:
# every observer's step is AdamW's, bit for bit.
OBSERVE_LAM = 1e-30


def reference_name(family: str, index: int) -> str:
  return f'{family} k16 dense {"AB"[index]}'


def family(setting: settings_lib.Setting) -> str:
  """'literal', or 'step' (which 'trajectory' and the proposals approximate)."""
  return 'literal' if setting.estimator == 'literal' else 'step'


def observers(
  settings: Sequence[settings_lib.Setting], seed: int
) -> dict[str, settings_lib.Setting]:
  """The observed settings by name: dense references first, then the rest.

  Probes are evaluated one at a time (``chunk_size=1``: the same rho, less
  time on the CPU); probe seeds differ between runs.
  """
  out = {}
  families = sorted({family(s) for s in settings})
  for fam in families:
    for i, ref_seed in enumerate(DENSE_SEEDS):
      out[reference_name(fam, i)] = settings_lib.dense_reference(fam, seed=ref_seed)
  for s in settings:
    out[s.name] = s
  probed = ('step', 'literal')
  return {
    name: dataclasses.replace(
      s, chunk_size=1 if s.estimator in probed else None, seed=s.seed + 1000 * seed
    )
    for name, s in out.items()
  }


def cross_entropy(model: Any, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
  logits = model.apply({'params': params}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_step(
  model: Any, observed: dict[str, settings_lib.Setting], *, learning_rate: float
) -> tuple[Any, Any]:
  """(init, step) of the shared trajectory and its observers.

  Returns:
    ``init(params) -> states`` and a jitted ``step(params, states, x, y) ->
    (params, states, rhos, loss)``; ``rhos`` maps every observer and proposal
    to the rho it holds after this step.
  """
  opts = {
    name: settings_lib.make_optimizer(
      s, learning_rate=learning_rate, weight_decay=0.0, lam=OBSERVE_LAM
    )
    for name, s in observed.items()
  }
  loss = lambda p, x, y: cross_entropy(model, p, x, y)

  def init(params):
    return {
      name: settings_lib.init_state(observed[name], opt, params) for name, opt in opts.items()
    }

  @jax.jit
  def step(params, states, x, y):
    value, grads = jax.value_and_grad(loss)(params, x, y)
    new_states, rhos, updates = {}, {}, None
    for name, opt in opts.items():
      xs, ys = settings_lib.probe_batch((x, y), observed[name].probe_fraction)
      u, new_states[name] = opt.update(
        grads,
        states[name],
        params,
        value_fn=lambda p: loss(p, xs, ys),
        value=settings_lib.probe_value(value, observed[name]),
      )
      rhos[name] = optax.tree.get(new_states[name], 'rho')
      # No brake, no weight decay: every observer's update is Adam's step.
      updates = u if updates is None else updates
    return optax.apply_updates(params, updates), new_states, rhos, value

  return init, step


def run_trajectory(
  seed: int,
  *,
  steps: int,
  batch_size: int,
  learning_rate: float,
  bits: Optional[int],
  settings: Sequence[settings_lib.Setting],
) -> dict[str, Any]:
  """Trains once, recording every observer's rho at every step."""
  from sadam_examples import data, models  # pylint: disable=g-import-not-at-top

  x_train, y_train, x_test, y_test = data.load_mnist1d()
  model = models.CNN1D(bits=bits)
  params = model.init(jax.random.key(seed), x_train[:2])['params']
  observed = observers(settings, seed)
  init, step = make_step(model, observed, learning_rate=learning_rate)
  states = init(params)
  rng = np.random.default_rng(seed)
  trace, losses = [], []
  bar = tqdm.tqdm(total=steps, desc=f'seed {seed}')
  while len(trace) < steps:
    for x, y in data.batches(x_train, y_train, batch_size, seed=rng):
      if len(trace) == steps:
        break
      params, states, rhos, loss = step(params, states, x, y)
      trace.append(rhos)
      losses.append(loss)
      bar.update()
  bar.close()
  trace, losses = jax.device_get((trace, losses))  # One transfer at the end.
  logits = model.apply({'params': params}, x_test)
  return dict(
    seed=seed,
    test_accuracy=float(jnp.mean(logits.argmax(-1) == y_test)),
    loss=np.asarray(losses, np.float64),
    rho={name: np.array([r[name] for r in trace], np.float64) for name in observed},
    settings=observed,
  )


# --------------------------------------------------------------------------
# Analysis.
# --------------------------------------------------------------------------


def ema(x: np.ndarray, decay: float) -> np.ndarray:
  """Exponential moving average (debiased: starts at x[0])."""
  out, avg = np.empty_like(x), x[0]
  for i, v in enumerate(x):
    avg = decay * avg + (1 - decay) * v
    out[i] = avg
  return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rank correlation; 0 when either side is constant."""
  if np.ptp(a) == 0 or np.ptp(b) == 0:
    return 0.0
  return float(stats.spearmanr(a, b)[0])


def analyse(
  run: dict[str, Any], *, burn_in: int, decay: float, lam: float
) -> dict[str, dict[str, float]]:
  """Per observer: Spearman with its family's dense reference, and more.

  Keys: ``spearman`` (raw rho against reference A), ``spearman_own`` (a
  setting probed every k-th step against the same reading probed every step,
  where observed; NaN otherwise), ``spearman_ema`` (the EMA of rho against
  reference A), ``spearman_level`` (both EMAs), ``mean_rho``,
  ``mean_damping`` (``exp(-lam * rho)``, the brake it would apply on
  average).
  """
  rho = {k: v[burn_in:] for k, v in run['rho'].items()}
  out = {}
  for name, values in rho.items():
    setting = run['settings'][name]
    ref = rho[reference_name(family(setting), 0)]
    own = dataclasses.replace(setting, probe_every=1).name
    out[name] = dict(
      spearman=spearman(values, ref),
      spearman_own=(
        spearman(values, rho[own]) if setting.probe_every > 1 and own in rho else float('nan')
      ),
      spearman_ema=spearman(ema(values, decay), ref),
      spearman_level=spearman(ema(values, decay), ema(ref, decay)),
      mean_rho=float(values.mean()),
      mean_damping=float(np.exp(-lam * values).mean()),
    )
  return out


def autocorrelation(x: np.ndarray, lags: Sequence[int]) -> dict[int, float]:
  """Spearman correlation of x with itself ``lag`` steps later."""
  return {lag: spearman(x[:-lag], x[lag:]) for lag in lags}


def aggregate(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
  """{name: {metric: [mean, std]}} over seeds."""
  names = per_seed[0].keys()
  return {
    n: {
      m: [float(np.mean([s[n][m] for s in per_seed])), float(np.std([s[n][m] for s in per_seed]))]
      for m in per_seed[0][n]
    }
    for n in names
  }


def _pm(v: Sequence[float], digits: int = 2) -> str:
  return f'{v[0]:.{digits}f} +- {v[1]:.{digits}f}'


def markdown(result: dict[str, Any]) -> str:
  """The readable table."""
  agg = result['aggregate']
  lines = [
    '# Quality of cheap rho: Spearman correlation with a dense reference',
    '',
    f'Run: `{result["command"]}` on {result["hardware"]}.',
    '',
    f'{result["task"]}. Spearman over steps {result["burn_in"]}..'
    f'{result["steps"]} of one shared trajectory per seed, mean +- std over '
    f'seeds {result["seeds"]}; final test accuracy of the trajectory '
    f'{_pm(result["test_accuracy"], 3)}. Reference: 16 probes every step '
    'of the same family (dense A); `EMA` columns smooth rho with decay '
    f'{result["decay"]} (level: both sides smoothed). Mean damping: '
    f'exp(-{result["lam"]} rho), the brake it would apply on average.',
    '',
    '"vs every step": a setting probed every k-th step (rho carried in '
    'between) against the same reading probed every step.',
    '',
    '| setting | Spearman vs dense | vs every step | EMA vs dense | '
    'EMA vs dense EMA | mean rho | mean damping |',
    '|---|---|---|---|---|---|---|',
  ]
  for name, m in agg.items():
    own = '-' if np.isnan(m['spearman_own'][0]) else _pm(m['spearman_own'])
    lines.append(
      f'| {name} | {_pm(m["spearman"])} | {own} | {_pm(m["spearman_ema"])} | '
      f'{_pm(m["spearman_level"])} | {_pm(m["mean_rho"], 3)} | '
      f'{_pm(m["mean_damping"], 3)} |'
    )
  lines += [
    '',
    'Rank autocorrelation of the dense reference (step family) '
    'with itself k steps later, mean over seeds: '
    + ', '.join(f'k={k}: {v:.2f}' for k, v in result['autocorrelation'].items())
    + '.',
  ]
  return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--steps', type=int, default=1000)
  p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  p.add_argument('--batch', type=int, default=100)
  p.add_argument(
    '--lr',
    type=float,
    default=1e-2,
    help='Adam learning rate of the trajectory (tuned for the float CNN on MNIST-1D)',
  )
  p.add_argument('--bits', type=int, default=None, help='fake-quantize the CNN to this many bits')
  p.add_argument('--burn-in', type=int, default=10)
  p.add_argument('--decay', type=float, default=0.9, help='EMA decay')
  p.add_argument(
    '--lam', type=float, default=2.0, help='brake strength for the mean-damping column'
  )
  p.add_argument('--only', nargs='*', default=None, help='names of the cheap settings to observe')
  p.add_argument('--out-dir', type=pathlib.Path, default=RESULTS)
  p.add_argument('--name', default='rho_quality', help='output file stem')
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  args = parse_args(argv)
  settings = settings_lib.quality_settings()
  if args.only is not None:
    settings = [s for s in settings if s.name in args.only]
  start = time.perf_counter()
  runs = [
    run_trajectory(
      seed,
      steps=args.steps,
      batch_size=args.batch,
      learning_rate=args.lr,
      bits=args.bits,
      settings=settings,
    )
    for seed in args.seeds
  ]
  per_seed = [analyse(r, burn_in=args.burn_in, decay=args.decay, lam=args.lam) for r in runs]
  lags = [k for k in (1, 4, 16) if k < args.steps - args.burn_in - 2]
  autocorr = [
    autocorrelation(r['rho'][reference_name('step', 0)][args.burn_in :], lags) for r in runs
  ]
  result = dict(
    task=(
      f'CNN1D ({"float" if args.bits is None else f"{args.bits}-bit"})'
      f' on MNIST-1D, Adam lr {args.lr}, batch {args.batch}'
    ),
    hardware=f'{jax.devices()[0].device_kind}',
    command='python -m benchmarks.rho_quality ' + ' '.join(sys.argv[1:] if argv is None else argv),
    steps=args.steps,
    seeds=args.seeds,
    burn_in=args.burn_in,
    decay=args.decay,
    lam=args.lam,
    seconds=time.perf_counter() - start,
    test_accuracy=[
      float(np.mean([r['test_accuracy'] for r in runs])),
      float(np.std([r['test_accuracy'] for r in runs])),
    ],
    settings={n: s.options() for n, s in runs[0]['settings'].items()},
    autocorrelation={k: float(np.mean([a[k] for a in autocorr])) for k in lags},
    aggregate=aggregate(per_seed),
    per_seed=per_seed,
    rho_seed0={k: v.round(5).tolist() for k, v in runs[0]['rho'].items()},
  )
  step_time.write(result, args.out_dir, args.name, markdown(result))
  print(markdown(result))
  return result


if __name__ == '__main__':
  main()
