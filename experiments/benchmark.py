r"""Prints speed figures as one JSON object (CPU, GPU and TPU alike).

  python experiments/benchmark.py --dataset=mnist --format=json
  python experiments/benchmark.py --dataset=mnist --scale=60000,600000,6000000

Figures: train_images_per_s (fit at the training batch size), score_images_per_s (pool
scoring: probabilities, metric and running top-k), compile_s, round_s (one small pool
round), peak_memory_bytes, and achieved FLOP/s against a large matmul's. --scale streams
pools of the given sizes from the host, each in a fresh process (its own peak memory).
"""

import json
import subprocess
import sys

from absl import app, flags

from al_jax import benchmarking

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", list(benchmarking.IMAGE_SHAPES), "Model and image shape.")
flags.DEFINE_enum("format", "json", ["json"], "Output format.")
flags.DEFINE_integer("repeats", 5, "Timed repeats (the median is reported).")
flags.DEFINE_integer("pool_size", 20000, "Images scored per timed pool pass.")
flags.DEFINE_integer("chunk_size", 1000, "Images per compiled scoring chunk.")
flags.DEFINE_integer("labeled", 1280, "Labeled images trained on per timed fit.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Model compute dtype.")
flags.DEFINE_list("scale", None, "Pool sizes to stream (e.g. 60000,600000,6000000).")
flags.DEFINE_integer("scale_one", None, "Internal: stream one pool of this size.")


def main(argv):
  del argv
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
  app.run(main)
