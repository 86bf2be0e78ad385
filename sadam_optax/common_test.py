"""The same checks for every public configuration, as optax's common tests.

Modelled on ``optax/contrib/_common_test.py``: a table of configurations
(:data:`CONFIGS`: sadam, sadamw, paper_sadamw (and its lazy variant),
singularity_aware around sgd and adam, damping_scale chained after
scale_by_adam, both brake rules, every estimator, ``probe_every``, the
quantization-aware transformations) run through one set of parametrized
checks: extra arguments, one compilation, ``optax.tree.map_params``, dtype
stability under ``lax.cond`` and ``lax.scan``, ``optax.MultiSteps``,
``optax.inject_hyperparams``, schedules, serialization (flax, orbax,
pickle), ``jax.vmap`` over seeds, ``lam=0`` against optax, convergence.
The costliest (every dtype, vmap) run on :data:`DISTINCT`, one
configuration per code path, and serialization, ``MultiSteps`` and schedules
on :data:`WITH_PRESET` (those and the paper's preset), to keep the suite's
compile time in bounds.

A check marked ``xfail(strict=True, reason='core: ...')`` states how the
core should behave and does not yet; remove the mark with the fix.
"""

import dataclasses
import functools
import os
import pickle
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sadam_optax
from sadam_optax import lgi
from sadam_optax import quant_aware

# --------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------

# A fixed grid of step 0.25 on the kernel; the bias is not quantized. The
# parabola's minimiser sits on bin centres.
FIXED_GRID = lambda params: {'w': jnp.float32(0.25), 'b': None}


@dataclasses.dataclass(frozen=True)
class Config:
  """One public configuration.

  Attributes:
    name: the test id.
    factory: ``factory(learning_rate=..., lam=..., **kwargs) -> optimizer``
      (no ``lam`` when ``lam`` is None below).
    kwargs: further keywords of ``factory`` (strings, statics).
    learning_rate: for the checks' short runs.
    lam: the brake strength (None: the configuration has no brake).
    reference: ``reference(learning_rate) -> optax optimizer`` equal to the
      configuration at ``lam=0`` (None: no such reference).
    needs_loss: ``update`` needs ``value_fn``.
    has_key: the state holds a typed PRNG key.
    static_args: for ``optax.inject_hyperparams``.
  """

  name: str
  factory: Callable[..., optax.GradientTransformation]
  kwargs: dict = dataclasses.field(default_factory=dict)
  learning_rate: float = 5e-2
  lam: Optional[float] = 2.0
  reference: Optional[Callable[[float], optax.GradientTransformation]] = None
  needs_loss: bool = True
  has_key: bool = True
  static_args: tuple = ()

  def make(self, **overrides):
    kwargs = dict(self.kwargs, learning_rate=self.learning_rate)
    if self.lam is not None:
      kwargs['lam'] = self.lam
    kwargs.update(overrides)
    return self.factory(**kwargs)

  def hyperparams(self):
    """The numeric keywords (injected by ``inject_hyperparams``)."""
    out = dict(self.kwargs, learning_rate=self.learning_rate)
    if self.lam is not None:
      out['lam'] = self.lam
    return out


def _around(inner, learning_rate, lam, rule='exp', estimator='secant'):
  return sadam_optax.singularity_aware(
    inner(learning_rate),
    probe=sadam_optax.lgi_probe(estimator=estimator),
    brake=sadam_optax.damping_scale(lam, rule=rule),
  )


def around_sgd(learning_rate, lam, rule='exp', estimator='secant'):
  """``singularity_aware(optax.sgd(learning_rate))``."""
  return _around(optax.sgd, learning_rate, lam, rule, estimator)


def around_adam(learning_rate, lam, rule='exp', estimator='secant'):
  """``singularity_aware(optax.adam(learning_rate))``."""
  return _around(optax.adam, learning_rate, lam, rule, estimator)


def braked_chain(learning_rate, lam, estimator='secant'):
  """``damping_scale`` chained after ``scale_by_adam`` (reads ``grad=``)."""
  return optax.chain(
    optax.scale_by_adam(),
    sadam_optax.damping_scale(
      lam, probe=sadam_optax.lgi_probe(estimator=estimator), step_size=learning_rate
    ),
    optax.scale_by_learning_rate(learning_rate),
  )


def brake_after_adam(learning_rate, lam, rule='exp', per_tensor=False, grid='fixed'):
  """``chain(adam, scale_by_oscillation)``, lam the brake strength."""
  scale_fn = FIXED_GRID if grid == 'fixed' else quant_aware.absmax_scale_fn(4)
  brake = sadam_optax.damping_scale(lam, rule=rule)
  return optax.chain(
    optax.adam(learning_rate),
    quant_aware.scale_by_oscillation(scale_fn, brake=brake, per_tensor=per_tensor),
  )


def freeze_after_adam(learning_rate):
  return optax.chain(optax.adam(learning_rate), quant_aware.freeze_oscillating(FIXED_GRID))


def dampen_in_adam(learning_rate):
  return optax.chain(
    optax.scale_by_adam(),
    quant_aware.dampen_oscillations(FIXED_GRID),
    optax.scale_by_learning_rate(learning_rate),
  )


def _sadam(estimator='secant', **kwargs):
  return Config(
    f'sadam_{estimator}' + ''.join(f'_{k}{v}' for k, v in kwargs.items()),
    sadam_optax.sadam,
    dict(estimator=estimator, **kwargs),
    reference=optax.adam,
    static_args=('num_probes', 'probe_every')
    if estimator == 'literal' or ('probe_every' in kwargs)
    else (),
  )


CONFIGS = (
  *[_sadam(e) for e in lgi.ESTIMATORS],
  _sadam(rule='compound'),
  _sadam(probe_every=3),
  _sadam('step', probe_every=3),
  Config(
    'sadamw',
    sadam_optax.sadamw,
    dict(weight_decay=1e-4),
    reference=lambda lr: optax.adamw(lr, weight_decay=1e-4),
  ),
  Config(
    'sadamw_trajectory_compound',
    sadam_optax.sadamw,
    dict(estimator='trajectory', rule='compound', weight_decay=1e-4),
    reference=lambda lr: optax.adamw(lr, weight_decay=1e-4),
  ),
  Config(
    'paper_sadamw',
    sadam_optax.paper_sadamw,
    reference=lambda lr: optax.adamw(lr, weight_decay=1e-2),
    static_args=('num_probes',),
  ),
  Config(
    'paper_sadamw_lazy',
    sadam_optax.paper_sadamw,
    dict(lazy=True),
    reference=lambda lr: optax.adamw(lr, weight_decay=1e-2),
    static_args=('num_probes', 'lazy'),
  ),
  Config('around_sgd', around_sgd, learning_rate=0.1, reference=optax.sgd),
  Config(
    'around_sgd_step_compound',
    around_sgd,
    dict(estimator='step', rule='compound'),
    learning_rate=0.1,
    reference=optax.sgd,
  ),
  Config('around_adam', around_adam, reference=optax.adam),
  Config('around_adam_literal', around_adam, dict(estimator='literal'), reference=optax.adam),
  Config('damping_scale_chain', braked_chain, reference=optax.adam),
  Config(
    'damping_scale_chain_trajectory',
    braked_chain,
    dict(estimator='trajectory'),
    reference=optax.adam,
  ),
  Config(
    'oscillation_brake',
    brake_after_adam,
    lam=25.0,
    reference=optax.adam,
    needs_loss=False,
    has_key=False,
  ),
  Config(
    'oscillation_brake_per_tensor_compound_absmax',
    brake_after_adam,
    dict(rule='compound', per_tensor=True, grid='absmax'),
    lam=1.0,
    needs_loss=False,
    has_key=False,
  ),
  Config('freeze_oscillating', freeze_after_adam, lam=None, needs_loss=False, has_key=False),
  Config('dampen_oscillations', dampen_in_adam, lam=None, needs_loss=False, has_key=False),
)
IDS = [c.name for c in CONFIGS]
# One configuration per distinct code path: each estimator, each rule, the
# carried steps of probe_every, each wrapper and chain position, each
# quantization-aware transformation. The costliest checks (every dtype, vmap)
# run on these; the others on the whole table.
DISTINCT = [
  c
  for c in CONFIGS
  if c.name
  in {
    *(f'sadam_{e}' for e in lgi.ESTIMATORS),
    'sadam_secant_rulecompound',
    'sadam_secant_probe_every3',
    'sadamw',
    'paper_sadamw_lazy',
    'around_sgd',
    'damping_scale_chain',
    'oscillation_brake_per_tensor_compound_absmax',
    'freeze_oscillating',
    'dampen_oscillations',
  }
]
# Every kind of state and every way a step is scheduled and accumulated: the
# distinct code paths and the paper's preset. Serialization (5 s a
# configuration on the 2-core CPU, orbax's round trip the costliest),
# MultiSteps and schedules run on these.
WITH_PRESET = DISTINCT + [c for c in CONFIGS if c.name == 'paper_sadamw']
BRAKED = [c for c in CONFIGS if c.lam is not None]
ALIASES = [
  c
  for c in CONFIGS
  if c.factory in (sadam_optax.sadam, sadam_optax.sadamw, sadam_optax.paper_sadamw)
]


# --------------------------------------------------------------------------
# The problems and the train step.
# --------------------------------------------------------------------------

TARGET = {'w': np.array([[1.0, -1.0], [0.5, 2.0]]), 'b': np.array([1.0, -1.0, 0.5])}


def parabola(dtype=jnp.float32):
  """(initial params, target, loss): a smooth quadratic on a dict."""
  target = jax.tree.map(lambda t: jnp.asarray(t, dtype), TARGET)
  init = jax.tree.map(jnp.zeros_like, target)

  # The loss in float32 at least, as mixed-precision training computes it.
  out = jnp.promote_types(dtype, jnp.float32)

  def loss(params):
    sq = jax.tree.map(lambda p, t: jnp.sum(((p - t) ** 2).astype(out)), params, target)
    return sum(jax.tree.leaves(sq))

  return init, target, loss


def train_step(opt, loss, **extra):
  """``step(params, state) -> (params, state, updates)``, not jitted."""

  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = opt.update(
      grads, state, params, value_fn=loss, value=value, grad=grads, **extra
    )
    return optax.apply_updates(params, updates), state, updates

  return step


def run(opt, params, loss, steps, **extra):
  """``steps`` jitted steps (``lax.scan``); final params and state."""
  step = train_step(opt, loss, **extra)

  def body(carry, _):
    params, state, _ = step(*carry)
    return (params, state), None

  (params, state), _ = jax.jit(lambda c: jax.lax.scan(body, c, length=steps))(
    (params, opt.init(params))
  )
  return params, state


def types_of(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _data(x):
  x = jnp.asarray(x)
  return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def assert_trees_equal(a, b):
  """Same structure, dtypes and values (typed keys by their data)."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
    np.testing.assert_array_equal(_data(x), _data(y))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-7):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(_data(x), _data(y), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# The checks.
# --------------------------------------------------------------------------


@pytest.mark.parametrize('config', CONFIGS, ids=IDS)
def test_extra_args_one_compilation_fixed_structure(config):
  """Unexpected keywords are accepted, the ones value_fn names forwarded;
  several steps under jit compile once and keep the state's types."""
  init, _, loss = parabola()
  seen, traces = [], []

  def value_fn(params, batch_scale):
    seen.append(batch_scale)
    return loss(params) * batch_scale

  opt = config.make()

  @jax.jit
  def step(params, state, scale):
    traces.append(1)
    value, grads = jax.value_and_grad(value_fn)(params, scale)
    updates, state = opt.update(
      grads,
      state,
      params,
      value_fn=value_fn,
      value=value,
      grad=grads,
      batch_scale=scale,
      unexpected_extra_args_your_optimizer_doesnt_expect=1,
    )
    return optax.apply_updates(params, updates), state

  params, state = init, opt.init(init)
  types = types_of(state)
  for _ in range(4):
    params, state = step(params, state, jnp.float32(2.0))
    assert types_of(state) == types
  assert len(traces) == 1 and step._cache_size() == 1  # pylint: disable=protected-access
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))
  if config.needs_loss:
    assert seen, 'value_fn was never called'
    assert all(isinstance(s, jax.core.Tracer) for s in seen[1:])  # Forwarded.


@pytest.mark.parametrize('config', CONFIGS, ids=IDS)
def test_tree_map_params(config):
  init, _, _ = parabola()
  opt = config.make()
  state = opt.init(init)
  same = optax.tree.map_params(opt, lambda v: v, state)
  assert_trees_equal(same, state)
  # Every copy of the params (moments, statistics) gets f; nothing else.
  marked = optax.tree.map_params(
    opt, lambda _: 'param', state, transform_non_params=lambda _: 'other'
  )
  labels = jax.tree.leaves(marked)
  assert set(labels) <= {'param', 'other'} and 'other' in labels
  if config.factory is not around_sgd:  # sgd keeps no copy of the params.
    assert 'param' in labels


DTYPES = ('float16', 'bfloat16', 'float32', 'float64')
# bfloat16 (the common mixed-precision type, 8 bits of mantissa) on the
# whole table; every dtype on the distinct code paths.
DTYPE_CASES = [
  pytest.param(c, d, id=f'{c.name}-{d}')
  for c in CONFIGS
  for d in DTYPES
  if d == 'bfloat16' or c in DISTINCT
]


@pytest.mark.parametrize('config, dtype', DTYPE_CASES)
def test_dtypes_stable_under_cond_and_scan(config, dtype):
  """Params keep their dtype, updates have it, the state keeps its types
  through ``lax.cond`` (update or not) and a ``lax.scan`` carry."""
  with jax.enable_x64(dtype == 'float64'):
    dtype = jnp.dtype(dtype)
    init, _, loss = parabola(dtype)
    opt = config.make()
    other = jnp.bfloat16 if dtype == jnp.float16 else jnp.float16

    def body(carry, i):
      params, state = carry
      value, grads = jax.value_and_grad(loss)(params)
      # Confuse the loss's dtype on purpose, as optax's tests do.
      updates, state = jax.lax.cond(
        i % 2 == 0,
        lambda: opt.update(
          grads, state, params, value_fn=loss, value=value.astype(other), grad=grads
        ),
        lambda: (jax.tree.map(jnp.zeros_like, params), state),
      )
      return (optax.apply_updates(params, updates), state), None

    state = opt.init(init)
    (params, new_state), _ = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(3)))((init, state))
    assert types_of(params) == types_of(init)
    assert types_of(new_state) == types_of(state)


@pytest.mark.parametrize('estimator', lgi.ESTIMATORS)
def test_state_types_stable_with_float32_moments_of_bf16_params(estimator):
  params = jax.tree.map(lambda t: jnp.asarray(t, jnp.bfloat16), TARGET)
  loss = lambda p: sum(jnp.sum(jnp.abs(x.astype(jnp.float32) - 0.3)) for x in jax.tree.leaves(p))
  opt = sadam_optax.sadam(1e-2, mu_dtype=jnp.float32, estimator=estimator)
  state = opt.init(params)
  step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p, value_fn=loss))
  _, new_state = step(params, state)
  assert types_of(new_state) == types_of(state)
  assert optax.tree.get(state, 'mu')['w'].dtype == jnp.float32


@pytest.mark.parametrize('config', WITH_PRESET, ids=[c.name for c in WITH_PRESET])
def test_multisteps(config):
  """Accumulates k micro-steps: zero updates in between, one inner step."""
  init, _, loss = parabola()
  opt = optax.MultiSteps(config.make(), every_k_schedule=2)
  step = jax.jit(train_step(opt, loss))
  params, state = init, opt.init(init)
  params, state, updates = step(params, state)
  assert all(np.all(u == 0) for u in jax.tree.leaves(updates))
  for _ in range(3):
    params, state, updates = step(params, state)
  assert int(state.gradient_step) == 2
  assert any(np.any(u != 0) for u in jax.tree.leaves(updates))
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def _inject_cases():
  """CONFIGS, the core's known failures marked."""
  compound = pytest.mark.xfail(
    strict=True,
    reason="core: inject_hyperparams(sadam, rule='compound') "
    'injects min_damping, of which brake_factor takes math.log '
    '(ConcretizationTypeError)',
  )
  del compound  # Fixed in the core: brake_factor takes jnp.log.
  return [pytest.param(c, id=c.name) for c in CONFIGS]


@pytest.mark.parametrize('config', _inject_cases())
def test_inject_hyperparams(config):
  """Injected numeric hyperparameters give the plain optimizer's step."""
  init, _, loss = parabola()
  opt = config.make()
  injected = optax.inject_hyperparams(config.factory, static_args=config.static_args)(
    **config.hyperparams()
  )
  grads = jax.grad(loss)(init)
  update = lambda o: jax.jit(functools.partial(o.update, value_fn=loss, grad=grads))
  updates, state = update(opt)(grads, opt.init(init), init)
  updates_i, state_i = update(injected)(grads, injected.init(init), init)
  assert_trees_close(updates_i, updates)
  assert_trees_close(state_i.inner_state, state)
  assert 'learning_rate' in state_i.hyperparams
  assert config.lam is None or 'lam' in state_i.hyperparams


@pytest.mark.parametrize('config', WITH_PRESET, ids=[c.name for c in WITH_PRESET])
def test_schedules_equal_constants(config):
  """A constant schedule for learning_rate (and lam) is the constant."""
  init, _, loss = parabola()
  plain = config.make()
  overrides = {'learning_rate': optax.constant_schedule(config.learning_rate)}
  if config.lam is not None:
    overrides['lam'] = optax.constant_schedule(config.lam)
  scheduled = config.make(**overrides)
  a, _ = run(plain, init, loss, 5)
  b, _ = run(scheduled, init, loss, 5)
  assert_trees_close(a, b, rtol=1e-6)


def _orbax_save_restore(state, directory):
  ocp = pytest.importorskip('orbax.checkpoint')
  path = os.path.join(directory, 'state')
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, state)
    checkpointer.wait_until_finished()
    return checkpointer.restore(path, jax.eval_shape(lambda: state))


@pytest.mark.parametrize('config', WITH_PRESET, ids=[c.name for c in WITH_PRESET])
def test_serialization_round_trips(config, tmp_path):
  """State after 2 steps through flax, pickle and orbax; one more step from
  each restored state equals the step from the original, bit for bit."""
  serialization = pytest.importorskip('flax.serialization')
  init, _, loss = parabola()
  opt = config.make()
  params, state = run(opt, init, loss, 2)
  step = jax.jit(train_step(opt, loss))
  expected = step(params, state)[:2]
  round_trips = {
    'flax': lambda s: serialization.from_bytes(s, serialization.to_bytes(s)),
    'pickle': lambda s: pickle.loads(pickle.dumps(s)),
    'orbax': lambda s: _orbax_save_restore(s, tmp_path),
  }
  for name, save_restore in round_trips.items():
    restored = save_restore(state)
    try:
      assert_trees_equal(restored, state)
      assert_trees_equal(step(params, restored)[:2], expected)
    except AssertionError as e:
      raise AssertionError(f'{name} round trip: {e}') from e


@pytest.mark.parametrize('config', DISTINCT, ids=[c.name for c in DISTINCT])
def test_vmap_over_seeds(config):
  """Independent runs vmapped over a seed equal the runs one by one."""
  _, target, loss = parabola()
  opt = config.make()
  step = train_step(opt, loss)

  def run_seed(seed):
    params = jax.tree.map(
      lambda t: jax.random.normal(jax.random.fold_in(jax.random.key(seed), t.size), t.shape), target
    )
    state = opt.init(params)
    for _ in range(3):
      params, state, _ = step(params, state)
    return params, state

  seeds = jnp.arange(3)
  batched = jax.jit(jax.vmap(run_seed))(seeds)
  one = jax.jit(run_seed)
  for i in range(len(seeds)):
    assert_trees_close(jax.tree.map(lambda b: b[i], batched), one(seeds[i]), atol=1e-6)


@pytest.mark.parametrize(
  'config', [c for c in BRAKED if c.reference], ids=[c.name for c in BRAKED if c.reference]
)
def test_lam_zero_equals_optax_bit_for_bit(config):
  """The brake off (lam=0) leaves exactly the wrapped optax optimizer."""
  init, _, loss = parabola()
  lr = config.learning_rate
  ours, _ = run(config.make(lam=0.0), init, loss, 10)
  ref, _ = run(config.reference(lr), init, loss, 10)
  jax.tree.map(np.testing.assert_array_equal, ours, ref)
  # And the brake on changes the trajectory: the comparison is not vacuous.
  # The first step (probed under any probe_every) crosses the kink at 0.02;
  # the quantized kernel chatters across 0.375, a bin boundary of FIXED_GRID.
  at = 0.02 if config.has_key else 0.375
  kink = lambda p: sum(jnp.sum(jnp.abs(x - at)) for x in jax.tree.leaves(p))
  on, _ = run(config.make(lam=50.0), init, kink, 30)
  off, _ = run(config.make(lam=0.0), init, kink, 30)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(on), jax.tree.leaves(off)))


@pytest.mark.parametrize('config', CONFIGS, ids=IDS)
def test_converges_on_parabola(config):
  init, target, loss = parabola()
  params, state = run(config.make(), init, loss, 2000)
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=5e-2), params, target)
  if config.has_key:
    assert int(optax.tree.get(state, 'nonfinite_probes')) == 0


# --------------------------------------------------------------------------
# Bad or unusual input to the aliases.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  'lam',
  [
    pytest.param(-1.0, id='float'),
    pytest.param(jnp.float32(-1.0), id='jax_array'),
    pytest.param(np.float32(-1.0), id='numpy_scalar'),
    pytest.param(float('nan'), id='nan'),
    pytest.param(jnp.float32(np.nan), id='nan_array'),
    pytest.param(float('inf'), id='inf'),
    pytest.param(np.float32(np.inf), id='inf_numpy'),
    pytest.param(optax.linear_schedule(-1.0, 1.0, 10), id='schedule'),
  ],
)
@pytest.mark.parametrize('factory', [sadam_optax.sadam, sadam_optax.sadamw])
def test_bad_lam_raises_value_error_naming_it(factory, lam):
  with pytest.raises(ValueError, match='lam'):
    factory(1e-3, lam=lam)


def test_numpy_integer_num_probes_is_an_int():
  w = jnp.linspace(-1.0, 1.0, 5)
  loss = lambda p: jnp.sum(jnp.abs(p))
  states = []
  for n in (8, np.int64(8)):
    opt = sadam_optax.sadam(1e-2, estimator='literal', num_probes=n)
    states.append(opt.update(w, opt.init(w), w, value_fn=loss)[1])
  assert_trees_equal(*states)


@pytest.mark.parametrize('estimator', ['secant', 'step'])
def test_float64_params_keep_their_precision(estimator):
  """A smooth float64 quadratic far from 0, with steps below float32's
  resolution there: rho must read smooth (float32 probes read a kink)."""
  with jax.enable_x64(True):
    centre = jnp.full(4, 1000.0, jnp.float64)
    loss = lambda w: 0.5 * jnp.sum((w - centre - 0.5) ** 2)
    w = centre
    opt = sadam_optax.sadam(1e-6, estimator=estimator)
    _, state = jax.jit(lambda w: opt.update(jax.grad(loss)(w), opt.init(w), w, value_fn=loss))(w)
    assert float(optax.tree.get(state, 'rho')) < 0.1


def test_complex_params_are_handled_or_refused_clearly():
  c = jnp.array([1.0 + 2.0j, -0.5 - 1.0j])
  loss = lambda w: jnp.sum(jnp.abs(w - c) ** 2)
  w = jnp.zeros(2, jnp.complex64)
  opt = sadam_optax.sadam(1e-2)
  try:
    _, state = opt.update(jnp.conj(jax.grad(loss)(w)), opt.init(w), w, value_fn=loss)
  except (TypeError, ValueError) as e:
    assert 'complex' in str(e)
    return
  assert float(optax.tree.get(state, 'rho')) < 0.1  # A smooth loss.
  updates, _ = opt.update(jnp.conj(jax.grad(loss)(w)), state, w, value_fn=loss)
  assert updates.dtype == jnp.complex64 and np.all(np.imag(updates) != 0)


@pytest.mark.parametrize(
  'estimator, scale',
  [
    ('secant', 1e18),
    ('step', 1e18),
    ('literal', 1e20),
    ('trajectory', 1e18),
  ],
)
def test_huge_finite_losses_give_finite_updates(estimator, scale):
  """Finite loss and gradient where optax.adam is finite: so are we."""
  loss = lambda w: scale * jnp.sum(jnp.abs(w - 1.0))
  w = jnp.zeros(1024)
  value, g = jax.value_and_grad(loss)(w)
  assert np.isfinite(float(value)) and np.all(np.isfinite(g))
  opt = sadam_optax.sadam(1e-2, estimator=estimator)
  state = opt.init(w)
  for _ in range(2):
    value, g = jax.value_and_grad(loss)(w)
    u, state = opt.update(g, state, w, value_fn=loss, value=value)
    assert np.all(np.isfinite(u))
    w = optax.apply_updates(w, u)
  assert 0 < float(optax.tree.get(state, 'damping')) <= 1
  assert int(optax.tree.get(state, 'nonfinite_probes')) == 0


def test_table_covers_every_public_configuration():
  names = ' '.join(IDS)
  for estimator in lgi.ESTIMATORS:
    assert f'sadam_{estimator}' in names
  for needle in (
    'compound',
    'probe_every3',
    'sadamw',
    'paper_sadamw',
    'around_sgd',
    'around_adam',
    'damping_scale_chain',
    'oscillation_brake',
    'freeze_oscillating',
    'dampen_oscillations',
  ):
    assert needle in names
  assert len(set(IDS)) == len(IDS)
