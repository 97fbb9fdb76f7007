"""A data set as .npy files in one folder, so that its pool can be read from disk.

`--dataset=npy --data_dir=DIR`, where DIR holds

  pool_images.npy   uint8 [N, H, W, C] (C = 1 or 3, C order), or feature vectors
                    float32 [N, D] (e.g. a pretrained backbone's embeddings; the
                    model is then the MLP, `models.FeatureMLP`, on them as they are)
  pool_labels.npy   integer [N], 0..K-1
  test_images.npy   as the pool's: uint8 [M, H, W, C] or float32 [M, D]
  test_labels.npy   integer [M], 0..K-1
  classes.txt       K lines, one class name each

`load` opens the pool images as a read-only memory map (nothing is read yet); a job
that streams its pool (`al_jax.streaming`; the default here, since this source gives
its pool's rows: `rows`) then reads them in row ranges with `PoolFile`, by positioned
reads rather than through the map, so the pages read stay in the page cache and never
count as the process's memory. `write` exports any loaded data set, `tile_to` repeating
its pool up to a given size (the scale runs), written block by block, so neither needs
the pool in memory.
"""

import os
import shutil

import numpy as np

from al_jax.datasets import base

FILES = ("pool_images.npy", "pool_labels.npy", "test_images.npy", "test_labels.npy",
         "classes.txt")
_BLOCK_BYTES = 64 << 20  # rows written per block when tiling: about 64 MB
_CHECKED_ROWS = 100_000  # rows of feature vectors checked for NaN at load (read once)


class PoolFile:
  """The rows of a C-ordered .npy file (uint8 [N, H, W, C] or float32 [N, D]), read on
  demand.

  `read(start, stop)` -> [stop - start, H, W, C], zeros past the end; `take(rows)` ->
  [len(rows), H, W, C] for pool indices (zeros for those >= N).
  """

  def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype=np.uint8):
    self.path, self.offset, self.dtype = path, offset, np.dtype(dtype)
    self.num_rows, self.image_shape = shape[0], tuple(shape[1:])
    self.row_bytes = int(np.prod(self.image_shape)) * self.dtype.itemsize
    self._fd = None

  @classmethod
  def of(cls, images: np.memmap) -> "PoolFile":
    """The file behind a memory-mapped array from `load` (np.load(mmap_mode="r"))."""
    return cls(images.filename, images.offset, images.shape, images.dtype)

  def _read_into(self, out: np.ndarray, first_row: int) -> None:
    if self._fd is None:
      self._fd = os.open(self.path, os.O_RDONLY)
    view, position = memoryview(out).cast("B"), self.offset + first_row * self.row_bytes
    while view.nbytes:
      got = os.preadv(self._fd, [view], position)
      if got <= 0:
        raise base.DataError(f"{self.path} ended early (row {first_row}); it changed "
                             "or was cut short while the job ran: write it again")
      view, position = view[got:], position + got

  def read(self, start: int, stop: int) -> np.ndarray:
    out = np.zeros((stop - start, *self.image_shape), self.dtype)
    end = min(stop, self.num_rows)
    if end > start:
      self._read_into(out[:end - start], start)
    return out

  def take(self, rows: np.ndarray) -> np.ndarray:
    out = np.zeros((len(rows), *self.image_shape), self.dtype)
    for i, row in enumerate(rows):
      if row < self.num_rows:
        self._read_into(out[i], int(row))
    return out

  def __del__(self):
    if self._fd is not None:
      os.close(self._fd)


def rows(images: np.ndarray) -> PoolFile | None:
  """The npy file behind pool images from `load` (a memory map of the whole file), read
  by rows; None for images in memory (e.g. a subset of the pool)."""
  if isinstance(images, np.memmap) and images.flags.c_contiguous and \
      images.offset + images.nbytes == os.path.getsize(images.filename):  # the whole file
    return PoolFile.of(images)
  return None


def load(name: str, folder: str | os.PathLike | None, **_) -> base.Dataset:
  """The data set in `folder` (the layout above); pool images memory-mapped, checked
  shapes, types and labels. DataError, one line, for anything missing or inconsistent."""
  del name
  if folder is None:
    raise base.DataError("--dataset=npy needs --data_dir=DIR holding "
                         f"{', '.join(FILES)} (see docs/DATA.md)")
  folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
  missing = [f for f in FILES if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    raise base.DataError(f"{folder} lacks {', '.join(missing)}; an npy data set holds "
                         f"{', '.join(FILES)} (experiments/export_npy.py writes them)")
  arrays = {name: _open(os.path.join(folder, name + ".npy"))
            for name in ("pool_images", "pool_labels", "test_images", "test_labels")}
  with open(os.path.join(folder, "classes.txt"), encoding="utf-8") as f:
    classes = tuple(line.strip() for line in f if line.strip())
  for split in ("pool", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    where = os.path.join(folder, f"{split}_images.npy")
    is_image = images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] in (1, 3)
    if not (is_image or (images.dtype == np.float32 and images.ndim == 2)):
      raise base.DataError(f"{where} holds {images.dtype} {list(images.shape)}; "
                           "expected uint8 images [N, H, W, C] with C = 1 or 3, or "
                           "float32 feature vectors [N, D] (np.save(path, x.astype("
                           "np.float32)))")
    if not is_image and not np.all(np.isfinite(images[:_CHECKED_ROWS])):
      raise base.DataError(f"{where} holds NaN or infinite values in its first "
                           f"{_CHECKED_ROWS} rows; feature vectors must be finite")
    if not images.flags.c_contiguous:
      raise base.DataError(f"{where} is stored in Fortran order; save it with "
                           "np.save(path, np.ascontiguousarray(images))")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or \
        not np.issubdtype(labels.dtype, np.integer):
      raise base.DataError(
          f"{split}_labels.npy in {folder} holds {labels.dtype} {list(labels.shape)}; "
          f"expected {images.shape[0]} integer labels, one per image of {split}_images.npy")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
      raise base.DataError(
          f"{split}_labels.npy in {folder} has labels {labels.min()}..{labels.max()} but "
          f"classes.txt names {len(classes)} classes; labels must be 0..{len(classes) - 1}")
  if arrays["pool_images"].shape[1:] != arrays["test_images"].shape[1:] or \
      arrays["pool_images"].dtype != arrays["test_images"].dtype:
    raise base.DataError(
        f"pool images are {arrays['pool_images'].dtype} "
        f"{list(arrays['pool_images'].shape[1:])} but test images "
        f"{arrays['test_images'].dtype} {list(arrays['test_images'].shape[1:])} in "
        f"{folder}; both need one shape and type")
  if len(classes) < 2 or arrays["pool_images"].shape[0] == 0:
    raise base.DataError(f"{folder} needs at least 2 classes in classes.txt and one "
                         "pool image")
  return base.Dataset("npy", arrays["pool_images"],  # stays a memory map
                          np.array(arrays["pool_labels"], np.int32),
                          np.array(arrays["test_images"]),
                          np.array(arrays["test_labels"], np.int32), classes, "data_dir")


def _open(path: str) -> np.ndarray:
  try:
    return np.load(path, mmap_mode="r", allow_pickle=False)
  except (ValueError, OSError) as error:
    raise base.DataError(f"{path} is not a readable .npy array ({error}); write it "
                         "with np.save") from None


def write(dataset: base.Dataset, folder: str | os.PathLike,
          tile_to: int | None = None) -> str:
  """Writes `dataset` as an npy data set in `folder`; returns its path. tile_to: the
  pool repeated (row i = original row i mod N) to that many images. Each file is written
  beside its final name and renamed when complete; DataError if the disk is too small."""
  folder = os.path.abspath(os.fspath(folder))
  os.makedirs(folder, exist_ok=True)
  n = len(dataset.train_labels)
  size = n if tile_to is None else tile_to
  if size < 1:
    raise base.DataError(f"cannot write a pool of {size} images; pass a positive size")
  need = size * (dataset.train_images[0].nbytes + 4) + dataset.test_images.nbytes
  free = shutil.disk_usage(folder).free
  if need > free:
    raise base.DataError(f"{folder} has {free / 1e9:.1f} GB free but the data set "
                         f"needs {need / 1e9:.1f} GB; choose another folder or a "
                         "smaller size")
  tiled = lambda start, stop: np.arange(start, stop) % n
  _write_rows(os.path.join(folder, "pool_images.npy"), dataset.train_images.dtype,
              (size, *dataset.train_images.shape[1:]),
              lambda a, b: dataset.train_images[tiled(a, b)])
  _write_rows(os.path.join(folder, "pool_labels.npy"), np.int32, (size,),
              lambda a, b: dataset.train_labels[tiled(a, b)])
  for name, array in (("test_images", dataset.test_images), ("test_labels",
                                                              dataset.test_labels)):
    _write_rows(os.path.join(folder, name + ".npy"), array.dtype, array.shape,
                lambda a, b, array=array: array[a:b])
  with base.atomic_write(os.path.join(folder, "classes.txt"), "w", encoding="utf-8") as f:
    f.write("".join(name + "\n" for name in dataset.class_names))
  return folder


def _write_rows(path: str, dtype, shape: tuple[int, ...], block_of) -> None:
  """An .npy file of `shape`, written in blocks of block_of(start, stop), atomically."""
  row_bytes = max(1, int(np.prod(shape[1:])) * np.dtype(dtype).itemsize)
  block = max(1, _BLOCK_BYTES // row_bytes)
  with base.atomic_write(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": tuple(shape)})
    for start in range(0, shape[0], block):
      f.write(np.ascontiguousarray(block_of(start, min(start + block, shape[0])),
                                   dtype).tobytes())


base.register(base.Source("npy", load, base.own_data_spec("npy"), rows=rows))
