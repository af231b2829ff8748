"""The nemesis's schedule (seeded, replayable) and the ownership comparison, without a cluster."""

from __future__ import annotations

import random
import threading
from pathlib import Path

from chaos.nemesis import Nemesis
from chaos.ownership import merged, ownership_compare


class FakeControls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def _record(self, what: str, name: str) -> None:
        with self.lock:
            self.calls.append((what, name))

    def process_names(self) -> list[str]:
        return ["client-1", "master", "tablet-1", "tablet-1-link", "worker"]

    def kill(self, name: str) -> None:
        self._record("kill", name)

    def restart(self, name: str) -> None:
        self._record("restart", name)

    def pause(self, name: str) -> None:
        self._record("pause", name)

    def resume(self, name: str) -> None:
        self._record("resume", name)

    def database_path(self, node_id: str) -> Path | None:
        return None

    def master_manage(self, *args: str, timeout_s: float = 120) -> tuple[int, str]:
        self._record("manage", " ".join(args))
        return 0, '{"moves": [{"outcome": "succeeded"}, {"outcome": "failed"}]}'

    def tablet_ids(self) -> list[str]:
        return ["tablet-1", "tablet-2"]

    def node_ids(self) -> list[str]:
        return ["master", "tablet-1", "tablet-2", "client-1"]

    def hosts(self) -> list[str]:
        return [*self.node_ids(), "redis"]

    def partition(self, side: list[str]) -> None:
        self._record("partition", "+".join(side))

    def heal_partitions(self) -> None:
        self._record("heal", "network")

    def clock_step(self, node_id: str, offset_s: float) -> None:
        self._record("clock", f"{node_id} {offset_s:+.0f}")

    def wipe(self, node_id: str) -> None:
        self._record("wipe", node_id)

    def start_node(self, node_id: str) -> None:
        self._record("start", node_id)

    def fully_replicated(self) -> bool:
        return True


class Ticks:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1
        return self.t


def run_schedule(seed: int, ticks: int) -> tuple[Nemesis, FakeControls]:
    controls = FakeControls()
    nemesis = Nemesis(
        controls, random.Random(seed), Ticks(), interval_s=(0, 0), fault_s=(0, 0), inline=True
    )
    stop = threading.Event()
    waits = iter(range(ticks))
    stop.wait = lambda timeout=None: next(waits, None) is None  # type: ignore[method-assign]
    nemesis.run(stop)
    return nemesis, controls


def test_every_fault_is_healed_and_recorded_with_its_times():
    nemesis, controls = run_schedule(seed=1, ticks=40)
    assert nemesis.faults
    for fault in nemesis.faults:
        assert fault.end is not None and fault.end >= fault.start
    kills = [n for what, n in controls.calls if what == "kill"]
    restarts = [n for what, n in controls.calls if what == "restart"]
    pauses = [n for what, n in controls.calls if what == "pause"]
    resumes = [n for what, n in controls.calls if what == "resume"]
    assert sorted(kills) == sorted(restarts) and sorted(pauses) == sorted(resumes)


def test_forced_moves_are_counted_from_the_rebalance_report():
    nemesis, controls = run_schedule(seed=3, ticks=60)
    rebalances = [n for what, n in controls.calls if what == "manage" and n.startswith("rebalance")]
    assert rebalances and nemesis.moves_triggered == len(rebalances)  # one succeeded each
    assert any(n.startswith("drain tablet-") for what, n in controls.calls if what == "manage")


def test_the_same_seed_draws_the_same_faults():
    first = [(f.kind, f.target) for f in run_schedule(seed=7, ticks=50)[0].faults]
    again = [(f.kind, f.target) for f in run_schedule(seed=7, ticks=50)[0].faults]
    other = [(f.kind, f.target) for f in run_schedule(seed=8, ticks=50)[0].faults]
    assert first == again and first != other


def test_adjacent_owned_ranges_merge():
    assert merged([("t", "m", None), ("t", "", "m"), ("u", "", None)]) == [
        ("t", "", None),
        ("u", "", None),
    ]


def test_ownership_that_matches_the_metadata_has_no_problem():
    assigned = [("t", "", "m", "tablet-1", []), ("t", "m", None, "tablet-2", [])]
    owned = {"tablet-1": [("t", "", "c"), ("t", "c", "m")], "tablet-2": [("t", "m", None)]}
    assert ownership_compare(assigned, owned) == []


def test_a_range_owned_twice_or_by_nobody_is_a_problem():
    assigned = [("t", "", "m", "tablet-1", []), ("t", "m", None, "tablet-2", [])]
    twice = {"tablet-1": [("t", "", None)], "tablet-2": [("t", "m", None)]}
    assert any("tablet-1 owns" in p for p in ownership_compare(assigned, twice))
    nobody = {"tablet-1": [("t", "", "m")], "tablet-2": []}
    assert any("tablet-2 owns" in p for p in ownership_compare(assigned, nobody))


def test_metadata_with_a_hole_is_a_problem():
    assigned = [("t", "", "f", "tablet-1", []), ("t", "m", None, "tablet-2", [])]
    owned = {"tablet-1": [("t", "", "f")], "tablet-2": [("t", "m", None)]}
    assert any("gap or overlap" in p for p in ownership_compare(assigned, owned))


def test_move_faults_alternate_draining_a_server_and_bringing_it_back():
    nemesis, controls = run_schedule(seed=3, ticks=80)
    drains = [n for what, n in controls.calls if what == "manage" and n.startswith("drain")]
    assert len(drains) >= 2
    for first, second in zip(drains[::2], drains[1::2], strict=False):
        assert second == first + " --undo"  # the drained one comes back next


def test_every_partition_is_healed_and_never_cuts_a_side_from_nothing():
    nemesis, controls = run_schedule(seed=3, ticks=200)
    sides = [n.split("+") for what, n in controls.calls if what == "partition"]
    heals = [n for what, n in controls.calls if what == "heal"]
    assert sides and len(sides) == len(heals)
    hosts = set(FakeControls().hosts())
    for side in sides:
        assert set(side) < hosts and side  # a proper, non-empty part of the hosts


def test_every_clock_step_is_set_back_to_zero():
    nemesis, controls = run_schedule(seed=4, ticks=200)
    steps = [n.split() for what, n in controls.calls if what == "clock"]
    moved = [(node, off) for node, off in steps if off != "+0"]
    assert moved and len(steps) == 2 * len(moved)
    for node, offset in moved:
        assert 5 <= abs(float(offset)) <= 300
        assert [node, "+0"] in steps


def test_the_fault_details_replay_with_the_seed():
    first = run_schedule(seed=9, ticks=120)[1].calls
    again = run_schedule(seed=9, ticks=120)[1].calls
    assert first == again


def test_a_follower_that_does_not_follow_what_the_metadata_says_is_a_problem():
    assigned = [("t", "", None, "tablet-1", ["tablet-2"])]
    owned = {"tablet-1": [("t", "", None)], "tablet-2": []}
    assert ownership_compare(assigned, owned, {"tablet-1": [], "tablet-2": [("t", "", None)]}) == []
    problems = ownership_compare(assigned, owned, {"tablet-1": [], "tablet-2": []})
    assert any("tablet-2 follows" in p for p in problems)
    stale = {"tablet-1": [("t", "", None)], "tablet-2": [("t", "", None)]}
    assert any("tablet-1 follows" in p for p in ownership_compare(assigned, owned, stale))


def test_a_disk_fault_runs_alone_and_brings_the_server_back():
    controls = FakeControls()
    nemesis = Nemesis(
        controls,
        random.Random(1),
        Ticks(),
        kinds=("disk",),
        interval_s=(0, 0),
        fault_s=(0, 0),
        inline=True,
    )
    stop = threading.Event()
    waits = iter(range(6))
    stop.wait = lambda timeout=None: next(waits, None) is None  # type: ignore[method-assign]
    nemesis.run(stop)
    wiped = [n for what, n in controls.calls if what == "wipe"]
    started = [n for what, n in controls.calls if what == "start"]
    assert wiped and wiped == started
