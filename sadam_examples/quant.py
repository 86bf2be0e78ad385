"""Fake quantization with straight-through estimators, for quantization-aware training.

Fake quantization rounds a float tensor onto a uniform grid and maps it back to
floats, so the forward pass sees the quantized network while parameters stay in
float. Rounding has zero gradient almost everywhere, so the backward pass uses a
straight-through estimator (STE): here the *identity* STE, ``d q(x) / dx = 1``,
implemented with the ``x - stop_gradient(x) + stop_gradient(q(x))`` trick.

Two quantizers are provided:

* ``absmax`` (default, parameter-free): symmetric scaling by the absolute
  maximum, per tensor or per channel; 1-bit uses ``sign(x) * mean(|x|)``.
* ``lsq``: Learned Step Size Quantization, with a trainable step and the
  paper's gradient scale.

The linen modules :class:`QuantDense` and :class:`QuantConv` are ``nn.Dense`` and
``nn.Conv`` whose kernel (and optionally input) are fake-quantized before the
contraction; :func:`quantized_op` does the same for ``flax.nnx`` layers.

References:
  Bengio et al., 2013. Estimating or Propagating Gradients Through Stochastic
  Neurons for Conditional Computation. https://arxiv.org/abs/1308.3432

  Esser et al., 2020. Learned Step Size Quantization. ICLR 2020.
  https://arxiv.org/abs/1902.08153
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Method = Literal['absmax', 'lsq']

_EPS = 1e-8


def quant_range(bits: int, *, signed: bool = True, narrow: bool = True) -> tuple[int, int]:
  """Integer grid bounds ``(qmin, qmax)`` of a ``bits``-bit quantizer.

  Args:
    bits: bit width, ``>= 1``.
    signed: signed grid (weights, signed inputs) or unsigned ``[0, 2^bits - 1]``
      (non-negative inputs such as post-ReLU activations).
    narrow: for signed grids, drop the most negative code so the grid is
      symmetric, ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]``; otherwise use the full
      two's-complement range ``[-2^(bits-1), 2^(bits-1) - 1]``.

  Returns:
    The inclusive bounds ``(qmin, qmax)``.
  """
  if bits < 1:
    raise ValueError(f'bits must be >= 1, got {bits}.')
  if not signed:
    return 0, 2**bits - 1
  qmax = 2 ** (bits - 1) - 1
  return (-qmax if narrow else -qmax - 1), qmax


def ste(x: Array, q: Array) -> Array:
  """Identity straight-through estimator: forward ``q``, gradient of ``x``.

  Args:
    x: the float input.
    q: its quantized value, same shape.

  Returns:
    ``q`` in the forward pass; ``d/dx`` of the result is the identity.
  """
  # Exactly q forward (x - x == 0), unlike x + stop_gradient(q - x).
  return x - lax.stop_gradient(x) + lax.stop_gradient(q)


def round_ste(x: Array) -> Array:
  """``jnp.round`` with an identity gradient."""
  return ste(x, jnp.round(x))


def scale_grad(x: Array, scale: float | Array) -> Array:
  """Identity in the forward pass; multiplies the gradient by ``scale``."""
  scaled = x * scale
  return scaled - lax.stop_gradient(scaled) + lax.stop_gradient(x)


def _reduce_axes(ndim: int, axis: int | None) -> tuple[int, ...] | None:
  """Axes to reduce over for a per-tensor (``None``) or per-``axis`` statistic."""
  if axis is None:
    return None
  axis = axis % ndim
  return tuple(a for a in range(ndim) if a != axis)


def absmax_scale(x: Array, bits: int, *, axis: int | None = None, signed: bool = True) -> Array:
  """Step size that maps ``max|x|`` onto the largest code of the grid.

  Args:
    x: tensor to quantize.
    bits: bit width, ``>= 2`` for signed grids.
    axis: channel axis for per-channel scales; ``None`` for one scale.
    signed: signed symmetric grid or unsigned grid (see :func:`quant_range`).

  Returns:
    The scale, broadcastable against ``x`` (reduced axes kept with size 1).
  """
  _, qmax = quant_range(bits, signed=signed)
  if qmax < 1:
    raise ValueError('A signed absmax grid needs bits >= 2; use bits=1 for sign.')
  amax = jnp.max(jnp.abs(x), axis=_reduce_axes(x.ndim, axis), keepdims=True)
  return jnp.maximum(amax, _EPS) / qmax


def quantize(
  x: Array, bits: int, *, axis: int | None = None, signed: bool = True
) -> tuple[Array, Array]:
  """Absmax quantization to integer codes (no gradient trick).

  Args:
    x: tensor to quantize.
    bits: bit width, ``>= 2`` for signed grids.
    axis: channel axis for per-channel scales; ``None`` for per-tensor.
    signed: signed symmetric grid or unsigned grid.

  Returns:
    ``(codes, scale)``: integer-valued float codes and the scale, such that
    ``codes * scale`` is the dequantized tensor.
  """
  qmin, qmax = quant_range(bits, signed=signed)
  scale = absmax_scale(x, bits, axis=axis, signed=signed)
  return jnp.clip(jnp.round(x / scale), qmin, qmax), scale


def binarize(x: Array, *, axis: int | None = None) -> Array:
  """1-bit quantization ``sign(x) * mean(|x|)``; zero maps to ``+mean(|x|)``.

  References:
    Rastegari et al., 2016. XNOR-Net. https://arxiv.org/abs/1603.05279

  Args:
    x: tensor to binarize.
    axis: channel axis for per-channel scales; ``None`` for per-tensor.

  Returns:
    The binarized tensor (two values per scale), without gradient trick.
  """
  scale = jnp.mean(jnp.abs(x), axis=_reduce_axes(x.ndim, axis), keepdims=True)
  return jnp.where(x >= 0, scale, -scale)


def fake_quant(
  x: Array, bits: int | None, *, axis: int | None = None, signed: bool = True
) -> Array:
  """Absmax fake quantization with the identity straight-through estimator.

  Args:
    x: tensor to quantize.
    bits: bit width; ``None`` returns ``x`` unchanged; ``1`` with ``signed``
      binarizes with :func:`binarize`.
    axis: channel axis for per-channel scales; ``None`` for per-tensor.
    signed: signed symmetric grid (``2^bits - 1`` levels) or unsigned grid
      (``2^bits`` levels, for non-negative inputs).

  Returns:
    The dequantized tensor; its gradient with respect to ``x`` is the identity.
  """
  if bits is None:
    return x
  if bits == 1 and signed:
    return ste(x, binarize(x, axis=axis))
  codes, scale = quantize(x, bits, axis=axis, signed=signed)
  return ste(x, codes * scale)


def lsq_init_step(x: Array, bits: int, *, axis: int | None = None, signed: bool = True) -> Array:
  """LSQ step initialisation ``2 mean(|x|) / sqrt(qmax)`` (Esser et al., 2020).

  Args:
    x: a representative tensor (the weights, or a batch of activations: not
      zeros, or the step starts at ``~0``).
    bits: bit width.
    axis: channel axis for per-channel steps; ``None`` for one step.
    signed: signed or unsigned grid.

  Returns:
    The initial step, broadcastable against ``x``.
  """
  _, qmax = quant_range(bits, signed=signed, narrow=False)
  mean = jnp.mean(jnp.abs(x), axis=_reduce_axes(x.ndim, axis), keepdims=True)
  return jnp.maximum(2 * mean / jnp.sqrt(qmax), _EPS)


def lsq_fake_quant(
  x: Array,
  step: Array,
  bits: int,
  *,
  signed: bool = True,
  grad_scale: float | None = None,
) -> Array:
  """Learned Step Size Quantization ``round(clip(x / s, qmin, qmax)) * s``.

  ``x`` gets the clipped STE gradient (1 inside ``[qmin s, qmax s]``, 0 outside)
  and ``step`` gets LSQ's gradient, scaled by ``1 / sqrt(n * qmax)`` where ``n``
  is the number of elements sharing one step.

  References:
    Esser et al., 2020. Learned Step Size Quantization. https://arxiv.org/abs/1902.08153

  Args:
    x: tensor to quantize.
    step: positive step size, broadcastable against ``x`` (per-tensor or
      per-channel).
    bits: bit width, ``>= 2`` for signed grids.
    signed: full-range signed grid ``[-2^(b-1), 2^(b-1) - 1]`` or unsigned grid.
    grad_scale: overrides the gradient scale of ``step``.

  Returns:
    The dequantized tensor.
  """
  qmin, qmax = quant_range(bits, signed=signed, narrow=False)
  if qmax < 1:
    raise ValueError('Signed LSQ needs bits >= 2.')
  if grad_scale is None:
    grad_scale = 1.0 / (x.size / jnp.size(step) * qmax) ** 0.5
  step = scale_grad(step, grad_scale)
  return round_ste(jnp.clip(x / step, qmin, qmax)) * step


class FakeQuant(nn.Module):
  """Fake-quantizes its input with :func:`fake_quant` or :func:`lsq_fake_quant`.

  Attributes:
    bits: bit width; ``None`` is the identity.
    axis: channel axis for per-channel scales; ``None`` for per-tensor.
    signed: signed or unsigned grid (use unsigned for post-ReLU inputs).
    method: ``'absmax'`` (dynamic, no parameters) or ``'lsq'`` (a ``step``
      parameter, initialised by :func:`lsq_init_step` from the init input).
  """

  bits: int | None
  axis: int | None = None
  signed: bool = True
  method: Method = 'absmax'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.bits is None:
      return x
    if self.method == 'absmax':
      return fake_quant(x, self.bits, axis=self.axis, signed=self.signed)
    if self.method == 'lsq':
      init = functools.partial(lsq_init_step, x, self.bits, axis=self.axis, signed=self.signed)
      step = self.param('step', lambda _: lax.stop_gradient(init()))
      return lsq_fake_quant(x, step, self.bits, signed=self.signed)
    raise ValueError(f'Unknown quantization method {self.method!r}.')


class _QuantOp(nn.Module):
  """A lax contraction whose input (lhs) and kernel (rhs) are fake-quantized."""

  op: Callable[..., Array]
  bits: int | None
  per_channel: bool
  act_bits: int | None
  act_signed: bool
  method: Method

  @nn.compact
  def __call__(self, lhs: Array, rhs: Array, *args: Any, **kwargs: Any) -> Array:
    if self.act_bits is not None:
      lhs = FakeQuant(
        self.act_bits, signed=self.act_signed, method=self.method, name='input_quant'
      )(lhs)
    if self.bits is not None:
      # Both flax kernel layouts, (in, out) and (*window, in, out), end in the
      # output channel.
      axis = -1 if self.per_channel else None
      rhs = FakeQuant(self.bits, axis=axis, method=self.method, name='weight_quant')(rhs)
    return self.op(lhs, rhs, *args, **kwargs)


def _quant_op_cls(module: Any, op: Callable[..., Array]) -> Callable[[], nn.Module] | None:
  """The ``*_cls`` factory of the quantizing contraction, or ``None``.

  ``None`` when neither the kernel nor the input is quantized: flax then calls
  ``lax`` directly inside the layer, so an interception-based quantizer such as
  Qwix (``qwix.quantize_model``) sees the contraction in the module that owns
  the kernel. A child module would hide the kernel from it.
  """
  if module.bits is None and module.act_bits is None:
    return None
  return functools.partial(
    _QuantOp,
    op=op,
    bits=module.bits,
    per_channel=module.per_channel,
    act_bits=module.act_bits,
    act_signed=module.act_signed,
    method=module.method,
    name='quant',
  )


class QuantDense(nn.Dense):
  """``nn.Dense`` with a fake-quantized kernel and, optionally, input.

  All ``nn.Dense`` attributes apply; ``dot_general``/``dot_general_cls`` are
  set by this class. With ``bits=None`` and ``act_bits=None`` it is a plain
  ``nn.Dense`` (no ``quant`` child), which Qwix can quantize. With
  ``method='lsq'`` the steps live in
  ``params[...]['quant']['weight_quant' | 'input_quant']['step']``.

  Attributes:
    bits: kernel bit width; ``None`` keeps the kernel in float.
    per_channel: one scale per output feature instead of one per tensor.
    act_bits: input bit width (per-tensor); ``None`` keeps inputs in float.
    act_signed: signed input grid; set ``False`` for non-negative inputs.
    method: ``'absmax'`` or ``'lsq'``.
  """

  bits: int | None = None
  per_channel: bool = False
  act_bits: int | None = None
  act_signed: bool = True
  method: Method = 'absmax'

  def __post_init__(self) -> None:
    # Inject the quantizing contraction (none in float); flax's Dense does the
    # rest.
    object.__setattr__(self, 'dot_general_cls', _quant_op_cls(self, lax.dot_general))
    super().__post_init__()


class QuantConv(nn.Conv):
  """``nn.Conv`` with a fake-quantized kernel and, optionally, input.

  All ``nn.Conv`` attributes apply; ``conv_general_dilated``/
  ``conv_general_dilated_cls`` are set by this class. With ``bits=None`` and
  ``act_bits=None`` it is a plain ``nn.Conv`` (no ``quant`` child), which Qwix
  can quantize.

  Attributes:
    bits: kernel bit width; ``None`` keeps the kernel in float.
    per_channel: one scale per output channel instead of one per tensor.
    act_bits: input bit width (per-tensor); ``None`` keeps inputs in float.
    act_signed: signed input grid; set ``False`` for non-negative inputs.
    method: ``'absmax'`` or ``'lsq'``.
  """

  bits: int | None = None
  per_channel: bool = False
  act_bits: int | None = None
  act_signed: bool = True
  method: Method = 'absmax'

  def __post_init__(self) -> None:
    object.__setattr__(
      self, 'conv_general_dilated_cls', _quant_op_cls(self, lax.conv_general_dilated)
    )
    super().__post_init__()


def quantized_op(
  op: Callable[..., Array],
  *,
  bits: int | None,
  per_channel: bool = False,
  act_bits: int | None = None,
  act_signed: bool = True,
) -> Callable[..., Array]:
  """Wraps a lax contraction so it absmax-fake-quantizes its input and kernel.

  For ``flax.nnx``: ``nnx.Linear(..., dot_general=quantized_op(lax.dot_general,
  bits=4))`` or ``nnx.Conv(..., conv_general_dilated=quantized_op(
  lax.conv_general_dilated, bits=4))``.

  Args:
    op: ``lax.dot_general`` or ``lax.conv_general_dilated`` (kernel last axis =
      output channels).
    bits: kernel bit width; ``None`` keeps it in float.
    per_channel: per-output-channel kernel scales.
    act_bits: input bit width; ``None`` keeps inputs in float.
    act_signed: signed input grid.

  Returns:
    A function with ``op``'s signature.
  """

  def wrapped(lhs: Array, rhs: Array, *args: Any, **kwargs: Any) -> Array:
    lhs = fake_quant(lhs, act_bits, signed=act_signed)
    rhs = fake_quant(rhs, bits, axis=-1 if per_channel else None)
    return op(lhs, rhs, *args, **kwargs)

  return wrapped
