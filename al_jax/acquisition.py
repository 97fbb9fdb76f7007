"""Acquisition strategies: given the model state, the pool and a key, choose k images.

Every strategy has one signature,

    strategy(state, images, available, key) -> Selection
      state: training.TrainState; images: [N, H, W, C] uint8 (N a multiple of the
      scoring chunk); available: [N] bool (unlabeled, not padding); key: a PRNG key
      Selection: indices [k] int32 pool positions, best first, -1 where fewer than k
      images were available; scores [k] float32, -inf at those -1 slots

with its static settings (k, chunk size, options) fixed when it is built, so the round
loop calls any strategy the same way and never needs to know which it is. `TopK`
covers the paper's per-image scorers (`al_jax.metrics`) through the chunked running
top-k; `MCDropoutTopK` the Bayesian scorers of `al_jax.bayesian` over Monte Carlo dropout
passes; a strategy that chooses a set jointly (from embeddings, say) is any other
callable with this signature, registered in `FACTORIES`.

Runs with different strategies share one compiled program: `choose(strategies, index)`
picks one at run time from a traced index. Per-image scorers are fused into a single
pass over the pool (the scorer is switched per image); other strategies go through
`lax.switch`.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from al_jax import bayesian, metrics, scoring
from al_jax.training import TrainState


class Selection(NamedTuple):
  """k chosen pool images: indices [k] int32 (-1 = none left), scores [k] float32."""
  indices: jax.Array
  scores: jax.Array


class Acquisition(Protocol):
  """(state, images [N, H, W, C], available [N] bool, key) -> Selection of k images."""

  def __call__(self, state: TrainState, images: jax.Array, available: jax.Array,
               key: jax.Array) -> Selection:
    ...


def _selection(scores: jax.Array, indices: jax.Array) -> Selection:
  """A running top-k's (scores [k], indices [k]) as a Selection: -1 where score is -inf."""
  return Selection(jnp.where(scores > -jnp.inf, indices, -1), scores)


@dataclasses.dataclass(frozen=True)
class TopK:
  """The k available images with the highest per-image score.

  metric_index: position in `metrics.NAMES` of the scorer (may be traced). Scores are
  computed chunk by chunk with a running top-k, so memory does not grow with the pool;
  each image's key is fold_in(key, pool index), ties go to the lower index.
  """
  metric_index: ArrayLike
  k: int
  chunk_size: int = 1000

  def __call__(self, state: TrainState, images: jax.Array, available: jax.Array,
               key: jax.Array) -> Selection:
    return _selection(*scoring.query_top_k(state, images, available, self.metric_index, key,
                                           k=self.k, chunk_size=self.chunk_size))


@dataclasses.dataclass(frozen=True)
class MCDropoutTopK:
  """The k available images with the highest score over K Monte Carlo dropout passes.

  name: a scorer of `al_jax.bayesian` (bald, variation_ratios, mean_std,
  predictive_entropy), applied to each chunk's `scoring.mc_log_probs` [K, B, C]; the
  dropout masks depend on the key and the pass only, so they agree across chunks.
  Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data", ICML 2017.
  """
  name: str
  k: int
  chunk_size: int = 1000
  num_samples: int = 20

  def __call__(self, state: TrainState, images: jax.Array, available: jax.Array,
               key: jax.Array) -> Selection:
    scorer = bayesian.get(self.name)
    score = lambda chunk, _: scorer(scoring.mc_log_probs(state, chunk, key, self.num_samples))
    return _selection(*scoring.running_top_k(score, images, available, k=self.k,
                                             chunk_size=self.chunk_size))


def _top_k_factory(name: str) -> Callable[..., Acquisition]:
  return lambda k, chunk_size, **options: TopK(metrics.index(name), k, chunk_size)


def _mc_factory(name: str) -> Callable[..., Acquisition]:
  return lambda k, chunk_size, mc_samples=20, **options: MCDropoutTopK(
      name, k, chunk_size, mc_samples)


# name -> factory(k, chunk_size, **options) -> Acquisition. The paper's scorers and
# random, then the Monte Carlo dropout scorers (option mc_samples).
FACTORIES: dict[str, Callable[..., Acquisition]] = {
    **{name: _top_k_factory(name) for name in metrics.NAMES},
    **{name: _mc_factory(name) for name in bayesian.NAMES}}
NAMES: tuple[str, ...] = tuple(FACTORIES)


def make(name: str, *, k: int, chunk_size: int = 1000, **options) -> Acquisition:
  """The strategy called `name`, choosing `k` images; `options` such as mc_samples go to
  the strategies that use them. ValueError for an unknown name."""
  return metrics.lookup(FACTORIES, name, "metric")(k=k, chunk_size=chunk_size, **options)


def choose(strategies: Sequence[Acquisition], index: ArrayLike) -> Acquisition:
  """strategies[index], picked at run time (`index` may be traced)."""
  if len(strategies) == 1:
    return strategies[0]
  first = strategies[0]
  if all(isinstance(s, TopK) and (s.k, s.chunk_size) == (first.k, first.chunk_size)
         for s in strategies):
    metric_indices = jnp.asarray([s.metric_index for s in strategies], jnp.int32)
    return TopK(metric_indices[index], first.k, first.chunk_size)
  return lambda *args: lax.switch(index, list(strategies), *args)


def labeled_after(labeled: jax.Array, selection: Selection) -> jax.Array:
  """The labeled mask [N] with the selection's images added (-1 slots ignored)."""
  n = labeled.shape[0]
  return labeled.at[jnp.where(selection.indices >= 0, selection.indices, n)].set(
      True, mode="drop")


def nothing(k: int) -> Selection:
  """A selection of no image (k slots of -1), e.g. after the last round."""
  return Selection(jnp.full((k,), -1, jnp.int32), jnp.full((k,), -jnp.inf, jnp.float32))
