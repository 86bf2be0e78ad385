"""One instance of the non-smooth suite, window by window: where a band comes from.

The suite (:mod:`experiments.nonsmooth_suite`) keeps one band per run. This
traces a single instance of a ``'distance'`` family under a few methods and
prints, per window of the run, the distance to ``w*``, the mean and smallest
damping, the error of the coordinate that ends farthest from ``w*``, and for
the coordinate that *came back* the most (the largest ratio of a window's
error to its smallest error in the windows before; per method) its error and
Adam's effective step size there, ``lr / sqrt(nu)`` (``nu`` Adam's second
moment). A settled smooth coordinate whose ``nu`` decays has a growing
effective step; where it passes the edge of stability the coordinate starts
to oscillate again, so the columns show *when* a band widens and whether it
is that.

Usage::

  python -m experiments.trace_instance --family abs_sum --seed 4 --index 4 \\
    --lr 3e-2 --methods adam sadam sadam-envelope \\
    --out experiments/results/trace_abs_sum_s4_i4

writes ``<out>.json`` and ``<out>.md``.
"""

import argparse
import datetime
import json
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments import nonsmooth_families as nf
from experiments import nonsmooth_suite as ns


def trace(
  family: str,
  *,
  seed: int,
  index: int,
  lr: float,
  methods: Sequence[str],
  steps: int = ns.STEPS,
  windows: int = 20,
  betas: tuple[float, float] = (ns.B1, ns.B2),
) -> dict[str, Any]:
  """Per-window figures of one instance under each method.

  Args:
    family: a ``'distance'`` family of :data:`nf.FAMILIES`.
    seed: the suite's ``--seed``.
    index: the instance's index in the family.
    lr: the constant learning rate.
    methods: names of :data:`ns.METHODS` (those with Adam's moments).
    steps: steps of the run.
    windows: number of equal windows the run is cut into.
    betas: Adam's moments for every method (held-out settings).

  Returns:
    ``instance`` (its info) and ``methods``: for each, ``farthest`` and
    ``returned`` (coordinate indices, above), ``rise`` (the returned
    coordinate's largest ratio) and per-window lists
    ``distance``, ``damping``, ``min_damping``, ``error_farthest``,
    ``error_returned`` and ``effective_lr`` (at the returned coordinate).

  Raises:
    ValueError: a family measured by the excess loss (no ``w*``).
  """
  fam = nf.FAMILIES[family]
  if fam.metric != 'distance':
    raise ValueError(f'{family} is measured by the excess loss: trace a family with a minimiser.')
  inst = nf.make_instances(family, index + 1, seed=seed)[index]
  data = {k: jnp.asarray(v, jnp.float32) for k, v in inst.data.items()}
  loss = lambda w: fam.objective(data, w, jnp)
  out = {}
  for name in methods:
    opt = ns.build(ns.METHODS[name], lr, steps=steps, betas=betas)

    def body(carry, _, opt=opt):
      w, state, value = carry
      updates, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss, value=value)
      w = optax.apply_updates(w, updates)
      damping = jnp.asarray(optax.tree.get(state, 'damping', default=1.0), jnp.float32)
      return (w, state, loss(w)), (w, damping, optax.tree.get(state, 'nu'))

    start = jnp.asarray(inst.start, jnp.float32)
    run = jax.jit(
      lambda w, opt=opt, body=body: jax.lax.scan(
        body, (w, opt.init(w), loss(w)), None, length=steps
      )[1]
    )
    ws, dampings, nus = (np.asarray(x, np.float64) for x in run(start))
    cut = lambda x: np.array_split(x, windows)  # noqa: E731
    errors = np.stack([e.mean(0) for e in cut(np.abs(ws - inst.minimiser))])  # (windows, d)
    far = int(np.argmax(errors[-1]))
    best_before = np.minimum.accumulate(np.maximum(errors, 1e-30), axis=0)[:-1]
    rise = errors[1:] / best_before  # (windows - 1, d)
    back = int(np.argmax(rise.max(0)))
    out[name] = dict(
      farthest=far,
      returned=back,
      rise=float(rise[:, back].max()),
      distance=[float(np.linalg.norm(w - inst.minimiser, axis=1).mean()) for w in cut(ws)],
      damping=[float(d.mean()) for d in cut(dampings)],
      min_damping=[float(d.min()) for d in cut(dampings)],
      error_farthest=errors[:, far].tolist(),
      error_returned=errors[:, back].tolist(),
      effective_lr=[float(lr / np.sqrt(n[:, back]).mean()) for n in cut(nus)],
    )
  info = {k: v for k, v in inst.info.items() if np.isscalar(v)}
  return dict(
    config=dict(
      family=family, seed=seed, index=index, lr=lr, steps=steps, windows=windows, betas=list(betas)
    ),
    instance=info,
    methods=out,
  )


def markdown(payload: dict[str, Any]) -> str:
  cfg = payload['config']
  lines = [
    f'# {cfg["family"]}, seed {cfg["seed"]}, instance {cfg["index"]}, lr {cfg["lr"]:g}, '
    f'{cfg["steps"]} steps'
    + (
      ''
      if tuple(cfg.get('betas', (ns.B1, ns.B2))) == (ns.B1, ns.B2)
      else ', betas {} / {}'.format(*cfg['betas'])
    ),
    '',
    f'Command: `{payload["command"]}`  ',
    f'Hardware: {payload["hardware"]}; {payload["date"]}; core {payload["core"]}.',
    '',
    'Instance: ' + ', '.join(f'{k} {v:.4g}' for k, v in payload['instance'].items()),
    '',
    'Per window: distance to w* (mean), damping mean / min, the error of the coordinate that '
    'ends farthest from w*; for the one that came back most (a window over its best before): its '
    "error and lr / sqrt(nu) there (nu: Adam's second moment).",
    '',
  ]
  for name, m in payload['methods'].items():
    lines += [
      f'## {name} (farthest: coordinate {m["farthest"]}; came back: {m["returned"]}, '
      f'{m["rise"]:.3g}x its best before)',
      '',
      '| steps | distance | damping mean / min | error, farthest | error, came back | '
      'lr / sqrt(nu) there |',
      '|---|---|---|---|---|---|',
    ]
    edges = np.array_split(np.arange(cfg['steps']), cfg['windows'])
    for i, e in enumerate(edges):
      lines.append(
        f'| {e[0]}-{e[-1] + 1} | {m["distance"][i]:.3e} | {m["damping"][i]:.3f} / '
        f'{m["min_damping"][i]:.3f} | {m["error_farthest"][i]:.2e} | '
        f'{m["error_returned"][i]:.2e} | {m["effective_lr"][i]:.3g} |'
      )
    lines.append('')
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--family', default='abs_sum', choices=list(nf.FAMILIES))
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--index', type=int, default=0)
  p.add_argument('--lr', type=float, default=3e-2)
  p.add_argument('--steps', type=int, default=ns.STEPS)
  p.add_argument('--windows', type=int, default=20)
  p.add_argument(
    '--betas',
    nargs=2,
    type=float,
    default=[ns.B1, ns.B2],
    metavar=('B1', 'B2'),
    help="Adam's moments for every method (held-out settings)",
  )
  p.add_argument('--methods', nargs='+', default=['adam', 'sadam'], choices=list(ns.METHODS))
  p.add_argument('--out', help='results path without suffix (default: print only)')
  args = p.parse_args(argv)
  payload = dict(
    command=common.command_line(),
    hardware=common.hardware(),
    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    core=ns.core_version(),
    **trace(
      args.family,
      seed=args.seed,
      index=args.index,
      lr=args.lr,
      methods=args.methods,
      steps=args.steps,
      windows=args.windows,
      betas=tuple(args.betas),
    ),
  )
  text = markdown(payload)
  print(text)
  if args.out:
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + '.json').write_text(json.dumps(payload, indent=1) + '\n')
    stem.with_name(stem.name + '.md').write_text(text + '\n')
  return payload


if __name__ == '__main__':
  main()
