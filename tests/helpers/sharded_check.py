"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_sharding.py).

Prints one JSON line comparing sharded pool scoring and data-parallel training with
one device."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from al_jax import datasets, metrics, models, scoring, sharding, specs, training


def main():
  devices = jax.devices()
  mesh = sharding.data_mesh()
  dataset = datasets.load("mnist", "sample")
  images = jnp.asarray(dataset.train_images[:480])
  labels = jnp.asarray(dataset.train_labels[:480])
  model = models.create_model(specs.get("mnist"), 10)
  tx = training.make_optimizer(0.01, 0.9, 0.0)
  state = training.create_train_state(model, jax.random.key(0), (28, 28, 1), tx)
  mask = jnp.arange(480) < 256
  fit = functools.partial(training.fit, epochs=2, batch_size=64)
  single_state, single_m = jax.jit(fit)(state, images, labels, mask, jax.random.key(1))
  dp = jax.jit(functools.partial(fit, batch_sharding=sharding.batch_sharding(mesh)))
  dp_args = (sharding.replicate(mesh, state), sharding.replicate(mesh, images),
              sharding.replicate(mesh, labels), sharding.replicate(mesh, mask),
              jax.random.key(1))
  dp_state, dp_m = dp(*dp_args)
  dp_hlo = dp.lower(*dp_args).compile().as_text()
  param_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree.leaves(single_state.params), jax.tree.leaves(dp_state.params)))

  out = {"devices": len(devices), "param_max_abs_diff": param_diff,
         "dp_all_reduce": "all-reduce" in dp_hlo,
         "loss_single": float(single_m["train_loss"]), "loss_dp": float(dp_m["train_loss"]),
         "queries": {}}
  available = ~mask
  pool_images, pool_available = sharding.shard_pool(mesh, images, available)
  for name in metrics.NAMES:
    idx, key = metrics.index(name), jax.random.key(5)
    one = jax.jit(functools.partial(scoring.query_top_k, k=40, chunk_size=30))(
        single_state, images, available, idx, key)
    many = sharding.sharded_query_top_k(mesh, single_state, pool_images, pool_available, idx,
                                        key, k=40, chunk_size=30)
    out["queries"][name] = {
        "same_indices": np.asarray(one[1]).tolist() == np.asarray(many[1]).tolist(),
        "score_max_abs_diff": float(jnp.max(jnp.abs(one[0] - many[0]))),
        "overlap": len(set(np.asarray(one[1]).tolist()) & set(np.asarray(many[1]).tolist())),
        "sharded_output_devices": len(many[1].sharding.device_set)}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
