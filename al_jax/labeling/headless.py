"""A labeling session without a page: reopening a workdir (`label.py --predict`) and
simulating a person from a folder's hidden labels (`label.py --simulate`)."""

import os
import sqlite3
import time

from al_jax.labeling import pool, session
from al_jax.labeling import store as store_lib


def saved_setup(workdir: str) -> dict | None:
  """What a labeling workdir records of its images, classes and settings (None: no
  workdir yet, or one that records nothing)."""
  path = os.path.join(workdir, "labels.sqlite")
  if not os.path.isfile(path):
    return None
  try:
    saved = store_lib.LabelStore(path)
    setup = saved.get_meta("setup")
    saved.close()
  except sqlite3.Error as error:
    raise session.LabelError(f"{path} is not readable ({error}); is it a label.py "
                             "workdir?") from error
  return setup


def reopen(workdir: str) -> session.LabelSession:
  """The session of an existing labeling workdir, from what it records (for --predict)."""
  path = os.path.join(workdir, "labels.sqlite")
  if not os.path.isfile(path):
    raise session.LabelError(f"{workdir} holds no labels.sqlite; run label.py with "
                             "--images first")
  setup = saved_setup(workdir)
  if setup is None:
    raise session.LabelError(f"{path} records no images; run label.py with --images first")
  settings = session.Settings(**setup["settings"])
  images = pool.open_images(setup["images"], tuple(setup["classes"]), settings.image_size,
                            settings.features)
  return session.LabelSession(images, workdir, settings, images_arg=setup["images"])


def simulate(labeling: session.LabelSession, rounds: int) -> list[dict]:
  """Simulation mode without a page: answers `rounds` batches with the folder's hidden
  labels (images of no class are skipped), through `answer` like the page. Returns
  per round the record and `turnaround_s`, from the batch's last answer to the next
  batch (training, scoring, evaluation and the checkpoint)."""
  if not labeling.images.simulation:
    raise session.LabelError("--simulate needs --images with a train/<class>/ layout")
  out = []
  labeling.start()
  for _ in range(rounds):
    while labeling.state()["training"]:
      time.sleep(0.05)
    if labeling.error or not labeling.batch:
      break
    for i in list(labeling.batch):
      hidden = int(labeling.images.hidden[i])
      labeling.answer(i, labeling.classes[hidden] if hidden >= 0 else None)
    started = time.perf_counter()
    while labeling.state()["training"]:
      time.sleep(0.01)
    if labeling.error:
      raise session.LabelError(f"the round failed: {labeling.error}")
    out.append({**labeling.loop.results[0][-1],
                "turnaround_s": time.perf_counter() - started})
  return out
