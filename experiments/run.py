r"""Runs pool-based active learning (or the authors' per-epoch reselection).

  python experiments/run.py --dataset=mnist --metric=entropy --protocol=pool \
      --initial_size=100 --query_size=100 --rounds=5 --seed=0 --data_dir=DIR --workdir=OUT

Flags -> Config -> one library call (`al_jax.experiment.run`). With one metric and
an explicit --seed the run writes OUT/results.jsonl; otherwise each (metric, seed)
writes OUT/<metric>/seed_<s>/results.jsonl; OUT/summary.json sums them up.
Started again with the same flags and workdir, a run continues where it stopped.
"""

import os
import sys

import jax
from absl import app, flags, logging

import al_jax
from al_jax import acquisition, specs
from al_jax import config as config_lib
from al_jax import data as data_lib
from al_jax import config_flags, experiment, metrics, sharding

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", f"One of {', '.join(specs.NAMES)}, or "
                    f"{specs.TFDS_PREFIX}NAME for a TensorFlow Datasets image-classification "
                    "set (features image, label), e.g. tfds:cifar10.")
flags.DEFINE_string("metric", "entropy",
                    f"One of {', '.join(acquisition.names())}, or 'all' for the paper's "
                    "comparison (its five), or a comma-separated list.")
flags.DEFINE_integer("seed", 0, "Seed of a single run (when given, --seeds is ignored).")
flags.DEFINE_integer("seeds", 3, "Number of seeds (0..seeds-1) to run and average.")
flags.DEFINE_string("protocol", "pool",
                    "pool: Algorithm 1, labels accumulate; reselect: the authors' "
                    "per-epoch reselection from the whole training set.")
flags.DEFINE_string("data_dir", None, "Local data folder (or root holding <dataset>/), "
                    f"'sample' for the shipped sample; default ${data_lib.DATA_DIR_ENV}, "
                    "else the packaged MNIST (mnist), else a download into the cache. "
                    "--dataset=folder: DIR/train/<class>/*.jpg (and DIR/test/<class>/). "
                    "--dataset=tfds:NAME: TFDS's data_dir (default TFDS's own). "
                    "--dataset=npy: DIR/pool_images.npy and the rest (docs/DATA.md).")
flags.DEFINE_string("classes", None, "Class subset, e.g. 0,1 or apple,banana (binary tasks).")
flags.DEFINE_integer("image_size", 32, "Fruits-360, folder and tfds images are resized to "
                     "this size.")
flags.DEFINE_float("test_fraction", 0.2, "folder without test/, tfds without a test split: "
                   "share of each class held out as the test set (a fixed, seeded split).")
flags.DEFINE_string("model", None, "CNN: mnist_cnn, fruits_net3 or pooled_cnn (small head, "
                    "for tiny labeled sets) (default: the data set's, by channels for a "
                    "folder or tfds set: grey mnist_cnn, colour fruits_net3; with "
                    "--recipe=small_budget pooled_cnn instead of mnist_cnn).")
flags.DEFINE_string("recipe", None, "Training defaults. small_budget (the pool "
                    "protocol's default): --min_steps=250, --batch_size=32, pooled_cnn for "
                    "grey images. paper (reselect's default; experiments/reproduce.sh): "
                    "the data set's own model and batch size, --min_steps=0.")
flags.DEFINE_integer("pool_size", None, "Use a fixed random subset of the training set.")
flags.DEFINE_integer("test_size", None, "Use a fixed random subset of the test set.")
flags.DEFINE_integer("initial_size", 100, "pool: random labeled images to start from.")
flags.DEFINE_integer("query_size", 100, "pool: images queried per round.")
flags.DEFINE_integer("rounds", 5, "pool: rounds (train, evaluate, query).")
flags.DEFINE_integer("budget", None, "pool: total labels; sets --rounds.")
flags.DEFINE_bool("class_balanced", False, "pool: class-balanced initial set.")
flags.DEFINE_string("initial_selection", None, "pool: choose the initial labels by "
                    "kmeans_pp or kmeans on the pool's pixels (a cold start; no "
                    "--class_balanced) instead of at random.")
flags.DEFINE_bool("keep_training", False,
                  "pool: keep training the previous model (default: re-initialise each round).")
flags.DEFINE_integer("epochs_per_round", 20, "pool: training epochs on the labeled set per round.")
flags.DEFINE_integer("min_steps", None, "pool: train each round for at least this many SGD "
                     "steps (more whole epochs when the labeled set is small); 0 = off "
                     "(default: the recipe's, 250 or 0).")
flags.DEFINE_float("validation_fraction", 0.0, "pool: hold out the labels of this share of "
                   "the pool (a fixed random subset per seed) for early stopping: every 25 "
                   "steps the held-out loss is checked, training stops after --patience "
                   "checks without a new low and keeps the best weights; 0 = off.")
flags.DEFINE_integer("patience", 4, "pool: early-stopping checks without improvement.")
flags.DEFINE_integer("epochs", None, "reselect: epochs (default 350 MNIST, 20 Fruits-360).")
flags.DEFINE_integer("select_batches", None, "reselect: batches kept per epoch (25 / 20).")
flags.DEFINE_enum("select", "batches", ["batches", "samples"],
                  "reselect: score whole batches (the authors) or single images.")
flags.DEFINE_string("batch_aggregate", None, "reselect: 'sum' or 'mean' of a batch's scores.")
flags.DEFINE_integer("batch_size", None, "Training batch size (default: the recipe's, 32; "
                     "paper: 128 MNIST, 64 Fruits-360).")
flags.DEFINE_float("learning_rate", None, "SGD learning rate (0.01 MNIST, 0.005 Fruits-360).")
flags.DEFINE_float("momentum", None, "SGD momentum (0.9).")
flags.DEFINE_float("weight_decay", None, "L2 weight decay (0 MNIST, 8e-4 Fruits-360).")
flags.DEFINE_integer("chunk_size", 1000, "Pool images scored per compiled chunk.")
flags.DEFINE_integer("ensemble_size", 1, "pool: train a deep ensemble of this many models "
                     "(one vmapped program); the Bayesian and batch strategies then use its "
                     "members instead of dropout passes, the paper's scorers its mean.")
config_flags.define_strategy_flags(FLAGS)
flags.DEFINE_string("workdir", None, "Output folder (default runs/<dataset>_<protocol>).")
flags.DEFINE_bool("overwrite", False, "Delete a previous run in --workdir and start afresh.")
flags.DEFINE_bool("plot", True, "Write PNG figures after the runs.")
flags.DEFINE_integer("keep_checkpoints", 3, "Rounds of checkpoints kept in the workdir "
                     "(about 9 MB per run and round for the MNIST CNN); 0 keeps all.")
flags.DEFINE_enum("vmap_runs", "auto", list(config_lib.RUN_LAYOUTS),
                  "Run all (metric, seed) runs of a round as one vmapped program (true) or "
                  "one after another in the same program (false). auto = vmap on GPU/TPU, "
                  "not on CPU, where XLA runs the stacked convolutions slower "
                  "(docs/BENCHMARKS.md). Results are the same; a job resumes across it.")
flags.DEFINE_enum("stream_pool", "auto", list(config_lib.RUN_LAYOUTS),
                  "Read the pool from the host in chunks each round, so it never sits whole "
                  "on a device or (--dataset=npy) in memory: true, false, or auto = for "
                  "--dataset=npy. Per-image strategies only; results equal the in-memory "
                  "job's, and a job resumes across it.")
flags.DEFINE_integer("devices", 0, "Devices to use (0: all of jax.devices()). Several runs "
                     "are split over them, the devices left over split each run's pool "
                     "scoring; results equal one device's.")
flags.DEFINE_bool("data_parallel_training", False, "Split each run's training batches over "
                  "its devices too: faster, but the weights equal one device's only to float "
                  "rounding, so later selections can differ.")
flags.DEFINE_enum("distributed", "auto", ["auto", "true", "false"],
                  "One job over several processes (jax.distributed): true, false, or auto = "
                  "when --coordinator_address/--num_processes, JAX_COORDINATOR_ADDRESS / "
                  "JAX_NUM_PROCESSES, or a Slurm / Open MPI job of several tasks say so.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (default "
                    "$JAX_COORDINATOR_ADDRESS or the cluster's).")
flags.DEFINE_integer("num_processes", None, "Processes in the job (default "
                     "$JAX_NUM_PROCESSES or the cluster's).")
flags.DEFINE_integer("process_id", None, "This process, 0..num_processes-1 (default "
                     "$JAX_PROCESS_ID or the cluster's).")
flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds without news from a process before "
                     "the others stop the job.")


def _quiet(record) -> bool:
  """Drops Orbax's per-save lines and JAX's note that no TPU was found (not an error)."""
  return "orbax" not in record.pathname and not (
      "xla_bridge" in record.pathname and "Unable to initialize backend" in record.getMessage())


def main(argv):
  logging.get_absl_handler().addFilter(_quiet)
  if len(argv) > 1:
    raise config_lib.ConfigError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
  if FLAGS.distributed == "true" or (FLAGS.distributed == "auto" and sharding.cluster_requested(
      FLAGS.coordinator_address, FLAGS.num_processes)):
    sharding.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id, FLAGS.heartbeat_timeout)
  metric_names = (metrics.NAMES if FLAGS.metric == "all"
                  else tuple(m.strip() for m in FLAGS.metric.split(",")))
  if FLAGS.seeds <= 0:
    raise config_lib.ConfigError(f"--seeds must be a positive integer, got {FLAGS.seeds}")
  seeds = (FLAGS.seed,) if FLAGS["seed"].present else tuple(range(FLAGS.seeds))
  rounds = FLAGS.rounds
  if FLAGS.budget is not None:
    rounds = config_lib.rounds_for_budget(FLAGS.budget, FLAGS.initial_size, FLAGS.query_size)
  config = config_lib.Config(
      dataset=FLAGS.dataset, metrics=metric_names, seeds=seeds, protocol=FLAGS.protocol,
      data_dir=FLAGS.data_dir, classes=data_lib.parse_classes(FLAGS.classes),
      image_size=FLAGS.image_size, test_fraction=FLAGS.test_fraction, model=FLAGS.model,
      recipe=FLAGS.recipe, pool_size=FLAGS.pool_size, test_size=FLAGS.test_size,
      initial_size=FLAGS.initial_size, query_size=FLAGS.query_size, rounds=rounds,
      class_balanced_init=FLAGS.class_balanced, initial_selection=FLAGS.initial_selection,
      keep_training=FLAGS.keep_training,
      epochs_per_round=FLAGS.epochs_per_round, min_steps=FLAGS.min_steps,
      validation_fraction=FLAGS.validation_fraction, patience=FLAGS.patience,
      epochs=FLAGS.epochs,
      select_batches=FLAGS.select_batches, select=FLAGS.select,
      batch_aggregate=FLAGS.batch_aggregate, batch_size=FLAGS.batch_size,
      learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
      weight_decay=FLAGS.weight_decay, chunk_size=FLAGS.chunk_size,
      ensemble_size=FLAGS.ensemble_size,
      strategy_options=config_flags.strategy_flags(FLAGS), vmap_runs=FLAGS.vmap_runs,
      stream_pool=FLAGS.stream_pool)
  workdir = FLAGS.workdir or f"runs/{FLAGS.dataset.replace(':', '_')}_{FLAGS.protocol}"
  if FLAGS.keep_checkpoints < 0:
    raise config_lib.ConfigError("--keep_checkpoints must be >= 0 (0 keeps all)")
  if FLAGS.devices < 0:
    raise config_lib.ConfigError("--devices must be >= 0 (0 uses all)")
  runs = experiment.run(config, workdir, overwrite=FLAGS.overwrite, plot=FLAGS.plot,
                        keep_checkpoints=FLAGS.keep_checkpoints, devices=FLAGS.devices,
                        data_parallel_training=FLAGS.data_parallel_training)
  if jax.process_index() != 0:
    return
  for metric, s in experiment.summarize(runs).items():
    logging.info("%s: final test accuracy %.4f +- %.4f over %d seed(s)", metric,
                 s["test_accuracy_mean"][-1], s["test_accuracy_std"][-1], s["seeds"])
  logging.info("results, summary.json%s in %s", " and plots" if FLAGS.plot else "",
               os.path.abspath(workdir))


def entry(argv):
  try:
    main(argv)
  except (config_lib.ConfigError, data_lib.DataError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  except jax.errors.JaxRuntimeError as error:
    if jax.process_count() == 1:
      raise
    # A collective failed, most likely because another process died. (When no collective
    # notices, JAX's heartbeat stops this process instead: "stopped sending heartbeats".)
    print(f"error: process {jax.process_index()} of {jax.process_count()} stopped: "
          f"{str(error).splitlines()[0][:300]}; if another process died, start every "
          "process again with the same flags to resume from the last complete checkpoint",
          file=sys.stderr, flush=True)
    os._exit(3)  # not sys.exit: a clean JAX shutdown would wait for the dead process


if __name__ == "__main__":
  al_jax.configure_cpu()
  app.run(entry)
