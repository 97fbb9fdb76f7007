"""The labeling page's web server: Flask routes served by waitress.

Flask (routing, JSON, cookies, request size limits) and waitress (a maintained,
pure-Python, multi-threaded WSGI server, so the page stays responsive while a round
trains in another thread) do all HTTP handling. Safety measures:

* loopback only unless `host` says otherwise;
* a random token per workdir, required by every request (page, script, images, API):
  in the X-Token header, or (GET only) in the URL. No cookie: browsers send a cookie
  to every port of a host, so another local web server could read it. The page keeps
  the token of its own URL and sends it explicitly; the workdir keeps it (server.json,
  owner only) with the port, so after a restart the same URL works again;
* requests larger than MAX_BODY bytes are refused (413);
* state-changing requests must be JSON and come from the page's own origin (a
  cross-site Origin or Sec-Fetch-Site is refused), and the Host must be ours on
  loopback (DNS rebinding);
* images are served by pool index and static files from a fixed table: no path from
  a request reaches the file system;
* labels are checked against the class list (`LabelSession.answer`);
* every error is a JSON answer {"error": message}, never a traceback page: deep JSON,
  an image file moved or changed since the start, a failing export.
"""

import hmac
import ipaddress
import json
import os
import secrets
import socket
import threading
import time

import flask
from absl import logging
from PIL import Image
from waitress import create_server
from werkzeug import exceptions

from al_jax import files
from al_jax.labeling import session as session_lib

MAX_BODY = 4096
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
ADDRESS_FILE = "server.json"  # in the workdir: the token and port of the last run
UNREADABLE_SHOWN = 20  # names of undecodable image files in /api/state (all are counted)
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def check_address(host: str, port: int) -> None:
  """Raises LabelError (one line) unless `port` is 0 (a free one) or free on `host`."""
  if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
    raise session_lib.LabelError(f"--port={port} is not a port; pass 1-65535, or 0 for a "
                                 "free one")
  try:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
  except socket.gaierror as error:
    raise session_lib.LabelError(f"--host={host} is not an address of this machine "
                                 f"({error.strerror}); pass e.g. --host=127.0.0.1") from error
  if port == 0:
    return
  with socket.socket(family, kind, proto) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
    try:
      probe.bind(address)
    except OSError as error:
      raise session_lib.LabelError(
          f"cannot listen on {host}:{port} ({error.strerror}): another program (or another "
          "label.py) uses it; pass another --port, or --port=0 for a free one") from error


def create_app(session: session_lib.LabelSession, token: str, port: int,
               loopback: bool = True) -> flask.Flask:
  """The Flask app of one labeling session; `port` makes our origin."""
  app = flask.Flask(__name__, static_folder=None)
  app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
  with open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8") as f:
    page_html = f.read().replace("{{token}}", token)  # the token is URL-safe base64
  started = time.time()  # tells the page that the server was restarted
  guessed = {"round": None, "probs": None}  # the latest model's probabilities [N, C]
  guess_lock = threading.Lock()
  our_hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

  def refuse(status: int, message: str):
    return flask.make_response(flask.jsonify(error=message), status)

  @app.before_request
  def guard():
    request = flask.request
    if loopback and request.host not in our_hosts:
      return refuse(403, "unexpected Host header")
    given = request.headers.get("X-Token") or ""
    if not given and request.method in ("GET", "HEAD"):
      given = request.args.get("token") or ""
    if not hmac.compare_digest(given.encode(), token.encode()):
      return refuse(403, "missing or wrong token: open the URL that label.py printed")
    if request.method not in ("GET", "HEAD"):
      origin = request.headers.get("Origin")
      if origin is not None and origin != request.host_url.rstrip("/"):
        return refuse(403, "cross-origin request refused")
      if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return refuse(403, "cross-site request refused")
      if (request.content_length or 0) > MAX_BODY:
        return refuse(413, f"request body over {MAX_BODY} bytes")
      if not request.is_json:
        return refuse(415, "send JSON (Content-Type: application/json)")
    return None

  @app.after_request
  def headers(response):
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response

  @app.errorhandler(413)
  def too_large(_):
    return refuse(413, f"request body over {MAX_BODY} bytes")

  @app.errorhandler(404)
  def not_found(_):
    return refuse(404, "not found")

  @app.errorhandler(405)
  def not_allowed(_):
    return refuse(405, "method not allowed")

  @app.errorhandler(exceptions.HTTPException)
  def http_error(error):
    return refuse(error.code or 500, error.description or error.name)

  @app.errorhandler(Exception)
  def unexpected(error):  # the server keeps serving; the labels are in SQLite
    logging.exception("%s %s failed", flask.request.method, flask.request.path)
    first = (str(error).splitlines() or [""])[0][:200]
    return refuse(500, f"the server could not answer ({type(error).__name__}: {first}); "
                  "every label given is saved: reload the page, or restart label.py")

  @app.get("/")
  def page():
    return flask.make_response(page_html, 200, {"Content-Type": "text/html; charset=utf-8"})

  @app.get("/favicon.ico")
  def favicon():
    return flask.make_response("", 204)

  @app.get("/static/<name>")
  def static_file(name):
    if name not in STATIC_FILES:
      return refuse(404, "not found")
    return flask.send_file(os.path.join(STATIC_DIR, name), mimetype=STATIC_FILES[name])

  @app.get("/image/<int:index>")
  def image(index):
    try:
      path = session.thumbnail(index)
    except KeyError:
      return refuse(404, f"no image {index}")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
      return refuse(404, f"image {index} ({session.paths[index]}) cannot be read "
                    f"({type(error).__name__}): it was moved or changed since label.py "
                    "started; skip it (0)")
    response = flask.send_file(path, mimetype="image/jpeg", max_age=3600)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response

  def guesses(state: dict) -> list:
    """The latest model's class and probability per image of the batch (None before
    the first round), computed once per round."""
    with guess_lock:
      if guessed["round"] != state["round"] and not state["training"]:
        probs = session.model_probs()
        if probs is not None:
          guessed.update(round=state["round"], probs=probs)
      probs = guessed["probs"] if guessed["round"] == state["round"] else None
    if probs is None:
      return [None] * len(state["batch"])
    top = [int(probs[b["index"]].argmax()) for b in state["batch"]]
    return [{"label": session.classes[c], "probability": float(probs[b["index"], c])}
            for b, c in zip(state["batch"], top)]

  found = session.images.pool.unreadable
  unreadable = {"count": len(found), "files": [{"path": p, "why": why}
                                               for p, why in found[:UNREADABLE_SHOWN]]}

  def with_progress(state: dict) -> dict:
    """The session's state and what the page tells besides: each tile's guess, the
    counts of trained, held-out and unlabeled images, the held-out images of the batch,
    the image files left out because they do not decode (their count and the first
    UNREADABLE_SHOWN, paths relative to the images folder), where the labels are, and
    when this server started."""
    state = {**state, "batch": [{**b, "guess": g}
                                for b, g in zip(state["batch"], guesses(state))]}
    labels = session.store.all()
    held_out = set(session.validation.tolist())
    given = [i for i, item in labels.items() if item.label is not None]
    held = sum(i in held_out for i in given)
    return {**state, "progress": {
        "labeled": len(given), "trained": len(given) - held, "held_out": held,
        "skipped": len(labels) - len(given), "unlabeled": len(session.paths) - len(labels),
        "pool": len(session.paths)},
        "held_out_in_batch": [b["index"] for b in state["batch"] if b["index"] in held_out],
        "unreadable": unreadable,
        "workdir": os.path.abspath(session.workdir), "server_started": started}

  @app.get("/api/state")
  def state():
    return flask.jsonify(with_progress(session.state()))

  def body() -> dict:
    try:
      value = flask.request.get_json(silent=True)
    except RecursionError:  # nested deeper than Python's json parses
      value = None
    if not isinstance(value, dict):
      raise session_lib.LabelError("the body must be a JSON object")
    return value

  @app.errorhandler(session_lib.LabelError)
  def label_error(error):
    return refuse(409 if isinstance(error, session_lib.Busy) else 400, str(error))

  @app.post("/api/label")
  def label():
    request = body()
    name = request.get("label")
    if not isinstance(name, str):
      raise session_lib.LabelError("label must be a class name")
    return flask.jsonify(with_progress(session.answer(request.get("index"), name)))

  @app.post("/api/skip")
  def skip():
    return flask.jsonify(with_progress(session.answer(body().get("index"), None)))

  @app.post("/api/correct")
  def correct():
    request = body()
    name = request.get("label")
    if name is not None and not isinstance(name, str):
      raise session_lib.LabelError("label must be a class name, or null to skip")
    return flask.jsonify(with_progress(session.correct(request.get("index"), name)))

  @app.get("/api/answers")
  def answers():
    """The answers of earlier batches (to change one), the latest given first."""
    shown = {b["index"] for b in session.state()["batch"]}
    earlier = [item for item in session.store.all().values() if item.pool_index not in shown]
    return flask.jsonify(answers=[
        {"index": item.pool_index, "label": item.label, "round": item.round}
        for item in sorted(earlier, key=lambda item: -item.seq)])

  @app.post("/api/undo")
  def undo():
    body()
    return flask.jsonify(with_progress(session.undo()))

  @app.post("/api/export")
  def export():
    body()
    return flask.jsonify(session.export())

  return app


def _last_address(workdir: str) -> dict:
  """The token and port of the workdir's last server ({} if none)."""
  try:
    with open(os.path.join(workdir, ADDRESS_FILE), encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return {}
  ok = (isinstance(saved, dict) and isinstance(saved.get("token"), str)
        and len(saved["token"]) >= 32 and isinstance(saved.get("port"), int))
  return saved if ok else {}


def _save_address(workdir: str, token: str, port: int) -> None:
  """Writes workdir/server.json, readable by its owner only."""
  path = os.path.join(workdir, ADDRESS_FILE)
  with files.atomic_write(path, private=True, encoding="utf-8") as f:
    json.dump({"token": token, "port": port}, f)


def serve(session: session_lib.LabelSession, *, host: str = "127.0.0.1", port: int = 0,
          threads: int = 8) -> None:
  """Serves the page until interrupted (Ctrl+C or SIGTERM), then exports the labels.

  Prints one line, the URL (with the token) to open. The workdir's token is kept, and
  with `port=0` the last run's port when it is free, so a page left open reconnects.
  """
  check_address(host, port)
  last = _last_address(session.workdir)
  token = last.get("token") or secrets.token_urlsafe(24)
  loopback = is_loopback(host)
  if not loopback:
    logging.warning("listening on %s, not only on this machine: anyone who can reach it "
                    "and learns the URL can label", host)
  apps = []  # the app needs the port, known once the socket is bound
  make = lambda p: create_server(lambda environ, start: apps[0](environ, start), host=host,
                                 port=p, threads=threads, clear_untrusted_proxy_headers=True,
                                 max_request_body_size=16 * MAX_BODY)
  server = None
  if port == 0 and last.get("port"):
    try:
      server = make(last["port"])
    except OSError:  # taken now: a free one
      server = None
  try:
    if server is None:
      server = make(port)
  except OSError as error:
    raise session_lib.LabelError(f"cannot listen on {host}:{port} ({error.strerror}); pass "
                                 "another --port, or --port=0 for a free one") from error
  actual_port = int(server.effective_port)
  _save_address(session.workdir, token, actual_port)
  apps.append(create_app(session, token, actual_port, loopback))
  shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
  if ":" in shown:
    shown = f"[{shown}]"
  print(f"http://{shown}:{actual_port}/?token={token}", flush=True)
  session.start()
  try:
    server.run()
  except KeyboardInterrupt:
    pass
  finally:
    server.close()
    exported = session.export()
    logging.info("exported %d labels to %s and %s", exported["count"], exported["csv"],
                 exported["json"])
    session.close()
