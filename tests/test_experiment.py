"""The real loop end to end on the shipped sample: smoke, determinism, compile count,
resume after an interruption, workdir checks, damaged checkpoints, bad input."""

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from al_jax import experiment, protocols
from al_jax.config import Config, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(ROOT, "experiments", "run.py")
TIMING = ("train_s", "select_s", "eval_s")

SMALL = Config(dataset="mnist", data_dir="sample", metric="entropy", initial_size=20,
               query_size=20, rounds=3, epochs_per_round=2, batch_size=32, chunk_size=200,
               eval_batch_size=100)


def _strip_timing(records):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_pool_smoke_and_results_format(tmp_path):
  results = experiment.run(SMALL, str(tmp_path))
  assert [r["num_labeled"] for r in results] == [20, 40, 60]
  on_disk = experiment.read_results(str(tmp_path))
  assert on_disk == json.loads(json.dumps(results))
  for r in results:
    for key in ("round", "num_labeled", "test_accuracy", "test_loss", "per_class_accuracy",
                "metric", "seed", "selected", "epoch", "train_accuracy", "train_loss"):
      assert key in r, key
    assert 0.0 <= r["test_accuracy"] <= 1.0 and len(r["per_class_accuracy"]) == 10
  selected = results[0]["selected"] + results[1]["selected"]
  assert len(selected) == len(set(selected)) == 40 and results[2]["selected"] == []
  assert all(0 <= i < 600 for i in selected)
  assert results[-1]["test_accuracy"] > 0.2  # 60 labels, 12 steps: above chance (0.1)


def test_same_seed_same_run_other_seed_other_run(tmp_path):
  a = experiment.run(SMALL, str(tmp_path / "a"))
  b = experiment.run(SMALL, str(tmp_path / "b"))
  c = experiment.run(dataclasses.replace(SMALL, seed=1), str(tmp_path / "c"))
  assert _strip_timing(a) == _strip_timing(b)
  assert a[0]["selected"] != c[0]["selected"]


def test_reselect_smoke(tmp_path):
  config = dataclasses.replace(SMALL, protocol="reselect", metric="least_confidence",
                               epochs=2, select_batches=3)
  results = experiment.run(config, str(tmp_path))
  assert [r["epoch"] for r in results] == [1, 2]
  assert all(r["num_labeled"] == 96 and len(set(r["selected"])) == 96 for r in results)


def _count_compiles(config, workdir, caplog):
  jax.clear_caches()
  protocols.make_protocol.cache_clear()
  caplog.clear()
  with caplog.at_level(logging.WARNING), jax.log_compiles(True):
    experiment.run(config, workdir)
  return sum("Finished XLA compilation" in r.getMessage() for r in caplog.records)


def test_six_rounds_compile_as_often_as_three(tmp_path, caplog):
  three = _count_compiles(SMALL, str(tmp_path / "three"), caplog)
  six = _count_compiles(dataclasses.replace(SMALL, rounds=6), str(tmp_path / "six"), caplog)
  assert three > 0
  assert six == three


def test_resume_equals_uninterrupted(tmp_path):
  whole = experiment.run(SMALL, str(tmp_path / "whole"))
  part = experiment.run(SMALL, str(tmp_path / "part"), stop_after=1)
  assert len(part) == 1
  resumed = experiment.run(SMALL, str(tmp_path / "part"))
  assert _strip_timing(resumed) == _strip_timing(whole)
  assert _strip_timing(experiment.read_results(str(tmp_path / "part"))) == \
      _strip_timing(json.loads(json.dumps(whole)))


def test_keep_training_resume_equals_uninterrupted(tmp_path):
  config = dataclasses.replace(SMALL, keep_training=True, metric="smallest_margin")
  whole = experiment.run(config, str(tmp_path / "whole"))
  experiment.run(config, str(tmp_path / "part"), stop_after=2)
  resumed = experiment.run(config, str(tmp_path / "part"))
  assert _strip_timing(resumed) == _strip_timing(whole)


def test_workdir_of_another_config_is_refused(tmp_path):
  experiment.run(SMALL, str(tmp_path), stop_after=1)
  other = dataclasses.replace(SMALL, query_size=10)
  with pytest.raises(ConfigError, match="another configuration.*query_size.*--overwrite"):
    experiment.run(other, str(tmp_path))
  results = experiment.run(other, str(tmp_path), overwrite=True)
  assert [r["num_labeled"] for r in results] == [20, 30, 40]


def _damage_latest(workdir):
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                 if d.isdigit())
  latest = os.path.join(workdir, "checkpoints", str(steps[-1]))
  damaged = 0
  for folder, _, files in os.walk(os.path.join(latest, "carry")):
    for name in files:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(b"garbage")
      damaged += 1
  assert damaged > 0
  return steps[-1]


def test_damaged_checkpoint_falls_back_to_previous(tmp_path, caplog):
  whole = experiment.run(SMALL, str(tmp_path / "whole"))
  workdir = str(tmp_path / "run")
  experiment.run(SMALL, workdir, stop_after=2)  # checkpoints 1 and 2
  assert _damage_latest(workdir) == 2
  with caplog.at_level(logging.WARNING):
    resumed = experiment.run(SMALL, workdir)
  assert any("unreadable" in r.getMessage() for r in caplog.records)
  assert _strip_timing(resumed) == _strip_timing(whole)


def _cli(*args, **kwargs):
  return subprocess.run([sys.executable, RUN_PY, *args], capture_output=True, text=True,
                        cwd=ROOT, timeout=300, **kwargs)


def test_kill_9_mid_round_then_resume(tmp_path):
  flags = ["--dataset=mnist", "--data_dir=sample", "--metric=least_confidence", "--seed=0",
           "--initial_size=20", "--query_size=20", "--rounds=4", "--epochs_per_round=6",
           "--batch_size=32", "--chunk_size=200", "--plot=false"]
  whole = _cli(*flags, f"--workdir={tmp_path / 'whole'}")
  assert whole.returncode == 0, whole.stderr[-2000:]
  workdir = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, RUN_PY, *flags, f"--workdir={workdir}"],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  results = workdir / "results.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline:  # wait until round 2 is done, then kill inside round 3
    if results.exists() and len(results.read_text().splitlines()) >= 2:
      break
    time.sleep(0.05)
  time.sleep(0.3)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done_before = len(results.read_text().splitlines())
  assert 2 <= done_before < 4, "the run was not interrupted"
  again = _cli(*flags, f"--workdir={workdir}")
  assert again.returncode == 0, again.stderr[-2000:]
  assert _strip_timing(experiment.read_results(str(workdir))) == \
      _strip_timing(experiment.read_results(str(tmp_path / "whole")))


@pytest.mark.parametrize("flags,message", [
    (["--metric=margin"], "unknown metric 'margin'"),
    (["--dataset=cifar"], "unknown dataset 'cifar'"),
    (["--protocol=active"], "unknown protocol 'active'"),
    (["--classes=0,eleven"], "eleven"),
    (["--query_size=600"], "--query_size=600 is larger than the unlabeled pool"),
    (["--budget=50"], "--budget=50 is below --initial_size=100"),
    (["--initial_size=0"], "--initial_size must be a positive integer"),
    (["--rounds=-1"], "--rounds must be a positive integer"),
    (["--rounds=9"], "9 rounds need 900 labels"),
    (["--data_dir=/nonexistent"], "/nonexistent"),
])
def test_bad_input_gets_one_clear_line(tmp_path, flags, message):
  base = ["--data_dir=sample", "--seed=0", f"--workdir={tmp_path / 'w'}"]
  out = _cli(*base, *flags)
  assert out.returncode != 0
  assert "Traceback" not in out.stderr
  errors = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and message in errors[0], out.stderr[-1500:]
  assert not (tmp_path / "w" / "results.jsonl").exists()


def test_initial_sets_random_and_class_balanced():
  labels = np.repeat(np.arange(4), 25)
  valid = np.ones(100, bool)
  valid[:5] = False  # padding / unusable
  key = jax.random.key(0)
  plain = protocols.initial_labeled(labels, valid, 10, key, class_balanced=False)
  assert plain.sum() == 10 and not plain[:5].any()
  balanced = protocols.initial_labeled(labels, valid, 10, key, class_balanced=True)
  assert balanced.sum() == 10 and not balanced[:5].any()
  assert np.bincount(labels[balanced], minlength=4).tolist() == [3, 3, 2, 2]
  assert np.array_equal(plain, protocols.initial_labeled(labels, valid, 10, key, False))


def test_budget_sets_rounds():
  from al_jax.config import rounds_for_budget
  assert rounds_for_budget(500, 100, 100) == 5
  assert rounds_for_budget(100, 100, 100) == 1
  with pytest.raises(ConfigError, match="below --initial_size"):
    rounds_for_budget(99, 100, 100)


def test_grid_writes_summary_and_figures(tmp_path):
  summary = experiment.run_grid(SMALL, ("least_confidence", "random"), (0, 1), str(tmp_path),
                                vmap_runs="false")
  assert set(summary) == {"least_confidence", "random"}
  assert summary["random"]["num_labeled"] == [20, 40, 60]
  accs = [experiment.read_results(str(tmp_path / "random" / f"seed_{s}"))[-1]["test_accuracy"]
          for s in (0, 1)]
  np.testing.assert_allclose(summary["random"]["test_accuracy_mean"][-1], np.mean(accs))
  assert json.loads((tmp_path / "summary.json").read_text()) == summary
  for name in ("test_accuracy.png", "train_loss.png", "per_class.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
