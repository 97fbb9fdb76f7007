"""The two active-learning protocols, as compiled round functions over one carry pytree.

* `pool`: the paper's Algorithm 1. Labels accumulate: each round trains on the labeled
  set, evaluates, and moves the `query_size` most informative pool images to it.
* `reselect`: what the authors actually ran (NOTES.md). Every epoch the whole training
  set is rescored and the model trains on the most informative `select_batches`
  batches only; nothing is ever removed from the pool.

A carry is `{"train_state": TrainState, "labeled": [N] bool}`. Every function here is
jitted once per configuration and called with the same shapes every round.
"""

import dataclasses
import functools
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from al_jax import metrics, models, scoring, training
from al_jax.config import Config

# Streams of randomness, each folded into the root key of a run (seed).
INIT, TRAIN, QUERY, INITIAL_SET = range(4)


def stream_key(seed_key: jax.Array, stream: int, step: int | jax.Array) -> jax.Array:
  """The key for `stream` at round/epoch `step`: fold_in(fold_in(root, stream), step)."""
  return jax.random.fold_in(jax.random.fold_in(seed_key, stream), step)


def initial_labeled(labels: np.ndarray, valid: np.ndarray, size: int, seed_key: jax.Array,
                    class_balanced: bool) -> np.ndarray:
  """A random initial labeled set.  labels, valid: [N] -> mask [N] bool with `size` True.

  class_balanced: size // C images of every class (the first size % C classes get one
  more), as far as each class has images.
  """
  noise = np.asarray(jax.random.uniform(stream_key(seed_key, INITIAL_SET, 0), valid.shape))
  noise = np.where(valid, noise, -1.0)
  mask = np.zeros(valid.shape, bool)
  if not class_balanced:
    mask[np.argsort(-noise, kind="stable")[:size]] = True
    return mask
  classes = np.unique(labels[valid])
  for i, c in enumerate(classes):
    want = size // len(classes) + (i < size % len(classes))
    in_class = np.where(valid & (labels == c), noise, -1.0)
    take = np.argsort(-in_class, kind="stable")[:want]
    mask[take[in_class[take] >= 0]] = True
  return mask


class Protocol:
  """Compiled pieces shared by both protocols for one configuration."""

  def __init__(self, config: Config, num_classes: int, image_shape: tuple[int, ...]):
    self.config = config
    self.model = models.create_model(config.dataset, num_classes)
    self.tx = training.make_optimizer(config.learning_rate, config.momentum,
                                      config.weight_decay)
    self.image_shape = image_shape
    self.init_state = jax.jit(self._init_state)
    self.evaluate = jax.jit(functools.partial(training.evaluate,
                                              batch_size=config.eval_batch_size))

  def _init_state(self, key: jax.Array) -> training.TrainState:
    return training.create_train_state(self.model, key, self.image_shape, self.tx,
                                       self.config.dataset)

  def initial_carry(self, seed_key: jax.Array, labeled: np.ndarray) -> dict:
    return {"train_state": self.init_state(stream_key(seed_key, INIT, 0)),
            "labeled": jnp.asarray(labeled)}


class PoolProtocol(Protocol):
  """Algorithm 1. Per round: `train` (fit + evaluate) then `query` (score + move k)."""

  def __init__(self, config: Config, num_classes: int, image_shape: tuple[int, ...]):
    super().__init__(config, num_classes, image_shape)
    self.fit = jax.jit(functools.partial(training.fit, epochs=config.epochs_per_round,
                                         batch_size=config.batch_size), donate_argnums=0)
    self.query = jax.jit(self._query)

  def train(self, carry: dict, round_index: int, seed_key: jax.Array, pool: dict) -> tuple:
    """Trains on the labeled set (fresh model unless keep_training). Returns (carry, metrics)."""
    state = carry["train_state"]
    if not self.config.keep_training:
      state = self.init_state(stream_key(seed_key, INIT, round_index))
    state, train_metrics = self.fit(state, pool["images"], pool["labels"], carry["labeled"],
                                    stream_key(seed_key, TRAIN, round_index))
    return {**carry, "train_state": state}, train_metrics

  def _query(self, carry: dict, images: jax.Array, valid: jax.Array, metric_index: jax.Array,
             key: jax.Array) -> tuple[dict, jax.Array]:
    available = valid & ~carry["labeled"]
    scores, selected = scoring.query_top_k(
        carry["train_state"], images, available, metric_index, key,
        k=self.config.query_size, chunk_size=self.config.chunk_size)
    selected = jnp.where(scores > -jnp.inf, selected, images.shape[0])  # out of range: dropped
    labeled = carry["labeled"].at[selected].set(True, mode="drop")
    return {**carry, "labeled": labeled}, selected

  def select(self, carry: dict, round_index: int, seed_key: jax.Array, pool: dict,
             metric: str) -> tuple:
    """Moves the `query_size` images most informative by `metric` to the labeled set."""
    return self.query(carry, pool["images"], pool["valid"], jnp.int32(metrics.index(metric)),
                      stream_key(seed_key, QUERY, round_index))


def batch_selection(scores: jax.Array, valid: jax.Array, key: jax.Array, *, batch_size: int,
                    num_batches: int, select_batches: int, select: str, aggregate: str
                    ) -> jax.Array:
  """Image indices [select_batches, batch_size] to train on this epoch (reselect).

  scores, valid: [N]. "batches": the valid images are shuffled into `num_batches` full
  batches, each batch is scored by the sum or mean of its images' scores, and the
  highest-scoring batches are kept (the authors' rule). "samples": the top
  select_batches * batch_size images, shuffled into batches.
  """
  order_key, shuffle_key = jax.random.split(key)
  order = training.labeled_order(valid, order_key)
  if select == "batches":
    batches = order[:num_batches * batch_size].reshape(num_batches, batch_size)
    per_batch = scores[batches]
    batch_scores = per_batch.sum(-1) if aggregate == "sum" else per_batch.mean(-1)
    return batches[lax.top_k(batch_scores, select_batches)[1]]
  top = lax.top_k(jnp.where(valid, scores, -jnp.inf), select_batches * batch_size)[1]
  return jax.random.permutation(shuffle_key, top).reshape(select_batches, batch_size)


class ReselectProtocol(Protocol):
  """The authors' protocol: each epoch, rescore everything and train on the best batches."""

  def __init__(self, config: Config, num_classes: int, image_shape: tuple[int, ...],
               num_valid: int):
    super().__init__(config, num_classes, image_shape)
    self.num_batches = num_valid // config.batch_size
    self.choose = jax.jit(self._choose)
    self.train_chosen = jax.jit(self._train_chosen, donate_argnums=0)

  def _choose(self, carry: dict, images: jax.Array, valid: jax.Array, metric_index: jax.Array,
              key: jax.Array) -> jax.Array:
    cfg = self.config
    scores = scoring.pool_scores(carry["train_state"], images, metric_index, key,
                                 chunk_size=cfg.chunk_size)
    return batch_selection(scores, valid, key, batch_size=cfg.batch_size,
                           num_batches=self.num_batches, select_batches=cfg.select_batches,
                           select=cfg.select, aggregate=cfg.batch_aggregate)

  def _train_chosen(self, carry: dict, images: jax.Array, labels: jax.Array,
                    chosen: jax.Array, key: jax.Array) -> tuple[dict, dict]:
    def step(i, carry):
      state, loss_sum, acc_sum = carry
      idx = chosen[i]
      state, m = training.train_step(state, {"image": images[idx], "label": labels[idx]},
                                     jax.random.fold_in(key, i))
      return state, loss_sum + m["loss"], acc_sum + m["accuracy"]

    zero = jnp.zeros((), jnp.float32)
    state, loss_sum, acc_sum = lax.fori_loop(0, chosen.shape[0], step,
                                             (carry["train_state"], zero, zero))
    labeled = jnp.zeros_like(carry["labeled"]).at[chosen.reshape(-1)].set(True)
    train_metrics = {"train_loss": loss_sum / chosen.shape[0],
                     "train_accuracy": acc_sum / chosen.shape[0]}
    return {"train_state": state, "labeled": labeled}, train_metrics

  def select(self, carry: dict, epoch: int, seed_key: jax.Array, pool: dict,
             metric: str) -> jax.Array:
    """Rescores the whole set by `metric`; image indices [select_batches, batch_size]."""
    return self.choose(carry, pool["images"], pool["valid"], jnp.int32(metrics.index(metric)),
                       stream_key(seed_key, QUERY, epoch))

  def train(self, carry: dict, epoch: int, seed_key: jax.Array, pool: dict,
            chosen: jax.Array) -> tuple[dict, dict]:
    """One epoch on the chosen batches; the carry's mask marks what was trained on."""
    return self.train_chosen(carry, pool["images"], pool["labels"], chosen,
                             stream_key(seed_key, TRAIN, epoch))


@functools.lru_cache(maxsize=8)
def make_protocol(config: Config, num_classes: int, image_shape: tuple[int, ...],
                  num_valid: int) -> Protocol:
  """The compiled functions for `config`; runs that differ only in metric and seed share
  them (the metric is a traced index, the seed enters through keys), so a grid of runs
  compiles once. Call as make_protocol(shared_config(config), ...)."""
  if config.protocol == "pool":
    return PoolProtocol(config, num_classes, image_shape)
  return ReselectProtocol(config, num_classes, image_shape, num_valid)


def shared_config(config: Config) -> Config:
  """`config` with the fields that do not change compiled code (metric, seed) reset."""
  return dataclasses.replace(config, metric="entropy", seed=0, data_dir=None)
