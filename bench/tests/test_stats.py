"""Percentiles, summaries and time series are computed the way the report says."""

from __future__ import annotations

import math

import pytest

from bench.stats import Recorder, percentile, ratio, summarize, summarize_by_op, timeseries
from bench.workloads import KeySpace, Mix


def test_percentile_interpolates_linearly_like_numpy():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50.5
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0


def test_percentile_of_nothing_is_nan_not_zero():
    assert math.isnan(percentile([], 50))


def test_percentile_rejects_a_q_outside_0_to_100():
    with pytest.raises(ValueError):
        percentile([1, 2], 101)


def _recorder() -> Recorder:
    rec = Recorder(origin=100.0)
    for i in range(10):  # 10 reads of 1..10 ms, one per 0.1 s
        rec.record("read", 100.0 + i * 0.1, (i + 1) / 1000, 1, None)
    rec.record("update", 100.5, 0.050, 0, "http_503:range_frozen")
    return rec


def test_summary_counts_throughput_latency_and_errors():
    s = summarize(_recorder().samples, duration_s=2.0)
    assert s["ops"] == 11 and s["ops_per_s"] == 5.5
    assert s["rows"] == 10 and s["rows_per_s"] == 5.0  # failed operations move no rows
    assert s["errors"] == 1 and s["error_kinds"] == {"http_503:range_frozen": 1}
    assert s["max_ms"] == pytest.approx(50.0)
    assert s["p50_ms"] == pytest.approx(6.0)


def test_summary_by_op_splits_reads_from_updates():
    by_op = summarize_by_op(_recorder().samples, duration_s=2.0)
    assert set(by_op) == {"read", "update"}
    assert by_op["read"]["errors"] == 0 and by_op["update"]["errors"] == 1


def test_recorder_selects_samples_by_start_time():
    rec = _recorder()
    assert [s.op for s in rec.between(0.45, 0.55)] == ["read", "update"]


def test_timeseries_keeps_empty_buckets_so_stalls_show():
    series = timeseries(_recorder().samples, bucket_s=0.5, t0=0.0, t1=2.0)
    assert [b["t_s"] for b in series] == [0.0, 0.5, 1.0, 1.5]
    assert [b["ops_per_s"] for b in series] == [10.0, 12.0, 0.0, 0.0]
    assert series[1]["errors"] == 1
    assert math.isnan(series[2]["p99_ms"])


def test_ratio_is_none_when_it_cannot_be_computed():
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(math.nan, 1.0) is None


def test_a_mix_picks_operations_in_proportion():
    mix = Mix(read=0.95, update=0.05)
    assert mix.pick(0.0) == "read" and mix.pick(0.949) == "read"
    assert mix.pick(0.951) == "update" and mix.pick(0.9999) == "update"
    assert Mix(scan=0.95, insert=0.05).pick(1.0) == "insert"  # never an operation not in the mix


def test_key_space_hands_out_new_keys_and_never_offers_one_whose_insert_failed():
    keys = KeySpace()
    assert keys.take(3) == [0, 1, 2]
    keys.forget([1])
    draws = iter([1, 1, 2])
    assert keys.present(lambda: next(draws)) == 2
    assert keys.next_key == 3
