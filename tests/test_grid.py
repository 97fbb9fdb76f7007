"""Stacked runs (metrics x seeds) in one vmapped program equal the runs done alone."""

import dataclasses

import numpy as np

from al_jax import experiment, grid
from al_jax.config import Config

SMALL = Config(dataset="mnist", data_dir="sample", initial_size=20, query_size=20, rounds=3,
               epochs_per_round=2, batch_size=32, chunk_size=200, eval_batch_size=100)


def test_grid_equals_separate_runs(tmp_path):
  metric_names, seeds = ("entropy", "random"), (0, 1)
  together = grid.run_pool_grid(SMALL, metric_names, seeds, str(tmp_path / "grid"))
  assert set(together) == {(m, s) for m in metric_names for s in seeds}
  for (metric, seed), records in together.items():
    alone = experiment.run(dataclasses.replace(SMALL, metric=metric, seed=seed),
                           str(tmp_path / f"{metric}_{seed}"))
    assert len(records) == len(alone) == 3
    for a, b in zip(records, alone):
      assert a["selected"] == b["selected"]
      assert a["num_labeled"] == b["num_labeled"]
      np.testing.assert_allclose(a["test_accuracy"], b["test_accuracy"], atol=1e-6)
      np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
      np.testing.assert_allclose(a["per_class_accuracy"], b["per_class_accuracy"], atol=1e-6)
    on_disk = experiment.read_results(str(tmp_path / "grid" / metric / f"seed_{seed}"))
    assert [r["selected"] for r in on_disk] == [r["selected"] for r in records]


def test_grid_resumes_exactly(tmp_path):
  whole = grid.run_pool_grid(SMALL, ("least_confidence", "random"), (0,), str(tmp_path / "a"))
  grid.run_pool_grid(SMALL, ("least_confidence", "random"), (0,), str(tmp_path / "b"),
                     stop_after=1)
  resumed = grid.run_pool_grid(SMALL, ("least_confidence", "random"), (0,),
                               str(tmp_path / "b"))
  strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rs]
  for run in whole:
    assert strip(resumed[run]) == strip(whole[run])
