"""S-Adam under jax.jit with NamedSharding, on 8 simulated host devices.

Run by ``tests/test_multidevice.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. A (data=2, model=4)
mesh; the batch is split over 'data', the parameters either tensor-parallel
(over 'model') or fully sharded (over both axes).
"""

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import sadam_optax
from sadam_examples import checkpoint
from sadam_examples.parallel import state_shardings

NUM_DEVICES, STEPS = 8, 3
BATCH, DIM, HIDDEN, CLASSES = 32, 16, 32, 8

if jax.device_count() != NUM_DEVICES:
  pytest.skip(
    f'needs {NUM_DEVICES} devices: set XLA_FLAGS='
    f'--xla_force_host_platform_device_count={NUM_DEVICES}',
    allow_module_level=True,
  )

ALL = ('data', 'model')
LAYOUTS = {
  'tensor_parallel': {'w0': P(None, 'model'), 'b0': P('model'), 'w1': P('model', None), 'b1': P()},
  'fully_sharded': {'w0': P(ALL, None), 'b0': P(ALL), 'w1': P(ALL, None), 'b1': P(ALL)},
}


def init_params():
  k0, k1 = jax.random.split(jax.random.key(0))
  return {
    'w0': jax.random.normal(k0, (DIM, HIDDEN)) / np.sqrt(DIM),
    'b0': jnp.zeros(HIDDEN),
    'w1': jax.random.normal(k1, (HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
    'b1': jnp.zeros(CLASSES),
  }


def batches():
  x = jax.random.normal(jax.random.key(1), (STEPS, BATCH, DIM))
  y = jnp.argmax(x[..., :CLASSES], axis=-1)
  return x, y


def loss_fn(params, x, y):
  h = jax.nn.relu(x @ params['w0'] + params['b0'])
  logits = h @ params['w1'] + params['b1']
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_step(opt, loss, params, state, x, y):
  loss_of = lambda p: loss(p, x, y)
  grads = jax.grad(loss_of)(params)
  updates, state = opt.update(grads, state, params, value_fn=loss_of)
  return optax.apply_updates(params, updates), state


def run(opt, params, state, step_fn, xs, ys):
  for x, y in zip(xs, ys):
    params, state = step_fn(params, state, x, y)
  return params, state


@functools.cache
def single_device(estimator):
  opt = sadam_optax.sadam(1e-2, estimator=estimator)
  params = init_params()
  step = jax.jit(functools.partial(train_step, opt, loss_fn))
  return run(opt, params, opt.init(params), step, *batches())


def assert_close_to_single_device(params, state, estimator):
  ref_params, ref_state = single_device(estimator)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, ref_params
  )
  np.testing.assert_allclose(
    optax.tree.get(state, 'rho'), optax.tree.get(ref_state, 'rho'), rtol=1e-5, atol=1e-6
  )


def assert_same_shardings(tree, reference):
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference)):
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (a.sharding, b.sharding)


# --------------------------------------------------------------------------
# Auto mesh axes: shardings on the arrays, the compiler partitions.
# --------------------------------------------------------------------------

AUTO_MESH = jax.make_mesh((2, 4), ALL, axis_types=(AxisType.Auto,) * 2)


# Auto axes with the default estimator: test_docs_scale_out_example, below.
@pytest.mark.parametrize(
  'layout,estimator', [('tensor_parallel', 'trajectory'), ('fully_sharded', 'trajectory')]
)
def test_auto_mesh_update_matches_single_device(layout, estimator):
  opt = sadam_optax.sadam(1e-2, estimator=estimator)
  param_shardings = {k: NamedSharding(AUTO_MESH, s) for k, s in LAYOUTS[layout].items()}
  replicated = NamedSharding(AUTO_MESH, P())
  params = jax.device_put(init_params(), param_shardings)
  shardings = state_shardings(opt, params, param_shardings, replicated)
  state0 = jax.jit(opt.init, out_shardings=shardings)(params)
  xs, ys = jax.device_put(batches(), NamedSharding(AUTO_MESH, P(None, 'data')))
  # No out_shardings on the step: the partitioner picks the state's layout.
  step = jax.jit(functools.partial(train_step, opt, loss_fn))
  new_params, state = run(opt, params, state0, step, xs, ys)

  assert_same_shardings(state, state0)
  assert_same_shardings(new_params, params)
  assert optax.tree.get(state, 'rho').sharding.is_fully_replicated
  assert_close_to_single_device(new_params, state, estimator)


def test_init_on_abstract_inputs():
  opt = sadam_optax.sadam(1e-2, estimator='trajectory')
  param_shardings = {k: NamedSharding(AUTO_MESH, s) for k, s in LAYOUTS['tensor_parallel'].items()}
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), init_params(), param_shardings
  )
  abstract_state = jax.eval_shape(opt.init, abstract)
  concrete = opt.init(init_params())
  assert jax.tree.structure(abstract_state) == jax.tree.structure(concrete)
  for a, c in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(concrete)):
    assert (a.shape, a.dtype) == (c.shape, c.dtype)
  probe_state = abstract_state[0].brake_state.probe_state
  assert probe_state.probe_key.dtype == jnp.uint32  # Raw: it serialises.
  # The abstract params suffice to build the state's shardings.
  shardings = state_shardings(opt, abstract, param_shardings, NamedSharding(AUTO_MESH, P()))
  assert shardings[0].brake_state.probe_state.prev_direction == (param_shardings)
  assert shardings[0].inner_state.mu == param_shardings
  assert shardings[0].brake_state.probe_state.rho.is_fully_replicated


def test_sharded_checkpoint_restores_layout(tmp_path):
  opt = sadam_optax.sadam(1e-2)
  param_shardings = {k: NamedSharding(AUTO_MESH, s) for k, s in LAYOUTS['fully_sharded'].items()}
  params = jax.device_put(init_params(), param_shardings)
  shardings = state_shardings(opt, params, param_shardings, NamedSharding(AUTO_MESH, P()))
  state = {'params': params, 'opt_state': jax.jit(opt.init, out_shardings=shardings)(params)}
  checkpoint.save(tmp_path, 0, state)
  like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
  restored = checkpoint.restore(tmp_path, like)
  assert_same_shardings(restored, state)
  for a, b in zip(
    jax.tree.leaves(checkpoint.keys_to_data(restored)),
    jax.tree.leaves(checkpoint.keys_to_data(state)),
  ):
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# Explicit mesh axes (jax.make_mesh's default in recent JAX): the sharding is
# part of each array's type, so init and update must produce the same types.
# --------------------------------------------------------------------------

EXPLICIT_MESH = jax.make_mesh((2, 4), ALL, axis_types=(AxisType.Explicit,) * 2)


def explicit_loss(params, x, y):
  # Fully sharded weights are gathered before use (FSDP); the contraction
  # over the model-sharded hidden axis names its output sharding.
  w0 = jax.sharding.reshard(params['w0'], P(None, 'model'))
  b0 = jax.sharding.reshard(params['b0'], P('model'))
  w1 = jax.sharding.reshard(params['w1'], P('model', None))
  b1 = jax.sharding.reshard(params['b1'], P())
  h = jax.nn.relu(x @ w0 + b0)
  logits = jnp.matmul(h, w1, out_sharding=P('data', None)) + b1
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@pytest.mark.parametrize(
  'layout,estimator',
  [
    ('fully_sharded', 'secant'),
    ('fully_sharded', 'step'),
    ('tensor_parallel', 'step'),
    ('tensor_parallel', 'trajectory'),
  ],
)
def test_explicit_mesh_types_preserved(layout, estimator):
  opt = sadam_optax.sadam(1e-2, estimator=estimator)
  with jax.set_mesh(EXPLICIT_MESH):
    params = jax.device_put(
      init_params(), {k: NamedSharding(EXPLICIT_MESH, s) for k, s in LAYOUTS[layout].items()}
    )
    state0 = jax.jit(opt.init)(params)
    abstract_state = jax.eval_shape(opt.init, params)
    xs, ys = jax.device_put(batches(), NamedSharding(EXPLICIT_MESH, P(None, 'data')))
    step = jax.jit(functools.partial(train_step, opt, explicit_loss))
    new_params, state = run(opt, params, state0, step, xs, ys)

  types = lambda t: [str(jax.typeof(x)) for x in jax.tree.leaves(t)]
  assert types(state) == types(state0)
  assert types(abstract_state) == types(state0)
  assert types(new_params) == types(params)
  assert str(jax.typeof(optax.tree.get(state, 'rho'))) == 'float32[]'
  assert_close_to_single_device(new_params, state, estimator)


# --------------------------------------------------------------------------
# The example of docs/scale.md, on 8 devices and on one.
# --------------------------------------------------------------------------


def test_docs_scale_out_example(tmp_path):
  """FSDP x tensor-parallel sadamw: layout kept, rho replicated, = 1 device."""
  path = pathlib.Path(__file__).parents[2] / 'docs' / 'scale_out.py'
  spec = importlib.util.spec_from_file_location('scale_out', path)
  scale_out = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(scale_out)
  meshed = scale_out.train(3, ckpt=tmp_path)
  single = scale_out.train(3, devices=jax.devices()[:1])

  mesh = scale_out.make_mesh()
  param_shardings = {k: NamedSharding(mesh, s) for k, s in scale_out.LAYOUT.items()}
  expected = state_shardings(
    scale_out.make_optimizer(), meshed.params, param_shardings, NamedSharding(mesh, P())
  )
  for leaf, sharding in zip(jax.tree.leaves(meshed.opt_state), jax.tree.leaves(expected)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  assert optax.tree.get(meshed.opt_state, 'rho').sharding.is_fully_replicated
  np.testing.assert_allclose(meshed.losses, single.losses, rtol=1e-5)
  np.testing.assert_allclose(meshed.rhos, single.rhos, rtol=1e-4, atol=1e-7)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    meshed.params,
    single.params,
  )
  assert checkpoint.latest_step(tmp_path) == 3
