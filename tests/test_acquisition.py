"""The acquisition interface: Monte Carlo dropout passes and the strategies built on them."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from al_jax import acquisition, bayesian, models, scoring, specs, training


@pytest.fixture(scope="module", params=["mnist", "fruits360"])
def model_and_pool(request):
  spec = specs.get(request.param)
  shape = spec.image_shape(16)
  state = training.create_train_state(models.create_model(spec, 10), jax.random.key(0),
                                      shape, training.make_optimizer(0.01, 0.9, 0.0))
  pool = jax.random.randint(jax.random.key(1), (120, *shape), 0, 256).astype(jnp.uint8)
  return state, pool


def test_mc_passes_agree_across_chunks_and_equal_the_full_network(model_and_pool):
  state, pool = model_and_pool
  key = jax.random.key(3)
  mc = jax.jit(scoring.mc_log_probs, static_argnums=3)
  whole = mc(state, pool[:40], key, 5)
  chex.assert_shape(whole, (5, 40, 10))
  # The same 5 networks whichever chunk an image is scored in.
  parts = jnp.concatenate([mc(state, pool[:10], key, 5), mc(state, pool[10:40], key, 5)], 1)
  np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-5)
  # Trunk once + head per pass equals the whole network with the same dropout key.
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  for k in (0, 4):
    logits = state.apply_fn(variables, pool[:40], train=False, mc_dropout=True,
                            rngs={"dropout": jax.random.fold_in(key, k)})
    np.testing.assert_allclose(whole[k], jax.nn.log_softmax(logits), rtol=1e-5, atol=1e-5)
  # Passes differ (dropout is on), and without dropout the model is the usual one.
  assert not np.allclose(whole[0], whole[1])
  trunk = state.apply_fn(variables, pool[:8], train=False, stage="trunk")
  np.testing.assert_allclose(state.apply_fn(variables, trunk, train=False, stage="head"),
                             state.logits(pool[:8]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", bayesian.NAMES)
def test_mc_strategy_equals_top_k_of_the_scorer_over_the_pool(model_and_pool, name):
  state, pool = model_and_pool
  key = jax.random.key(4)
  available = jnp.arange(120) % 3 != 0
  strategy = acquisition.make(name, k=7, chunk_size=40, mc_samples=6)
  selection = jax.jit(strategy)(state, pool, available, key)
  scores = bayesian.get(name)(scoring.mc_log_probs(state, pool, key, 6))
  expected = scoring.select_top_k(scores, available, 7)
  if name == "variation_ratios":  # many exact ties: compare the chosen scores only
    np.testing.assert_allclose(np.sort(scores[selection.indices]),
                               np.sort(scores[expected]), atol=1e-6)
  else:
    np.testing.assert_array_equal(selection.indices, expected)
  np.testing.assert_allclose(selection.scores, scores[selection.indices], rtol=1e-5,
                             atol=1e-6)
  assert np.all(np.asarray(available)[np.asarray(selection.indices)])
  again = jax.jit(strategy)(state, pool, available, key)
  np.testing.assert_array_equal(again.indices, selection.indices)


def test_choose_mixes_strategies_at_run_time(model_and_pool):
  state, pool = model_and_pool
  strategies = [acquisition.make(n, k=5, chunk_size=40, mc_samples=4)
                for n in ("entropy", "bald")]
  available, key = jnp.ones(120, bool), jax.random.key(5)
  picked = jax.jit(lambda i: acquisition.choose(strategies, i)(state, pool, available, key))
  for i, strategy in enumerate(strategies):
    np.testing.assert_array_equal(picked(jnp.int32(i)).indices,
                                  strategy(state, pool, available, key).indices)


def test_too_few_available_gives_minus_one(model_and_pool):
  state, pool = model_and_pool
  available = jnp.zeros(120, bool).at[jnp.array([3, 90])].set(True)
  selection = acquisition.make("bald", k=4, chunk_size=40, mc_samples=3)(
      state, pool, available, jax.random.key(0))
  assert sorted(np.asarray(selection.indices[:2]).tolist()) == [3, 90]
  np.testing.assert_array_equal(selection.indices[2:], [-1, -1])


def test_unknown_strategy_lists_the_valid_ones():
  with pytest.raises(ValueError, match="unknown metric 'batchbald'.*bald, variation_ratios"):
    acquisition.make("batchbald", k=3)
