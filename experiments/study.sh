#!/usr/bin/env bash
# The label-efficiency study of docs/RESULTS.md (issue 11): pool protocol, 20
# class-balanced initial labels, +10 per round, the full 10,000-image test set, 3 seeds.
#
#   nohup nice -n 5 experiments/study.sh DATA_DIR runs/study > runs/study.log 2>&1 &
#   python experiments/study_report.py --runs=runs/study --out=docs
#   experiments/study.sh DATA_DIR runs/study mnist_coldstart_kmeans ...   (only these jobs)
#
# Each job is one run.py workdir: started again, the script skips finished jobs (those
# with summary.json) and jobs another copy of the script is running (a lock file), and
# resumes an interrupted one from its last round. Every
# round's records land in results.jsonl as they finish, so the report works on a
# study that is still running. The jobs run in two lanes at once (LANES=1: one after
# another), most important first. SCALE selects the grid:
#   small (default): a 5,000-image pool subset, up to 120 labels (what 2 shared CPU
#                    cores finish in about an hour)
#   full:            the full 60,000-image pool, up to 300 labels (the grid)
set -euo pipefail
DATA=${1:?data folder (holding mnist/ and fashion_mnist/)}
OUT=${2:-runs/study}
shift $(( $# < 2 ? $# : 2 ))
ONLY=" $* "  # job names to run (default: all)
SCALE=${SCALE:-small}
LANES=${LANES:-2}
case "$SCALE" in  # SHORT: the budget of the cold-start and model comparisons
  small) GRID="--pool_size=5000 --budget=120"; SHORT="--pool_size=5000 --budget=40" ;;
  full) GRID="--budget=300"; SHORT="--budget=100" ;;
  *) echo "error: SCALE must be small or full, got '$SCALE'" >&2; exit 2 ;;
esac
RUN="python experiments/run.py --seeds=3 --data_dir=$DATA --vmap_runs=false"
# The training rule for tiny labeled sets (run.py's --recipe=small_budget, spelled out so
# the study does not change with the defaults): re-initialise each round, train at least
# 250 SGD steps of 32 images (whole epochs), the pooled CNN with its small dense head.
PROTOCOL="--protocol=pool --class_balanced --initial_size=20 --query_size=10 --model=pooled_cnn --batch_size=32 --min_steps=250 $GRID"

job() {  # job NAME FLAGS...: one workdir, skipped when finished
  local name=$1; shift
  local workdir="$OUT/$SCALE/$name" status=0
  if [[ "$ONLY" != "  " && "$ONLY" != *" $name "* ]]; then return; fi
  if [[ -f "$workdir/summary.json" ]]; then echo "$name: finished, skipped"; return; fi
  mkdir -p "$workdir"
  local command="$RUN $PROTOCOL $* --workdir=$workdir"
  echo "$command" > "$workdir/command.txt"
  echo "$(date -u +%H:%M:%S) $name: $command"
  flock -n -E 75 "$workdir/.lock" $command || status=$?
  case $status in
    0) ;;
    75) echo "$name: running in another copy of this script, skipped" ;;
    *) echo "$(date -u +%H:%M:%S) $name: failed (exit $status)" ;;
  esac
}

lane_a() {
  # At SCALE=full the headline comparison comes first: random, the paper's best scorer
  # and BADGE (the best at SCALE=small) on the full pool, 3 seeds, to 300 labels.
  if [[ "$SCALE" == full ]]; then
    job mnist_headline --dataset=mnist --metric=random,smallest_margin,badge
  fi
  job mnist_core --dataset=mnist --metric=random,entropy,bald,batchbald,badge,coreset
  job mnist_rest --dataset=mnist --metric=smallest_margin,variation_ratios,stochastic_bald
}

lane_b() {
  job mnist_ensemble --dataset=mnist --metric=bald --ensemble_size=3
  job mnist_cnn_random --dataset=mnist --metric=random --model=mnist_cnn
  # Early stopping: 20% of the labels held out (they count in the budget), against
  # mnist_core's random and BADGE, which train on all of them.
  job mnist_early_stopping --dataset=mnist --metric=random,badge --validation_fraction=0.2
  # Cold start: the first 20 labels chosen from the pool's pixels, against random ones
  # (neither class-balanced: a cold start knows no labels).
  job mnist_coldstart_kmeans --dataset=mnist --metric=random --noclass_balanced --initial_selection=kmeans $SHORT
  job mnist_coldstart_kmeans_pp --dataset=mnist --metric=random --noclass_balanced --initial_selection=kmeans_pp $SHORT
  job mnist_coldstart_random --dataset=mnist --metric=random --noclass_balanced $SHORT
  job fashion_core --dataset=fashion_mnist --metric=random,entropy,bald,badge
}

if [[ "$LANES" == 1 ]]; then
  lane_a; lane_b
else
  lane_a & lane_b & wait
fi
echo "$(date -u +%H:%M:%S) study done"
