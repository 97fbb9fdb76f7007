"""The main job on several devices and several processes equals one device.

Forced CPU devices are fixed when JAX starts, so every check runs in a subprocess.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocesses on 8 forced devices and 2 processes

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUN_PY = os.path.join(ROOT, "experiments", "run.py")
# Two short epochs a round (--min_steps=0): forcing host devices changes XLA:CPU's
# rounding, and the recipe's 250 steps would grow that into different selections.
TINY = ["--dataset=mnist", "--data_dir=sample", "--initial_size=20", "--query_size=20",
        "--rounds=3", "--epochs_per_round=2", "--batch_size=32", "--min_steps=0",
        "--chunk_size=200", "--plot=false"]


def _env(devices: int) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _results(workdir):
  with open(os.path.join(workdir, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


def _assert_same(a, b, atol=1e-5):
  """Same selections; metrics to `atol`: a process started with more forced CPU devices
  gets other XLA:CPU threading and so other float rounding, even on one device (the
  helper below checks that, within one process, the layouts add no rounding at all)."""
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x["selected"] == y["selected"] and x["num_labeled"] == y["num_labeled"]
    for key in ("test_accuracy", "train_loss", "test_loss", "train_accuracy"):
      np.testing.assert_allclose(x[key], y[key], atol=atol, err_msg=key)


def _run_py(workdir, devices, *extra, **popen):
  """run.py on TINY with `devices` forced CPU devices (a Popen when popen is given)."""
  args = [sys.executable, RUN_PY, *TINY, "--metric=entropy", "--seed=0", *extra,
          f"--workdir={workdir}"]
  if popen:
    return subprocess.Popen(args, env={**_env(devices), **popen.pop("env", {})}, cwd=ROOT,
                            **popen)
  out = subprocess.run(args, capture_output=True, text=True, env=_env(devices), cwd=ROOT,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  """TINY on one device: (results, stderr)."""
  workdir = tmp_path_factory.mktemp("one_device")
  out = _run_py(workdir, 1)
  return _results(workdir), out.stderr


def test_run_py_on_8_devices_selects_what_one_device_selects(tmp_path, one_device):
  """One run: run.py's default spreads its pool scoring and training over all 8 devices,
  says so, and selects what one device selects."""
  out = _run_py(tmp_path, 8)
  assert "1 run(s) on 1 device(s)" in one_device[1]
  assert "1 run(s) on 8 device(s) (cpu, 1 process(es)): runs split 1 ways, pool chunks " \
         "8 ways, training replicated" in out.stderr
  _assert_same(one_device[0], _results(tmp_path))


def _two_processes(workdir, port, cache):
  """run.py as processes 0 and 1 of one job on 127.0.0.1, 4 forced CPU devices each."""
  return [_run_py(workdir, 4, f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={i}", "--heartbeat_timeout=5",
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                  env={"JAX_COMPILATION_CACHE_DIR": str(cache)})
          for i in range(2)]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_and_resume_after_kill_9(tmp_path, one_device):
  """The same flags on 2 processes x 4 devices (JAX's distributed runtime, gloo
  collectives): kill -9 of process 1 after round 1 stops process 0 with JAX's error
  naming the dead task; both started again resume and end as one device does."""
  workdir, cache = tmp_path / "job", tmp_path / "compiled"
  procs = _two_processes(workdir, _free_port(), cache)
  finished_step = workdir / "checkpoints" / "1"  # Orbax renames a step when complete
  deadline = time.time() + 400
  while not finished_step.exists() and time.time() < deadline and procs[1].poll() is None:
    time.sleep(0.01)
  procs[1].kill()
  try:
    _, err = procs[0].communicate(timeout=120)
  finally:
    for p in procs:
      p.kill()
      p.wait()
  done = len(_results(workdir))
  assert procs[0].returncode != 0 and 1 <= done < 3, (done, err[-3000:])
  assert "process 0 of 2, 4 of 8 devices here" in err
  # JAX's heartbeat names the dead task, or a failed collective gets run.py's one line.
  assert ("stopped sending heartbeats" in err and "another task died" in err) or (
      "error: process 0 of 2 stopped" in err and "start every process again" in err), \
      err[-3000:]
  procs = _two_processes(workdir, _free_port(), cache)
  errs = [p.communicate(timeout=400)[1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], errs[0][-3000:] + errs[1][-3000:]
  assert f"resuming {workdir / 'checkpoints'} from round {done}" in errs[0]
  assert "1 run(s) on 8 device(s) (cpu, 2 process(es))" in errs[1]
  _assert_same(one_device[0], _results(workdir))


def test_runs_spread_over_devices_and_resumed_on_another_count(tmp_path):
  """4 runs: on 3 devices (runs axis padded to 6), interrupted after round 1, resumed
  on all 8 (4 groups of 2 devices): one device's results. With the training
  batches split too, the gradient all-reduce is there and metrics agree to rounding."""
  out = subprocess.run([sys.executable, os.path.join(HERE, "helpers", "devices_check.py"),
                        str(tmp_path)], capture_output=True, text=True, env=_env(8),
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8 and result["layout"] == [4, 2]
  # Training and scoring are exactly one device's; the test loss's sum may differ in
  # its last bit (1.2e-7), the compiled evaluation reducing in another order.
  assert result["resumed_on_8"]["same_selected"], result
  assert result["resumed_on_8"]["max_metric_diff"] <= 2.5e-7, result
  assert result["split_all_reduce"] and result["split_round_0"]["same_selected"], result
  assert result["split_round_0"]["max_metric_diff"] < 1e-4, result
