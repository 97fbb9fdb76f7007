"""TypiClust (Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite
Strategies Suit High and Low Budgets", ICML 2022): with few labels, ask for the most
typical image of each cluster that no label covers yet.

1. k-means of the valid pool's penultimate embeddings into min(labeled + k,
   MAX_CLUSTERS) clusters (k-means++ seeds, `LLOYD_STEPS` Lloyd steps);
2. the typicality of each image: 1 / (1e-5 + its mean Euclidean distance to its
   K = min(typiclust_neighbors, cluster size // 2) nearest neighbours in its cluster)
   (the paper's typicality with K = 20);
3. each pick takes the most typical available image of the cluster with the fewest
   labeled or picked images, the largest first (lower cluster id on ties), among the
   clusters of more than MIN_CLUSTER_SIZE images while one has an available image.

The paper embeds with a self-supervised model (SimCLR); here the embedding is the
current model's, as core-set's. The scores are the picked images' typicality.
Static: k, typiclust_neighbors and the cluster cap; the labeled count is traced, so a
growing labeled set does not compile again.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from al_jax import batch_acquisition, scoring
from al_jax.strategies import base

MAX_CLUSTERS = 500     # the authors' cap on the number of clusters
MIN_CLUSTER_SIZE = 5   # clusters of at most this many images are picked from last
LLOYD_STEPS = 10


@dataclasses.dataclass(frozen=True)
class TypiClustOptions:
  typiclust_neighbors: int = dataclasses.field(default=20, metadata={"help": (
      "typiclust: nearest neighbours in its cluster whose mean distance defines an "
      "image's typicality (at most half the cluster).")})

  def __post_init__(self):
    base.check_positive("--typiclust_neighbors", self.typiclust_neighbors)


def _sq_distances(x: jax.Array, y: jax.Array) -> jax.Array:
  """|x_i - y_j|^2 >= 0.  x: [N, E], y: [M, E] -> [N, M]."""
  dots = jnp.matmul(x, y.T, precision=lax.Precision.HIGHEST)
  d = jnp.sum(x * x, -1)[:, None] - 2 * dots + jnp.sum(y * y, -1)[None]
  return jnp.maximum(d, 0.0)


def kmeans(x: jax.Array, valid: jax.Array, num_clusters: jax.Array, max_clusters: int,
           key: jax.Array) -> jax.Array:
  """Cluster of each valid point (-1: not valid).  x: [N, E], valid: [N] -> [N] int32.

  num_clusters (may be traced) <= max_clusters (static) clusters: the first k-means++
  seeds (`batch_acquisition.kmeans_pp`), then LLOYD_STEPS Lloyd steps.
  """
  seeds = batch_acquisition.kmeans_pp(x, valid, max_clusters, key)
  active = (jnp.arange(max_clusters) < num_clusters) & (seeds >= 0)
  weight = valid.astype(x.dtype)

  def nearest(centers):
    return jnp.argmin(jnp.where(active, _sq_distances(x, centers), jnp.inf), -1)

  def lloyd(_, centers):
    owner = jax.nn.one_hot(nearest(centers), max_clusters, dtype=x.dtype) * weight[:, None]
    count = owner.sum(0)
    moved = jnp.matmul(owner.T, x, precision=lax.Precision.HIGHEST)
    moved = moved / jnp.maximum(count, 1.0)[:, None]
    return jnp.where(count[:, None] > 0, moved, centers)

  centers = lax.fori_loop(0, LLOYD_STEPS, lloyd, x[jnp.maximum(seeds, 0)])
  return jnp.where(valid, nearest(centers), -1).astype(jnp.int32)


def typicality(x: jax.Array, cluster: jax.Array, neighbors: int, *,
               chunk_size: int) -> jax.Array:
  """1 / (1e-5 + mean distance to the K nearest others of the same cluster), K =
  min(neighbors, cluster size // 2).  x: [N, E], cluster: [N] (-1: none) -> [N] float32
  (0 where K = 0 or cluster is -1). Rows of `chunk_size` points at a time ([chunk, N])."""
  n = x.shape[0]
  sizes = jnp.zeros(n, jnp.int32).at[cluster].add(1, mode="drop")
  near = min(neighbors, max(n - 1, 1))

  def rows(chunk, indices):
    own = cluster[indices]
    same = (own[:, None] == cluster[None]) & (indices[:, None] != jnp.arange(n)[None])
    d = jnp.where(same, jnp.sqrt(_sq_distances(chunk, x)), jnp.inf)
    nearest = -lax.top_k(-d, near)[0]                               # [B, K] ascending
    count = jnp.minimum(neighbors, sizes[jnp.maximum(own, 0)] // 2)
    use = jnp.arange(near)[None] < count[:, None]
    mean = jnp.sum(jnp.where(use, nearest, 0.0), -1) / jnp.maximum(count, 1)
    return jnp.where((own >= 0) & (count > 0), 1.0 / (1e-5 + mean), 0.0)

  return scoring.map_pool(rows, x, chunk_size=chunk_size)


def select(x: jax.Array, labeled: jax.Array, available: jax.Array, k: int, key: jax.Array,
           *, neighbors: int = 20, chunk_size: int = 1000) -> base.Selection:
  """TypiClust's k picks.  x: [N, E] embeddings; labeled, available: [N] bool (the valid
  pool is their union) -> Selection (indices [k], -1 when none is left; typicality)."""
  n = x.shape[0]
  x = x.astype(jnp.float32)
  valid = labeled | available
  max_clusters = min(MAX_CLUSTERS, n)
  num_clusters = jnp.minimum(jnp.sum(labeled & valid) + k, max_clusters)
  cluster = kmeans(x, valid, num_clusters, max_clusters, key)
  typical = typicality(x, cluster, neighbors, chunk_size=chunk_size)
  per_cluster = lambda mask: jnp.zeros(max_clusters, jnp.int32).at[cluster].add(
      mask.astype(jnp.int32), mode="drop")
  sizes = per_cluster(valid)

  def pick(carry, _):
    count, taken = carry
    candidate = available & ~taken
    open_ = per_cluster(candidate) > 0
    preferred = open_ & (sizes > MIN_CLUSTER_SIZE)
    open_ = jnp.where(jnp.any(preferred), preferred, open_)
    fewest = jnp.min(jnp.where(open_, count, n + 1))
    c = jnp.argmax(jnp.where(open_ & (count == fewest), sizes, -1))
    score = jnp.where(candidate & (cluster == c), typical, -jnp.inf)
    index = jnp.argmax(score)
    ok = score[index] > -jnp.inf
    count = count.at[c].add(ok.astype(jnp.int32))
    return (count, taken.at[index].set(taken[index] | ok)), (
        jnp.where(ok, index, -1).astype(jnp.int32), score[index])

  _, (indices, scores) = lax.scan(pick, (per_cluster(labeled & valid),
                                         jnp.zeros(n, bool)), None, length=k)
  return base.picked(indices, scores)


@dataclasses.dataclass(frozen=True)
class TypiClust:
  """`select` on the pool's penultimate embeddings [N, D] (an ensemble's concatenated)."""
  k: int
  chunk_size: int = 1000
  neighbors: int = 20

  def __call__(self, state, images, available, key, labeled=None) -> base.Selection:
    if labeled is None:
      labeled = jnp.zeros_like(available)
    features = scoring.pool_embeddings(state, images, "penultimate", chunk_size=self.chunk_size)
    return select(features, labeled, available, self.k, key, neighbors=self.neighbors,
                  chunk_size=self.chunk_size)


base.register(base.Strategy(
    "typiclust", lambda k, chunk_size, o: TypiClust(k, chunk_size, o.typiclust_neighbors),
    TypiClustOptions, needs="embeddings", color="darkgreen", benchmark=True))
