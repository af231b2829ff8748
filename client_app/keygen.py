"""New row keys for rows added without one (client server role).

Integer-keyed tables: the master hands out blocks of fresh keys (``KeyBlock``); each
client server keeps the rest of its block per table and hands keys out locally, asking
again only when it runs out. Blocks never overlap, so client servers never collide.

String-keyed tables: keys are ULIDs made locally (the ``python-ulid`` package): 48 bits
of milliseconds then 80 random bits, in Crockford base32 (26 characters). They sort
roughly by creation time, and two client servers collide only if they draw the same 80
random bits in the same millisecond. Within one process they are strictly increasing:
keys of one millisecond count up from its first random value, and the clock the
generator reads never steps back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ulid import LaxMonotonicPolicy, ULIDGenerator

from distdb.errors import MasterUnavailable

from . import internal_client
from .process_local import ProcessLocal

# Keys asked per block: one master round trip per ~1000 keyless rows of this server.
KEY_BLOCK = 1000
MAX_BLOCK = 100_000  # the most the master hands out in one block


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class KeyAllocator:
    """Fresh keys of one client server (one per process; tests make several)."""

    def __init__(self, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._blocks: dict[str, list[list[int]]] = {}  # table -> [[next, end), ...]
        self._above: dict[str, int] = {}  # table -> a key that exists: ask for keys above it
        self._clock_ms = clock_ms
        self._last_ms = 0
        # Lax: should the 80 random bits of one millisecond run out, draw new ones
        # instead of raising (the strict policy's choice) in the middle of a request.
        self._ulids = ULIDGenerator(clock=self._clock, policy=LaxMonotonicPolicy())

    async def int_keys(self, table: str, count: int) -> list[int]:
        """``count`` integer keys never handed out before, from this server's blocks.

        Taking keys is synchronous between awaits, so concurrent requests on the event
        loop never take the same key; a request that finds the pool short asks the
        master for a block of at least what it still needs.
        """
        keys: list[int] = []
        while len(keys) < count:
            pool = self._blocks.setdefault(table, [])
            while pool and len(keys) < count:
                block = pool[0]
                take = min(count - len(keys), block[1] - block[0])
                keys.extend(range(block[0], block[0] + take))
                block[0] += take
                if block[0] >= block[1]:
                    pool.pop(0)
            if len(keys) < count:
                want = min(max(count - len(keys), KEY_BLOCK), MAX_BLOCK)
                granted = await internal_client.master_key_block(
                    table, want, self._above.pop(table, None)
                )
                if granted.table != table:
                    raise MasterUnavailable("the master sent a key block for another table")
                self._blocks.setdefault(table, []).append(
                    [granted.first, granted.first + granted.count]
                )
        return keys

    def collided(self, table: str, key: int) -> None:
        """A generated key existed already (a user gave it explicitly): drop the blocks
        held for ``table`` and have the next one start above ``key``."""
        self._blocks.pop(table, None)
        self._above[table] = max(key, self._above.get(table, key))

    def str_keys(self, count: int) -> list[str]:
        return [str(self._ulids.generate()) for _ in range(count)]

    def _clock(self) -> int:
        """Milliseconds since the epoch, never less than last time (the clock may step back)."""
        self._last_ms = max(self._last_ms, self._clock_ms())
        return self._last_ms


key_allocator: ProcessLocal[KeyAllocator] = ProcessLocal(KeyAllocator)
