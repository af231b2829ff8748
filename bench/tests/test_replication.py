"""The replication part's pure logic: the failover window from acknowledgements, the
re-replication rate, the rf=2 / rf=1 ratios and targets, and the report's section."""

from __future__ import annotations

import datetime as dt

from bench.replication import (
    ack_times,
    longest_gap,
    per_second,
    recovery_after,
    repair_copies,
    replicated,
    round_orders,
    rows_in_tablet,
)
from bench.replication_report import (
    replication_ratios,
    replication_section,
    replication_targets,
)
from bench.stats import Sample
from distdb.keys import encode_key


def ok(start: float, latency: float) -> Sample:
    return Sample("insert", start, latency, 1, None)


def failed(start: float, latency: float) -> Sample:
    return Sample("insert", start, latency, 0, "http_503:tablet_unavailable")


def test_rounds_alternate_the_order_so_drift_hits_both_tables_alike():
    assert round_orders(3) == [(1, 2), (2, 1), (1, 2)]


def test_ack_times_are_the_ends_of_the_successful_writes_only_sorted():
    samples = [ok(1.0, 0.5), failed(0.2, 0.1), ok(0.0, 0.1)]
    assert ack_times(samples) == [0.1, 1.5]


def test_the_longest_gap_is_found_between_acknowledgements():
    gap, began = longest_gap([0.1, 0.2, 3.2, 3.3], 0.0, 3.5)
    assert round(gap, 6) == 3.0
    assert began == 0.2


def test_writers_that_never_acknowledge_again_show_as_a_gap_to_the_window_end():
    gap, began = longest_gap([0.1, 0.2], 0.0, 10.0)
    assert gap == 9.8 and began == 0.2


def test_no_acknowledgement_at_all_is_a_gap_as_long_as_the_window():
    assert longest_gap([], 0.0, 4.0) == (4.0, 0.0)


def test_recovery_ignores_writes_sent_before_the_kill_even_when_acked_after_it():
    samples = [ok(4.9, 0.2), failed(5.1, 1.0), ok(6.2, 0.3), ok(5.5, 2.5)]
    # killed at 5.0: the write sent at 4.9 (acked at 5.1) was the old leader's
    assert recovery_after(samples, 5.0) == 6.5 - 5.0


def test_recovery_is_none_when_no_write_sent_after_the_kill_succeeded():
    assert recovery_after([ok(1.0, 0.1), failed(6.0, 0.1)], 5.0) is None


def test_rows_in_a_tablet_count_the_keys_of_its_range():
    whole = {"start": "", "end": None}
    assert rows_in_tablet(whole, 1000) == 1000
    upper = {"start": encode_key("int", 600), "end": None}
    assert rows_in_tablet(upper, 1000) == 400
    lower = {"start": "", "end": encode_key("int", 600)}
    assert rows_in_tablet(lower, 100) == 100


def test_a_rate_needs_a_positive_duration():
    assert per_second(1000, 2.0) == 500
    assert per_second(1000, 0.0) is None
    assert per_second(None, 2.0) is None


def test_repair_copies_are_read_from_the_workers_task_results_after_the_kill():
    log = (
        "[2026-01-01 00:00:01,000: INFO/ForkPoolWorker-1] Task distdb.repair_replicas[ab-12] "
        "succeeded in 0.01s: {'added': [], 'failed': []}\n"
        "[2026-01-01 00:00:02,000: INFO/ForkPoolWorker-2] Task distdb.repair_replicas[ef-56] "
        "succeeded in 0.01s: {'outcome': 'already_running'}\n"
        "[2026-01-01 00:00:05,250: INFO/ForkPoolWorker-1] Task distdb.repair_replicas[cd-34] "
        "succeeded in 2.5s: {'added': [{'move': {...}, 'error': '', 'duration_s': 2.4}], "
        "'failed': [{'move': {...}, 'error': 'x', 'duration_s': 9.0}]}\n"
    )
    at = dt.datetime(2026, 1, 1, 0, 0, 5, 250_000).timestamp()
    assert repair_copies(log, at - 0.1) == [{"at": at, "ranges": 1, "duration_s": 2.4}]
    assert repair_copies(log, at + 0.1) == []


def summary(ops: float, rows: float, p99: float) -> dict:
    return {"ops_per_s": float(ops), "rows_per_s": float(rows), "p99_ms": float(p99), "errors": 0}


def replication(**extra) -> dict:
    return {
        "skipped": False,
        "comparison": {
            "workloads": {
                "load": {"rf1": summary(50, 5000, 100), "rf2": summary(35, 3500, 150)},
                "a": {"rf1": summary(400, 400, 50), "rf2": summary(200, 200, 120)},
            },
            "in_sync_lost": [],
        },
        "failover": {
            "skipped": False,
            "writers": 4,
            "leader": "tablet-1",
            "new_leader": "tablet-2",
            "longest_gap_s": 4.8,
            "recovery_s": 4.9,
            "promoted_s": 4.6,
            "rf_restored_s": 9.0,
            "rereplication": {"rows": 22000, "seconds": 4.4, "rows_per_s": 5000.0},
            "master_failovers": [{"unavailable_s": 4.1}],
        },
        **extra,
    }


def test_ratios_compare_load_in_rows_and_workload_a_in_operations():
    ratios = replication_ratios(replication())
    assert ratios["load_rf2_vs_rf1"] == 0.7
    assert ratios["a_rf2_vs_rf1"] == 0.5
    assert ratios["a_p99_rf2_vs_rf1"] == 2.4


def test_targets_follow_the_issues_goals():
    rep = replication()
    targets = replication_targets(replication_ratios(rep), rep)
    assert targets["replication_load_throughput"]["status"] == "met"  # 0.7 >= 0.6
    assert targets["replication_load_p99"]["status"] == "met"  # 1.5 <= 2
    assert targets["replication_a_throughput"]["status"] == "missed"  # 0.5
    assert targets["replication_a_p99"]["status"] == "missed"  # 2.4


def test_a_comparison_whose_in_sync_set_shrank_proves_nothing():
    rep = replication()
    rep["comparison"]["in_sync_lost"] = ["round 1 a"]
    targets = replication_targets(replication_ratios(rep), rep)
    assert targets["replication_load_throughput"]["status"] == "unknown"
    assert "round 1 a" in targets["replication_load_throughput"]["reason"]


def test_a_part_that_did_not_run_is_skipped_with_its_reason():
    assert replication_ratios(None) == {}
    targets = replication_targets({}, {"skipped": True, "reason": "no cluster"})
    assert targets == {"replication": {"value": None, "status": "skipped", "reason": "no cluster"}}


def test_the_section_shows_the_ratios_and_the_failover_window():
    text = "\n".join(replication_section(replication()))
    assert "| load | 50 · 5,000 · 100.0 | 35 · 3,500 · 150.0 | 0.70 | 1.50 |" in text
    assert "| longest gap between acknowledged writes | 4.80 s |" in text
    assert "**5,000 rows/s**" in text
    assert "4.10 s" in text  # the master's Failover.unavailable_s


def test_a_table_is_replicated_only_when_every_tablet_has_an_in_sync_follower():
    follower = [{"server": "tablet-2", "url": "http://x"}]
    meta = {
        "tablets": [
            {"table": "t", "start": "", "in_sync": follower},
            {"table": "t", "start": "m", "in_sync": []},
            {"table": "u", "start": "", "in_sync": []},
        ]
    }
    assert not replicated(meta, "t")
    meta["tablets"][1]["in_sync"] = follower
    assert replicated(meta, "t")
