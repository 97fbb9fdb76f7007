"""TFDS builder for the 10-category Fruits-360 data set used by the paper.

Importing this module registers the TFDS data set "fruits360" (version 1.0.0); it is
imported lazily by `al_jax.data` only when no local copy is given. The builder reads
a manually downloaded release from `manual_dir` (default
~/tensorflow_datasets/downloads/manual/, holding Training/ and Test/, or the release
folder containing them) and otherwise downloads the GitHub archive of the 100x100
release. Each variety folder is mapped to one of the ten paper categories by the
lowercase first word of its name ("Apple Braeburn 1" -> apple); only the 52 varieties
of the 131-class releases (2019-2020) are kept, so later additions such as "Apple 6",
"Apple hit 1" or "Pear 3" are skipped. Unlike the local copy documented in
shared/data/README.md, which keeps 80% of each training folder, all training images of
the release are used. Requires TensorFlow for `tfds.load`.

Usage:
  import tensorflow_datasets as tfds
  from al_jax import fruits360_tfds  # registers "fruits360"
  train, test = tfds.load("fruits360", split=["train", "test"], as_supervised=True)
"""

import os

import tensorflow_datasets as tfds

from al_jax.data import FRUIT_CATEGORIES, fruit_category

_URL = "https://github.com/fruits-360/fruits-360-100x100/archive/refs/heads/main.zip"
_HOMEPAGE = "https://github.com/fruits-360"
_IMAGE_SHAPE = (100, 100, 3)
_SPLIT_FOLDERS = {"train": "Training", "test": "Test"}

# The varieties of the ten categories in the 131-class releases (folder names of the
# 2024 release; older releases lack the " 1" suffix on some of them).
PAPER_VARIETIES = (
    "Apple Braeburn 1", "Apple Crimson Snow 1", "Apple Golden 1", "Apple Golden 2",
    "Apple Golden 3", "Apple Granny Smith 1", "Apple Pink Lady 1", "Apple Red 1",
    "Apple Red 2", "Apple Red 3", "Apple Red Delicious 1", "Apple Red Yellow 1",
    "Apple Red Yellow 2",
    "Tomato 1", "Tomato 2", "Tomato 3", "Tomato 4", "Tomato Cherry Red 1",
    "Tomato Heart 1", "Tomato Maroon 1", "Tomato Yellow 1", "Tomato not Ripened 1",
    "Potato Red 1", "Potato Red Washed 1", "Potato Sweet 1", "Potato White 1",
    "Banana 1", "Banana Lady Finger 1", "Banana Red 1",
    "Pear 1", "Pear 2", "Pear Abate 1", "Pear Forelle 1", "Pear Kaiser 1",
    "Pear Monster 1", "Pear Red 1", "Pear Stone 1", "Pear Williams 1",
    "Pineapple 1", "Pineapple Mini 1",
    "Pepper Green 1", "Pepper Orange 1", "Pepper Red 1", "Pepper Yellow 1",
    "Strawberry 1", "Strawberry Wedge 1",
    "Onion Red 1", "Onion Red Peeled 1", "Onion White 1",
    "Plum 1", "Plum 2", "Plum 3",
)

_CITATION = """\
@article{muresan2018fruit,
  title   = {Fruit recognition from images using deep learning},
  author  = {Muresan, Horea and Oltean, Mihai},
  journal = {Acta Universitatis Sapientiae, Informatica},
  volume  = {10},
  number  = {1},
  pages   = {26--42},
  year    = {2018},
}
"""

_DESCRIPTION = """\
Fruits-360 (Mihai Oltean, 2017-): 100x100 RGB photos of single fruits and vegetables
on a white background. This builder keeps the ten categories of the active-learning
paper (apple, tomato, potato, banana, pear, pineapple, pepper, strawberry, onion, plum),
each the union of that fruit's varieties, with the release's Training/Test split.
"""


def _variety_key(folder: str) -> str:
  """Folder name without a trailing " 1", lowercase: "Banana 1" and "Banana" agree."""
  name = folder.strip().lower()
  return name[:-2] if name.endswith(" 1") else name


_PAPER_KEYS = frozenset(_variety_key(v) for v in PAPER_VARIETIES)


def _find_release_root(path: str, depth: int = 3) -> str | None:
  """The folder under `path` (itself or up to `depth` levels down) with Training/, Test/."""
  if all(os.path.isdir(os.path.join(path, s)) for s in _SPLIT_FOLDERS.values()):
    return path
  if depth == 0 or not os.path.isdir(path):
    return None
  for child in sorted(os.listdir(path)):
    found = _find_release_root(os.path.join(path, child), depth - 1)
    if found is not None:
      return found
  return None


class Fruits360(tfds.core.GeneratorBasedBuilder):
  """Fruits-360 100x100, ten categories by the first word of the variety folder."""

  name = "fruits360"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 10 categories, 52 varieties."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Optional. Put a Fruits-360 100x100 release (the folders Training/ and Test/, e.g. from
  https://github.com/fruits-360/fruits-360-100x100 or Kaggle moltean/fruits) in
  `manual_dir`; when it is empty the GitHub archive is downloaded instead.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=_IMAGE_SHAPE, encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=list(FRUIT_CATEGORIES)),
        }),
        supervised_keys=("image", "label"),
        homepage=_HOMEPAGE,
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = None
    try:
      root = _find_release_root(os.fspath(dl_manager.manual_dir))
    except (AssertionError, ValueError):  # No (or an empty) manual_dir.
      pass
    if root is None:
      root = _find_release_root(os.fspath(dl_manager.download_and_extract(_URL)))
    if root is None:
      raise ValueError(f"no Training/ and Test/ folders found in the Fruits-360 archive "
                       f"{_URL}")
    return {split: self._generate_examples(os.path.join(root, folder))
            for split, folder in _SPLIT_FOLDERS.items()}

  def _generate_examples(self, split_dir: str):
    """Yields (key, {"image": path, "label": category}) in sorted folder/file order."""
    for variety in sorted(os.listdir(split_dir)):
      category = fruit_category(variety)
      variety_dir = os.path.join(split_dir, variety)
      if (category is None or _variety_key(variety) not in _PAPER_KEYS
          or not os.path.isdir(variety_dir)):
        continue
      for fname in sorted(os.listdir(variety_dir)):
        if fname.lower().endswith((".jpg", ".jpeg")):
          yield f"{variety}/{fname}", {
              "image": os.path.join(variety_dir, fname),
              "label": FRUIT_CATEGORIES[category],
          }
