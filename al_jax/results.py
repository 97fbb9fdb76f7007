"""What a job writes about its rounds: the records (one JSON line per run and round), the
results.jsonl files that hold them and the summary over seeds.

A record is built in one place (`round_record`) for every driver of the round loop:
`experiment.run` and the labeling page (`al_jax.labeling`), which adds its own fields.
"""

import json
import math
import os
from typing import Any

import numpy as np

from al_jax import files

Runs = dict[tuple[str, int], list[dict]]  # (metric, seed) -> the run's records by round


def json_value(x: Any) -> Any:
  """Arrays -> lists, NaN -> None, so that results are valid JSON."""
  x = np.asarray(x)
  if x.ndim == 0:
    v = x.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v
  return [json_value(v) for v in x]


def round_record(*, round_index: int, metric: str, seed: int, dataset: str, protocol: str,
                 classes: tuple[str, ...], source: str, num_pool: int, seconds: float,
                 values: dict[str, np.ndarray]) -> dict:
  """One line of results.jsonl for one run and round: who and where, the round's
  seconds, the selected pool indices (padding and -1 slots dropped) and every metric of
  the round step (`values`: one run's, e.g. train_loss [], per_class_accuracy [C])."""
  values = dict(values)
  selected = np.asarray(values.pop("selected"))
  record = {"round": round_index, "metric": metric, "seed": seed, "dataset": dataset,
            "protocol": protocol, "classes": list(classes), "data_source": source,
            "round_s": seconds,
            "selected": selected[(selected >= 0) & (selected < num_pool)].tolist()}
  record.update({k: json_value(v) for k, v in values.items()})
  return record


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file, so a reader never sees half."""
  with files.atomic_write(path) as f:
    f.write(text)


def write_results(workdir: str, results: list[dict]) -> None:
  """Rewrites workdir/results.jsonl atomically (a killed run never leaves half a line)."""
  os.makedirs(workdir, exist_ok=True)
  write_atomic(os.path.join(workdir, "results.jsonl"),
               "".join(json.dumps(r) + "\n" for r in results))


def read_results(path: str) -> list[dict]:
  """The records of a results.jsonl file (or of workdir/results.jsonl)."""
  if os.path.isdir(path):
    path = os.path.join(path, "results.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def summarize(runs: Runs) -> dict:
  """Mean and std over seeds of test accuracy per round, per metric."""
  by_metric: dict[str, list[list[dict]]] = {}
  for (metric, _), records in runs.items():
    by_metric.setdefault(metric, []).append(records)
  summary = {}
  for metric, seed_runs in by_metric.items():
    length = min(len(r) for r in seed_runs)
    acc = np.array([[r[i]["test_accuracy"] for i in range(length)] for r in seed_runs])
    summary[metric] = {
        "seeds": len(seed_runs),
        "num_labeled": [seed_runs[0][i]["num_labeled"] for i in range(length)],
        "epoch": [seed_runs[0][i]["epoch"] for i in range(length)],
        "test_accuracy_mean": acc.mean(0).tolist(),
        "test_accuracy_std": acc.std(0).tolist(),
        "round_s": float(sum(x["round_s"] for r in seed_runs for x in r)),
    }
  return summary


def write_summary(workdir: str, runs: Runs) -> None:
  """workdir/summary.json: `summarize(runs)`."""
  write_atomic(os.path.join(workdir, "summary.json"),
               json.dumps(summarize(runs), indent=1) + "\n")
