"""Downloads of the public data sets with the standard library only (no TensorFlow).

`fetch(url, path, size, sha256)` downloads one file into the cache: bytes go to
`<path>.part`, an interrupted transfer is resumed with an HTTP Range request when the
server supports it (else restarted from byte 0), and only a file whose size and sha256
match CHECKSUMS is renamed (atomically) to `path`. A `.part` file is never read as data,
and a cached file is checked again on every use, so a failed, partial or corrupt
download is never trusted by a later run.

Cache: $AL_JAX_CACHE_DIR, default ~/.cache/al_jax. Sources, one folder per data set:
  mnist, fashion_mnist: the four IDX .gz files from BASE_URLS (-> <cache>/<name>/).
  fruits360: the GitHub zip of the 100x100 release (`fruits360.ARCHIVE_URL`); only the
    paper's 52 varieties are extracted (-> <cache>/fruits360/release/), then the zip is
    deleted. Its contents change with the release, so it has no fixed sha256; the zip's
    own CRC-32 of every member is checked on extraction instead.
$AL_JAX_DOWNLOAD_URL replaces every source by `<that URL>/<name>/<file name>` (for tests
and mirrors).
"""

import contextlib
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from absl import logging

from al_jax import fruits360

CACHE_DIR_ENV = "AL_JAX_CACHE_DIR"
URL_ENV = "AL_JAX_DOWNLOAD_URL"
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FRUITS360_ZIP = "fruits-360-100x100-main.zip"
BASE_URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
# "<name>/<file>" -> (size in bytes, sha256 hex) of the original files; tests replace it.
CHECKSUMS = {
    "mnist/train-images-idx3-ubyte.gz": (
        9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "mnist/train-labels-idx1-ubyte.gz": (
        28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "mnist/t10k-images-idx3-ubyte.gz": (
        1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "mnist/t10k-labels-idx1-ubyte.gz": (
        4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    "fashion_mnist/train-images-idx3-ubyte.gz": (
        26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "fashion_mnist/train-labels-idx1-ubyte.gz": (
        29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "fashion_mnist/t10k-images-idx3-ubyte.gz": (
        4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": (
        5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}
TRIES = 3  # Attempts per file; each after the first resumes where the last stopped.
TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class DownloadError(ValueError):
  """A download failed; the message is one line that says what to do."""


class _Truncated(Exception):
  """The connection ended before the server's Content-Length (or the known size)."""


def cache_dir() -> str:
  """$AL_JAX_CACHE_DIR, else ~/.cache/al_jax."""
  return os.environ.get(CACHE_DIR_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "al_jax")


def source_url(name: str, filename: str) -> str:
  """Where `name`'s `filename` comes from ($AL_JAX_DOWNLOAD_URL/<name>/<file> if set)."""
  base = os.environ.get(URL_ENV)
  if base:
    return f"{base.rstrip('/')}/{name}/{urllib.parse.quote(filename)}"
  if name == "fruits360":
    return fruits360.ARCHIVE_URL
  return BASE_URLS[name] + filename


def fetch_idx(name: str) -> str:
  """Downloads (once) the four IDX files of mnist or fashion_mnist -> their folder."""
  folder = os.path.join(cache_dir(), name)
  for filename in IDX_FILES:
    size, sha256 = CHECKSUMS.get(f"{name}/{filename}") or (None, None)
    fetch(source_url(name, filename), os.path.join(folder, filename), size, sha256)
  return folder


def fetch_fruits360() -> str:
  """Downloads and extracts (once) the Fruits-360 release -> folder with Training/, Test/."""
  folder = os.path.join(cache_dir(), "fruits360")
  release = os.path.join(folder, "release")
  if os.path.isdir(release):  # Only ever created by an atomic rename of a full extract.
    return release
  archive = os.path.join(folder, FRUITS360_ZIP)
  size, sha256 = CHECKSUMS.get(f"fruits360/{FRUITS360_ZIP}") or (None, None)
  url = source_url("fruits360", FRUITS360_ZIP)
  with _lock(archive):
    if os.path.isdir(release):
      return release
    fetch(url, archive, size, sha256, locked=True)
    try:
      _extract_paper_varieties(archive, release)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
      os.remove(archive)
      raise DownloadError(f"the Fruits-360 archive from {url} is corrupt ({_one_line(e)}); "
                          "it was deleted, run again to download it anew") from e
    os.remove(archive)
  return release


def fetch(url: str, path: str, size: int | None = None, sha256: str | None = None, *,
          locked: bool = False) -> str:
  """Downloads `url` to `path` unless a copy with this size and sha256 is there -> path.

  Bytes go to `path + ".part"`; up to TRIES attempts, each resuming (HTTP Range) where
  the last one stopped; then size and sha256 are checked and the file is renamed into
  place. Raises DownloadError (one line) when it fails; a bad file is deleted.
  """
  if _verified(path, size, sha256):
    return path
  with contextlib.nullcontext() if locked else _lock(path):
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
def _lock(path: str):
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


def _member_target(member: str) -> tuple[str, str, str] | None:
  """"<top>/Training/Apple Braeburn 1/0_100.jpg" -> (split, variety, file) if kept."""
  parts = member.split("/")
  if len(parts) < 3 or parts[-3] not in fruits360.SPLITS:
    return None
  split, variety, filename = parts[-3:]
  if (filename in ("", ".", "..") or variety in ("", ".", "..")
      or not filename.lower().endswith((".jpg", ".jpeg"))
      or fruits360.variety_label(variety) is None):
    return None
  return split, variety, filename


def _extract_paper_varieties(archive: str, release: str) -> None:
  """Writes the kept JPEGs of `archive` to a temp folder, then renames it to `release`."""
  with zipfile.ZipFile(archive) as zf:
    members = [(info, _member_target(info.filename)) for info in zf.infolist()]
    members = [(info, target) for info, target in members if target is not None]
    if set(fruits360.SPLITS) - {split for _, (split, _, _) in members}:
      raise zipfile.BadZipFile("no Training/ and Test/ images of the paper's varieties")
    logging.info("extracting %d Fruits-360 images of the paper's varieties (%.1f MB) to %s",
                 len(members), sum(i.file_size for i, _ in members) / 1e6, release)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(release), prefix="release.tmp-")
    try:
      for info, (split, variety, filename) in members:
        os.makedirs(os.path.join(tmp, split, variety), exist_ok=True)
        with zf.open(info) as src, open(os.path.join(tmp, split, variety, filename),
                                         "wb") as dst:
          shutil.copyfileobj(src, dst)  # zipfile checks each member's CRC-32 at its end.
      os.replace(tmp, release)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise


def _one_line(error: object) -> str:
  """First line of an error (at most 200 characters)."""
  if isinstance(error, OSError) and error.strerror:
    text = error.strerror
  else:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
  return text if len(text) <= 200 else text[:197] + "..."
