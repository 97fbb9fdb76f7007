"""al_jax.convolution.conv_general_dilated: lax's values and gradients, in anyone's model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from al_jax.convolution import conv_general_dilated

NHWC = ("NHWC", "HWIO", "NHWC")


def _operands():
  k1, k2 = jax.random.split(jax.random.key(0))
  return jax.random.normal(k1, (3, 9, 8, 2)), jax.random.normal(k2, (3, 3, 2, 5))


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 2), (0, 1))])
def test_values_and_gradients_equal_lax(padding):
  x, w = _operands()
  ours = lambda x, w: conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)
  theirs = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding,
                                                 dimension_numbers=NHWC)
  np.testing.assert_allclose(ours(x, w), theirs(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
  for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(theirs), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_other_layouts_and_the_fallback_for_strides():
  x, w = _operands()
  xn, wn = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)  # NCHW, OIHW (lax's default)
  np.testing.assert_allclose(conv_general_dilated(xn, wn, (1, 1), "SAME"),
                             lax.conv_general_dilated(xn, wn, (1, 1), "SAME"),
                             rtol=1e-5, atol=1e-5)
  strided = conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC)
  assert strided.shape == (3, 5, 4, 5)
  np.testing.assert_allclose(
      strided, lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC),
      rtol=1e-5, atol=1e-5)


def test_linen_and_nnx_layers_take_it_and_vmap_over_runs():
  x, _ = _operands()
  linen = nn.Conv(4, (3, 3), conv_general_dilated=conv_general_dilated)
  plain = nn.Conv(4, (3, 3))
  variables = linen.init(jax.random.key(1), x)
  np.testing.assert_allclose(linen.apply(variables, x), plain.apply(variables, x),
                             rtol=1e-5, atol=1e-5)
  layer = nnx.Conv(2, 4, (3, 3), conv_general_dilated=conv_general_dilated,
                   rngs=nnx.Rngs(0))
  assert layer(x).shape == (3, 9, 8, 4)
  # Several runs' kernels in one program (vmap): one plain convolution per run.
  kernels = jax.random.normal(jax.random.key(2), (2, 3, 3, 2, 4))
  stacked = jax.vmap(lambda k: conv_general_dilated(x, k, (1, 1), "SAME",
                                                    dimension_numbers=NHWC))(kernels)
  for k, out in zip(kernels, stacked):
    np.testing.assert_allclose(out, lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                             dimension_numbers=NHWC),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_outside_model_benchmark_times_every_way():
  """experiments/benchmark.py --outside_model at a tiny size: every way is timed."""
  from al_jax import benchmarking
  out = benchmarking.outside_model(steps=2, batch_size=4, runs=2, repeats=1)
  ways = [f"{w}_{c}" for c in ("xla_conv", "al_jax_conv")
          for w in ("own_jitted_step", "fit", "2_runs_vmap", "2_runs_lax_map")]
  assert sorted(out["seconds"]) == sorted(ways)
  assert all(s > 0 for s in out["seconds"].values())
  assert set(out["fit_over_own_step"]) == {"xla_conv", "al_jax_conv"}


class _NnxNet(nnx.Module):
  """A user's NNX CNN that says nothing about convolutions."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.out = nnx.Linear(4 * 8 * 8, num_classes, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.conv(x)).reshape(x.shape[0], -1))


def test_a_users_nnx_convolutions_take_the_fast_path_with_the_same_values():
  from al_jax import model_api
  model = model_api.NnxModel(lambda rngs: _NnxNet(3, rngs=rngs))
  variables = model.init(jax.random.key(0), (8, 8, 1))
  images = jax.random.randint(jax.random.key(1), (2, 8, 8, 1), 0, 256).astype(jnp.uint8)
  traced = str(jax.make_jaxpr(lambda v: model.logits(v, images))(variables))
  assert "custom_vjp_call" in traced  # models.conv2d, not XLA's convolution gradient
  plain = _NnxNet(3, rngs=nnx.Rngs(0))  # the same module as the user runs it
  nnx.update(plain, nnx.State.merge(*[
      nnx.from_flat_state([(tuple(k.split("/")), v) for k, v in variables["params"].items()])]))
  np.testing.assert_allclose(model.logits(variables, images),
                             plain(images.astype(jnp.float32)), rtol=1e-5, atol=1e-5)
