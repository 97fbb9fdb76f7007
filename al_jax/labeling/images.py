"""The labeling page's images: every image of a folder, unlabeled, decoded and cached
like a folder data set (`al_jax.datasets.folder`); and, when the model trains on
feature vectors computed elsewhere, each image's vector (`Features`).
"""

import dataclasses
import os

from absl import logging
import numpy as np
from PIL import Image, ImageOps

from al_jax import files
from al_jax.datasets import base, image_files


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolder:
  """The images of one folder, unlabeled: images uint8 [N, S, S, C], and each one's
  path relative to `root` ("/"-separated), in sorted order; `unreadable` the image files
  left out because they do not decode, as (path, why)."""
  root: str
  images: np.ndarray
  paths: tuple[str, ...]
  unreadable: tuple[tuple[str, str], ...] = ()


def load_images(folder: str | os.PathLike, *, image_size: int = 32) -> ImageFolder:
  """Every image under `folder` (recursive, sorted, symlinks followed, hidden names
  left out), resized to S x S like a folder data set and cached the same way; C is 1 when
  every image is greyscale, else 3. Files that are not images or do not decode are
  skipped, with one warning line that counts them; those with an image suffix are
  `unreadable`."""
  root = os.path.abspath(os.path.expanduser(os.fspath(folder)))
  if not os.path.isdir(root):
    raise base.DataError(f"image folder {root} does not exist; pass --images=DIR, a folder "
                         "of .jpg, .jpeg, .png, .bmp or .webp files")
  files, ignored = [], []
  image_files.walk_images(root, frozenset(), files, ignored)
  if not files:
    raise base.DataError(f"no images (.jpg, .jpeg, .png, .bmp, .webp) under {root}; "
                         "pass the folder that holds them")
  # class_names=() keeps these cache files apart from a folder data set's (always >= 2).
  stamps = {path: image_files.stamp(path) for path in files + ignored}
  cache = image_files.cache_path(root, image_size, 0.5, 0, (), files, [], ignored, stamps)
  arrays = base.read_cache(cache, ("images", "kept", "skipped"))
  if arrays is None:
    logging.info("decoding %d images from %s at %dx%d into the cache %s", len(files), root,
                 image_size, image_size, cache)
    images, grey, errors = image_files.decode_many(files, image_size, skip_bad=True, draft=True)
    kept = np.array([i for i in range(len(files)) if i not in errors], np.int64)
    if not kept.size:
      raise base.DataError(f"none of the {len(files)} images under {root} decodes; "
                           "check that they are image files")
    channels = 1 if bool(np.all(grey[kept])) else 3
    arrays = {"images": images[kept][..., :channels], "kept": kept,
              "skipped": image_files.skipped_lines(root, ignored, files, errors)}
    # As for a folder data set: checked before anything is cached.
    image_files.check_unchanged(root, {p: stamps[p] for p in files})
    base.write_cache(cache, arrays)
  image_files.warn_skipped(root, arrays["skipped"], len(files) + len(ignored))
  paths = tuple(os.path.relpath(files[i], root).replace(os.sep, "/")
                for i in arrays["kept"].tolist())
  unreadable = tuple((path.replace(os.sep, "/"), _short(why, os.path.join(root, path)))
                     for path, why in (line.split("\t", 1)
                                       for line in arrays["skipped"].tolist())
                     if why != "not an image")
  return ImageFolder(root, arrays["images"], paths, unreadable)


def _short(why: str, path: str) -> str:
  """A decoder's message without the file's path ("cannot identify image file")."""
  return why.replace(f"'{path}'", "").replace(path, "").strip(" :") or why


def thumbnail(source: str, path: str, size: int) -> str:
  """`path`, a JPEG at most size x size of the image file `source` (upright, RGB), made
  on first use (atomically) and kept."""
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with Image.open(source) as img:
      img = ImageOps.exif_transpose(img).convert("RGB")
      img.thumbnail((size, size))
      with files.atomic_write(path, "wb") as f:
        img.save(f, "JPEG", quality=90)
  return path


@dataclasses.dataclass(frozen=True, eq=False)
class Features:
  """--features=FILE.npz: one float32 vector per image file, `vectors` [N, D], and
  `rows` each file's row, by its path relative to the --images folder ("/"-separated).
  The file holds the arrays "paths" (str [N]) and "features" (float [N, D]), e.g.
  np.savez(FILE, paths=np.array(paths), features=vectors)."""
  path: str
  vectors: np.ndarray
  rows: dict[str, int]

  def of(self, folder: ImageFolder, images_root: str) -> np.ndarray:
    """The vectors [len(folder.paths), D] of a folder's images, in its order (`folder`
    under `images_root`, the --images folder); DataError, one line, for an image
    without one."""
    prefix = os.path.relpath(folder.root, images_root).replace(os.sep, "/")
    keys = [p if prefix == "." else f"{prefix}/{p}" for p in folder.paths]
    missing = [k for k in keys if k not in self.rows]
    if missing:
      raise base.DataError(
          f"{self.path} has no vector for {len(missing)} of the {len(keys)} images under "
          f"{folder.root} (first: {missing[0]}); give one per image file, its path "
          "relative to the --images folder")
    return self.vectors[[self.rows[k] for k in keys]]


def load_features(path: str) -> Features:
  """Reads --features=FILE.npz (see `Features`); DataError, one line, when it is
  missing, unreadable, or its arrays do not match."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise base.DataError(f"--features={path} does not exist; pass a .npz file holding "
                         "paths [N] and features [N, D]")
  try:
    with np.load(path, allow_pickle=False) as arrays:
      paths, vectors = arrays["paths"], arrays["features"]
  except (ValueError, OSError, KeyError) as error:
    raise base.DataError(f"{path} is not an .npz file holding the arrays paths [N] and "
                         f"features [N, D] ({str(error).splitlines()[0][:120]}); write it "
                         "with np.savez(FILE, paths=..., features=...)") from None
  if paths.ndim != 1 or paths.dtype.kind != "U" or vectors.ndim != 2 or \
      vectors.shape[0] != paths.shape[0] or vectors.dtype.kind != "f":
    raise base.DataError(f"{path} holds paths {paths.dtype} {list(paths.shape)} and "
                         f"features {vectors.dtype} {list(vectors.shape)}; expected str [N] "
                         "and float [N, D]")
  if not np.all(np.isfinite(vectors)):
    raise base.DataError(f"{path} holds NaN or infinite features; every vector must be "
                         "finite")
  rows = {p.replace(os.sep, "/"): i for i, p in enumerate(paths.tolist())}
  return Features(path, np.ascontiguousarray(vectors, np.float32), rows)
