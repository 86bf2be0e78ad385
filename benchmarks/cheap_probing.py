"""Cost and quality of every setting in one table, and the cheapest good one.

Joins the step-time results (``step_time_<model>_<hardware>.json``) with the
quality results (``rho_quality.json``) by setting name, and names, for each
cost run, the cheapest S-AdamW setting whose step costs at most
``--max-ratio`` times AdamW's while its rho keeps a Spearman correlation of at
least ``--min-spearman`` with the dense reference.

Usage (from the repository root, after the two benchmarks)::

  python -m benchmarks.cheap_probing

Writes ``benchmarks/results/cheap_probing.md``.
"""

import argparse
import json
import pathlib
from typing import Any, Optional, Sequence

RESULTS = pathlib.Path(__file__).resolve().parent / 'results'
# Cost-only variants and the setting whose rho they share (same estimator and
# probe points: chunking and bit-packed noise change how, not what).
# 'secant (proposal)' (benchmarks/proposals.py before the core adopted it)
# computed the core's 'secant' rho; 'no-value' only adds a forward pass.
SAME_RHO_AS = {
  'step k4 chunk1': 'step k4',
  'step k2 chunk1': 'step k2',
  'step k4 packed': 'step k4',
  'step k4 unsafe_rbg': 'step k4 rbg',
  'secant (proposal)': 'secant',
  'secant no-value': 'secant',
}


def load_costs(results: pathlib.Path) -> dict[str, dict[str, Any]]:
  """{run label: step-time result}, smoke runs excluded."""
  out = {}
  for path in sorted(results.glob('step_time_*.json')):
    if '_smoke_' in path.name:
      continue
    result = json.loads(path.read_text())
    label = path.stem.removeprefix('step_time_')
    out[label] = result
  return out


def quality_of(name: str, quality: dict[str, Any]) -> Optional[list[float]]:
  """[mean, std] Spearman of a setting (or of the one it shares rho with)."""
  row = quality['aggregate'].get(SAME_RHO_AS.get(name, name))
  return None if row is None else row['spearman']


def recommend(
  costs: dict[str, Any], quality: dict[str, Any], *, max_ratio: float, min_spearman: float
) -> dict[str, dict[str, Any]]:
  """Per cost run: the cheapest setting meeting both bars, and the frontier.

  Returns:
    {run: {'meets': cheapest name or None, 'best_under_cost': the setting
    with the highest Spearman among those within ``max_ratio``,
    'cheapest_good': the cheapest setting with Spearman >= min_spearman}}.
  """
  out = {}
  for label, result in costs.items():
    rows = [
      (r['name'], r['ratio'], quality_of(r['name'], quality))
      for r in result['rows']
      if 'ratio' in r
    ]
    rows = [(n, c, q[0]) for n, c, q in rows if q is not None]
    cheap = [r for r in rows if r[1] <= max_ratio]
    good = [r for r in rows if r[2] >= min_spearman]
    both = [r for r in cheap if r[2] >= min_spearman]
    out[label] = dict(
      meets=min(both, key=lambda r: r[1]) if both else None,
      best_under_cost=max(cheap, key=lambda r: r[2]) if cheap else None,
      cheapest_good=min(good, key=lambda r: r[1]) if good else None,
    )
  return out


def _fmt(row: Optional[tuple[str, float, float]]) -> str:
  if row is None:
    return 'none'
  return f'`{row[0]}` ({row[1]:.2f}x AdamW, Spearman {row[2]:.2f})'


def markdown(
  costs: dict[str, Any],
  quality: dict[str, Any],
  picks: dict[str, Any],
  *,
  max_ratio: float,
  min_spearman: float,
) -> str:
  """The joined table and the recommendation."""
  labels = list(costs)
  names = []
  for result in costs.values():
    names += [r['name'] for r in result['rows'] if r['name'] not in names]
  names += [n for n in quality['aggregate'] if n not in names]
  ceiling = quality['aggregate'].get('step k16 dense B', {}).get('spearman')
  lines = [
    '# Cheap probing: cost against quality',
    '',
    f'Bars: step time <= {max_ratio}x AdamW and Spearman(rho, dense '
    f'reference) >= {min_spearman}. Quality: {quality["task"]}, seeds '
    f'{quality["seeds"]}, {quality["steps"]} steps (`{quality["command"]}`'
    f', {quality["hardware"]}).'
    + (
      f' Ceiling (two dense references, independent probes): {ceiling[0]:.3f} +- {ceiling[1]:.3f}.'
      if ceiling
      else ''
    ),
    'Cost runs (x AdamW, median of interleaved repetitions):',
  ]
  for label, result in costs.items():
    hw = result['hardware']
    load = hw.get('load_average')
    lines.append(
      f'- `{label}`: {result["task"]}; {hw["device"]} '
      f'({hw["platform"]}, {hw["cpu_cores"]} CPU cores'
      + (f', load average {load[0]:.1f} at the start' if load else '')
      + f'); `{result["command"]}`.'
    )
  lines += [
    '',
    '| setting | Spearman vs dense | EMA vs dense EMA | mean '
    'damping | '
    + ' | '.join(f'x AdamW {label}' for label in labels)
    + ' | state +bytes (per run if they differ) |',
    '|---|---|---|---|' + '---|' * len(labels) + '---|',
  ]
  for name in names:
    q = quality['aggregate'].get(SAME_RHO_AS.get(name, name))
    shared = name in SAME_RHO_AS and q is not None
    qcols = (
      ['-'] * 3
      if q is None
      else [
        f'{q["spearman"][0]:.2f} +- {q["spearman"][1]:.2f}'
        + (f' (= {SAME_RHO_AS[name]})' if shared else ''),
        f'{q["spearman_level"][0]:.2f}',
        f'{q["mean_damping"][0]:.2f}',
      ]
    )
    ccols, states = [], []
    for result in costs.values():
      row = next((r for r in result['rows'] if r['name'] == name), None)
      ccols.append('-' if row is None or 'ratio' not in row else f'{row["ratio"]:.2f}')
      if row is not None and 'state_bytes_over_adamw' in row:
        states.append(str(row['state_bytes_over_adamw']))
    state = ' / '.join(dict.fromkeys(states)) or '-'
    lines.append(f'| {name} | ' + ' | '.join(qcols + ccols) + f' | {state} |')
  lines += ['', '## Cheapest setting meeting both bars', '']
  for label, pick in picks.items():
    lines.append(
      f'- `{label}`: meets both: {_fmt(pick["meets"])}; best '
      f'Spearman within {max_ratio}x: '
      f'{_fmt(pick["best_under_cost"])}; cheapest with Spearman '
      f'>= {min_spearman}: {_fmt(pick["cheapest_good"])}.'
    )
  return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--results', type=pathlib.Path, default=RESULTS)
  p.add_argument('--quality', default='rho_quality.json')
  p.add_argument('--max-ratio', type=float, default=1.15)
  p.add_argument('--min-spearman', type=float, default=0.8)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  args = parse_args(argv)
  quality = json.loads((args.results / args.quality).read_text())
  costs = load_costs(args.results)
  picks = recommend(costs, quality, max_ratio=args.max_ratio, min_spearman=args.min_spearman)
  text = markdown(costs, quality, picks, max_ratio=args.max_ratio, min_spearman=args.min_spearman)
  (args.results / 'cheap_probing.md').write_text(text)
  print(text)
  return picks


if __name__ == '__main__':
  main()
