"""S-Adam on a network quantized by Google's AQT library (``aqtp``).

AQT quantizes the matrix multiplications themselves: each ``nn.Dense`` takes
an ``aqt_flax.AqtDotGeneral`` that quantizes both operands to ``bits`` in the
forward pass (per-channel scales, straight-through gradients). S-Adam needs
nothing special: the loss of the quantized network is its ``value_fn``.

Run (MNIST-1D, generated locally; AdamW against S-AdamW, same seeds)::

  pip install aqtp
  python -m sadam_examples.aqt_example --bits 4 --steps 2000

References:
  Lew, Feinberg, Agrawal, et al., `AQT: Accurate Quantized Training
  <https://github.com/google/aqt>`_, Google, 2022-2024.

  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

import argparse
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import sadam_optax


def aqt_dot_general(bits: int) -> Any:
  """An ``nn.Dense(dot_general_cls=...)`` factory quantizing to ``bits``.

  Forward pass only (``bwd_bits=None``: the backward pass stays in float), so
  no random numbers are drawn and the loss is a deterministic ``value_fn``.
  """
  from aqt.jax.v2 import config as aqt_config  # pylint: disable=g-import-not-at-top
  from aqt.jax.v2.flax import aqt_flax  # pylint: disable=g-import-not-at-top

  config = aqt_config.fully_quantized(fwd_bits=bits, bwd_bits=None)
  return functools.partial(aqt_flax.AqtDotGeneral, config, prng_name=None)


class AqtMLP(nn.Module):
  """An MLP whose matrix multiplications AQT quantizes to ``bits``.

  Attributes:
    bits: operand bit width of every Dense layer; None for float.
    hidden: widths of the hidden layers.
    num_classes: number of logits.
  """

  bits: Optional[int] = 4
  hidden: Sequence[int] = (256, 256)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = (
      functools.partial(nn.Dense)
      if self.bits is None
      else (functools.partial(nn.Dense, dot_general_cls=aqt_dot_general(self.bits)))
    )
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(dense(width)(x))
    return dense(self.num_classes)(x)


def train(
  model: nn.Module,
  opt: optax.GradientTransformationExtraArgs,
  data: tuple[np.ndarray, ...],
  *,
  steps: int,
  batch_size: int,
  seed: int,
) -> float:
  """Trains ``model`` with ``opt`` on ``data``; returns the test accuracy."""
  x_train, y_train, x_test, y_test = map(jnp.asarray, data)

  def loss_of(params, x, y):
    logits = model.apply({'params': params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, state, idx):
    x, y = x_train[idx], y_train[idx]
    value_fn = lambda p: loss_of(p, x, y)
    value, grads = jax.value_and_grad(value_fn)(params)
    updates, state = opt.update(grads, state, params, value_fn=value_fn, value=value)
    return optax.apply_updates(params, updates), state

  key = jax.random.key(seed)
  params = model.init(key, x_train[:1])['params']
  state = opt.init(params)
  for i in range(steps):
    idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, len(y_train))
    params, state = step(params, state, idx)
  logits = model.apply({'params': params}, x_test)
  return float(jnp.mean(jnp.argmax(logits, -1) == y_test))


def main(argv: Optional[Sequence[str]] = None) -> dict[str, list[float]]:
  from sadam_examples import data  # pylint: disable=g-import-not-at-top

  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--bits', type=int, default=4)
  p.add_argument('--steps', type=int, default=2000)
  p.add_argument('--batch-size', type=int, default=100)
  p.add_argument('--lr', type=float, default=3e-3)
  p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  args = p.parse_args(argv)
  dataset = data.load_mnist1d()
  model = AqtMLP(bits=args.bits)
  optimizers = {
    'adamw': lambda: optax.with_extra_args_support(optax.adamw(args.lr, weight_decay=1e-2)),
    'sadamw': lambda: sadam_optax.sadamw(args.lr, weight_decay=1e-2),
  }
  results = {
    name: [
      train(model, make(), dataset, steps=args.steps, batch_size=args.batch_size, seed=s)
      for s in args.seeds
    ]
    for name, make in optimizers.items()
  }
  print(
    f'AQT MLP, {args.bits}-bit operands, MNIST-1D, lr {args.lr}, '
    f'{args.steps} steps, seeds {args.seeds}'
  )
  for name, accs in results.items():
    print(
      f'  {name:8s} test accuracy {100 * np.mean(accs):.1f} +- '
      f'{100 * np.std(accs, ddof=1) if len(accs) > 1 else 0.0:.1f}'
    )
  return results


if __name__ == '__main__':
  main()
