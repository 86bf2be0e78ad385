"""The non-smooth benchmark suite: its arithmetic, its smoke run, pinned bands.

Checks the win-rate, ratio, convergence and verdict arithmetic on hand-made
numbers, that ``--smoke`` runs end to end into a temporary folder, and that
the brakes keep their measured bands on a few pinned instances (the families
themselves: ``test_nonsmooth_families.py``).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import nonsmooth_suite as ns


def test_win_rate_and_ratio_arithmetic():
  adam = np.array([1.0, 2.0, 4.0, np.inf])
  method = np.array([0.5, 2.0, 8.0, 1.0])
  out = ns.compare(adam, method)
  assert out['win_rate'] == 0.75  # 0.5 <= 1, 2 <= 2 (a tie wins), 1 <= inf.
  assert out['median_ratio'] == pytest.approx(np.median([0.5, 1.0, 2.0, 0.0]))
  both_diverge = ns.compare(np.array([np.inf]), np.array([np.inf]))
  assert both_diverge == dict(win_rate=1.0, median_ratio=1.0)


def test_losses_count_where_adam_still_falls():
  adam = dict(band=np.array([1.0, 1.0, 1.0, 2.0]), previous_band=np.array([1.0, 2.0, 1.0, 2.0]))
  # Instance 1 loses while Adam still falls (1 < 0.95 x 2), instance 3 loses
  # to a settled Adam, instance 2 ties (a win).
  out = ns.losses(adam, np.array([0.5, 1.1, 1.0, 2.5]))
  assert out == dict(losses=2, losses_adam_falling=1)


def test_run_metrics_and_criteria():
  steps = 100
  m0 = np.array([1.0, 1.0])
  # Run 0 plateaus at 0.1 and alternates; run 1 decays geometrically.
  ms = np.stack([np.where(np.arange(steps) % 2, 0.05, 0.15), 0.9 ** np.arange(1, steps + 1)])
  damp = np.stack([np.where(np.arange(steps) % 2, 0.2, 1.0), np.ones(steps)])
  out = ns.run_metrics(m0, ms, damp)
  assert out['band'][0] == pytest.approx(0.1)
  assert out['band_max'][0] == pytest.approx(0.15)
  assert out['steps_to_tol'][0] == -1
  assert out['steps_to_tol'][1] == int(np.ceil(np.log(1e-2) / np.log(0.9)))
  # Run 0 moves away on steps 2, 4, ... (0.05 -> 0.15), where damping is 1.
  assert out['damping_away'][0] == pytest.approx(1.0)
  assert out['damping_toward'][0] == pytest.approx((0.2 * 50 + 1.0) / 51)
  assert out['mean_damping'][0] == pytest.approx(0.6)
  conv = ns.adam_converges({k: v[:1] for k, v in out.items()})
  assert conv['converged']
  assert not ns.adam_converges({k: v[1:] for k, v in out.items()})['converged']
  # A run that reached the point (float32 floor) is not in a band.
  at_floor = ns.run_metrics(np.ones(1), np.zeros((1, steps)), np.ones((1, steps)))
  assert at_floor['band'][0] == ns.FLOOR
  assert not ns.adam_converges(at_floor)['converged']


def test_plateau_criterion_drops_a_run_still_closing_in():
  # Band 0.8 of the previous window's: plateaued at 0.5, still closing in at 0.9.
  metrics = dict(band=np.full(10, 0.08), previous_band=np.full(10, 0.1), m0=np.ones(10))
  assert ns.adam_converges(metrics)['converged']
  assert not ns.adam_converges(metrics, plateau=0.9)['converged']


def test_recount_of_saved_results_matches_their_verdicts(capsys):
  path = Path(ns.__file__).parent / 'results' / 'nonsmooth_suite_averaged_seed4.json'
  stored = json.loads(path.read_text())
  failing, counted = ns.failing_cells(stored, 'sadam')
  assert (len(failing), counted) == (4, 23)  # The committed table's row.
  fail_f, counted_f = ns.failing_cells(ns.summarize(dict(stored), plateau=0.9), 'sadam')
  assert counted_f < counted and len(fail_f) <= len(failing)
  assert ns.main(['--recount', str(path), '--methods', 'sadam']) == {}
  out = capsys.readouterr().out
  assert f'| {path.stem} | 4 / 23 | {len(fail_f)} / {counted_f} |' in out
  # Then every cell, counted or not: wider than Adam at the median, and instances lost.
  cells = [c for c in stored['cells'] if c['method'] == 'sadam']
  wider = sum(c['median_ratio'] > 1 for c in cells)
  lost = sum(c['losses'] for c in cells)
  runs = len(cells) * stored['config']['instances']
  assert f'| {path.stem} | {wider} / {len(cells)}, {lost} / {runs} |' in out
  assert out.count('| total |') == 2


def test_recount_restricted_to_families_counts_only_theirs(capsys):
  path = Path(ns.__file__).parent / 'results' / 'nonsmooth_suite_averaged_seed4.json'
  stored = json.loads(path.read_text())
  family = next(iter(stored['runs']))
  mine = [c for c in ns.failing_cells(stored, 'sadam')[0] if c['family'] == family]
  counted = sum(
    c['method'] == 'sadam' and c['adam_converged'] and c['family'] == family
    for c in stored['cells']
  )
  argv = ['--recount', str(path), '--methods', 'sadam', '--families', family]
  ns.main(argv)
  out = capsys.readouterr().out
  assert f'| {path.stem} | {len(mine)} / {counted} |' in out
  cells = [c for c in stored['cells'] if c['method'] == 'sadam' and c['family'] == family]
  runs = len(cells) * stored['config']['instances']
  assert f'{len(cells)}, {sum(c["losses"] for c in cells)} / {runs} |' in out


def test_verdict():
  cell = lambda conv, win, ratio: dict(converged=conv, win_rate=win, median_ratio=ratio)
  assert ns.verdict([cell(False, 0.0, 9.0)]) == 'n/a'
  assert ns.verdict([cell(True, 0.96, 0.4), cell(False, 0.0, 9.0)]) == 'pass'
  assert ns.verdict([cell(True, 0.96, 0.4), cell(True, 0.9, 0.1)]) == 'fail'
  assert ns.verdict([cell(True, 1.0, 0.6)]) == 'fail'


def test_methods_registry():
  assert {
    'adam',
    'adam-cosine',
    'sadam',
    'sadam-step',
    'sadam-compound',
    'sadam-literal',
    'sadam-trajectory-compound',
  } <= set(ns.METHODS)
  tx = ns.build(ns.METHODS['adam-cosine'], jnp.float32(0.1), steps=10)
  assert hasattr(tx, 'update')


def test_smoke_end_to_end(tmp_path):
  stem = tmp_path / 'suite'
  payload = ns.main(['--smoke', '--families', 'lasso', 'abs_sum', '--out', str(stem)])
  saved = json.loads((tmp_path / 'suite.json').read_text())
  assert saved['command'].startswith('python -m experiments.')
  assert saved['hardware'] and saved['core']
  report = (tmp_path / 'suite.md').read_text()
  assert saved['command'] in report
  for family in ('lasso', 'abs_sum'):
    assert (tmp_path / f'suite_{family}.png').stat().st_size > 0
  methods = {c['method'] for c in payload['cells']}
  assert methods == {'adam', 'sadam', 'adam@eff-lr(sadam)'}
  assert set(payload['verdicts']) == {'lasso', 'abs_sum'}
  assert payload['diagnostics'] == {}  # relu_regression was not run.


def test_scale_multiplies_the_sizes_and_is_recorded(tmp_path):
  payload = ns.main(
    ['--smoke', '--families', 'huber', '--scale', '3', '--out', str(tmp_path / 'suite')]
  )
  assert payload['config']['scale'] == 3
  assert payload['instances']['huber'][0]['d'] == 30  # 3 x 10.
  assert '3x those listed' in (tmp_path / 'suite.md').read_text()


def test_scheduled_methods_against_a_scheduled_baseline(tmp_path):
  import optax  # pylint: disable=g-import-not-at-top

  # --baseline adam-cosine: S-Adam under the same schedule is compared with
  # Adam under it, and the effective-lr control runs the baseline's schedule.
  payload = ns.main([
    '--baseline', 'adam-cosine', '--methods', 'sadam-cosine', '--controls', 'sadam-cosine',
    '--families', 'lasso', '--lrs', '1e-2', '--steps', '40', '--instances', '2',
    '--out', str(tmp_path / 'cos'),
  ])  # fmt: skip
  rows = {c['method']: c for c in payload['cells']}
  assert set(rows) == {'adam-cosine', 'sadam-cosine', 'adam@eff-lr(sadam-cosine)'}
  assert payload['config']['baseline'] == 'adam-cosine'
  assert rows['adam-cosine']['win_rate'] == 1.0 and rows['adam-cosine']['mean_damping'] == 1.0
  # The schedule reaches 0 after `steps` steps: the next one moves nothing.
  w, g = jnp.array([0.3, -0.2]), jnp.array([1.0, -2.0])
  tx = ns.build(ns.METHODS['sadam-cosine'], 0.1, steps=3)
  state = tx.init(w)
  for _ in range(4):
    u, state = tx.update(g, state, w, value_fn=lambda p: jnp.sum(p * p), value=0.13, grad=g)
  np.testing.assert_array_equal(u, 0.0)
  # Optax's own warmup-cosine, at a concrete lr; the suite's accepts a traced one.
  reference = optax.warmup_cosine_decay_schedule(0.0, 0.1, 30, 300)
  ours = jax.jit(lambda lr, c: ns.warmup_cosine(lr, 300)(c))
  for count in (0, 10, 30, 31, 150, 299, 300):
    np.testing.assert_allclose(ours(0.1, count), reference(count), rtol=1e-6, atol=1e-9)


def test_run_suite_api_with_any_transformation():
  import optax  # pylint: disable=g-import-not-at-top

  out = ns.run_suite(
    {'adam': ns.METHODS['adam'], 'sgd': lambda lr: optax.sgd(lr)},
    families=['relu_regression'],
    lrs=[1e-2],
    steps=30,
    instances=1,
    controls=(),
    progress=False,
  )
  rows = {c['method']: c for c in out['cells']}
  assert set(rows) == {'adam', 'sgd'}
  assert rows['adam']['win_rate'] == 1.0
  assert rows['sgd']['mean_damping'] == 1.0
  assert 'damping_away' in out['diagnostics'] or out['diagnostics'] == {}


def test_minibatches_are_the_same_for_every_method_and_recorded(tmp_path):
  import optax  # pylint: disable=g-import-not-at-top

  run = lambda methods, batch: ns.run_suite(
    methods, families=['lasso'], lrs=[1e-2], steps=40, instances=2, controls=(),
    batch=batch, progress=False,
  )  # fmt: skip
  adam = {'adam': ns.METHODS['adam']}
  twice = {'adam': ns.METHODS['adam'], 'again': lambda lr, b1, b2: optax.adam(lr, b1, b2)}
  full, noisy, both = run(adam, None), run(adam, 8), run(twice, 8)
  band = lambda out, m='adam': np.asarray(out['runs']['lasso'][m]['band'])
  np.testing.assert_array_equal(band(both, 'again'), band(both))  # Same draws, same run.
  np.testing.assert_array_equal(band(noisy), band(both))  # Fixed by the seed.
  assert not np.allclose(band(noisy), band(full))
  assert noisy['config']['batch'] == 8 and full['config']['batch'] is None
  with pytest.raises(ValueError, match='mean over examples'):
    ns.run_suite(adam, families=['abs_sum'], steps=5, instances=1, batch=4, progress=False)
  argv = ['--smoke', '--batch', '4', '--families', 'geometric_median']
  assert ns.main(argv + ['--out', str(tmp_path / 'mb')])['config']['batch'] == 4
  assert 'drawn afresh' in (tmp_path / 'mb.md').read_text()


def test_betas_reach_every_method_and_a_method_without_them_fails():
  import optax  # pylint: disable=g-import-not-at-top

  w = jnp.array([0.3, -0.2])
  g = jnp.array([1.0, -2.0])
  scheduled = ('adam-cosine', 'sadam-cosine', 'adam-warmup-cosine', 'sadam-warmup-cosine')
  for name in ('adam', 'sadam', 'sadam-no-release', 'sadam-late') + scheduled:
    tx = ns.build(ns.METHODS[name], 0.1, steps=10, betas=(0.5, 0.6))
    state = tx.init(w)
    mu = optax.tree.get(state, 'mu')
    _, state = tx.update(g, state, w, value_fn=lambda p: jnp.sum(jnp.abs(p)), value=0.5, grad=g)
    np.testing.assert_allclose(optax.tree.get(state, 'mu'), mu + 0.5 * g, err_msg=name)
  with pytest.raises(ValueError, match='b1= and b2='):
    ns.build(lambda lr: optax.sgd(lr), 0.1, steps=10, betas=(0.5, 0.6))
  ns.build(lambda lr: optax.sgd(lr), 0.1, steps=10)  # optax's betas: nothing to pass.


def _cell_bands(methods, family, lr, instances, **options):
  """Each method's bands on the first ``instances`` of ``family`` at one constant lr."""
  out = ns.run_suite(
    {m: ns.METHODS[m] for m in methods},
    families=[family],
    lrs=[lr],
    instances=instances,
    controls=(),
    progress=False,
    **options,
  )
  return {m: np.asarray(out['runs'][family][m]['band'][0]) for m in methods}


def _bands(methods, family, lr, index, **options):
  """Each method's band on instance ``index`` of ``family`` at one constant lr."""
  bands = _cell_bands(methods, family, lr, index + 1, **options)
  return {m: bands[m][index] for m in methods}


@pytest.mark.parametrize(
  'family, lr, betas, index',
  [
    # Huber instance 1 of seed 0, b1 = b2 = 0.95, lr 1e-2 (nonsmooth_suite_wait_b095.md):
    # returned blindly (0.3), what the brake held pushed the iterate away
    # again, 3.9x wider than Adam; with the wait 0.15x.
    ('huber', 1e-2, (0.95, 0.95), 1),
    # Group LASSO instance 0, b1 0.99, lr 3e-2 (nonsmooth_suite_wait_b1_099.md):
    # 0.3 52x wider than Adam, the wait 0.15x.
    ('group_lasso', 3e-2, (0.99, 0.999), 0),
  ],
)
def test_the_wait_keeps_the_band_below_adams_with_held_out_moments(family, lr, betas, index):
  band = _bands(('adam', 'sadam', 'sadam-0.3'), family, lr, index, betas=betas)
  assert band['sadam'] < 0.5 * band['adam']
  assert band['sadam-0.3'] > band['adam']


def test_heavy_momentum_keeps_the_band_below_adams_without_the_uphill_share():
  # 2-D TV denoising instance 2 of seed 0, b1 0.99, lr 3e-2: Adam's momentum carries the iterate
  # past the minimiser for about a hundred steps; 0.6 held those steps back and handed them back
  # later (2.8x Adam's band); dropping the uphill share of what the brake holds (0.7): 0.2x.
  band = _bands(('adam', 'sadam', 'sadam-0.6'), 'tv2d_denoise', 3e-2, 2, betas=(0.99, 0.999))
  assert band['sadam'] < 0.5 * band['adam']
  assert band['sadam-0.6'] > 2 * band['adam']


@pytest.mark.parametrize('family', ['l1_logistic', 'elastic_net'])
def test_under_minibatch_noise_the_default_ends_no_wider_than_adam(family):
  # 16 examples a step, lr 1e-3, seed 0 (nonsmooth_suite_070_batch16_seed0.md): the band is the
  # noise's and Adam is still closing in. Over the first 8 instances the default's median band
  # ratio is 1.0003 and 0.998; Adam at the default's effective lr (a plain lr cut) 1.06 and 1.14.
  band = _cell_bands(('adam', 'sadam'), family, 1e-3, 8, batch=16)
  assert np.median(band['sadam'] / band['adam']) <= 1.005


def test_a_reading_lost_in_rounding_keeps_the_band_below_adams_near_a_float32_minimiser():
  # Huber instance 11 of seed 11, lr 1e-3, 10,000 steps (nonsmooth_suite_fade_10k_s11.md): late
  # in the run the loss changes along most steps by less than its float32 rounding. 0.5 read
  # those steps as smooth and braked only the few it could measure: 6.9x wider than Adam.
  # Keeping the last reading (0.6): 0.23x.
  band = _bands(('adam', 'sadam', 'sadam-0.5'), 'huber', 1e-3, 11, steps=10_000, seed=11)
  assert band['sadam'] < 0.5 * band['adam']
  assert band['sadam-0.5'] > 2 * band['adam']


def test_a_cell_still_closing_in_at_3000_steps_is_narrower_once_adam_settles():
  # L-inf distance instance 2 of seed 0, lr 1e-3 (nonsmooth_suite_062_seed0.md and
  # nonsmooth_suite_070_steps10k_seed0.md): at 3,000 steps Adam is still closing in and the
  # default, whose store returns what it held about a hundred steps late, ends 1.09x Adam's
  # band; over 10,000 steps Adam settles (its band 1.0x its previous window's) and the
  # default ends at 0.16x.
  short = _bands(('adam', 'sadam'), 'linf', 1e-3, 2)
  long = _bands(('adam', 'sadam'), 'linf', 1e-3, 2, steps=10_000)
  assert short['sadam'] > short['adam']
  assert long['sadam'] < 0.5 * long['adam']


def test_sadam_late_is_adam_until_the_last_sixth():
  import optax  # pylint: disable=g-import-not-at-top

  steps = 12
  start = round((1 - ns.LATE_SHARE) * steps)
  loss = lambda w: jnp.sum(jnp.abs(w - 1.0))
  late = ns.build(ns.METHODS['sadam-late'], 0.5, steps=steps)
  adam = optax.with_extra_args_support(optax.adam(0.5))
  w = jnp.array([0.3, -0.2])
  s_late, s_adam = late.init(w), adam.init(w)
  braked = []
  for _ in range(steps):
    g = jax.grad(loss)(w)
    u_late, s_late = late.update(g, s_late, w, value_fn=loss, value=loss(w))
    u_adam, s_adam = adam.update(g, s_adam, w)
    braked.append(not bool(jnp.allclose(u_late, u_adam, rtol=0, atol=0)))
    w = w + u_adam
  assert not any(braked[:start])
  assert any(braked[start:])  # Steps of 0.5 across the kink at 1 are braked.


def test_the_issues_family_with_a_small_l1_term_ends_narrower_than_adam():
  # ReLU regression with non-positive targets and L1 1e-4-1e-3, lr 1e-2, 3,000 steps, the first
  # six instances of seed 0 (nonsmooth_suite_heldout_families_5_seed0.md: 100% of 24 at a median
  # of 0.21): the family and lr of the issue's report, where 0.1 ended 1.5-2.8x wider than Adam.
  band = _cell_bands(('adam', 'sadam'), 'relu_small_l1', 1e-2, 6)
  assert np.all(band['sadam'] < 0.5 * band['adam'])


def test_kinks_off_the_axes_a_run_adam_has_settled_in_that_the_default_is_still_closing_in():
  # Rotated L1 instance 2 of seed 0, lr 1e-2 (nonsmooth_suite_heldout_families_5_seed0.md and
  # _10k_seed0.md): Adam settles by step ~1,200; braked while it travels, the default is still
  # closing in at 3,000 steps (8.8x Adam's band) and ends at 0.22x over 10,000. A brake that
  # waits for Adam to settle (the oracle sadam-late) wins at 3,000: a speed loss, kept as it is.
  short = _bands(('adam', 'sadam', 'sadam-late'), 'rotated_l1', 1e-2, 2)
  long = _bands(('adam', 'sadam'), 'rotated_l1', 1e-2, 2, steps=10_000)
  assert short['sadam'] > 2 * short['adam'] and short['sadam-late'] < short['adam']
  assert long['sadam'] < 0.5 * long['adam']


def test_in_a_wide_dead_cone_the_default_ties_adam_crossing_it_and_wins_once_adam_is_across():
  # ReLU regression with n <= d (a wide cone where every unit is dead and only the L1 term pulls),
  # instances 0 and 1 of seed 0 (nonsmooth_suite_heldout_families_6_seed0.md): at lr 1e-3 Adam is
  # still crossing the cone at 3,000 steps (band 0.77-0.81x its start) and the default ties it
  # (1.001x, 1.003x); at lr 1e-2 Adam is across and the default ends at 0.26-0.28x its band.
  slow = _cell_bands(('adam', 'sadam'), 'relu_dead', 1e-3, 2)
  fast = _cell_bands(('adam', 'sadam'), 'relu_dead', 1e-2, 2)
  np.testing.assert_allclose(slow['sadam'], slow['adam'], rtol=0.01)
  assert np.all(fast['sadam'] < 0.5 * fast['adam'])
