r"""Prints speed figures as one JSON object (CPU, GPU and TPU alike).

  python experiments/benchmark.py --dataset=mnist --format=json
  python experiments/benchmark.py --dataset=mnist --scale=60000,600000,6000000

Figures: train_images_per_s (fit at the training batch size), score_images_per_s (pool
scoring: probabilities, metric and running top-k), compile_s, round_s (one small pool
round), peak_memory_bytes, and achieved FLOP/s against a large matmul's. --scale streams
pools of the given sizes from the host, each in a fresh process (its own peak memory).
--grid=DATA_DIR times the paper's 15-run comparison run three ways; --acquisition times
choosing 10 images with every kind of strategy (docs/BENCHMARKS.md).
"""

import json
import os
import subprocess
import sys
import time

import jax
from absl import app, flags

import al_jax
from al_jax import benchmarking, metrics, results, specs

RUN_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", list(specs.NAMES), "Model and image shape.")
flags.DEFINE_enum("format", "json", ["json"], "Output format.")
flags.DEFINE_integer("repeats", 5, "Timed repeats (the median is reported).")
flags.DEFINE_integer("pool_size", 20000, "Images scored per timed pool pass.")
flags.DEFINE_integer("chunk_size", 1000, "Images per compiled scoring chunk.")
flags.DEFINE_integer("labeled", 1280, "Labeled images trained on per timed fit (with "
                     "--acquisition: labeled images of the pool).")
flags.DEFINE_string("model", None, "--acquisition: the model (default: the dataset's).")
flags.DEFINE_list("mc_samples", ["20", "100"], "--acquisition: BALD's K values; the "
                  "largest is the other sampled strategies' K.")
flags.DEFINE_integer("ensemble_size", 5, "--acquisition: the ensemble's members.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Model compute dtype.")
flags.DEFINE_list("scale", None, "Pool sizes to stream (e.g. 60000,600000,6000000).")
flags.DEFINE_integer("scale_one", None, "Internal: stream one pool of this size.")
flags.DEFINE_bool("acquisition", False, "Time choosing 10 of --pool_size images with BALD "
                  "at K = 20 and 100, every registered strategy marked benchmark=True "
                  "(entropy, BatchBALD, stochastic BALD, core-set, BADGE, TypiClust) and "
                  "a 5-member ensemble's BALD; BALD's FLOP/s against a matmul's, and a "
                  "5-member ensemble's fit against 5 fits.")
flags.DEFINE_string("grid", None, "Time --metric=all --seeds=3 (15 pool runs) three ways "
                    "on this data folder: 15 separate processes, one process one run after "
                    "another, one vmapped program.")
flags.DEFINE_string("grid_workdir", "/tmp/al_jax_grid_benchmark", "Scratch folder for --grid.")
flags.DEFINE_bool("outside_model", False, "Time a user's CNN (Flax's MNIST example's "
                  "shape) trained 100 steps: its own jitted step, al_jax's fit, 3 runs "
                  "vmapped and lax.mapped, each with XLA's convolution and with "
                  "al_jax.convolution's; alternated in one run.")
flags.DEFINE_bool("grid_compare", False, "Only compare the finished runs in --grid_workdir.")

GRID_FLAGS = ["--protocol=pool", "--pool_size=6000", "--test_size=2000", "--initial_size=50",
              "--query_size=50", "--rounds=4", "--epochs_per_round=5", "--plot=false",
              "--overwrite"]


def _timed_run(args):
  t = time.perf_counter()
  subprocess.run([sys.executable, RUN_PY, *args], check=True, capture_output=True)
  return time.perf_counter() - t


def compare_grid(workdir: str) -> dict:
  """How the one-process runs of `grid` compare with the 15 separate runs."""
  out = {}
  for mode in ("false", "true"):
    queries = same_queries = records = same_acc = 0
    max_diff = 0.0
    for metric in metrics.NAMES:
      for seed in range(3):
        a = results.read_results(f"{workdir}/separate/{metric}/seed_{seed}")
        b = results.read_results(f"{workdir}/vmap_{mode}/{metric}/seed_{seed}")
        for x, y in zip(a, b):
          records += 1
          diff = abs(x["test_accuracy"] - y["test_accuracy"])
          max_diff, same_acc = max(max_diff, diff), same_acc + (diff < 1e-6)
          if x["selected"]:
            queries += 1
            same_queries += sorted(x["selected"]) == sorted(y["selected"])  # as sets
    out[f"vmap_{mode}"] = {"queries": queries, "same_queries": same_queries,
                           "same_selections": same_queries == queries, "records": records,
                           "same_accuracy_records": same_acc,
                           "same_accuracies": same_acc == records,
                           "max_test_accuracy_diff": max_diff}
  return out


def grid(data_dir: str, dataset: str, workdir: str) -> dict:
  """Wall time of 15 runs done three ways, and whether their results agree."""
  common = [f"--dataset={dataset}", f"--data_dir={data_dir}", *GRID_FLAGS]
  separate = 0.0
  for metric in metrics.NAMES:
    for seed in range(3):
      separate += _timed_run([*common, f"--metric={metric}", f"--seed={seed}",
                              f"--workdir={workdir}/separate/{metric}/seed_{seed}"])
  walls = {"separate_processes_s": separate}
  for mode in ("false", "true"):
    walls[f"one_process_vmap_{mode}_s"] = _timed_run(
        [*common, "--metric=all", "--seeds=3", f"--vmap_runs={mode}",
         f"--workdir={workdir}/vmap_{mode}"])
  agree = {}
  for mode in ("false", "true"):
    agree[f"vmap_{mode}_equals_separate"] = all(
        compare_grid(workdir)[f"vmap_{mode}"][k] for k in ("same_selections",
                                                           "same_accuracies"))
  return {"dataset": dataset, "runs": 15, "backend": jax.default_backend(),
          "device": jax.devices()[0].device_kind, "config": GRID_FLAGS, **walls, **agree,
          "speedup_one_process": walls["separate_processes_s"] / walls["one_process_vmap_false_s"],
          "speedup_vmapped": walls["separate_processes_s"] / walls["one_process_vmap_true_s"]}


def main(argv):
  del argv
  if FLAGS.acquisition:
    print(json.dumps(benchmarking.acquisition(FLAGS.dataset, pool_size=FLAGS.pool_size,
                                              chunk_size=FLAGS.chunk_size,
                                              repeats=FLAGS.repeats, model=FLAGS.model,
                                              labeled=FLAGS.labeled,
                                              mc_samples=tuple(map(int, FLAGS.mc_samples)),
                                              ensemble_size=FLAGS.ensemble_size)))
    return
  if FLAGS.outside_model:
    print(json.dumps(benchmarking.outside_model(repeats=FLAGS.repeats)))
    return
  if FLAGS.grid_compare:
    print(json.dumps(compare_grid(FLAGS.grid_workdir)))
    return
  if FLAGS.grid:
    print(json.dumps(grid(FLAGS.grid, FLAGS.dataset, FLAGS.grid_workdir)))
    return
  if FLAGS.scale_one:
    print(json.dumps(benchmarking.scale(FLAGS.dataset, FLAGS.scale_one,
                                        chunk_size=FLAGS.chunk_size)))
    return
  if FLAGS.scale:
    rows = []
    for size in FLAGS.scale:
      out = subprocess.run([sys.executable, __file__, f"--dataset={FLAGS.dataset}",
                            f"--scale_one={int(size)}", f"--chunk_size={FLAGS.chunk_size}"],
                           capture_output=True, text=True, check=True)
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps({"scale": rows}))
    return
  print(json.dumps(benchmarking.benchmark(
      FLAGS.dataset, repeats=FLAGS.repeats, pool_size=FLAGS.pool_size,
      chunk_size=FLAGS.chunk_size, labeled=FLAGS.labeled, dtype=FLAGS.dtype)))


if __name__ == "__main__":
  al_jax.configure_cpu()
  app.run(main)
