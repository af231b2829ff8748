"""The cluster dashboard in the master's admin (``/admin/dashboard/``, linked from its index).

Loaded by the master role. A thin view: the figures come from
``master_app.services.dashboard``, the charts from ``master_app.charts`` (server-side SVG),
the page is the admin's own look (``admin/base_site.html``). Staff only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from distdb.metrics import metrics_render
from master_app import charts
from master_app.services import dashboard, replication_view


def dashboard_view(request: HttpRequest) -> HttpResponse:
    servers = dashboard.servers_overview(lambda: metrics_render().decode())
    distribution = dashboard.key_distribution()
    colours = charts.server_colours([b.server for bars in distribution.values() for b in bars])
    heatmaps = dashboard.key_access()
    tables: list[dict[str, Any]] = [
        {
            "name": name,
            "ranges": len(bars),
            "rows": sum(b.rows for b in bars),
            "distribution": charts.key_distribution_svg(name, bars, colours),
            "heatmap": charts.key_access_svg(name, heatmaps[name]),
        }
        for name, bars in distribution.items()
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Cluster dashboard",
        "servers": servers,
        "tables": tables,
        "plan": dashboard.plan_preview(),
        "runs": dashboard.recent_runs(),
        "replication": replication_view.replication_ranges(),
        "failovers": replication_view.failovers_recent(10),
    }
    return TemplateResponse(request, "admin/master_app/dashboard.html", context)
