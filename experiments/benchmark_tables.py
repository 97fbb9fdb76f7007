r"""Markdown tables from the JSON files of experiments/benchmark.py and the PyTorch
baseline (experiments/baselines/torch_cnn.py), for docs/BENCHMARKS.md.

  python experiments/benchmark_tables.py docs/benchmarks/cpu
"""

import json
import os
import sys


def _load(folder: str, name: str) -> dict | None:
  path = os.path.join(folder, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    lines = f.read().strip().splitlines()
  return json.loads(lines[-1]) if lines else None


def _g(x: float | None, scale: float = 1e9) -> str:
  return "-" if x is None else f"{x / scale:.1f}"


def main(folder: str) -> None:
  print("| model | framework | train images/s | score images/s | train GFLOP/s | "
        "score GFLOP/s | matmul GFLOP/s | train / matmul | score / matmul |")
  print("|---|---|---|---|---|---|---|---|---|")
  for dataset, short in (("mnist", "mnist"), ("fruits360", "fruits")):
    for framework in ("jax", "torch"):
      r = _load(folder, f"{framework}_{short}.json")
      if not r:
        continue
      matmul = r["matmul_flops_per_s"]
      train, score = r.get("train_flops_per_s"), r.get("score_flops_per_s")
      print(f"| {dataset} | {'al_jax (JAX ' + r['jax_version'] + ')' if framework == 'jax' else 'PyTorch ' + r['torch_version']} "
            f"| {r['train_images_per_s']:.0f} | {r['score_images_per_s']:.0f} | {_g(train)} | "
            f"{_g(score)} | {_g(matmul)} | {train / matmul:.0%} | {score / matmul:.0%} |")
  print()
  print("| variant (mnist, al_jax) | train images/s | score images/s | compile s | round s | "
        "peak memory MB |")
  print("|---|---|---|---|---|---|")
  for name, label in (("jax_mnist.json", "float32, chunk 1000"),
                      ("jax_mnist_untuned.json", "float32, chunk 1000, AL_JAX_XLA_TUNING=0"),
                      ("jax_mnist_chunk250.json", "float32, chunk 250"),
                      ("jax_mnist_chunk4000.json", "float32, chunk 4000"),
                      ("jax_mnist_bf16.json", "bfloat16, chunk 1000"),
                      ("jax_fruits.json", "fruits360, float32, chunk 1000"),
                      ("jax_fruits_untuned.json", "fruits360, AL_JAX_XLA_TUNING=0")):
    r = _load(folder, name)
    if r:
      print(f"| {label} | {r['train_images_per_s']:.0f} | {r['score_images_per_s']:.0f} | "
            f"{r['compile_s']:.1f} | {r['round_s']:.2f} | {r['peak_memory_bytes'] / 2**20:.0f} |")
  scale = _load(folder, "scale.json")
  if scale:
    print()
    print("| pool size | seconds | images/s | peak memory MB (" +
          scale["scale"][0]["peak_memory_source"] + ") |")
    print("|---|---|---|---|")
    for r in scale["scale"]:
      print(f"| {r['pool_size']:,} | {r['seconds']:.1f} | {r['images_per_s']:.0f} | "
            f"{r['peak_memory_bytes'] / 2**20:.0f} |")
  grid = _load(folder, "grid.json")
  if grid:
    print()
    print("| 15 runs (5 metrics x 3 seeds) | wall s | speedup vs separate | results equal |")
    print("|---|---|---|---|")
    print(f"| 15 separate processes | {grid['separate_processes_s']:.0f} | 1.00 | - |")
    print(f"| one process, one run after another | {grid['one_process_vmap_false_s']:.0f} | "
          f"{grid['speedup_one_process']:.2f} | {grid['vmap_false_equals_separate']} |")
    print(f"| one vmapped program | {grid['one_process_vmap_true_s']:.0f} | "
          f"{grid['speedup_vmapped']:.2f} | {grid['vmap_true_equals_separate']} |")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks/cpu")
