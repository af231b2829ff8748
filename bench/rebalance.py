"""Rebalance under load: workload A keeps running while ``manage.py rebalance --json`` moves
a large share of the rows; what matters is what the users of the public API saw.

1. Make the data lopsided: new integer keys all land on the table's last tablet, so
   enough inserts there leave one tablet server holding most rows and the plan must move
   at least ``min_move_fraction`` of them (``rows_to_add``; often nothing is needed: a
   new table starts on one server).
2. Run workload A for ``before_s``, run the rebalance command (the master's environment)
   while A keeps going, then ``after_s`` more.
3. Report errors, latency percentiles before / during / after, a time series for the
   plot, the command's report (rows moved, longest write freeze) and the targets.

The command's interface (the last stdout line is a JSON object with at least outcome,
rows_moved, longest_freeze_ms, duration_s, moves, error) is its contract; until the
command exists (``manage.py help rebalance`` fails) the workload reports itself skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import sys
import time
from typing import Any

from bench import cluster as cl
from bench.runner import run_until
from bench.stats import Recorder, summarize, summarize_by_op, timeseries
from bench.workloads import MIXES, KeySpace, mix_operation, run_load
from distdb.cluster.config import MANAGE_PY, ROOT
from distdb.keys import decode_key


def rebalance_available(cluster: cl.Cluster) -> tuple[bool, str]:
    """Whether ``manage.py rebalance`` exists on this tree (and why not)."""
    ok, output = cl.manage(cluster, "help", "rebalance", timeout=120)
    if ok:
        return True, ""
    lines = [ln.strip() for ln in output.splitlines()[1:] if ln.strip()]  # after "failed:"
    return False, f"`manage.py help rebalance` failed: {lines[0] if lines else 'no output'}"


def rows_on_servers(tablets: list[dict], table: str, key_count: int) -> dict[str, int]:
    """How many of the keys [0, key_count) each server holds, from the metadata's ranges."""
    held: dict[str, int] = {}
    for t in tablets:
        if t["table"] != table:
            continue
        lo = 0 if not t["start"] else max(0, int(decode_key("int", t["start"])))
        hi = key_count if t["end"] is None else min(key_count, int(decode_key("int", t["end"])))
        held[t["server"]] = held.get(t["server"], 0) + max(0, hi - lo)
    return held


def rows_to_add(
    held: dict[str, int], last_server: str, servers: int, fraction: float
) -> int | None:
    """New rows to append (on ``last_server``) so a balanced plan moves >= ``fraction`` of all.

    With N rows of which L on the last server and S servers, adding X rows there makes the
    excess to move (L + X) - (N + X) / S; solve (L + X) - (N + X) / S >= fraction (N + X).
    None when no number of rows can do it (one server, or a fraction too large).
    """
    n, on_last = sum(held.values()), held.get(last_server, 0)
    room = 1.0 - 1.0 / servers - fraction
    if servers < 2 or room <= 0:
        return None
    need = (n * (fraction + 1.0 / servers) - on_last) / room
    return max(0, math.ceil(need))


def run_window(
    report: dict, wall_origin: float, t_start: float, t_end: float
) -> tuple[float, float]:
    """When the rebalance run itself went on, in seconds since the workload started.

    The command spends seconds starting Django before the run begins, so the command's
    window overstates "during". The report's ``started_at``/``finished_at`` (ISO times)
    place the run; else it ended as the command did and lasted ``duration_s``; else the
    command's window it is.
    """
    try:
        start = dt.datetime.fromisoformat(report["started_at"]).timestamp() - wall_origin
        end = dt.datetime.fromisoformat(report["finished_at"]).timestamp() - wall_origin
    except (KeyError, TypeError, ValueError):
        duration = report.get("duration_s")
        if not isinstance(duration, int | float) or duration <= 0:
            return t_start, t_end
        start, end = t_end - duration, t_end
    start, end = max(start, t_start), min(end, t_end)
    return (start, end) if end > start else (t_start, t_end)


def _last_line_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


async def _rebalance_command(cluster: cl.Cluster, timeout_s: float) -> tuple[dict, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(MANAGE_PY),
        "rebalance",
        "--json",
        cwd=ROOT,
        env=cluster.env("master"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"outcome": "failed", "error": f"timed out after {timeout_s:.0f} s"}, ""
    report = _last_line_json(out.decode(errors="replace"))
    stderr = err.decode(errors="replace")[-2000:]
    if report is None:
        report = {"outcome": "failed", "error": f"no JSON report (exit {proc.returncode})"}
    report["exit_code"] = proc.returncode
    return report, stderr


async def run_rebalance(
    cluster: cl.Cluster,
    api,
    table: str,
    keys: KeySpace,
    values,
    *,
    concurrency: int,
    before_s: float,
    after_s: float,
    bucket_s: float,
    min_move_fraction: float,
    command_timeout_s: float,
    seed: int,
) -> dict[str, Any]:
    ok, reason = await asyncio.to_thread(rebalance_available, cluster)
    if not ok:
        return {"skipped": True, "reason": reason}

    # 1. lopsided data
    meta = await asyncio.to_thread(cl.metadata, cluster)
    tablets = [t for t in meta["tablets"] if t["table"] == table]
    last = next(t["server"] for t in tablets if t["end"] is None)
    held = rows_on_servers(tablets, table, keys.next_key)
    extra = rows_to_add(held, last, len(cluster.tablet_ports), min_move_fraction * 1.15)
    prep = {"rows_before": held, "last_tablet_server": last, "rows_added": extra or 0}
    if extra is None:
        prep["note"] = "no number of new rows can make the plan move that share"
    elif extra:
        prep["load"] = await run_load(
            api, keys, values, rows=extra, batch=100, concurrency=concurrency
        )

    # 2. workload A around the command
    stop = asyncio.Event()
    origin = time.perf_counter()
    wall_origin = time.time()
    rec = Recorder(origin=origin)
    op = mix_operation(api, MIXES["a"], keys, values, seed)
    load = asyncio.create_task(run_until(op, concurrency=concurrency, stop=stop, recorder=rec))
    await asyncio.sleep(before_s)
    t_start = time.perf_counter() - origin
    report, stderr = await _rebalance_command(cluster, command_timeout_s)
    t_end = time.perf_counter() - origin
    await asyncio.sleep(after_s)
    stop.set()
    await load
    t_stop = time.perf_counter() - origin

    # 3. what the users saw; "during" is the run itself, not the command's start-up
    run_start, run_end = run_window(report, wall_origin, t_start, t_end)
    phases = {
        "before": (0.0, run_start),
        "during": (run_start, run_end),
        "after": (run_end, t_stop),
    }
    by_phase = {
        name: {
            **summarize(rec.between(a, b), b - a),
            "by_op": summarize_by_op(rec.between(a, b), b - a),
        }
        for name, (a, b) in phases.items()
    }
    updates_during = [s.latency * 1000 for s in rec.between(run_start, run_end) if s.op == "update"]
    meta_after = await asyncio.to_thread(cl.metadata, cluster)
    total_rows = keys.next_key
    moved = report.get("rows_moved") or 0
    out = {
        **summarize(rec.samples, t_stop),
        "by_op": summarize_by_op(rec.samples, t_stop),
        "skipped": False,
        "concurrency": concurrency,
        "prep": prep,
        "window_s": {
            "command_start": t_start,
            "run_start": run_start,
            "run_end": run_end,
            "command_end": t_end,
            "end": t_stop,
        },
        "phases": by_phase,
        # whole buckets only: a last, partial bucket would look like a throughput drop
        "timeseries": timeseries(rec.samples, bucket_s, 0.0, bucket_s * (t_stop // bucket_s)),
        "command": report,
        "command_stderr_tail": stderr if report.get("outcome") == "failed" else "",
        "rows_in_table": total_rows,
        "moved_fraction": moved / total_rows if total_rows else None,
        "client_max_update_ms_during": max(updates_during, default=None),
        "layout_after": rows_on_servers(meta_after["tablets"], table, keys.next_key),
        "tablets_after": [t for t in meta_after["tablets"] if t["table"] == table],
    }
    return out
