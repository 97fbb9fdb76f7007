#!/usr/bin/env bash
# The label-efficiency study of docs/RESULTS.md (issues 11 and 21): pool protocol, 20
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
#                    cores finish in about an hour), the small_budget recipe
#   full:            the standard protocol (issue 21): the full 60,000-image pool, up to
#                    300 labels, the recipe experiments/recipe_search.py chose on a
#                    validation split of the training set (RECIPE below, frozen), one
#                    job per strategy and seed (about 20-40 min each on 2 cores), so
#                    the grid fills up over several sessions: a queue both lanes take
#                    jobs from in order. experiments/study_keep.sh keeps the results.
set -euo pipefail
DATA=${1:?data folder (holding mnist/ and fashion_mnist/)}
OUT=${2:-runs/study}
shift $(( $# < 2 ? $# : 2 ))
ONLY=" $* "  # job names to run (default: all)
SCALE=${SCALE:-small}
# The frozen recipe of SCALE=full, chosen by experiments/recipe_search.py on a validation
# split of the training set (docs/benchmarks/recipe_search.jsonl; the rule: the cheapest
# recipe within the seeds' spread of the best): small_budget's 250 steps of 32 images and
# pooled CNN, with each training image shifted up to 2 px and rotated up to 10 degrees.
RECIPE="--min_steps=250 --augment_shift=2 --augment_degrees=10"
LANES=${LANES:-2}
case "$SCALE" in  # SHORT: the budget of the cold-start and model comparisons
  small) GRID="--pool_size=5000 --budget=120 --min_steps=250"
         SHORT="--pool_size=5000 --budget=40 --min_steps=250" ;;
  full) GRID="--budget=300 $RECIPE"; SHORT="--budget=100 $RECIPE" ;;
  *) echo "error: SCALE must be small or full, got '$SCALE'" >&2; exit 2 ;;
esac
RUN="python experiments/run.py --seeds=3 --data_dir=$DATA --vmap_runs=false"
# The training rule for tiny labeled sets (run.py's --recipe=small_budget, spelled out so
# the study does not change with the defaults): re-initialise each round, train at least
# 250 SGD steps (SCALE=full: RECIPE's) of 32 images (whole epochs), the pooled CNN with
# its small dense head.
PROTOCOL="--protocol=pool --class_balanced --initial_size=20 --query_size=10 --model=pooled_cnn --batch_size=32 $GRID"

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

full_mnist() {
  # The standard protocol's MNIST grid, most important first, seed by seed: a session
  # that ends early leaves one finished seed of many strategies, not three of a few.
  local m seed
  for m in random smallest_margin badge entropy; do
    for seed in 0 1 2; do job "mnist_${m}_s$seed" --dataset=mnist --metric=$m --seed=$seed; done
  done
  for seed in 0 1 2; do
    for m in batchbald bald coreset typiclust stochastic_bald; do
      job "mnist_${m}_s$seed" --dataset=mnist --metric=$m --seed=$seed
    done
    job "mnist_ensemble_bald_s$seed" --dataset=mnist --metric=bald --ensemble_size=3 --seed=$seed
    # Random under the small_budget recipe: what the recipe gives, apart from acquisition.
    job "mnist_random_small_budget_s$seed" --dataset=mnist --metric=random --seed=$seed \
      --min_steps=250 --augment_shift=0 --augment_degrees=0  # (a later flag wins)
    if [[ $seed == 0 ]]; then
      job mnist_bald_k100_s0 --dataset=mnist --metric=bald --mc_samples=100 --seed=0
    fi
  done
}

full_other() {
  # Fashion-MNIST on the same protocol, and Fruits-360's pool protocol at full scale
  # (docs/RESULTS.md's fruits10_pool on the whole pool and test set): its own net and the
  # paper's training, random against the two best scorers there (later flags win over
  # PROTOCOL's). Seed by seed, as full_mnist.
  local m seed
  for seed in 0 1 2; do
    for m in random badge entropy batchbald; do
      job "fashion_${m}_s$seed" --dataset=fashion_mnist --metric=$m --seed=$seed
    done
    for m in random smallest_margin largest_margin; do
      job "fruits_${m}_s$seed" --dataset=fruits360 --metric=$m --seed=$seed \
        --noclass_balanced --initial_size=50 --query_size=50 --budget=400 \
        --epochs_per_round=20 --model=fruits_net3 --batch_size=64 --min_steps=0 \
        --augment_shift=0 --augment_degrees=0
    done
  done
}

if [[ "$SCALE" == full ]]; then
  # Two lanes: one starts on MNIST, the other on the other data sets; each goes on to the
  # other queue when its own is done (the lock files keep them off each other's jobs).
  if [[ "$LANES" == 1 ]]; then full_mnist; full_other
  else { full_mnist; full_other; } & { full_other; full_mnist; } & wait; fi
elif [[ "$LANES" == 1 ]]; then
  lane_a; lane_b
else
  lane_a & lane_b & wait
fi
echo "$(date -u +%H:%M:%S) study done"
