#!/usr/bin/env bash
# The label-efficiency study of docs/RESULTS.md (issue 11): pool protocol, 20
# class-balanced initial labels, +10 per round, the full 10,000-image test set, 3 seeds.
#
#   nohup nice -n 5 experiments/study.sh DATA_DIR runs/study > runs/study.log 2>&1 &
#   python experiments/study_report.py --runs=runs/study --out=docs
#
# Each job is one run.py workdir: started again, the script skips finished jobs (those
# with summary.json) and resumes an interrupted one from its last round. Every
# round's records land in results.jsonl as they finish, so the report works on a
# study that is still running. The jobs run in two lanes at once (LANES=1: one after
# another), most important first. SCALE selects the grid:
#   small (default): a 5,000-image pool subset, up to 120 labels (what 2 shared CPU
#                    cores finish in about an hour)
#   full:            the full 60,000-image pool, up to 300 labels (the grid)
set -euo pipefail
DATA=${1:?data folder (holding mnist/ and fashion_mnist/)}
OUT=${2:-runs/study}
SCALE=${SCALE:-small}
LANES=${LANES:-2}
case "$SCALE" in
  small) GRID="--pool_size=5000 --budget=120" ;;
  full) GRID="--budget=300" ;;
  *) echo "error: SCALE must be small or full, got '$SCALE'" >&2; exit 2 ;;
esac
RUN="python experiments/run.py --seeds=3 --data_dir=$DATA --vmap_runs=false"
# The training rule for tiny labeled sets: re-initialise each round, train at least 250
# SGD steps of 32 images (whole epochs), the pooled CNN with its small dense head.
PROTOCOL="--protocol=pool --class_balanced --initial_size=20 --query_size=10 --model=pooled_cnn --batch_size=32 --min_steps=250 $GRID"

job() {  # job NAME FLAGS...: one workdir, skipped when finished
  local name=$1; shift
  local workdir="$OUT/$SCALE/$name"
  if [[ -f "$workdir/summary.json" ]]; then echo "$name: finished, skipped"; return; fi
  mkdir -p "$workdir"
  local command="$RUN $PROTOCOL $* --workdir=$workdir"
  echo "$command" > "$workdir/command.txt"
  echo "$(date -u +%H:%M:%S) $name: $command"
  $command || echo "$(date -u +%H:%M:%S) $name: failed (exit $?)"
}

lane_a() {
  job mnist_core --dataset=mnist --metric=random,entropy,bald,batchbald,badge,coreset
  job mnist_rest --dataset=mnist --metric=smallest_margin,variation_ratios,stochastic_bald
}

lane_b() {
  job mnist_ensemble --dataset=mnist --metric=bald --ensemble_size=3
  job mnist_cnn_random --dataset=mnist --metric=random --model=mnist_cnn
  job fashion_core --dataset=fashion_mnist --metric=random,entropy,bald,badge
}

if [[ "$LANES" == 1 ]]; then
  lane_a; lane_b
else
  lane_a & lane_b & wait
fi
echo "$(date -u +%H:%M:%S) study done"
