"""The two CNNs of the paper, in Flax Linen, as the authors' code builds them (NOTES.md).

Both map normalized images `[B, H, W, C]` (float) to logits `[B, num_classes]`; the
number of classes comes from the task so binary and 10-class runs share the code.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


@jax.custom_batching.custom_vmap
def _conv_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC)


@_conv_valid.def_vmap
def _conv_valid_vmap(axis_size, in_batched, x, kernel):
  """Batching over stacked runs (al_jax.grid). Shared filters: the runs fold into the
  batch axis. On accelerators a shared input is one convolution with every run's
  filters side by side, and batched inputs and filters one grouped convolution; on CPU,
  where XLA's grouped convolution is slow, each run gets one ordinary convolution."""
  x_batched, kernel_batched = in_batched
  if not kernel_batched:  # runs share the filters: fold the runs into the batch axis
    out = _conv_valid(x.reshape(-1, *x.shape[2:]), kernel)
    return out.reshape(axis_size, -1, *out.shape[1:]), True
  on_cpu = jax.default_backend() == "cpu"
  if not x_batched and not on_cpu:  # runs share the input: the runs' filters side by side
    kh, kw, cin, cout = kernel.shape[1:]
    stacked = kernel.transpose(1, 2, 3, 0, 4).reshape(kh, kw, cin, axis_size * cout)
    out = _conv_valid(x, stacked).reshape(*x.shape[:1], -1, x.shape[2] - kw + 1,
                                          axis_size, cout)
    return jnp.moveaxis(out, 3, 0), True
  if not on_cpu:  # accelerators: one grouped convolution
    return jax.vmap(lambda a, b: lax.conv_general_dilated(
        a, b, (1, 1), "VALID", dimension_numbers=_NHWC))(x, kernel), True
  # CPU: one plain convolution per run (the stacked layout keeps every operand row-major;
  # a transposed operand sends XLA:CPU to a much slower convolution).
  inputs = [x if not x_batched else x[i] for i in range(axis_size)]
  return jnp.stack([_conv_valid(inputs[i], kernel[i]) for i in range(axis_size)]), True


@jax.custom_vjp
def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 VALID convolution.  x: [B, H, W, Cin], kernel: [kh, kw, Cin, Cout].

  Same values as `lax.conv_general_dilated`, with a hand-written backward pass: XLA's
  CPU filter-gradient convolution is slow, and about 20x slower again inside a
  compiled loop; here the kernel gradient is kh*kw matrix products of shifted inputs
  and the input gradient is a forward convolution of the padded output gradient.
  """
  return _conv_valid(x, kernel)


def _conv2d_fwd(x, kernel):
  return _conv_valid(x, kernel), (x, kernel)


def _conv2d_bwd(residuals, dy):
  x, kernel = residuals
  kh, kw, cin, cout = kernel.shape
  oh, ow = dy.shape[1:3]
  dy_padded = jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  dx = _conv_valid(dy_padded, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  dy_flat = dy.reshape(-1, cout)
  dkernel = jnp.stack([
      jnp.stack([x[:, i:i + oh, j:j + ow, :].reshape(-1, cin).T @ dy_flat
                 for j in range(kw)]) for i in range(kh)])
  return dx, dkernel.astype(kernel.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class Conv(nn.Module):
  """Stride-1 convolution with bias (parameters named as in `nn.Conv`).

  padding: "VALID" or an int p (zero padding p on each side, p = 1 is "SAME" for 3x3).
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  padding: str | int = "VALID"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.padding != "VALID":
      p = int(self.padding)
      x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    return conv2d(x, kernel) + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, by reshape (its gradient avoids XLA's slow CPU
  select-and-scatter).  x: [B, H, W, C] -> [B, H // 2, W // 2, C]."""
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class MnistCNN(nn.Module):
  """Conv32-ReLU-BN-Conv64-ReLU-BN-MaxPool-Drop.25-Dense128-ReLU-Drop.5-Dense C."""
  num_classes: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)
    x = Conv(32, dtype=self.dtype)(x)
    x = norm()(nn.relu(x))
    x = Conv(64, dtype=self.dtype)(x)
    x = norm()(nn.relu(x))
    x = max_pool_2x2(x)
    x = nn.Dropout(0.25, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(128, dtype=self.dtype)(x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32)(x)


class FruitsNet3(nn.Module):
  """The authors' "Net3": three convs with batch norm, two pools, three dense layers."""
  num_classes: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)
    drop = lambda rate: nn.Dropout(rate, deterministic=not train)
    x = Conv(28, padding=1, dtype=self.dtype)(x)
    x = drop(0.2)(norm()(nn.relu(x)))
    x = Conv(35, padding=1, dtype=self.dtype)(x)
    x = max_pool_2x2(norm()(nn.relu(x)))
    x = Conv(16, padding=1, dtype=self.dtype)(x)
    x = max_pool_2x2(norm()(nn.relu(x)))
    x = drop(0.2)(x.reshape(x.shape[0], -1))
    x = drop(0.3)(nn.relu(nn.Dense(100, dtype=self.dtype)(x)))
    x = norm()(nn.relu(nn.Dense(30, dtype=self.dtype)(x)))
    return nn.Dense(self.num_classes, dtype=jnp.float32)(x)


def create_model(dataset: str, num_classes: int, dtype: jnp.dtype = jnp.float32) -> nn.Module:
  """The paper's CNN for `dataset` ("mnist", "fashion_mnist" or "fruits360")."""
  if dataset in ("mnist", "fashion_mnist"):
    return MnistCNN(num_classes=num_classes, dtype=dtype)
  if dataset == "fruits360":
    return FruitsNet3(num_classes=num_classes, dtype=dtype)
  raise ValueError(f"no model for dataset {dataset!r}; valid: mnist, fashion_mnist, fruits360")
