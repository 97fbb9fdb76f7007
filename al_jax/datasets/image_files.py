"""Image files on disk: listing a folder's images, decoding them to uint8 arrays, and
noticing files that change while they are read. Shared by the folder and Fruits-360
sources and the labeling page's unlabeled images (`al_jax.labeling.images`).
"""

import concurrent.futures
import errno
import hashlib
import os

from absl import logging
import numpy as np
from PIL import Image, ImageOps

from al_jax.datasets import base

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_FOLDER_CACHE_FORMAT = "al_jax-folder-v1"
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "La")


def decode_image(path: str, image_size: int, draft: bool = False) -> tuple[np.ndarray, bool]:
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
    raise base.DataError(f"cannot decode image {path} ({base.one_line(e)}); replace or "
                         "delete this file") from e


def decode_many(paths: list[str], image_size: int, skip_bad: bool = False,
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
        out[i], grey[i] = decode_image(path, image_size, draft)
      except base.DataError as e:
        if not skip_bad:
          raise
        errors[i] = str(e)

  workers = min(8, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for future in [pool.submit(work, s) for s in range(0, len(paths), chunk)]:
      future.result()  # Re-raises the first DataError.
  return out, grey, errors


def entries(folder: str) -> list[tuple[str, str, str]]:
  """[(name, path, "dir" | "file" | "other")] of `folder`, sorted, hidden names left out."""
  try:
    with os.scandir(folder) as it:
      found = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    out = []
    for e in found:
      try:
        kind = "dir" if e.is_dir() else "file" if e.is_file() else "other"
      except OSError as err:
        if err.errno != errno.ELOOP:
          raise
        raise base.DataError(f"symlink loop at {e.path}; remove or fix that link") from err
      out.append((e.name, e.path, kind))
    return out
  except base.DataError:
    raise
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise base.DataError(f"symlink loop at {folder}; remove or fix that link") from e
    raise base.DataError(f"cannot read folder {folder} ({base.one_line(e)})") from e


def walk_images(folder: str, ancestors: frozenset[str], images: list[str],
                ignored: list[str]) -> None:
  """Appends image files under `folder` (depth first, sorted) to images, others to ignored."""
  real = os.path.realpath(folder)
  if real in ancestors:
    raise base.DataError(f"symlink loop: {folder} leads back to {real}; remove or fix "
                         "that link")
  for _, path, kind in entries(folder):
    if kind == "dir":
      walk_images(path, ancestors | {real}, images, ignored)
    elif kind == "file" and path.lower().endswith(IMAGE_SUFFIXES):
      images.append(path)
    else:
      ignored.append(path)


def stamp(path: str) -> tuple[int, int, int, int] | None:
  """(size, mtime_ns, ctime_ns, inode) of a file; None when it cannot be stat'ed."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def cache_path(root: str, image_size: int, test_fraction: float, seed: int,
               class_names: tuple[str, ...], train_files: list[str], test_files: list[str],
               ignored: list[str], stamps: dict[str, tuple[int, int, int, int] | None]) -> str:
  """Cache file named by a hash of the settings and every file's path and stamp."""
  h = hashlib.sha256(f"{_FOLDER_CACHE_FORMAT}\n{root}\n{image_size}\n{test_fraction}\n"
                     f"{seed}\n{class_names}\n".encode())
  for split, files in (("train", train_files), ("test", test_files), ("ignored", ignored)):
    for path in files:
      h.update(f"{split}\t{path}\t{stamps[path] or 'unreadable'}\n".encode())
  return os.path.join(base.cache_dir(), f"folder_{image_size}px_{h.hexdigest()[:24]}.npz")


def check_unchanged(root: str, stamps: dict[str, tuple[int, int, int, int] | None]) -> None:
  """DataError (one line) when a file's stamp differs from the one taken at listing."""
  changed = [(path, before, stamp(path)) for path, before in stamps.items()]
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
  raise base.DataError(f"{len(changed)} file(s) under {root} changed while the images were "
                       f"read (e.g. {os.path.relpath(path, root)}: {how}); nothing was "
                       "cached: run again once nothing writes to that folder")


def skipped_lines(root: str, ignored: list[str], files: list[str],
                  errors: dict[int, str]) -> np.ndarray:
  """The files left out, as cached: str ["<path relative to root>\t<why>"]."""
  lines = [f"{os.path.relpath(p, root)}\tnot an image" for p in ignored]
  lines += [f"{os.path.relpath(files[i], root)}\t{_reason(errors[i])}" for i in sorted(errors)]
  return np.array(lines, dtype=str)


def _reason(message: str) -> str:
  """"cannot decode image P (why); replace ..." -> "why"."""
  start, end = message.find(" ("), message.rfind(");")
  return message[start + 2:end] if 0 <= start < end else message


def warn_skipped(root: str, lines: np.ndarray, total: int) -> None:
  """One warning line counting the skipped files (`skipped_lines`), with an example of
  each kind; nothing when none was skipped."""
  skipped = [line.split("\t") for line in lines.tolist()]
  if not skipped:
    return
  bad = [s for s in skipped if s[1] != "not an image"]
  other = [s for s in skipped if s[1] == "not an image"]
  parts = []
  if bad:
    parts.append(f"{len(bad)} unreadable (e.g. {bad[0][0]}: {bad[0][1]})")
  if other:
    parts.append(f"{len(other)} not images (e.g. {other[0][0]})")
  logging.warning("skipped %d of %d files under %s: %s", len(skipped), total, root,
                  "; ".join(parts))
