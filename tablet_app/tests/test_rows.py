"""The data plane services: mutate, read and scan rows of owned ranges."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from django.db import connection

from distdb import protocol
from distdb.errors import RangeFrozen
from distdb.protocol import Mutation
from tablet_app.models import ChangeLogEntry, Row
from tablet_app.services import (
    freezes,
    freezes_resolve,
    range_unfreeze,
    rows_mutate,
    rows_read,
    rows_scan,
)
from tablet_app.services import rows as rows_module
from tablet_app.services.control import range_drop, rows_ingest
from tablet_app.tests.conftest import freeze, tablet


def m(op: str, key: str, cells: dict | None = None, columns: list[str] | None = None):
    return Mutation(op=op, key=key, cells=cells, columns=columns)


def statuses(result) -> list[str]:
    return [r["status"] for r in result.results]


def stored(table: str, key: str) -> dict | None:
    row = Row.objects.filter(table=table, key=key).first()
    return orjson.loads(row.cells) if row else None


def run_threads(target, n: int) -> list[BaseException]:
    """Run ``target(i)`` in n threads at once; each closes its own DB connection."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # reported to the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


# --- concurrency ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_sets_of_distinct_columns_on_one_row_lose_no_update(owned):
    rows_mutate("t", [m("insert", "row", {})])

    def writer(i: int) -> None:
        for j in range(25):
            result = rows_mutate("t", [m("set", "row", {f"c{i}_{j}": j})])
            assert statuses(result) == ["updated"]

    assert run_threads(writer, 4) == []
    cells = stored("t", "row")
    assert len(cells) == 100
    assert cells == {f"c{i}_{j}": j for i in range(4) for j in range(25)}
    last = ChangeLogEntry.objects.filter(table="t", key="row").order_by("-seq").first()
    assert orjson.loads(last.cells) == cells
    assert ChangeLogEntry.objects.filter(table="t", key="row").count() == 101


@pytest.mark.django_db(transaction=True)
def test_concurrent_upserts_of_new_keys_create_each_row_exactly_once(owned):
    created: list[int] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        for first in range(10):  # every round races the other threads on new keys
            batch = [m("upsert", f"k{k:02d}", {"by": i}) for k in range(first, 10)]
            result = rows_mutate("t", batch)
            assert set(statuses(result)) <= {"created", "updated"}
            with lock:
                created.append(statuses(result).count("created"))

    assert run_threads(writer, 4) == []
    assert sum(created) == 10
    assert Row.objects.filter(table="t").count() == 10


@pytest.mark.django_db(transaction=True)
def test_a_freeze_waits_for_a_write_in_flight_to_commit(owned):
    """The write's ownership check and its commit cannot straddle a freeze.

    While the writer's transaction is open (ownership checked, row not yet written), the
    freezer tries once without waiting for locks: that attempt must be refused. Only then
    does the writer go on and commit, while the freezer tries again, waiting this time.
    """
    from django.db import OperationalError, transaction

    from tablet_app.services.ownership import spans_for_write

    order: list[str] = []
    checked = threading.Event()  # the writer holds its ownership check
    refused = threading.Event()  # the freezer's lock-free attempt is over
    first_attempt: list[BaseException | None] = []

    def writer_then_freezer(i: int) -> None:
        if i == 0:
            with transaction.atomic():
                assert spans_for_write("t").find("a") is not None  # checked: owned, not frozen
                checked.set()
                assert refused.wait(60), "the freezer never tried"
                Row.objects.create(table="t", key="a", cells="{}")
                order.append("write committed")  # (committed as the block exits)
        else:
            assert checked.wait(60), "the writer never checked"
            try:
                _fail_instead_of_waiting_for_locks()
                freeze("t", "", None)
                first_attempt.append(None)
            except OperationalError as exc:  # "database is locked" / lock_timeout
                first_attempt.append(exc)
            finally:
                refused.set()
            connection.close()  # a fresh connection waits for locks as configured again
            freeze("t", "", None)
            order.append("freeze committed")

    assert run_threads(writer_then_freezer, 2) == []
    assert isinstance(first_attempt[0], OperationalError), "a freeze got past a write in flight"
    assert order == ["write committed", "freeze committed"]


def _fail_instead_of_waiting_for_locks() -> None:
    """Make this thread's connection fail at once where it would wait for a lock."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA busy_timeout = 0")  # BEGIN IMMEDIATE: "database is locked"
        else:
            cursor.execute("SET lock_timeout = '1ms'")  # 0 would mean "wait forever"


# --- mutations ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_insert_creates_a_row_and_refuses_an_existing_one(owned):
    assert statuses(rows_mutate("t", [m("insert", "a", {"x": 1})])) == ["created"]
    result = rows_mutate("t", [m("insert", "a", {"x": 2})])
    assert statuses(result) == ["error"]
    assert result.results[0]["error"]["code"] == "row_exists"
    assert stored("t", "a") == {"x": 1}


@pytest.mark.django_db
def test_upsert_creates_then_replaces_the_cells_whole(owned):
    assert statuses(rows_mutate("t", [m("upsert", "a", {"x": 1, "y": 2})])) == ["created"]
    assert statuses(rows_mutate("t", [m("upsert", "a", {"z": 3})])) == ["updated"]
    assert stored("t", "a") == {"z": 3}


@pytest.mark.django_db
def test_set_merges_cells_and_needs_an_existing_row(owned):
    rows_mutate("t", [m("insert", "a", {"x": 1, "y": 2})])
    assert statuses(rows_mutate("t", [m("set", "a", {"y": 20, "z": [1, 2]})])) == ["updated"]
    assert stored("t", "a") == {"x": 1, "y": 20, "z": [1, 2]}
    result = rows_mutate("t", [m("set", "missing", {"x": 1})])
    assert result.results[0]["error"]["code"] == "row_not_found"
    assert stored("t", "missing") is None


@pytest.mark.django_db
def test_delete_cells_removes_columns_or_reports_unchanged(owned):
    rows_mutate("t", [m("insert", "a", {"x": 1, "y": 2, "z": 3})])
    assert statuses(rows_mutate("t", [m("delete_cells", "a", columns=["x", "nope"])])) == [
        "updated"
    ]
    assert stored("t", "a") == {"y": 2, "z": 3}
    before = ChangeLogEntry.objects.count()
    assert statuses(rows_mutate("t", [m("delete_cells", "a", columns=["nope"])])) == ["unchanged"]
    assert ChangeLogEntry.objects.count() == before
    result = rows_mutate("t", [m("delete_cells", "missing", columns=["x"])])
    assert result.results[0]["error"]["code"] == "row_not_found"


@pytest.mark.django_db
def test_delete_cells_naming_a_column_twice_deletes_it_once(owned):
    # Found by the API fuzz test: the second deletion of "y" raised KeyError (a 500).
    rows_mutate("t", [m("insert", "a", {"x": 1, "y": 2})])
    result = rows_mutate("t", [m("delete_cells", "a", columns=["y", "y", "nope", "y"])])
    assert statuses(result) == ["updated"]
    assert stored("t", "a") == {"x": 1}


@pytest.mark.django_db
def test_delete_row_deletes_or_reports_row_not_found(owned):
    rows_mutate("t", [m("insert", "a", {"x": 1})])
    assert statuses(rows_mutate("t", [m("delete_row", "a")])) == ["deleted"]
    assert stored("t", "a") is None
    result = rows_mutate("t", [m("delete_row", "a")])
    assert result.results[0]["error"]["code"] == "row_not_found"


@pytest.mark.django_db
def test_a_mutation_missing_its_fields_fails_alone_with_validation_failed(owned):
    result = rows_mutate(
        "t",
        [m("insert", "a"), m("delete_cells", "b"), m("upsert", "c", {"ok": True})],
    )
    assert statuses(result) == ["error", "error", "created"]
    assert [r["error"]["code"] for r in result.results[:2]] == ["validation_failed"] * 2
    assert stored("t", "a") is None
    assert stored("t", "c") == {"ok": True}


@pytest.mark.django_db
def test_mutations_of_one_key_in_a_batch_apply_in_order_and_log_the_final_image(owned):
    result = rows_mutate(
        "t",
        [
            m("insert", "a", {"x": 1}),
            m("set", "a", {"y": 2}),
            m("delete_cells", "a", columns=["x"]),
            m("insert", "a", {"no": 1}),
        ],
    )
    assert statuses(result) == ["created", "updated", "updated", "error"]
    assert stored("t", "a") == {"y": 2}
    entries = list(ChangeLogEntry.objects.filter(key="a").values_list("op", "cells"))
    assert entries == [("put", '{"y":2}')]


@pytest.mark.django_db
def test_results_come_in_request_order_across_outcomes(owned):
    rows_mutate("u", [m("insert", "p", {})])
    result = rows_mutate(
        "u",
        [
            m("upsert", "q", {"n": 1}),  # owned: [m, +inf)
            m("upsert", "b", {"n": 2}),  # tablet-2's
            m("insert", "p", {}),  # exists
            m("delete_row", "p"),
        ],
    )
    assert [r["key"] for r in result.results] == ["q", "b", "p", "p"]
    assert statuses(result) == ["created", "outdated", "error", "deleted"]


@pytest.mark.django_db
def test_writes_to_keys_not_owned_are_outdated_with_the_current_metadata(owned):
    result = rows_mutate("u", [m("upsert", "b", {"n": 1})])
    assert statuses(result) == ["outdated"]
    assert result.metadata["version"] == 3
    assert result.metadata["type"] == "metadata"
    assert stored("u", "b") is None
    unknown_table = rows_mutate("nope", [m("upsert", "b", {"n": 1})])
    assert statuses(unknown_table) == ["outdated"]


@pytest.mark.django_db
def test_a_frozen_range_refuses_writes_retryably(owned):
    rows_mutate("t", [m("insert", "a", {"x": 1}), m("insert", "z", {"x": 1})])
    freeze("t", "", "m")
    result = rows_mutate("t", [m("set", "a", {"x": 2}), m("set", "z", {"x": 2})])
    assert statuses(result) == ["error", "updated"]  # [m, +inf) is not frozen
    assert result.results[0]["error"] == {
        "code": "range_frozen",
        "message": "the key range is being moved; retry shortly",
        "retryable": True,
    }
    assert stored("t", "a") == {"x": 1}


@pytest.mark.django_db
def test_a_frozen_range_refuses_reads_and_scans_too(owned):
    """The new owner may serve the range from the commit on: this copy must be silent."""
    rows_mutate("t", [m("insert", "a", {"x": 1}), m("insert", "z", {"x": 1})])
    freeze("t", "", "m")
    with pytest.raises(RangeFrozen):
        rows_read("t", ["z", "a"])
    with pytest.raises(RangeFrozen):
        rows_scan("t", "", None, 10)
    with pytest.raises(RangeFrozen):
        rows_scan("t", "b", "c", 10)
    assert rows_read("t", ["z"]).rows == [("z", '{"x":1}')]  # [m, +inf) still serves
    assert rows_scan("t", "m", None, 10).rows == [("z", '{"x":1}')]


@pytest.mark.django_db
def test_a_scan_across_ranges_split_by_a_lifted_freeze_is_served(owned):
    rows_mutate("t", [m("insert", "a", {"x": 1}), m("insert", "z", {"x": 1})])
    freeze("t", "g", "p")
    range_unfreeze("t", "g", "p")
    assert [k for k, _ in rows_scan("t", "", None, 10).rows] == ["a", "z"]


@pytest.mark.django_db
def test_an_ended_freeze_still_blocks_writes_until_the_master_is_asked(owned):
    rows_mutate("t", [m("insert", "a", {"x": 1})])
    freeze("t", "", None, ends_in_s=-1)
    assert statuses(rows_mutate("t", [m("set", "a", {"x": 2})])) == ["error"]
    freezes_resolve(owned, "test", freezes.clock())
    assert statuses(rows_mutate("t", [m("set", "a", {"x": 2})])) == ["updated"]


@pytest.mark.django_db
def test_every_change_logs_the_rows_full_image_in_its_transaction(owned):
    rows_mutate("t", [m("insert", "a", {"x": 1})])
    rows_mutate("t", [m("set", "a", {"y": 2})])
    rows_mutate("t", [m("delete_row", "a")])
    entries = list(
        ChangeLogEntry.objects.order_by("seq").values_list("table", "key", "op", "cells")
    )
    assert entries == [
        ("t", "a", "put", '{"x":1}'),
        ("t", "a", "put", '{"x":1,"y":2}'),
        ("t", "a", "delete", None),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_write_whose_change_log_entry_fails_leaves_neither_row_nor_entry(owned, monkeypatch):
    rows_mutate("t", [m("insert", "kept", {"x": 1})])

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rows_module, "changes_append", broken)
    with pytest.raises(RuntimeError):
        rows_mutate("t", [m("insert", "a", {"x": 1}), m("set", "kept", {"x": 2})])
    assert stored("t", "a") is None
    assert stored("t", "kept") == {"x": 1}
    assert ChangeLogEntry.objects.count() == 1


@pytest.mark.django_db
def test_a_large_batch_uses_a_bounded_number_of_queries(owned, django_assert_max_num_queries):
    rows_mutate("t", [m("insert", f"k{i:05d}", {"i": i}) for i in range(0, 3000, 2)])
    batch = [m("upsert", f"k{i:05d}", {"i": -i}) for i in range(3000)]
    with django_assert_max_num_queries(15):
        result = rows_mutate("t", batch)
    assert statuses(result).count("created") == 1500
    assert statuses(result).count("updated") == 1500
    assert Row.objects.filter(table="t").count() == 3000
    assert stored("t", "k02999") == {"i": -2999}


# --- reads and scans ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_read_returns_rows_in_request_order_and_leaves_unknown_keys_out(owned):
    rows_mutate("t", [m("insert", k, {"k": k}) for k in ("a", "b", "c")])
    result = rows_read("t", ["c", "nope", "a", "b", "a"])
    assert [k for k, _ in result.rows] == ["c", "a", "b", "a"]
    assert orjson.loads(result.rows[0][1]) == {"k": "c"}
    assert result.outdated == []
    assert result.metadata is None


@pytest.mark.django_db
def test_read_reports_keys_outside_owned_ranges_as_outdated_with_metadata(owned):
    rows_mutate("u", [m("insert", "x", {})])
    result = rows_read("u", ["x", "b", "c", "b"])
    assert [k for k, _ in result.rows] == ["x"]
    assert result.outdated == ["b", "c"]
    assert result.metadata["version"] == 3
    assert len(result.metadata["tablets"]) == 3


@pytest.mark.django_db
def test_read_of_many_keys_uses_one_query_per_500(owned, django_assert_max_num_queries):
    rows_mutate("t", [m("insert", f"k{i:05d}", {"i": i}) for i in range(1200)])
    keys = [f"k{i:05d}" for i in reversed(range(1300))]
    with django_assert_max_num_queries(5):
        result = rows_read("t", keys)
    assert [k for k, _ in result.rows] == [f"k{i:05d}" for i in reversed(range(1200))]


@pytest.mark.django_db
def test_a_read_of_owned_keys_is_one_statement(owned, django_assert_num_queries):
    rows_mutate("t", [m("insert", k, {"k": k}) for k in ("a", "b")])
    with django_assert_num_queries(1):
        result = rows_read("t", ["b", "nope", "a"])
    assert [k for k, _ in result.rows] == ["b", "a"]


READS = [
    ("t", ["c", "nope", "a", "b", "a"]),  # order, a missing key, a key twice
    ("t", ["nope"]),
    ("u", ["x", "b", "c", "b"]),  # partly owned: outdated keys with the metadata
    ("u", ["b"]),  # not owned at all
    ("t", [f"k{i:03d}" for i in range(40)] + ["a"]),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("table", "keys"), READS)
def test_the_one_statement_read_answers_as_the_three_statement_read(
    owned, monkeypatch, table, keys
):
    rows_mutate("t", [m("insert", k, {"k": k, "s": "中" * 50}) for k in ("a", "b", "c")])
    rows_mutate("t", [m("insert", f"k{i:03d}", {}) for i in range(0, 40, 3)])
    rows_mutate("u", [m("insert", "x", {"q": 'a "quoted" \\ text'})])
    one = rows_read(table, keys)
    monkeypatch.setattr(rows_module, "_snapshot", lambda table, keys: None)
    assert rows_read(table, keys) == one


@pytest.mark.django_db
def test_the_one_statement_read_refuses_a_frozen_range_as_the_other(owned, monkeypatch):
    rows_mutate("t", [m("insert", "a", {})])
    freeze("t", "", "b")
    with pytest.raises(RangeFrozen):
        rows_read("t", ["c", "a"])
    monkeypatch.setattr(rows_module, "_snapshot", lambda table, keys: None)
    with pytest.raises(RangeFrozen):
        rows_read("t", ["c", "a"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("key_count", [3, 600])  # one statement; three (more than CHUNK)
def test_a_read_never_answers_for_a_range_given_away_and_dropped_meanwhile(assign, key_count):
    """A move's steps as the link applies them, in a loop: give the range away, drop its
    rows, copy them back in, own the range again. Whenever the range is owned every row
    is there, so a read must answer either every row or every key ``outdated``."""
    keys = [f"k{i:04d}" for i in range(key_count)]
    copied = [protocol.Row(key=k, cells={"k": k}) for k in keys]
    assign(tablet("t"), version=1)
    rows_ingest("t", copied, log_changes=False)
    stop = threading.Event()
    answers: list[tuple[int, int]] = []  # (rows, outdated) per read

    def mover() -> None:
        version = 1
        try:
            while not stop.is_set():
                assign(tablet("t", server="tablet-2"), version=version + 1)
                range_drop("t", "", None)
                rows_ingest("t", copied, log_changes=False)
                assign(tablet("t"), version=version + 2)
                version += 2
                time.sleep(0.005)  # owned for a moment: reads see both states
        finally:
            connection.close()

    def reader(i: int) -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                result = rows_read("t", keys)
            except RangeFrozen:  # ownership changed during every attempt: retryable
                continue
            answers.append((len(result.rows), len(result.outdated)))

    moving = threading.Thread(target=mover)
    moving.start()
    try:
        errors = run_threads(reader, 2)
    finally:
        stop.set()
        moving.join(timeout=60)
    assert errors == []
    assert answers, "no read finished"
    wrong = [a for a in answers if a not in ((key_count, 0), (0, key_count))]
    assert wrong == [], f"{len(wrong)} of {len(answers)} reads answered part of the range"
    assert {a for a in answers} == {(key_count, 0), (0, key_count)}  # both states were seen


@pytest.mark.django_db
def test_scan_returns_rows_in_key_order_within_bounds_and_limit(owned):
    rows_mutate("t", [m("insert", k, {"k": k}) for k in ("d", "a", "c", "b", "e")])
    assert [k for k, _ in rows_scan("t", "b", "e", 10).rows] == ["b", "c", "d"]
    assert [k for k, _ in rows_scan("t", "", None, 2).rows] == ["a", "b"]
    assert rows_scan("t", "c", "c", 10).rows == []


@pytest.mark.django_db
def test_scan_is_outdated_unless_one_owned_range_covers_it(owned):
    rows_mutate("u", [m("insert", k, {}) for k in ("m", "n")])
    inside = rows_scan("u", "m", None, 10)
    assert (inside.outdated, [k for k, _ in inside.rows]) == (False, ["m", "n"])
    crossing = rows_scan("u", "a", None, 10)
    assert crossing.outdated is True
    assert crossing.rows == []
    assert crossing.metadata["version"] == 3
    assert rows_scan("nope", "", None, 10).outdated is True
