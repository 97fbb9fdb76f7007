"""Data augmentation for training batches: small random shifts and rotations.

A pure, jittable transform of a uint8 image batch; `training.fit(augment=...)` applies it
to every training batch with a key of its own, so a run stays exactly repeatable and
the compiled loop is the same for every labeled-set size. Evaluation and scoring never
see augmented images.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


@dataclasses.dataclass(frozen=True)
class Augment:
  """Random affine jitter per image: a shift of up to `max_shift` pixels along each axis
  and a rotation of up to `max_degrees` about the centre (uniform), bilinear, the
  border filled with 0 (the background of MNIST-like images). Static settings of `fit`.
  """
  max_shift: float = 0.0
  max_degrees: float = 0.0

  def __bool__(self) -> bool:
    return bool(self.max_shift or self.max_degrees)

  def __call__(self, images: jax.Array, key: jax.Array) -> jax.Array:
    """images: [B, H, W, C] uint8 -> [B, H, W, C] uint8, one random transform per image."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(self._one)(images, keys)

  def _one(self, image: jax.Array, key: jax.Array) -> jax.Array:
    shift_key, angle_key = jax.random.split(key)
    shift = jax.random.uniform(shift_key, (2,), minval=-self.max_shift, maxval=self.max_shift)
    angle = jax.random.uniform(angle_key, (), minval=-self.max_degrees,
                               maxval=self.max_degrees) * (math.pi / 180.0)
    return affine(image, shift, angle)


def affine(image: jax.Array, shift: jax.Array, angle: jax.Array) -> jax.Array:
  """image [H, W, C] uint8 shifted by `shift` [2] (rows, columns; pixels) and rotated by
  `angle` (radians) about its centre -> [H, W, C]: output pixel p samples the input at
  R(angle) (p - c) + c - shift, bilinear, 0 outside."""
  height, width, channels = image.shape
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing="ij")
  centre_r, centre_c = (height - 1) / 2.0, (width - 1) / 2.0
  dr, dc = rows - centre_r, cols - centre_c
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src_r = cos * dr - sin * dc + centre_r - shift[0]
  src_c = sin * dr + cos * dc + centre_c - shift[1]
  pixels = image.astype(jnp.float32)
  out = jnp.stack([ndimage.map_coordinates(pixels[..., c], [src_r, src_c], order=1,
                                           mode="constant", cval=0.0)
                   for c in range(channels)], axis=-1)
  return jnp.clip(jnp.round(out), 0, 255).astype(image.dtype)
