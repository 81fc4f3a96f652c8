"""Writing private keys: readable by their owner only, replaced atomically (I/O)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_private_file"]


def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a file only its owner can read (mode 0600).

    The data goes to a temporary file that is created 0600 in the same directory (so no
    other user can ever open it, whatever the umask or the mode of a file already at
    ``path``), is flushed to disk, and is then renamed over ``path``: a reader (a proxy
    re-reading its key) sees the old file or the new one, never half of one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
