r"""Writes the label-efficiency section of docs/RESULTS.md from experiments/study.sh's workdirs.

  python experiments/study_report.py --runs=runs/study --scale=small --out=docs

Writes docs/label_efficiency.md and docs/figures/study_<scale>/*.png (with the prose of
docs/label_efficiency_notes.md, written by hand from the tables, at the end), and puts the
section into docs/RESULTS.md between the label-efficiency markers (experiments/report.py
keeps it there when it rewrites the file). Works on a study that is still running: a
job is cut to the rounds that all its runs have finished, and the section says how
far each job got. Every number is read from a results.jsonl; nothing is typed in.
"""

import dataclasses
import json
import os
import re

import numpy as np
from absl import app, flags

from al_jax import plotting, specs

FLAGS = flags.FLAGS
flags.DEFINE_string("runs", "runs/study", "The OUT folder given to experiments/study.sh.")
flags.DEFINE_string("scale", "small", "The SCALE the study ran at (a subfolder of --runs).")
flags.DEFINE_string("out", "docs", "Where label_efficiency.md, RESULTS.md and figures/ are.")
flags.DEFINE_string("job", None, "One run.py workdir: print its section (labels to the "
                    "targets and to random's last accuracy, accuracy at fixed labels) "
                    "instead of writing the study's.")
flags.DEFINE_string("recipe_search", "docs/benchmarks/recipe_search.jsonl",
                    "SCALE=full: experiments/recipe_search.py's output, tabled in the section.")
flags.DEFINE_string("acquisition_benchmark",
                    "docs/benchmarks/cpu/acquisition_study_mnist_60000.json",
                    "SCALE=full: experiments/benchmark.py --acquisition's JSON for the "
                    "study's model (the commands in docs/BENCHMARKS.md), tabled in the "
                    "section.")

START, END = "<!-- label-efficiency:start -->", "<!-- label-efficiency:end -->"


def markers(scale: str) -> tuple[str, str]:
  """The section markers in RESULTS.md of a SCALE (small keeps the first ones)."""
  if scale == "small":
    return START, END
  return f"<!-- label-efficiency-{scale}:start -->", f"<!-- label-efficiency-{scale}:end -->"


def section_file(scale: str) -> str:
  """The file (under --out) that holds a SCALE's section on its own."""
  return "label_efficiency.md" if scale == "small" else f"label_efficiency_{scale}.md"
# (workdir, what it is) in the order of experiments/study.sh.
JOBS = [("mnist_headline", "MNIST, random, smallest margin and BADGE (SCALE=full first)"),
        ("mnist_core", "MNIST, main strategies"), ("mnist_rest", "MNIST, the other strategies"),
        ("mnist_ensemble", "MNIST, deep ensemble"),
        ("mnist_cnn_random", "MNIST, random with the paper's mnist_cnn"),
        ("mnist_early_stopping", "MNIST, early stopping on held-out labels"),
        ("mnist_coldstart_kmeans", "MNIST, cold start: k-means"),
        ("mnist_coldstart_kmeans_pp", "MNIST, cold start: k-means++ seeds"),
        ("mnist_coldstart_random", "MNIST, cold start: random initial set"),
        ("fashion_core", "Fashion-MNIST")]
# SCALE=full: one workdir per strategy and seed (NAME_sSEED), reported per NAME, in this
# order (experiments/study.sh's queue); other names follow in alphabetical order.
FULL_GROUPS = ("mnist_random", "mnist_random_small_budget", "mnist_smallest_margin",
               "mnist_badge", "mnist_entropy", "mnist_batchbald", "mnist_bald",
               "mnist_stochastic_bald", "mnist_coreset", "mnist_typiclust",
               "mnist_ensemble_bald", "mnist_bald_k100", "fashion_random", "fashion_entropy",
               "fashion_badge", "fashion_batchbald")
TARGETS = (0.90, 0.95, 0.97)
FIXED_LABELS = (20, 50, 100, 190, 200, 300)  # 190: issue 21's target
STOP_THRESHOLDS = (0.10, 0.05, 0.01)
STOP_PATIENCE = 2


def labels_to_reach(records: list[dict], target: float) -> int | None:
  """Labels of the first round whose test accuracy reaches `target` (None: never)."""
  for r in records:
    if r["test_accuracy"] >= target:
      return r["num_labeled"]
  return None


def stop_index(records: list[dict], threshold: float, patience: int = STOP_PATIENCE
               ) -> int | None:
  """The round at which the stopping rule stops: the first round (from round 1 on) that
  ends `patience` rounds in a row whose pool_changed <= threshold (None: never)."""
  run = 0
  for i, r in enumerate(records):
    run = run + 1 if i > 0 and r["pool_changed"] <= threshold else 0
    if run >= patience:
      return i
  return None


def mean_std(values: list[float], digits: int = 3) -> str:
  v = np.asarray(values, float)
  return f"{v.mean():.{digits}f} +- {v.std():.{digits}f}"


def load_job(workdir: str) -> tuple[dict, dict[str, list[list[dict]]], str]:
  """(config.json, {label: [records per seed, cut to the rounds all runs finished]},
  command line). The label names the strategy, and the ensemble / model when not the
  study's own."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  command = ""
  if os.path.exists(os.path.join(workdir, "command.txt")):
    command = open(os.path.join(workdir, "command.txt")).read().strip()
  runs = plotting.collect_runs([workdir])
  length = min((len(r) for seed_runs in runs.values() for r in seed_runs), default=0)
  suffix = []
  if config.get("ensemble_size", 1) > 1:
    suffix.append(f"ensemble of {config['ensemble_size']}")
  if config.get("model") not in (None, "pooled_cnn"):
    suffix.append(config["model"])
  if config.get("validation_fraction"):
    suffix.append(f"early stopping on {config['validation_fraction']:.0%} held out")
  if config.get("initial_selection") or not config.get("class_balanced_init", True):
    suffix.append(f"{config.get('initial_selection') or 'random'} initial set")
  label = lambda m: f"{m} ({', '.join(suffix)})" if suffix else m
  order = {m: i for i, m in enumerate(config["metrics"])}
  runs = dict(sorted(runs.items(), key=lambda kv: order.get(kv[0], len(order))))
  return config, {label(m): [r[:length] for r in seed_runs] for m, seed_runs in runs.items()
                  if length}, command


def load_groups(root: str) -> dict[str, tuple[dict, dict[str, list[list[dict]]], str]]:
  """SCALE=full: the workdirs NAME_sSEED under root merged per NAME, like `load_job`'s
  result, labelled by NAME without its data set ("random_small_budget"): the seeds whose
  job finished (summary.json) when there are any, else all, cut to the rounds they all
  did; config["seed_rounds"] lists the rounds every seed did, finished or not."""
  found: dict[str, list[str]] = {}
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    if os.path.exists(os.path.join(root, name, "config.json")):
      found.setdefault(re.sub(r"_s\d+$", "", name), []).append(name)
  order = {g: i for i, g in enumerate(FULL_GROUPS)}
  groups = {}
  for group in sorted(found, key=lambda g: (order.get(g, len(order)), g)):
    loaded = [load_job(os.path.join(root, name)) + (
        os.path.exists(os.path.join(root, name, "summary.json")),) for name in found[group]]
    loaded = [job for job in loaded if job[1]]
    if not loaded:
      continue
    rounds = [len(r) for _, runs, _, _ in loaded for v in runs.values() for r in v]
    if any(done for *_, done in loaded):  # the tables: the finished seeds only
      loaded = [job for job in loaded if job[3]]
    label = group.split("_", 1)[1]
    seed_runs = [r for _, runs, _, _ in loaded for v in runs.values() for r in v]
    length = min(len(r) for r in seed_runs)
    config = {**loaded[0][0], "seeds": sorted({s for c, *_ in loaded for s in c["seeds"]}),
              "seed_rounds": rounds}
    groups[group] = (config, {label: [r[:length] for r in seed_runs]},
                     "\n".join(c for _, _, c, _ in loaded if c))
  return groups


def _status_lines(jobs: dict) -> list[str]:
  lines = ["| job | strategies | seeds | rounds done / planned | labels reached | round_s "
           "(per run, mean) |", "|---|---|---|---|---|---|"]
  for name, (config, runs, _) in jobs.items():
    done = min((len(r) for v in runs.values() for r in v), default=0)
    labels = next(iter(runs.values()))[0][done - 1]["num_labeled"] if done else "-"
    seconds = [x["round_s"] for v in runs.values() for r in v for x in r]
    rounds = config.get("seed_rounds")  # SCALE=full: rounds done per seed
    done_cell = f"{', '.join(map(str, rounds))}" if rounds else f"{done}"
    lines.append(f"| {name} | {', '.join(config['metrics'])} | {len(config['seeds'])} | "
                 f"{done_cell} / {config['rounds']} | {labels} | "
                 f"{np.mean(seconds) if seconds else float('nan'):.1f} |")
  return lines


def _reach_table(runs: dict[str, list[list[dict]]], targets: tuple[float, ...] = TARGETS
                 ) -> list[str]:
  lines = ["| strategy | " + " | ".join(f"labels to {t:.1%}" for t in targets) + " |",
           "|---" * (len(targets) + 1) + "|"]
  for label, seed_runs in runs.items():
    cells = []
    for t in targets:
      hits = [labels_to_reach(r, t) for r in seed_runs]
      reached = [h for h in hits if h is not None]
      if len(reached) == len(hits):
        cells.append(f"{mean_std(reached, 1)} (all {len(hits)} seeds)")
      elif reached:
        cells.append(f"{len(reached)}/{len(hits)} seeds within {r_end(seed_runs)} labels "
                     f"({mean_std(reached, 1)})")
      else:
        cells.append(f"not reached within {r_end(seed_runs)} labels")
    lines.append(f"| {label} (n={len(seed_runs)}) | " + " | ".join(cells) + " |")
  return lines


def r_end(seed_runs: list[list[dict]]) -> int:
  """Labels at the last round the runs finished."""
  return seed_runs[0][-1]["num_labeled"]


def _classes_table(runs: dict[str, list[list[dict]]], pool_labels: np.ndarray) -> list[str]:
  """Distinct classes among each run's initial labels (results.jsonl's initial_labeled
  indexes the job's pool; pool_labels: [N])."""
  lines = ["| initial set | classes among the first labels, per seed |", "|---|---|"]
  for label, seed_runs in runs.items():
    counts = [len(set(pool_labels[r[0]["initial_labeled"]].tolist())) for r in seed_runs]
    lines.append(f"| {label} | {', '.join(map(str, counts))} of {len(set(pool_labels))} |")
  return lines


def _queried_table(runs: dict[str, list[list[dict]]], pool_labels: np.ndarray,
                   class_names: tuple[str, ...]) -> list[str]:
  """Share of each strategy's queries (all rounds, all seeds) that fell in each class."""
  lines = ["| strategy | " + " | ".join(class_names) + " |",
           "|---|" + "---|" * len(class_names)]
  for label, seed_runs in runs.items():
    chosen = [i for r in seed_runs for x in r for i in x["selected"] if i >= 0]
    counts = np.bincount(pool_labels[chosen], minlength=len(class_names))
    shares = counts / max(counts.sum(), 1)
    lines.append(f"| {label} | " + " | ".join(f"{v:.0%}" for v in shares) + " |")
  return lines


def _pool_labels(config: dict) -> np.ndarray:
  """The labels of a job's pool, rebuilt from its config.json as run.py built it."""
  from al_jax import config as config_lib, experiment
  fields = {f.name for f in dataclasses.fields(config_lib.Config)}
  job = config_lib.Config(**{k: v for k, v in config.items() if k in fields})
  data = experiment.prepare_data(job)
  return np.asarray(data.pool["labels"])[:data.num_pool]


def _fixed_table(runs: dict[str, list[list[dict]]]) -> list[str]:
  have = {x["num_labeled"] for v in runs.values() for r in v for x in r}
  ends = {r_end(v) for v in runs.values()}  # where each job got to
  columns = sorted({n for n in FIXED_LABELS if n in have} | ends)
  lines = ["| strategy | " + " | ".join(f"{n} labels" for n in columns) + " |",
           "|---" * (len(columns) + 1) + "|"]
  for label, seed_runs in runs.items():
    cells = []
    for n in columns:
      acc = [x["test_accuracy"] for r in seed_runs for x in r if x["num_labeled"] == n]
      cells.append(mean_std(acc) if len(acc) == len(seed_runs) else "-")
    lines.append(f"| {label} (n={len(seed_runs)}) | " + " | ".join(cells) + " |")
  return lines


def _stop_cell(seed_runs: list[list[dict]], threshold: float) -> str:
  stops = [(r, stop_index(r, threshold)) for r in seed_runs]
  hit = [(r, i) for r, i in stops if i is not None]
  if not hit:
    return f"0/{len(stops)} stop"
  at = [r[i]["num_labeled"] for r, i in hit]
  saved = [r[-1]["num_labeled"] - r[i]["num_labeled"] for r, i in hit]
  lost = [r[-1]["test_accuracy"] - r[i]["test_accuracy"] for r, i in hit]
  return (f"{len(hit)}/{len(stops)} stop at {np.mean(at):.0f} labels, save "
          f"{np.mean(saved):.0f}, give up {np.mean(lost):+.3f}")


def _stop_table(runs: dict[str, list[list[dict]]]) -> list[str]:
  """Per strategy and threshold: runs that stop, mean labels at the stop, labels saved
  and test accuracy given up against the last round done."""
  runs = {k: v for k, v in runs.items() if "pool_changed" in v[0][0]}
  lines = ["| strategy | " + " | ".join(f"pool_changed <= {t:.0%}" for t in STOP_THRESHOLDS)
           + " |", "|---" * (len(STOP_THRESHOLDS) + 1) + "|"]
  for label, seed_runs in runs.items():
    lines.append(f"| {label} | " + " | ".join(_stop_cell(seed_runs, t) for t in STOP_THRESHOLDS)
                 + " |")
  everything = [r for v in runs.values() for r in v]
  lines.append("| all runs | " + " | ".join(_stop_cell(everything, t) for t in STOP_THRESHOLDS)
               + " |")
  return lines


def _changed_vs_gain(runs: dict[str, list[list[dict]]]) -> str:
  """How well pool_changed bounds the accuracy change of the next round."""
  changed, gain = [], []
  for seed_runs in runs.values():
    for r in seed_runs:
      for a, b in zip(r, r[1:]):
        if "pool_changed" in b:
          changed.append(b["pool_changed"])
          gain.append(b["test_accuracy"] - a["test_accuracy"])
  if len(changed) < 3:
    return ""
  changed, gain = np.array(changed), np.array(gain)
  bound = np.mean(np.abs(gain) <= changed)
  with np.errstate(invalid="ignore", divide="ignore"):  # NaN when either is constant
    corr = np.corrcoef(changed, np.abs(gain))[0, 1]
  return (f"Over {len(changed)} round-to-round steps, |test accuracy change| <= pool_changed "
          f"in {bound:.0%} of them (the share of changed predictions bounds the accuracy "
          f"change on the pool exactly, on the test set only approximately); the correlation "
          f"of pool_changed with |accuracy change| is {corr:.2f}.")


def recipe_table(path: str) -> str:
  """experiments/recipe_search.py's JSON lines as a table: validation accuracy per recipe
  and labeled-set size (mean +- std over its seeds), and its settings."""
  if not os.path.exists(path):
    return ""
  rows = [json.loads(line) for line in open(path) if line.strip()]
  if not rows:
    return ""
  sizes = sorted({int(n) for r in rows for n in r["validation_accuracy"]})
  lines = [f"The training recipe, chosen before the runs on a validation split of the "
           f"training set, never the test set (`experiments/recipe_search.py`, "
           f"`{path}`): each recipe trained a fresh model on labeled sets drawn as random "
           f"acquisition draws them (20 class-balanced, then random) from {rows[0]['pool']}, "
           f"scored on {rows[0]['validation']}; {rows[0]['seeds']} seeds. The jobs below "
           f"use the frozen recipe of experiments/study.sh (RECIPE).\n",
           "| recipe | " + " | ".join(f"{n} labels" for n in sizes) + " | min_steps | shift "
           "(px) | rotation (deg) | lr | weight decay | s per fit (median, slowest size) |",
           "|---" * (len(sizes) + 7) + "|"]
  for r in rows:
    acc, cfg = r["validation_accuracy"], r["settings"]
    cells = [f"{acc[str(n)]['mean']:.3f} +- {acc[str(n)]['std']:.3f}" if str(n) in acc
             else "-" for n in sizes]
    seconds = max(v["seconds_per_fit"] for v in acc.values())
    lines.append(f"| {r['recipe']} | " + " | ".join(cells) + f" | {cfg['min_steps']} | "
                 f"{cfg['max_shift']:g} | {cfg['max_degrees']:g} | {cfg['learning_rate']:g} | "
                 f"{cfg['weight_decay']:g} | {seconds:.0f} |")
  return "\n".join(lines)


def acquisition_table(path: str) -> str:
  """SCALE=full: `experiments/benchmark.py --acquisition`'s JSON (one quiet-machine run
  with the study's model, K, labeled count and ensemble) as a table of seconds per
  acquisition on the full pool; "" when the file is missing."""
  if not path or not os.path.exists(path):
    return ""
  bench = json.load(open(path))
  lines = [f"Acquisition time on the full pool, measured apart from training: "
           f"`experiments/benchmark.py --acquisition` (`{path}`) chose {bench['k']} of "
           f"{bench['pool_size']:,} synthetic MNIST-shaped images, {bench['labeled']} of "
           f"them labeled, with an untrained {bench['model']} on {bench['device']}, one "
           f"process alone on the machine (the study paused); K = MC-dropout passes, "
           f"ensemble{bench['ensemble_size']}_bald = BALD over that many members. Random "
           f"costs nothing and smallest margin one forward pass, as entropy:\n",
           "| strategy | seconds | relative to entropy | compile s |", "|---|---|---|---|"]
  for name, seconds in bench["seconds"].items():
    lines.append(f"| {name} | {seconds:.2f} | {bench['relative_to_entropy'][name]:.1f} | "
                 f"{bench['compile_s'][name]:.1f} |")
  return "\n".join(lines)


def _figure(runs, title: str, path: str) -> None:
  plotting.plot_curves(runs, "test_accuracy", "test accuracy", title, path)


def build(runs_dir: str, scale: str, out: str, recipe_search: str = "",
          acquisition_benchmark: str = "") -> str:
  """The section's markdown; writes its figures under out/figures/study_<scale>/."""
  root = os.path.join(runs_dir, scale)
  figures = os.path.join(out, "figures", f"study_{scale}")
  os.makedirs(figures, exist_ok=True)
  if scale == "full":
    jobs = load_groups(root)
  else:
    jobs = {name: load_job(os.path.join(root, name)) for name, _ in JOBS
            if os.path.exists(os.path.join(root, name, "config.json"))}
    jobs = {k: v for k, v in jobs.items() if v[1]}
  parts = [f"## Label efficiency (experiments/study.sh, SCALE={scale})\n",
           f"Generated by `python experiments/study_report.py --runs={runs_dir} "
           f"--scale={scale} --out={out}` from the workdirs of "
           f"`experiments/study.sh DATA {runs_dir}` (SCALE={scale}); every number below is "
           "read from a results.jsonl under those workdirs. Tables give mean +- std "
           "(population) over seeds.\n"]
  if not jobs:
    return "\n".join(parts + ["No job has finished a round yet.\n"])
  if scale == "full":
    parts.append("How far each strategy got: one workdir (one run.py job) per strategy and "
                 "seed, and the rounds each seed did. The tables take a strategy's finished "
                 "seeds (n says how many), or, while none has finished, all its seeds cut "
                 "to the rounds they all did. "
                 "round_s is one run's whole round (training, evaluation and acquisition), "
                 "on a shared 2-core machine whose load varied:\n")
  else:
    parts.append("How far each job got (a job still running or stopped is cut to the rounds "
                 "all its runs finished; round_s is the job's round time divided by its "
                 "runs, as all runs of a job share one compiled program, so it is not a "
                 "per-strategy acquisition time):\n")
  parts.append("\n".join(_status_lines(jobs)) + "\n")
  if scale == "full" and acquisition_table(acquisition_benchmark):
    parts.append(acquisition_table(acquisition_benchmark) + "\n")
  if scale == "full" and recipe_search and recipe_table(recipe_search):
    parts.append(recipe_table(recipe_search) + "\n")
  parts.append("Commands:\n\n```\n" + "\n".join(c for _, _, c in jobs.values() if c) + "\n```\n")
  by_dataset: dict[str, dict] = {}
  configs: dict[str, dict] = {}
  for name, (config, runs, _) in jobs.items():
    if name.startswith("mnist_coldstart"):
      continue
    by_dataset.setdefault(config["dataset"], {}).update(runs)
    configs.setdefault(config["dataset"], config)
  for dataset, runs in by_dataset.items():
    parts.append(f"### {dataset}: labels needed and accuracy at fixed budgets\n")
    parts.append("Labels needed to reach a test accuracy (first round at or above it):\n")
    parts.append("\n".join(_reach_table(runs)) + "\n")
    if "random" in runs:
      final = runs["random"][0][-1]["num_labeled"]
      target = float(np.mean([r[-1]["test_accuracy"] for r in runs["random"]]))
      parts.append(f"Labels needed to reach the accuracy random has at its last round "
                   f"({final} labels, mean over seeds {target:.1%}): a target every job "
                   f"can reach within the rounds done, so it measures labels saved:\n")
      parts.append("\n".join(_reach_table(runs, (round(target, 3),))) + "\n")
    parts.append("Test accuracy at fixed label counts (those within the rounds done):\n")
    parts.append("\n".join(_fixed_table(runs)) + "\n")
    parts.append("Where the queries went: the share of each strategy's queried images "
                 "(all rounds and seeds, the initial labels not counted) in each class:\n")
    parts.append("\n".join(_queried_table(runs, _pool_labels(configs[dataset]),
                                           specs.get(dataset).class_names)) + "\n")
    png = f"{dataset}_test_accuracy.png"
    config = configs[dataset]
    balanced = "class-balanced " if config.get("class_balanced_init", True) else ""
    _figure(runs, f"{dataset}: pool protocol, {config['initial_size']} {balanced}labels "
            f"+{config['query_size']} per round", os.path.join(figures, png))
    parts.append(f"![{dataset} learning curves](figures/study_{scale}/{png})\n")
  mnist = by_dataset.get("mnist", {})
  if mnist:
    parts.append("### Stopping rule: stop when predictions on the pool stop changing\n")
    parts.append(f"The rule needs no labels: each round records pool_changed, the share of a "
                 f"fixed stop set (the first 2,000 pool images) whose predicted class changed "
                 f"since the previous round's model; stop at the first round that ends "
                 f"{STOP_PATIENCE} rounds in a row with pool_changed at or below the "
                 f"threshold. 'Labels saved' and 'accuracy given up' are against the last "
                 f"round done (the job's budget, or where it stopped).\n")
    parts.append("\n".join(_stop_table(mnist)) + "\n")
    parts.append(_changed_vs_gain(mnist) + "\n")
    _figure_changed(mnist, os.path.join(figures, "pool_changed.png"))
    parts.append(f"![pool_changed per round](figures/study_{scale}/pool_changed.png)\n")
  cold = {k: v for name, (_, runs, _) in jobs.items() if name.startswith("mnist_coldstart")
          for k, v in runs.items()}
  if cold:
    parts.append("### Cold start: the first 20 labels without labels\n")
    parts.append("The initial 20 labels chosen from the pool's pixels (`--initial_selection`: "
                 "k-means++ seeds, or the images nearest 10 Lloyd steps' k-means centres) "
                 "against a random initial set; none is class-balanced, then random "
                 "queries of 10 per round. Test accuracy:\n")
    parts.append("\n".join(_fixed_table(cold)) + "\n")
    first = next(v[0] for name, v in jobs.items() if name.startswith("mnist_coldstart"))
    parts.append("\n".join(_classes_table(cold, _pool_labels(first))) + "\n")
  notes = os.path.join(out, section_file(scale).replace(".md", "_notes.md"))  # by hand
  if os.path.exists(notes):
    parts.append(open(notes).read())
  return "\n".join(parts)


def _figure_changed(runs, path: str) -> None:
  runs = {k: v for k, v in runs.items() if "pool_changed" in v[0][0]}
  if runs:
    plotting.plot_curves(runs, "pool_changed", "share of stop-set predictions changed",
                         "MNIST: prediction change between rounds", path)


def splice(text: str, section: str, scale: str = "small") -> str:
  """`text` with the part between the scale's markers (or the end of it) set to
  `section`."""
  start, end = markers(scale)
  block = f"{start}\n{section.rstrip()}\n{end}\n"
  if start in text and end in text:
    head, rest = text.split(start, 1)
    return head + block + rest.split(end, 1)[1].lstrip("\n")
  return text.rstrip("\n") + "\n\n" + block


def job_section(workdir: str) -> str:
  """The tables of one run.py workdir (several strategies and seeds), from its
  results.jsonl files: labels to TARGETS and to random's last accuracy, accuracy at
  fixed label counts."""
  config, runs, command = load_job(workdir)
  parts = [f"Generated by `python experiments/study_report.py --job={workdir}` from the "
           f"workdir of:\n\n```\n{command or ' '.join(config['metrics'])}\n```\n",
           "Labels needed to reach a test accuracy (first round at or above it):\n",
           "\n".join(_reach_table(runs)) + "\n"]
  if "random" in runs:
    target = float(np.mean([r[-1]["test_accuracy"] for r in runs["random"]]))
    parts += [f"Labels needed to reach random's accuracy at its last round "
              f"({r_end(runs['random'])} labels, mean {target:.1%}):\n",
              "\n".join(_reach_table(runs, (round(target, 3),))) + "\n"]
  parts += ["Test accuracy at fixed label counts (mean +- std over seeds):\n",
            "\n".join(_fixed_table(runs)) + "\n"]
  return "\n".join(parts)


def main(argv):
  del argv
  if FLAGS.job:
    print(job_section(FLAGS.job))
    return
  section = build(FLAGS.runs, FLAGS.scale, FLAGS.out, FLAGS.recipe_search,
                  FLAGS.acquisition_benchmark)
  with open(os.path.join(FLAGS.out, section_file(FLAGS.scale)), "w") as f:
    f.write(section.rstrip() + "\n")
  path = os.path.join(FLAGS.out, "RESULTS.md")
  text = open(path).read() if os.path.exists(path) else "# Results\n"
  with open(path, "w") as f:
    f.write(splice(text, section, FLAGS.scale))
  print(path)


if __name__ == "__main__":
  app.run(main)
