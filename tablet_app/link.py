"""The tablet server's link agent: dials the master's Channels endpoint and serves its commands.

Why a separate process (``manage.py tablet_link``) rather than inside ``runserver``:
Daphne implements no ASGI lifespan, so a runserver process has no start-up hook from
which to dial out (DESIGN §5). The agent shares the tablet's database with the data
plane; ownership changes it writes are seen by the data plane's next transaction, and
because the ownership check runs inside each write's transaction, a freeze or an
ownership change can never interleave with a write.

It reconnects by itself with capped, jittered backoff. Nothing is lost across a
restart: the change log is durable and the master asks for entries after the last
sequence number it acknowledged, so unreported changes are reported after reconnecting.

It also settles write freezes whose lease ended (a master that died mid-move): it
asks the master's HTTP API for the current metadata and lets ``freezes_resolve``
decide, whether or not the link itself is up.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from pydantic import ValidationError

from distdb.auth import own_token
from distdb.errors import DistdbError, error_from_dict
from distdb.protocol import (
    ApplyMetadataCommand,
    CatchUpCommand,
    ChangeEntry,
    ChangesCommand,
    CopyCommand,
    Heartbeat,
    Hello,
    IngestCommand,
    Metadata,
    RangeCommand,
    Reply,
    Row,
    TrimCommand,
    Welcome,
    dumps,
    error_info,
    master_to_tablet_adapter,
)
from tablet_app import services as control

log = logging.getLogger("distdb.tablet.link")
COPY_BATCH = 2000
CATCH_UP_BATCH = 5000
# A reply must fit in one WebSocket message the master accepts (Daphne's default cap is
# 1 MiB); change batches stop at about this size, leaving room for JSON overhead.
LINK_REPLY_BYTES = 400 * 1024
FREEZE_CHECK_S = 1.0  # how often expired freeze leases are looked for (see freezes_resolve)
REFUSED_CLOSE_CODES = (4401, 4403)  # the master's answer to a missing or wrong token


def master_ws_url() -> str:
    base = settings.DISTDB_MASTER_URL
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws/tablet/"


def _db(fn):
    """Run a control service in a worker thread with a fresh-enough DB connection."""

    def call(*args, **kwargs):
        close_old_connections()
        return fn(*args, **kwargs)

    return sync_to_async(call, thread_sensitive=True)


class TabletLink:
    """One connection's worth of state; ``run_forever`` reconnects."""

    def __init__(self) -> None:
        self.node_id: str = settings.DISTDB_NODE_ID
        self.heartbeat_s: float = 5.0
        self.connected = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

    async def run_forever(self, *, stop: asyncio.Event | None = None) -> None:
        resolver = asyncio.create_task(self._resolve_expired_freezes_forever())
        try:
            await self._link_forever(stop)
        finally:
            resolver.cancel()

    async def _link_forever(self, stop: asyncio.Event | None) -> None:
        delay = 0.2
        while stop is None or not stop.is_set():
            try:
                await self.run_once()
                delay = 0.2
            except websockets.ConnectionClosed as exc:
                # The master refuses a bad token with an error message and close code
                # 4401/4403; if the close wins the race with our hello, only the code is
                # left to say so. Retrying would not help: stop with the reason.
                if exc.rcvd is not None and exc.rcvd.code in REFUSED_CLOSE_CODES:
                    reason = exc.rcvd.reason or "token refused"
                    log.error("the master refused this tablet server: %s", reason)
                    raise SystemExit(f"refused by the master: {reason}") from None
                log.warning("link to master %s lost: %s", master_ws_url(), exc)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                log.warning("link to master %s lost: %s", master_ws_url(), exc)
            self.connected.clear()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def run_once(self) -> None:
        headers = {"Authorization": f"Bearer {own_token()}"}
        async with websockets.connect(
            master_ws_url(),
            additional_headers=headers,
            max_size=64 * 1024 * 1024,
            open_timeout=10,
            ping_interval=20,
        ) as ws:
            last_seq = await _db(control.changes_last_seq)()
            snapshot = await _db(control.metadata_version_current)()
            hello = Hello(
                url=settings.DISTDB_PUBLIC_URL, last_seq=last_seq, metadata_version=snapshot
            )
            await ws.send(dumps(hello))
            heartbeats = asyncio.create_task(self._heartbeats(ws))
            try:
                async for raw in ws:
                    await self._handle(ws, raw)
            finally:
                heartbeats.cancel()

    async def _resolve_expired_freezes_forever(self) -> None:
        while True:
            await asyncio.sleep(FREEZE_CHECK_S)
            try:
                await self.resolve_expired_freezes()
            except (OSError, aiohttp.ClientError, TimeoutError, DistdbError) as exc:
                log.warning("could not settle expired freezes with the master: %s", exc)
            except Exception:  # noqa: BLE001 - this loop must outlive any one failure
                log.exception("settling expired freezes failed; trying again")

    async def resolve_expired_freezes(self) -> int:
        """Lift or give away ranges whose freeze lease ended; returns how many were lifted."""
        if not await _db(control.freezes_expired_exist)():
            return 0
        fetched_at = timezone.now()  # before the request: the answer is at least this new
        payload = await self._request(
            "GET", settings.DISTDB_MASTER_URL + "/internal/v1/metadata", timeout_s=10
        )
        metadata = Metadata.model_validate(payload)
        lifted = await _db(control.freezes_resolve)(metadata, self.node_id, fetched_at)
        log.info("settled expired freezes with metadata v%s (%d lifted)", metadata.version, lifted)
        return lifted

    async def _heartbeats(self, ws) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            last_seq = await _db(control.changes_last_seq)()
            await ws.send(dumps(Heartbeat(last_seq=last_seq)))

    async def _handle(self, ws, raw: str | bytes) -> None:
        data = orjson.loads(raw)
        if isinstance(data, dict) and "error" in data:
            err = error_from_dict(data)
            log.error("the master refused this tablet server: %s (%s)", err.code, err.message)
            raise SystemExit(f"refused by the master: {err.code}: {err.message}")
        try:
            message = master_to_tablet_adapter.validate_python(data)
        except ValidationError as exc:
            log.error("bad message from the master: %s", exc)
            return
        if isinstance(message, Welcome):
            self.heartbeat_s = message.heartbeat_s
            self.connected.set()
            log.info("linked to the master as %s", self.node_id)
        elif isinstance(message, Metadata):
            await _db(control.metadata_apply)(message, self.node_id)
        else:
            # Commands run concurrently so a long copy does not hold up heartbeats/others.
            asyncio.create_task(self._command(ws, message))

    async def _command(self, ws, command) -> None:
        try:
            result = await self.execute(command)
            reply = Reply(id=command.id, ok=True, result=result)
        except DistdbError as exc:
            reply = Reply(id=command.id, ok=False, error=error_info(exc))
        except Exception as exc:  # report, keep the link up
            log.exception("command %s failed", command.type)
            reply = Reply(
                id=command.id,
                ok=False,
                error=error_info(DistdbError(f"{type(exc).__name__}: {exc}")),
            )
        try:
            await ws.send(dumps(reply))
        except websockets.ConnectionClosed:
            log.warning("could not reply to %s: the link closed", command.type)

    async def execute(self, command) -> dict[str, Any]:
        if isinstance(command, IngestCommand):
            n = await _db(control.rows_ingest)(command.table, command.rows, log_changes=False)
            return {"rows": n}
        if isinstance(command, ChangesCommand):
            entries, more = await _db(control.changes_batch)(
                command.after_seq, command.limit, max_bytes=LINK_REPLY_BYTES
            )
            return {"entries": entries, "more": more}
        if isinstance(command, TrimCommand):
            return {"trimmed": await _db(control.changes_trim)(command.upto_seq)}
        if isinstance(command, RangeCommand):
            return await self._range(command)
        if isinstance(command, CopyCommand):
            return await self._copy(command)
        if isinstance(command, CatchUpCommand):
            return await self._catch_up(command)
        if isinstance(command, ApplyMetadataCommand):
            await _db(control.metadata_apply)(command.metadata, self.node_id)
            return {"version": await _db(control.metadata_version_current)()}
        raise DistdbError(f"unknown command {command.type}")

    async def _range(self, c: RangeCommand) -> dict[str, Any]:
        if c.type == "freeze":
            until = timezone.now() + timedelta(seconds=c.lease_s)
            await _db(control.range_freeze)(c.table, c.start, c.end, until)
            return {"frozen_until": until.isoformat()}
        if c.type == "unfreeze":
            await _db(control.range_unfreeze)(c.table, c.start, c.end)
            return {}
        if c.type == "drop":
            return {"rows": await _db(control.range_drop)(c.table, c.start, c.end)}
        if c.type == "drop_unowned":
            return {"rows": await _db(control.rows_drop_unowned)(c.table, c.start, c.end)}
        return {"rows": await _db(control.range_count)(c.table, c.start, c.end)}

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {own_token()}"},
                timeout=aiohttp.ClientTimeout(total=60),
            )
        return self._http

    async def _request(
        self, method: str, url: str, body: dict[str, Any] | None = None, timeout_s: float = 60
    ) -> dict[str, Any]:
        """A JSON request to a peer's or the master's internal API; an error answer raises it."""
        data = orjson.dumps(body) if body is not None else None
        async with self._session().request(
            method,
            url,
            data=data,
            headers={"Content-Type": "application/json"} if data is not None else None,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            payload = orjson.loads(await resp.read())
            if resp.status != 200:
                raise error_from_dict(payload)
            return payload

    async def _copy(self, c: CopyCommand) -> dict[str, Any]:
        """Pull a range from its current owner over the internal API, in key order.

        The master catches the copy up afterwards from the source's log position it
        pinned before the copy began (``master_app.services.moves``).
        """
        after: str | None = None
        copied = 0
        while True:
            body = {
                "table": c.table,
                "start": c.start,
                "end": c.end,
                "after": after,
                "limit": COPY_BATCH,
            }
            payload = await self._request("POST", c.source_url + "/internal/v1/export", body)
            rows = [Row(key=r["key"], cells=r["cells"]) for r in payload["rows"]]
            if rows:
                copied += await _db(control.rows_ingest)(c.table, rows, log_changes=False)
                after = rows[-1].key
            if len(rows) < COPY_BATCH:
                return {"rows": copied}

    async def _catch_up(self, c: CatchUpCommand) -> dict[str, Any]:
        """Apply the source's changes to the range since ``after_seq``; returns the new position."""
        after = c.after_seq
        applied = 0
        while True:
            body = {
                "table": c.table,
                "start": c.start,
                "end": c.end,
                "after_seq": after,
                "limit": CATCH_UP_BATCH,
            }
            payload = await self._request(
                "POST", c.source_url + "/internal/v1/export-changes", body
            )
            entries = [ChangeEntry.model_validate(e) for e in payload["entries"]]
            if entries:
                applied += await _db(control.changes_apply_copied)(c.table, entries)
                after = max(e.seq for e in entries)
            if len(entries) < CATCH_UP_BATCH:
                return {"entries": applied, "last_seq": after}
