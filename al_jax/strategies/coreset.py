"""Core-set (Sener & Savarese, ICLR 2018): greedy k-center on penultimate embeddings; each
pick is the available image farthest from the labeled set and the picks before it
(`batch_acquisition.coreset`). A set has no per-image score: its scores are 0."""

import dataclasses

from al_jax import batch_acquisition, scoring
from al_jax.strategies import base


@dataclasses.dataclass(frozen=True)
class CoreSet:
  """The k available images greedy k-center adds to the labeled set, on penultimate
  embeddings [N, D]."""
  k: int
  chunk_size: int = 1000

  def __call__(self, state, images, available, key, labeled=None) -> base.Selection:
    if labeled is None:
      raise ValueError("coreset needs the labeled mask: strategy(state, images, available, "
                       "key, labeled)")
    features = scoring.pool_embeddings(state, images, "penultimate", chunk_size=self.chunk_size)
    indices = batch_acquisition.coreset(features, labeled, available, self.k)
    return base.picked_set(indices)


base.register(base.Strategy("coreset", lambda k, chunk_size, o: CoreSet(k, chunk_size),
                            needs="embeddings", color="tab:olive", benchmark=True))
