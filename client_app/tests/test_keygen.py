"""New keys for rows added without one."""

from __future__ import annotations

import asyncio

from ulid import ULID

from .. import keygen
from ..keygen import KeyAllocator


async def test_integer_keys_come_from_master_blocks_and_are_handed_out_locally(
    cluster, monkeypatch
):
    monkeypatch.setattr(keygen, "KEY_BLOCK", 100)
    allocator = KeyAllocator()
    first = await allocator.int_keys("products", 30)
    second = await allocator.int_keys("products", 60)
    assert first + second == list(range(first[0], first[0] + 90))
    assert cluster.master_calls["keys"] == 1
    await allocator.int_keys("products", 30)  # 10 left in the block, 20 from a new one
    assert cluster.master_calls["keys"] == 2


async def test_two_client_servers_allocating_concurrently_never_collide(cluster, monkeypatch):
    monkeypatch.setattr(keygen, "KEY_BLOCK", 10)
    one, two = KeyAllocator(), KeyAllocator()
    batches = await asyncio.gather(
        *(allocator.int_keys("products", n) for n in (3, 7, 11, 25) for allocator in (one, two))
    )
    keys = [k for batch in batches for k in batch]
    assert len(keys) == len(set(keys)) == 2 * (3 + 7 + 11 + 25)


def test_string_keys_are_unique_increasing_and_26_characters():
    one, two = KeyAllocator(), KeyAllocator()
    keys = one.str_keys(5000)
    assert keys == sorted(keys) and len(set(keys)) == 5000
    assert all(len(k) == 26 and k.isalnum() for k in keys)
    assert not set(keys) & set(two.str_keys(5000))


def test_string_keys_keep_increasing_when_the_clock_steps_back():
    readings = iter([5_000, 5_000, 4_000, 4_000, 5_001, 3_000])
    keys = KeyAllocator(clock_ms=lambda: next(readings)).str_keys(6)
    assert keys == sorted(keys) and len(set(keys)) == 6
    assert [ULID.from_str(k).milliseconds for k in keys] == [5_000] * 4 + [5_001] * 2
