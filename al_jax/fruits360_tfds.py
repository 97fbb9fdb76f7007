"""TFDS builder for the 10-category Fruits-360 data set used by the paper.

Importing this module registers the TFDS data set "fruits360" (version 1.0.0). It is for
TFDS users; `al_jax.data` does not use it (it downloads without TensorFlow). It reads
a manually downloaded release from `manual_dir` (default
~/tensorflow_datasets/downloads/manual/, holding Training/ and Test/, or the release
folder containing them) and otherwise downloads the GitHub archive of the 100x100
release. Each variety folder is mapped to one of the ten paper categories by the
lowercase first word of its name ("Apple Braeburn 1" -> apple); only the 52 varieties
of the 131-class releases (2019-2020) are kept, so later additions such as "Apple 6",
"Apple hit 1" or "Pear 3" are skipped. The rule and the list live in `al_jax.fruits360`
and are the same ones the local loader uses. Unlike the benchmark copy described in
docs/DATA.md, which keeps 80% of each training folder, all training images of the
release are used. Requires TensorFlow for `tfds.load`.

Usage:
  import tensorflow_datasets as tfds
  from al_jax import fruits360_tfds  # registers "fruits360"
  train, test = tfds.load("fruits360", split=["train", "test"], as_supervised=True)
"""

import os

import tensorflow_datasets as tfds

from al_jax.fruits360 import (ARCHIVE_URL, FRUIT_CATEGORIES, HOMEPAGE, IMAGE_SHAPE,
                              SPLITS, find_release_root, list_split)
from al_jax.fruits360 import PAPER_VARIETIES  # noqa: F401  Re-exported.

_SPLIT_FOLDERS = dict(zip(("train", "test"), SPLITS))

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
            "image": tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=list(FRUIT_CATEGORIES)),
        }),
        supervised_keys=("image", "label"),
        homepage=HOMEPAGE,
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = None
    try:
      root = find_release_root(os.fspath(dl_manager.manual_dir))
    except (AssertionError, ValueError):  # No (or an empty) manual_dir.
      pass
    if root is None:
      root = find_release_root(os.fspath(dl_manager.download_and_extract(ARCHIVE_URL)))
    if root is None:
      raise ValueError(f"no Training/ and Test/ folders found in the Fruits-360 archive "
                       f"{ARCHIVE_URL}")
    return {split: self._generate_examples(os.path.join(root, folder))
            for split, folder in _SPLIT_FOLDERS.items()}

  def _generate_examples(self, split_dir: str):
    """Yields (key, {"image": path, "label": category}) in sorted folder/file order."""
    for variety, fname, label in list_split(split_dir):
      yield f"{variety}/{fname}", {
          "image": os.path.join(split_dir, variety, fname),
          "label": FRUIT_CATEGORIES[label],
      }
