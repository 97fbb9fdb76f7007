"""The paper's per-image scorers (`al_jax.metrics`: least_confidence, smallest_margin,
largest_margin, entropy, random) as strategies: the k available images of highest score.

On an ensemble the score is of its mean prediction. Scores are computed chunk by chunk
with a running top-k (`scoring.query_top_k`), so memory does not grow with the pool;
each image's key is fold_in(key, pool index), ties go to the lower index.
"""

import dataclasses

import jax
from jax.typing import ArrayLike

from al_jax import metrics, scoring
from al_jax.strategies import base

COLORS = {"least_confidence": "tab:blue", "smallest_margin": "tab:orange",
          "largest_margin": "tab:green", "entropy": "tab:red", "random": "tab:gray"}


@dataclasses.dataclass(frozen=True)
class TopK:
  """The k available images with the highest per-image score.

  metric_index: position in `metrics.NAMES` of the scorer (may be traced, so runs with
  different scorers share one program: `acquisition.choose`).
  """
  metric_index: ArrayLike
  k: int
  chunk_size: int = 1000

  def chunk_score(self, state, key: jax.Array):
    """score(images [B, H, W, C], pool indices [B]) -> [B]."""
    return lambda images, indices: scoring.score_images(state, images, indices,
                                                        self.metric_index, key)

  def __call__(self, state, images: jax.Array, available: jax.Array, key: jax.Array,
               labeled: jax.Array | None = None) -> base.Selection:
    return base.top_k_selection(*scoring.query_top_k(
        state, images, available, self.metric_index, key, k=self.k,
        chunk_size=self.chunk_size))


def _builder(name: str):
  return lambda k, chunk_size, options: TopK(metrics.index(name), k, chunk_size)


for _name in metrics.NAMES:
  base.register(base.Strategy(_name, _builder(_name), color=COLORS[_name],
                              benchmark=_name == "entropy"))
