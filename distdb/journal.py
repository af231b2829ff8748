"""A forensic journal of what every node did to ranges and rows (the fault harness's).

When the fault harness finds a lost write or a stale read, the databases it leaves
behind say *that* a row is missing, not *how*: change logs are trimmed, tablets keep a
few metadata versions, and a lost disk takes the rest. With ``DISTDB_JOURNAL`` on
(``make chaos`` turns it on; off everywhere else, it costs a write per event) each
process appends one JSON line per event to ``<data dir>/journal/<node>.jsonl``, outside
the node's database, so a lost disk keeps it:

* the master: every committed metadata version with its tablets (``commit``);
* a tablet server: each write's keys and seqs (``write``) and its acknowledgement
  (``ack``); entries a follower applied, skipped or refused (``replicate``); a move's
  copied rows (``copy``) and caught-up entries (``catch_up``); rows deleted by drops
  and ``clear`` entries (``drop``, ``clear``); each metadata version applied, with the
  ranges led and followed and the snapshots written (``metadata``).

``chaos/trace.py`` merges the journals into one key's story. Lines are written with one
``write(2)`` on an ``O_APPEND`` descriptor, so the processes of one node (a server and
its link, the master's server and worker) interleave whole lines.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

_fd: int | None = None
_fd_lock = threading.Lock()


def enabled() -> bool:
    return bool(settings.DISTDB_JOURNAL)


def journal(event: str, **fields: Any) -> None:
    """Append one event (a no-op unless ``DISTDB_JOURNAL``); never raises."""
    if not enabled():
        return
    try:
        line = orjson.dumps(
            {
                "t": round(time.time(), 6),
                "node": settings.DISTDB_NODE_ID,
                "pid": os.getpid(),
                "ev": event,
                **fields,
            },
            option=orjson.OPT_NON_STR_KEYS,
            default=str,
        )
        os.write(_descriptor(), line + b"\n")
    except OSError:
        pass  # forensics must never fail the operation it describes


def _descriptor() -> int:
    global _fd
    if _fd is None:
        with _fd_lock:
            if _fd is None:
                folder = Path(settings.DISTDB_DATA_DIR) / "journal"
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                path = folder / f"{settings.DISTDB_NODE_ID}.jsonl"
                _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return _fd
