r"""Label your own images in the browser; the model picks what to show.

  python experiments/label.py --images=DIR --classes=cat,dog,bird --workdir=OUT
  python experiments/label.py --workdir=OUT --predict

The first prints one URL; open it. Labels go to OUT/labels.sqlite the moment they are
given and to OUT/labels.csv and labels.json on export and on exit; the model of each
round to OUT/checkpoints/. Started again with the same flags it continues where it
stopped. --predict writes OUT/predictions.csv for every image still without a label:
the latest model's class and probability, and the strategy's score and rank; its column
"ranking" says what a rank is: "score" (entropy and the other per-image scorers: every
image ranked, 1 = asked first) or "batch" (batchbald, coreset, badge, stochastic_*:
ranks 1..query_size are the next batch, chosen together; the other images are unranked).
`--images=sample` is the packaged Fruits-360 sample; a folder with a train/<class>/
layout runs in simulation mode (its folder names only report the true accuracy).
"""

import dataclasses
import json
import logging as std_logging
import os
import signal
import sys

from absl import app, flags, logging

import al_jax
from al_jax import acquisition
from al_jax import datasets
from al_jax.labeling import headless, pool, server, session

FLAGS = flags.FLAGS
flags.DEFINE_string("images", None, "Folder of images (searched recursively), 'sample' for "
                    "the packaged Fruits-360 sample, or a train/<class>/ layout (simulation).")
flags.DEFINE_string("classes", None, "Class names, comma-separated, e.g. cat,dog,bird "
                    "(simulation mode: default the folder names).")
flags.DEFINE_string("workdir", None, "Output folder: labels, checkpoints, exports.")
flags.DEFINE_string("metric", "badge", "Acquisition strategy (default badge: diverse "
                    "batches, few near-duplicates; docs/BENCHMARKS.md): "
                    f"{', '.join(acquisition.names())}.")
flags.DEFINE_integer("query_size", 20, "Images per batch after the first.")
flags.DEFINE_integer("initial_size", 20, "Random images of the first batch trained on.")
flags.DEFINE_integer("validation_size", 10, "Further random images of the first batch, "
                     "held out (never trained on) to estimate accuracy.")
flags.DEFINE_integer("image_size", 32, "Images are resized to this side for the model.")
flags.DEFINE_integer("epochs_per_round", 20, "Training epochs on the labels per round.")
flags.DEFINE_integer("seed", 0, "Seed of the initial and held-out images and the model.")
flags.DEFINE_string("model", None, "CNN: mnist_cnn, fruits_net3 or pooled_cnn (default by "
                    "channels; mlp with --features), or your own Flax NNX or Linen module class, "
                    "path/to/file.py:Name or package.module:Name (README, Your own model).")
flags.DEFINE_string("features", None, "An .npz of one feature vector per image (arrays "
                    "paths [N], relative to --images, and features float [N, D]): the page "
                    "shows the images, the model (default the MLP) trains on the vectors.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; anything but loopback "
                    "lets other machines reach the page (a warning is printed).")
flags.DEFINE_integer("port", 0, "Port (0: the workdir's last one when free, else a "
                     "free one).")
flags.DEFINE_integer("simulate", 0, "Simulation mode only: answer this many batches with "
                     "the folder's hidden labels, without a page, and print each round's "
                     "time and accuracy as JSON lines.")
flags.DEFINE_bool("predict", False, "Write predictions.csv for the unlabeled images "
                  "with the latest model, then exit (only --workdir is needed).")


def _stop(signum, frame):
  raise KeyboardInterrupt


def _quiet(record) -> bool:
  """Drops Orbax's per-save lines."""
  return "orbax" not in record.pathname


def _classes(spec: str | None) -> tuple[str, ...] | None:
  """--classes, each named once (case and spaces aside)."""
  classes = datasets.parse_classes(spec)
  keys = [c.lower() for c in classes or ()]
  twice = sorted({c for c, k in zip(classes or (), keys) if keys.count(k) > 1})
  if twice:
    raise session.LabelError(f"--classes names {', '.join(twice)} more than once; name "
                             "each class once")
  return classes


def main(argv):
  logging.get_absl_handler().addFilter(_quiet)
  std_logging.getLogger("waitress.queue").setLevel(std_logging.ERROR)  # "queue depth"
  if len(argv) > 1:
    raise session.LabelError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
  if not FLAGS.workdir:
    raise session.LabelError("pass --workdir=OUT, the folder for labels and models")
  if FLAGS.predict:
    labeling = headless.reopen(FLAGS.workdir)
    path = labeling.predict()
    labeling.close()
    print(path)
    return
  if not FLAGS.images:
    raise session.LabelError("pass --images=DIR (a folder of images) or --images=sample")
  classes = _classes(FLAGS.classes)
  if not FLAGS.simulate:  # before the workdir records anything
    server.check_address(FLAGS.host, FLAGS.port)
  # A workdir goes on with the settings it was made with, unless a flag says otherwise
  # (a workdir of an earlier default, e.g. --metric=entropy, resumes as it was).
  saved = (headless.saved_setup(FLAGS.workdir) or {}).get("settings", {})
  given = lambda name: FLAGS[name].value if FLAGS[name].present or name not in saved \
      else saved[name]
  settings = session.Settings(**{f.name: given(f.name)
                                 for f in dataclasses.fields(session.Settings)
                                 if f.name in FLAGS})
  if settings.features:
    settings = dataclasses.replace(settings, features=os.path.abspath(
        os.path.expanduser(settings.features)))
  images = pool.open_images(FLAGS.images, classes, settings.image_size,
                            settings.features)
  labeling = session.LabelSession(images, FLAGS.workdir, settings,
                                  images_arg=pool.images_argument(FLAGS.images))
  if FLAGS.simulate:
    try:
      for record in headless.simulate(labeling, FLAGS.simulate):
        print(json.dumps({k: record[k] for k in (
            "round", "num_labeled", "estimated_accuracy", "true_accuracy", "round_s",
            "turnaround_s")}), flush=True)
    finally:
      labeling.export()
      labeling.close()
    return
  signal.signal(signal.SIGTERM, _stop)
  server.serve(labeling, host=FLAGS.host, port=FLAGS.port)


def entry(argv):
  try:
    main(argv)
  except (session.LabelError, datasets.DataError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  al_jax.configure_cpu()
  app.run(entry)
