"""A rebalance run: collect, clean up, plan, move, report (DESIGN §4).

One run at a time: the run holds the ``maintenance`` lease (``leases``) from start to
end; a second trigger is told who holds it and does nothing. The lease expires by
itself if the process running it dies, and the next run then marks the dead run as
interrupted and starts from a clean state: every step is idempotent, leftover copies
are dropped before anything moves, and a move either committed (the metadata says so)
or did not (nothing changed).

Every run is recorded in ``RebalanceRun`` — trigger, plan, per-move rows, freeze and
duration, outcome, error — for the admin and ``manage.py cluster_status``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.utils import timezone

from distdb.errors import DistdbError
from distdb.keys import bound_display
from distdb.protocol import ApplyMetadataCommand, DropUnownedCommand
from master_app.metrics import move_observe, run_observe
from master_app.models import RebalanceRun, Table, Tablet, TabletServer
from master_app.services import leases
from master_app.services.collect import changes_collect_all
from master_app.services.consolidated import count_in, key_at
from master_app.services.link import link_call, new_command_id
from master_app.services.metadata import metadata_current
from master_app.services.moves import MoveReport, move_range
from master_app.services.plan import (
    Move,
    ReplicaLoad,
    TablePlan,
    TabletLoad,
    plan_followers,
    plan_table,
)
from master_app.services.servers import tablet_servers_expire

log = logging.getLogger(__name__)

# progress(event, info): "step" {"text"}, "plan" {"moves"}, "move" {"index", "move", "rows",
# "step"}, "moved" {"index", "report"}
Progress = Callable[[str, dict[str, Any]], None]


def rebalance_run(
    trigger: str, *, dry_run: bool = False, progress: Progress | None = None
) -> RebalanceRun:
    """Run one rebalance now (raises ``LeaseHeld`` if one is already going)."""
    say = progress or (lambda event, info: None)
    holder = leases.holder_name(f"rebalance ({trigger})")
    with leases.held(leases.MAINTENANCE, holder, settings.DISTDB_REBALANCE_LEASE_S) as lease:
        _recover_interrupted()
        run = RebalanceRun.objects.create(trigger=trigger, dry_run=dry_run, step="starting")
        began = time.monotonic()
        try:
            _run(run, dry_run, lease, say)
        except Exception as exc:
            log.exception("rebalance run %s failed", run.pk)
            run.outcome, run.error = RebalanceRun.Outcome.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            run.finished_at = timezone.now()
            run.duration_s = time.monotonic() - began
            run.step = ""
            run.save()
            run_observe(run.outcome, dry_run, run.duration_s)
        return run


def _run(run: RebalanceRun, dry_run: bool, lease: leases.HeldLease, say: Progress) -> None:
    def step(text: str) -> None:
        lease.check()
        log.info("rebalance run %s: %s", run.pk, text)
        run.step = text
        run.save(update_fields=["step"])
        say("step", {"text": text})

    step("collecting changes")
    tablet_servers_expire()
    collected = changes_collect_all()
    failed = {k: v for k, v in collected.items() if isinstance(v, str)}
    if failed:
        # One sick server stays local (DESIGN §4, invariant 5): its ranges are left where
        # they are this run (the master's copy of them is behind), the others rebalance.
        run.error = f"warning: left alone (could not collect): {failed}"[:2000]
        run.save(update_fields=["error"])
        log.warning("rebalance run %s: leaving %s alone: %s", run.pk, sorted(failed), failed)

    live = [
        s
        for s in TabletServer.objects.filter(state=TabletServer.State.UP).order_by("node_id")
        if s.node_id not in failed
    ]
    if not dry_run:
        step("dropping copies left by interrupted moves")
        _drop_leftovers(live)

    step("planning")
    plans = plan_cluster(live)
    moves = [m for p in plans for m in p.moves]
    planned_followers = [m for p in plans for m in p.follower_moves]
    key_types = dict(Table.objects.values_list("name", "key_type"))
    run.plan = [plan_as_dict(p, key_types[p.table]) for p in plans]
    run.save(update_fields=["plan"])
    lines = [describe(m, key_types[m.table]) for m in [*moves, *planned_followers]]
    say("plan", {"plans": plans, "moves": [*moves, *planned_followers], "lines": lines})
    if dry_run or not (moves or planned_followers):
        run.outcome = (
            RebalanceRun.Outcome.PLANNED
            if moves or planned_followers
            else RebalanceRun.Outcome.NOTHING_TO_DO
        )
        return

    _execute(run, moves, key_types, step, say, lease)
    if planned_followers or moves:
        # Leaders first (their moves cut ranges); the followers are placed on the result.
        step("placing followers")
        followers = plan_cluster(live, leaders=False)
        run.plan = _with_follower_moves(run.plan, followers, key_types)
        run.save(update_fields=["plan"])
        _execute(run, [m for p in followers for m in p.follower_moves], key_types, step, say, lease)

    step("collecting changes")
    changes_collect_all()
    run.outcome = RebalanceRun.Outcome.SUCCEEDED


def _execute(
    run: RebalanceRun,
    moves: list[Move],
    key_types: dict[str, str],
    step: Callable[[str], None],
    say: Progress,
    lease: leases.HeldLease,
) -> None:
    done = len(run.moves)
    for index, move in enumerate(moves, done + 1):
        step(f"move {index}/{done + len(moves)}: {describe(move, key_types[move.table])}")

        def moving(text: str, rows: int, index: int = index, move: Move = move) -> None:
            say("move", {"index": index, "move": move, "rows": rows, "step": text})

        report = move_range(move, progress=moving, check=lease.check)
        _record(run, report)
        say("moved", {"index": index, "report": report})
        if report.outcome != "succeeded":
            raise DistdbError(f"move {index} failed: {report.error}")


def _with_follower_moves(
    recorded: list[dict[str, Any]], plans: list[TablePlan], key_types: dict[str, str]
) -> list[dict[str, Any]]:
    """The run's recorded plan with each table's follower moves as re-planned after the
    leader moves (what the run then did)."""
    again = {p.table: plan_as_dict(p, key_types[p.table])["follower_moves"] for p in plans}
    return [{**p, "follower_moves": again.get(p["table"], [])} for p in recorded]


def _record(run: RebalanceRun, report: MoveReport) -> None:
    move_observe(report.outcome, report.duration_s, report.freeze_ms, report.rows_copied)
    run.moves = [*run.moves, report.as_dict()]
    if report.outcome == "succeeded":  # a failed move's copy was dropped: nothing moved
        run.rows_moved += report.rows_copied
    run.longest_freeze_ms = max(run.longest_freeze_ms, report.freeze_ms)
    run.save(update_fields=["moves", "rows_moved", "longest_freeze_ms"])


def plan_cluster(live: list[TabletServer], *, leaders: bool = True) -> list[TablePlan]:
    """A plan per table over the live servers (draining ones give their data away):
    leader moves (unless ``leaders`` is false) and, for replicated tables, follower
    moves planned on the current placement (a run plans these again after its leader
    moves, which may cut ranges)."""
    movable = [s.node_id for s in live]
    targets = [s.node_id for s in live if not s.draining]
    threshold = settings.DISTDB_REBALANCE_THRESHOLD
    min_rows = settings.DISTDB_REBALANCE_MIN_ROWS
    plans = []
    for table in Table.objects.order_by("name"):
        current = [
            (t, count_in(table, t.start_key, t.end_key))
            for t in Tablet.objects.filter(table=table)
            .select_related("server")
            .order_by("start_key")
        ]
        loads = [TabletLoad(t.start_key, t.end_key, t.server.node_id, n) for t, n in current]
        plan = (
            plan_table(
                table.name,
                loads,
                targets=targets,
                movable=movable,
                key_at=partial(key_at, table),
                threshold=threshold,
                min_rows=min_rows,
            )
            if leaders
            else TablePlan(table.name, {}, {})
        )
        if table.rf > 1:
            replicas = [
                ReplicaLoad(t.start_key, t.end_key, t.server.node_id, tuple(t.in_sync), n)
                for t, n in current
            ]
            plan.follower_moves = plan_followers(
                table.name,
                replicas,
                targets=targets,
                movable=movable,
                threshold=threshold,
                min_rows=min_rows,
            )
        plans.append(plan)
    return plans


def _drop_leftovers(live: list[TabletServer]) -> None:
    """Rows a server stores outside what it owns are left by interrupted moves: drop them.

    Each server first applies the current metadata: one that missed a hand-over (its link
    was down) would otherwise take a range it was given for a leftover and drop it.
    """
    metadata = metadata_current()
    for server in live:
        apply = ApplyMetadataCommand(id=new_command_id(), metadata=metadata)
        link_call(server.node_id, apply, timeout_s=30)
        for name in Table.objects.values_list("name", flat=True):
            drop = DropUnownedCommand(id=new_command_id(), table=name)
            dropped = link_call(server.node_id, drop, timeout_s=settings.DISTDB_MOVE_STEP_TIMEOUT_S)
            if dropped.rows:
                log.info("dropped %s leftover rows of %s on %s", dropped.rows, name, server)


def _recover_interrupted() -> None:
    """Runs still marked running belong to a process that died (we hold the lease now)."""
    for stale in RebalanceRun.objects.filter(outcome=RebalanceRun.Outcome.RUNNING):
        stale.outcome = RebalanceRun.Outcome.FAILED
        stale.error = (stale.error + "\n" if stale.error else "") + (
            f"interrupted while {stale.step or 'running'}: the process running it stopped"
        )
        stale.finished_at = stale.finished_at or timezone.now()
        stale.save()
    TabletServer.objects.exclude(trim_floor=None).update(trim_floor=None)


def describe(move: Move | MoveReport, key_type: str) -> str:
    span = f"[{bound_display(key_type, move.start)}, {bound_display(key_type, move.end)})"
    rows = getattr(move, "rows", getattr(move, "planned_rows", 0))
    if move.replaces is not None:
        return (
            f"{move.table} {span} follower {move.replaces} -> {move.target} "
            f"(leader {move.source}, {rows} rows)"
        )
    return f"{move.table} {span} {move.source} -> {move.target} ({rows} rows)"


def plan_as_dict(plan: TablePlan, key_type: str) -> dict[str, Any]:
    return {
        "table": plan.table,
        "before": plan.before,
        "after": plan.after,
        "note": plan.note,
        "moves": [
            {
                **m.as_dict(),
                "start_display": bound_display(key_type, m.start),
                "end_display": bound_display(key_type, m.end),
            }
            for m in plan.moves
        ],
        "follower_moves": [
            {
                **m.as_dict(),
                "start_display": bound_display(key_type, m.start),
                "end_display": bound_display(key_type, m.end),
            }
            for m in plan.follower_moves
        ],
    }
