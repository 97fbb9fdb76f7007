"""Models, the hand-written convolution gradient, training and evaluation steps."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from al_jax import models, specs, training


def _state(dataset="mnist", num_classes=10, image_shape=(28, 28, 1), lr=0.01, wd=0.0):
  model = models.create_model(specs.get(dataset), num_classes)
  tx = training.make_optimizer(lr, 0.9, wd)
  return training.create_train_state(model, jax.random.key(0), image_shape, tx)


def _images(n, shape=(28, 28, 1), seed=1):
  return jax.random.randint(jax.random.key(seed), (n, *shape), 0, 256).astype(jnp.uint8)


@pytest.mark.parametrize("dataset,shape,classes", [("mnist", (28, 28, 1), 10),
                                                   ("mnist", (28, 28, 1), 2),
                                                   ("fruits360", (32, 32, 3), 10),
                                                   ("fruits360", (32, 32, 3), 2)])
def test_model_shapes_and_parameter_counts(dataset, shape, classes):
  state = _state(dataset, classes, shape)
  logits = state.logits(_images(3, shape))
  chex.assert_shape(logits, (3, classes))
  count = sum(x.size for x in jax.tree.leaves(state.params))
  if dataset == "mnist":  # convs, batch norms (scale, bias), dense 9216 -> 128, head
    assert count == 320 + 18496 + 2 * (32 + 64) + (9216 * 128 + 128) + 129 * classes
  else:  # Net3: convs, batch norms, dense 16*8*8 -> 100 -> 30, head
    assert count == (784 + 8855 + 5056 + 2 * (28 + 35 + 16 + 30) + (1024 * 100 + 100)
                     + (100 * 30 + 30) + 31 * classes)


def test_conv2d_gradient_equals_xla():
  x = jax.random.normal(jax.random.key(0), (4, 9, 8, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
  dy = jax.random.normal(jax.random.key(2), (4, 7, 6, 5))
  xla = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(models.conv2d(x, kernel), xla(x, kernel), rtol=1e-5, atol=1e-5)
  ours = jax.vjp(models.conv2d, x, kernel)[1](dy)
  theirs = jax.vjp(xla, x, kernel)[1](dy)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_max_pool_equals_flax():
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
  np.testing.assert_array_equal(models.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


def test_train_step_learns_a_fixed_batch():
  state = _state()
  batch = {"image": _images(32), "label": jnp.arange(32) % 10}
  step = jax.jit(training.train_step)
  first = None
  for i in range(30):
    state, m = step(state, batch, jax.random.key(i))
    first = m["loss"] if first is None else first
  assert int(state.step) == 30
  assert float(m["loss"]) < 0.3 * float(first)
  assert float(training.eval_step(state, batch)["correct"]) >= 28


def test_classification_metrics_by_hand():
  logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0], [9.0, 0.0]])
  labels = jnp.array([0, 0, 1, 1])
  mask = jnp.array([True, True, True, False])
  m = training.classification_metrics(logits, labels, mask)
  assert float(m["count"]) == 3 and float(m["correct"]) == 1
  np.testing.assert_array_equal(m["class_correct"], [1, 0])
  np.testing.assert_array_equal(m["class_count"], [2, 1])
  expected = np.log1p(np.exp(-2)) + np.log1p(np.exp(2)) + np.log1p(np.exp(3))
  np.testing.assert_allclose(m["loss_sum"], expected, rtol=1e-6)


def test_evaluate_padding_equals_subsetting():
  state = _state()
  images, labels = _images(37), jnp.arange(37) % 10
  whole = training.evaluate(state, images, labels, batch_size=37)
  chunked = training.evaluate(state, images, labels, batch_size=10)  # 4 chunks, 3 padded
  for key in whole:
    np.testing.assert_allclose(whole[key], chunked[key], rtol=1e-5)
  logits = state.logits(images)
  np.testing.assert_allclose(whole["test_accuracy"],
                             np.mean(np.argmax(logits, -1) == np.asarray(labels)), rtol=1e-6)


def test_fit_uses_only_the_labeled_images():
  """Changing unlabeled images and labels must not change the trained model."""
  images, labels = _images(300), jnp.arange(300) % 10
  mask = jnp.arange(300) % 3 == 0
  fit = jax.jit(functools.partial(training.fit, epochs=2, batch_size=64))
  a, ma = fit(_state(), images, labels, mask, jax.random.key(7))
  noisy_images = jnp.where(mask[:, None, None, None], images, 255 - images)
  noisy_labels = jnp.where(mask, labels, 9 - labels)
  b, mb = fit(_state(), noisy_images, noisy_labels, mask, jax.random.key(7))
  chex.assert_trees_all_equal(a.params, b.params)
  chex.assert_trees_all_equal(ma, mb)
  assert int(a.step) == 2 * 2  # 100 labeled, batch 64: 2 steps per epoch


@pytest.mark.slow
def test_min_steps_adds_whole_epochs_for_small_labeled_sets():
  """One compiled fit: 20 labeled is 1 step per epoch, so 12 epochs reach 12 steps;
  300 labeled is 5 steps per epoch, so 3 whole epochs (15 steps)."""
  images, labels = _images(400), jnp.arange(400) % 10
  fit = jax.jit(functools.partial(training.fit, epochs=1, batch_size=64, min_steps=12))
  state = _state()
  small, _ = fit(state, images, labels, jnp.arange(400) < 20, jax.random.key(7))
  large, _ = fit(state, images, labels, jnp.arange(400) < 300, jax.random.key(7))
  assert int(small.step) == 12          # 12 epochs of 1 step
  assert int(large.step) == 15          # ceil(12 / 5) = 3 epochs of 5 steps
  assert fit._cache_size() == 1
  plain = jax.jit(functools.partial(training.fit, epochs=1, batch_size=64))
  assert int(plain(state, images, labels, jnp.arange(400) < 20,
                   jax.random.key(7))[0].step) == 1


def _held_out_loss(state, images, labels, held_out):
  idx = np.flatnonzero(held_out)
  return float(training.evaluate(state, images[idx], labels[idx])["test_loss"])


@pytest.mark.slow
def test_early_stopping_keeps_the_best_check_and_stops_after_patience():
  """Against plain fits of 2, 4, 6, ... epochs (the same trajectory, epoch e from
  fold_in(key, e)): the held-out loss at every check, the rule applied by hand."""
  images = _images(200)
  labels = jnp.asarray(np.random.default_rng(0).integers(0, 10, 200))  # noise: overfits
  mask = jnp.arange(200) < 60
  holdout = (jnp.arange(200) % 3 == 0)  # 20 of the 60 labeled held out
  settings = training.EarlyStopping(capacity=60, check_steps=6, patience=2)
  state = _state(lr=0.05)
  key = jax.random.key(3)
  stopped, metrics = jax.jit(functools.partial(
      training.fit, epochs=40, batch_size=16, early_stopping=settings))(
          state, images, labels, mask, key, holdout=holdout)
  plain = jax.jit(lambda s, e: training.fit(s, images, labels, mask & ~holdout, key,
                                            epochs=e, batch_size=16))
  held_out = np.asarray(mask & holdout)
  best, best_loss, bad, epochs = None, np.inf, 0, 0
  while epochs < 40 and bad < settings.patience:  # 40 trained: 3 steps per epoch
    epochs += 2                                   # a check every 6 steps
    trained, _ = plain(state, jnp.int32(epochs))
    loss = _held_out_loss(trained, images, labels, held_out)
    if loss < best_loss:
      best, best_loss, bad = trained, loss, 0
    else:
      bad += 1
  assert epochs < 40  # it did stop early
  assert int(metrics["train_steps"]) == 3 * epochs
  np.testing.assert_allclose(float(metrics["validation_loss"]), best_loss, rtol=1e-5)
  chex.assert_trees_all_close(stopped.params, best.params, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_early_stopping_on_labeled_rows_equals_the_whole_pool():
  """A streamed pool trains on the labeled rows only (`rows`): same batches, same
  held-out images, same stopping as with the whole pool in memory."""
  images = _images(200)
  labels = jnp.asarray(np.random.default_rng(0).integers(0, 10, 200))
  mask, holdout = jnp.arange(200) < 60, jnp.arange(200) % 3 == 0
  rows = jnp.concatenate([jnp.arange(60), jnp.full(4, 200)])  # padding: >= N
  at = jnp.minimum(rows, 199)
  settings = training.EarlyStopping(capacity=60, check_steps=6, patience=2)
  fit = functools.partial(training.fit, epochs=40, batch_size=16, early_stopping=settings)
  whole, mw = jax.jit(fit)(_state(lr=0.05), images, labels, mask, jax.random.key(3),
                           holdout=holdout)
  part, mp = jax.jit(fit)(_state(lr=0.05), images[at], labels[at], mask, jax.random.key(3),
                          holdout=holdout, rows=rows)
  assert int(mw["train_steps"]) == int(mp["train_steps"]) < 3 * 40
  np.testing.assert_allclose(float(mw["validation_loss"]), float(mp["validation_loss"]),
                             rtol=1e-5)
  chex.assert_trees_all_close(whole.params, part.params, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_early_stopping_without_held_out_labels_is_plain_training():
  images, labels = _images(100), jnp.arange(100) % 10
  mask, holdout = jnp.arange(100) < 40, jnp.arange(100) >= 40  # none of the labeled
  settings = training.EarlyStopping(capacity=40, check_steps=5, patience=1)
  a, ma = training.fit(_state(), images, labels, mask, jax.random.key(1), epochs=3,
                       batch_size=16, holdout=holdout, early_stopping=settings)
  b, mb = training.fit(_state(), images, labels, mask, jax.random.key(1), epochs=3,
                       batch_size=16)
  chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)
  assert int(ma["train_steps"]) == int(mb["train_steps"]) == 9
  assert np.isnan(float(ma["validation_loss"]))


def test_pooled_cnn_has_a_small_head():
  model = models.create_model(specs.get("mnist"), 10, model="pooled_cnn")
  state = training.create_train_state(model, jax.random.key(0), (28, 28, 1),
                                      training.make_optimizer(0.01, 0.9, 0.0))
  chex.assert_shape(state.logits(_images(3)), (3, 10))
  assert state.params["Dense_0"]["kernel"].shape == (4 * 4 * 64, 128)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  trunk = state.apply_fn(variables, _images(3), train=False, stage="trunk")
  np.testing.assert_allclose(state.apply_fn(variables, trunk, train=False, stage="head"),
                             state.logits(_images(3)), rtol=1e-5, atol=1e-5)


def test_labeled_order_puts_a_permutation_of_the_labeled_first():
  mask = jnp.array([True, False, True, True, False, True])
  order = np.asarray(training.labeled_order(mask, jax.random.key(0)))
  assert sorted(order[:4]) == [0, 2, 3, 5] and sorted(order[4:]) == [1, 4]


def test_conv2d_under_vmap_equals_a_loop_over_runs():
  x = jax.random.normal(jax.random.key(0), (3, 4, 9, 8, 5))
  k = jax.random.normal(jax.random.key(1), (3, 3, 3, 5, 6))
  loop = lambda xs, ks: np.stack([models.conv2d(a, b) for a, b in zip(xs, ks)])
  np.testing.assert_allclose(jax.vmap(models.conv2d)(x, k), loop(x, k), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.vmap(models.conv2d, in_axes=(None, 0))(x[0], k),
                             loop([x[0]] * 3, k), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.vmap(models.conv2d, in_axes=(0, None))(x, k[0]),
                             loop(x, [k[0]] * 3), rtol=1e-5, atol=1e-5)
  grad = lambda a, b: jax.grad(lambda a, b: jnp.sum(models.conv2d(a, b) ** 2), (0, 1))(a, b)
  batched = jax.vmap(grad)(x, k)
  for i in range(3):
    for got, want in zip(batched, grad(x[i], k[i])):
      np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)


def test_models_normalise_by_the_spec():
  mnist = specs.get("mnist")
  x = np.array([0, 255, 51], np.uint8).reshape(1, 1, 3, 1)
  y = jax.jit(lambda im: models.normalize(im, mnist.mean, mnist.std))(x)
  assert y.dtype == np.float32 and y.shape == (1, 1, 3, 1)
  assert np.ravel(y)[:2].tolist() == [-1.0, 1.0]
  np.testing.assert_allclose(np.ravel(y)[2], (51 / 255 - 0.5) / 0.5, rtol=1e-6)
  fruits = specs.get("fruits360")
  x = np.array([[255, 0, 128], [0, 255, 30]], np.uint8).reshape(2, 1, 1, 3)
  y = models.normalize(x, fruits.mean, fruits.std)
  expected = (x.astype(np.float64) / 255 - np.array(fruits.mean)) / np.array(fruits.std)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y[0, 0, 0, 0], (1 - 0.4914) / 0.2023, rtol=1e-5)
  model = models.create_model(fruits, 10)
  assert (model.mean, model.std) == (fruits.mean, fruits.std)
