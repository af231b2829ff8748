"""State files private to the cluster's user from their first byte (issue #9).

A node's state is secrets and data: the master's private key, server and API tokens,
the admin password, the Redis password, every database and its WAL, the logs (which
name keys and rows). Creating a file world-readable and ``chmod``-ing it afterwards
leaves a window in which another local user can open it and keep the descriptor; so
every distdb process sets a private umask before it creates anything
(``private_by_default``, called when the ``distdb`` package is imported, i.e. by
``manage.py``, Celery and the ASGI servers alike), and secrets are also written with an
explicit 0600 mode (``write_private``), whatever umask a caller set.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077  # files 0600, directories 0700
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_by_default() -> None:
    """Make everything this process creates from now on private to its user."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) created as 0700; an existing one is left as it is."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600 from the first byte.

    It goes to a fresh temporary file opened with ``O_EXCL`` and mode 0600, is fsynced,
    then renamed over ``path``: a reader sees the old content or the new, never a part,
    and nobody else can open it at any point.
    """
    private_dir(path.parent)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
