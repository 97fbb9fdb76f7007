"""The labeling page's pool: the images of an --images folder as the model's inputs,
with their hidden labels in simulation mode (a train/<class>/ layout) and, with
--features=FILE.npz, each image's feature vector."""

import dataclasses
import hashlib
import os

import numpy as np

from al_jax import datasets
from al_jax.datasets import base
from al_jax.labeling import images as images_lib

SAMPLE = "sample"  # --images=sample: the packaged Fruits-360 sample, unlabeled
SAMPLE_IMAGES = os.path.join(datasets.SAMPLE_DIR, "fruits360", "Training")


@dataclasses.dataclass(frozen=True)
class Images:
  """The pool (and in simulation mode its hidden labels [N] and a test set, as the
  model's inputs); `vectors` [N, D] the pool's feature vectors when the model trains on
  those instead of the images."""
  pool: images_lib.ImageFolder
  classes: tuple[str, ...]
  hidden: np.ndarray | None = None        # int32 [N], -1 for a folder of no class
  test: tuple[np.ndarray, np.ndarray] | None = None
  vectors: np.ndarray | None = None

  @property
  def simulation(self) -> bool:
    return self.hidden is not None

  @property
  def inputs(self) -> np.ndarray:
    """What the model takes: images uint8 [N, S, S, C], or the vectors float32 [N, D]."""
    return self.pool.images if self.vectors is None else self.vectors


def _class_key(name: str) -> str:
  return name.strip().lower().replace("_", " ")


def open_images(images: str, classes: tuple[str, ...] | None, image_size: int,
                features: str | None = None) -> Images:
  """--images (a folder, "sample", or a train/<class>/ layout) -> Images; `features`,
  --features=FILE.npz: the model's inputs are the images' vectors from it."""
  root = SAMPLE_IMAGES if images == SAMPLE else os.path.abspath(os.path.expanduser(images))
  if not os.path.isdir(root):
    raise base.DataError(f"image folder {root} does not exist; pass --images=DIR")
  table = images_lib.load_features(features) if features else None
  vectors = lambda folder: None if table is None else table.of(folder, root)
  has_train = any(e.lower() in ("train", "training") and os.path.isdir(os.path.join(root, e))
                  for e in os.listdir(root))
  if not has_train:
    if not classes or len(classes) < 2:
      raise base.DataError("name at least 2 classes, e.g. --classes=cat,dog")
    pool = images_lib.load_images(root, image_size=image_size)
    return Images(pool, classes, vectors=vectors(pool))
  train_dir, test_dir = datasets.folder.split_folders(root)
  pool = images_lib.load_images(train_dir, image_size=image_size)
  folders = sorted({p.split("/")[0] for p in pool.paths if "/" in p})
  classes = classes or tuple(folders)
  if len(classes) < 2:
    raise base.DataError(f"{train_dir} holds {len(classes)} class folder(s); need at least 2")
  lookup = {_class_key(c): i for i, c in enumerate(classes)}
  hidden_of = lambda paths: np.array(
      [lookup.get(_class_key(p.split("/")[0]), -1) if "/" in p else -1 for p in paths],
      np.int32)
  hidden = hidden_of(pool.paths)
  if not np.any(hidden >= 0):
    raise base.DataError(f"no folder of {train_dir} is one of the classes {', '.join(classes)}; "
                     f"its folders are {', '.join(folders[:10])}")
  test = None
  if test_dir is not None:
    found = images_lib.load_images(test_dir, image_size=image_size)
    labels = hidden_of(found.paths)
    keep = labels >= 0
    if table is not None and np.any(keep):
      test = (vectors(found)[keep], labels[keep])
    elif found.images.shape[-1] == pool.images.shape[-1] and np.any(keep):
      test = (found.images[keep], labels[keep])
  return Images(pool, tuple(classes), hidden, test, vectors(pool))


def images_argument(images: str) -> str:
  """--images as the workdir records it: "sample", else an absolute path."""
  return images if images == SAMPLE else os.path.abspath(os.path.expanduser(images))


def fingerprint(paths: tuple[str, ...]) -> str:
  """A hash of the pool's file list (relative paths, in pool order)."""
  return hashlib.sha256("\n".join(paths).encode()).hexdigest()[:32]
