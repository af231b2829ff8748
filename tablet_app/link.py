"""The tablet server's link agent: dials the master's Channels endpoint and serves its commands.

Where it runs: under ``runserver`` as a separate process (``manage.py tablet_link``),
because Daphne implements no ASGI lifespan, so a runserver process has no start-up hook
from which to dial out (DESIGN §5). Under a server with lifespan (uvicorn, granian,
hypercorn) and ``DISTDB_LINK_IN_SERVER=1`` it runs inside the tablet server process
instead (``link_in_server``, started by ``distdb.asgi_server``): one process per tablet
server, ~100 MiB less each. The agent shares the tablet's database with the data
plane; ownership changes it writes are seen by the data plane's next transaction, and
because the ownership check runs inside each write's transaction, a freeze or an
ownership change can never interleave with a write.

It reconnects by itself: ``websockets``' reconnecting iterator dials again at once
after a link that was up drops, and backs off (jittered, capped, see
``reconnect_delays``) while dialling fails. Only a refusal by the master (a wrong or
missing token) stops it, with the reason, unless this server's token file changed since
it dialled: then the refusal is of the old token (a rotation: the operator wrote a new
token and revoked the old one) and it dials again with the new one. Nothing is lost
across a restart: the
change log is durable and the master asks for entries after the last sequence number
it acknowledged, so unreported changes are reported after reconnecting.

It also settles write freezes whose lease ended (a master that died mid-move): it
asks the master's HTTP API for the current metadata and lets ``freezes_resolve``
decide, whether or not the link itself is up.

It obeys only what the master signed (``distdb.link_signing``): commands reach the
master's consumer through Redis, and anything else written there is refused with
``link_unverified``. Each connection has its own ``LinkVerifier``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
)
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import aiohttp
import orjson
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from pydantic import BaseModel, ValidationError

from distdb.auth import own_token
from distdb.errors import DistdbError, LinkExpired, LinkUnverified, error_from_dict
from distdb.link_signing import LinkVerifier
from distdb.protocol import (
    ApplyMetadataCommand,
    ApplyMetadataReply,
    CatchUpCommand,
    CatchUpReply,
    Command,
    CommandResult,
    CopyCommand,
    CopyReply,
    CountCommand,
    CountReply,
    DropCommand,
    DropReply,
    DropTableCommand,
    DropTableReply,
    DropUnownedCommand,
    DropUnownedReply,
    ExportChangesRequest,
    ExportChangesResponse,
    ExportRequest,
    ExportResponse,
    FreezeCommand,
    FreezeReply,
    Heartbeat,
    Hello,
    IngestCommand,
    IngestReply,
    LeaseGrant,
    Metadata,
    Reply,
    ServerTokensRevoked,
    TrimCommand,
    TrimReply,
    UnfreezeCommand,
    UnfreezeReply,
    Welcome,
    dumps,
    error_info,
    master_to_tablet_adapter,
)
from tablet_app.services import (
    changes_apply_copied,
    changes_last_seq,
    changes_trim,
    freezes,
    freezes_due,
    freezes_resolve,
    metadata_apply,
    metadata_version_current,
    range_count,
    range_drop,
    range_freeze,
    range_unfreeze,
    revocations_store,
    rows_drop_unowned,
    rows_ingest,
    table_drop,
)
from tablet_app.services.expiry import idempotency_records_expire
from tablet_app.services.leader_lease import lease_clock, lease_store
from tablet_app.services.status import link_status_write

log = logging.getLogger("distdb.tablet.link")
COPY_BATCH = 2000
CATCH_UP_BATCH = 5000
# Expired messages in a row after which the agent dials again: its estimate of the master's
# clock (learnt from the welcome) must be wrong, e.g. the master's clock was stepped back
# since (``_refuse_unverified``). One or two are refused only: a replay looks the same.
EXPIRED_IN_A_ROW_REDIAL = 3
FREEZE_CHECK_S = 1.0  # how often expired freeze leases are looked for (see freezes_resolve)
REFUSED_CLOSE_CODES = (4401, 4403)  # the master's answer to a missing or wrong token
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.2, 5.0

P = ParamSpec("P")
T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=BaseModel)
PageT = TypeVar("PageT", ExportResponse, ExportChangesResponse)


class LinkSocket(Protocol):
    """What the agent uses of a connection (``websockets``' ``ClientConnection``)."""

    async def send(self, message: bytes) -> None: ...

    async def close(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...


Connect = Callable[..., AsyncIterable[LinkSocket]]  # ``websockets.connect``, or a test's fake


def master_ws_url() -> str:
    base = settings.DISTDB_MASTER_URL
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws/tablet/"


def reconnect_delays() -> Iterator[float]:
    """Seconds to wait before each new dial while dialling fails: 0.2 s doubling to 5 s,
    jittered. websockets' default starts at up to 5 s and grows to 90 s: too slow for a
    tablet the master is waiting on (a move's step, a rebalance run)."""
    delay = RECONNECT_FIRST_S
    while True:
        yield delay * (0.5 + random.random())
        delay = min(delay * 2, RECONNECT_MAX_S)


def retry_dial(exc: Exception) -> Exception | None:
    """Which failures to dial are retried (None) rather than raised: network errors,
    timeouts and any WebSocket failure, e.g. an HTTP error from a master that is
    restarting (websockets' default retries only 5xx answers)."""
    if isinstance(exc, OSError | TimeoutError | websockets.WebSocketException):
        return None
    return exc


def _db(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Run a service in the agent's one database thread with a fresh-enough connection."""

    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        close_old_connections()
        return fn(*args, **kwargs)

    return sync_to_async(call, thread_sensitive=True)


async def _status(up: bool, heartbeat_s: float) -> None:
    """Tell the tablet server's ``/readyz`` and ``/metrics`` whether the link is up."""
    try:
        await asyncio.to_thread(link_status_write, up, heartbeat_s)
    except OSError as exc:  # a full disk must not take the link down with it
        log.warning("could not write the link status file: %s", exc)


def _refused(reason: str) -> SystemExit:
    log.error("the master refused this tablet server: %s", reason)
    return SystemExit(f"refused by the master: {reason}")


class LinkRefused(Exception):
    """The master refused the token this connection was dialled with."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TabletLink:
    """The link agent; ``run_forever`` serves one connection after another.

    ``connect`` dials the master and yields a connection per (re)connect:
    ``websockets.connect`` in production, a fake in tests.
    """

    def __init__(
        self, *, connect: Connect = websockets.connect, probe_server: bool = False
    ) -> None:
        self.node_id: str = settings.DISTDB_NODE_ID
        # A link in a process of its own (``manage.py tablet_link``) asks its server's
        # /healthz before each heartbeat and withholds the beat if it does not answer.
        self.probe_server = probe_server
        self._server_was_down = False
        # The master's interval arrives with its welcome; until then beat at the default
        # (a leader lease lasts a few beats: one long first sleep let it lapse).
        self.heartbeat_s: float = 1.0
        self._beat_now = asyncio.Event()  # the welcome asks for a heartbeat at once
        self.connected = asyncio.Event()  # set by the master's welcome, cleared on loss
        self.verifier = LinkVerifier(self.node_id)  # a new one for each connection
        self._expired_in_a_row = 0  # expired messages in a row on this connection
        self._connect = connect
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # commands running (kept referenced)

    async def run_forever(self) -> None:
        """Serve the link until the master refuses this server (``SystemExit``) or the
        server stops (cancelled); either way the pooled HTTP session is closed."""
        resolver = asyncio.create_task(self._resolve_expired_freezes_forever())
        expirer = asyncio.create_task(self._expire_records_forever())
        try:
            await self._link_forever()
        finally:
            resolver.cancel()
            expirer.cancel()
            await self.close()

    async def _link_forever(self) -> None:
        """Dial with the current token; a refusal of a token since replaced in the token
        file (a rotation) dials again with the new one, any other stops the agent."""
        while True:
            token = own_token()
            try:
                await self._dial(token)
                return  # the dialler gave up (only a test's fake does)
            except LinkRefused as exc:
                if own_token() == token:
                    raise _refused(exc.reason) from None
                log.warning("the master refused the old token (%s); dialling again", exc.reason)

    async def _dial(self, token: str) -> None:
        dial = self._connect(
            master_ws_url(),
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=64 * 1024 * 1024,
            open_timeout=10,
            ping_interval=20,
            process_exception=retry_dial,
            reconnect_delays=reconnect_delays,
        )
        # websockets' iterator is an async generator; closing it when we stop (a refusal)
        # closes the open connection now rather than at garbage collection.
        connections = cast(AsyncGenerator[LinkSocket, None], aiter(dial))
        async with contextlib.aclosing(connections):
            async for ws in connections:
                try:
                    await self.serve(ws)
                except websockets.ConnectionClosed as exc:
                    # The master refuses a bad token with an error message and close code
                    # 4401/4403; if the close wins the race with our hello, only the code
                    # is left to say so. Retrying would not help: stop with the reason.
                    if exc.rcvd is not None and exc.rcvd.code in REFUSED_CLOSE_CODES:
                        raise LinkRefused(exc.rcvd.reason or "token refused") from None
                    log.warning("link to master %s lost: %s", master_ws_url(), exc)
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    log.warning("link to master %s lost: %s", master_ws_url(), exc)
                finally:
                    self.connected.clear()
                    await _status(False, self.heartbeat_s)

    async def serve(self, ws: LinkSocket) -> None:
        """Say hello on a new connection, then heartbeat and handle messages until it ends."""
        last_seq = await _db(changes_last_seq)()
        snapshot = await _db(metadata_version_current)()
        self.verifier = LinkVerifier(self.node_id)
        self._expired_in_a_row = 0
        hello = Hello(
            url=settings.DISTDB_PUBLIC_URL,
            last_seq=last_seq,
            metadata_version=snapshot,
            nonce=self.verifier.nonce,
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

    async def _expire_records_forever(self) -> None:
        """Delete expired Idempotency-Key records now and then (``expiry``)."""
        while True:
            await asyncio.sleep(settings.DISTDB_IDEMPOTENCY_EXPIRE_INTERVAL_S)
            try:
                await _db(idempotency_records_expire)()
            except Exception:  # noqa: BLE001 - this loop must outlive any one failure
                log.exception("expiring idempotency records failed; trying again later")

    async def resolve_expired_freezes(self) -> int:
        """Lift or give away ranges whose freeze lease ended; returns how many were lifted."""
        if not await _db(freezes_due)():
            return 0
        fetched_at = freezes.clock()  # before the request: the answer is at least this new
        # ``fence``: the master reads under its metadata lock, so a commit in flight
        # finishes first and one not yet started is refused (its lease has ended).
        metadata = await self._request(
            "GET",
            settings.DISTDB_MASTER_URL + "/internal/v1/metadata?fence=1",
            Metadata,
            timeout_s=10,
        )
        lifted = await _db(freezes_resolve)(metadata, self.node_id, fetched_at)
        log.info("settled expired freezes with metadata v%s (%d lifted)", metadata.version, lifted)
        return lifted

    async def _heartbeats(self, ws: LinkSocket) -> None:
        """Heartbeat at once (a leader lease comes back with the answer), then every
        ``heartbeat_s``. ``sent_at`` is read last, just before sending: the lease runs
        from it (``services.leader_lease``)."""
        while True:
            if not self.probe_server or await self._server_answers():
                last_seq = await _db(changes_last_seq)()
                version = await _db(metadata_version_current)()
                beat = Heartbeat(last_seq=last_seq, metadata_version=version, sent_at=lease_clock())
                await ws.send(dumps(beat))
                if self.connected.is_set():
                    await _status(True, self.heartbeat_s)
            self._beat_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.heartbeat_s)

    async def _server_answers(self) -> bool:
        """Whether this link's tablet server answers ``/healthz`` within a heartbeat.

        A heartbeat renews the leader lease of the *server's* ranges; a server that is
        paused or hung while its link runs on could not use it, and its ranges would
        answer nothing for as long as that lasted. Without the beat the lease lapses and
        the master fails them over (issue #10); the server, when it wakes, finds its
        lease ended and serves nothing it no longer leads.
        """
        url = settings.DISTDB_PUBLIC_URL + "/healthz"
        timeout = aiohttp.ClientTimeout(total=self.heartbeat_s)
        try:
            async with self._session().get(url, timeout=timeout) as answer:
                up = answer.status == 200
        except (OSError, aiohttp.ClientError, TimeoutError):
            up = False
        if up == self._server_was_down:  # a change: say it once
            if up:
                log.warning("the tablet server answers again: heartbeating")
            else:
                log.warning("the tablet server does not answer %s: withholding heartbeats", url)
        self._server_was_down = not up
        return up

    async def _handle(self, ws: LinkSocket, raw: str | bytes) -> None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            log.error("a message from the master that is not JSON: %s", exc)
            return
        if isinstance(data, dict) and "error" in data:
            err = error_from_dict(data)
            if not self.connected.is_set():  # before the welcome: the master refuses us
                raise LinkRefused(f"{err.code}: {err.message}")
            log.error("the master reported an error: %s (%s)", err.code, err.message)
            return
        if not isinstance(data, dict):
            log.error("a message from the master that is not an object")
            return
        try:
            data = self.verifier.open(data)
        except LinkUnverified as exc:
            await self._refuse_unverified(ws, data, exc)
            return
        self._expired_in_a_row = 0
        try:
            message = master_to_tablet_adapter.validate_python(data)
        except ValidationError as exc:
            log.error("bad message from the master: %s", exc)
            return
        if isinstance(message, Welcome):
            self.heartbeat_s = message.heartbeat_s
            self._beat_now.set()  # a heartbeat now, at the master's interval from then on
            self.connected.set()
            await _status(True, self.heartbeat_s)
            log.info("linked to the master as %s", self.node_id)
        elif isinstance(message, ServerTokensRevoked):
            await _db(revocations_store)(message.revoked)
            log.info("%d server token(s) revoked", len(message.revoked))
        elif isinstance(message, Metadata):
            await _db(metadata_apply)(message, self.node_id)
        elif isinstance(message, LeaseGrant):
            if message.sent_at > lease_clock():  # not a time this agent sent: refuse it
                log.warning("refused a lease grant for a heartbeat never sent")
                return
            await asyncio.to_thread(lease_store, message.sent_at, message.lease_s, message.version)
        else:
            # Commands run concurrently so a long copy does not hold up heartbeats/others.
            task = asyncio.create_task(self._command(ws, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _refuse_unverified(
        self, ws: LinkSocket, data: dict[str, Any], exc: LinkUnverified
    ) -> None:
        """Refuse a message that the master did not sign; a command gets an error reply.

        A welcome that fails is fatal, like a refusal: this server does not trust the key
        of the master it dialled, and dialling again will not change that."""
        if data.get("type") == "welcome" and not self.verifier.welcomed:
            raise _refused(f"its welcome is not signed by the key this server trusts: {exc}")
        log.warning("refused an unsigned or forged %r from the link: %s", data.get("type"), exc)
        command_id = data.get("id")
        if isinstance(command_id, str) and 0 < len(command_id) <= 64:
            reply = Reply(id=command_id, ok=False, error=error_info(exc))
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(dumps(reply))
        self._expired_in_a_row = self._expired_in_a_row + 1 if isinstance(exc, LinkExpired) else 0
        if self._expired_in_a_row >= EXPIRED_IN_A_ROW_REDIAL:
            # Signed by the master, yet every one expired: the master's clock has moved
            # since its welcome taught this connection. Without this the link refused
            # everything (metadata, leases) until the connection happened to drop.
            log.warning(
                "%d expired messages in a row: the master's clock moved since its welcome; "
                "dialling again to learn it",
                self._expired_in_a_row,
            )
            self._expired_in_a_row = 0
            await ws.close()

    async def _command(self, ws: LinkSocket, command: Command[Any]) -> None:
        try:
            reply = Reply(id=command.id, ok=True, result=await self.execute(command))
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

    async def execute(self, command: Command[Any]) -> CommandResult:
        """Carry out one command; its result is the command's own reply model."""
        c = command
        if isinstance(c, IngestCommand):
            return IngestReply(rows=await _db(rows_ingest)(c.table, c.rows, log_changes=False))
        if isinstance(c, TrimCommand):
            return TrimReply(trimmed=await _db(changes_trim)(c.upto_seq))
        if isinstance(c, FreezeCommand):
            # The lease runs from now, when the command has arrived: after the master
            # started its own count, so this one ends later (``services.freezes``).
            received_at = freezes.clock()
            freeze = await _db(range_freeze)(c.table, c.start, c.end, c.lease_s, received_at)
            return FreezeReply(lease_left_s=round(freeze.deadline - freezes.clock(), 3))
        if isinstance(c, UnfreezeCommand):
            await _db(range_unfreeze)(c.table, c.start, c.end)
            return UnfreezeReply()
        if isinstance(c, DropCommand):
            return DropReply(rows=await _db(range_drop)(c.table, c.start, c.end))
        if isinstance(c, DropTableCommand):
            return DropTableReply(rows=await _db(table_drop)(c.table))
        if isinstance(c, DropUnownedCommand):
            return DropUnownedReply(rows=await _db(rows_drop_unowned)(c.table, c.start, c.end))
        if isinstance(c, CountCommand):
            return CountReply(rows=await _db(range_count)(c.table, c.start, c.end))
        if isinstance(c, CopyCommand):
            return await self._copy(c)
        if isinstance(c, CatchUpCommand):
            return await self._catch_up(c)
        if isinstance(c, ApplyMetadataCommand):
            await _db(metadata_apply)(c.metadata, self.node_id, c.caught_up)
            return ApplyMetadataReply(version=await _db(metadata_version_current)())
        raise DistdbError(f"unknown command {command.type}")

    async def close(self) -> None:
        """Close the HTTP session (``run_forever`` does on its way out)."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # The token goes with each request (``_request``): it may be rotated.
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self._http

    async def _request(
        self,
        method: str,
        url: str,
        answer: type[ModelT],
        body: BaseModel | None = None,
        timeout_s: float = 60,
    ) -> ModelT:
        """A request to a peer's or the master's internal API, its answer parsed as
        ``answer``; an error answer is raised as its ``DistdbError``."""
        data = dumps(body) if body is not None else None
        headers = {"Authorization": f"Bearer {own_token()}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self._session().request(
            method,
            url,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise error_from_dict(orjson.loads(raw))
            return answer.model_validate_json(raw)

    async def _copy(self, c: CopyCommand) -> CopyReply:
        """Pull a range from its current owner over the internal API, in key order.

        The master catches the copy up afterwards from the source's log position it
        pinned before the copy began (``master_app.services.moves``).
        """
        after: str | None = None
        copied = 0
        pages = self._pages(
            c.source_url + "/internal/v1/export",
            ExportResponse,
            lambda: ExportRequest(
                table=c.table, start=c.start, end=c.end, after=after, limit=COPY_BATCH
            ),
        )
        async for page in pages:
            if page.rows:
                copied += await _db(rows_ingest)(c.table, page.rows, log_changes=False)
                after = page.rows[-1].key
        return CopyReply(rows=copied)

    async def _catch_up(self, c: CatchUpCommand) -> CatchUpReply:
        """Apply the source's changes to the range since ``after_seq``; returns the new position."""
        after = c.after_seq
        applied = 0
        pages = self._pages(
            c.source_url + "/internal/v1/export-changes",
            ExportChangesResponse,
            lambda: ExportChangesRequest(
                table=c.table, start=c.start, end=c.end, after_seq=after, limit=CATCH_UP_BATCH
            ),
        )
        async for page in pages:
            if page.entries:
                applied += await _db(changes_apply_copied)(
                    c.table, page.entries, c.start, c.end, leader=c.source
                )
                after = max(e.seq for e in page.entries)
        return CatchUpReply(applied=applied, last_seq=after)

    async def _pages(
        self, url: str, answer: type[PageT], request: Callable[[], BaseModel]
    ) -> AsyncIterator[PageT]:
        """Yield the pages of a peer's paged export until one says there is no ``more``.

        ``request()`` builds each page's request: it reads the cursor the caller moves past
        each page it is given, before the next one is asked for."""
        while True:
            page = await self._request("POST", url, answer, request())
            yield page
            if not page.more:
                return


async def freezes_settle_now() -> int:
    """Settle ended freezes with the master once, outside the agent (the admin's action)."""
    link = TabletLink()
    try:
        return await link.resolve_expired_freezes()
    finally:
        await link.close()


async def link_in_server() -> None:
    """The link as a task of the tablet server process (``settings.LIFESPAN_TASKS``).

    A refusal by the master stops the whole server, as it stops ``manage.py tablet_link``:
    a tablet server that cannot hear the master must not go on serving as if it could.
    """
    try:
        await TabletLink().run_forever()
    except SystemExit as exc:
        log.error("tablet link stopped (%s); stopping the server", exc)
        os.kill(os.getpid(), signal.SIGTERM)
