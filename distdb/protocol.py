"""Wire message schemas shared by every role (CONVENTIONS §5).

One place for every message that crosses a process boundary: client server ->
tablet server (internal HTTP API), client/tablet -> master (metadata, key
allocation) and master <-> tablet (the Channels WebSocket link). Every message
is a pydantic model that forbids unknown fields, carries a ``type``
discriminator and the protocol version ``v``.

Keys on the wire between servers are always *stored* keys (see ``distdb.keys``):
only client servers convert between user keys and stored keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1

TableName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
StoredKey = Annotated[str, Field(max_length=300)]
Cells = dict[str, Any]


class Message(BaseModel):
    """Base of every wire message: unknown fields are an error, ``v`` is checked."""

    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = PROTOCOL_VERSION


class Strict(BaseModel):
    """Nested wire objects: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


# --- metadata ---------------------------------------------------------------------------------


class TableInfo(Strict):
    key_type: Literal["int", "str"]
    columns: list[str] | None = None  # None: any column is allowed


class TabletAssignment(Strict):
    """One tablet: the half-open stored-key range [start, end) of a table and its server."""

    table: TableName
    start: StoredKey = ""  # "" = start of the key space
    end: StoredKey | None = None  # None = end of the key space
    server: str
    url: str


class Metadata(Message):
    type: Literal["metadata"] = "metadata"
    version: int = Field(ge=0)
    tables: dict[str, TableInfo] = {}
    tablets: list[TabletAssignment] = []


# --- client server -> tablet server -----------------------------------------------------------


class ReadRequest(Message):
    type: Literal["read"] = "read"
    table: TableName
    meta_version: int = Field(ge=0)
    keys: list[StoredKey] = Field(max_length=100_000)


class ScanRequest(Message):
    type: Literal["scan"] = "scan"
    table: TableName
    meta_version: int = Field(ge=0)
    start: StoredKey = ""
    end: StoredKey | None = None
    limit: int = Field(ge=1, le=100_000)


MutationOp = Literal["insert", "upsert", "set", "delete_cells", "delete_row"]


class Mutation(Strict):
    """One row mutation; atomic on its row.

    insert: create the row, fail with ``row_exists`` if it is there; upsert: replace
    the row's cells whole; set: merge ``cells`` into the row (``row_not_found`` if
    absent); delete_cells: remove ``columns``; delete_row: remove the row.
    """

    op: MutationOp
    key: StoredKey
    cells: Cells | None = None
    columns: list[str] | None = None


class MutateRequest(Message):
    type: Literal["mutate"] = "mutate"
    table: TableName
    meta_version: int = Field(ge=0)
    mutations: list[Mutation] = Field(max_length=100_000)


TabletRequest = Annotated[ReadRequest | ScanRequest | MutateRequest, Field(discriminator="type")]
tablet_request_adapter: TypeAdapter[ReadRequest | ScanRequest | MutateRequest] = TypeAdapter(
    TabletRequest
)


# --- tablet server -> client server -----------------------------------------------------------


class Row(Strict):
    key: StoredKey
    cells: Cells


class ErrorInfo(Strict):
    code: str
    message: str
    retryable: bool = False


class ReadResponse(Message):
    """Rows found, in request order (missing keys are absent), plus keys not owned here."""

    type: Literal["read_result"] = "read_result"
    rows: list[Row]
    outdated: list[StoredKey] = []
    metadata: Metadata | None = None  # present when ``outdated`` is not empty


class ScanResponse(Message):
    """Rows of [start, end) in key order; ``outdated`` when this tablet does not own the range."""

    type: Literal["scan_result"] = "scan_result"
    rows: list[Row]
    outdated: bool = False
    metadata: Metadata | None = None


class MutationResult(Strict):
    key: StoredKey
    status: Literal["created", "updated", "deleted", "unchanged", "error", "outdated"]
    error: ErrorInfo | None = None


class MutateResponse(Message):
    """One result per mutation, in request order."""

    type: Literal["mutate_result"] = "mutate_result"
    results: list[MutationResult]
    metadata: Metadata | None = None  # present when a result is ``outdated``


# --- master/tablet -> tablet server: copying a range (rebalancing) ----------------------------


class ExportRequest(Message):
    """A page of the rows of [start, end) with keys > ``after`` (None: from ``start``)."""

    type: Literal["export"] = "export"
    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    after: StoredKey | None = None
    limit: int = Field(default=1000, ge=1, le=100_000)


class ExportResponse(Message):
    """Rows in key order; ``last_seq``: the change log's last seq read before the rows."""

    type: Literal["export_result"] = "export_result"
    rows: list[Row]
    last_seq: int = Field(ge=0)


class ExportChangesRequest(Message):
    """Change-log entries of [start, end) with seq > ``after_seq``, in seq order."""

    type: Literal["export_changes"] = "export_changes"
    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    after_seq: int = Field(ge=0)
    limit: int = Field(default=1000, ge=1, le=100_000)


class ChangeEntry(Strict):
    """One change-log entry: the row's full image after the change (None: deleted)."""

    seq: int
    table: TableName
    key: StoredKey
    op: Literal["put", "delete"]
    cells: Cells | None = None


class ExportChangesResponse(Message):
    type: Literal["export_changes_result"] = "export_changes_result"
    entries: list[ChangeEntry]


# --- client/tablet -> master ------------------------------------------------------------------


MAX_KEY_BLOCK = 100_000  # keys one request may reserve


class TableCreateRequest(Message):
    """Create a table (a client server relays the public API's create to the master)."""

    type: Literal["table_create"] = "table_create"
    name: TableName
    key_type: Literal["int", "str"] = "int"
    columns: list[str] | None = None


class KeyBlockRequest(Message):
    """Reserve ``count`` fresh integer keys of a table (the table is in the URL)."""

    type: Literal["key_block_request"] = "key_block_request"
    count: int = Field(ge=1, le=MAX_KEY_BLOCK)


class KeyBlock(Message):
    """A block of fresh integer keys [first, first + count) reserved for one client server."""

    type: Literal["key_block"] = "key_block"
    table: TableName
    first: int
    count: int = Field(ge=1)


class RevokedTokens(Message):
    """The ids (``jti``) of every revoked public API token."""

    type: Literal["revoked_tokens"] = "revoked_tokens"
    revoked: list[str]


# --- helpers ----------------------------------------------------------------------------------


def dumps(message: BaseModel) -> bytes:
    """Encode a message once, as compact JSON bytes."""
    return orjson.dumps(message.model_dump(mode="json", exclude_none=False))


def error_info(exc: Any) -> ErrorInfo:
    return ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable)


# --- master <-> tablet link (Channels WebSocket) ----------------------------------------------
#
# The tablet's link agent dials the master, says hello, then heartbeats. The master pushes
# metadata and sends commands; every command carries an ``id`` and gets exactly one
# ``reply`` with the same id. Commands are idempotent so a retried one changes nothing.


class Hello(Message):
    type: Literal["hello"] = "hello"
    url: str = Field(min_length=1, max_length=200)
    last_seq: int = Field(ge=0)
    metadata_version: int = Field(ge=0)


class Heartbeat(Message):
    type: Literal["heartbeat"] = "heartbeat"
    last_seq: int = Field(ge=0)


class Welcome(Message):
    type: Literal["welcome"] = "welcome"
    heartbeat_s: int = Field(ge=1)


class Command(Message):
    id: str = Field(min_length=1, max_length=64)


class IngestCommand(Command):
    """Upsert rows without logging them (seeding, or copying a range in)."""

    type: Literal["ingest"] = "ingest"
    table: TableName
    rows: list[Row]


class ChangesCommand(Command):
    """Ship change-log entries with seq > after_seq (at most ``limit``)."""

    type: Literal["changes"] = "changes"
    after_seq: int = Field(ge=0)
    limit: int = Field(ge=1, le=100_000)


class TrimCommand(Command):
    """The master applied every entry up to ``upto_seq``: the tablet may delete them."""

    type: Literal["trim"] = "trim"
    upto_seq: int = Field(ge=0)


class RangeCommand(Command):
    """freeze (until ``lease_s`` from now) / unfreeze / drop / count a range of a table.

    ``drop_unowned`` deletes the stored rows of [start, end) that lie outside every
    range this server owns: copies left behind by an interrupted move.
    """

    type: Literal["freeze", "unfreeze", "drop", "count", "drop_unowned"]
    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    lease_s: float = Field(default=0, ge=0, le=600)


class CopyCommand(Command):
    """Pull the rows of a range from the tablet server at ``source_url`` (a move's copy)."""

    type: Literal["copy"] = "copy"
    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    source_url: str


class CatchUpCommand(Command):
    """Pull and apply the source's change-log entries of a range with seq > ``after_seq``."""

    type: Literal["catch_up"] = "catch_up"
    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    source_url: str
    after_seq: int = Field(ge=0)


class ApplyMetadataCommand(Command):
    """Apply this metadata now and answer when it is stored (a move's hand-over)."""

    type: Literal["apply_metadata"] = "apply_metadata"
    metadata: Metadata


LinkCommand = Annotated[
    IngestCommand
    | ChangesCommand
    | TrimCommand
    | RangeCommand
    | CopyCommand
    | CatchUpCommand
    | ApplyMetadataCommand,
    Field(discriminator="type"),
]


class Reply(Message):
    type: Literal["reply"] = "reply"
    id: str
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None


TabletToMaster = Annotated[Hello | Heartbeat | Reply, Field(discriminator="type")]
MasterToTablet = Annotated[Welcome | Metadata | LinkCommand, Field(discriminator="type")]
tablet_to_master_adapter: TypeAdapter[Hello | Heartbeat | Reply] = TypeAdapter(TabletToMaster)
master_to_tablet_adapter: TypeAdapter[Any] = TypeAdapter(MasterToTablet)
