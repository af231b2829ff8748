"""Per-row results of the client server's services and how a set of them maps to HTTP.

A multi-row call answers with one result per row, in request order. The HTTP status of
the whole answer (documented in docs/api.md):

* every row succeeded: 200, or ``created_status`` (201) when every row was created;
* every row failed with the same error code: that error's status, with the error shape
  (``Retry-After`` for retryable ones) and the per-row results in ``detail.results``;
* otherwise (some succeeded, or failures differ): 200, the results say which row failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distdb.errors import DistdbError

OK_STATUSES = frozenset({"created", "updated", "deleted", "unchanged"})


@dataclass(slots=True)
class RowResult:
    """What happened to one row: created/updated/deleted/unchanged, or error."""

    key: int | str
    status: str
    error: DistdbError | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "error": error_brief(self.error) if self.error is not None else None,
        }


def error_brief(error: DistdbError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "retryable": error.retryable}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The HTTP rendering of a set of row results."""

    status: int
    error: DistdbError | None  # set when every row failed alike


def results_outcome(results: list[RowResult], *, created_status: int = 200) -> Outcome:
    failures = [r.error for r in results if r.error is not None]
    if not failures:
        if results and all(r.status == "created" for r in results):
            return Outcome(created_status, None)
        return Outcome(200, None)
    if len(failures) == len(results) and len({e.code for e in failures}) == 1:
        return Outcome(failures[0].status, failures[0])
    return Outcome(200, None)
