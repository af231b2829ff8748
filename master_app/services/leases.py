"""Named leases: locks that expire, so a holder that dies (SIGKILL) cannot hold them for good.

A lease row is taken and renewed inside a transaction that locks it (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` transactions are serialized), so
two processes can never both believe they hold it. ``held`` keeps a lease renewed
from a background thread while the holder works, and tells the holder (``check``) if
it was lost — e.g. the process was stopped for longer than the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from distdb.errors import LeaseHeld, LeaseLost
from master_app.models import Lease

log = logging.getLogger(__name__)
MAINTENANCE = "maintenance"


def holder_name(what: str) -> str:
    return f"{what} ({socket.gethostname()} pid {os.getpid()})"


def lease_acquire(name: str, holder: str, ttl_s: float) -> Lease | None:
    """Take the lease if it is free or expired; None if someone else holds it."""
    now = timezone.now()
    with transaction.atomic():
        lease, _ = Lease.objects.select_for_update().get_or_create(name=name)
        if lease.holder and lease.holder != holder and lease.until and lease.until > now:
            return None
        lease.holder, lease.until, lease.acquired_at = holder, now + timedelta(seconds=ttl_s), now
        lease.save()
        return lease


def lease_renew(name: str, holder: str, ttl_s: float) -> bool:
    """Extend the lease if ``holder`` still holds it; False if it was lost."""
    with transaction.atomic():
        lease = Lease.objects.select_for_update().filter(name=name).first()
        if lease is None or lease.holder != holder:
            return False
        lease.until = timezone.now() + timedelta(seconds=ttl_s)
        lease.save(update_fields=["until"])
        return True


def lease_release(name: str, holder: str) -> None:
    Lease.objects.filter(name=name, holder=holder).update(holder="", until=None)


def lease_current(name: str) -> Lease | None:
    """The lease if someone holds it now (None when free or expired)."""
    lease = Lease.objects.filter(name=name).first()
    if lease and lease.holder and lease.until and lease.until > timezone.now():
        return lease
    return None


class HeldLease:
    """A lease kept alive by a renewing thread; ``check()`` raises once it was lost.

    The thread renews every ``renew_every_s`` (a third of the lease by default, so two
    renewals can fail or be late before it expires). ``wait_renewed`` lets a caller (a
    test) wait for renewals instead of sleeping.
    """

    def __init__(
        self, name: str, holder: str, ttl_s: float, *, renew_every_s: float | None = None
    ) -> None:
        self.name, self.holder, self.ttl_s = name, holder, ttl_s
        self.renew_every_s = ttl_s / 3 if renew_every_s is None else renew_every_s
        self.lost = False
        self.renewals = 0
        self._changed = threading.Condition()  # notified after each renewal, and on loss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_forever, daemon=True)

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"the {self.name} lease was lost; stopping")

    def wait_renewed(self, renewals: int, timeout_s: float) -> bool:
        """Wait until the lease was renewed ``renewals`` times in all, or was lost; False
        if neither happened within ``timeout_s``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.renewals >= renewals or self.lost, timeout_s)

    def _renew_forever(self) -> None:
        try:
            while not self._stop.wait(self.renew_every_s):
                close_old_connections()
                if not lease_renew(self.name, self.holder, self.ttl_s):
                    log.error("lost the %s lease", self.name)
                    self._lose()
                    return
                with self._changed:
                    self.renewals += 1
                    self._changed.notify_all()
        except Exception:  # noqa: BLE001 - a failed renewal must not kill silently
            log.exception("renewing the %s lease failed", self.name)
            self._lose()
        finally:
            connections.close_all()

    def _lose(self) -> None:
        with self._changed:
            self.lost = True
            self._changed.notify_all()


@contextmanager
def held(
    name: str,
    holder: str,
    ttl_s: float,
    *,
    wait_s: float = 0,
    renew_every_s: float | None = None,
) -> Iterator[HeldLease]:
    """Hold ``name`` for the block; raises ``LeaseHeld`` (naming the holder) if it is
    still taken after ``wait_s`` seconds. ``renew_every_s``: see ``HeldLease``."""
    deadline = time.monotonic() + wait_s
    acquired = lease_acquire(name, holder, ttl_s)
    while acquired is None and time.monotonic() < deadline:
        time.sleep(0.5)
        acquired = lease_acquire(name, holder, ttl_s)
    if acquired is None:
        current = lease_current(name)
        who = current.holder if current else "someone"
        since = f" since {current.acquired_at:%Y-%m-%d %H:%M:%S}" if current else ""
        raise LeaseHeld(f"{who} holds the {name} lease{since}", holder=who)
    lease = HeldLease(name, holder, ttl_s, renew_every_s=renew_every_s)
    lease._thread.start()
    try:
        yield lease
    finally:
        lease._stop.set()
        lease._thread.join(timeout=5)
        lease_release(name, holder)
