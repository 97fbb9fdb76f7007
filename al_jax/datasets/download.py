"""Downloads with the standard library only (no TensorFlow): one file into the cache.

`fetch(url, path, size, sha256)` downloads one file: bytes go to `<path>.part`, an
interrupted transfer is resumed with an HTTP Range request when the server supports it
(else restarted from byte 0), and only a file whose size and sha256 match is renamed
(atomically) to `path`. A `.part` file is never read as data, and a cached file is
checked again on every use, so a failed, partial or corrupt download is never trusted
by a later run. The sources say what to fetch (`al_jax.datasets.idx`, `.fruits360`).

$AL_JAX_DOWNLOAD_URL replaces every source by `<that URL>/<name>/<file name>` (for tests
and mirrors).
"""

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from absl import logging

from al_jax.datasets import base

URL_ENV = "AL_JAX_DOWNLOAD_URL"
TRIES = 3  # Attempts per file; each after the first resumes where the last stopped.
TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class DownloadError(ValueError):
  """A download failed; the message is one line that says what to do."""


class _Truncated(Exception):
  """The connection ended before the server's Content-Length (or the known size)."""


def source_url(name: str, filename: str, url: str) -> str:
  """`url`, or $AL_JAX_DOWNLOAD_URL/<name>/<filename> when that is set."""
  mirror = os.environ.get(URL_ENV)
  if mirror:
    return f"{mirror.rstrip('/')}/{name}/{urllib.parse.quote(filename)}"
  return url


def into_cache(fetch_files: Callable[[], str]) -> str:
  """fetch_files() -> the folder it filled, a failed download or an unwritable cache
  turned into a one-line DataError."""
  try:
    return fetch_files()
  except DownloadError as e:
    raise base.DataError(str(e)) from e
  except OSError as e:  # E.g. a read-only or full cache folder.
    raise base.DataError(f"cannot write the download cache {base.cache_dir()} "
                         f"({base.one_line(e)}); set {base.CACHE_DIR_ENV} to a writable "
                         "folder, or pass --data_dir=DIR pointing at a local copy") from e


def fetch(url: str, path: str, size: int | None = None, sha256: str | None = None, *,
          locked: bool = False) -> str:
  """Downloads `url` to `path` unless a copy with this size and sha256 is there -> path.

  Bytes go to `path + ".part"`; up to TRIES attempts, each resuming (HTTP Range) where
  the last one stopped; then size and sha256 are checked and the file is renamed into
  place. Raises DownloadError (one line) when it fails; a bad file is deleted.
  """
  if _verified(path, size, sha256):
    return path
  with contextlib.nullcontext() if locked else lock(path):
    if _verified(path, size, sha256):  # Another process finished it meanwhile.
      return path
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)  # Present but wrong.
    part = path + ".part"
    logging.info("downloading %s (%s) to %s", url,
                 "size unknown" if size is None else f"{size / 1e6:.1f} MB", path)
    got, total = 0, size
    for _ in range(TRIES):
      try:
        _get(url, part, size)
        break
      except _Truncated as e:
        got, total = e.args
    else:
      raise DownloadError(f"download of {url} was truncated ({got} of {total} bytes) "
                          f"{TRIES} times; run again to resume, or pass --data_dir=DIR "
                          "pointing at a local copy")
    problem = _check(part, size, sha256)
    if problem:
      os.remove(part)
      raise DownloadError(f"download of {url} {problem}; the file was deleted, run again "
                          "or pass --data_dir=DIR pointing at a local copy")
    os.replace(part, path)
  return path


# ----------------------------------------------------------------------------- helpers


def _get(url: str, part: str, size: int | None) -> None:
  """One HTTP GET into `part`, resuming from its length; raises _Truncated if cut short."""
  have = os.path.getsize(part) if os.path.exists(part) else 0
  if size is not None and have >= size:
    have = 0  # Complete or overlong leftovers: start again.
  request = urllib.request.Request(url, headers={"User-Agent": "al_jax"})
  if have:
    request.add_header("Range", f"bytes={have}-")
  try:
    response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
  except urllib.error.HTTPError as e:
    if e.code == 416 and have:  # Range not satisfiable: the leftovers are stale.
      os.remove(part)
      return _get(url, part, size)
    raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}; check the URL (or "
                        f"${URL_ENV}), or pass --data_dir=DIR pointing at a local copy") from e
  except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
    reason = getattr(e, "reason", e)
    raise DownloadError(f"cannot download {url} ({_one_line(reason)}); without network, "
                        "pass --data_dir=DIR pointing at a local copy or set "
                        "AL_JAX_DATA_DIR") from e
  with response:
    resumed = have and response.status == 206 and _range_start(response) == have
    if not resumed:
      have = 0  # The server ignored the Range (status 200): start over cleanly.
    length = response.headers.get("Content-Length")
    total = have + int(length) if length and length.isdigit() else size
    os.makedirs(os.path.dirname(part) or ".", exist_ok=True)
    with open(part, "ab" if resumed else "wb") as f:
      try:
        while chunk := response.read(_CHUNK):
          f.write(chunk)
      except (http.client.IncompleteRead, OSError) as e:
        f.flush()
        raise _Truncated(os.path.getsize(part), total) from e
  got = os.path.getsize(part)
  if total is not None and got < total:
    raise _Truncated(got, total)


def _range_start(response) -> int | None:
  """First byte of a 206 answer from its Content-Range ("bytes 100-199/200" -> 100)."""
  value = response.headers.get("Content-Range", "")
  try:
    return int(value.split()[1].split("-")[0])
  except (IndexError, ValueError):
    return None


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def _check(path: str, size: int | None, sha256: str | None) -> str | None:
  """None when `path` has this size and sha256 (None: not checked), else the problem."""
  got = os.path.getsize(path)
  if size is not None and got != size:
    return f"has {got} bytes, expected {size} (truncated or changed on the server)"
  if sha256 is not None:
    digest = _sha256(path)
    if digest != sha256:
      return f"has sha256 {digest[:16]}..., expected {sha256[:16]}... (checksum mismatch)"
  return None


def _verified(path: str, size: int | None, sha256: str | None) -> bool:
  return os.path.isfile(path) and _check(path, size, sha256) is None


@contextlib.contextmanager
def lock(path: str):
  """An exclusive lock on `path + ".lock"` between processes (no-op without fcntl)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  try:
    import fcntl  # pylint: disable=import-outside-toplevel
  except ImportError:  # Windows: no lock.
    yield
    return
  with open(path + ".lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _one_line(error: object) -> str:
  """First line of an error (at most 200 characters)."""
  if isinstance(error, OSError) and error.strerror:
    text = error.strerror
  else:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
  return text if len(text) <= 200 else text[:197] + "..."
