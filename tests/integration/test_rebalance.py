"""Rebalancing against real processes (DESIGN §4, issue #4).

One cluster for the module (``processes.Harness``, the project's launcher): master, two
tablet servers with their links, two client servers, Redis. The tests run in order and
build on each other's data: skew, balance, balanced-does-nothing, concurrent clients
during a run, then SIGKILL a tablet server and the master in the middle of runs.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.integration.conftest import ROOT
from tests.integration.processes import Harness, start_harness

pytestmark = pytest.mark.timeout(900)
TABLE = "products"


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    with start_harness(tmp_path_factory.mktemp("rebalance")) as harness:
        yield harness


def insert(h: Harness, n: int, *, client: int = 1, batch: int = 500) -> list[int]:
    """Add ``n`` rows with generated keys (ascending: they all land on the last tablet)."""
    keys: list[int] = []
    for i in range(0, n, batch):
        rows = [{"cells": {"n": i + j, "pad": "x" * 40}} for j in range(min(batch, n - i))]
        status, body, _ = h.api("POST", f"/tables/{TABLE}/rows", rows, client=client)
        assert status == 201, body
        keys += [r["key"] for r in body["results"]]
    return keys


def assert_balanced(h: Harness | dict[str, int], tolerance: float = 0.10) -> dict[str, int]:
    rows = h if isinstance(h, dict) else h.rows_per_server()
    rows = {k: v for k, v in rows.items() if k != "tablet-3" or v}  # drained or not joined yet
    mean = sum(rows.values()) / len(rows)
    assert all(abs(n - mean) <= tolerance * mean for n in rows.values()), rows
    return rows


@dataclass
class Writers:
    """Client threads writing through both client servers; remembers every acknowledged write.

    Each thread owns its keys (new ones it inserts and a slice of existing ones it
    updates), so "the last acknowledged value of a key" is well defined.
    """

    h: Harness
    existing: list[int]
    threads: int = 4
    acked: dict[int, dict] = field(default_factory=dict)  # key -> cells last acknowledged
    uncertain: set[int] = field(default_factory=set)  # a write whose answer was lost
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, index: int) -> None:
        rng = random.Random(index)
        mine = self.existing[index :: self.threads]
        next_key = 50_000_000 + index * 1_000_000
        version = 0
        while not self.stop.is_set():
            version += 1
            client = 1 + (version % 2)
            if rng.random() < 0.5:
                key, next_key = next_key, next_key + 1
                cells = {"by": index, "v": version}
                path, body, method = f"/tables/{TABLE}/rows", [{"key": key, "cells": cells}], "POST"
            else:
                key = rng.choice(mine)
                cells = {"by": index, "v": version}
                path, body, method = (
                    f"/tables/{TABLE}/rows:batch",
                    {"mutations": [{"op": "upsert", "key": key, "cells": cells}]},
                    "POST",
                )
            try:
                status, answer, _ = self.h.api(method, path, body, client=client, timeout=30)
            except OSError as exc:  # no answer: the write may or may not have happened
                with self.lock:
                    self.uncertain.add(key)
                    self.errors.append(f"{key}: {exc}")
                continue
            with self.lock:
                self.requests += 1
                if status in (200, 201) and not answer.get("failed"):
                    self.acked[key] = cells
                    self.uncertain.discard(key)
                else:
                    self.uncertain.add(key)
                    self.errors.append(f"{key}: {status} {answer}")
            if rng.random() < 0.3:  # and read something back
                status, answer, _ = self.h.api("GET", f"/tables/{TABLE}/rows/{key}", client=client)
                with self.lock:
                    self.requests += 1
                    if status != 200 and key not in self.uncertain:
                        self.errors.append(f"read {key}: {status} {answer}")

    def __enter__(self) -> Writers:
        self.workers = [
            threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(self.threads)
        ]
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for w in self.workers:
            w.join(60)

    def verify(self, h: Harness) -> int:
        """Every acknowledged write is present, exactly once, with its last value."""
        rows = h.scan_all(TABLE)
        counts = Counter(k for k, _ in rows)
        dupes = [k for k, n in counts.items() if n > 1]
        assert not dupes, f"keys served twice: {dupes[:10]}"
        # (``wait_serving`` may have added its probe cell to a key)
        stored = {k: {c: v for c, v in cells.items() if c != "probe"} for k, cells in rows}
        lost = [k for k in self.acked if k not in stored]
        assert not lost, f"acknowledged writes lost: {lost[:10]}"
        wrong = [k for k, c in self.acked.items() if k not in self.uncertain and stored[k] != c]
        assert not wrong, f"stale values: {[(k, stored[k], self.acked[k]) for k in wrong[:5]]}"
        return len(rows)


def wait_serving(h: Harness, keys: list[int], timeout: float = 60) -> None:
    """Until a write to each of ``keys`` succeeds (frozen leases resolve, links come back)."""
    deadline = time.monotonic() + timeout
    pending = list(keys)
    while pending:
        key = pending[0]
        body = {"mutations": [{"op": "set", "key": key, "cells": {"probe": True}}]}
        status, answer, _ = h.api("POST", f"/tables/{TABLE}/rows:batch", body)
        if status == 200 and not answer.get("failed"):
            pending.pop(0)
            continue
        assert time.monotonic() < deadline, f"key {key} still not writable: {status} {answer}"
        time.sleep(0.5)


def spread_keys(h: Harness) -> list[int]:
    """One existing key per tablet (start of each range), to probe every range."""
    rows = [k for k, _ in h.scan_all(TABLE)]
    return rows[:: max(1, len(rows) // 20)]


# --- the tests, in order ------------------------------------------------------------------------


def test_a_skewed_cluster_is_balanced_within_ten_percent_after_one_run(h):
    insert(h, 9000)  # generated keys ascend: all on the last tablet (tablet-2)
    before = h.rows_per_server()
    assert max(before.values()) >= 0.9 * sum(before.values()), before
    run = h.rebalance()
    assert run["outcome"] == "succeeded", (run["error"], run["moves"])
    assert run["rows_moved"] >= 4000
    assert all(m["outcome"] == "succeeded" for m in run["moves"])
    after = assert_balanced(h)
    assert sum(after.values()) == sum(before.values()) == 10_000
    rows = h.scan_all(TABLE)
    assert len(rows) == len({k for k, _ in rows}) == 10_000


def test_a_run_on_a_balanced_cluster_moves_nothing(h):
    metadata = h.status()["metadata_version"]
    run = h.rebalance()
    assert run["outcome"] == "nothing_to_do", run
    assert run["rows_moved"] == 0 and run["moves"] == []
    assert h.status()["metadata_version"] == metadata


def test_dry_run_prints_the_plan_and_moves_nothing(h):
    insert(h, 3000)
    metadata = h.status()["metadata_version"]
    out = h.manage("rebalance", "--dry-run", "--no-progress")
    assert "move [" in out and "planned (dry run)" in out
    assert h.status()["metadata_version"] == metadata


def test_concurrent_clients_during_a_run_all_succeed_and_every_write_is_there_once(h):
    existing = [k for k, _ in h.scan_all(TABLE)][::7]
    with Writers(h, existing) as writers:
        time.sleep(1)
        run = h.rebalance()
        time.sleep(1)
    assert run["outcome"] == "succeeded", (run["error"], run["moves"])
    assert run["rows_moved"] > 0
    assert writers.errors == [], writers.errors[:5]
    assert writers.requests > 50
    writers.verify(h)
    assert_balanced(h, tolerance=0.15)  # writes kept landing during the run


def run_and_kill_when(h: Harness, text: str, kill, timeout: float = 120) -> str:
    """Start ``manage.py rebalance``; when its output shows ``text``, call ``kill()``."""
    proc = h.manage_async("rebalance", "--no-progress")
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            kill(proc)
            break
        assert time.monotonic() < deadline, "".join(seen[-30:])
    else:
        raise AssertionError(f"the run ended before {text!r}:\n{''.join(seen[-30:])}")
    try:
        proc.wait(60)
    except Exception:
        proc.kill()
    return "".join(seen)


def test_sigkill_of_a_tablet_server_mid_run_loses_nothing_and_the_cluster_recovers(h):
    insert(h, 6000)
    source = max(h.rows_per_server().items(), key=lambda kv: kv[1])[0]
    existing = [k for k, _ in h.scan_all(TABLE)][::11]
    with Writers(h, existing) as writers:
        time.sleep(1)

        def kill_source(proc) -> None:
            h.kill(source, f"{source}-link")

        run_and_kill_when(h, "copying", kill_source)
        time.sleep(2)
        h.start(source, f"{source}-link")
        h.wait_ready(source)
        time.sleep(3)
    wait_serving(h, spread_keys(h))
    writers.verify(h)
    last = h.status()["last_run"]
    assert last["outcome"] == "failed", last
    run = h.rebalance()
    assert run["outcome"] == "succeeded", (run["error"], run["moves"])
    writers.verify(h)
    assert_balanced(h, tolerance=0.15)


@pytest.mark.parametrize("moment", ["copying", "freezing"])
def test_sigkill_of_the_master_mid_run_loses_nothing_and_the_cluster_recovers(h, moment):
    insert(h, 6000)
    existing = [k for k, _ in h.scan_all(TABLE)][::11]
    with Writers(h, existing) as writers:
        time.sleep(1)

        def kill_master(proc) -> None:
            proc.kill()  # the process running the rebalance ...
            h.kill("master")  # ... and the master's server holding the tablet links

        run_and_kill_when(h, moment, kill_master)
        time.sleep(1)
        h.start("master")
        h.wait_ready("master")
        time.sleep(6)  # leases (5-6 s in these tests) end; frozen ranges are resolved
    wait_serving(h, spread_keys(h))
    writers.verify(h)
    run = h.rebalance()
    assert run["outcome"] in ("succeeded", "nothing_to_do"), run
    writers.verify(h)
    stale = [r for r in [h.status()["last_run"]] if r["outcome"] == "running"]
    assert not stale


def test_a_tablet_restart_keeps_changes_the_master_has_not_collected(h):
    keys = insert(h, 200)
    h.kill("tablet-1", "tablet-1-link", "tablet-2", "tablet-2-link")
    h.start("tablet-1", "tablet-1-link", "tablet-2", "tablet-2-link")
    h.wait_ready("tablet-1", "tablet-2", "tablet-1-link", "tablet-2-link")  # links come back
    h.manage("shell", "-c", "from master_app.services.collect import changes_collect_all as c; c()")
    code = (
        "from master_app.models import ConsolidatedRow as R\n"
        "from distdb.keys import encode_key as e\n"
        f"print(R.objects.filter(key__in=[e('int', k) for k in {keys!r}]).count())"
    )
    assert h.manage("shell", "-c", code).strip().splitlines()[-1] == str(len(keys))


def test_a_tablet_server_that_joins_gets_its_share_at_the_next_run(h):
    h.start("tablet-3", "tablet-3-link")
    h.wait_ready("tablet-3")
    deadline = time.monotonic() + 30
    while not any(s["node_id"] == "tablet-3" and s["state"] == "up" for s in h.status()["servers"]):
        assert time.monotonic() < deadline, "tablet-3 did not link"
        time.sleep(0.5)
    before = h.rows_per_server()
    run = h.rebalance()
    assert run["outcome"] == "succeeded", (run["error"], run["moves"])
    assert {m["target"] for m in run["moves"]} == {"tablet-3"}
    assert (
        run["rows_moved"]
        <= before["tablet-1"] + before["tablet-2"] - 2 * (sum(before.values()) // 3) + 100
    )  # only the excess moves
    assert_balanced(h)
    assert len(h.scan_all(TABLE)) == sum(before.values())


def test_a_drained_server_ends_up_with_no_rows_and_no_ranges(h):
    h.manage(
        "shell",
        "-c",
        "from master_app.models import TabletServer as S\n"
        "S.objects.filter(node_id='tablet-3').update(draining=True)",
    )
    total = sum(h.rows_per_server().values())
    run = h.rebalance()
    assert run["outcome"] == "succeeded", (run["error"], run["moves"])
    status = h.status(collect=True)
    drained = next(s for s in status["servers"] if s["node_id"] == "tablet-3")
    assert drained["rows"] == 0 and drained["tablets"] == []
    assert len(h.scan_all(TABLE)) == total
    assert_balanced({k: v for k, v in h.rows_per_server().items() if k != "tablet-3"})


@pytest.mark.parametrize("who", ["missing", "forged", "client"])
def test_a_wrong_or_missing_tablet_token_cannot_join(h, who, tmp_path):
    import json as jsonlib

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from distdb.auth import generate_key_pair

    url = f"ws://127.0.0.1:{h.master_port}/ws/tablet/"
    if who == "missing":
        headers = {}
    elif who == "client":
        headers = {
            "Authorization": "Bearer "
            + (h.data_dir / "tokens" / "client-1.jwt").read_text().strip()
        }
    else:  # signed with a key that is not the master's
        import jwt

        generate_key_pair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
        now = time.time()
        claims = {
            "sub": "tablet-9",
            "role": "tablet",
            "aud": "distdb",
            "iat": now,
            "exp": now + 600,
        }
        token = jwt.encode(claims, (tmp_path / "k.pem").read_text(), algorithm="RS256")
        headers = {"Authorization": f"Bearer {token}"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        refusal = jsonlib.loads(ws.recv(timeout=10))  # sent at once, before any hello
        assert refusal["error"]["code"] in {"unauthenticated", "token_invalid", "token_wrong_role"}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code in (4401, 4403)
    assert "tablet-9" not in h.rows_per_server()
    # The real link agent with a refused token stops with the reason (it does not retry).
    env = h.env("tablet-3")  # a migrated node, drained
    if who == "client":
        env["DISTDB_TOKEN"] = headers["Authorization"].split()[1]
        done = subprocess.run(
            [sys.executable, "manage.py", "tablet_link"],
            env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode != 0
        assert "refused by the master" in done.stderr + done.stdout
