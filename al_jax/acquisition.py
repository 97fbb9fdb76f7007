"""Acquisition strategies: given the model state, the pool and a key, choose k images.

Every strategy has one signature,

    strategy(state, images, available, key, labeled) -> Selection
      state: training.TrainState (one model or an ensemble); images: [N, H, W, C] uint8
      (N a multiple of the scoring chunk); available: [N] bool (unlabeled, not padding);
      key: a PRNG key; labeled: [N] bool, the labeled set (core-set measures distances
      to it; the others ignore it, and it may be omitted for them)
      Selection: indices [k] int32 pool positions in the order chosen, -1 where fewer
      than k images were available; scores [k] float32, -inf at those -1 slots

with its static settings (k, chunk size, options) fixed when it is built, so the round
loop calls any strategy the same way and never needs to know which it is:

  TopK            the paper's per-image scorers (`al_jax.metrics`) through the chunked
                  running top-k; on an ensemble, of its mean prediction
  SampledTopK     the Bayesian scorers (`al_jax.bayesian`) over K consistent posterior
                  samples: MC dropout passes, or an ensemble's members
  BatchBALD       greedy BatchBALD over the whole pool's samples [K, N, C]
  StochasticBatch Gumbel top-k sampling of any per-image score (power/softmax/soft-rank)
  CoreSet         greedy k-center on penultimate embeddings
  Badge           k-means++ seeding on last-layer gradient embeddings

The joint strategies (the last four) hold a whole-pool array ([K, N, C] samples, [N]
scores or [N, E] embeddings, computed chunk by chunk) and call the pure selectors of
`al_jax.batch_acquisition`; their scores are the BatchBALD value of the batch so far,
the sampled score, or 0 (core-set, BADGE: a set has no per-image score).

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

from al_jax import batch_acquisition, bayesian, metrics, scoring
from al_jax.training import TrainState


# fold_in data of the key of a strategy's second random stream (BatchBALD's sampled
# configurations, the stochastic draw), apart from the scores' fold_in(key, pass or image).
SECOND_STREAM = 2**31 - 2


class Selection(NamedTuple):
  """k chosen pool images: indices [k] int32 (-1 = none left), scores [k] float32."""
  indices: jax.Array
  scores: jax.Array


class Acquisition(Protocol):
  """(state, images [N, H, W, C], available [N], key, labeled [N]) -> Selection of k."""

  def __call__(self, state: TrainState, images: jax.Array, available: jax.Array,
               key: jax.Array, labeled: jax.Array | None = None) -> Selection:
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
               key: jax.Array, labeled: jax.Array | None = None) -> Selection:
    return _selection(*scoring.query_top_k(state, images, available, self.metric_index, key,
                                           k=self.k, chunk_size=self.chunk_size))


@dataclasses.dataclass(frozen=True)
class SampledTopK:
  """The k available images with the highest score over K posterior samples.

  name: a scorer of `al_jax.bayesian` (bald, variation_ratios, mean_std,
  predictive_entropy), applied to each chunk's `scoring.sample_log_probs` [K, B, C]:
  K = num_samples Monte Carlo dropout passes (Gal, Islam & Ghahramani, "Deep Bayesian
  Active Learning with Image Data", ICML 2017), whose masks depend on the key and the
  pass only, so they agree across chunks; or an ensemble's M members (Beluch, Genewein,
  Nurnberger & Kohler, "The power of ensembles for active learning in image
  classification", CVPR 2018).
  """
  name: str
  k: int
  chunk_size: int = 1000
  num_samples: int = 20

  def __call__(self, state: TrainState, images: jax.Array, available: jax.Array,
               key: jax.Array, labeled: jax.Array | None = None) -> Selection:
    score = lambda chunk, _: _sampled_scores(self.name, state, chunk, key, self.num_samples)
    return _selection(*scoring.running_top_k(score, images, available, k=self.k,
                                             chunk_size=self.chunk_size))


def _sampled_scores(name: str, state: TrainState, images: jax.Array, key: jax.Array,
                    num_samples: int) -> jax.Array:
  """bayesian scorer `name` of the chunk's posterior samples.  [B, H, W, C] -> [B]."""
  return bayesian.get(name)(scoring.sample_log_probs(state, images, key, num_samples))


def _picked(indices: jax.Array, scores: jax.Array) -> Selection:
  """A Selection of chosen indices [k] (-1 = none) with their scores, -inf at -1."""
  return Selection(indices, jnp.where(indices >= 0, scores, -jnp.inf).astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class BatchBALD:
  """Greedy BatchBALD over the pool's K consistent samples [K, N, C].

  Kirsch, van Amersfoort & Gal, NeurIPS 2019 (`batch_acquisition.batchbald`): joint
  entropies exact while the chosen points' C^|A| label configurations number at most
  num_configs, estimated from num_configs sampled configurations beyond. Holds the
  pool's samples (K * N * C floats) for the k greedy picks.
  """
  k: int
  chunk_size: int = 1000
  num_samples: int = 20
  num_configs: int = 1000

  def __call__(self, state, images, available, key, labeled=None) -> Selection:
    log_probs = scoring.pool_log_probs(state, images, key, self.num_samples,
                                       chunk_size=self.chunk_size)
    config_key = jax.random.fold_in(key, SECOND_STREAM)
    return _picked(*batch_acquisition.batchbald(log_probs, self.k, key=config_key,
                                                num_samples=self.num_configs,
                                                available=available))


@dataclasses.dataclass(frozen=True)
class StochasticBatch:
  """k images drawn without replacement with p(n) ~ w(score_n): Gumbel top-k.

  Kirsch et al., "Stochastic Batch Acquisition", TMLR 2023
  (`batch_acquisition.stochastic_batch`); name: any per-image scorer (the paper's or a
  Bayesian one); mode: power, softmax or softrank; beta: the inverse temperature.
  """
  name: str
  k: int
  chunk_size: int = 1000
  num_samples: int = 20
  mode: str = "power"
  beta: float = 1.0

  def __call__(self, state, images, available, key, labeled=None) -> Selection:
    if self.name in metrics.NAMES:
      scores = scoring.pool_scores(state, images, metrics.index(self.name), key,
                                   chunk_size=self.chunk_size)
    else:
      scores = scoring.map_pool(
          lambda chunk, _: _sampled_scores(self.name, state, chunk, key, self.num_samples),
          images, chunk_size=self.chunk_size)
    draw_key = jax.random.fold_in(key, SECOND_STREAM)
    indices = batch_acquisition.stochastic_batch(scores, self.k, draw_key, mode=self.mode,
                                                 beta=self.beta, available=available)
    return _picked(indices, scores[jnp.maximum(indices, 0)])


@dataclasses.dataclass(frozen=True)
class CoreSet:
  """Greedy k-center on penultimate embeddings (Sener & Savarese, ICLR 2018): each pick
  is the available image farthest from the labeled set and the picks before it."""
  k: int
  chunk_size: int = 1000

  def __call__(self, state, images, available, key, labeled=None) -> Selection:
    if labeled is None:
      raise ValueError("coreset needs the labeled mask: strategy(state, images, available, "
                       "key, labeled)")
    features = scoring.map_pool(lambda chunk, _: scoring.embeddings(state, chunk, "penultimate"),
                                images, chunk_size=self.chunk_size)
    indices = batch_acquisition.coreset(features, labeled, available, self.k)
    return _picked(indices, jnp.zeros((self.k,), jnp.float32))


@dataclasses.dataclass(frozen=True)
class Badge:
  """BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings
  at the predicted label, so the batch is both uncertain (large gradients) and diverse."""
  k: int
  chunk_size: int = 1000

  def __call__(self, state, images, available, key, labeled=None) -> Selection:
    features = scoring.map_pool(lambda chunk, _: scoring.embeddings(state, chunk, "gradient"),
                                images, chunk_size=self.chunk_size)
    indices = batch_acquisition.kmeans_pp(features, available, self.k, key)
    return _picked(indices, jnp.zeros((self.k,), jnp.float32))


def _positive(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _top_k_factory(name: str) -> Callable[..., Acquisition]:
  return lambda k, chunk_size, **options: TopK(metrics.index(name), k, chunk_size)


def _sampled_factory(name: str) -> Callable[..., Acquisition]:
  return lambda k, chunk_size, mc_samples=20, **options: SampledTopK(
      name, k, chunk_size, mc_samples)


def _stochastic_factory(name: str) -> Callable[..., Acquisition]:
  def factory(k, chunk_size, mc_samples=20, stochastic_mode="power", stochastic_beta=1.0,
              **options):
    if stochastic_mode not in batch_acquisition.MODES:
      raise ValueError(f"unknown stochastic_mode {stochastic_mode!r}; valid: "
                       f"{', '.join(batch_acquisition.MODES)}")
    return StochasticBatch(name, k, chunk_size, mc_samples, stochastic_mode,
                           float(stochastic_beta))
  return factory


def _batchbald_factory(k, chunk_size, mc_samples=20, batch_configs=1000, **options):
  _positive("batch_configs", batch_configs)
  return BatchBALD(k, chunk_size, mc_samples, batch_configs)


# Per-image scorers that a stochastic batch can sample from.
SCORED = tuple(n for n in (*metrics.NAMES, *bayesian.NAMES) if n != "random")

# name -> factory(k, chunk_size, **options) -> Acquisition. The paper's scorers and
# random; the Bayesian scorers (option mc_samples); then the joint strategies:
# batchbald (batch_configs), stochastic_<scorer> (stochastic_mode, stochastic_beta),
# coreset and badge.
FACTORIES: dict[str, Callable[..., Acquisition]] = {
    **{name: _top_k_factory(name) for name in metrics.NAMES},
    **{name: _sampled_factory(name) for name in bayesian.NAMES},
    "batchbald": _batchbald_factory,
    **{f"stochastic_{name}": _stochastic_factory(name) for name in SCORED},
    "coreset": lambda k, chunk_size, **options: CoreSet(k, chunk_size),
    "badge": lambda k, chunk_size, **options: Badge(k, chunk_size)}
NAMES: tuple[str, ...] = tuple(FACTORIES)


def make(name: str, *, k: int, chunk_size: int = 1000, **options) -> Acquisition:
  """The strategy called `name`, choosing `k` images; `options` such as mc_samples go to
  the strategies that use them. One-line ValueError for an unknown name or a bad option."""
  factory = metrics.lookup(FACTORIES, name, "metric")
  _positive("k", k)
  _positive("chunk_size", chunk_size)
  _positive("mc_samples", options.get("mc_samples", 20))
  return factory(k=k, chunk_size=chunk_size, **options)


def choose(strategies: Sequence[Acquisition], index: ArrayLike) -> Acquisition:
  """strategies[index], picked at run time (`index` may be traced)."""
  if len(strategies) == 1:
    return strategies[0]
  first = strategies[0]
  if all(isinstance(s, TopK) and (s.k, s.chunk_size) == (first.k, first.chunk_size)
         for s in strategies):
    metric_indices = jnp.asarray([s.metric_index for s in strategies], jnp.int32)
    return TopK(metric_indices[index], first.k, first.chunk_size)
  return lambda state, images, available, key, labeled=None: lax.switch(
      index, list(strategies), state, images, available, key, labeled)


def labeled_after(labeled: jax.Array, selection: Selection) -> jax.Array:
  """The labeled mask [N] with the selection's images added (-1 slots ignored)."""
  n = labeled.shape[0]
  return labeled.at[jnp.where(selection.indices >= 0, selection.indices, n)].set(
      True, mode="drop")


def nothing(k: int) -> Selection:
  """A selection of no image (k slots of -1), e.g. after the last round."""
  return Selection(jnp.full((k,), -1, jnp.int32), jnp.full((k,), -jnp.inf, jnp.float32))
