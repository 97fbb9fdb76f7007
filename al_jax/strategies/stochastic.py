"""Stochastic batch acquisition (Kirsch et al., "Stochastic Batch Acquisition", TMLR
2023): k images drawn without replacement with p(n) ~ w(score_n), by Gumbel top-k
(`batch_acquisition.stochastic_batch`), for every per-image scorer, the paper's and the
Bayesian ones: stochastic_<scorer>.
"""

import dataclasses

import jax
import jax.numpy as jnp

from al_jax import batch_acquisition, bayesian, metrics, rng, scoring
from al_jax.strategies import base
from al_jax.strategies.sampled import SampleOptions, sampled_scores

# Per-image scorers that a stochastic batch can sample from.
SCORED = tuple(n for n in (*metrics.NAMES, *bayesian.NAMES) if n != "random")


@dataclasses.dataclass(frozen=True)
class StochasticOptions(SampleOptions):
  stochastic_mode: str = dataclasses.field(default="power", metadata={"help": (
      "stochastic_<scorer>: power, softmax or softrank sampling of the scores.")})
  stochastic_beta: float = dataclasses.field(default=1.0, metadata={"help": (
      "stochastic_<scorer>: inverse temperature.")})

  def __post_init__(self):
    super().__post_init__()
    if self.stochastic_mode not in batch_acquisition.MODES:
      raise ValueError(f"unknown stochastic_mode {self.stochastic_mode!r}; valid: "
                       f"{', '.join(batch_acquisition.MODES)}")
    if not self.stochastic_beta > 0:
      raise ValueError(f"--stochastic_beta must be positive, got {self.stochastic_beta}")


@dataclasses.dataclass(frozen=True)
class StochasticBatch:
  """k images drawn with p(n) ~ w(score_n) of scorer `name`; mode: power, softmax or
  softrank; beta: the inverse temperature. Its scores are the drawn images' scores."""
  name: str
  k: int
  chunk_size: int = 1000
  num_samples: int = 20
  mode: str = "power"
  beta: float = 1.0

  def __call__(self, state, images, available, key, labeled=None) -> base.Selection:
    if self.name in metrics.NAMES:
      scores = scoring.pool_scores(state, images, metrics.index(self.name), key,
                                   chunk_size=self.chunk_size)
    else:
      scores = scoring.map_pool(
          lambda chunk, _: sampled_scores(self.name, state, chunk, key, self.num_samples),
          images, chunk_size=self.chunk_size)
    draw_key = jax.random.fold_in(key, rng.SECOND_STREAM)
    indices = batch_acquisition.stochastic_batch(scores, self.k, draw_key, mode=self.mode,
                                                 beta=self.beta, available=available)
    return base.picked(indices, scores[jnp.maximum(indices, 0)])


def _builder(name: str):
  return lambda k, chunk_size, o: StochasticBatch(name, k, chunk_size, o.mc_samples,
                                                  o.stochastic_mode,
                                                  float(o.stochastic_beta))


for _name in SCORED:
  base.register(base.Strategy(
      f"stochastic_{_name}", _builder(_name), StochasticOptions,
      needs="samples" if _name in bayesian.NAMES else "probabilities",
      color="navy" if _name == "bald" else None, benchmark=_name == "bald"))
