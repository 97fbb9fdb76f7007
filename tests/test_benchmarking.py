"""experiments/benchmark.py --acquisition at a tiny size: every strategy is timed with the
model, K, labeled count and ensemble the study asks for."""

import pytest

from al_jax import benchmarking


@pytest.mark.slow
def test_the_acquisition_benchmark_times_every_strategy_for_a_chosen_model():
  out = benchmarking.acquisition("mnist", pool_size=64, chunk_size=32, k=4,
                                 mc_samples=(2, 3), ensemble_size=2, labeled=8,
                                 model="pooled_cnn")
  assert out["model"] == "pooled_cnn" and out["mc_samples"] == [2, 3]
  assert out["pool_size"] == 64 and out["labeled"] == 8
  rows = {"bald_k2", "bald_k3", "entropy", "batchbald_k3", "stochastic_bald_k3", "coreset",
          "badge", "typiclust", "ensemble2_bald"}
  assert rows <= set(out["seconds"])
  assert all(s > 0 for s in out["seconds"].values())
  assert out["relative_to_entropy"]["entropy"] == 1.0
  with pytest.raises(ValueError, match="unknown model 'nope'"):
    benchmarking.acquisition("mnist", pool_size=64, chunk_size=32, model="nope")
