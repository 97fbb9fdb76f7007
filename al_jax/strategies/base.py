"""The strategy registry: what every acquisition strategy declares, and where it is found.

A strategy is one module that calls `register(Strategy(...))` with

  name      what --metric says
  build     build(k, chunk_size, options) -> Acquisition, the callable of the round loop
  options   a frozen dataclass of its options (each field a flag: default, help text in
            field metadata["help"], checks in __post_init__ raising a one-line ValueError)
  needs     what it asks of the model: "probabilities", "samples" (K posterior samples),
            "embeddings" (penultimate or gradient embeddings)
  color     its line colour in the plots (a matplotlib colour; None: matplotlib's next)
  benchmark whether `benchmarking.acquisition` times it

Every Acquisition has one signature,

    strategy(state, images, available, key, labeled) -> Selection
      state: training.TrainState (one model or an ensemble); images: [N, H, W, C] uint8;
      available: [N] bool (unlabeled, not padding); key: a PRNG key; labeled: [N] bool,
      the labeled set (may be omitted by the strategies that ignore it)
      Selection: indices [k] int32 pool positions in the order chosen, -1 where fewer
      than k images were available; scores [k] float32, -inf at those -1 slots

An Acquisition that ranks images by a per-image score also has
`chunk_score(state, key) -> score(images [B, H, W, C], pool indices [B]) -> [B]`: it can
run on a pool streamed from the host (`streams`). The registry is a plain dict read on
every call, so a strategy registered from a user's script is found by `--metric`, the
labeling page, the benchmark and a saved config alike.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

NEEDS = ("probabilities", "samples", "embeddings")


class Selection(NamedTuple):
  """k chosen pool images: indices [k] int32 (-1 = none left), scores [k] float32."""
  indices: jax.Array
  scores: jax.Array


class Acquisition(Protocol):
  """(state, images [N, H, W, C], available [N], key, labeled [N]) -> Selection of k."""

  def __call__(self, state, images: jax.Array, available: jax.Array, key: jax.Array,
               labeled: jax.Array | None = None) -> Selection:
    ...


@dataclasses.dataclass(frozen=True)
class NoOptions:
  """A strategy without options."""


@dataclasses.dataclass(frozen=True)
class Strategy:
  """One registered strategy (see the module docstring)."""
  name: str
  build: Callable[[int, int, Any], Acquisition]
  options: type = NoOptions
  needs: str = "probabilities"
  color: str | None = None
  benchmark: bool = False


_REGISTRY: dict[str, Strategy] = {}


def check_positive(name: str, value: Any, error: type = ValueError) -> None:
  """`error` unless value is a positive int (bools are not): "NAME must be a positive
  integer, got VALUE"."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise error(f"{name} must be a positive integer, got {value!r}")


def option_fields(options: type) -> tuple[dataclasses.Field, ...]:
  """The fields of an options dataclass (each one flag)."""
  return dataclasses.fields(options)


def register(strategy: Strategy, *, replace: bool = False) -> Strategy:
  """Adds `strategy` to the registry (or replaces one of the same name with replace=True).

  An option shared with another strategy (e.g. mc_samples) must have the same default,
  since the two read one flag. Returns the strategy, so a module can keep it.
  """
  if not isinstance(strategy.name, str) or not strategy.name or "," in strategy.name:
    raise ValueError(f"a strategy name is a non-empty string without commas, got "
                     f"{strategy.name!r}")
  if strategy.name in _REGISTRY and not replace:
    raise ValueError(f"strategy {strategy.name!r} is already registered; pass "
                     "replace=True to replace it")
  if strategy.needs not in NEEDS:
    raise ValueError(f"unknown needs {strategy.needs!r} of strategy {strategy.name!r}; "
                     f"valid: {', '.join(NEEDS)}")
  if not dataclasses.is_dataclass(strategy.options):
    raise ValueError(f"the options of strategy {strategy.name!r} must be a dataclass")
  defaults = option_defaults()
  for field in option_fields(strategy.options):
    if field.name in defaults and defaults[field.name] != field.default:
      raise ValueError(f"option {field.name} of strategy {strategy.name!r} has default "
                       f"{field.default!r}, another strategy's {defaults[field.name]!r}; "
                       "give it its own name")
  _REGISTRY[strategy.name] = strategy
  return strategy


def unregister(name: str) -> Strategy:
  """Removes strategy `name` from the registry (e.g. at the end of a test); returns it."""
  get(name)
  return _REGISTRY.pop(name)


def names() -> tuple[str, ...]:
  """Every registered strategy's name, in registration order."""
  return tuple(_REGISTRY)


def get(name: str) -> Strategy:
  """The strategy called `name`; a one-line ValueError listing the valid names otherwise."""
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown metric {name!r}; valid: {', '.join(_REGISTRY)}") from None


def option_defaults() -> dict[str, Any]:
  """{option name: default} over every registered strategy's options."""
  return {f.name: f.default for s in _REGISTRY.values() for f in option_fields(s.options)}


def option_help() -> dict[str, str]:
  """{option name: help text} (the first strategy's that declares it)."""
  out: dict[str, str] = {}
  for s in _REGISTRY.values():
    for f in option_fields(s.options):
      out.setdefault(f.name, f.metadata.get("help", f.name))
  return out


def options_of(name: str, given: dict[str, Any]) -> Any:
  """Strategy `name`'s options dataclass, from `given` (others' options are ignored,
  names no strategy knows are refused); its checks run here."""
  strategy = get(name)
  unknown = sorted(set(given) - set(option_defaults()))
  if unknown:
    raise ValueError(f"unknown strategy option {unknown[0]!r}; valid: "
                     f"{', '.join(option_defaults())}")
  own = {f.name for f in option_fields(strategy.options)}
  return strategy.options(**{k: v for k, v in given.items() if k in own})


def resolved_options(metrics: tuple[str, ...], given: dict[str, Any]) -> dict[str, Any]:
  """{option: value} of the options the strategies `metrics` read, checked: `given` where
  it says, the defaults elsewhere."""
  out: dict[str, Any] = {}
  for name in metrics:
    out.update(dataclasses.asdict(options_of(name, given)))
  return dict(sorted(out.items()))


def make(name: str, *, k: int, chunk_size: int = 1000, **options) -> Acquisition:
  """The strategy called `name`, choosing `k` images, scoring `chunk_size` images per
  compiled chunk; `options` such as mc_samples go to the strategies that read them.
  One-line ValueError for an unknown name or a bad option."""
  strategy = get(name)
  check_positive("k", k)
  check_positive("chunk_size", chunk_size)
  return strategy.build(k, chunk_size, options_of(name, options))


def streams(name: str) -> bool:
  """Whether strategy `name` ranks images by a per-image score, so it can run on a pool
  streamed from the host: its Acquisition has `chunk_score`."""
  strategy = get(name)
  return hasattr(strategy.build(1, 1, strategy.options()), "chunk_score")


def top_k_selection(scores: jax.Array, indices: jax.Array) -> Selection:
  """A running top-k's (scores [k], indices [k]) as a Selection: -1 where score is -inf."""
  return Selection(jnp.where(scores > -jnp.inf, indices, -1), scores)


def picked_set(indices: jax.Array) -> Selection:
  """A jointly chosen set [k] (-1 = none), which has no per-image score: scores 0."""
  return picked(indices, jnp.zeros(indices.shape, jnp.float32))


def picked(indices: jax.Array, scores: jax.Array) -> Selection:
  """A Selection of chosen indices [k] (-1 = none) with their scores, -inf at -1."""
  return Selection(indices, jnp.where(indices >= 0, scores, -jnp.inf).astype(jnp.float32))
