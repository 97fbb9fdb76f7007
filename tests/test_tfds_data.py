"""Tests of `--dataset=tfds:NAME` (al_jax.datasets.tfds), with no network and no TensorFlow.

Catalog data sets are served by TFDS's own `tfds.testing.mock_data`; a small data set
is also really prepared here (array_record, PNG bytes, which TFDS stores without
TensorFlow) to test the read path on files, as after `tfds build`.
"""

import io
import os
import sys

import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from al_jax import datasets, specs
from al_jax.datasets import tfds as tfds_data
from al_jax.config import Config, ConfigError

COLOURS = ("cat", "dog", "emu")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
  monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path_factory.mktemp("al_jax_cache")))


@pytest.fixture
def mock_tfds(monkeypatch):
  """TFDS's mock data; preparing is a no-op under it, so TensorFlow is not needed."""
  monkeypatch.setattr(tfds_data, "tensorflow_available", lambda: True)
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, "PNG")
  return buffer.getvalue()


def _example_image(split: str, i: int, channels: int) -> np.ndarray:
  """The i-th image of a split of the prepared test set: sizes 8..10 x 9."""
  rng = np.random.default_rng([len(split), i, channels])
  return rng.integers(0, 256, (8 + i % 3, 9, channels), dtype=np.uint8)


def _prepare(data_dir, name: str, splits: dict[str, int], channels: int = 3) -> None:
  """Builds and prepares TFDS data set `name` (unregistered) under data_dir."""

  class Prepared(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    locals()["name"] = name  # The class attribute `name`, from the argument.

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, channels)),
          "label": tfds.features.ClassLabel(names=list(COLOURS))}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {s: self._generate_examples(s, n) for s, n in splits.items()}

    def _generate_examples(self, split, n):
      for i in range(n):
        yield i, {"image": _png(_example_image(split, i, channels)), "label": i % 3}

  Prepared(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def _resized(image: np.ndarray, size: int) -> np.ndarray:
  rgb = np.repeat(image, 3, -1) if image.shape[-1] == 1 else image
  return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))


def test_spec_and_config():
  spec = specs.get("tfds:cifar10")
  assert spec.name == "tfds:cifar10" and spec.class_names == ()
  assert spec.model_for((32, 32, 3)) == "fruits_net3" and spec.model_for((28, 28, 1)) == "mnist_cnn"
  assert (spec.mean, spec.std, spec.batch_size) == ((0.5,), (0.5,), 64)
  assert Config(dataset="tfds:beans").learning_rate == 0.005
  for bad in ("tfds:", "tfds", "cifar10"):
    with pytest.raises(ConfigError, match=rf"^unknown dataset '{bad}'; valid: mnist, .*, "
                       r"tfds:NAME \(a TFDS image-classification data set\)$"):
      Config(dataset=bad)


# ------------------------------------------------------------------ TFDS's mock data


@pytest.mark.parametrize("name, size, shape, classes", [
    ("cifar10", 32, (32, 32, 3), tuple(str(c) for c in range(10))),  # Kept as is.
    ("mnist", 28, (28, 28, 1), tuple(str(c) for c in range(10))),    # Grey: one channel.
    ("beans", 16, (16, 16, 3), ("angular_leaf_spot", "bean_rust", "healthy")),  # Resized.
])
def test_mock_catalog_sets(mock_tfds, name, size, shape, classes):
  ds = datasets.load(f"tfds:{name}", image_size=size)
  assert ds.name == f"tfds:{name}" and ds.source == "tfds"
  assert ds.class_names == classes
  assert ds.train_images.shape == (12, *shape) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (12, *shape)
  assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
  source = tfds.data_source(name, split="train")
  for i in (0, 11):
    original = source[i]["image"]
    expected = original if original.shape == shape else _resized(original, size)[..., :shape[2]]
    np.testing.assert_array_equal(ds.train_images[i], expected)
    assert ds.train_labels[i] == source[i]["label"]
  assert 0 <= ds.train_labels.min() and ds.train_labels.max() < len(classes)


def test_mock_class_subset(mock_tfds):
  full = datasets.load("tfds:beans", image_size=8)
  sub = datasets.load("tfds:beans", image_size=8, classes="healthy,angular_leaf_spot")
  assert sub.class_names == ("healthy", "angular_leaf_spot")
  assert np.bincount(sub.train_labels).tolist() == [np.sum(full.train_labels == 2),
                                                    np.sum(full.train_labels == 0)]


# --------------------------------------------------------- a data set prepared on disk


def test_prepared_set_without_test_split(tmp_path):
  """train + validation, no test: a seeded stratified share of train is the test set;
  images of sizes 8..10 x 9 are resized; no TensorFlow is needed (CI has none)."""
  _prepare(tmp_path, "colours", {"train": 30, "validation": 6})
  ds = datasets.load("tfds:colours", tmp_path, image_size=12, test_fraction=0.2, seed=3)
  assert ds.class_names == COLOURS and ds.source == "tfds"
  assert ds.train_images.shape == (24, 12, 12, 3) and ds.test_images.shape == (6, 12, 12, 3)
  assert np.bincount(ds.test_labels).tolist() == [2, 2, 2]
  source = tfds.data_source("colours", split="train", data_dir=str(tmp_path))
  labels = np.array([source[i]["label"] for i in range(30)])
  train_idx, test_idx = datasets.split_stratified(labels, 0.2, seed=3)
  for got, i in ((ds.train_images[0], train_idx[0]), (ds.test_images[-1], test_idx[-1])):
    np.testing.assert_array_equal(got, _resized(source[int(i)]["image"], 12))
  np.testing.assert_array_equal(ds.train_labels, labels[train_idx])
  np.testing.assert_array_equal(ds.test_labels, labels[test_idx])
  other = datasets.load("tfds:colours", tmp_path, image_size=12, test_fraction=0.2, seed=4)
  assert not np.array_equal(other.test_images, ds.test_images)


def test_prepared_grey_set_with_test_split_and_cache(tmp_path, monkeypatch):
  _prepare(tmp_path, "greys", {"train": 9, "test": 6}, channels=1)
  ds = datasets.load("tfds:greys", tmp_path, image_size=9)
  assert ds.train_images.shape == (9, 9, 9, 1) and ds.test_images.shape == (6, 9, 9, 1)
  assert np.bincount(ds.train_labels).tolist() == [3, 3, 3]
  assert np.bincount(ds.test_labels).tolist() == [2, 2, 2]
  for split, images, labels in (("train", ds.train_images, ds.train_labels),
                                ("test", ds.test_images, ds.test_labels)):
    source = tfds.data_source("greys", split=split, data_dir=str(tmp_path))  # TFDS's order
    for i, example in enumerate(source[i] for i in range(len(source))):
      assert labels[i] == example["label"]
      original = example["image"]
      assert original.shape[1:] == (9, 1)
      expected = original if original.shape[0] == 9 else _resized(original, 9)[..., :1]
      np.testing.assert_array_equal(images[i], expected)

  def no_read(*args, **kwargs):
    raise AssertionError("cache miss")

  monkeypatch.setattr(tfds_data, "_read_split", no_read)
  again = datasets.load("tfds:greys", tmp_path, image_size=9)
  np.testing.assert_array_equal(again.train_images, ds.train_images)
  np.testing.assert_array_equal(again.test_labels, ds.test_labels)
  with pytest.raises(AssertionError, match="cache miss"):  # Another size: decoded again.
    datasets.load("tfds:greys", tmp_path, image_size=8)


def test_square_rgb_channels_and_depths():
  """Grey (with or without alpha) -> grey; RGBA -> RGB; 16 bits -> 8; resized bilinearly."""
  grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
  cases = [(grey, True), (grey[..., None], True), (np.stack([grey, 255 - grey], -1), True),
           (np.stack([grey, grey + 1, grey + 2, 255 - grey], -1), False)]
  for image, is_grey in cases:
    rgb, got_grey = tfds_data._square_rgb("t", image, 4)
    assert got_grey == is_grey and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.stack([grey] * 3, -1) if is_grey else image[..., :3])
  deep = grey.astype(np.uint16)[..., None] * 257
  np.testing.assert_array_equal(tfds_data._square_rgb("t", deep, 4)[0][..., 0], grey)
  small = tfds_data._square_rgb("t", grey, 2)[0][..., 0]
  np.testing.assert_array_equal(
      small, np.asarray(Image.fromarray(grey).resize((2, 2), Image.Resampling.BILINEAR)))
  with pytest.raises(datasets.DataError, match=r"^t holds float32 images; al_jax reads uint8"):
    tfds_data._square_rgb("t", np.zeros((4, 4, 3), np.float32), 4)
  with pytest.raises(datasets.DataError, match=r"^t holds an image of shape \(4, 4, 5\)"):
    tfds_data._square_rgb("t", np.zeros((4, 4, 5), np.uint8), 4)


# ------------------------------------------------------------------- one clear line


@pytest.mark.parametrize("case, match", [
    ("unknown", r"^unknown TFDS data set 'cifar100x' in tfds:cifar100x; did you mean "
                r"cifar100, .*see https://www.tensorflow.org/datasets/catalog"),
    ("not_images", r"^tfds:imdb_reviews is not an image classification data set .* it "
                   r"has features text \(Text\), label \(ClassLabel\); it needs 'image'"),
    ("version", r"^cannot open tfds:cifar10:9.9.9 \(Dataset cifar10 cannot be loaded at "
                r"version 9.9.9, only: 3.0.2.\); check the name, config and version$"),
    ("no_tensorflow", r"^tfds:cifar10 is not prepared in .*/cifar10/3.0.2, and preparing "
                      r"it \(TFDS's download\) needs TensorFlow: pip install \"\.\[tfds\]\""),
    ("no_tfds", r"^--dataset=tfds:cifar10 needs tensorflow-datasets, which is not "
                r"installed .*; pip install \"\.\[tfds\]\"$"),
    ("no_train", r"^tfds:tests_only has no train split \(it has test\)"),
    ("tfrecord", r"^tfds:colours in .* is stored as .*, which al_jax cannot read without "
                 r"TensorFlow; prepare it again as array_record"),
    ("sample", r"^the shipped sample holds no TFDS data"),
    ("empty_name", r"^unknown data set 'tfds:'"),
])
def test_bad_names_and_copies_get_one_line(tmp_path, monkeypatch, case, match):
  monkeypatch.setattr(tfds_data, "tensorflow_available", lambda: False)
  name, data_dir = {"unknown": "cifar100x", "not_images": "imdb_reviews",
                    "version": "cifar10:9.9.9", "no_tensorflow": "cifar10",
                    "no_tfds": "cifar10", "no_train": "tests_only", "tfrecord": "colours",
                    "sample": "cifar10", "empty_name": ""}[case], tmp_path
  if case == "no_tfds":
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import -> ImportError
  elif case == "no_train":
    _prepare(tmp_path, "tests_only", {"test": 3})
  elif case == "tfrecord":
    _prepare(tmp_path, "colours", {"train": 3, "test": 3})

    def tfrecord_only(*args, **kwargs):
      raise NotImplementedError("Random access data source for file format tfrecord")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source", tfrecord_only)
  elif case == "sample":
    data_dir = "sample"
  with pytest.raises(datasets.DataError, match=match) as err:
    datasets.load(f"tfds:{name}", data_dir)
  assert "\n" not in str(err.value)
  assert not os.listdir(os.environ[datasets.CACHE_DIR_ENV])
