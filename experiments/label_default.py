r"""Which strategy the labeling page should ask with: prints one JSON object.

  python experiments/label_default.py
  python experiments/label_default.py --metrics=entropy,random,badge --seeds=0,1,2

Each strategy labels the packaged Fruits-360 sample (250 training images of 10 varieties,
100 test images) with the page's defaults, simulated from the folder names like
`label.py --images=al_jax/sample_data/fruits360 --simulate=5`, once per seed. Per
strategy-chosen batch (the batch each of the 5 rounds asks next; the first batch is
random for all) it measures the distinct varieties (folder names) and the near-duplicate
rate: the share of the batch's images with another image of the batch closer than
--duplicate_distance in mean absolute pixel difference at the model's 32 x 32 (0..1).
On this sample 0.02 marks neighbouring frames of the rotating fruit: 85% of the
same-variety pairs at most 2 frames apart are closer, and none of those 20 or more
frames apart. Accuracy: the model's after each round on the 100 test images
(true_accuracy) and on the 10 held-out labels (estimated_accuracy).
"""

import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags, logging

import al_jax
from al_jax import datasets
from al_jax.labeling import headless, pool, session

SAMPLE_FOLDER = os.path.join(datasets.SAMPLE_DIR, "fruits360")

FLAGS = flags.FLAGS
flags.DEFINE_list("metrics", ["entropy", "random", "badge", "coreset", "typiclust"],
                  "Strategies to compare.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (initial, held-out images, model).")
flags.DEFINE_integer("rounds", 5, "Batches answered per run (as --simulate).")
flags.DEFINE_float("duplicate_distance", 0.02, "Near-duplicate: mean absolute pixel "
                   "difference (0..1, at --image_size) below this.")
flags.DEFINE_integer("image_size", 32, "As label.py.")
flags.DEFINE_string("workdir", None, "Where the runs' workdirs go (default a temporary "
                    "folder, removed at the end).")


def batch_diversity(batch: list[int], images: np.ndarray, varieties: np.ndarray,
                    distance: float) -> dict:
  """Distinct varieties and near-duplicate rate of one batch.  images: uint8 [N, S, S, C],
  varieties: [N] names; a near-duplicate has another batch image within `distance`."""
  x = images[np.asarray(batch)].reshape(len(batch), -1).astype(np.float32) / 255
  d = np.abs(x[:, None] - x[None]).mean(-1)
  np.fill_diagonal(d, np.inf)
  return {"varieties": len(set(varieties[batch].tolist())),
          "near_duplicates": float(np.mean(d.min(1) < distance))}


def run_one(metric: str, seed: int, workdir: str) -> dict:
  """One simulated labeling session: per round the chosen batch's diversity and the
  model's accuracies."""
  images = pool.open_images(SAMPLE_FOLDER, None, FLAGS.image_size)
  varieties = np.array([p.split("/")[0] for p in images.pool.paths])
  settings = session.Settings(metric=metric, seed=seed, image_size=FLAGS.image_size)
  labeling = session.LabelSession(images, workdir, settings, images_arg=SAMPLE_FOLDER)
  started = time.perf_counter()
  try:
    records = headless.simulate(labeling, FLAGS.rounds)
  finally:
    labeling.close()
  batches = [batch_diversity(list(r["selected"]), images.pool.images, varieties,
                             FLAGS.duplicate_distance) for r in records]
  return {"varieties": [b["varieties"] for b in batches],
          "near_duplicates": [b["near_duplicates"] for b in batches],
          "true_accuracy": [r["true_accuracy"] for r in records],
          "estimated_accuracy": [r["estimated_accuracy"] for r in records],
          "round_s": [r["round_s"] for r in records],
          "wall_s": time.perf_counter() - started}


def _mean_std(values) -> list[float]:
  values = np.asarray(values, np.float64)
  return [round(float(values.mean()), 4), round(float(values.std()), 4)]


def summary(runs: list[dict]) -> dict:
  """Mean and std over seeds: per batch averages, and the last round's accuracies."""
  return {
      "varieties_per_batch": _mean_std([np.mean(r["varieties"]) for r in runs]),
      "near_duplicate_rate": _mean_std([np.mean(r["near_duplicates"]) for r in runs]),
      "true_accuracy_per_round": [_mean_std(a) for a in
                                  zip(*[r["true_accuracy"] for r in runs])],
      "true_accuracy_last": _mean_std([r["true_accuracy"][-1] for r in runs]),
      "estimated_accuracy_last": _mean_std([r["estimated_accuracy"][-1] for r in runs]),
      "round_s": _mean_std([np.mean(r["round_s"]) for r in runs])}


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    root = FLAGS.workdir or tmp
    out = {"sample": SAMPLE_FOLDER, "rounds": FLAGS.rounds,
           "duplicate_distance": FLAGS.duplicate_distance, "strategies": {}}
    for metric in FLAGS.metrics:
      runs = {}
      for seed in map(int, FLAGS.seeds):
        runs[seed] = run_one(metric, seed, os.path.join(root, f"{metric}_{seed}"))
        logging.info("%s seed %d: %s", metric, seed, json.dumps(runs[seed]))
      out["strategies"][metric] = {"summary": summary(list(runs.values())), "runs": runs}
  print(json.dumps(out))


if __name__ == "__main__":
  al_jax.configure_cpu()
  app.run(main)
