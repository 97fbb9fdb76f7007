"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_devices.py).

The round loop on several layouts of 8 devices against one device; prints one JSON line.
"""

import json
import sys

import jax

from al_jax import experiment
from al_jax.config import Config

# Two short epochs a round (min_steps=0), as in tests/test_devices.py's TINY: split
# batches round differently, and 250 steps would grow that into other selections.
SMALL = Config(dataset="mnist", data_dir="sample", metrics=("least_confidence", "random"),
               seeds=(0, 1), initial_size=20, query_size=20, rounds=3, epochs_per_round=2,
               batch_size=32, min_steps=0, chunk_size=200, eval_batch_size=100,
               vmap_runs="false")


class Interrupted(Exception):
  pass


def _interrupt_after(n):
  """An `on_round` callback: the run stops after n rounds, as a kill between rounds would."""
  calls = []

  def stop(round_index, records):
    calls.append(1)
    if len(calls) == n:
      raise Interrupted
  return stop


def _compare(a, b):
  """Selections equal, the largest metric difference."""
  worst = 0.0
  for run in a:
    for x, y in zip(a[run], b[run], strict=True):
      if x["selected"] != y["selected"] or x["num_labeled"] != y["num_labeled"]:
        return {"same_selected": False, "run": list(run), "round": x["round"]}
      for key in ("test_accuracy", "train_loss", "test_loss", "train_accuracy"):
        worst = max(worst, abs(x[key] - y[key]))
  return {"same_selected": True, "max_metric_diff": worst}


def main(workdir):
  data = experiment.prepare_data(SMALL)
  out = {"devices": len(jax.devices())}
  one = experiment.run(SMALL, f"{workdir}/one", data=data, devices=1)
  # 4 runs on 3 devices: the runs axis padded to 6; interrupted after round 1, then
  # resumed on all 8 devices (4 runs x 2 data-parallel).
  try:
    experiment.run(SMALL, f"{workdir}/moved", data=data, devices=3,
                   on_round=_interrupt_after(1))
  except Interrupted:
    pass
  out["resumed_on_8"] = _compare(one, experiment.run(SMALL, f"{workdir}/moved", data=data))
  layout = experiment.sharding.plan(4)
  out["layout"] = [layout.runs_devices, layout.data_devices]
  # Training batches split too: the compiled step holds the gradient all-reduce, and
  # round 0 (the same initial set) agrees to float rounding.
  split = experiment.run(SMALL, f"{workdir}/split", data=data, data_parallel_training=True)
  loop = experiment.RoundLoop(SMALL, data, f"{workdir}/split_step",
                              data_parallel_training=True)
  text = loop.compile().as_text()  # the split run's compiled step, reused
  loop.close()
  out["split_all_reduce"] = "all-reduce" in text
  out["split_round_0"] = _compare({r: v[:1] for r, v in one.items()},
                                  {r: v[:1] for r, v in split.items()})
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1])
