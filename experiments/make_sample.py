"""Regenerates the small real-data sample shipped in al_jax/sample_data/.

Usage:
  python experiments/make_sample.py DATA_ROOT [--out al_jax/sample_data]

DATA_ROOT holds mnist/ (the four original IDX .gz files) and fruits360/
(Training/<Variety>/*.jpg, Test/<Variety>/*.jpg, LICENSE). The sample is:
  * mnist/: the first 600 training and first 200 test images and labels,
    re-written as gzip-compressed IDX files with the original names
    (gzip mtime 0, so the output is byte-for-byte reproducible);
  * fruits360/: for each of the 10 paper categories one variety folder
    (VARIETIES below), the first 25 training and first 10 test JPEGs in
    sorted file-name order, copied unchanged; plus the data set's LICENSE.
"""

import argparse
import gzip
import os
import shutil
import struct

import numpy as np

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": 600,
    "train-labels-idx1-ubyte.gz": 600,
    "t10k-images-idx3-ubyte.gz": 200,
    "t10k-labels-idx1-ubyte.gz": 200,
}
VARIETIES = (
    "Apple Braeburn 1", "Tomato 1", "Potato Red 1", "Banana 1", "Pear 1",
    "Pineapple 1", "Pepper Green 1", "Strawberry 1", "Onion Red 1", "Plum 1",
)
FRUIT_SPLITS = {"Training": 25, "Test": 10}
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "al_jax", "sample_data")


def read_idx(path: str) -> np.ndarray:
  """Reads a gzip IDX file of unsigned bytes into an array of its shape."""
  with gzip.open(path, "rb") as f:
    raw = f.read()
  magic, = struct.unpack(">i", raw[:4])
  ndim = magic & 0xFF
  dims = struct.unpack(">" + "i" * ndim, raw[4:4 + 4 * ndim])
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as a gzip IDX file (magic 0x0800 | ndim)."""
  header = struct.pack(">i", 0x0800 | array.ndim)
  header += struct.pack(">" + "i" * array.ndim, *array.shape)
  stored_name = os.path.basename(path)[:-len(".gz")]
  with open(path, "wb") as raw_file:
    with gzip.GzipFile(stored_name, "wb", 9, raw_file, mtime=0) as f:
      f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def make_mnist(src: str, dst: str) -> None:
  os.makedirs(dst, exist_ok=True)
  for name, count in MNIST_FILES.items():
    write_idx(os.path.join(dst, name), read_idx(os.path.join(src, name))[:count])


def make_fruits(src: str, dst: str) -> None:
  os.makedirs(dst, exist_ok=True)
  for split, count in FRUIT_SPLITS.items():
    for variety in VARIETIES:
      src_dir = os.path.join(src, split, variety)
      dst_dir = os.path.join(dst, split, variety)
      os.makedirs(dst_dir, exist_ok=True)
      names = sorted(n for n in os.listdir(src_dir) if n.lower().endswith(".jpg"))
      for name in names[:count]:
        shutil.copyfile(os.path.join(src_dir, name), os.path.join(dst_dir, name))
  shutil.copyfile(os.path.join(src, "LICENSE"), os.path.join(dst, "LICENSE"))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("data_root", help="folder holding mnist/ and fruits360/")
  parser.add_argument("--out", default=DEFAULT_OUT, help="sample folder to write")
  args = parser.parse_args()
  for sub in ("mnist", "fruits360"):
    shutil.rmtree(os.path.join(args.out, sub), ignore_errors=True)
  make_mnist(os.path.join(args.data_root, "mnist"), os.path.join(args.out, "mnist"))
  make_fruits(os.path.join(args.data_root, "fruits360"),
              os.path.join(args.out, "fruits360"))


if __name__ == "__main__":
  main()
