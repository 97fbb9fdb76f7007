"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): k-means clusters, typicality, one
pick per uncovered cluster, largest first; and the strategy in the registry and a job."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from al_jax import acquisition, models, specs, strategies, training
from al_jax.config import Config, ConfigError
from al_jax.strategies import typiclust


def _blobs():
  """Blobs of 10, 8 and 6 points around (0, 0), (100, 0), (0, 100), in that order."""
  rng = np.random.default_rng(0)
  parts = [c + rng.normal(0, 1, (n, 2)) for c, n in (((0, 0), 10), ((100, 0), 8),
                                                       ((0, 100), 6))]
  return np.concatenate(parts).astype(np.float32), np.repeat([0, 1, 2], [10, 8, 6])


def _typicality(x, members, neighbors):
  """NumPy reference: 1 / (1e-5 + mean distance to the K nearest others in the cluster)."""
  out = np.zeros(len(x))
  k = min(neighbors, len(members) // 2)
  for i in members:
    d = np.sort([np.linalg.norm(x[i] - x[j]) for j in members if j != i])
    out[i] = 1 / (1e-5 + d[:k].mean())
  return out


def test_typicality_by_hand():
  x = jnp.asarray([[0.], [1.], [2.], [3.], [4.], [5.], [50.], [52.]])
  cluster = jnp.asarray([0, 0, 0, 0, 0, 0, 1, -1])
  t = typiclust.typicality(x, cluster, 2, chunk_size=3)
  # K = min(2, 6 // 2) = 2: point 0's nearest are 1 and 2 (mean 1.5), point 2's 1 and 3.
  np.testing.assert_allclose(t[:6], 1 / (1e-5 + np.array([1.5, 1, 1, 1, 1, 1.5])),
                             rtol=1e-6)
  # A cluster of one (K = 0) and no cluster (-1): typicality 0.
  np.testing.assert_array_equal(t[6:], [0, 0])


def test_kmeans_finds_separated_blobs():
  x, blob = _blobs()
  cluster = np.asarray(typiclust.kmeans(jnp.asarray(x), jnp.ones(24, bool), jnp.int32(3), 8,
                                        jax.random.key(0)))
  assert len(set(cluster)) == 3
  for b in range(3):  # each blob one cluster
    assert len(set(cluster[blob == b])) == 1
  valid = jnp.arange(24) < 18  # the third blob is padding
  cluster = typiclust.kmeans(jnp.asarray(x), valid, jnp.int32(2), 8, jax.random.key(1))
  np.testing.assert_array_equal(cluster[18:], -1)


def test_one_pick_per_uncovered_cluster_largest_first():
  x, blob = _blobs()
  labeled = jnp.zeros(24, bool).at[3].set(True)  # blob 0 (the largest) is covered
  reference = sum(_typicality(x, np.flatnonzero(blob == b), 20) for b in range(3))
  selection = jax.jit(typiclust.select, static_argnames=("k", "neighbors", "chunk_size"))(
      jnp.asarray(x), labeled, ~labeled, 2, jax.random.key(0), chunk_size=8)
  # 1 labeled + 2 picks = 3 clusters: the blobs. Blob 1 (8 points) before blob 2 (6).
  picks = np.asarray(selection.indices)
  np.testing.assert_array_equal(blob[picks], [1, 2])
  for pick, b in zip(picks, (1, 2)):
    assert pick == np.flatnonzero(blob == b)[np.argmax(reference[blob == b])]
  # |x|^2 - 2 x.y + |y|^2 in float32 at |x| ~ 100: distances ~1 to about 1e-3.
  np.testing.assert_allclose(selection.scores, reference[picks], rtol=2e-3)
  # 4 picks make 5 clusters, so the blobs split; each pick is in a different cluster, and
  # the picks never repeat or touch the labeled image.
  more = typiclust.select(jnp.asarray(x), labeled, ~labeled, 4, jax.random.key(0),
                          chunk_size=8)
  picks = np.asarray(more.indices)
  assert len(set(picks.tolist())) == 4 and 3 not in picks and np.all(picks >= 0)


def test_typiclust_strategy_in_the_registry():
  spec = strategies.get("typiclust")
  assert spec.needs == "embeddings" and spec.benchmark and not strategies.streams("typiclust")
  with pytest.raises(ValueError, match="--typiclust_neighbors must be a positive integer"):
    acquisition.make("typiclust", k=3, typiclust_neighbors=0)
  config = Config(metrics=("typiclust",), strategy_options={"typiclust_neighbors": 5,
                                                            "mc_samples": 3})
  assert dict(config.strategy_options) == {"typiclust_neighbors": 5}
  with pytest.raises(ConfigError, match="--metric=typiclust chooses from the whole pool"):
    Config(metrics=("typiclust",), stream_pool="true")
  # On a model's embeddings: k distinct available images, the same under jit.
  model = models.create_model(specs.get("mnist"), 10)
  state = training.create_train_state(model, jax.random.key(0), (16, 16, 1),
                                      training.make_optimizer(0.01, 0.9, 0.0))
  pool = jax.random.randint(jax.random.key(1), (90, 16, 16, 1), 0, 256).astype(jnp.uint8)
  labeled = jnp.arange(90) < 10
  strategy = acquisition.make("typiclust", k=6, chunk_size=40, typiclust_neighbors=5)
  selection = jax.jit(strategy)(state, pool, ~labeled, jax.random.key(2), labeled)
  picks = np.asarray(selection.indices)
  assert len(set(picks.tolist())) == 6 and np.all(picks >= 10)
  np.testing.assert_array_equal(strategy(state, pool, ~labeled, jax.random.key(2),
                                         labeled).indices, picks)
