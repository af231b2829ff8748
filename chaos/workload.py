"""The fault harness's workloads: clients of the public API that record what they saw.

Every worker sends its requests to the client servers in turn (both of them, as behind a
balancer) and records each operation with its call and return time on one monotonic
clock, for ``chaos.checker``:

* **registers** (table ``chaos_reg``, string keys ``r00``..): reads (``GET`` a row), writes
  (``upsert`` of ``{"v": n}`` with n unique per write), deletes (``delete_row``), multi-row
  batches (several registers upserted in one ``rows:batch``: each row is its own write)
  and scans (each register in the scanned range is a read: present with its value, or
  absent) — all of them single-register operations the linearizability checker judges;
* **inserts** (table ``chaos_ins``, generated integer keys): rows added without a key, each
  carrying a unique token, sent with that token as their ``Idempotency-Key`` and retried
  (through the other client server) while the outcome is unknown; acknowledged ones must
  all be there, and every token at most once: a retry that made a second row is a
  duplicate the checker reports.

What an answer proves decides how it is recorded: a success is an operation with a known
return; a 4xx on a write is a definite refusal (nothing happened: left out, except that
``delete_row`` answering ``row_not_found`` is a read of "absent"); a 503, a timeout or a
broken connection on a write is an operation whose outcome is unknown (return at +inf); a
failed read proves nothing and is left out.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from chaos.checker import UNKNOWN, Op

REGISTER_TABLE = "chaos_reg"
INSERT_TABLE = "chaos_ins"
REQUEST_TIMEOUT_S = 15.0  # longer than the client server's own routing deadline (10 s)
INSERT_TRIES = 3  # an insert whose outcome is unknown is sent again, with the same key
FINAL_TRIES = 30  # the final scan honours 503s (Retry-After) this many times, a second apart


def register_keys(n: int) -> list[str]:
    return [f"r{i:02d}" for i in range(n)]


@dataclass
class Recorder:
    """Everything the workers saw, on one clock (seconds since ``t0``)."""

    t0: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    acked_inserts: dict[str, Any] = field(default_factory=dict)
    attempted_inserts: set[str] = field(default_factory=set)
    latencies: list[tuple[float, float, str, bool]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def op(self, **fields: Any) -> None:
        self.ops.append(Op(id=next(self._ids), **fields))

    def timing(self, call: float, ret: float, what: str, ok: bool) -> None:
        """(time, latency, request kind, succeeded) for the latency-over-time plot."""
        self.latencies.append((call, ret - call, what, ok))


@dataclass
class Answer:
    status: int | None  # None: no answer (timeout, connection error)
    body: Any = None

    @property
    def code(self) -> str | None:
        try:
            return str(self.body["error"]["code"])
        except (KeyError, TypeError):
            return None


class Client:
    """One worker's keep-alive connections to every client server, used in turn."""

    def __init__(self, base_urls: list[str], token: str) -> None:
        self.bases = itertools.cycle([u.rstrip("/") + "/api/v1/tables" for u in base_urls])
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=4),
        )

    async def close(self) -> None:
        await self.session.close()

    async def send(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        url = next(self.bases) + path
        data = orjson.dumps(body) if body is not None else None
        sent = {**self.headers, **(headers or {})}
        try:
            async with self.session.request(method, url, data=data, headers=sent) as r:
                raw = await r.read()
                try:
                    return Answer(r.status, orjson.loads(raw) if raw else None)
                except orjson.JSONDecodeError:
                    return Answer(r.status)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return Answer(None)


async def tables_create(client: Client) -> None:
    """Create the workload's tables (an existing one is fine)."""
    for name, key_type in ((REGISTER_TABLE, "str"), (INSERT_TABLE, "int")):
        answer = await client.send("POST", "/", {"name": name, "key_type": key_type})
        if answer.status not in (201, 409):
            raise RuntimeError(f"could not create {name}: {answer.status} {answer.body}")


@dataclass
class Mix:
    """Relative weights of the operations a worker picks from."""

    read: int = 35
    write: int = 30
    # Few deletes: one whose outcome is unknown cannot be bounded like a write (it writes
    # no value of its own) and stays a candidate for the rest of its key's history.
    delete: int = 1
    batch: int = 10
    scan: int = 7
    insert: int = 15

    def chooser(self, rng: random.Random) -> Callable[[], str]:
        names = ["read", "write", "delete", "batch", "scan", "insert"]
        weights = [getattr(self, n) for n in names]
        return lambda: rng.choices(names, weights)[0]


class Worker:
    """One client process's loop: pick an operation, run it, record what it proves."""

    def __init__(
        self, name: str, client: Client, rec: Recorder, keys: list[str], rng: random.Random
    ) -> None:
        self.name, self.client, self.rec, self.keys, self.rng = name, client, rec, keys, rng
        self.values = itertools.count(1)
        self.token_seq = itertools.count(1)

    def _value(self) -> str:
        return f"{self.name}-{next(self.values)}"  # unique across workers and writes

    async def run(self, stop: asyncio.Event, mix: Mix) -> None:
        pick = mix.chooser(self.rng)
        while not stop.is_set():
            kind = pick()
            await getattr(self, kind)()

    async def read(self) -> None:
        key = self.rng.choice(self.keys)
        call = self.rec.now()
        answer = await self.client.send("GET", f"/{REGISTER_TABLE}/rows/{key}")
        ret = self.rec.now()
        if answer.status == 200:
            value = (answer.body.get("cells") or {}).get("v")
            self.rec.op(key=key, kind="read", call=call, ret=ret, output=value, client=self.name)
        elif answer.status == 404 and answer.code == "row_not_found":
            self.rec.op(key=key, kind="read", call=call, ret=ret, output=None, client=self.name)
        self.rec.timing(call, ret, "read", answer.status in (200, 404))

    async def write(self) -> None:
        await self._batch([self.rng.choice(self.keys)])

    async def batch(self) -> None:
        await self._batch(self.rng.sample(self.keys, k=min(len(self.keys), 4)))

    async def _batch(self, keys: list[str]) -> None:
        values = {key: self._value() for key in keys}
        mutations = [{"op": "upsert", "key": k, "cells": {"v": v}} for k, v in values.items()]
        call = self.rec.now()
        answer = await self.client.send(
            "POST", f"/{REGISTER_TABLE}/rows:batch", {"mutations": mutations}
        )
        ret = self.rec.now()
        results = _results(answer)
        for key, value in values.items():
            status, code = results.get(key, (None, None))
            if status in ("created", "updated", "unchanged"):
                self._write(key, value, call, ret)
            elif not _refused(answer.status, code):
                self._write(key, value, call, UNKNOWN)
        self.rec.timing(call, ret, "write", answer.status == 200)

    def _write(self, key: str, value: str, call: float, ret: float) -> None:
        self.rec.op(key=key, kind="write", call=call, ret=ret, value=value, client=self.name)

    async def delete(self) -> None:
        key = self.rng.choice(self.keys)
        mutation = {"op": "delete_row", "key": key}
        call = self.rec.now()
        answer = await self.client.send(
            "POST", f"/{REGISTER_TABLE}/rows:batch", {"mutations": [mutation]}
        )
        ret = self.rec.now()
        status, code = _results(answer).get(key, (None, None))
        if status == "deleted":
            self.rec.op(key=key, kind="delete", call=call, ret=ret, client=self.name)
        elif code == "row_not_found":  # proves the register was empty at some instant
            self.rec.op(key=key, kind="read", call=call, ret=ret, output=None, client=self.name)
        elif not _refused(answer.status, code):
            self.rec.op(key=key, kind="delete", call=call, ret=UNKNOWN, client=self.name)
        self.rec.timing(call, ret, "delete", status == "deleted" or code == "row_not_found")

    async def scan(self) -> None:
        lo, hi = sorted(self.rng.sample(range(len(self.keys) + 1), k=2))
        inside = self.keys[lo:hi]
        end = self.keys[hi] if hi < len(self.keys) else None
        query = f"?start={inside[0]}&limit=1000" + (f"&end={end}" if end else "")
        call = self.rec.now()
        answer = await self.client.send("GET", f"/{REGISTER_TABLE}/rows{query}")
        ret = self.rec.now()
        if answer.status == 200 and not answer.body.get("cursor"):
            seen = {row["key"]: (row.get("cells") or {}).get("v") for row in answer.body["rows"]}
            for key in inside:
                self.rec.op(
                    key=key, kind="read", call=call, ret=ret, output=seen.get(key), client=self.name
                )
        self.rec.timing(call, ret, "scan", answer.status == 200)

    async def insert(self) -> None:
        token = f"{self.name}-t{next(self.token_seq)}"
        self.rec.attempted_inserts.add(token)
        once = {"Idempotency-Key": token}
        for _ in range(INSERT_TRIES):
            call = self.rec.now()
            answer = await self.client.send(
                "POST", f"/{INSERT_TABLE}/rows", [{"cells": {"t": token}}], headers=once
            )
            ret = self.rec.now()
            ok = answer.status == 201
            self.rec.timing(call, ret, "insert", ok)
            if ok:
                self.rec.acked_inserts[token] = token
                return
            if answer.status is not None and 400 <= answer.status < 500:
                return  # refused: retrying would not change it
            await asyncio.sleep(0.2)  # unknown outcome: send it again, same key


def _results(answer: Answer) -> dict[Any, tuple[str | None, str | None]]:
    """key -> (status, error code) from a rows:batch answer, whole-request errors included."""
    body = answer.body if isinstance(answer.body, dict) else {}
    results = body.get("results")
    if results is None:  # every row failed alike: the error shape carries them
        results = ((body.get("error") or {}).get("detail") or {}).get("results") or []
    out = {}
    for r in results:
        err = r.get("error") or {}
        out[r.get("key")] = (r.get("status"), err.get("code"))
    return out


def _refused(status: int | None, row_code: str | None) -> bool:
    """A definite refusal: the write surely did not happen (a client error, not a 5xx)."""
    if row_code in ("row_not_found", "row_exists", "invalid_key", "validation_failed"):
        return True
    return status is not None and 400 <= status < 500


async def final_inserts(client: Client) -> list[tuple[Any, str, Any]]:
    """(key, token, value) of every row of the inserts table, paging with the cursor."""
    found: list[tuple[Any, str, Any]] = []
    query = "?limit=5000"
    while True:
        answer = await client.send("GET", f"/{INSERT_TABLE}/rows{query}")
        for _ in range(FINAL_TRIES):  # a 503 says "retry": a breaker probing, a failover
            if answer.status != 503:
                break
            await asyncio.sleep(1.0)
            answer = await client.send("GET", f"/{INSERT_TABLE}/rows{query}")
        if answer.status != 200:
            raise RuntimeError(f"final scan failed: {answer.status} {answer.body}")
        for row in answer.body["rows"]:
            token = (row.get("cells") or {}).get("t")
            found.append((row["key"], token, token))
        cursor = answer.body.get("cursor")
        if not cursor:
            return found
        query = f"?cursor={cursor}&limit=5000"
