"""Experiment configuration: one frozen dataclass, checked before any work starts."""

import dataclasses
import json
from typing import Any

from al_jax import metrics

PROTOCOLS = ("pool", "reselect")
DATASETS = ("mnist", "fashion_mnist", "fruits360")

# Optimiser and batch defaults from the authors' code (NOTES.md).
DATASET_DEFAULTS = {
    "mnist": dict(batch_size=128, learning_rate=0.01, momentum=0.9, weight_decay=0.0,
                  select_batches=25, batch_aggregate="sum", epochs=350),
    "fashion_mnist": dict(batch_size=128, learning_rate=0.01, momentum=0.9, weight_decay=0.0,
                          select_batches=25, batch_aggregate="sum", epochs=350),
    "fruits360": dict(batch_size=64, learning_rate=0.005, momentum=0.9, weight_decay=8e-4,
                      select_batches=20, batch_aggregate="mean", epochs=20),
}


class ConfigError(ValueError):
  """An impossible or unknown setting; the message is one line that says what to do."""


@dataclasses.dataclass(frozen=True)
class Config:
  """One active-learning run (one metric, one seed)."""
  dataset: str = "mnist"
  metric: str = "entropy"
  seed: int = 0
  protocol: str = "pool"
  data_dir: str | None = None
  classes: tuple[str, ...] | None = None
  image_size: int = 32
  pool_size: int | None = None        # use a random subset of the training set as pool
  test_size: int | None = None        # use a random subset of the test set
  # pool protocol (Algorithm 1)
  initial_size: int = 100
  query_size: int = 100
  rounds: int = 5
  class_balanced_init: bool = False
  keep_training: bool = False         # default: re-initialise the model every round
  epochs_per_round: int = 20
  # reselect protocol (what the authors ran)
  epochs: int | None = None
  select_batches: int | None = None
  select: str = "batches"             # "batches" (score a batch as a whole) or "samples"
  batch_aggregate: str | None = None  # "sum" or "mean" of per-image scores in a batch
  # optimisation
  batch_size: int | None = None
  learning_rate: float | None = None
  momentum: float | None = None
  weight_decay: float | None = None
  chunk_size: int = 1000              # pool images scored per compiled chunk
  eval_batch_size: int = 1000

  def with_defaults(self) -> "Config":
    """Fills every None that has a per-dataset default."""
    self._check_choice("dataset", self.dataset, DATASETS)
    fill = {k: v for k, v in DATASET_DEFAULTS[self.dataset].items()
            if getattr(self, k) is None}
    return dataclasses.replace(self, **fill)

  def _check_choice(self, name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
      raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")

  def validate(self, pool_size: int | None = None) -> "Config":
    """Raises ConfigError on an impossible setting; `pool_size` checks the budget."""
    self._check_choice("dataset", self.dataset, DATASETS)
    self._check_choice("protocol", self.protocol, PROTOCOLS)
    self._check_choice("metric", self.metric, metrics.NAMES)
    self._check_choice("select", self.select, ("batches", "samples"))
    self._check_choice("batch_aggregate", self.batch_aggregate, ("sum", "mean"))
    positive = ["initial_size", "query_size", "rounds", "epochs_per_round", "epochs",
                "select_batches", "batch_size", "chunk_size", "eval_batch_size", "image_size"]
    for name in positive + ["pool_size", "test_size"]:
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value <= 0):
        raise ConfigError(f"--{name} must be a positive integer, got {value!r}")
    if self.learning_rate is not None and self.learning_rate <= 0:
      raise ConfigError(f"--learning_rate must be positive, got {self.learning_rate}")
    if self.weight_decay is not None and self.weight_decay < 0:
      raise ConfigError(f"--weight_decay must be >= 0, got {self.weight_decay}")
    if pool_size is not None:
      self.check_budget(pool_size)
    return self

  @property
  def labels_needed(self) -> int:
    """Labeled images at the end of a pool run: initial + (rounds - 1) queries."""
    return self.initial_size + (self.rounds - 1) * self.query_size

  def check_budget(self, pool_size: int) -> None:
    """ConfigError unless the run fits a pool of `pool_size` images."""
    if self.protocol == "pool":
      if self.query_size > pool_size - self.initial_size:
        raise ConfigError(
            f"--query_size={self.query_size} is larger than the unlabeled pool "
            f"({pool_size} - {self.initial_size} initial); lower --query_size")
      if self.labels_needed > pool_size:
        raise ConfigError(
            f"{self.rounds} rounds need {self.labels_needed} labels but the pool holds "
            f"{pool_size} images; lower --rounds or --query_size")
    else:
      needed = self.select_batches * self.batch_size
      if needed > pool_size:
        raise ConfigError(
            f"--select_batches={self.select_batches} x --batch_size={self.batch_size} = "
            f"{needed} images but the training set holds {pool_size}; lower --select_batches")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "Config":
    fields = json.loads(text)
    if fields.get("classes") is not None:
      fields["classes"] = tuple(fields["classes"])
    return cls(**fields)


def rounds_for_budget(budget: int, initial_size: int, query_size: int) -> int:
  """Rounds of a pool run that ends with `budget` labels: 1 + (budget - initial) // query."""
  if budget < initial_size:
    raise ConfigError(f"--budget={budget} is below --initial_size={initial_size}; "
                      "raise --budget or lower --initial_size")
  if query_size <= 0:
    raise ConfigError(f"--query_size must be a positive integer, got {query_size}")
  return 1 + (budget - initial_size) // query_size
