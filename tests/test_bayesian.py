"""The Bayesian scorers over samples against values worked out by hand."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from al_jax import bayesian

SCORERS = bayesian.NAMES


def _log(p) -> np.ndarray:
  with np.errstate(divide="ignore"):
    return np.log(np.asarray(p, np.float64)).astype(np.float32)


class HandWorkedTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(2, 10)
  def test_identical_samples(self, num_classes):
    rng = np.random.default_rng(num_classes)
    probs = rng.dirichlet(np.ones(num_classes), size=3)  # [3, C]
    log_probs = np.broadcast_to(_log(probs), (5, 3, num_classes))  # K = 5 equal samples
    for name in ("bald", "variation_ratios", "mean_std"):
      out = self.variant(bayesian.get(name))(log_probs)
      chex.assert_shape(out, (3,))
      np.testing.assert_allclose(out, np.zeros(3), atol=2e-6, err_msg=name)
    h = -np.sum(probs * np.log(probs), axis=-1)
    np.testing.assert_allclose(self.variant(bayesian.predictive_entropy)(log_probs), h,
                               rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(2, 3, 10)
  def test_disagreeing_one_hot_samples(self, num_classes):
    # K = C samples, sample k certain of class k: the mean is uniform, each sample has
    # entropy 0, and every class gets one vote.
    log_probs = _log(np.eye(num_classes))[:, None, :]  # [K=C, 1, C], -inf off the diagonal
    c = num_classes
    expected = {"bald": math.log(c), "predictive_entropy": math.log(c),
                "variation_ratios": 1 - 1 / c,
                "mean_std": math.sqrt(1 / c - 1 / c**2)}  # std of one 1 among C zeros
    for name, value in expected.items():
      out = self.variant(bayesian.get(name))(log_probs)
      chex.assert_tree_all_finite(out)
      np.testing.assert_allclose(out, [value], rtol=1e-6, err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  def test_worked_two_samples_three_classes(self):
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])  # sample 1 votes 0, sample 2 votes 2
    p_bar = np.array([0.4, 0.25, 0.35])
    h_bar = -(0.4 * math.log(0.4) + 0.25 * math.log(0.25) + 0.35 * math.log(0.35))
    h1 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    h2 = -(0.1 * math.log(0.1) + 0.3 * math.log(0.3) + 0.6 * math.log(0.6))
    std = np.array([0.3, 0.05, 0.25])  # |p1 - p2| / 2 per class
    log_probs = _log(p)[:, None, :]
    np.testing.assert_allclose(self.variant(bayesian.mean_probs)(log_probs), [p_bar],
                               rtol=1e-6)
    expected = {"predictive_entropy": h_bar, "bald": h_bar - (h1 + h2) / 2,
                "variation_ratios": 0.5, "mean_std": std.mean()}
    for name, value in expected.items():
      np.testing.assert_allclose(self.variant(bayesian.get(name))(log_probs), [value],
                                 rtol=1e-5, err_msg=name)


class ShapesAndTransformsTest(parameterized.TestCase):

  def _log_probs(self, shape, seed=0):
    logits = jax.random.normal(jax.random.key(seed), shape) * 3
    return jax.nn.log_softmax(logits, axis=-1)

  @parameterized.parameters(*SCORERS)
  def test_leading_shapes_and_vmap(self, name):
    fn = bayesian.get(name)
    log_probs = self._log_probs((6, 4, 5, 3))  # [K, 4, 5, C]
    out = fn(log_probs)
    chex.assert_shape(out, (4, 5))
    per_row = jnp.stack([fn(log_probs[:, i]) for i in range(4)])
    np.testing.assert_allclose(out, per_row, rtol=1e-6, atol=1e-7)
    vmapped = jax.vmap(fn, in_axes=1)(log_probs)
    np.testing.assert_allclose(out, vmapped, rtol=1e-6, atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*SCORERS)
  def test_pool_in_chunks_equals_per_point(self, name):
    # 1100 points: two full chunks of 512 and a tail of 76, against one point at a time.
    log_probs = self._log_probs((4, 1100, 3), seed=1)
    fn = bayesian.get(name)
    out = self.variant(fn)(log_probs)
    chex.assert_shape(out, (1100,))
    one_by_one = jax.vmap(fn, in_axes=1)(log_probs[:, :, None, :])[:, 0]
    np.testing.assert_allclose(out, one_by_one, rtol=2e-5, atol=1e-6)

  @parameterized.parameters(*SCORERS)
  def test_bfloat16_finite(self, name):
    log_probs = self._log_probs((8, 7, 10)).astype(jnp.bfloat16)
    out = jax.jit(bayesian.get(name))(log_probs)
    self.assertEqual(out.dtype, jnp.bfloat16)
    chex.assert_tree_all_finite(out)
    ref = bayesian.get(name)(log_probs.astype(jnp.float32))
    np.testing.assert_allclose(out.astype(jnp.float32), ref, rtol=2e-2, atol=1e-2)

  def test_bald_between_zero_and_predictive_entropy(self):
    rng = np.random.default_rng(0)
    for concentration in (0.1, 1.0, 10.0):
      probs = rng.dirichlet(np.full(6, concentration), size=(20, 300))  # [K, N, C]
      log_probs = _log(probs)
      mi = np.asarray(bayesian.bald(log_probs))
      h = np.asarray(bayesian.predictive_entropy(log_probs))
      self.assertTrue(np.all(mi >= 0))
      self.assertTrue(np.all(mi <= h))
      p64 = probs.astype(np.float64)
      p_bar = p64.mean(0)
      ref = (-np.sum(p_bar * np.log(p_bar), -1)
             + np.mean(np.sum(p64 * np.log(p64), -1), 0))
      np.testing.assert_allclose(mi, ref, atol=2e-5)

  def test_mean_probs_stable_for_tiny_probabilities(self):
    log_probs = jnp.array([[[-1000.0, 0.0]], [[-1001.0, 0.0]]])
    np.testing.assert_allclose(bayesian.mean_log_probs(log_probs)[0, 0],
                               -1000 + math.log((1 + math.exp(-1)) / 2), rtol=1e-6)
    np.testing.assert_allclose(bayesian.mean_probs(log_probs), [[0.0, 1.0]])


def test_get_unknown_name_is_one_line():
  with pytest.raises(ValueError, match="valid: bald, variation_ratios") as err:
    bayesian.get("batchbald?")
  assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape", [(3,), (0, 4, 3)])
def test_bad_shape_or_no_samples(shape):
  with pytest.raises(ValueError, match=r"\[K, \.\.\., C\] with K, C >= 1"):
    bayesian.bald(jnp.zeros(shape))
