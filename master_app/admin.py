"""The master's admin: inspect and operate the cluster (tables, servers, tablets, runs, tokens)."""

from __future__ import annotations

import threading

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.shortcuts import redirect
from django.urls import path
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from distdb.errors import DistdbError, TableBeingDropped
from master_app.models import (
    ApiToken,
    ConsolidatedRow,
    DroppedTable,
    MetadataVersion,
    RebalanceRun,
    ServerToken,
    Table,
    Tablet,
    TabletServer,
)
from master_app.services.dashboard import human_duration
from master_app.services.leases import MAINTENANCE, lease_current
from master_app.services.status import server_rows
from master_app.services.tables import table_create, table_delete
from master_app.services.tokens import api_token_issue, api_token_revoke, server_tokens_revoke


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
    fields = ("start_display", "end_display", "server", "version")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Table)
class TableAdmin(admin.ModelAdmin):
    list_display = ("name", "key_type", "tablet_count", "row_count", "next_key", "created_at")
    list_filter = ("key_type",)
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
        if change:
            super().save_model(request, obj, form, change)  # columns only (name is read-only)
            return
        created = table_create(obj.name, obj.key_type, obj.columns)
        obj.pk, obj.next_key, obj.created_at = created.pk, created.next_key, created.created_at

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
    list_display = ("table", "start_display", "end_display", "server", "version")
    list_filter = ("table", "server")
    search_fields = ("table__name", "server__node_id", "start_key")
    readonly_fields = ("table", "start_key", "end_key", "server", "version")

    def has_add_permission(self, request):
        return False  # only the master's services change the metadata, atomically

    def has_delete_permission(self, request, obj=None):
        return False


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


@admin.register(RebalanceRun)
class RebalanceRunAdmin(admin.ModelAdmin):
    """Run reports, and the "Rebalance now" / "Preview the plan" buttons (queued to Celery)."""

    list_display = (
        "id",
        "trigger",
        "dry_run",
        "outcome",
        "started_at",
        "duration",
        "rows_moved",
        "longest_freeze",
        "step",
    )
    list_filter = ("outcome", "trigger", "dry_run")
    readonly_fields = [
        *(f.name for f in RebalanceRun._meta.fields if f.name not in ("plan", "moves")),
        "plan_table",
        "moves_table",
    ]
    exclude = ("plan", "moves")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="duration", ordering="duration_s")
    def duration(self, obj: RebalanceRun) -> str:
        return human_duration(obj.duration_s)

    @admin.display(description="longest freeze", ordering="longest_freeze_ms")
    def longest_freeze(self, obj: RebalanceRun) -> str:
        return human_duration(obj.longest_freeze_ms / 1000)

    def get_urls(self):
        urls = [
            path(
                "rebalance-now/",
                self.admin_site.admin_view(self.rebalance_now),
                name="master_app_rebalancerun_now",
            )
        ]
        return urls + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        lease = lease_current(MAINTENANCE)
        names = dict(TabletServer.objects.values_list("pk", "node_id"))
        extra = {
            "running": lease.holder if lease else None,
            "server_rows": sorted((names[pk], n) for pk, n in server_rows().items()),
        }
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    def rebalance_now(self, request):
        if request.method != "POST":
            return redirect("admin:master_app_rebalancerun_changelist")
        from master_app.tasks import rebalance

        lease = lease_current(MAINTENANCE)
        dry_run = bool(request.POST.get("dry_run"))
        if lease:
            self.message_user(request, f"A run is already going: {lease.holder}.", messages.WARNING)
        else:
            rebalance.delay(trigger="admin", dry_run=dry_run)
            what = "A dry run (plan only)" if dry_run else "A rebalance run"
            self.message_user(request, f"{what} was queued; refresh to follow it.")
        return redirect("admin:master_app_rebalancerun_changelist")

    @admin.display(description="plan")
    def plan_table(self, obj: RebalanceRun) -> str:
        rows = []
        for plan in obj.plan:
            moves = "; ".join(
                f"[{m['start_display']}, {m['end_display']}) {m['source']} → {m['target']}: "
                f"{m['rows']} rows"
                for m in plan["moves"]
            )
            before = ", ".join(f"{k}: {v}" for k, v in sorted(plan["before"].items()))
            after = ", ".join(f"{k}: {v}" for k, v in sorted(plan["after"].items()))
            rows.append(
                format_html(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    plan["table"],
                    before,
                    after,
                    moves or plan["note"],
                )
            )
        head = "<tr><th>table</th><th>rows before</th><th>after</th><th>moves</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(head), mark_safe("".join(rows)))

    @admin.display(description="moves")
    def moves_table(self, obj: RebalanceRun) -> str:
        rows = [
            format_html(
                "<tr><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td><td>{}</td>"
                "<td>{}</td><td>{}</td><td>{}</td></tr>",
                m["table"],
                m["source"],
                m["target"],
                m["rows_copied"],
                m["catch_up_entries"],
                f"{m['freeze_ms']:.0f}",
                f"{m['duration_s']:.2f}",
                m["outcome"],
                "; ".join(filter(None, [m.get("error", ""), *m.get("warnings", [])])),
            )
            for m in obj.moves
        ]
        head = (
            "<tr><th>table</th><th>from → to</th><th>rows copied</th><th>caught up</th>"
            "<th>freeze ms</th><th>seconds</th><th>outcome</th><th>notes</th></tr>"
        )
        return format_html("<table>{}{}</table>", mark_safe(head), mark_safe("".join(rows)))


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "jti", "created_at", "expires_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "jti")
    fields = ("name",)
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return ("name", "jti", "created_at", "expires_at", "revoked_at") if obj else ()

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj) if obj else ("name",)

    def save_model(self, request, obj, form, change):
        if change:
            return
        record, token = api_token_issue(obj.name)
        obj.pk = record.pk
        self.message_user(
            request,
            format_html(
                "Token for {} (copy it now, it is not shown again): <code>{}</code>",
                record.name,
                token,
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for record in queryset:
            api_token_revoke(record)
        self.message_user(request, f"revoked {queryset.count()} token(s)")


@admin.register(ServerToken)
class ServerTokenAdmin(admin.ModelAdmin):
    """Server tokens the master signed. New ones come from ``manage.py sign_jwt`` (the
    token goes to the node's token file); here they are listed and revoked."""

    list_display = ("node_id", "role", "jti", "url", "created_at", "expires_at", "revoked_at")
    list_filter = ("role", "revoked_at")
    search_fields = ("node_id", "jti")
    readonly_fields = list_display
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected server tokens", permissions=["change"])
    def revoke(self, request, queryset):
        jtis = list(queryset.values_list("jti", flat=True))
        revoked = server_tokens_revoke(jtis=jtis) if jtis else 0
        self.message_user(request, f"revoked {revoked} server token(s)")
