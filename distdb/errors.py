"""The one error hierarchy of distdb, shared by every role (CONVENTIONS §6).

Every error has a stable machine-readable ``code`` that clients branch on, an
HTTP status, and a ``retryable`` flag. It renders to the same JSON shape over
HTTP and WebSocket::

    {"error": {"code": "...", "message": "...", "detail": {...}, "retryable": false}}
"""

from __future__ import annotations

from typing import Any, ClassVar


class DistdbError(Exception):
    """Base of every error a distdb server reports to a caller."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, **detail: Any) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "detail": self.detail,
                "retryable": self.retryable,
            }
        }

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(DistdbError):
    code = "bad_request"
    status = 400
    default_message = "the request is not valid"


class InvalidJson(BadRequest):
    code = "invalid_json"
    default_message = "the body is not valid JSON"


class ValidationFailed(BadRequest):
    code = "validation_failed"
    default_message = "the request does not match the schema"


class InvalidKey(BadRequest):
    code = "invalid_key"
    default_message = "the row key is not valid for this table"


class ColumnNotAllowed(BadRequest):
    code = "column_not_allowed"
    default_message = "the table does not allow this column"


class Unauthenticated(DistdbError):
    code = "unauthenticated"
    status = 401
    default_message = "a valid token is required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="distdb"'}


class TokenInvalid(Unauthenticated):
    code = "token_invalid"
    default_message = "the token is not valid"


class TokenExpired(Unauthenticated):
    code = "token_expired"
    default_message = "the token has expired"


class TokenRevoked(Unauthenticated):
    code = "token_revoked"
    default_message = "the token has been revoked"


class Forbidden(DistdbError):
    code = "forbidden"
    status = 403
    default_message = "this token may not do that"


class TokenWrongRole(Forbidden):
    code = "token_wrong_role"
    default_message = "the token's role may not do that"


class TokenWrongAudience(Forbidden):
    code = "token_wrong_audience"
    default_message = "the token is for another audience"


class TokenUrlMismatch(Forbidden):
    """A tablet's hello names a URL other than the one its token was signed for."""

    code = "token_url_mismatch"
    default_message = "the token was not signed for this URL"


class LinkUnverified(Forbidden):
    code = "link_unverified"
    default_message = "the link message is not signed by this cluster's master"


class LinkExpired(LinkUnverified):
    """Signed by the master but expired by the tablet's estimate of the master's clock:
    a replay, or that estimate is wrong (the master's clock was stepped since the
    welcome that taught it)."""


class NotFound(DistdbError):
    code = "not_found"
    status = 404
    default_message = "not found"


class TableNotFound(NotFound):
    code = "table_not_found"
    default_message = "no such table"


class RowNotFound(NotFound):
    code = "row_not_found"
    default_message = "no such row"


class TabletServerNotFound(NotFound):
    code = "tablet_server_not_found"
    default_message = "no such tablet server"


class MethodNotAllowed(DistdbError):
    code = "method_not_allowed"
    status = 405
    default_message = "method not allowed"


class Conflict(DistdbError):
    code = "conflict"
    status = 409
    default_message = "conflict"


class RowExists(Conflict):
    code = "row_exists"
    default_message = "a row with this key already exists"


class TableExists(Conflict):
    code = "table_exists"
    default_message = "a table with this name already exists"


class KeysExhausted(Conflict):
    code = "keys_exhausted"
    default_message = "this table's generated integer keys are used up; give keys explicitly"


class TableBeingDropped(Conflict):
    """A deleted table's rows are still being dropped from the tablet servers."""

    code = "table_being_dropped"
    retryable = True
    default_message = "a table of this name was deleted and is still being dropped; retry later"


class Outdated(Conflict):
    """The caller routed with old metadata; ``detail['metadata']`` carries the current one."""

    code = "outdated"
    retryable = True
    default_message = "the routing metadata is outdated"


class IdempotencyKeyInvalid(BadRequest):
    code = "invalid_idempotency_key"
    default_message = "an Idempotency-Key is 1-255 printable ASCII characters"


class IdempotencyKeyReused(DistdbError):
    code = "idempotency_key_reused"
    status = 422
    default_message = "this Idempotency-Key was used for another request"


class PayloadTooLarge(DistdbError):
    code = "payload_too_large"
    status = 413
    default_message = "the request body is too large"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    default_message = "the cursor is not one this API gave out for this table"


class NotAcceptable(DistdbError):
    code = "not_acceptable"
    status = 406
    default_message = "this API answers application/json only"


class LeaseHeld(Conflict):
    """Someone else holds the lease (e.g. a rebalance run is already going)."""

    code = "already_running"
    default_message = "another run holds the maintenance lease"


class Throttled(DistdbError):
    code = "throttled"
    status = 429
    retryable = True
    default_message = "too many requests"


class UnsupportedMediaType(DistdbError):
    code = "unsupported_media_type"
    status = 415
    default_message = "send application/json"


class Unavailable(DistdbError):
    code = "unavailable"
    status = 503
    retryable = True
    retry_after_s: int = 1
    default_message = "temporarily unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class TabletUnavailable(Unavailable):
    code = "tablet_unavailable"
    default_message = "the tablet server holding these keys is unavailable"


class RangeFrozen(Unavailable):
    """A write hit a key range frozen for a move; the client server retries it."""

    code = "range_frozen"
    default_message = "the key range is being moved; retry shortly"


class LeaderUnavailable(Unavailable):
    """This server leads the range but cannot serve it now: its lease from the master
    has ended (a failover may be under way), or a write of the key is not replicated
    yet. Nothing was applied; the client server retries, re-routing if the leader changed."""

    code = "leader_unavailable"
    default_message = "the range's leader cannot serve it right now; retry shortly"


class ReplicaBehind(Unavailable):
    """A follower was sent entries written under a metadata version it has not applied
    yet; the leader sends them again shortly (the master is pushing that version)."""

    code = "replica_behind"
    default_message = "this replica has not applied the sender's metadata version yet"


class ReplicationUnconfirmed(Unavailable):
    """A write committed on the leader could not be confirmed on every in-sync follower
    (nor the follower be removed by the master). It may have been applied, so it is
    *not* retryable as it stands: retry with the same Idempotency-Key to be safe."""

    code = "replication_unconfirmed"
    retryable = False
    default_message = (
        "the write may or may not have been applied: its replication could not be confirmed"
    )


class NotLeader(Conflict):
    """Replication entries from a server that does not lead their range (any more)."""

    code = "not_leader"
    default_message = "the sender does not lead this range"


class MasterUnavailable(Unavailable):
    code = "master_unavailable"
    default_message = "the master is unavailable"


class RevocationsUnavailable(Unavailable):
    """This server has not loaded the list of revoked tokens yet, so it trusts no token:
    revocation fails closed. Retry shortly; the next request fetches the list again."""

    code = "revocations_unavailable"
    default_message = "the list of revoked tokens is not loaded yet; retry shortly"


class LeaseLost(Unavailable):
    code = "lease_lost"
    default_message = "the maintenance lease was lost"


class NotReady(Unavailable):
    """``/readyz``: a check failed (``detail['checks']`` says which and why)."""

    code = "not_ready"
    default_message = "this node is not ready to serve"


class MoveAborted(Unavailable):
    code = "move_aborted"
    default_message = "the move was abandoned before its commit; nothing changed"


ERRORS_BY_CODE: dict[str, type[DistdbError]] = {}


def _register(cls: type[DistdbError]) -> None:
    ERRORS_BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(DistdbError)


def error_from_code(
    code: str | None,
    message: str | None = None,
    detail: dict[str, Any] | None = None,
    *,
    retryable: bool | None = None,
) -> DistdbError:
    """Rebuild an error another server reported by its code (an error body or a row result).

    An unknown code (from a peer that knows more codes) becomes the base class, keeping
    the peer's code and ``retryable`` flag so that callers can still branch on them.
    """
    cls = ERRORS_BY_CODE.get(str(code))
    if cls is not None:
        return cls(str(message or cls.default_message), **(detail or {}))
    error = DistdbError(str(message or DistdbError.default_message), **(detail or {}))
    if code:
        error.code = code  # type: ignore[misc]
        error.retryable = bool(retryable)  # type: ignore[misc]
    return error


def error_from_dict(body: dict[str, Any]) -> DistdbError:
    """Rebuild an error received from another server, from its JSON shape."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return DistdbError("malformed error from a peer")
    code = err.get("code")
    detail = err.get("detail") if isinstance(err.get("detail"), dict) else {}
    return error_from_code(
        code if isinstance(code, str) else None,
        err.get("message"),
        detail,
        retryable=err.get("retryable"),
    )
