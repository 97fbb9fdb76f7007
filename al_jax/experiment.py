"""Runs an active-learning experiment end to end: data, rounds, checkpoints, results.

`run(config, workdir)` is the one call behind `experiments/run.py` for one metric and
one seed; `run_grid` runs several metrics and seeds into sub-folders and summarises.
Results go to `workdir/results.jsonl`, one JSON object per round (pool) or epoch
(reselect); an Orbax checkpoint after each lets a killed run continue exactly.
"""

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from al_jax import data as data_lib
from al_jax import protocols
from al_jax.checkpointing import Checkpointer
from al_jax.config import Config, ConfigError

# Settings that do not change what a run computes; a workdir may be resumed across them.
RESUMABLE_CHANGES = ("data_dir",)


@dataclasses.dataclass
class PreparedData:
  """A dataset on device, the pool padded to a multiple of the scoring chunk."""
  pool: dict[str, jax.Array]     # images [N', H, W, C] uint8, labels [N'], valid [N'] bool
  test: dict[str, jax.Array]     # images [M, H, W, C] uint8, labels [M]
  num_pool: int
  class_names: tuple[str, ...]


def _subset(n: int, size: int | None, key: int) -> np.ndarray:
  """Sorted indices of a fixed random subset of range(n) (all when size is None)."""
  if size is None or size >= n:
    return np.arange(n)
  rng = np.random.default_rng(key)
  return np.sort(rng.choice(n, size, replace=False))


def prepare_data(config: Config) -> PreparedData:
  """Loads, subsets (the same pool for every metric and seed) and pads the data."""
  dataset = data_lib.load(config.dataset, config.data_dir, classes=config.classes,
                          image_size=config.image_size)
  if config.pool_size is not None and config.pool_size > len(dataset.train_labels):
    raise ConfigError(f"--pool_size={config.pool_size} is larger than the training set "
                      f"({len(dataset.train_labels)} images); lower it")
  keep = _subset(len(dataset.train_labels), config.pool_size, key=0)
  keep_test = _subset(len(dataset.test_labels), config.test_size, key=1)
  images, labels = dataset.train_images[keep], dataset.train_labels[keep]
  num_pool = len(labels)
  padded = -(-num_pool // config.chunk_size) * config.chunk_size
  pad = padded - num_pool
  images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
  labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
  pool = {"images": jnp.asarray(images), "labels": jnp.asarray(labels, jnp.int32),
          "valid": jnp.asarray(np.arange(padded) < num_pool)}
  test = {"images": jnp.asarray(dataset.test_images[keep_test]),
          "labels": jnp.asarray(dataset.test_labels[keep_test], jnp.int32)}
  return PreparedData(pool, test, num_pool, dataset.class_names)


def json_value(x: Any) -> Any:
  """Arrays -> lists, NaN -> None, so that results are valid JSON."""
  x = np.asarray(x)
  if x.ndim == 0:
    v = x.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v
  return [json_value(v) for v in x]


def check_workdir(config: Config, workdir: str, overwrite: bool) -> None:
  """Refuses a workdir that holds a run of another configuration (unless overwrite)."""
  path = os.path.join(workdir, "config.json")
  if overwrite and os.path.isdir(workdir):
    for name in ("checkpoints", "config.json", "results.jsonl"):
      target = os.path.join(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    mine = json.loads(config.to_json())
    differ = sorted(k for k in set(saved) | set(mine)
                    if k not in RESUMABLE_CHANGES and saved.get(k) != mine.get(k))
    if differ:
      shown = ", ".join(f"{k}={saved.get(k)!r} (now {mine.get(k)!r})" for k in differ[:4])
      raise ConfigError(f"workdir {workdir} holds a run with another configuration ({shown}); "
                        "use another --workdir or pass --overwrite to start afresh")
  os.makedirs(workdir, exist_ok=True)
  _write_atomic(path, config.to_json() + "\n")


def _write_atomic(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_results(workdir: str, results: list[dict]) -> None:
  """Rewrites workdir/results.jsonl atomically (a killed run never leaves half a line)."""
  _write_atomic(os.path.join(workdir, "results.jsonl"),
                "".join(json.dumps(r) + "\n" for r in results))


def read_results(path: str) -> list[dict]:
  """The records of a results.jsonl file (or of workdir/results.jsonl)."""
  if os.path.isdir(path):
    path = os.path.join(path, "results.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def num_steps(config: Config) -> int:
  """Rounds (pool) or epochs (reselect) in the run."""
  return config.rounds if config.protocol == "pool" else config.epochs


def run(config: Config, workdir: str, *, overwrite: bool = False,
        data: PreparedData | None = None, stop_after: int | None = None) -> list[dict]:
  """Runs (or resumes) one experiment; returns the per-round records.

  `data` reuses an already prepared data set (grids); `stop_after` ends the call after
  that many new rounds, as an interruption would (for tests).
  """
  config = config.with_defaults().validate()
  data = data or prepare_data(config)
  config.check_budget(data.num_pool)
  check_workdir(config, workdir, overwrite)
  image_shape = tuple(data.pool["images"].shape[1:])
  protocol = protocols.make_protocol(protocols.shared_config(config), len(data.class_names),
                                      image_shape, data.num_pool)
  seed_key = jax.random.key(config.seed)
  if config.protocol == "pool":
    labeled = protocols.initial_labeled(np.asarray(data.pool["labels"]),
                                        np.asarray(data.pool["valid"]), config.initial_size,
                                        seed_key, config.class_balanced_init)
  else:
    labeled = np.zeros(data.pool["valid"].shape, bool)
  carry = protocol.initial_carry(seed_key, labeled)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  carry, results, start = checkpointer.resume(carry, [])
  write_results(workdir, results)

  total = num_steps(config)
  started = time.perf_counter()
  for r in range(start, total):
    if stop_after is not None and r - start >= stop_after:
      break
    record, carry = _one_round(protocol, config, carry, r, seed_key, data)
    results.append(record)
    checkpointer.save(r + 1, carry, {
        "next_round": r + 1, "results": results, "config": json.loads(config.to_json()),
        "seed_key": np.asarray(jax.random.key_data(seed_key)).tolist()})
    write_results(workdir, results)
    done = r + 1 - start
    left = (time.perf_counter() - started) / done * (total - r - 1)
    logging.info("%s seed %d %s %d/%d: labeled %d, test accuracy %.4f, loss %.4f "
                 "(train %.1fs, select %.1fs), about %.0fs left", config.metric, config.seed,
                 "round" if config.protocol == "pool" else "epoch", r + 1, total,
                 record["num_labeled"], record["test_accuracy"], record["test_loss"],
                 record["train_s"], record["select_s"], left)
  checkpointer.close()
  return results


def timed(fn, *args):
  """(fn(*args), seconds), waiting for the device to finish."""
  t = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t


def _one_round(protocol, config: Config, carry: dict, r: int, seed_key: jax.Array,
               data: PreparedData) -> tuple[dict, dict]:
  """One round (pool) or epoch (reselect): returns its record and the new carry."""
  if config.protocol == "pool":
    num_labeled = int(jnp.sum(carry["labeled"]))
    (carry, train_metrics), train_s = timed(protocol.train, carry, r, seed_key, data.pool)
    selected, select_s = np.zeros((0,), int), 0.0
    if r + 1 < config.rounds:
      (carry, selected), select_s = timed(protocol.select, carry, r, seed_key, data.pool,
                                             config.metric)
      selected = np.asarray(selected)
      selected = selected[selected < data.num_pool]
    epoch = (r + 1) * config.epochs_per_round
  else:
    chosen, select_s = timed(protocol.select, carry, r, seed_key, data.pool,
                                             config.metric)
    (carry, train_metrics), train_s = timed(protocol.train, carry, r, seed_key, data.pool,
                                             chosen)
    selected = np.asarray(chosen).reshape(-1)
    num_labeled, epoch = selected.size, r + 1
  test_metrics, eval_s = timed(protocol.evaluate, carry["train_state"], data.test["images"],
                                data.test["labels"])
  train_loss = float(train_metrics["train_loss"])
  if not math.isfinite(train_loss):
    raise FloatingPointError(f"non-finite training loss ({train_loss}) in round {r}; "
                             "lower --learning_rate")
  record = {"round": r, "epoch": epoch, "num_labeled": num_labeled,
            "metric": config.metric, "seed": config.seed, "dataset": config.dataset,
            "protocol": config.protocol, "classes": list(data.class_names),
            "train_s": train_s, "select_s": select_s, "eval_s": eval_s,
            "selected": selected.tolist()}
  record.update({k: json_value(v) for k, v in {**train_metrics, **test_metrics}.items()})
  return record, carry


def run_dir(workdir: str, metric: str, seed: int, single: bool) -> str:
  """Where one run of a grid writes: workdir itself for a single run."""
  return workdir if single else os.path.join(workdir, metric, f"seed_{seed}")


def run_grid(config: Config, metric_names: tuple[str, ...], seeds: tuple[int, ...],
             workdir: str, *, overwrite: bool = False, plot: bool = True,
             vmap_runs: str = "auto") -> dict:
  """Runs every (metric, seed), sharing the loaded data and the compiled functions.

  vmap_runs: "true" runs a pool grid as one vmapped program (`al_jax.grid`), "false"
  one run after another (each resuming from its own checkpoints), "auto" vmaps on
  accelerators only. A summary over seeds goes to workdir/summary.json and, when
  `plot`, PNG figures to workdir/.
  """
  config = config.with_defaults()
  for metric in metric_names:
    dataclasses.replace(config, metric=metric).validate()
  single = len(metric_names) == 1 and len(seeds) == 1
  data = prepare_data(config)
  config.check_budget(data.num_pool)
  use_vmap = {"true": True, "false": False}.get(vmap_runs, jax.default_backend() != "cpu")
  if use_vmap and config.protocol == "pool" and not single:
    from al_jax import grid  # the stacked-runs program
    runs = grid.run_pool_grid(config, metric_names, seeds, workdir, overwrite=overwrite,
                              data=data)
  else:
    runs = {}
    for metric in metric_names:
      for seed in seeds:
        one = dataclasses.replace(config, metric=metric, seed=seed)
        runs[(metric, seed)] = run(one, run_dir(workdir, metric, seed, single),
                                   overwrite=overwrite, data=data)
  summary = summarize(runs)
  _write_atomic(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=1) + "\n")
  if plot:
    from al_jax import plotting  # matplotlib only when plotting
    plotting.plot_all({m: [runs[(m, s)] for s in seeds] for m in metric_names}, workdir,
                      title=describe(config))
  return summary


def describe(config: Config) -> str:
  """A short human title, e.g. "mnist 0 vs 1, pool protocol"."""
  classes = " vs ".join(config.classes) if config.classes else "all classes"
  return f"{config.dataset} ({classes}), {config.protocol} protocol"


def summarize(runs: dict[tuple[str, int], list[dict]]) -> dict:
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
        "train_s": float(sum(x["train_s"] for r in seed_runs for x in r)),
        "select_s": float(sum(x["select_s"] for r in seed_runs for x in r)),
    }
  return summary
