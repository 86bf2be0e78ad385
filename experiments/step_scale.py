"""How the default reading of rho changes with the step's length on a quantized model.

With quantized weights the loss is piecewise constant in the latent weights:
a short step moves few of them across a quantization threshold, so the loss
along it hardly changes, while the straight-through gradient still predicts a
descent. The default reading (``'uphill'``) compares the two and reads the
missing descent as an overshoot. This experiment trains a model with Adam,
then, at the trained point, scales Adam's proposed step by ``alpha`` and
reads rho on held batches: for each ``alpha``, the mean rho, the share of
steps it reads above 0 and the median ratio of the loss change to the
change the gradient predicts (1 on a smooth loss, 0 on a flat one). The same
model in float is the reference.

It explains why S-AdamW brakes more as a decaying learning rate shortens the
steps of quantization-aware training (the CIFAR-10 study with cosine decay).

Example::

  python -m experiments.step_scale              # MNIST-1D 1-D CNN, 4-bit and float, ~1 minute
  python -m experiments.step_scale --smoke      # seconds

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

  Bengio, Leonard, Courville, `Estimating or Propagating Gradients Through
  Stochastic Neurons for Conditional Computation
  <https://arxiv.org/abs/1308.3432>`_, 2013 (the straight-through estimator).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments import qat
from sadam_optax import lgi
from sadam_optax import tree_math

ALPHAS = (1.0, 0.3, 0.1, 0.03, 0.01)
LR = 3e-3
BATCH = 128


def read_at_scales(
  loss: Any,
  params: Any,
  adam_state: Any,
  batches: Sequence[tuple[Any, Any]],
  alphas: Sequence[float],
) -> list[dict[str, float]]:
  """rho of Adam's step scaled by each ``alpha``, over ``batches``.

  Args:
    loss: ``(params, x, y) -> scalar``.
    params: the point where the steps start.
    adam_state: ``optax.scale_by_adam``'s state there.
    batches: ``(x, y)`` pairs; each gives one proposed step.
    alphas: factors of the step ``-LR * adam_direction``.

  Returns:
    One dict per alpha: ``alpha``, ``mean_rho``, ``share_braked`` (rho > 0)
    and ``median_rise_ratio`` (loss change / ``<grad, step>``).
  """
  adam = optax.scale_by_adam()

  @jax.jit
  def read(x, y, alpha):
    value, grad = jax.value_and_grad(loss)(params, x, y)
    direction, _ = adam.update(grad, adam_state, params)
    step = jax.tree.map(lambda d: -alpha * LR * d, direction)
    samples = lgi.secant_samples(lambda q: loss(q, x, y), params, step, grad, value)
    rise = loss(optax.apply_updates(params, step), x, y) - value
    return lgi.uphill_share(samples), rise / tree_math.tree_dot(grad, step)

  rows = []
  for alpha in alphas:
    rho, ratio = map(np.asarray, zip(*[read(x, y, alpha) for x, y in batches]))
    rows.append(
      dict(
        alpha=float(alpha),
        mean_rho=float(rho.mean()),
        share_braked=float(np.mean(rho > 0)),
        median_rise_ratio=float(np.median(ratio)),
      )
    )
  return rows


def run(*, bits: int | None, train_steps: int, probes: int, seed: int = 0) -> list[dict[str, Any]]:
  """Trains the MNIST-1D 1-D CNN with Adam, then :func:`read_at_scales`."""
  split = qat.load('mnist1d')
  model = qat.build_model('cnn1d', bits)
  x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
  params = model.init(jax.random.key(seed), x[:1])['params']
  loss = lambda p, xb, yb: common.xent(model.apply({'params': p}, xb, train=True), yb)
  opt = optax.adam(LR)
  state = opt.init(params)

  @jax.jit
  def train(p, s, key):
    idx = jax.random.choice(key, len(y), (BATCH,), replace=False)
    updates, s = opt.update(jax.grad(loss)(p, x[idx], y[idx]), s, p)
    return optax.apply_updates(p, updates), s

  key = jax.random.key(seed + 1)
  for k in jax.random.split(key, train_steps):
    params, state = train(params, state, k)
  adam_state = state[0]  # optax.adam = chain(scale_by_adam, scale_by_learning_rate).
  held = jax.random.split(jax.random.key(seed + 2), probes)
  batches = [
    (x[i], y[i]) for i in (jax.random.choice(k, len(y), (BATCH,), replace=False) for k in held)
  ]
  return read_at_scales(loss, params, adam_state, batches, ALPHAS)


def markdown(payload: dict[str, Any]) -> str:
  """The readable report: one row per model and step scale."""
  lines = [
    '# rho against the step length: 4-bit and float 1-D CNN on MNIST-1D',
    '',
    f'Command: `{payload["command"]}`  ',
    f'Hardware: {payload["hardware"]}  ',
    f'Date: {payload["date"]}; wall time {payload["wall_s"]:.0f} s  ',
    f'Adam at lr {LR} for {payload["train_steps"]} steps of batch {BATCH}; then, at that point, '
    f"Adam's step scaled by alpha, read with the default estimator on {payload['probes']} "
    'other batches. Rise ratio: the loss change along the step over the change the gradient '
    'predicts (1 on a smooth loss).',
    '',
    '| model | alpha | mean rho | share with rho > 0 | median rise ratio |',
    '|---|---|---|---|---|',
  ]
  for name, rows in payload['results'].items():
    lines += [
      f'| {name} | {r["alpha"]:g} | {r["mean_rho"]:.3f} | {r["share_braked"]:.2f} | '
      f'{r["median_rise_ratio"]:.3f} |'
      for r in rows
    ]
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--train-steps', type=int, default=1500)
  p.add_argument('--probes', type=int, default=40)
  p.add_argument('--out', default='step_scale', help='results stem under --out-dir')
  p.add_argument('--out-dir', default=str(common.RESULTS_DIR))
  p.add_argument('--smoke', action='store_true', help='tiny: 20 training steps, 3 probes')
  args = p.parse_args(argv)
  if args.smoke:
    args.train_steps, args.probes = 20, 3
  t0 = time.time()
  results = {
    f'{bits}-bit' if bits else 'float': run(
      bits=bits, train_steps=args.train_steps, probes=args.probes
    )
    for bits in (4, None)
  }
  payload = dict(
    train_steps=args.train_steps,
    probes=args.probes,
    results=results,
    wall_s=round(time.time() - t0, 1),
  )
  return common.write_report(args.out, payload, markdown, out_dir=args.out_dir)


if __name__ == '__main__':
  main()
