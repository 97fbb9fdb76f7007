"""Tests of al_jax.datasets.download (and the IDX and Fruits-360 downloads) against a real HTTP server on 127.0.0.1 (no internet).

The server holds small files of the real layouts: a tiny Fashion-MNIST IDX set built
here and a tiny Fruits-360 GitHub-style zip of sample JPEGs. Each test can make a file
truncated, corrupt, cut once, or served without Range support; CHECKSUMS is replaced by
the tiny files' sizes and sha256.
"""

import gzip
import hashlib
import http.server
import io
import logging
import os
import socket
import struct
import threading
import zipfile

import numpy as np
import pytest

from al_jax import datasets
from al_jax.datasets import download, fruits360, idx

SAMPLE_FRUITS = os.path.join(datasets.SAMPLE_DIR, "fruits360")
TOP = "fruits-360-100x100-main"  # The zip's top folder, as GitHub names it.


def _idx(array: np.ndarray, magic: int) -> bytes:
  header = struct.pack(">i", magic) + struct.pack(">" + "i" * array.ndim, *array.shape)
  return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def _tiny_idx() -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
  rng = np.random.default_rng(0)
  arrays = {"train_images": rng.integers(0, 256, (6, 28, 28), np.uint8),
            "train_labels": np.array([0, 1, 2, 9, 9, 3], np.uint8),
            "test_images": rng.integers(0, 256, (4, 28, 28), np.uint8),
            "test_labels": np.array([5, 6, 7, 8], np.uint8)}
  files = dict(zip(idx.IDX_FILES, (_idx(arrays["train_images"], 2051),
                                    _idx(arrays["train_labels"], 2049),
                                    _idx(arrays["test_images"], 2051),
                                    _idx(arrays["test_labels"], 2049))))
  return files, arrays


def _tiny_fruits_zip() -> bytes:
  """Two paper varieties, a 2021 variety and a non-paper fruit; 2 train, 1 test each."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr(f"{TOP}/README.md", "Fruits-360")
    for split, count in (("Training", 2), ("Test", 1)):
      for src, dst in (("Apple Braeburn 1", "Apple Braeburn 1"), ("Banana 1", "Banana 1"),
                       ("Pear 1", "Apple 6"), ("Plum 1", "Kiwi 1")):
        folder = os.path.join(SAMPLE_FRUITS, split, src)
        for name in sorted(os.listdir(folder))[:count]:
          with open(os.path.join(folder, name), "rb") as f:
            zf.writestr(f"{TOP}/{split}/{dst}/{name}", f.read())
  return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves server.files; server.modes[path] in {"truncate", "cut_once", "no_range"}."""

  def do_GET(self):  # pylint: disable=invalid-name
    srv = self.server
    srv.requests.append((self.path, self.headers.get("Range")))
    body = srv.files.get(self.path)
    if body is None:
      self.send_error(404)
      return
    modes = srv.modes.get(self.path, set())
    start = 0
    rng = self.headers.get("Range")
    if rng and "no_range" not in modes:
      start = int(rng.split("=")[1].split("-")[0])
      self.send_response(206)
      self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    else:
      self.send_response(200)
    self.send_header("Content-Length", str(len(body) - start))
    self.end_headers()
    cut = "truncate" in modes or ("cut_once" in modes and not srv.cut_done.get(self.path))
    if cut:
      srv.cut_done[self.path] = True
      self.wfile.write(body[start:start + (len(body) - start) // 2])
      self.wfile.flush()
      self.connection.shutdown(socket.SHUT_RDWR)  # Close early.
      return
    self.wfile.write(body[start:])

  def log_message(self, *args):  # Quiet.
    pass


@pytest.fixture
def server():
  srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  srv.files, srv.modes, srv.requests, srv.cut_done = {}, {}, [], {}
  srv.daemon_threads = True
  thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
  yield srv
  srv.shutdown()
  srv.server_close()
  thread.join(5)


@pytest.fixture
def env(server, monkeypatch, tmp_path):
  """Downloads from `server` into tmp_path/cache; tiny files and their checksums."""
  monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
  monkeypatch.setenv(download.URL_ENV, server.url)
  monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
  files, arrays = _tiny_idx()
  checksums = {}
  for name, body in files.items():
    server.files[f"/fashion_mnist/{name}"] = body
    checksums[f"fashion_mnist/{name}"] = (len(body), hashlib.sha256(body).hexdigest())
  server.files[f"/fruits360/{fruits360.ARCHIVE_ZIP}"] = _tiny_fruits_zip()
  monkeypatch.setattr(idx, "CHECKSUMS", checksums)
  return arrays


def _cache_files(tmp_path) -> list[str]:
  """Files in the cache, relative, without lock files."""
  root = tmp_path / "cache"
  out = []
  for folder, _, names in os.walk(root):
    out += [os.path.relpath(os.path.join(folder, n), root) for n in names
            if not n.endswith(".lock")]
  return sorted(out)


def _assert_idx(ds, arrays):
  assert ds.source == "download" and ds.name == "fashion_mnist"
  np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train_images"])
  np.testing.assert_array_equal(ds.train_labels, arrays["train_labels"])
  np.testing.assert_array_equal(ds.test_images[..., 0], arrays["test_images"])
  np.testing.assert_array_equal(ds.test_labels, arrays["test_labels"])


TRAIN_IMAGES = f"/fashion_mnist/{idx.IDX_FILES[0]}"
FINAL = [f"fashion_mnist/{f}" for f in idx.IDX_FILES]


def test_idx_download_end_to_end(env, server, tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    ds = datasets.load("fashion_mnist")
  _assert_idx(ds, env)
  assert _cache_files(tmp_path) == sorted(FINAL)
  assert len(server.requests) == 4 and all(r is None for _, r in server.requests)
  lines = [r.getMessage() for r in caplog.records if "downloading" in r.getMessage()]
  assert len(lines) == 4 and TRAIN_IMAGES in lines[0] and str(tmp_path) in lines[0]
  _assert_idx(datasets.load("fashion_mnist"), env)  # Cached and verified: no requests.
  assert len(server.requests) == 4


def test_truncated_download(env, server, tmp_path):
  server.modes[TRAIN_IMAGES] = {"truncate"}
  with pytest.raises(datasets.DataError) as err:
    datasets.load("fashion_mnist")
  msg = str(err.value)
  assert "\n" not in msg and "was truncated" in msg and "3 times" in msg
  assert f"fashion_mnist/{idx.IDX_FILES[0]}" not in _cache_files(tmp_path)
  # A later run resumes from the partial bytes and ends with the right data.
  server.modes.clear()
  _assert_idx(datasets.load("fashion_mnist"), env)
  assert server.requests[-4][1] is not None and server.requests[-4][1].startswith("bytes=")
  assert _cache_files(tmp_path) == sorted(FINAL)


def test_interrupted_download_is_resumed(env, server, tmp_path):
  server.modes[TRAIN_IMAGES] = {"cut_once"}
  _assert_idx(datasets.load("fashion_mnist"), env)
  ranges = [r for p, r in server.requests if p == TRAIN_IMAGES]
  size = len(server.files[TRAIN_IMAGES])
  assert ranges == [None, f"bytes={size // 2}-"]
  assert _cache_files(tmp_path) == sorted(FINAL)


def test_interrupted_download_restarts_without_range(env, server, tmp_path):
  server.modes[TRAIN_IMAGES] = {"cut_once", "no_range"}
  _assert_idx(datasets.load("fashion_mnist"), env)
  ranges = [r for p, r in server.requests if p == TRAIN_IMAGES]
  assert len(ranges) == 2 and ranges[1] is not None  # Asked to resume; got it all anew.
  assert _cache_files(tmp_path) == sorted(FINAL)


@pytest.mark.parametrize("damage, match", [
    ("flip", "checksum mismatch"),
    ("extra", "has .* bytes, expected"),
])
def test_checksum_or_size_mismatch(env, server, tmp_path, damage, match):
  good = server.files[TRAIN_IMAGES]
  server.files[TRAIN_IMAGES] = (good[:-1] + bytes([good[-1] ^ 1]) if damage == "flip"
                                else good + b"\0")
  with pytest.raises(datasets.DataError, match=match) as err:
    datasets.load("fashion_mnist")
  assert "\n" not in str(err.value) and "deleted" in str(err.value)
  files = _cache_files(tmp_path)
  assert not [f for f in files if "train-images" in f]  # Neither the file nor a .part.
  server.files[TRAIN_IMAGES] = good
  _assert_idx(datasets.load("fashion_mnist"), env)


def test_cached_file_damaged_later_is_fetched_again(env, server, tmp_path):
  datasets.load("fashion_mnist")
  path = tmp_path / "cache" / "fashion_mnist" / idx.IDX_FILES[3]
  path.write_bytes(path.read_bytes()[:-3])
  _assert_idx(datasets.load("fashion_mnist"), env)
  assert len(server.requests) == 5


def test_no_network(env, monkeypatch, tmp_path):
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]  # Closed again: connection refused.
  monkeypatch.setenv(download.URL_ENV, f"http://127.0.0.1:{port}")
  with pytest.raises(datasets.DataError) as err:
    datasets.load("fashion_mnist")
  msg = str(err.value)
  assert "\n" not in msg and "cannot download" in msg and "refused" in msg.lower()
  assert "--data_dir=DIR" in msg and datasets.DATA_DIR_ENV in msg
  assert _cache_files(tmp_path) == []


def test_http_error(env, server):
  del server.files[TRAIN_IMAGES]
  with pytest.raises(datasets.DataError, match=r"answered HTTP 404") as err:
    datasets.load("fashion_mnist")
  assert "\n" not in str(err.value)


def test_fruits360_download(env, server, tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    ds = datasets.load("fruits360", image_size=8)
  assert ds.source == "download" and ds.class_names == fruits360.FRUIT_CATEGORIES
  # Only the paper varieties: Apple 6 and Kiwi 1 are left out.
  assert ds.train_labels.tolist() == [0, 0, 3, 3] and ds.test_labels.tolist() == [0, 3]
  assert ds.train_images.shape == (4, 8, 8, 3)
  assert _cache_files(tmp_path)[-1].startswith("fruits360_8px_")
  release = [f for f in _cache_files(tmp_path) if f.startswith("fruits360/")]
  assert len(release) == 6 and all(f.startswith("fruits360/release/") for f in release)
  messages = " | ".join(r.getMessage() for r in caplog.records)
  assert "downloading" in messages and "extracting 6 Fruits-360 images" in messages
  assert datasets.load("fruits360", image_size=8).source == "download"
  assert len(server.requests) == 1  # Extracted once, then read from the cache.


def test_fruits360_corrupt_archive(env, server, tmp_path):
  path = f"/fruits360/{fruits360.ARCHIVE_ZIP}"
  good = server.files[path]
  jpeg = good.index(b"\xff\xd8\xff")  # First stored JPEG: flip a byte, CRC-32 fails.
  server.files[path] = good[:jpeg + 100] + bytes([good[jpeg + 100] ^ 1]) + good[jpeg + 101:]
  with pytest.raises(datasets.DataError, match="archive .* is corrupt .*deleted") as err:
    datasets.load("fruits360", image_size=8)
  assert "\n" not in str(err.value)
  assert _cache_files(tmp_path) == []  # No zip, no partial release folder.
  server.files[path] = good
  assert datasets.load("fruits360", image_size=8).train_labels.tolist() == [0, 0, 3, 3]


def test_fruits360_truncated_archive(env, server, tmp_path):
  server.modes[f"/fruits360/{fruits360.ARCHIVE_ZIP}"] = {"truncate"}
  with pytest.raises(datasets.DataError, match="was truncated") as err:
    datasets.load("fruits360", image_size=8)
  assert "\n" not in str(err.value)
  assert not [f for f in _cache_files(tmp_path) if not f.endswith(".part")]
  server.modes.clear()
  assert datasets.load("fruits360", image_size=8).test_labels.tolist() == [0, 3]


def test_member_target():
  t = fruits360._member_target
  assert t(f"{TOP}/Training/Banana 1/0_100.jpg") == ("Training", "Banana 1", "0_100.jpg")
  assert t("Test/Apple Braeburn/r_1_100.jpg") == ("Test", "Apple Braeburn", "r_1_100.jpg")
  assert t(f"{TOP}/Training/Apple 6/0_100.jpg") is None
  assert t(f"{TOP}/Training/Banana 1/") is None
  assert t(f"{TOP}/Training/../x.jpg") is None
  assert t(f"{TOP}/Training/Banana 1/readme.txt") is None


def test_unwritable_cache_is_one_line(env, tmp_path, monkeypatch):
  (tmp_path / "file").write_text("not a folder")
  monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / "file" / "cache"))
  with pytest.raises(datasets.DataError, match="cannot write the download cache") as err:
    datasets.load("fashion_mnist")
  assert "\n" not in str(err.value)
