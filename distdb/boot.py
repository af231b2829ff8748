"""This host's boot id: a monotonic-clock reading means nothing in another boot.

Both sides of a lease count it on their own monotonic clock (DESIGN: durations, never
wall-clock instants compared across machines); a stored deadline is only honoured when
it was taken in the current boot. Shared by the master's leader leases and the tablet
server's freeze and leader leases.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@cache
def boot_id() -> str:
    """This boot's id (Linux); elsewhere one derived from when the monotonic clock started."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return f"t{round(time.time() - time.monotonic())}"
