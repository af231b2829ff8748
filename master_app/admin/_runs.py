"""Admin of rebalance runs: reports, and the "Rebalance now" / "Preview the plan" buttons."""

from __future__ import annotations

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import path
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from master_app.models import RebalanceRun, TabletServer
from master_app.services.leases import MAINTENANCE, lease_current
from master_app.services.status import server_rows
from master_app.services.units import human_duration


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
                f"follower {m['replaces']}" if m.get("replaces") else m["source"],
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
