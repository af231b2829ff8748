"""In-process fake master and tablet servers for the client server's tests.

The real tablet servers are another app (and role apps never import each other), so the
client is tested against small ``aiohttp.web`` servers on 127.0.0.1 that speak the same
internal protocol (``distdb.protocol``) over dicts. Rows live in one store per table
shared by the fake tablets; a fake tablet serves a key only if the cluster's *current*
metadata assigns it there, so changing the layout behaves like a completed move: the old
owner answers ``outdated`` with the new metadata. Switches make a tablet always answer
outdated, leave the metadata out of outdated answers, answer ``range_frozen`` a number of
times, or hang; ``stop()`` takes it down.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web

from distdb import protocol
from distdb.auth import token_verify
from distdb.errors import DistdbError, MasterUnavailable, RangeFrozen, TableExists, TableNotFound
from distdb.keys import encode_key, in_range


def _json(model_or_dict: Any, status: int = 200) -> web.Response:
    body = protocol.dumps(model_or_dict) if hasattr(model_or_dict, "model_dump") else None
    if body is None:
        import orjson

        body = orjson.dumps(model_or_dict)
    return web.Response(body=body, status=status, content_type="application/json")


def _error(exc: DistdbError) -> web.Response:
    return _json(exc.as_dict(), status=exc.status)


def _check_token(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    token_verify(header.removeprefix("Bearer "), roles=("client",))


class Server:
    """An aiohttp app on a random loopback port."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class FakeTablet(Server):
    def __init__(self, cluster: FakeCluster, server_id: str) -> None:
        app = web.Application()
        app.router.add_post("/internal/v1/read", self.read)
        app.router.add_post("/internal/v1/scan", self.scan)
        app.router.add_post("/internal/v1/mutate", self.mutate)
        super().__init__(app)
        self.cluster, self.server_id = cluster, server_id
        self.calls: list[tuple[str, Any]] = []  # (endpoint, parsed request)
        self.always_outdated = False
        self.frozen_times = 0  # answer range_frozen to this many mutate calls
        self.hang_s = 0.0
        self.send_metadata = True  # False: outdated answers carry no metadata
        self.gate: asyncio.Event | None = None  # reads wait for it (a call held in flight)
        self.frozen_keys: set[str] = set()  # a read asking for one answers range_frozen

    def owns(self, table: str, key: str) -> bool:
        for tablet in self.cluster.metadata.tablets:
            if tablet.table == table and in_range(key, tablet.start, tablet.end):
                return tablet.server == self.server_id and not self.always_outdated
        return False

    async def _prepare(self, request: web.Request, model: type) -> Any:
        _check_token(request)
        message = model.model_validate_json(await request.read())
        self.calls.append((message.type, message))
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        return message

    async def read(self, request: web.Request) -> web.Response:
        message = await self._prepare(request, protocol.ReadRequest)
        if self.gate is not None:
            await self.gate.wait()
        if self.frozen_keys.intersection(message.keys):
            return _error(RangeFrozen("the key range is being moved; retry shortly"))
        store = self.cluster.rows.get(message.table, {})
        rows, outdated = [], []
        for key in message.keys:
            if not self.owns(message.table, key):
                outdated.append(key)
            elif key in store:
                rows.append(protocol.Row(key=key, cells=store[key]))
        metadata = self.cluster.metadata if outdated and self.send_metadata else None
        if message.cells == "text":
            import orjson

            pairs = [(r.key, orjson.dumps(r.cells).decode()) for r in rows]
            return _json(
                protocol.ReadTextResponse(rows=pairs, outdated=outdated, metadata=metadata)
            )
        return _json(protocol.ReadResponse(rows=rows, outdated=outdated, metadata=metadata))

    async def scan(self, request: web.Request) -> web.Response:
        message = await self._prepare(request, protocol.ScanRequest)
        mine = [
            t
            for t in self.cluster.metadata.tablets
            if t.table == message.table
            and t.server == self.server_id
            and in_range(message.start, t.start, t.end)
            and (t.end is None or (message.end is not None and message.end <= t.end))
        ]
        text = message.cells == "text"
        if not mine or self.always_outdated:
            model = protocol.ScanTextResponse if text else protocol.ScanResponse
            return _json(model(rows=[], outdated=True, metadata=self.cluster.metadata))
        store = self.cluster.rows.get(message.table, {})
        keys = sorted(k for k in store if in_range(k, message.start, message.end))
        if text:
            import orjson

            pairs = [(k, orjson.dumps(store[k]).decode()) for k in keys[: message.limit]]
            return _json(protocol.ScanTextResponse(rows=pairs))
        rows = [protocol.Row(key=k, cells=store[k]) for k in keys[: message.limit]]
        return _json(protocol.ScanResponse(rows=rows))

    async def mutate(self, request: web.Request) -> web.Response:
        message = await self._prepare(request, protocol.MutateRequest)
        frozen = self.frozen_times > 0
        self.frozen_times -= 1 if frozen else 0
        store = self.cluster.rows.setdefault(message.table, {})
        results = []
        for m in message.mutations:
            if not self.owns(message.table, m.key):
                results.append(protocol.MutationResult(key=m.key, status="outdated"))
            elif frozen:
                error = protocol.ErrorInfo(code="range_frozen", message="moving", retryable=True)
                results.append(protocol.MutationResult(key=m.key, status="error", error=error))
            else:
                results.append(self._apply(store, m))
        metadata = self.cluster.metadata if any(r.status == "outdated" for r in results) else None
        return _json(protocol.MutateResponse(results=results, metadata=metadata))

    @staticmethod
    def _apply(store: dict[str, dict], m: protocol.Mutation) -> protocol.MutationResult:
        def error(code: str) -> protocol.MutationResult:
            info = protocol.ErrorInfo(code=code, message=code.replace("_", " "))
            return protocol.MutationResult(key=m.key, status="error", error=info)

        row = store.get(m.key)
        if m.op == "insert":
            if row is not None:
                return error("row_exists")
            store[m.key] = dict(m.cells or {})
            status = "created"
        elif m.op == "upsert":
            status = "created" if row is None else "updated"
            store[m.key] = dict(m.cells or {})
        elif m.op == "set":
            if row is None:
                return error("row_not_found")
            new = {**row, **(m.cells or {})}
            status = "unchanged" if new == row else "updated"
            store[m.key] = new
        elif m.op == "delete_cells":
            if row is None:
                return error("row_not_found")
            new = {k: v for k, v in row.items() if k not in (m.columns or [])}
            status = "unchanged" if new == row else "updated"
            store[m.key] = new
        else:
            if row is None:
                return error("row_not_found")
            del store[m.key]
            status = "deleted"
        return protocol.MutationResult(key=m.key, status=status)


class FakeCluster:
    """A fake master plus fake tablet servers, all in this process."""

    def __init__(self, tablet_ids: tuple[str, ...] = ("tablet-1", "tablet-2")) -> None:
        self.metadata = protocol.Metadata(version=1)
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.tablets = {sid: FakeTablet(self, sid) for sid in tablet_ids}
        self.revoked: set[str] = set()
        self.revoked_failures = 0  # answer this many revocation-list requests with a 503
        self.next_key = 1_000_000
        self.key_requests: list[dict[str, Any]] = []  # bodies of the key-block requests
        self.master_calls: Counter[str] = Counter()
        app = web.Application()
        app.router.add_get("/internal/v1/metadata", self.get_metadata)
        app.router.add_post("/internal/v1/tables", self.create_table)
        app.router.add_post("/internal/v1/tables/{table}/keys", self.key_block)
        app.router.add_post("/internal/v1/tables/{table}/rf", self.table_rf)
        app.router.add_get("/internal/v1/api-tokens/revoked", self.get_revoked)
        self.master = Server(app)

    async def start(self) -> None:
        await self.master.start()
        for tablet in self.tablets.values():
            await tablet.start()

    async def stop(self) -> None:
        for tablet in self.tablets.values():
            await tablet.stop()
        await self.master.stop()

    def layout(
        self,
        table: str,
        key_type: str,
        splits: list[tuple[Any, str]],
        columns: list[str] | None = None,
        rf: int = 1,
    ) -> protocol.Metadata:
        """Assign ``table``'s ranges: [(first user key or None, server id), ...], in order.

        Publishes a new metadata version, as the master does after a move.
        """
        starts = ["" if k is None else encode_key(key_type, k) for k, _ in splits]
        assigned = [
            protocol.TabletAssignment(
                table=table,
                start=start,
                end=starts[i + 1] if i + 1 < len(starts) else None,
                server=server,
                url=self.tablets[server].url,
            )
            for i, (start, (_, server)) in enumerate(zip(starts, splits, strict=True))
        ]
        tables = dict(self.metadata.tables)
        tables[table] = protocol.TableInfo(key_type=key_type, columns=columns, rf=rf)  # type: ignore[arg-type]
        others = [t for t in self.metadata.tablets if t.table != table]
        self.metadata = protocol.Metadata(
            version=self.metadata.version + 1, tables=tables, tablets=others + assigned
        )
        self.rows.setdefault(table, {})
        return self.metadata

    def put(self, table: str, key_type: str, key: Any, cells: dict[str, Any]) -> None:
        self.rows.setdefault(table, {})[encode_key(key_type, key)] = cells

    def get(self, table: str, key_type: str, key: Any) -> dict[str, Any] | None:
        return self.rows.get(table, {}).get(encode_key(key_type, key))

    # --- the master's internal API ----------------------------------------------------------

    async def get_metadata(self, request: web.Request) -> web.Response:
        _check_token(request)
        self.master_calls["metadata"] += 1
        return _json(self.metadata)

    async def create_table(self, request: web.Request) -> web.Response:
        _check_token(request)
        body = await request.json()
        if body["name"] in self.metadata.tables:
            return _error(TableExists(f"table {body['name']!r} exists"))
        self.master_calls["create"] += 1
        request = protocol.TableCreateRequest.model_validate(body)
        first = next(iter(self.tablets))
        layout = [(None, first)]
        return _json(self.layout(body["name"], body["key_type"], layout, body["columns"],
                                 request.rf or 2))  # fmt: skip

    async def table_rf(self, request: web.Request) -> web.Response:
        """The master's rf change: a new version with the table's new rf."""
        _check_token(request)
        self.master_calls["rf"] += 1
        body = protocol.TableRfRequest.model_validate(await request.json())
        name = request.match_info["table"]
        if name not in self.metadata.tables:
            return _error(TableNotFound(f"no table {name!r}", table=name))
        tables = dict(self.metadata.tables)
        tables[name] = tables[name].model_copy(update={"rf": body.rf})
        self.metadata = self.metadata.model_copy(
            update={"version": self.metadata.version + 1, "tables": tables}
        )
        return _json(self.metadata)

    async def key_block(self, request: web.Request) -> web.Response:
        _check_token(request)
        self.master_calls["keys"] += 1
        body = await request.json()
        count, above = body["count"], body.get("above")
        self.key_requests.append(body)
        first = self.next_key if above is None else max(self.next_key, above + 1)
        self.next_key = first + count
        table = request.match_info["table"]
        return _json(protocol.KeyBlock(table=table, first=first, count=count))

    async def get_revoked(self, request: web.Request) -> web.Response:
        _check_token(request)
        self.master_calls["revoked"] += 1
        if self.revoked_failures > 0:
            self.revoked_failures -= 1
            return _error(MasterUnavailable("the database is locked"))
        return _json({"revoked": sorted(self.revoked)})
