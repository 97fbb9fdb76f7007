"""The main job on several devices and several processes equals one device.

Forced CPU devices are fixed when JAX starts, so every check runs in a subprocess.
"""

import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUN_PY = os.path.join(ROOT, "experiments", "run.py")
TINY = ["--dataset=mnist", "--data_dir=sample", "--initial_size=20", "--query_size=20",
        "--rounds=3", "--epochs_per_round=2", "--batch_size=32", "--chunk_size=200",
        "--plot=false"]


def _env(devices: int) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _results(workdir):
  with open(os.path.join(workdir, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


def _assert_same(a, b, atol=1e-5):
  """Same selections; metrics equal up to float rounding (data-parallel sums differ in
  order)."""
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x["selected"] == y["selected"] and x["num_labeled"] == y["num_labeled"]
    for key in ("test_accuracy", "train_loss", "test_loss", "train_accuracy"):
      np.testing.assert_allclose(x[key], y[key], atol=atol, err_msg=key)


def test_run_py_on_8_devices_selects_what_one_device_selects(tmp_path):
  """One run: run.py's default spreads its pool scoring and training over all 8 devices,
  says so, and selects what --devices=1 selects."""
  flags = [sys.executable, RUN_PY, *TINY, "--metric=entropy", "--seed=0"]
  outs = {}
  for name, extra in (("one", ["--devices=1"]), ("all", [])):
    outs[name] = subprocess.run([*flags, *extra, f"--workdir={tmp_path / name}"],
                                capture_output=True, text=True, env=_env(8), cwd=ROOT,
                                timeout=300)
    assert outs[name].returncode == 0, outs[name].stderr[-3000:]
  assert "1 run(s) on 1 device(s)" in outs["one"].stderr
  assert "1 run(s) on 8 device(s) (cpu, 1 process(es)): runs split 1 ways, pool chunks " \
         "and batches 8 ways" in outs["all"].stderr
  _assert_same(_results(tmp_path / "one"), _results(tmp_path / "all"))


def test_runs_spread_over_devices_and_resumed_on_another_count(tmp_path):
  """4 runs: on 3 devices (runs axis padded to 6), interrupted after round 1, resumed
  on all 8 (4 runs x 2 data-parallel, the gradient all-reduce really there): the same
  as one device."""
  out = subprocess.run([sys.executable, os.path.join(HERE, "helpers", "devices_check.py"),
                        str(tmp_path)], capture_output=True, text=True, env=_env(8),
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8 and result["layout"] == [4, 2] and result["all_reduce"]
  assert result["resumed_on_8"]["same_selected"], result
  assert result["resumed_on_8"]["max_metric_diff"] < 1e-5, result
