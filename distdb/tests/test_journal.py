"""The forensic journal: off by default, one JSON line per event when on, never raising."""

from __future__ import annotations

import os

import orjson
import pytest

from distdb import journal as journal_module
from distdb.journal import journal


@pytest.fixture
def journal_dir(settings, tmp_path, monkeypatch):
    settings.DISTDB_DATA_DIR = tmp_path
    monkeypatch.setattr(journal_module, "_fd", None)  # a descriptor per test directory
    yield tmp_path / "journal" / f"{settings.DISTDB_NODE_ID}.jsonl"
    if journal_module._fd is not None:
        os.close(journal_module._fd)
    monkeypatch.setattr(journal_module, "_fd", None)


def test_off_by_default_writes_nothing(settings, journal_dir):
    settings.DISTDB_JOURNAL = False
    journal("write", table="t", keys=["a"])
    assert not journal_dir.exists()


def test_on_appends_one_line_per_event_private_to_the_user(settings, journal_dir):
    settings.DISTDB_JOURNAL = True
    journal("write", table="t", seqs=[1, 2], keys=[("a", "put")])
    journal("drop", table="t", start="", end=None, keys=["a"])
    lines = [orjson.loads(x) for x in journal_dir.read_bytes().splitlines()]
    assert [x["ev"] for x in lines] == ["write", "drop"]
    assert lines[0]["keys"] == [["a", "put"]] and lines[1]["end"] is None
    assert lines[0]["node"] == settings.DISTDB_NODE_ID and lines[0]["t"] > 0
    assert journal_dir.stat().st_mode & 0o777 == 0o600


def test_an_unwritable_journal_never_fails_the_operation(settings, journal_dir, monkeypatch):
    settings.DISTDB_JOURNAL = True

    def broken() -> int:
        raise OSError("disk full")

    monkeypatch.setattr(journal_module, "_descriptor", broken)
    journal("write", table="t")  # no exception
