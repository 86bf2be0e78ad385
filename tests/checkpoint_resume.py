"""Helper of ``test_checkpoint.py``: train, checkpoint, resume in a new process.

``--mode full`` trains ``--steps`` steps from scratch and saves the whole
training state at ``--save-at``; ``--mode resume`` restores that checkpoint
and trains on to ``--steps``. Both write the losses they saw and their final
state (keys as raw data) to ``--out`` (``.npz``), for a bitwise comparison.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sadam_optax
from sadam_examples import checkpoint

DATA_SIZE, BATCH, DIM, CLASSES = 256, 16, 8, 3


def dataset() -> tuple[jax.Array, jax.Array]:
  x = jax.random.normal(jax.random.key(1), (DATA_SIZE, DIM))
  y = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0.5)
  return x, y


def loss_fn(params, x, y):
  h = jax.nn.relu(x @ params['w0'] + params['b0'])
  logits = h @ params['w1']
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def optimizer() -> optax.GradientTransformationExtraArgs:
  # A schedule and probe_every > 1 make the step count matter on resume.
  schedule = optax.cosine_decay_schedule(1e-2, 200)
  return sadam_optax.sadamw(schedule, weight_decay=1e-3, probe_every=3, seed=7)


def init_state() -> dict:
  k0, k1 = jax.random.split(jax.random.key(0))
  params = {
    'w0': jax.random.normal(k0, (DIM, 32)) / np.sqrt(DIM),
    'b0': jnp.zeros(32),
    'w1': jax.random.normal(k1, (32, CLASSES)) / np.sqrt(32),
  }
  return {
    'params': params,
    'opt_state': optimizer().init(params),
    'data_key': jax.random.key(3),
    'step': jnp.zeros([], jnp.int32),
  }


@functools.partial(jax.jit, static_argnums=0)
def train_step(opt, state, x, y):
  data_key, sub = jax.random.split(state['data_key'])
  idx = jax.random.randint(sub, (BATCH,), 0, DATA_SIZE)
  loss_of = lambda p: loss_fn(p, x[idx], y[idx])
  loss, grads = jax.value_and_grad(loss_of)(state['params'])
  updates, opt_state = opt.update(grads, state['opt_state'], state['params'], value_fn=loss_of)
  return {
    'params': optax.apply_updates(state['params'], updates),
    'opt_state': opt_state,
    'data_key': data_key,
    'step': state['step'] + 1,
  }, loss


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--mode', choices=('full', 'resume'), required=True)
  parser.add_argument('--ckpt', required=True)
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--save-at', type=int, default=17)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()

  opt = optimizer()
  x, y = dataset()
  if args.mode == 'full':
    state = init_state()
  else:
    # A fresh process: only the structure is built, the values come from disk.
    state = checkpoint.restore(args.ckpt, jax.eval_shape(init_state))
  losses = []
  while int(state['step']) < args.steps:
    if args.mode == 'full' and int(state['step']) == args.save_at:
      checkpoint.save(args.ckpt, args.save_at, state)
    state, loss = train_step(opt, state, x, y)
    losses.append(loss)
  leaves = jax.tree.leaves(checkpoint.keys_to_data(state))
  np.savez(
    args.out, losses=np.asarray(losses), **{f'leaf{i}': np.asarray(v) for i, v in enumerate(leaves)}
  )


if __name__ == '__main__':
  main()
