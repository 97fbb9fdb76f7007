"""Uncertainty scorers: class probabilities -> informativeness (higher = query first).

The four metrics of Dominguez-Kuhne & Zhao, "Active Learning for Multi-class Image
Classification" (section 4), written so that a larger score always means "more
informative" (the paper *minimises* the two margins; we return 1 - margin):

  least_confidence  = 1 - p(1)
  smallest_margin   = 1 - (p(1) - p(2))      best versus second best
  largest_margin    = 1 - (p(1) - p(C))      best versus worst
  entropy           = -sum_c p(c) log p(c)   with 0 log 0 = 0

where p(1) >= p(2) >= ... >= p(C) are the sorted class probabilities. Every scorer
maps `probs: [..., C]` to `[...]`, works under `jit` and `vmap` for any leading shape
and C >= 2, and keeps the input's floating dtype (float32, bfloat16).

All scorers share one signature, `scorer(probs, key=None)`, so that they can be
looked up by name (`get`) and switched between inside a compiled program (`switch`);
only `random` uses the key.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

Scorer = Callable[..., jax.Array]


def _top2(probs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """probs: [..., C] -> (p(1), p(2)), each [...]."""
  top, _ = lax.top_k(probs, 2)
  return top[..., 0], top[..., 1]


def least_confidence(probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """1 - max_c p(c).  probs: [..., C] -> [...]."""
  del key
  probs = jnp.asarray(probs)
  return 1 - jnp.max(probs, axis=-1)


def smallest_margin(probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """1 - (p(1) - p(2)), best versus second best.  probs: [..., C] -> [...]."""
  del key
  first, second = _top2(jnp.asarray(probs))
  return 1 - (first - second)


def largest_margin(probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """1 - (p(1) - p(C)), best versus worst.  probs: [..., C] -> [...]."""
  del key
  probs = jnp.asarray(probs)
  return 1 - (jnp.max(probs, axis=-1) - jnp.min(probs, axis=-1))


def entropy(probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """Shannon entropy in nats, -sum p log p with 0 log 0 = 0.  probs: [..., C] -> [...]."""
  del key
  probs = jnp.asarray(probs)
  safe = jnp.where(probs > 0, probs, 1)
  return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(safe), 0), axis=-1)


def random(probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """Uniform random scores in [0, 1), the random-sampling baseline.  probs: [..., C] -> [...]."""
  if key is None:
    raise ValueError("the random scorer needs a PRNG key: random(probs, key)")
  probs = jnp.asarray(probs)
  return jax.random.uniform(key, probs.shape[:-1], dtype=probs.dtype)


SCORERS: dict[str, Scorer] = {
    "least_confidence": least_confidence,
    "smallest_margin": smallest_margin,
    "largest_margin": largest_margin,
    "entropy": entropy,
    "random": random,
}
NAMES: tuple[str, ...] = tuple(SCORERS)


def lookup(table: dict, name: str, label: str):
  """table[name]; a one-line ValueError listing the valid names otherwise."""
  try:
    return table[name]
  except KeyError:
    raise ValueError(f"unknown {label} {name!r}; valid: {', '.join(table)}") from None


def get(name: str) -> Scorer:
  """Returns the scorer called `name`; ValueError listing the valid names otherwise."""
  return lookup(SCORERS, name, "metric")


def index(name: str) -> int:
  """Position of metric `name` in NAMES, for `switch`."""
  get(name)
  return NAMES.index(name)


def switch(metric_index: ArrayLike, probs: ArrayLike, key: jax.Array) -> jax.Array:
  """Scores with the metric NAMES[metric_index], chosen at run time (traced index).

  Lets runs with different metrics share one compiled program (e.g. under `vmap`).
  probs: [..., C] -> [...].
  """
  probs = jnp.asarray(probs)
  branches = [lambda p, k, f=f: f(p, k) for f in SCORERS.values()]
  return lax.switch(metric_index, branches, probs, key)


def entropy_from_logits(logits: ArrayLike) -> jax.Array:
  """Entropy computed stably from unnormalised logits.  logits: [..., C] -> [...]."""
  log_probs = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def score_logits(name: str, logits: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """Scores logits with metric `name` via a numerically stable log_softmax.

  logits: [..., C] -> [...]. Large logits (1e4) give no overflow or NaN.
  """
  if name == "entropy":
    return entropy_from_logits(logits)
  probs = jnp.exp(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))
  return get(name)(probs, key)
