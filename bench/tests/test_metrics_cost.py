"""The metrics-cost part's summary, target and report section (pure)."""

from __future__ import annotations

import argparse

from bench.metrics_cost import (
    metrics_cost_ratios,
    metrics_cost_section,
    metrics_cost_summary,
    metrics_cost_targets,
)

ARGS = argparse.Namespace(workload="c", rounds=2, slice=8.0, rows=10_000, concurrency=16)


def measured(on: float, off: float) -> dict:
    def one(mean: float, fastest: int) -> dict:
        slices = [(mean, 10.0, 30.0), (mean, 11.0, 31.0)]
        return {"mean_ops_per_s": mean, "rounds_fastest": fastest, "slices": slices}

    return {"on": one(on, 0), "off": one(off, 2)}


def test_a_cost_under_five_percent_meets_the_target_and_is_reported():
    mc = metrics_cost_summary(measured(970.0, 1000.0), "uvicorn", ARGS)
    assert (mc["ratio_on_off"], mc["cost_pct"]) == (0.97, 3.0)
    assert metrics_cost_ratios(mc) == {"metrics_on_vs_off": 0.97}
    assert metrics_cost_targets(mc)["metrics_cost"]["status"] == "met"
    text = "\n".join(metrics_cost_section(mc))
    assert "a cost of **3.0 %**" in text and "| off | 1,000 | 2 |" in text


def test_a_larger_cost_misses_and_a_failed_part_is_unknown():
    mc = metrics_cost_summary(measured(900.0, 1000.0), "uvicorn", ARGS)
    assert metrics_cost_targets(mc)["metrics_cost"]["status"] == "missed"
    failed = {"error": "RuntimeError('the cluster did not come up')"}
    assert metrics_cost_targets(failed)["metrics_cost"]["status"] == "unknown"
    assert metrics_cost_ratios(failed) == {}
    assert "Not measured" in "\n".join(metrics_cost_section(failed))
    assert metrics_cost_targets(None) == {} and metrics_cost_section(None) == []
