"""A user's own Flax NNX model (conv, batch norm, dropout, defined here) through every
strategy, the round loop (resumed exactly) and run.py --model=FILE:Name; a user's optax
optimiser and train step; the one-line errors of a model that cannot do what is asked."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from al_jax import acquisition, experiment, model_api, model_registry, scoring, strategies
from al_jax import results as results_lib
from al_jax import training
from al_jax.config import Config, ConfigError
from al_jax.user_training import UserTraining

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 1)


class Net(nnx.Module):
  """conv-BN-ReLU-pool, dropout, Linear-ReLU, Linear: images [B, 8, 8, 1] -> [B, C]."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)
    self.hidden = nnx.Linear(4 * 4 * 4, 8, rngs=rngs)
    self.out = nnx.Linear(8, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.avg_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), (2, 2))
    x = nnx.relu(self.hidden(self.dropout(x.reshape(x.shape[0], -1))))
    return self.out(x)


class PerImageDropout(Net):
  """Its own dropout, a new mask for every image: never consistent samples."""

  def __call__(self, x):
    x = nnx.avg_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    if not self.dropout.deterministic:
      x = x * jax.random.bernoulli(self.dropout.rngs(), 0.5, x.shape) * 2
    return self.out(nnx.relu(self.hidden(x)))


class SplitNet(Net):
  """Net with its deterministic trunk declared: run once before the K passes."""

  def trunk(self, x):
    return nnx.avg_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), (2, 2))

  def head(self, x):
    return self.out(nnx.relu(self.hidden(self.dropout(x.reshape(x.shape[0], -1)))))


class UnusedDropout(Net):
  """Has a dropout layer but never calls it: its passes are all equal."""

  def __call__(self, x):
    x = nnx.avg_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), (2, 2))
    return self.out(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


class NoDropout(nnx.Module):
  """conv-BN-ReLU, Linear, for 28x28 images; no dropout."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), strides=(4, 4), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.out = nnx.Linear(4 * 7 * 7, num_classes, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.bn(self.conv(x))).reshape(x.shape[0], -1))


class Logistic(nn.Module):
  """A plain Linen module, images -> logits, nothing else."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def _model(cls=Net, num_classes=3):
  return model_api.NnxModel(lambda rngs: cls(num_classes, rngs=rngs), (0.5,), (0.5,))


def _state(model=None, tx=None):
  return training.create_train_state(model or _model(), jax.random.key(0), SHAPE,
                                     tx or optax.sgd(0.1))


def _pool(n=48):
  return jnp.asarray(np.random.default_rng(0).integers(0, 256, (n, *SHAPE), np.uint8))


def test_every_registered_strategy_runs_on_an_nnx_model():
  state, pool = _state(), _pool()
  labeled = jnp.arange(48) < 6
  available = ~labeled & (jnp.arange(48) < 44)  # the last 4: padding, never chosen
  for name in strategies.names():
    strategy = acquisition.make(name, k=5, chunk_size=16, mc_samples=3, batch_configs=20,
                                typiclust_neighbors=3)
    picked = np.asarray(jax.jit(strategy)(state, pool, available, jax.random.key(1),
                                          labeled).indices)
    assert len(set(picked.tolist())) == 5, name
    assert np.all(np.asarray(available)[picked]), name


def test_monte_carlo_passes_share_one_mask_per_pass():
  state = _state()
  same = jnp.repeat(_pool(1), 6, 0)
  log_probs = np.asarray(scoring.mc_log_probs(state, same, jax.random.key(2), 4))  # [4, 6, 3]
  np.testing.assert_array_equal(log_probs, np.broadcast_to(log_probs[:, :1], log_probs.shape))
  assert not np.allclose(log_probs[0], log_probs[1])  # dropout is on: passes differ
  # and a chunk of other images does not change an image's samples
  mixed = jnp.concatenate([same[:1], _pool(5)])
  np.testing.assert_allclose(scoring.mc_log_probs(state, mixed, jax.random.key(2), 4)[:, 0],
                             log_probs[:, 0], rtol=1e-5, atol=1e-6)


def test_a_declared_trunk_gives_the_same_samples():
  pool = _pool(6)
  whole = scoring.mc_log_probs(_state(), pool, jax.random.key(2), 3)
  split = scoring.mc_log_probs(_state(_model(SplitNet)), pool, jax.random.key(2), 3)
  np.testing.assert_allclose(split, whole, rtol=1e-6, atol=1e-6)


def test_a_plain_linen_module_trains_and_chooses():
  state = _state(Logistic(3))  # uint8 images as they are
  pool, labels = _pool(), jnp.arange(48) % 3
  state, _ = jax.jit(lambda s: training.fit(s, pool, labels, jnp.arange(48) < 12,
                                            jax.random.key(3), epochs=2, batch_size=4))(state)
  assert int(state.step) == 6
  for name in ("entropy", "coreset"):
    picked = jax.jit(acquisition.make(name, k=4, chunk_size=16))(
        state, pool, jnp.arange(48) >= 12, jax.random.key(1), jnp.arange(48) < 12).indices
    assert np.all(np.asarray(picked) >= 12) and len(set(np.asarray(picked).tolist())) == 4


def test_embeddings_are_the_input_of_the_last_linear():
  state, pool = _state(), _pool(5)
  logits, embedding = model_api.penultimate(state, pool)
  assert embedding.shape == (5, 8)
  kernel, bias = state.params["out/kernel"], state.params["out/bias"]
  np.testing.assert_allclose(embedding @ kernel + bias, logits, rtol=1e-5, atol=1e-5)


def test_a_user_step_equal_to_al_jax_s_trains_the_same():
  def my_step(state, batch, key):  # al_jax's own step, written by a user
    def loss(params):
      logits, updates = state.logits(batch["image"], train=True, key=key, params=params)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
      return ce, (logits, updates["batch_stats"])
    (ce, (logits, stats)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         batch_stats=stats, opt_state=opt_state), {
                             "loss": ce, "accuracy": jnp.mean(jnp.argmax(logits, -1) ==
                                                              batch["label"])}

  pool, labels = _pool(), jnp.arange(48) % 3
  mask = jnp.arange(48) < 20
  fit = jax.jit(lambda s: training.fit(s, pool, labels, mask, jax.random.key(3), epochs=2,
                                       batch_size=8))
  ours, _ = fit(_state(tx=optax.adam(1e-2)))
  theirs, _ = fit(_state(tx=optax.adam(1e-2)).replace(step_fn=my_step))
  jax.tree.map(np.testing.assert_array_equal, ours.params, theirs.params)
  assert int(theirs.step) == 6
  plain, _ = fit(_state(tx=optax.sgd(0.1)))
  scaled, _ = fit(_state(tx=optax.sgd(0.1)).replace(
      loss_fn=lambda logits, y: 2 * optax.softmax_cross_entropy_with_integer_labels(
          logits, y).mean()))
  np.testing.assert_allclose(scaled.step, plain.step)
  assert not np.allclose(scaled.params["out/kernel"], plain.params["out/kernel"], atol=1e-4)


def test_one_line_errors_for_what_a_model_lacks():
  with pytest.raises(model_api.ModelError, match="new dropout mask per image"):
    model_api.check(_model(PerImageDropout), SHAPE, 3, ("samples",))
  with pytest.raises(model_api.ModelError, match="no dropout layer"):
    model_api.check(_model(NoDropout), (28, 28, 1), 3, ("samples",))
  with pytest.raises(model_api.ModelError, match="do not change with the key"):
    model_api.check(_model(UnusedDropout), SHAPE, 3, ("samples",))
  with pytest.raises(model_api.ModelError, match=r"must give logits \[4, 5\]"):
    model_api.check(_model(), SHAPE, 5)
  plain = _state(_model(NoDropout))  # also when a strategy is called directly
  with pytest.raises(model_api.ModelError, match="need samples cannot run on this model"):
    jax.eval_shape(acquisition.make("bald", k=2), plain, _pool(4), jnp.ones(4, bool),
                   jax.random.key(0))
  linen = model_api.LinenModel(Logistic(3))
  model_api.check(linen, SHAPE, 3, ("embeddings",))  # a plain module: probabilities, embeddings
  with pytest.raises(model_api.ModelError, match="takes no `train` argument"):
    model_api.check(linen, SHAPE, 3, ("samples",))


def test_model_specs_are_checked_and_kept_by_absolute_path(tmp_path, monkeypatch):
  (tmp_path / "mine.py").write_text("from flax import nnx\nclass Net(nnx.Module):\n"
                                    "  def __init__(self, num_classes, *, rngs): pass\n"
                                    "raise_later = 1\n")
  (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
  monkeypatch.chdir(tmp_path)
  config = Config(data_dir="sample", model="mine.py:Net")
  assert config.model == f"{tmp_path}/mine.py:Net"
  assert json.loads(json.dumps(config.to_dict()))["model"] == config.model
  for spec, message in [("gone.py:Net", "model file .*/gone.py not found"),
                        ("broken.py:Net", "importing model .*broken.py failed: "
                         "ModuleNotFoundError"),
                        ("mine.py:Other", "defines no 'Other'"),
                        ("mine.py:raise_later", "not a Flax NNX or Linen module class"),
                        ("not_a_model", "unknown model 'not_a_model'")]:
    with pytest.raises(ConfigError, match=message):
      Config(data_dir="sample", model=spec)


class Small28(Net):
  def __init__(self, num_classes, *, rngs):
    super().__init__(num_classes, rngs=rngs)
    self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), strides=(4, 4), rngs=rngs)
    self.hidden = nnx.Linear(4 * 3 * 3, 8, rngs=rngs)


# registered as a user's script would, before the job's Config is built
model_registry.register_model("test_own_model_net", Small28, replace=True)
SMALL = Config(dataset="mnist", data_dir="sample", model="test_own_model_net",
               metrics=("entropy", "bald", "coreset"),  # all six: the run.py test (slow)
               initial_size=10, query_size=5, rounds=3, epochs_per_round=1, min_steps=4,
               batch_size=8, pool_size=60, test_size=40, chunk_size=30, eval_batch_size=40,
               vmap_runs="false", strategy_options={"mc_samples": 3, "batch_configs": 20,
                                                    "typiclust_neighbors": 3})


class Stop(Exception):
  pass


@pytest.mark.slow  # the round loop twice over 3 rounds; the fast tier has the pieces
def test_round_loop_with_own_model_and_optimiser_resumes_exactly(tmp_path):
  user = UserTraining(optimizer=optax.adam(1e-3))
  data = experiment.prepare_data(SMALL)
  whole = experiment.run(SMALL, str(tmp_path / "a"), data=data, user_training=user)

  def stop(round_index, records):
    if round_index == 0:
      raise Stop
  with pytest.raises(Stop):
    experiment.run(SMALL, str(tmp_path / "b"), data=data, user_training=user, on_round=stop)
  rounds = []
  resumed = experiment.run(SMALL, str(tmp_path / "b"), data=data, user_training=user,
                           on_round=lambda r, _: rounds.append(r))
  assert rounds == [1, 2]  # restored after round 0, not started again
  strip = lambda runs: {k: [{f: v for f, v in r.items() if f != "round_s"} for r in records]
                        for k, records in runs.items()}
  assert strip(resumed) == strip(whole)
  for records in whole.values():
    assert [r["num_labeled"] for r in records] == [10, 15, 20]
    assert len(set(sum((r["selected"] for r in records[:2]), []))) == 10


def test_a_job_refuses_a_model_without_dropout_before_writing(tmp_path):
  model_registry.register_model("test_own_model_plain", NoDropout, replace=True)
  try:
    config = dataclasses.replace(SMALL, model="test_own_model_plain", metrics=("bald",))
    with pytest.raises(ConfigError, match="cannot run on NoDropout: NoDropout has no dropout"):
      experiment.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
  finally:
    model_registry.unregister_model("test_own_model_plain")


MODEL_FILE = '''
from flax import nnx


class Net(nnx.Module):
  def __init__(self, num_classes, *, rngs):
    self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), strides=(4, 4), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)
    self.out = nnx.Linear(4 * 7 * 7, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    return self.out(self.dropout(x.reshape(x.shape[0], -1)))
'''


def _job_results(workdir):
  """{results file relative to workdir: records without timings} of a whole job."""
  return {os.path.relpath(path, workdir): [{k: v for k, v in r.items() if k != "round_s"}
                                           for r in results_lib.read_results(str(path))]
          for path in sorted(workdir.rglob("results.jsonl"))}


@pytest.mark.slow
def test_run_py_takes_a_model_file_kill_9_and_resume(tmp_path):
  (tmp_path / "net.py").write_text(textwrap.dedent(MODEL_FILE))
  args = [sys.executable, os.path.join(ROOT, "experiments", "run.py"), "--data_dir=sample",
          "--model=net.py:Net", "--metric=entropy,bald,batchbald,coreset,badge,typiclust",
          "--pool_size=60", "--test_size=40", "--initial_size=10", "--query_size=5",
          "--rounds=4", "--epochs_per_round=1", "--min_steps=4", "--batch_size=8",
          "--chunk_size=30", "--eval_batch_size=40", "--mc_samples=3", "--batch_configs=20",
          "--typiclust_neighbors=3", "--vmap_runs=false", "--plot=false"]
  env = {**os.environ, "PYTHONPATH": ROOT}
  cli = lambda workdir: subprocess.run(args + [f"--workdir={workdir}"], cwd=tmp_path, env=env,
                                       capture_output=True, text=True, timeout=400)
  whole = cli(tmp_path / "whole")
  assert whole.returncode == 0, whole.stderr[-2000:]
  saved = json.loads((tmp_path / "whole" / "config.json").read_text())
  assert saved["model"] == f"{tmp_path}/net.py:Net"
  workdir = tmp_path / "killed"
  proc = subprocess.Popen(args + [f"--workdir={workdir}"], cwd=tmp_path, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (workdir / "checkpoints" / "2").exists() and time.time() < deadline \
      and proc.poll() is None:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done_before = {len(r) for r in _job_results(workdir).values()}
  assert len(done_before) == 1 and 2 <= done_before.pop() < 4, "the run was not interrupted"
  again = cli(workdir)
  assert again.returncode == 0 and "resuming" in again.stderr, again.stderr[-2000:]
  assert _job_results(workdir) == _job_results(tmp_path / "whole")
  bad = subprocess.run(args[:3] + ["--model=net.py:Missing", f"--workdir={tmp_path}/w2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'net.py'} defines no 'Missing'; give "
      f"--model={tmp_path / 'net.py'}:ClassName")
  assert not (tmp_path / "w2").exists()
