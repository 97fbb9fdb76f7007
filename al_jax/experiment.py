"""The round loop: one driver for every protocol, acquisition strategy and run layout.

`run(config, workdir)` runs every (metric, seed) of a job. The runs' carries are
stacked on a leading runs axis (size 1 for a single run) and each round is one
compiled call of the protocol's round step mapped over the runs
(`al_jax.round_program`: vmap or lax.map, as `config.vmap_runs` says; both give the
same results and share one checkpoint layout, so a job resumes across a change of that
flag). `RoundLoop` is the loop one round at a time, with what a person-in-the-loop
driver needs (`al_jax.labeling`): put labels in, step, read the round's records, the
model's predictions and the strategy's ranking.

Devices (`devices`, default all): the runs axis is split over the devices and, where
devices are left over (one run, say), each run's pool scoring (and, when asked, its
training batches) is split over the rest (`al_jax.sharding.plan`). Selections equal one
device's, ties going to the lower pool index. Checkpoints hold the unpadded runs
whatever the layout, so a job resumes on another device count. With several processes
(`jax.distributed`), all compute and write their part of each checkpoint; only process
0 writes results and figures.

A pool streamed from the host (`config.streams_pool`, e.g. an npy pool on disk larger
than memory) runs the pool round in three parts (`streaming.StreamedRound`) on the
same carry, checkpoints and results.

The workdir (`al_jax.workdir`) holds config.json, checkpoints/ (the stacked carry and
the results so far, one Orbax step per round, the last three kept), the results.jsonl
files and summary.json (`al_jax.results`) and, when asked, PNG figures. Started again
with the same configuration it continues exactly where it stopped.
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from al_jax import (acquisition, datasets, model_api, model_registry, models, results, rng,
                    scoring, sharding, specs, strategies, streaming, training)
from al_jax import workdir as workdir_lib
from al_jax.checkpointing import Checkpointer
from al_jax.config import Config, ConfigError
from al_jax.round_program import pad_rows, round_program, static_config, use_vmap
from al_jax.user_training import UserTraining


@dataclasses.dataclass
class PreparedData:
  """A dataset on device, the pool padded to a multiple of the scoring chunk. A streamed
  pool (`config.streams_pool`) stays on the host: `rows` reads its images
  (`al_jax.streaming`), and `pool` holds host labels and valid only."""
  pool: dict[str, jax.Array]     # images [N', H, W, C] uint8, labels [N'], valid [N'] bool
  test: dict[str, jax.Array]     # images [M, H, W, C] uint8, labels [M]
  num_pool: int
  class_names: tuple[str, ...]
  source: str                    # where the data came from: Dataset.source
  rows: Any = None               # streamed: read(start, stop), take(rows) of pool images

  @property
  def image_shape(self) -> tuple[int, ...]:
    return self.rows.image_shape if self.rows is not None else self.pool["images"].shape[1:]


def _subset(n: int, size: int | None, key: int) -> np.ndarray:
  """Sorted indices of a fixed random subset of range(n) (all when size is None)."""
  if size is None or size >= n:
    return np.arange(n)
  rng = np.random.default_rng(key)
  return np.sort(rng.choice(n, size, replace=False))


def subset(dataset: datasets.Dataset, pool_size: int | None, test_size: int | None
           ) -> datasets.Dataset:
  """The fixed random subsets of the training and test sets that every job (every metric
  and seed) uses; the arrays themselves (an npy pool stays on disk) where no size is
  given."""
  if pool_size is not None and pool_size > len(dataset.train_labels):
    raise ConfigError(f"--pool_size={pool_size} is larger than the training set "
                      f"({len(dataset.train_labels)} images); lower it")
  pick = lambda images, labels, size, key: (images, labels) if size is None else (
      images[_subset(len(labels), size, key)], labels[_subset(len(labels), size, key)])
  train = pick(dataset.train_images, dataset.train_labels, pool_size, 0)
  test = pick(dataset.test_images, dataset.test_labels, test_size, 1)
  return dataclasses.replace(dataset, train_images=train[0], train_labels=train[1],
                             test_images=test[0], test_labels=test[1])


def prepare_data(config: Config) -> PreparedData:
  """Loads, subsets (the same pool for every metric and seed) and pads the data."""
  dataset = subset(datasets.load(config.dataset, config.data_dir, classes=config.classes,
                                image_size=config.image_size,
                                test_fraction=config.test_fraction),
                   config.pool_size, config.test_size)
  num_pool = len(dataset.train_labels)
  padded = training.round_up(num_pool, config.chunk_size)
  shape = dataset.train_images.shape[1:]
  logging.info("%s from %s: %d pool images%s, %d test images, %d classes, %s",
               config.dataset, dataset.source, num_pool,
               " (streamed from the host each round)" if config.streams_pool else "",
               len(dataset.test_labels), len(dataset.class_names),
               f"feature vectors [{shape[0]}]" if len(shape) == 1 else
               "images " + "x".join(map(str, shape)))
  if config.streams_pool:  # the images stay where they are: e.g. an npy file, read by rows
    labels = np.zeros(padded, np.int32)
    labels[:num_pool] = dataset.train_labels
    test = {"images": jnp.asarray(dataset.test_images),
            "labels": jnp.asarray(dataset.test_labels, jnp.int32)}
    pool = {"labels": labels, "valid": np.arange(padded) < num_pool}
    return PreparedData(pool, test, num_pool, dataset.class_names, dataset.source,
                        streaming.pool_rows(dataset))
  return in_memory_data(
      {"images": dataset.train_images, "labels": dataset.train_labels},
      {"images": dataset.test_images, "labels": dataset.test_labels},
      dataset.class_names, dataset.source, config.chunk_size)


def in_memory_data(pool: dict[str, np.ndarray], test: dict[str, np.ndarray],
                   class_names: tuple[str, ...], source: str, chunk_size: int
                   ) -> PreparedData:
  """PreparedData of arrays in memory, the pool padded to a multiple of chunk_size.

  pool: {"images" [N, H, W, C] uint8, "labels" [N], optional "valid" [N] bool (images
  that may be trained on or chosen; default all)}; test: {"images" [M, H, W, C],
  "labels" [M], optional "valid" [M] (those evaluated on)}."""
  num_pool = len(pool["images"])
  pad = training.round_up(num_pool, chunk_size) - num_pool
  padded = lambda x: np.concatenate([np.asarray(x), np.zeros((pad, *np.shape(x)[1:]),
                                                             np.asarray(x).dtype)])
  valid = pool.get("valid", np.ones(num_pool, bool))
  on_device = {"images": jnp.asarray(padded(pool["images"])),
               "labels": jnp.asarray(padded(pool["labels"]), jnp.int32),
               "valid": jnp.asarray(padded(np.asarray(valid, bool)))}
  test_on_device = {"images": jnp.asarray(test["images"]),
                    "labels": jnp.asarray(test["labels"], jnp.int32)}
  if "valid" in test:
    test_on_device["valid"] = jnp.asarray(test["valid"], bool)
  return PreparedData(on_device, test_on_device, num_pool, tuple(class_names), source)


def _stack(trees: list) -> Any:
  """Host arrays stacked on a new leading (runs) axis."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


class RoundLoop:
  """One job's round loop, one round at a time: the compiled mapped round step, the
  stacked carry of its runs, the data each step sees, the results so far and the Orbax
  checkpoints. `run` steps it through every round; a person-in-the-loop driver
  (`al_jax.labeling`) puts labels in before each step and reads the model back:

      loop.resume(); loop.put_labels(...); values, seconds = loop.step()
      loop.save(loop.records(values, seconds)); loop.predictions(); loop.ranking(...)

  runs: the (metric, seed) of each run; results: one list of records per run;
  next_round: the round the next `step` computes; initial: each seed's initial
  labeled pool indices.
  """

  def __init__(self, config: Config, data: PreparedData, workdir: str, *,
               keep_checkpoints: int = 3, devices: int = 0,
               data_parallel_training: bool = False,
               user_training: UserTraining | None = None):
    self.config, self.data = config, data
    self.runs = runs = config.runs
    self.layout = layout = sharding.plan(len(runs), devices, data_parallel_training)
    logging.info("%d run(s) on %s", len(runs), layout.describe())
    vmap, on_mesh = use_vmap(config.vmap_runs), layout if layout.num_devices > 1 else None
    self.program = round_program(static_config(config), len(data.class_names),
                                 tuple(data.image_shape), data.num_pool, vmap, on_mesh,
                                 user_training)
    self.protocol = self.program.protocol
    first_carry = {seed: self.protocol.initial_carry(seed, data.pool) for seed in config.seeds}
    self.initial = {seed: np.flatnonzero(np.asarray(c["labeled"])[:data.num_pool]).tolist()
                    for seed, c in first_carry.items()}
    self._carry = layout.pad_runs(layout.place(_stack([first_carry[seed] for _, seed in runs]),
                                               layout.saved_runs_sharding().spec))
    keys = np.stack([jax.random.key_data(jax.random.key(seed)) for _, seed in runs])
    metric_indices = np.array([config.metrics.index(m) for m, _ in runs], np.int32)
    self._run_inputs = layout.place({"key": pad_rows(keys, layout.padded_runs),
                                     "metric": pad_rows(metric_indices, layout.padded_runs)},
                                    jax.sharding.PartitionSpec(sharding.RUNS))
    self._data = {"pool": data.pool, "test": data.test}
    self.stream = None
    if data.rows is not None:  # a streamed pool: the round in three parts (al_jax.streaming)
      self.stream = streaming.StreamedRound(self.protocol, data, vmap, on_mesh, len(runs),
                                            {"key": keys, "metric": metric_indices})
      self._data = {"test": data.test, "stop": self.stream.stop_set}
    self.results: list[list[dict]] = [[] for _ in runs]
    self.next_round = 0
    self._step = None
    self.checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                                     max_to_keep=keep_checkpoints or None)

  def resume(self) -> int:
    """Restores the newest readable checkpoint, if any; returns the next round."""
    carry, self.results, self.next_round = self.checkpointer.resume(
        self.layout.unpad_runs(self._carry), self.results)
    self._carry = self.layout.pad_runs(carry)
    return self.next_round

  def _placed(self) -> tuple[dict, dict]:
    """carry and step data laid out on the mesh (arrays already there are kept)."""
    P = jax.sharding.PartitionSpec
    return (self.layout.place(self._carry, P(sharding.RUNS)),
            self.layout.place(self._data, P()))

  def compile(self) -> Any:
    """The compiled step, compiled (or found) once for the arguments' signature; later
    steps (whatever labels were put in) reuse it."""
    if self._step is None:
      self._carry, self._data = self._placed()
      if self.stream is not None:
        self._step, compile_s = self.stream.compile(self._carry, self._train_data(),
                                                    self._run_inputs)
      else:
        self._step, compile_s = self.program.executable(self._carry, self._data,
                                                        self._run_inputs)
      if compile_s:
        logging.info("compiled the round step of %d run(s) in %.1fs", len(self.runs),
                     compile_s)
    return self._step

  def put_labels(self, pool: dict[str, np.ndarray], test: dict[str, np.ndarray] | None = None
                 ) -> None:
    """Labels from outside (a person) for the next `step`, of every run.

    pool: {"labels" [N] int (any value where unlabeled), "labeled" [N] bool (the
    training set), "valid" [N] bool (the images that may be trained on or chosen)};
    test: {"labels" [M], "valid" [M] bool (those evaluated on)}, or None to keep it."""
    if self.stream is not None:
      raise ValueError("a pool streamed from the host takes no labels from outside; "
                       "load it in memory (--stream_pool=false)")
    n, padded = self.data.num_pool, self._data["pool"]["valid"].shape[0]
    pad = lambda x, dtype: np.concatenate([np.asarray(x, dtype),
                                           np.zeros(padded - n, dtype)])
    self._data = {
        "pool": {**self._data["pool"], "labels": jnp.asarray(pad(pool["labels"], np.int32)),
                 "valid": jnp.asarray(pad(pool["valid"], bool))},
        "test": self._data["test"] if test is None else {
            **self._data["test"], "labels": jnp.asarray(test["labels"], jnp.int32),
            "valid": jnp.asarray(test["valid"], bool)}}
    labeled = pad(pool["labeled"], bool)
    self._carry = {**self._carry, "labeled": jnp.asarray(
        np.broadcast_to(labeled, self._carry["labeled"].shape))}

  def step(self) -> tuple[dict[str, np.ndarray], float]:
    """Computes round `next_round` of every run: (round metrics [R, ...], seconds).

    The carry advances; the results and `next_round` only in `save`."""
    step = self.compile()
    self._carry, self._data = self._placed()
    t = time.perf_counter()
    if self.stream is not None:
      self._carry, round_metrics = self.stream.step(
          step, self._carry, self._train_data(), self._run_inputs, self.layout,
          round_index=self.next_round, query=self.next_round + 1 < self.protocol.num_rounds)
    else:
      self._carry, round_metrics = jax.block_until_ready(
          step(self._carry, self._data, self._run_inputs))
    seconds = time.perf_counter() - t
    values = jax.tree.map(lambda x: sharding.local_value(x)[:len(self.runs)], round_metrics)
    _check_finite(values["train_loss"], self.runs, self.next_round)
    return values, seconds

  def _train_data(self) -> dict:
    """A streamed round's training data: the step data and the runs' labeled images."""
    return self.layout.place({**self._data, "labeled": self.stream.labeled(self._carry)},
                             jax.sharding.PartitionSpec())

  def records(self, values: dict[str, np.ndarray], seconds: float) -> list[dict]:
    """The records of round `next_round` (one per run, `results.round_record`) from the
    values and seconds of `step`; round 0's also hold the initial labeled set."""
    out = []
    for i, (metric, seed) in enumerate(self.runs):
      record = results.round_record(
          round_index=self.next_round, metric=metric, seed=seed,
          dataset=self.config.dataset, protocol=self.config.protocol,
          classes=self.data.class_names, source=self.data.source,
          num_pool=self.data.num_pool, seconds=seconds / len(self.runs),
          values={k: v[i] for k, v in values.items()})
      if self.next_round == 0:
        record["initial_labeled"] = self.initial[seed]
      out.append(record)
    return out

  def save(self, records: list[dict], *, wait: bool = False) -> None:
    """Appends one record per run, advances `next_round` and checkpoints (asynchronously
    unless `wait`)."""
    for i, record in enumerate(records):
      self.results[i].append(record)
    self.next_round += 1
    self.checkpointer.save(self.next_round, self.layout.unpad_runs(self._carry),
                           {"next_round": self.next_round, "results": self.results})
    if wait:
      self.checkpointer.manager.wait_until_finished()

  def model(self, run: int = 0) -> training.TrainState:
    """Run `run`'s latest model (trained in the last round stepped)."""
    return jax.tree.map(lambda x: x[run], self._carry["train_state"])

  def _pool_images(self) -> jax.Array:
    if self.stream is not None:
      raise ValueError("predictions of a pool streamed from the host are not kept; load "
                       "it in memory (--stream_pool=false)")
    return self._data["pool"]["images"]

  def predictions(self, run: int = 0) -> np.ndarray:
    """Class probabilities [N, C] of the pool images by run `run`'s latest model."""
    probs = _pool_probs(self.model(run), self._pool_images(), self.config.chunk_size)
    return np.asarray(probs)[:self.data.num_pool]

  def ranking(self, available: np.ndarray, run: int = 0) -> tuple[acquisition.Selection, bool]:
    """Run `run`'s strategy on its latest model and labeled set, among `available` [N]
    bool images, with the key of round `next_round`: (Selection, every_image). A
    per-image strategy ranks every available image, best first (every_image True); a
    joint one (batchbald, coreset, badge, stochastic_*) chooses one batch of
    `query_size` images together, as its next query would (every_image False)."""
    images = self._pool_images()
    metric, seed = self.runs[run]
    strategy = self.protocol.strategies[self.config.metrics.index(metric)]
    every_image = strategies.streams(metric)
    if every_image:  # a ranking by a per-image score: all of it
      strategy = dataclasses.replace(strategy, k=max(1, int(np.sum(available))))
    mask = np.zeros(images.shape[0], bool)
    mask[:self.data.num_pool] = available
    key = rng.stream_key(jax.random.key(seed), rng.QUERY, self.next_round)
    selection = jax.jit(strategy)(self.model(run), images, jnp.asarray(mask), key,
                                  self._carry["labeled"][run])
    return acquisition.Selection(*map(np.asarray, selection)), every_image

  def close(self) -> None:
    self.checkpointer.close()


@functools.partial(jax.jit, static_argnames="chunk_size")
def _pool_probs(state: training.TrainState, images: jax.Array, chunk_size: int) -> jax.Array:
  """Class probabilities of the whole pool, chunk by chunk.  [N, ...] -> [N, C]."""
  return scoring.map_pool(lambda chunk, _: scoring.predict_probs(state, chunk), images,
                          chunk_size=chunk_size)


def run(config: Config, workdir: str, *, overwrite: bool = False,
        data: PreparedData | None = None, plot: bool = False,
        keep_checkpoints: int = 3, devices: int = 0,
        data_parallel_training: bool = False,
        on_round: Callable[[int, list[dict]], None] | None = None,
        user_training: UserTraining | None = None) -> results.Runs:
  """Runs (or resumes) every (metric, seed) of `config`; returns the records by run.

  `data` reuses an already loaded data set; `keep_checkpoints` rounds of checkpoints are
  kept (0: all); `devices`: how many of `jax.devices()` to use (0: all);
  `data_parallel_training`: split training batches over the devices of a run too
  (`sharding.plan`); `on_round(round, records)`: called after each round is saved and
  written, with one record per run (an exception it raises stops the job there, as a
  kill between rounds would); `user_training`: a user's optimiser, loss or train step
  (`al_jax.user_training`; give it again to resume). Writes the workdir described above
  (process 0 only, when there are several).
  """
  data = data or prepare_data(config)
  config.check_budget(data.num_pool)
  check_model(config, data)
  writer = jax.process_index() == 0
  workdir_lib.check_workdir(config, workdir, overwrite, write=writer)
  loop = RoundLoop(config, data, workdir, keep_checkpoints=keep_checkpoints, devices=devices,
                   data_parallel_training=data_parallel_training,
                   user_training=user_training)
  runs = loop.runs
  try:
    start = loop.resume()
    loop.compile()
    started = time.perf_counter()
    for r in range(start, loop.protocol.num_rounds):
      values, seconds = loop.step()
      records = loop.records(values, seconds)
      loop.save(records)
      for (metric, seed), run_records in zip(runs, loop.results):
        if writer:
          results.write_results(workdir_lib.run_dir(config, workdir, metric, seed),
                                run_records)
      _log_round(config, r, values, seconds, started, start)
      if on_round is not None:
        on_round(r, records)
  finally:
    loop.close()
  by_run = dict(zip(runs, loop.results))
  if not writer:
    return by_run
  results.write_summary(workdir, by_run)
  if plot:
    from al_jax import plotting  # pylint: disable=import-outside-toplevel  (matplotlib)
    plotting.plot_all({m: [by_run[(m, s)] for s in config.seeds] for m in config.metrics},
                      workdir, title=describe(config))
  return by_run


def check_model(config: Config, data: PreparedData) -> None:
  """ConfigError (one line) unless the job's model maps the data's images to logits of
  its classes and has what its strategies need (`model_api.check`); al_jax's own CNNs
  declare it all and are not run."""
  name = config.model_name(tuple(data.image_shape))
  if len(data.image_shape) == 1 and (config.augment_shift or config.augment_degrees):
    raise ConfigError("--augment_shift and --augment_degrees shift and rotate images, and "
                      f"this data set holds feature vectors [{data.image_shape[0]}]; set "
                      "both to 0")
  if name in models.MODELS:
    if (name == "mlp") != (len(data.image_shape) == 1):
      holds = ("feature vectors [D]" if len(data.image_shape) == 1 else "images [H, W, C]")
      raise ConfigError(f"--model={name} takes {'feature vectors' if name == 'mlp' else 'images'}"
                        f" but this data set holds {holds}; leave --model unset to take "
                        "the data set's own")
    return
  needs = {strategies.get(m).needs for m in config.metrics}
  if config.ensemble_size > 1:  # an ensemble's members are its samples
    needs.discard("samples")
  try:
    model = model_registry.create(name, specs.get(config.dataset), len(data.class_names))
    model_api.check(model, tuple(data.image_shape), len(data.class_names),
                    tuple(sorted(needs)))
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _check_finite(train_loss: np.ndarray, runs: tuple, r: int) -> None:
  bad = [f"{m} seed {s}" for (m, s), loss in zip(runs, train_loss) if not np.isfinite(loss)]
  if bad:
    raise FloatingPointError(f"non-finite training loss in round {r} ({', '.join(bad)}); "
                             "lower --learning_rate")


def _log_round(config: Config, r: int, values: dict, seconds: float, started: float,
               start: int) -> None:
  total = config.num_rounds
  left = (time.perf_counter() - started) / (r + 1 - start) * (total - r - 1)
  acc = values["test_accuracy"]
  accuracy = (f"test accuracy {acc[0]:.4f}" if acc.size == 1 else
              f"test accuracy {acc.min():.4f}..{acc.max():.4f} over {acc.size} runs")
  logging.info("%s %d/%d: labeled %d, %s (%.1fs), about %.0fs left",
               "round" if config.protocol == "pool" else "epoch", r + 1, total,
               int(values["num_labeled"].max()), accuracy, seconds, left)


def describe(config: Config) -> str:
  """A short human title, e.g. "mnist (0 vs 1), pool protocol"."""
  classes = " vs ".join(config.classes) if config.classes else "all classes"
  return f"{config.dataset} ({classes}), {config.protocol} protocol"
