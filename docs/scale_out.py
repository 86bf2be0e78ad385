"""S-Adam on a device mesh, on one host or across hosts with jax.distributed.

Every host runs this same script, one process per host::

  python docs/scale_out.py --num-processes 2 --process-id 0 \\
      --coordinator host0:12355
  python docs/scale_out.py --num-processes 2 --process-id 1 \\
      --coordinator host0:12355

On one machine, ``--local-devices N`` simulates N CPU devices per process
(and uses gloo for the collectives between processes), which is how
``tests/test_multihost.py`` runs it. The parameters are laid out over a
(data, model) mesh: the first weight over both axes (FSDP over 'data',
tensor-parallel over 'model'), the second tensor-parallel; the global batch
is split over 'data'. S-Adam needs nothing more: under ``jax.jit`` its probes
run on the global arrays and rho comes out replicated, the same on every
host.
"""

import argparse
import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

import sadam_optax
from sadam_examples import checkpoint
from sadam_examples.parallel import state_shardings

DIM, HIDDEN, CLASSES, GLOBAL_BATCH = 16, 32, 4, 64
LAYOUT = {'w0': P('data', 'model'), 'b0': P('model'), 'w1': P('model', None), 'b1': P()}


def init_params() -> dict:
  k0, k1 = jax.random.split(jax.random.key(0))
  return {
    'w0': jax.random.normal(k0, (DIM, HIDDEN)) / np.sqrt(DIM),
    'b0': jnp.zeros(HIDDEN),
    'w1': jax.random.normal(k1, (HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
    'b1': jnp.zeros(CLASSES),
  }


def loss_fn(params, x, y):
  h = jax.nn.relu(x @ params['w0'] + params['b0'])
  logits = h @ params['w1'] + params['b1']
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def global_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
  """The whole batch of a step; a real loader reads only the rows asked for."""
  rng = np.random.default_rng(step)
  x = rng.standard_normal((GLOBAL_BATCH, DIM)).astype(np.float32)
  return x, (x[:, :CLASSES].argmax(axis=1)).astype(np.int32)


def put_batch(batch, sharding):
  """Each process supplies only the shards on its own devices."""
  return tuple(
    jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx]) for a in batch
  )


@functools.partial(jax.jit, static_argnums=0)
def train_step(opt, params, opt_state, x, y):
  loss_of = lambda p: loss_fn(p, x, y)  # Close over the batch: jit-friendly.
  loss, grads = jax.value_and_grad(loss_of)(params)
  updates, opt_state = opt.update(grads, opt_state, params, value_fn=loss_of)
  return optax.apply_updates(params, updates), opt_state, loss


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A (data, model) mesh over ``devices`` (default: all, on every host)."""
  devices = jax.devices() if devices is None else devices
  model = 2 if len(devices) % 2 == 0 else 1
  return jax.make_mesh(
    (len(devices) // model, model),
    ('data', 'model'),
    axis_types=(jax.sharding.AxisType.Auto,) * 2,
    devices=devices,
  )


def make_optimizer() -> optax.GradientTransformationExtraArgs:
  return sadam_optax.sadamw(1e-2, weight_decay=1e-4)


class Result(NamedTuple):
  params: Any  # Global arrays, laid out as LAYOUT says.
  opt_state: Any
  losses: list[float]
  rhos: list[float]


def train(steps: int, ckpt: str | None = None, devices=None) -> Result:
  """Trains ``steps`` steps on a mesh over ``devices`` (default: all)."""
  mesh = make_mesh(devices)
  replicated = NamedSharding(mesh, P())
  param_shardings = {k: NamedSharding(mesh, s) for k, s in LAYOUT.items()}
  batch_sharding = NamedSharding(mesh, P('data'))
  opt = make_optimizer()

  # Built directly in their shards; the state takes the params' layout.
  params = jax.jit(init_params, out_shardings=param_shardings)()
  opt_state = jax.jit(
    opt.init, out_shardings=state_shardings(opt, params, param_shardings, replicated)
  )(params)
  losses, rhos = [], []
  for step in range(steps):
    x, y = put_batch(global_batch(step), batch_sharding)
    params, opt_state, loss = train_step(opt, params, opt_state, x, y)
    losses.append(float(loss))  # Replicated scalars: readable on every host.
    rhos.append(float(optax.tree.get(opt_state, 'rho')))
  if ckpt:  # Every process calls save; Orbax writes each shard once.
    checkpoint.save(ckpt, steps, {'params': params, 'opt_state': opt_state})
  return Result(params, opt_state, losses, rhos)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--coordinator', default='localhost:12355')
  parser.add_argument('--num-processes', type=int, default=1)
  parser.add_argument('--process-id', type=int, default=0)
  parser.add_argument(
    '--local-devices', type=int, default=None, help='simulate this many CPU devices per process'
  )
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--ckpt', default=None, help='checkpoint directory')
  parser.add_argument('--out', default=None, help='JSON file of the results')
  args = parser.parse_args()

  if args.local_devices:  # Before JAX starts its backend.
    os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={args.local_devices}'
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if args.num_processes > 1:
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  result = train(args.steps, args.ckpt)
  params = multihost_utils.process_allgather(result.params, tiled=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(
        {
          'losses': result.losses,
          'rhos': result.rhos,
          'params': {k: np.asarray(v).tolist() for k, v in params.items()},
          'process': jax.process_index(),
          'devices': jax.device_count(),
        },
        f,
      )
  print(
    f'process {jax.process_index()}: {jax.device_count()} devices, '
    f'loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}, '
    f'rho {result.rhos[-1]:.4f}'
  )


if __name__ == '__main__':
  main()
