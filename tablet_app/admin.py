"""The tablet server's admin: inspect its rows, change log, owned ranges and metadata.

Loaded by the tablet server role (``distdb.urls.tablet``). Everything here is
read-only except one operational action (lifting a write freeze), because every
model is maintained by a service with rules the admin cannot see:

* Rows change only through the public API. The client server checks the table's key
  type and columns (a tablet does not know them: an admin edit could store a key in
  the wrong encoding or a column the table forbids), routes by the metadata, and the
  tablet's write path checks ownership and freezes and writes the change log in the
  row's transaction. Deleting here would bypass the log and the master would never
  learn of it.
* The change log and metadata snapshots are records: editing them would corrupt what
  the master collects.
* Owned ranges are set by the master's metadata (``metadata_apply``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from django.contrib import admin, messages
from django.db.models import Q
from django.utils import timezone
from django.utils.html import format_html

from distdb.errors import InvalidKey
from distdb.keys import parse_key_text
from tablet_app.models import ChangeLogEntry, MetadataSnapshot, OwnedRange, Row
from tablet_app.services import metadata_current, range_count, range_unfreeze

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


@admin.register(Row)
class RowAdmin(KeySearchMixin, ReadOnlyAdmin):
    list_display = ("key", "table", "cells_preview", "size")
    list_filter = (TableFilter,)
    search_fields = ("key",)
    fields = ("table", "key", "cells_pretty", "size")
    readonly_fields = fields
    show_full_result_count = False  # COUNT(*) over millions of rows on every page view

    @admin.display(description="cells")
    def cells_preview(self, obj: Row) -> str:
        return _preview(obj.cells)

    @admin.display(description="cells")
    def cells_pretty(self, obj: Row) -> str:
        return _pretty(obj.cells)

    @admin.display(description="bytes")
    def size(self, obj: Row) -> int:
        return len(obj.cells.encode())


@admin.register(ChangeLogEntry)
class ChangeLogEntryAdmin(KeySearchMixin, ReadOnlyAdmin):
    list_display = ("seq", "op", "table", "key", "cells_preview", "created_at")
    list_filter = ("op", TableFilter)
    search_fields = ("key",)
    fields = ("seq", "op", "table", "key", "cells_pretty", "created_at")
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description="cells after the change")
    def cells_preview(self, obj: ChangeLogEntry) -> str:
        return _preview(obj.cells)

    @admin.display(description="cells after the change")
    def cells_pretty(self, obj: ChangeLogEntry) -> str:
        return _pretty(obj.cells)


class FrozenFilter(admin.SimpleListFilter):
    title = "write freeze"
    parameter_name = "frozen"

    def lookups(self, request, model_admin):
        return [("yes", "frozen now"), ("no", "accepting writes")]

    def queryset(self, request, queryset):
        live = Q(frozen_until__gt=timezone.now())
        if self.value() == "yes":
            return queryset.filter(live)
        if self.value() == "no":
            return queryset.exclude(live)
        return queryset


@admin.register(OwnedRange)
class OwnedRangeAdmin(admin.ModelAdmin):
    list_display = ("table", "start", "end", "version", "frozen", "frozen_until", "rows")
    list_filter = (TableFilter, FrozenFilter)
    search_fields = ("table",)
    fields = ("table", "start_key", "end_key", "version", "frozen_until", "rows")
    readonly_fields = fields
    actions = ["unfreeze"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # The changelist may run the unfreeze action; a range itself is never edited.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="start", ordering="start_key")
    def start(self, obj: OwnedRange) -> str:
        return _bound(obj.start_key, end=False)

    @admin.display(description="end", ordering="end_key")
    def end(self, obj: OwnedRange) -> str:
        return _bound(obj.end_key, end=True)

    @admin.display(description="frozen now", boolean=True)
    def frozen(self, obj: OwnedRange) -> bool:
        return bool(obj.frozen_until and obj.frozen_until > timezone.now())

    @admin.display(description="rows stored")
    def rows(self, obj: OwnedRange) -> int:
        return range_count(obj.table, obj.start_key, obj.end_key)

    @admin.action(
        description="Lift the write freeze of the selected ranges", permissions=["change"]
    )
    def unfreeze(self, request, queryset) -> None:
        ranges = list(queryset)
        for r in ranges:
            range_unfreeze(r.table, r.start_key, r.end_key)
        self.message_user(
            request, f"Lifted the freeze of {len(ranges)} range(s).", messages.SUCCESS
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
