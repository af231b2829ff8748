"""The report's plots (matplotlib with the Agg backend: PNG files, no display needed).

Called by ``bench.report.render_plots`` after it selected the Agg backend; each function
reads only the results dict and returns the PNG's path (None when there is nothing to
draw, e.g. a skipped rebalance).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt

from bench.report import ROW_METRIC_WORKLOADS, WORKLOAD_ORDER

LEVELS = (("e2e", "end to end (public API)"), ("onehop", "one hop"), ("storage", "storage"))
COLORS = {"e2e": "#1f77b4", "onehop": "#ff7f0e", "storage": "#2ca02c"}


def _levels(results: dict) -> dict[str, dict]:
    base = results.get("baselines", {})
    return {
        "e2e": results.get("workloads", {}),
        "onehop": base.get("onehop", {}),
        "storage": base.get("storage", {}),
    }


def _value(summary: dict | None, key: str) -> float:
    v = (summary or {}).get(key)
    return v if isinstance(v, int | float) and math.isfinite(v) and v > 0 else math.nan


def _grouped_bars(ax, names, series: dict[str, list[float]], labels: dict[str, str]) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (level, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))]
        bars = ax.bar(xs, values, width, label=labels[level], color=COLORS.get(level))
        for bar, v in zip(bars, values, strict=True):
            if math.isfinite(v):
                ax.annotate(
                    f"{v:,.0f}" if v >= 10 else f"{v:.1f}",
                    (bar.get_x() + bar.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)


def throughput(results: dict, path: Path) -> Path:
    levels = _levels(results)
    labels = dict(LEVELS)
    ops_names = [w for w in WORKLOAD_ORDER if w in levels["e2e"] and w not in ROW_METRIC_WORKLOADS]
    row_names = [w for w in WORKLOAD_ORDER if w in levels["e2e"] and w in ROW_METRIC_WORKLOADS]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=[2, 1])
    _grouped_bars(
        left,
        ops_names,
        {lv: [_value(levels[lv].get(w), "ops_per_s") for w in ops_names] for lv, _ in LEVELS},
        labels,
    )
    left.set_title("operations per second (log scale)")
    _grouped_bars(
        right,
        row_names,
        {lv: [_value(levels[lv].get(w), "rows_per_s") for w in row_names] for lv, _ in LEVELS},
        labels,
    )
    right.set_title("rows per second (log scale)")
    fig.suptitle(f"distdb {results['run_id']}: throughput per workload")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(results: dict, path: Path) -> Path:
    levels = _levels(results)
    names = [w for w in WORKLOAD_ORDER if w in levels["e2e"]]
    fig, axes = plt.subplots(1, len(LEVELS), figsize=(15, 4.8), sharey=True)
    callers = {"e2e": results["config"]["concurrency"], "onehop": results["config"]["concurrency"]}
    for ax, (level, label) in zip(axes, LEVELS, strict=True):
        series = {
            q: [_value(levels[level].get(w), f"{q}_ms") for w in names]
            for q in ("p50", "p95", "p99")
        }
        width = 0.27
        for i, (q, values) in enumerate(series.items()):
            ax.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=q)
        ax.set_xticks(range(len(names)), names)
        ax.set_yscale("log")
        ax.set_title(f"{label}, {callers.get(level, 1)} concurrent callers")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms, log scale)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"distdb {results['run_id']}: latency percentiles per workload")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rebalance_timeline(results: dict, path: Path) -> Path | None:
    r = results.get("workloads", {}).get("rebalance")
    if not r or r.get("skipped") or not r.get("timeseries"):
        return None
    ts = r["timeseries"]
    t = [b["t_s"] for b in ts]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=[2, 1])
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        top.plot(t, [_value(b, key) for b in ts], label=label, marker=".", linewidth=1)
    top.set_yscale("log")
    top.set_ylabel("latency (ms, log)")
    bottom.plot(t, [b["ops_per_s"] for b in ts], color="black", linewidth=1, label="ops/s")
    errors = [(b["t_s"], b["errors"]) for b in ts if b["errors"]]
    if errors:
        bottom.bar(
            [e[0] for e in errors], [e[1] for e in errors], width=0.3, color="red", label="errors"
        )
    bottom.set_ylabel("ops/s")
    bottom.set_xlabel("seconds since workload A started")
    window = r.get("window_s", {})
    spans = (
        ("command", "orange", "rebalance command"),
        ("run", "red", "the run (collect, plan, move)"),
    )
    for ax in (top, bottom):
        for span, color, label in spans:
            ax.axvspan(
                window.get(f"{span}_start", 0),
                window.get(f"{span}_end", 0),
                color=color,
                alpha=0.15,
                label=label if ax is top else None,
            )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    c = r.get("command", {})
    freeze = c.get("longest_freeze_ms")
    freeze_text = f"{freeze:.0f} ms" if isinstance(freeze, int | float) else "?"
    top.set_title(
        f"rebalance under workload A: {c.get('outcome')}, {c.get('rows_moved')} rows moved, "
        f"longest write freeze {freeze_text}, {r.get('errors')} failed requests"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
