"""The scorers against values worked out by hand, under jit and without."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from al_jax import metrics

DETERMINISTIC = ("least_confidence", "smallest_margin", "largest_margin", "entropy")


def _by_hand(name: str, p: np.ndarray) -> float:
  """The paper's formulas, written with sorted(), on one probability vector."""
  s = sorted(p, reverse=True)
  if name == "least_confidence":
    return 1 - s[0]
  if name == "smallest_margin":
    return 1 - (s[0] - s[1])
  if name == "largest_margin":
    return 1 - (s[0] - s[-1])
  return -sum(x * math.log(x) for x in p if x > 0)


class ScorerValuesTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(2, 3, 10)
  def test_uniform(self, num_classes):
    probs = jnp.full((4, num_classes), 1 / num_classes)
    c = num_classes
    expected = {"least_confidence": (c - 1) / c, "smallest_margin": 1.0,
                "largest_margin": 1.0, "entropy": math.log(c)}
    for name, value in expected.items():
      out = self.variant(metrics.get(name))(probs)
      chex.assert_shape(out, (4,))
      np.testing.assert_allclose(out, np.full(4, value), rtol=1e-6, err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(2, 10)
  def test_one_hot_is_zero_and_finite(self, num_classes):
    probs = jax.nn.one_hot(jnp.arange(num_classes), num_classes)
    for name in DETERMINISTIC:
      out = self.variant(metrics.get(name))(probs)
      chex.assert_tree_all_finite(out)
      np.testing.assert_array_equal(out, np.zeros(num_classes), err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  def test_worked_example(self):
    probs = jnp.array([[0.1, 0.6, 0.0, 0.3]])
    expected = {"least_confidence": 0.4, "smallest_margin": 0.7, "largest_margin": 0.4,
                "entropy": -(0.1 * math.log(0.1) + 0.6 * math.log(0.6) + 0.3 * math.log(0.3))}
    for name, value in expected.items():
      np.testing.assert_allclose(self.variant(metrics.get(name))(probs), [value], rtol=1e-6,
                                 err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  def test_binary(self):
    probs = jnp.array([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]])
    np.testing.assert_allclose(self.variant(metrics.least_confidence)(probs), [0.5, 0.1, 0.0],
                               atol=1e-6)
    # With two classes both margins are 1 - |p1 - p2|.
    for name in ("smallest_margin", "largest_margin"):
      np.testing.assert_allclose(self.variant(metrics.get(name))(probs), [1.0, 0.2, 0.0],
                                 atol=1e-6)
    np.testing.assert_allclose(self.variant(metrics.entropy)(probs),
                               [math.log(2), -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), 0],
                               rtol=1e-6, atol=1e-7)

  def test_random_probabilities_match_formulas(self):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=50).astype(np.float32)
    for name in DETERMINISTIC:
      expected = [_by_hand(name, p) for p in probs.astype(np.float64)]
      np.testing.assert_allclose(metrics.get(name)(probs), expected, rtol=2e-5, atol=2e-6)

  def test_permuting_classes_changes_nothing(self):
    probs = jax.random.dirichlet(jax.random.key(1), jnp.ones(5), (8,))
    for perm in itertools.islice(itertools.permutations(range(5)), 0, 120, 17):
      for name in DETERMINISTIC:
        np.testing.assert_allclose(metrics.get(name)(probs[:, list(perm)]),
                                   metrics.get(name)(probs), rtol=1e-6, err_msg=name)

  @parameterized.parameters(*DETERMINISTIC)
  def test_leading_batch_shapes_and_vmap(self, name):
    scorer = metrics.get(name)
    probs = jax.random.dirichlet(jax.random.key(2), jnp.ones(4), (2, 3, 5))
    out = scorer(probs)
    chex.assert_shape(out, (2, 3, 5))
    np.testing.assert_allclose(jax.vmap(jax.vmap(scorer))(probs), out, rtol=1e-6)
    np.testing.assert_allclose(out.reshape(-1), scorer(probs.reshape(-1, 4)), rtol=1e-6)
    chex.assert_shape(scorer(probs[0, 0, 0]), ())

  @parameterized.parameters(*DETERMINISTIC)
  def test_bfloat16(self, name):
    probs = jax.random.dirichlet(jax.random.key(3), jnp.ones(10), (16,))
    out = metrics.get(name)(probs.astype(jnp.bfloat16))
    chex.assert_type(out, jnp.bfloat16)
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(out.astype(jnp.float32), metrics.get(name)(probs), atol=2e-2)
    one_hot = jax.nn.one_hot(jnp.arange(3), 3, dtype=jnp.bfloat16)
    np.testing.assert_array_equal(metrics.get(name)(one_hot).astype(jnp.float32), 0.0)

  def test_higher_means_more_uncertain(self):
    confident, unsure = jnp.array([0.9, 0.05, 0.05]), jnp.array([0.4, 0.35, 0.25])
    for name in DETERMINISTIC:
      scorer = metrics.get(name)
      self.assertGreater(float(scorer(unsure)), float(scorer(confident)), name)


class RandomAndLookupTest(parameterized.TestCase):

  def test_random_needs_key_and_is_deterministic(self):
    probs = jnp.full((1000, 3), 1 / 3)
    with pytest.raises(ValueError, match="key"):
      metrics.random(probs)
    a = metrics.random(probs, jax.random.key(0))
    chex.assert_shape(a, (1000,))
    np.testing.assert_array_equal(a, metrics.random(probs, jax.random.key(0)))
    self.assertFalse(np.array_equal(a, metrics.random(probs, jax.random.key(1))))
    self.assertTrue(0 <= float(a.min()) and float(a.max()) < 1)
    self.assertAlmostEqual(float(a.mean()), 0.5, delta=0.05)

  def test_get_unknown_lists_valid_names(self):
    with pytest.raises(ValueError, match="least_confidence, smallest_margin"):
      metrics.get("margin")
    self.assertIs(metrics.get("entropy"), metrics.entropy)

  @parameterized.parameters(*metrics.NAMES)
  def test_switch_equals_direct_call(self, name):
    probs = jax.random.dirichlet(jax.random.key(4), jnp.ones(6), (9,))
    key = jax.random.key(5)
    switched = jax.jit(metrics.switch)(metrics.index(name), probs, key)
    np.testing.assert_allclose(switched, metrics.get(name)(probs, key), rtol=1e-6)

  @parameterized.parameters(*DETERMINISTIC)
  def test_logits_are_stable_and_match_probs(self, name):
    logits = jax.random.normal(jax.random.key(6), (20, 10)) * 3
    np.testing.assert_allclose(metrics.score_logits(name, logits),
                               metrics.get(name)(jax.nn.softmax(logits)), rtol=1e-5, atol=1e-6)
    huge = jnp.array([[1e4, 0.0, -1e4], [1e4, 1e4, -1e4]])
    out = metrics.score_logits(name, huge)
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-6)


SCORE_FNS = {name: metrics.get(name) for name in metrics.NAMES}
SCORE_FNS.update({f"score_logits_{name}": (lambda x, k, n=name: metrics.score_logits(
    n, jnp.log(x), k)) for name in metrics.NAMES})


class VmapVariantTest(parameterized.TestCase):
  """Every scorer, `random` and `score_logits` included, gives the same values called
  directly, under jit, and under vmap (one row and one key per call)."""

  @parameterized.parameters(*SCORE_FNS)
  def test_jit_and_vmap_equal_row_by_row(self, name):
    fn = SCORE_FNS[name]
    probs = jax.random.dirichlet(jax.random.key(7), jnp.ones(5), (6,))
    keys = jax.random.split(jax.random.key(8), 6)
    rows = np.array([fn(probs[i], keys[i]) for i in range(6)])
    np.testing.assert_allclose(jax.vmap(fn)(probs, keys), rows, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jax.jit(jax.vmap(fn))(probs, keys), rows, rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(jax.jit(fn)(probs[2], keys[2]), rows[2], rtol=1e-6)
    if not name.endswith("random"):  # deterministic: the batch call equals the rows
      np.testing.assert_allclose(fn(probs, keys[0]), rows, rtol=1e-6, atol=1e-7)
