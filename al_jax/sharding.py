"""Pool scoring and training sharded over all devices with `jax.sharding`.

Pool scoring: the pool is split along its first axis over a 1-D mesh (axis "data");
every device runs the chunked running top-k on its shard (`shard_map`), the per-device
top-k lists are gathered and merged. Each image's score is computed exactly as on one
device (its key is folded from its global pool index), so the selections agree with a
single device up to float rounding. Training: `fit` with `batch_sharding` splits each
batch over the devices and lets XLA's SPMD partitioner insert the gradient and batch-norm
all-reduces (data parallelism, same maths as one device).

Several hosts (a TPU pod, a multi-GPU cluster): call `jax.distributed.initialize()` at
start on every host; `jax.devices()` then lists all devices of all hosts and the same
mesh code runs unchanged, each host feeding its addressable shard of the pool.
"""

import functools

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from al_jax import scoring
from al_jax.training import TrainState

AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices), axis name "data"."""
  return Mesh(np.array(devices if devices is not None else jax.devices()), (AXIS,))


def shard_pool(mesh: Mesh, *arrays: jax.Array) -> tuple[jax.Array, ...]:
  """Places arrays [N, ...] split along N over the mesh (N % devices == 0)."""
  return tuple(jax.device_put(a, NamedSharding(mesh, P(AXIS))) for a in arrays)


def replicate(mesh: Mesh, tree):
  return jax.device_put(tree, NamedSharding(mesh, P()))


def sharded_query_top_k(mesh: Mesh, state: TrainState, images: jax.Array,
                        available: jax.Array, metric_index: jax.Array, key: jax.Array, *,
                        k: int, chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """`scoring.query_top_k` over a pool sharded on `mesh`; (scores [k], indices [k]).

  images: [N, H, W, C], N divisible by devices * chunk_size.
  """
  devices = mesh.devices.size
  if images.shape[0] % (devices * chunk_size):
    raise ValueError(f"pool of {images.shape[0]} images does not split into {devices} "
                     f"devices x chunks of {chunk_size}; pad the pool")
  return _sharded_query(mesh, k, chunk_size)(state, images, available, metric_index, key)


@functools.lru_cache(maxsize=16)
def _sharded_query(mesh: Mesh, k: int, chunk_size: int):
  def local(state, images, available, metric_index, key):
    offset = lax.axis_index(AXIS) * images.shape[0]
    scores, indices = scoring.query_top_k(state, images, available, metric_index, key,
                                          k=k, chunk_size=chunk_size, offset=offset)
    all_scores = lax.all_gather(scores, AXIS, tiled=True)   # device order = index order
    all_indices = lax.all_gather(indices, AXIS, tiled=True)
    top_scores, positions = lax.top_k(all_scores, k)
    return top_scores, all_indices[positions]

  mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS), P(), P()),
                         out_specs=(P(), P()), check_vma=False)
  return jax.jit(mapped)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding for `training.fit(..., batch_sharding=...)`: batches split over devices."""
  return NamedSharding(mesh, P(AXIS))
