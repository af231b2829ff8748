"""Results of a run: ratios and targets, the JSON file, and the report (Markdown + PNG plots).

The JSON (``bench/results/<run id>.json``) is the record; the report
(``bench/results/<run id>/report.md`` and its plots) is rendered from it alone, so an old
JSON can be re-rendered: ``python -m bench --report bench/results/<run id>.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.metrics_cost import metrics_cost_section
from bench.replication_report import replication_section
from bench.stats import ratio

SCHEMA_VERSION = 1
ROW_METRIC_WORKLOADS = ("load", "batch_read")  # compared in rows/s; the others in ops/s
WORKLOAD_ORDER = ("load", "a", "b", "c", "e", "batch_read")

# name -> (ratio key, minimum value)
RATIO_TARGETS = {
    "point_reads": ("c_e2e_vs_onehop", 0.7),
    "batched_reads": ("batch_read_e2e_vs_storage", 0.5),
    "bulk_load": ("load_e2e_vs_storage", 0.3),
}
# name -> (ratio key, maximum value)
RATIO_LIMITS = {"point_reads_tail": ("c_p99_vs_p50", 3.0)}
# Issue #12: against the single-node peer and the machine's HTTP ceiling.
RATIO_TARGETS.update(
    {
        "point_reads_vs_peer": ("c_e2e_vs_peer", 2.0),
        "point_reads_vs_ceiling": ("c_e2e_vs_ceiling", 0.4),
    }
)
REBALANCE_MAX_FREEZE_MS = 200.0
REBALANCE_MAX_P99_FACTOR = 3.0
REBALANCE_MIN_MOVED = 0.3


def metric(workload: str, summary: dict | None) -> float | None:
    if not summary:
        return None
    return summary.get("rows_per_s" if workload in ROW_METRIC_WORKLOADS else "ops_per_s")


def compute_ratios(
    workloads: dict,
    onehop: dict,
    storage: dict,
    *,
    peer: dict | None = None,
    ceiling: dict | None = None,
) -> dict[str, float | None]:
    """Per workload: end-to-end / one hop, end-to-end / storage, one hop / storage; and
    end-to-end / the peer service, / the HTTP ceiling, and p99 / p50 of point reads."""
    out: dict[str, float | None] = {}
    for name, base in (("peer", peer or {}), ("ceiling", ceiling or {})):
        for w in WORKLOAD_ORDER:
            if isinstance(base.get(w), dict) and workloads.get(w):
                out[f"{w}_e2e_vs_{name}"] = ratio(metric(w, workloads[w]), metric(w, base[w]))
    c = workloads.get("c")
    if c:
        out["c_p99_vs_p50"] = ratio(c.get("p99_ms"), c.get("p50_ms"))
    for w in WORKLOAD_ORDER:
        e2e, hop, sto = (metric(w, d.get(w)) for d in (workloads, onehop, storage))
        if hop is not None:
            out[f"{w}_e2e_vs_onehop"] = ratio(e2e, hop)
        if sto is not None:
            out[f"{w}_e2e_vs_storage"] = ratio(e2e, sto)
            if hop is not None:
                out[f"{w}_onehop_vs_storage"] = ratio(hop, sto)
    return out


def _target(value: float | None, threshold: float, met: bool | None, **extra) -> dict:
    status = "unknown" if met is None else ("met" if met else "missed")
    return {"value": value, "threshold": threshold, "status": status, **extra}


def compute_targets(
    ratios: dict, rebalance: dict | None, point_reads: dict | None = None
) -> dict[str, dict]:
    """Each target: its value, threshold and status (met / missed / skipped / unknown)."""
    targets = {}
    for name, (key, minimum) in RATIO_TARGETS.items():
        value = ratios.get(key)
        met = None if value is None else value >= minimum
        targets[name] = _target(value, minimum, met, ratio=key, rule=f"{key} >= {minimum}")
    for name, (key, maximum) in RATIO_LIMITS.items():
        value = ratios.get(key)
        met = None if value is None else value <= maximum
        concurrency = (point_reads or {}).get("concurrency")
        rule = f"{key} <= {maximum} (point reads at concurrency {concurrency})"
        targets[name] = _target(value, maximum, met, ratio=key, rule=rule)
    names = ("rebalance_succeeded", "rebalance_moved_share", "rebalance_no_failed_requests")
    names += ("rebalance_longest_freeze", "rebalance_p99_during")
    if not rebalance or rebalance.get("skipped"):
        reason = (rebalance or {}).get("reason", "not run")
        for name in names:
            targets[name] = {"value": None, "status": "skipped", "reason": reason}
        return targets
    command = rebalance.get("command", {})
    outcome = command.get("outcome")
    targets["rebalance_succeeded"] = _target(
        outcome, "succeeded", outcome == "succeeded", rule="the run's outcome is succeeded"
    )
    share = rebalance.get("moved_fraction")
    targets["rebalance_moved_share"] = _target(
        share,
        REBALANCE_MIN_MOVED,
        None if share is None else share >= REBALANCE_MIN_MOVED,
        rule="rows moved / rows in the table >= 0.3 (the test's precondition)",
    )
    errors = rebalance.get("errors")
    targets["rebalance_no_failed_requests"] = _target(
        errors, 0, None if errors is None else errors == 0, rule="no request failed"
    )
    freeze = command.get("longest_freeze_ms")
    targets["rebalance_longest_freeze"] = _target(
        freeze,
        REBALANCE_MAX_FREEZE_MS,
        None if freeze is None else freeze <= REBALANCE_MAX_FREEZE_MS,
        rule="longest write freeze <= 200 ms (the command's report)",
        client_max_update_ms_during=rebalance.get("client_max_update_ms_during"),
    )
    phases = rebalance.get("phases", {})
    factor = ratio(phases.get("during", {}).get("p99_ms"), phases.get("before", {}).get("p99_ms"))
    targets["rebalance_p99_during"] = _target(
        factor,
        REBALANCE_MAX_P99_FACTOR,
        None if factor is None else factor <= REBALANCE_MAX_P99_FACTOR,
        rule="p99 during the run <= 3 x p99 before",
    )
    if outcome != "succeeded":
        # Nothing moved, so "no freeze" and "no slowdown" say nothing about a move.
        for name in ("rebalance_longest_freeze", "rebalance_p99_during"):
            targets[name]["status"] = "unknown"
            targets[name]["reason"] = f"the run's outcome is {outcome}: nothing was moved"
    return targets


def clean(value: Any) -> Any:
    """NaN and infinities become null: the results must be strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def write_results(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(results), indent=1, default=str) + "\n")


REQUIRED_WORKLOAD_FIELDS = ("ops_per_s", "p50_ms", "p95_ms", "p99_ms", "errors")


def shape_problems(results: dict) -> list[str]:
    """What a results file lacks of the documented shape (empty when it is complete)."""
    problems = []
    for key in ("schema", "run_id", "timestamp", "machine", "config", "workloads", "ratios"):
        if key not in results:
            problems.append(f"missing {key}")
    for name, summary in results.get("workloads", {}).items():
        if summary.get("skipped"):
            if not summary.get("reason"):
                problems.append(f"workload {name} is skipped without a reason")
            continue
        problems += [
            f"workload {name} lacks {f}" for f in REQUIRED_WORKLOAD_FIELDS if f not in summary
        ]
    return problems


# --- rendering ----------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def results_table(results: dict) -> list[str]:
    """The per-workload table (Markdown), end to end then the baselines."""
    onehop = results.get("baselines", {}).get("onehop", {})
    storage = results.get("baselines", {}).get("storage", {})
    head = "| workload | e2e ops/s | e2e rows/s | p50 ms | p95 ms | p99 ms | errors "
    head += "| 1-hop ops/s | 1-hop p50 | 1-hop p99 | storage ops/s | storage p50 |"
    lines = [head, "|" + "---|" * 12]
    for name in (*WORKLOAD_ORDER, "rebalance"):
        s = results.get("workloads", {}).get(name)
        if s is None:
            continue
        if s.get("skipped"):
            lines.append(f"| {name} | skipped: {s.get('reason', '')} |" + " |" * 10)
            continue
        h, st = onehop.get(name, {}), storage.get(name, {})
        cells = [s.get(k) for k in ("ops_per_s", "rows_per_s", "p50_ms", "p95_ms", "p99_ms")]
        cells += [s.get("errors"), h.get("ops_per_s"), h.get("p50_ms"), h.get("p99_ms")]
        cells += [st.get("ops_per_s"), st.get("p50_ms")]
        digits = [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 2]
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(c, d) for c, d in zip(cells, digits, strict=True))
            + " |"
        )
    return lines


def servers_table(results: dict) -> list[str]:
    """Server candidate x workload (ops/s, p50, p99), then the peer and ceiling baselines."""
    servers = results.get("servers") or {}
    baselines = results.get("baselines", {})
    rows: list[tuple[str, dict]] = []
    for server, info in servers.items():
        if "error" in info:
            rows.append((f"{server}: did not start", {}))
            continue
        mark = " (primary)" if server == results.get("primary_server") else ""
        rows.append((f"{server}{mark}", info.get("workloads", {})))
    for name in ("peer", "ceiling"):
        base = baselines.get(name)
        if isinstance(base, dict) and "error" not in base:
            rows.append((f"baseline: {name}", base))
    if not rows:
        return []
    names = [w for w in WORKLOAD_ORDER if any(w in wl for _, wl in rows)]
    head = "| server | " + " | ".join(f"{w} ops/s · p50 · p99 ms" for w in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for label, wl in rows:
        cells = []
        for w in names:
            s = wl.get(w)
            if not s or s.get("skipped"):
                cells.append("–")
                continue
            rate = s.get("rows_per_s") if w in ROW_METRIC_WORKLOADS else s.get("ops_per_s")
            unit = " rows/s" if w in ROW_METRIC_WORKLOADS else ""
            cells.append(
                f"{_fmt(rate, 0)}{unit} · {_fmt(s.get('p50_ms'))} · {_fmt(s.get('p99_ms'))}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def memory_table(results: dict) -> list[str]:
    lines = []
    for server, info in (results.get("servers") or {}).items():
        mem = info.get("memory")
        if not mem:
            continue
        nodes = ", ".join(f"{n} {v:,.0f}" for n, v in mem["nodes"].items())
        link = "link in server" if info.get("link_in_server") else "separate link"
        lines.append(
            f"| {server} | {link} | {mem['os_processes']} | {mem['total_mib']:,.0f} | {nodes} |"
        )
    if not lines:
        return []
    head = [
        "| server | tablet link | OS processes | total MiB | MiB per node |",
        "|---|---|---|---|---|",
    ]
    return head + lines


def render_markdown(results: dict, plots: dict[str, str]) -> str:
    cfg, machine = results["config"], results["machine"]
    out = [
        f"# distdb benchmark {results['run_id']}",
        "",
        f"{results['timestamp']} · {machine.get('cpus')} CPUs · {machine.get('cpu_model', '')} · "
        f"Python {machine.get('python')} · git {results.get('git', {}).get('commit', '?')}"
        + (" (uncommitted changes)" if results.get("git", {}).get("dirty") else ""),
        "",
        f"Preset **{cfg['preset']}**: {cfg['rows']:,} rows of {cfg['fields']} x "
        f"{cfg['field_bytes']} B, concurrency {cfg['concurrency']}, {cfg['duration_s']} s per "
        f"workload after {cfg['warmup_s']} s warm-up, requests spread over "
        f"{results.get('cluster', {}).get('client_servers', 2)} client servers."
        + (" **Profiled run** (py-spy attached): rates are lower." if cfg.get("profile") else ""),
        *_busy_warning(machine),
        "",
        "## Workloads",
        "",
        *results_table(results),
        "",
        "e2e: the public API of both client servers. 1-hop: one tablet server's internal "
        "API. storage: the tablet's service functions in-process, one caller. load and "
        "batch_read compare rows/s, the others ops/s.",
        "",
        *(
            [
                "## HTTP server candidates (tablet and client roles) and baselines",
                "",
                *servers_table(results),
                "",
                "peer: single-node Django + DRF (WSGI, uvicorn, 2 workers, SQLite WAL). "
                "ceiling: a trivial asyncio server answering one fixed row.",
                "",
            ]
            if results.get("servers")
            else []
        ),
        *(
            ["## Memory (RSS after the workloads)", "", *memory_table(results), ""]
            if memory_table(results)
            else []
        ),
        "## Ratios",
        "",
        "| ratio | value |",
        "|---|---|",
    ]
    out += [f"| {k} | {_fmt(v, 3)} |" for k, v in results.get("ratios", {}).items()]
    out += ["", "## Targets", "", "| target | rule | value | status |", "|---|---|---|---|"]
    for name, t in results.get("targets", {}).items():
        rule = " — ".join(x for x in (t.get("rule"), t.get("reason")) if x)
        out.append(f"| {name} | {rule} | {_fmt(t.get('value'), 3)} | **{t['status']}** |")
    out += _rebalance_section(results.get("workloads", {}).get("rebalance"))
    out += metrics_cost_section(results.get("metrics_cost"))
    out += replication_section(results.get("replication"))
    if plots:
        out += ["", "## Plots", ""]
        out += [f"![{name}]({Path(path).name})" for name, path in plots.items()]
    out += _profile_section(results.get("profile"))
    return "\n".join(out) + "\n"


def _busy_warning(machine: dict) -> list[str]:
    """A run on a machine that was busy with something else measures that too."""
    start = (machine.get("load_avg_at_start") or [0])[0]
    cpus = machine.get("cpus") or 1
    if start <= 0.5 * cpus:
        return []
    return [
        "",
        f"**The machine was busy when the run started** (1-minute load average {start:.1f} "
        f"on {cpus} CPUs): rates are lower and noisier than on a quiet machine.",
    ]


def _rebalance_section(r: dict | None) -> list[str]:
    if not r:
        return []
    out = ["", "## Rebalance under load (workload A)", ""]
    if r.get("skipped"):
        return out + [f"Skipped: {r.get('reason')}"]
    c = r.get("command", {})
    out += [
        f"Command: outcome **{c.get('outcome')}**, {_fmt(c.get('rows_moved'))} rows moved "
        f"({_fmt((r.get('moved_fraction') or 0) * 100)}% of {_fmt(r.get('rows_in_table'))}), "
        f"longest write freeze {_fmt(c.get('longest_freeze_ms'))} ms, "
        f"{_fmt(c.get('duration_s'))} s. Client-side: longest update during the run "
        f"{_fmt(r.get('client_max_update_ms_during'))} ms, {r.get('errors')} failed requests"
        + (f" ({r.get('error_kinds')})" if r.get("errors") else "")
        + ".",
        "",
        "| phase | ops/s | p50 ms | p95 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in r.get("phases", {}).items():
        cells = [p.get(k) for k in ("ops_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms")]
        out.append(f"| {name} | " + " | ".join(_fmt(x) for x in cells) + f" | {p.get('errors')} |")
    if c.get("error"):
        out += ["", f"Command error: `{c['error']}`"]
    return out


def _profile_section(profile: dict | None) -> list[str]:
    if not profile:
        return []
    out = ["", "## Profiles (py-spy, CPU of non-idle threads)", ""]
    if profile.get("error"):
        return out + [profile["error"]]
    for workload, nodes in profile.get("workloads", {}).items():
        out.append(f"**{workload}**")
        out.append("")
        for node, info in nodes.items():
            if "error" in info:
                out.append(f"- {node}: {info['error']}")
                continue
            shares = ", ".join(f"{k} {v}%" for k, v in info.get("by_package", {}).items())
            out.append(f"- {node} ({info['samples']} samples, `{info['summary']}`): {shares}")
        out.append("")
    return out


def render_plots(results: dict, out_dir: Path) -> dict[str, str]:
    """PNG plots (matplotlib, Agg): throughput and latency per workload, rebalance timeline."""
    import matplotlib

    matplotlib.use("Agg")
    from bench import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    made = {"rebalance": plots.rebalance_timeline(results, out_dir / "rebalance.png")}
    if results.get("workloads"):  # none in a replication-only run
        made["throughput"] = plots.throughput(results, out_dir / "throughput.png")
        made["latency"] = plots.latency(results, out_dir / "latency.png")
    return {k: str(v) for k, v in made.items() if v is not None}


def render_report(results: dict, out_dir: Path) -> Path:
    plots = render_plots(results, out_dir)
    path = out_dir / "report.md"
    path.write_text(render_markdown(results, plots))
    return path
