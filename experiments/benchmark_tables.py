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

  for name in sorted(os.listdir(folder)):
    if name.startswith("acquisition_") and name.endswith(".json"):
      _acquisition_table(_load(folder, name), name)


def _acquisition_table(r: dict, name: str) -> None:
  """Seconds per strategy to choose k images, BALD's FLOP/s, ensemble fit vs fits."""
  if "compile_s" not in r:  # an older file, before every strategy was timed
    return
  print()
  print(f"`{name}`: choosing {r['k']} of {r['pool_size']:,} images ({r['backend']}, "
        f"{r['device']}, JAX {r['jax_version']})")
  print()
  print("| strategy | seconds | relative to entropy | compile s |")
  print("|---|---|---|---|")
  for strategy, seconds in r["seconds"].items():
    print(f"| {strategy} | {seconds:.2f} | {r['relative_to_entropy'][strategy]:.1f} | "
          f"{r['compile_s'][strategy]:.1f} |")
  print()
  big = [k for k in r if k.startswith("bald_k") and k.endswith("_flops_per_s")]
  for key in big:
    k = key[len("bald_k"):-len("_flops_per_s")]
    print(f"- BALD, K = {k}: {r[key] / 1e9:.1f} GFLOP/s achieved "
          f"({r[f'bald_k{k}_flops'] / 1e12:.2f} TFLOP in {r['seconds'][f'bald_k{k}']:.1f} s), "
          f"{r[f'bald_k{k}_fraction_of_matmul']:.0%} of the same process's matmul "
          f"({r['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s)")
  ratio = [k for k in r if k.startswith("batchbald_over_bald")]
  for key in ratio:
    print(f"- BatchBALD (10 greedy picks, whole-pool samples) / one BALD pass at the same K: "
          f"{r[key]:.2f}x")
  print(f"- a {r['ensemble_size']}-member ensemble's fit (one vmapped program): "
        f"{r['ensemble_fit_s']:.2f} s against {r['ensemble_size']} x {r['single_fit_s']:.2f} s "
        f"for separate fits ({r['ensemble_fit_over_separate_fits']:.2f}x their total; "
        f"{r['labeled']} labeled images, one epoch)")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks/cpu")
