"""The Bayesian scorers (`al_jax.bayesian`: bald, variation_ratios, mean_std,
predictive_entropy) over K consistent posterior samples: the k available images of
highest score.

The samples of a chunk are `scoring.sample_log_probs` [K, B, C]: K = mc_samples Monte
Carlo dropout passes (Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image
Data", ICML 2017), whose masks depend on the key and the pass only, so they agree across
chunks; or an ensemble's M members (Beluch, Genewein, Nurnberger & Kohler, "The power of
ensembles for active learning in image classification", CVPR 2018).
"""

import dataclasses

import jax
import jax.numpy as jnp

from al_jax import bayesian, scoring
from al_jax.rng import TIE_BREAK
from al_jax.strategies import base

COLORS = {"bald": "tab:purple", "variation_ratios": "tab:cyan", "mean_std": "gold",
          "predictive_entropy": "teal"}
# Scores on a grid of 1/K (K passes): most of a pool ties, and lax.top_k would take the
# lowest indices among them.
TIE_PRONE = ("variation_ratios",)


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  """Options of the strategies that read K posterior samples."""
  mc_samples: int = dataclasses.field(default=20, metadata={"help": (
      "Monte Carlo dropout passes for bald, variation_ratios, mean_std, "
      "predictive_entropy, batchbald and their stochastic_ variants.")})

  def __post_init__(self):
    base.check_positive("--mc_samples", self.mc_samples)


def sampled_scores(name: str, state, images: jax.Array, key: jax.Array,
                   num_samples: int) -> jax.Array:
  """bayesian scorer `name` of the chunk's posterior samples.  [B, H, W, C] -> [B]."""
  return bayesian.get(name)(scoring.sample_log_probs(state, images, key, num_samples))


def tie_break(scores: jax.Array, indices: jax.Array, key: jax.Array,
              resolution: float) -> jax.Array:
  """scores [B] on a grid of `resolution` plus a seeded jitter in [0, resolution / 2)
  drawn per pool index [B]: tied images in random order, distinct scores in theirs."""
  tie_key = jax.random.fold_in(key, TIE_BREAK)
  noise = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(tie_key, i)))(indices)
  return scores + noise * (0.5 * resolution)


@dataclasses.dataclass(frozen=True)
class SampledTopK:
  """The k available images with the highest Bayesian score `name` over K samples."""
  name: str
  k: int
  chunk_size: int = 1000
  num_samples: int = 20

  def chunk_score(self, state, key: jax.Array):
    """score(images [B, H, W, C], pool indices [B]) -> [B]; a TIE_PRONE score's ties
    are broken at random (`tie_break`, seeded by the key; an ensemble's K = M)."""
    def score(images, indices):
      scores = sampled_scores(self.name, state, images, key, self.num_samples)
      if self.name not in TIE_PRONE:
        return scores
      passes = state.members or self.num_samples
      return tie_break(scores, indices, key, 1.0 / passes)
    return score

  def __call__(self, state, images: jax.Array, available: jax.Array, key: jax.Array,
               labeled: jax.Array | None = None) -> base.Selection:
    scores, indices = scoring.running_top_k(
        self.chunk_score(state, key), images, available, k=self.k,
        chunk_size=self.chunk_size)
    if self.name in TIE_PRONE:  # the scores themselves, without the tie-break's jitter
      passes = state.members or self.num_samples
      scores = jnp.round(scores * passes - 0.25) / passes
    return base.top_k_selection(scores, indices)


def _builder(name: str):
  return lambda k, chunk_size, options: SampledTopK(name, k, chunk_size, options.mc_samples)


for _name in bayesian.NAMES:
  base.register(base.Strategy(_name, _builder(_name), SampleOptions, needs="samples",
                              color=COLORS[_name], benchmark=_name == "bald"))
