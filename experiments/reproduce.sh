#!/usr/bin/env bash
# Every experiment of the paper, both protocols, all five strategies, 3 seeds, at the
# CPU-sized settings of docs/RESULTS.md. Usage: experiments/reproduce.sh DATA_DIR OUT
# (e.g. experiments/reproduce.sh ../shared/data runs/paper). Each experiment resumes
# where it stopped when started again.
set -euo pipefail
DATA=${1:?data folder (holding mnist/ and fruits360/)}
OUT=${2:-runs/paper}
RUN="python experiments/run.py --metric=all --seeds=3 --data_dir=$DATA"

# Authors' protocol (reselect every epoch): scaled down from 60k images x 350 epochs.
MNIST_RESELECT="--protocol=reselect --pool_size=6000 --test_size=2000 --epochs=30 --select_batches=3"
FRUITS_RESELECT="--protocol=reselect --pool_size=6000 --test_size=2000 --epochs=20 --select_batches=6"
# Algorithm 1 (labels accumulate).
MNIST_POOL="--protocol=pool --recipe=paper --pool_size=6000 --test_size=2000 --initial_size=50 --query_size=50 --rounds=8 --epochs_per_round=10"
FRUITS_POOL="--protocol=pool --recipe=paper --pool_size=6000 --test_size=2000 --initial_size=50 --query_size=50 --rounds=8 --epochs_per_round=20"

$RUN --dataset=mnist $MNIST_RESELECT --workdir=$OUT/mnist10_reselect
$RUN --dataset=mnist --classes=0,1 $MNIST_RESELECT --workdir=$OUT/mnist01_reselect
$RUN --dataset=fruits360 $FRUITS_RESELECT --workdir=$OUT/fruits10_reselect
$RUN --dataset=fruits360 --classes=apple,banana $FRUITS_RESELECT --workdir=$OUT/fruits_apple_banana_reselect
$RUN --dataset=mnist $MNIST_POOL --workdir=$OUT/mnist10_pool
$RUN --dataset=mnist --classes=0,1 $MNIST_POOL --workdir=$OUT/mnist01_pool
$RUN --dataset=fruits360 $FRUITS_POOL --workdir=$OUT/fruits10_pool
$RUN --dataset=fruits360 --classes=apple,banana $FRUITS_POOL --workdir=$OUT/fruits_apple_banana_pool
