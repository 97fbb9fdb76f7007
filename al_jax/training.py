"""Training and evaluation as pure functions over one state pytree.

`train_step(state, batch, key) -> (state, metrics)` and `eval_step(state, batch) ->
metrics` follow the Flax examples. `fit` runs whole epochs over a *masked* labeled set
inside one compiled loop, so a growing labeled set never changes a shape: each epoch
takes a random permutation of the labeled images (argsort of random keys, labeled
first) and fills every batch from it, wrapping around at the end, so batches are
always full and hold only labeled images (no padding reaches batch norm).
"""

import contextlib
import contextvars
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from al_jax import model_api
from al_jax.augment import Augment

Batch = dict[str, jax.Array]
DATA_AXIS = "data"  # the mesh axis that batches and pool chunks are split over
_SPLIT_BATCHES = contextvars.ContextVar("al_jax_split_batches", default=False)


@contextlib.contextmanager
def data_parallel_training(enabled: bool = True):
  """While tracing within it, `fit` splits every training batch over the "data" axis of
  the current mesh (`split_over_data_axis`). Same maths as one device, but the gradient
  and batch-norm sums run in another order, so the trained weights agree with one
  device's to float rounding only (and later selections can drift); outside it `fit`
  computes exactly what one device computes."""
  token = _SPLIT_BATCHES.set(enabled)
  try:
    yield
  finally:
    _SPLIT_BATCHES.reset(token)


def data_ways() -> int:
  """Devices on the "data" axis of the mesh set with `jax.set_mesh` (1: none)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or DATA_AXIS not in mesh.auto_axes:
    return 1
  return mesh.shape[DATA_AXIS]


def split_over_data_axis(tree: Any) -> Any:
  """Constrains every array [B, ...] of `tree` to be split along B over the "data" axis
  of the mesh set with `jax.set_mesh` (data parallelism; XLA inserts the all-reduces).
  Unchanged when there is no such axis of more than one device, so one device runs
  exactly the program it ran before."""
  if data_ways() == 1:
    return tree
  return jax.lax.with_sharding_constraint(tree, jax.sharding.PartitionSpec(DATA_AXIS))


class TrainState(struct.PyTreeNode):
  """Everything that changes during training: one pytree (model/optimizer are static).

  members: 0 for one model; M for a deep ensemble, whose array leaves all carry a
  leading [M] axis (built and trained member by member under `vmap`, see
  `per_member`). An ensemble's `logits` are the log of its mean probabilities, so
  evaluation and the per-image scorers see the ensemble's prediction.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  model: Any = struct.field(pytree_node=False)  # al_jax.model_api adapter
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  members: int = struct.field(pytree_node=False, default=0)
  # A user's training (al_jax.user_training): loss(logits [B, C], labels [B]) -> [] in
  # place of cross-entropy; step(state, batch, key) -> (state, metrics) in place of
  # train_step's SGD step (metrics with "loss" and "accuracy").
  loss_fn: Any = struct.field(pytree_node=False, default=None)
  step_fn: Any = struct.field(pytree_node=False, default=None)

  @property
  def apply_fn(self):
    """The Linen module's `apply` (Linen models only)."""
    return self.model.apply

  def logits(self, images: jax.Array, train: bool = False, key: jax.Array | None = None,
             params: Any = None):
    """uint8 images [B, H, W, C] -> logits [B, C] (and new batch stats when train)."""
    if self.members:
      if train:
        raise ValueError("an ensemble trains member by member: vmap over state.per_member")
      log_probs = self.per_member(lambda member: jax.nn.log_softmax(
          member.logits(images).astype(jnp.float32)))  # [M, B, C]
      return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(self.members)
    variables = {"params": self.params if params is None else params,
                 "batch_stats": self.batch_stats}
    if not train:
      return self.model.logits(variables, images)
    logits, batch_stats = self.model.train_logits(variables, images, key)
    return logits, {"batch_stats": batch_stats}

  def per_member(self, fn, *args):
    """fn(member_state, *member_args) over the ensemble's members by `vmap`; every arg
    has a leading [M] axis, and so does every output. A single model: fn(self, *args)."""
    if not self.members:
      return fn(self, *args)
    return jax.vmap(fn)(self.replace(members=0), *args)


def make_optimizer(learning_rate: float, momentum: float, weight_decay: float):
  """SGD with momentum and (PyTorch-style, coupled) L2 weight decay."""
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum))


def create_train_state(model: Any, key: jax.Array, image_shape: tuple[int, ...],
                       tx: optax.GradientTransformation, members: int = 0) -> TrainState:
  """Fresh parameters for images of shape [H, W, C]; with members = M > 0 an ensemble
  of M models initialised from fold_in(key, m). model: a Linen module or a
  `model_api` adapter (`model_api.adapt`)."""
  model = model_api.adapt(model)
  if members:
    keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(members))
    state = jax.vmap(lambda k: create_train_state(model, k, image_shape, tx))(keys)
    return state.replace(members=members)
  variables = model.init(key, tuple(image_shape))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables["batch_stats"], opt_state=tx.init(params),
                    model=model, tx=tx)


def classification_metrics(logits: jax.Array, labels: jax.Array,
                           mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """Sums over the batch: loss_sum, correct, count, per-class correct / count.

  logits: [B, C]; labels: [B] int; mask: [B] bool (padding = False).
  Cross-entropy is over the class axis.
  """
  num_classes = logits.shape[-1]
  mask = jnp.ones(labels.shape, bool) if mask is None else mask
  weight = mask.astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, -1) == labels) * weight
  onehot = jax.nn.one_hot(labels, num_classes) * weight[:, None]
  return {"loss_sum": jnp.sum(loss * weight), "correct": jnp.sum(correct),
          "count": jnp.sum(weight), "class_correct": onehot.T @ correct,
          "class_count": jnp.sum(onehot, axis=0)}


def train_step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, dict]:
  """One SGD step on batch {"image": uint8 [B,H,W,C], "label": int [B]} (the state's own
  `step_fn` or `loss_fn` where it has one)."""
  if state.step_fn is not None:
    return state.step_fn(state, batch, key)

  def loss_fn(params):
    logits, updates = state.logits(batch["image"], train=True, key=key, params=params)
    if state.loss_fn is not None:
      loss = state.loss_fn(logits, batch["label"])
    else:
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, (logits, updates["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  return state, {"loss": loss, "accuracy": accuracy}


def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
  """Metric sums on batch {"image", "label", optional "mask"} in inference mode."""
  logits = state.logits(batch["image"])
  return classification_metrics(logits, batch["label"], batch.get("mask"))


def labeled_order(mask: jax.Array, key: jax.Array, rows: jax.Array | None = None
                  ) -> jax.Array:
  """A random permutation of the labeled indices first, then the rest.  mask: [N] -> [N].

  rows: [L] ascending pool indices that hold every labeled one (padding: >= N). Then
  the same permutation of the labeled ones, as positions in `rows` -> [L]: for images
  held only at those rows (a pool streamed from disk), with no sort of the whole pool.
  """
  noise = jax.random.uniform(key, mask.shape)
  if rows is None:
    return jnp.argsort(jnp.where(mask, noise, 2.0))
  inside = rows < mask.shape[0]
  at = jnp.where(inside, rows, 0)
  return jnp.argsort(jnp.where(mask[at] & inside, noise[at], 2.0))


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  """Early stopping on a held-out part of the labeled set (static settings of `fit`).

  Every `check_steps` SGD steps (at the end of the epoch that reaches them) the loss on
  the held-out images is computed; training stops after `patience` checks without a
  new lowest loss, and the parameters of the lowest loss are kept. `capacity` bounds
  the held-out images (a static shape); more than that is an error of the caller.
  """
  capacity: int
  check_steps: int = 25
  patience: int = 4


def fit(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array,
        key: jax.Array, *, epochs: int, batch_size: int, min_steps: int = 0,
        rows: jax.Array | None = None, holdout: jax.Array | None = None,
        early_stopping: EarlyStopping | None = None,
        augment: Augment | None = None) -> tuple[TrainState, dict]:
  """Trains `epochs` epochs on the images where `mask` is True, or as many more whole
  epochs as reach `min_steps` SGD steps (a tiny labeled set still trains enough).

  images: [N, H, W, C] uint8; labels: [N]; mask: [N] bool with at least one True.
  The number of steps per epoch, ceil(sum(mask) / batch_size), is a traced value, so
  the compiled loop serves every labeled-set size. Tracing within
  `data_parallel_training()` under a mesh with a "data" axis splits every batch over its
  devices (data-parallel training). Returns
  the state and the mean train loss / accuracy over the last epoch. An ensemble trains
  its members together, vmapped, member m with key fold_in(key, m) (its own batch
  order and dropout); the metrics are the members' means. `rows` [L]: images and labels
  hold only these pool rows (ascending, padding >= N; every labeled one among them), mask
  stays [N]: the same batches as with the whole pool (`labeled_order`).

  holdout: [N] bool, with `early_stopping`: the labeled images where it is True are not
  trained on but held out for early stopping (none held out: plain training). The
  metrics then add validation_loss (the lowest, NaN without held-out images);
  train_steps (the SGD steps taken) is always there.

  augment: an `al_jax.augment.Augment` applied to every training batch, with a key of its
  own per step (None or an empty one: the batches as they are, bit-identical).
  """
  if state.members:
    keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(state.members))
    state, metrics = state.per_member(
        lambda member, k: fit(member, images, labels, mask, k, epochs=epochs,
                              batch_size=batch_size, min_steps=min_steps,
                              rows=rows, holdout=holdout,
                              early_stopping=early_stopping, augment=augment), keys)
    return state.replace(members=keys.shape[0]), jax.tree.map(jnp.mean, metrics)
  if early_stopping is not None:  # (all labels held out: train on them, no stopping)
    trainable = jnp.any(mask & ~holdout)
    held_out = mask & holdout & trainable
    mask = mask & ~held_out
  num_labeled = jnp.sum(mask, dtype=jnp.int32)
  steps = (num_labeled + batch_size - 1) // batch_size
  zero = jnp.zeros((), jnp.float32)

  def epoch(e, carry):
    state, _ = carry
    order_key, step_key = jax.random.split(jax.random.fold_in(key, e))
    order = labeled_order(mask, order_key, rows)

    def step(i, carry):
      state, sums = carry
      positions = (i * batch_size + jnp.arange(batch_size)) % num_labeled
      idx = order[positions]
      batch = {"image": images[idx], "label": labels[idx]}
      if augment:
        batch["image"] = augment(batch["image"], jax.random.fold_in(step_key, steps + i))
      if _SPLIT_BATCHES.get():
        batch = split_over_data_axis(batch)
      state, m = train_step(state, batch, jax.random.fold_in(step_key, i))
      return state, (sums[0] + m["loss"], sums[1] + m["accuracy"])

    state, sums = lax.fori_loop(0, steps, step, (state, (zero, zero)))
    return state, sums

  if min_steps:  # a traced number of epochs: one compiled loop for every set size
    epochs = jnp.maximum(epochs, (min_steps + steps - 1) // jnp.maximum(steps, 1))
  steps_f = jnp.maximum(steps, 1).astype(jnp.float32)
  if early_stopping is None:
    state, (loss_sum, acc_sum) = lax.fori_loop(0, epochs, epoch, (state, (zero, zero)))
    return state, {"train_loss": loss_sum / steps_f, "train_accuracy": acc_sum / steps_f,
                   "train_steps": epochs * steps}
  if rows is not None:  # held-out images as positions in `rows`
    inside = rows < held_out.shape[0]
    held_out = held_out[jnp.where(inside, rows, 0)] & inside
  state, (loss_sum, acc_sum), done, best_loss = _fit_early_stopping(
      state, epoch, epochs, steps, images, labels, held_out, early_stopping)
  return state, {"train_loss": loss_sum / steps_f, "train_accuracy": acc_sum / steps_f,
                 "train_steps": done * steps, "validation_loss": best_loss}


def _fit_early_stopping(state, epoch, epochs, steps, images, labels, held_out,
                        settings: EarlyStopping):
  """fit's epoch loop with early stopping: (state with the best parameters, last
  epoch's sums, epochs done, lowest held-out loss). held_out: a mask over `images`."""
  idx = jnp.nonzero(held_out, size=settings.capacity, fill_value=0)[0]
  num_held_out = jnp.sum(held_out, dtype=jnp.int32)
  valid = jnp.arange(settings.capacity) < num_held_out
  val_images, val_labels = images[idx], labels[idx]
  zero = jnp.zeros((), jnp.float32)

  def held_out_loss(state):
    return evaluate(state, val_images, val_labels, valid)["test_loss"]

  def keep_going(carry):
    e, _, _, _, _, bad = carry
    return (e < epochs) & ((num_held_out == 0) | (bad < settings.patience))

  def body(carry):
    e, state, _, best, best_loss, bad = carry
    state, sums = epoch(e, (state, (zero, zero)))
    check = (((e + 1) * steps) // settings.check_steps > (e * steps) // settings.check_steps) \
        | (e + 1 == epochs)
    loss = lax.cond(check & (num_held_out > 0), held_out_loss, lambda _: jnp.inf, state)
    better = check & (loss < best_loss)
    best = jax.tree.map(lambda new, old: jnp.where(better, new, old),
                        (state.params, state.batch_stats), best)
    bad = jnp.where(better, 0, bad + check.astype(jnp.int32))
    return e + 1, state, sums, best, jnp.where(better, loss, best_loss), bad

  init = (jnp.zeros((), jnp.int32), state, (zero, zero), (state.params, state.batch_stats),
          jnp.asarray(jnp.inf, jnp.float32), jnp.zeros((), jnp.int32))
  done, last, sums, (params, batch_stats), best_loss, _ = lax.while_loop(
      keep_going, body, init)
  use_best = num_held_out > 0
  state = last.replace(
      params=jax.tree.map(lambda b, l: jnp.where(use_best, b, l), params, last.params),
      batch_stats=jax.tree.map(lambda b, l: jnp.where(use_best, b, l), batch_stats,
                               last.batch_stats))
  return state, sums, done, jnp.where(use_best, best_loss, jnp.nan)


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is at least n."""
  return -(-n // multiple) * multiple


def pad_to_multiple(x: jax.Array, multiple: int) -> tuple[jax.Array, jax.Array]:
  """Pads axis 0 to a multiple of `multiple`.  x: [N, ...] -> ([M, ...], mask [M])."""
  n = x.shape[0]
  padded = round_up(n, multiple)
  pad = [(0, padded - n)] + [(0, 0)] * (x.ndim - 1)
  return jnp.pad(x, pad), jnp.arange(padded) < n


def evaluate(state: TrainState, images: jax.Array, labels: jax.Array,
             valid: jax.Array | None = None, *, batch_size: int = 1000
             ) -> dict[str, jax.Array]:
  """Loss, accuracy and per-class accuracy over a whole set, in fixed-size chunks.

  images: [M, H, W, C] uint8, labels: [M]; valid: [M] bool, the images that count
  (None: all), so a set that fills up keeps its shape. Returns test_loss,
  test_accuracy (scalars; NaN when no image counts) and per_class_accuracy [C] (NaN
  for a class absent from the set).
  """
  batch_size = min(batch_size, images.shape[0])
  images, mask = pad_to_multiple(images, batch_size)
  labels, _ = pad_to_multiple(labels, batch_size)
  if valid is not None:
    mask = mask & pad_to_multiple(valid, batch_size)[0]
  chunks = lambda x: x.reshape(-1, batch_size, *x.shape[1:])
  sums = lax.map(lambda b: eval_step(state, b),
                 {"image": chunks(images), "label": chunks(labels), "mask": chunks(mask)})
  sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), sums)
  return {"test_loss": sums["loss_sum"] / sums["count"],
          "test_accuracy": sums["correct"] / sums["count"],
          "per_class_accuracy": sums["class_correct"] / sums["class_count"]}
