"""Sharded pool scoring and data-parallel training on 8 (forced) CPU devices equal one
device. Runs in a subprocess because the device count is fixed when JAX starts."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_sharded_scoring_and_training_match_one_device():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, os.path.join(HERE, "helpers", "sharded_check.py")],
                       capture_output=True, text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  assert result["dp_all_reduce"]  # the training step really is split over the devices
  assert result["param_max_abs_diff"] < 1e-4, result
  assert abs(result["loss_single"] - result["loss_dp"]) < 1e-4
  for name, q in result["queries"].items():
    assert q["score_max_abs_diff"] < 1e-5, (name, q)
    # Same selection, up to exact ties at the cut (none expected with random weights).
    assert q["overlap"] >= 39, (name, q)
  assert result["queries"]["random"]["same_indices"]
  assert result["queries"]["entropy"]["same_indices"]
