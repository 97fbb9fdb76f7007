"""The two active-learning protocols, each one pure round step over one carry pytree.

* `pool`: the paper's Algorithm 1. Labels accumulate: each round trains on the labeled
  set, evaluates, and adds the `query_size` images the acquisition strategy chooses.
* `reselect`: what the paper's authors' code ran. Every epoch the whole training set
  is rescored and the model trains on the `select_batches` most informative batches
  only; nothing leaves the pool.

Both expose the same three things, so the round loop (`al_jax.experiment`) never asks
which protocol it runs:

    initial_carry(seed, pool) -> carry          one run, built on the host
    round_step(carry, data, run) -> (carry, round_metrics)
    num_rounds

carry = {"train_state": TrainState (an ensemble's with a leading [M] axis),
         "labeled": [N] bool, "round": int32 []};
data = {"pool": {"images" [N,H,W,C] uint8, "labels" [N], "valid" [N] bool},
        "test": {"images" [M,H,W,C], "labels" [M], optional "valid" [M] bool}},
        shared by all runs;
run = {"key": the run's root key, "metric": int32 [] index into config.metrics}.
round_metrics holds scalars and small arrays: train_loss, train_accuracy, test_loss,
test_accuracy, per_class_accuracy [C], num_labeled, epoch, and selected [k] (pool
indices, -1 = none): for `pool` the images queried after the round, for `reselect`
the images trained on in this epoch. `pool` also records pool_changed, the share of
a fixed stop set (the first STOP_SET_SIZE pool images) whose predicted class changed
since the previous round's model (round 0: against the untrained model), the signal
of a stopping rule that needs no labels (Bloodgood & Vijay-Shanker 2009).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from al_jax import acquisition, cold_start, model_registry, scoring, specs, training
from al_jax.augment import Augment
from al_jax.config import Config
from al_jax.rng import HOLDOUT, INIT, INITIAL_SET, QUERY, TRAIN, stream_key
from al_jax.user_training import UserTraining

STOP_SET_SIZE = 2000  # pool images whose predictions pool_changed compares, at most

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


def stop_set_size(pool_rows: int, chunk_size: int) -> int:
  """Images in the stop set: STOP_SET_SIZE rounded up to whole chunks, at most the pool."""
  return min(pool_rows, training.round_up(STOP_SET_SIZE, chunk_size))


def prediction_change(before: training.TrainState, after: training.TrainState,
                      images: jax.Array, valid: jax.Array, *, chunk_size: int) -> jax.Array:
  """Share of the valid images whose predicted class differs between two models.

  images: [S, H, W, C] with S % chunk_size == 0; valid: [S] bool -> [] float32.
  """
  changed = scoring.map_pool(
      lambda chunk, _: jnp.argmax(before.logits(chunk), -1) != jnp.argmax(after.logits(chunk), -1),
      images, chunk_size=chunk_size)
  return jnp.sum(changed & valid) / jnp.maximum(jnp.sum(valid), 1)


class Protocol:
  """What both protocols share: the model, optimiser, strategies and evaluation."""

  def __init__(self, config: Config, num_classes: int, image_shape: tuple[int, ...],
               user_training: UserTraining | None = None):
    self.config = config
    spec = specs.get(config.dataset)
    self.model = model_registry.create(config.model_name(image_shape), spec, num_classes)
    self.user_training = user_training or UserTraining()
    self.tx = self.user_training.optimizer or training.make_optimizer(
        config.learning_rate, config.momentum, config.weight_decay)
    self.image_shape = image_shape
    self.num_rounds = config.num_rounds
    self.strategies = tuple(
        acquisition.make(m, k=self._k, chunk_size=config.chunk_size,
                         **dict(config.strategy_options))
        for m in config.metrics)
    self.members = config.ensemble_size if config.ensemble_size > 1 else 0
    self._init_state_jit = jax.jit(self.init_state)

  @property
  def _k(self) -> int:
    return self.config.query_size

  def init_state(self, key: jax.Array) -> training.TrainState:
    state = training.create_train_state(self.model, key, self.image_shape, self.tx,
                                        members=self.members)
    return state.replace(loss_fn=self.user_training.loss,
                         step_fn=self.user_training.train_step)

  def initial_carry(self, seed: int, pool: dict[str, np.ndarray]) -> dict:
    """The carry of run `seed` before round 0 (host arrays and one jitted init)."""
    seed_key = jax.random.key(seed)
    return {"train_state": self._init_state_jit(stream_key(seed_key, INIT, 0)),
            "labeled": jnp.asarray(self._initial_mask(seed_key, pool)),
            "round": jnp.zeros((), jnp.int32)}

  def _initial_mask(self, seed_key: jax.Array, pool: dict[str, np.ndarray]) -> np.ndarray:
    return np.zeros(np.shape(pool["valid"]), bool)

  def evaluate(self, state: training.TrainState, test: dict) -> dict:
    return training.evaluate(state, test["images"], test["labels"], test.get("valid"),
                             batch_size=self.config.eval_batch_size)


class PoolProtocol(Protocol):
  """Algorithm 1: train on the labeled set, evaluate, query k more (not after the last)."""

  def _initial_mask(self, seed_key, pool):
    if self.config.initial_selection is not None:
      mask = np.zeros(np.shape(pool["valid"]), bool)
      mask[np.asarray(cold_start.select_initial(
          pool["images"], pool["valid"], self.config.initial_size,
          stream_key(seed_key, INITIAL_SET, 0), kind=self.config.initial_selection))] = True
      return mask
    return initial_labeled(np.asarray(pool["labels"]), np.asarray(pool["valid"]),
                           self.config.initial_size, seed_key,
                           self.config.class_balanced_init)

  def _early_stopping(self, run: dict, n: int) -> dict:
    """fit's holdout / early_stopping arguments: with --validation_fraction=f, the
    labeled images among a fixed random f of the pool (per run) are held out."""
    cfg = self.config
    if not cfg.validation_fraction:
      return {}
    holdout = jax.random.uniform(stream_key(run["key"], HOLDOUT, 0), (n,)) \
        < cfg.validation_fraction
    return {"holdout": holdout, "early_stopping": training.EarlyStopping(
        capacity=min(n, cfg.labels_needed), patience=cfg.patience)}

  def round_step(self, carry: dict, data: dict, run: dict) -> tuple[dict, dict]:
    pool, r = data["pool"], carry["round"]
    state, round_metrics = self.train_round(carry, data, run)
    strategy = acquisition.choose(self.strategies, run["metric"])
    available = pool["valid"] & ~carry["labeled"]
    selection = lax.cond(
        r + 1 < self.num_rounds,
        lambda: strategy(state, pool["images"], available, stream_key(run["key"], QUERY, r),
                         carry["labeled"]),
        lambda: acquisition.nothing(self._k))
    return self.end_round(carry, state, selection, round_metrics)

  def train_round(self, carry: dict, data: dict, run: dict
                  ) -> tuple[training.TrainState, dict]:
    """Trains on the labeled set and evaluates: (new state, round metrics but "selected").

    data["pool"] is the whole pool; a pool streamed from disk (`al_jax.streaming`) gives
    instead data["labeled"] = {"images" [L,H,W,C], "labels" [L], "rows" [L]}, the
    labeled images and their pool rows, and data["stop"] = {"images", "valid"}.
    """
    cfg, r = self.config, carry["round"]
    state = previous = carry["train_state"]
    if not cfg.keep_training:
      state = self.init_state(stream_key(run["key"], INIT, r))
    train = data["labeled"] if "labeled" in data else data["pool"]
    state, train_metrics = training.fit(
        state, train["images"], train["labels"], carry["labeled"],
        stream_key(run["key"], TRAIN, r), epochs=cfg.epochs_per_round,
        batch_size=cfg.batch_size, min_steps=cfg.min_steps, rows=train.get("rows"),
        augment=Augment(cfg.augment_shift, cfg.augment_degrees),
        **self._early_stopping(run, carry["labeled"].shape[0]))
    stop = data["stop"] if "stop" in data else self.stop_set(data["pool"])
    changed = prediction_change(previous, state, stop["images"], stop["valid"],
                                chunk_size=cfg.chunk_size)
    return state, {**train_metrics, **self.evaluate(state, data["test"]),
                   "num_labeled": jnp.sum(carry["labeled"], dtype=jnp.int32),
                   "epoch": (r + 1) * cfg.epochs_per_round, "pool_changed": changed}

  def stop_set(self, pool: dict) -> dict:
    """The first pool images (STOP_SET_SIZE, rounded up to whole chunks): images, valid."""
    size = stop_set_size(pool["valid"].shape[0], self.config.chunk_size)
    return {"images": pool["images"][:size], "valid": pool["valid"][:size]}

  def end_round(self, carry: dict, state: training.TrainState,
                selection: acquisition.Selection, round_metrics: dict) -> tuple[dict, dict]:
    """The next carry (the selection labeled) and the round's metrics with "selected"."""
    carry = {"train_state": state, "round": carry["round"] + 1,
             "labeled": acquisition.labeled_after(carry["labeled"], selection)}
    return carry, {**round_metrics, "selected": selection.indices}


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


def train_on_batches(state: training.TrainState, images: jax.Array, labels: jax.Array,
                     batches: jax.Array, key: jax.Array) -> tuple[training.TrainState, dict]:
  """One SGD step per row of `batches` [S, B] (image indices); mean loss and accuracy."""
  def step(i, carry):
    state, loss_sum, acc_sum = carry
    idx = batches[i]
    state, m = training.train_step(state, {"image": images[idx], "label": labels[idx]},
                                   jax.random.fold_in(key, i))
    return state, loss_sum + m["loss"], acc_sum + m["accuracy"]

  zero = jnp.zeros((), jnp.float32)
  state, loss_sum, acc_sum = lax.fori_loop(0, batches.shape[0], step, (state, zero, zero))
  return state, {"train_loss": loss_sum / batches.shape[0],
                 "train_accuracy": acc_sum / batches.shape[0]}


class ReselectProtocol(Protocol):
  """The authors' protocol: each epoch, rescore everything and train on the best batches."""

  def __init__(self, config: Config, num_classes: int, image_shape: tuple[int, ...],
               num_valid: int, user_training: UserTraining | None = None):
    super().__init__(config, num_classes, image_shape, user_training)
    self.num_batches = num_valid // config.batch_size

  @property
  def _k(self) -> int:
    return self.config.select_batches * self.config.batch_size

  def round_step(self, carry: dict, data: dict, run: dict) -> tuple[dict, dict]:
    cfg, pool, r = self.config, data["pool"], carry["round"]
    key = stream_key(run["key"], QUERY, r)
    metric_index = acquisition.choose(self.strategies, run["metric"]).metric_index
    scores = scoring.pool_scores(carry["train_state"], pool["images"], metric_index, key,
                                 chunk_size=cfg.chunk_size)
    chosen = batch_selection(scores, pool["valid"], key, batch_size=cfg.batch_size,
                             num_batches=self.num_batches, select_batches=cfg.select_batches,
                             select=cfg.select, aggregate=cfg.batch_aggregate)
    state, train_metrics = train_on_batches(carry["train_state"], pool["images"],
                                            pool["labels"], chosen,
                                            stream_key(run["key"], TRAIN, r))
    round_metrics = {**train_metrics, **self.evaluate(state, data["test"]),
                     "num_labeled": jnp.int32(chosen.size), "epoch": r + 1,
                     "selected": chosen.reshape(-1)}
    labeled = jnp.zeros_like(carry["labeled"]).at[chosen.reshape(-1)].set(True)
    return {"train_state": state, "labeled": labeled, "round": r + 1}, round_metrics


def make_protocol(config: Config, num_classes: int, image_shape: tuple[int, ...],
                  num_valid: int, user_training: UserTraining | None = None) -> Protocol:
  """The protocol object of `config` (pure functions of its static settings), training
  as `user_training` says (None: al_jax's SGD and cross-entropy)."""
  if config.protocol == "pool":
    return PoolProtocol(config, num_classes, image_shape, user_training)
  return ReselectProtocol(config, num_classes, image_shape, num_valid, user_training)
