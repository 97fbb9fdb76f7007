"""The round loop's view of the acquisition strategies: build one by name, mix several.

Each strategy is a module of `al_jax.strategies` (or a user's own, registered with
`al_jax.strategies.register`) with the one signature

    strategy(state, images, available, key, labeled) -> Selection

(`al_jax.strategies.base` gives the shapes), its static settings (k, chunk size,
options) fixed when it is built, so the round loop calls any strategy the same way and
never needs to know which it is. Runs with different strategies share one compiled
program: `choose(strategies, index)` picks one at run time from a traced index. The
paper's per-image scorers are fused into a single pass over the pool (the scorer is
switched per image); other strategies go through `lax.switch`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from al_jax import strategies as strategy_lib
from al_jax.strategies.base import Acquisition, Selection  # noqa: F401
from al_jax.strategies.uncertainty import TopK

make = strategy_lib.make


def names() -> tuple[str, ...]:
  """The registered strategies' names (read now: a strategy registered later is in)."""
  return strategy_lib.names()


def __getattr__(name: str):
  if name == "NAMES":  # read when used, never frozen at import
    return strategy_lib.names()
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def choose(strategies: Sequence[Acquisition], index: ArrayLike) -> Acquisition:
  """strategies[index], picked at run time (`index` may be traced)."""
  if len(strategies) == 1:
    return strategies[0]
  first = strategies[0]
  if all(isinstance(s, TopK) and (s.k, s.chunk_size) == (first.k, first.chunk_size)
         for s in strategies):
    metric_indices = jnp.asarray([s.metric_index for s in strategies], jnp.int32)
    return TopK(metric_indices[index], first.k, first.chunk_size)
  return lambda state, images, available, key, labeled=None: lax.switch(
      index, list(strategies), state, images, available, key, labeled)


def labeled_after(labeled: jax.Array, selection: Selection) -> jax.Array:
  """The labeled mask [N] with the selection's images added (-1 slots ignored)."""
  n = labeled.shape[0]
  return labeled.at[jnp.where(selection.indices >= 0, selection.indices, n)].set(
      True, mode="drop")


def nothing(k: int) -> Selection:
  """A selection of no image (k slots of -1), e.g. after the last round."""
  return Selection(jnp.full((k,), -1, jnp.int32), jnp.full((k,), -jnp.inf, jnp.float32))
