"""New row keys for rows added without one (client server role).

Integer-keyed tables: the master hands out blocks of fresh keys (``KeyBlock``); each
client server keeps the rest of its block per table and hands keys out locally, asking
again only when it runs out. Blocks never overlap, so client servers never collide.

String-keyed tables: keys are made locally, ULID-style: 48 bits of milliseconds then 80
random bits, in Crockford base32 (26 characters). They sort roughly by creation time, and
two client servers collide only if they draw the same 80 random bits in the same
millisecond. Within one process they are strictly increasing.
"""

from __future__ import annotations

import secrets
import time

from distdb.errors import MasterUnavailable

from . import internal_client
from .process_local import ProcessLocal

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Keys asked per block: one master round trip per ~1000 keyless rows of this server.
KEY_BLOCK = 1000
MAX_BLOCK = 100_000  # the most the master hands out in one block


class KeyAllocator:
    """Fresh keys of one client server (one per process; tests make several)."""

    def __init__(self) -> None:
        self._blocks: dict[str, list[list[int]]] = {}  # table -> [[next, end), ...]
        self._last_ulid = (0, 0)

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
                block = await internal_client.master_key_block(table, want)
                if block.table != table:
                    raise MasterUnavailable("the master sent a key block for another table")
                self._blocks.setdefault(table, []).append([block.first, block.first + block.count])
        return keys

    def str_keys(self, count: int) -> list[str]:
        return [self._ulid() for _ in range(count)]

    def _ulid(self) -> str:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = self._last_ulid
        if ms <= last_ms:
            # Same millisecond (or the clock stepped back): keep increasing.
            ms, rand = last_ms, (last_rand + 1) % (1 << 80)
        else:
            rand = secrets.randbits(80)
        self._last_ulid = (ms, rand)
        value = (ms << 80) | rand
        chars = []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        return "".join(reversed(chars))


key_allocator: ProcessLocal[KeyAllocator] = ProcessLocal(KeyAllocator)
