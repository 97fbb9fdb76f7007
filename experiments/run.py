r"""Runs pool-based active learning (or the authors' per-epoch reselection).

  python experiments/run.py --dataset=mnist --metric=entropy --protocol=pool \
      --initial_size=100 --query_size=100 --rounds=5 --seed=0 --data_dir=DIR --workdir=OUT

Flags (generated from the Config definition, `al_jax.config_flags`; --helpfull lists
them by section) -> Config -> one library call (`al_jax.experiment.run`). With one metric and
an explicit --seed the run writes OUT/results.jsonl; otherwise each (metric, seed)
writes OUT/<metric>/seed_<s>/results.jsonl; OUT/summary.json sums them up.
Started again with the same flags and workdir, a run continues where it stopped.
"""

import os
import sys

import jax
from absl import app, flags, logging

import al_jax
from al_jax import config as config_lib
from al_jax import config_flags, experiment, sharding
from al_jax import datasets, results

FLAGS = flags.FLAGS
config_flags.define_flags(FLAGS)


def _quiet(record) -> bool:
  """Drops Orbax's per-save lines and JAX's note that no TPU was found (not an error)."""
  return "orbax" not in record.pathname and not (
      "xla_bridge" in record.pathname and "Unable to initialize backend" in record.getMessage())


def main(argv):
  logging.get_absl_handler().addFilter(_quiet)
  if len(argv) > 1:
    raise config_lib.ConfigError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
  layout = config_flags.layout_from_flags(FLAGS)
  if layout["distributed"] == "true" or (layout["distributed"] == "auto" and
                                         sharding.cluster_requested(
                                             layout["coordinator_address"],
                                             layout["num_processes"])):
    sharding.initialize_distributed(layout["coordinator_address"], layout["num_processes"],
                                    layout["process_id"], layout["heartbeat_timeout"])
  config = config_flags.config_from_flags(FLAGS)
  workdir = layout["workdir"] or f"runs/{config.dataset.replace(':', '_')}_{config.protocol}"
  runs = experiment.run(config, workdir, overwrite=layout["overwrite"], plot=layout["plot"],
                        keep_checkpoints=layout["keep_checkpoints"], devices=layout["devices"],
                        data_parallel_training=layout["data_parallel_training"])
  if jax.process_index() != 0:
    return
  for metric, s in results.summarize(runs).items():
    logging.info("%s: final test accuracy %.4f +- %.4f over %d seed(s)", metric,
                 s["test_accuracy_mean"][-1], s["test_accuracy_std"][-1], s["seeds"])
  logging.info("results, summary.json%s in %s", " and plots" if layout["plot"] else "",
               os.path.abspath(workdir))


def entry(argv):
  try:
    main(argv)
  except (config_lib.ConfigError, datasets.DataError) as error:
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
