"""Your own features: a data set of float32 vectors [N, D] (npy on disk, made here by a
fixed random projection of the MNIST sample's pixels) with the MLP model runs every
strategy, streams and resumes exactly; bad vectors and image-only settings are one line."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from al_jax import datasets, experiment, models, results, strategies, streaming
from al_jax.config import Config, ConfigError
from al_jax.datasets import npy as npy_data

DIM = 32


def project(images: np.ndarray) -> np.ndarray:
  """uint8 images [N, 28, 28, 1] -> float32 [N, DIM]: a fixed random projection."""
  weights = np.random.default_rng(0).standard_normal((784, DIM)).astype(np.float32) / 28
  return (images.reshape(len(images), -1).astype(np.float32) / 255) @ weights


def write_features(folder, dataset, **change):
  """An npy folder of `dataset`'s projected pool and test images (`change`: arrays to
  write in place of those)."""
  os.makedirs(folder, exist_ok=True)
  arrays = {"pool_images": project(dataset.train_images), "pool_labels": dataset.train_labels,
            "test_images": project(dataset.test_images), "test_labels": dataset.test_labels,
            **change}
  for name, array in arrays.items():
    np.save(os.path.join(folder, name + ".npy"), array)
  with open(os.path.join(folder, "classes.txt"), "w") as f:
    f.write("".join(c + "\n" for c in dataset.class_names))
  return str(folder)


@pytest.fixture(scope="module")
def mnist():
  return datasets.load("mnist", "sample")  # 600 pool, 200 test images


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory, mnist):
  return write_features(tmp_path_factory.mktemp("features"), mnist)


def _config(folder, metrics, **kw):
  return Config(dataset="npy", data_dir=folder, metrics=tuple(metrics), initial_size=20,
                query_size=20, rounds=3, epochs_per_round=5, batch_size=32, chunk_size=200,
                eval_batch_size=100, stream_pool="false",
                strategy_options={"mc_samples": 4, "batch_configs": 20}, **kw)


def _strip(runs):
  return {run: [{k: v for k, v in r.items() if k != "round_s"} for r in records]
          for run, records in runs.items()}


def test_the_npy_source_reads_vectors_and_the_mlp_is_the_model(features_dir, mnist):
  dataset = datasets.load("npy", features_dir)
  assert dataset.train_images.dtype == np.float32 and dataset.train_images.shape == (600, DIM)
  np.testing.assert_array_equal(dataset.train_images, project(mnist.train_images))
  rows = streaming.pool_rows(dataset)  # streamed by rows from disk, as images are
  assert isinstance(rows, npy_data.PoolFile) and rows.dtype == np.float32
  np.testing.assert_array_equal(rows.read(590, 610)[:10], dataset.train_images[590:])
  assert not rows.read(590, 610)[10:].any()
  np.testing.assert_array_equal(rows.take(np.array([5, 600, 1])),
                                np.stack([dataset.train_images[5], np.zeros(DIM),
                                          dataset.train_images[1]]))
  config = _config(features_dir, ["entropy"])
  assert config.model_name((DIM,)) == "mlp" and models.MODELS["mlp"] is models.FeatureMLP
  # The vectors go in as they are: the MLP's first layer sees them unscaled.
  x = np.asarray(dataset.train_images[:3])
  np.testing.assert_array_equal(np.asarray(models.normalize(x, (0.5,), (0.5,))), x)


def test_every_strategy_runs_on_vectors_and_learns(tmp_path, features_dir):
  """Each strategy through the round loop (3 rounds, 20 -> 60 labels): it picks new,
  distinct images each round, and every run ends well above chance (0.1)."""
  names = strategies.names()
  runs = experiment.run(_config(features_dir, names), str(tmp_path))
  assert sorted(m for m, _ in runs) == sorted(names)
  for (metric, _), records in runs.items():
    assert [r["num_labeled"] for r in records] == [20, 40, 60], metric
    picked = [i for r in records[:-1] for i in r["selected"]]
    assert len(set(picked)) == len(picked) == 40, metric
    assert records[-1]["test_accuracy"] > 0.3, (metric, records[-1]["test_accuracy"])


@pytest.mark.slow  # three jobs of the round loop
def test_streamed_vectors_equal_in_memory_and_resume_exactly(tmp_path, features_dir):
  """A per-image and a Bayesian scorer: streamed from the npy file they select and score
  what the in-memory job does; stopped after round 1, the job resumes to the same end."""
  config = _config(features_dir, ["entropy", "bald"])
  memory = experiment.run(config, str(tmp_path / "memory"))
  streamed = dataclasses.replace(config, stream_pool="true")
  data = experiment.prepare_data(streamed)
  assert isinstance(data.rows, npy_data.PoolFile)

  class Stop(Exception):
    pass

  def stop_after_first(round_index, records):
    raise Stop
  with pytest.raises(Stop):
    experiment.run(streamed, str(tmp_path / "job"), on_round=stop_after_first)
  resumed = experiment.run(streamed, str(tmp_path / "job"))
  assert _strip(resumed) == _strip(memory)


@pytest.mark.parametrize("change,message", [
    ({"pool_images": np.zeros((600, DIM), np.float64)}, "float32 feature vectors [N, D]"),
    ({"pool_images": np.full((600, DIM), np.nan, np.float32)}, "NaN or infinite"),
    ({"test_images": np.zeros((200, DIM + 1), np.float32)}, "both need one shape and type"),
], ids=["float64", "nan", "dims"])
def test_bad_vectors_are_one_line(tmp_path, mnist, change, message):
  folder = write_features(tmp_path, mnist, **change)
  with pytest.raises(datasets.DataError, match=message.replace("[", r"\[")) as error:
    datasets.load("npy", folder)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("settings,message", [
    ({"augment_shift": 2.0}, "--augment_shift and --augment_degrees shift and rotate images"),
    ({"model": "pooled_cnn"}, "--model=pooled_cnn takes images but this data set holds "
                              "feature vectors"),
], ids=["augment", "cnn"])
def test_image_only_settings_on_vectors_are_one_line(tmp_path, features_dir, settings,
                                                     message):
  with pytest.raises(ConfigError, match=message) as error:
    experiment.run(_config(features_dir, ["entropy"], **settings), str(tmp_path / "job"))
  assert "\n" not in str(error.value) and not os.path.exists(tmp_path / "job" / "results")


def test_the_mlp_refuses_images(tmp_path):
  config = Config(dataset="mnist", data_dir="sample", metrics=("entropy",), model="mlp",
                  initial_size=20, query_size=20, rounds=1, epochs_per_round=1)
  with pytest.raises(ConfigError, match="--model=mlp takes feature vectors but this data "
                                        r"set holds images \[H, W, C\]"):
    experiment.run(config, str(tmp_path))


@pytest.mark.slow
def test_run_py_runs_two_strategies_on_vectors_export_npy_wrote(tmp_path):
  """export_npy.py --project_to=32 writes the documented projection; run.py trains the
  MLP on it with entropy and BADGE, 3 rounds each."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root}
  folder = tmp_path / "vectors"
  export = subprocess.run([sys.executable, os.path.join(root, "experiments", "export_npy.py"),
                           "--dataset=mnist", "--data_dir=sample", "--project_to=32",
                           f"--out={folder}"], capture_output=True, text=True, env=env,
                          timeout=300)
  assert export.returncode == 0, export.stderr[-2000:]
  mnist = datasets.load("mnist", "sample")
  weights = np.random.default_rng(0).standard_normal((784, 32), np.float32) / np.sqrt(784)
  pool = np.load(folder / "pool_images.npy")
  assert pool.dtype == np.float32 and pool.shape == (600, 32)
  np.testing.assert_allclose(pool, mnist.train_images.reshape(600, -1) / 255 @ weights,
                             rtol=1e-4, atol=1e-5)
  workdir = tmp_path / "job"
  run = subprocess.run([sys.executable, os.path.join(root, "experiments", "run.py"),
                        "--dataset=npy", f"--data_dir={folder}", "--metric=entropy,badge",
                        "--stream_pool=false", "--seeds=1", "--initial_size=20", "--query_size=20",
                        "--rounds=3", "--epochs_per_round=5", "--batch_size=32",
                        "--chunk_size=200", "--plot=false", f"--workdir={workdir}"],
                       capture_output=True, text=True, env=env, timeout=400)
  assert run.returncode == 0, run.stderr[-3000:]
  records = {os.path.relpath(p, workdir): results.read_results(str(p))
             for p in sorted(workdir.rglob("results.jsonl"))}
  assert len(records) == 2
  for path, rows in records.items():
    assert [r["num_labeled"] for r in rows] == [20, 40, 60], path
    assert rows[-1]["test_accuracy"] > 0.3, path
  assert "600 pool images, 200 test images, 10 classes, feature vectors [32]" in run.stderr
