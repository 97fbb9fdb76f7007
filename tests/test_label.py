"""label.py, a person in the loop: the label store, the session's rounds through the
shared round loop, the server's safety measures, the page in a real headless Chromium
(keys, clicks, undo, skip, next rounds, export), and kill -9 at any moment.

The browser tests need Chromium and its driver from Debian (`apt-get install chromium
chromium-driver`, as .ci/run does); they skip without them, except in CI (CI=true or
AL_JAX_REQUIRE_FULL_DATA=1), where a missing browser fails."""

import csv
import dataclasses
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from flax import nnx

from al_jax import datasets, model_registry
from al_jax.labeling import images as images_lib
from al_jax.labeling import headless, pool, server, session, store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABEL_PY = os.path.join(ROOT, "experiments", "label.py")
SAMPLE = os.path.join(ROOT, "al_jax", "sample_data", "fruits360")  # Training/, Test/
SMALL = session.Settings(query_size=6, initial_size=5, validation_size=3, image_size=16,
                         epochs_per_round=2)
SMALL_FLAGS = ["--query_size=6", "--initial_size=5", "--validation_size=3",
               "--image_size=16", "--epochs_per_round=2"]
CI = os.environ.get("CI") == "true" or os.environ.get("AL_JAX_REQUIRE_FULL_DATA") == "1"


# ---------------------------------------------------------------------------- store


def test_store_keeps_one_answer_per_image_and_undoes_the_latest(tmp_path):
  db = store_lib.LabelStore(str(tmp_path / "labels.sqlite"))
  db.put(4, "a/4.jpg", "cat", 0)
  db.put(7, "a/7.jpg", None, 0)
  db.put(4, "a/4.jpg", "dog", 0)  # a second answer replaces the first
  assert db.undo([99]) is None
  assert db.undo([4, 7]).pool_index == 4  # the latest given
  db.put(9, "b/9.jpg", "cat", 1)
  db.close()
  again = store_lib.LabelStore(str(tmp_path / "labels.sqlite"))
  labels = again.all()
  assert {i: (x.path, x.label, x.round) for i, x in labels.items()} == {
      7: ("a/7.jpg", None, 0), 9: ("b/9.jpg", "cat", 1)}
  assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
  rows = store_lib.export_rows(labels, validation={9})
  assert [(r["path"], r["label"], r["use"], r["round"]) for r in rows] == [
      ("a/7.jpg", "", "skipped", 0), ("b/9.jpg", "cat", "validation", 1)]
  csv_path, json_path = store_lib.write_exports(str(tmp_path), rows, {"classes": ["cat"]})
  assert list(csv.DictReader(open(csv_path)))[1]["label"] == "cat"
  assert json.load(open(json_path))["labels"][0]["use"] == "skipped"


def test_load_images_walks_the_folder_and_skips_what_does_not_decode(tmp_path, caplog):
  from PIL import Image
  (tmp_path / "a" / "deeper").mkdir(parents=True)
  Image.new("L", (40, 30), 200).save(tmp_path / "a" / "deeper" / "grey.png")
  Image.new("L", (20, 20), 10).save(tmp_path / "b.jpg")
  (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
  (tmp_path / "notes.txt").write_text("x")
  (tmp_path / ".hidden.png").write_bytes(b"")
  found = images_lib.load_images(tmp_path, image_size=8)
  assert found.paths == ("a/deeper/grey.png", "b.jpg")
  assert found.images.shape == (2, 8, 8, 1) and found.images.dtype == np.uint8
  assert found.images[0].min() == 200 and found.images[1].max() == 10
  assert "skipped 2 of 4 files" in caplog.text
  assert found.unreadable == (("broken.jpg", "cannot identify image file"),)  # not notes.txt
  with pytest.raises(datasets.DataError, match="no images"):
    images_lib.load_images(_empty(tmp_path), image_size=8)


def _empty(tmp_path):
  (tmp_path / "empty").mkdir()
  return tmp_path / "empty"


# -------------------------------------------------------------------------- session


@pytest.fixture(scope="module")
def labeling(tmp_path_factory):
  """A session on the sample in simulation mode (its folder names hidden)."""
  images = pool.open_images(SAMPLE, None, SMALL.image_size)
  s = session.LabelSession(images, str(tmp_path_factory.mktemp("label")), SMALL)
  yield s
  s.close()


def _wait_trained(s, timeout=180):
  deadline = time.time() + timeout
  while s.state()["training"] and time.time() < deadline:
    time.sleep(0.1)
  assert not s.state()["training"] and s.error is None, s.error


def test_a_round_trains_on_the_answers_and_queries_the_next_batch(labeling):  # later tests use its round
  s, images = labeling, labeling.images
  assert images.simulation and len(images.classes) == 10 and images.test[0].shape[0] == 100
  first = [b["index"] for b in s.state()["batch"]]
  assert len(first) == SMALL.initial_size + SMALL.validation_size
  assert set(s.validation.tolist()) <= set(first)
  truth = lambda i: images.classes[images.hidden[i]]
  for i in first[:-1]:
    s.answer(i, truth(i))
  with pytest.raises(session.LabelError, match="unknown class 'zebra'"):
    s.answer(first[-1], "zebra")
  with pytest.raises(session.LabelError, match="not in the current batch"):
    s.answer(next(i for i in range(250) if i not in first), truth(0))
  skipped = first[-1]
  state = s.answer(skipped, None)  # the batch is complete: a round starts
  assert state["training"]
  with pytest.raises(session.Busy):
    s.answer(first[0], truth(first[0]))
  _wait_trained(s)
  state = s.state()
  second = [b["index"] for b in state["batch"]]
  assert len(second) == SMALL.query_size and not set(second) & set(first)
  (record,) = s.loop.results[0]
  assert record["selected"] == second
  # Trained on the answered images that are not held out; the skipped one left the pool.
  held_out = set(s.validation.tolist())
  assert record["num_labeled"] == len([i for i in first[:-1] if i not in held_out])
  assert record["validation_labeled"] == len(held_out - {skipped})
  assert 0 <= record["estimated_accuracy"] <= 1 and 0 <= record["true_accuracy"] <= 1
  assert state["skipped"] == 1 and state["labeled"] == len(first) - 1
  assert os.path.exists(os.path.join(s.workdir, "checkpoints", "1"))
  assert experiment_lines(s.workdir) == [0]


def experiment_lines(workdir):
  return [json.loads(l)["round"] for l in open(os.path.join(workdir, "results.jsonl"))]


def test_a_workdir_for_other_classes_images_or_settings_is_refused(labeling, tmp_path):
  workdir = labeling.workdir
  other = pool.Images(labeling.images.pool, tuple(reversed(labeling.images.classes)),
                         labeling.images.hidden, labeling.images.test)
  with pytest.raises(session.LabelError, match="was made for the classes") as error:
    session.LabelSession(other, workdir, SMALL)
  assert "\n" not in str(error.value)
  with pytest.raises(session.LabelError, match=r"other settings: --query_size=6 \(now 7\); "
                     "pass those to continue it"):
    session.LabelSession(labeling.images, workdir,
                         session.Settings(**{**SMALL.__dict__, "query_size": 7}))
  with pytest.raises(session.LabelError, match="unknown metric 'margin'"):
    session.LabelSession(labeling.images, str(tmp_path / "new"),
                         session.Settings(**{**SMALL.__dict__, "metric": "margin"}))
  assert not os.path.exists(tmp_path / "new" / "labels.sqlite")  # nothing recorded
  fewer = pool.open_images(os.path.join(SAMPLE, "Test"), ("a", "b"), SMALL.image_size)
  with pytest.raises(session.LabelError, match="other images"):
    session.LabelSession(fewer, workdir, SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["entropy", "coreset", "badge", "batchbald"])
def test_predict_ranks_every_image_or_the_next_joint_batch(tmp_path, metric):
  """What `label.py --predict` does (`reopen(workdir).predict()`) after one round: a row
  per unlabeled image; a per-image strategy ranks them all by score, a joint one ranks
  the query_size images of its next batch (before: coreset failed, batchbald chose a
  batch of every unlabeled image)."""
  settings = session.Settings(**{**SMALL.__dict__, "metric": metric})
  images = pool.open_images(SAMPLE, None, settings.image_size)
  labeling = session.LabelSession(images, str(tmp_path), settings)
  try:
    (record,) = headless.simulate(labeling, 1)
  finally:
    labeling.close()
  assert record["metric"] == metric and len(record["selected"]) == settings.query_size
  again = headless.reopen(str(tmp_path))
  try:
    path = again.predict()
    labeled = {again.paths[i] for i, item in again.store.all().items() if item.label}
  finally:
    again.close()
  rows = list(csv.DictReader(open(path)))
  assert len(rows) == len(images.pool.paths) - len(labeled)
  assert not {r["path"] for r in rows} & labeled and len({r["path"] for r in rows}) == len(rows)
  assert all(0 < float(r["probability"]) <= 1 for r in rows)
  ranked = [r for r in rows if r["rank"]]
  assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
  assert rows[:len(ranked)] == ranked  # ranked first, in rank order
  if metric == "entropy":
    assert {r["ranking"] for r in rows} == {"score"} and len(ranked) == len(rows)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    return
  assert {r["ranking"] for r in rows} == {"batch"} and len(ranked) == settings.query_size
  assert all(r["score"] == "" for r in rows[len(ranked):])
  scores = [float(r["score"]) for r in ranked]
  if metric == "batchbald":  # the batch's joint BALD: it grows with every pick
    assert all(b >= a - 1e-6 for a, b in zip(scores, scores[1:])) and scores[-1] > 0
  else:  # core-set and BADGE: a set has no per-image score
    assert scores == [0.0] * settings.query_size


# --------------------------------------------------------------------------- server

PORT = 5917
BASE = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def client(labeling):
  app = server.create_app(labeling, "s3cret", PORT)
  return app.test_client()


def _post(client, path, body, **headers):
  headers = {"X-Token": "s3cret", **headers}
  return client.post(path, json=body, headers=headers, base_url=BASE)


def test_requests_without_or_with_a_wrong_token_are_refused(client):
  for path in ("/", "/api/state", "/image/0", "/static/app.js"):
    assert client.get(path, base_url=BASE).status_code == 403
    assert client.get(path, base_url=BASE, headers={"X-Token": "s3creT"}).status_code == 403
    assert client.get(path + "?token=wrong", base_url=BASE).status_code == 403
  assert client.post("/api/label", json={"index": 0, "label": "x"},
                     base_url=BASE).status_code == 403
  # The URL's token opens the page, whose script, style and images carry it in their
  # URLs; its requests send it in the X-Token header. No cookie is set.
  first = client.get("/?token=s3cret", base_url=BASE)
  assert first.status_code == 200 and "Set-Cookie" not in first.headers
  assert b'src="/static/app.js?token=s3cret"' in first.data
  assert client.get("/static/app.js?token=s3cret", base_url=BASE).status_code == 200
  assert client.get("/api/state", base_url=BASE, headers={"X-Token": "s3cret"}).status_code == 200
  assert client.get("/image/0?token=s3cret", base_url=BASE).mimetype == "image/jpeg"


def test_a_cookie_alone_never_authorises(client, labeling):
  """Browsers send a host's cookies to all its ports: another local web server could
  read one. Only the header (or a GET's URL) carries the token."""
  before = labeling.store.all()
  index = labeling.state()["batch"][0]["index"]
  for name in (f"al_jax_token_{PORT}", "token", "X-Token"):
    client.set_cookie(name, "s3cret", domain="127.0.0.1")
  try:
    for path in ("/", "/api/state", "/image/0", "/static/app.js"):
      assert client.get(path, base_url=BASE).status_code == 403, path
    for path, body in (("/api/label", {"index": index, "label": labeling.classes[0]}),
                       ("/api/skip", {"index": index}), ("/api/undo", {}), ("/api/export", {})):
      assert client.post(path, json=body, base_url=BASE).status_code == 403, path
      # nor a token in the URL of a request that changes something
      assert client.post(path + "?token=s3cret", json=body,
                         base_url=BASE).status_code == 403, path
  finally:
    for name in (f"al_jax_token_{PORT}", "token", "X-Token"):
      client.delete_cookie(name, domain="127.0.0.1")
  assert labeling.store.all() == before


def test_deeply_nested_json_is_a_json_error_and_the_server_keeps_serving(client, labeling):
  before = labeling.store.all()
  deep_list = "[" * 1900 + "]" * 1900
  deep_object = '{"a":' + "[" * 1900 + "]" * 1900 + "}"
  index = labeling.state()["batch"][0]["index"]
  deep_label = '{"index": %d, "label": %s}' % (index, "[" * 1000 + "]" * 1000)
  for text in (deep_list, deep_object, deep_label):
    assert len(text) < server.MAX_BODY
    for path in ("/api/label", "/api/skip", "/api/undo", "/api/export"):
      response = client.post(path, data=text, base_url=BASE, headers={
          "X-Token": "s3cret", "Content-Type": "application/json"})
      assert response.status_code == 400, (path, response.data[:200])
      assert response.json["error"] in ("the body must be a JSON object",
                                        "label must be a class name"), response.json
  assert labeling.store.all() == before
  response = client.get("/api/state", base_url=BASE, headers={"X-Token": "s3cret"})
  assert response.status_code == 200 and response.json["batch"]


def test_an_image_moved_or_changed_after_the_start_is_a_json_error(tmp_path):
  folder = tmp_path / "images"
  shutil.copytree(os.path.join(SAMPLE, "Test"), folder)
  images = pool.open_images(str(folder), ("a", "b"), SMALL.image_size)
  s = session.LabelSession(images, str(tmp_path / "work"), SMALL)
  try:
    client = server.create_app(s, "s3cret", PORT).test_client()
    get = lambda i: client.get(f"/image/{i}", base_url=BASE, headers={"X-Token": "s3cret"})
    assert get(2).mimetype == "image/jpeg"
    os.remove(folder / images.pool.paths[0])
    (folder / images.pool.paths[1]).write_bytes(b"not an image any more")
    for i, kind in ((0, "FileNotFoundError"), (1, "UnidentifiedImageError")):
      response = get(i)
      assert response.status_code == 404 and response.mimetype == "application/json"
      assert response.json["error"] == (
          f"image {i} ({images.pool.paths[i]}) cannot be read ({kind}): it was moved or "
          "changed since label.py started; skip it (0)")
    assert get(2).mimetype == "image/jpeg"  # made before: still served
    state = client.get("/api/state", base_url=BASE, headers={"X-Token": "s3cret"})
    assert state.status_code == 200
    assert [b["guess"] for b in state.json["batch"]] == [None] * 8  # no model yet
  finally:
    s.close()


def test_the_state_counts_trained_held_out_and_unlabeled_images(client, labeling):
  state = client.get("/api/state", base_url=BASE, headers={"X-Token": "s3cret"}).json
  labels = labeling.store.all()
  held_out = set(labeling.validation.tolist())
  given = [i for i, x in labels.items() if x.label is not None]
  assert state["progress"] == {
      "labeled": len(given), "held_out": len([i for i in given if i in held_out]),
      "trained": len([i for i in given if i not in held_out]),
      "skipped": len(labels) - len(given), "unlabeled": 250 - len(labels), "pool": 250}
  assert state["progress"]["trained"] == labeling.loop.results[0][-1]["num_labeled"]
  assert state["held_out_in_batch"] == [b["index"] for b in state["batch"]
                                        if b["index"] in held_out]
  assert state["workdir"] == os.path.abspath(labeling.workdir)
  assert state["unreadable"] == {"count": 0, "files": []}  # every sample image decodes
  assert state["metric"] == "badge"  # the page's default: diverse batches


def test_each_image_of_the_batch_has_the_latest_models_guess(client, labeling):
  state = client.get("/api/state", base_url=BASE, headers={"X-Token": "s3cret"}).json
  assert state["round"] == 1
  probs = labeling.model_probs()
  assert probs.shape == (250, 10) and np.allclose(probs.sum(-1), 1, atol=1e-5)
  for b in state["batch"]:
    c = int(np.argmax(probs[b["index"]]))
    assert b["guess"]["label"] == labeling.classes[c]
    assert b["guess"]["probability"] == pytest.approx(float(probs[b["index"], c]))


def test_an_answer_of_an_earlier_batch_can_be_changed(client, labeling):
  state = client.get("/api/state", base_url=BASE, headers={"X-Token": "s3cret"}).json
  shown = [b["index"] for b in state["batch"]]
  labels = labeling.store.all()
  earlier = client.get("/api/answers", base_url=BASE, headers={"X-Token": "s3cret"}).json
  assert [a["index"] for a in earlier["answers"]] == [
      x.pool_index for x in sorted(labels.values(), key=lambda x: -x.seq)]
  assert all(a["round"] == 0 for a in earlier["answers"])
  (skipped,) = [i for i, x in labels.items() if x.label is None]
  never = next(i for i in range(250) if i not in labels and i not in shown)
  for index, label, message in (
      (never, labeling.classes[0], f"image {never} has no earlier answer to change"),
      (shown[0], labeling.classes[0], f"image {shown[0]} is in the current batch"),
      (skipped, "zebra", "unknown class 'zebra'"), ("1", None, "index must be an integer")):
    response = _post(client, "/api/correct", {"index": index, "label": label})
    assert response.status_code == 400 and message in response.json["error"]
  assert labeling.store.all() == labels
  response = _post(client, "/api/correct", {"index": skipped, "label": labeling.classes[2]})
  assert response.status_code == 200
  assert response.json["progress"]["skipped"] == state["progress"]["skipped"] - 1
  row = labeling.store.all()[skipped]
  assert (row.label, row.round) == (labeling.classes[2], 1)  # given in round 1
  assert _post(client, "/api/correct", {"index": skipped, "label": None}).status_code == 200
  assert labeling.store.all()[skipped].label is None


def test_a_port_is_checked_before_anything_starts():
  with pytest.raises(session.LabelError, match=r"^--port=99999 is not a port; pass 1-65535"):
    server.check_address("127.0.0.1", 99999)
  with pytest.raises(session.LabelError, match=r"^--port=-5 is not a port"):
    server.check_address("127.0.0.1", -5)
  server.check_address("127.0.0.1", 0)
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(session.LabelError, match=f"cannot listen on 127.0.0.1:{port} "
                       r"\(Address already in use\): another program"):
      server.check_address("127.0.0.1", port)
  server.check_address("127.0.0.1", port)  # free again


def test_unknown_class_and_bad_bodies_are_refused(client, labeling):
  index = labeling.state()["batch"][0]["index"]
  before = labeling.store.all()
  response = _post(client, "/api/label", {"index": index, "label": "zebra"})
  assert response.status_code == 400 and "unknown class 'zebra'" in response.json["error"]
  assert _post(client, "/api/label", {"index": "0", "label": "x"}).status_code == 400
  assert _post(client, "/api/label", [1, 2]).status_code == 400
  assert client.post("/api/label", data="index=0&label=Banana+1", base_url=BASE,
                     headers={"X-Token": "s3cret", "Content-Type":
                              "application/x-www-form-urlencoded"}).status_code == 415
  assert labeling.store.all() == before


def test_no_path_from_a_request_reaches_the_file_system(client):
  for path in ("/image/../../../../etc/passwd", "/image/..%2f..%2fsession.py",
               "/static/../session.py", "/static/..%2fsession.py", "/static/index.html",
               "/image/-1", "/image/250", "/image/1e3", "/etc/passwd", "/labels.sqlite"):
    response = client.get(path, base_url=BASE, headers={"X-Token": "s3cret"})
    assert response.status_code == 404, path
    assert b"root:" not in response.data and b"import" not in response.data


def test_oversized_bodies_are_refused(client, labeling):
  before = labeling.store.all()
  big = {"index": 0, "label": "x" * (server.MAX_BODY + 10)}
  assert _post(client, "/api/label", big).status_code == 413
  assert labeling.store.all() == before


def test_cross_origin_posts_and_foreign_hosts_are_refused(client, labeling):
  index = labeling.state()["batch"][0]["index"]
  label = labeling.classes[0]
  before = labeling.store.all()
  assert _post(client, "/api/label", {"index": index, "label": label},
               Origin="http://evil.example").status_code == 403
  assert _post(client, "/api/label", {"index": index, "label": label},
               Origin=f"http://127.0.0.1:{PORT + 1}").status_code == 403
  assert _post(client, "/api/undo", {}, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
  assert client.get("/api/state", base_url=f"http://rebound.example:{PORT}",
                    headers={"X-Token": "s3cret"}).status_code == 403
  assert labeling.store.all() == before
  ok = _post(client, "/api/label", {"index": index, "label": label}, Origin=BASE)
  assert ok.status_code == 200 and labeling.store.all()[index].label == label
  assert _post(client, "/api/undo", {}, Origin=BASE).json["undone"] == index


# --------------------------------------------------------------- real processes


def _env(tmp_path):
  env = dict(os.environ)
  env.setdefault("AL_JAX_CACHE_DIR", str(tmp_path / "cache"))
  return env


_STARTED = []


@pytest.fixture(autouse=True)
def _end_servers():
  """Servers a test started end with it, even when it fails."""
  yield
  while _STARTED:
    proc = _STARTED.pop()
    if proc.poll() is None:
      proc.kill()
      proc.wait()


class Server:
  """experiments/label.py as a person starts it; `url` is the line it prints."""

  def __init__(self, workdir, tmp_path, *flags):
    self.log = open(tmp_path / "server.log", "a")
    self.proc = subprocess.Popen(
        [sys.executable, LABEL_PY, f"--images={SAMPLE}", f"--workdir={workdir}",
         *SMALL_FLAGS, *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log,
        text=True, env=_env(tmp_path))
    _STARTED.append(self.proc)
    ready, _, _ = select.select([self.proc.stdout], [], [], 180)
    assert ready, "label.py printed no URL"
    self.url = self.proc.stdout.readline().strip()
    assert self.url.startswith("http://127.0.0.1:") and "?token=" in self.url, self.url
    self.base, self.token = self.url.split("/?token=")

  def api(self, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(self.base + path, data=data, headers={
        "X-Token": self.token, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
      return json.load(response)

  def wait(self, condition, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
      state = self.api("/api/state")
      if condition(state):
        return state
      time.sleep(0.2)
    raise AssertionError(f"timed out; last state {state}")

  def kill(self, sig=signal.SIGKILL):
    self.proc.send_signal(sig)
    self.proc.wait(timeout=60)
    self.log.close()


def _rows(workdir):
  db = sqlite3.connect(os.path.join(workdir, "labels.sqlite"))
  rows = db.execute("SELECT pool_index, label, round FROM labels ORDER BY seq").fetchall()
  db.close()
  return rows


@pytest.mark.slow
def test_kill_9_mid_batch_and_mid_round_loses_and_repeats_nothing(tmp_path):
  workdir = str(tmp_path / "work")
  first = Server(workdir, tmp_path)
  batch = [b["index"] for b in first.api("/api/state")["batch"]]
  classes = first.api("/api/state")["classes"]
  given = {i: classes[k % len(classes)] for k, i in enumerate(batch)}
  for i in batch[:3]:
    first.api("/api/label", {"index": i, "label": given[i]})
  first.kill()  # mid-batch
  second = Server(workdir, tmp_path)
  state = second.api("/api/state")
  assert [b["index"] for b in state["batch"]] == batch  # the same batch
  assert [b["label"] for b in state["batch"] if b["answered"]] == [given[i] for i in batch[:3]]
  for i in batch[3:]:
    second.api("/api/label", {"index": i, "label": given[i]})
  second.kill()  # at once: mid-round (training or compiling)
  assert [(i, l) for i, l, _ in _rows(workdir)] == [(i, given[i]) for i in batch]
  third = Server(workdir, tmp_path)
  state = third.wait(lambda s: s["round"] == 1 and not s["training"])
  after = [b["index"] for b in state["batch"]]
  assert len(after) == SMALL.query_size and not set(after) & set(batch)  # the next one
  assert state["labeled"] == len(batch) and not any(b["answered"] for b in state["batch"])
  third.kill(signal.SIGTERM)  # a clean stop exports
  assert [(i, l) for i, l, _ in _rows(workdir)] == [(i, given[i]) for i in batch]
  exported = list(csv.DictReader(open(os.path.join(workdir, "labels.csv"))))
  assert len(exported) == len(batch) and {r["round"] for r in exported} == {"0"}


class _NoDropout(nnx.Module):
  """A user's model (NNX) without dropout: BALD's passes would all be the same."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.out = nnx.Linear(16 * 16 * 3, num_classes, rngs=rngs)

  def __call__(self, x):
    return self.out(x.reshape(x.shape[0], -1))


def test_a_model_that_cannot_serve_the_strategy_is_one_line_before_the_workdir(tmp_path):
  model_registry.register_model("test_label_no_dropout", _NoDropout, replace=True)
  try:
    images = pool.open_images(SAMPLE, None, SMALL.image_size)
    settings = session.Settings(**{**SMALL.__dict__, "metric": "bald",
                                   "model": "test_label_no_dropout"})
    with pytest.raises(session.LabelError, match="has no dropout") as error:
      session.LabelSession(images, str(tmp_path / "work"), settings)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "work").exists()  # nothing written
  finally:
    model_registry.unregister_model("test_label_no_dropout")


# ------------------------------------------------------------ your own features

FEATURE_DIM = 24


def _write_features(path, drop=0):
  """An .npz of one vector per sample image (Training/ and Test/, paths relative to the
  sample folder): a fixed random projection of its 16x16 pixels; `drop` leaves out the
  last images' vectors."""
  paths, vectors = [], []
  weights = np.random.default_rng(0).standard_normal((16 * 16 * 3, FEATURE_DIM)) / 16
  for part in ("Training", "Test"):
    found = images_lib.load_images(os.path.join(SAMPLE, part), image_size=16)
    paths += [f"{part}/{p}" for p in found.paths]
    vectors.append(found.images.reshape(len(found.paths), -1) / 255 @ weights)
  vectors = np.concatenate(vectors).astype(np.float32)
  np.savez(path, paths=np.array(paths[:len(paths) - drop]),
           features=vectors[:len(paths) - drop])
  return str(path)


def test_the_model_trains_on_the_images_vectors_and_predict_reopens_them(tmp_path):
  """--features: the page's images stay the files, the model (the MLP) takes each
  image's vector, in simulation its true accuracy too; --predict reopens the vectors."""
  features = _write_features(tmp_path / "features.npz")
  settings = dataclasses.replace(SMALL, features=features)
  images = pool.open_images(SAMPLE, None, settings.image_size, features)
  assert images.vectors.shape == (len(images.pool.paths), FEATURE_DIM)
  assert images.inputs is images.vectors and images.test[0].shape == (100, FEATURE_DIM)
  labeling = session.LabelSession(images, str(tmp_path / "work"), settings,
                                  images_arg=pool.images_argument(SAMPLE))
  try:
    assert labeling.state()["model"] == f"mlp on the vectors of features.npz [{FEATURE_DIM}]"
    assert open(labeling.thumbnail(0), "rb").read(2) == b"\xff\xd8"  # a JPEG of the file
    records = headless.simulate(labeling, 2)
    assert type(labeling.loop.model().model.module).__name__ == "FeatureMLP"
  finally:
    labeling.close()
  assert [r["num_labeled"] for r in records] == [5, 11]
  assert all(0.0 <= r["true_accuracy"] <= 1.0 for r in records)
  again = headless.reopen(str(tmp_path / "work"))
  try:
    assert again.images.vectors is not None
    rows = list(csv.DictReader(open(again.predict())))
  finally:
    again.close()
  assert len(rows) == len(images.pool.paths) - 11 - SMALL.validation_size


def test_an_image_without_a_vector_is_one_line_before_the_workdir(tmp_path):
  features = _write_features(tmp_path / "features.npz", drop=3)
  with pytest.raises(datasets.DataError, match="has no vector for 3 of the 100 images") as e:
    pool.open_images(SAMPLE, None, SMALL.image_size, features)
  assert "\n" not in str(e.value)
  np.savez(tmp_path / "bad.npz", paths=np.array(["a.jpg"]), features=np.zeros((2, 4)))
  with pytest.raises(datasets.DataError, match=r"expected str \[N\] and float \[N, D\]"):
    pool.open_images(SAMPLE, None, SMALL.image_size, str(tmp_path / "bad.npz"))


@pytest.mark.slow
def test_bad_input_is_one_line_from_a_real_process(tmp_path):
  for flags, message in (
      (["--images=sample", f"--workdir={tmp_path}"], "error: name at least 2 classes"),
      ([f"--workdir={tmp_path / 'none'}", "--predict"], "holds no labels.sqlite")):
    out = subprocess.run([sys.executable, LABEL_PY, *flags], cwd=ROOT, capture_output=True,
                         text=True, env=_env(tmp_path), timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], out.stderr[-1000:]


@pytest.mark.slow
def test_bad_flags_are_one_line_before_the_workdir_is_made(tmp_path):
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    for flags, message in (
        (["--classes=apple,apple,banana"], "--classes names apple more than once"),
        (["--classes=Apple,banana,apple "], "--classes names Apple, apple more than once"),
        (["--classes=a,b", f"--port={port}"], f"cannot listen on 127.0.0.1:{port} "
         "(Address already in use): another program (or another label.py) uses it"),
        (["--classes=a,b", "--port=99999"], "--port=99999 is not a port; pass 1-65535"),
        (["--classes=a,b", "--port=-5"], "--port=-5 is not a port; pass 1-65535")):
      workdir = tmp_path / "work"
      started = time.time()
      out = subprocess.run([sys.executable, LABEL_PY, "--images=sample",
                            f"--workdir={workdir}", *flags], cwd=ROOT, capture_output=True,
                           text=True, env=_env(tmp_path), timeout=120)
      assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
      errors = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
      assert len(errors) == 1 and message in errors[0], out.stderr[-1000:]
      assert not workdir.exists(), flags
      print(f"{flags}: {time.time() - started:.1f} s")


@pytest.mark.slow
def test_a_workdir_resumes_with_its_own_settings_when_no_flag_says_otherwise(tmp_path):
  """A workdir made with --metric=entropy (the earlier default) and small settings goes
  on with them when label.py is started again without those flags."""
  workdir = tmp_path / "work"
  runs = []
  for flags in ([*SMALL_FLAGS, "--metric=entropy"], []):
    out = subprocess.run([sys.executable, LABEL_PY, f"--images={SAMPLE}",
                          f"--workdir={workdir}", "--simulate=1", *flags], cwd=ROOT,
                         capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs.append([json.loads(line) for line in out.stdout.splitlines()
                 if line.startswith("{")])
  assert runs[0][-1]["round"] < runs[1][-1]["round"]  # the second start went on
  setup = headless.saved_setup(str(workdir))
  assert setup["settings"] == {**SMALL.__dict__, "metric": "entropy"}
  assert headless.saved_setup(str(tmp_path / "none")) is None


@pytest.mark.slow
def test_label_default_measures_varieties_and_near_duplicates_per_batch(tmp_path):
  """experiments/label_default.py (docs/BENCHMARKS.md): one random round, seed 0."""
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "label_default.py"),
       "--metrics=random", "--seeds=0", "--rounds=1", f"--workdir={tmp_path / 'runs'}"],
      cwd=ROOT, capture_output=True, text=True, env=_env(tmp_path), timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  run = json.loads(out.stdout)["strategies"]["random"]["runs"]["0"]
  # The batch random chose, as in the table: 9 varieties, no near-copies.
  assert run["varieties"] == [9] and run["near_duplicates"] == [0.0]
  assert 0 < run["true_accuracy"][0] <= 1 and len(run["estimated_accuracy"]) == 1


# ---------------------------------------------------------------------- the browser
def _browser():
  """A headless Chromium from the system packages (never downloaded at run time)."""
  chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                  "google-chrome"))), None)
  driver = shutil.which("chromedriver")
  try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
  except ImportError:
    webdriver = None
  if not (chromium and driver and webdriver):
    message = ("the browser tests need Chromium, chromedriver and selenium: apt-get install "
               "chromium chromium-driver; pip install -e '.[test]'")
    if CI:
      pytest.fail(message)
    pytest.skip(message)
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--disable-gpu"):
    options.add_argument(arg)
  return webdriver.Chrome(service=Service(executable_path=driver), options=options)


_PAGE = """
const tiles = [...document.querySelectorAll('#grid .tile')];
return {round: document.getElementById('round').textContent,
        training: document.getElementById('status').dataset.training === 'true',
        batch: tiles.map((t) => Number(t.dataset.index)),
        answered: Object.fromEntries(tiles.filter((t) => t.dataset.answered === 'true')
                                     .map((t) => [t.dataset.index, t.dataset.label])),
        current: tiles.filter((t) => t.classList.contains('current'))
                      .map((t) => Number(t.dataset.index))[0],
        settled: window.alLatencies.length};
"""
_CAPTIONS = "return [...document.querySelectorAll('#grid figcaption')].map((c) => c.textContent)"


class Page:
  """label.py's page at `url` in a headless Chromium, as a person uses it: keys go to the
  page's body, and `state()` reads what the page shows (_PAGE, or another script)."""

  def __init__(self, url: str, poll: float = 0.1):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    self.driver = _browser()
    self.driver.get(url)
    self.wait = WebDriverWait(self.driver, 180, poll_frequency=poll)
    self.body = self.driver.find_element(By.TAG_NAME, "body")

  def state(self, script: str = _PAGE):
    return self.driver.execute_script(script)

  def until(self, condition, script: str = _PAGE):
    """The state once `condition(state)` holds (waits up to 180 s)."""
    return self.wait.until(lambda _: (lambda s: condition(s) and s)(self.state(script)))

  def answer(self, keys) -> None:
    """Presses each key in turn, waiting for the page to confirm each answer."""
    start = self.state()["settled"]
    for n, key in enumerate(keys):
      self.body.send_keys(key)
      self.until(lambda s: s["settled"] == start + n + 1)

  def first_batch(self) -> dict:
    """The state once the first batch (initial and held-out images) is on the page."""
    return self.until(lambda s: len(s["batch"]) == SMALL.initial_size + SMALL.validation_size)


@pytest.fixture
def open_page():
  """open_page(url, poll=0.1) -> Page; every page's browser quits when the test ends."""
  pages = []

  def open_(url: str, **kwargs) -> Page:
    pages.append(Page(url, **kwargs))
    return pages[-1]
  yield open_
  for page in pages:
    page.driver.quit()


@pytest.mark.slow
def test_label_two_rounds_in_the_browser_by_keyboard(tmp_path, open_page):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  workdir = str(tmp_path / "work")
  paths = images_lib.load_images(os.path.join(SAMPLE, "Training"), image_size=16).paths
  served = Server(workdir, tmp_path)
  page = open_page(served.url, poll=0.05)
  browser = page.driver
  assert browser.get_cookies() == []  # no cookie: the page sends the token itself
  page.first_batch()
  keys = page.state(
      "return Object.fromEntries([...document.querySelectorAll('#classes button')]"
      ".map((b) => [b.dataset.label, b.querySelector('kbd').textContent]))")
  truth = lambda i: paths[i].split("/")[0]
  assert set(map(truth, range(len(paths)))) == set(keys)

  def answered(expect):
    state = page.until(lambda p: p["settled"] >= expect)
    return {int(i): l for i, l in state["answered"].items()}

  batches, given, skipped = [], {}, None
  for round_ in range(2):
    state = page.until(lambda p: p["round"] == str(round_ + 1) and not p["training"]
                       and p["batch"])
    batches.append(state["batch"])
    start = state["settled"]
    if round_ == 0:
      # A label, then undo: the same image is current again and unanswered.
      first = state["current"]
      page.body.send_keys(keys[truth(first)])
      assert answered(start + 1) == {first: truth(first)}
      page.body.send_keys(Keys.BACKSPACE)
      page.until(lambda p: p["answered"] == {} and p["current"] == first)
      # "Not sure": 0 skips the current image.
      skipped = first
      page.body.send_keys("0")
      assert answered(start + 2) == {skipped: ""}
      # A click on an image, then on a class button, labels it.
      index = state["batch"][-1]
      browser.find_element(By.CSS_SELECTOR, f'.tile[data-index="{index}"]').click()
      page.until(lambda p: p["current"] == index)
      browser.find_element(By.CSS_SELECTOR,
                           f'#classes button[data-label="{truth(index)}"]').click()
      given[index] = truth(index)
      assert answered(start + 3) == {skipped: "", index: truth(index)}
    # The rest by keyboard, one key each, as fast as the page takes them.
    state = page.state()
    while len(state["answered"]) < len(state["batch"]):
      i = state["current"]
      given[i] = truth(i)
      page.body.send_keys(keys[given[i]])
      state = page.until(lambda p: p["answered"].get(str(i)) == given[i])
  state = page.until(lambda p: p["round"] == "3" and not p["training"])
  assert batches[1] != batches[0] and not set(batches[1]) & set(batches[0])
  assert state["batch"] and not set(state["batch"]) & set(batches[0] + batches[1])
  assert len(browser.find_elements(By.CSS_SELECTOR, "#curve circle")) >= 2
  browser.find_element(By.ID, "export").click()
  page.wait.until(lambda b: "Wrote" in b.find_element(By.ID, "exported").text)
  browser.execute_script("window.scrollTo(0, 0); document.querySelector('aside').scrollTop = 0")
  screenshot = os.environ.get("AL_JAX_LABEL_SCREENSHOT") or str(tmp_path / "page.png")
  browser.save_screenshot(screenshot)
  latencies = np.array(page.state("return window.alLatencies"))
  rows = _rows(workdir)
  assert len(rows) == len({i for i, _, _ in rows}) == sum(map(len, batches))
  assert {i: l for i, l, _ in rows} == {**given, skipped: None}
  assert {r for _, _, r in rows} == {0, 1}
  assert {i for i, _, r in rows if r == 1} == set(batches[1])
  exported = list(csv.DictReader(open(os.path.join(workdir, "labels.csv"))))
  assert [(r["path"], r["label"] or None) for r in exported] == [
      (paths[i], l) for i, l, _ in rows]
  assert {r["use"] for r in exported} == {"train", "validation", "skipped"}
  print(f"\nlabel key press to confirmed label on the page: median "
        f"{np.median(latencies):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms over "
        f"{len(latencies)} answers")
  served.kill(signal.SIGTERM)
  results = [json.loads(l) for l in open(os.path.join(workdir, "results.jsonl"))]
  assert [r["round"] for r in results] == [0, 1]
  predicted = subprocess.run([sys.executable, LABEL_PY, f"--workdir={workdir}", "--predict"],
                             cwd=ROOT, capture_output=True, text=True, env=_env(tmp_path),
                             timeout=300)
  assert predicted.returncode == 0, predicted.stderr[-2000:]
  predictions = list(csv.DictReader(open(os.path.join(workdir, "predictions.csv"))))
  unlabeled = len(paths) - len([r for r in rows if r[1] is not None])
  assert len(predictions) == unlabeled
  assert [p["rank"] for p in predictions][:3] == ["1", "2", "3"]
  # badge, the default, chooses a batch: ranks 1..query_size, the other images unranked
  assert {p["ranking"] for p in predictions} == {"batch"}
  assert [p["rank"] for p in predictions if p["rank"]] == [str(r) for r in
                                                          range(1, SMALL.query_size + 1)]
  assert {p["predicted_label"] for p in predictions} <= set(keys)
  assert all(0 < float(p["probability"]) <= 1 for p in predictions)


_STATUS = """
const status = document.getElementById('status');
return {text: status.textContent, connection: status.dataset.connection,
        training: status.dataset.training === 'true',
        spinners: document.querySelectorAll('#status .spinner').length,
        pending: document.querySelectorAll('#grid .tile.pending').length,
        answered: document.querySelectorAll('#grid .tile.answered').length,
        tiles: document.querySelectorAll('#grid .tile').length,
        round: document.getElementById('round').textContent};
"""


@pytest.mark.slow
def test_the_page_tells_when_the_server_stops_and_continues_after_a_restart(tmp_path,
                                                                            open_page):
  workdir = str(tmp_path / "work")
  served = Server(workdir, tmp_path)
  page = open_page(served.url)
  status = lambda: page.state(_STATUS)
  until = lambda condition: page.until(condition, _STATUS)
  page.first_batch()
  page.answer("11")
  first_two = page.state()["answered"]
  served.kill()  # kill -9 while the page is open
  page.body.send_keys("1")  # an answer the server never gets
  lost = until(lambda s: s["connection"] == "lost")
  assert "The server does not answer: label.py stopped or is restarting" in lost["text"]
  assert f"{os.path.abspath(workdir)}/labels.sqlite" in lost["text"]
  assert lost["pending"] == 0 and lost["answered"] == 2 and lost["spinners"] == 0
  page.body.send_keys("1")  # refused while the server is away
  assert status()["answered"] == 2
  again = Server(workdir, tmp_path)
  assert again.url == served.url  # the same port and token: the page reconnects
  back = until(lambda s: s["connection"] == "ok" and "was restarted" in s["text"])
  assert back["answered"] == 2 and page.state()["answered"] == first_two
  while status()["answered"] < status()["tiles"]:
    count = status()["answered"]
    page.body.send_keys("1")
    until(lambda s: s["answered"] == count + 1 and s["pending"] == 0)
  training = until(lambda s: s["training"])
  assert training["spinners"] == 1
  again.kill()  # mid-round: the spinner must not count on
  lost = until(lambda s: s["connection"] == "lost")
  assert lost["spinners"] == 0 and not lost["training"] and "does not answer" in lost["text"]
  third = Server(workdir, tmp_path)
  assert third.url == served.url
  state = until(lambda s: s["connection"] == "ok" and s["round"] == "2" and not s["training"])
  assert state["tiles"] == SMALL.query_size and state["answered"] == 0
  assert "was restarted" in state["text"]
  assert len(_rows(workdir)) == SMALL.initial_size + SMALL.validation_size


_GEOMETRY = """
const header = document.querySelector('header').getBoundingClientRect();
const visible = (el) => {
  const r = el.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return r.top >= header.bottom - 1 && r.bottom <= window.innerHeight + 1 && r.left >= 0 &&
         r.right <= window.innerWidth + 1 && hit !== null && el.contains(hit);
};
const tiles = [...document.querySelectorAll('#grid .tile')];
const current = document.querySelector('#grid .tile.current');
return {buttons: [...document.querySelectorAll('#classes button, #skip, #undo')].map(visible),
        current: current ? visible(current) : null, currentAt: tiles.indexOf(current),
        first: tiles.length ? visible(tiles[0]) : null,
        rows: new Set(tiles.map((t) => Math.round(t.offsetTop))).size,
        pageScroll: window.scrollY, gridScroll: document.getElementById('grid').scrollTop,
        progress: document.getElementById('progress').textContent.replace(/\\s+/g, ' '),
        problems: tiles.map((t) => t.querySelector('.problem').textContent)};
"""


@pytest.mark.slow
def test_at_1400x1000_the_buttons_stay_in_view_while_the_last_rows_are_labeled(tmp_path,
                                                                               open_page):
  from selenium.webdriver.common.by import By
  folder = tmp_path / "images"  # a copy: one of its files goes away after the start
  shutil.copytree(SAMPLE, folder)
  paths = images_lib.load_images(folder / "Training", image_size=16).paths
  workdir = str(tmp_path / "work")
  served = Server(workdir, tmp_path, f"--images={folder}", "--initial_size=20",
                  "--validation_size=10", "--query_size=30")
  state = served.api("/api/state")
  batch = [b["index"] for b in state["batch"]]
  held_out = set(state["held_out_in_batch"])
  gone = next(i for i in batch[3:] if i not in held_out)
  os.remove(folder / "Training" / paths[gone])
  page = open_page(served.url)
  assert page.driver.get_window_size() == {"width": 1400, "height": 1000}
  geometry = lambda: page.state(_GEOMETRY)
  page.until(lambda s: len(s["batch"]) == 30)
  shown = page.until(lambda g: g["problems"][batch.index(gone)], _GEOMETRY)
  assert "moved or changed since label.py started; skip it (0)" in \
      shown["problems"][batch.index(gone)]
  assert shown["rows"] >= 5 and shown["first"] and all(shown["buttons"])
  assert len(held_out) == 10 and len(page.driver.find_elements(
      By.CSS_SELECTOR, "#grid .tile.held-out .tag")) == 10
  keys = page.state(
      "return [...document.querySelectorAll('#classes kbd')].map((k) => k.textContent)")
  for n in range(30):
    where = geometry()
    assert where["current"] and all(where["buttons"]), (n, where)
    assert where["pageScroll"] == 0
    page.answer(["0" if page.state()["current"] == gone else keys[n % len(keys)]])
  assert geometry()["gridScroll"] > 0  # the last rows were scrolled to
  status = page.wait.until(lambda b: (lambda t: "Training on" in t and t)(
      b.find_element(By.ID, "status").text))
  assert "Training on 19 labels (10 held out test it)" in status, status
  assert ("labeled 29 (trained on 19, held out 10) · skipped 1 · unlabeled left 220 of 250"
          in geometry()["progress"])
  page.until(lambda s: s["round"] == "2" and not s["training"] and s["batch"])
  where = geometry()
  assert where["gridScroll"] == 0 and where["first"] and where["currentAt"] == 0
  assert all(where["buttons"])


@pytest.mark.slow
def test_the_page_names_the_image_files_that_do_not_decode(tmp_path, open_page):
  folder = tmp_path / "images"
  shutil.copytree(SAMPLE, folder)
  (folder / "Training" / "Banana 1" / "broken.jpg").write_bytes(b"not a jpeg")
  (folder / "Training" / "Plum 1" / "empty.png").write_bytes(b"")
  (folder / "Training" / "notes.txt").write_text("not an image: not named")
  served = Server(str(tmp_path / "work"), tmp_path, f"--images={folder}")
  state = served.api("/api/state")
  assert state["unreadable"] == {"count": 2, "files": [
      {"path": "Banana 1/broken.jpg", "why": "cannot identify image file"},
      {"path": "Plum 1/empty.png", "why": "cannot identify image file"}]}
  assert state["progress"]["pool"] == 250
  notice = ("const u = document.getElementById('unreadable'); "
            "return {hidden: u.hidden, text: u.textContent, batch: "
            "document.querySelectorAll('#grid .tile').length}")
  text = open_page(served.url).until(lambda u: not u["hidden"], notice)["text"]
  assert text == ("Left out, as they do not decode: 2 image files: Banana 1/broken.jpg "
                  "(cannot identify image file), Plum 1/empty.png (cannot identify image "
                  "file). A workdir keeps the images it started with: fixed files join "
                  "only in a new --workdir."), text
  served.kill(signal.SIGTERM)
  clean = Server(str(tmp_path / "clean"), tmp_path)  # none: no notice
  assert clean.api("/api/state")["unreadable"] == {"count": 0, "files": []}
  assert open_page(clean.url).until(lambda u: u["batch"], notice)["hidden"]
  clean.kill(signal.SIGTERM)


@pytest.mark.slow
def test_the_models_guess_is_on_each_tile_and_enter_takes_it(tmp_path, open_page):
  from selenium.webdriver.common.by import By
  workdir = str(tmp_path / "work")
  served = Server(workdir, tmp_path)
  page = open_page(served.url)
  captions = lambda: page.state(_CAPTIONS)
  page.first_batch()
  assert not any(captions()) and not page.driver.find_element(By.ID, "accept").is_displayed()
  page.body.send_keys("\n")  # no model yet: Enter does nothing
  assert page.state()["settled"] == 0
  page.answer("12" * ((SMALL.initial_size + SMALL.validation_size) // 2))
  page.until(lambda s: s["round"] == "2" and not s["training"] and s["batch"] and
             all(c.startswith("guess: ") for c in captions()))
  state = served.api("/api/state")
  guesses = {b["index"]: b["guess"] for b in state["batch"]}
  assert [b["index"] for b in state["batch"]] == page.state()["batch"]
  assert captions() == [f"guess: {g['label']} {round(g['probability'] * 100)}%"
                        for g in guesses.values()]
  assert page.driver.find_element(By.ID, "accept").is_displayed()
  for i in page.state()["batch"]:  # one key each: Enter confirms the guess
    assert page.state()["current"] == i
    page.answer(["\n"])
    assert page.state()["answered"][str(i)] == guesses[i]["label"]
  given = {i: l for i, l, r in _rows(workdir) if r == 1}
  assert given == {i: g["label"] for i, g in guesses.items()}


@pytest.mark.slow
def test_the_page_shows_the_images_while_the_model_trains_on_their_vectors(tmp_path,
                                                                           open_page):
  """label.py --features=FILE.npz: every tile shows its image file, the header names the
  model and its inputs, and after the first batch the MLP's guesses are on the tiles."""
  from selenium.webdriver.common.by import By
  features = _write_features(tmp_path / "features.npz")
  workdir = str(tmp_path / "work")
  served = Server(workdir, tmp_path, f"--features={features}")
  page = open_page(served.url)
  first = SMALL.initial_size + SMALL.validation_size
  page.first_batch()
  shown = "return [...document.querySelectorAll('#grid img')].map((i) => i.naturalWidth)"
  page.until(lambda widths: len(widths) == first and all(w > 0 for w in widths), shown)
  assert page.driver.find_element(By.ID, "model").text == \
      f"mlp on the vectors of features.npz [{FEATURE_DIM}]"
  page.answer("12" * (first // 2))
  page.until(lambda s: s["round"] == "2" and not s["training"] and s["batch"] and
             all(c.startswith("guess: ") for c in page.state(_CAPTIONS)))
  assert len([r for r in _rows(workdir) if r[2] == 0]) == first
  assert headless.saved_setup(workdir)["settings"]["features"] == features  # resumes with it


@pytest.mark.slow
def test_an_earlier_rounds_answer_is_changed_in_the_page_and_trained_on(tmp_path, open_page):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select
  workdir = str(tmp_path / "work")
  served = Server(workdir, tmp_path)
  page = open_page(served.url)
  first = SMALL.initial_size + SMALL.validation_size
  page.first_batch()
  classes = served.api("/api/state")["classes"]
  page.answer("1" * first)  # every answer "1": the first class
  page.until(lambda s: s["round"] == "2" and not s["training"])
  batch_one = [i for i, _, r in _rows(workdir) if r == 0]
  page.driver.find_element(By.CSS_SELECTOR, "#earlier summary").click()
  rows = page.wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#earlier-list .earlier"))
  assert sorted(int(r.get_attribute("data-index")) for r in rows) == sorted(batch_one)
  changed = int(rows[0].get_attribute("data-index"))
  Select(rows[0].find_element(By.TAG_NAME, "select")).select_by_value(classes[3])
  page.wait.until(lambda b: b.find_element(
      By.CSS_SELECTOR, f'.earlier[data-index="{changed}"]').get_attribute("data-label")
      == classes[3])
  assert dict((i, (l, r)) for i, l, r in _rows(workdir))[changed] == (classes[3], 1)
  for n in range(SMALL.query_size):  # keys sent to the page label the new batch
    page.body.send_keys("1")
    page.until(lambda s: len(s["answered"]) == n + 1)
  page.until(lambda s: s["round"] == "3" and not s["training"])
  results = [json.loads(l) for l in open(os.path.join(workdir, "results.jsonl"))]
  assert [r["round"] for r in results] == [0, 1]
  assert results[0]["class_counts"][classes[0]] == first
  assert results[1]["class_counts"][classes[3]] == 1  # round 2 trained on the change
