"""The round step of a protocol mapped over stacked runs, laid out on devices and
compiled ahead of time: what `al_jax.experiment` and `al_jax.streaming` step.

The runs' carries are stacked on a leading runs axis (size 1 for a single run) and each
round is one jitted call of the protocol's `round_step`, mapped over the runs:
`jax.vmap` (all runs as one program, fast on GPU/TPU) or `lax.map` (one after another
inside the same program, faster on CPU), as `config.vmap_runs` says. Both give the same
results and share one checkpoint layout.
"""

import dataclasses
import functools
import time
from typing import Any

import jax
import numpy as np
from jax import lax

from al_jax import protocols, sharding, training
from al_jax.config import Config


def use_vmap(vmap_runs: str) -> bool:
  """The run layout: vmap on "true", lax.map on "false", "auto": vmap off CPU only."""
  return {"true": True, "false": False}.get(vmap_runs, jax.default_backend() != "cpu")


def mapped_round_step(protocol: protocols.Protocol, vmap: bool, round_step=None):
  """round_step over stacked runs: (carry [R, ...], data, runs [R]) -> (carry, metrics [R]).

  runs["key"] holds the runs' root keys as key data (uint32 [R, 2]), so that it can be
  placed on a mesh like any array. `round_step` (carry, data, run) -> (carry, metrics):
  the protocol's unless given (a part of a streamed round, `al_jax.streaming`)."""
  round_step = round_step or protocol.round_step

  def step(carry: dict, data: dict, runs: dict) -> tuple[dict, dict]:
    runs = {**runs, "key": jax.random.wrap_key_data(runs["key"])}
    one = lambda c, run: round_step(c, data, run)
    if vmap:
      return jax.vmap(one)(carry, runs)
    return lax.map(lambda c_run: one(*c_run), (carry, runs))
  step.__name__ = f"mapped_{round_step.__name__}"  # in compile logs: jit(mapped_round_step)
  return step


def laid_out_round_step(protocol: protocols.Protocol, vmap: bool,
                        layout: sharding.Layout | None, round_step=None):
  """`mapped_round_step` on `layout`: each "runs" group maps over its own runs
  (`shard_map` over "runs" only, "data" left to XLA); metrics come back replicated."""
  step = mapped_round_step(protocol, vmap, round_step)
  if layout is None or layout.runs_devices == 1:
    return step

  def group(carry, data, runs):
    carry, metrics = step(carry, data, runs)
    return carry, jax.tree.map(lambda x: lax.all_gather(x, sharding.RUNS, tiled=True),
                               metrics)

  P = jax.sharding.PartitionSpec
  return jax.shard_map(group, mesh=layout.mesh, axis_names={sharding.RUNS},
                       in_specs=(P(sharding.RUNS), P(), P(sharding.RUNS)),
                       out_specs=(P(sharding.RUNS), P()), check_vma=False)


class RoundProgram:
  """A protocol and its mapped round step, compiled ahead of time once per argument
  signature (shapes, dtypes, placements), so that compilation is timed apart from the
  rounds and a resumed job reuses the executable. `layout` None: one device.
  `round_step`: another step than the protocol's (`mapped_round_step`)."""

  def __init__(self, protocol: protocols.Protocol, vmap: bool,
               layout: sharding.Layout | None = None, round_step=None):
    self.protocol = protocol
    self.layout = layout
    out_shardings = None
    if layout is not None:
      P = jax.sharding.PartitionSpec
      out_shardings = (layout.sharding(P(sharding.RUNS)), layout.sharding(P()))
    self._jitted = jax.jit(laid_out_round_step(protocol, vmap, layout, round_step),
                           donate_argnums=0,
                           out_shardings=out_shardings)
    self._executables = {}

  def executable(self, *args) -> tuple[Any, float]:
    """(compiled step for args, seconds spent compiling now: 0 when reused)."""
    signature = tuple((x.shape, x.dtype, x.sharding) for x in jax.tree.leaves(args))
    if signature in self._executables:
      return self._executables[signature], 0.0
    t = time.perf_counter()
    if self.layout is None:
      self._executables[signature] = self._jitted.lower(*args).compile()
    else:
      # The "data" axis seen by the round step, and whether fit splits batches over it.
      with jax.set_mesh(self.layout.mesh), training.data_parallel_training(
          self.layout.split_training):
        self._executables[signature] = self._jitted.lower(*args).compile()
    return self._executables[signature], time.perf_counter() - t


def round_program(config: Config, num_classes: int, image_shape: tuple[int, ...],
                  num_valid: int, vmap: bool, layout: sharding.Layout | None = None,
                  user_training=None) -> RoundProgram:
  """The RoundProgram of `config`. Jobs that differ only in seeds, data folder or run
  layout flag share it (and its compiled code); call with `static_config(config)`.
  `layout`: the devices (None: one device); `user_training`: a user's optimiser, loss
  or train step (`al_jax.user_training`)."""
  return _round_program(config, num_classes, image_shape, num_valid, vmap, layout,
                        user_training)


@functools.lru_cache(maxsize=8)
def _round_program(config, num_classes, image_shape, num_valid, vmap, layout, user_training):
  return RoundProgram(protocols.make_protocol(config, num_classes, image_shape, num_valid,
                                              user_training), vmap, layout)


def static_config(config: Config) -> Config:
  """`config` with the fields that do not change compiled code reset."""
  return dataclasses.replace(config, seeds=(0,), data_dir=None, vmap_runs="auto")


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """x [R, ...] with row 0 repeated up to `rows` rows (the runs axis of a layout)."""
  return np.concatenate([x] + [x[:1]] * (rows - len(x)))
