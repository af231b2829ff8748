"""After a run: is every range of every table served by exactly one tablet server?

The master's metadata must cut each table's key space into contiguous, non-overlapping
ranges, and the ranges each tablet server believes it owns must be exactly the ones the
metadata gives it: no range owned by two servers (two voices), none by nobody (a hole).
The ranges each server follows must be exactly those whose in-sync set names it.
"""

from __future__ import annotations

from typing import Any

import orjson

from distdb.cluster import LocalCluster

_MASTER = (
    "import orjson; from master_app.services.metadata import metadata_current; "
    "m = metadata_current(); "
    "print(orjson.dumps([(t.table, t.start, t.end, t.server, [f.server for f in t.in_sync]) "
    "for t in m.tablets]).decode())"
)
_TABLET = (
    "import orjson; from tablet_app.models import FollowedRange, OwnedRange; "
    "print(orjson.dumps([list(OwnedRange.objects.values_list('table', 'start_key', 'end_key')), "
    "list(FollowedRange.objects.values_list('table', 'start_key', 'end_key'))]).decode())"
)

Range = tuple[str, str, str | None]


def merged(ranges: list[Range]) -> list[Range]:
    """Adjacent ranges of one table joined (a freeze may have split one owned range)."""
    out: list[Range] = []
    for table, start, end in sorted(ranges, key=lambda r: (r[0], r[1])):
        if out and out[-1][0] == table and out[-1][2] == start:
            out[-1] = (table, out[-1][1], end)
        else:
            out.append((table, start, end))
    return out


def ownership_compare(
    assigned: list[tuple[str, str, str | None, str, list[str]]],
    owned: dict[str, list[Range]],
    followed: dict[str, list[Range]] | None = None,
) -> list[str]:
    """Problems between the metadata's assignments and what each server owns (pure)."""
    problems: list[str] = []
    by_table: dict[str, list[tuple[str, str | None]]] = {}
    for table, start, end, _server, _in_sync in assigned:
        by_table.setdefault(table, []).append((start, end))
    for table, spans in by_table.items():
        spans.sort(key=lambda s: s[0])
        expected_start: str | None = ""
        for start, end in spans:
            if start != expected_start:
                problems.append(f"{table}: metadata has a gap or overlap at {start!r}")
            expected_start = end
        if expected_start is not None:
            problems.append(f"{table}: metadata does not reach the end of the key space")
    for server, ranges in owned.items():
        want = merged([(t, s, e) for t, s, e, srv, _ in assigned if srv == server])
        have = merged(ranges)
        if want != have:
            problems.append(f"{server} owns {have} but the metadata gives it {want}")
    for server, ranges in (followed or {}).items():
        want = sorted((t, s, e) for t, s, e, _, in_sync in assigned if server in in_sync)
        have = sorted(ranges)
        if want != have:
            problems.append(f"{server} follows {have} but the metadata names it in {want}")
    return problems


def ownership_check(cluster: LocalCluster) -> dict[str, Any]:
    assigned = [tuple(r) for r in orjson.loads(cluster.shell("master", _MASTER))]
    tablets = [n for n in cluster.cfg.node_ids if n.startswith("tablet-")]
    answers = {n: orjson.loads(cluster.shell(n, _TABLET)) for n in tablets}
    owned = {n: [tuple(r) for r in a[0]] for n, a in answers.items()}
    followed = {n: [tuple(r) for r in a[1]] for n, a in answers.items()}
    problems = ownership_compare(assigned, owned, followed)  # type: ignore[arg-type]
    return {"verdict": "ok" if not problems else "FAILED", "ok": not problems, "problems": problems}
