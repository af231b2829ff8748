"""Admin of the cluster's metadata: tables (rf editable), servers, tablets, versions, rows."""

from __future__ import annotations

import threading

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from distdb.errors import DistdbError, TableBeingDropped
from master_app.models import (
    ConsolidatedRow,
    DroppedTable,
    MetadataVersion,
    Table,
    Tablet,
    TabletServer,
)
from master_app.services.replication_view import replication_ranges
from master_app.services.status import server_rows
from master_app.services.tables import table_create, table_delete, table_rf_set


class KeyRangeColumns:
    """The decoded start and end keys of a tablet, for list and inline columns."""

    @admin.display(description="start", ordering="start_key")
    def start_display(self, obj: Tablet) -> str:
        return obj.start_display()

    @admin.display(description="end")
    def end_display(self, obj: Tablet) -> str:
        return obj.end_display()


class TabletInline(KeyRangeColumns, admin.TabularInline):
    model = Tablet
    fields = ("start_display", "end_display", "server", "in_sync", "version")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Table)
class TableAdmin(admin.ModelAdmin):
    list_display = (
        "name", "key_type", "rf", "tablet_count", "row_count", "next_key", "created_at",
    )  # fmt: skip
    list_filter = ("key_type", "rf")
    search_fields = ("name",)
    readonly_fields = ("next_key", "created_at")
    inlines = [TabletInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_tablets=Count("tablets", distinct=True))

    def get_readonly_fields(self, request, obj=None):
        # Changing a table's name or key type would orphan its stored rows.
        return (*self.readonly_fields, "name", "key_type") if obj else self.readonly_fields

    @admin.display(description="tablets", ordering="_tablets")
    def tablet_count(self, obj: Table) -> int:
        return obj._tablets

    @admin.display(description="rows (master's copy)")
    def row_count(self, obj: Table) -> int:
        return obj.rows.count()

    # Creating and deleting go through the services: a table needs its first tablet and a
    # metadata version, and a deleted table's rows must leave the tablet servers too.

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None:
            form.clean = _clean_new_table(form.clean)
        return form

    def save_model(self, request, obj: Table, form, change: bool) -> None:
        if not change:
            created = table_create(obj.name, obj.key_type, obj.columns, obj.rf)
            obj.pk, obj.next_key, obj.created_at = created.pk, created.next_key, created.created_at
            return
        # Only the fields the form changed: a whole-row save would write back the next_key
        # read when the page was opened (keys allocated since would be handed out again).
        if "columns" in form.changed_data:
            obj.save(update_fields=["columns"])
        if "rf" in form.changed_data:
            # Through the service: a new metadata version, followers trimmed or re-replicated.
            try:
                table_rf_set(obj.name, form.cleaned_data["rf"])
            except DistdbError as exc:
                self.message_user(request, f"rf of {obj.name} unchanged: {exc.message}", "ERROR")

    def delete_model(self, request, obj: Table) -> None:
        self.delete_queryset(request, Table.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset) -> None:
        for name in list(queryset.values_list("name", flat=True)):
            try:
                table_delete(name)
            except DistdbError as exc:  # a rebalance holds the lease, say
                self.message_user(request, f"{name} was not deleted: {exc.message}", "ERROR")


def _clean_new_table(clean):
    """The admin's add form refuses what ``table_create`` would (a name still being
    dropped, no live server) with a form error rather than a failed save."""

    def checked(form):
        data = clean(form)
        name = data.get("name")
        if name and DroppedTable.objects.filter(name=name).exists():
            raise ValidationError(TableBeingDropped.default_message)
        if not TabletServer.objects.filter(state=TabletServer.State.UP, draining=False).exists():
            raise ValidationError("no live tablet server to hold the new table; start one first")
        return data

    return checked


@admin.register(TabletServer)
class TabletServerAdmin(admin.ModelAdmin):
    list_display = (
        "node_id",
        "state_badge",
        "draining",
        "url",
        "last_heartbeat",
        "tablet_count",
        "row_count",
        "acked_seq",
    )
    list_filter = ("state", "draining")
    search_fields = ("node_id", "url")
    readonly_fields = ("node_id", "url", "state", "last_heartbeat", "acked_seq", "created_at")
    actions = ["drain", "undrain"]

    def has_add_permission(self, request):
        return False  # servers join by linking to the master with their token

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: TabletServer) -> str:
        colour = "#2e7d32" if obj.state == TabletServer.State.UP else "#c62828"
        return format_html('<b style="color:{}">{}</b>', colour, obj.state)

    @admin.display(description="tablets")
    def tablet_count(self, obj: TabletServer) -> int:
        return obj.tablets.count()

    _page = threading.local()  # this request's counts; the admin instance is shared

    def changelist_view(self, request, extra_context=None):
        self._page.rows = server_rows()  # one count per tablet for the page, not per cell
        try:
            response = super().changelist_view(request, extra_context)
            return response.render() if hasattr(response, "render") else response
        finally:
            self._page.rows = None

    @admin.display(description="rows (master's copy)")
    def row_count(self, obj: TabletServer) -> int:
        rows = getattr(self._page, "rows", None)
        return (rows if rows is not None else server_rows()).get(obj.pk, 0)

    @admin.action(description="Drain: move their data away at the next rebalance")
    def drain(self, request, queryset):
        n = queryset.update(draining=True)
        self.message_user(request, f"{n} server(s) will be drained at the next rebalance.")

    @admin.action(description="Stop draining")
    def undrain(self, request, queryset):
        queryset.update(draining=False)


@admin.register(Tablet)
class TabletAdmin(KeyRangeColumns, admin.ModelAdmin):
    """The ranges with their leader, in-sync followers and each follower's lag (asked of
    the tablet servers once per page, with a short deadline: ``replication_view``)."""

    list_display = (
        "table", "start_display", "end_display", "server", "followers_lag", "copies", "version",
    )  # fmt: skip
    list_filter = ("table", "server")
    search_fields = ("table__name", "server__node_id", "start_key")
    readonly_fields = ("table", "start_key", "end_key", "server", "in_sync", "version")
    list_select_related = ("table", "server")

    _page = threading.local()  # this request's lags; the admin instance is shared

    def has_add_permission(self, request):
        return False  # only the master's services change the metadata, atomically

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        self._page.ranges = {(r.table, r.version, r.leader, r.start): r
                             for r in replication_ranges()}  # fmt: skip
        try:
            response = super().changelist_view(request, extra_context)
            return response.render() if hasattr(response, "render") else response
        finally:
            self._page.ranges = None

    @admin.display(description="followers: lag")
    def followers_lag(self, obj: Tablet) -> str:
        ranges = getattr(self._page, "ranges", None) or {}
        found = ranges.get((obj.table.name, obj.version, obj.server.node_id, obj.start_display()))
        if found is None:
            return ", ".join(obj.in_sync or ()) or "—"
        return format_html_join(
            mark_safe("<br>"), "{}{}: {}",
            ((f.server, "" if f.in_sync else " (not in sync)", f.lag) for f in found.followers),
        ) or "—"  # fmt: skip

    @admin.display(description="copies / rf")
    def copies(self, obj: Tablet) -> str:
        have = 1 + len(obj.in_sync or ())
        if have < obj.table.rf:
            return format_html('<b style="color:#c62828">{} / {}</b>', have, obj.table.rf)
        return f"{have} / {obj.table.rf}"


@admin.register(MetadataVersion)
class MetadataVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "reason", "created_at")
    search_fields = ("reason",)
    readonly_fields = ("version", "reason", "created_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ConsolidatedRow)
class ConsolidatedRowAdmin(admin.ModelAdmin):
    list_display = ("table", "display_key", "source_server", "source_seq", "updated_at")
    list_filter = ("table", "source_server")
    search_fields = ("key",)
    readonly_fields = ("table", "key", "cells", "source_server", "source_seq", "updated_at")
    list_select_related = ("table",)
    show_full_result_count = False  # COUNT(*) over millions of rows on every page is slow

    def has_add_permission(self, request):
        return False  # the copy is maintained from the tablet servers' change logs

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="key", ordering="key")
    def display_key(self, obj: ConsolidatedRow) -> str:
        return obj.display_key()
