"""Image-classification data sets as uint8 numpy arrays: MNIST, Fashion-MNIST, Fruits-360,
and a folder of the user's own images.

`load(name, data_dir)` finds the data in this order, and records which in
`Dataset.source` (one of SOURCES):
  1. the argument `data_dir` ("data_dir"; `data_dir="sample"` is the small real sample
     shipped in `al_jax/sample_data`, 600/200 MNIST and 250/100 Fruits-360 images:
     "sample"),
  2. the environment variable AL_JAX_DATA_DIR ("data_dir"),
  3. for mnist, the full original MNIST shipped in `al_jax/mnist_data` ("packaged"),
  4. a download into the cache (`al_jax.download`, standard library only: "download").
"tfds:NAME" (any TFDS image-classification set) is read by `al_jax.tfds_data` from
TFDS's own folder ("tfds"): `data_dir` is TFDS's data_dir there.
A data folder may be the data set's own folder or a root holding `<root>/<name>/`; a
folder that is given but lacks the data is an error, not a reason to fall back.

Local layouts:
  mnist, fashion_mnist: the four original IDX files train-images-idx3-ubyte.gz,
    train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
    (uncompressed copies without `.gz` are accepted too).
  fruits360: Training/<Variety>/*.jpg and Test/<Variety>/*.jpg (100x100 release); the
    paper's 52 varieties are kept, labelled by category (`al_jax.fruits360` holds the
    rule). The decoded arrays are cached as .npz under AL_JAX_CACHE_DIR (default
    ~/.cache/al_jax).
  folder (`load_folder`): DIR/train/<class>/*.{jpg,jpeg,png,bmp,webp} and optionally
    DIR/test/<class>/...; see `load_folder`.

Images are returned as uint8 [N, H, W, C]; the models normalise them (`al_jax.models`).
"""

import concurrent.futures
import dataclasses
import errno
import gzip
import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Sequence

from absl import logging
import numpy as np
from PIL import Image, ImageOps

from al_jax import download, specs
from al_jax.specs import FASHION_MNIST_CLASSES, MNIST_CLASSES
from al_jax.fruits360 import FRUIT_CATEGORIES, list_split
from al_jax.fruits360 import fruit_category  # noqa: F401  Re-exported.

DATASETS = specs.NAMES
SOURCES = ("data_dir", "packaged", "download", "sample", "tfds")
_HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DIR = os.path.join(_HERE, "sample_data")
PACKAGED_MNIST_DIR = os.path.join(_HERE, "mnist_data")
DATA_DIR_ENV = "AL_JAX_DATA_DIR"
CACHE_DIR_ENV = download.CACHE_DIR_ENV

IDX_FILES = download.IDX_FILES
FRUIT_SPLITS = ("Training", "Test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions.
_LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension.
_CACHE_FORMAT = "al_jax-fruits360-v2"  # v2: the paper's 52 varieties only.
_FOLDER_CACHE_FORMAT = "al_jax-folder-v1"
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "La")
_ORIGINS = {
    "mnist": "yann.lecun.com/exdb/mnist",
    "fashion_mnist": "github.com/zalandoresearch/fashion-mnist, folder data/fashion",
}


class DataError(ValueError):
  """Bad or missing data; the message is one line that says what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train/test split of one data set, images uint8 [N, H, W, C], labels int32 [N].

  `source` says where the arrays came from: one of SOURCES ("" when built by hand).
  """
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]
  source: str = ""

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def __repr__(self) -> str:
    return (f"Dataset(name={self.name!r}, train_images={self.train_images.shape}, "
            f"test_images={self.test_images.shape}, class_names={self.class_names}, "
            f"source={self.source!r})")


# ----------------------------------------------------------------------------- public


def load(name: str, data_dir: str | os.PathLike | None = None, *,
         classes: Sequence[str | int] | str | None = None,
         image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Loads a data set, optionally restricted (and relabeled 0..k-1) to `classes`.

  Args:
    name: one of DATASETS, or "tfds:NAME" for a TFDS image-classification data set
      (`al_jax.tfds_data`: needs tensorflow-datasets, and TensorFlow to download).
    data_dir: a local copy (the data set's folder or a root holding `<name>/`), or
      "sample" for the shipped sample; None means $AL_JAX_DATA_DIR, else the packaged
      MNIST (mnist), else a download into the cache. Required for "folder".
    classes: None for all classes, else class names (case-insensitive) or indices as
      strings, e.g. ("apple", "banana") or ("0", "1"); a "a,b" string is also accepted.
      Labels are renumbered 0..k-1 in the order given.
    image_size: side of the square fruits360, folder and tfds images (100 keeps the
      Fruits-360 originals). Ignored by mnist and fashion_mnist, which are always 28x28.
    test_fraction, seed: "folder" without a test/ folder and "tfds:NAME" without a test
      split only: the share of each class held out as the test set, and its seed.

  Returns:
    Dataset with uint8 images [N, H, W, C] (C=1 for MNIST-like, 3 for fruits360, 1 or 3
    for a folder) and int32 labels [N]; `source` says where they came from.
  """
  try:
    specs.get(name)
  except ValueError:
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}, "
                    f"{specs.TFDS_PREFIX}NAME") from None
  if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
      or image_size < 1:
    raise DataError(f"image_size must be a positive integer, got {image_size!r}")
  if isinstance(classes, str):
    classes = parse_classes(classes)
  if name == "folder":
    if data_dir is None:
      raise DataError("the folder data set needs --data_dir=DIR holding DIR/train/<class>/"
                      "*.jpg (and optionally DIR/test/<class>/...)")
    dataset = load_folder(data_dir, image_size=int(image_size),
                          test_fraction=test_fraction, seed=seed)
  elif name == "npy":
    from al_jax import npy_data  # pylint: disable=import-outside-toplevel  (imports data)
    dataset = npy_data.load(data_dir)
  elif name.startswith(specs.TFDS_PREFIX):
    from al_jax import tfds_data  # pylint: disable=import-outside-toplevel  (imports data)
    if not 0.0 < test_fraction < 1.0:
      raise DataError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    dataset = tfds_data.load_tfds(name, data_dir, image_size=int(image_size),
                                  test_fraction=test_fraction, seed=seed)
  else:
    folder, source = _find_data(name, data_dir)
    if name == "fruits360":
      dataset = _load_fruits_local(folder, int(image_size), source)
    else:
      dataset = _load_idx_local(name, folder, source)
  return dataset if classes is None else select_classes(dataset, classes)


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
  return Dataset(dataset.name, train_images, train_labels, test_images, test_labels, names,
                 dataset.source)


# ----------------------------------------------------------------------------- helpers


def _class_index(dataset: Dataset, cls: str | int) -> int:
  """A class name (case-insensitive; '_' for ' ') or an index -> index in class_names."""
  key = str(cls).strip().lower().replace("_", " ")
  names = [n.lower().replace("_", " ") for n in dataset.class_names]
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
  return f"the 4 IDX files {', '.join(IDX_FILES)} (from {_ORIGINS[name]})"


def _find_data(name: str, data_dir: str | os.PathLike | None) -> tuple[str, str]:
  """(folder with `name`'s files, source): data_dir, $AL_JAX_DATA_DIR, packaged, download."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or None
  if data_dir is not None:
    data_dir = os.fspath(data_dir)
    return (_dataset_folder(name, data_dir),
            "sample" if data_dir == "sample" else "data_dir")
  if name == "mnist" and all(os.path.isfile(os.path.join(PACKAGED_MNIST_DIR, f))
                             for f in IDX_FILES):
    return PACKAGED_MNIST_DIR, "packaged"
  try:
    if name == "fruits360":
      return download.fetch_fruits360(), "download"
    return download.fetch_idx(name), "download"
  except download.DownloadError as e:
    raise DataError(str(e)) from e
  except OSError as e:  # E.g. a read-only or full cache folder.
    raise DataError(f"cannot write the download cache {download.cache_dir()} "
                    f"({_one_line(e)}); set {CACHE_DIR_ENV} to a writable folder, or pass "
                    "--data_dir=DIR pointing at a local copy") from e


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


def _load_idx_local(name: str, folder: str, source: str) -> Dataset:
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


def _list_fruits(folder: str) -> dict[str, list[tuple[str, int, int]]]:
  """split -> [(relative path, size in bytes, category)], in sorted folder/file order."""
  missing = [s for s in FRUIT_SPLITS if not os.path.isdir(os.path.join(folder, s))]
  if missing:
    raise DataError(f"missing {' and '.join(m + '/' for m in missing)} in {folder}; "
                    f"expected {_expected_files('fruits360')}")
  listing = {}
  for split in FRUIT_SPLITS:
    split_dir = os.path.join(folder, split)
    entries = [(f"{split}/{variety}/{n}",
                os.path.getsize(os.path.join(split_dir, variety, n)), category)
               for variety, n, category in list_split(split_dir)]
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
  return os.path.join(download.cache_dir(),
                      f"fruits360_{image_size}px_{h.hexdigest()[:24]}.npz")


_SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def _read_cache(path: str, keys: Sequence[str] = _SPLIT_KEYS) -> dict[str, np.ndarray] | None:
  """The arrays `keys` of an .npz cache file, or None when it is missing or unreadable."""
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


def _decode_image(path: str, image_size: int, draft: bool = False) -> tuple[np.ndarray, bool]:
  """One image file -> (uint8 [S, S, 3] resized bilinearly, whether it is greyscale).

  draft: let the JPEG decoder shrink by 2, 4 or 8 first (fast for large photos).
  16-bit greyscale is scaled to 8 bits; EXIF rotation is applied; alpha is dropped.
  """
  try:
    with Image.open(path) as img:
      if draft and img.format == "JPEG":
        img.draft("RGB", (image_size, image_size))
      img = ImageOps.exif_transpose(img)
      grey = img.mode in _GREY_MODES
      if img.mode.startswith("I"):  # 16 or 32-bit integers: 0..65535 -> 0..255.
        img = Image.fromarray(np.clip(np.asarray(img, np.float64) / 257.0, 0, 255)
                              .astype(np.uint8))
      img = img.convert("RGB")
      if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
      return np.asarray(img, np.uint8), grey
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    raise DataError(f"cannot decode image {path} ({_one_line(e)}); replace or delete "
                    "this file") from e


def _decode_many(paths: list[str], image_size: int, skip_bad: bool = False,
                 draft: bool = False) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
  """Image files -> (uint8 [N, S, S, 3], greyscale bool [N], {index: error} of bad files).

  Decoded by a thread pool. skip_bad=False raises the first DataError; True records it
  (its row stays zero).
  """
  out = np.zeros((len(paths), image_size, image_size, 3), np.uint8)
  grey = np.zeros(len(paths), bool)
  errors = {}
  chunk = 64

  def work(start: int) -> None:
    for i, path in enumerate(paths[start:start + chunk], start):
      try:
        out[i], grey[i] = _decode_image(path, image_size, draft)
      except DataError as e:
        if not skip_bad:
          raise
        errors[i] = str(e)

  workers = min(8, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for future in [pool.submit(work, s) for s in range(0, len(paths), chunk)]:
      future.result()  # Re-raises the first DataError.
  return out, grey, errors


def _load_fruits_local(folder: str, image_size: int, source: str) -> Dataset:
  """Training/ and Test/ under `folder` -> Dataset [N, S, S, 3], cached as .npz.

  A file that does not decode stops the load: in a published data set it means a
  damaged copy, which should be replaced rather than silently shrunk.
  """
  listing = _list_fruits(folder)
  cache = _cache_path(folder, image_size, listing)
  arrays = _read_cache(cache)
  if arrays is None:
    count = sum(len(v) for v in listing.values())
    logging.info("decoding %d Fruits-360 images from %s at %dx%d into the cache %s",
                 count, folder, image_size, image_size, cache)
    arrays = {}
    for split, key in zip(FRUIT_SPLITS, ("train", "test")):
      entries = listing[split]
      paths = [os.path.join(folder, *rel.split("/")) for rel, _, _ in entries]
      arrays[f"{key}_images"] = _decode_many(paths, image_size)[0]
      arrays[f"{key}_labels"] = np.array([c for _, _, c in entries], np.int32)
    _write_cache(cache, arrays)
  return Dataset("fruits360", arrays["train_images"], arrays["train_labels"],
                 arrays["test_images"], arrays["test_labels"], FRUIT_CATEGORIES, source)


# -------------------------------------------------------------------- the user's folder


def load_folder(data_dir: str | os.PathLike, *, image_size: int = 32,
                test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """A folder of labeled images -> Dataset "folder", images uint8 [N, S, S, C].

  Layout: DIR/train/<class>/... and optionally DIR/test/<class>/... ("training"/"Test"
  and other capitalisations work too); images are .jpg, .jpeg, .png, .bmp or .webp
  files, also in subfolders of a class folder (symlinks followed). Class names are the
  train/ folder names, sorted. Every image is resized to S x S (bilinear, aspect not
  kept); C is 1 when every image is greyscale, else 3. Without test/, each class is
  split with a fixed seed: round(test_fraction * n) of its n images (at most n - 1) go
  to the test set. Decoded arrays are cached as .npz, keyed by every file's size,
  modification and change times and inode, taken when the folder is listed.

  An image file that changes while the images are read (written, truncated, replaced or
  deleted between the listing and the end of the decode) stops the load with one line
  and nothing is cached: the arrays would mix two states of the folder, and a job that
  skipped the file would get a different pool from its own resume once the file settles.

  A file that is not an image or does not decode is skipped, and one warning line
  counts them: one bad file among thousands of a user's photos should not stop a job,
  and the line says how many were lost. Hidden files (".*") are ignored. An empty class
  folder, test classes missing from train/, fewer than 2 classes or a symlink loop
  raise DataError.
  """
  root = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
  train_dir, test_dir = _folder_splits(root)
  train, ignored = _list_classes(train_dir)
  class_names = tuple(sorted(train))
  if len(class_names) < 2:
    raise DataError(f"{train_dir} holds {len(class_names)} class folder(s) "
                    f"({', '.join(class_names) or 'none'}); need at least 2, one folder "
                    "of images per class")
  if test_dir is not None:
    test, test_ignored = _list_classes(test_dir)
    ignored += test_ignored
    unknown = sorted(set(test) - set(class_names))
    if unknown:
      raise DataError(f"classes {', '.join(unknown)} are in {test_dir} but not in "
                      f"{train_dir}; rename or remove them")
  else:
    test = None
  train_files, train_labels = _flatten(train, class_names)
  if test is None:
    train_idx, test_idx = split_stratified(train_labels, test_fraction, seed)
    test_files, test_labels = [train_files[i] for i in test_idx], train_labels[test_idx]
    train_files, train_labels = [train_files[i] for i in train_idx], train_labels[train_idx]
  else:
    test_files, test_labels = _flatten(test, class_names)
  stamps = {path: _stamp(path) for path in train_files + test_files + ignored}
  cache = _folder_cache_path(root, image_size, test_fraction, seed, class_names,
                             train_files, test_files, ignored, stamps)
  arrays = _read_cache(cache, _SPLIT_KEYS + ("skipped",))
  if arrays is None:
    logging.info("decoding %d images of %d classes from %s at %dx%d into the cache %s",
                 len(train_files) + len(test_files), len(class_names), root, image_size,
                 image_size, cache)
    arrays = _decode_folder(train_files, train_labels, test_files, test_labels,
                            image_size, class_names, root, ignored)
    # Before anything is cached; a non-image file that changes does not matter.
    _check_unchanged(root, {p: stamps[p] for p in train_files + test_files})
    _write_cache(cache, arrays)
  skipped = [line.split("\t") for line in arrays["skipped"].tolist()]
  if skipped:
    _warn_skipped(root, skipped, len(train_files) + len(test_files) + len(ignored))
  return Dataset("folder", arrays["train_images"], arrays["train_labels"],
                 arrays["test_images"], arrays["test_labels"], class_names, "data_dir")


def split_stratified(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
  """labels int [N] -> sorted (train, test) indices; per class round(f * n), <= n - 1."""
  rng = np.random.default_rng(seed)
  test = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    k = min(int(round(test_fraction * len(members))), len(members) - 1)
    test.append(rng.permutation(members)[:k])
  test = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
  return np.setdiff1d(np.arange(len(labels)), test), test


def _folder_splits(root: str) -> tuple[str, str | None]:
  """(train folder, test folder or None) under root, names matched case-insensitively."""
  if not os.path.isdir(root):
    raise DataError(f"data folder {root} does not exist; pass --data_dir=DIR with "
                    "DIR/train/<class>/*.jpg (and optionally DIR/test/<class>/...)")
  found = {}
  for entry in sorted(os.listdir(root)):
    kind = {"train": "train", "training": "train", "test": "test",
            "testing": "test"}.get(entry.lower())
    if kind and kind not in found and os.path.isdir(os.path.join(root, entry)):
      found[kind] = os.path.join(root, entry)
  if "train" not in found:
    raise DataError(f"no train/ folder in {root}; expected {root}/train/<class>/*.jpg "
                    "(and optionally test/<class>/...)")
  return found["train"], found.get("test")


def _list_classes(split_dir: str) -> tuple[dict[str, list[str]], list[str]]:
  """({class folder name: sorted image paths}, paths of ignored non-image files)."""
  classes, ignored = {}, []
  for name, path, kind in _entries(split_dir):
    if kind == "dir":
      images = []
      _walk_images(path, frozenset([os.path.realpath(split_dir)]), images, ignored)
      if not images:
        raise DataError(f"class folder {path} holds no images (.jpg, .jpeg, .png, .bmp, "
                        ".webp); add some or remove the folder")
      classes[name] = images
    else:
      ignored.append(path)  # A file outside any class folder.
  return classes, ignored


def _entries(folder: str) -> list[tuple[str, str, str]]:
  """[(name, path, "dir" | "file" | "other")] of `folder`, sorted, hidden names left out."""
  try:
    with os.scandir(folder) as it:
      entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    out = []
    for e in entries:
      try:
        kind = "dir" if e.is_dir() else "file" if e.is_file() else "other"
      except OSError as err:
        if err.errno != errno.ELOOP:
          raise
        raise DataError(f"symlink loop at {e.path}; remove or fix that link") from err
      out.append((e.name, e.path, kind))
    return out
  except DataError:
    raise
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise DataError(f"symlink loop at {folder}; remove or fix that link") from e
    raise DataError(f"cannot read folder {folder} ({_one_line(e)})") from e


def _walk_images(folder: str, ancestors: frozenset[str], images: list[str],
                 ignored: list[str]) -> None:
  """Appends image files under `folder` (depth first, sorted) to images, others to ignored."""
  real = os.path.realpath(folder)
  if real in ancestors:
    raise DataError(f"symlink loop: {folder} leads back to {real}; remove or fix that link")
  for _, path, kind in _entries(folder):
    if kind == "dir":
      _walk_images(path, ancestors | {real}, images, ignored)
    elif kind == "file" and path.lower().endswith(IMAGE_SUFFIXES):
      images.append(path)
    else:
      ignored.append(path)


def _flatten(classes: dict[str, list[str]],
             class_names: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
  """{class: paths} -> (paths in class order, int32 labels [N])."""
  files, labels = [], []
  for label, name in enumerate(class_names):
    files += classes.get(name, [])
    labels += [label] * len(classes.get(name, []))
  return files, np.array(labels, np.int32)


def _stamp(path: str) -> tuple[int, int, int, int] | None:
  """(size, mtime_ns, ctime_ns, inode) of a file; None when it cannot be stat'ed."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _folder_cache_path(root: str, image_size: int, test_fraction: float, seed: int,
                       class_names: tuple[str, ...], train_files: list[str],
                       test_files: list[str], ignored: list[str],
                       stamps: dict[str, tuple[int, int, int, int] | None]) -> str:
  """Cache file named by a hash of the settings and every file's path and stamp."""
  h = hashlib.sha256(f"{_FOLDER_CACHE_FORMAT}\n{root}\n{image_size}\n{test_fraction}\n"
                     f"{seed}\n{class_names}\n".encode())
  for split, files in (("train", train_files), ("test", test_files), ("ignored", ignored)):
    for path in files:
      stamp = stamps[path]
      h.update(f"{split}\t{path}\t{stamp or 'unreadable'}\n".encode())
  return os.path.join(download.cache_dir(), f"folder_{image_size}px_{h.hexdigest()[:24]}.npz")


def _check_unchanged(root: str, stamps: dict[str, tuple[int, int, int, int] | None]) -> None:
  """DataError (one line) when a file's stamp differs from the one taken at listing."""
  changed = [(path, before, _stamp(path)) for path, before in stamps.items()]
  changed = [(path, before, after) for path, before, after in changed if after != before]
  if not changed:
    return
  path, before, after = changed[0]
  if after is None:
    how = "deleted"
  elif before is None:
    how = "appeared"
  elif after[3] != before[3]:
    how = "replaced"
  elif after[0] != before[0]:
    how = f"size {before[0]} -> {after[0]} bytes"
  else:
    how = "rewritten"
  raise DataError(f"{len(changed)} file(s) under {root} changed while the images were read "
                  f"(e.g. {os.path.relpath(path, root)}: {how}); nothing was cached: run "
                  "again once nothing writes to that folder")


def _decode_folder(train_files: list[str], train_labels: np.ndarray, test_files: list[str],
                   test_labels: np.ndarray, image_size: int, class_names: tuple[str, ...],
                   root: str, ignored: list[str]) -> dict[str, np.ndarray]:
  """Decodes both splits, drops bad files -> arrays for the cache (and "skipped")."""
  images, grey, errors = _decode_many(train_files + test_files, image_size, skip_bad=True,
                                      draft=True)
  files = train_files + test_files
  good = np.ones(len(files), bool)
  good[list(errors)] = False
  skipped = [f"{os.path.relpath(p, root)}\tnot an image" for p in ignored]
  skipped += [f"{os.path.relpath(files[i], root)}\t{_reason(errors[i])}"
              for i in sorted(errors)]
  labels = np.concatenate([train_labels, test_labels]).astype(np.int32)
  n_train = len(train_files)
  train_keep = good[:n_train]
  missing = [class_names[c] for c in range(len(class_names))
             if not np.any(train_labels[train_keep] == c)]
  if missing:
    raise DataError(f"no readable training images of class {', '.join(missing)} in {root}; "
                    "every file there failed to decode")
  channels = 1 if bool(np.all(grey[good])) else 3
  images = images[..., :channels]
  return {"train_images": images[:n_train][train_keep],
          "train_labels": labels[:n_train][train_keep],
          "test_images": images[n_train:][good[n_train:]],
          "test_labels": labels[n_train:][good[n_train:]],
          "skipped": np.array(skipped, dtype=str)}


def _reason(message: str) -> str:
  """"cannot decode image P (why); replace ..." -> "why"."""
  start, end = message.find(" ("), message.rfind(");")
  return message[start + 2:end] if 0 <= start < end else message


def _warn_skipped(root: str, skipped: list[list[str]], total: int) -> None:
  """One warning line counting the skipped files, with an example of each kind."""
  bad = [s for s in skipped if s[1] != "not an image"]
  other = [s for s in skipped if s[1] == "not an image"]
  parts = []
  if bad:
    parts.append(f"{len(bad)} unreadable (e.g. {bad[0][0]}: {bad[0][1]})")
  if other:
    parts.append(f"{len(other)} not images (e.g. {other[0][0]})")
  logging.warning("skipped %d of %d files under %s: %s", len(skipped), total, root,
                  "; ".join(parts))


def _one_line(error: BaseException) -> str:
  """First line of an exception's message (at most 200 characters)."""
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------- unlabeled images (label.py)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolder:
  """The images of one folder, unlabeled: images uint8 [N, S, S, C], and each one's
  path relative to `root` ("/"-separated), in sorted order."""
  root: str
  images: np.ndarray
  paths: tuple[str, ...]


def load_images(folder: str | os.PathLike, *, image_size: int = 32) -> ImageFolder:
  """Every image under `folder` (recursive, sorted, symlinks followed, hidden names
  left out), resized to S x S like `load_folder` and cached the same way; C is 1 when
  every image is greyscale, else 3. Files that are not images or do not decode are
  skipped, with one warning line that counts them."""
  root = os.path.abspath(os.path.expanduser(os.fspath(folder)))
  if not os.path.isdir(root):
    raise DataError(f"image folder {root} does not exist; pass --images=DIR, a folder "
                    "of .jpg, .jpeg, .png, .bmp or .webp files")
  files, ignored = [], []
  _walk_images(root, frozenset(), files, ignored)
  if not files:
    raise DataError(f"no images (.jpg, .jpeg, .png, .bmp, .webp) under {root}; "
                    "pass the folder that holds them")
  # class_names=() keeps these cache files apart from load_folder's (always >= 2).
  stamps = {path: _stamp(path) for path in files + ignored}
  cache = _folder_cache_path(root, image_size, 0.5, 0, (), files, [], ignored, stamps)
  arrays = _read_cache(cache, ("images", "kept", "skipped"))
  if arrays is None:
    logging.info("decoding %d images from %s at %dx%d into the cache %s", len(files), root,
                 image_size, image_size, cache)
    images, grey, errors = _decode_many(files, image_size, skip_bad=True, draft=True)
    kept = np.array([i for i in range(len(files)) if i not in errors], np.int64)
    if not kept.size:
      raise DataError(f"none of the {len(files)} images under {root} decodes; "
                      "check that they are image files")
    channels = 1 if bool(np.all(grey[kept])) else 3
    skipped = [f"{os.path.relpath(p, root)}\tnot an image" for p in ignored]
    skipped += [f"{os.path.relpath(files[i], root)}\t{_reason(errors[i])}"
                for i in sorted(errors)]
    arrays = {"images": images[kept][..., :channels], "kept": kept,
              "skipped": np.array(skipped, dtype=str)}
    _check_unchanged(root, {p: stamps[p] for p in files})  # as load_folder: before caching
    _write_cache(cache, arrays)
  skipped = [line.split("\t") for line in arrays["skipped"].tolist()]
  if skipped:
    _warn_skipped(root, skipped, len(files) + len(ignored))
  paths = tuple(os.path.relpath(files[i], root).replace(os.sep, "/")
                for i in arrays["kept"].tolist())
  return ImageFolder(root, arrays["images"], paths)
