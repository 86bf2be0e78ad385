"""Readings lost in the loss's rounding: why 0.5's brake let go near a float32 minimiser.

Near a minimiser the loss changes along a step by less than its float32
rounding, and so does what the gradient predicts: the secant readings
(``'uphill'``, ``'secant'``) cannot tell the step from a smooth one. 0.5 read
such a step as smooth (rho 0, no brake); since 0.6 the probe keeps the last
reading, faded by ``unresolved_fade`` per such probe. This experiment runs
Adam, S-Adam with 0.5's rule (``unresolved_fade=0``) and with the default on
instances of a family of the non-smooth suite, once in float32 (parameters,
data and loss) and once in float64, where nearly every reading resolves.

Per run: the band (the distance to ``w*`` averaged over the last 10% of the
steps) over Adam's band in the same precision, the share of the probes over
the last 40% of the steps whose reading was lost (the state's
``unresolved_probes``), and the mean damping there.

Example::

  python -m experiments.lost_readings          # Huber, seed 11, instances 1, 7, 11; ~1 minute
  python -m experiments.lost_readings --smoke  # seconds

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sadam_optax
from experiments import common
from experiments import nonsmooth_families
from sadam_optax import probe_transform

RULES = {
  'adam': lambda lr: optax.with_extra_args_support(optax.adam(lr)),
  'sadam-0.5': lambda lr: sadam_optax.sadam(lr, unresolved_fade=0.0, release_cap=None),
  'sadam': lambda lr: sadam_optax.sadam(lr),
}
WINDOW = 0.1  # The band: the mean distance over this last share of the steps.
LATE = 0.4  # Lost readings and damping: over this last share of the steps.


def run_one(
  instance: nonsmooth_families.Instance,
  family: nonsmooth_families.Family,
  make: Any,
  *,
  lr: float,
  steps: int,
  dtype: Any,
) -> dict[str, float]:
  """One run: band, share of late probes lost, late mean damping."""
  data = {k: jnp.asarray(v, dtype) for k, v in instance.data.items()}
  loss = lambda w: family.objective(data, w, jnp)
  w_star = jnp.asarray(instance.minimiser, dtype)
  opt = make(lr)

  def body(carry, _):
    w, state, value = carry
    grad = jax.grad(loss)(w)
    updates, state = opt.update(grad, state, w, value_fn=loss, value=value)
    w = optax.apply_updates(w, updates)
    lost = optax.tree.get(state, 'unresolved_probes', default=jnp.int32(0))
    damping = jnp.asarray(optax.tree.get(state, 'damping', default=1.0), jnp.float32)
    return (w, state, loss(w)), (jnp.linalg.norm(w - w_star), lost, damping)

  start = jnp.asarray(instance.start, dtype)
  (w, _, _), (dist, lost, damping) = jax.jit(
    lambda s: jax.lax.scan(body, (s, opt.init(s), loss(s)), None, length=steps)
  )(start)
  assert w.dtype == dtype, (w.dtype, dtype)
  dist, lost, damping = (np.asarray(a, np.float64) for a in (dist, lost, damping))
  late = int(LATE * steps)
  return dict(
    band=float(dist[-int(WINDOW * steps) :].mean()),
    lost_share=float((lost[-1] - lost[-late - 1]) / late),
    damping=float(damping[-late:].mean()),
  )


def run(
  *, family: str, seed: int, indices: Sequence[int], lr: float, steps: int
) -> list[dict[str, Any]]:
  """Every rule on every instance in both precisions; rows for the report."""
  fam = nonsmooth_families.FAMILIES[family]
  instances = nonsmooth_families.make_instances(family, max(indices) + 1, seed=seed)
  rows = []
  for i in indices:
    for precision, dtype in (('float32', jnp.float32), ('float64', jnp.float64)):
      # 64-bit types only inside the float64 runs: the setting is global.
      x64 = jax.enable_x64(True) if dtype == jnp.float64 else contextlib.nullcontext()
      with x64:
        runs = {
          name: run_one(instances[i], fam, make, lr=lr, steps=steps, dtype=dtype)
          for name, make in RULES.items()
        }
      for name, r in runs.items():
        rows.append(
          dict(
            instance=i,
            precision=precision,
            method=name,
            **r,
            ratio=r['band'] / runs['adam']['band'],
          )
        )
  return rows


def markdown(payload: dict[str, Any]) -> str:
  c = payload['config']
  lines = [
    "# Readings lost in the loss's rounding",
    '',
    f'Command: `{payload["command"]}`  ',
    f'Hardware: {payload["hardware"]}  ',
    f'Date: {payload["date"]}; wall time {payload["wall_s"]} s',
    '',
    f'`{c["family"]}` instances {c["indices"]} of seed {c["seed"]}, lr {c["lr"]:g}, {c["steps"]} '
    f'steps, Adam 0.9 / 0.999. Band: distance to w* over the last {WINDOW:.0%} of the steps; '
    f"lost: share of the probes over the last {LATE:.0%} whose reading was lost in the loss's "
    f'rounding; damping: mean over the same steps. `sadam-0.5`: `unresolved_fade=0` (a lost '
    'reading reads as smooth); `sadam`: the default (the last reading, faded by '
    f'{probe_transform.UNRESOLVED_FADE:g} per lost probe).',
    '',
    '| instance | precision | method | band | band / Adam | lost | damping |',
    '|---|---|---|---|---|---|---|',
  ]
  for r in payload['rows']:
    lines.append(
      f'| {r["instance"]} | {r["precision"]} | {r["method"]} | {r["band"]:.3g} | '
      f'{r["ratio"]:.3g} | {r["lost_share"]:.0%} | {r["damping"]:.3f} |'
    )
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--family', default='huber', choices=list(nonsmooth_families.FAMILIES))
  p.add_argument('--seed', type=int, default=11)
  p.add_argument('--instances', type=int, nargs='+', default=[1, 7, 11])
  p.add_argument('--lr', type=float, default=1e-3)
  p.add_argument('--steps', type=int, default=10_000)
  p.add_argument('--out', default='lost_readings', help='results stem under --out-dir')
  p.add_argument('--out-dir', default=str(common.RESULTS_DIR))
  p.add_argument('--smoke', action='store_true', help='tiny: instance 0, 200 steps')
  args = p.parse_args(argv)
  if args.smoke:
    args.instances, args.steps = [0], 200
  config = dict(
    family=args.family, seed=args.seed, indices=args.instances, lr=args.lr, steps=args.steps
  )
  t0 = time.time()
  rows = run(**config)
  payload = dict(config=config, rows=rows, wall_s=round(time.time() - t0, 1))
  return common.write_report(args.out, payload, markdown, out_dir=args.out_dir)


if __name__ == '__main__':
  main()
