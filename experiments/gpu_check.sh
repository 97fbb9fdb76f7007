#!/usr/bin/env bash
# The one short GPU/TPU check of docs/BENCHMARKS.md: both benchmarks, the 15-run grid
# three ways, a streamed 6M-image pool, and every acquisition strategy on the full
# 60,000-image MNIST pool (BALD K = 100 FLOP/s vs matmul, BatchBALD, ensembles). Usage: experiments/gpu_check.sh DATA_DIR OUT
# Needs `pip install -e . "jax[cuda12]"` (or jax[tpu]) on the accelerator machine.
set -euo pipefail
DATA=${1:?data folder holding mnist/}
OUT=${2:-gpu_figures}
mkdir -p "$OUT"
python -c "import jax; print(jax.devices())" | tee "$OUT/devices.txt"
python experiments/benchmark.py --dataset=mnist --pool_size=200000 --chunk_size=8000 > "$OUT/jax_mnist.json"
python experiments/benchmark.py --dataset=fruits360 --pool_size=200000 --chunk_size=8000 > "$OUT/jax_fruits.json"
python experiments/benchmark.py --dataset=mnist --grid="$DATA" --grid_workdir=/tmp/grid > "$OUT/grid.json"
python experiments/benchmark.py --dataset=mnist --chunk_size=20000 --scale=600000,6000000 > "$OUT/scale.json"
python experiments/benchmark.py --dataset=mnist --acquisition --pool_size=60000 --chunk_size=5000 --repeats=3 > "$OUT/acquisition.json"
cat "$OUT"/*.json
