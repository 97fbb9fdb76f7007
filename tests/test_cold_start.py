"""Cold start (al_jax.cold_start): distinct valid picks, one per obvious cluster, the
typical image of each, and the option through Config and the pool protocol's loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from al_jax import cold_start, experiment, rng
from al_jax.config import Config, ConfigError


def _three_clusters(per: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """30 images around grey levels 20, 128 and 235 (plus 2 padding rows of 255); in each
  cluster, image 0 is the exact level and the rest are noisy copies."""
  rng = np.random.default_rng(0)
  images = []
  for level in (20, 128, 235):
    noise = rng.integers(-15, 16, (per, 4, 4, 1))
    noise[0] = 0
    images.append(np.clip(level + noise, 0, 255))
  images.append(np.full((2, 4, 4, 1), 255))
  valid = np.arange(3 * per + 2) < 3 * per
  return np.concatenate(images).astype(np.uint8), valid


@pytest.mark.parametrize("kind", ["kmeans_pp", "kmeans"])
def test_one_pick_per_cluster_never_padding(kind):
  images, valid = _three_clusters()
  picks = np.asarray(cold_start.select_initial(jnp.asarray(images), jnp.asarray(valid), 3,
                                               jax.random.key(0), kind=kind))
  assert picks.shape == (3,) and len(set(picks.tolist())) == 3 and picks.max() < 30
  assert sorted(picks // 10) == [0, 1, 2]  # one from each cluster


def test_kmeans_picks_the_typical_image_of_each_cluster():
  """Lloyd steps from one seed per cluster end at the cluster means; the pick of each
  centre is the cluster's image nearest its mean, worked out here with NumPy."""
  images, valid = _three_clusters(per=40)
  picks = np.asarray(cold_start.select_initial(jnp.asarray(images), jnp.asarray(valid), 3,
                                               jax.random.key(1), kind="kmeans"))
  x = images[:120].reshape(120, -1).astype(float)
  for p in picks:
    cluster = slice(p // 40 * 40, p // 40 * 40 + 40)
    mean = x[cluster].mean(0)
    nearest = np.argmin(((x[cluster] - mean) ** 2).sum(-1)) + cluster.start
    assert p == nearest


def test_config_checks_the_option():
  assert Config(initial_selection="random").initial_selection is None
  assert Config(initial_selection="kmeans").initial_selection == "kmeans"
  with pytest.raises(ConfigError, match="unknown initial_selection"):
    Config(initial_selection="typiclust")
  with pytest.raises(ConfigError, match="no --class_balanced"):
    Config(initial_selection="kmeans", class_balanced_init=True)


@pytest.mark.slow
def test_cold_start_in_the_loop(tmp_path):
  """The run's initial labels are the selector's picks on the pool."""
  config = Config(dataset="mnist", data_dir="sample", metrics=("random",), initial_size=10,
                  query_size=10, rounds=1, epochs_per_round=1, batch_size=32,
                  chunk_size=200, eval_batch_size=100, initial_selection="kmeans")
  data = experiment.prepare_data(config)
  (records,) = experiment.run(config, str(tmp_path), data=data).values()
  key = rng.stream_key(jax.random.key(0), rng.INITIAL_SET, 0)
  picks = cold_start.select_initial(data.pool["images"], data.pool["valid"], 10, key,
                                    kind="kmeans")
  assert sorted(records[0]["initial_labeled"]) == sorted(np.asarray(picks).tolist())
  assert records[0]["num_labeled"] == 10
