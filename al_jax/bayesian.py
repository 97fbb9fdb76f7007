"""Acquisition functions over stochastic predictions (MC dropout, deep ensembles).

Each function takes `log_probs: [K, ..., C]`, the log class probabilities of K
stochastic forward passes (MC-dropout masks, or ensemble members) for any leading
shape `...`, and returns `[...]`, higher = query first. With p_k = exp(log_probs[k]),
H[p] = -sum_c p(c) log p(c) (0 log 0 = 0) and the mean prediction
p_bar = 1/K sum_k p_k:

  mean_probs          p_bar(c) = exp(logsumexp_k log p_k(c) - log K)
  predictive_entropy  H[p_bar]
  bald                H[p_bar] - 1/K sum_k H[p_k]     mutual information I(y; w)
  variation_ratios    1 - max_c #{k : argmax p_k = c} / K
  mean_std            1/C sum_c sqrt(1/K sum_k p_k(c)^2 - p_bar(c)^2)

References: Houlsby, Huszar, Ghahramani & Lengyel, "Bayesian Active Learning for
Classification and Preference Learning" (2011) for BALD; Gal, Islam & Ghahramani,
"Deep Bayesian Active Learning with Image Data" (ICML 2017) for all four with MC
dropout; Beluch et al. (CVPR 2018) for the same over ensemble members.

The functions are pure, work under `jit` and `vmap`, compute in at least float32
(bfloat16 inputs are upcast) and return the input's floating dtype. They share the
signature `scorer(log_probs, key=None)` of `al_jax.metrics` (the key is unused), so
they can be looked up by name with `get`.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from al_jax import metrics

Scorer = Callable[..., jax.Array]


# Pool positions per chunk. XLA:CPU reduces over the leading sample axis of a big array
# slowly (it materialises exp(log_probs)); chunks that fit in cache are 3x faster there.
_CHUNK = 512
_HIGHEST = lax.Precision.HIGHEST  # the sample means are matmuls: no TF32 / bf16 passes


def _checked(log_probs: ArrayLike) -> tuple[jax.Array, jnp.dtype, jnp.dtype]:
  """(log_probs as an array, the dtype to return, the dtype to compute in >= float32)."""
  x = jnp.asarray(log_probs)
  if x.ndim < 2 or x.shape[0] < 1 or x.shape[-1] < 1:
    raise ValueError(f"log_probs must be [K, ..., C] with K, C >= 1; got shape {x.shape}")
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
  return x, dtype, jnp.promote_types(dtype, jnp.float32)


def _upcast(log_probs: ArrayLike) -> tuple[jax.Array, jnp.dtype]:
  """log_probs as an array of at least float32, and the dtype to return."""
  x, dtype, compute = _checked(log_probs)
  return x.astype(compute), dtype


def _over_chunks(fn: Callable[[jax.Array], jax.Array], log_probs: ArrayLike) -> jax.Array:
  """Applies fn: [K, B, C] -> [B] to log_probs [K, ..., C] chunk by chunk -> [...].

  Each chunk is upcast on its own, so a bfloat16 pool is never copied whole to float32.
  """
  x, dtype, compute = _checked(log_probs)
  k, c, lead = x.shape[0], x.shape[-1], x.shape[1:-1]
  flat = x.reshape(k, math.prod(lead), c)
  m = flat.shape[1]
  full = m // _CHUNK
  apply = lambda chunk: fn(chunk.astype(compute))
  if full <= 1:
    return apply(flat).reshape(lead).astype(dtype)
  body = lambda i: apply(lax.dynamic_slice_in_dim(flat, i * _CHUNK, _CHUNK, axis=1))
  out = lax.map(body, jnp.arange(full)).reshape(-1)
  if m > full * _CHUNK:
    out = jnp.concatenate([out, apply(flat[:, full * _CHUNK:])])
  return out.reshape(lead).astype(dtype)


def _sample_mean(values: jax.Array) -> jax.Array:
  """Mean over the leading sample axis as a matmul.  [K, ...] -> [...]."""
  weights = jnp.full((values.shape[0],), 1 / values.shape[0], values.dtype)
  return jnp.tensordot(weights, values, axes=1, precision=_HIGHEST)


def _xlogx_sum(p: jax.Array, log_p: jax.Array) -> jax.Array:
  """sum_c p log p over the last axis with 0 log 0 = 0 (log_p may be -inf there)."""
  return jnp.sum(jnp.where(p > 0, p * log_p, 0), axis=-1)


def _entropies(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(H[p_bar], 1/K sum_k H[p_k]) for x = log p_k: [K, B, C], each [B]."""
  p = jnp.exp(x)
  p_bar = _sample_mean(p)
  log_p_bar = jnp.log(jnp.where(p_bar > 0, p_bar, 1))
  return -_xlogx_sum(p_bar, log_p_bar), -_sample_mean(_xlogx_sum(p, x))


def mean_log_probs(log_probs: ArrayLike) -> jax.Array:
  """log p_bar = logsumexp_k log p_k - log K.  log_probs: [K, ..., C] -> [..., C]."""
  x, dtype = _upcast(log_probs)
  return (jax.nn.logsumexp(x, axis=0) - math.log(x.shape[0])).astype(dtype)


def mean_probs(log_probs: ArrayLike) -> jax.Array:
  """Mean prediction p_bar = 1/K sum_k p_k, via logsumexp.  [K, ..., C] -> [..., C]."""
  x, dtype = _upcast(log_probs)
  return jnp.exp(jax.nn.logsumexp(x, axis=0) - math.log(x.shape[0])).astype(dtype)


def predictive_entropy(log_probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """Entropy of the mean prediction H[p_bar] in nats.  log_probs: [K, ..., C] -> [...].

  Gal, Islam & Ghahramani (ICML 2017), "Max Entropy". log_probs must be normalised
  (logsumexp over C = 0); p_bar is the mean of exp(log_probs).
  """
  del key
  return _over_chunks(lambda x: _entropies(x)[0], log_probs)


def expected_entropy(log_probs: ArrayLike) -> jax.Array:
  """Mean entropy of the samples 1/K sum_k H[p_k].  log_probs: [K, ..., C] -> [...]."""
  return _over_chunks(lambda x: _entropies(x)[1], log_probs)


def _bald(x: jax.Array) -> jax.Array:
  total, expected = _entropies(x)
  return jnp.maximum(total - expected, 0)


def bald(log_probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """BALD, the mutual information H[p_bar] - 1/K sum_k H[p_k].  [K, ..., C] -> [...].

  Houlsby et al. (2011); Gal, Islam & Ghahramani (ICML 2017). Rounding below 0 is
  clipped to 0, so 0 <= bald <= predictive_entropy holds exactly.
  """
  del key
  return _over_chunks(_bald, log_probs)


def _variation_ratios(x: jax.Array) -> jax.Array:
  votes = _sample_mean(jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=x.dtype))
  return 1 - jnp.max(votes, axis=-1)


def variation_ratios(log_probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """1 - (votes for the modal class) / K.  log_probs: [K, ..., C] -> [...].

  Each sample votes for its argmax class (Freeman 1965; Gal, Islam & Ghahramani,
  ICML 2017). Ranges over [0, 1 - 1/C].
  """
  del key
  return _over_chunks(_variation_ratios, log_probs)


def _mean_std(x: jax.Array) -> jax.Array:
  return jnp.mean(jnp.std(jnp.exp(x), axis=0), axis=-1)


def mean_std(log_probs: ArrayLike, key: jax.Array | None = None) -> jax.Array:
  """Mean over classes of the std over samples of p_k(c).  [K, ..., C] -> [...].

  Population std (divides by K); Kampffmeyer et al. (2016), Gal, Islam & Ghahramani
  (ICML 2017).
  """
  del key
  return _over_chunks(_mean_std, log_probs)


SCORERS: dict[str, Scorer] = {
    "bald": bald,
    "variation_ratios": variation_ratios,
    "mean_std": mean_std,
    "predictive_entropy": predictive_entropy,
}
NAMES: tuple[str, ...] = tuple(SCORERS)


def get(name: str) -> Scorer:
  """Returns the scorer called `name`; ValueError listing the valid names otherwise."""
  return metrics.lookup(SCORERS, name, "Bayesian metric")
