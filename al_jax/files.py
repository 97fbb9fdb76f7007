"""Writing a file so that a reader never sees half of it."""

import contextlib
import os
import secrets


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, private: bool = False,
                 **open_kwargs):
  """Opens a new temporary file beside `path` for writing; when the block ends without
  an error it replaces `path` (os.replace, atomic), else it is deleted. A reader never
  sees half a file, and concurrent writers never share a temporary file. private: the
  file is readable by its owner only (0600)."""
  path = os.fspath(path)
  tmp = f"{path}.{secrets.token_hex(6)}.tmp"
  try:
    with open(tmp, mode.replace("w", "x"), **open_kwargs) as f:  # "x": a new file
      if private:
        os.chmod(tmp, 0o600)
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
