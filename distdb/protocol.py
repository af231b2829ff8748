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

from datetime import datetime
from typing import Annotated, Any, ClassVar, Final, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION: Final = 1

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


KeyType = Literal["int", "str"]  # a table's keys: all integers or all strings


MAX_RF = 5
# The system table of Idempotency-Key records: written by client servers, expired by the
# tablet servers that lead its ranges (``DISTDB_IDEMPOTENCY_TTL_S``).
IDEMPOTENCY_TABLE = "_idempotency"


class TableInfo(Strict):
    key_type: KeyType
    columns: list[str] | None = None  # None: any column is allowed
    rf: int = Field(default=1, ge=1, le=MAX_RF)  # copies of each range: leader + followers


class Follower(Strict):
    """An in-sync follower of a tablet: it holds every acknowledged write of the range."""

    server: str
    url: str


class TabletAssignment(Strict):
    """One tablet: the half-open stored-key range [start, end) of a table and its server."""

    table: TableName
    start: StoredKey = ""  # "" = start of the key space
    end: StoredKey | None = None  # None = end of the key space
    server: str  # the leader: the one server that serves the range to clients
    url: str
    in_sync: list[Follower] = []  # the followers the leader replicates every write to


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
    # "text": answer a ``ReadTextResponse``, each row's cells as the JSON text the tablet
    # stored, so that a client server passes them on without parsing and re-encoding them.
    cells: Literal["object", "text"] = "object"


class ScanRequest(Message):
    type: Literal["scan"] = "scan"
    table: TableName
    meta_version: int = Field(ge=0)
    start: StoredKey = ""
    end: StoredKey | None = None
    limit: int = Field(ge=1, le=100_000)
    # "text": answer a ``ScanTextResponse`` (cells as the stored JSON text; see ReadRequest)
    cells: Literal["object", "text"] = "object"


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


class ReadTextResponse(Message):
    """A ``ReadResponse`` whose rows are (key, cells as JSON text) pairs: the answer to a
    ``ReadRequest`` with ``cells="text"``."""

    type: Literal["read_text_result"] = "read_text_result"
    rows: list[tuple[StoredKey, str]]
    outdated: list[StoredKey] = []
    metadata: Metadata | None = None  # present when ``outdated`` is not empty


class ScanResponse(Message):
    """Rows of [start, end) in key order; ``outdated`` when this tablet does not own the range."""

    type: Literal["scan_result"] = "scan_result"
    rows: list[Row]
    outdated: bool = False
    metadata: Metadata | None = None


class ScanTextResponse(Message):
    """A ``ScanResponse`` whose rows are (key, cells as JSON text) pairs: the answer to a
    ``ScanRequest`` with ``cells="text"``."""

    type: Literal["scan_text_result"] = "scan_text_result"
    rows: list[tuple[StoredKey, str]]
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


# --- master/tablet -> tablet server: collecting and copying (HTTP, no message size cap) ---------
#
# Pages are capped in rows (``limit``) and in UTF-8 bytes (``max_bytes``, soft: a page
# always has at least one item, however large, so a reader always advances). ``more``
# says whether the page was cut short. These travel over HTTP, never over the link:
# a row may be as large as a request (8 MiB), and Daphne drops WebSocket messages over
# 1 MiB (DESIGN §4, invariant 4: every input size flows).

PAGE_BYTES = 4 * 1024 * 1024  # default size of a page
MAX_PAGE_BYTES = 64 * 1024 * 1024


class ExportRequest(Message):
    """A page of the rows of [start, end) with keys > ``after`` (None: from ``start``)."""

    type: Literal["export"] = "export"
    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    after: StoredKey | None = None
    limit: int = Field(default=1000, ge=1, le=100_000)
    max_bytes: int = Field(default=PAGE_BYTES, ge=1, le=MAX_PAGE_BYTES)


class ExportResponse(Message):
    """Rows in key order; ``more``: the range has rows after the page's last key."""

    type: Literal["export_result"] = "export_result"
    rows: list[Row]
    more: bool = False


class ExportChangesRequest(Message):
    """Change-log entries of [start, end) with seq > ``after_seq``, in seq order."""

    type: Literal["export_changes"] = "export_changes"
    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    after_seq: int = Field(ge=0)
    limit: int = Field(default=1000, ge=1, le=100_000)
    max_bytes: int = Field(default=PAGE_BYTES, ge=1, le=MAX_PAGE_BYTES)


class ChangesRequest(Message):
    """Collection (master -> tablet): every change-log entry with seq > ``after_seq``."""

    type: Literal["changes"] = "changes"
    after_seq: int = Field(ge=0)
    limit: int = Field(default=5000, ge=1, le=100_000)
    max_bytes: int = Field(default=PAGE_BYTES, ge=1, le=MAX_PAGE_BYTES)


ChangeOp = Literal["put", "delete", "clear"]


class ChangeEntry(Strict):
    """One change-log entry: the row's full image after the change (None: deleted).

    ``clear`` (written by a promoted leader, ``tablet_app.services.replication``): delete
    every row of [key, cells["end"]) — full images of the range's rows follow it.
    """

    seq: int
    table: TableName
    key: StoredKey
    op: ChangeOp
    cells: Cells | None = None


class ChangesPage(Message):
    """Base of the pages of change-log entries: entries in seq order; ``more``: some were
    left out (by ``limit`` or the size cap)."""

    type: str  # each page narrows it to its own literal
    entries: list[ChangeEntry]
    more: bool = False


class ExportChangesResponse(ChangesPage):
    """A move's catch-up page: the entries of one range."""

    type: Literal["export_changes_result"] = "export_changes_result"


class ChangesResponse(ChangesPage):
    """A collection page: the entries of every range."""

    type: Literal["changes_result"] = "changes_result"
    more: bool  # required: a collection page always says whether the log has more


# --- leader -> follower, leader -> master: replication (HTTP) ----------------------------------


class ReplicateRequest(Message):
    """A leader's change-log entries (seq order) for a follower of their ranges.

    ``version``: the metadata version the leader wrote them under; the follower refuses
    entries of ranges whose leader, in its own metadata, is someone else."""

    type: Literal["replicate"] = "replicate"
    leader: str
    version: int = Field(ge=0)
    entries: list[ChangeEntry] = Field(max_length=100_000)


class ReplicateResponse(Message):
    """Which entries the follower refused (their sender does not lead their range)."""

    type: Literal["replicate_result"] = "replicate_result"
    applied: int = Field(ge=0)
    refused: list[int] = []  # seqs
    version: int = Field(ge=0)  # the follower's metadata version


class TabletHealth(Message):
    """``GET /internal/v1/health`` of a tablet server: its data plane answers."""

    type: Literal["tablet_health"] = "tablet_health"
    node_id: str
    metadata_version: int = Field(ge=0)


class ShrinkRequest(Message):
    """A leader asks the master to drop ``follower`` from the in-sync set of every range
    it leads (the follower did not acknowledge in time)."""

    type: Literal["shrink"] = "shrink"
    follower: str
    reason: str = Field(default="", max_length=200)


# --- client/tablet -> master ------------------------------------------------------------------


MAX_KEY_BLOCK = 100_000  # keys one request may reserve


class TableCreateRequest(Message):
    """Create a table (a client server relays the public API's create to the master)."""

    type: Literal["table_create"] = "table_create"
    name: TableName
    key_type: KeyType = "int"
    columns: list[str] | None = None
    rf: int | None = Field(default=None, ge=1, le=MAX_RF)  # None: the master's default


class KeyBlockRequest(Message):
    """Reserve ``count`` fresh integer keys of a table (the table is in the URL).

    ``above``: every key of the block must be greater (a generated key collided with
    one a user had given explicitly, so the counter is behind the table's keys).
    """

    type: Literal["key_block_request"] = "key_block_request"
    count: int = Field(ge=1, le=MAX_KEY_BLOCK)
    above: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)


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


# --- operations (the master's dashboard) --------------------------------------------------------


class KeyAccessBucket(Strict):
    """Reads and writes of one owned range of a tablet server in one minute (Unix minute)."""

    minute: int
    table: str
    start: str  # stored keys, as the server owned the range then
    end: str | None
    reads: int = Field(ge=0)
    writes: int = Field(ge=0)


class KeyAccess(Message):
    """A tablet server's key-access counts of the last hour (``GET /internal/v1/key-access``),
    for the master's key-access heatmap."""

    type: Literal["key_access"] = "key_access"
    buckets: list[KeyAccessBucket]


class ServerStates(Message):
    """The tablet servers the master considers down (their link's heartbeats stopped):
    ``GET /internal/v1/servers``, which client servers' circuit breakers consult."""

    type: Literal["server_states"] = "server_states"
    down: list[str]


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
#
# Every command names its reply model (``Command[ReplyModel]``): the tablet builds that
# model, ``Reply.result`` carries it (a union discriminated by ``type``), and the master's
# ``link_call`` checks it is the one the command expects and returns it, typed.


class Hello(Message):
    """``nonce``: fresh per connection; the master's signed welcome echoes it
    (``distdb.link_signing``)."""

    type: Literal["hello"] = "hello"
    url: str = Field(min_length=1, max_length=200)
    last_seq: int = Field(ge=0)
    metadata_version: int = Field(ge=0)
    nonce: str = Field(min_length=16, max_length=64)


class Heartbeat(Message):
    """Every few seconds; ``metadata_version`` lets the master re-send metadata the tablet
    missed (a hand-over interrupted by a crash), so no server stays behind for long."""

    type: Literal["heartbeat"] = "heartbeat"
    last_seq: int = Field(ge=0)
    metadata_version: int = Field(default=0, ge=0)
    # The tablet's CLOCK_BOOTTIME when it sent this: the master's lease grant echoes it,
    # and the tablet's leader lease runs from it (``tablet_app.services.leader_lease``).
    sent_at: float | None = None


class LeaseGrant(Message):
    """The master's answer to a heartbeat: lead your ranges for ``lease_s`` from
    ``sent_at`` (the heartbeat's own send time, echoed), once you have applied metadata
    ``version`` or newer."""

    type: Literal["lease"] = "lease"
    sent_at: float
    lease_s: float = Field(gt=0, le=600)
    version: int = Field(ge=0)


class Welcome(Message):
    type: Literal["welcome"] = "welcome"
    heartbeat_s: int = Field(ge=1)


class ServerTokensRevoked(Message):
    """The ids (``jti``) of every revoked, unexpired server token: the whole list, sent
    signed after the welcome and whenever it changes. The tablet keeps it in its database
    and refuses those tokens; it serves no call before it has had a list once."""

    type: Literal["server_tokens_revoked"] = "server_tokens_revoked"
    revoked: list[Annotated[str, Field(min_length=1, max_length=64)]]


# --- link replies (the ``result`` of an ok ``Reply``), one per command -------------------------


class RowCount(Message):
    """Base of the replies that say how many rows a command touched."""

    rows: int = Field(ge=0)


class IngestReply(RowCount):
    type: Literal["ingest_result"] = "ingest_result"


class TrimReply(Message):
    type: Literal["trim_result"] = "trim_result"
    trimmed: int = Field(ge=0)


class FreezeReply(Message):
    """How much of the lease the source had left when it answered (informational)."""

    type: Literal["freeze_result"] = "freeze_result"
    lease_left_s: float


class UnfreezeReply(Message):
    type: Literal["unfreeze_result"] = "unfreeze_result"


class DropReply(RowCount):
    type: Literal["drop_result"] = "drop_result"


class DropUnownedReply(RowCount):
    type: Literal["drop_unowned_result"] = "drop_unowned_result"


class DropTableReply(RowCount):
    type: Literal["drop_table_result"] = "drop_table_result"


class CountReply(RowCount):
    type: Literal["count_result"] = "count_result"


class CopyReply(RowCount):
    type: Literal["copy_result"] = "copy_result"


class CatchUpReply(Message):
    """How many change-log entries were applied, and the source seq caught up to."""

    type: Literal["catch_up_result"] = "catch_up_result"
    applied: int = Field(ge=0)
    last_seq: int = Field(ge=0)


class ApplyMetadataReply(Message):
    """The metadata version the tablet holds after applying (newer if it had a newer one)."""

    type: Literal["apply_metadata_result"] = "apply_metadata_result"
    version: int = Field(ge=0)


CommandResult = (
    IngestReply
    | TrimReply
    | FreezeReply
    | UnfreezeReply
    | DropReply
    | DropUnownedReply
    | DropTableReply
    | CountReply
    | CopyReply
    | CatchUpReply
    | ApplyMetadataReply
)
LinkResult = Annotated[CommandResult, Field(discriminator="type")]


# --- link commands ------------------------------------------------------------------------------

ReplyT = TypeVar("ReplyT", bound=Message)


class Command(Message, Generic[ReplyT]):
    """A master -> tablet command; ``ReplyT`` (also ``reply_model``) is its result's model."""

    reply_model: ClassVar[type[Message]]
    id: str = Field(min_length=1, max_length=64)
    type: str  # each command narrows it to its own literal

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # The reply model is the argument of the first parametrized base, e.g. the
        # ``Command[IngestReply]`` of ``IngestCommand``: one declaration, read by the type
        # checker (``link_call`` returns ``ReplyT``) and at run time (the reply is checked).
        for base in cls.__mro__:
            args = getattr(base, "__pydantic_generic_metadata__", {}).get("args", ())
            if args and isinstance(args[0], type) and issubclass(args[0], Message):
                cls.reply_model = args[0]
                return


class IngestCommand(Command[IngestReply]):
    """Upsert rows without logging them (seeding, or copying a range in)."""

    type: Literal["ingest"] = "ingest"
    table: TableName
    rows: list[Row]


class TrimCommand(Command[TrimReply]):
    """The master applied every entry up to ``upto_seq``: the tablet may delete them."""

    type: Literal["trim"] = "trim"
    upto_seq: int = Field(ge=0)


class RangeCommand(Command[ReplyT], Generic[ReplyT]):
    """Base of the commands on the key range [start, end) of a table."""

    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None


class FreezeCommand(RangeCommand[FreezeReply]):
    """Refuse writes to the range (retryably) until ``lease_s`` from now (a move's freeze)."""

    type: Literal["freeze"] = "freeze"
    lease_s: float = Field(ge=0, le=600)


class UnfreezeCommand(RangeCommand[UnfreezeReply]):
    """Lift the range's freeze (a move that was undone)."""

    type: Literal["unfreeze"] = "unfreeze"


class DropCommand(RangeCommand[DropReply]):
    """Delete the stored rows of a range this server does not own."""

    type: Literal["drop"] = "drop"


class DropTableCommand(Command[DropTableReply]):
    """Delete every row and change-log entry of a table the master deleted (none of it
    may be owned here any more): its name may be given to a new table."""

    type: Literal["drop_table"] = "drop_table"
    table: TableName


class DropUnownedCommand(RangeCommand[DropUnownedReply]):
    """Delete the stored rows of [start, end) that lie outside every range this server
    owns: copies left behind by an interrupted move."""

    type: Literal["drop_unowned"] = "drop_unowned"


class CountCommand(RangeCommand[CountReply]):
    """Count the stored rows of the range (owned or not)."""

    type: Literal["count"] = "count"


class CopyCommand(RangeCommand[CopyReply]):
    """Pull the rows of a range from the tablet server at ``source_url`` (a move's copy)."""

    type: Literal["copy"] = "copy"
    source_url: str


class CatchUpCommand(RangeCommand[CatchUpReply]):
    """Pull and apply the source's change-log entries of a range with seq > ``after_seq``."""

    type: Literal["catch_up"] = "catch_up"
    source_url: str
    after_seq: int = Field(ge=0)
    # The source's node id: a target that follows the range from it (a leadership
    # transfer) applies only what its replication has not (``changes_apply_copied``).
    source: str = ""


class CaughtUp(Strict):
    """A new follower's copy of [start, end) of ``table`` holds ``leader``'s log up to
    ``seq`` (its copy and catch-ups). Only that range: another range followed from the
    same leader holds whatever its own copy and replication gave it."""

    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    leader: str
    seq: int = Field(ge=0)


class ApplyMetadataCommand(Command[ApplyMetadataReply]):
    """Apply this metadata now and answer when it is stored (a move's hand-over)."""

    type: Literal["apply_metadata"] = "apply_metadata"
    metadata: Metadata
    # A new follower's join (re-replication): the range it records as applied that far.
    caught_up: CaughtUp | None = None


LinkCommand = Annotated[
    IngestCommand
    | TrimCommand
    | FreezeCommand
    | UnfreezeCommand
    | DropCommand
    | DropUnownedCommand
    | DropTableCommand
    | CountCommand
    | CopyCommand
    | CatchUpCommand
    | ApplyMetadataCommand,
    Field(discriminator="type"),
]


class Reply(Message):
    """The answer to command ``id``: ``result`` if ``ok``, else ``error``."""

    type: Literal["reply"] = "reply"
    id: str
    ok: bool
    result: LinkResult | None = None
    error: ErrorInfo | None = None


TabletToMaster = Annotated[Hello | Heartbeat | Reply, Field(discriminator="type")]
MasterToTablet = Annotated[
    Welcome | ServerTokensRevoked | Metadata | LeaseGrant | LinkCommand,
    Field(discriminator="type"),
]
tablet_to_master_adapter: TypeAdapter[Hello | Heartbeat | Reply] = TypeAdapter(TabletToMaster)
master_to_tablet_adapter: TypeAdapter[Any] = TypeAdapter(MasterToTablet)


# --- replication: the operator's view (issue #10) -----------------------------------------------


class TableRfRequest(Message):
    """Change a table's replication factor (a client server relays the public API's
    ``PATCH /api/v1/tables/{t}``; the table is in the URL). Answered with the metadata."""

    type: Literal["table_rf"] = "table_rf"
    rf: int = Field(ge=1, le=MAX_RF)


class FollowedRangeState(Strict):
    """A range a tablet server follows, and how far it has applied its leader's log."""

    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    leader: str
    version: int = Field(ge=0)  # the metadata version that made it a follower
    applied_seq: int = Field(ge=0)  # the leader's seq of the last entry applied here
    applied_at: datetime | None = None
    applied_age_s: float | None = None  # now - applied_at on the follower's own clock


class LedRangeState(Strict):
    """A replicated range a tablet server leads: the seq of its newest entry still in the
    change log (0: none since the last trim), for its followers' lag."""

    table: TableName
    start: StoredKey = ""
    end: StoredKey | None = None
    last_seq: int = Field(ge=0)
    followers: list[str] = []


class ReplicationState(Message):
    """A tablet server's replication at a glance (``GET /internal/v1/replication``, asked by
    the master for ``cluster_status`` and the admin): what it follows and leads."""

    type: Literal["replication_state"] = "replication_state"
    node_id: str
    last_seq: int = Field(ge=0)  # its own newest change-log seq (every range)
    followed: list[FollowedRangeState] = []
    led: list[LedRangeState] = []
