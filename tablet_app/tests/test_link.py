"""The link agent's side of the master link, over a fake WebSocket: commands and their typed
replies, bad messages, reconnecting and being refused. Services run on the test database."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from websockets.frames import Close

from distdb import link_signing, protocol
from distdb.errors import TabletUnavailable
from distdb.link_signing import link_seal
from distdb.protocol import (
    ApplyMetadataCommand,
    CatchUpCommand,
    ChangeEntry,
    CopyCommand,
    CountCommand,
    DropCommand,
    DropUnownedCommand,
    ExportChangesRequest,
    ExportChangesResponse,
    ExportRequest,
    ExportResponse,
    FreezeCommand,
    IngestCommand,
    Mutation,
    Reply,
    ServerTokensRevoked,
    TrimCommand,
    UnfreezeCommand,
    Welcome,
    tablet_to_master_adapter,
)
from tablet_app import link as tablet_link
from tablet_app.link import TabletLink, reconnect_delays, retry_dial
from tablet_app.models import ChangeLogEntry, OwnedRange, Row
from tablet_app.services import (
    changes_last_seq,
    metadata_version_current,
    revocations_load,
    rows_mutate,
)
from tablet_app.tests.conftest import OTHER, freeze, in_thread, tablet

# The agent runs services in asgiref's database thread: the data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def close_agent_connection():
    yield
    await sync_to_async(connections.close_all, thread_sensitive=True)()


@pytest.fixture
def token(settings, tmp_path) -> str:
    settings.DISTDB_TOKEN_FILE = tmp_path / "tablet.jwt"
    settings.DISTDB_TOKEN_FILE.write_text("the-token\n")
    return "the-token"


class FakeSocket:
    """One connection to the master: yields ``incoming`` (dicts sent as JSON, bytes as
    they are), records what the agent sends, then ends: normally, or closed with
    ``close`` like the ``websockets`` library reports it."""

    def __init__(self, *incoming: dict[str, Any] | bytes, close: Close | None = None) -> None:
        self.incoming = incoming
        self.close_frame = close
        self.sent: list[dict[str, Any]] = []
        self.closed_by_agent = False

    async def send(self, data: bytes) -> None:
        self.sent.append(orjson.loads(data))

    async def close(self) -> None:
        self.closed_by_agent = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes]:
        for message in self.incoming:
            yield message if isinstance(message, bytes) else orjson.dumps(message)
        if self.close_frame is not None:
            raise websockets.ConnectionClosedError(rcvd=self.close_frame, sent=None)

    def replies(self) -> list[Reply]:
        return [Reply.model_validate(m) for m in self.sent if m["type"] == "reply"]


class FakeDialer:
    """Stands in for ``websockets.connect``: yields one connection per socket, then stops
    (where the library would dial again)."""

    def __init__(self, *sockets: FakeSocket) -> None:
        self.sockets = sockets
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, **kwargs: Any) -> AsyncIterator[FakeSocket]:
        self.calls.append((url, kwargs))
        return self._connections()

    async def _connections(self) -> AsyncIterator[FakeSocket]:
        for ws in self.sockets:
            yield ws


def message(model: protocol.Message) -> dict[str, Any]:
    return model.model_dump(mode="json")


NONCE = "fixed-test-nonce-0123456789"


@pytest.fixture(autouse=True)
def fixed_nonce(monkeypatch):
    """Every connection's hello carries ``NONCE``, so a test can sign its welcome ahead."""
    monkeypatch.setattr(link_signing, "new_nonce", lambda: NONCE)


def sealed(model: protocol.Message | dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A message as the master sends it: signed for this tablet server."""
    body = model if isinstance(model, dict) else message(model)
    return link_seal(body, settings.DISTDB_NODE_ID, ttl_s=60, **kwargs)


def welcome() -> dict[str, Any]:
    return sealed(Welcome(heartbeat_s=60), nonce=NONCE)


async def welcomed(link: TabletLink) -> TabletLink:
    if not link.verifier.welcomed:
        await link._handle(FakeSocket(), orjson.dumps(welcome()))
    return link


async def run_command(link: TabletLink, command: protocol.Command[Any]) -> Reply:
    """Hand ``command`` to the agent as the master would and return the reply it sends."""
    ws = FakeSocket()
    await welcomed(link)
    await link._handle(ws, orjson.dumps(sealed(command)))
    await asyncio.gather(*link._tasks)
    [sent] = ws.sent
    reply = tablet_to_master_adapter.validate_python(sent)
    assert isinstance(reply, Reply) and reply.id == command.id
    return reply


async def result_of(link: TabletLink, command: protocol.Command[Any]) -> Any:
    reply = await run_command(link, command)
    assert reply.ok, reply.error
    assert type(reply.result) is command.reply_model  # the command's own reply model
    return reply.result


@pytest.fixture
def link(owned) -> TabletLink:
    return TabletLink(connect=FakeDialer())


async def put(table: str, *keys: str) -> None:
    mutations = [Mutation(op="upsert", key=k, cells={"k": k}) for k in keys]
    await in_thread(rows_mutate, table, mutations)


# --- every command gets its own typed reply -------------------------------------------------------


async def test_ingest_stores_the_rows_unlogged_and_says_how_many(link):
    rows = [protocol.Row(key="a", cells={"x": 1}), protocol.Row(key="b", cells={})]
    result = await result_of(link, IngestCommand(id="i", table="t", rows=rows))
    assert result.rows == 2
    assert await in_thread(Row.objects.filter(table="t").count) == 2
    assert await in_thread(ChangeLogEntry.objects.count) == 0


async def test_trim_deletes_acknowledged_entries_and_says_how_many(link):
    await put("t", "a", "b", "c")
    second = (await in_thread(list, ChangeLogEntry.objects.order_by("seq")))[1].seq
    result = await result_of(link, TrimCommand(id="tr", upto_seq=second))
    assert result.trimmed == 2
    assert await in_thread(ChangeLogEntry.objects.count) == 1


async def test_freeze_refuses_writes_for_its_lease_from_arrival_and_unfreeze_lifts_it(link, clock):
    frozen = await result_of(link, FreezeCommand(id="f", table="t", start="g", lease_s=30))
    assert frozen.lease_left_s == 30.0  # counted on the monotonic clock from arrival
    row = await in_thread(OwnedRange.objects.get, table="t", start_key="g")
    assert row.frozen_deadline == clock() + 30
    write = [Mutation(op="upsert", key="h", cells={})]
    assert (await in_thread(rows_mutate, "t", write)).results[0]["status"] == "error"
    await result_of(link, UnfreezeCommand(id="u", table="t", start="g"))
    assert (await in_thread(rows_mutate, "t", write)).results[0]["status"] == "created"


async def test_count_and_drop_a_range_that_is_not_owned_say_how_many_rows(link):
    rows = [protocol.Row(key=k, cells={}) for k in ("a", "b", "n")]
    await result_of(link, IngestCommand(id="i", table="u", rows=rows))
    assert (await result_of(link, CountCommand(id="n", table="u", end="m"))).rows == 2
    assert (await result_of(link, DropCommand(id="d", table="u", end="m"))).rows == 2
    assert (await result_of(link, CountCommand(id="n2", table="u"))).rows == 1


async def test_drop_unowned_drops_only_rows_outside_the_owned_ranges(link):
    rows = [protocol.Row(key=k, cells={}) for k in ("a", "n")]  # u: [m, +inf) is ours
    await result_of(link, IngestCommand(id="i", table="u", rows=rows))
    assert (await result_of(link, DropUnownedCommand(id="d", table="u"))).rows == 1
    assert await in_thread(list, Row.objects.values_list("key", flat=True)) == ["n"]


async def test_apply_metadata_answers_the_version_now_held(link, owned):
    metadata = owned.model_copy(update={"version": 4, "tablets": [tablet("t", server=OTHER)]})
    result = await result_of(link, ApplyMetadataCommand(id="m", metadata=metadata))
    assert result.version == 4 == await in_thread(metadata_version_current)
    assert not await in_thread(OwnedRange.objects.filter(table="t").exists)


class FakePeer:
    """The source tablet's internal API: pages of its rows and of its change log."""

    def __init__(self, rows: list[protocol.Row], entries: list[ChangeEntry]) -> None:
        self.rows, self.entries = rows, entries
        self.requests: list[tuple[str, Any]] = []

    async def __call__(self, method, url, answer, body=None, timeout_s=60):
        self.requests.append((url, body))
        if isinstance(body, ExportRequest):
            after = [r for r in self.rows if body.after is None or r.key > body.after]
            page = ExportResponse(rows=after[: body.limit], more=len(after) > body.limit)
            return answer.model_validate(message(page))
        assert isinstance(body, ExportChangesRequest)
        left = [e for e in self.entries if e.seq > body.after_seq]
        changes = ExportChangesResponse(entries=left[: body.limit], more=len(left) > body.limit)
        return answer.model_validate(message(changes))


async def test_copy_pages_through_the_sources_export_and_says_how_many_rows(link, monkeypatch):
    peer = FakePeer([protocol.Row(key=k, cells={"k": k}) for k in "abcde"], [])
    monkeypatch.setattr(link, "_request", peer)
    monkeypatch.setattr(tablet_link, "COPY_BATCH", 2)
    command = CopyCommand(id="cp", table="v", start="a", end="x", source_url="http://src")
    assert (await result_of(link, command)).rows == 5
    assert [(url, body.after) for url, body in peer.requests] == [
        ("http://src/internal/v1/export", None),
        ("http://src/internal/v1/export", "b"),
        ("http://src/internal/v1/export", "d"),
    ]
    assert {(b.table, b.start, b.end, b.limit) for _, b in peer.requests} == {("v", "a", "x", 2)}
    assert await in_thread(Row.objects.filter(table="v").count) == 5


async def test_catch_up_applies_the_sources_changes_and_answers_its_new_position(link, monkeypatch):
    entries = [
        ChangeEntry(seq=11, table="v", key="a", op="put", cells={"n": 1}),
        ChangeEntry(seq=12, table="v", key="b", op="put", cells={"n": 2}),
        ChangeEntry(seq=15, table="v", key="a", op="delete"),
    ]
    peer = FakePeer([], entries)
    monkeypatch.setattr(link, "_request", peer)
    monkeypatch.setattr(tablet_link, "CATCH_UP_BATCH", 2)
    command = CatchUpCommand(id="cu", table="v", source_url="http://src", after_seq=10)
    result = await result_of(link, command)
    assert (result.applied, result.last_seq) == (3, 15)
    assert [body.after_seq for _, body in peer.requests] == [10, 12]
    assert await in_thread(list, Row.objects.filter(table="v").values_list("key", flat=True)) == [
        "b"
    ]


# --- failures are replies too ---------------------------------------------------------------------


async def test_a_distdb_error_is_an_error_reply_with_its_code(link):
    reply = await run_command(link, DropCommand(id="d", table="t"))  # t is owned here
    assert not reply.ok and reply.result is None
    assert reply.error.code == "conflict"


async def test_an_unexpected_exception_is_an_internal_error_reply(link, monkeypatch):
    def broken(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tablet_link, "range_count", broken)
    reply = await run_command(link, CountCommand(id="n", table="t"))
    assert not reply.ok
    assert (reply.error.code, reply.error.message) == (
        "internal_error",
        "RuntimeError: disk on fire",
    )


@pytest.mark.parametrize(
    "raw",
    [
        lambda: b"not json",
        lambda: orjson.dumps(sealed({"type": "explode", "id": "x"})),
        lambda: orjson.dumps(
            sealed({"v": 1, "type": "count", "id": "x", "table": "t", "surprise": 1})
        ),
    ],
)
async def test_a_bad_message_is_logged_and_ignored(link, raw, caplog):
    ws = FakeSocket()
    await welcomed(link)
    await link._handle(ws, raw())
    assert ws.sent == [] and not link._tasks
    assert "from the master" in caplog.text


async def test_an_error_from_the_master_once_linked_is_logged_not_fatal(link, caplog):
    ws = FakeSocket()
    await link._handle(ws, orjson.dumps(welcome()))
    await link._handle(ws, orjson.dumps(TabletUnavailable("busy").as_dict()))
    assert link.connected.is_set()
    assert "tablet_unavailable" in caplog.text


# --- the connection: hello, reconnecting, refusals ------------------------------------------------


async def test_the_agent_says_hello_and_dials_again_after_a_lost_link(owned, token):
    await put("t", "a")
    lost = FakeSocket(welcome(), close=Close(1011, "server error"))
    second = FakeSocket(welcome())
    dialer = FakeDialer(lost, second)
    link = TabletLink(connect=dialer)
    await link._link_forever()  # returns when the fake dialer has no connection left
    hello = {
        "v": 1,
        "type": "hello",
        "url": "http://testserver",
        "last_seq": await in_thread(changes_last_seq),
        "metadata_version": 3,
        "nonce": NONCE,
    }
    # The hello first; a heartbeat may follow at once (it asks for the leader lease).
    assert lost.sent[0] == hello and second.sent[0] == hello
    assert all(m["type"] == "heartbeat" for m in lost.sent[1:] + second.sent[1:])
    assert not link.connected.is_set()  # cleared when a link ends
    [(url, options)] = dialer.calls
    assert url == "ws://127.0.0.1:3000/ws/tablet/"
    assert options["additional_headers"] == {"Authorization": "Bearer the-token"}
    assert options["process_exception"] is retry_dial
    assert options["reconnect_delays"] is reconnect_delays


async def test_everything_the_agent_passes_to_websockets_connect_is_a_connect_option(token):
    dialer = FakeDialer()
    await TabletLink(connect=dialer)._link_forever()
    [(_, options)] = dialer.calls
    accepted = inspect.signature(websockets.connect).parameters
    assert set(options) <= set(accepted)  # anything else would go to create_connection


async def test_an_error_before_the_welcome_stops_the_agent_with_the_masters_reason(owned, token):
    refusal = {"error": {"code": "token_invalid", "message": "bad signature"}}
    ws = FakeSocket(refusal, close=Close(4401, "token_invalid"))
    with pytest.raises(SystemExit, match="refused by the master: token_invalid: bad signature"):
        await TabletLink(connect=FakeDialer(ws, FakeSocket())).run_forever()


@pytest.mark.parametrize(
    ("close", "reason"),
    [(Close(4403, "token_wrong_role"), "token_wrong_role"), (Close(4401, ""), "token refused")],
)
async def test_a_refusing_close_code_stops_the_agent_with_its_reason(owned, token, close, reason):
    second = FakeSocket()
    link = TabletLink(connect=FakeDialer(FakeSocket(close=close), second))
    with pytest.raises(SystemExit, match=f"refused by the master: {reason}"):
        await link.run_forever()
    assert second.sent == []  # it did not dial again


class HangingDialer(FakeDialer):
    """A dialer whose connection attempt never ends (the server stops meanwhile)."""

    async def _connections(self) -> AsyncIterator[FakeSocket]:
        await asyncio.Event().wait()
        yield FakeSocket()


async def test_a_stopped_link_closes_its_http_session(owned, token):
    """The server's shutdown cancels the link; its pooled session (copies, catch-ups) must
    close then, not be reported as "Unclosed client session" by asyncio at exit."""
    link = TabletLink(connect=HangingDialer())
    session = link._session()
    running = asyncio.ensure_future(link.run_forever())
    await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert session.closed
    assert link._http is None


# --- reconnecting policy --------------------------------------------------------------------------


def test_failed_dials_back_off_from_a_fifth_of_a_second_to_five_seconds_with_jitter():
    delays = reconnect_delays()
    first = [next(delays) for _ in range(12)]
    assert 0.1 <= first[0] <= 0.3
    assert all(2.5 <= d <= 7.5 for d in first[6:])  # capped at 5 s, +-50 %


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (websockets.InvalidHandshake("bad"), True),
        (ValueError("a bug"), False),
    ],
)
def test_network_and_websocket_failures_are_retried_and_bugs_are_raised(exc, retried):
    assert (retry_dial(exc) is None) is retried


async def test_an_ended_freeze_is_settled_with_a_fenced_read_of_the_masters_metadata(
    link, owned, clock, monkeypatch
):
    await in_thread(freeze, "t", "g", "p", -1.0)  # the lease has ended
    asked: list[str] = []

    async def master(method, url, answer, body=None, timeout_s=60):
        asked.append(url)
        clock.advance(0.5)  # the answer comes later than the request was sent
        return owned  # the master still gives us the range: the move was abandoned

    monkeypatch.setattr(link, "_request", master)
    assert await link.resolve_expired_freezes() == 1
    assert asked and asked[0].endswith("/internal/v1/metadata?fence=1")
    write = [Mutation(op="upsert", key="h", cells={})]
    assert (await in_thread(rows_mutate, "t", write)).results[0]["status"] == "created"


async def test_a_live_freeze_is_not_settled_and_the_master_is_not_asked(link, monkeypatch):
    await in_thread(freeze, "t", "g", "p", 5.0)

    async def master(*args, **kwargs):
        raise AssertionError("asked the master about a live lease")

    monkeypatch.setattr(link, "_request", master)
    assert await link.resolve_expired_freezes() == 0


# --- only what the master signed ------------------------------------------------------------------


async def test_an_unsigned_command_is_refused_with_a_reply_and_not_run(link, monkeypatch):
    """What Redis carries unsigned (anyone could have put it there) changes nothing."""
    await welcomed(link)
    monkeypatch.setattr(tablet_link, "rows_drop_unowned", lambda *a: pytest.fail("ran it"))
    ws = FakeSocket()
    command = DropUnownedCommand(id="evil", table="t")
    await link._handle(ws, orjson.dumps(message(command)))
    await asyncio.gather(*link._tasks)
    [reply] = ws.replies()
    assert (reply.id, reply.ok, reply.error.code) == ("evil", False, "link_unverified")


async def test_unsigned_metadata_is_not_applied(link, owned):
    await welcomed(link)
    before = await in_thread(metadata_version_current)
    evil = message(owned.model_copy(update={"version": 10**9, "tablets": []}))
    await link._handle(FakeSocket(), orjson.dumps(evil))
    assert await in_thread(metadata_version_current) == before


async def test_a_welcome_not_signed_by_the_trusted_key_stops_the_agent(owned, token):
    forged = message(Welcome(heartbeat_s=60))  # no signature at all
    link = TabletLink(connect=FakeDialer(FakeSocket(forged)))
    with pytest.raises(SystemExit, match="not signed by the key this server trusts"):
        await link.run_forever()


# --- revoked server tokens and token rotation -----------------------------------------------------


async def test_the_revoked_tokens_the_master_signs_are_kept_in_the_database(link):
    await welcomed(link)
    assert await in_thread(revocations_load) is None  # never told: the API fails closed
    await link._handle(FakeSocket(), orjson.dumps(sealed(ServerTokensRevoked(revoked=["j1"]))))
    assert await in_thread(revocations_load) == frozenset({"j1"})
    await link._handle(FakeSocket(), orjson.dumps(sealed(ServerTokensRevoked(revoked=[]))))
    assert await in_thread(revocations_load) == frozenset()


async def test_an_unsigned_list_of_revoked_tokens_is_not_kept(link):
    await welcomed(link)
    forged = message(ServerTokensRevoked(revoked=[]))
    await link._handle(FakeSocket(), orjson.dumps(forged))
    assert await in_thread(revocations_load) is None


async def test_a_refusal_after_the_token_file_changed_dials_again_with_the_new_token(
    owned, token, settings
):
    """Rotation: the operator writes a new token, then revokes the old one; the master
    drops the link (4401 token_revoked) and the agent dials again with the new token."""
    from distdb.files import write_private

    revoked = FakeSocket(welcome(), close=Close(4401, "token_revoked"))
    relinked = FakeSocket(welcome())
    calls: list[str] = []

    def dial(url: str, **options: Any) -> AsyncIterator[FakeSocket]:
        calls.append(options["additional_headers"]["Authorization"])

        async def connections() -> AsyncIterator[FakeSocket]:
            if len(calls) == 1:
                write_private(settings.DISTDB_TOKEN_FILE, "the-new-token\n")
                yield revoked
            else:
                yield relinked

        return connections()

    await TabletLink(connect=dial)._link_forever()
    assert calls == ["Bearer the-token", "Bearer the-new-token"]
    assert relinked.sent and relinked.sent[0]["type"] == "hello"


async def test_the_agents_http_calls_send_the_current_token(owned, token, settings, monkeypatch):
    from distdb.files import write_private

    link = TabletLink(connect=FakeDialer())
    sent: list[str] = []

    class FakeResponse:
        status = 200

        async def read(self) -> bytes:
            return protocol.dumps(protocol.Metadata(version=1))

        async def __aenter__(self) -> FakeResponse:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

    def request(method: str, url: str, **kwargs: Any) -> FakeResponse:
        sent.append(kwargs["headers"]["Authorization"])
        return FakeResponse()

    monkeypatch.setattr(link._session(), "request", request)
    await link._request("GET", "http://m/internal/v1/metadata", protocol.Metadata)
    write_private(settings.DISTDB_TOKEN_FILE, "the-new-token\n")
    await link._request("GET", "http://m/internal/v1/metadata", protocol.Metadata)
    assert sent == ["Bearer the-token", "Bearer the-new-token"]
    await link.close()


async def _beats_within(link: TabletLink, seconds: float) -> list[dict[str, Any]]:
    ws = FakeSocket()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(link._heartbeats(ws), seconds)
    return [m for m in ws.sent if m["type"] == "heartbeat"]


async def test_a_link_of_its_own_withholds_heartbeats_while_its_server_does_not_answer(
    settings,
):
    """A paused or hung server cannot use the lease a heartbeat renews: withheld, the
    lease lapses and the master fails the ranges over (the link used to beat on)."""
    from aiohttp import web

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings.DISTDB_PUBLIC_URL = f"http://127.0.0.1:{port}"
    link = TabletLink(connect=FakeDialer(), probe_server=True)
    link.heartbeat_s = 0.2
    try:
        assert await _beats_within(link, 0.5)  # the server answers: beats go out
        await runner.cleanup()  # now it answers nothing
        assert await _beats_within(link, 0.7) == []
        # In-server links (and tests' links) never probe: they beat regardless.
        assert await _beats_within(TabletLink(connect=FakeDialer()), 0.3)
    finally:
        await runner.cleanup()
        await link.close()


async def test_a_link_welcomed_while_the_masters_clock_was_ahead_dials_again(link, monkeypatch):
    """The master's wall clock was stepped forward when it welcomed this connection, then
    back (chaos seed 20261204, +260 s): every later message looked expired and was
    refused, so the tablet applied no metadata and took no lease for as long as the
    connection lasted. A few expired messages in a row now make the agent dial again:
    the new welcome (bound to a new nonce) re-teaches it the master's time."""
    from distdb import auth

    real = auth.clock
    monkeypatch.setattr(auth, "clock", lambda: real() + 260)
    ahead = welcome()
    monkeypatch.setattr(auth, "clock", real)
    ws = FakeSocket()
    await link._handle(ws, orjson.dumps(ahead))
    message = lambda: orjson.dumps(sealed(ServerTokensRevoked(revoked=[])))  # noqa: E731
    for _ in range(tablet_link.EXPIRED_IN_A_ROW_REDIAL - 1):
        await link._handle(ws, message())
    assert not ws.closed_by_agent  # one stale message (a replay) is only refused
    await link._handle(ws, message())
    assert ws.closed_by_agent


async def test_an_expired_message_among_good_ones_is_refused_without_dialling_again(
    link, monkeypatch
):
    from distdb import auth

    real = auth.clock
    ws = FakeSocket()
    await link._handle(ws, orjson.dumps(welcome()))
    for _ in range(2 * tablet_link.EXPIRED_IN_A_ROW_REDIAL):
        monkeypatch.setattr(auth, "clock", lambda: real() - 600)  # a replay of an old one
        stale = orjson.dumps(sealed(ServerTokensRevoked(revoked=[])))
        monkeypatch.setattr(auth, "clock", real)
        await link._handle(ws, stale)
        await link._handle(ws, orjson.dumps(sealed(ServerTokensRevoked(revoked=[]))))
    assert not ws.closed_by_agent
