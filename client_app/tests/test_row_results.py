"""Per-row results rebuilt from what a tablet server answered for each mutation."""

from __future__ import annotations

from distdb.errors import RowExists
from distdb.protocol import ErrorInfo, MutationResult

from ..services.rows import row_result


def test_a_row_error_with_a_known_code_becomes_its_error_class():
    answer = MutationResult(
        key="k", status="error", error=ErrorInfo(code="row_exists", message="taken")
    )
    result = row_result(7, answer)
    assert isinstance(result.error, RowExists)
    assert (result.status, result.error.message, result.error.detail) == (
        "error",
        "taken",
        {"key": 7},
    )
    assert result.error.status == 409


def test_a_row_error_with_an_unknown_code_keeps_the_peers_code_and_retryable_flag():
    info = ErrorInfo(code="disk_full", message="no space", retryable=True)
    result = row_result("a", MutationResult(key="a", status="error", error=info))
    assert result.as_dict() == {
        "key": "a",
        "status": "error",
        "error": {"code": "disk_full", "message": "no space", "retryable": True},
    }


def test_a_row_error_without_details_is_still_a_failure_of_that_row():
    result = row_result(3, MutationResult(key="k", status="error"))
    assert result.error is not None and result.error.code == "internal_error"
