"""chaos.trace: one key's story merged from every node's journal."""

from __future__ import annotations

import orjson

from chaos.trace import events, story

KEY = "0000000000000000042"


def _write(run, node, lines):
    folder = run / "cluster" / "journal"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{node}.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))


def test_the_story_of_a_key_in_time_order(tmp_path):
    _write(tmp_path, "master", [
        {"t": 1.0, "node": "master", "ev": "commit", "version": 3, "reason": "move",
         "table": "t", "tablets": [["", None, "tablet-1", ["tablet-2"]]]},
        {"t": 1.5, "node": "master", "ev": "commit", "version": 4, "reason": "other table",
         "table": "u", "tablets": [["", None, "tablet-2", []]]},
    ])  # fmt: skip
    _write(tmp_path, "tablet-1", [
        {"t": 2.0, "node": "tablet-1", "ev": "write", "table": "t", "seqs": [7, 8],
         "keys": [[KEY, "put"], ["0000000000000000043", "put"]]},
        {"t": 2.2, "node": "tablet-1", "ev": "ack", "table": "t", "seqs": [7, 8], "why": None},
        {"t": 2.3, "node": "tablet-1", "ev": "write", "table": "t", "seqs": [9, 9],
         "keys": [["0000000000000000099", "put"]]},
    ])  # fmt: skip
    _write(tmp_path, "tablet-2", [
        {"t": 2.1, "node": "tablet-2", "ev": "replicate", "leader": "tablet-1", "version": 3,
         "mine": 3, "applied": [["t", "", None, [[7, KEY, "put"]]],
                                ["u", "", None, [[8, "", "clear"]]]],
         "skipped": [], "refused": []},
        {"t": 3.0, "node": "tablet-2", "ev": "clear", "table": "t", "seq": 12, "start": "",
         "end": None, "keys": [KEY]},
    ])  # fmt: skip
    lines = list(story(events(tmp_path), "t", KEY))
    assert len(lines) == 5, lines
    assert "v3 move" in lines[0] and "tablet-1" in lines[0]
    assert "write seqs [7, 8]" in lines[1]
    assert "applied from tablet-1" in lines[2]
    assert "ack seqs [7, 8]: on every in-sync follower" in lines[3]
    assert "DELETED by clear" in lines[4] and "seq 12" in lines[4]
