"""The labeling page's web server: Flask routes served by waitress.

Flask (routing, JSON, cookies, request size limits) and waitress (a maintained,
pure-Python, multi-threaded WSGI server, so the page stays responsive while a round
trains in another thread) do all HTTP handling. Safety measures:

* loopback only unless `host` says otherwise;
* a random token per run, in the printed URL and then an HttpOnly SameSite=Strict
  cookie, required by every request (page, script, images, API);
* requests larger than MAX_BODY bytes are refused (413);
* state-changing requests must be JSON and come from the page's own origin (a
  cross-site Origin or Sec-Fetch-Site is refused), and the Host must be ours on
  loopback (DNS rebinding);
* images are served by pool index and static files from a fixed table: no path from
  a request reaches the file system;
* labels are checked against the class list (`LabelSession.answer`).
"""

import hmac
import ipaddress
import os
import secrets

import flask
from absl import logging
from waitress import create_server

from al_jax.labeling import session as session_lib

MAX_BODY = 4096
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def create_app(session: session_lib.LabelSession, token: str, port: int,
               loopback: bool = True) -> flask.Flask:
  """The Flask app of one labeling session; `port` names the cookie and our origin."""
  app = flask.Flask(__name__, static_folder=None)
  app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
  cookie = f"al_jax_token_{port}"
  our_hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

  def refuse(status: int, message: str):
    return flask.make_response(flask.jsonify(error=message), status)

  @app.before_request
  def guard():
    request = flask.request
    if loopback and request.host not in our_hosts:
      return refuse(403, "unexpected Host header")
    given = (request.args.get("token") or request.cookies.get(cookie)
             or request.headers.get("X-Token") or "")
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

  @app.get("/")
  def page():
    if "token" in flask.request.args:  # move the token from the address bar to a cookie
      response = flask.redirect("/", code=303)
      response.set_cookie(cookie, token, httponly=True, samesite="Strict", path="/")
      return response
    return flask.send_file(os.path.join(STATIC_DIR, "index.html"), mimetype="text/html")

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
    response = flask.send_file(path, mimetype="image/jpeg", max_age=3600)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response

  @app.get("/api/state")
  def state():
    return flask.jsonify(session.state())

  def body() -> dict:
    value = flask.request.get_json(silent=True)
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
    return flask.jsonify(session.answer(request.get("index"), name))

  @app.post("/api/skip")
  def skip():
    return flask.jsonify(session.answer(body().get("index"), None))

  @app.post("/api/undo")
  def undo():
    body()
    return flask.jsonify(session.undo())

  @app.post("/api/export")
  def export():
    body()
    return flask.jsonify(session.export())

  return app


def serve(session: session_lib.LabelSession, *, host: str = "127.0.0.1", port: int = 0,
          threads: int = 8) -> None:
  """Serves the page until interrupted (Ctrl+C or SIGTERM), then exports the labels.

  Prints one line, the URL (with the token) to open.
  """
  token = secrets.token_urlsafe(24)
  loopback = is_loopback(host)
  if not loopback:
    logging.warning("listening on %s, not only on this machine: anyone who can reach it "
                    "and learns the URL can label", host)
  apps = []  # the app needs the port, known once the socket is bound
  server = create_server(lambda environ, start: apps[0](environ, start), host=host,
                         port=port, threads=threads, clear_untrusted_proxy_headers=True,
                         max_request_body_size=16 * MAX_BODY)
  actual_port = server.effective_port
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
