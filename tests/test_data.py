"""Tests of al_jax.datasets on the shipped sample and, when AL_JAX_DATA_DIR is set, the full data.

No test touches the network: downloads point at a closed local port here (see
test_download.py for a local server). Decodes are cached in a session-scoped temporary
AL_JAX_CACHE_DIR.
"""

import dataclasses
import gzip
import logging
import os
import re
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from al_jax import datasets, specs
from al_jax.config import Config
from al_jax.datasets import download, fruits360, idx, image_files

SAMPLE_MNIST = os.path.join(datasets.SAMPLE_DIR, "mnist")
SAMPLE_FRUITS = os.path.join(datasets.SAMPLE_DIR, "fruits360")
# Per-digit counts of the first 600 training / 200 test MNIST images.
SAMPLE_MNIST_TRAIN_COUNTS = [58, 79, 64, 59, 59, 51, 54, 62, 49, 65]
SAMPLE_MNIST_TEST_COUNTS = [17, 28, 16, 16, 28, 20, 20, 24, 10, 21]
SAMPLE_FRUITS_TRAIN, SAMPLE_FRUITS_TEST = 25, 10  # Images per category.
# Category of each sample variety folder, in sorted folder order.
SAMPLE_FOLDER_LABELS = [0, 3, 8, 4, 6, 5, 9, 2, 7, 1]

FULL_DATA = os.environ.get(datasets.DATA_DIR_ENV)
full_data = lambda test: pytest.mark.slow(pytest.mark.full_data(test))  # the whole data sets
needs_full_data = pytest.mark.skipif(
    not FULL_DATA, reason=f"set {datasets.DATA_DIR_ENV} to the folder holding mnist/, "
    "fashion_mnist/ and fruits360/ to run the full-data tests")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
  """A hermetic, session-wide cache for decoded Fruits-360 arrays."""
  with pytest.MonkeyPatch.context() as mp:
    cache = tmp_path_factory.mktemp("al_jax_cache")
    mp.setenv(datasets.CACHE_DIR_ENV, str(cache))
    yield cache


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
  """Any download goes to a local port where nothing listens (connection refused)."""
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  monkeypatch.setenv(download.URL_ENV, f"http://127.0.0.1:{port}")


@pytest.fixture
def no_env(monkeypatch):
  """Tests that resolve folders themselves must not see the CI's AL_JAX_DATA_DIR."""
  monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)


def _copy_mnist(dst) -> str:
  shutil.copytree(SAMPLE_MNIST, dst)
  return str(dst)


def _fruit_tree(root, varieties=("Apple Braeburn 1", "Banana 1"), count=3) -> str:
  """A tiny Fruits-360 folder copied from the sample: count images per variety/split."""
  for split in fruits360.SPLITS:
    for variety in varieties:
      src = os.path.join(SAMPLE_FRUITS, split, variety)
      dst = os.path.join(root, split, variety)
      os.makedirs(dst)
      for name in sorted(os.listdir(src))[:count]:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
  return str(root)


# ------------------------------------------------------------------------ sample: MNIST


def test_sample_mnist_shapes_and_counts(no_env):
  ds = datasets.load("mnist", "sample")
  assert ds.name == "mnist"
  assert ds.train_images.shape == (600, 28, 28, 1)
  assert ds.test_images.shape == (200, 28, 28, 1)
  assert ds.train_images.dtype == np.uint8 and ds.test_images.dtype == np.uint8
  assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
  assert ds.class_names == tuple("0123456789") and ds.num_classes == 10
  assert np.bincount(ds.train_labels, minlength=10).tolist() == SAMPLE_MNIST_TRAIN_COUNTS
  assert np.bincount(ds.test_labels, minlength=10).tolist() == SAMPLE_MNIST_TEST_COUNTS
  assert ds.train_images.max() == 255 and ds.train_images.min() == 0


def test_image_size_is_ignored_for_mnist(no_env):
  assert datasets.load("mnist", "sample", image_size=64).train_images.shape[1:] == (28, 28, 1)


def test_mnist_binary_subset_relabels(no_env):
  full = datasets.load("mnist", "sample")
  ds = datasets.load("mnist", "sample", classes=("0", "1"))
  assert ds.class_names == ("0", "1") and ds.num_classes == 2
  assert set(np.unique(ds.train_labels)) == {0, 1}
  assert set(np.unique(ds.test_labels)) == {0, 1}
  assert len(ds.train_labels) == np.sum(full.train_labels <= 1) == 58 + 79
  assert len(ds.test_labels) == np.sum(full.test_labels <= 1) == 17 + 28
  keep = full.train_labels <= 1
  np.testing.assert_array_equal(ds.train_images, full.train_images[keep])
  np.testing.assert_array_equal(ds.train_labels, full.train_labels[keep])


def test_subset_order_defines_labels(no_env):
  full = datasets.load("mnist", "sample")
  ds = datasets.load("mnist", "sample", classes="7, 3")  # A spec string works too.
  assert ds.class_names == ("7", "3")
  keep = (full.train_labels == 7) | (full.train_labels == 3)
  np.testing.assert_array_equal(ds.train_labels, np.where(full.train_labels[keep] == 7, 0, 1))


def test_fashion_names_and_indices(no_env, tmp_path):
  folder = _copy_mnist(tmp_path / "fashion_mnist")  # Same IDX format as MNIST.
  ds = datasets.load("fashion_mnist", folder)
  assert ds.class_names == idx.FASHION_MNIST_CLASSES
  sub = datasets.load("fashion_mnist", folder, classes=("Ankle_Boot", "T-shirt/top", "1"))
  assert sub.class_names == ("ankle boot", "t-shirt/top", "trouser")
  assert np.sum(sub.train_labels == 0) == np.sum(ds.train_labels == 9)


@pytest.mark.parametrize("classes, match", [
    (("0", "ten"), "unknown class 'ten'.*valid classes are 0, 1, 2"),
    (("0", "10"), "unknown class '10'"),
    (("3", "3"), "duplicate"),
    (("3", "03"), "duplicate"),
    (("3",), "at least 2 classes"),
])
def test_bad_mnist_classes(no_env, classes, match):
  with pytest.raises(datasets.DataError, match=match):
    datasets.load("mnist", "sample", classes=classes)


def test_parse_classes():
  assert datasets.parse_classes(None) is None
  assert datasets.parse_classes("") is None
  assert datasets.parse_classes(" , ") is None
  assert datasets.parse_classes("0,1") == ("0", "1")
  assert datasets.parse_classes(" apple , banana ") == ("apple", "banana")


# ------------------------------------------------------------------- sample: Fruits-360


def test_sample_fruits_shapes_and_order(no_env):
  ds = datasets.load("fruits360", "sample")
  assert ds.class_names == fruits360.FRUIT_CATEGORIES
  n_train, n_test = 10 * SAMPLE_FRUITS_TRAIN, 10 * SAMPLE_FRUITS_TEST
  assert ds.train_images.shape == (n_train, 32, 32, 3)
  assert ds.test_images.shape == (n_test, 32, 32, 3)
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  np.testing.assert_array_equal(ds.train_labels,
                                np.repeat(SAMPLE_FOLDER_LABELS, SAMPLE_FRUITS_TRAIN))
  np.testing.assert_array_equal(ds.test_labels,
                                np.repeat(SAMPLE_FOLDER_LABELS, SAMPLE_FRUITS_TEST))


def test_sample_fruits_pixels(no_env):
  """Image 0 is the first file of the first folder, decoded (100) or resized (32)."""
  first_dir = os.path.join(SAMPLE_FRUITS, "Training", "Apple Braeburn 1")
  first = os.path.join(first_dir, sorted(os.listdir(first_dir))[0])
  with Image.open(first) as img:
    original = img.convert("RGB")
    small = np.asarray(original.resize((32, 32), Image.Resampling.BILINEAR))
    original = np.asarray(original)
  big = datasets.load("fruits360", "sample", image_size=100)
  assert big.train_images.shape == (10 * SAMPLE_FRUITS_TRAIN, 100, 100, 3)
  np.testing.assert_array_equal(big.train_images[0], original)
  np.testing.assert_array_equal(datasets.load("fruits360", "sample").train_images[0], small)


def test_fruits_apple_banana(no_env):
  full = datasets.load("fruits360", "sample")
  ds = datasets.load("fruits360", "sample", classes=("Apple", "BANANA"))
  assert ds.class_names == ("apple", "banana")
  assert np.bincount(ds.train_labels).tolist() == [SAMPLE_FRUITS_TRAIN] * 2
  assert np.bincount(ds.test_labels).tolist() == [SAMPLE_FRUITS_TEST] * 2
  np.testing.assert_array_equal(ds.train_images[ds.train_labels == 1],
                                full.train_images[full.train_labels == 3])
  by_index = datasets.load("fruits360", "sample", classes=("0", "3"))
  np.testing.assert_array_equal(by_index.train_labels, ds.train_labels)


def test_fruits_unknown_class(no_env):
  with pytest.raises(datasets.DataError, match="unknown class 'kiwi'.*apple, tomato, potato"):
    datasets.load("fruits360", "sample", classes=("apple", "kiwi"))


def test_fruits_class_without_images(no_env, tmp_path):
  folder = _fruit_tree(tmp_path / "fruits360")  # Only apples and bananas.
  ds = datasets.load("fruits360", folder)
  assert set(ds.train_labels.tolist()) == {0, 3}
  with pytest.raises(datasets.DataError, match="no training images of class plum"):
    datasets.load("fruits360", folder, classes=("apple", "plum"))


def test_other_varieties_are_ignored(no_env, tmp_path):
  folder = _fruit_tree(tmp_path / "f", varieties=("Apple Braeburn 1", "Banana 1"))
  shutil.copytree(os.path.join(folder, "Training", "Banana 1"),
                  os.path.join(folder, "Training", "Kiwi 1"))
  os.makedirs(os.path.join(folder, "Training", "Pear 1"))  # Empty variety.
  ds = datasets.load("fruits360", folder)
  assert ds.train_labels.tolist() == [0, 0, 0, 3, 3, 3]


def test_fruit_category():
  assert fruits360.fruit_category("Apple Braeburn 1") == 0
  assert fruits360.fruit_category("Pineapple Mini 1") == 5
  assert fruits360.fruit_category("pepper green 1") == 6
  assert fruits360.fruit_category("Kiwi 1") is None
  assert fruits360.fruit_category("") is None


def test_fruits_cache_hit(no_env, tmp_path, monkeypatch, _cache_dir):
  folder = _fruit_tree(tmp_path / "fruits360")
  first = datasets.load("fruits360", folder, image_size=24)
  cached = [f for f in os.listdir(_cache_dir) if f.startswith("fruits360_24px_")]
  assert len(cached) == 1
  assert not [f for f in os.listdir(_cache_dir) if f.endswith(".tmp")]

  def no_decode(*args):
    raise AssertionError("cache miss")

  monkeypatch.setattr(image_files, "decode_many", no_decode)
  second = datasets.load("fruits360", folder, image_size=24)
  for field in ("train_images", "train_labels", "test_images", "test_labels"):
    np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
  # A changed file list is a new cache key, so it decodes again.
  shutil.copyfile(os.path.join(folder, "Test", "Banana 1", os.listdir(
      os.path.join(folder, "Test", "Banana 1"))[0]), os.path.join(folder, "Test",
                                                                  "Banana 1", "zz.jpg"))
  with pytest.raises(AssertionError, match="cache miss"):
    datasets.load("fruits360", folder, image_size=24)


def test_corrupt_cache_is_rebuilt(no_env, tmp_path, _cache_dir):
  folder = _fruit_tree(tmp_path / "fruits360", count=1)
  first = datasets.load("fruits360", folder, image_size=8)
  (path,) = [os.path.join(_cache_dir, f) for f in os.listdir(_cache_dir)
             if f.startswith("fruits360_8px_")]
  with open(path, "wb") as f:
    f.write(b"not an npz file")
  np.testing.assert_array_equal(datasets.load("fruits360", folder, image_size=8).train_images,
                                first.train_images)


# -------------------------------------------------------------------- errors & folders


def test_missing_idx_files(no_env, tmp_path):
  shutil.copyfile(os.path.join(SAMPLE_MNIST, "train-images-idx3-ubyte.gz"),
                  tmp_path / "train-images-idx3-ubyte.gz")
  with pytest.raises(datasets.DataError) as err:
    datasets.load("mnist", tmp_path)
  msg = str(err.value)
  assert "missing train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, " \
         "t10k-labels-idx1-ubyte.gz" in msg
  assert str(tmp_path) in msg and "\n" not in msg


def test_empty_folder(no_env, tmp_path):
  with pytest.raises(datasets.DataError, match="no mnist data in .*train-images-idx3-ubyte.gz"):
    datasets.load("mnist", tmp_path)
  with pytest.raises(datasets.DataError, match=r"Training/<Variety>/\*\.jpg"):
    datasets.load("fruits360", tmp_path)


def test_missing_fruit_split(no_env, tmp_path):
  folder = _fruit_tree(tmp_path / "fruits360")
  shutil.rmtree(os.path.join(folder, "Test"))
  with pytest.raises(datasets.DataError, match="missing Test/ in .*Training/<Variety>"):
    datasets.load("fruits360", folder)


def test_no_known_varieties(no_env, tmp_path):
  for split in fruits360.SPLITS:
    os.makedirs(tmp_path / split / "Kiwi 1")
  with pytest.raises(datasets.DataError, match="no images of apple, tomato"):
    datasets.load("fruits360", tmp_path)


def test_nonexistent_folder(no_env, tmp_path):
  with pytest.raises(datasets.DataError, match="does not exist"):
    datasets.load("mnist", tmp_path / "nowhere")


def test_truncated_idx_gz(no_env, tmp_path):
  folder = _copy_mnist(tmp_path / "mnist")
  path = os.path.join(folder, "train-images-idx3-ubyte.gz")
  with open(path, "rb") as f:
    raw = f.read()
  with open(path, "wb") as f:
    f.write(raw[:len(raw) // 2])
  with pytest.raises(datasets.DataError, match=re.escape(f"{path} is truncated or corrupt")):
    datasets.load("mnist", folder)


def test_idx_payload_too_short(no_env, tmp_path):
  folder = _copy_mnist(tmp_path / "mnist")
  path = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
  with gzip.open(path, "rb") as f:
    raw = f.read()
  with gzip.open(path, "wb") as f:
    f.write(raw[:-5])  # Valid gzip, but 5 labels short of its header.
  with pytest.raises(datasets.DataError, match=re.escape(f"{path} holds 195 data bytes")):
    datasets.load("mnist", folder)


def test_idx_wrong_magic(no_env, tmp_path):
  folder = _copy_mnist(tmp_path / "mnist")
  shutil.copyfile(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"),
                  os.path.join(folder, "t10k-images-idx3-ubyte.gz"))
  with pytest.raises(datasets.DataError, match="t10k-images-idx3-ubyte.gz is not an IDX file "
                     "with magic number 2051 .found 2049."):
    datasets.load("mnist", folder)


def test_uncompressed_idx_accepted(no_env, tmp_path):
  folder = _copy_mnist(tmp_path / "mnist")
  path = os.path.join(folder, "train-labels-idx1-ubyte.gz")
  with gzip.open(path, "rb") as f, open(path[:-3], "wb") as out:
    out.write(f.read())
  os.remove(path)
  ds = datasets.load("mnist", folder)
  np.testing.assert_array_equal(ds.train_labels, datasets.load("mnist", "sample").train_labels)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg(no_env, tmp_path, damage):
  folder = _fruit_tree(tmp_path / "fruits360")
  variety = os.path.join(folder, "Training", "Banana 1")
  path = os.path.join(variety, sorted(os.listdir(variety))[1])
  with open(path, "rb") as f:
    raw = f.read()
  with open(path, "wb") as f:
    f.write(b"this is not a jpeg" if damage == "garbage" else raw[:len(raw) // 2])
  with pytest.raises(datasets.DataError, match=re.escape(f"cannot decode image {path}")):
    datasets.load("fruits360", folder)


def test_root_or_dataset_folder(no_env):
  for name, sub in (("mnist", SAMPLE_MNIST), ("fruits360", SAMPLE_FRUITS)):
    a, b = datasets.load(name, datasets.SAMPLE_DIR), datasets.load(name, sub)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)


def test_env_var(monkeypatch, tmp_path):
  monkeypatch.setenv(datasets.DATA_DIR_ENV, datasets.SAMPLE_DIR)
  assert datasets.load("mnist").train_images.shape == (600, 28, 28, 1)
  monkeypatch.setenv(datasets.DATA_DIR_ENV, SAMPLE_MNIST)
  assert datasets.load("mnist").test_images.shape == (200, 28, 28, 1)
  monkeypatch.setenv(datasets.DATA_DIR_ENV, "sample")
  assert datasets.load("fruits360").num_classes == 10
  # An explicit data_dir wins over the environment.
  monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "nowhere"))
  assert datasets.load("mnist", data_dir="sample").train_labels.shape == (600,)
  with pytest.raises(datasets.DataError, match="nowhere does not exist"):
    datasets.load("mnist")


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="cifar10"), "unknown data set 'cifar10'"),
    (dict(name="fruits360", image_size=0), "image_size must be a positive integer"),
    (dict(name="fruits360", image_size=32.0), "image_size must be a positive integer"),
])
def test_bad_arguments(no_env, kwargs, match):
  with pytest.raises(datasets.DataError, match=match):
    datasets.load(data_dir="sample", **kwargs)


def test_a_registered_source_is_found_by_name(no_env, monkeypatch):
  """A source registered from outside the package is loaded, described and configured
  by its name like a built-in one; one that gives its pool's rows streams by default."""
  monkeypatch.setattr(datasets.base, "_SOURCES", dict(datasets.base._SOURCES))
  sample = datasets.load("mnist", "sample")
  calls = []

  def load(name, data_dir, *, image_size, test_fraction, seed):
    calls.append((name, data_dir, image_size, test_fraction, seed))
    return dataclasses.replace(sample, name=name, source="mine")

  datasets.register(datasets.Source("my_digits", load, datasets.own_data_spec("my_digits"),
                                    rows=lambda images: ("rows", images.shape)))
  ds = datasets.load("my_digits", "here", classes="3,5", image_size=8)
  assert calls == [("my_digits", "here", 8, 0.2, 0)]
  assert ds.class_names == ("3", "5") and ds.source == "mine"
  assert np.bincount(ds.train_labels).tolist() == [SAMPLE_MNIST_TRAIN_COUNTS[3],
                                                   SAMPLE_MNIST_TRAIN_COUNTS[5]]
  assert ds.pool_rows() == ("rows", (110, 28, 28, 1)) and sample.pool_rows() is None
  assert "my_digits" in datasets.names() and "my_digits, tfds:NAME" in datasets.names_help()
  assert specs.get("my_digits").name == "my_digits" and specs.get("my_digits").batch_size == 64
  assert Config(dataset="my_digits").streams_pool
  assert not Config(dataset="my_digits", stream_pool="false").streams_pool
  assert Config(dataset="npy").streams_pool and not Config(dataset="mnist").streams_pool
  with pytest.raises(ValueError, match="needs a help line"):
    datasets.register(datasets.Source("mine:", load, datasets.own_data_spec("mine:")))


def test_atomic_write_replaces_whole_files_only(tmp_path):
  path = tmp_path / "f.txt"
  with datasets.atomic_write(path) as f:
    f.write("one")
  with pytest.raises(RuntimeError, match="stop"):
    with datasets.atomic_write(path) as f:
      f.write("two")
      raise RuntimeError("stop")
  assert path.read_text() == "one" and os.listdir(tmp_path) == ["f.txt"]
  with datasets.atomic_write(path, "wb") as f:
    f.write(b"three")
  assert path.read_bytes() == b"three" and os.listdir(tmp_path) == ["f.txt"]


def test_dataset_is_frozen(no_env):
  ds = datasets.load("mnist", "sample")
  with pytest.raises(dataclasses.FrozenInstanceError):
    ds.name = "other"
  assert "train_images=(600, 28, 28, 1)" in repr(ds)


# ------------------------------------------------------------ sources and look-up order


def test_sources(no_env, monkeypatch, tmp_path):
  assert datasets.load("mnist", "sample").source == "sample"
  assert datasets.load("mnist", SAMPLE_MNIST).source == "data_dir"
  assert datasets.load("mnist", "sample", classes=("0", "1")).source == "sample"
  monkeypatch.setenv(datasets.DATA_DIR_ENV, SAMPLE_MNIST)
  assert datasets.load("mnist").source == "data_dir"
  assert "source='data_dir'" in repr(datasets.load("mnist"))


def test_packaged_mnist(no_env):
  """No data folder: the full original MNIST shipped in the package, offline."""
  ds = datasets.load("mnist")
  assert ds.source == "packaged"
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert np.bincount(ds.train_labels).tolist() == MNIST_TRAIN_COUNTS
  assert np.bincount(ds.test_labels).tolist() == MNIST_TEST_COUNTS
  np.testing.assert_array_equal(ds.train_images[:600],
                                datasets.load("mnist", "sample").train_images)
  for fname, (size, sha256) in ((f, idx.CHECKSUMS[f"mnist/{f}"]) for f in idx.IDX_FILES):
    path = os.path.join(idx.PACKAGED_MNIST_DIR, fname)
    assert download._check(path, size, sha256) is None, fname


def test_env_wins_over_packaged(monkeypatch):
  monkeypatch.setenv(datasets.DATA_DIR_ENV, "sample")
  ds = datasets.load("mnist")
  assert ds.source == "sample" and ds.train_images.shape == (600, 28, 28, 1)


@pytest.mark.parametrize("name", ["fashion_mnist", "fruits360"])
def test_no_network_is_one_line(no_env, name):
  with pytest.raises(datasets.DataError) as err:
    datasets.load(name)
  msg = str(err.value)
  assert "\n" not in msg and "cannot download http://127.0.0.1:" in msg
  assert "pass --data_dir=DIR" in msg and datasets.DATA_DIR_ENV in msg


def test_no_network_without_packaged_mnist(no_env, monkeypatch, tmp_path):
  monkeypatch.setattr(idx, "PACKAGED_MNIST_DIR", str(tmp_path / "none"))
  with pytest.raises(datasets.DataError, match=r"cannot download .*/mnist/train-images"):
    datasets.load("mnist")


def test_default_urls(monkeypatch):
  monkeypatch.delenv(download.URL_ENV)
  url = lambda name, f: download.source_url(name, f, idx.BASE_URLS[name] + f)
  assert url("mnist", "t10k-labels-idx1-ubyte.gz") == (
      "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz")
  assert url("fashion_mnist", "t10k-labels-idx1-ubyte.gz").startswith(
      "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k")
  assert download.source_url("fruits360", fruits360.ARCHIVE_ZIP,
                             fruits360.ARCHIVE_URL) == fruits360.ARCHIVE_URL


def test_checksums_match_full_copies():
  """The checksum table agrees with the byte-identical copies in AL_JAX_DATA_DIR."""
  if not FULL_DATA:
    pytest.skip(f"{datasets.DATA_DIR_ENV} is not set")
  for key, (size, sha256) in idx.CHECKSUMS.items():
    path = os.path.join(FULL_DATA, *key.split("/"))
    assert download._check(path, size, sha256) is None, key


# -------------------------------------------------------------- one Fruits-360 rule


def test_variety_rule():
  assert len(fruits360.PAPER_VARIETIES) == 52
  assert fruits360.variety_label("Apple Braeburn 1") == 0
  assert fruits360.variety_label("Apple Braeburn") == 0  # Pre-2024 name.
  assert fruits360.variety_label("banana  1") == 3
  assert fruits360.variety_label("Pear Abate 1") == 4
  for later in ("Apple 6", "Apple hit 1", "Pear 3", "Kiwi 1", ""):
    assert fruits360.variety_label(later) is None, later
  # The category rule alone (first word) would keep the 2021 varieties.
  assert fruits360.fruit_category("Apple 6") == 0


def test_later_varieties_are_ignored_locally(no_env, tmp_path):
  folder = _fruit_tree(tmp_path / "f", varieties=("Apple Braeburn 1", "Banana 1"))
  shutil.copytree(os.path.join(folder, "Training", "Apple Braeburn 1"),
                  os.path.join(folder, "Training", "Apple 6"))
  ds = datasets.load("fruits360", folder)
  assert ds.train_labels.tolist() == [0, 0, 0, 3, 3, 3]


def _builder_counts(split_dir):
  """Class counts by the TFDS builder's own generator (TFDS is a test dependency)."""
  gen = fruits360.tfds_builder()._generate_examples(None, split_dir)
  labels = [fruits360.FRUIT_CATEGORIES.index(ex["label"]) for _, ex in gen]
  return np.bincount(labels, minlength=10).tolist()


@pytest.mark.parametrize("which", ["sample", "with_later_varieties", "full"])
def test_local_and_tfds_rules_agree(no_env, tmp_path, which):
  if which == "full":
    if not FULL_DATA:
      pytest.skip(f"{datasets.DATA_DIR_ENV} is not set")
    folder = os.path.join(FULL_DATA, "fruits360")
  elif which == "sample":
    folder = SAMPLE_FRUITS
  else:
    folder = _fruit_tree(tmp_path / "f", varieties=("Apple Braeburn 1", "Pear 1"))
    for later in ("Apple 6", "Pear 3"):
      shutil.copytree(os.path.join(folder, "Test", "Pear 1"), os.path.join(folder, "Test",
                                                                           later))
  listing = fruits360._list_fruits(folder)
  for split in fruits360.SPLITS:
    local = np.bincount([c for _, _, c in listing[split]], minlength=10).tolist()
    assert local == _builder_counts(os.path.join(folder, split)), split
  if which == "full":
    assert np.bincount([c for _, _, c in listing["Training"]]).tolist() == \
        FRUITS_TRAIN_COUNTS


def test_fruits360_builder(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder_cls = fruits360.tfds_builder()
  assert issubclass(builder_cls, tfds.core.GeneratorBasedBuilder)
  assert builder_cls.name == "fruits360" and str(builder_cls.VERSION) == "1.0.0"
  assert builder_cls is fruits360.tfds_builder()  # Defined (and registered) once.
  assert fruits360.find_release_root(datasets.SAMPLE_DIR) == SAMPLE_FRUITS
  builder = builder_cls(data_dir=str(tmp_path))
  assert builder.info.features["label"].names == list(fruits360.FRUIT_CATEGORIES)
  assert builder.info.features["image"].shape == (100, 100, 3)
  assert "Muresan" in builder.info.citation
  examples = list(builder._generate_examples(os.path.join(SAMPLE_FRUITS, "Test")))
  assert len(examples) == 10 * SAMPLE_FRUITS_TEST
  assert len({key for key, _ in examples}) == len(examples)
  labels = [fruits360.FRUIT_CATEGORIES.index(ex["label"]) for _, ex in examples]
  assert labels == np.repeat(SAMPLE_FOLDER_LABELS, SAMPLE_FRUITS_TEST).tolist()
  os.makedirs(tmp_path / "Test" / "Apple 6")  # A 2021 variety, not in the paper.
  open(tmp_path / "Test" / "Apple 6" / "a.jpg", "wb").close()
  assert not list(builder._generate_examples(str(tmp_path / "Test")))


# ---------------------------------------------------------------------------- full data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FRUITS_TRAIN_COUNTS = [5117, 4079, 1442, 1144, 4026, 786, 1980, 983, 1066, 1413]
FRUITS_TEST_COUNTS = [2134, 1707, 601, 484, 1689, 329, 826, 410, 451, 597]


@pytest.fixture(scope="module")
def full_fruits():
  """The full Fruits-360 copy at 32x32, decoded once (then cached) per session."""
  if not FULL_DATA:
    pytest.skip(f"{datasets.DATA_DIR_ENV} is not set")
  return datasets.load("fruits360", image_size=32)


@full_data
@needs_full_data
def test_full_mnist():
  ds = datasets.load("mnist")
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert np.bincount(ds.train_labels).tolist() == MNIST_TRAIN_COUNTS
  assert np.bincount(ds.test_labels).tolist() == MNIST_TEST_COUNTS
  np.testing.assert_array_equal(ds.train_images[:600], datasets.load("mnist", "sample").train_images)
  binary = datasets.load("mnist", classes=("0", "1"))
  assert len(binary.train_labels) == 5923 + 6742 and len(binary.test_labels) == 980 + 1135


@full_data
@needs_full_data
def test_full_fashion_mnist():
  ds = datasets.load("fashion_mnist")
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert np.bincount(ds.train_labels).tolist() == [6000] * 10
  assert np.bincount(ds.test_labels).tolist() == [1000] * 10
  assert ds.class_names[9] == "ankle boot"


@full_data
@needs_full_data
def test_full_fruits360(full_fruits):
  ds = full_fruits
  assert ds.train_images.shape == (22036, 32, 32, 3)
  assert ds.test_images.shape == (9228, 32, 32, 3)
  assert np.bincount(ds.train_labels).tolist() == FRUITS_TRAIN_COUNTS
  assert np.bincount(ds.test_labels).tolist() == FRUITS_TEST_COUNTS
  assert ds.train_images.dtype == np.uint8


@full_data
@needs_full_data
def test_full_fruits360_cached_subset(full_fruits, monkeypatch):
  def no_decode(*args):
    raise AssertionError("cache miss")

  monkeypatch.setattr(image_files, "decode_many", no_decode)
  again = datasets.load("fruits360", image_size=32)
  np.testing.assert_array_equal(again.train_images, full_fruits.train_images)
  np.testing.assert_array_equal(again.test_labels, full_fruits.test_labels)
  binary = datasets.load("fruits360", classes=("apple", "banana"))
  assert np.bincount(binary.train_labels).tolist() == [5117, 1144]
  assert np.bincount(binary.test_labels).tolist() == [2134, 484]


# ----------------------------------------------------------------- the user's own folder

FRUIT_CLASSES = ("Banana 1", "Apple Braeburn 1", "Plum 1")


def _jpegs(variety, split="Training"):
  folder = os.path.join(SAMPLE_FRUITS, split, variety)
  return [os.path.join(folder, n) for n in sorted(os.listdir(folder))]


def _user_folder(root, train=4, test=2, classes=FRUIT_CLASSES) -> str:
  """root/train/<class>/ (and root/test/<class>/ if test) of sample Fruits-360 JPEGs."""
  for split, count, src in (("train", train, "Training"), ("test", test, "Test")):
    for cls in classes[:len(classes) if count else 0]:
      os.makedirs(root / split / cls)
      for path in _jpegs(cls, src)[:count]:
        shutil.copyfile(path, root / split / cls / os.path.basename(path))
  return str(root)


def _mnist_pngs(folder, digits, per_digit=3, offset=0):
  """Real MNIST sample digits as greyscale PNGs: folder/<digit>/<i>.png."""
  ds = datasets.load("mnist", "sample")
  for d in digits:
    os.makedirs(folder / str(d), exist_ok=True)
    for i in np.flatnonzero(ds.train_labels == d)[offset:offset + per_digit]:
      Image.fromarray(ds.train_images[i, ..., 0]).save(folder / str(d) / f"{i:05d}.png")


def test_folder_with_test_split(tmp_path):
  folder = _user_folder(tmp_path)
  ds = datasets.load("folder", folder, image_size=20)
  assert ds.name == "folder" and ds.source == "data_dir"
  assert ds.class_names == tuple(sorted(FRUIT_CLASSES))
  assert ds.train_images.shape == (12, 20, 20, 3) and ds.train_images.dtype == np.uint8
  assert ds.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
  assert ds.test_labels.tolist() == [0, 0, 1, 1, 2, 2] and ds.test_labels.dtype == np.int32
  with Image.open(_jpegs("Apple Braeburn 1")[0]) as img:
    img.draft("RGB", (20, 20))  # Large JPEGs are decoded at 1/2, 1/4 or 1/8 first.
    assert img.size == (25, 25)
    expected = np.asarray(img.convert("RGB").resize((20, 20), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(ds.train_images[0], expected)
  sub = datasets.load("folder", folder, image_size=20, classes="plum 1,banana_1")
  assert sub.class_names == ("Plum 1", "Banana 1")
  assert sub.train_labels.tolist() == [1] * 4 + [0] * 4  # Banana images come first.


def test_folder_seeded_stratified_split(tmp_path):
  folder = _user_folder(tmp_path, train=10, test=0)
  ds = datasets.load("folder", folder, image_size=8, test_fraction=0.3, seed=1)
  assert np.bincount(ds.test_labels).tolist() == [3, 3, 3]
  assert np.bincount(ds.train_labels).tolist() == [7, 7, 7]
  again = datasets.load("folder", folder, image_size=8, test_fraction=0.3, seed=1)
  np.testing.assert_array_equal(again.test_images, ds.test_images)
  other = datasets.load("folder", folder, image_size=8, test_fraction=0.3, seed=2)
  assert not np.array_equal(other.test_images, ds.test_images)
  # Every image is in exactly one split.
  all_images = np.concatenate([ds.train_images, ds.test_images]).reshape(30, -1)
  assert len(np.unique(all_images, axis=0)) == 30


def test_split_stratified():
  labels = np.array([0] * 10 + [1] * 3 + [2])
  train, test = datasets.split_stratified(labels, 0.2, seed=0)
  assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]  # One image stays.
  assert sorted(np.concatenate([train, test]).tolist()) == list(range(14))
  assert np.all(np.diff(test) > 0)
  np.testing.assert_array_equal(datasets.split_stratified(labels, 0.2, seed=0)[1], test)


def test_folder_greyscale_is_one_channel(tmp_path):
  _mnist_pngs(tmp_path / "train", (3, 7))
  _mnist_pngs(tmp_path / "Test", (3, 7), per_digit=1, offset=5)
  ds = datasets.load("folder", tmp_path, image_size=28)
  assert ds.class_names == ("3", "7") and ds.train_images.shape == (6, 28, 28, 1)
  assert ds.test_images.shape == (2, 28, 28, 1)
  mnist = datasets.load("mnist", "sample")
  first = np.flatnonzero(mnist.train_labels == 3)[0]
  np.testing.assert_array_equal(ds.train_images[0], mnist.train_images[first])


def test_folder_mixed_modes_sizes_and_formats(tmp_path):
  _mnist_pngs(tmp_path / "train", (1,))  # 28x28 greyscale PNGs.
  _user_folder(tmp_path, train=2, test=0, classes=("Banana 1",))  # 100x100 RGB JPEGs.
  with Image.open(_jpegs("Plum 1")[0]) as img:
    os.makedirs(tmp_path / "train" / "plum" / "nested")
    img.save(tmp_path / "train" / "plum" / "a.bmp")
    img.convert("RGBA").save(tmp_path / "train" / "plum" / "b.PNG")
    img.resize((60, 40)).save(tmp_path / "train" / "plum" / "nested" / "c.webp")
    grey16 = np.asarray(img.convert("L"), np.uint16) * 257
  Image.fromarray(grey16).save(tmp_path / "train" / "plum" / "d.png")  # 16-bit grey.
  ds = datasets.load("folder", tmp_path, image_size=16, test_fraction=0.5)
  assert ds.class_names == ("1", "Banana 1", "plum")
  assert ds.train_images.shape[1:] == (16, 16, 3)
  assert len(ds.train_labels) + len(ds.test_labels) == 3 + 2 + 4
  images = np.concatenate([ds.train_images, ds.test_images])
  labels = np.concatenate([ds.train_labels, ds.test_labels])
  grey = images[labels == 0]
  assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])
  assert images[labels == 2].max() > 0  # The 16-bit image is not clipped to white/black.


def test_folder_skips_bad_files_with_one_warning(tmp_path, caplog):
  folder = _user_folder(tmp_path, train=4, test=0)
  banana = tmp_path / "train" / "Banana 1"
  (banana / "broken.jpg").write_bytes(b"not a jpeg at all")
  raw = open(_jpegs("Banana 1")[5], "rb").read()
  (banana / "cut.jpg").write_bytes(raw[:len(raw) // 3])
  (banana / "notes.txt").write_text("my labels")
  (tmp_path / "train" / "stray.jpg").write_bytes(raw)  # Outside any class folder.
  (banana / ".DS_Store").write_bytes(b"\0")  # Hidden: ignored silently.
  with caplog.at_level(logging.WARNING):
    ds = datasets.load("folder", folder, image_size=8, test_fraction=0.25)
  lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(lines) == 1
  assert lines[0].startswith(f"skipped 4 of 16 files under {folder}: 2 unreadable")
  assert "2 not images" in lines[0] and "\n" not in lines[0]
  assert len(ds.train_labels) + len(ds.test_labels) == 12
  caplog.clear()
  with caplog.at_level(logging.WARNING):  # From the cache: the same one line.
    datasets.load("folder", folder, image_size=8, test_fraction=0.25)
  assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_folder_cache(tmp_path, monkeypatch):
  folder = _user_folder(tmp_path, train=3, test=1)
  first = datasets.load("folder", folder, image_size=12)

  def no_decode(*args, **kwargs):
    raise AssertionError("cache miss")

  with monkeypatch.context() as m:
    m.setattr(image_files, "decode_many", no_decode)
    again = datasets.load("folder", folder, image_size=12)
    np.testing.assert_array_equal(again.train_images, first.train_images)
    np.testing.assert_array_equal(again.test_labels, first.test_labels)
    path = os.path.join(folder, "train", "Plum 1", os.listdir(
        os.path.join(folder, "train", "Plum 1"))[0])
    os.utime(path, ns=(0, 0))  # A changed file is decoded again.
    with pytest.raises(AssertionError, match="cache miss"):
      datasets.load("folder", folder, image_size=12)


@pytest.mark.parametrize("change, how", [
    ("truncated", r"size \d+ -> \d+ bytes"),  # Before it is decoded: would not decode.
    ("replaced", "replaced"),                  # By another valid image (a sync's rename).
    ("appended", r"size \d+ -> \d+ bytes"),   # While (just after) it is decoded.
    ("rewritten", "rewritten"),                # Same bytes written again in place.
    ("deleted", "deleted"),
])
def test_folder_file_changed_while_read_stops_and_caches_nothing(
    tmp_path, monkeypatch, _cache_dir, change, how):
  """A file that changes between the listing and the end of the decode stops the load
  with one line, and no cache is written (nor trusted later): the arrays would mix two
  states of the folder, and a job resumed once the file settles would see another pool."""
  folder = _user_folder(tmp_path / "photos", train=4, test=0)
  banana = tmp_path / "photos" / "train" / "Banana 1"
  target = str(banana / sorted(os.listdir(banana))[1])
  other = _jpegs("Plum 1")[7]
  decode = image_files.decode_image

  def changing_decode(path, *args, **kwargs):
    if path == target and change == "truncated":
      raw = open(path, "rb").read()
      open(path, "wb").write(raw[:len(raw) // 3])
    elif path == target and change == "replaced":
      shutil.copyfile(other, path + ".part")
      os.replace(path + ".part", path)
    elif path == target and change == "deleted":
      os.remove(path)
    result = decode(path, *args, **kwargs)
    if path == target and change == "appended":
      with open(path, "ab") as f:
        f.write(b"\0" * 100)
    elif path == target and change == "rewritten":
      raw = open(path, "rb").read()
      os.utime(path, ns=(1, 1))  # Even a writer that restores the mtime is seen.
      open(path, "wb").write(raw)
      st = os.stat(path)
      os.utime(path, ns=(st.st_atime_ns, before.st_mtime_ns))
    return result

  before = os.stat(target)
  caches = set(os.listdir(_cache_dir))
  monkeypatch.setattr(image_files, "decode_image", changing_decode)
  with pytest.raises(datasets.DataError) as err:
    datasets.load("folder", folder, image_size=8)
  message = str(err.value)
  assert "\n" not in message
  assert re.fullmatch(
      rf"1 file\(s\) under {re.escape(folder)} changed while the images were read "
      rf"\(e\.g\. train/Banana 1/{re.escape(os.path.basename(target))}: {how}\); nothing "
      r"was cached: run again once nothing writes to that folder", message), message
  assert set(os.listdir(_cache_dir)) == caches
  monkeypatch.setattr(image_files, "decode_image", decode)
  settled = datasets.load("folder", folder, image_size=8)  # The folder as it is now.
  expected = {"truncated": 11, "deleted": 11}.get(change, 12)  # A cut file is skipped.
  assert len(settled.train_labels) + len(settled.test_labels) == expected


def test_folder_non_image_changed_while_read_is_fine(tmp_path, monkeypatch):
  folder = _user_folder(tmp_path, train=2, test=1)
  notes = tmp_path / "train" / "Plum 1" / "notes.txt"
  notes.write_text("a log someone appends to")
  decode = image_files.decode_image

  def appending_decode(path, *args, **kwargs):
    with open(notes, "a") as f:
      f.write("more\n")
    return decode(path, *args, **kwargs)

  monkeypatch.setattr(image_files, "decode_image", appending_decode)
  ds = datasets.load("folder", folder, image_size=8)
  assert len(ds.train_labels) == 6 and len(ds.test_labels) == 3


@pytest.mark.parametrize("case, match", [
    ("empty_class", r"class folder .*Plum 1 holds no images"),
    ("empty_test_class", r"class folder .*test/Plum 1 holds no images"),
    ("unknown_test_class", r"classes Kiwi are in .*test but not in .*train"),
    ("single_class", r"holds 1 class folder\(s\) \(Banana 1\); need at least 2"),
    ("all_unreadable", r"no readable training images of class Plum 1"),
    ("dir_loop", r"symlink loop: .*Plum 1/back leads back to"),
    ("self_loop", r"symlink loop at .*Plum 1/self"),
    ("no_train", r"no train/ folder in"),
    ("missing", r"data folder .*nowhere does not exist"),
    ("fraction", r"test_fraction must be between 0 and 1"),
    ("no_dir", r"needs --data_dir=DIR"),
])
def test_folder_errors(tmp_path, case, match):
  folder = _user_folder(tmp_path, train=2, test=1)
  plum = tmp_path / "train" / "Plum 1"
  kwargs = {}
  if case == "empty_class":
    shutil.rmtree(plum)
    os.makedirs(plum)
    (plum / "readme.txt").write_text("todo")
  elif case == "empty_test_class":
    shutil.rmtree(tmp_path / "test" / "Plum 1")
    os.makedirs(tmp_path / "test" / "Plum 1")
  elif case == "unknown_test_class":
    shutil.copytree(tmp_path / "test" / "Plum 1", tmp_path / "test" / "Kiwi")
  elif case == "single_class":
    for cls in ("Plum 1", "Apple Braeburn 1"):
      shutil.rmtree(tmp_path / "train" / cls)
  elif case == "all_unreadable":
    for name in os.listdir(plum):
      (plum / name).write_bytes(b"garbage")
  elif case == "dir_loop":
    os.symlink(tmp_path / "train", plum / "back")
  elif case == "self_loop":
    os.symlink(plum / "self", plum / "self")
  elif case == "no_train":
    shutil.rmtree(tmp_path / "train")
  elif case == "missing":
    folder = str(tmp_path / "nowhere")
  elif case == "fraction":
    shutil.rmtree(tmp_path / "test")
    kwargs = dict(test_fraction=1.0)
  elif case == "no_dir":
    folder = None
  with pytest.raises(datasets.DataError, match=match) as err:
    datasets.load("folder", folder, image_size=8, **kwargs)
  assert "\n" not in str(err.value)
