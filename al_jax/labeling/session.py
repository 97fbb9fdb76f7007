"""A person in the loop: the round loop of `al_jax.experiment`, stepped one round at a
time with the labels a person gives in the browser.

The images of a folder are the pool. The first batch is the pool protocol's own random
initial set (`initial_size` images) plus `validation_size` other random images, held
out to estimate accuracy; every later batch is the `query_size` images the acquisition
strategy chose. When every image of a batch has an answer, one round of the protocol's
round step runs through the round loop's public API (`experiment.RoundLoop`): the
person's labels go in (`put_labels`: the training set, skipped "not sure" images out of
the pool, the labeled held-out images as the test set), the loop steps one round, and
its record (`results.round_record`, plus the page's fields) says the model's accuracy
on the held-out images and the strategy's `selected` images, the next batch. The carry
is checkpointed (Orbax, the layout of `run`) before that batch is shown, and every
answer is in SQLite (`store`) the moment it is given, so a server killed at any moment
continues exactly where it stopped.

Your own features: with `--features=FILE.npz` (one float32 vector per image file, say
a pretrained backbone's embeddings) the page still shows the images, and the model
(by default the MLP, `models.FeatureMLP`) trains on and scores their vectors.

Simulation mode: an `--images` folder with a train/<class>/ layout is labeled the same
way; its folder names are hidden from the page and only report the true accuracy per
round, on its test/ images when it has them, else on the whole pool.
"""

import dataclasses
import functools
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from al_jax import experiment, results, training
from al_jax.config import Config, ConfigError
from al_jax.labeling import images as images_lib
from al_jax.labeling import pool as pool_lib
from al_jax.labeling import store as store_lib

THUMBNAIL_SIZE = 256
# Keys that label: 1-9, then letters (0 skips; Backspace undoes).
KEYS = tuple("123456789abcdefghijklmnopqrstuvwxyz")


class LabelError(ValueError):
  """A bad request or setting; the message is one line that says what to do."""


class Busy(LabelError):
  """The next batch is being chosen; answers wait until it is shown."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a labeling workdir computes with; a workdir keeps the settings it was made with."""
  metric: str = "badge"  # diverse batches (docs/BENCHMARKS.md, experiments/label_default.py)
  query_size: int = 20
  initial_size: int = 20
  validation_size: int = 10
  image_size: int = 32
  epochs_per_round: int = 20
  seed: int = 0
  model: str | None = None
  features: str | None = None  # an .npz of each image's vector (absolute path)


class LabelSession:
  """One labeling workdir: the pool, the label store, the round loop and the batch shown.

  Thread-safe: the server's threads call `state`, `answer`, `undo`, `export` and
  `thumbnail`; rounds run in a background thread, one at a time.
  """

  def __init__(self, images: pool_lib.Images, workdir: str, settings: Settings, *,
               images_arg: str = ""):
    self.images, self.workdir, self.settings = images, workdir, settings
    self.classes = images.classes
    self.paths = images.pool.paths
    num = len(self.paths)
    if settings.validation_size < 1:
      raise LabelError("--validation_size must be at least 1 (held-out labels estimate "
                       "the accuracy)")
    if settings.initial_size + settings.validation_size > num:
      raise LabelError(f"--initial_size={settings.initial_size} + --validation_size="
                       f"{settings.validation_size} exceed the {num} images; lower them")
    chunk = min(1000, training.round_up(num, 8))
    try:  # checked before the workdir records anything
      self.config = Config(
          dataset="folder", metrics=(settings.metric,), seeds=(settings.seed,),
          image_size=settings.image_size, model=settings.model,
          initial_size=settings.initial_size, query_size=settings.query_size,
          rounds=num + 1, epochs_per_round=settings.epochs_per_round, chunk_size=chunk)
    except ConfigError as error:
      raise LabelError(str(error)) from error
    rng = np.random.default_rng(settings.seed)
    self.validation = np.sort(rng.permutation(num)[:settings.validation_size])
    self._validation_set = set(self.validation.tolist())
    self.pool_valid = np.ones(num, bool)  # [N]: not held out (skipped images leave too)
    self.pool_valid[self.validation] = False
    data = experiment.in_memory_data(
        {"images": images.inputs, "labels": np.zeros(num, np.int32),
         "valid": self.pool_valid},
        {"images": images.inputs[self.validation],
         "labels": np.zeros(len(self.validation), np.int32),
         "valid": np.zeros(len(self.validation), bool)},
        self.classes, "data_dir", chunk)
    try:  # a user's --model that cannot serve: one line, before anything is written
      experiment.check_model(self.config, data)
    except ConfigError as error:
      raise LabelError(str(error)) from error
    os.makedirs(workdir, exist_ok=True)
    self.store = store_lib.LabelStore(os.path.join(workdir, "labels.sqlite"))
    self._check_setup(images_arg)
    self.loop = experiment.RoundLoop(self.config, data, workdir)
    self.loop.resume()
    self.lock = threading.RLock()
    self._loop_lock = threading.Lock()
    self.training = False
    self.train_started = 0.0
    self.error: str | None = None
    self.batch = self._batch_from_results()
    self._validation_labeled = 0
    self._true_eval = None
    if images.simulation:
      self._true_eval = self._true_accuracy_fn()

  # ------------------------------------------------------------------ setup and resume

  def _check_setup(self, images_arg: str) -> None:
    """Refuses a workdir made for other images, classes or settings (one line)."""
    mine = {"fingerprint": pool_lib.fingerprint(self.paths), "num_images": len(self.paths),
            "classes": list(self.classes), "simulation": self.images.simulation,
            "settings": dataclasses.asdict(self.settings)}
    saved = self.store.get_meta("setup")
    if saved is not None:
      where = f"workdir {self.workdir} was made for"
      if (saved["fingerprint"], saved["num_images"]) != (mine["fingerprint"],
                                                         mine["num_images"]):
        raise LabelError(f"{where} other images ({saved['num_images']} under "
                         f"{saved['images']}); use another --workdir")
      if saved["classes"] != mine["classes"]:
        raise LabelError(f"{where} the classes {','.join(saved['classes'])} (now "
                         f"{','.join(mine['classes'])}); use another --workdir")
      differ = {k: v for k, v in saved["settings"].items() if mine["settings"].get(k) != v}
      if differ:
        shown = ", ".join(f"--{k}={v} (now {mine['settings'].get(k)})"
                          for k, v in differ.items())
        raise LabelError(f"{where} other settings: {shown}; pass those to continue it, "
                         "or use another --workdir")
    self.store.set_meta("setup", {**mine, "images": images_arg or self.images.pool.root})

  def _batch_from_results(self) -> list[int]:
    if self.loop.next_round == 0:
      seed = self.settings.seed
      return sorted(self.loop.initial[seed] + self.validation.tolist())
    return list(self.loop.results[0][-1]["selected"])

  def start(self) -> None:
    """Compiles the round step in the background, and runs a round at once if the
    batch shown when the server stopped was already complete."""
    with self.lock:
      if self.batch and self._complete(self.store.all()):
        self._start_round()
        return
    threading.Thread(target=self._warm_up, daemon=True).start()

  def _warm_up(self) -> None:
    with self._loop_lock:
      self._fill(self.store.all())
      self.loop.compile()

  # ------------------------------------------------------------------------ answers

  def _complete(self, labels: dict) -> bool:
    return all(i in labels for i in self.batch)

  def _check_answer(self, index, label) -> None:
    if isinstance(index, bool) or not isinstance(index, int):
      raise LabelError("index must be an integer")
    if label is not None and label not in self.classes:
      raise LabelError(f"unknown class {str(label)[:40]!r}; valid: {', '.join(self.classes)}")

  def answer(self, index, label) -> dict:
    """Stores a label (a class name) or a skip (None) for an image of the batch."""
    self._check_answer(index, label)
    with self.lock:
      if self.training:
        raise Busy("the next batch is being chosen; wait until it is shown")
      if index not in self.batch:
        raise LabelError(f"image {index} is not in the current batch")
      self.store.put(index, self.paths[index], label, self.loop.next_round)
      labels = self.store.all()
      if self._complete(labels):
        self._start_round()
      return self.state(labels)

  def correct(self, index, label) -> dict:
    """Changes the answer to an image of an earlier batch: a class name, or None
    (skipped). Stored like any answer (in the round it is given); the next round
    trains on it."""
    self._check_answer(index, label)
    with self.lock:
      if self.training:
        raise Busy("the next batch is being chosen; change the answer once it is shown")
      if index in self.batch:
        raise LabelError(f"image {index} is in the current batch: answer it there")
      if index not in self.store.all():
        raise LabelError(f"image {index} has no earlier answer to change")
      self.store.put(index, self.paths[index], label, self.loop.next_round)
      return self.state()

  def undo(self) -> dict:
    """Removes the latest answer of the current batch; state["undone"] is its image."""
    with self.lock:
      if self.training:
        raise Busy("the next batch is being chosen; answers of the last one are final")
      item = self.store.undo(self.batch)
      return {**self.state(), "undone": None if item is None else item.pool_index}

  # ------------------------------------------------------------------------- rounds

  def _start_round(self) -> None:
    self.training, self.train_started, self.error = True, time.time(), None
    threading.Thread(target=self._run_round, daemon=True).start()

  def _fill(self, labels: dict) -> None:
    """Puts the answers into the round loop: labels, the training set, the skipped
    images out of the pool, the labeled held-out images as the test set."""
    num = len(self.paths)
    pool_labels = np.zeros(num, np.int32)
    labeled = np.zeros(num, bool)
    valid = self.pool_valid.copy()
    index = {c: i for i, c in enumerate(self.classes)}
    for i, item in labels.items():
      if item.label is None:
        valid[i] = False
      else:
        pool_labels[i] = index[item.label]
        labeled[i] = i not in self._validation_set
    test_valid = np.array([i in labels and labels[i].label is not None
                           for i in self.validation.tolist()], bool)
    self.loop.put_labels({"labels": pool_labels, "labeled": labeled, "valid": valid},
                         {"labels": pool_labels[self.validation], "valid": test_valid})
    self._validation_labeled = int(test_valid.sum())

  def _run_round(self) -> None:
    try:
      with self._loop_lock:
        labels = self.store.all()
        self._fill(labels)
        r = self.loop.next_round
        values, seconds = self.loop.step()
        (record,) = self.loop.records(values, seconds)
        record.update(self._page_fields(record, labels))
        self.loop.save([record], wait=True)
        results.write_results(self.workdir, self.loop.results[0])
      logging.info("round %d: trained on %d labels in %.1fs, estimated accuracy %s, next "
                   "batch of %d", r, record["num_labeled"], seconds,
                   record["estimated_accuracy"], len(record["selected"]))
      with self.lock:
        self.batch, self.training = list(record["selected"]), False
    except Exception as error:  # shown on the page; the batch stays complete
      logging.exception("round failed")
      with self.lock:
        self.training = False
        self.error = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"

  def _page_fields(self, record: dict, labels: dict) -> dict:
    """What the page adds to the loop's record (`results.round_record`): the accuracy
    on the held-out labels as estimated_accuracy, their number, the answers so far and,
    in simulation mode, the accuracy on the hidden labels."""
    fields = {"estimated_accuracy": record["test_accuracy"],
              "validation_labeled": self._validation_labeled,
              "class_counts": self._class_counts(labels),
              "skipped": sum(item.label is None for item in labels.values())}
    if self._true_eval is not None:
      fields["true_accuracy"] = results.json_value(
          self._true_eval(self.loop.model())["test_accuracy"])
    return fields

  def _true_accuracy_fn(self):
    """Accuracy on the hidden labels: test/ when the folder has one, else the pool."""
    if self.images.test is not None:
      images, labels = self.images.test
    else:
      keep = self.images.hidden >= 0
      images, labels = self.images.inputs[keep], self.images.hidden[keep]
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    evaluate = jax.jit(functools.partial(training.evaluate,
                                         batch_size=self.config.eval_batch_size))
    return lambda state: evaluate(state, images, labels)

  # -------------------------------------------------------------------------- views

  def _class_counts(self, labels: dict) -> dict[str, int]:
    counts = {c: 0 for c in self.classes}
    for item in labels.values():
      if item.label is not None:
        counts[item.label] += 1
    return counts

  def state(self, labels: dict | None = None) -> dict:
    """What the page shows, as JSON."""
    with self.lock:
      labels = self.store.all() if labels is None else labels
      curve = [{k: rec.get(k) for k in ("round", "num_labeled", "estimated_accuracy",
                                        "validation_labeled", "true_accuracy", "round_s")}
               for rec in self.loop.results[0]]
      return {
          "round": self.loop.next_round, "classes": list(self.classes),
          "keys": list(KEYS[:len(self.classes)]),
          "batch": [{"index": i, "label": labels[i].label if i in labels else None,
                     "answered": i in labels} for i in self.batch],
          "training": self.training,
          "training_s": time.time() - self.train_started if self.training else 0.0,
          "last_round_s": curve[-1]["round_s"] if curve else None,
          "error": self.error, "done": not self.batch and not self.training,
          "labeled": sum(item.label is not None for item in labels.values()),
          "skipped": sum(item.label is None for item in labels.values()),
          "pool": len(self.paths), "class_counts": self._class_counts(labels),
          "curve": curve, "simulation": self.images.simulation,
          "metric": self.settings.metric, "model": self._model_line()}

  def _model_line(self) -> str:
    """What the model is and takes, e.g. "mlp on the vectors of features.npz [24]"."""
    shape = self.images.inputs.shape[1:]
    name = self.config.model_name(tuple(shape))
    if self.images.vectors is not None:
      return (f"{name} on the vectors of {os.path.basename(self.settings.features)} "
              f"[{shape[0]}]")
    return f"{name} on the images, {shape[0]}x{shape[1]}"

  def thumbnail(self, index: int) -> str:
    """The path of image `index`'s JPEG thumbnail, made on first use and cached."""
    if not 0 <= index < len(self.paths):
      raise KeyError(index)
    source = os.path.join(self.images.pool.root, *self.paths[index].split("/"))
    return images_lib.thumbnail(source, os.path.join(self.workdir, "thumbnails",
                                                     f"{index}.jpg"), THUMBNAIL_SIZE)

  # ------------------------------------------------------------------------ outputs

  def export(self) -> dict:
    """Writes labels.csv and labels.json in the workdir; returns their paths and count."""
    with self.lock:
      rows = store_lib.export_rows(self.store.all(), self._validation_set)
      csv_path, json_path = store_lib.write_exports(
          self.workdir, rows, {"images": self.images.pool.root, "classes": list(self.classes),
                               "rounds": self.loop.next_round})
    return {"csv": csv_path, "json": json_path, "count": len(rows)}

  def model_probs(self) -> np.ndarray | None:
    """The latest model's class probabilities [N, C] for the whole pool; None before the
    first round and while a round runs (the page shows them as each tile's guess)."""
    if not self._loop_lock.acquire(blocking=False):
      return None
    try:
      return None if self.loop.next_round == 0 else self.loop.predictions()[:len(self.paths)]
    finally:
      self._loop_lock.release()

  def predict(self) -> str:
    """Writes predictions.csv for every image without a label: the latest model's class
    and probability, and the acquisition strategy's score and rank (`RoundLoop.ranking`).
    Its "ranking" column says what a rank is: "score", every image ranked by a
    per-image score (1 = asked first); "batch", ranks 1..query_size are the batch a
    joint strategy (batchbald, coreset, badge, stochastic_*) would ask next, chosen
    together, and the other images have no rank (nor score)."""
    if self.loop.next_round == 0:
      raise LabelError("no model yet: label the first batch in the page first")
    labels = self.store.all()
    unlabeled = [i for i in range(len(self.paths))
                 if i not in labels or labels[i].label is None]
    if not unlabeled:
      raise LabelError("every image is labeled; nothing to predict")
    available = np.zeros(len(self.paths), bool)
    available[unlabeled] = True
    with self._loop_lock:
      selection, every_image = self.loop.ranking(available)
      probs = self.loop.predictions()
    ranked = [(i, s) for i, s in zip(selection.indices.tolist(), selection.scores.tolist())
              if i >= 0]
    chosen = {i for i, _ in ranked}
    rows = [(i, f"{s:.6g}", rank) for rank, (i, s) in enumerate(ranked, 1)]
    rows += [(i, "", "") for i in unlabeled if i not in chosen]
    ranking = "score" if every_image else "batch"
    return store_lib.write_predictions(self.workdir, [
        {"path": self.paths[i], "predicted_label": self.classes[int(np.argmax(probs[i]))],
         "probability": f"{np.max(probs[i]):.6f}", "score": score, "rank": rank,
         "ranking": ranking} for i, score, rank in rows])

  def close(self) -> None:
    with self._loop_lock:
      self.loop.close()
    self.store.close()
