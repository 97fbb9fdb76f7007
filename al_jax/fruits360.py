"""Facts about Fruits-360 shared by the local loader (`data`) and the TFDS builder.

One rule decides which images are "fruits360" wherever they come from (a local copy,
the downloaded archive, or TFDS): a variety folder is kept when it is one of the 52
PAPER_VARIETIES, and its label is the category named by the lowercase first word of
its folder name ("Apple Braeburn 1" -> apple). These are the varieties of the ten
categories of the paper in the 131-class releases (2019-2020); varieties added later
(e.g. "Apple 6", "Apple hit 1", "Pear 3", all from 2021) are skipped, so the current
release and an old one give the same classes. The local benchmark copy described in
docs/DATA.md holds exactly these 52 varieties; on it the older first-word-only rule
gives the same counts, but on a full 2024 release it would add the three 2021 varieties.

Folder names are compared by `variety_key`: lowercase, without a trailing " 1", since
the 2024 releases renamed e.g. "Banana" to "Banana 1".
"""

import os

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
