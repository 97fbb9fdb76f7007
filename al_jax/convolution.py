"""A drop-in `lax.conv_general_dilated` that is fast on XLA:CPU, for anyone's model.

XLA:CPU's own convolution gradient is slow, and much slower again inside a compiled loop
(`training.fit`'s), and vmapping a model over stacked runs turns its convolutions into
slow grouped ones. al_jax's CNNs avoid both through `models.conv2d`; this function gives
the same to a user's model with one argument, in Linen or NNX alike:

  nn.Conv(32, (3, 3), conv_general_dilated=al_jax.convolution.conv_general_dilated)
  nnx.Conv(1, 32, (3, 3), conv_general_dilated=al_jax.convolution.conv_general_dilated,
           rngs=rngs)

On CPU, 2-D convolutions with unit strides and dilations and one feature group (any
padding, any dimension numbers) go through `models.conv2d` (same values up to float
rounding; a hand-written backward pass); anything else, and every other backend, is
XLA's own `lax.conv_general_dilated`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from al_jax.models import conv2d


def _ones(values: Sequence[int] | None) -> bool:
  return values is None or all(v == 1 for v in values)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None, out_sharding=None) -> jax.Array:
  """`lax.conv_general_dilated`'s signature and values; lhs [B, ..., C] etc. as there."""
  fast = (jax.default_backend() == "cpu" and lhs.ndim == 4 and _ones(window_strides)
          and _ones(lhs_dilation) and _ones(rhs_dilation) and feature_group_count == 1
          and batch_group_count == 1 and precision is None
          and preferred_element_type is None and out_sharding is None)
  if fast:
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    lhs_spec, rhs_spec, out_spec = numbers
    x = lhs.transpose(lhs_spec[0], lhs_spec[2], lhs_spec[3], lhs_spec[1])  # NHWC
    kernel = rhs.transpose(rhs_spec[2], rhs_spec[3], rhs_spec[1], rhs_spec[0])  # HWIO
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], (1, 1), padding)
    pads = [tuple(p) for p in padding]
    fast = all(lo >= 0 and hi >= 0 for lo, hi in pads)
  if not fast:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type,
        out_sharding=out_sharding)
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  kernel = kernel.astype(x.dtype) if kernel.dtype != x.dtype else kernel
  y = conv2d(x, kernel)  # [N, H', W', O]
  order = [0] * 4  # NHWC -> the output's own layout
  for axis, position in zip((0, 3, 1, 2), out_spec):
    order[position] = axis
  return y.transpose(order)
