"""The replication part of the results (``bench.replication``): its ratios, its targets and
its section of the report. Pure functions of the results' ``replication`` entry, so an
old results file re-renders (``python -m bench --report``).

Issue #10's goals: with rf=2 each write workload keeps >= 0.6 x its rf=1 throughput and
its p99 stays <= 2 x. The failover and re-replication numbers have no goal here (the
integration test bounds the failover by the heartbeat timeout); they are reported.
"""

from __future__ import annotations

import math
from typing import Any

from bench.stats import ratio

MIN_THROUGHPUT_RATIO = 0.6
MAX_P99_RATIO = 2.0
ROW_WORKLOADS = ("load",)  # compared in rows/s; the others in ops/s


def _rate(workload: str, summary: dict) -> float | None:
    return summary.get("rows_per_s" if workload in ROW_WORKLOADS else "ops_per_s")


def replication_ratios(rep: dict | None) -> dict[str, float | None]:
    """Per write workload: rf=2 / rf=1 throughput and p99 (``<w>_rf2_vs_rf1``,
    ``<w>_p99_rf2_vs_rf1``); empty when the part did not run."""
    if not rep or rep.get("skipped"):
        return {}
    out: dict[str, float | None] = {}
    for workload, by_rf in (rep.get("comparison", {}).get("workloads") or {}).items():
        one, two = by_rf.get("rf1"), by_rf.get("rf2")
        if not one or not two:
            continue
        out[f"{workload}_rf2_vs_rf1"] = ratio(_rate(workload, two), _rate(workload, one))
        out[f"{workload}_p99_rf2_vs_rf1"] = ratio(two.get("p99_ms"), one.get("p99_ms"))
    return out


def _status(met: bool | None) -> str:
    return "unknown" if met is None else ("met" if met else "missed")


def replication_targets(ratios: dict, rep: dict | None) -> dict[str, dict]:
    """``replication_<w>_throughput`` and ``replication_<w>_p99`` per write workload: value,
    threshold, status; "skipped" with the reason when the part did not run. A comparison
    during which the in-sync set shrank measured rf=1 in part: its targets are "unknown"."""
    if not rep or rep.get("skipped"):
        reason = (rep or {}).get("reason", "not run")
        return {"replication": {"value": None, "status": "skipped", "reason": reason}}
    lost = (rep.get("comparison") or {}).get("in_sync_lost") or []
    targets: dict[str, dict] = {}
    for key, value in ratios.items():
        if not key.endswith("_rf2_vs_rf1"):
            continue
        p99 = "_p99_" in key
        workload = key.split("_p99_")[0] if p99 else key.removesuffix("_rf2_vs_rf1")
        threshold = MAX_P99_RATIO if p99 else MIN_THROUGHPUT_RATIO
        met = None if value is None else (value <= threshold if p99 else value >= threshold)
        target = {
            "value": value,
            "threshold": threshold,
            "status": _status(met),
            "ratio": key,
            "rule": f"{key} {'<=' if p99 else '>='} {threshold}",
        }
        if lost:
            target["status"] = "unknown"
            target["reason"] = f"the in-sync set shrank during: {', '.join(lost)}"
        targets[f"replication_{workload}_{'p99' if p99 else 'throughput'}"] = target
    return targets


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else str(value)


def replication_section(rep: dict | None) -> list[str]:
    """The report's "Replication" section (Markdown lines); empty when not run."""
    if not rep:
        return []
    out = ["", "## Replication (issue #10)", ""]
    if rep.get("skipped"):
        return out + [f"Skipped: {rep.get('reason')}"]
    comparison = rep.get("comparison") or {}
    out += [
        f"Own cluster: {rep.get('tablet_servers')} tablet servers ({rep.get('server')}), "
        f"env {rep.get('env')}. Write workloads on an rf=1 and an rf=2 table, "
        f"{rep.get('rounds')} rounds in alternating order, {_fmt(rep.get('rows_per_round'))} "
        f"rows loaded and {rep.get('duration_s')} s of workload A per table and round, "
        f"concurrency {rep.get('concurrency')}.",
        "",
        "| workload | rf=1 ops/s · rows/s · p99 ms | rf=2 ops/s · rows/s · p99 ms "
        "| throughput rf2/rf1 (≥ 0.6) | p99 rf2/rf1 (≤ 2) |",
        "|---|---|---|---|---|",
    ]
    ratios = replication_ratios(rep)
    for workload, by_rf in (comparison.get("workloads") or {}).items():
        cells = []
        for rf in ("rf1", "rf2"):
            s = by_rf.get(rf) or {}
            cells.append(
                f"{_fmt(s.get('ops_per_s'), 0)} · {_fmt(s.get('rows_per_s'), 0)} · "
                f"{_fmt(s.get('p99_ms'))}" + (f" ({s['errors']} errors)" if s.get("errors") else "")
            )
        cells.append(_fmt(ratios.get(f"{workload}_rf2_vs_rf1"), 2))
        cells.append(_fmt(ratios.get(f"{workload}_p99_rf2_vs_rf1"), 2))
        out.append(f"| {workload} | " + " | ".join(cells) + " |")
    if comparison.get("in_sync_lost"):
        out += ["", f"**The in-sync set shrank** during: {', '.join(comparison['in_sync_lost'])}."]
    if comparison.get("error"):
        out += ["", f"Comparison error: {comparison['error']}"]
    out += _failover_lines(rep.get("failover"))
    return out


def _failover_lines(f: dict | None) -> list[str]:
    if not f:
        return []
    if f.get("skipped"):
        return ["", f"Failover skipped: {f.get('reason')}"]
    rr = f.get("rereplication") or {}
    copy = f.get("master_copy") or {}
    master = f.get("master_failovers")
    if isinstance(master, list):
        unavailable = ", ".join(_fmt(m.get("unavailable_s"), 2, " s") for m in master) or "none"
    else:
        unavailable = f"not read ({master})"
    writes = f.get("writes_after_kill") or {}
    lines = [
        "",
        f"**Failover** ({f.get('writers')} writers of single rows through the client servers; "
        f"SIGKILL of leader {f.get('leader')} after {_fmt(f.get('kill_s'))} s of writes; "
        f"metadata polled every {f.get('poll_s')} s):",
        "",
        "| measure | value |",
        "|---|---|",
        f"| longest gap between acknowledged writes | {_fmt(f.get('longest_gap_s'), 2, ' s')} |",
        f"| kill → first write sent after it acknowledged | {_fmt(f.get('recovery_s'), 2, ' s')} |",
        f"| kill → follower promoted (metadata) | {_fmt(f.get('promoted_s'), 2, ' s')} "
        f"({f.get('leader')} → {f.get('new_leader', '–')}) |",
        f"| master's `Failover.unavailable_s` | {unavailable} |",
        f"| kill → rf restored (in-sync set non-empty) | {_fmt(f.get('rf_restored_s'), 2, ' s')} "
        f"(new follower {f.get('new_follower', '–')}) |",
        f"| re-replication, promotion → rf restored | {_fmt(rr.get('rows'))} rows in "
        f"{_fmt(rr.get('seconds'), 2, ' s')}: **{_fmt(rr.get('rows_per_s'), 0)} rows/s** |",
        f"| re-replication, the master's copy alone | {_fmt(copy.get('rows'))} rows in "
        f"{_fmt(copy.get('duration_s'), 2, ' s')}: {_fmt(copy.get('rows_per_s'), 0)} rows/s |",
        f"| writes after the kill | {_fmt(writes.get('ops'))} ops, "
        f"{_fmt(writes.get('errors'))} failed {writes.get('error_kinds') or ''}, "
        f"p99 {_fmt(writes.get('p99_ms'))} ms, max {_fmt(writes.get('max_ms'))} ms |",
    ]
    return lines
