"""MNIST and Fashion-MNIST: the four original IDX files, as uint8 [N, 28, 28, 1].

A local copy (`data_dir`, else $AL_JAX_DATA_DIR) holds train-images-idx3-ubyte.gz,
train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz
(uncompressed copies without `.gz` are accepted too), in the folder itself or in
<folder>/<name>/. Without one, mnist is read from the full original MNIST shipped in
`al_jax/mnist_data` ("packaged"), and either data set is downloaded into the cache once
("download", `al_jax.datasets.download`, checked against CHECKSUMS).

The optimiser and reselect defaults are those of the paper's authors' code
(Dominguez-Kuhne & Zhao, Caltech CNS/CS 186): SGD lr 0.01, momentum 0.9, batch 128, 350
reselect epochs of the 25 best batches (batch scores summed).
"""

import gzip
import os
import struct
import zlib

import numpy as np

from al_jax.datasets import base, download

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                         "shirt", "sneaker", "bag", "ankle boot")
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
PACKAGED_MNIST_DIR = os.path.join(os.path.dirname(base.SAMPLE_DIR), "mnist_data")
BASE_URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
# "<name>/<file>" -> (size in bytes, sha256 hex) of the original files; tests replace it.
CHECKSUMS = {
    "mnist/train-images-idx3-ubyte.gz": (
        9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "mnist/train-labels-idx1-ubyte.gz": (
        28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "mnist/t10k-images-idx3-ubyte.gz": (
        1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "mnist/t10k-labels-idx1-ubyte.gz": (
        4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    "fashion_mnist/train-images-idx3-ubyte.gz": (
        26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "fashion_mnist/train-labels-idx1-ubyte.gz": (
        29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "fashion_mnist/t10k-images-idx3-ubyte.gz": (
        4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": (
        5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}
_ORIGINS = {
    "mnist": "yann.lecun.com/exdb/mnist",
    "fashion_mnist": "github.com/zalandoresearch/fashion-mnist, folder data/fashion",
}
_IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions.
_LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension.


def fetch(name: str) -> str:
  """Downloads (once) the four IDX files of mnist or fashion_mnist -> their folder."""
  folder = os.path.join(base.cache_dir(), name)
  for filename in IDX_FILES:
    size, sha256 = CHECKSUMS.get(f"{name}/{filename}") or (None, None)
    url = download.source_url(name, filename, BASE_URLS[name] + filename)
    download.fetch(url, os.path.join(folder, filename), size, sha256)
  return folder


def load(name: str, data_dir: str | os.PathLike | None, **_) -> base.Dataset:
  """mnist or fashion_mnist from data_dir, $AL_JAX_DATA_DIR, the package or a download."""
  expected = f"the 4 IDX files {', '.join(IDX_FILES)} (from {_ORIGINS[name]})"
  found = base.local_folder(name, data_dir, IDX_FILES + tuple(f[:-3] for f in IDX_FILES),
                            expected)
  if found is not None:
    folder, source = found
  elif name == "mnist" and all(os.path.isfile(os.path.join(PACKAGED_MNIST_DIR, f))
                               for f in IDX_FILES):
    folder, source = PACKAGED_MNIST_DIR, "packaged"
  else:
    folder, source = download.into_cache(lambda: fetch(name)), "download"
  return _read_folder(name, folder, source, expected)


def _read_folder(name: str, folder: str, source: str, expected: str) -> base.Dataset:
  """Reads the four IDX files in `folder` -> Dataset with images [N, 28, 28, 1]."""
  paths = []
  missing = []
  for fname in IDX_FILES:
    path = os.path.join(folder, fname)
    if not os.path.isfile(path) and os.path.isfile(path[:-3]):
      path = path[:-3]
    paths.append(path)
    if not os.path.isfile(path):
      missing.append(fname)
  if missing:
    raise base.DataError(f"missing {', '.join(missing)} in {folder}; expected {expected}")
  train_images = _read_idx(paths[0], _IMAGES_MAGIC)
  train_labels = _read_idx(paths[1], _LABELS_MAGIC)
  test_images = _read_idx(paths[2], _IMAGES_MAGIC)
  test_labels = _read_idx(paths[3], _LABELS_MAGIC)
  for images, labels, ipath, lpath in ((train_images, train_labels, paths[0], paths[1]),
                                       (test_images, test_labels, paths[2], paths[3])):
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
      raise base.DataError(f"{ipath} holds images {images.shape} but {lpath} holds "
                           f"{labels.shape[0]} labels (expected N x 28 x 28 and N); "
                           "replace both with the original files")
    if labels.size and labels.max() > 9:
      raise base.DataError(f"{lpath} holds label {int(labels.max())} (expected 0..9); "
                           "replace it with the original file")
  class_names = MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
  return base.Dataset(name, train_images[..., None], train_labels.astype(np.int32),
                 test_images[..., None], test_labels.astype(np.int32), class_names, source)


def _read_idx(path: str, magic: int) -> np.ndarray:
  """One IDX file (gzip or raw) of unsigned bytes -> uint8 array of its declared shape."""
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        raw = f.read()
    else:
      with open(path, "rb") as f:
        raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise base.DataError(f"{path} is truncated or corrupt ({base.one_line(e)}); "
                         "replace it with the original file") from e
  ndim = magic & 0xFF
  header_size = 4 + 4 * ndim
  if len(raw) < header_size or struct.unpack(">i", raw[:4])[0] != magic:
    found = struct.unpack(">i", raw[:4])[0] if len(raw) >= 4 else None
    raise base.DataError(f"{path} is not an IDX file with magic number {magic} (found "
                         f"{found}); replace it with the original file")
  dims = struct.unpack(">" + "i" * ndim, raw[4:header_size])
  expected = int(np.prod(dims))
  if len(raw) - header_size != expected:
    raise base.DataError(f"{path} holds {len(raw) - header_size} data bytes but its header "
                         f"declares {dims} ({expected} bytes); replace it with the original file")
  return np.frombuffer(raw, np.uint8, offset=header_size).reshape(dims).copy()


_MNIST_LIKE = dict(channels=1, mean=(0.5,), std=(0.5,), model="mnist_cnn", batch_size=128,
                   learning_rate=0.01, momentum=0.9, weight_decay=0.0, epochs=350,
                   select_batches=25, batch_aggregate="sum", native_size=28)
base.register(base.Source("mnist", load, base.DatasetSpec("mnist", MNIST_CLASSES,
                                                          **_MNIST_LIKE)))
base.register(base.Source("fashion_mnist", load, base.DatasetSpec(
    "fashion_mnist", FASHION_MNIST_CLASSES, **_MNIST_LIKE)))
