"""Workloads send the operations of their mix, on keys that exist."""

from __future__ import annotations

import random
from collections import Counter

from bench.generators import Values
from bench.workloads import MIXES, KeySpace, load_operation, mix_operation


class FakeTransport:
    """Records what a workload asks for; every call succeeds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    async def read(self, key):
        self.calls.append(("read", key))
        return None, 1

    async def update(self, key, column, value):
        self.calls.append(("update", key))
        return None, 1

    async def scan(self, start, limit):
        self.calls.append(("scan", limit))
        return None, limit

    async def insert(self, rows):
        self.calls.append(("insert", [k for k, _ in rows]))
        return None, len(rows)

    async def read_many(self, keys):
        self.calls.append(("read_many", keys))
        return None, len(keys)


async def test_workload_a_reads_and_updates_half_and_half_and_skips_missing_keys():
    keys, transport = KeySpace(), FakeTransport()
    keys.take(1000)
    keys.forget(list(range(0, 1000, 2)))  # every even key's insert failed
    op = mix_operation(transport, MIXES["a"], keys, Values(rng=random.Random(1)), seed=1)
    for _ in range(2000):
        await op(0)
    kinds = Counter(kind for kind, _ in transport.calls)
    assert abs(kinds["read"] - kinds["update"]) < 200
    assert all(key % 2 == 1 for _, key in transport.calls)


async def test_batched_reads_ask_for_a_hundred_distinct_existing_keys():
    keys, transport = KeySpace(), FakeTransport()
    keys.take(5000)
    keys.forget(list(range(100)))
    op = mix_operation(transport, MIXES["batch_read"], keys, Values(), seed=2)
    await op(0)
    ((kind, asked),) = transport.calls
    assert kind == "read_many" and len(set(asked)) == 100
    assert not set(asked) & keys.missing


async def test_workload_e_inserts_new_keys_above_the_loaded_ones():
    keys, transport = KeySpace(), FakeTransport()
    keys.take(100)
    op = mix_operation(transport, MIXES["e"], keys, Values(), seed=3)
    for _ in range(400):
        await op(0)
    inserted = [k for kind, ks in transport.calls if kind == "insert" for k in ks]
    assert inserted and min(inserted) >= 100 and len(set(inserted)) == len(inserted)
    assert all(1 <= limit <= 100 for kind, limit in transport.calls if kind == "scan")


async def test_the_load_inserts_every_row_once_in_batches():
    keys, transport = KeySpace(), FakeTransport()
    op = load_operation(transport, keys, Values(), rows=250, batch=100)
    for _ in range(3):
        await op(0)
    batches = [ks for _, ks in transport.calls]
    assert [len(b) for b in batches] == [100, 100, 50]
    assert sorted(k for b in batches for k in b) == list(range(250))
