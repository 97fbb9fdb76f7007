"""Fruits-360: the rule that decides which images are "fruits360", its loader, its
download, and a TFDS builder, all from one rule.

The rule, wherever the images come from (a local copy, the downloaded archive, or
TFDS): a variety folder is kept when it is one of the 52 PAPER_VARIETIES, and its label
is the category named by the lowercase first word of its folder name ("Apple Braeburn
1" -> apple). These are the varieties of the ten categories of the paper in the
131-class releases (2019-2020); varieties added later (e.g. "Apple 6", "Apple hit 1",
"Pear 3", all from 2021) are skipped, so the current release and an old one give the
same classes. The local benchmark copy described in docs/DATA.md holds exactly these
52 varieties; on it the older first-word-only rule gives the same counts, but on a full
2024 release it would add the three 2021 varieties. Folder names are compared by
`variety_key`: lowercase, without a trailing " 1", since the 2024 releases renamed e.g.
"Banana" to "Banana 1".

Loading: Training/<Variety>/*.jpg and Test/<Variety>/*.jpg (100x100 release) from
`data_dir`, else $AL_JAX_DATA_DIR, else the GitHub archive downloaded into the cache
once (only the paper's varieties extracted, the zip's CRC-32 of every member checked);
images are resized to image_size (100 keeps the originals) and the decoded arrays
cached as .npz. The optimiser and reselect defaults are the paper's authors' (lr 0.005,
momentum 0.9, weight decay 8e-4, batch 64, 20 epochs of the 20 best batches, averaged).

TFDS users: `tfds_builder()` defines (once) and returns the TFDS builder "fruits360"
(version 1.0.0), which registers it with TFDS; it needs tensorflow-datasets, and
TensorFlow for `tfds.load`:

  import tensorflow_datasets as tfds
  from al_jax.datasets import fruits360
  fruits360.tfds_builder()  # registers "fruits360"
  train, test = tfds.load("fruits360", split=["train", "test"], as_supervised=True)
"""

import functools
import hashlib
import os
import shutil
import tempfile
import zipfile

from absl import logging
import numpy as np

from al_jax.datasets import base, download, image_files

FRUIT_CATEGORIES = ("apple", "tomato", "potato", "banana", "pear", "pineapple", "pepper",
                    "strawberry", "onion", "plum")
SPLITS = ("Training", "Test")
IMAGE_SHAPE = (100, 100, 3)
# The GitHub archive of the 100x100 release (Training/, Test/ under one top folder).
ARCHIVE_URL = "https://github.com/fruits-360/fruits-360-100x100/archive/refs/heads/main.zip"
HOMEPAGE = "https://github.com/fruits-360"
_JPEG_SUFFIXES = (".jpg", ".jpeg")

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


def variety_key(folder: str) -> str:
  """Folder name without a trailing " 1", lowercase: "Banana 1" and "Banana" agree."""
  name = " ".join(folder.split()).lower()
  return name[:-2] if name.endswith(" 1") else name


_PAPER_KEYS = frozenset(variety_key(v) for v in PAPER_VARIETIES)


def fruit_category(variety: str) -> int | None:
  """Folder name -> index in FRUIT_CATEGORIES by its first word ("Pear Abate 1" -> 4)."""
  words = variety.split()
  first = words[0].lower() if words else ""
  return FRUIT_CATEGORIES.index(first) if first in FRUIT_CATEGORIES else None


def variety_label(variety: str) -> int | None:
  """The one rule: label of a variety folder, or None when it is not a paper variety."""
  if variety_key(variety) not in _PAPER_KEYS:
    return None
  return fruit_category(variety)


def list_split(split_dir: str) -> list[tuple[str, str, int]]:
  """Kept images of one split folder: [(variety, file name, label)], sorted by both.

  Only .jpg/.jpeg files of the PAPER_VARIETIES folders; other folders are skipped.
  """
  entries = []
  for variety in sorted(os.listdir(split_dir)):
    label = variety_label(variety)
    variety_dir = os.path.join(split_dir, variety)
    if label is None or not os.path.isdir(variety_dir):
      continue
    names = sorted(n for n in os.listdir(variety_dir)
                   if n.lower().endswith(_JPEG_SUFFIXES)
                   and os.path.isfile(os.path.join(variety_dir, n)))
    entries += [(variety, n, label) for n in names]
  return entries


def find_release_root(path: str, depth: int = 3) -> str | None:
  """The folder under `path` (itself or up to `depth` levels down) with Training/, Test/."""
  if all(os.path.isdir(os.path.join(path, s)) for s in SPLITS):
    return path
  if depth == 0 or not os.path.isdir(path):
    return None
  for child in sorted(os.listdir(path)):
    found = find_release_root(os.path.join(path, child), depth - 1)
    if found is not None:
      return found
  return None


# ------------------------------------------------------------------------------ loading

_CACHE_FORMAT = "al_jax-fruits360-v2"  # v2: the paper's 52 varieties only.
_EXPECTED = ("Training/<Variety>/*.jpg and Test/<Variety>/*.jpg from the Fruits-360 "
             "100x100 release (github.com/fruits-360)")
ARCHIVE_ZIP = "fruits-360-100x100-main.zip"


def load(name: str, data_dir: str | os.PathLike | None, *, image_size: int,
         **_) -> base.Dataset:
  """Training/ and Test/ from data_dir, $AL_JAX_DATA_DIR or a download -> Dataset
  [N, S, S, 3], cached as .npz.

  A file that does not decode stops the load: in a published data set it means a
  damaged copy, which should be replaced rather than silently shrunk.
  """
  found = base.local_folder(name, data_dir, SPLITS, _EXPECTED)
  if found is None:
    found = download.into_cache(fetch), "download"
  folder, source = found
  listing = _list_fruits(folder)
  cache = _cache_path(folder, image_size, listing)
  arrays = base.read_cache(cache)
  if arrays is None:
    count = sum(len(v) for v in listing.values())
    logging.info("decoding %d Fruits-360 images from %s at %dx%d into the cache %s",
                 count, folder, image_size, image_size, cache)
    arrays = {}
    for split, key in zip(SPLITS, ("train", "test")):
      entries = listing[split]
      paths = [os.path.join(folder, *rel.split("/")) for rel, _, _ in entries]
      arrays[f"{key}_images"] = image_files.decode_many(paths, image_size)[0]
      arrays[f"{key}_labels"] = np.array([c for _, _, c in entries], np.int32)
    base.write_cache(cache, arrays)
  return base.Dataset("fruits360", arrays["train_images"], arrays["train_labels"],
                 arrays["test_images"], arrays["test_labels"], FRUIT_CATEGORIES, source)




def _list_fruits(folder: str) -> dict[str, list[tuple[str, int, int]]]:
  """split -> [(relative path, size in bytes, category)], in sorted folder/file order."""
  missing = [s for s in SPLITS if not os.path.isdir(os.path.join(folder, s))]
  if missing:
    raise base.DataError(f"missing {' and '.join(m + '/' for m in missing)} in {folder}; "
                         f"expected {_EXPECTED}")
  listing = {}
  for split in SPLITS:
    split_dir = os.path.join(folder, split)
    entries = [(f"{split}/{variety}/{n}",
                os.path.getsize(os.path.join(split_dir, variety, n)), category)
               for variety, n, category in list_split(split_dir)]
    if not entries:
      raise base.DataError(f"no images of {', '.join(FRUIT_CATEGORIES)} in {split_dir}; "
                           f"expected {_EXPECTED}")
    listing[split] = entries
  return listing


def _cache_path(folder: str, image_size: int,
                listing: dict[str, list[tuple[str, int, int]]]) -> str:
  """Cache file named by a hash of the folder, image size and every (file, size)."""
  h = hashlib.sha256(f"{_CACHE_FORMAT}\n{folder}\n{image_size}\n".encode())
  for split in SPLITS:
    for rel, size, category in listing[split]:
      h.update(f"{rel}\t{size}\t{category}\n".encode())
  return os.path.join(base.cache_dir(),
                      f"fruits360_{image_size}px_{h.hexdigest()[:24]}.npz")


# ----------------------------------------------------------------------------- download


def fetch() -> str:
  """Downloads and extracts (once) the Fruits-360 release -> folder with Training/, Test/."""
  folder = os.path.join(base.cache_dir(), "fruits360")
  release = os.path.join(folder, "release")
  if os.path.isdir(release):  # Only ever created by an atomic rename of a full extract.
    return release
  archive = os.path.join(folder, ARCHIVE_ZIP)
  url = download.source_url("fruits360", ARCHIVE_ZIP, ARCHIVE_URL)
  with download.lock(archive):
    if os.path.isdir(release):
      return release
    download.fetch(url, archive, locked=True)  # No fixed sha256: the zip's CRC-32s.
    try:
      _extract_paper_varieties(archive, release)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
      os.remove(archive)
      raise download.DownloadError(f"the Fruits-360 archive from {url} is corrupt "
                                   f"({base.one_line(e)}); it was deleted, run again to "
                                   "download it anew") from e
    os.remove(archive)
  return release


def _member_target(member: str) -> tuple[str, str, str] | None:
  """"<top>/Training/Apple Braeburn 1/0_100.jpg" -> (split, variety, file) if kept."""
  parts = member.split("/")
  if len(parts) < 3 or parts[-3] not in SPLITS:
    return None
  split, variety, filename = parts[-3:]
  if (filename in ("", ".", "..") or variety in ("", ".", "..")
      or not filename.lower().endswith((".jpg", ".jpeg"))
      or variety_label(variety) is None):
    return None
  return split, variety, filename


def _extract_paper_varieties(archive: str, release: str) -> None:
  """Writes the kept JPEGs of `archive` to a temp folder, then renames it to `release`."""
  with zipfile.ZipFile(archive) as zf:
    members = [(info, _member_target(info.filename)) for info in zf.infolist()]
    members = [(info, target) for info, target in members if target is not None]
    if set(SPLITS) - {split for _, (split, _, _) in members}:
      raise zipfile.BadZipFile("no Training/ and Test/ images of the paper's varieties")
    logging.info("extracting %d Fruits-360 images of the paper's varieties (%.1f MB) to %s",
                 len(members), sum(i.file_size for i, _ in members) / 1e6, release)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(release), prefix="release.tmp-")
    try:
      for info, (split, variety, filename) in members:
        os.makedirs(os.path.join(tmp, split, variety), exist_ok=True)
        with zf.open(info) as src, open(os.path.join(tmp, split, variety, filename),
                                         "wb") as dst:
          shutil.copyfileobj(src, dst)  # zipfile checks each member's CRC-32 at its end.
      os.replace(tmp, release)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise


# --------------------------------------------------------------------------------- TFDS

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



@functools.cache
def tfds_builder() -> type:
  """The TFDS builder class "fruits360" (defined, and so registered with TFDS, once)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  (optional)
  split_folders = dict(zip(("train", "test"), SPLITS))

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
              for split, folder in split_folders.items()}

    def _generate_examples(self, split_dir: str):
      """Yields (key, {"image": path, "label": category}) in sorted folder/file order."""
      for variety, fname, label in list_split(split_dir):
        yield f"{variety}/{fname}", {
            "image": os.path.join(split_dir, variety, fname),
            "label": FRUIT_CATEGORIES[label],
        }

  return Fruits360


base.register(base.Source("fruits360", load, base.DatasetSpec(
    "fruits360", FRUIT_CATEGORIES, channels=3, mean=(0.4914, 0.4822, 0.4465),
    std=(0.2023, 0.1994, 0.2010), model="fruits_net3", batch_size=64,
    learning_rate=0.005, momentum=0.9, weight_decay=8e-4, epochs=20, select_batches=20,
    batch_aggregate="mean")))
