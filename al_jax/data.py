"""Image-classification data sets as uint8 numpy arrays: MNIST, Fashion-MNIST, Fruits-360.

`load(name, data_dir)` reads a local copy when one is given (argument `data_dir`, else
the environment variable AL_JAX_DATA_DIR) and otherwise falls back to TensorFlow
Datasets. A data folder may be the data set's own folder or a root holding
`<root>/<name>/`; `data_dir="sample"` is the small real sample shipped in
`al_jax/sample_data` (600/200 MNIST images, 250/100 Fruits-360 images).

Local layouts:
  mnist, fashion_mnist: the four original IDX files train-images-idx3-ubyte.gz,
    train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
    (uncompressed copies without `.gz` are accepted too).
  fruits360: Training/<Variety>/*.jpg and Test/<Variety>/*.jpg (100x100 release); a
    variety belongs to the category named by the lowercase first word of its folder
    name ("Apple Braeburn 1" -> apple); varieties of other fruits are ignored. The
    decoded arrays are cached as .npz under AL_JAX_CACHE_DIR (default ~/.cache/al_jax).

Images are returned as uint8 [N, H, W, C]; `normalize` maps them to float32 inside
jitted code.
"""

import concurrent.futures
import dataclasses
import gzip
import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from PIL import Image

DATASETS = ("mnist", "fashion_mnist", "fruits360")
FRUIT_CATEGORIES = ("apple", "tomato", "potato", "banana", "pear", "pineapple", "pepper",
                    "strawberry", "onion", "plum")
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                         "shirt", "sneaker", "bag", "ankle boot")
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
DATA_DIR_ENV = "AL_JAX_DATA_DIR"
CACHE_DIR_ENV = "AL_JAX_CACHE_DIR"

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FRUIT_SPLITS = ("Training", "Test")
FRUIT_MEAN = (0.4914, 0.4822, 0.4465)
FRUIT_STD = (0.2023, 0.1994, 0.2010)

_IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions.
_LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension.
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_CACHE_FORMAT = "al_jax-fruits360-v1"
_SOURCES = {
    "mnist": "yann.lecun.com/exdb/mnist",
    "fashion_mnist": "github.com/zalandoresearch/fashion-mnist, folder data/fashion",
}


class DataError(ValueError):
  """Bad or missing data; the message is one line that says what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train/test split of one data set, images uint8 [N, H, W, C], labels int32 [N]."""
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def __repr__(self) -> str:
    return (f"Dataset(name={self.name!r}, train_images={self.train_images.shape}, "
            f"test_images={self.test_images.shape}, class_names={self.class_names})")


# ----------------------------------------------------------------------------- public


def load(name: str, data_dir: str | os.PathLike | None = None, *,
         classes: Sequence[str | int] | str | None = None,
         image_size: int = 32) -> Dataset:
  """Loads a data set, optionally restricted (and relabeled 0..k-1) to `classes`.

  Args:
    name: one of DATASETS.
    data_dir: a local copy (the data set's folder or a root holding `<name>/`), or
      "sample" for the shipped sample; None means $AL_JAX_DATA_DIR, else TFDS.
    classes: None for all classes, else class names (case-insensitive) or indices as
      strings, e.g. ("apple", "banana") or ("0", "1"); a "a,b" string is also accepted.
      Labels are renumbered 0..k-1 in the order given.
    image_size: side of the square fruits360 images (100 keeps the originals). Ignored
      by mnist and fashion_mnist, which are always 28x28.

  Returns:
    Dataset with uint8 images [N, H, W, C] (C=1 for MNIST-like, 3 for fruits360) and
    int32 labels [N].
  """
  if name not in DATASETS:
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
  if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
      or image_size < 1:
    raise DataError(f"image_size must be a positive integer, got {image_size!r}")
  if isinstance(classes, str):
    classes = parse_classes(classes)
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or None
  if data_dir is None:
    dataset = _load_tfds(name, int(image_size))
  else:
    folder = _dataset_folder(name, os.fspath(data_dir))
    if name == "fruits360":
      dataset = _load_fruits_local(folder, int(image_size))
    else:
      dataset = _load_idx_local(name, folder)
  return dataset if classes is None else select_classes(dataset, classes)


def normalize(images: np.ndarray | jnp.ndarray, name: str) -> jnp.ndarray:
  """uint8 images [..., H, W, C] -> float32 [..., H, W, C]; jit-able (`name` is static).

  mnist, fashion_mnist: (x/255 - 0.5) / 0.5, i.e. [-1, 1].
  fruits360: per-channel (x/255 - FRUIT_MEAN) / FRUIT_STD.
  """
  x = jnp.asarray(images).astype(jnp.float32)
  if name in ("mnist", "fashion_mnist"):
    return (x - 127.5) / 127.5  # = (x/255 - 0.5)/0.5, exact at 0 -> -1 and 255 -> 1.
  if name == "fruits360":
    mean = jnp.asarray(FRUIT_MEAN, jnp.float32) * 255.0
    std = jnp.asarray(FRUIT_STD, jnp.float32) * 255.0
    return (x - mean) / std
  raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def parse_classes(spec: str | None) -> tuple[str, ...] | None:
  """"0,1" -> ("0", "1"); "apple, banana" -> ("apple", "banana"); "" or None -> None."""
  if spec is None:
    return None
  parts = tuple(part.strip() for part in spec.split(",") if part.strip())
  return parts or None


def select_classes(dataset: Dataset, classes: Sequence[str | int]) -> Dataset:
  """Keeps only `classes` (names or indices) and relabels them 0..k-1 in that order."""
  indices = [_class_index(dataset, c) for c in classes]
  if len(set(indices)) != len(indices):
    raise DataError(f"duplicate classes in {list(map(str, classes))} for {dataset.name}; "
                    "name each class once")
  if len(indices) < 2:
    raise DataError(f"need at least 2 classes for {dataset.name}, got "
                    f"{list(map(str, classes))}; pass e.g. --classes="
                    f"{dataset.class_names[0]},{dataset.class_names[1]}")
  lookup = np.full(dataset.num_classes, -1, np.int32)
  lookup[indices] = np.arange(len(indices), dtype=np.int32)
  train_images, train_labels = _keep(dataset.train_images, dataset.train_labels, lookup)
  test_images, test_labels = _keep(dataset.test_images, dataset.test_labels, lookup)
  names = tuple(dataset.class_names[i] for i in indices)
  empty = [n for k, n in enumerate(names) if not np.any(train_labels == k)]
  if empty:
    raise DataError(f"no training images of class {', '.join(empty)} in this copy of "
                    f"{dataset.name}; choose other classes or use a complete copy")
  return Dataset(dataset.name, train_images, train_labels, test_images, test_labels, names)


# ----------------------------------------------------------------------------- helpers


def _class_index(dataset: Dataset, cls: str | int) -> int:
  """A class name (case-insensitive; '_' for ' ') or an index -> index in class_names."""
  key = str(cls).strip().lower().replace("_", " ")
  names = [n.lower() for n in dataset.class_names]
  if key in names:
    return names.index(key)
  if key.isdigit() and int(key) < dataset.num_classes:
    return int(key)
  valid = ", ".join(dataset.class_names)
  raise DataError(f"unknown class {str(cls)!r} for {dataset.name}; valid classes are "
                  f"{valid} (or their indices 0..{dataset.num_classes - 1})")


def _keep(images: np.ndarray, labels: np.ndarray,
          lookup: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Rows whose label maps to >= 0 under lookup [C], relabeled.  -> [M, ...], [M]."""
  new_labels = lookup[labels]
  mask = new_labels >= 0
  return images[mask], new_labels[mask].astype(np.int32)


def _expected_files(name: str) -> str:
  if name == "fruits360":
    return ("Training/<Variety>/*.jpg and Test/<Variety>/*.jpg from the Fruits-360 "
            "100x100 release (github.com/fruits-360)")
  return f"the 4 IDX files {', '.join(IDX_FILES)} (from {_SOURCES[name]})"


def _dataset_folder(name: str, data_dir: str) -> str:
  """The folder holding `name`'s files: data_dir itself or data_dir/<name>."""
  root = SAMPLE_DIR if data_dir == "sample" else os.path.abspath(
      os.path.expanduser(data_dir))
  if not os.path.isdir(root):
    raise DataError(f"data folder {root} does not exist; pass --data_dir=DIR (or set "
                    f"{DATA_DIR_ENV}) pointing at a folder with {_expected_files(name)}")
  markers = FRUIT_SPLITS if name == "fruits360" else IDX_FILES + tuple(
      f[:-3] for f in IDX_FILES)
  if any(os.path.exists(os.path.join(root, m)) for m in markers):
    return root
  sub = os.path.join(root, name)
  if os.path.isdir(sub):
    return sub
  raise DataError(f"no {name} data in {root} or {sub}: expected {_expected_files(name)}")


# ---------------------------------------------------------------- MNIST / Fashion-MNIST


def _load_idx_local(name: str, folder: str) -> Dataset:
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
    raise DataError(f"missing {', '.join(missing)} in {folder}; expected "
                    f"{_expected_files(name)}")
  train_images = _read_idx(paths[0], _IMAGES_MAGIC)
  train_labels = _read_idx(paths[1], _LABELS_MAGIC)
  test_images = _read_idx(paths[2], _IMAGES_MAGIC)
  test_labels = _read_idx(paths[3], _LABELS_MAGIC)
  for images, labels, ipath, lpath in ((train_images, train_labels, paths[0], paths[1]),
                                       (test_images, test_labels, paths[2], paths[3])):
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
      raise DataError(f"{ipath} holds images {images.shape} but {lpath} holds "
                      f"{labels.shape[0]} labels (expected N x 28 x 28 and N); "
                      "replace both with the original files")
    if labels.size and labels.max() > 9:
      raise DataError(f"{lpath} holds label {int(labels.max())} (expected 0..9); "
                      "replace it with the original file")
  class_names = MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
  return Dataset(name, train_images[..., None], train_labels.astype(np.int32),
                 test_images[..., None], test_labels.astype(np.int32), class_names)


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
    raise DataError(f"{path} is truncated or corrupt ({_one_line(e)}); "
                    "replace it with the original file") from e
  ndim = magic & 0xFF
  header_size = 4 + 4 * ndim
  if len(raw) < header_size or struct.unpack(">i", raw[:4])[0] != magic:
    found = struct.unpack(">i", raw[:4])[0] if len(raw) >= 4 else None
    raise DataError(f"{path} is not an IDX file with magic number {magic} (found "
                    f"{found}); replace it with the original file")
  dims = struct.unpack(">" + "i" * ndim, raw[4:header_size])
  expected = int(np.prod(dims))
  if len(raw) - header_size != expected:
    raise DataError(f"{path} holds {len(raw) - header_size} data bytes but its header "
                    f"declares {dims} ({expected} bytes); replace it with the original file")
  return np.frombuffer(raw, np.uint8, offset=header_size).reshape(dims).copy()


# ---------------------------------------------------------------------------- Fruits-360


def fruit_category(variety: str) -> int | None:
  """Folder name -> index in FRUIT_CATEGORIES by its first word ("Pear Abate 1" -> 4)."""
  words = variety.split()
  first = words[0].lower() if words else ""
  return FRUIT_CATEGORIES.index(first) if first in FRUIT_CATEGORIES else None


def _list_fruits(folder: str) -> dict[str, list[tuple[str, int, int]]]:
  """split -> [(relative path, size in bytes, category)], in sorted folder/file order."""
  missing = [s for s in FRUIT_SPLITS if not os.path.isdir(os.path.join(folder, s))]
  if missing:
    raise DataError(f"missing {' and '.join(m + '/' for m in missing)} in {folder}; "
                    f"expected {_expected_files('fruits360')}")
  listing = {}
  for split in FRUIT_SPLITS:
    split_dir = os.path.join(folder, split)
    entries = []
    for variety in sorted(os.listdir(split_dir)):
      category = fruit_category(variety)
      variety_dir = os.path.join(split_dir, variety)
      if category is None or not os.path.isdir(variety_dir):
        continue
      with os.scandir(variety_dir) as it:
        files = sorted((e.name, e.stat().st_size) for e in it
                       if e.is_file() and e.name.lower().endswith(_JPEG_SUFFIXES))
      entries += [(f"{split}/{variety}/{n}", size, category) for n, size in files]
    if not entries:
      raise DataError(f"no images of {', '.join(FRUIT_CATEGORIES)} in {split_dir}; "
                      f"expected {_expected_files('fruits360')}")
    listing[split] = entries
  return listing


def _cache_path(folder: str, image_size: int,
                listing: dict[str, list[tuple[str, int, int]]]) -> str:
  """Cache file named by a hash of the folder, image size and every (file, size)."""
  h = hashlib.sha256(f"{_CACHE_FORMAT}\n{folder}\n{image_size}\n".encode())
  for split in FRUIT_SPLITS:
    for rel, size, category in listing[split]:
      h.update(f"{rel}\t{size}\t{category}\n".encode())
  cache_dir = os.environ.get(CACHE_DIR_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "al_jax")
  return os.path.join(cache_dir, f"fruits360_{image_size}px_{h.hexdigest()[:24]}.npz")


def _read_cache(path: str) -> dict[str, np.ndarray] | None:
  keys = ("train_images", "train_labels", "test_images", "test_labels")
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in keys}
  except Exception:  # pylint: disable=broad-except
    return None  # Missing or unreadable cache: decode again.


def _write_cache(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Atomic write (temp file in the same folder, then os.replace); best effort."""
  tmp = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except OSError:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)


def _decode_jpeg(path: str, image_size: int) -> np.ndarray:
  """One image file -> uint8 [image_size, image_size, 3] (bilinear resize if needed)."""
  try:
    with Image.open(path) as img:
      img = img.convert("RGB")
      if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
      return np.asarray(img, np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise DataError(f"cannot decode image {path} ({_one_line(e)}); replace or delete "
                    "this file") from e


def _decode_many(paths: list[str], image_size: int) -> np.ndarray:
  """Image files -> uint8 [N, image_size, image_size, 3], decoded by a thread pool."""
  out = np.empty((len(paths), image_size, image_size, 3), np.uint8)
  chunk = 256

  def work(start: int) -> None:
    for i, path in enumerate(paths[start:start + chunk], start):
      out[i] = _decode_jpeg(path, image_size)

  workers = min(8, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for future in [pool.submit(work, s) for s in range(0, len(paths), chunk)]:
      future.result()  # Re-raises the first DataError.
  return out


def _load_fruits_local(folder: str, image_size: int) -> Dataset:
  """Training/ and Test/ under `folder` -> Dataset [N, S, S, 3], cached as .npz."""
  listing = _list_fruits(folder)
  cache = _cache_path(folder, image_size, listing)
  arrays = _read_cache(cache)
  if arrays is None:
    arrays = {}
    for split, key in zip(FRUIT_SPLITS, ("train", "test")):
      entries = listing[split]
      paths = [os.path.join(folder, *rel.split("/")) for rel, _, _ in entries]
      arrays[f"{key}_images"] = _decode_many(paths, image_size)
      arrays[f"{key}_labels"] = np.array([c for _, _, c in entries], np.int32)
    _write_cache(cache, arrays)
  return Dataset("fruits360", arrays["train_images"], arrays["train_labels"],
                 arrays["test_images"], arrays["test_labels"], FRUIT_CATEGORIES)


def _resize_all(images: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 [N, H, W, 3] -> [N, S, S, 3] with the same bilinear resize as local files."""
  if images.shape[1:3] == (image_size, image_size):
    return images
  size = (image_size, image_size)
  return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BILINEAR))
                   for im in images]) if len(images) else np.zeros(
                       (0, image_size, image_size, 3), np.uint8)


# ---------------------------------------------------------------------------------- TFDS


def _load_tfds(name: str, image_size: int) -> Dataset:
  """Downloads/prepares `name` with TensorFlow Datasets (needs TensorFlow + network)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    if name == "fruits360":
      from al_jax import fruits360_tfds  # pylint: disable=import-outside-toplevel
      tfds_name = fruits360_tfds.Fruits360.name
    else:
      tfds_name = name
    splits = tfds.load(tfds_name, split=["train", "test"], batch_size=-1,
                       as_supervised=True)
    (train_x, train_y), (test_x, test_y) = tfds.as_numpy(splits)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"could not download {name} with TFDS ({_one_line(e)}; TFDS needs "
                    "network and TensorFlow: pip install 'al_jax[tfds]'); or pass "
                    "--data_dir=DIR pointing at a local copy "
                    f"({_expected_files(name)}) or set {DATA_DIR_ENV}") from e
  train_x, test_x = np.asarray(train_x, np.uint8), np.asarray(test_x, np.uint8)
  if name == "fruits360":
    train_x, test_x = _resize_all(train_x, image_size), _resize_all(test_x, image_size)
    class_names = FRUIT_CATEGORIES
  else:
    class_names = MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
  return Dataset(name, train_x, np.asarray(train_y, np.int32), test_x,
                 np.asarray(test_y, np.int32), class_names)


def _one_line(error: BaseException) -> str:
  """First line of an exception's message (at most 200 characters)."""
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= 200 else text[:197] + "..."
