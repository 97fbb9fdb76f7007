"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings at
the predicted label, so the batch is both uncertain (large gradients) and diverse
(`batch_acquisition.kmeans_pp`). A set has no per-image score: its scores are 0."""

import dataclasses

from al_jax import batch_acquisition, scoring
from al_jax.strategies import base


@dataclasses.dataclass(frozen=True)
class Badge:
  """The k available images k-means++ seeds on gradient embeddings [N, C * D]."""
  k: int
  chunk_size: int = 1000

  def __call__(self, state, images, available, key, labeled=None) -> base.Selection:
    features = scoring.pool_embeddings(state, images, "gradient", chunk_size=self.chunk_size)
    indices = batch_acquisition.kmeans_pp(features, available, self.k, key)
    return base.picked_set(indices)


base.register(base.Strategy("badge", lambda k, chunk_size, o: Badge(k, chunk_size),
                            needs="embeddings", color="tab:pink", benchmark=True))
