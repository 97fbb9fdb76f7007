"""Orbax checkpoints of a run: the carry pytree plus JSON metadata, one per round.

A checkpoint holds everything needed to continue exactly: model and optimizer state,
the labeled mask, the next round, the run's root key and the results so far. Orbax
writes each step to a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous step intact; a latest step that cannot be read is
skipped with a warning and the one before it is used.
"""

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization


class Checkpointer:
  """Saves and restores `(carry, meta)` under `directory`, keeping the last `max_to_keep`
  steps (None: all)."""

  def __init__(self, directory: str, max_to_keep: int | None = 3):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("carry", "meta"))

  def save(self, step: int, carry: Any, meta: dict) -> None:
    """Starts an asynchronous save of the carry pytree and JSON-able `meta`."""
    self.manager.save(step, args=ocp.args.Composite(
        carry=ocp.args.StandardSave(serialization.to_state_dict(carry)),
        meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, template: Any) -> tuple[Any, dict] | None:
    """The newest readable checkpoint as (carry shaped like `template`, meta), or None."""
    self.manager.reload()
    steps = sorted(self.manager.all_steps(), reverse=True)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          serialization.to_state_dict(template))
    for step in steps:
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            carry=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        carry = serialization.from_state_dict(template, restored["carry"])
        _check_shapes(template, carry)
        return carry, dict(restored["meta"])
      except Exception as error:  # a damaged step: fall back to the previous one
        logging.warning("checkpoint step %d in %s is unreadable (%s: %s); "
                        "falling back to the previous one", step, self.manager.directory,
                        type(error).__name__, str(error).splitlines()[0][:200])
    return None

  def resume(self, template: Any, fresh_results: Any) -> tuple[Any, Any, int]:
    """(carry, results, next round): from the newest readable checkpoint, else a fresh
    start from `template` and `fresh_results` at round 0."""
    restored = self.restore_latest(template)
    if restored is None:
      return template, fresh_results, 0
    carry, meta = restored
    logging.info("resuming %s from round %d", self.manager.directory, meta["next_round"])
    return carry, meta["results"], meta["next_round"]

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _check_shapes(template: Any, restored: Any) -> None:
  for a, b in zip(jax.tree.leaves(template), jax.tree.leaves(restored)):
    if np.shape(a) != np.shape(b):
      raise ValueError(f"restored shape {np.shape(b)} differs from {np.shape(a)}")
