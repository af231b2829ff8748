"""Tablet server services: the data plane (``rows``) and the control plane (``control``).

Loaded by the tablet server role: the internal API (``tablet_app.internal_api``) calls
the data plane, the link agent calls the control plane, the admin calls either. Every
function is a plain, typed, synchronous function that does its own transactions;
call it from async code through one thread hop (``distdb.internal_http.run_sync``).
"""

from tablet_app.services.control import (
    changes_append,
    changes_apply_copied,
    changes_batch,
    changes_in_range_since,
    changes_last_seq,
    changes_since,
    changes_trim,
    range_count,
    range_drop,
    rows_drop_unowned,
    rows_export,
    rows_ingest,
)
from tablet_app.services.ownership import (
    freezes_expired_exist,
    freezes_resolve,
    metadata_apply,
    metadata_current,
    metadata_version_current,
    range_freeze,
    range_unfreeze,
)
from tablet_app.services.rows import (
    MutateResult,
    ReadResult,
    ScanResult,
    rows_mutate,
    rows_read,
    rows_scan,
)

__all__ = [
    "MutateResult",
    "ReadResult",
    "ScanResult",
    "changes_append",
    "changes_apply_copied",
    "changes_batch",
    "changes_in_range_since",
    "changes_last_seq",
    "changes_since",
    "changes_trim",
    "freezes_expired_exist",
    "freezes_resolve",
    "metadata_apply",
    "metadata_current",
    "metadata_version_current",
    "range_count",
    "range_drop",
    "range_freeze",
    "range_unfreeze",
    "rows_drop_unowned",
    "rows_export",
    "rows_ingest",
    "rows_mutate",
    "rows_read",
    "rows_scan",
]
