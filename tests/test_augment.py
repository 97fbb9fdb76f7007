"""The training-batch augmentation: exact shifts and rotations, and fit with it."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from al_jax import config as config_lib
from al_jax import models, specs, training
from al_jax.augment import Augment, affine


def _image():
  """A 7x7 single-channel image with no symmetry: [7, 7, 1] uint8."""
  return (np.arange(49, dtype=np.uint8).reshape(7, 7, 1) * 5 + 1)


def test_a_whole_pixel_shift_moves_the_image_and_fills_zeros():
  image = _image()
  out = np.asarray(affine(jnp.asarray(image), jnp.array([1.0, -2.0]), jnp.array(0.0)))
  expected = np.zeros_like(image)
  expected[1:, :-2] = image[:-1, 2:]
  np.testing.assert_array_equal(out, expected)


def test_a_quarter_turn_is_rot90_and_no_transform_is_the_identity():
  image = _image()
  turned = np.asarray(affine(jnp.asarray(image), jnp.zeros(2), jnp.array(math.pi / 2)))
  np.testing.assert_array_equal(turned[..., 0], np.rot90(image[..., 0], k=-1))
  same = np.asarray(affine(jnp.asarray(image), jnp.zeros(2), jnp.array(0.0)))
  np.testing.assert_array_equal(same, image)


def test_augment_is_per_image_bounded_and_repeatable():
  images = np.zeros((4, 9, 9, 1), np.uint8)
  images[:, 4, 4] = 255  # one bright pixel in the centre
  augment = Augment(max_shift=1.0)
  key = jax.random.key(0)
  out = np.asarray(augment(jnp.asarray(images), key))
  np.testing.assert_array_equal(out, np.asarray(augment(jnp.asarray(images), key)))
  assert out.dtype == np.uint8 and out.shape == images.shape
  assert len({o.tobytes() for o in out}) > 1  # each image draws its own transform
  for o in out:  # the mass stays within one pixel of the centre
    assert np.all(o[:3] == 0) and np.all(o[6:] == 0)
    assert np.all(o[:, :3] == 0) and np.all(o[:, 6:] == 0)
  assert not Augment() and Augment(0, 5)


def test_fit_with_augment_trains_on_other_batches_and_repeats_exactly():
  spec = specs.get("mnist")
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 255, (40, 16, 16, 1), dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, 10, 40))
  mask = jnp.arange(40) < 24
  tx = training.make_optimizer(0.01, 0.9, 0.0)
  state = training.create_train_state(models.create_model(spec, 10, model="pooled_cnn"),
                                      jax.random.key(0), (16, 16, 1), tx)
  fit = jax.jit(training.fit, static_argnames=("epochs", "batch_size", "augment"))
  key = jax.random.key(1)
  plain, _ = fit(state, images, labels, mask, key, epochs=1, batch_size=8)
  first, _ = fit(state, images, labels, mask, key, epochs=1, batch_size=8,
                 augment=Augment(2.0, 10.0))
  again, _ = fit(state, images, labels, mask, key, epochs=1, batch_size=8,
                 augment=Augment(2.0, 10.0))
  leaves = lambda s: jax.tree.leaves(s.params)
  for a, b in zip(leaves(first), leaves(again)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(plain), leaves(first)))


@pytest.mark.parametrize("settings, message", [
    ({"augment_shift": -1.0}, "--augment_shift must be a number in [0, 180]"),
    ({"augment_degrees": 200.0}, "--augment_degrees must be a number in [0, 180]"),
    ({"augment_degrees": 5.0, "protocol": "reselect"}, "need --protocol=pool"),
])
def test_bad_augment_settings_are_one_line(settings, message):
  with pytest.raises(config_lib.ConfigError, match=message.replace("[", r"\[")):
    config_lib.Config(**settings)
