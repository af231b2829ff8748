"""The results file has the documented shape, and targets follow from the ratios."""

from __future__ import annotations

import json
import math
from collections import Counter

from bench.profiling import active, is_idle, package_of, read_collapsed
from bench.rebalance import rows_on_servers, rows_to_add, run_window
from bench.report import (
    clean,
    compute_ratios,
    compute_targets,
    render_markdown,
    shape_problems,
    write_results,
)
from distdb.keys import encode_key


def summary(ops: float, rows: float | None = None, **extra) -> dict:
    return {
        "ops_per_s": ops,
        "rows_per_s": ops if rows is None else rows,
        "p50_ms": 1.0,
        "p95_ms": 2.0,
        "p99_ms": 3.0,
        "errors": 0,
        **extra,
    }


WORKLOADS = {
    "load": summary(30, 3000),
    "c": summary(140),
    "batch_read": summary(80, 8000),
    "rebalance": {"skipped": True, "reason": "no command"},
}
ONEHOP = {"c": summary(200), "load": summary(40, 4000), "batch_read": summary(150, 15000)}
STORAGE = {"c": summary(4000), "load": summary(100, 10000), "batch_read": summary(900, 90000)}


def results() -> dict:
    ratios = compute_ratios(WORKLOADS, ONEHOP, STORAGE)
    return {
        "schema": 1,
        "run_id": "20260101-000000-quick",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "machine": {"cpus": 2, "python": "3.11.7"},
        "config": {
            "preset": "quick",
            "rows": 5000,
            "fields": 10,
            "field_bytes": 100,
            "concurrency": 8,
            "duration_s": 3.0,
            "warmup_s": 0.5,
        },
        "workloads": WORKLOADS,
        "baselines": {"onehop": ONEHOP, "storage": STORAGE},
        "ratios": ratios,
        "targets": compute_targets(ratios, WORKLOADS["rebalance"]),
    }


def test_ratios_compare_rows_for_load_and_batches_and_ops_otherwise():
    ratios = compute_ratios(WORKLOADS, ONEHOP, STORAGE)
    assert ratios["c_e2e_vs_onehop"] == 0.7
    assert ratios["batch_read_e2e_vs_storage"] == 8000 / 90000
    assert ratios["load_e2e_vs_storage"] == 0.3


def test_targets_are_met_or_missed_from_the_ratios_and_skipped_without_a_rebalance():
    targets = results()["targets"]
    assert targets["point_reads"]["status"] == "met"  # 0.7 >= 0.7
    assert targets["batched_reads"]["status"] == "missed"
    assert targets["bulk_load"]["status"] == "met"
    assert targets["rebalance_longest_freeze"]["status"] == "skipped"
    assert targets["rebalance_longest_freeze"]["reason"] == "no command"


def test_rebalance_targets_come_from_the_command_report_and_the_phases():
    rebalance = {
        "errors": 0,
        "moved_fraction": 0.5,
        "command": {"outcome": "succeeded", "longest_freeze_ms": 250.0},
        "phases": {"before": {"p99_ms": 10.0}, "during": {"p99_ms": 25.0}},
    }
    targets = compute_targets({}, rebalance)
    assert targets["rebalance_succeeded"]["status"] == "met"
    assert targets["rebalance_moved_share"]["status"] == "met"
    assert targets["rebalance_no_failed_requests"]["status"] == "met"
    assert targets["rebalance_longest_freeze"]["status"] == "missed"
    assert targets["rebalance_p99_during"]["value"] == 2.5
    assert targets["rebalance_p99_during"]["status"] == "met"


def test_results_json_has_the_documented_shape_and_is_strict_json(tmp_path):
    data = results()
    data["workloads"]["c"]["p99_ms"] = math.nan
    path = tmp_path / "run.json"
    write_results(data, path)
    loaded = json.loads(path.read_text(), parse_constant=lambda c: 1 / 0)  # NaN would raise
    assert shape_problems(loaded) == []
    assert loaded["workloads"]["c"]["p99_ms"] is None
    for field in ("ops_per_s", "p50_ms", "p99_ms", "errors"):
        assert field in loaded["workloads"]["load"]


def test_shape_problems_name_what_is_missing():
    data = results()
    del data["ratios"]
    data["workloads"]["a"] = {"ops_per_s": 1.0}
    problems = shape_problems(data)
    assert "missing ratios" in problems
    assert "workload a lacks p99_ms" in problems


def test_clean_turns_non_finite_numbers_into_null():
    assert clean({"a": [math.inf, 1.0], "b": (math.nan,)}) == {"a": [None, 1.0], "b": [None]}


def test_the_markdown_report_lists_every_workload_and_target():
    text = render_markdown(results(), {"throughput": "x/throughput.png"})
    for name in ("| load |", "| c |", "| batch_read |", "skipped: no command"):
        assert name in text
    assert "| point_reads |" in text and "**met**" in text
    assert "![throughput](throughput.png)" in text


def test_rows_on_servers_counts_the_loaded_keys_in_each_range():
    mid = encode_key("int", 600)
    tablets = [
        {"table": "t", "start": "", "end": mid, "server": "tablet-1"},
        {"table": "t", "start": mid, "end": None, "server": "tablet-2"},
        {"table": "other", "start": "", "end": None, "server": "tablet-2"},
    ]
    assert rows_on_servers(tablets, "t", 1000) == {"tablet-1": 600, "tablet-2": 400}


def test_rows_to_add_makes_the_last_server_hold_enough_to_move():
    # Balanced 2 servers: appending X rows must make (500 + X) - (1000 + X) / 2 >= 0.3 (1000 + X).
    x = rows_to_add({"a": 500, "b": 500}, "b", servers=2, fraction=0.3)
    assert (500 + x) - (1000 + x) / 2 >= 0.3 * (1000 + x)
    assert (500 + x - 1) - (1000 + x - 1) / 2 < 0.3 * (1000 + x - 1)
    # Everything already on one server: nothing to add.
    assert rows_to_add({"a": 1000}, "a", servers=2, fraction=0.3) == 0
    # One server, or a share no plan can move: impossible.
    assert rows_to_add({"a": 1000}, "a", servers=1, fraction=0.3) is None
    assert rows_to_add({"a": 1000}, "a", servers=2, fraction=0.5) is None


def test_profiles_leave_out_idle_waits_but_keep_waits_that_block_the_event_loop():
    collapsed = "\n".join(
        [
            "run (t.py:1);_worker (concurrent/futures/thread.py:81) 50",
            "run_forever (asyncio/base_events.py:607);EpollSelector.select (selectors.py:468) 30",
            "_run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80);"
            "Thread.start (threading.py:969);Condition.wait (threading.py:327) 7",
            "Handle._run (asyncio/events.py:80);rows_read (client_app/services/rows.py:40) 3",
            " 9",
        ]
    )
    stacks = read_collapsed(collapsed)
    assert sum(stacks.values()) == 90
    kept = active(stacks)
    assert sum(kept.values()) == 10
    assert is_idle(("_worker (concurrent/futures/thread.py:81)",))
    assert package_of("client_app/services/rows.py") == "client_app"
    assert package_of("manage.py") == "manage"
    assert Counter({k[-1]: v for k, v in kept.items()}) == Counter(
        {"Condition.wait (threading.py:327)": 7, "rows_read (client_app/services/rows.py:40)": 3}
    )


def test_the_rebalance_window_is_the_run_not_the_command_start_up():
    wall = 1_000.0
    report = {
        "started_at": "1970-01-01T00:16:48+00:00",  # 1008 s: 8 s after the workload began
        "finished_at": "1970-01-01T00:16:50+00:00",
        "duration_s": 2.0,
    }
    assert run_window(report, wall, 5.0, 11.0) == (8.0, 10.0)
    assert run_window({"duration_s": 2.0}, wall, 5.0, 11.0) == (9.0, 11.0)
    assert run_window({}, wall, 5.0, 11.0) == (5.0, 11.0)


def test_a_failed_rebalance_proves_nothing_about_freezes_or_slowdowns():
    rebalance = {
        "errors": 0,
        "moved_fraction": 0.0,
        "command": {"outcome": "failed", "longest_freeze_ms": 0},
        "phases": {"before": {"p99_ms": 10.0}, "during": {"p99_ms": 10.0}},
    }
    targets = compute_targets({}, rebalance)
    assert targets["rebalance_succeeded"]["status"] == "missed"
    assert targets["rebalance_longest_freeze"]["status"] == "unknown"
    assert targets["rebalance_p99_during"]["status"] == "unknown"
    assert targets["rebalance_no_failed_requests"]["status"] == "met"
