"""What the master's cluster dashboard shows (``master_app.dashboard``), gathered in one place.

Loaded by the master role, per dashboard page view (an operator's page, not a hot path):

* **servers**: every tablet server from the master's registry (state, heartbeat age,
  ranges) plus the master and the client servers (``DISTDB_CLIENT_URLS``), each with
  rows, requests/s and p99 latency read from its own ``/metrics``. Rates need two
  readings: the previous page view's are kept in the cache; without one (the first view,
  or one long ago) the page takes two, a second apart.
* **key distribution** per table: its ranges in key order with rows (master's copy) and owner.
* **key access** per table: reads and writes per range and minute over the last hour,
  from every live tablet server (``GET /internal/v1/key-access``), laid on the current ranges.
* **plan preview**: what a rebalance would do now (planned from the master's copy;
  nothing is collected, locked or moved).
* **recent runs**.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from distdb import protocol
from distdb.errors import DistdbError
from master_app.models import RebalanceRun, Table, TabletServer
from master_app.services.rebalance import plan_as_dict, plan_cluster
from master_app.services.status import tablet_rows
from master_app.services.tablet_api import tablet_get
from master_app.services.units import human_count, human_duration

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 1.0
RATE_WINDOW_S = (1.0, 300.0)  # a previous reading this old (seconds) gives a rate
SAMPLES_CACHE_KEY = "distdb:dashboard:samples"
HEATMAP_MINUTES = 60


# --- metrics of every node -----------------------------------------------------------------------


@dataclass
class Sample:
    """One reading of a node's /metrics: the request count and latency histogram (public and
    internal APIs summed), and its rows if it is a tablet server."""

    at: float
    requests: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    rows: float | None = None


def sample_parse(text: str, at: float) -> Sample:
    sample = Sample(at)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("api") == "web" or s.labels.get("endpoint") == "key-access":
                continue  # the admin's pages and this dashboard's reads are not the load
            if s.name == "distdb_http_requests_total":
                sample.requests += s.value
            elif s.name == "distdb_http_request_duration_seconds_bucket":
                le = float(s.labels["le"])
                sample.buckets[le] = sample.buckets.get(le, 0.0) + s.value
            elif s.name == "distdb_tablet_rows":
                sample.rows = (sample.rows or 0.0) + s.value
    return sample


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """The ``q`` quantile of the observations between two readings of a cumulative histogram,
    interpolated within its bucket (as Prometheus' ``histogram_quantile``)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all we know
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return None


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=SCRAPE_TIMEOUT_S) as resp:
        text: str = resp.read().decode()
        return text


def nodes_sample(nodes: dict[str, str], read_own: Callable[[], str]) -> dict[str, Sample | None]:
    """Read every node's /metrics at once (None for a node that did not answer); the master
    (url "") is read in-process."""

    def one(url: str) -> Sample | None:
        at = time.monotonic()
        try:
            return sample_parse(read_own() if not url else _scrape(url), at)
        except (OSError, ValueError) as exc:
            log.info("dashboard: no metrics from %s: %s", url or "the master", exc)
            return None

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        return dict(zip(nodes, pool.map(one, nodes.values()), strict=True))


@dataclass
class Load:
    requests_per_s: float | None
    p99_s: float | None
    rows: float | None


def nodes_load(nodes: dict[str, str], read_own: Callable[[], str]) -> dict[str, Load]:
    """Requests/s and p99 per node since the previous reading (taking two if needed)."""
    previous: dict[str, Sample | None] = cache.get(SAMPLES_CACHE_KEY) or {}
    now = time.monotonic()
    usable = {
        n: s
        for n, s in previous.items()
        if s is not None and RATE_WINDOW_S[0] <= now - s.at <= RATE_WINDOW_S[1]
    }
    if any(n not in usable for n in nodes):
        first = nodes_sample(nodes, read_own)
        usable.update({n: s for n, s in first.items() if s is not None and n not in usable})
        time.sleep(RATE_WINDOW_S[0])
    current = nodes_sample(nodes, read_own)
    cache.set(SAMPLES_CACHE_KEY, current, timeout=int(RATE_WINDOW_S[1]))
    loads = {}
    for node, sample in current.items():
        before = usable.get(node)
        if sample is None:
            loads[node] = Load(None, None, None)
            continue
        if before is None or sample.at <= before.at:
            loads[node] = Load(None, None, sample.rows)
            continue
        rate = max(0.0, sample.requests - before.requests) / (sample.at - before.at)
        loads[node] = Load(rate, quantile(0.99, before.buckets, sample.buckets), sample.rows)
    return loads


# --- the page's sections ---------------------------------------------------------------------


@dataclass
class ServerRow:
    node_id: str
    role: str
    url: str
    state: str
    heartbeat_age: str
    rows: str
    ranges: str
    requests_per_s: str
    p99: str


def servers_overview(read_own: Callable[[], str]) -> list[ServerRow]:
    """Every server of the cluster with its state and load."""
    tablets = list(TabletServer.objects.order_by("node_id"))
    nodes: dict[str, str] = {"master": ""}
    nodes.update({s.node_id: s.url for s in tablets})
    clients = {f"client @ {url}": url for url in settings.DISTDB_CLIENT_URLS}
    nodes.update(clients)
    loads = nodes_load(nodes, read_own)
    counted = tablet_rows()
    ranges: dict[int, int] = {}
    master_rows = 0
    for tablet, n in counted:
        ranges[tablet.server_id] = ranges.get(tablet.server_id, 0) + 1
        master_rows += n
    now = timezone.now()

    def fmt_rate(load: Load) -> str:
        return "—" if load.requests_per_s is None else f"{load.requests_per_s:.1f}"

    rows: list[ServerRow] = []
    master = loads["master"]
    rows.append(
        ServerRow(
            "master", "master", settings.DISTDB_PUBLIC_URL, "up", "—",
            f"{human_count(master_rows)} (copy)", str(len(counted)),
            fmt_rate(master), human_duration(master.p99_s),
        )
    )  # fmt: skip
    for server in tablets:
        load = loads[server.node_id]
        state = server.state
        if server.draining:
            state += ", draining"
        if load.rows is None and server.state == TabletServer.State.UP:
            state += " (no metrics)"
        age = (now - server.last_heartbeat).total_seconds() if server.last_heartbeat else None
        rows.append(
            ServerRow(
                server.node_id, "tablet", server.url, state, human_duration(age),
                "—" if load.rows is None else human_count(load.rows),
                str(ranges.get(server.pk, 0)), fmt_rate(load), human_duration(load.p99_s),
            )
        )  # fmt: skip
    for name, url in clients.items():
        load = loads[name]
        answered = load.requests_per_s is not None or load.p99_s is not None
        rows.append(
            ServerRow(
                url.split("://", 1)[-1], "client", url,
                "up" if answered else "unreachable", "—", "—", "—",
                fmt_rate(load), human_duration(load.p99_s),
            )
        )  # fmt: skip
    return rows


@dataclass
class RangeBar:
    start: str
    end: str
    server: str
    rows: int


def key_distribution() -> dict[str, list[RangeBar]]:
    """Per table, its ranges in key order with their rows (master's copy) and owner."""
    tables: dict[str, list[RangeBar]] = {}
    for tablet, n in tablet_rows():
        bar = RangeBar(tablet.start_display(), tablet.end_display(), tablet.server.node_id, n)
        tables.setdefault(tablet.table.name, []).append(bar)
    return tables


@dataclass
class Heatmap:
    ranges: list[RangeBar]  # rows of the map, in key order
    minutes: list[int]  # columns, oldest first (Unix minutes)
    cells: list[list[int]]  # [range][minute] reads + writes
    peak: int


def key_access(now: float | None = None) -> dict[str, Heatmap]:
    """Per table, reads + writes per current range per minute over the last hour."""
    now = time.time() if now is None else now
    last = int(now // 60)
    minutes = list(range(last - HEATMAP_MINUTES + 1, last + 1))
    live = list(TabletServer.objects.filter(state=TabletServer.State.UP).order_by("node_id"))

    def fetch(server: TabletServer) -> list[protocol.KeyAccessBucket]:
        try:
            answer = tablet_get(
                server.node_id, server.url, "/internal/v1/key-access", protocol.KeyAccess,
                timeout_s=SCRAPE_TIMEOUT_S,
            )  # fmt: skip
            return answer.buckets
        except DistdbError as exc:
            log.info("dashboard: no key access from %s: %s", server.node_id, exc.message)
            return []

    with ThreadPoolExecutor(max_workers=max(1, len(live))) as pool:
        buckets = [b for got in pool.map(fetch, live) for b in got]
    maps: dict[str, Heatmap] = {}
    for table, bars in key_distribution().items():
        spans = _stored_spans(table)
        cells = [[0] * len(minutes) for _ in bars]
        for b in buckets:
            if b.table != table or not minutes[0] <= b.minute <= last:
                continue
            row = _span_index(spans, b.start)
            if row is not None:
                cells[row][b.minute - minutes[0]] += b.reads + b.writes
        peak = max((max(r) for r in cells), default=0)
        maps[table] = Heatmap(bars, minutes, cells, peak)
    return maps


def _stored_spans(table: str) -> list[tuple[str, str | None]]:
    from master_app.models import Tablet

    return list(
        Tablet.objects.filter(table__name=table)
        .order_by("start_key")
        .values_list("start_key", "end_key")
    )


def _span_index(spans: list[tuple[str, str | None]], key: str) -> int | None:
    for i, (start, end) in enumerate(spans):
        if start <= key and (end is None or key < end):
            return i
    return None


def plan_preview() -> list[dict[str, Any]]:
    """What a rebalance would do now, per table (nothing collected, locked or moved)."""
    live = list(TabletServer.objects.filter(state=TabletServer.State.UP).order_by("node_id"))
    key_types = dict(Table.objects.values_list("name", "key_type"))
    return [plan_as_dict(p, key_types[p.table]) for p in plan_cluster(live)]


@dataclass
class RunRow:
    id: int
    trigger: str
    outcome: str
    started: str
    duration: str
    rows_moved: int
    moves: int
    longest_freeze: str
    error: str


def recent_runs(limit: int = 8) -> list[RunRow]:
    return [
        RunRow(
            run.pk, run.trigger + (" (dry run)" if run.dry_run else ""), run.get_outcome_display(),
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"), human_duration(run.duration_s),
            run.rows_moved, len(run.moves), human_duration(run.longest_freeze_ms / 1000),
            (run.error or "")[:200],
        )
        for run in RebalanceRun.objects.order_by("-started_at")[:limit]
    ]  # fmt: skip
