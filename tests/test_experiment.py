"""The round loop end to end on the shipped sample: smoke, determinism, one trace over
many rounds, run layouts, resume after an interruption and after kill -9, workdir
checks, damaged checkpoints, non-finite loss, bad input."""

import dataclasses
import functools
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compiles
from al_jax import acquisition, benchmarking, experiment, plotting, protocols, strategies
from al_jax import results as results_lib
from al_jax import workdir as workdir_lib
from al_jax.config import Config, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(ROOT, "experiments", "run.py")

# The small_budget recipe's model (pooled_cnn), but the loop's mechanics need no long
# training: 2 epochs of 1 or 2 steps (test_early_stopping_in_the_loop trains 100).
SMALL = Config(dataset="mnist", data_dir="sample", metrics=("entropy",), initial_size=20,
               query_size=20, rounds=3, epochs_per_round=2, batch_size=32, min_steps=0,
               chunk_size=200, eval_batch_size=100)
GRID = dataclasses.replace(SMALL, metrics=("least_confidence", "random"), seeds=(0, 1),
                           vmap_runs="false")
PAIR = dataclasses.replace(GRID, seeds=(0,))  # two metrics, one seed: runs of GRID


def _strip_timing(records):
  return [{k: v for k, v in r.items() if k != "round_s"} for r in records]


def _one(runs):
  (records,) = runs.values()
  return records


class Interrupted(Exception):
  pass


ROUND_STEP = "jit(mapped_round_step)"  # the compiled round step, in JAX's compile events


@pytest.fixture
def interrupt_after():
  """interrupt_after(n): an `on_round` callback that stops the run it is given to after
  n rounds, as a kill between rounds would."""
  def arm(n):
    calls = []

    def stop(round_index, records):
      calls.append(1)
      if len(calls) == n:
        raise Interrupted
    return stop
  return arm


@pytest.fixture
def lowest_index():
  """A user's strategy "lowest_index" (option stride), registered for one test."""
  strategies.register(strategies.Strategy(
      "lowest_index", lambda k, chunk_size, o: _LowestIndex(k, o.stride), _StrideOptions,
      color="black", benchmark=True))
  yield
  strategies.unregister("lowest_index")


@pytest.fixture(scope="module")
def sample():
  return experiment.prepare_data(SMALL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample):
  """The small entropy run, uninterrupted: (records, workdir)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  return _one(experiment.run(SMALL, workdir, data=sample)), workdir


@pytest.fixture(scope="module")
def reference_grid(tmp_path_factory, sample):
  """2 metrics x 2 seeds, runs in sequence (lax.map): (runs, workdir)."""
  workdir = str(tmp_path_factory.mktemp("grid"))
  return experiment.run(GRID, workdir, data=sample, plot=True), workdir


def test_pool_smoke_and_results_format(reference):
  results, workdir = reference
  assert [r["num_labeled"] for r in results] == [20, 40, 60]
  assert results_lib.read_results(workdir) == json.loads(json.dumps(results))
  for r in results:
    for key in ("round", "num_labeled", "test_accuracy", "test_loss", "per_class_accuracy",
                "metric", "seed", "selected", "epoch", "train_accuracy", "train_loss",
                "round_s", "pool_changed"):
      assert key in r, key
    assert 0.0 <= r["test_accuracy"] <= 1.0 and len(r["per_class_accuracy"]) == 10
  assert [r["epoch"] for r in results] == [2, 4, 6]
  # The labeled set of every round, rebuilt from the results file alone.
  labeled = set(results[0]["initial_labeled"])
  for r in results:
    assert len(labeled) == r["num_labeled"]
    assert not labeled & set(r["selected"])
    labeled |= set(r["selected"])
  assert "initial_labeled" not in results[1]
  selected = results[0]["selected"] + results[1]["selected"]
  assert len(selected) == len(set(selected)) == 40 and results[2]["selected"] == []
  assert all(0 <= i < 600 for i in selected)
  assert results[-1]["test_accuracy"] > 0.2  # 60 labels, 12 steps: above chance (0.1)
  saved = json.loads(open(os.path.join(workdir, "config.json")).read())
  assert saved["metrics"] == ["entropy"] and saved["seeds"] == [0]


def test_same_seed_same_run_other_seed_other_run(tmp_path, reference, sample):
  again = _one(experiment.run(SMALL, str(tmp_path / "a"), data=sample))
  other = _one(experiment.run(dataclasses.replace(SMALL, seeds=(1,)), str(tmp_path / "c"),
                              data=sample))
  assert _strip_timing(again) == _strip_timing(reference[0])
  assert again[0]["selected"] != other[0]["selected"]


def test_round_step_traced_once_over_many_rounds(tmp_path, sample, monkeypatch, caplog):
  """The production round step: one trace (so one compile) for 5 rounds of a growing set.
  (The configuration is this test's own, so no step compiled before is reused.) Also:
  one progress line per round for the whole job, and checkpoints kept as asked."""
  chex.clear_trace_counter()
  monkeypatch.setattr(protocols.PoolProtocol, "round_step",
                      chex.assert_max_traces(protocols.PoolProtocol.round_step, n=1))
  config = dataclasses.replace(SMALL, rounds=5, metrics=("smallest_margin", "random"))
  with caplog.at_level(logging.INFO), compiles.counted() as compiled:
    runs = experiment.run(config, str(tmp_path), data=sample, keep_checkpoints=0)
  assert [r["num_labeled"] for r in runs[("random", 0)]] == [20, 40, 60, 80, 100]
  progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round ")]
  assert [p.split(":")[0] for p in progress] == [f"round {i}/5" for i in range(1, 6)]
  assert "over 2 runs" in progress[0] and progress[-1].endswith("about 0s left")
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2", "3", "4", "5"]
  assert compiled[ROUND_STEP] == 1


@pytest.mark.slow
def test_bayesian_strategies_in_the_loop(tmp_path, sample, interrupt_after):
  """MC-dropout BALD and variation ratios next to entropy in one job, resumable like all."""
  config = dataclasses.replace(SMALL, metrics=("bald", "variation_ratios", "entropy"),
                               strategy_options={"mc_samples": 4})
  runs = experiment.run(config, str(tmp_path), data=sample)
  for records in runs.values():
    labeled = set(records[0]["initial_labeled"])
    for r in records[:-1]:
      assert len(r["selected"]) == 20 and not labeled & set(r["selected"])
      labeled |= set(r["selected"])
  assert runs[("bald", 0)][0]["selected"] != runs[("entropy", 0)][0]["selected"]
  # The same seed gives the same selection.
  again = experiment.run(dataclasses.replace(config, metrics=("bald",)), str(tmp_path / "b"),
                         data=sample)
  assert again[("bald", 0)][0]["selected"] == runs[("bald", 0)][0]["selected"]
  # Interrupted after round 1 and resumed: the same as uninterrupted.
  with pytest.raises(Interrupted):
    experiment.run(config, str(tmp_path / "c"), data=sample, on_round=interrupt_after(1))
  resumed = experiment.run(config, str(tmp_path / "c"), data=sample)
  for run, records in runs.items():
    assert _strip_timing(resumed[run]) == _strip_timing(records)


@pytest.mark.slow
@pytest.mark.parametrize("metrics,ensemble_size", [
    (("batchbald", "stochastic_bald", "coreset", "badge"), 1),
    (("bald", "entropy", "coreset"), 3)])
def test_joint_strategies_and_ensembles_in_the_loop(tmp_path, sample, metrics, ensemble_size):
  """Batch-aware strategies and a deep ensemble in one compiled round step: disjoint
  queries of the right size, different choices, the same seed the same selection."""
  config = dataclasses.replace(SMALL, metrics=metrics, ensemble_size=ensemble_size,
                               strategy_options={"mc_samples": 4, "batch_configs": 100})
  with compiles.counted() as compiled:
    runs = experiment.run(config, str(tmp_path), data=sample, keep_checkpoints=0)
  for records in runs.values():
    labeled = set(records[0]["initial_labeled"])
    for r in records[:-1]:
      assert len(set(r["selected"])) == 20 and not labeled & set(r["selected"])
      labeled |= set(r["selected"])
  firsts = {tuple(records[0]["selected"]) for records in runs.values()}
  assert len(firsts) == len(metrics)
  assert compiled[ROUND_STEP] == 1
  again = experiment.run(dataclasses.replace(config, metrics=metrics[-1:]),
                         str(tmp_path / "again"), data=sample)
  assert _strip_timing(again[(metrics[-1], 0)]) == _strip_timing(runs[(metrics[-1], 0)])


@pytest.mark.slow
def test_reselect_smoke(tmp_path, sample):
  config = dataclasses.replace(SMALL, protocol="reselect", metrics=("least_confidence",),
                               epochs=2, select_batches=3)
  results = _one(experiment.run(config, str(tmp_path), data=sample))
  assert [r["epoch"] for r in results] == [1, 2]
  assert all(r["num_labeled"] == 96 and len(set(r["selected"])) == 96 for r in results)


@pytest.mark.slow
def test_runs_together_equal_runs_alone(reference_grid, reference, sample, tmp_path):
  runs, workdir = reference_grid
  assert set(runs) == {(m, s) for m in GRID.metrics for s in GRID.seeds}
  for (metric, seed), records in runs.items():
    assert results_lib.read_results(os.path.join(workdir, metric, f"seed_{seed}")) == records
  alone = _one(experiment.run(dataclasses.replace(SMALL, metrics=("random",), seeds=(1,)),
                              str(tmp_path / "alone"), data=sample))
  assert _strip_timing(alone) == _strip_timing(runs[("random", 1)])


@pytest.mark.slow
def test_vmapped_runs_equal_sequential_runs(reference_grid, sample, tmp_path):
  """vmap and lax.map agree: same selections, metrics up to float rounding."""
  runs, _ = reference_grid
  vmapped = experiment.run(dataclasses.replace(PAIR, vmap_runs="true"), str(tmp_path),
                           data=sample)
  assert set(vmapped) == {("least_confidence", 0), ("random", 0)}
  for run, records in vmapped.items():
    for a, b in zip(runs[run], records, strict=True):
      assert a["selected"] == b["selected"] and a["num_labeled"] == b["num_labeled"]
      np.testing.assert_allclose(a["test_accuracy"], b["test_accuracy"], atol=1e-6)
      np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)


def test_summary_and_figures(reference_grid):
  runs, workdir = reference_grid
  summary = json.loads(open(os.path.join(workdir, "summary.json")).read())
  assert set(summary) == {"least_confidence", "random"}
  assert summary["random"]["num_labeled"] == [20, 40, 60]
  accs = [runs[("random", s)][-1]["test_accuracy"] for s in (0, 1)]
  np.testing.assert_allclose(summary["random"]["test_accuracy_mean"][-1], np.mean(accs))
  for name in ("test_accuracy.png", "train_loss.png", "per_class.png"):
    with open(os.path.join(workdir, name), "rb") as f:
      assert f.read(4) == b"\x89PNG", name


def test_resume_equals_uninterrupted(tmp_path, reference, sample, interrupt_after):
  with pytest.raises(Interrupted):
    experiment.run(SMALL, str(tmp_path), data=sample, on_round=interrupt_after(1))
  assert len(results_lib.read_results(str(tmp_path))) == 1
  with compiles.counted() as compiled:  # the interrupted run's step is reused
    resumed = _one(experiment.run(SMALL, str(tmp_path), data=sample))
  assert compiled[ROUND_STEP] == 0, "the restored carry needed another compiled step"
  assert _strip_timing(resumed) == _strip_timing(reference[0])
  assert _strip_timing(results_lib.read_results(str(tmp_path))) == _strip_timing(reference[0])


@pytest.mark.slow
def test_resume_across_a_change_of_run_layout(tmp_path, reference_grid, sample,
                                              interrupt_after):
  with pytest.raises(Interrupted):
    experiment.run(PAIR, str(tmp_path), data=sample, on_round=interrupt_after(1))
  resumed = experiment.run(dataclasses.replace(PAIR, vmap_runs="true"), str(tmp_path),
                           data=sample)
  assert len(resumed) == 2
  for run, records in resumed.items():
    uninterrupted = reference_grid[0][run]
    assert [r["selected"] for r in records] == [r["selected"] for r in uninterrupted]
    np.testing.assert_allclose([r["test_accuracy"] for r in records],
                               [r["test_accuracy"] for r in uninterrupted], atol=1e-6)


@pytest.mark.slow
def test_keep_training_resume_equals_uninterrupted(tmp_path, sample, interrupt_after):
  config = dataclasses.replace(SMALL, keep_training=True, metrics=("smallest_margin",))
  whole = _one(experiment.run(config, str(tmp_path / "whole"), data=sample))
  with pytest.raises(Interrupted):
    experiment.run(config, str(tmp_path / "part"), data=sample,
                   on_round=interrupt_after(2))
  resumed = _one(experiment.run(config, str(tmp_path / "part"), data=sample))
  assert _strip_timing(resumed) == _strip_timing(whole)


@pytest.mark.slow
def test_workdir_of_another_config_is_refused(tmp_path, sample, interrupt_after):
  with pytest.raises(Interrupted):
    experiment.run(SMALL, str(tmp_path), data=sample, on_round=interrupt_after(1))
  other = dataclasses.replace(SMALL, query_size=10)
  with pytest.raises(ConfigError, match="another configuration.*query_size.*--overwrite"):
    experiment.run(other, str(tmp_path), data=sample)
  assert len(results_lib.read_results(str(tmp_path))) == 1  # nothing lost
  (tmp_path / "notes.txt").write_text("mine")
  results = _one(experiment.run(other, str(tmp_path), overwrite=True, data=sample))
  assert [r["num_labeled"] for r in results] == [20, 30, 40]
  assert (tmp_path / "notes.txt").read_text() == "mine"  # --overwrite removes only ours


def test_recipes_fill_the_training_defaults():
  small = Config(dataset="mnist")  # the pool protocol's default: small_budget
  assert (small.recipe, small.min_steps, small.batch_size) == ("small_budget", 250, 32)
  assert small.model_name((28, 28, 1)) == "pooled_cnn"
  paper = Config(dataset="mnist", recipe="paper")
  assert (paper.min_steps, paper.batch_size, paper.model_name((28, 28, 1))) == (
      0, 128, "mnist_cnn")
  reselect = Config(dataset="mnist", protocol="reselect")
  assert (reselect.recipe, reselect.min_steps, reselect.batch_size) == ("paper", 0, 128)
  fruits = Config(dataset="fruits360")  # Net3 already pools: only the steps change
  assert (fruits.model_name((32, 32, 3)), fruits.min_steps, fruits.batch_size) == (
      "fruits_net3", 250, 32)
  folder = Config(dataset="folder")
  assert [folder.model_name(s) for s in [(32, 32, 1), (32, 32, 3)]] == [
      "pooled_cnn", "fruits_net3"]
  mine = Config(dataset="mnist", model="mnist_cnn", min_steps=10, batch_size=64)
  assert (mine.model_name((28, 28, 1)), mine.min_steps, mine.batch_size) == (
      "mnist_cnn", 10, 64)


def test_a_workdir_from_before_recipes_resumes_with_its_own(tmp_path, sample):
  """A config.json without the recipe and early-stopping fields was the paper's recipe
  (unless it chose its model): it resumes with --recipe=paper and is refused, with a
  hint, under the new default."""
  paper = dataclasses.replace(SMALL, recipe="paper", min_steps=0)
  old = {k: v for k, v in paper.to_dict().items()
         if k not in ("recipe", "validation_fraction", "patience", "min_steps")}
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir_lib.check_workdir(paper, str(tmp_path), overwrite=False)  # resumes
  (tmp_path / "config.json").write_text(json.dumps(old))
  with pytest.raises(ConfigError, match="another configuration.*--recipe=paper"):
    workdir_lib.check_workdir(dataclasses.replace(paper, recipe="small_budget"),
                             str(tmp_path), overwrite=False)
  chosen = dataclasses.replace(SMALL, model="pooled_cnn")  # the study's explicit flags
  old = {k: v for k, v in chosen.to_dict().items() if k != "recipe"}
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir_lib.check_workdir(chosen, str(tmp_path), overwrite=False)


def test_a_workdir_with_flat_strategy_options_resumes(tmp_path):
  """Before the strategies owned their options, config.json held mc_samples,
  batch_configs, stochastic_mode and stochastic_beta as fields: they map to the
  strategy_options the job's metrics read, and the job resumes."""
  config = dataclasses.replace(SMALL, metrics=("bald", "entropy"),
                               strategy_options={"mc_samples": 4})
  old = {k: v for k, v in config.to_dict().items() if k != "strategy_options"}
  old.update(mc_samples=4, batch_configs=1000, stochastic_mode="power", stochastic_beta=1.0)
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir_lib.check_workdir(config, str(tmp_path), overwrite=False)  # resumes
  (tmp_path / "config.json").write_text(json.dumps(old))
  with pytest.raises(ConfigError, match="another configuration.*strategy_options"):
    workdir_lib.check_workdir(dataclasses.replace(config, strategy_options={}),
                             str(tmp_path), overwrite=False)


@dataclasses.dataclass(frozen=True)
class _StrideOptions:
  stride: int = dataclasses.field(default=3, metadata={"help": "lowest_index: step."})

  def __post_init__(self):
    strategies.check_positive("--stride", self.stride)


@dataclasses.dataclass(frozen=True)
class _LowestIndex:
  """A user's strategy: the k available images of lowest pool index that are multiples
  of `stride` (its one option)."""
  k: int
  stride: int

  def __call__(self, state, images, available, key, labeled=None):
    n = available.shape[0]
    score = jnp.where(available & (jnp.arange(n) % self.stride == 0), -jnp.arange(n), -n)
    top, indices = jax.lax.top_k(score.astype(jnp.float32), self.k)
    return acquisition.Selection(jnp.where(top > -n, indices, -1),
                                 jnp.where(top > -n, top, -jnp.inf))


@pytest.mark.slow
def test_a_strategy_registered_by_a_user_runs_and_resumes(tmp_path, sample,
                                                          interrupt_after, lowest_index):
  """register() from outside the package: Config, the round loop, resume, the plot
  colour and the benchmark rows all find it."""
  config = dataclasses.replace(SMALL, metrics=("lowest_index", "entropy"),
                               strategy_options={"stride": 5})
  assert dict(config.strategy_options) == {"stride": 5}
  runs = experiment.run(config, str(tmp_path / "a"), data=sample, keep_checkpoints=0)
  labeled = set(runs[("lowest_index", 0)][0]["initial_labeled"])
  first = runs[("lowest_index", 0)][0]["selected"]
  assert first == [i for i in range(0, sample.num_pool, 5) if i not in labeled][:20]
  with pytest.raises(Interrupted):
    experiment.run(config, str(tmp_path / "b"), data=sample, on_round=interrupt_after(1))
  resumed = experiment.run(config, str(tmp_path / "b"), data=sample)
  for run, records in runs.items():
    assert _strip_timing(resumed[run]) == _strip_timing(records)
  assert "lowest_index" in acquisition.NAMES and plotting.line_style("lowest_index") == (
      "black", False)
  assert "lowest_index" in benchmarking.benchmark_rows(3, 40, 4)
  with pytest.raises(ConfigError, match="--stride must be a positive integer"):
    dataclasses.replace(config, strategy_options={"stride": 0})


@pytest.mark.slow
def test_early_stopping_in_the_loop(tmp_path, sample, monkeypatch):
  """Held-out labels count in the budget but are not trained on; one compiled round
  step serves every round; the records say how many steps were taken."""
  config = dataclasses.replace(SMALL, validation_fraction=0.5, patience=1, min_steps=100,
                               rounds=3)
  traces = []
  fit = protocols.training.fit
  monkeypatch.setattr(protocols.training, "fit",
                      lambda *a, **k: (traces.append(k["early_stopping"]), fit(*a, **k))[1])
  records = _one(experiment.run(config, str(tmp_path), data=sample))
  assert len(traces) == 1 and traces[0].capacity == config.labels_needed
  assert [r["num_labeled"] for r in records] == [20, 40, 60]
  assert all(np.isfinite(r["validation_loss"]) for r in records)
  # patience 1 stops at the first check without a new low; steps are whole epochs.
  assert all(50 <= r["train_steps"] <= 100 for r in records)
  assert any(r["train_steps"] < 100 for r in records)


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


def test_damaged_checkpoint_falls_back_to_previous(tmp_path, reference, sample, caplog,
                                                   interrupt_after):
  with pytest.raises(Interrupted):
    experiment.run(SMALL, str(tmp_path), data=sample,
                   on_round=interrupt_after(2))  # checkpoints 1 and 2
  assert _damage_latest(str(tmp_path)) == 2
  with caplog.at_level(logging.WARNING):
    resumed = _one(experiment.run(SMALL, str(tmp_path), data=sample))
  assert any("unreadable" in r.getMessage() for r in caplog.records)
  assert _strip_timing(resumed) == _strip_timing(reference[0])


@pytest.mark.slow
def test_non_finite_loss_stops_with_one_line_and_keeps_earlier_rounds(tmp_path, sample):
  config = dataclasses.replace(SMALL, learning_rate=1000.0)  # diverges in round 1
  with pytest.raises(FloatingPointError, match=r"^non-finite training loss in round 1 "
                     r"\(entropy seed 0\); lower --learning_rate$"):
    experiment.run(config, str(tmp_path), data=sample)
  assert [r["round"] for r in results_lib.read_results(str(tmp_path))] == [0]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]



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


@pytest.mark.slow
def test_prediction_change_counts_valid_images_whose_class_changed():
  """Against argmax worked out image by image: a model against itself changes nothing;
  two inits disagree on some images; padding never counts."""
  from al_jax import models, specs, training
  model = models.create_model(specs.get("mnist"), 10, model="pooled_cnn")
  tx = training.make_optimizer(0.01, 0.9, 0.0)
  a, b = (training.create_train_state(model, jax.random.key(i), (28, 28, 1), tx)
          for i in (0, 1))
  images = jax.random.randint(jax.random.key(2), (8, 28, 28, 1), 0, 256).astype(jnp.uint8)
  valid = jnp.arange(8) < 6
  assert float(protocols.prediction_change(a, a, images, valid, chunk_size=4)) == 0.0
  differ = np.argmax(a.logits(images), -1) != np.argmax(b.logits(images), -1)
  got = float(jax.jit(functools.partial(protocols.prediction_change, chunk_size=4))(
      a, b, images, valid))
  assert got == pytest.approx(differ[:6].mean())


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_batch_selection_drops_the_batch_of_the_worst_image(aggregate):
  """12 valid images in 4 batches of 3, keep 3 batches: the batch holding the one very
  low score is the one left out; padding is never chosen."""
  valid = jnp.arange(14) < 12
  scores = jnp.ones(14).at[7].set(-1000.0)
  chosen = np.asarray(protocols.batch_selection(
      scores, valid, jax.random.key(0), batch_size=3, num_batches=4, select_batches=3,
      select="batches", aggregate=aggregate))
  assert chosen.shape == (3, 3)
  assert len(set(chosen.ravel())) == 9 and 7 not in chosen and chosen.max() < 12
  # The three left out are one whole batch of the epoch's shuffle: with other keys the
  # left-out batch changes but always holds image 7.
  other = np.asarray(protocols.batch_selection(
      scores, valid, jax.random.key(1), batch_size=3, num_batches=4, select_batches=3,
      select="batches", aggregate=aggregate))
  assert 7 not in other and set(other.ravel()) != set(chosen.ravel())


def test_batch_selection_samples_takes_the_top_images():
  valid = jnp.arange(14) < 12
  scores = jnp.arange(14.0)  # padding (12, 13) scores highest but must not be chosen
  chosen = np.asarray(protocols.batch_selection(
      scores, valid, jax.random.key(0), batch_size=2, num_batches=6, select_batches=2,
      select="samples", aggregate="sum"))
  assert chosen.shape == (2, 2) and sorted(chosen.ravel()) == [8, 9, 10, 11]


def test_budget_sets_rounds():
  from al_jax.config import rounds_for_budget
  assert rounds_for_budget(500, 100, 100) == 5
  assert rounds_for_budget(100, 100, 100) == 1
  with pytest.raises(ConfigError, match="below --initial_size"):
    rounds_for_budget(99, 100, 100)


# ------------------------------------------------------------------------- command line


def _load_run_py():
  spec = importlib.util.spec_from_file_location("run_py", RUN_PY)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


run_py = _load_run_py()


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
    (["--seeds=0", "--seed=0"], "--seeds must be a positive integer"),
    (["--data_dir=/nonexistent"], "/nonexistent"),
    (["--metric=bald", "--mc_samples=0"], "--mc_samples must be a positive integer"),
    (["--metric=bald", "--protocol=reselect"], "--protocol=reselect scores single images"),
    (["--metric=batchbald", "--batch_configs=0"], "--batch_configs must be a positive integer"),
    (["--metric=bald", "--ensemble_size=0"], "--ensemble_size must be a positive integer"),
    (["--metric=stochastic_bald", "--stochastic_mode=hot"], "unknown stochastic_mode 'hot'"),
    (["--metric=stochastic_bald", "--stochastic_beta=0"], "--stochastic_beta must be positive"),
    (["--metric=least_confidence", "--ensemble_size=3", "--protocol=reselect"],
     "--ensemble_size > 1 needs --protocol=pool"),
    (["--metric=coreset", "--query_size=100", "--rounds=7"], "7 rounds need 700 labels"),
    (["--min_steps=-5"], "--min_steps must be a non-negative integer"),
    (["--recipe=fast"], "unknown recipe 'fast'; valid: paper, small_budget"),
    (["--validation_fraction=1.5"], "--validation_fraction must be in [0, 1)"),
    (["--validation_fraction=0.2", "--protocol=reselect"],
     "--validation_fraction needs --protocol=pool"),
    (["--patience=0"], "--patience must be a positive integer"),
])
def test_bad_input_gets_one_clear_line(tmp_path, capsys, flags, message):
  run_py.FLAGS.unparse_flags()
  run_py.FLAGS(["run.py", "--data_dir=sample", "--seed=0", f"--workdir={tmp_path / 'w'}",
                *flags])
  try:
    with pytest.raises(SystemExit) as exit_info:
      run_py.entry(["run.py"])
  finally:
    run_py.FLAGS.unparse_flags()
  assert exit_info.value.code == 2
  errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and message in errors[0]
  assert not (tmp_path / "w" / "results.jsonl").exists()


def _cli(*args):
  return subprocess.run([sys.executable, RUN_PY, *args], capture_output=True, text=True,
                        cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_bad_input_from_a_real_process(tmp_path):
  out = _cli("--data_dir=sample", "--metric=margin", f"--workdir={tmp_path}")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert [l for l in out.stderr.splitlines() if l.startswith("error: ")] == [
      f"error: unknown metric 'margin'; valid: {', '.join(acquisition.NAMES)}"]


@pytest.mark.parametrize("strategy_flags", [
    ["--metric=least_confidence"],
    ["--metric=batchbald,stochastic_bald,coreset,badge", "--mc_samples=4"],
    ["--metric=bald,badge", "--ensemble_size=2"]], ids=["paper", "joint", "ensemble"])
@pytest.mark.slow
def test_kill_9_mid_round_then_resume(tmp_path, strategy_flags):
  flags = ["--dataset=mnist", "--data_dir=sample", "--seed=0", *strategy_flags,
           "--initial_size=20", "--query_size=20", "--rounds=4", "--epochs_per_round=6",
           "--batch_size=32", "--chunk_size=200", "--plot=false"]

  whole = _cli(*flags, f"--workdir={tmp_path / 'whole'}")
  assert whole.returncode == 0, whole.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / "whole" / "checkpoints")) == ["2", "3", "4"]  # last 3
  workdir = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, RUN_PY, *flags, f"--workdir={workdir}"],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  finished_step = workdir / "checkpoints" / "2"  # Orbax renames a step when it is complete
  deadline = time.time() + 240
  while not finished_step.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done_before = {len(r) for r in _job_results(workdir).values()}
  assert len(done_before) == 1 and 2 <= done_before.pop() < 4, "the run was not interrupted"
  again = _cli(*flags, f"--workdir={workdir}")
  assert again.returncode == 0, again.stderr[-2000:]
  assert _job_results(workdir) == _job_results(tmp_path / "whole")


def _job_results(workdir):
  """{results file relative to workdir: records without timings} of a whole job."""
  return {os.path.relpath(path, workdir): _strip_timing(results_lib.read_results(str(path)))
          for path in sorted(workdir.rglob("results.jsonl"))}


@pytest.mark.slow
def test_a_folder_of_own_images_through_run_py(tmp_path, caplog):
  """DIR/train/<class>/ of real photos (from the shipped sample), no test/: run.py makes
  the seeded split, picks the colour model, and writes results that say where from."""
  source = os.path.join(ROOT, "al_jax", "sample_data", "fruits360", "Training")
  for variety, name in (("Banana 1", "banana"), ("Onion Red 1", "onion"),
                        ("Plum 1", "plum")):
    os.makedirs(tmp_path / "photos" / "train" / name)
    for file in sorted(os.listdir(os.path.join(source, variety)))[:20]:
      with open(os.path.join(source, variety, file), "rb") as f:
        (tmp_path / "photos" / "train" / name / file).write_bytes(f.read())
  run_py.FLAGS.unparse_flags()
  run_py.FLAGS(["run.py", "--dataset=folder", f"--data_dir={tmp_path / 'photos'}",
                "--metric=entropy", "--seed=0", "--initial_size=6", "--query_size=6",
                "--rounds=2", "--epochs_per_round=2", "--chunk_size=16", "--plot=false",
                "--image_size=24", f"--workdir={tmp_path / 'out'}"])
  try:
    with caplog.at_level(logging.INFO, logger="absl"):
      run_py.main(["run.py"])
  finally:
    run_py.FLAGS.unparse_flags()
  assert f"results, summary.json in {tmp_path / 'out'}" in caplog.messages
  results = results_lib.read_results(str(tmp_path / "out"))
  assert [r["num_labeled"] for r in results] == [6, 12]
  assert results[0]["classes"] == ["banana", "onion", "plum"]
  assert results[0]["data_source"] == "data_dir"
  assert len(results[0]["per_class_accuracy"]) == 3


@pytest.mark.slow
def test_a_tfds_data_set_through_run_py(tmp_path, caplog, monkeypatch):
  """--dataset=tfds:cifar10 on TFDS's mock data (no network, no TensorFlow): the colour
  model, the label names, and results and the start line that say data_source tfds."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from al_jax import datasets  # pylint: disable=import-outside-toplevel
  tfds_data = datasets.tfds
  monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.setattr(tfds_data, "tensorflow_available", lambda: True)  # No-op prepare.
  run_py.FLAGS.unparse_flags()
  run_py.FLAGS(["run.py", "--dataset=tfds:cifar10", "--metric=smallest_margin",
                "--seed=0", "--initial_size=8", "--query_size=8", "--rounds=2",
                "--epochs_per_round=1", "--chunk_size=16", "--plot=false", "--image_size=16",
                f"--workdir={tmp_path / 'out'}"])
  try:
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE), \
        caplog.at_level(logging.INFO, logger="absl"):
      run_py.main(["run.py"])
  finally:
    run_py.FLAGS.unparse_flags()
  assert ("tfds:cifar10 from tfds: 40 pool images, 40 test images, 10 classes, images "
          "16x16x3") in caplog.messages
  results = results_lib.read_results(str(tmp_path / "out"))
  assert [r["num_labeled"] for r in results] == [8, 16]
  assert results[0]["dataset"] == "tfds:cifar10" and results[0]["data_source"] == "tfds"
  assert results[0]["classes"] == [str(c) for c in range(10)]
  assert 0.0 <= results[-1]["test_accuracy"] <= 1.0


def test_an_unknown_tfds_name_is_one_line(tmp_path, capsys):
  run_py.FLAGS.unparse_flags()
  run_py.FLAGS(["run.py", "--dataset=tfds:cifar100x", "--seed=0",
                f"--workdir={tmp_path / 'w'}"])
  try:
    with pytest.raises(SystemExit) as exit_info:
      run_py.entry(["run.py"])
  finally:
    run_py.FLAGS.unparse_flags()
  assert exit_info.value.code == 2
  errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and errors[0].startswith(
      "error: unknown TFDS data set 'cifar100x' in tfds:cifar100x; did you mean cifar100")
