"""The tablet server's admin: inspect its rows, change log, owned ranges and metadata.

Loaded by the tablet server role (``distdb.urls.tablet``). Everything here is
read-only except one operational action (settling ended write freezes with the master,
as the link agent does by itself), because every model is maintained by a service with
rules the admin cannot see:

* Rows change only through the public API. The client server checks the table's key
  type and columns (a tablet does not know them: an admin edit could store a key in
  the wrong encoding or a column the table forbids), routes by the metadata, and the
  tablet's write path checks ownership and freezes and writes the change log in the
  row's transaction. Deleting here would bypass the log and the master would never
  learn of it.
* The change log and metadata snapshots are records: editing them would corrupt what
  the master collects.
* Owned ranges are set by the master's metadata (``metadata_apply``). A freeze is never
  lifted by hand: the master may have given the range away already, and writes taken
  after that would be dropped with this copy (``services.freezes``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import Q
from django.utils.html import format_html

from distdb.errors import DistdbError, InvalidKey
from distdb.keys import parse_key_text
from tablet_app.link import freezes_settle_now
from tablet_app.models import ChangeLogEntry, MetadataSnapshot, OwnedRange, Row
from tablet_app.services import freezes, metadata_current, range_count
from tablet_app.services.freezes import Freeze

PREVIEW_CHARS = 80


def _preview(text: str | None) -> str:
    if text is None:
        return "—"
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _pretty(text: str | None) -> str:
    if text is None:
        return "—"
    pretty = orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    return format_html("<pre>{}</pre>", pretty.decode())


def _bound(key: str | None, *, end: bool) -> str:
    if end and key is None:
        return "+∞"
    return "−∞" if not end and key == "" else str(key)


class TableFilter(admin.SimpleListFilter):
    """Tables this server owns or knows from its metadata (no DISTINCT over every row)."""

    title = "table"
    parameter_name = "table"

    def lookups(self, request, model_admin):
        names = set(OwnedRange.objects.values_list("table", flat=True).distinct())
        names |= set(metadata_current().tables)
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        return queryset.filter(table=self.value()) if self.value() else queryset


class KeySearchMixin:
    """Search by exact stored key, by integer user key, or by stored-key prefix (index ranges)."""

    search_help_text = "A stored key, an integer key, or the start of a key."

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        exact = {term}
        with contextlib.suppress(InvalidKey):  # not an integer: search it as text only
            exact.add(parse_key_text("int", term))
        match = Q(key__in=exact)
        if ord(term[-1]) < 0x10FFFF:  # keys compare by code point: [term, next) is the prefix
            match |= Q(key__gte=term, key__lt=term[:-1] + chr(ord(term[-1]) + 1))
        return queryset.filter(match), False


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _cells_columns(label: str) -> tuple[Any, Any]:
    """The ``cells_preview`` (list) and ``cells_pretty`` (detail) columns of a model whose
    ``cells`` is JSON text, both headed ``label``."""

    @admin.display(description=label)
    def cells_preview(self: admin.ModelAdmin, obj: Row | ChangeLogEntry) -> str:
        return _preview(obj.cells)

    @admin.display(description=label)
    def cells_pretty(self: admin.ModelAdmin, obj: Row | ChangeLogEntry) -> str:
        return _pretty(obj.cells)

    return cells_preview, cells_pretty


class CellsAdmin(KeySearchMixin, ReadOnlyAdmin):
    """Base of the admins of keyed rows with cells (the rows and the change log)."""

    search_fields = ("key",)
    show_full_result_count = False  # COUNT(*) over millions of rows on every page view


@admin.register(Row)
class RowAdmin(CellsAdmin):
    list_display = ("key", "table", "cells_preview", "size")
    list_filter = (TableFilter,)
    fields = ("table", "key", "cells_pretty", "size")
    readonly_fields = fields
    cells_preview, cells_pretty = _cells_columns("cells")

    @admin.display(description="bytes")
    def size(self, obj: Row) -> int:
        return len(obj.cells.encode())


@admin.register(ChangeLogEntry)
class ChangeLogEntryAdmin(CellsAdmin):
    list_display = ("seq", "op", "table", "key", "cells_preview", "created_at")
    list_filter = ("op", TableFilter)
    fields = ("seq", "op", "table", "key", "cells_pretty", "created_at")
    readonly_fields = fields
    cells_preview, cells_pretty = _cells_columns("cells after the change")


class FrozenFilter(admin.SimpleListFilter):
    title = "write freeze"
    parameter_name = "frozen"

    def lookups(self, request, model_admin):
        return [("yes", "frozen (moving away)"), ("no", "serving")]

    def queryset(self, request, queryset):
        frozen = Q(frozen_deadline__isnull=False)
        if self.value() == "yes":
            return queryset.filter(frozen)
        if self.value() == "no":
            return queryset.exclude(frozen)
        return queryset


@admin.register(OwnedRange)
class OwnedRangeAdmin(admin.ModelAdmin):
    list_display = ("table", "start", "end", "version", "frozen", "lease_left", "rows")
    list_filter = (TableFilter, FrozenFilter)
    search_fields = ("table",)
    fields = ("table", "start_key", "end_key", "version", "frozen", "lease_left", "rows")
    readonly_fields = fields
    actions = ["settle_freezes"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # The changelist may run the settle action; a range itself is never edited.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="start", ordering="start_key")
    def start(self, obj: OwnedRange) -> str:
        return _bound(obj.start_key, end=False)

    @admin.display(description="end", ordering="end_key")
    def end(self, obj: OwnedRange) -> str:
        return _bound(obj.end_key, end=True)

    @admin.display(description="frozen", boolean=True)
    def frozen(self, obj: OwnedRange) -> bool:
        return obj.frozen_deadline is not None

    @admin.display(description="freeze lease left")
    def lease_left(self, obj: OwnedRange) -> str:
        freeze = Freeze.of(obj)
        if freeze is None:
            return "—"
        left = freeze.left_s(freezes.clock())
        if left is None:
            return "taken before a reboot: re-armed"
        return f"{left:.1f} s" if left > 0 else "ended: waiting for the master's word"

    @admin.display(description="rows stored")
    def rows(self, obj: OwnedRange) -> int:
        return range_count(obj.table, obj.start_key, obj.end_key)

    @admin.action(
        description="Settle ended freezes with the master (lift or give away)",
        permissions=["change"],
    )
    def settle_freezes(self, request, queryset) -> None:
        try:
            lifted = async_to_sync(freezes_settle_now)()
        except (DistdbError, OSError, TimeoutError) as exc:
            self.message_user(request, f"Could not reach the master: {exc}", messages.ERROR)
            return
        self.message_user(
            request,
            f"Settled with the master: {lifted} freeze(s) lifted. A freeze whose lease has "
            "not ended stays: the move holding it may still commit.",
            messages.SUCCESS,
        )


@admin.register(MetadataSnapshot)
class MetadataSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("version", "received_at", "table_count", "tablet_count")
    fields = ("version", "received_at", "data_pretty")
    readonly_fields = fields

    @admin.display(description="tables")
    def table_count(self, obj: MetadataSnapshot) -> int:
        return len(_data(obj).get("tables") or {})

    @admin.display(description="tablets")
    def tablet_count(self, obj: MetadataSnapshot) -> int:
        return len(_data(obj).get("tablets") or [])

    @admin.display(description="metadata")
    def data_pretty(self, obj: MetadataSnapshot) -> str:
        return _pretty(orjson.dumps(obj.data).decode())


def _data(obj: MetadataSnapshot) -> dict[str, Any]:
    return obj.data if isinstance(obj.data, dict) else {}
