#!/usr/bin/env bash
# Keeps what experiments/study.sh computed, so the SCALE=full grid fills up over sessions
# whose machines do not outlive them: the small result files of every job (config.json,
# command.txt, summary.json, each run's results.jsonl; no checkpoints, no plots) go to a
# folder the repository tracks, and come back from it before the study goes on.
#
#   experiments/study_keep.sh save runs/study docs/study_runs       (after study.sh)
#   experiments/study_keep.sh restore docs/study_runs runs/study    (before study.sh)
#
# restore brings back finished jobs only (summary.json): study.sh then skips them and
# runs the rest from the start (an unfinished job's checkpoints were not kept).
# The report reads either folder: study_report.py --runs=docs/study_runs --scale=full.
set -euo pipefail
MODE=${1:?save or restore}; FROM=${2:?from folder}; TO=${3:?to folder}
if [[ "$MODE" != save && "$MODE" != restore ]]; then
  echo "error: the first argument must be save or restore, got '$MODE'" >&2; exit 2
fi
pattern='config.json|command.txt|summary.json|results.jsonl'
mkdir -p "$TO"; TO=$(cd "$TO" && pwd)
cd "$FROM"
for workdir in */*/; do
  workdir=${workdir%/}
  [[ -f "$workdir/config.json" ]] || continue
  if [[ "$MODE" == restore && ! -f "$workdir/summary.json" ]]; then continue; fi
  if [[ "$MODE" == restore && -f "$TO/$workdir/summary.json" ]]; then continue; fi
  find "$workdir" -type f | grep -E "/($pattern)$" | while read -r file; do
    mkdir -p "$TO/$(dirname "$file")"
    cp "$file" "$TO/$file"
  done
  echo "$MODE: $workdir"
done
