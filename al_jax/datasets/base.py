"""What every data source shares: the `Dataset` type, `DataError`, the source registry
and `load`, the cache, atomic writes, class selection and the stratified split.

A data source is one module that calls `register(Source(...))` when it is imported: its
name (or a family's prefix such as "tfds:"), its loader, its `DatasetSpec` (the facts
the models and the protocols need) and, when it can read its pool from where it is
stored without holding it in memory, `rows` (the pool can then be streamed,
`al_jax.streaming`). `load(name, ...)` looks the name up when it is called, so a source
registered from a user's own script is found as a built-in one is.
"""

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from al_jax.files import atomic_write  # noqa: F401  (re-exported)

DATA_DIR_ENV = "AL_JAX_DATA_DIR"
CACHE_DIR_ENV = "AL_JAX_CACHE_DIR"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(_PACKAGE_DIR, "sample_data")
SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


class DataError(ValueError):
  """Bad or missing data; the message is one line that says what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Facts about one data set. mean/std are per channel, in [0, 1] pixel units."""
  name: str
  class_names: tuple[str, ...]
  channels: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  model: str                    # a key of al_jax.models.MODELS, or "auto": by channels
  batch_size: int
  learning_rate: float
  momentum: float
  weight_decay: float
  epochs: int                   # reselect protocol
  select_batches: int           # reselect protocol
  batch_aggregate: str          # reselect protocol: "sum" or "mean" of a batch's scores
  native_size: int | None = None  # fixed image side (MNIST 28); None: resized to image_size

  def model_for(self, image_shape: tuple[int, ...]) -> str:
    """The model name for images [H, W, C] or feature vectors [D]: "auto" picks by
    channels (grey: MNIST CNN), and the MLP for vectors."""
    if self.model != "auto":
      return self.model
    if len(image_shape) == 1:
      return "mlp"
    return "mnist_cnn" if image_shape[-1] == 1 else "fruits_net3"

  def image_shape(self, image_size: int) -> tuple[int, int, int]:
    """[H, W, C] of the images the loader returns for `--image_size=image_size`."""
    side = self.native_size or image_size
    return (side, side, self.channels)


def own_data_spec(name: str) -> DatasetSpec:
  """The spec of a data set whose classes and channels come from the data (a folder, an
  npy folder, a TFDS set): the model by channels, pixels mapped to [-1, 1], and the
  optimiser and reselect defaults of Fruits-360."""
  return DatasetSpec(name, (), channels=0, mean=(0.5,), std=(0.5,), model="auto",
                     batch_size=64, learning_rate=0.005, momentum=0.9, weight_decay=8e-4,
                     epochs=20, select_batches=20, batch_aggregate="mean")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train/test split of one data set, images uint8 [N, H, W, C] (or feature vectors,
  float32 [N, D]), labels int32 [N].

  `source` says where the arrays came from, in one word: "data_dir", "sample",
  "packaged", "download" or "tfds" ("" when built by hand).
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

  def pool_rows(self) -> Any:
    """The pool images read where the source stores them, by rows (`read(start, stop)`,
    `take(rows)`; e.g. an npy file on disk), or None when they are only in memory."""
    source = _lookup(self.name)
    if source is None or source.rows is None:
      return None
    return source.rows(self.train_images)

  def __repr__(self) -> str:
    return (f"Dataset(name={self.name!r}, train_images={self.train_images.shape}, "
            f"test_images={self.test_images.shape}, class_names={self.class_names}, "
            f"source={self.source!r})")


# ----------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Source:
  """One data source.

  name: the data set's name, or a family's prefix ending in ":" ("tfds:"), which then
    serves every "PREFIX:NAME".
  load: (name, data_dir, *, image_size, test_fraction, seed) -> Dataset.
  spec: the data set's facts (for a family, renamed to each member).
  rows: pool images [N, H, W, C] -> a reader of their rows where they are stored
    (`read(start, stop)`, `take(rows)`), or None for images it does not store; a source
    with rows has its pool streamed by default (`stream_pool=auto`).
  help: a family's description in the list of names.
  """
  name: str
  load: Callable[..., Dataset]
  spec: DatasetSpec
  rows: Callable[[np.ndarray], Any] | None = None
  help: str = ""

  @property
  def streams(self) -> bool:
    """Whether the source can give its pool's rows from disk (streamed by default)."""
    return self.rows is not None


_SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
  """Makes `source` loadable by its name everywhere (`load`, `--dataset=NAME`)."""
  if source.name.endswith(":") and not source.help:
    raise ValueError(f"the family {source.name!r} needs a help line, e.g. "
                     "'a TFDS image-classification data set'")
  _SOURCES[source.name] = source
  return source


def _lookup(name: str) -> Source | None:
  """The source registered as `name`, else the family of "PREFIX:NAME", else None."""
  if not isinstance(name, str):
    return None
  if name in _SOURCES and not name.endswith(":"):
    return _SOURCES[name]
  prefix, colon, rest = name.partition(":")
  return _SOURCES.get(prefix + colon) if colon and rest else None


def names() -> tuple[str, ...]:
  """The registered names, in registration order; a family as its prefix ("tfds:")."""
  return tuple(_SOURCES)


def names_help() -> str:
  """The registered names for messages: "mnist, ..., tfds:NAME (a TFDS ...)"."""
  plain = [n for n in _SOURCES if not n.endswith(":")]
  families = [f"{n}NAME ({s.help})" for n, s in _SOURCES.items() if n.endswith(":")]
  return ", ".join(plain + families)


def source(name: str) -> Source:
  """The source of data set `name`; DataError when none is registered."""
  found = _lookup(name)
  if found is None:
    raise DataError(f"unknown data set {name!r}; choose one of {names_help()}")
  return found


def spec(name: str) -> DatasetSpec:
  """The spec of data set `name` (a family's spec under the member's name)."""
  found = source(name).spec
  return found if found.name == name else dataclasses.replace(found, name=name)


def load(name: str, data_dir: str | os.PathLike | None = None, *,
         classes: Sequence[str | int] | str | None = None,
         image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Loads a data set, optionally restricted (and relabeled 0..k-1) to `classes`.

  Args:
    name: a registered name (`names()`), e.g. "mnist" or "tfds:cifar10".
    data_dir: where the source reads (a local copy, "sample" for the shipped sample,
      TFDS's data_dir); None: the source's default (e.g. $AL_JAX_DATA_DIR, a download).
    classes: None for all classes, else class names (case-insensitive) or indices as
      strings, e.g. ("apple", "banana") or ("0", "1"); a "a,b" string is also accepted.
      Labels are renumbered 0..k-1 in the order given.
    image_size: side of the square images of sources that resize.
    test_fraction, seed: for a source without a test split, the share of each class
      held out as the test set, and its seed.

  Returns:
    Dataset with uint8 images [N, H, W, C] and int32 labels [N].
  """
  found = source(name)
  if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
      or image_size < 1:
    raise DataError(f"image_size must be a positive integer, got {image_size!r}")
  if isinstance(classes, str):
    classes = parse_classes(classes)
  dataset = found.load(name, data_dir, image_size=int(image_size),
                       test_fraction=test_fraction, seed=seed)
  return dataset if classes is None else select_classes(dataset, classes)


def check_test_fraction(test_fraction: float) -> None:
  """DataError unless 0 < test_fraction < 1 (for sources that split off a test set)."""
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")


# ------------------------------------------------------------------ classes and splits


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
  names_kept = tuple(dataset.class_names[i] for i in indices)
  empty = [n for k, n in enumerate(names_kept) if not np.any(train_labels == k)]
  if empty:
    raise DataError(f"no training images of class {', '.join(empty)} in this copy of "
                    f"{dataset.name}; choose other classes or use a complete copy")
  return Dataset(dataset.name, train_images, train_labels, test_images, test_labels,
                 names_kept, dataset.source)


def _class_index(dataset: Dataset, cls: str | int) -> int:
  """A class name (case-insensitive; '_' for ' ') or an index -> index in class_names."""
  key = str(cls).strip().lower().replace("_", " ")
  lowered = [n.lower().replace("_", " ") for n in dataset.class_names]
  if key in lowered:
    return lowered.index(key)
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


# ------------------------------------------------------------ local copies and the cache


def local_folder(name: str, data_dir: str | os.PathLike | None, markers: Sequence[str],
                 expected: str) -> tuple[str, str] | None:
  """(folder with `name`'s files, "data_dir" or "sample") from data_dir, else
  $AL_JAX_DATA_DIR; None when neither is set. The folder is data_dir itself when it
  holds one of `markers`, else data_dir/<name>; DataError (naming `expected`) if neither."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or None
  if data_dir is None:
    return None
  data_dir = os.fspath(data_dir)
  root = SAMPLE_DIR if data_dir == "sample" else os.path.abspath(
      os.path.expanduser(data_dir))
  if not os.path.isdir(root):
    raise DataError(f"data folder {root} does not exist; pass --data_dir=DIR (or set "
                    f"{DATA_DIR_ENV}) pointing at a folder with {expected}")
  source_name = "sample" if data_dir == "sample" else "data_dir"
  if any(os.path.exists(os.path.join(root, m)) for m in markers):
    return root, source_name
  sub = os.path.join(root, name)
  if os.path.isdir(sub):
    return sub, source_name
  raise DataError(f"no {name} data in {root} or {sub}: expected {expected}")


def cache_dir() -> str:
  """$AL_JAX_CACHE_DIR, else ~/.cache/al_jax."""
  return os.environ.get(CACHE_DIR_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "al_jax")


def read_cache(path: str, keys: Sequence[str] = SPLIT_KEYS) -> dict[str, np.ndarray] | None:
  """The arrays `keys` of an .npz cache file, or None when it is missing or unreadable."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in keys}
  except Exception:  # pylint: disable=broad-except
    return None  # Missing or unreadable cache: decode again.


def write_cache(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Writes arrays as an .npz cache file atomically; best effort (an OSError is ignored)."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_write(path, "wb") as f:
      np.savez(f, **arrays)
  except OSError:
    pass


def one_line(error: BaseException) -> str:
  """First line of an exception's message (at most 200 characters)."""
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= 200 else text[:197] + "..."
