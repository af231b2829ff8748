"""The tablet server's scrape-time metrics (``settings.DISTDB_METRICS_COLLECTORS``).

Loaded by the tablet server role when ``/metrics`` is first scraped; read from its own
database and its link's status file (``tablet_app.services.status``) at each scrape,
at most every ``max_age_s`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from distdb.metrics import ScrapeCollector
from tablet_app.services.ownership import metadata_version_current
from tablet_app.services.status import changelog_figures, link_status_read, storage_figures


class TabletCollector(ScrapeCollector):
    max_age_s = 5.0  # bytes per table is a pass over the rows: bound its cost

    def families(self) -> Iterable[Any]:
        rows = GaugeMetricFamily("distdb_tablet_rows", "Rows stored, by table.", labels=["table"])
        size = GaugeMetricFamily(
            "distdb_tablet_bytes", "Bytes of cells (UTF-8 JSON) stored, by table.", labels=["table"]
        )
        ranges = GaugeMetricFamily(
            "distdb_tablet_ranges", "Key ranges this server owns, by table.", labels=["table"]
        )
        frozen = GaugeMetricFamily(
            "distdb_tablet_frozen_ranges",
            "Owned key ranges under a move's write freeze, by table.",
            labels=["table"],
        )
        for table, figures in storage_figures().items():
            rows.add_metric([table], figures.rows)
            size.add_metric([table], figures.bytes)
            ranges.add_metric([table], figures.ranges)
            frozen.add_metric([table], figures.frozen)
        yield from (rows, size, ranges, frozen)

        log = changelog_figures()
        yield GaugeMetricFamily(
            "distdb_changelog_entries",
            "Change-log entries not yet trimmed (not yet collected by the master).",
            value=log.entries,
        )
        yield GaugeMetricFamily(
            "distdb_changelog_last_seq",
            "Highest committed change-log sequence number.",
            value=log.last_seq,
        )
        yield GaugeMetricFamily(
            "distdb_changelog_collection_lag_seconds",
            "Age of the oldest change-log entry the master has not collected (0: none).",
            value=log.oldest_age_s,
        )
        link = link_status_read()
        yield GaugeMetricFamily(
            "distdb_link_up",
            "1 while the link agent is connected to the master.",
            value=1 if link.up else 0,
        )
        if link.age_s is not None:
            yield GaugeMetricFamily(
                "distdb_link_heartbeat_age_seconds",
                "Seconds since the link agent last reported (it does so every heartbeat).",
                value=max(0.0, link.age_s),
            )
        yield GaugeMetricFamily(
            "distdb_metadata_version",
            "The newest metadata version this server has applied.",
            value=metadata_version_current(),
        )
