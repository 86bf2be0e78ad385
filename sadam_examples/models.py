"""Flax linen classifiers with optional fake quantization (QAT).

Every model maps a float batch (NHWC images, NLC sequences, or anything for the
MLP) to logits and takes ``bits: int | None``: ``None`` is the float model;
otherwise conv/dense kernels are absmax fake-quantized per tensor to ``bits``
(:mod:`sadam_examples.quant`, identity STE) and, with
``quantize_activations=True`` (the default), so are the inputs of every layer
but the first. Those inputs follow a ReLU, so they use the unsigned grid
(``2^bits`` levels on ``[0, max]``); the network input stays in float.

With ``bits=None`` every layer is a plain ``nn.Conv``/``nn.Dense`` whose
contraction runs in the layer itself, so the same model can instead be
quantized by Google's Qwix (``qwix.quantize_model(model, qwix.QtProvider(
rules))``, see :mod:`sadam_examples.qwix_example`); the parameters are the
same in both cases.

All ``__call__`` methods take ``train: bool`` for a uniform interface; only
:class:`ResNet18` uses it (BatchNorm).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sadam_examples.quant import QuantConv
from sadam_examples.quant import QuantDense

Array = jax.Array


def _quant_kwargs(bits: int | None, quantize_activations: bool, *, first: bool) -> dict[str, Any]:
  """Quantization options of a layer for :class:`QuantConv`/:class:`QuantDense`.

  Args:
    bits: the model's bit width.
    quantize_activations: whether layer inputs are quantized.
    first: the layer sees the (float, signed) network input rather than
      post-ReLU activations.

  Returns:
    Keyword arguments: ``bits``, plus unsigned ``act_bits`` unless ``first``.
  """
  if first or not quantize_activations:
    return dict(bits=bits)
  return dict(bits=bits, act_bits=bits, act_signed=False)


class QATNet(nn.Module):
  """The small CNN of the S-Adam QAT experiments.

  ``[conv3x3 -> ReLU -> max-pool 2x2] x n -> dense``, with ``n = 2`` for inputs
  smaller than 64x64 and ``n = 3`` from 64x64 up, all fake-quantized to 4 bits
  by default.

  Attributes:
    num_classes: number of logits.
    bits: weight/activation bit width; ``None`` for the float network.
    features: channels of the conv layers (the first ``n`` are used).
    num_conv: number of conv layers; ``None`` picks it from the input size.
    quantize_activations: also fake-quantize the inputs of layers 2 and up.
  """

  num_classes: int = 10
  bits: int | None = 4
  features: Sequence[int] = (32, 64, 128)
  num_conv: int | None = None
  quantize_activations: bool = True

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    del train  # No train-mode layers.
    num_conv = self.num_conv or (3 if min(x.shape[1:3]) >= 64 else 2)
    q = functools.partial(_quant_kwargs, self.bits, self.quantize_activations)
    for i, features in enumerate(self.features[:num_conv]):
      x = QuantConv(features, (3, 3), **q(first=i == 0))(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    return QuantDense(self.num_classes, **q(first=False))(x.reshape(x.shape[0], -1))


class CNN1D(nn.Module):
  """The MNIST-1D convolutional baseline (Greydanus & Kobak, 2020).

  Three conv layers of 25 channels (kernels 5, 3, 3; stride 2; padding 1), each
  followed by a ReLU, then a dense layer on the flattened features: for
  length-40 inputs, 40 -> 19 -> 10 -> 5 positions and 125 features.

  References:
    Greydanus & Kobak, 2020. Scaling Down Deep Learning with MNIST-1D.
    https://arxiv.org/abs/2011.14439

  Attributes:
    num_classes: number of logits.
    bits: weight/activation bit width; ``None`` (default) for float.
    channels: channels of every conv layer.
    kernel_sizes: kernel size of each conv layer.
    strides: stride of each conv layer.
    quantize_activations: also fake-quantize the inputs of layers 2 and up.
  """

  num_classes: int = 10
  bits: int | None = None
  channels: int = 25
  kernel_sizes: Sequence[int] = (5, 3, 3)
  strides: Sequence[int] = (2, 2, 2)
  quantize_activations: bool = True

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    """Maps ``(N, L, C)`` inputs to ``(N, num_classes)`` logits."""
    del train
    q = functools.partial(_quant_kwargs, self.bits, self.quantize_activations)
    for i, (k, s) in enumerate(zip(self.kernel_sizes, self.strides)):
      conv = QuantConv(self.channels, (k,), strides=(s,), padding=((1, 1),), **q(first=i == 0))
      x = nn.relu(conv(x))
    return QuantDense(self.num_classes, **q(first=False))(x.reshape(x.shape[0], -1))


class MLP(nn.Module):
  """A ReLU multilayer perceptron on flattened inputs.

  Attributes:
    num_classes: number of logits.
    hidden: widths of the hidden layers.
    bits: weight/activation bit width; ``None`` (default) for float.
    quantize_activations: also fake-quantize the inputs of layers 2 and up.
  """

  num_classes: int = 10
  hidden: Sequence[int] = (512, 512, 512)
  bits: int | None = None
  quantize_activations: bool = True

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    del train
    q = functools.partial(_quant_kwargs, self.bits, self.quantize_activations)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(QuantDense(width, **q(first=i == 0))(x))
    return QuantDense(self.num_classes, **q(first=not self.hidden))(x)


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 convs with BatchNorm and a (projected) skip.

  Attributes:
    features: output channels.
    strides: stride of the first conv and of the projection.
    conv: conv constructor (possibly quantizing).
    norm: BatchNorm constructor.
  """

  features: int
  strides: int
  conv: functools.partial
  norm: functools.partial

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = self.conv(self.features, (3, 3), strides=self.strides)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.features, (3, 3))(y)
    # Zero-init of the last BN scale makes each block start as the identity.
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if x.shape != y.shape:
      x = self.conv(self.features, (1, 1), strides=self.strides, name='proj_conv')(x)
      x = self.norm(name='proj_norm')(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool).

  BatchNorm statistics live in the ``batch_stats`` collection, not in
  ``params`` (so the optimizer never sees them). Initialise with
  ``variables = model.init(key, x)``; train with
  ``logits, updates = model.apply(variables, x, train=True,
  mutable=['batch_stats'])`` and store ``updates['batch_stats']`` (batch
  statistics normalise, running averages are updated); evaluate with
  ``model.apply(variables, x)`` (running averages, nothing mutable).

  References:
    He et al., 2016. Deep Residual Learning for Image Recognition.
    https://arxiv.org/abs/1512.03385

  Attributes:
    num_classes: number of logits.
    bits: weight/activation bit width; ``None`` (default) for float. All convs
      and the classifier are quantized; the stem's input stays in float.
    stage_sizes: blocks per stage.
    width: channels of the first stage (doubled at every later stage).
    quantize_activations: also fake-quantize the (post-ReLU) inputs of every
      conv but the stem, and of the classifier.
    bn_momentum: running-average momentum of BatchNorm.
  """

  num_classes: int = 10
  bits: int | None = None
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  quantize_activations: bool = True
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    q = functools.partial(_quant_kwargs, self.bits, self.quantize_activations)
    conv = functools.partial(QuantConv, use_bias=False, **q(first=False))
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5
    )
    stem = QuantConv(self.width, (3, 3), use_bias=False, **q(first=True))
    x = nn.relu(norm()(stem(x)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides, conv=conv, norm=norm)(x)
    return QuantDense(self.num_classes, **q(first=False))(jnp.mean(x, axis=(1, 2)))
