r"""Writes a data set as an npy folder, the pool that run.py can stream from disk.

  python experiments/export_npy.py --dataset=mnist --out=/data/mnist_npy
  python experiments/export_npy.py --dataset=mnist --tile_to=6000000 --out=/data/mnist_6m
  python experiments/run.py --dataset=npy --data_dir=/data/mnist_6m --workdir=runs/6m

Any data set run.py loads (--dataset, --data_dir, --classes, --image_size, --pool_size
and --test_size as there); --tile_to repeats the pool up to that many images. Layout:
al_jax.datasets.npy and docs/DATA.md.
"""

import sys

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
flags.DEFINE_string("out", None, "The folder to write.")
flags.mark_flag_as_required("out")


def main(argv):
  del argv
  dataset = datasets.load(FLAGS.dataset, FLAGS.data_dir, classes=FLAGS.classes,
                         image_size=FLAGS.image_size)
  dataset = experiment.subset(dataset, FLAGS.pool_size, FLAGS.test_size)
  folder = datasets.npy.write(dataset, FLAGS.out, tile_to=FLAGS.tile_to)
  logging.info("wrote %s: %d pool images, %d test images, %d classes", folder,
               FLAGS.tile_to or len(dataset.train_labels), len(dataset.test_labels),
               dataset.num_classes)


def entry(argv):
  try:
    main(argv)
  except datasets.DataError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(entry)
