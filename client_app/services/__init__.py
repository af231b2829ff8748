"""The client server's services: plain async functions the views call (CONVENTIONS §4).

``tables`` (list, create, resolve, change the replication factor), ``rows`` (read, add,
set/delete cells, delete, batch), ``scan`` (range scans with cursors), ``compat`` (the
original system's endpoint), on top of ``engine`` (per-tablet routing with bounded retries)
and ``results`` (per-row results).
"""

from .compat import db_query
from .rows import (
    ReadResult,
    cells_delete,
    cells_set,
    row_read,
    rows_add,
    rows_batch,
    rows_delete,
    rows_read,
)
from .scan import ScanPage, rows_scan
from .tables import table_create, table_get, table_resolve, table_rf_set, tables_list

__all__ = [
    "ReadResult",
    "ScanPage",
    "cells_delete",
    "cells_set",
    "db_query",
    "row_read",
    "rows_add",
    "rows_batch",
    "rows_delete",
    "rows_read",
    "rows_scan",
    "table_create",
    "table_get",
    "table_resolve",
    "table_rf_set",
    "tables_list",
]
