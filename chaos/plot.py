"""The latency-over-time plot of a run, with the faults marked (matplotlib, Agg, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {
    "kill": "tab:red",
    "pause": "tab:orange",
    "db_lock": "tab:purple",
    "move": "tab:green",
    "rebalance": "tab:olive",
    "partition": "tab:gray",
    "clock": "tab:cyan",
    "disk": "tab:brown",
}


def latency_plot(
    latencies: list[tuple[float, float, str, bool]], faults: list[dict[str, Any]], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, lanes) = plt.subplots(
        2, 1, figsize=(14, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for ok, colour, label in ((True, "tab:blue", "succeeded"), (False, "tab:red", "failed")):
        pts = [(t, lat * 1000) for t, lat, _kind, good in latencies if good is ok]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=2, c=colour, alpha=0.5, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper right")
    ax.set_title("requests through both client servers; faults below")
    targets = sorted({f["target"] for f in faults})
    for f in faults:
        end = f["end"] if f["end"] is not None else f["start"] + 1
        y = targets.index(f["target"])
        lanes.broken_barh(
            [(f["start"], max(end - f["start"], 0.2))], (y - 0.4, 0.8),
            color=COLOURS.get(f["kind"], "grey"),
        )  # fmt: skip
    lanes.set_yticks(range(len(targets)), targets, fontsize=7)
    lanes.set_xlabel("seconds since start")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    lanes.legend(handles, list(COLOURS), loc="upper right", fontsize=7, ncol=len(COLOURS))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
