"""The leader lease: a tablet server serves replicated ranges only while the master says so.

Loaded by the tablet server role: the link agent stores each grant, the data plane checks
it before it answers for a range of a replicated table (``rows``).

The master answers every heartbeat with a signed ``LeaseGrant`` that echoes the heartbeat's
send time, read here on ``CLOCK_BOOTTIME``. The lease ends at that send time + the granted
duration: earlier than the master's own count, which starts when it *received* the
heartbeat and runs on ``CLOCK_MONOTONIC`` (which stops while the master's host is
suspended, so the master only ever believes *less* time passed; this clock keeps counting
through a suspension of this host). A grant that arrives late therefore gives an
already-ended lease; the master promotes a follower only after its count plus a margin.

A grant names the metadata version it was granted at; it is usable only once this server
has applied that version (a deposed leader that hears a grant before the failover's push
must not serve with its old metadata).

The link agent may be another process than the data plane, so the lease crosses over in a
small file next to the link status file, written atomically; the data plane caches it for
``CACHE_S`` — a cached lease can only be *older*, so it ends sooner, never later.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from distdb.boot import boot_id

CACHE_S = 0.05


def lease_clock() -> float:
    """This host's CLOCK_BOOTTIME: keeps counting through a suspension (see the docstring)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Lease:
    deadline: float  # on ``lease_clock``, in boot ``boot``
    boot: str
    version: int  # usable once this metadata version is applied

    def valid(self, applied_version: int, now: float | None = None) -> bool:
        now = lease_clock() if now is None else now
        return self.boot == boot_id() and now < self.deadline and applied_version >= self.version

    def left_s(self, now: float | None = None) -> float:
        now = lease_clock() if now is None else now
        return self.deadline - now if self.boot == boot_id() else 0.0


NO_LEASE = Lease(0.0, "", 0)


def lease_path() -> Path:
    return Path(settings.DISTDB_DATA_DIR) / "run" / f"{settings.DISTDB_NODE_ID}.lease.json"


def lease_store(sent_at: float, lease_s: float, version: int) -> Lease:
    """Record a grant (the link agent): the lease runs ``lease_s`` from ``sent_at``."""
    lease = Lease(sent_at + lease_s, boot_id(), version)
    path = lease_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps({"deadline": lease.deadline, "boot": lease.boot,
                               "version": lease.version}))  # fmt: skip
    tmp.replace(path)
    _cache.lease, _cache.read_at = lease, time.monotonic()
    return lease


class _Cache:
    lease: Lease = NO_LEASE
    read_at: float = -1e9


_cache = _Cache()


def lease_current() -> Lease:
    """The last grant this server received (``NO_LEASE`` if none), cached briefly."""
    now = time.monotonic()
    if now - _cache.read_at < CACHE_S:
        return _cache.lease
    try:
        data = json.loads(lease_path().read_text())
        lease = Lease(float(data["deadline"]), str(data["boot"]), int(data["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        lease = NO_LEASE
    _cache.lease, _cache.read_at = lease, now
    return lease


def lease_forget() -> None:
    """Drop the cached lease (tests)."""
    _cache.lease, _cache.read_at = NO_LEASE, -1e9
