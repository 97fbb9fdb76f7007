"""A job's configuration: one frozen dataclass, completed and checked when it is built.

A job is one data set and protocol run for every (metric, seed) pair of `metrics` x
`seeds`. Every option is defined once, here, as a field (`option`: default, section,
help), and the command-line flags are generated from these definitions
(`al_jax.config_flags`); the strategies define their own options (`al_jax.strategies`),
held in `strategy_options`. Fields left at None take the recipe's (`al_jax.recipes`) and
the data set's defaults (`al_jax.specs`) in `__post_init__`; then each section (data,
protocol, training, strategy, layout) checks itself and rejects every impossible setting
with a one-line ConfigError, so a Config that exists is valid. Whether the runs fit the
pool is checked once the pool size is known (`check_budget`). `completed` maps the
config.json of an older version, once, for resuming its workdir.
"""

import dataclasses
import json
from typing import Any

from al_jax import (cold_start, datasets, metrics, model_registry, recipes, specs,
                    strategies)

PROTOCOLS = ("pool", "reselect")
RUN_LAYOUTS = ("auto", "true", "false")
# Settings that do not change what a job computes: a workdir resumes across them.
RESUMABLE_CHANGES = ("data_dir", "vmap_runs", "stream_pool")
# Strategy options that were Config fields before the strategies owned them.
FLAT_STRATEGY_OPTIONS = ("mc_samples", "batch_configs", "stochastic_mode", "stochastic_beta")
SECTIONS = ("data", "protocol", "training", "strategy", "layout")
_SPEC_DEFAULTS = ("batch_size", "learning_rate", "momentum", "weight_decay", "epochs",
                  "select_batches", "batch_aggregate")


def option(default: Any, section: str, help: str, **flag: Any) -> Any:  # noqa: A002
  """A Config field: its default, its section (SECTIONS), the help text of its flag, and
  how the flag differs from the field (flag="name", choices=(...), flag=None: no flag
  of its own; `al_jax.config_flags` generates the flags)."""
  return dataclasses.field(default=default,
                           metadata={"section": section, "help": help, **flag})


class ConfigError(ValueError):
  """An impossible or unknown setting; the message is one line that says what to do."""


@dataclasses.dataclass(frozen=True)
class Config:
  """One job: `metrics` x `seeds` runs of one protocol on one data set.

  Each field is an `option`: its section, the help text of its flag. The strategies'
  own options (mc_samples, batch_configs, ...) live in `strategy_options`, defined by
  the strategies (`al_jax.strategies`)."""
  # data
  dataset: str = option("mnist", "data", f"One of {', '.join(specs.NAMES)}, or "
                        f"{specs.TFDS_PREFIX}NAME for a TensorFlow Datasets "
                        "image-classification set (features image, label), e.g. "
                        "tfds:cifar10.")
  data_dir: str | None = option(None, "data", "Local data folder (or root holding "
                                "<dataset>/), 'sample' for the shipped sample; default "
                                "$AL_JAX_DATA_DIR, else the packaged MNIST (mnist), else a "
                                "download into the cache. --dataset=folder: "
                                "DIR/train/<class>/*.jpg (and DIR/test/<class>/). "
                                "--dataset=tfds:NAME: TFDS's data_dir (default TFDS's own). "
                                "--dataset=npy: DIR/pool_images.npy and the rest "
                                "(docs/DATA.md).")
  classes: tuple[str, ...] | None = option(None, "data", "Class subset, e.g. 0,1 or "
                                           "apple,banana (binary tasks).")
  image_size: int = option(32, "data", "Fruits-360, folder and tfds images are resized to "
                           "this size.")
  test_fraction: float = option(0.2, "data", "folder without test/, tfds without a test "
                                "split: share of each class held out as the test set (a "
                                "fixed, seeded split).")
  pool_size: int | None = option(None, "data", "Use a fixed random subset of the training "
                                 "set.")
  test_size: int | None = option(None, "data", "Use a fixed random subset of the test set.")
  # protocol
  metrics: tuple[str, ...] = option(("entropy",), "protocol", "The strategies compared "
                                    "(--metric).", flag=None)
  seeds: tuple[int, ...] = option((0,), "protocol", "The seeds (--seed, --seeds).",
                                  flag=None)
  protocol: str = option("pool", "protocol", "pool: Algorithm 1, labels accumulate; "
                         "reselect: the authors' per-epoch reselection from the whole "
                         "training set.")
  initial_size: int = option(100, "protocol", "pool: random labeled images to start from.")
  query_size: int = option(100, "protocol", "pool: images queried per round.")
  rounds: int = option(5, "protocol", "pool: rounds (train, evaluate, query).")
  class_balanced_init: bool = option(False, "protocol", "pool: class-balanced initial set.",
                                     flag="class_balanced")
  initial_selection: str | None = option(None, "protocol", "pool: choose the initial "
                                         "labels by kmeans_pp or kmeans on the pool's pixels "
                                         "(a cold start; no --class_balanced) instead of at "
                                         "random.")
  epochs: int | None = option(None, "protocol", "reselect: epochs (default 350 MNIST, 20 "
                              "Fruits-360).")
  select_batches: int | None = option(None, "protocol", "reselect: batches kept per epoch "
                                      "(25 / 20).")
  select: str = option("batches", "protocol", "reselect: score whole batches (the authors) "
                       "or single images.", choices=("batches", "samples"))
  batch_aggregate: str | None = option(None, "protocol", "reselect: 'sum' or 'mean' of a "
                                       "batch's scores.")
  # training
  model: str | None = option(None, "training", "CNN: mnist_cnn, fruits_net3 or pooled_cnn "
                             "(small head, for tiny labeled sets), or mlp for feature "
                             "vectors (default: the data set's, by channels for a folder "
                             "or tfds set: grey mnist_cnn, colour fruits_net3; mlp for an "
                             "npy set of vectors; with --recipe=small_budget pooled_cnn instead of "
                             "mnist_cnn); a registered model's name; or your own Flax NNX "
                             "or Linen module class, path/to/file.py:Name or "
                             "package.module:Name (README, Your own model).")
  recipe: str | None = option(None, "training", "Training defaults (al_jax.recipes). "
                              "small_budget (the pool protocol's default): --min_steps=250, "
                              "--batch_size=32, pooled_cnn for grey images. paper "
                              "(reselect's default; experiments/reproduce.sh): the data "
                              "set's own model and batch size, --min_steps=0.")
  keep_training: bool = option(False, "training", "pool: keep training the previous model "
                               "(default: re-initialise each round).")
  epochs_per_round: int = option(20, "training", "pool: training epochs on the labeled set "
                                 "per round.")
  min_steps: int | None = option(None, "training", "pool: train each round for at least "
                                 "this many SGD steps (more whole epochs when the labeled "
                                 "set is small); 0 = off (default: the recipe's, 250 or 0).")
  validation_fraction: float = option(0.0, "training", "pool: hold out the labels of this "
                                      "share of the pool (a fixed random subset per seed) "
                                      "for early stopping: every 25 steps the held-out loss "
                                      "is checked, training stops after --patience checks "
                                      "without a new low and keeps the best weights; 0 = "
                                      "off.")
  patience: int = option(4, "training", "pool: early-stopping checks without improvement.")
  batch_size: int | None = option(None, "training", "Training batch size (default: the "
                                  "recipe's, 32; paper: 128 MNIST, 64 Fruits-360).")
  learning_rate: float | None = option(None, "training", "SGD learning rate (0.01 MNIST, "
                                       "0.005 Fruits-360).")
  momentum: float | None = option(None, "training", "SGD momentum (0.9).")
  weight_decay: float | None = option(None, "training", "L2 weight decay (0 MNIST, 8e-4 "
                                      "Fruits-360).")
  augment_shift: float = option(0.0, "training", "pool: shift each training image by up "
                                "to this many pixels along each axis, at random each "
                                "step (al_jax.augment); 0 = off.")
  augment_degrees: float = option(0.0, "training", "pool: rotate each training image by "
                                  "up to this many degrees, at random each step; 0 = off.")
  ensemble_size: int = option(1, "training", "pool: train a deep ensemble of this many "
                              "models (one vmapped program); the Bayesian and batch "
                              "strategies then use its members instead of dropout passes, "
                              "the paper's scorers its mean.")
  # strategy
  strategy_options: Any = option((), "strategy", "{option: value} of the strategies' "
                                 "options; kept as the sorted (name, value) pairs the "
                                 "job's metrics read (one flag each, from the strategies).",
                                 flag=None)
  # layout (how the job runs, not what it computes)
  chunk_size: int = option(1000, "layout", "Pool images scored per compiled chunk.")
  eval_batch_size: int = option(1000, "layout", "Test images evaluated per compiled chunk.")
  vmap_runs: str = option("auto", "layout", "Run all (metric, seed) runs of a round as one "
                          "vmapped program (true) or one after another in the same program "
                          "(false). auto = vmap on GPU/TPU, not on CPU, where XLA runs the "
                          "stacked convolutions slower (docs/BENCHMARKS.md). Results are the "
                          "same; a job resumes across it.", choices=RUN_LAYOUTS)
  stream_pool: str = option("auto", "layout", "Read the pool from the host in chunks each "
                            "round, so it never sits whole on a device or (--dataset=npy) in "
                            "memory: true, false, or auto = when the data source gives its "
                            "pool by rows (e.g. --dataset=npy). Per-image "
                            "strategies only; results equal the in-memory job's, and a job "
                            "resumes across it.", choices=RUN_LAYOUTS)

  def __post_init__(self):
    """Fills the fields left at None (the data set's and the recipe's defaults) and the
    strategy options, then each section checks itself (SECTIONS)."""
    try:
      spec = specs.get(self.dataset)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if self.recipe is None:
      object.__setattr__(self, "recipe", recipes.default_recipe(self.protocol))
    _check_choice("recipe", self.recipe, recipes.RECIPES)
    for name, value in recipes.defaults(self.recipe).items():
      if getattr(self, name) is None:
        object.__setattr__(self, name, value)
    for name in _SPEC_DEFAULTS:
      if getattr(self, name) is None:
        object.__setattr__(self, name, getattr(spec, name))
    for name in ("metrics", "seeds"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.classes is not None:
      object.__setattr__(self, "classes", tuple(self.classes))
    if self.model is not None:  # a model file by its absolute path: resumable from anywhere
      object.__setattr__(self, "model", model_registry.resolve(self.model))
    if self.initial_selection == "random":  # the default, spelled out
      object.__setattr__(self, "initial_selection", None)
    if not self.metrics:
      raise ConfigError("no metric given; pass --metric=NAME or --metric=all")
    try:
      options = strategies.resolved_options(self.metrics, dict(self.strategy_options))
    except ValueError as e:
      raise ConfigError(str(e)) from None
    object.__setattr__(self, "strategy_options", tuple(options.items()))
    for section in SECTIONS:
      getattr(self, f"_check_{section}")()

  def _positive(self, *names: str) -> None:
    for name in names:
      if getattr(self, name) is not None:
        strategies.check_positive(f"--{name}", getattr(self, name), ConfigError)

  def _check_data(self) -> None:
    if not 0 < self.test_fraction < 1:
      raise ConfigError(f"--test_fraction must be between 0 and 1, got {self.test_fraction}")
    self._positive("image_size", "pool_size", "test_size")

  def _check_protocol(self) -> None:
    _check_choice("protocol", self.protocol, PROTOCOLS)
    if len(set(self.metrics)) != len(self.metrics) or len(set(self.seeds)) != len(self.seeds):
      raise ConfigError(f"repeated metric or seed in {self.metrics} x {self.seeds}")
    if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
      raise ConfigError(f"seeds must be non-negative integers, got {self.seeds!r}")
    if self.protocol == "reselect" and any(m not in metrics.NAMES for m in self.metrics):
      raise ConfigError(f"--protocol=reselect scores single images with one of "
                        f"{', '.join(metrics.NAMES)}; got {', '.join(self.metrics)}")
    if self.initial_selection is not None:
      _check_choice("initial_selection", self.initial_selection, cold_start.SELECTIONS)
      if self.class_balanced_init or self.protocol != "pool":
        raise ConfigError(f"--initial_selection={self.initial_selection} chooses the first "
                          "labels without labels; it needs --protocol=pool and no "
                          "--class_balanced")
    _check_choice("select", self.select, ("batches", "samples"))
    _check_choice("batch_aggregate", self.batch_aggregate, ("sum", "mean"))
    self._positive("initial_size", "query_size", "rounds", "epochs", "select_batches")

  def _check_training(self) -> None:
    if self.protocol == "reselect" and self.ensemble_size > 1:
      raise ConfigError("--ensemble_size > 1 needs --protocol=pool")
    if self.model is not None:
      try:
        model_registry.check_name(self.model)
      except ValueError as e:
        raise ConfigError(str(e)) from None
    self._positive("epochs_per_round", "batch_size", "ensemble_size", "patience")
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
    for name in ("augment_shift", "augment_degrees"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or \
          not 0 <= value <= 180:
        raise ConfigError(f"--{name} must be a number in [0, 180], got {value!r}")
    if (self.augment_shift or self.augment_degrees) and self.protocol != "pool":
      raise ConfigError("--augment_shift and --augment_degrees need --protocol=pool")

  def _check_strategy(self) -> None:
    """The metrics are registered strategies and their options passed their own checks
    (both when strategy_options were resolved); nothing else to check."""

  def _check_layout(self) -> None:
    _check_choice("vmap_runs", self.vmap_runs, RUN_LAYOUTS)
    _check_choice("stream_pool", self.stream_pool, RUN_LAYOUTS)
    self._positive("chunk_size", "eval_batch_size")
    if self.streams_pool:
      self._check_streamable()

  def model_name(self, image_shape: tuple[int, ...]) -> str:
    """The CNN for images [H, W, C]: --model, else the data set's own under the paper
    recipe, with the pooled CNN in place of the MNIST CNN under small_budget."""
    if self.model is not None:
      return self.model
    return recipes.model(self.recipe, specs.get(self.dataset).model_for(image_shape))

  @property
  def streams_pool(self) -> bool:
    """Whether the pool is read from the host chunk by chunk (never whole on a device)."""
    return self.stream_pool == "true" or (self.stream_pool == "auto" and
                                          datasets.source(self.dataset).streams)

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
