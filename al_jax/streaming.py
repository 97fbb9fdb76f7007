"""The pool protocol's round on a pool streamed from the host, for pools larger than memory.

The round of `protocols.PoolProtocol` in three parts, so that the pool's images are
never all on a device, nor (read from an npy file, `al_jax.datasets.npy`) in host memory:

1. `train_step`: one compiled step over the stacked runs, as the in-memory round
   step's training and evaluation, on the labeled images only: every run's labeled
   rows, read from the pool into a buffer of fixed size (`labeled_buffer`), with
   `training.fit(rows=...)` drawing exactly the batches of the whole pool's fit.
2. `Scorer`: each process reads only its own contiguous range of the pool, a slab (one
   chunk per local device) at a time, and one compiled step scores the slab for every
   run and merges it into the runs' running top-k; the processes' lists are gathered
   and merged (`merge_processes`). Each image has its in-memory key (fold_in of its pool
   index) and is scored in a chunk of the same size, and ties go to the lower pool index
   at every merge, so the selection is the in-memory one.
3. `finish_step`: one compiled step labels the selection (`PoolProtocol.end_round`).

`StreamedRound` holds the three parts of a job, as the round loop (`al_jax.experiment`)
steps them.

The carry (model, labeled mask [N], round) is the in-memory carry, so checkpoints and
resume are unchanged. Only strategies that rank by a per-image score stream (those with
a `chunk_score`: the paper's scorers, the Bayesian ones); a joint one needs the whole
pool at once (`Config` refuses it, `al_jax.strategies.streams`).
"""

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from al_jax import acquisition, protocols, rng, scoring, sharding, training
from al_jax.round_program import RoundProgram, pad_rows


PROGRESS_EVERY_S = 60  # a line in the log while a long pool pass runs


class ArrayRows:
  """Pool images held in host memory, read like an npy `PoolFile`: read(start, stop),
  take(rows), zeros past the end."""

  def __init__(self, images: np.ndarray):
    self.images = images
    self.num_rows, self.image_shape = images.shape[0], tuple(images.shape[1:])

  def read(self, start: int, stop: int) -> np.ndarray:
    out = np.zeros((stop - start, *self.image_shape), self.images.dtype)
    part = self.images[start:min(stop, self.num_rows)]
    out[:len(part)] = part
    return out

  def take(self, rows: np.ndarray) -> np.ndarray:
    out = np.zeros((len(rows), *self.image_shape), self.images.dtype)
    inside = rows < self.num_rows
    out[inside] = self.images[rows[inside]]
    return out


def pool_rows(dataset):
  """The row source of a data set's pool: the source's own where it gives one
  (`Dataset.pool_rows`, e.g. the npy file on disk, `al_jax.datasets.npy`), else the
  images in memory."""
  rows = dataset.pool_rows()
  return rows if rows is not None else ArrayRows(np.asarray(dataset.train_images))


def train_step(protocol: protocols.PoolProtocol):
  """(carry, data, run) -> (carry with the trained model, round metrics but "selected");
  data = {"labeled": {"images", "labels", "rows"}, "stop": {...}, "test": {...}}."""
  def train_part(carry: dict, data: dict, run: dict) -> tuple[dict, dict]:
    state, metrics = protocol.train_round(carry, data, run)
    return {**carry, "train_state": state}, metrics
  return train_part


def finish_step(protocol: protocols.PoolProtocol):
  """(carry, data, run) -> (next carry, {"selected"}); run["best"] = (scores [k], indices
  [k]), the run's merged top-k (-inf: none)."""
  def finish_part(carry: dict, data: dict, run: dict) -> tuple[dict, dict]:
    scores, indices = run["best"]
    selection = acquisition.Selection(jnp.where(scores > -jnp.inf, indices, -1), scores)
    return protocol.end_round(carry, carry["train_state"], selection, {})
  return finish_part


def chunk_scorer(strategies, index: jax.Array, state: training.TrainState, key: jax.Array):
  """score(images [B, H, W, C], pool indices [B]) -> [B]: what strategies[index] (a
  traced index) ranks by, its `chunk_score` (the score of its in-memory running top-k)."""
  chosen = acquisition.choose(strategies, index)
  if hasattr(chosen, "chunk_score"):  # one strategy, or the paper's scorers fused
    return chosen.chunk_score(state, key)
  scorers = [s.chunk_score(state, key) for s in strategies]
  return lambda images, indices: lax.switch(index, scorers, images, indices)


@dataclasses.dataclass
class Scorer:
  """Scores this process's range of the pool for every run: `top_k(...)` -> (scores
  [R, k], indices [R, k]), the runs' best over the range, after `slab_rows`-image slabs.

  One compiled step per slab (`score_slab`, compiled once for a whole job), mapped over
  the runs (`vmap` or `lax.map`); with several local devices each takes one chunk of
  the slab (a "data" mesh), exactly as one device would score it.
  """
  protocol: protocols.PoolProtocol
  vmap: bool
  num_pool: int           # real pool images (rows >= num_pool are padding)
  padded: int             # rows of the padded pool, N'

  def __post_init__(self):
    devices = jax.local_devices()
    chunk, self.k = self.protocol.config.chunk_size, self.protocol.config.query_size
    self.mesh = Mesh(np.array(devices), (training.DATA_AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    self.slab_rows = chunk * len(devices)
    num_chunks = self.padded // chunk
    p, n = jax.process_index(), jax.process_count()
    self.start = num_chunks * p // n * chunk          # this process's rows
    self.stop = num_chunks * (p + 1) // n * chunk
    self._step = jax.jit(self.score_slab)
    logging.info("process %d of %d streams pool rows %d..%d (of %d), %d at a time on %d "
                 "device(s)", p, n, self.start, min(self.stop, self.num_pool), self.num_pool,
                 self.slab_rows, len(devices))

  def score_slab(self, states, labeled, runs, r, slab, start, stop, best):
    """One slab [S, H, W, C] (pool rows start..start+S, those >= stop not ours) into
    every run's best; labeled: [R, L] ascending labeled rows (padding >= N')."""
    indices = start + jnp.arange(slab.shape[0], dtype=jnp.int32)

    def one(state, labeled_rows, run, best):
      key = rng.stream_key(jax.random.wrap_key_data(run["key"]), rng.QUERY, r)
      score = chunk_scorer(self.protocol.strategies, run["metric"], state, key)
      at = jnp.minimum(jnp.searchsorted(labeled_rows, indices), labeled_rows.shape[0] - 1)
      available = (indices < stop) & (labeled_rows[at] != indices)
      new = scoring.running_top_k(score, slab, available, k=self.k,
                                  chunk_size=self.protocol.config.chunk_size, offset=start)
      return scoring.merge_top_k(*best, *new)  # best first: lower rows win ties

    if self.vmap:
      return jax.vmap(one)(states, labeled, runs, best)
    return lax.map(lambda args: one(*args), (states, labeled, runs, best))

  def top_k(self, states, labeled: np.ndarray, runs: dict, r: int, rows) -> tuple:
    """The runs' best (scores [R, k], indices [R, k]) over this process's range.

    states: the runs' trained models [R, ...]; labeled [R, L]; runs: host arrays
    {"key": key data [R, 2], "metric": [R]}; rows: the pool's row source."""
    put = lambda x: jax.device_put(x, self.replicated)
    states, labeled, runs = put(states), put(labeled), put(runs)
    num_runs = labeled.shape[0]
    best = put(tuple(np.broadcast_to(x, (num_runs, self.k)).copy()
                     for x in map(np.asarray, scoring.empty_top_k(self.k))))
    stop = np.int32(min(self.stop, self.num_pool))
    previous, started = None, time.perf_counter()
    total, said = max(0, min(self.stop, self.num_pool) - self.start), started
    with jax.set_mesh(self.mesh):
      for start in range(self.start, self.stop, self.slab_rows):
        slab = put(rows.read(start, start + self.slab_rows))
        best = self._step(states, labeled, runs, np.int32(r), slab, np.int32(start), stop,
                          best)
        if previous is not None:  # two slabs in flight at most: memory stays flat
          jax.block_until_ready(previous)
        previous = best
        if time.perf_counter() - said > PROGRESS_EVERY_S:
          said = time.perf_counter()
          logging.info("scored %d of %d pool images (%.0f images/s per run)",
                       start - self.start, total, (start - self.start) / (said - started))
    best = jax.tree.map(np.asarray, best)
    seconds = time.perf_counter() - started
    logging.info("scored %d pool images for %d run(s) in %.1fs (%.0f images/s per run)",
                 total, num_runs, seconds, total / max(seconds, 1e-9))
    return best


def merge_processes(best: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Every process's (scores [R, k], indices [R, k]) merged into the whole pool's, the
  same on every process: in process order, which is pool order, so ties go to the lower
  pool index as on one process."""
  if jax.process_count() == 1:
    return best
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  scores, indices = multihost_utils.process_allgather(best)  # [P, R, k] each
  merged = (scores[0], indices[0])
  for p in range(1, scores.shape[0]):
    merged = jax.vmap(scoring.merge_top_k)(*merged, scores[p], indices[p])
  return tuple(np.asarray(x) for x in merged)


def local_copy(tree: Any, num_runs: int) -> Any:
  """The first num_runs rows of global arrays [R', ...] (split over processes or not),
  as host arrays on this process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    tree = multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(lambda x: np.asarray(x)[:num_runs], tree)


@functools.partial(jax.jit, static_argnames=("size",))
def labeled_rows(labeled: jax.Array, size: int) -> jax.Array:
  """Each run's labeled pool rows, ascending, padded with N'.  [R, N'] -> [R, size]."""
  n = labeled.shape[1]
  return jax.vmap(lambda m: jnp.nonzero(m, size=size, fill_value=n)[0].astype(jnp.int32))(
      labeled)


def labeled_buffer(rows_per_run: np.ndarray, size: int, pool_labels: np.ndarray,
                   rows) -> dict[str, np.ndarray]:
  """The union of the runs' labeled rows as a fixed-size training buffer: {"images"
  [size, H, W, C], "labels" [size], "rows" [size] ascending, padded with N'}."""
  padded = len(pool_labels)
  union = np.unique(rows_per_run[rows_per_run < padded])
  buffer_rows = np.full(size, padded, np.int32)
  buffer_rows[:len(union)] = union
  labels = np.zeros(size, np.int32)
  labels[:len(union)] = pool_labels[union]
  return {"images": rows.take(buffer_rows), "labels": labels, "rows": buffer_rows}


class StreamedRound:
  """The parts of a round on a streamed pool: the compiled training and labeling steps
  over the stacked runs (as `RoundProgram`s, on the job's layout), and the process-local
  scorer of this process's range of the pool between them.

  data: the job's `experiment.PreparedData` (host labels and valid, `rows` the pool's
  row source); runs: host {"key": key data [R, 2], "metric": [R]}.
  """

  def __init__(self, protocol: protocols.PoolProtocol, data, vmap: bool,
               layout: sharding.Layout | None, num_runs: int, runs: dict[str, np.ndarray]):
    cfg, padded = protocol.config, len(data.pool["valid"])
    self.data, self.num_runs, self.runs = data, num_runs, runs
    self.train = RoundProgram(protocol, vmap, layout, train_step(protocol))
    self.finish = RoundProgram(protocol, vmap, layout, finish_step(protocol))
    self.scorer = Scorer(protocol, vmap, data.num_pool, padded)
    self.k = cfg.query_size
    self.per_run = min(cfg.labels_needed, padded)          # labeled rows of one run, at most
    self.buffer = min(num_runs * cfg.labels_needed, padded)  # of all runs together
    stop = protocols.stop_set_size(padded, cfg.chunk_size)
    self.stop_set = {"images": data.rows.read(0, stop), "valid": data.pool["valid"][:stop]}
    self._rows = None

  def labeled(self, carry: dict) -> dict:
    """The runs' labeled images, the union of their labeled rows (`labeled_buffer`)."""
    self._rows = local_copy(labeled_rows(carry["labeled"], size=self.per_run),
                            self.num_runs)
    return labeled_buffer(self._rows, self.buffer, self.data.pool["labels"], self.data.rows)

  def _best_inputs(self, run_inputs: dict, best: tuple, layout: sharding.Layout) -> dict:
    best = tuple(pad_rows(np.asarray(x), layout.padded_runs) for x in best)
    return layout.place({**run_inputs, "best": best}, P(sharding.RUNS))

  def compile(self, carry, train_data, run_inputs) -> tuple[dict, float]:
    """({"train", "finish"} compiled steps (finish: at its first use), seconds)."""
    train, train_s = self.train.executable(carry, train_data, run_inputs)
    return {"train": train, "finish": None}, train_s

  def step(self, compiled: dict, carry, train_data, run_inputs, layout: sharding.Layout, *,
           round_index: int, query: bool) -> tuple[dict, dict]:
    """Round `round_index`: train and evaluate, score the pool (unless `query` is False:
    the last round queries nothing), label the selection."""
    carry, metrics = compiled["train"](carry, train_data, run_inputs)
    if query:
      states = local_copy(carry["train_state"], self.num_runs)
      best = merge_processes(self.scorer.top_k(states, self._rows, self.runs, round_index,
                                               self.data.rows))
    else:
      best = tuple(np.broadcast_to(np.asarray(x), (self.num_runs, self.k))
                   for x in scoring.empty_top_k(self.k))
    inputs = self._best_inputs(run_inputs, best, layout)
    if compiled["finish"] is None:
      compiled["finish"], _ = self.finish.executable(carry, {}, inputs)
    carry, selected = compiled["finish"](carry, {}, inputs)
    return jax.block_until_ready((carry, {**metrics, **selected}))
