"""Admin of failovers: the read-only history of automatic failovers (issue #10)."""

from __future__ import annotations

from django.contrib import admin

from distdb.keys import bound_display
from master_app.models import Failover, Table
from master_app.services.units import human_duration


@admin.register(Failover)
class FailoverAdmin(admin.ModelAdmin):
    """Every automatic failover: when, which range, from whom to whom, how long the range
    can have been without a serving leader. Written by the master only: read-only here."""

    list_display = ("at", "table", "range", "from_server", "to_server", "version", "unavailable")
    list_filter = ("table", "from_server", "to_server")
    search_fields = ("table", "from_server", "to_server")
    date_hierarchy = "at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="range")
    def range(self, obj: Failover) -> str:
        # Keys as users write them; as stored for a table deleted since.
        kind = Table.objects.filter(name=obj.table).values_list("key_type", flat=True).first()
        return f"[{bound_display(kind, obj.start_key)}, {bound_display(kind, obj.end_key or None)})"

    @admin.display(description="unavailable for", ordering="unavailable_s")
    def unavailable(self, obj: Failover) -> str:
        return human_duration(obj.unavailable_s)
