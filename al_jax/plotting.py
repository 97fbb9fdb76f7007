"""PNG figures of a comparison: accuracy curves with a +-1 std band, loss, per-class accuracy.

Input everywhere: `runs = {metric: [records of seed 0, records of seed 1, ...]}` where
records are the dicts of results.jsonl. The x axis is the number of labeled images
(pool protocol) or the epoch (reselect protocol).
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from al_jax import strategies  # noqa: E402


def line_style(metric: str) -> tuple[str | None, bool]:
  """(colour, dashed) of a metric's line: its strategy's colour (`Strategy.color`); a
  variant ("bald (ensemble of 3)") takes its strategy's colour, dashed."""
  base = metric.split(" (")[0]
  for name, dashed in ((metric, False), (base, True)):
    if name in strategies.names():
      return strategies.get(name).color, dashed
  return None, False


# Colours for lines no strategy owns (a study job's name, say), drawn dashed: far from the
# strategies' own colours.
SPARE_COLORS = ("black", "darkcyan", "goldenrod", "magenta", "lime", "saddlebrown",
                "slateblue", "crimson")


def figure_styles(metrics: list[str]) -> dict[str, tuple[str, str]]:
  """(colour, linestyle) of each line of one figure, no two alike: its strategy's colour
  (`line_style`); a line no strategy owns takes the first spare colour that no line of
  the figure has, dashed; a repeated pair is drawn dashed, then dotted, then dash-dotted."""
  owned = {m: line_style(m) for m in metrics}
  taken = {color for color, _ in owned.values() if color}
  spare = iter([c for c in SPARE_COLORS if c not in taken])
  styles, used = {}, set()
  for metric in metrics:
    color, dashed = owned[metric]
    if color is None:
      color, dashed = next(spare, "black"), True
    choices = ("--", ":", "-.") if dashed else ("-", "--", ":", "-.")
    style = next((s for s in choices if (color, s) not in used), choices[-1])
    used.add((color, style))
    styles[metric] = (color, style)
  return styles


def _x(records: list[dict]) -> tuple[np.ndarray, str]:
  if records[0]["protocol"] == "pool":
    return np.array([r["num_labeled"] for r in records]), "labeled images"
  return np.array([r["epoch"] for r in records]), "epoch"


def _stack(seed_runs: list[list[dict]], key: str) -> np.ndarray:
  """[seeds, rounds] (or [seeds, rounds, C]) of `key`, cut to the shortest run."""
  length = min(len(r) for r in seed_runs)
  return np.array([[np.nan if rec[key] is None else rec[key] for rec in r[:length]]
                   for r in seed_runs], dtype=float)


def plot_curves(runs: dict[str, list[list[dict]]], key: str, ylabel: str, title: str,
                path: str) -> None:
  """One line per metric: mean over seeds of `key`, with a band of one std."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  styles = figure_styles(list(runs))
  for metric, seed_runs in runs.items():
    values = _stack(seed_runs, key)
    x, xlabel = _x(seed_runs[0][:values.shape[1]])
    mean, std = values.mean(0), values.std(0)
    color, linestyle = styles[metric]
    ax.plot(x, mean, label=f"{metric} (n={len(seed_runs)})", color=color,
            linestyle=linestyle)
    ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=color)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=9, title="mean over n seeds; band: +-1 std", title_fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_per_class(runs: dict[str, list[list[dict]]], title: str, path: str) -> None:
  """One panel per metric: test accuracy of every class (mean over seeds)."""
  cols = min(3, len(runs))
  rows = -(-len(runs) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False,
                           sharey=True)
  flat = axes.reshape(-1)
  for ax in flat[len(runs):]:
    ax.axis("off")
  for ax, (metric, seed_runs) in zip(flat, runs.items()):
    per_class = _stack(seed_runs, "per_class_accuracy").mean(0)  # [rounds, C]
    x, xlabel = _x(seed_runs[0][:per_class.shape[0]])
    names = seed_runs[0][0].get("classes") or [str(c) for c in range(per_class.shape[1])]
    cmap = plt.get_cmap("tab10")
    for c in range(per_class.shape[1]):
      ax.plot(x, per_class[:, c], label=str(names[c]), color=cmap(c % 10))
    ax.set_title(metric)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
  for row in axes:
    row[0].set_ylabel("per-class test accuracy")
  handles, labels = flat[0].get_legend_handles_labels()
  if len(runs) < len(flat):  # an empty panel holds the legend
    flat[-1].legend(handles, labels, loc="center", fontsize=9, ncol=2, title="class")
  else:
    flat[-1].legend(handles, labels, loc="lower right", fontsize=7, ncol=2, title="class")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_all(runs: dict[str, list[list[dict]]], outdir: str, title: str) -> list[str]:
  """Writes test_accuracy.png, train_accuracy.png, train_loss.png, per_class.png."""
  os.makedirs(outdir, exist_ok=True)
  paths = []
  for key, ylabel in [("test_accuracy", "test accuracy"), ("train_accuracy", "train accuracy"),
                      ("train_loss", "training loss")]:
    paths.append(os.path.join(outdir, f"{key}.png"))
    plot_curves(runs, key, ylabel, title, paths[-1])
  paths.append(os.path.join(outdir, "per_class.png"))
  plot_per_class(runs, title, paths[-1])
  return paths


def collect_runs(workdirs: list[str]) -> dict[str, list[list[dict]]]:
  """{metric: [records per seed]} from every results.jsonl under `workdirs`."""
  import json
  runs: dict[str, list[list[dict]]] = {}
  for workdir in workdirs:
    for folder, _, files in sorted(os.walk(workdir)):
      if "results.jsonl" in files:
        with open(os.path.join(folder, "results.jsonl")) as f:
          records = [json.loads(line) for line in f if line.strip()]
        if records:
          runs.setdefault(records[0]["metric"], []).append(records)
  order = strategies.names()
  return dict(sorted(runs.items(),
                     key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
