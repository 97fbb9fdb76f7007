"""Cold start: choose the first labels without any label, from the pool images alone.

  kmeans_pp  k-means++ seeding (D^2 sampling, `batch_acquisition.kmeans_pp`) on the pool's
             pixels: spread-out images, outliers included.
  kmeans     the same seeds refined by `LLOYD_STEPS` Lloyd iterations; then, for each
             centre, the nearest pool image: typical images of k clusters (in the spirit
             of TypiClust, Hacohen, Dekel & Weinshall, ICML 2022, without its
             self-supervised embedding).

The embedding is the raw pixels scaled to [0, 1] (no model is trained before the first
labels exist). Pure functions with static k, like every selector.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from al_jax import batch_acquisition

SELECTIONS = ("random", "kmeans_pp", "kmeans")
LLOYD_STEPS = 10


def pixel_embeddings(images: jax.Array) -> jax.Array:
  """images: [N, H, W, C] uint8 -> [N, H*W*C] float32 in [0, 1]; feature vectors [N, D]
  as they are, in float32."""
  x = images.reshape(images.shape[0], -1).astype(jnp.float32)
  return x / 255.0 if jnp.issubdtype(images.dtype, jnp.integer) else x


def _nearest(x: jax.Array, centers: jax.Array) -> jax.Array:
  """Index of the nearest centre of each point.  x: [N, E], centers: [k, E] -> [N]."""
  d = (jnp.sum(x * x, -1)[:, None] - 2 * x @ centers.T + jnp.sum(centers * centers, -1))
  return jnp.argmin(d, axis=-1)


@functools.partial(jax.jit, static_argnames=("k", "kind"))
def select_initial(images: jax.Array, valid: jax.Array, k: int, key: jax.Array, *,
                   kind: str) -> jax.Array:
  """k distinct pool indices [k] to label first (kind: kmeans_pp or kmeans).

  images: [N, H, W, C] uint8; valid: [N] bool (padding False); needs sum(valid) >= k.
  """
  x = pixel_embeddings(images)
  seeds = batch_acquisition.kmeans_pp(x, valid, k, key)
  if kind == "kmeans_pp":
    return seeds
  weight = valid.astype(jnp.float32)

  def lloyd(_, centers):
    owner = jax.nn.one_hot(_nearest(x, centers), k) * weight[:, None]  # [N, k]
    count = owner.sum(0)
    moved = (owner.T @ x) / jnp.maximum(count, 1.0)[:, None]
    return jnp.where(count[:, None] > 0, moved, centers)

  centers = lax.fori_loop(0, LLOYD_STEPS, lloyd, x[seeds])

  def pick(taken, center):  # the nearest valid image not yet taken, centre by centre
    d = jnp.sum(jnp.square(x - center), -1)
    index = jnp.argmin(jnp.where(valid & ~taken, d, jnp.inf))
    return taken.at[index].set(True), index.astype(jnp.int32)

  return lax.scan(pick, jnp.zeros(valid.shape, bool), centers)[1]
