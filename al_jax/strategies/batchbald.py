"""BatchBALD (Kirsch, van Amersfoort & Gal, NeurIPS 2019): greedy picks that maximise the
mutual information of the batch, over the pool's K consistent samples [K, N, C].

Joint entropies are exact while the chosen points' C^|A| label configurations number at
most batch_configs, estimated from batch_configs sampled configurations beyond
(`batch_acquisition.batchbald`). Holds the pool's samples (K * N * C floats).
"""

import dataclasses

import jax

from al_jax import batch_acquisition, rng, scoring
from al_jax.strategies import base
from al_jax.strategies.sampled import SampleOptions


@dataclasses.dataclass(frozen=True)
class BatchBALDOptions(SampleOptions):
  batch_configs: int = dataclasses.field(default=1000, metadata={"help": (
      "batchbald: label configurations of the chosen points, exact up to this many, "
      "sampled beyond.")})

  def __post_init__(self):
    super().__post_init__()
    base.check_positive("--batch_configs", self.batch_configs)


@dataclasses.dataclass(frozen=True)
class BatchBALD:
  """Greedy BatchBALD; its scores are the BatchBALD value of the batch so far."""
  k: int
  chunk_size: int = 1000
  num_samples: int = 20
  num_configs: int = 1000

  def __call__(self, state, images, available, key, labeled=None) -> base.Selection:
    log_probs = scoring.pool_log_probs(state, images, key, self.num_samples,
                                       chunk_size=self.chunk_size)
    config_key = jax.random.fold_in(key, rng.SECOND_STREAM)
    return base.picked(*batch_acquisition.batchbald(log_probs, self.k, key=config_key,
                                                    num_samples=self.num_configs,
                                                    available=available))


base.register(base.Strategy(
    "batchbald", lambda k, chunk_size, o: BatchBALD(k, chunk_size, o.mc_samples,
                                                    o.batch_configs),
    BatchBALDOptions, needs="samples", color="tab:brown", benchmark=True))
