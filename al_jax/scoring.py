"""Pool scoring and top-k selection with fixed shapes.

The pool is streamed through the model in fixed-size chunks; each image is scored by
the metric with its own key (`fold_in(key, pool_index)`, so random scores do not
depend on the chunk size or the device count), and a running top-k over the chunks
keeps memory independent of the pool size. Already-labeled images are masked out with
-inf; ties are broken towards the lower pool index. Under a mesh with a "data" axis of
D devices (`jax.set_mesh`), the chunks go D at a time, one whole chunk per device
(`training.split_over_data_axis`), and the small top-k merge is replicated; the chunks
left over (fewer than D) are scored whole on every device. Each device thus scores
chunks of the same size as one device does, so the scores, the selection and its tie
rule are exactly one device's. A pool whose size N is not a multiple of the chunk is
padded to whole chunks inside every function here: the padding is
never selected and is cut from the returned per-image arrays.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from al_jax import batch_acquisition, metrics, model_api
from al_jax.training import TrainState, data_ways, pad_to_multiple, split_over_data_axis


def predict_probs(state: TrainState, images: jax.Array) -> jax.Array:
  """Class probabilities in inference mode.  images: [B, H, W, C] uint8 -> [B, C] float32."""
  return jax.nn.softmax(state.logits(images).astype(jnp.float32), axis=-1)


def score_images(state: TrainState, images: jax.Array, indices: jax.Array,
                 metric_index: jax.Array, key: jax.Array) -> jax.Array:
  """Informativeness of each image.  images: [B, H, W, C], indices: [B] -> [B] float32.

  `metric_index` selects metrics.NAMES[metric_index] (may be traced); `indices` are the
  images' pool positions, used to derive each image's key.
  """
  probs = predict_probs(state, images)
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
  score_one = lambda p, k: metrics.switch(metric_index, p, k)
  return jax.vmap(score_one)(probs, keys)


def _whole_chunks(x: jax.Array, chunk_size: int) -> jax.Array:
  """x: [N, ...] padded with zeros (False for a mask) to whole chunks."""
  return x if x.shape[0] % chunk_size == 0 else pad_to_multiple(x, chunk_size)[0]


def map_pool(fn: Callable, images: jax.Array, *, chunk_size: int):
  """fn(chunk [B, H, W, C], pool indices [B]) -> pytree of [B, ...], over the whole pool
  in chunks (lax.map, one chunk in flight).  images: [N, ...] -> the pytree of [N, ...]."""
  n = images.shape[0]
  images = _whole_chunks(images, chunk_size)
  num_chunks = images.shape[0] // chunk_size
  chunks = images.reshape(num_chunks, chunk_size, *images.shape[1:])
  starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk_size
  out = lax.map(lambda c: fn(c[0], c[1] + jnp.arange(chunk_size, dtype=jnp.int32)),
                (chunks, starts))
  return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:])[:n], out)


def pool_scores(state: TrainState, images: jax.Array, metric_index: jax.Array,
                key: jax.Array, *, chunk_size: int) -> jax.Array:
  """Scores the whole pool.  images: [N, H, W, C] -> [N]."""
  n = images.shape[0]
  images = _whole_chunks(images, chunk_size)
  num_chunks = images.shape[0] // chunk_size
  ways = data_ways() if num_chunks % data_ways() == 0 else 1  # else whole on each device
  slabs = images.reshape(num_chunks // ways, ways, chunk_size, *images.shape[1:])
  starts = (jnp.arange(num_chunks) * chunk_size).reshape(-1, ways)

  def slab_scores(slab):  # [ways, B, ...]: one chunk per device
    chunks, chunk_starts = split_over_data_axis(slab)
    score = lambda c, s: score_images(state, c, s + jnp.arange(chunk_size), metric_index,
                                      key)
    return jax.vmap(score)(chunks, chunk_starts)

  return lax.map(slab_scores, (slabs, starts)).reshape(-1)[:n]


def select_top_k(scores: jax.Array, available: jax.Array, k: int) -> jax.Array:
  """Indices of the k highest scores among `available`.  scores, available: [N] -> [k].

  Best first, ties to the lower index. When fewer than k images are available the
  tail is -1 (never an unavailable index).
  """
  top_scores, indices = lax.top_k(jnp.where(available, scores, -jnp.inf), k)
  return jnp.where(top_scores > -jnp.inf, indices, -1)


def merge_top_k(best_scores: jax.Array, best_indices: jax.Array, scores: jax.Array,
                indices: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Running top-k update: keeps the k best of the current best [k] and a new chunk [B].

  The current best comes first, so on equal scores the earlier (lower) index wins.
  """
  k = best_scores.shape[0]
  all_scores = jnp.concatenate([best_scores, scores])
  all_indices = jnp.concatenate([best_indices, indices])
  top_scores, positions = lax.top_k(all_scores, k)
  return top_scores, all_indices[positions]


def merge_chunk(best: tuple[jax.Array, jax.Array], scores: jax.Array, available: jax.Array,
                indices: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Merges a chunk's scores [B] (-inf where not `available`) into the running top-k."""
  return merge_top_k(*best, jnp.where(available, scores.astype(jnp.float32), -jnp.inf),
                     indices)


def empty_top_k(k: int) -> tuple[jax.Array, jax.Array]:
  """The running top-k before any chunk: scores -inf, indices -1."""
  return jnp.full((k,), -jnp.inf, jnp.float32), jnp.full((k,), -1, jnp.int32)


ChunkScorer = Callable[[jax.Array, jax.Array], jax.Array]


def chunk_top_k(state: TrainState, images: jax.Array, available: jax.Array, start: jax.Array,
                metric_index: jax.Array, key: jax.Array, best: tuple[jax.Array, jax.Array]
                ) -> tuple[jax.Array, jax.Array]:
  """Scores one chunk (pool positions start..start+B) and merges it into `best`."""
  indices = start + jnp.arange(images.shape[0], dtype=jnp.int32)
  return merge_chunk(best, score_images(state, images, indices, metric_index, key),
                     available, indices)


def running_top_k(score_chunk: ChunkScorer, images: jax.Array, available: jax.Array, *,
                  k: int, chunk_size: int, offset: jax.Array | int = 0
                  ) -> tuple[jax.Array, jax.Array]:
  """The k available images with the highest `score_chunk`, chunk by chunk.

  score_chunk(images [B, H, W, C], pool indices [B]) -> scores [B]. images: [N, H, W, C];
  available: [N] bool; `offset` is the pool index of images[0] (for a shard of a larger
  pool). Returns (scores [k] float32, indices [k] int32), best first; if fewer than k
  images are available the tail has score -inf.
  """
  images = _whole_chunks(images, chunk_size)
  available = _whole_chunks(available, chunk_size)
  num_chunks = images.shape[0] // chunk_size
  ways = data_ways()
  num_slabs = num_chunks // ways if ways > 1 else 0

  def slab(i, best):  # `ways` chunks at once, one whole chunk per device
    start = i * ways * chunk_size
    chunks = lax.dynamic_slice_in_dim(images, start, ways * chunk_size)
    indices = offset + start + jnp.arange(ways * chunk_size, dtype=jnp.int32)
    chunks, chunk_indices = split_over_data_axis(
        (chunks.reshape(ways, chunk_size, *images.shape[1:]),
         indices.reshape(ways, chunk_size)))
    scores = jax.vmap(score_chunk)(chunks, chunk_indices).reshape(-1)
    mask = lax.dynamic_slice_in_dim(available, start, ways * chunk_size)
    return merge_chunk(best, scores, mask, indices)  # in pool order: ties as one device

  def body(i, best):
    start = i * chunk_size
    chunk = lax.dynamic_slice_in_dim(images, start, chunk_size)
    mask = lax.dynamic_slice_in_dim(available, start, chunk_size)
    indices = offset + start + jnp.arange(chunk_size, dtype=jnp.int32)
    return merge_chunk(best, score_chunk(chunk, indices), mask, indices)

  best = lax.fori_loop(0, num_slabs, slab, empty_top_k(k)) if num_slabs else empty_top_k(k)
  return lax.fori_loop(num_slabs * ways, num_chunks, body, best)


def query_top_k(state: TrainState, images: jax.Array, available: jax.Array,
                metric_index: jax.Array, key: jax.Array, *, k: int, chunk_size: int,
                offset: jax.Array | int = 0) -> tuple[jax.Array, jax.Array]:
  """The k most informative available pool images by metric NAMES[metric_index]
  (`running_top_k` of `score_images`); (scores [k], indices [k])."""
  score = lambda chunk, indices: score_images(state, chunk, indices, metric_index, key)
  return running_top_k(score, images, available, k=k, chunk_size=chunk_size, offset=offset)


def mc_log_probs(state: TrainState, images: jax.Array, key: jax.Array, num_samples: int
                 ) -> jax.Array:
  """Monte Carlo dropout: log-probabilities [K, B, C] of K stochastic passes.

  images: [B, H, W, C] uint8. Batch norm uses its running statistics; pass k drops the
  same units for every image (its key is fold_in(key, k), whatever the chunk), so the
  samples are consistent across the pool, as BatchBALD needs. A model's deterministic
  trunk (al_jax's CNNs: all before the first dropout) runs once; only the head runs K
  times, vmapped over k (`model_api.stochastic_log_probs`).
  """
  return model_api.stochastic_log_probs(state, images, key, num_samples)


def sample_log_probs(state: TrainState, images: jax.Array, key: jax.Array, num_samples: int
                     ) -> jax.Array:
  """Consistent posterior samples [K, B, C] of log-probabilities: an ensemble's members
  (K = M, `key` and `num_samples` unused), else K = num_samples MC dropout passes."""
  if state.members:
    return state.per_member(
        lambda member: jax.nn.log_softmax(member.logits(images).astype(jnp.float32), axis=-1))
  return mc_log_probs(state, images, key, num_samples)


def pool_log_probs(state: TrainState, images: jax.Array, key: jax.Array, num_samples: int, *,
                   chunk_size: int) -> jax.Array:
  """`sample_log_probs` of the whole pool.  images: [N, H, W, C] -> [K, N, C]."""
  per_image = map_pool(lambda chunk, _: jnp.swapaxes(
      sample_log_probs(state, chunk, key, num_samples), 0, 1), images, chunk_size=chunk_size)
  return jnp.swapaxes(per_image, 0, 1)


def pool_embeddings(state: TrainState, images: jax.Array, kind: str, *, chunk_size: int
                    ) -> jax.Array:
  """`embeddings` of every pool image, chunk by chunk.  [N, H, W, C] -> [N, E]."""
  return map_pool(lambda chunk, _: embeddings(state, chunk, kind), images, chunk_size=chunk_size)


def embeddings(state: TrainState, images: jax.Array, kind: str) -> jax.Array:
  """Per-image embeddings in inference mode.  images: [B, H, W, C] -> [B, E].

  kind "penultimate": the model's embeddings, by default the input of its last dense layer, E = D (core-set);
  "gradient": BADGE's last-layer gradient embedding at the predicted label, E = C * D
  (`batch_acquisition.badge_embeddings`). An ensemble concatenates its members' (E * M).
  """
  def one(member):
    logits, penultimate = model_api.penultimate(member, images)
    penultimate = penultimate.astype(jnp.float32)
    if kind == "penultimate":
      return penultimate
    return batch_acquisition.badge_embeddings(penultimate, logits)

  out = state.per_member(one)
  if state.members:  # [M, B, E] -> [B, M * E]
    out = jnp.moveaxis(out, 0, 1).reshape(out.shape[1], -1)
  return out


def stream_top_k(state: TrainState, chunks, metric_index: int, key: jax.Array, *, k: int
                 ) -> tuple[jax.Array, jax.Array]:
  """Running top-k over a pool streamed from the host, for pools larger than memory.

  chunks: an iterable of (images [B, H, W, C] uint8, available [B] bool), all of the
  same B, in pool order. Device memory holds one or two chunks whatever the pool size;
  dispatch is asynchronous, so copying chunk i + 1 overlaps scoring chunk i.
  """
  best = empty_top_k(k)
  start = 0
  for images, available in chunks:
    best = _chunk_top_k_jit(state, images, available, jnp.int32(start),
                            jnp.int32(metric_index), key, best)
    start += images.shape[0]
  return best


_chunk_top_k_jit = jax.jit(chunk_top_k, donate_argnums=6)
