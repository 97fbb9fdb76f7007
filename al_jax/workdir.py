"""A job's workdir: where each run writes, and the check that a workdir holds this job.

A workdir holds config.json, checkpoints/ (`al_jax.checkpointing`), one results.jsonl per
run (the workdir itself for a single run, else <metric>/seed_<s>/, `al_jax.results`),
summary.json and, when asked, PNG figures.
"""

import json
import os
import shutil

import jax

from al_jax import acquisition, results
from al_jax.config import RESUMABLE_CHANGES, Config, ConfigError, completed


def run_dir(config: Config, workdir: str, metric: str, seed: int) -> str:
  """Where one run writes its results: workdir itself for a job of a single run."""
  if len(config.runs) == 1:
    return workdir
  return os.path.join(workdir, metric, f"seed_{seed}")


def check_workdir(config: Config, workdir: str, overwrite: bool, write: bool = True) -> None:
  """Refuses a workdir that holds a job of another configuration (unless overwrite).
  With several processes, process 0 (`write`) clears and writes; all check."""
  path = os.path.join(workdir, "config.json")
  if overwrite and write and os.path.isdir(workdir):
    _remove_job(workdir)
  sync("al_jax: workdir cleared")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    saved, mine = completed(saved, config), config.to_dict()
    differ = sorted(k for k in set(saved) | set(mine)
                    if k not in RESUMABLE_CHANGES and saved.get(k) != mine.get(k))
    if differ:
      shown = ", ".join(f"{k}={saved.get(k)!r} (now {mine.get(k)!r})" for k in differ[:4])
      hint = (f" (it was made with --recipe={saved['recipe']})"
              if "recipe" in differ else "")
      raise ConfigError(f"workdir {workdir} holds a run with another configuration ({shown})"
                        f"{hint}; use another --workdir or pass --overwrite to start afresh")
  sync("al_jax: workdir checked")
  if write:
    os.makedirs(workdir, exist_ok=True)
    results.write_atomic(path, json.dumps(config.to_dict(), sort_keys=True) + "\n")


def sync(name: str) -> None:
  """Waits for every process (a no-op with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def _remove_job(workdir: str) -> None:
  """Deletes what `experiment.run` writes in `workdir` (and nothing else the folder holds)."""
  for name in os.listdir(workdir):
    target = os.path.join(workdir, name)
    ours = (name in ("checkpoints", "config.json", "results.jsonl", "summary.json")
            or name.endswith(".png") or name in acquisition.NAMES)
    if ours and os.path.isdir(target):
      shutil.rmtree(target)
    elif ours:
      os.remove(target)
