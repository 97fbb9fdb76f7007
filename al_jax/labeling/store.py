"""The labels a person gives, in SQLite in the workdir: one row per image, written the
moment it is given (one transaction per label, write-ahead log, synced to disk).

Table `labels`: pool_index (primary key, so an image is never labeled twice), path
(relative to the image folder), label (a class name; NULL = "not sure / skip"),
round (the batch it was given in), time (Unix seconds), seq (order given, for undo).
Table `meta`: what the workdir was made for (key -> JSON text).
"""

import csv
import dataclasses
import datetime
import io
import json
import os
import sqlite3
import threading

from al_jax import files

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
  pool_index INTEGER PRIMARY KEY,
  path TEXT NOT NULL,
  label TEXT,
  round INTEGER NOT NULL,
  time REAL NOT NULL,
  seq INTEGER NOT NULL
);
"""
EXPORT_FIELDS = ("path", "label", "use", "round", "time")
# predictions.csv: "ranking" says what "rank" means (`LabelSession.predict`).
PREDICTION_FIELDS = ("path", "predicted_label", "probability", "score", "rank", "ranking")


@dataclasses.dataclass(frozen=True)
class Label:
  """One stored answer: label None means skipped ("not sure")."""
  pool_index: int
  path: str
  label: str | None
  round: int
  time: float
  seq: int


class LabelStore:
  """A workdir's labels.sqlite, safe to share between the server's threads."""

  def __init__(self, path: str):
    self.path = path
    self._lock = threading.Lock()
    self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    self._db.execute("PRAGMA journal_mode=WAL")
    self._db.execute("PRAGMA synchronous=FULL")
    self._db.executescript(_SCHEMA)

  def get_meta(self, key: str):
    """The JSON value stored under `key`, or None."""
    with self._lock:
      row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])

  def set_meta(self, key: str, value) -> None:
    with self._lock:
      self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

  def put(self, pool_index: int, path: str, label: str | None, round_: int) -> Label:
    """Stores (or replaces) the answer for one image in one transaction."""
    with self._lock:
      self._db.execute(
          "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, "
          "(SELECT COALESCE(MAX(seq), 0) + 1 FROM labels))",
          (int(pool_index), path, label, int(round_), datetime.datetime.now().timestamp()))
      row = self._db.execute("SELECT * FROM labels WHERE pool_index = ?",
                             (int(pool_index),)).fetchone()
    return Label(*row)

  def undo(self, among: list[int]) -> Label | None:
    """Deletes the latest answer given for one of the images `among`; returns it."""
    if not among:
      return None
    marks = ",".join("?" * len(among))
    with self._lock:
      row = self._db.execute(f"SELECT * FROM labels WHERE pool_index IN ({marks}) "
                             "ORDER BY seq DESC LIMIT 1", [int(i) for i in among]).fetchone()
      if row is not None:
        self._db.execute("DELETE FROM labels WHERE pool_index = ?", (row[0],))
    return None if row is None else Label(*row)

  def all(self) -> dict[int, Label]:
    """Every stored answer by pool index."""
    with self._lock:
      rows = self._db.execute("SELECT * FROM labels ORDER BY seq").fetchall()
    return {row[0]: Label(*row) for row in rows}

  def close(self) -> None:
    with self._lock:
      self._db.close()


def export_rows(labels: dict[int, Label], validation: set[int]) -> list[dict]:
  """Rows of labels.csv, in the order given: use is train, validation or skipped."""
  rows = []
  for item in sorted(labels.values(), key=lambda x: x.seq):
    use = ("skipped" if item.label is None else
           "validation" if item.pool_index in validation else "train")
    when = datetime.datetime.fromtimestamp(item.time, datetime.timezone.utc)
    rows.append({"path": item.path, "label": item.label or "", "use": use,
                 "round": item.round, "time": when.isoformat(timespec="milliseconds")})
  return rows


def write_exports(workdir: str, rows: list[dict], header: dict) -> tuple[str, str]:
  """Writes workdir/labels.csv and labels.json atomically; returns their paths."""
  text = io.StringIO()
  writer = csv.DictWriter(text, EXPORT_FIELDS, lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  paths = (os.path.join(workdir, "labels.csv"), os.path.join(workdir, "labels.json"))
  for path, content in zip(paths, (text.getvalue(),
                                   json.dumps({**header, "labels": rows}, indent=1) + "\n")):
    with files.atomic_write(path, newline="") as f:
      f.write(content)
  return paths


def write_predictions(workdir: str, rows: list[dict]) -> str:
  """Writes workdir/predictions.csv atomically (rows of PREDICTION_FIELDS); its path."""
  text = io.StringIO()
  writer = csv.DictWriter(text, PREDICTION_FIELDS, lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  path = os.path.join(workdir, "predictions.csv")
  with files.atomic_write(path, newline="") as f:
    f.write(text.getvalue())
  return path
