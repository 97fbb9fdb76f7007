"""Many pool runs (metrics x seeds) as one compiled program.

The carries of all runs are stacked on a leading axis and every phase of a round (train,
evaluate, query) is one `jax.vmap`-ed, jitted call over the runs: each run keeps its own
key, labeled mask and metric (a traced index, so five metrics share one program). The
data are shared, not copied. Per run, the results equal those of `experiment.run`
(same keys, same functions); `tests/test_grid.py` checks it.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from al_jax import experiment, metrics, protocols, training
from al_jax.checkpointing import Checkpointer
from al_jax.config import Config, ConfigError


class PoolGrid:
  """The pool protocol's round functions, vmapped over stacked runs."""

  def __init__(self, config: Config, num_classes: int, image_shape: tuple[int, ...]):
    one = protocols.PoolProtocol(config, num_classes, image_shape)
    self.config = config
    self.init_state = jax.jit(jax.vmap(one._init_state))
    fit = functools.partial(training.fit, epochs=config.epochs_per_round,
                            batch_size=config.batch_size)
    self.fit = jax.jit(jax.vmap(fit, in_axes=(0, None, None, 0, 0)), donate_argnums=0)
    self.evaluate = jax.jit(jax.vmap(one.evaluate, in_axes=(0, None, None)))
    self.query = jax.jit(jax.vmap(one._query, in_axes=(0, None, None, 0, 0)))

  def train(self, carry: dict, r: int, seed_keys: jax.Array, pool: dict) -> tuple[dict, dict]:
    state = carry["train_state"]
    if not self.config.keep_training:
      state = self.init_state(_stream(seed_keys, protocols.INIT, r))
    state, train_metrics = self.fit(state, pool["images"], pool["labels"], carry["labeled"],
                                    _stream(seed_keys, protocols.TRAIN, r))
    return {**carry, "train_state": state}, train_metrics

  def select(self, carry: dict, r: int, seed_keys: jax.Array, pool: dict,
             metric_indices: jax.Array) -> tuple[dict, jax.Array]:
    return self.query(carry, pool["images"], pool["valid"], metric_indices,
                      _stream(seed_keys, protocols.QUERY, r))


def _stream(seed_keys: jax.Array, stream: int, step: int) -> jax.Array:
  return jax.vmap(protocols.stream_key, in_axes=(0, None, None))(seed_keys, stream, step)


def run_pool_grid(config: Config, metric_names: tuple[str, ...], seeds: tuple[int, ...],
                  workdir: str, *, overwrite: bool = False,
                  data: experiment.PreparedData | None = None,
                  stop_after: int | None = None) -> dict[tuple[str, int], list[dict]]:
  """Runs every (metric, seed) of the pool protocol together; resumable like `run`.

  Writes workdir/<metric>/seed_<s>/results.jsonl (as `experiment.run_grid` does) and
  checkpoints the stacked carry in workdir/grid_checkpoints. Returns the records by run.
  """
  config = config.with_defaults()
  if config.protocol != "pool":
    raise ConfigError("the vmapped grid runs the pool protocol; use --vmap_runs=false "
                      "for --protocol=reselect")
  runs = [(m, s) for m in metric_names for s in seeds]
  for metric, seed in runs:
    dataclasses.replace(config, metric=metric, seed=seed).validate()
  data = data or experiment.prepare_data(config)
  config.check_budget(data.num_pool)
  grid_config = dataclasses.replace(config, metric=",".join(metric_names),
                                    seed=-1, data_dir=None)
  dirs = [experiment.run_dir(workdir, m, s, single=False) for m, s in runs]
  _check_grid_workdir(grid_config, workdir, dirs, overwrite)

  image_shape = tuple(data.pool["images"].shape[1:])
  grid = PoolGrid(protocols.shared_config(config), len(data.class_names), image_shape)
  seed_keys = jax.vmap(jax.random.key)(jnp.array([s for _, s in runs]))
  metric_indices = jnp.array([metrics.index(m) for m, _ in runs], jnp.int32)
  labels, valid = np.asarray(data.pool["labels"]), np.asarray(data.pool["valid"])
  labeled = np.stack([protocols.initial_labeled(labels, valid, config.initial_size,
                                                jax.random.key(s), config.class_balanced_init)
                      for _, s in runs])
  carry = {"train_state": grid.init_state(_stream(seed_keys, protocols.INIT, 0)),
           "labeled": jnp.asarray(labeled)}
  checkpointer = Checkpointer(os.path.join(workdir, "grid_checkpoints"))
  carry, results, start = checkpointer.resume(carry, [[] for _ in runs])

  for r in range(start, config.rounds):
    if stop_after is not None and r - start >= stop_after:
      break
    num_labeled = np.asarray(jnp.sum(carry["labeled"], axis=1))
    (carry, train_metrics), train_s = experiment.timed(grid.train, carry, r, seed_keys, data.pool)
    test_metrics, eval_s = experiment.timed(grid.evaluate, carry["train_state"], data.test["images"],
                                  data.test["labels"])
    selected, select_s = np.zeros((len(runs), 0), int), 0.0
    if r + 1 < config.rounds:
      (carry, selected), select_s = experiment.timed(grid.select, carry, r, seed_keys, data.pool,
                                           metric_indices)
      selected = np.asarray(selected)
    values = jax.tree.map(np.asarray, {**train_metrics, **test_metrics})
    for i, (metric, seed) in enumerate(runs):
      chosen = selected[i][selected[i] < data.num_pool]
      record = {"round": r, "epoch": (r + 1) * config.epochs_per_round,
                "num_labeled": int(num_labeled[i]), "metric": metric, "seed": seed,
                "dataset": config.dataset, "protocol": config.protocol,
                "classes": list(data.class_names), "train_s": train_s / len(runs),
                "select_s": select_s / len(runs), "eval_s": eval_s / len(runs),
                "selected": chosen.tolist()}
      record.update({k: experiment.json_value(v[i]) for k, v in values.items()})
      results[i].append(record)
    if not np.all(np.isfinite(values["train_loss"])):
      raise FloatingPointError(f"non-finite training loss in round {r}; lower --learning_rate")
    checkpointer.save(r + 1, carry, {"next_round": r + 1, "results": results})
    for d, records in zip(dirs, results):
      experiment.write_results(d, records)
    logging.info("grid of %d runs, round %d/%d: train %.1fs, select %.1fs, test accuracy "
                 "%.3f..%.3f", len(runs), r + 1, config.rounds, train_s, select_s,
                 values["test_accuracy"].min(), values["test_accuracy"].max())
  checkpointer.close()
  return dict(zip(runs, results))


def _check_grid_workdir(grid_config: Config, workdir: str, dirs: list[str],
                        overwrite: bool) -> None:
  """The grid's own config check, and each run folder's config.json for the plots."""
  if overwrite:
    import shutil
    shutil.rmtree(os.path.join(workdir, "grid_checkpoints"), ignore_errors=True)
    for d in dirs:
      shutil.rmtree(d, ignore_errors=True)
  experiment.check_workdir(grid_config, os.path.join(workdir, "grid"), overwrite)
  for d in dirs:
    os.makedirs(d, exist_ok=True)
