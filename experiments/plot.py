r"""Figures from one or more finished workdirs (written by experiments/run.py).

  python experiments/plot.py --workdirs=runs/a,runs/b --out=figures/ --title="MNIST"

Every results.jsonl found under the workdirs is grouped by metric (seeds averaged);
writes test_accuracy.png, train_accuracy.png, train_loss.png and per_class.png.
"""

from absl import app, flags

from al_jax import plotting

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Workdirs of run.py (searched recursively).")
flags.DEFINE_string("out", None, "Folder for the PNG files (default: the first workdir).")
flags.DEFINE_string("title", "", "Figure title.")
flags.mark_flag_as_required("workdirs")


def main(argv):
  del argv
  runs = plotting.collect_runs(FLAGS.workdirs)
  if not runs:
    raise app.UsageError(f"no results.jsonl under {', '.join(FLAGS.workdirs)}")
  for path in plotting.plot_all(runs, FLAGS.out or FLAGS.workdirs[0], title=FLAGS.title):
    print(path)


if __name__ == "__main__":
  app.run(main)
