r"""Writes a data set as an npy folder, the pool that run.py can stream from disk.

  python experiments/export_npy.py --dataset=mnist --out=/data/mnist_npy
  python experiments/export_npy.py --dataset=mnist --tile_to=6000000 --out=/data/mnist_6m
  python experiments/run.py --dataset=npy --data_dir=/data/mnist_6m --workdir=runs/6m
  python experiments/export_npy.py --dataset=mnist --project_to=128 --out=/data/mnist_f128

Any data set run.py loads (--dataset, --data_dir, --classes, --image_size, --pool_size
and --test_size as there); --tile_to repeats the pool up to that many images. --project_to=D writes feature
vectors instead of images, float32 [N, D]: a fixed random projection of each image's
pixels, (x / 255) @ W with W [H*W*C, D] Gaussian of variance 1 / (H*W*C), seeded by
--projection_seed (stand-ins for a backbone's embeddings, with no weights to download;
run.py then trains the MLP on them). Layout: al_jax.datasets.npy and docs/DATA.md.
"""

import dataclasses
import sys

import numpy as np

from absl import app, flags, logging

from al_jax import datasets
from al_jax import experiment

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", "The data set to export (as run.py's --dataset).")
flags.DEFINE_string("data_dir", None, "Where it is (as run.py's --data_dir).")
flags.DEFINE_string("classes", None, "Class subset, e.g. 0,1.")
flags.DEFINE_integer("image_size", 32, "Side of resized images (as run.py's).")
flags.DEFINE_integer("pool_size", None, "A fixed random subset of the training set "
                     "(run.py's --pool_size choice).")
flags.DEFINE_integer("test_size", None, "A fixed random subset of the test set.")
flags.DEFINE_integer("tile_to", None, "Repeat the pool up to this many images.")
flags.DEFINE_integer("project_to", None, "Write float32 feature vectors of this length, "
                     "a fixed random projection of the pixels, instead of the images.")
flags.DEFINE_integer("projection_seed", 0, "Seed of --project_to's projection.")
flags.DEFINE_string("out", None, "The folder to write.")
flags.mark_flag_as_required("out")


def main(argv):
  del argv
  dataset = datasets.load(FLAGS.dataset, FLAGS.data_dir, classes=FLAGS.classes,
                         image_size=FLAGS.image_size)
  dataset = experiment.subset(dataset, FLAGS.pool_size, FLAGS.test_size)
  if FLAGS.project_to is not None:
    dataset = project(dataset, FLAGS.project_to, FLAGS.projection_seed)
  folder = datasets.npy.write(dataset, FLAGS.out, tile_to=FLAGS.tile_to)
  logging.info("wrote %s: %d pool images, %d test images, %d classes", folder,
               FLAGS.tile_to or len(dataset.train_labels), len(dataset.test_labels),
               dataset.num_classes)


def project(dataset: datasets.Dataset, dim: int, seed: int) -> datasets.Dataset:
  """`dataset` with its images [N, H, W, C] replaced by float32 vectors [N, dim]."""
  if dim < 1:
    raise datasets.DataError(f"--project_to={dim}: pass a positive vector length")
  pixels = int(np.prod(dataset.train_images.shape[1:]))
  weights = np.random.default_rng(seed).standard_normal((pixels, dim), np.float32)
  weights /= np.sqrt(pixels)
  block = 10_000  # rows at a time: the float pixels of a block, not of the pool
  vectors = lambda images: np.concatenate([
      (images[i:i + block].reshape(-1, pixels).astype(np.float32) / 255) @ weights
      for i in range(0, len(images), block)] or [np.zeros((0, dim), np.float32)])
  return dataclasses.replace(dataset, train_images=vectors(dataset.train_images),
                             test_images=vectors(dataset.test_images))


def entry(argv):
  try:
    main(argv)
  except datasets.DataError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(entry)
