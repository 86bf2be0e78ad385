"""S-Adam in Flax training loops: nnx.Optimizer and the linen TrainState helper."""

import flax
import flax.linen as nn
import flax.training.train_state
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn import datasets

import sadam_optax
from sadam_optax import flax_utils


@pytest.fixture(scope='module')
def digits():
  """Real 8x8 digits (bundled with scikit-learn), as NHWC float images."""
  x, y = datasets.load_digits(return_X_y=True)
  x = (x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
  return jnp.asarray(x[:1024].reshape(16, 64, 8, 8, 1)), jnp.asarray(
    y[:1024].reshape(16, 64).astype(np.int32)
  )


def xent(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


class LinenCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


class NnxCNN(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.dense = nnx.Linear(4 * 4 * 8, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(nnx.relu(self.conv(x)), (2, 2), (2, 2))
    return self.dense(x.reshape(x.shape[0], -1))


def test_linen_train_state_helper_trains(digits):
  xs, ys = digits
  model = LinenCNN()
  state = flax_utils.TrainState.create(
    apply_fn=model.apply, params=model.init(jax.random.key(0), xs[0]), tx=sadam_optax.sadamw(1e-2)
  )

  @jax.jit
  def step(state, x, y):
    loss_of = lambda p: xent(state.apply_fn(p, x), y)
    loss, grads = jax.value_and_grad(loss_of)(state.params)
    return state.apply_gradients(grads=grads, value_fn=loss_of), loss

  losses = []
  for _ in range(3):
    for x, y in zip(xs, ys):
      state, loss = step(state, x, y)
      losses.append(float(loss))
  assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:4])
  assert int(state.step) == 48
  assert 0 < float(optax.tree.get(state.opt_state, 'damping')) <= 1


def test_linen_functional_helper_matches_subclass(digits):
  xs, ys = digits
  model = LinenCNN()
  params = model.init(jax.random.key(0), xs[0])
  loss_of = lambda p: xent(model.apply(p, xs[0]), ys[0])
  grads = jax.grad(loss_of)(params)
  tx = sadam_optax.sadamw(3e-3)
  plain = flax.training.train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  ours = flax_utils.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  a = flax_utils.apply_gradients(plain, grads=grads, value_fn=loss_of)
  b = ours.apply_gradients(grads=grads, value_fn=loss_of)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_plain_train_state_drops_value_fn_with_a_clear_error(digits):
  xs, ys = digits
  model = LinenCNN()
  params = model.init(jax.random.key(0), xs[0])
  state = flax.training.train_state.TrainState.create(
    apply_fn=model.apply, params=params, tx=sadam_optax.sadamw(1e-2)
  )
  with pytest.raises(ValueError, match='value_fn.*flax_utils.TrainState'):
    state.apply_gradients(grads=params)


def test_nnx_optimizer_trains(digits):
  xs, ys = digits
  model = NnxCNN(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, sadam_optax.sadam(1e-2), wrt=nnx.Param)
  loss_fn = lambda m, x, y: xent(m(x), y)

  @nnx.jit
  def step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, value_fn=flax_utils.nnx_value_fn(model, loss_fn, x, y))
    return loss

  losses = [float(step(model, optimizer, x, y)) for _ in range(3) for x, y in zip(xs, ys)]
  assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:4])
  assert 0 < float(optax.tree.get(optimizer.opt_state, 'damping')) <= 1


# --------------------------------------------------------------------------
# Train-mode layers: value_fn is a pure function of the parameters.
# --------------------------------------------------------------------------


class NnxTrainMode(nnx.Module):
  """BatchNorm and Dropout in train mode: both mutate state when called."""

  def __init__(self, rngs, rate=0.5):
    self.l1 = nnx.Linear(4, 16, rngs=rngs)
    self.bn = nnx.BatchNorm(16, rngs=rngs)
    self.drop = nnx.Dropout(rate, rngs=rngs)
    self.l2 = nnx.Linear(16, 1, rngs=rngs)

  def __call__(self, x):
    return self.l2(self.drop(nnx.relu(self.bn(self.l1(x)))))


def mse(model, x, y):
  return jnp.mean((model(x) - y) ** 2)


def regression_batch():
  x = jax.random.normal(jax.random.key(0), (32, 4))
  return x, jnp.sin(x[:, :1])


def nnx_params(model):
  return nnx.as_pure(nnx.state(model, nnx.Param))


@pytest.mark.parametrize('jit', [False, True], ids=['eager', 'nnx_jit'])
def test_nnx_dropout_and_batchnorm_train(jit):
  """Formerly TraceContextError: the probes mutated the model's state."""
  x, y = regression_batch()
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  optimizer = nnx.Optimizer(model, sadam_optax.sadamw(1e-2), wrt=nnx.Param)

  def step(model, optimizer, x, y):
    value_fn = flax_utils.nnx_value_fn(model, mse, x, y)  # Before the grad.
    loss, grads = nnx.value_and_grad(mse)(model, x, y)
    optimizer.update(model, grads, value_fn=value_fn, value=loss)
    return loss

  step = nnx.jit(step) if jit else step
  counts = []
  for _ in range(3):
    assert np.isfinite(float(step(model, optimizer, x, y)))
    counts.append(int(model.drop.rngs.count[...]))
  # One draw per gradient pass; the probes drew nothing from the model.
  assert counts == [1, 2, 3]
  assert 0 < float(optax.tree.get(optimizer.opt_state, 'damping')) <= 1


@pytest.mark.parametrize('jit', [False, True], ids=['eager', 'nnx_jit'])
def test_nnx_closure_over_a_train_mode_model_names_nnx_value_fn(jit):
  # The slip the guide warns of: value_fn closes over the model. With
  # BatchNorm and Dropout, tracing it mutates the model from another trace
  # level, which nnx refuses with an error that says nothing of S-Adam.
  x, y = regression_batch()
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  optimizer = nnx.Optimizer(model, sadam_optax.sadamw(1e-2), wrt=nnx.Param)

  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(mse)(model, x, y)
    optimizer.update(model, grads, value_fn=lambda p: mse(model, x, y), value=loss)

  with pytest.raises(ValueError, match='nnx_value_fn'):
    (nnx.jit(step) if jit else step)(model, optimizer)


def test_nnx_value_fn_uses_the_gradients_mask_and_batch_statistics():
  x, y = regression_batch()
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  params = nnx_params(model)
  running = nnx.as_pure(nnx.state(model, nnx.BatchStat))
  value_fn = flax_utils.nnx_value_fn(model, mse, x, y)
  loss, _ = nnx.value_and_grad(mse)(model, x, y)
  # The gradient's forward pass, mask included: equal bit for bit, and at
  # every call (a pure function of the parameters).
  assert float(value_fn(params)) == float(loss) == float(value_fn(params))
  # The probes never touch the running averages (the gradient pass does).
  after_grad = nnx.as_pure(nnx.state(model, nnx.BatchStat))
  value_fn(jax.tree.map(lambda p: p + 0.1, params))
  jax.tree.map(
    np.testing.assert_array_equal, after_grad, nnx.as_pure(nnx.state(model, nnx.BatchStat))
  )
  assert not np.array_equal(after_grad['bn']['mean'], running['bn']['mean'])
  # BatchNorm reads the batch's statistics: a shifted batch normalises away.
  shifted = flax_utils.nnx_value_fn(model, lambda m, x: jnp.mean(m.bn(m.l1(x))), x)
  np.testing.assert_allclose(float(shifted(params)), 0.0, atol=1e-5)


def test_nnx_value_and_grad_is_consistent_and_updates_the_model():
  x, y = regression_batch()
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  params = nnx_params(model)
  loss, grads, value_fn = flax_utils.nnx_value_and_grad(mse, model, x, y)
  assert float(value_fn(params)) == float(loss)
  # The same gradient as nnx.value_and_grad on an identical model.
  twin = NnxTrainMode(nnx.Rngs(0, dropout=1))
  loss2, grads2 = nnx.value_and_grad(mse)(twin, x, y)
  assert float(loss2) == float(loss)
  jax.tree.map(np.testing.assert_array_equal, nnx.as_pure(grads), nnx.as_pure(grads2))
  assert int(model.drop.rngs.count[...]) == 1  # The model moved on.
  jax.tree.map(
    np.testing.assert_array_equal,
    nnx.as_pure(nnx.state(model, nnx.BatchStat)),
    nnx.as_pure(nnx.state(twin, nnx.BatchStat)),
  )


class NnxCallRngs(nnx.Module):
  """Dropout whose RNG streams come at call time, ``model(x, rngs=rngs)``."""

  def __init__(self, rngs):
    self.l1 = nnx.Linear(4, 16, rngs=rngs)
    self.drop = nnx.Dropout(0.5)
    self.l2 = nnx.Linear(16, 1, rngs=rngs)

  def __call__(self, x, rngs=None):
    return self.l2(self.drop(nnx.relu(self.l1(x)), rngs=rngs))


def mse_call_rngs(model, x, y, rngs):
  return jnp.mean((model(x, rngs=rngs) - y) ** 2)


def test_nnx_rngs_passed_to_the_loss_are_snapshotted_like_the_models_state():
  """Formerly a TraceContextError (helper) and a misleading closure error (by hand)."""
  x, y = regression_batch()
  model, rngs = NnxCallRngs(nnx.Rngs(0)), nnx.Rngs(dropout=5)
  twin, twin_rngs = NnxCallRngs(nnx.Rngs(0)), nnx.Rngs(dropout=5)
  params = nnx_params(model)
  loss, grads, value_fn = flax_utils.nnx_value_and_grad(mse_call_rngs, model, x, y, rngs)
  # The gradient of nnx.value_and_grad, and the caller's streams moved on as with it.
  loss2, grads2 = nnx.value_and_grad(mse_call_rngs)(twin, x, y, twin_rngs)
  assert float(loss) == float(loss2)
  jax.tree.map(np.testing.assert_array_equal, nnx.as_pure(grads), nnx.as_pure(grads2))
  assert int(rngs.dropout.count[...]) == int(twin_rngs.dropout.count[...]) == 1
  # The probes read the gradient's mask, at every call, and leave the streams alone.
  assert float(value_fn(params)) == float(loss) == float(value_fn(params))
  assert int(rngs.dropout.count[...]) == 1
  # By hand: the value_fn built before the gradient's pass reads its mask.
  by_hand = flax_utils.nnx_value_fn(model, mse_call_rngs, x, y, rngs)
  loss3 = nnx.value_and_grad(mse_call_rngs)(model, x, y, rngs)[0]
  assert float(by_hand(nnx_params(model))) == float(loss3) != float(loss)
  # And it trains under nnx.jit with the optimizer.
  optimizer = nnx.Optimizer(model, sadam_optax.sadamw(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, rngs):
    loss, grads, value_fn = flax_utils.nnx_value_and_grad(
      mse_call_rngs, model, x, y, rngs, wrt=optimizer.wrt
    )
    optimizer.update(model, grads, value_fn=value_fn, value=loss)
    return loss

  losses = [float(step(model, optimizer, rngs)) for _ in range(20)]
  assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5])
  assert int(rngs.dropout.count[...]) == 2 + 20


@pytest.mark.parametrize('k', [1, 2])
def test_every_k_refuses_nnx_objects_under_jax_jit_and_trains_them_under_nnx_jit(k):
  """Formerly jax.jit silently dropped the step's writes: nothing trained."""
  x, y = regression_batch()

  def train(every, probe_every=1):
    model = NnxTrainMode(nnx.Rngs(0, dropout=1))
    optimizer = nnx.Optimizer(
      model, sadam_optax.sadamw(3e-2, probe_every=probe_every), wrt=nnx.Param
    )

    def train_step(model, optimizer, *, probe_now=None):
      loss, grads, value_fn = flax_utils.nnx_value_and_grad(mse, model, x, y, wrt=optimizer.wrt)
      optimizer.update(model, grads, value_fn=value_fn, value=loss, probe_now=probe_now)
      return loss

    step = every(train_step)
    return [float(step(i, model, optimizer)) for i in range(6)], optimizer

  with pytest.raises(TypeError, match=r'jit=nnx\.jit'):
    train(lambda fn: sadam_optax.every_k(fn, k))
  losses, optimizer = train(lambda fn: sadam_optax.every_k(fn, k, jit=nnx.jit))
  assert int(optimizer.step[...]) == 6 and losses[-1] < losses[0]
  # The trajectory of probe_every=k in one compiled step.
  same, _ = train(lambda fn: lambda i, *a: nnx.jit(fn)(*a), probe_every=k)
  np.testing.assert_allclose(losses, same, rtol=1e-6)


def test_nnx_fresh_dropout_draws_a_mask_per_point():
  x, y = regression_batch()
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  params = nnx_params(model)
  same = flax_utils.nnx_value_fn(model, mse, x, y)
  fresh = flax_utils.nnx_value_fn(model, mse, x, y, fresh_dropout=True)
  nudged = jax.tree.map(lambda p: p * (1 + 1e-6), params)
  # Same point, same mask; another point, another mask (the loss jumps by
  # far more than the nudge could move it).
  assert float(fresh(params)) == float(fresh(params))
  assert abs(float(fresh(nudged)) - float(fresh(params))) > 1e-3
  assert abs(float(same(nudged)) - float(same(params))) < 1e-4
  assert float(fresh(params)) != float(same(params))
  # It trains under nnx.jit; the secant reading sees the masks change.
  optimizer = nnx.Optimizer(model, sadam_optax.sadamw(1e-2, estimator='secant'), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer):
    loss, grads, value_fn = flax_utils.nnx_value_and_grad(mse, model, x, y, fresh_dropout=True)
    optimizer.update(model, grads, value_fn=value_fn, value=loss)
    return optax.tree.get(optimizer.opt_state, 'rho')

  rhos = [float(step(model, optimizer)) for _ in range(3)]
  assert all(np.isfinite(rhos)) and max(rhos) > 0


def test_nnx_wrt_mismatch_names_wrt():
  x, y = regression_batch()
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  optimizer = nnx.Optimizer(model, sadam_optax.sadamw(1e-2), wrt=nnx.Param)
  value_fn = flax_utils.nnx_value_fn(model, mse, x, y, wrt=(nnx.Param, nnx.BatchStat))
  grads = nnx.grad(mse)(model, x, y)
  with pytest.raises(ValueError, match=r'wrt=.*optimizer\.wrt.*bn/mean'):
    optimizer.update(model, grads, value_fn=value_fn)


class LinenTrainMode(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x)))
    return nn.Dense(1)(nn.Dropout(0.5, deterministic=not train)(x))


def test_linen_value_fn_with_batch_stats_and_dropout():
  x, y = regression_batch()
  model = LinenTrainMode()
  variables = model.init(jax.random.key(0), x, train=False)
  params, stats = variables['params'], {'batch_stats': variables['batch_stats']}
  loss_of = lambda out: jnp.mean((out - y) ** 2)
  key = jax.random.key(3)
  loss, grads, value_fn, new = flax_utils.linen_value_and_grad(
    model.apply, loss_of, params, x, variables=stats, rngs={'dropout': key}, train=True
  )
  # The gradient's own forward pass, and nothing mutated by the probes.
  assert float(value_fn(params)) == float(loss)
  manual = lambda p: loss_of(
    model.apply(
      {'params': p, **stats}, x, train=True, rngs={'dropout': key}, mutable=['batch_stats']
    )[0]
  )
  assert float(manual(params)) == float(loss)
  jax.tree.map(np.testing.assert_array_equal, grads, jax.grad(manual)(params))
  assert set(new) == {'batch_stats'}
  assert not np.array_equal(
    new['batch_stats']['BatchNorm_0']['mean'], stats['batch_stats']['BatchNorm_0']['mean']
  )
  fresh = flax_utils.linen_value_fn(
    model.apply, loss_of, x, variables=stats, rngs={'dropout': key}, fresh_dropout=True, train=True
  )
  assert float(fresh(params)) == float(fresh(params)) != float(loss)


def test_train_state_forwards_value_and_grad_and_replaces_fields():
  """value= and grad= reach tx.update; state fields are replace-d."""
  x, y = regression_batch()
  model = LinenTrainMode()
  variables = model.init(jax.random.key(0), x, train=False)

  class State(flax_utils.TrainState):
    batch_stats: dict

  tx = sadam_optax.sadamw(0.1, estimator='secant')
  state = State.create(
    apply_fn=model.apply, params=variables['params'], tx=tx, batch_stats=variables['batch_stats']
  )
  loss_of = lambda p: jnp.mean(
    jnp.abs(
      model.apply(  # Kinks: rho > 0.
        {'params': p, 'batch_stats': state.batch_stats}, x, train=False
      )
      - y
    )
  )
  loss, grads = jax.value_and_grad(loss_of)(state.params)
  marker = jax.tree.map(jnp.zeros_like, variables['batch_stats'])
  # Scaled updates, the true gradient in grad= and a shifted value=: both
  # change rho, so rho shows that they were forwarded.
  scaled = jax.tree.map(lambda g: g / 4, grads)
  kwargs = dict(value_fn=loss_of, value=loss + 0.01, grad=grads)
  new = jax.jit(lambda s: s.apply_gradients(grads=scaled, batch_stats=marker, **kwargs))(state)
  rho = lambda s: float(optax.tree.get(s, 'rho'))
  _, expected = tx.update(scaled, state.opt_state, state.params, **kwargs)
  _, plain = tx.update(scaled, state.opt_state, state.params, value_fn=loss_of)
  assert rho(new.opt_state) == pytest.approx(rho(expected), rel=1e-5)
  assert rho(new.opt_state) != pytest.approx(rho(plain), rel=1e-2)
  jax.tree.map(np.testing.assert_array_equal, new.batch_stats, marker)
  assert int(new.step) == 1


# --------------------------------------------------------------------------
# apply_gradients never drops a keyword silently.
# --------------------------------------------------------------------------


def linen_train_mode_setup():
  x, y = regression_batch()
  model = LinenTrainMode()
  variables = model.init(jax.random.key(0), x, train=False)
  loss_of = lambda out: jnp.mean((out - y) ** 2)
  return model, variables, x, loss_of


class LinenState(flax_utils.TrainState):
  batch_stats: dict


def test_train_state_without_the_field_refuses_batch_stats():
  """Formerly dropped silently: batch_stats went to tx.update, which ignored it."""
  model, variables, x, loss_of = linen_train_mode_setup()
  tx = sadam_optax.sadamw(1e-2)
  state = flax_utils.TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx)
  stats = {'batch_stats': variables['batch_stats']}
  loss, grads, value_fn, new_vars = flax_utils.linen_value_and_grad(
    model.apply,
    loss_of,
    state.params,
    x,
    variables=stats,
    rngs={'dropout': jax.random.key(1)},
    train=True,
  )
  kwargs = dict(grads=grads, value_fn=value_fn, value=loss, **new_vars)
  match = r"'batch_stats'.*class State\(sadam_optax\.flax_utils\.TrainState\).*update_kwargs"
  with pytest.raises(TypeError, match=match):
    state.apply_gradients(**kwargs)
  with pytest.raises(TypeError, match=match):
    jax.jit(lambda s: s.apply_gradients(**kwargs))(state)
  # The module-level helper, on flax's own TrainState, and the splitter.
  plain = flax.training.train_state.TrainState.create(
    apply_fn=model.apply, params=variables['params'], tx=tx
  )
  with pytest.raises(TypeError, match=match):
    flax_utils.apply_gradients(plain, **kwargs)
  with pytest.raises(TypeError, match="'batch_stats'"):
    flax_utils.split_state_kwargs(state, new_vars)
  # Routed explicitly, it reaches tx.update (which ignores it), as asked.
  explicit = state.apply_gradients(
    grads=grads, value_fn=value_fn, value=loss, update_kwargs=new_vars
  )
  expected = flax_utils.apply_gradients(state, grads=grads, value_fn=value_fn, value=loss)
  jax.tree.map(np.testing.assert_array_equal, explicit.params, expected.params)
  # apply_gradients computes step, params and opt_state: a keyword cannot set them.
  with pytest.raises(TypeError, match="'params'.*update_kwargs"):
    state.apply_gradients(grads=grads, value_fn=value_fn, params=state.params)


def test_train_state_forwards_the_keywords_update_reads():
  """value_fn, value, grad, probe_now and the keywords value_fn takes."""
  model, variables, x, loss_of = linen_train_mode_setup()
  tx = sadam_optax.sadamw(0.1, estimator='secant')
  state = flax_utils.TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx)
  stats = {'batch_stats': variables['batch_stats']}

  def value_fn(p, shift=0.0):
    out = model.apply({'params': p, **stats}, x, train=False)
    return jnp.mean(jnp.abs(out)) + shift * jnp.sum(p['Dense_1']['bias'])

  loss, grads = jax.value_and_grad(value_fn)(state.params)
  kwargs = dict(value_fn=value_fn, value=loss, grad=grads, probe_now=True, shift=3.0)
  new = state.apply_gradients(grads=grads, **kwargs)
  _, expected = tx.update(grads, state.opt_state, state.params, **kwargs)
  _, unshifted = tx.update(grads, state.opt_state, state.params, **{**kwargs, 'shift': 0.0})
  rho = lambda s: float(optax.tree.get(s, 'rho'))
  assert rho(new.opt_state) == rho(expected) != rho(unshifted)
  # A keyword the value_fn does not take is refused.
  with pytest.raises(TypeError, match="'scale'"):
    state.apply_gradients(grads=grads, value_fn=value_fn, scale=2.0)


def test_module_apply_gradients_replaces_fields_of_flax_train_state():
  """Formerly forwarded to tx.update and lost: fields are replace-d."""
  model, variables, x, loss_of = linen_train_mode_setup()

  class State(flax.training.train_state.TrainState):
    batch_stats: dict

  state = State.create(
    apply_fn=model.apply,
    params=variables['params'],
    tx=sadam_optax.sadamw(1e-2),
    batch_stats=variables['batch_stats'],
  )
  loss, grads, value_fn, new_vars = flax_utils.linen_value_and_grad(
    model.apply,
    loss_of,
    state.params,
    x,
    variables={'batch_stats': state.batch_stats},
    rngs={'dropout': jax.random.key(1)},
    train=True,
  )
  new = flax_utils.apply_gradients(state, grads=grads, value_fn=value_fn, value=loss, **new_vars)
  jax.tree.map(np.testing.assert_array_equal, new.batch_stats, new_vars['batch_stats'])
  assert int(new.step) == 1


def test_linen_value_and_grad_docstring_example_keeps_batch_stats():
  # The docstring's train step (train_linen's, with the default estimator): the
  # running statistics move on every step.
  _, variables, _, _ = linen_train_mode_setup()
  _, states = train_linen(False, steps=3, estimator='uphill')
  means = [variables['batch_stats']['BatchNorm_0']['mean']]
  means += [state.batch_stats['BatchNorm_0']['mean'] for state in states]
  assert all(not np.array_equal(a, b) for a, b in zip(means, means[1:]))


# --------------------------------------------------------------------------
# has_aux: loss_fn -> (loss, aux), as in the Flax tutorials.
# --------------------------------------------------------------------------


def mse_and_predictions(model, x, y):
  pred = model(x)
  return jnp.mean((pred - y) ** 2), pred


def train_nnx(has_aux, steps=4):
  x, y = regression_batch()
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  optimizer = nnx.Optimizer(model, sadam_optax.sadamw(1e-2, estimator='secant'), wrt=nnx.Param)
  loss_fn = mse_and_predictions if has_aux else mse

  @nnx.jit
  def step(model, optimizer):
    out, grads, value_fn = flax_utils.nnx_value_and_grad(
      loss_fn, model, x, y, wrt=optimizer.wrt, has_aux=has_aux
    )
    loss = out[0] if has_aux else out
    optimizer.update(model, grads, value_fn=value_fn, value=loss)
    return out, optax.tree.get(optimizer.opt_state, 'damping')

  outs = [step(model, optimizer) for _ in range(steps)]
  return outs, model


def test_nnx_value_and_grad_has_aux_trains_like_the_loss_alone():
  x, y = regression_batch()
  with_aux, model_aux = train_nnx(True)
  plain, model_plain = train_nnx(False)
  for ((loss, pred), damping), (plain_loss, plain_damping) in zip(with_aux, plain):
    assert pred.shape == (32, 1) and loss.shape == ()
    assert float(loss) == float(plain_loss) and float(damping) == float(plain_damping)
  assert [float(o[0][0]) for o in with_aux] == [float(o[0]) for o in plain]
  jax.tree.map(np.testing.assert_array_equal, nnx_params(model_aux), nnx_params(model_plain))
  # The value_fn returns the loss alone, the gradient pass's own.
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  params = nnx_params(model)
  (loss, pred), grads, value_fn = flax_utils.nnx_value_and_grad(
    mse_and_predictions, model, x, y, has_aux=True
  )
  assert value_fn(params).shape == () and float(value_fn(params)) == float(loss)
  np.testing.assert_allclose(float(jnp.mean((pred - y) ** 2)), float(loss), rtol=1e-6)
  value_fn = flax_utils.nnx_value_fn(model, mse_and_predictions, x, y, has_aux=True)
  assert value_fn(nnx_params(model)).shape == ()


def test_nnx_tuple_loss_without_has_aux_says_so():
  x, y = regression_batch()
  model = NnxTrainMode(nnx.Rngs(0, dropout=1))
  with pytest.raises(ValueError, match=r'nnx_value_and_grad.*tuple.*has_aux=True'):
    flax_utils.nnx_value_and_grad(mse_and_predictions, model, x, y)
  value_fn = flax_utils.nnx_value_fn(model, mse_and_predictions, x, y)
  with pytest.raises(ValueError, match=r'nnx_value_fn.*has_aux=True'):
    value_fn(nnx_params(model))
  with pytest.raises(ValueError, match=r'has_aux=True.*pair'):
    flax_utils.nnx_value_and_grad(mse, model, x, y, has_aux=True)


def train_linen(has_aux, steps=4, estimator='secant'):
  model, variables, x, loss_of = linen_train_mode_setup()
  loss_fn = (lambda out: (loss_of(out), out)) if has_aux else loss_of
  state = LinenState.create(
    apply_fn=model.apply,
    params=variables['params'],
    tx=sadam_optax.sadamw(1e-2, estimator=estimator),
    batch_stats=variables['batch_stats'],
  )

  @jax.jit
  def step(state, key):
    out, grads, value_fn, new_vars = flax_utils.linen_value_and_grad(
      state.apply_fn,
      loss_fn,
      state.params,
      x,
      variables={'batch_stats': state.batch_stats},
      rngs={'dropout': key},
      has_aux=has_aux,
      train=True,
    )
    loss = out[0] if has_aux else out
    state = state.apply_gradients(grads=grads, value_fn=value_fn, value=loss, **new_vars)
    return state, out

  outs, states = [], []
  for i in range(steps):
    state, out = step(state, jax.random.key(i))
    outs.append(out)
    states.append(state)
  return outs, states


def test_linen_value_and_grad_has_aux_trains_like_the_loss_alone():
  (with_aux, states_aux), (plain, states_plain) = train_linen(True), train_linen(False)
  state_aux, state_plain = states_aux[-1], states_plain[-1]
  assert all(pred.shape == (32, 1) and loss.shape == () for loss, pred in with_aux)
  assert [float(loss) for loss, _ in with_aux] == [float(loss) for loss in plain]
  jax.tree.map(np.testing.assert_array_equal, state_aux.params, state_plain.params)
  jax.tree.map(np.testing.assert_array_equal, state_aux.batch_stats, state_plain.batch_stats)
  assert float(optax.tree.get(state_aux.opt_state, 'damping')) == float(
    optax.tree.get(state_plain.opt_state, 'damping')
  )
  # value_fn returns the loss alone; the aux is the model's output.
  model, variables, x, loss_of = linen_train_mode_setup()
  stats = {'batch_stats': variables['batch_stats']}
  key = jax.random.key(3)
  (loss, out), _, value_fn, _ = flax_utils.linen_value_and_grad(
    model.apply,
    lambda o: (loss_of(o), o),
    variables['params'],
    x,
    variables=stats,
    rngs={'dropout': key},
    has_aux=True,
    train=True,
  )
  assert float(value_fn(variables['params'])) == float(loss) == float(loss_of(out))
  alone = flax_utils.linen_value_fn(
    model.apply,
    lambda o: (loss_of(o), o),
    x,
    variables=stats,
    rngs={'dropout': key},
    has_aux=True,
    train=True,
  )
  assert float(alone(variables['params'])) == float(loss)


def test_linen_tuple_loss_without_has_aux_says_so():
  model, variables, x, loss_of = linen_train_mode_setup()
  pair = lambda out: (loss_of(out), out)
  stats = {'batch_stats': variables['batch_stats']}
  with pytest.raises(ValueError, match=r'linen_value_and_grad.*tuple.*has_aux=True'):
    flax_utils.linen_value_and_grad(
      model.apply, pair, variables['params'], x, variables=stats, train=False
    )
  value_fn = flax_utils.linen_value_fn(model.apply, pair, x, variables=stats, train=False)
  with pytest.raises(ValueError, match=r'linen_value_fn.*has_aux=True'):
    value_fn(variables['params'])
  with pytest.raises(ValueError, match=r'has_aux=True.*pair'):
    flax_utils.linen_value_and_grad(
      model.apply, loss_of, variables['params'], x, variables=stats, has_aux=True, train=False
    )
