"""The two ways the benchmark talks to the cluster, with one interface so that a workload is
written once and run end to end and one hop away:

* ``PublicApi``: the public REST API of the client servers, each request sent to the next
  client server in turn (both get the same share, as behind a round-robin balancer);
* ``OneHop``: one tablet server's internal API, as a client server calls it (the wire
  schemas of ``distdb.protocol``, a server JWT of role "client", stored keys) — the same
  operations with no routing and no public API in between.

Every method returns ``(error_kind, rows)``: ``error_kind`` is None on success, else a
short stable label ("http_503:range_frozen", "row:row_exists", "missing", "outdated")
that the summaries count. One pooled ``aiohttp`` session per transport, limited to the
concurrency, so each worker keeps reusing its keep-alive connection.
"""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import orjson

from distdb import protocol
from distdb.keys import encode_key

Result = tuple[str | None, int]
TIMEOUT = aiohttp.ClientTimeout(total=60)


def _session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=max(concurrency, 1), keepalive_timeout=120)
    return aiohttp.ClientSession(connector=connector, timeout=TIMEOUT)


def _error_code(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "unparsed"


class PublicApi:
    """The public REST API of every client server (``/api/v1/``), requests spread evenly."""

    def __init__(self, base_urls: list[str], token: str, table: str, concurrency: int) -> None:
        self.bases = [f"{u.rstrip('/')}/api/v1/tables/{table}" for u in base_urls]
        self._next = itertools.cycle(self.bases)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.json_headers = {**self.headers, "Content-Type": "application/json"}
        self.session = _session(concurrency)

    async def close(self) -> None:
        await self.session.close()

    async def _send(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        url = next(self._next) + path
        if body is None:
            async with self.session.request(method, url, headers=self.headers) as resp:
                return resp.status, await resp.read()
        data = orjson.dumps(body)
        async with self.session.request(method, url, data=data, headers=self.json_headers) as r:
            return r.status, await r.read()

    async def read(self, key: int) -> Result:
        status, raw = await self._send("GET", f"/rows/{key}")
        if status != 200:
            return f"http_{status}:{_error_code(raw)}", 0
        return None, 1

    async def update(self, key: int, column: str, value: Any) -> Result:
        status, raw = await self._send("PATCH", f"/rows/{key}", {"cells": {column: value}})
        if status != 200:
            return f"http_{status}:{_error_code(raw)}", 0
        return None, 1

    async def scan(self, start: int, limit: int) -> Result:
        status, raw = await self._send("GET", f"/rows?start={start}&limit={limit}")
        if status != 200:
            return f"http_{status}:{_error_code(raw)}", 0
        return None, len(orjson.loads(raw)["rows"])

    async def insert(self, rows: list[tuple[int, dict]]) -> Result:
        """Insert rows with ``rows:batch`` (one request, per-row results)."""
        mutations = [{"op": "insert", "key": k, "cells": c} for k, c in rows]
        status, raw = await self._send("POST", "/rows:batch", {"mutations": mutations})
        if status >= 300:
            return f"http_{status}:{_error_code(raw)}", 0
        body = orjson.loads(raw)
        if body["failed"]:
            first = next(r for r in body["results"] if r["error"] is not None)
            return f"row:{first['error']['code']}", len(rows) - body["failed"]
        return None, len(rows)

    async def read_many(self, keys: list[int]) -> Result:
        status, raw = await self._send("GET", "/rows?keys=" + ",".join(map(str, keys)))
        if status != 200:
            return f"http_{status}:{_error_code(raw)}", 0
        body = orjson.loads(raw)
        if body["failed"]:
            return f"row:{body['failed'][0]['error']['code']}", len(body["rows"])
        if body["missing"]:
            return "missing", len(body["rows"])
        return None, len(body["rows"])


class OneHop:
    """One tablet server's internal API (``/internal/v1/read|scan|mutate``), as a client
    server calls it: no public API, no routing, no merging."""

    def __init__(
        self, url: str, token: str, table: str, meta_version: int, concurrency: int
    ) -> None:
        self.url = url.rstrip("/") + "/internal/v1/"
        self.table, self.meta_version = table, meta_version
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.session = _session(concurrency)

    async def close(self) -> None:
        await self.session.close()

    async def _call(self, message: protocol.Message) -> tuple[str | None, dict]:
        endpoint = message.type  # type: ignore[attr-defined]
        data = protocol.dumps(message)
        async with self.session.post(self.url + endpoint, data=data, headers=self.headers) as r:
            status, raw = r.status, await r.read()
        if status != 200:
            return f"http_{status}:{_error_code(raw)}", {}
        return None, orjson.loads(raw)

    def _keys(self, keys: list[int]) -> list[str]:
        return [encode_key("int", k) for k in keys]

    async def _mutate(self, mutations: list[protocol.Mutation]) -> Result:
        error, body = await self._call(
            protocol.MutateRequest(
                table=self.table, meta_version=self.meta_version, mutations=mutations
            )
        )
        if error:
            return error, 0
        failed = [r for r in body["results"] if r["status"] in ("error", "outdated")]
        if failed:
            r = failed[0]
            kind = "outdated" if r["status"] == "outdated" else f"row:{r['error']['code']}"
            return kind, len(mutations) - len(failed)
        return None, len(mutations)

    async def read(self, key: int) -> Result:
        return await self.read_many([key])

    async def read_many(self, keys: list[int]) -> Result:
        msg = protocol.ReadRequest(  # as a client server asks: cells as stored JSON text
            table=self.table, meta_version=self.meta_version, keys=self._keys(keys), cells="text"
        )
        error, body = await self._call(msg)
        if error:
            return error, 0
        if body["outdated"]:
            return "outdated", len(body["rows"])
        if len(body["rows"]) != len(keys):
            return "missing", len(body["rows"])
        return None, len(keys)

    async def update(self, key: int, column: str, value: Any) -> Result:
        stored = encode_key("int", key)
        return await self._mutate([protocol.Mutation(op="set", key=stored, cells={column: value})])

    async def scan(self, start: int, limit: int) -> Result:
        msg = protocol.ScanRequest(
            table=self.table,
            meta_version=self.meta_version,
            start=encode_key("int", start),
            limit=limit,
        )
        error, body = await self._call(msg)
        if error:
            return error, 0
        if body["outdated"]:
            return "outdated", 0
        return None, len(body["rows"])

    async def insert(self, rows: list[tuple[int, dict]]) -> Result:
        return await self._mutate(
            [protocol.Mutation(op="insert", key=encode_key("int", k), cells=c) for k, c in rows]
        )


class PlainRows:
    """A plain HTTP row service: ``GET /rows/<key>`` and ``GET /rows/?keys=k1,k2`` (the peer
    baseline, ``bench.peer``; the ceiling, ``bench.ceiling``, answers any GET). Reads only:
    the baselines are compared on point reads and batched reads."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        self.base = base_url.rstrip("/") + "/rows/"
        self.session = _session(concurrency)

    async def close(self) -> None:
        await self.session.close()

    async def read(self, key: int) -> Result:
        async with self.session.get(f"{self.base}{key}") as r:
            status, raw = r.status, await r.read()
        if status != 200:
            return f"http_{status}:{raw[:40]!r}", 0
        return None, 1

    async def read_many(self, keys: list[int]) -> Result:
        async with self.session.get(self.base + "?keys=" + ",".join(map(str, keys))) as r:
            status, raw = r.status, await r.read()
        if status != 200:
            return f"http_{status}:{raw[:40]!r}", 0
        rows = len(orjson.loads(raw))
        return (None if rows == len(keys) else "missing"), rows
