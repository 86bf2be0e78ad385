"""S-Adam on networks quantized for training by Google's Qwix.

Qwix (``pip install qwix``) quantizes a Flax model without editing it:
``qwix.quantize_model(model, qwix.QtProvider(rules))`` intercepts the
``jax.lax.dot_general`` and ``jax.lax.conv_general_dilated`` calls of the
modules whose path matches a rule and runs them on quantized operands in the
forward pass, with a straight-through gradient (a ``jax.custom_vjp``). S-Adam
needs nothing special: the loss of the quantized model is its ``value_fn``.

This module shows both Flax APIs:

* nnx: :class:`CNN1D` (the MNIST-1D baseline CNN), quantized with
  ``qwix.quantize_model(model, provider, x)`` and trained by
  ``nnx.Optimizer.update(model, grads, value_fn=nnx_value_fn(...))``
  (:func:`train_nnx`);
* linen: the library's own ``sadam_examples.models.CNN1D(bits=None)``, the
  same network that our fake quantization trains with ``bits=4``, quantized
  with ``qwix.quantize_model(model, provider)`` and trained through
  ``sadam_optax.flax_utils.apply_gradients(state, grads=..., value_fn=...)``
  (:func:`train_linen`).

Notes:

* S-Adam's default estimator (``'uphill'``, like ``'secant'``) reads the
  quantized loss at the end of the step and needs no derivative through the
  quantizer beyond the gradient. ``'step'`` takes slopes at points of the
  step; Qwix's straight-through estimator is a ``custom_vjp``, which JAX
  cannot differentiate forward, so there it takes them by reverse mode (one
  gradient per probe instead of one jvp).
* On XLA:CPU (jax 0.10.2, qwix 0.1.8), int4 weights with int4 activations
  fail in XLA's HLO verifier (after ``operand_upcaster``: "The XLA CPU/GPU
  backend does not support custom element sizes on non-sub-byte types"), for
  convolutions and dense layers alike; int4 weights with int8 activations run
  for dense layers but not for convolutions (``lax.conv_general_dilated``
  rejects mixed int8/int4 operands); int8 with int8 runs. So on the CPU the
  default is weight-only int4 (``act_bits=None``), and ``--act-bits 4`` is
  the default elsewhere, meant for GPU/TPU. The message names the GPU backend
  too: this repository has not run quantized activations on a GPU or TPU.
* The first layer's input (the data) stays in float, as in
  ``sadam_examples.models``.

Run (MNIST-1D, generated locally)::

  pip install qwix
  python -m sadam_examples.qwix_example                  # demo: nnx and linen
  python -m sadam_examples.qwix_example --table          # the measured table

References:
  Qwix, a JAX quantization library: https://github.com/google/qwix

  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

  Greydanus, Kobak, `Scaling Down Deep Learning with MNIST-1D
  <https://arxiv.org/abs/2011.14439>`_, 2020.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sadam_optax
from sadam_optax import flax_utils

Array = jax.Array

# The layer that reads the network input, by path: nnx attribute or linen name.
FIRST_LAYER = r'conv0|QuantConv_0'


def default_act_bits() -> int | None:
  """``None`` (weight-only) on the CPU, 4 elsewhere (see the module notes)."""
  return None if jax.default_backend() == 'cpu' else 4


def rules(bits: int = 4, act_bits: int | None = None) -> list[Any]:
  """Qwix quantized-training rules for the models of this module.

  Args:
    bits: weight bit width (``int{bits}`` with per-channel absmax scales).
    act_bits: activation bit width of every layer but the first; ``None``
      keeps activations in float (weight-only quantization).

  Returns:
    A list of ``qwix.QtRule``: the first layer weight-only, then all others.
  """
  import qwix  # pylint: disable=g-import-not-at-top

  weight = f'int{bits}'
  act = None if act_bits is None else f'int{act_bits}'
  return [
    qwix.QtRule(module_path=FIRST_LAYER, weight_qtype=weight),
    qwix.QtRule(module_path='.*', weight_qtype=weight, act_qtype=act),
  ]


class CNN1D(nnx.Module):
  """The MNIST-1D convolutional baseline in ``flax.nnx``.

  The architecture of ``sadam_examples.models.CNN1D``: three conv layers
  (kernels 5, 3, 3; stride 2; padding 1) with ReLU, then a dense layer on the
  flattened features. Plain ``nnx.Conv``/``nnx.Linear``: Qwix quantizes them.

  Attributes:
    conv0, conv1, conv2: the conv layers.
    head: the classifier.
  """

  def __init__(
    self, *, rngs: nnx.Rngs, length: int = 40, channels: int = 25, num_classes: int = 10
  ):
    kernels, in_ch = (5, 3, 3), 1
    for i, k in enumerate(kernels):
      setattr(
        self,
        f'conv{i}',
        nnx.Conv(in_ch, channels, (k,), strides=(2,), padding=((1, 1),), rngs=rngs),
      )
      in_ch, length = channels, (length + 2 - k) // 2 + 1
    self.head = nnx.Linear(channels * length, num_classes, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    """Maps ``(N, L, 1)`` inputs to ``(N, num_classes)`` logits."""
    for conv in (self.conv0, self.conv1, self.conv2):
      x = nnx.relu(conv(x))
    return self.head(x.reshape(x.shape[0], -1))


def quantized_nnx(
  seed: int, x: Array, *, bits: int | None = 4, act_bits: int | None = None, **kwargs: Any
) -> CNN1D:
  """A Qwix-quantized :class:`CNN1D` (``bits=None``: the float model).

  Args:
    seed: initialisation seed.
    x: an input batch (Qwix runs the model once on it).
    bits: weight bit width; ``None`` returns the float model.
    act_bits: activation bit width (see :func:`rules`).
    **kwargs: passed to :class:`CNN1D`.

  Returns:
    The model.
  """
  model = CNN1D(rngs=nnx.Rngs(seed), **kwargs)
  if bits is None:
    return model
  import qwix  # pylint: disable=g-import-not-at-top

  return qwix.quantize_model(model, qwix.QtProvider(rules(bits, act_bits)), x)


def quantized_linen(
  *, bits: int | None = 4, act_bits: int | None = None, **kwargs: Any
) -> nn.Module:
  """``sadam_examples.models.CNN1D`` in float, quantized by Qwix.

  Args:
    bits: weight bit width; ``None`` returns the float model.
    act_bits: activation bit width (see :func:`rules`).
    **kwargs: passed to ``models.CNN1D`` (not ``bits``: that is our own fake
      quantization, which stays off here).

  Returns:
    The linen model; ``init``/``apply`` as usual.
  """
  from sadam_examples import models  # pylint: disable=g-import-not-at-top

  model = models.CNN1D(bits=None, **kwargs)
  if bits is None:
    return model
  import qwix  # pylint: disable=g-import-not-at-top

  return qwix.quantize_model(model, qwix.QtProvider(rules(bits, act_bits)))


def make_optimizer(
  name: str, learning_rate: float, *, weight_decay: float = 1e-2, seed: int = 0
) -> optax.GradientTransformationExtraArgs:
  """``'adamw'`` (accepting S-Adam's keywords) or ``'sadamw'`` (the default)."""
  if name == 'adamw':
    return optax.with_extra_args_support(optax.adamw(learning_rate, weight_decay=weight_decay))
  if name == 'sadamw':
    return sadam_optax.sadamw(learning_rate, weight_decay=weight_decay, seed=seed)
  raise ValueError(f'Unknown optimizer {name!r}.')


def _batches(seed: int, n: int, batch_size: int, steps: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.stack([rng.choice(n, batch_size, replace=False) for _ in range(steps)])


def _accuracy(logits: Array, y: Array) -> float:
  return float(jnp.mean(jnp.argmax(logits, -1) == y))


def xent(logits: Array, y: Array) -> Array:
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_nnx(
  model: nnx.Module,
  tx: optax.GradientTransformationExtraArgs,
  data: Sequence[np.ndarray],
  *,
  steps: int,
  batch_size: int = 100,
  seed: int = 0,
) -> dict[str, Any]:
  """Trains an nnx classifier in place with ``nnx.Optimizer``.

  The S-Adam pattern for nnx: ``optimizer.update(model, grads,
  value_fn=flax_utils.nnx_value_fn(model, loss_fn, x, y), value=loss)``.

  Args:
    model: an ``nnx.Module`` mapping inputs to logits (Qwix-quantized or not).
    tx: the optimizer (extra keywords accepted).
    data: ``(x_train, y_train, x_test, y_test)``.
    steps: number of steps.
    batch_size: examples per step.
    seed: seed of the batch order.

  Returns:
    ``losses`` (per step), ``test_acc`` and, for S-Adam, ``damping`` (per
    step).
  """
  x_train, y_train, x_test, y_test = map(jnp.asarray, data)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  def loss_fn(m, x, y):
    return xent(m(x), y)

  @nnx.jit
  def step(model, optimizer, idx):
    x, y = x_train[idx], y_train[idx]
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(
      model, grads, value_fn=flax_utils.nnx_value_fn(model, loss_fn, x, y), value=loss
    )
    damping = optax.tree.get(optimizer.opt_state, 'damping', default=1.0)
    return loss, damping

  losses, damping = [], []
  for idx in _batches(seed, len(y_train), batch_size, steps):
    loss, d = step(model, optimizer, jnp.asarray(idx))
    losses.append(float(loss))
    damping.append(float(d))
  return dict(
    losses=losses,
    damping=damping,
    test_acc=_accuracy(nnx.jit(lambda m, x: m(x))(model, x_test), y_test),
  )


def train_linen(
  model: nn.Module,
  tx: optax.GradientTransformationExtraArgs,
  data: Sequence[np.ndarray],
  *,
  steps: int,
  batch_size: int = 100,
  seed: int = 0,
) -> dict[str, Any]:
  """Trains a linen classifier with ``flax_utils.TrainState``.

  The S-Adam pattern for linen: ``flax_utils.apply_gradients(state,
  grads=grads, value_fn=loss_of, value=loss)`` (flax's own
  ``TrainState.apply_gradients`` drops ``value_fn``).

  Args:
    model: a linen module mapping inputs to logits (Qwix-quantized or not).
    tx: the optimizer (extra keywords accepted).
    data: ``(x_train, y_train, x_test, y_test)``.
    steps: number of steps.
    batch_size: examples per step.
    seed: seed of the initialisation and the batch order.

  Returns:
    ``losses`` (per step), ``test_acc`` and ``damping`` (per step).
  """
  x_train, y_train, x_test, y_test = map(jnp.asarray, data)
  params = model.init(jax.random.key(seed), x_train[:1])['params']
  state = flax_utils.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  @jax.jit
  def step(state, idx):
    x, y = x_train[idx], y_train[idx]
    loss_of = lambda p: xent(state.apply_fn({'params': p}, x), y)
    loss, grads = jax.value_and_grad(loss_of)(state.params)
    state = flax_utils.apply_gradients(state, grads=grads, value_fn=loss_of, value=loss)
    return state, loss, optax.tree.get(state.opt_state, 'damping', default=1.0)

  losses, damping = [], []
  for idx in _batches(seed, len(y_train), batch_size, steps):
    state, loss, d = step(state, jnp.asarray(idx))
    losses.append(float(loss))
    damping.append(float(d))
  logits = jax.jit(model.apply)({'params': state.params}, x_test)
  return dict(losses=losses, damping=damping, test_acc=_accuracy(logits, y_test))


class NnxClassifier:
  """An nnx model behind linen's ``init``/``apply``, for ``experiments.common``.

  ``init(key, x)`` builds the model from ``make(seed_key)`` and returns its
  ``nnx.Param`` state as ``{'params': ...}``; ``apply({'params': p}, x)`` merges
  ``p`` into the graph of a model built once (here the Qwix-quantized one) and
  calls it: the ``value_fn`` S-Adam reads is the quantized model's loss, as
  with :func:`sadam_optax.flax_utils.nnx_value_fn`.

  Args:
    make: ``make(key) -> nnx.Module`` (the float model; traced keys allowed).
    quantize: ``quantize(model) -> nnx.Module`` (e.g. Qwix); applied once.
  """

  def __init__(
    self, make: Callable[[Array], nnx.Module], quantize: Callable[[nnx.Module], nnx.Module]
  ):
    self._make = make
    model = quantize(make(jax.random.key(0)))
    self._graphdef, params, self._rest = nnx.split(model, nnx.Param, ...)
    self._structure = jax.tree.structure(params)

  def init(self, key: Array, x: Array) -> dict[str, Any]:
    del x
    _, params, _ = nnx.split(self._make(key), nnx.Param, ...)
    if jax.tree.structure(params) != self._structure:
      raise ValueError('The quantized model has other parameters than the float one.')
    return {'params': params}

  def apply(self, variables: dict[str, Any], x: Array, *, train: bool = False) -> Array:
    del train
    return nnx.merge(self._graphdef, variables['params'], self._rest)(x)


def table(args: argparse.Namespace) -> dict[str, Any]:
  """Runs the comparison of ``experiments.common.compare`` on MNIST-1D.

  The Qwix-quantized nnx :class:`CNN1D`; AdamW and S-AdamW (default estimator)
  with their learning rates chosen on a validation split, then AdamW at
  S-AdamW's effective learning rate (lr x mean damping, per seed).
  """
  from experiments import common  # pylint: disable=g-import-not-at-top
  from sadam_examples import data  # pylint: disable=g-import-not-at-top

  import qwix  # pylint: disable=g-import-not-at-top

  split = common.split_validation(data.load_mnist1d())
  x0 = jnp.asarray(split.x_train[:2])
  provider = qwix.QtProvider(rules(args.bits, args.act_bits))
  model = NnxClassifier(
    lambda key: CNN1D(rngs=nnx.Rngs(params=key)), lambda m: qwix.quantize_model(m, provider, x0)
  )
  budget = common.Budget(batch_size=args.batch_size, epochs=args.epochs)
  start = time.perf_counter()
  results = common.compare(
    model,
    split,
    budget,
    optimizers=['adamw', 'sadam'],
    seeds=list(range(args.seeds)),
    grids={k: args.lrs for k in ('adamw', 'sadam')},
    desc='qwix',
  )
  seconds = time.perf_counter() - start
  command = ' '.join(['python -m sadam_examples.qwix_example', *sys.argv[1:]])
  act = 'float' if args.act_bits is None else f'int{args.act_bits}'
  names = {
    'adamw': 'AdamW',
    'sadam': f"S-AdamW, default (`'{sadam_optax.lgi.DEFAULT_ESTIMATOR}'`)",
    'sadam@eff-lr': "AdamW at S-AdamW's effective lr",
  }
  lines = [
    '# S-AdamW on a Qwix-quantized nnx CNN, MNIST-1D',
    '',
    f'Command: `{command}`',
    '',
    f'Hardware: {common.hardware()}; qwix {qwix.__version__}, flax '
    f'{_flax_version()}. Wall time {seconds:.0f} s.',
    '',
    f'Model: the MNIST-1D CNN (`sadam_examples.qwix_example.CNN1D`, flax.nnx) '
    f'quantized by `qwix.quantize_model` with `qwix.QtProvider`: weights '
    f"int{args.bits} (absmax, Qwix's default channelwise scales), activations {act} (the first "
    f"layer's input stays float). {args.seeds} seeds, {args.epochs} epochs "
    f"at batch {args.batch_size}; each optimizer's learning rate chosen on a "
    f'validation split (10% of the training set) from {list(args.lrs)}; '
    "the control is AdamW at lr x the mean damping of the same seed's "
    'S-AdamW run. Weight decay 1e-2 for both.',
    '',
    '| optimizer | lr | test accuracy % (mean +- std) | val accuracy % | mean damping |',
    '|---|---|---|---|---|',
  ]
  for key, e in results.items():
    lr = e['lr']
    lr = f'{np.mean(lr):.2g} (mean)' if isinstance(lr, list) else f'{lr:g}'
    damping = f'{np.mean(e["mean_damping"]):.2f}' if key == 'sadam' else '-'
    lines.append(
      f'| {names.get(key, key)} | {lr} | {100 * e["mean"]:.1f} +- '
      f'{100 * e["std"]:.1f} | {100 * np.mean(e["val_acc"]):.1f} | {damping} |'
    )
  for key in ('adamw', 'sadam'):
    if results[key]['lr'] in (min(args.lrs), max(args.lrs)):
      lines.append(f'\n{names[key]} selected the edge of the grid ({results[key]["lr"]:g}).')
  lines += ['', *common.verdict(results), '']
  markdown = '\n'.join(lines)
  print(markdown)
  if args.out:
    path = common.write_results(
      args.out, dict(config=vars(args), seconds=seconds, results=results), markdown
    )
    # common.command_line() names experiments.<script>; this one lives here.
    payload = json.loads(path.read_text())
    payload['command'] = command
    path.write_text(json.dumps(payload, indent=1))
  return results


def _flax_version() -> str:
  import flax  # pylint: disable=g-import-not-at-top

  return flax.__version__


def demo(args: argparse.Namespace) -> dict[str, Any]:
  """Trains the nnx and the linen model with AdamW and S-AdamW; prints both."""
  from sadam_examples import data  # pylint: disable=g-import-not-at-top

  dataset = data.load_mnist1d()
  x0 = jnp.asarray(dataset[0][:2])
  out = {}
  for api in ('nnx', 'linen'):
    for name in ('adamw', 'sadamw'):
      accs = []
      for seed in range(args.seeds):
        tx = make_optimizer(name, args.lr, seed=seed)
        if api == 'nnx':
          model = quantized_nnx(seed, x0, bits=args.bits, act_bits=args.act_bits)
          run = train_nnx(
            model, tx, dataset, steps=args.steps, batch_size=args.batch_size, seed=seed
          )
        else:
          model = quantized_linen(bits=args.bits, act_bits=args.act_bits)
          run = train_linen(
            model, tx, dataset, steps=args.steps, batch_size=args.batch_size, seed=seed
          )
        accs.append(run['test_acc'])
      out[f'{api}/{name}'] = accs
      print(
        f'{api:5s} {name:7s} test accuracy {100 * np.mean(accs):.1f} +- '
        f'{100 * np.std(accs, ddof=1) if len(accs) > 1 else 0.0:.1f} '
        f'(lr {args.lr}, {args.steps} steps, seeds {args.seeds})'
      )
  return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument(
    '--table', action='store_true', help='the measured comparison (lr on validation, control)'
  )
  p.add_argument('--bits', type=int, default=4)
  p.add_argument(
    '--act-bits',
    type=int,
    default=default_act_bits(),
    help='activation bits; default none on the CPU, 4 elsewhere',
  )
  p.add_argument('--steps', type=int, default=1000, help='demo only')
  p.add_argument('--lr', type=float, default=3e-3, help='demo only')
  p.add_argument('--epochs', type=int, default=20, help='table only')
  p.add_argument(
    '--lrs',
    type=float,
    nargs='+',
    default=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    help='table only: the learning-rate grid',
  )
  p.add_argument('--batch-size', type=int, default=100)
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--out', default=None, help='table only: results stem under experiments/results')
  args = p.parse_args(argv)
  return table(args) if args.table else demo(args)


if __name__ == '__main__':
  main()
