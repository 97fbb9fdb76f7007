"""A job's configuration: one frozen dataclass, completed and checked when it is built.

A job is one data set and protocol run for every (metric, seed) pair of `metrics` x
`seeds`. Fields left at None take the data set's defaults (`al_jax.specs`) in
`__post_init__`, which also rejects every impossible setting with a one-line
ConfigError, so a Config that exists is valid. Whether the runs fit the pool is
checked once the pool size is known (`check_budget`).
"""

import dataclasses
import json
from typing import Any

from al_jax import cold_start, metrics, models, specs, strategies

PROTOCOLS = ("pool", "reselect")
# Training recipes. "paper": the data set's own model and the authors' batch size, the
# given epochs only. "small_budget" (the pool protocol's default): at least
# SMALL_BUDGET_MIN_STEPS SGD steps per round at batch SMALL_BUDGET_BATCH, and the pooled
# CNN instead of the paper's MNIST CNN (whose 9,216-wide dense input is too much to fit
# from tens of labels); docs/RESULTS.md compares the two.
RECIPES = ("paper", "small_budget")
SMALL_BUDGET_MIN_STEPS = 250
SMALL_BUDGET_BATCH = 32
RUN_LAYOUTS = ("auto", "true", "false")
# Settings that do not change what a job computes: a workdir resumes across them.
RESUMABLE_CHANGES = ("data_dir", "vmap_runs", "stream_pool")
# Strategy options that were Config fields before the strategies owned them.
FLAT_STRATEGY_OPTIONS = ("mc_samples", "batch_configs", "stochastic_mode", "stochastic_beta")
_SPEC_DEFAULTS = ("batch_size", "learning_rate", "momentum", "weight_decay", "epochs",
                  "select_batches", "batch_aggregate")


class ConfigError(ValueError):
  """An impossible or unknown setting; the message is one line that says what to do."""


@dataclasses.dataclass(frozen=True)
class Config:
  """One job: `metrics` x `seeds` runs of one protocol on one data set."""
  dataset: str = "mnist"
  metrics: tuple[str, ...] = ("entropy",)
  seeds: tuple[int, ...] = (0,)
  protocol: str = "pool"
  data_dir: str | None = None
  classes: tuple[str, ...] | None = None
  image_size: int = 32
  test_fraction: float = 0.2          # folder without test/: share held out for testing
  model: str | None = None            # a key of models.MODELS; None: the recipe's choice
  recipe: str | None = None           # RECIPES; None: small_budget (pool), paper (reselect)
  pool_size: int | None = None        # use a random subset of the training set as pool
  test_size: int | None = None        # use a random subset of the test set
  # pool protocol (Algorithm 1)
  initial_size: int = 100
  query_size: int = 100
  rounds: int = 5
  class_balanced_init: bool = False
  initial_selection: str | None = None  # None (random), kmeans_pp or kmeans: a cold start
                                        # from the pool's pixels (al_jax.cold_start)
  keep_training: bool = False         # default: re-initialise the model every round
  epochs_per_round: int = 20
  min_steps: int | None = None        # train each round at least this many SGD steps
                                      # (whole epochs; 0 = epochs_per_round only;
                                      # None: the recipe's)
  validation_fraction: float = 0.0    # > 0: hold out this share of the labels (a fixed
                                      # random subset of the pool) for early stopping
  patience: int = 4                   # early stopping: checks (every 25 steps) without
                                      # a new lowest held-out loss
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
  ensemble_size: int = 1              # > 1: a deep ensemble of this many models, trained
                                      # together; Bayesian strategies use its members
  strategy_options: Any = ()          # {option: value} for the strategies' options
                                      # (al_jax.strategies: mc_samples, batch_configs,
                                      # ...); kept as the sorted (name, value) pairs the
                                      # job's metrics read, the others at their defaults
  eval_batch_size: int = 1000
  vmap_runs: str = "auto"             # runs as one vmapped program ("true"), in sequence
                                      # ("false"), or vmapped on GPU/TPU only ("auto")
  stream_pool: str = "auto"           # read the pool from the host in chunks each round
                                      # ("true"), hold it on device ("false"), or stream
                                      # an npy pool on disk only ("auto"; al_jax.streaming)

  def __post_init__(self):
    try:
      spec = specs.get(self.dataset)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if self.recipe is None:
      object.__setattr__(self, "recipe", "small_budget" if self.protocol == "pool" else "paper")
    _check_choice("recipe", self.recipe, RECIPES)
    small = self.recipe == "small_budget"
    if self.min_steps is None:
      object.__setattr__(self, "min_steps", SMALL_BUDGET_MIN_STEPS if small else 0)
    if self.batch_size is None and small:
      object.__setattr__(self, "batch_size", SMALL_BUDGET_BATCH)
    for name in _SPEC_DEFAULTS:
      if getattr(self, name) is None:
        object.__setattr__(self, name, getattr(spec, name))
    for name in ("metrics", "seeds"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.classes is not None:
      object.__setattr__(self, "classes", tuple(self.classes))
    if self.initial_selection == "random":  # the default, spelled out
      object.__setattr__(self, "initial_selection", None)
    if not self.metrics:
      raise ConfigError("no metric given; pass --metric=NAME or --metric=all")
    try:
      options = strategies.resolved_options(self.metrics, dict(self.strategy_options))
    except ValueError as e:
      raise ConfigError(str(e)) from None
    object.__setattr__(self, "strategy_options", tuple(options.items()))
    self._validate()

  def _validate(self) -> None:
    _check_choice("protocol", self.protocol, PROTOCOLS)
    if len(set(self.metrics)) != len(self.metrics) or len(set(self.seeds)) != len(self.seeds):
      raise ConfigError(f"repeated metric or seed in {self.metrics} x {self.seeds}")
    if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
      raise ConfigError(f"seeds must be non-negative integers, got {self.seeds!r}")
    if self.protocol == "reselect" and any(m not in metrics.NAMES for m in self.metrics):
      raise ConfigError(f"--protocol=reselect scores single images with one of "
                        f"{', '.join(metrics.NAMES)}; got {', '.join(self.metrics)}")
    if self.protocol == "reselect" and self.ensemble_size > 1:
      raise ConfigError("--ensemble_size > 1 needs --protocol=pool")
    if self.initial_selection is not None:
      _check_choice("initial_selection", self.initial_selection, cold_start.SELECTIONS)
      if self.class_balanced_init or self.protocol != "pool":
        raise ConfigError(f"--initial_selection={self.initial_selection} chooses the first "
                          "labels without labels; it needs --protocol=pool and no "
                          "--class_balanced")
    _check_choice("select", self.select, ("batches", "samples"))
    _check_choice("batch_aggregate", self.batch_aggregate, ("sum", "mean"))
    _check_choice("vmap_runs", self.vmap_runs, RUN_LAYOUTS)
    _check_choice("stream_pool", self.stream_pool, RUN_LAYOUTS)
    if self.streams_pool:
      self._check_streamable()
    if self.model is not None:
      _check_choice("model", self.model, tuple(models.MODELS))
    if not 0 < self.test_fraction < 1:
      raise ConfigError(f"--test_fraction must be between 0 and 1, got {self.test_fraction}")
    positive = ["initial_size", "query_size", "rounds", "epochs_per_round", "epochs",
                "select_batches", "batch_size", "chunk_size", "eval_batch_size", "image_size",
                "ensemble_size", "patience"]
    for name in positive + ["pool_size", "test_size"]:
      if getattr(self, name) is not None:
        strategies.check_positive(f"--{name}", getattr(self, name), ConfigError)
    if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or \
        self.min_steps < 0:
      raise ConfigError(f"--min_steps must be a non-negative integer, got {self.min_steps!r}")
    if not 0 <= self.validation_fraction < 1:
      raise ConfigError(f"--validation_fraction must be in [0, 1), got "
                        f"{self.validation_fraction}")
    if self.validation_fraction and self.protocol != "pool":
      raise ConfigError("--validation_fraction needs --protocol=pool")
    if self.learning_rate <= 0:
      raise ConfigError(f"--learning_rate must be positive, got {self.learning_rate}")
    if self.weight_decay < 0:
      raise ConfigError(f"--weight_decay must be >= 0, got {self.weight_decay}")

  def model_name(self, image_shape: tuple[int, ...]) -> str:
    """The CNN for images [H, W, C]: --model, else the data set's own under the paper
    recipe, with the pooled CNN in place of the MNIST CNN under small_budget."""
    if self.model is not None:
      return self.model
    own = specs.get(self.dataset).model_for(image_shape)
    return "pooled_cnn" if self.recipe == "small_budget" and own == "mnist_cnn" else own

  @property
  def streams_pool(self) -> bool:
    """Whether the pool is read from the host chunk by chunk (never whole on a device)."""
    return self.stream_pool == "true" or (self.stream_pool == "auto" and self.dataset == "npy")

  def _check_streamable(self) -> None:
    off = "; or pass --stream_pool=false to hold the pool in memory"
    if self.protocol != "pool":
      raise ConfigError("a streamed pool needs --protocol=pool (reselect rescores and "
                        "trains on the whole pool every epoch)" + off)
    joint = [m for m in self.metrics if not strategies.streams(m)]
    if joint:
      per_image = [m for m in strategies.names() if strategies.streams(m)]
      raise ConfigError(f"--metric={joint[0]} chooses from the whole pool at once, which a "
                        "streamed pool never holds; use a per-image strategy ("
                        f"{', '.join(per_image)})" + off)
    if self.initial_selection is not None:
      raise ConfigError(f"--initial_selection={self.initial_selection} clusters the whole "
                        "pool's pixels, which a streamed pool never holds" + off)

  @property
  def runs(self) -> tuple[tuple[str, int], ...]:
    """The (metric, seed) pairs of the job, metric-major."""
    return tuple((m, s) for m in self.metrics for s in self.seeds)

  @property
  def num_rounds(self) -> int:
    """Rounds of the round loop: `rounds` (pool) or `epochs` (reselect)."""
    return self.rounds if self.protocol == "pool" else self.epochs

  @property
  def labels_needed(self) -> int:
    """Labeled images at the end of a pool run: initial + (rounds - 1) queries."""
    return self.initial_size + (self.rounds - 1) * self.query_size

  def check_budget(self, pool_size: int) -> None:
    """ConfigError unless the runs fit a pool of `pool_size` images."""
    if self.protocol == "pool":
      if self.initial_size > pool_size:
        raise ConfigError(f"--initial_size={self.initial_size} is larger than the pool "
                          f"({pool_size} images); lower --initial_size")
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

  def to_dict(self) -> dict[str, Any]:
    """JSON-able fields (tuples as lists, strategy_options a dict), as written to
    workdir/config.json."""
    fields = {**dataclasses.asdict(self), "strategy_options": dict(self.strategy_options)}
    return json.loads(json.dumps(fields))


def completed(saved: dict[str, Any], current: "Config") -> dict[str, Any]:
  """A config.json of an older version in today's form, the one place old workdirs are
  mapped: the fields it lacks as they then were (new fields at their defaults, min_steps
  0, and the paper recipe, recipes came later, unless it chose its model, when the recipe
  changes nothing of what it computes), and the strategy options it kept as fields of
  their own (FLAT_STRATEGY_OPTIONS) as the strategy_options its metrics read."""
  saved = dict(saved)
  if "strategy_options" not in saved:
    flat = {k: saved.pop(k) for k in FLAT_STRATEGY_OPTIONS if k in saved}
    try:
      saved["strategy_options"] = strategies.resolved_options(tuple(saved.get("metrics", ())),
                                                              flat)
    except ValueError as e:
      raise ConfigError(f"the saved config.json does not fit: {e}") from None
  was = {f.name: f.default for f in dataclasses.fields(Config)}
  was.update(min_steps=0,
             recipe="paper" if saved.get("model") is None else current.recipe)
  return {**{k: v for k, v in was.items() if k not in saved}, **saved}


def _check_choice(name: str, value: Any, valid: tuple) -> None:
  if value not in valid:
    raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


def rounds_for_budget(budget: int, initial_size: int, query_size: int) -> int:
  """Rounds of a pool run that ends with `budget` labels: 1 + (budget - initial) // query."""
  if budget < initial_size:
    raise ConfigError(f"--budget={budget} is below --initial_size={initial_size}; "
                      "raise --budget or lower --initial_size")
  strategies.check_positive("--query_size", query_size, ConfigError)
  return 1 + (budget - initial_size) // query_size
