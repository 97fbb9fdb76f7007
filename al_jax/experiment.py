"""The round loop: one driver for every protocol, acquisition strategy and run layout.

`run(config, workdir)` runs every (metric, seed) of a job. The runs' carries are
stacked on a leading runs axis (size 1 for a single run) and each round is one jitted
call of the protocol's `round_step`, mapped over the runs: `jax.vmap` (all runs as one
program, fast on GPU/TPU) or `lax.map` (one after another inside the same program,
faster on CPU), as `config.vmap_runs` says. Both give the same results and share one
checkpoint layout, so a job resumes across a change of that flag. `RoundLoop` holds
the loop's parts, so that one round can also be stepped from outside with new labels
(`al_jax.labeling`, a person in the loop).

Devices (`devices`, default all): the runs axis is split over the devices and, where
devices are left over (one run, say), each run's pool scoring (and, when asked, its
training batches) is split over the rest (`al_jax.sharding.plan`). Selections equal one
device's, ties going to the lower pool index. Checkpoints hold the unpadded runs whatever the layout, so a
job resumes on another device count. With several processes (`jax.distributed`), all
compute and write their part of each checkpoint; only process 0 writes results and
figures.

A pool streamed from the host (`config.streams_pool`, e.g. an npy pool on disk larger
than memory) runs the pool round in three parts (`_Streamed`, `al_jax.streaming`) on the
same carry, checkpoints and results.

A workdir holds config.json, checkpoints/ (the stacked carry and the results so far,
one Orbax step per round, the last three kept), one results.jsonl per run (the workdir
itself for a single run, else <metric>/seed_<s>/), summary.json and, when asked,
PNG figures. Started again with the same configuration it continues exactly where it
stopped.
"""

import dataclasses
import functools
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
from jax import lax

from al_jax import acquisition, datasets, protocols, scoring, sharding, streaming, training
from al_jax.checkpointing import Checkpointer
from al_jax.config import RESUMABLE_CHANGES, Config, ConfigError, completed

Runs = dict[tuple[str, int], list[dict]]


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
  padded = -(-num_pool // config.chunk_size) * config.chunk_size
  pad = padded - num_pool
  labels = np.concatenate([dataset.train_labels, np.zeros((pad,), dataset.train_labels.dtype)])
  test = {"images": jnp.asarray(dataset.test_images),
          "labels": jnp.asarray(dataset.test_labels, jnp.int32)}
  logging.info("%s from %s: %d pool images%s, %d test images, %d classes, images %s",
               config.dataset, dataset.source, num_pool,
               " (streamed from the host each round)" if config.streams_pool else "",
               len(dataset.test_labels), len(dataset.class_names),
               "x".join(map(str, dataset.train_images.shape[1:])))
  if config.streams_pool:  # the images stay where they are (e.g. an npy file, read by rows)
    pool = {"labels": labels.astype(np.int32), "valid": np.arange(padded) < num_pool}
    return PreparedData(pool, test, num_pool, dataset.class_names, dataset.source,
                        streaming.pool_rows(dataset))
  images = np.concatenate([dataset.train_images,
                           np.zeros((pad, *dataset.train_images.shape[1:]), np.uint8)])
  pool = {"images": jnp.asarray(images), "labels": jnp.asarray(labels, jnp.int32),
          "valid": jnp.asarray(np.arange(padded) < num_pool)}
  return PreparedData(pool, test, num_pool, dataset.class_names, dataset.source)


def json_value(x: Any) -> Any:
  """Arrays -> lists, NaN -> None, so that results are valid JSON."""
  x = np.asarray(x)
  if x.ndim == 0:
    v = x.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v
  return [json_value(v) for v in x]


def _write_atomic(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_results(workdir: str, results: list[dict]) -> None:
  """Rewrites workdir/results.jsonl atomically (a killed run never leaves half a line)."""
  os.makedirs(workdir, exist_ok=True)
  _write_atomic(os.path.join(workdir, "results.jsonl"),
                "".join(json.dumps(r) + "\n" for r in results))


def read_results(path: str) -> list[dict]:
  """The records of a results.jsonl file (or of workdir/results.jsonl)."""
  if os.path.isdir(path):
    path = os.path.join(path, "results.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
  _sync("al_jax: workdir cleared")
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
  _sync("al_jax: workdir checked")
  if write:
    os.makedirs(workdir, exist_ok=True)
    _write_atomic(path, json.dumps(config.to_dict(), sort_keys=True) + "\n")


def _sync(name: str) -> None:
  """Waits for every process (a no-op with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _remove_job(workdir: str) -> None:
  """Deletes what `run` writes in `workdir` (and nothing else the folder holds)."""
  for name in os.listdir(workdir):
    target = os.path.join(workdir, name)
    ours = (name in ("checkpoints", "config.json", "results.jsonl", "summary.json")
            or name.endswith(".png") or name in acquisition.NAMES)
    if ours and os.path.isdir(target):
      shutil.rmtree(target)
    elif ours:
      os.remove(target)


def use_vmap(vmap_runs: str) -> bool:
  """The run layout: vmap on "true", lax.map on "false", "auto": vmap off CPU only."""
  return {"true": True, "false": False}.get(vmap_runs, jax.default_backend() != "cpu")


def mapped_round_step(protocol: protocols.Protocol, vmap: bool, round_step=None):
  """round_step over stacked runs: (carry [R, ...], data, runs [R]) -> (carry, metrics [R]).

  runs["key"] holds the runs' root keys as key data (uint32 [R, 2]), so that it can be
  placed on a mesh like any array. `round_step` (carry, data, run) -> (carry, metrics):
  the protocol's unless given (a part of a streamed round, `al_jax.streaming`)."""
  round_step = round_step or protocol.round_step

  def step(carry: dict, data: dict, runs: dict) -> tuple[dict, dict]:
    runs = {**runs, "key": jax.random.wrap_key_data(runs["key"])}
    one = lambda c, run: round_step(c, data, run)
    if vmap:
      return jax.vmap(one)(carry, runs)
    return lax.map(lambda c_run: one(*c_run), (carry, runs))
  return step


def laid_out_round_step(protocol: protocols.Protocol, vmap: bool,
                        layout: sharding.Layout | None, round_step=None):
  """`mapped_round_step` on `layout`: each "runs" group maps over its own runs
  (`shard_map` over "runs" only, "data" left to XLA); metrics come back replicated."""
  step = mapped_round_step(protocol, vmap, round_step)
  if layout is None or layout.runs_devices == 1:
    return step

  def group(carry, data, runs):
    carry, metrics = step(carry, data, runs)
    return carry, jax.tree.map(lambda x: lax.all_gather(x, sharding.RUNS, tiled=True),
                               metrics)

  P = jax.sharding.PartitionSpec
  return jax.shard_map(group, mesh=layout.mesh, axis_names={sharding.RUNS},
                       in_specs=(P(sharding.RUNS), P(), P(sharding.RUNS)),
                       out_specs=(P(sharding.RUNS), P()), check_vma=False)


class RoundProgram:
  """A protocol and its mapped round step, compiled ahead of time once per argument
  signature (shapes, dtypes, placements), so that compilation is timed apart from the
  rounds and a resumed job reuses the executable. `layout` None: one device.
  `round_step`: another step than the protocol's (`mapped_round_step`)."""

  def __init__(self, protocol: protocols.Protocol, vmap: bool,
               layout: sharding.Layout | None = None, round_step=None):
    self.protocol = protocol
    self.layout = layout
    out_shardings = None
    if layout is not None:
      P = jax.sharding.PartitionSpec
      out_shardings = (layout.sharding(P(sharding.RUNS)), layout.sharding(P()))
    self._jitted = jax.jit(laid_out_round_step(protocol, vmap, layout, round_step),
                           donate_argnums=0,
                           out_shardings=out_shardings)
    self._executables = {}

  @property
  def num_compiled(self) -> int:
    """Executables compiled so far (one per argument signature)."""
    return len(self._executables)

  def executable(self, *args) -> tuple[Any, float]:
    """(compiled step for args, seconds spent compiling now: 0 when reused)."""
    signature = tuple((x.shape, x.dtype, x.sharding) for x in jax.tree.leaves(args))
    if signature in self._executables:
      return self._executables[signature], 0.0
    t = time.perf_counter()
    if self.layout is None:
      self._executables[signature] = self._jitted.lower(*args).compile()
    else:
      # The "data" axis seen by the round step, and whether fit splits batches over it.
      with jax.set_mesh(self.layout.mesh), training.data_parallel_training(
          self.layout.split_training):
        self._executables[signature] = self._jitted.lower(*args).compile()
    return self._executables[signature], time.perf_counter() - t


def round_program(config: Config, num_classes: int, image_shape: tuple[int, ...],
                  num_valid: int, vmap: bool, layout: sharding.Layout | None = None
                  ) -> RoundProgram:
  """The RoundProgram of `config`. Jobs that differ only in seeds, data folder or run
  layout flag share it (and its compiled code); call with `static_config(config)`.
  `layout`: the devices (None: one device)."""
  return _round_program(config, num_classes, image_shape, num_valid, vmap, layout)


@functools.lru_cache(maxsize=8)
def _round_program(config, num_classes, image_shape, num_valid, vmap, layout):
  return RoundProgram(protocols.make_protocol(config, num_classes, image_shape, num_valid),
                      vmap, layout)


def static_config(config: Config) -> Config:
  """`config` with the fields that do not change compiled code reset."""
  return dataclasses.replace(config, seeds=(0,), data_dir=None, vmap_runs="auto")


def _stack(trees: list) -> Any:
  """Host arrays stacked on a new leading (runs) axis."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """x [R, ...] with row 0 repeated up to `rows` rows."""
  return np.concatenate([x] + [x[:1]] * (rows - len(x)))


class RoundLoop:
  """The moving parts of one job's round loop: the compiled mapped round step, the
  stacked carry of its runs, their inputs, the data each step sees, the results so far
  and the Orbax checkpoints. `run` steps it through every round; `al_jax.labeling` steps
  it one round at a time, putting a person's labels into `step_data` and `carry` first.

  carry: the runs' carries stacked [R, ...]; step_data: {"pool", "test"} as the
  protocol's round_step takes it; results: one list of records per run; next_round:
  the round the next `step` computes.
  """

  def __init__(self, config: Config, data: PreparedData, workdir: str, *,
               keep_checkpoints: int = 3, devices: int = 0,
               data_parallel_training: bool = False):
    self.config = config
    self.runs = runs = config.runs
    self.layout = layout = sharding.plan(len(runs), devices, data_parallel_training)
    logging.info("%d run(s) on %s", len(runs), layout.describe())
    vmap, on_mesh = use_vmap(config.vmap_runs), layout if layout.num_devices > 1 else None
    self.program = round_program(static_config(config), len(data.class_names),
                                 tuple(data.image_shape), data.num_pool, vmap, on_mesh)
    self.protocol = self.program.protocol
    first_carry = {seed: self.protocol.initial_carry(seed, data.pool) for seed in config.seeds}
    self.initial = {seed: np.flatnonzero(np.asarray(c["labeled"])[:data.num_pool]).tolist()
                    for seed, c in first_carry.items()}
    self.carry = layout.pad_runs(layout.place(_stack([first_carry[seed] for _, seed in runs]),
                                              layout.saved_runs_sharding().spec))
    keys = np.stack([jax.random.key_data(jax.random.key(seed)) for _, seed in runs])
    metric_indices = np.array([config.metrics.index(m) for m, _ in runs], np.int32)
    self.run_inputs = layout.place({"key": _pad_rows(keys, layout.padded_runs),
                                    "metric": _pad_rows(metric_indices, layout.padded_runs)},
                                   jax.sharding.PartitionSpec(sharding.RUNS))
    self.step_data = {"pool": data.pool, "test": data.test}
    self.stream = None
    if data.rows is not None:  # a streamed pool: the round in three parts (al_jax.streaming)
      self.stream = _Streamed(self.protocol, data, vmap, on_mesh, len(runs),
                              {"key": keys, "metric": metric_indices})
      self.step_data = {"test": data.test, "stop": self.stream.stop_set}
    self.results: list[list[dict]] = [[] for _ in runs]
    self.next_round = 0
    self._step = None
    self.checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                                     max_to_keep=keep_checkpoints or None)

  def resume(self) -> int:
    """Restores the newest readable checkpoint, if any; returns the next round."""
    carry, self.results, self.next_round = self.checkpointer.resume(
        self.layout.unpad_runs(self.carry), self.results)
    self.carry = self.layout.pad_runs(carry)
    return self.next_round

  def _placed(self) -> tuple[dict, dict]:
    """carry and step_data laid out on the mesh (arrays already there are kept, so a
    carry or labels set from outside need no care about devices)."""
    P = jax.sharding.PartitionSpec
    return (self.layout.place(self.carry, P(sharding.RUNS)),
            self.layout.place(self.step_data, P()))

  def compile(self) -> Any:
    """The compiled step, compiled (or found) once for the arguments' signature; later
    steps reuse it, so new arrays in `carry` or `step_data` must keep their shapes."""
    if self._step is None:
      self.carry, self.step_data = self._placed()
      if self.stream is not None:
        self._step, compile_s = self.stream.compile(self.carry, self._train_data(),
                                                    self.run_inputs)
      else:
        self._step, compile_s = self.program.executable(self.carry, self.step_data,
                                                        self.run_inputs)
      if compile_s:
        logging.info("compiled the round step of %d run(s) in %.1fs", len(self.runs),
                     compile_s)
    return self._step

  def step(self) -> tuple[dict[str, np.ndarray], float]:
    """Computes round `next_round` of every run: (round metrics [R, ...], seconds).

    The carry advances; the results and `next_round` only in `save`."""
    step = self.compile()
    self.carry, self.step_data = self._placed()
    t = time.perf_counter()
    if self.stream is not None:
      self.carry, round_metrics = self.stream.step(
          step, self.carry, self._train_data(), self.run_inputs, self.layout,
          round_index=self.next_round, query=self.next_round + 1 < self.protocol.num_rounds)
    else:
      self.carry, round_metrics = jax.block_until_ready(
          step(self.carry, self.step_data, self.run_inputs))
    seconds = time.perf_counter() - t
    values = jax.tree.map(lambda x: sharding.local_value(x)[:len(self.runs)], round_metrics)
    _check_finite(values["train_loss"], self.runs, self.next_round)
    return values, seconds

  def _train_data(self) -> dict:
    """A streamed round's training data: step_data and the runs' labeled images."""
    return self.layout.place({**self.step_data, "labeled": self.stream.labeled(self.carry)},
                             jax.sharding.PartitionSpec())

  def save(self, records: list[dict], *, wait: bool = False) -> None:
    """Appends one record per run, advances `next_round` and checkpoints (asynchronously
    unless `wait`)."""
    for i, record in enumerate(records):
      self.results[i].append(record)
    self.next_round += 1
    self.checkpointer.save(self.next_round, self.layout.unpad_runs(self.carry),
                           {"next_round": self.next_round, "results": self.results})
    if wait:
      self.checkpointer.manager.wait_until_finished()

  def close(self) -> None:
    self.checkpointer.close()


class _Streamed:
  """The parts of a round on a streamed pool (`al_jax.streaming`): the compiled training
  and labeling steps over the stacked runs (as `RoundProgram`s, on the job's layout),
  and the process-local scorer of this process's range of the pool between them."""

  def __init__(self, protocol: protocols.PoolProtocol, data: PreparedData, vmap: bool,
               layout: sharding.Layout | None, num_runs: int, runs: dict[str, np.ndarray]):
    cfg, padded = protocol.config, len(data.pool["valid"])
    self.data, self.num_runs, self.runs = data, num_runs, runs
    self.train = RoundProgram(protocol, vmap, layout, streaming.train_step(protocol))
    self.finish = RoundProgram(protocol, vmap, layout, streaming.finish_step(protocol))
    self.scorer = streaming.Scorer(protocol, vmap, data.num_pool, padded)
    self.k = cfg.query_size
    self.per_run = min(cfg.labels_needed, padded)          # labeled rows of one run, at most
    self.buffer = min(num_runs * cfg.labels_needed, padded)  # of all runs together
    stop = protocols.stop_set_size(padded, cfg.chunk_size)
    self.stop_set = {"images": data.rows.read(0, stop), "valid": data.pool["valid"][:stop]}
    self._rows = None

  def labeled(self, carry: dict) -> dict:
    """The runs' labeled images, the union of their labeled rows (`labeled_buffer`)."""
    self._rows = streaming.local_copy(
        streaming.labeled_rows(carry["labeled"], size=self.per_run), self.num_runs)
    return streaming.labeled_buffer(self._rows, self.buffer, self.data.pool["labels"],
                                    self.data.rows)

  def _best_inputs(self, run_inputs: dict, best: tuple, layout: sharding.Layout) -> dict:
    best = tuple(_pad_rows(np.asarray(x), layout.padded_runs) for x in best)
    return layout.place({**run_inputs, "best": best}, jax.sharding.PartitionSpec(sharding.RUNS))

  def compile(self, carry, train_data, run_inputs) -> tuple[dict, float]:
    train, train_s = self.train.executable(carry, train_data, run_inputs)
    return {"train": train, "finish": None}, train_s

  def step(self, compiled: dict, carry, train_data, run_inputs, layout: sharding.Layout, *,
           round_index: int, query: bool) -> tuple[dict, dict]:
    """Round `round_index`: train and evaluate, score the pool (unless `query` is False:
    the last round queries nothing), label the selection."""
    carry, metrics = compiled["train"](carry, train_data, run_inputs)
    if query:
      states = streaming.local_copy(carry["train_state"], self.num_runs)
      best = streaming.merge_processes(self.scorer.top_k(
          states, self._rows, self.runs, round_index, self.data.rows))
    else:
      best = tuple(np.broadcast_to(np.asarray(x), (self.num_runs, self.k))
                   for x in scoring.empty_top_k(self.k))
    inputs = self._best_inputs(run_inputs, best, layout)
    if compiled["finish"] is None:
      compiled["finish"], _ = self.finish.executable(carry, {}, inputs)
    carry, selected = compiled["finish"](carry, {}, inputs)
    return jax.block_until_ready((carry, {**metrics, **selected}))


def run(config: Config, workdir: str, *, overwrite: bool = False,
        data: PreparedData | None = None, plot: bool = False,
        keep_checkpoints: int = 3, devices: int = 0,
        data_parallel_training: bool = False) -> Runs:
  """Runs (or resumes) every (metric, seed) of `config`; returns the records by run.

  `data` reuses an already loaded data set; `keep_checkpoints` rounds of checkpoints are
  kept (0: all); `devices`: how many of `jax.devices()` to use (0: all);
  `data_parallel_training`: split training batches over the devices of a run too
  (`sharding.plan`). Writes the workdir described above (process 0 only, when there
  are several).
  """
  data = data or prepare_data(config)
  config.check_budget(data.num_pool)
  writer = jax.process_index() == 0
  check_workdir(config, workdir, overwrite, write=writer)
  loop = RoundLoop(config, data, workdir, keep_checkpoints=keep_checkpoints, devices=devices,
                   data_parallel_training=data_parallel_training)
  runs = loop.runs
  try:
    start = loop.resume()
    loop.compile()
    started = time.perf_counter()
    for r in range(start, loop.protocol.num_rounds):
      values, seconds = loop.step()
      records = []
      for i, (metric, seed) in enumerate(runs):
        record = _record(config, data, r, metric, seed, seconds / len(runs),
                         {k: v[i] for k, v in values.items()})
        if r == 0:
          record["initial_labeled"] = loop.initial[seed]
        records.append(record)
      loop.save(records)
      for (metric, seed), run_records in zip(runs, loop.results):
        if writer:
          write_results(run_dir(config, workdir, metric, seed), run_records)
      _log_round(config, r, values, seconds, started, start)
  finally:
    loop.close()
  by_run = dict(zip(runs, loop.results))
  if not writer:
    return by_run
  _write_atomic(os.path.join(workdir, "summary.json"),
                json.dumps(summarize(by_run), indent=1) + "\n")
  if plot:
    from al_jax import plotting  # matplotlib only when plotting
    plotting.plot_all({m: [by_run[(m, s)] for s in config.seeds] for m in config.metrics},
                      workdir, title=describe(config))
  return by_run


def _record(config: Config, data: PreparedData, r: int, metric: str, seed: int,
            seconds: float, values: dict[str, np.ndarray]) -> dict:
  """One line of results.jsonl for one run and round."""
  selected = values.pop("selected")
  record = {"round": r, "metric": metric, "seed": seed, "dataset": config.dataset,
            "protocol": config.protocol, "classes": list(data.class_names),
            "data_source": data.source, "round_s": seconds,
            "selected": selected[(selected >= 0) & (selected < data.num_pool)].tolist()}
  record.update({k: json_value(v) for k, v in values.items()})
  return record


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
