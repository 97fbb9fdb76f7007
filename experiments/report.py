r"""Writes docs/RESULTS.md from finished experiment workdirs (experiments/reproduce.sh).

  python experiments/report.py --runs=runs/paper --out=docs

For each experiment: the command, the figures (copied to docs/figures/<name>/), a table
of test accuracy (mean +- std over seeds) at fixed label budgets or epochs, and the
wall time. Prose about the paper's claims comes from docs/claims.md, written by hand
from these tables. Nothing here edits a figure: every number is read from results.jsonl.
"""

import os
import shutil

import numpy as np
from absl import app, flags

from al_jax import plotting

FLAGS = flags.FLAGS
flags.DEFINE_string("runs", "runs/paper", "Folder holding one workdir per experiment.")
flags.DEFINE_string("out", "docs", "Where RESULTS.md and figures/ go.")
flags.DEFINE_string("script", "experiments/reproduce.sh", "The script that ran them.")

EXPERIMENTS = [
    ("mnist10_reselect", "MNIST, 10 classes, reselect (authors' protocol)"),
    ("mnist01_reselect", "MNIST, 0 vs 1, reselect"),
    ("fruits10_reselect", "Fruits-360, 10 categories, reselect"),
    ("fruits_apple_banana_reselect", "Fruits-360, apple vs banana, reselect"),
    ("mnist10_pool", "MNIST, 10 classes, pool (Algorithm 1)"),
    ("mnist01_pool", "MNIST, 0 vs 1, pool"),
    ("fruits10_pool", "Fruits-360, 10 categories, pool"),
    ("fruits_apple_banana_pool", "Fruits-360, apple vs banana, pool"),
]


def _command(name: str, script: str) -> str:
  """The run.py line of `name` in reproduce.sh, with its variables expanded."""
  variables, line_for = {}, None
  with open(script) as f:
    for line in f:
      line = line.strip()
      if "=" in line and line.split("=")[0].isupper() and not line.startswith("$"):
        key, value = line.split("=", 1)
        variables[key] = value.strip('"')
      if line.startswith("$RUN") and f"/{name}" in line:
        line_for = line
  if line_for is None:
    return "(not in reproduce.sh)"
  variables.update(DATA="DATA", OUT="runs/paper")
  for _ in range(3):  # variables hold variables
    for key in sorted(variables, key=len, reverse=True):
      line_for = line_for.replace(f"${key}", variables[key])
  return line_for


def _table(runs: dict[str, list[list[dict]]]) -> tuple[str, list[int]]:
  length = min(len(recs) for seed_runs in runs.values() for recs in seed_runs)
  first = next(iter(runs.values()))[0][:length]
  pool = first[0]["protocol"] == "pool"
  key = "num_labeled" if pool else "epoch"
  xs = [r[key] for r in first]
  if len(xs) > 6:
    picks = sorted(set(np.linspace(0, len(xs) - 1, 6).round().astype(int).tolist()))
  else:
    picks = list(range(len(xs)))
  header = "| metric | " + " | ".join(f"{'labels' if pool else 'epoch'} {xs[i]}"
                                       for i in picks) + " |"
  lines = [header, "|---" * (len(picks) + 1) + "|"]
  for metric, seed_runs in runs.items():
    acc = np.array([[r[i]["test_accuracy"] for i in picks] for r in seed_runs])
    cells = [f"{m:.3f} +- {s:.3f}" for m, s in zip(acc.mean(0), acc.std(0))]
    lines.append(f"| {metric} (n={len(seed_runs)}) | " + " | ".join(cells) + " |")
  return "\n".join(lines), picks


def _summary_table(runs: dict[str, list[list[dict]]]) -> str:
  """Per metric: mean accuracy over the whole curve (area under it, normalised), final
  accuracy, and the worst class at the end (the paper's class-starvation claim)."""
  lines = ["| metric | mean over the curve | final | worst class at the end (mean over seeds) |",
           "|---|---|---|---|"]
  for metric, seed_runs in runs.items():
    length = min(len(r) for r in seed_runs)
    acc = np.array([[x["test_accuracy"] for x in r[:length]] for r in seed_runs])
    per_class = np.array([[np.nan if v is None else v for v in r[length - 1]["per_class_accuracy"]]
                          for r in seed_runs]).mean(0)
    names = seed_runs[0][0].get("classes") or list(range(len(per_class)))
    worst = int(np.nanargmin(per_class))
    curve = acc.mean(1)
    lines.append(f"| {metric} | {curve.mean():.3f} +- {curve.std():.3f} | "
                 f"{acc[:, -1].mean():.3f} +- {acc[:, -1].std():.3f} | "
                 f"{names[worst]}: {per_class[worst]:.3f} |")
  return "\n".join(lines)


def _wall_s(workdir: str) -> float | None:
  starts = [os.path.getmtime(os.path.join(d, "config.json"))
            for d, _, files in os.walk(workdir) if "config.json" in files]
  end = os.path.join(workdir, "summary.json")
  if not starts or not os.path.exists(end):
    return None
  return os.path.getmtime(end) - min(starts)


def main(argv):
  del argv
  figures = os.path.join(FLAGS.out, "figures")
  parts = []
  for name, title in EXPERIMENTS:
    workdir = os.path.join(FLAGS.runs, name)
    runs = plotting.collect_runs([workdir]) if os.path.isdir(workdir) else {}
    parts.append(f"### {title}\n")
    parts.append(f"```\n{_command(name, FLAGS.script)}\n```\n")
    if not runs:
      parts.append("Not run yet.\n")
      continue
    table, _ = _table(runs)
    table += "\n\n" + _summary_table(runs)
    wall = _wall_s(workdir)
    compute = sum(r["round_s"] for seed_runs in runs.values() for recs in seed_runs
                  for r in recs)
    parts.append("Test accuracy, mean +- std over seeds:\n\n" + table + "\n")
    parts.append(f"Wall time {wall / 60:.1f} min for {sum(len(v) for v in runs.values())} runs "
                 f"(rounds: {compute / 60:.1f} min).\n" if wall else "")
    os.makedirs(os.path.join(figures, name), exist_ok=True)
    pngs = []
    for png in ("test_accuracy.png", "train_loss.png", "per_class.png", "train_accuracy.png"):
      src = os.path.join(workdir, png)
      if os.path.exists(src):
        shutil.copy(src, os.path.join(figures, name, png))
        pngs.append(f"![{name} {png}](figures/{name}/{png})")
    parts.append("\n".join(pngs) + "\n")
  claims_path = os.path.join(FLAGS.out, "claims.md")
  claims = open(claims_path).read() if os.path.exists(claims_path) else ""
  intro_path = os.path.join(FLAGS.out, "results_intro.md")
  intro = open(intro_path).read() if os.path.exists(intro_path) else ""
  study = ""  # experiments/study_report.py's sections, one per SCALE, and their markers
  for name, tag in (("label_efficiency.md", "label-efficiency"),
                    ("label_efficiency_full.md", "label-efficiency-full")):
    study_path = os.path.join(FLAGS.out, name)
    if os.path.exists(study_path):
      study += (f"\n<!-- {tag}:start -->\n" + open(study_path).read().rstrip() +
                f"\n<!-- {tag}:end -->\n")
  text = ("# Results\n\n<!-- Generated by experiments/report.py from the workdirs of "
          "experiments/reproduce.sh; edit docs/results_intro.md and docs/claims.md, not "
          "this file. -->\n\n" + intro + "\n## Experiments\n\n" + "\n".join(parts) + "\n"
          + claims + study)
  with open(os.path.join(FLAGS.out, "RESULTS.md"), "w") as f:
    f.write(text)
  print(os.path.join(FLAGS.out, "RESULTS.md"))


if __name__ == "__main__":
  app.run(main)
