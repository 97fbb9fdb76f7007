"""Every stream of randomness in al_jax, in one table.

A run's root key is built from its seed; each use of randomness folds its own stream
into it, so no two uses ever share a key:

  run level:  fold_in(fold_in(root, stream), round or epoch) for the streams INIT (model
              initialisation), TRAIN (batch order and dropout), QUERY (the strategy's
              key), INITIAL_SET (the first labels) and HOLDOUT (early-stopping labels);
  strategy:   inside the QUERY key, scores use fold_in(key, pass or image index); a
              strategy's second draw (BatchBALD's sampled label configurations, the
              stochastic batch's Gumbel draw) uses fold_in(key, SECOND_STREAM);
  BatchBALD:  drawing configurations from its exact list uses fold_in(key, RESAMPLE);
  ties:       a tie-prone score's seeded tie-break (variation ratios) uses
              fold_in(fold_in(key, TIE_BREAK), image index).

The three large constants sit far above any pass, image or round index.
"""

import jax

INIT, TRAIN, QUERY, INITIAL_SET, HOLDOUT = range(5)
SECOND_STREAM = 2**31 - 2
RESAMPLE = 2**31 - 1
TIE_BREAK = 2**31 - 3


def stream_key(seed_key: jax.Array, stream: int, step: int | jax.Array) -> jax.Array:
  """The key for `stream` at round/epoch `step`: fold_in(fold_in(root, stream), step)."""
  return jax.random.fold_in(jax.random.fold_in(seed_key, stream), step)
