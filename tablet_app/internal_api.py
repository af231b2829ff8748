"""The tablet server's internal HTTP API: the hot path from client servers (and the master).

Loaded by the tablet server role: ``settings.HOT_PATH_APP`` points at ``app`` and
``distdb.asgi`` sends every ``/internal/`` request to it, bypassing Django's handler
(DESIGN §9: no middleware, no per-hook thread hops). Each handler parses the body
with its pydantic schema, calls ONE service function in ONE worker-thread hop, and
returns a dict encoded once by ``InternalApp`` — rows' cells go out as the stored
JSON text (``orjson.Fragment``), never parsed and re-encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings

from distdb import protocol
from distdb.errors import Forbidden
from distdb.internal_http import InternalApp, InternalRequest, RevokedTokenIds, run_read, run_sync
from tablet_app.services import control, ownership, replica_status, replication, revocations, rows
from tablet_app.services.access import access_recent, access_record

# Every caller's token is checked against the revoked list the master pushed over the link.
app = InternalApp(revoked=RevokedTokenIds(revocations.revocations_load))

ANY_SERVER = ("client", "tablet", "master")
PEERS = ("tablet", "master")  # copying a range out is a rebalancing step, not a client call

Msg = TypeVar("Msg", bound=protocol.Message)


Record = Callable[[Msg, Any], None]  # (request, result): count the call's keys


def _text_or_objects(msg: Any, result: Any) -> dict[str, Any]:
    """With ``cells="text"`` (reads, scans) the cells go out as the stored JSON text."""
    answer: dict[str, Any] = result.as_text_wire() if msg.cells == "text" else result.as_wire()
    return answer


def _data_route(
    name: str,
    schema: type[Msg],
    call: Callable[[Msg], rows.WireResult],
    record: Record[Msg],
) -> None:
    """Serve ``POST /internal/v1/<name>`` to any server: parse the body as ``schema``, run
    ``call`` (one ``rows`` service) and ``record`` (the key-access counts) in one
    worker-thread hop, answer the result's ``as_wire()``."""

    def served(msg: Msg) -> rows.WireResult:
        result = call(msg)
        record(msg, result)
        return result

    async def handler(request: InternalRequest) -> dict[str, Any]:
        msg: Msg = request.parse(schema)
        result: rows.WireResult = await run_sync(served, msg)
        return result.as_wire()

    app.route("POST", rf"/internal/v1/{name}", roles=ANY_SERVER)(handler)


def _read_route(
    name: str,
    schema: type[Msg],
    call: Callable[[Msg, bool], rows.WireResult],
    record: Record[Msg],
) -> None:
    """As ``_data_route``, for a read-only ``call(request, wait)``. With a reads' pool
    (``DISTDB_READ_THREADS``) it runs there with ``wait=False``; one that would have to
    wait for a write being replicated (``rows.MustWait``) runs again in the general pool,
    where waiting holds up no other read. Without one it runs, and may wait, in the
    general pool at once."""

    def served(msg: Msg, wait: bool) -> rows.WireResult:
        result = call(msg, wait)
        record(msg, result)
        return result

    async def handler(request: InternalRequest) -> dict[str, Any]:
        msg: Msg = request.parse(schema)
        if settings.DISTDB_READ_THREADS:
            try:
                return _text_or_objects(msg, await run_read(served, msg, False))
            except rows.MustWait:
                pass  # read again below, where it may wait
        return _text_or_objects(msg, await run_sync(served, msg, True))

    app.route("POST", rf"/internal/v1/{name}", roles=ANY_SERVER)(handler)


# The data plane: a client server's reads, scans and writes.
_read_route(
    "read",
    protocol.ReadRequest,
    lambda m, wait: rows.rows_read(m.table, m.keys, wait=wait),
    lambda m, r: (
        access_record(m.table, m.keys[0], len(m.keys) - len(r.outdated), write=False)
        if m.keys
        else None
    ),
)
_read_route(
    "scan",
    protocol.ScanRequest,
    lambda m, wait: rows.rows_scan(m.table, m.start, m.end, m.limit, wait=wait),
    lambda m, r: access_record(m.table, m.start, len(r.rows), write=False),
)
_data_route(
    "mutate",
    protocol.MutateRequest,
    lambda m: rows.rows_mutate(m.table, m.mutations),
    lambda m, r: (
        access_record(m.table, m.mutations[0].key, len(m.mutations), write=True)
        if m.mutations
        else None
    ),
)


@app.route("GET", r"/internal/v1/key-access", roles=("master",))
async def key_access(request: InternalRequest) -> protocol.KeyAccess:
    """The last hour's reads and writes per owned range and minute (the master's heatmap)."""
    return access_recent()


@app.route("GET", r"/internal/v1/health", roles=ANY_SERVER)
async def health(request: InternalRequest) -> protocol.TabletHealth:
    """The data plane answers (the master asks before it copies a new replica here)."""
    version = await run_sync(ownership.metadata_version_current)
    return protocol.TabletHealth(node_id=settings.DISTDB_NODE_ID, metadata_version=version)


@app.route("POST", r"/internal/v1/export", roles=PEERS)
async def export(request: InternalRequest) -> protocol.ExportResponse:
    """A move's copy: one page of a range's rows, in key order."""
    msg: protocol.ExportRequest = request.parse(protocol.ExportRequest)
    rows, more = await run_sync(
        control.rows_export, msg.table, msg.start, msg.end, msg.after, msg.limit, msg.max_bytes
    )
    return protocol.ExportResponse.model_construct(rows=rows, more=more)


@app.route("POST", r"/internal/v1/export-changes", roles=PEERS)
async def export_changes(request: InternalRequest) -> protocol.ExportChangesResponse:
    """A move's catch-up: the range's change-log entries after a seq, in seq order."""
    msg: protocol.ExportChangesRequest = request.parse(protocol.ExportChangesRequest)
    entries, more = await run_sync(
        control.changes_in_range_since,
        msg.table, msg.start, msg.end, msg.after_seq, msg.limit, msg.max_bytes,
    )  # fmt: skip
    return protocol.ExportChangesResponse.model_construct(entries=entries, more=more)


@app.route("POST", r"/internal/v1/changes", roles=("master",))
async def changes(request: InternalRequest) -> protocol.ChangesResponse:
    """Collection: the change log after the master's position, a size-capped page.

    HTTP rather than the link: an entry carries a whole row, up to a request's size,
    and WebSocket messages are capped (``protocol.PAGE_BYTES``' note)."""
    msg: protocol.ChangesRequest = request.parse(protocol.ChangesRequest)
    entries, more = await run_sync(
        lambda: control.changes_batch(msg.after_seq, msg.limit, max_bytes=msg.max_bytes)
    )
    return protocol.ChangesResponse.model_construct(entries=entries, more=more)


@app.route("POST", r"/internal/v1/replicate", roles=("tablet",))
async def replicate(request: InternalRequest) -> protocol.ReplicateResponse:
    """A leader's change-log entries for the ranges this server follows (``replication``)."""
    msg: protocol.ReplicateRequest = request.parse(protocol.ReplicateRequest)
    if request.claims is None or request.claims.sub != msg.leader:
        raise Forbidden("a leader sends its own entries only")
    answer: protocol.ReplicateResponse = await run_sync(
        replication.replicate_apply, msg.leader, msg.version, msg.entries
    )
    return answer


@app.route("GET", r"/internal/v1/replication", roles=("master",))
async def replication_state(request: InternalRequest) -> protocol.ReplicationState:
    """What this server follows (with the leader's seq applied) and leads (with each
    range's newest seq): the master's per-range replication lag."""
    state: protocol.ReplicationState = await run_sync(replica_status.replication_state)
    return state
