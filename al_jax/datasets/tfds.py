"""Any TensorFlow Datasets image-classification set as uint8 arrays: `--dataset=tfds:NAME`.

`load("tfds:cifar10", data_dir)` reads a TFDS data set whose features include `image` (an
Image) and `label` (a ClassLabel), e.g. cifar10, mnist, beans, or a data set built with
`tfds build` (NAME may carry a config and version, "NAME/CONFIG:1.2.3"). The train
split is the pool and the test split the test set; without a test split a fixed,
seeded, stratified share `test_fraction` of each class of train is held out (as for a
folder). Images are resized to image_size x image_size (bilinear) unless already that
size; C is 1 when every image is greyscale, else 3. Class names are the label's names.

Reading needs `tensorflow-datasets` but not TensorFlow: examples are read by random
access from TFDS's array_record files (`builder.as_data_source`) and decoded with PIL.
Preparing a data set that is not on disk yet (TFDS's download and encode) runs TFDS's
own code, which needs TensorFlow: `pip install ".[tfds]"` brings both. TFDS prepares
into a temporary folder and renames it when complete, so a failed download leaves
nothing that a later run would trust. Data live in TFDS's data_dir (`--data_dir`, else
$TFDS_DATA_DIR, else ~/tensorflow_datasets); the decoded arrays are cached as .npz under
AL_JAX_CACHE_DIR, keyed by the prepared files' names, sizes and times.
"""

import difflib
import hashlib
import importlib.util
import os
import re

from absl import logging
import numpy as np
from PIL import Image

from al_jax.datasets import base

PREFIX = "tfds:"
SOURCE = "tfds"
_CACHE_FORMAT = "al_jax-tfds-v1"
_INSTALL = 'pip install ".[tfds]"'


def load(name: str, data_dir: str | os.PathLike | None = None, *, image_size: int = 32,
         test_fraction: float = 0.2, seed: int = 0) -> base.Dataset:
  """"tfds:NAME" -> Dataset (name "tfds:NAME", source "tfds"), images uint8 [N, S, S, C].

  Args:
    name: "tfds:" followed by a TFDS name, e.g. "tfds:cifar10" or "tfds:mnist:3.0.1".
    data_dir: TFDS's data folder (None: TFDS's default).
    image_size: S, the side of the square images returned.
    test_fraction, seed: the held-out share of each class, and its seed, when the data
      set has no test split.
  """
  base.check_test_fraction(test_fraction)
  tfds_name = name[len(PREFIX):]
  if data_dir is not None and os.fspath(data_dir) == "sample":
    raise base.DataError(f"the shipped sample holds no TFDS data; drop --data_dir for "
                         f"{name} (TFDS's own folder) or point it at a TFDS data_dir")
  tfds = _import_tfds(name)
  builder = _builder(tfds, name, tfds_name, data_dir)
  _check_features(tfds, name, builder.info.features)
  _prepare(name, builder)
  # A prepared data set knows its splits; under tfds.testing.mock_data they are unknown
  # and any split name is served.
  splits = list(builder.info.splits) or ["train", "test"]
  if "train" not in splits:
    raise base.DataError(f"{name} has no train split (it has {', '.join(splits)}); "
                         "al_jax needs train (and optionally test)")
  sources = {s: _data_source(name, builder, s) for s in ("train", "test") if s in splits}
  class_names = tuple(builder.info.features["label"].names)
  cache = _cache_path(name, builder, image_size, test_fraction, seed,
                      {s: len(src) for s, src in sources.items()})
  arrays = base.read_cache(cache)
  if arrays is None:
    logging.info("decoding %s (%s) at %dx%d into the cache %s", name,
                 ", ".join(f"{s} {len(src)}" for s, src in sources.items()), image_size,
                 image_size, cache)
    arrays = _decode_splits(name, sources, len(class_names), image_size, test_fraction,
                            seed)
    base.write_cache(cache, arrays)
  return base.Dataset(name, arrays["train_images"], arrays["train_labels"],
                      arrays["test_images"], arrays["test_labels"], class_names, SOURCE)


def _import_tfds(name: str):
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise base.DataError(f"--dataset={name} needs tensorflow-datasets, which is not "
                         f"installed ({base.one_line(e)}); {_INSTALL}") from e
  return tfds


def _builder(tfds, name: str, tfds_name: str, data_dir):
  """TFDS's builder of tfds_name, asking for array_record files when it prepares."""
  kwargs = {"file_format": "array_record"}
  if data_dir is not None:
    kwargs["data_dir"] = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
  try:
    return tfds.builder(tfds_name, **kwargs)
  except tfds.core.registered.DatasetNotFoundError as e:
    base_name = re.split(r"[/:]", tfds_name)[0]
    near = _near_names(tfds, base_name)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise base.DataError(f"unknown TFDS data set {base_name!r} in {name}; {hint}see "
                         "https://www.tensorflow.org/datasets/catalog (image "
                         "classification) for the names") from e
  except (ValueError, AssertionError, KeyError, OSError) as e:  # Bad config or version.
    reason = re.sub(r'^Failed to construct dataset "[^"]*", builder_kwargs "[^"]*": ', "",
                    str(e))
    raise base.DataError(f"cannot open {name} ({base.one_line(ValueError(reason))}); "
                         "check the name, config and version") from e


def _near_names(tfds, base_name: str) -> list[str]:
  try:
    names = tfds.list_builders(with_community_datasets=False)
  except Exception:  # pylint: disable=broad-except
    return []  # Only a hint.
  return difflib.get_close_matches(base_name, names, n=3, cutoff=0.75)


def _check_features(tfds, name: str, features) -> None:
  """DataError unless features hold an `image` Image and a `label` ClassLabel."""
  keys = list(features.keys()) if hasattr(features, "keys") else []
  if not ("image" in keys and isinstance(features["image"], tfds.features.Image) and
          "label" in keys and isinstance(features["label"], tfds.features.ClassLabel)):
    have = ", ".join(f"{k} ({type(features[k]).__name__})" for k in keys) or \
        type(features).__name__
    raise base.DataError(f"{name} is not an image classification data set of the kind "
                         f"al_jax reads: it has features {have}; it needs 'image' (Image) "
                         "and 'label' (ClassLabel)")


def tensorflow_available() -> bool:
  """Whether TensorFlow is importable (TFDS needs it to prepare, not to read)."""
  return importlib.util.find_spec("tensorflow") is not None


def _prepare(name: str, builder) -> None:
  """Downloads and prepares the data set unless it is on disk already."""
  if builder.is_prepared():
    return
  if not tensorflow_available():
    raise base.DataError(f"{name} is not prepared in {builder.data_dir}, and preparing it "
                         f"(TFDS's download) needs TensorFlow: {_INSTALL}; or build it "
                         f"elsewhere (`tfds build {name[len(PREFIX):]} "
                         "--file_format=array_record`) and pass that --data_dir")
  logging.info("downloading and preparing %s into %s", name, builder.data_dir)
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except  Network, checksum, manual step...
    raise base.DataError(f"downloading or preparing {name} failed ({type(e).__name__}: "
                         f"{base.one_line(e)}); check the network, or prepare it with "
                         "`tfds build` and pass that --data_dir") from e


def _data_source(name: str, builder, split: str):
  """Random-access examples of one split (array_record; no TensorFlow)."""
  try:
    return builder.as_data_source(split=split)
  except NotImplementedError as e:  # Prepared as tfrecord, which needs TensorFlow.
    raise base.DataError(f"{name} in {builder.data_dir} is stored as "
                         f"{builder.info.file_format.value}, which al_jax cannot read "
                         "without TensorFlow; prepare it again as array_record (`tfds build "
                         f"{name[len(PREFIX):]} --file_format=array_record "
                         "--data_dir=OTHER`) and pass --data_dir=OTHER") from e


def _cache_path(name: str, builder, image_size: int, test_fraction: float, seed: int,
                lengths: dict[str, int]) -> str:
  """Cache file named by a hash of the settings and every prepared file's stamp."""
  split_settings = "" if "test" in lengths else f"{test_fraction}\n{seed}\n"
  h = hashlib.sha256(f"{_CACHE_FORMAT}\n{name}\n{builder.data_dir}\n{image_size}\n"
                     f"{split_settings}{sorted(lengths.items())}\n".encode())
  folder = os.fspath(builder.data_dir)
  try:
    files = sorted(os.listdir(folder))
  except OSError:
    files = []
  for file in files:
    st = os.stat(os.path.join(folder, file))
    h.update(f"{file}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
  safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name[len(PREFIX):])
  return os.path.join(base.cache_dir(),
                      f"tfds_{safe}_{image_size}px_{h.hexdigest()[:24]}.npz")


def _decode_splits(name: str, sources: dict, num_classes: int, image_size: int,
                   test_fraction: float, seed: int) -> dict[str, np.ndarray]:
  """Reads and resizes every example -> the cache's arrays (train and test)."""
  images, grey, labels = {}, {}, {}
  for split, source in sources.items():
    images[split], grey[split], labels[split] = _read_split(name, split, source,
                                                            num_classes, image_size)
  if "test" not in sources:
    train_idx, test_idx = base.split_stratified(labels["train"], test_fraction, seed)
    for arrays in (images, grey, labels):
      arrays["test"], arrays["train"] = arrays["train"][test_idx], arrays["train"][train_idx]
  channels = 1 if all(np.all(g) for g in grey.values()) else 3
  return {"train_images": images["train"][..., :channels], "train_labels": labels["train"],
          "test_images": images["test"][..., :channels], "test_labels": labels["test"]}


def _read_split(name: str, split: str, source, num_classes: int,
                image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One split -> (uint8 [N, S, S, 3], greyscale bool [N], int32 labels [N])."""
  n = len(source)
  images = np.zeros((n, image_size, image_size, 3), np.uint8)
  grey = np.zeros(n, bool)
  labels = np.zeros(n, np.int32)
  for i in range(n):
    try:
      example = source[i]  # (tfds.testing.mock_data serves one key at a time.)
    except Exception as e:  # pylint: disable=broad-except  A damaged record or image.
      raise base.DataError(f"cannot read example {i} of {name} {split} ({type(e).__name__}: "
                           f"{base.one_line(e)}); prepare the data set again") from e
    images[i], grey[i] = _square_rgb(name, example["image"], image_size)
    labels[i] = int(example["label"])
  if n and not 0 <= labels.min() <= labels.max() < num_classes:
    raise base.DataError(f"{name} {split} holds label {int(labels.max())} but the label "
                         f"feature has {num_classes} classes; prepare the data set again")
  return images, grey, labels


def _square_rgb(name: str, image: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
  """An image [H, W] or [H, W, C] (C 1-4, uint8 or uint16) -> (uint8 [S, S, 3], grey)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or not 1 <= image.shape[-1] <= 4:
    raise base.DataError(f"{name} holds an image of shape {image.shape}; al_jax reads "
                         "images [H, W, C] with 1 to 4 channels")
  if image.dtype == np.uint16:
    image = (image // 257).astype(np.uint8)  # 0..65535 -> 0..255.
  elif image.dtype != np.uint8:
    raise base.DataError(f"{name} holds {image.dtype} images; al_jax reads uint8 or uint16")
  grey = image.shape[-1] <= 2  # Grey, or grey and alpha.
  rgb = np.repeat(image[..., :1], 3, -1) if grey else image[..., :3]
  if rgb.shape[:2] != (size, size):
    rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
  return rgb, grey


base.register(base.Source(PREFIX, load, base.own_data_spec(PREFIX),
                          help="a TFDS image-classification data set"))
