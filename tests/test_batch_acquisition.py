"""Batch acquisition against plain NumPy references and the papers' invariants."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from al_jax import bayesian
from al_jax import batch_acquisition as ba

# Compiled once per shape: eager BatchBALD dispatches hundreds of small ops.
_batchbald = jax.jit(ba.batchbald, static_argnames=("k", "num_samples", "chunk_size"))
_joint_entropy = jax.jit(ba.joint_entropy, static_argnames="num_samples")


def _log_probs(k, n, c, seed=0, concentration=0.5):
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet(np.full(c, concentration), size=(k, n))
  return np.log(probs).astype(np.float32), probs


def _check_selection(indices, available, k):
  """int32 [k], available only, no duplicates, -1 only at the tail when too few."""
  indices = np.asarray(indices)
  assert indices.dtype == np.int32 and indices.shape == (k,)
  chosen = indices[indices >= 0]
  assert len(set(chosen.tolist())) == len(chosen)
  assert np.all(np.asarray(available)[chosen])
  assert len(chosen) == min(k, int(np.sum(available)))
  assert np.all(indices[len(chosen):] == -1)


# --- BatchBALD -----------------------------------------------------------------------


def _numpy_batchbald(probs, k):
  """Algorithm 1 of Kirsch et al. (2019) with the exact joint, by enumeration."""
  num_k, n, c = probs.shape
  expected = -np.mean(np.sum(probs * np.log(probs), -1), 0)

  def joint_entropy(points):
    h = 0.0
    for config in itertools.product(range(c), repeat=len(points)):
      p = np.mean(np.prod([probs[:, i, y] for i, y in zip(points, config)], axis=0))
      h -= p * np.log(p) if p > 0 else 0.0
    return h

  chosen, scores = [], []
  for _ in range(k):
    values = {i: joint_entropy(chosen + [i]) - expected[chosen + [i]].sum()
              for i in range(n) if i not in chosen}
    best = max(values, key=lambda i: (values[i], -i))
    chosen.append(best)
    scores.append(values[best])
  return chosen, scores


class BatchBALDTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_exact_equals_enumeration(self):
    log_probs, probs = _log_probs(8, 12, 3)
    fn = lambda lp, key: ba.batchbald(lp, 3, key=key, num_samples=27)
    indices, scores = self.variant(fn)(log_probs, jax.random.key(0))
    ref_indices, ref_scores = _numpy_batchbald(probs.astype(np.float64), 3)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)

  def test_k1_is_bald_top1(self):
    log_probs, _ = _log_probs(20, 300, 5, seed=1)
    indices, scores = _batchbald(log_probs, 1, key=jax.random.key(0))
    mi = bayesian.bald(log_probs)
    self.assertEqual(int(indices[0]), int(jnp.argmax(mi)))
    np.testing.assert_allclose(scores[0], jnp.max(mi), rtol=1e-5)

  def test_scores_are_the_batch_mutual_information(self):
    log_probs, _ = _log_probs(10, 40, 4, seed=2)
    indices, scores = _batchbald(log_probs, 4, key=jax.random.key(0), num_samples=256)
    expected = bayesian.expected_entropy(log_probs)
    for m in range(1, 5):
      chosen = np.asarray(indices[:m])
      mi = _joint_entropy(log_probs[:, chosen]) - expected[chosen].sum()
      np.testing.assert_allclose(scores[m - 1], mi, rtol=1e-5, err_msg=str(m))
    self.assertTrue(np.all(np.diff(np.asarray(scores)) >= -1e-6))

  def test_exact_and_sampled_joint_entropy_agree(self):
    # The tolerance the docstrings state: K = 10, 4 points, 4 classes, 20,000 samples.
    log_probs, _ = _log_probs(10, 4, 4, seed=3)
    exact = ba.joint_entropy(log_probs)
    for seed in range(3):
      sampled = _joint_entropy(log_probs, num_samples=20_000, key=jax.random.key(seed))
      np.testing.assert_allclose(sampled, exact, atol=0.03)

  def test_sampled_phase_respects_mask_and_is_reproducible(self):
    log_probs, _ = _log_probs(6, 50, 3, seed=4)
    available = np.arange(50) % 3 != 0
    fn = _batchbald
    indices, scores = fn(log_probs, 8, key=jax.random.key(1), num_samples=10,
                         available=available)
    _check_selection(indices, available, 8)
    self.assertTrue(np.all(np.isfinite(scores)))
    again, _ = fn(log_probs, 8, key=jax.random.key(1), num_samples=10, available=available)
    np.testing.assert_array_equal(indices, again)
    # The exact phase (C^2 = 9 <= 10: three picks) equals the all-exact run.
    exact, _ = _batchbald(log_probs, 3, key=jax.random.key(1), num_samples=10,
                          available=available)
    np.testing.assert_array_equal(indices[:3], exact)

  def test_fewer_available_than_k(self):
    log_probs, _ = _log_probs(4, 10, 3, seed=5)
    available = np.zeros(10, bool)
    available[[2, 7]] = True
    indices, scores = _batchbald(log_probs, 5, key=jax.random.key(0), num_samples=3,
                                 available=np.ones(10, bool))
    _check_selection(indices, np.ones(10, bool), 5)
    indices, scores = _batchbald(log_probs, 5, key=jax.random.key(0), num_samples=3,
                                 available=available)
    _check_selection(indices, available, 5)
    self.assertTrue(np.all(np.isneginf(np.asarray(scores)[2:])))

  def test_chunk_size_does_not_change_the_result(self):
    log_probs, _ = _log_probs(5, 103, 4, seed=6)
    a = _batchbald(log_probs, 4, key=jax.random.key(0), num_samples=20)
    b = _batchbald(log_probs, 4, key=jax.random.key(0), num_samples=20, chunk_size=10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5)

  def test_bad_options(self):
    log_probs, _ = _log_probs(2, 5, 3)
    with pytest.raises(ValueError, match="k must be a positive int"):
      ba.batchbald(log_probs, 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="num_samples"):
      ba.batchbald(log_probs, 2, key=jax.random.key(0), num_samples=0)
    with pytest.raises(ValueError, match=r"\[K, N, C\]"):
      ba.batchbald(log_probs[0], 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"K, C >= 1"):
      ba.batchbald(log_probs[:0], 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="needs a PRNG key"):
      ba.joint_entropy(log_probs, num_samples=10)


# --- Stochastic batch acquisition ----------------------------------------------------


class StochasticBatchTest(parameterized.TestCase):

  @parameterized.parameters(("power", 1e6), ("softmax", 1e6), ("softrank", 1e4))
  def test_large_beta_is_top_k(self, mode, beta):
    rng = np.random.default_rng(0)
    scores = rng.permutation(np.linspace(0.05, 1.0, 60)).astype(np.float32)
    available = rng.random(60) < 0.7
    indices = ba.stochastic_batch(scores, 10, jax.random.key(3), mode=mode, beta=beta,
                                  available=available)
    order = np.argsort(-np.where(available, scores, -np.inf), kind="stable")[:10]
    np.testing.assert_array_equal(indices, order)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*ba.MODES)
  def test_same_key_same_result_available_only(self, mode):
    rng = np.random.default_rng(1)
    scores = rng.random(40).astype(np.float32)
    available = rng.random(40) < 0.5
    fn = self.variant(lambda s, key, a: ba.stochastic_batch(s, 8, key, mode=mode, available=a))
    first = fn(scores, jax.random.key(0), available)
    _check_selection(first, available, 8)
    np.testing.assert_array_equal(first, fn(scores, jax.random.key(0), available))
    self.assertFalse(np.array_equal(first, fn(scores, jax.random.key(1), available)))

  def test_fewer_available_and_k_above_n(self):
    scores = np.array([0.3, 0.0, 0.5], np.float32)
    for mode in ba.MODES:
      indices = ba.stochastic_batch(scores, 5, jax.random.key(0), mode=mode,
                                    available=np.array([True, True, False]))
      _check_selection(indices, np.array([True, True, False]), 5)

  @parameterized.parameters(
      ("softmax", 1.0, np.exp([1.0, 0.5, 0.0, 2.0])),
      ("power", 2.0, np.array([1.0, 0.5, 0.1, 2.0]) ** 2),
      ("softrank", 1.0, 1 / np.array([2.0, 3.0, 4.0, 1.0])))
  def test_top_item_frequency(self, mode, beta, weights):
    scores = {"softmax": [1.0, 0.5, 0.0, 2.0], "power": [1.0, 0.5, 0.1, 2.0],
              "softrank": [1.0, 0.5, 0.0, 2.0]}[mode]
    scores = jnp.asarray(scores, jnp.float32)
    keys = jax.random.split(jax.random.key(0), 4000)
    picks = jax.vmap(lambda key: ba.stochastic_batch(scores, 1, key, mode=mode, beta=beta))(keys)
    frequency = np.mean(np.asarray(picks[:, 0]) == 3)
    # 4,000 draws: the standard error is at most 0.008; allow 4 of them.
    np.testing.assert_allclose(frequency, weights[3] / weights.sum(), atol=0.032)

  def test_unknown_mode(self):
    with pytest.raises(ValueError, match="valid modes: power, softmax, softrank"):
      ba.stochastic_batch(jnp.ones(3), 1, jax.random.key(0), mode="gumbel")


# --- Core-set ------------------------------------------------------------------------


def _numpy_coreset(x, labeled, available, k):
  x = x.astype(np.float64)
  d = np.full(len(x), np.inf)
  for j in np.flatnonzero(labeled):
    d = np.minimum(d, np.sum((x - x[j]) ** 2, -1))
  candidates, picks = available.copy(), []
  for _ in range(k):
    if not candidates.any():
      picks.append(-1)
      continue
    i = int(np.argmax(np.where(candidates, d, -np.inf)))
    picks.append(i)
    candidates[i] = False
    d = np.minimum(d, np.sum((x - x[i]) ** 2, -1))
  return picks


class CoresetTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2)
  def test_equals_numpy(self, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    labeled = rng.random(60) < 0.15
    available = ~labeled & (rng.random(60) < 0.8)
    fn = self.variant(lambda x, l, a: ba.coreset(x, l, a, 12, chunk_size=4))
    indices = fn(x, labeled, available)
    _check_selection(indices, available, 12)
    np.testing.assert_array_equal(indices, _numpy_coreset(x, labeled, available, 12))

  def test_far_outlier_first(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    x[37] = [50.0, -40.0, 30.0]
    labeled = np.arange(100) < 10
    indices = ba.coreset(x, labeled, ~labeled, 3)
    self.assertEqual(int(indices[0]), 37)

  def test_min_sq_distances_chunked(self):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    centers = rng.random(30) < 0.5
    ref = np.min(np.sum((x[:, None] - x[centers][None]) ** 2, -1), 1)
    for chunk_size in (1, 7, 64):
      np.testing.assert_allclose(ba.min_sq_distances(x, centers, chunk_size=chunk_size), ref,
                                 rtol=1e-4, atol=1e-5)
    self.assertTrue(np.all(np.isinf(ba.min_sq_distances(x, np.zeros(30, bool)))))

  def test_nothing_labeled_and_too_few_available(self):
    x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    available = np.zeros(8, bool)
    available[[3, 5, 6]] = True
    indices = ba.coreset(x, np.zeros(8, bool), available, 5)
    _check_selection(indices, available, 5)
    self.assertEqual(int(indices[0]), 3)  # all at +inf: the lowest available index


# --- BADGE ---------------------------------------------------------------------------


class BadgeTest(parameterized.TestCase):

  def test_embeddings_equal_the_last_layer_gradient(self):
    rng = np.random.default_rng(0)
    n, d, c = 6, 5, 4
    h = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, c)).astype(np.float32)
    b = rng.normal(size=(c,)).astype(np.float32)
    logits = h @ w + b
    labels = np.argmax(logits, -1)

    def loss(w, h_n, y_n):
      return optax.softmax_cross_entropy_with_integer_labels(h_n @ w + b, y_n)

    grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(w, h, labels)  # [N, D, C]
    expected = np.transpose(grads, (0, 2, 1)).reshape(n, c * d)
    out = jax.jit(ba.badge_embeddings)(h, logits)
    chex.assert_shape(out, (n, c * d))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

  def test_kmeans_pp_equals_numpy_with_the_same_noise(self):
    rng = np.random.default_rng(1)
    n, k = 40, 8
    x = rng.normal(size=(n, 6)).astype(np.float32)
    available = rng.random(n) < 0.7
    key = jax.random.key(5)
    indices = jax.jit(ba.kmeans_pp, static_argnames="k")(x, available, k, key)
    _check_selection(indices, available, k)

    x64 = x.astype(np.float64)
    norms = np.where(available, np.sum(x64**2, -1), -np.inf)
    picks = [int(np.argmax(norms))]
    d2 = np.sum((x64 - x64[picks[0]]) ** 2, -1)
    for i in range(1, k):
      noise = np.asarray(jax.random.gumbel(jax.random.fold_in(key, i), (n,)), np.float64)
      candidates = available.copy()
      candidates[picks] = False
      with np.errstate(divide="ignore"):
        pick = int(np.argmax(np.where(candidates, np.log(d2) + noise, -np.inf)))
      picks.append(pick)
      d2 = np.minimum(d2, np.sum((x64 - x64[pick]) ** 2, -1))
    np.testing.assert_array_equal(indices, picks)

  def test_kmeans_pp_invariants(self):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    x[11] *= 20  # largest norm, but unavailable
    x[4] *= 10
    available = np.ones(30, bool)
    available[11] = False
    kmeans_pp = jax.jit(ba.kmeans_pp, static_argnames="k")
    first = kmeans_pp(x, available, 6, jax.random.key(0))
    _check_selection(first, available, 6)
    self.assertEqual(int(first[0]), 4)
    np.testing.assert_array_equal(first, kmeans_pp(x, available, 6, jax.random.key(0)))
    few = np.zeros(30, bool)
    few[[1, 2]] = True
    _check_selection(kmeans_pp(x, few, 6, jax.random.key(0)), few, 6)
    # Duplicates of a pick (D^2 = 0) come only after every other point.
    dup = np.repeat(x[:3], 2, axis=0)
    out = kmeans_pp(dup, np.ones(6, bool), 6, jax.random.key(1))
    _check_selection(out, np.ones(6, bool), 6)
    self.assertEqual(len({int(i) // 2 for i in out[:3]}), 3)

