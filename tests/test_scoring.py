"""Pool scoring and top-k selection: chunking, masking, ties, compile once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from al_jax import metrics, models, scoring, specs, training


@pytest.fixture(scope="module")
def state():
  model = models.create_model(specs.get("mnist"), 10)
  tx = training.make_optimizer(0.01, 0.9, 0.0)
  return training.create_train_state(model, jax.random.key(0), (28, 28, 1), tx)


@pytest.fixture(scope="module")
def pool():
  return jax.random.randint(jax.random.key(1), (120, 28, 28, 1), 0, 256).astype(jnp.uint8)


@pytest.mark.parametrize("name", metrics.NAMES)
def test_pool_scores_equal_direct_scoring_and_ignore_chunk_size(state, pool, name):
  key = jax.random.key(3)
  idx = metrics.index(name)
  by_40 = scoring.pool_scores(state, pool, idx, key, chunk_size=40)
  by_120 = scoring.pool_scores(state, pool, idx, key, chunk_size=120)
  chex.assert_shape(by_40, (120,))
  np.testing.assert_allclose(by_40, by_120, rtol=1e-5, atol=1e-6)
  if name != "random":
    direct = metrics.get(name)(jax.nn.softmax(state.logits(pool)))
    np.testing.assert_allclose(by_40, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", metrics.NAMES)
def test_running_top_k_equals_full_sort_with_mask(state, pool, name):
  key = jax.random.key(4)
  idx = metrics.index(name)
  available = jnp.arange(120) % 4 != 1
  scores = scoring.pool_scores(state, pool, idx, key, chunk_size=40)
  top_scores, top_idx = scoring.query_top_k(state, pool, available, idx, key, k=10,
                                            chunk_size=30)
  expected = scoring.select_top_k(scores, available, 10)
  np.testing.assert_array_equal(top_idx, expected)
  np.testing.assert_allclose(top_scores, scores[expected], rtol=1e-6)
  assert not np.any(np.asarray(top_idx) % 4 == 1)  # never an unavailable image
  # Masking equals scoring the available subset only.
  subset = np.flatnonzero(np.asarray(available))
  best_in_subset = subset[np.argsort(-np.asarray(scores)[subset], kind="stable")[:10]]
  np.testing.assert_array_equal(top_idx, best_in_subset)


def test_ties_go_to_the_lower_index():
  scores = jnp.array([0.5, 0.9, 0.9, 0.1, 0.9, 0.9])
  np.testing.assert_array_equal(scoring.select_top_k(scores, jnp.ones(6, bool), 3), [1, 2, 4])
  best = scoring.empty_top_k(3)
  best = scoring.merge_top_k(*best, scores[:3], jnp.arange(3))
  best = scoring.merge_top_k(*best, scores[3:], jnp.arange(3, 6))
  np.testing.assert_array_equal(best[1], [1, 2, 4])


def test_fewer_available_than_k_gives_minus_inf(state, pool):
  available = jnp.zeros(120, bool).at[jnp.array([5, 77])].set(True)
  top_scores, top_idx = scoring.query_top_k(state, pool, available, 0, jax.random.key(0),
                                            k=4, chunk_size=40)
  assert sorted(np.asarray(top_idx[:2]).tolist()) == [5, 77]
  assert np.all(np.isneginf(np.asarray(top_scores[2:])))
  np.testing.assert_array_equal(top_idx[2:], [-1, -1])
  scores = jnp.arange(120.0)
  np.testing.assert_array_equal(scoring.select_top_k(scores, available, 4), [77, 5, -1, -1])


def test_query_compiles_once_while_the_labeled_set_grows(state, pool):
  """Three rounds of select-and-grow reuse one trace (fixed shapes, traced metric)."""
  @jax.jit
  @chex.assert_max_traces(n=1)
  def query(state, pool, available, metric_index, key):
    return scoring.query_top_k(state, pool, available, metric_index, key, k=8, chunk_size=40)

  labeled = jnp.zeros(120, bool)
  for round_index in range(4):
    _, picked = query(state, pool, ~labeled, jnp.int32(round_index % 5),
                      jax.random.key(round_index))
    assert not np.any(np.asarray(labeled)[np.asarray(picked)])
    labeled = labeled.at[picked].set(True)
  assert int(labeled.sum()) == 32


@pytest.mark.parametrize("name", ["entropy", "random"])
def test_streamed_pool_equals_pool_on_device(state, pool, name):
  available = jnp.arange(120) % 5 != 0
  key, idx = jax.random.key(8), metrics.index(name)
  on_device = scoring.query_top_k(state, pool, available, idx, key, k=12, chunk_size=40)
  chunks = ((np.asarray(pool[i:i + 40]), np.asarray(available[i:i + 40]))
            for i in range(0, 120, 40))
  streamed = scoring.stream_top_k(state, chunks, idx, key, k=12)
  np.testing.assert_array_equal(streamed[1], on_device[1])
  np.testing.assert_allclose(streamed[0], on_device[0], rtol=1e-6)


@pytest.mark.parametrize("size", [1, 39, 41])
def test_pool_of_any_size_is_scored_whole(state, pool, size):
  """A pool that is not whole chunks of 40 is padded: every image scored, none left out."""
  key, idx = jax.random.key(9), metrics.index("entropy")
  images = pool[:size]
  direct = metrics.entropy(jax.nn.softmax(state.logits(images)))
  scores = scoring.pool_scores(state, images, idx, key, chunk_size=40)
  chex.assert_shape(scores, (size,))
  np.testing.assert_allclose(scores, direct, rtol=1e-5, atol=1e-6)
  mapped = scoring.map_pool(lambda chunk, rows: rows, images, chunk_size=40)
  np.testing.assert_array_equal(mapped, np.arange(size))
  chex.assert_shape(scoring.pool_log_probs(state, images, key, 3, chunk_size=40),
                    (3, size, 10))
  k = min(size, 5)
  top_scores, top = scoring.query_top_k(state, images, jnp.ones(size, bool), idx, key, k=k,
                                        chunk_size=40)
  np.testing.assert_array_equal(top, np.argsort(-np.asarray(direct), kind="stable")[:k])
  np.testing.assert_allclose(top_scores, np.sort(np.asarray(direct))[::-1][:k], rtol=1e-5)
