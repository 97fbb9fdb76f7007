"""The acquisition interface: Monte Carlo dropout passes, ensembles, embeddings and the
strategies built on them."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from al_jax import (acquisition, batch_acquisition, bayesian, models, scoring, specs,
                    training)


# Fruits-360's model (3 channels, its own net) in the slow tier: the fast tier checks each
# strategy on MNIST's.
@pytest.fixture(scope="module", params=["mnist", pytest.param("fruits360", marks=pytest.mark.slow)])
def model_and_pool(request):
  spec = specs.get(request.param)
  shape = spec.image_shape(16)
  state = training.create_train_state(models.create_model(spec, 10), jax.random.key(0),
                                      shape, training.make_optimizer(0.01, 0.9, 0.0))
  pool = jax.random.randint(jax.random.key(1), (120, *shape), 0, 256).astype(jnp.uint8)
  return state, pool


# The joint strategies' tests run on one model (their selectors are model-agnostic).
MNIST_ONLY = pytest.mark.parametrize("model_and_pool", ["mnist"], indirect=True)


@pytest.mark.slow
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


@pytest.mark.parametrize("name,options,message", [
    ("batch_bald", {}, "unknown metric 'batch_bald'; valid: .*bald, .*batchbald, .*badge"),
    ("batchbald", {"k": 0}, "k must be a positive integer, got 0"),
    ("bald", {"mc_samples": 0}, "mc_samples must be a positive integer, got 0"),
    ("batchbald", {"batch_configs": 0}, "batch_configs must be a positive integer"),
    ("stochastic_bald", {"stochastic_mode": "gumbel"}, "unknown stochastic_mode 'gumbel'"),
])
def test_bad_options_get_one_line(name, options, message):
  with pytest.raises(ValueError, match=message) as error:
    acquisition.make(name, **{"k": 3, **options})
  assert "\n" not in str(error.value)


def _single(model_and_pool):
  state, pool = model_and_pool
  return state, pool, jnp.arange(120) % 3 != 0, jax.random.key(6)


@pytest.mark.slow
@MNIST_ONLY
def test_batchbald_of_one_is_balds_top_1(model_and_pool):
  state, pool, available, key = _single(model_and_pool)
  top = acquisition.make("bald", k=1, chunk_size=40, mc_samples=6)(state, pool, available, key)
  one = acquisition.make("batchbald", k=1, chunk_size=40, mc_samples=6)(
      state, pool, available, key)
  assert int(one.indices[0]) == int(top.indices[0])
  np.testing.assert_allclose(one.scores, top.scores, rtol=1e-4, atol=1e-6)
  batch = jax.jit(acquisition.make("batchbald", k=5, chunk_size=40, mc_samples=6,
                                   batch_configs=50))(state, pool, available, key)
  picked = np.asarray(batch.indices)
  assert picked[0] == int(top.indices[0]) and len(set(picked)) == 5
  assert np.all(np.asarray(available)[picked])
  assert np.all(np.diff(np.asarray(batch.scores)) > -1e-6)  # I(y_A; w) grows with A


@MNIST_ONLY
def test_stochastic_batch_at_high_beta_is_the_top_k(model_and_pool):
  state, pool, available, key = _single(model_and_pool)
  for name in ("entropy", "bald"):
    top = acquisition.make(name, k=6, chunk_size=40, mc_samples=4)(state, pool, available, key)
    sharp = acquisition.make(f"stochastic_{name}", k=6, chunk_size=40, mc_samples=4,
                             stochastic_beta=1e6)(state, pool, available, key)
    np.testing.assert_array_equal(sharp.indices, top.indices)
    np.testing.assert_allclose(sharp.scores, top.scores, rtol=1e-5)
  draws = [acquisition.make("stochastic_entropy", k=6, chunk_size=40)(
      state, pool, available, jax.random.key(s)).indices for s in range(3)]
  assert len({tuple(np.asarray(d)) for d in draws}) > 1  # beta = 1 samples


def _numpy_k_center(x, labeled, available, k):
  x = np.asarray(x, np.float64)
  centers = list(np.flatnonzero(labeled))
  free, picks = np.asarray(available).copy(), []
  for _ in range(k):
    d = np.full(len(x), np.inf)
    for c in centers:
      d = np.minimum(d, ((x - x[c]) ** 2).sum(-1))
    d[~free] = -1
    picks.append(int(np.argmax(d)))
    centers.append(picks[-1])
    free[picks[-1]] = False
  return picks


@MNIST_ONLY
def test_coreset_is_k_center_on_the_penultimate_layer(model_and_pool):
  state, pool, available, key = _single(model_and_pool)
  features = scoring.embeddings(state, pool, "penultimate")
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits, penultimate = state.apply_fn(variables, pool, train=False, with_penultimate=True)
  np.testing.assert_allclose(features, penultimate)
  last = list(state.params)[-1]  # the last dense layer maps the penultimate to logits
  np.testing.assert_allclose(penultimate @ state.params[last]["kernel"]
                             + state.params[last]["bias"], logits, rtol=1e-4, atol=1e-4)
  labeled = ~available & (jnp.arange(120) < 60)
  selection = jax.jit(acquisition.make("coreset", k=6, chunk_size=40))(
      state, pool, available, key, labeled)
  assert np.asarray(selection.indices).tolist() == _numpy_k_center(features, labeled,
                                                                   available, 6)
  with pytest.raises(ValueError, match="coreset needs the labeled mask"):
    acquisition.make("coreset", k=6, chunk_size=40)(state, pool, available, key)


def test_badge_embeddings_are_last_layer_gradients(model_and_pool):
  state, pool, available, key = _single(model_and_pool)
  images = pool[:5]
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  last = list(state.params)[-1]

  def loss(kernel, image):
    params = {**state.params, last: {**state.params[last], "kernel": kernel}}
    logits = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                            image[None], train=False)[0]
    label = jnp.argmax(jax.lax.stop_gradient(logits))
    return -jax.nn.log_softmax(logits)[label]

  kernel = state.params[last]["kernel"]  # [D, C]
  grads = jax.vmap(jax.grad(loss), in_axes=(None, 0))(kernel, images)  # [5, D, C]
  embedded = scoring.embeddings(state, images, "gradient")
  np.testing.assert_allclose(embedded, grads.transpose(0, 2, 1).reshape(5, -1),
                             rtol=1e-4, atol=1e-6)
  del variables
  selection = jax.jit(acquisition.make("badge", k=6, chunk_size=40))(state, pool, available, key)
  expected = batch_acquisition.kmeans_pp(scoring.embeddings(state, pool, "gradient"),
                                         available, 6, key)
  np.testing.assert_array_equal(selection.indices, expected)
  assert np.all(np.asarray(available)[np.asarray(selection.indices)])


@pytest.mark.slow
@MNIST_ONLY
def test_choose_switches_between_joint_strategies(model_and_pool):
  state, pool, available, key = _single(model_and_pool)
  labeled = ~available
  strategies = [acquisition.make(n, k=4, chunk_size=40, mc_samples=3)
                for n in ("entropy", "coreset", "badge", "batchbald")]
  picked = jax.jit(lambda i: acquisition.choose(strategies, i)(state, pool, available, key,
                                                                labeled))
  for i, strategy in enumerate(strategies):
    np.testing.assert_array_equal(picked(jnp.int32(i)).indices,
                                  strategy(state, pool, available, key, labeled).indices)


# ---------------------------------------------------------------------------- ensembles


@pytest.fixture(scope="module")
def ensemble():
  spec = specs.get("mnist")
  model = models.create_model(spec, 10)
  tx = training.make_optimizer(0.05, 0.9, 0.0)
  state = jax.jit(training.create_train_state, static_argnums=(0, 2, 3, 4))(
      model, jax.random.key(0), (16, 16, 1), tx, 3)
  pool = jax.random.randint(jax.random.key(1), (80, 16, 16, 1), 0, 256).astype(jnp.uint8)
  return model, tx, state, pool


def test_ensemble_members_are_models_from_their_own_keys(ensemble):
  model, tx, state, pool = ensemble
  assert state.members == 3
  chex.assert_shape(state.step, (3,))
  members = [training.create_train_state(model, jax.random.fold_in(jax.random.key(0), m),
                                         (16, 16, 1), tx) for m in range(3)]
  member_log_probs = jnp.stack([jax.nn.log_softmax(m.logits(pool)) for m in members])
  samples = scoring.sample_log_probs(state, pool, jax.random.key(9), 50)  # K = M
  np.testing.assert_allclose(samples, member_log_probs, rtol=1e-5, atol=1e-5)
  # The ensemble predicts with its mean probabilities.
  np.testing.assert_allclose(jax.nn.softmax(state.logits(pool)),
                             jnp.exp(member_log_probs).mean(0), rtol=1e-5, atol=1e-6)
  features = scoring.embeddings(state, pool, "penultimate")
  np.testing.assert_allclose(features[:, 128:256],
                             scoring.embeddings(members[1], pool, "penultimate"), rtol=1e-5)
  # Its BALD is the mutual information over the members.
  selection = acquisition.make("bald", k=5, chunk_size=40)(state, pool, jnp.ones(80, bool),
                                                           jax.random.key(9))
  expected = scoring.select_top_k(bayesian.bald(member_log_probs), jnp.ones(80, bool), 5)
  np.testing.assert_array_equal(selection.indices, expected)


@pytest.mark.slow
def test_ensemble_fit_equals_members_fitted_alone(ensemble):
  model, tx, state, pool = ensemble
  labels = jnp.arange(80) % 10
  mask = jnp.arange(80) < 30
  key = jax.random.key(4)
  fit = jax.jit(training.fit, static_argnames=("epochs", "batch_size"))
  together, metrics = fit(state, pool, labels, mask, key, epochs=2, batch_size=8)
  assert together.members == 3
  losses = []
  for m in range(3):
    member = jax.tree.map(lambda x: x[m], state.replace(members=0))
    alone, alone_metrics = fit(member, pool, labels, mask, jax.random.fold_in(key, m),
                               epochs=2, batch_size=8)
    for a, b in zip(jax.tree.leaves(alone.params),
                    jax.tree.leaves(jax.tree.map(lambda x: x[m], together.params))):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    losses.append(alone_metrics["train_loss"])
  np.testing.assert_allclose(metrics["train_loss"], np.mean(losses), rtol=1e-4)
  assert not np.allclose(jax.tree.leaves(together.params)[0][0],
                         jax.tree.leaves(together.params)[0][1])


@MNIST_ONLY
@pytest.mark.parametrize("size", [pytest.param(1, marks=pytest.mark.slow),
                                  pytest.param(39, marks=pytest.mark.slow), 41])
@pytest.mark.parametrize("name", ["entropy", "bald", "batchbald", "stochastic_entropy",
                                  "coreset", "badge", "typiclust"])
def test_every_strategy_takes_a_pool_of_any_size(model_and_pool, name, size):
  """N = 1, chunk - 1, chunk + 1 (chunk 40): as the pool padded by hand to whole chunks
  (padding unavailable), never a -1 while images are available."""
  state, pool = model_and_pool
  key = jax.random.key(10)
  available = (jnp.arange(size) % 4 != 1) | (size == 1)
  labeled = ~available
  k = min(3, int(available.sum()))
  strategy = acquisition.make(name, k=k, chunk_size=40, mc_samples=3)
  selection = strategy(state, pool[:size], available, key, labeled)
  padded = -(-size // 40) * 40
  by_hand = strategy(state, pool[:padded], jnp.zeros(padded, bool).at[:size].set(available),
                     key, jnp.zeros(padded, bool).at[:size].set(labeled))
  assert np.all(np.asarray(selection.indices) >= 0)
  assert np.all(np.asarray(available)[np.asarray(selection.indices)])
  np.testing.assert_array_equal(selection.indices, by_hand.indices)


@MNIST_ONLY
def test_variation_ratios_breaks_its_ties_at_random_not_by_index(model_and_pool):
  state, pool = model_and_pool
  available = jnp.ones(120, bool)
  strategy = jax.jit(acquisition.make("variation_ratios", k=10, chunk_size=40, mc_samples=4))
  key = jax.random.key(5)
  scores = np.asarray(bayesian.variation_ratios(scoring.mc_log_probs(state, pool, key, 4)))
  top = np.sort(scores)[::-1][:10]
  tied = np.flatnonzero(scores == top[-1])
  assert len(tied) > 10  # K = 4 passes: a few score levels, so most of the pool ties
  picks = [np.asarray(strategy(state, pool, available, jax.random.key(5)).indices)]
  picks.append(np.asarray(strategy(state, pool, available, key).indices))
  np.testing.assert_array_equal(picks[0], picks[1])  # seeded: the same key, the same pick
  np.testing.assert_allclose(np.sort(scores[picks[0]])[::-1], top, atol=1e-6)
  # The images above the tied level always come first; among the tied ones the pick is
  # random: not the lowest indices, and another key picks others.
  chosen_tied = np.sort(np.intersect1d(picks[0], tied))
  assert not np.array_equal(chosen_tied, tied[:len(chosen_tied)])
  other = np.asarray(strategy(state, pool, available, jax.random.key(6)).indices)
  assert set(other) != set(picks[0])
