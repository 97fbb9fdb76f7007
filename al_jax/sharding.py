"""The round loop's runs, pool scoring and training laid out over devices.

The round loop's layout (`Layout`, used by `al_jax.experiment`): a 2-D mesh
("runs", "data"). The stacked runs of a job are split over "runs" (each device group
runs its runs as one device would, `shard_map` over "runs" only), and within a group
the pool chunks are split over "data" when scoring (`jax.set_mesh` plus
`training.split_over_data_axis`, partitioned by XLA), and the training batches too when
asked (`training.data_parallel_training`). Ties in a selection go to the lower pool
index on every layout, as on one device.

Several hosts (a TPU pod, a multi-GPU cluster): call `jax.distributed.initialize()` at
start on every host; `jax.devices()` then lists all devices of all hosts and the same
mesh code runs unchanged, each host feeding its addressable shard of the pool.
"""

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from al_jax.config import ConfigError
from al_jax import training
from al_jax.training import DATA_AXIS

AXIS = DATA_AXIS
RUNS = "runs"


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a job's stacked runs go: `mesh` ("runs" x "data") and the runs axis padded
  to `padded_runs` (a multiple of the "runs" size; the padding repeats run 0 and is
  never reported or saved)."""
  mesh: Mesh
  num_runs: int
  padded_runs: int
  split_training: bool = False  # batches over "data" too (`training.data_parallel_training`)

  @property
  def runs_devices(self) -> int:
    return self.mesh.shape[RUNS]

  @property
  def data_devices(self) -> int:
    return self.mesh.shape[AXIS]

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  def describe(self) -> str:
    """E.g. "8 devices (cpu): 4 runs x 2 data-parallel"."""
    training = (f"training batches {self.data_devices} ways" if self.split_training
                else "training replicated")
    return (f"{self.num_devices} device(s) ({self.mesh.devices.flat[0].platform}, "
            f"{jax.process_count()} process(es)): runs split {self.runs_devices} ways, "
            f"pool chunks {self.data_devices} ways, {training}")

  def sharding(self, spec: P) -> NamedSharding:
    return NamedSharding(self.mesh, spec)

  def saved_runs_sharding(self) -> NamedSharding:
    """The runs' carry as checkpointed (unpadded): split over "runs" when it divides."""
    return self.sharding(P(RUNS) if self.num_runs % self.runs_devices == 0 else P())

  def place(self, tree: Any, spec: P) -> Any:
    """Host arrays (the same on every process) -> global arrays laid out as `spec`;
    arrays already laid out so are kept (no second copy of the pool on one device)."""
    target = self.sharding(spec)

    def place_one(x):
      if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(target, x.ndim):
        return x
      return put(np.asarray(x), target)
    return jax.tree.map(place_one, tree)

  def pad_runs(self, tree: Any) -> Any:
    """Global arrays [R, ...] -> [padded_runs, ...] split over "runs"."""
    extra = self.padded_runs - self.num_runs
    pad = lambda x: jnp.concatenate([x] + [x[:1]] * extra) if extra else x
    return jax.jit(lambda t: jax.tree.map(pad, t),
                   out_shardings=self.sharding(P(RUNS)))(tree)

  def unpad_runs(self, tree: Any) -> Any:
    """The first num_runs of global arrays [padded_runs, ...] (to save them)."""
    if self.padded_runs == self.num_runs:
      return tree
    return jax.jit(lambda t: jax.tree.map(lambda x: x[:self.num_runs], t),
                   out_shardings=self.saved_runs_sharding())(tree)


def plan(num_runs: int, devices: int = 0, split_training: bool = False) -> Layout:
  """The layout of `num_runs` runs on the first `devices` devices (0: all).

  Runs first: min(runs, devices) groups over "runs" (the runs padded to a multiple),
  the devices left in each group over "data"; one run gets every device on "data".
  Devices beyond groups x (devices // groups) stay idle (e.g. 3 runs on 8 devices use 6).
  "data" splits the pool chunks when scoring (exactly one device's scores) and, with
  `split_training`, the training batches too (equal to float rounding only).
  """
  available = jax.devices()
  devices = devices or len(available)
  if devices > len(available):
    raise ConfigError(f"--devices={devices} but only {len(available)} device(s) are visible; "
                     "lower --devices (0 uses all)")
  groups = min(num_runs, devices)
  per_group = devices // groups
  grid = np.array(available[:groups * per_group]).reshape(groups, per_group)
  return Layout(Mesh(grid, (RUNS, AXIS)), num_runs, training.round_up(num_runs, groups),
                split_training and per_group > 1)


# Process count and id when no flag gives them (the coordinator's address is read by JAX
# itself from JAX_COORDINATOR_ADDRESS); Slurm, Open MPI, Kubernetes and Cloud TPU set
# their own variables, which `jax.distributed.initialize` detects.
NUM_PROCESSES_ENV, PROCESS_ID_ENV = "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def cluster_requested(coordinator_address: str | None = None,
                      num_processes: int | None = None) -> bool:
  """Whether this process is one of several: flags, JAX_* variables, or a Slurm or
  Open MPI job of more than one task. (A Cloud TPU pod: pass --distributed=true.)"""
  env = os.environ
  return bool(coordinator_address or (num_processes or 1) > 1
              or env.get("JAX_COORDINATOR_ADDRESS")
              or int(env.get(NUM_PROCESSES_ENV, "1")) > 1
              or ("SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1)
              or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           heartbeat_timeout_s: int = 100) -> None:
  """`jax.distributed.initialize` from the arguments, else the environment; on CPU with
  the gloo collectives. Call before any JAX computation, on every process."""
  env = os.environ
  if num_processes is None and NUM_PROCESSES_ENV in env:
    num_processes = int(env[NUM_PROCESSES_ENV])
  if process_id is None and PROCESS_ID_ENV in env:
    process_id = int(env[PROCESS_ID_ENV])
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             heartbeat_timeout_seconds=heartbeat_timeout_s)
  logging.info("process %d of %d, %d of %d devices here; if a process dies the others "
               "stop within %ds (JAX: 'stopped sending heartbeats'): start them all again "
               "with the same flags to resume from the last complete checkpoint",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), heartbeat_timeout_s)


def put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array, the same on every process, as a global array of `sharding` (each
  process copies only the parts its own devices hold)."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def local_value(x: jax.Array) -> np.ndarray:
  """A fully replicated global array's value on this process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(x.addressable_data(0))
