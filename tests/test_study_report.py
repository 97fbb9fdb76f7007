"""experiments/study_report.py: labels to a target, the stopping rule, and the section
built from workdirs of hand-made records (every number checked by hand)."""

import importlib.util
import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "study_report", os.path.join(ROOT, "experiments", "study_report.py"))
study_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study_report)


def _records(accuracies, changed, metric="random", seed=0):
  return [{"round": i, "metric": metric, "seed": seed, "protocol": "pool",
           "num_labeled": 20 + 10 * i, "test_accuracy": a, "pool_changed": c, "round_s": 2.0,
           "per_class_accuracy": [a] * 10}
          for i, (a, c) in enumerate(zip(accuracies, changed))]


def test_labels_to_reach():
  records = _records([0.5, 0.91, 0.89, 0.96], [1, 1, 1, 1])
  assert study_report.labels_to_reach(records, 0.90) == 30
  assert study_report.labels_to_reach(records, 0.95) == 50
  assert study_report.labels_to_reach(records, 0.99) is None


def test_stop_index_needs_patience_rounds_in_a_row_and_ignores_round_0():
  records = _records([0.5] * 6, [0.0, 0.01, 0.2, 0.01, 0.02, 0.0])
  assert study_report.stop_index(records, 0.02, patience=2) == 4
  assert study_report.stop_index(records, 0.01, patience=2) is None
  assert study_report.stop_index(records, 0.01, patience=1) == 1


def test_splice_replaces_the_section_or_appends_it():
  text = "# Results\n\nintro\n"
  once = study_report.splice(text, "A")
  assert once == "# Results\n\nintro\n\n" + study_report.START + "\nA\n" + study_report.END + "\n"
  again = study_report.splice(once + "after\n", "B")
  assert "A" not in again and "\nB\n" in again and again.endswith("after\n")
  both = study_report.splice(again, "C", "full")  # its own markers, after the first
  assert both.startswith(again.rstrip("\n")) and "\nB\n" in both
  assert both.endswith("<!-- label-efficiency-full:start -->\nC\n"
                       "<!-- label-efficiency-full:end -->\n")


def test_section_from_workdirs(tmp_path):
  job = tmp_path / "small" / "mnist_core"
  runs = {("random", 0): ([0.80, 0.90, 0.93], [0.9, 0.05, 0.01]),
          ("random", 1): ([0.70, 0.85, 0.91], [0.9, 0.01, 0.01]),
          ("bald", 0): ([0.80, 0.95, 0.97, 0.98], [0.9, 0.2, 0.3, 0.2]),
          ("bald", 1): ([0.82, 0.96, 0.97, 0.99], [0.9, 0.2, 0.1, 0.3])}
  config = {"dataset": "mnist", "data_dir": "sample", "metrics": ["random", "bald"],
            "seeds": [0, 1], "rounds": 11, "ensemble_size": 1, "model": "pooled_cnn",
            "initial_size": 20, "query_size": 10}
  labels = study_report._pool_labels(config)
  # Queries (one a round, none after the last): random only 0s; bald 1, 2, 1, 2, ...
  ones, twos = np.flatnonzero(labels == 1)[:3], np.flatnonzero(labels == 2)[:3]
  queried = {"random": np.flatnonzero(labels == 0), "bald": np.stack([ones, twos], 1).ravel()}
  for (metric, seed), (acc, changed) in runs.items():
    folder = job / metric / f"seed_{seed}"
    folder.mkdir(parents=True)
    records = _records(acc, changed, metric, seed)
    for i, r in enumerate(records):
      r["selected"] = [-1] if i == len(records) - 1 else [int(queried[metric][i])]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  (job / "config.json").write_text(json.dumps(config))
  (job / "command.txt").write_text("python experiments/run.py --metric=random,bald\n")
  out = tmp_path / "docs"
  text = study_report.build(str(tmp_path), "small", str(out))
  # Cut to the 3 rounds all runs finished: bald's 4th round is left out.
  assert "| mnist_core | random, bald | 2 | 3 / 11 | 40 | 2.0 |" in text
  assert ("| random (n=2) | 35.0 +- 5.0 (all 2 seeds) | not reached within 40 labels | "
          "not reached within 40 labels |") in text
  assert ("| bald (n=2) | 30.0 +- 0.0 (all 2 seeds) | 30.0 +- 0.0 (all 2 seeds) | "
          "40.0 +- 0.0 (all 2 seeds) |") in text
  # Random's last-round accuracy, (0.93 + 0.91) / 2 = 92%, as a target.
  assert "| labels to 92.0% |" in text
  assert "| random (n=2) | 1/2 seeds within 40 labels (40.0 +- 0.0) |" in text
  assert "| bald (n=2) | 30.0 +- 0.0 (all 2 seeds) |\n" in text
  assert "| random (n=2) | 0.750 +- 0.050 | 0.920 +- 0.010 |" in text  # 20 and 40 labels
  # Stop at 2 rounds in a row <= 5%: both random seeds at round 2 (40 labels), nothing saved.
  # (1%: only seed 1 stops, at 40 labels too.)
  assert "| random | 100% | 0% | 0% | 0% | 0% | 0% | 0% | 0% | 0% | 0% |" in text
  # bald cut to 3 rounds: 1, 2, 1 per seed (its 4th round's query left out).
  assert "| bald | 0% | 67% | 33% | 0% | 0% | 0% | 0% | 0% | 0% | 0% |" in text
  cell = "stop at 40 labels, save 0, give up +0.000"
  assert f"| random | 2/2 {cell} | 2/2 {cell} | 1/2 {cell} |" in text
  assert "| bald | 0/2 stop | 0/2 stop | 0/2 stop |" in text
  assert "| all runs | 2/4 stop at 40 labels" in text
  assert text.index("| random (n=2)") < text.index("| bald (n=2)")  # the job's order
  assert "python experiments/run.py --metric=random,bald" in text
  assert os.path.exists(out / "figures" / "study_small" / "mnist_test_accuracy.png")
  # --job: the same workdir's tables alone.
  one = study_report.job_section(str(job))
  assert ("| bald (n=2) | 30.0 +- 0.0 (all 2 seeds) | 30.0 +- 0.0 (all 2 seeds) | "
          "40.0 +- 0.0 (all 2 seeds) |") in one
  assert "| random (n=2) | 1/2 seeds within 40 labels (40.0 +- 0.0) |" in one
  assert "| random (n=2) | 0.750 +- 0.050 | 0.920 +- 0.010 |" in one
  assert "--metric=random,bald" in one and "Stopping" not in one


def test_full_scale_merges_one_workdir_per_strategy_and_seed(tmp_path):
  """SCALE=full: workdirs NAME_sSEED become one row per NAME, cut to the rounds all its
  seeds finished, and the acquisition benchmark's table."""
  jobs = {"mnist_random_s0": ("random", 0, [0.80, 0.90, 0.93], 2.0),
          "mnist_random_s1": ("random", 1, [0.70, 0.85], 4.0),
          "mnist_bald_s0": ("bald", 0, [0.80, 0.95, 0.97], 5.0)}
  for name, (metric, seed, acc, seconds) in jobs.items():
    folder = tmp_path / "full" / name / metric / f"seed_{seed}"
    folder.mkdir(parents=True)
    records = _records(acc, [0.5] * len(acc), metric, seed)
    for r in records:
      r.update(round_s=seconds, selected=[-1])
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"dataset": "mnist", "data_dir": "sample", "metrics": [metric],
              "seeds": [seed], "rounds": 29, "ensemble_size": 1, "model": "pooled_cnn",
              "initial_size": 20, "query_size": 10}
    (tmp_path / "full" / name / "config.json").write_text(json.dumps(config))
  groups = study_report.load_groups(str(tmp_path / "full"))
  assert list(groups) == ["mnist_random", "mnist_bald"]  # the queue's order
  config, runs, _ = groups["mnist_random"]
  assert config["seeds"] == [0, 1] and config["seed_rounds"] == [3, 2]
  assert [len(r) for r in runs["random"]] == [2, 2]  # cut to the rounds both finished
  bench = {"k": 10, "pool_size": 60000, "labeled": 300, "model": "pooled_cnn",
           "device": "cpu", "ensemble_size": 3, "seconds": {"entropy": 2.0, "bald_k20": 5.0},
           "relative_to_entropy": {"entropy": 1.0, "bald_k20": 2.5},
           "compile_s": {"entropy": 0.5, "bald_k20": 1.25}}
  (tmp_path / "bench.json").write_text(json.dumps(bench))
  text = study_report.build(str(tmp_path), "full", str(tmp_path / "docs"),
                            acquisition_benchmark=str(tmp_path / "bench.json"))
  assert "| mnist_random | random | 2 | 3, 2 / 29 | 30 | 3.0 |" in text
  assert "chose 10 of 60,000 synthetic MNIST-shaped images, 300 of them labeled" in text
  assert "| bald_k20 | 5.00 | 2.5 | 1.2 |" in text
  assert "Acquisition time" not in study_report.build(str(tmp_path), "full",
                                                      str(tmp_path / "docs"))
  assert "| random (n=2) | 0.750 +- 0.050 | 0.875 +- 0.025 |" in text
  assert "| bald (n=1) | 0.800 +- 0.000 | 0.950 +- 0.000 | 0.970 +- 0.000 |" in text
  # Once a seed has finished, the tables take the finished seeds only.
  (tmp_path / "full" / "mnist_random_s0" / "summary.json").write_text("{}")
  config, runs, _ = study_report.load_groups(str(tmp_path / "full"))["mnist_random"]
  assert config["seeds"] == [0] and config["seed_rounds"] == [3, 2]
  assert [len(r) for r in runs["random"]] == [3]


def test_figure_lines_are_all_distinct_and_strategies_keep_their_colour():
  """The full-scale figure has 12 lines; job names that no strategy owns
  ("ensemble_bald") took matplotlib's cycle and repeated smallest margin's orange."""
  from al_jax import plotting
  metrics = ["random", "random_small_budget", "smallest_margin", "badge", "bald",
             "bald (ensemble of 3)", "ensemble_bald", "bald_k100", "typiclust", "coreset",
             "stochastic_bald", "entropy", "batchbald"]
  styles = plotting.figure_styles(metrics)
  assert len(set(styles.values())) == len(metrics)
  assert styles["random"] == ("tab:gray", "-")
  assert styles["smallest_margin"] == ("tab:orange", "-")
  assert styles["bald (ensemble of 3)"] == ("tab:purple", "--")
  owned = {plotting.line_style(m)[0] for m in metrics} - {None}
  spare = [styles[m][0] for m in ("random_small_budget", "ensemble_bald", "bald_k100")]
  assert spare == ["black", "darkcyan", "goldenrod"] and not owned & set(spare)
  assert {styles[m][1] for m in ("random_small_budget", "ensemble_bald", "bald_k100")} == {
      "--"}
  # Two variants of one strategy: the second is dotted, not a copy of the first.
  assert plotting.figure_styles(["bald (ensemble of 3)", "bald (ensemble of 5)"]) == {
      "bald (ensemble of 3)": ("tab:purple", "--"), "bald (ensemble of 5)": ("tab:purple", ":")}
