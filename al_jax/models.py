"""The two CNNs of the paper, in Flax Linen, as the authors' code builds them, and a small
MLP for feature vectors.

The CNNs map uint8 images `[B, H, W, C]` to logits `[B, num_classes]`: the model
normalises its input itself (`mean`, `std` per channel, from the data set's spec), and
the number of classes comes from the task so binary and 10-class runs share the code.
`FeatureMLP` maps float32 vectors `[B, D]` (say, a pretrained backbone's embeddings),
used as they are, to logits. `input_dtype` is the one rule for which inputs are which.
Convolutions use a hand-written backward pass on XLA:CPU, where it was measured to be
faster (docs/BENCHMARKS.md), and XLA's own convolution elsewhere (`conv_for_backend`).
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from al_jax.specs import DatasetSpec

_NHWC = ("NHWC", "HWIO", "NHWC")


@jax.custom_batching.custom_vmap
def _conv_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC)


@_conv_valid.def_vmap
def _conv_valid_vmap(axis_size, in_batched, x, kernel):
  """Batching over stacked runs on CPU. Shared filters: the runs fold into the batch
  axis. Otherwise one plain convolution per run: XLA:CPU's grouped convolution is slow,
  and a transposed operand sends it to a much slower kernel still."""
  x_batched, kernel_batched = in_batched
  if not kernel_batched:
    out = _conv_valid(x.reshape(-1, *x.shape[2:]), kernel)
    return out.reshape(axis_size, -1, *out.shape[1:]), True
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


def _xla_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC)


def conv_for_backend() -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The convolution to use on the default backend: the only place that chooses.

  XLA:CPU: `conv2d` (hand-written backward pass, plain convolutions per stacked run);
  GPU/TPU: XLA's convolution, whose own gradient and batching rules are fast there.
  """
  return conv2d if jax.default_backend() == "cpu" else _xla_conv


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
    return conv_for_backend()(x, kernel) + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, by reshape (its gradient avoids XLA's slow CPU
  select-and-scatter).  x: [B, H, W, C] -> [B, H // 2, W // 2, C]."""
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def input_dtype(input_shape: tuple[int, ...]) -> jnp.dtype:
  """The dtype of one input of this shape: images [H, W, C] are uint8, feature vectors
  [D] float32."""
  return jnp.float32 if len(input_shape) == 1 else jnp.uint8


def normalize(images: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
  """uint8 images [..., H, W, C] -> float32 (x/255 - mean) / std, per channel; float
  inputs (feature vectors) are returned as they are, in float32."""
  x = jnp.asarray(images).astype(jnp.float32)
  if not jnp.issubdtype(jnp.asarray(images).dtype, jnp.integer):
    return x
  return (x - jnp.asarray(mean, jnp.float32) * 255.0) / (jnp.asarray(std, jnp.float32) * 255.0)


def _dropout(rate: float, train: bool, mc_dropout: bool, name: str) -> nn.Dropout:
  """Dropout while training; with `mc_dropout` also at inference, one mask for the whole
  batch (broadcast over axis 0), so every image of a pass sees the same network."""
  return nn.Dropout(rate, deterministic=not (train or mc_dropout),
                    broadcast_dims=(0,) if mc_dropout and not train else (), name=name)


def _batch_norm(train: bool, dtype: jnp.dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name=name)


class TrunkHeadCNN(nn.Module):
  """A CNN in two parts: a deterministic trunk (uint8 images -> features) and a head
  (features -> logits) that holds every dropout layer.

  __call__(x, train, *, stage, mc_dropout, with_penultimate):
    stage: "all" (uint8 images [B, H, W, C] -> logits [B, C]), "trunk" (images -> the
    features before the first dropout) or "head" (those features -> logits), so Monte
    Carlo dropout runs the trunk once and only the head once per sample;
    mc_dropout: dropout also at inference, one mask per pass (`_dropout`);
    with_penultimate: also return the input of the last dense layer, (logits [B, C],
    penultimate [B, D]), the embedding that core-set and BADGE use.
  A subclass defines `trunk(x, train)` on normalised float images and
  `head(x, train, mc_dropout) -> (logits, penultimate)`; its layers are named.
  """
  num_classes: int
  mean: tuple[float, ...] = (0.5,)
  std: tuple[float, ...] = (0.5,)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, *, stage: str = "all",
               mc_dropout: bool = False, with_penultimate: bool = False):
    if stage != "head":
      x = self.trunk(normalize(x, self.mean, self.std), train)
      if stage == "trunk":
        return x
    logits, penultimate = self.head(x, train, mc_dropout)
    return (logits, penultimate) if with_penultimate else logits

  def trunk(self, x: jax.Array, train: bool) -> jax.Array:
    raise NotImplementedError

  def head(self, x: jax.Array, train: bool, mc_dropout: bool) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError


class _DenseHeadCNN(TrunkHeadCNN):
  """The head Drop.25-Dense128-ReLU-Drop.5-Dense C of MnistCNN and PooledCNN."""

  def head(self, x, train, mc_dropout):
    x = _dropout(0.25, train, mc_dropout, "Dropout_0")(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(128, dtype=self.dtype, name="Dense_0")(x))
    x = _dropout(0.5, train, mc_dropout, "Dropout_1")(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, name="Dense_1")(x), x


class MnistCNN(_DenseHeadCNN):
  """Conv32-ReLU-BN-Conv64-ReLU-BN-MaxPool-Drop.25-Dense128-ReLU-Drop.5-Dense C (the
  paper's MNIST CNN); the trunk is everything before the first dropout."""

  def trunk(self, x, train):
    x = Conv(32, dtype=self.dtype, name="Conv_0")(x)
    x = _batch_norm(train, self.dtype, "BatchNorm_0")(nn.relu(x))
    x = Conv(64, dtype=self.dtype, name="Conv_1")(x)
    x = _batch_norm(train, self.dtype, "BatchNorm_1")(nn.relu(x))
    return max_pool_2x2(x)


class FruitsNet3(TrunkHeadCNN):
  """The authors' "Net3": three convs with batch norm, two pools, three dense layers;
  the trunk is the first convolution and its batch norm."""
  mean: tuple[float, ...] = (0.5, 0.5, 0.5)
  std: tuple[float, ...] = (0.5, 0.5, 0.5)

  def trunk(self, x, train):
    x = Conv(28, padding=1, dtype=self.dtype, name="Conv_0")(x)
    return _batch_norm(train, self.dtype, "BatchNorm_0")(nn.relu(x))

  def head(self, x, train, mc_dropout):
    norm = lambda name: _batch_norm(train, self.dtype, name)
    drop = lambda rate, name: _dropout(rate, train, mc_dropout, name)
    x = drop(0.2, "Dropout_0")(x)
    x = Conv(35, padding=1, dtype=self.dtype, name="Conv_1")(x)
    x = max_pool_2x2(norm("BatchNorm_1")(nn.relu(x)))
    x = Conv(16, padding=1, dtype=self.dtype, name="Conv_2")(x)
    x = max_pool_2x2(norm("BatchNorm_2")(nn.relu(x)))
    x = drop(0.2, "Dropout_1")(x.reshape(x.shape[0], -1))
    x = drop(0.3, "Dropout_2")(nn.relu(nn.Dense(100, dtype=self.dtype, name="Dense_0")(x)))
    x = norm("BatchNorm_3")(nn.relu(nn.Dense(30, dtype=self.dtype, name="Dense_1")(x)))
    return nn.Dense(self.num_classes, dtype=jnp.float32, name="Dense_2")(x), x


class PooledCNN(_DenseHeadCNN):
  """Conv32(5x5)-BN-ReLU-MaxPool-Conv64(5x5)-BN-ReLU-MaxPool-Drop.25-Dense128-ReLU-
  Drop.5-Dense C: pooling after each convolution keeps the dense head small (1,024 wide
  on 28x28 images, against MnistCNN's 9,216), as the CNNs of the Bayesian active
  learning literature do (Gal, Islam & Ghahramani 2017; Kirsch et al. 2019), for tiny
  labeled sets; and Monte Carlo dropout passes, which repeat the head, are cheap. The
  trunk is both convolutions."""

  def trunk(self, x, train):
    x = Conv(32, kernel_size=(5, 5), dtype=self.dtype, name="Conv_0")(x)
    x = max_pool_2x2(nn.relu(_batch_norm(train, self.dtype, "BatchNorm_0")(x)))
    x = Conv(64, kernel_size=(5, 5), dtype=self.dtype, name="Conv_1")(x)
    return max_pool_2x2(nn.relu(_batch_norm(train, self.dtype, "BatchNorm_1")(x)))


class FeatureMLP(_DenseHeadCNN):
  """Dense256-ReLU-Drop.25-Dense128-ReLU-Drop.5-Dense C on float32 vectors [B, D]:
  the trunk is the first dense layer, the head (with the dropout of the Bayesian
  strategies, and the 128-wide embedding of core-set, BADGE and TypiClust) is
  MnistCNN's."""

  def trunk(self, x, train):
    return nn.relu(nn.Dense(256, dtype=self.dtype, name="Dense_in")(x))


MODELS = {"mnist_cnn": MnistCNN, "fruits_net3": FruitsNet3, "pooled_cnn": PooledCNN,
          "mlp": FeatureMLP}


def create_model(spec: DatasetSpec, num_classes: int, dtype: jnp.dtype = jnp.float32, *,
                 model: str | None = None) -> nn.Module:
  """The CNN `model` (default `spec.model`), normalising by the spec's mean and std."""
  name = model or spec.model
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
  mean, std = spec.mean, spec.std
  return MODELS[name](num_classes=num_classes, mean=mean, std=std, dtype=dtype)
