"""One key's story across every node's journal (``distdb.journal``), in time order.

    python -m chaos.trace chaos/results/<run> chaos_ins 0000000000000001370

The key is given as stored (integer keys as 19 zero-padded digits). Printed: each
metadata version that changed the tablet holding the key (leader and in-sync set), each
node's view of it as it applied versions (led / followed, snapshots), and every event
that touched the key: its writes and their acknowledgements, entries a follower applied
or skipped, a move's copy and catch-ups, drops and ``clear``s that deleted it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


def _inside(key: str, start: str, end: str | None) -> bool:
    return key >= start and (end is None or key < end)


def events(run_dir: Path) -> list[dict[str, Any]]:
    """Every journal line of the run, in time order."""
    found: list[dict[str, Any]] = []
    for path in sorted((run_dir / "cluster" / "journal").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                found.append(orjson.loads(line))
    found.sort(key=lambda e: e["t"])
    return found


def story(all_events: list[dict[str, Any]], table: str, key: str) -> Iterator[str]:
    """Lines describing what happened to ``key`` of ``table``."""
    last_tablet: Any = None
    last_view: dict[str, Any] = {}
    writes: dict[tuple[str, int], list[str]] = {}  # (node, last seq) -> keys, to match acks
    for e in all_events:
        ev, node = e["ev"], e["node"]
        at = datetime.fromtimestamp(e["t"], UTC).strftime("%H:%M:%S.%f")[:-3]
        head = f"{at} {node:<9}"
        if ev == "commit" and e["table"] == table:
            tablet = next((t for t in e["tablets"] if _inside(key, t[0], t[1])), None)
            if tablet != last_tablet:
                last_tablet = tablet
                yield f"{head} v{e['version']} {e['reason']}: key's tablet now {tablet}"
        elif ev == "metadata":
            led = [t for t in e["led"] if t[0] == table and _inside(key, t[1], t[2])]
            followed = [f for f in e["followed"] if f[0] == table and _inside(key, f[1], f[2])]
            snaps = [s for s in e["snapshots"] if s[0] == table and _inside(key, s[1], s[2])]
            view = {"led": led, "followed": [f[:4] for f in followed]}  # not how far applied
            if view != last_view.get(node) or snaps:
                last_view[node] = view
                snap = f" SNAPSHOT {snaps}" if snaps else ""
                joined = f" caught_up {e['caught_up']}" if e.get("caught_up") else ""
                yield (f"{head} applied v{e['version']}: leads {led or '-'} follows "
                       f"{followed or '-'}{snap}{joined}")  # fmt: skip
        elif e.get("table") != table and ev != "replicate":
            continue
        elif ev == "write":
            mine = [k for k, _op in e["keys"] if k == key]
            writes[(node, e["seqs"][1])] = [k for k, _ in e["keys"]]
            if mine:
                yield f"{head} write seqs {e['seqs']} ({len(e['keys'])} keys) ops {e['keys'][:3]}"
        elif ev == "ack":
            if key in writes.get((node, e["seqs"][1]), ()):
                yield f"{head} ack seqs {e['seqs']}: {e['why'] or 'on every in-sync follower'}"
        elif ev == "replicate":
            for rtable, start, end, entries in e["applied"]:
                if rtable != table or not _inside(key, start, end):
                    continue
                hit = [x for x in entries if x[1] == key or (x[2] == "clear" and x[1] <= key)]
                if hit:
                    yield (f"{head} applied from {e['leader']} (v{e['version']}, mine "
                           f"v{e['mine']}) into [{start}, {end}): {hit}")  # fmt: skip
            hit = [x for x in e["skipped"] if x[1] == key]
            if hit:
                yield f"{head} SKIPPED from {e['leader']}: {hit}"
        elif ev == "catch_up":
            hit = [x for x in e["entries"] if x[1] == key or (x[2] == "clear" and x[1] <= key)]
            if hit and _inside(key, e["start"], e["end"]):
                yield f"{head} catch-up [{e['start']}, {e['end']}): {hit}"
        elif ev == "copy":
            if key in e["keys"]:
                yield f"{head} copied in ({len(e['keys'])} rows)"
        elif ev in ("drop", "clear") and key in e["keys"]:
            extra = f" (entry seq {e['seq']})" if ev == "clear" else ""
            yield f"{head} DELETED by {ev} [{e['start']}, {e['end']}){extra}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("table")
    parser.add_argument("key")
    args = parser.parse_args(argv)
    for line in story(events(args.run_dir), args.table, args.key):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
