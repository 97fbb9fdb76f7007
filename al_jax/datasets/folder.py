"""The user's own labeled images: a folder DIR/train/<class>/... (`--dataset=folder`).

See `load` for the layout. Classes come from the folder names and the model from the
channels (`base.own_data_spec`).
"""

import os

from absl import logging
import numpy as np

from al_jax.datasets import base, image_files


def load(name: str, data_dir: str | os.PathLike | None, *, image_size: int = 32,
         test_fraction: float = 0.2, seed: int = 0) -> base.Dataset:
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
  del name
  if data_dir is None:
    raise base.DataError("the folder data set needs --data_dir=DIR holding "
                         "DIR/train/<class>/*.jpg (and optionally DIR/test/<class>/...)")
  root = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
  base.check_test_fraction(test_fraction)
  train_dir, test_dir = split_folders(root)
  train, ignored = _list_classes(train_dir)
  class_names = tuple(sorted(train))
  if len(class_names) < 2:
    raise base.DataError(f"{train_dir} holds {len(class_names)} class folder(s) "
                         f"({', '.join(class_names) or 'none'}); need at least 2, one folder "
                         "of images per class")
  if test_dir is not None:
    test, test_ignored = _list_classes(test_dir)
    ignored += test_ignored
    unknown = sorted(set(test) - set(class_names))
    if unknown:
      raise base.DataError(f"classes {', '.join(unknown)} are in {test_dir} but not in "
                           f"{train_dir}; rename or remove them")
  else:
    test = None
  train_files, train_labels = _flatten(train, class_names)
  if test is None:
    train_idx, test_idx = base.split_stratified(train_labels, test_fraction, seed)
    test_files, test_labels = [train_files[i] for i in test_idx], train_labels[test_idx]
    train_files, train_labels = [train_files[i] for i in train_idx], train_labels[train_idx]
  else:
    test_files, test_labels = _flatten(test, class_names)
  stamps = {path: image_files.stamp(path) for path in train_files + test_files + ignored}
  cache = image_files.cache_path(root, image_size, test_fraction, seed, class_names,
                             train_files, test_files, ignored, stamps)
  arrays = base.read_cache(cache, base.SPLIT_KEYS + ("skipped",))
  if arrays is None:
    logging.info("decoding %d images of %d classes from %s at %dx%d into the cache %s",
                 len(train_files) + len(test_files), len(class_names), root, image_size,
                 image_size, cache)
    arrays = _decode_folder(train_files, train_labels, test_files, test_labels,
                            image_size, class_names, root, ignored)
    # Before anything is cached; a non-image file that changes does not matter.
    image_files.check_unchanged(root, {p: stamps[p] for p in train_files + test_files})
    base.write_cache(cache, arrays)
  image_files.warn_skipped(root, arrays["skipped"],
                           len(train_files) + len(test_files) + len(ignored))
  return base.Dataset("folder", arrays["train_images"], arrays["train_labels"],
                 arrays["test_images"], arrays["test_labels"], class_names, "data_dir")


def split_folders(root: str) -> tuple[str, str | None]:
  """(train folder, test folder or None) under root, names matched case-insensitively."""
  if not os.path.isdir(root):
    raise base.DataError(f"data folder {root} does not exist; pass --data_dir=DIR with "
                         "DIR/train/<class>/*.jpg (and optionally DIR/test/<class>/...)")
  found = {}
  for entry in sorted(os.listdir(root)):
    kind = {"train": "train", "training": "train", "test": "test",
            "testing": "test"}.get(entry.lower())
    if kind and kind not in found and os.path.isdir(os.path.join(root, entry)):
      found[kind] = os.path.join(root, entry)
  if "train" not in found:
    raise base.DataError(f"no train/ folder in {root}; expected {root}/train/<class>/*.jpg "
                         "(and optionally test/<class>/...)")
  return found["train"], found.get("test")


def _list_classes(split_dir: str) -> tuple[dict[str, list[str]], list[str]]:
  """({class folder name: sorted image paths}, paths of ignored non-image files)."""
  classes, ignored = {}, []
  for name, path, kind in image_files.entries(split_dir):
    if kind == "dir":
      images = []
      image_files.walk_images(path, frozenset([os.path.realpath(split_dir)]), images, ignored)
      if not images:
        raise base.DataError(f"class folder {path} holds no images (.jpg, .jpeg, .png, .bmp, "
                             ".webp); add some or remove the folder")
      classes[name] = images
    else:
      ignored.append(path)  # A file outside any class folder.
  return classes, ignored


def _flatten(classes: dict[str, list[str]],
             class_names: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
  """{class: paths} -> (paths in class order, int32 labels [N])."""
  files, labels = [], []
  for label, name in enumerate(class_names):
    files += classes.get(name, [])
    labels += [label] * len(classes.get(name, []))
  return files, np.array(labels, np.int32)


def _decode_folder(train_files: list[str], train_labels: np.ndarray, test_files: list[str],
                   test_labels: np.ndarray, image_size: int, class_names: tuple[str, ...],
                   root: str, ignored: list[str]) -> dict[str, np.ndarray]:
  """Decodes both splits, drops bad files -> arrays for the cache (and "skipped")."""
  images, grey, errors = image_files.decode_many(train_files + test_files, image_size,
                                                 skip_bad=True, draft=True)
  files = train_files + test_files
  good = np.ones(len(files), bool)
  good[list(errors)] = False
  labels = np.concatenate([train_labels, test_labels]).astype(np.int32)
  n_train = len(train_files)
  train_keep = good[:n_train]
  missing = [class_names[c] for c in range(len(class_names))
             if not np.any(train_labels[train_keep] == c)]
  if missing:
    raise base.DataError(f"no readable training images of class {', '.join(missing)} in {root}; "
                         "every file there failed to decode")
  channels = 1 if bool(np.all(grey[good])) else 3
  images = images[..., :channels]
  return {"train_images": images[:n_train][train_keep],
          "train_labels": labels[:n_train][train_keep],
          "test_images": images[n_train:][good[n_train:]],
          "test_labels": labels[n_train:][good[n_train:]],
          "skipped": image_files.skipped_lines(root, ignored, files, errors)}


base.register(base.Source("folder", load, base.own_data_spec("folder")))
