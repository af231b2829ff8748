"""Move one key range from one tablet server to another while the cluster keeps serving.

MongoDB chunk-migration style (DESIGN §4), every step with a timeout:

1. pin the source's change log at what the master has applied (no trim past it; the
   catch-ups start there), clear any leftover copy of the range on the target;
2. the target copies the rows from the source, chunk by chunk (progress);
3. the target catches up on the source's changes to the range, in rounds, until few
   remain; the master collects the source's log (no trim) so little is left for later;
4. **freeze** the range on the source: a write lease; writes to it are refused
   retryably (client servers retry: users see latency), every other range keeps going;
5. final catch-up (now complete) and a last collect from the source, so the master's
   copy has every source change of the range before the target can write any;
6. **commit** the new metadata version (only while the lease still has a safety margin:
   a source whose lease ends asks the master what happened, see
   ``tablet_app.services.ownership``), then hand over: the target applies it, then the
   source (which from then on answers ``outdated``); the freeze ends there;
7. the source drops its copy; the log is unpinned.

A failure before the commit undoes the move (unfreeze, drop the target's partial copy)
and leaves the metadata as it was; after the commit the move has happened and what
remains (hand-over, drop) is finished by the tablets themselves or the next run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings

from distdb.errors import DistdbError, MoveAborted
from distdb.keys import range_cut
from distdb.protocol import (
    ApplyMetadataCommand,
    ApplyMetadataReply,
    CatchUpCommand,
    CaughtUp,
    Command,
    CopyCommand,
    CopyReply,
    DropCommand,
    DropReply,
    DropUnownedCommand,
    FreezeCommand,
    ReplyT,
    UnfreezeCommand,
)
from master_app.models import Table, Tablet, TabletServer
from master_app.services.collect import changes_collect, log_pin, log_unpin
from master_app.services.consolidated import count_in, key_at
from master_app.services.link import (
    link_call,
    link_call_async,
    new_command_id,
    run_on_link_loop,
)
from master_app.services.metadata import (
    RangeAssignment,
    metadata_commit,
    metadata_current,
    metadata_push,
)
from master_app.services.plan import Move

log = logging.getLogger(__name__)
CATCH_UP_ROUNDS = 5
CATCH_UP_SMALL = 500  # entries: few enough to apply under the freeze in a moment


@dataclass
class MoveReport:
    """What one move did: kept in the run's report (``RebalanceRun.moves``)."""

    table: str
    start: str
    end: str | None
    source: str
    target: str
    planned_rows: int
    rows_copied: int = 0
    catch_up_entries: int = 0
    freeze_ms: float = 0.0
    freeze_steps_ms: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    version: int | None = None
    outcome: str = "running"
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    kind: str = "move"  # as ``Move.kind``
    replaces: str | None = None  # as ``Move.replaces``: the follower this one replaced

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[str, int], None]  # (step description, rows copied so far)


def lease_clock() -> float:
    """The granting side's clock: CLOCK_BOOTTIME, which keeps counting while the host is
    suspended (CLOCK_MONOTONIC stops), so a suspended master never believes less time
    passed than the tablet's lease did. The tablet counts on CLOCK_MONOTONIC: the
    conservative choice for the side whose lease must end last."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


Clock = Callable[[], float]  # monotonic seconds


def move_range(
    move: Move,
    *,
    progress: Progress | None = None,
    check: Callable[[], None] = lambda: None,
    clock: Clock = lease_clock,
) -> MoveReport:
    """Run one move to the end; returns its report, ``outcome`` "succeeded" or "failed".

    ``check`` is called before every command (it raises to stop the move, e.g. a lost
    run lease). ``clock`` times the freeze against its lease (and the report's
    durations); tests pass a clock they advance instead of sleeping.
    """
    report = MoveReport(
        move.table, move.start, move.end, move.source, move.target, move.rows,
        kind=move.kind, replaces=move.replaces,
    )  # fmt: skip
    began = clock()
    table = Table.objects.get(name=move.table)
    source = TabletServer.objects.get(node_id=move.source)
    target = TabletServer.objects.get(node_id=move.target)
    step_s = settings.DISTDB_MOVE_STEP_TIMEOUT_S
    last_step = [""]

    def say(step: str, rows: int) -> None:
        if step != last_step[0]:
            last_step[0] = step
            log.info("move %s [%r, %r) %s -> %s: %s", move.table, move.start, move.end,
                     move.source, move.target, step)  # fmt: skip
        if progress:
            progress(step, rows)

    def command(server: TabletServer, cmd: Command[ReplyT], timeout_s: float = step_s) -> ReplyT:
        check()
        return link_call(server.node_id, cmd, timeout_s=timeout_s)

    def drop(server: TabletServer) -> DropReply:
        return command(server, _drop(move))

    frozen_at: float | None = None
    commit_started = committed = False
    # A move to a server that already follows the range (in sync) is a leadership
    # transfer: it holds every acknowledged write, so nothing is cleared or copied; the
    # catch-ups below (from the pinned floor) and the freeze make it complete.
    transfer = move.kind == "move" and _follows(table, move, target)
    floor = log_pin(source)
    try:
        if not transfer:
            say("clearing the target", 0)
            drop(target)
            _copy(move, table, source, target, command, report, say)
        # Catch up from the pinned floor: every change since is still in the source's log
        # (a concurrent collect's trim stops there, ``collect.changes_trim``), and changes
        # the copy already saw are replayed harmlessly (entries are full row images).
        after = floor
        for _ in range(CATCH_UP_ROUNDS):
            say("catching up", report.rows_copied)
            done = command(target, _catch_up(move, source, after))
            report.catch_up_entries += done.applied
            after = done.last_seq
            if done.applied < CATCH_UP_SMALL:
                break
        changes_collect(source, trim=False)

        say("freezing", report.rows_copied)
        lease_s = settings.DISTDB_FREEZE_LEASE_S
        frozen_at = clock()  # before sending: the source's lease ends later
        lap = _Laps(report.freeze_steps_ms, frozen_at, clock)
        freeze = FreezeCommand(
            id=new_command_id(), table=move.table, start=move.start, end=move.end, lease_s=lease_s
        )
        command(source, freeze, timeout_s=lease_s)
        lap("freeze")
        done = command(target, _catch_up(move, source, after))
        report.catch_up_entries += done.applied
        after = done.last_seq
        lap("final catch-up")
        changes_collect(source, trim=False)
        lap("collect")
        # The last instant to commit: the lease less the margin, both on our monotonic
        # clock from before the freeze was sent (the source counts from its receipt).
        deadline = frozen_at + lease_s - settings.DISTDB_FREEZE_MARGIN_S
        if clock() > deadline:
            raise MoveAborted(
                f"the freeze took too long ({clock() - frozen_at:.1f}s of {lease_s}s)"
            )

        commit_started = True
        report.version = _commit(move, table, source, target, deadline, clock, transfer=transfer)
        committed = True
        lap("commit")
        say("handing over", report.rows_copied)
        if move.kind == "replica":
            _join(move, source, target, report, caught_up_seq=after)  # of the moved range
        else:
            _hand_over(source, target, report)
        lap("hand-over")
        report.freeze_ms = (clock() - frozen_at) * 1000
        metadata_push()  # every other server (client servers learn it from "outdated")
        if move.kind == "move" and not transfer:
            try:
                drop(source)
            except DistdbError as exc:  # its copy is unowned: the next run drops it
                report.warnings.append(f"the source could not drop its copy yet: {exc}")
        report.outcome = "succeeded"
    except Exception as exc:  # noqa: BLE001 - every failure is reported, and undone if it can be
        report.outcome, report.error = "failed", f"{type(exc).__name__}: {exc}"
        if committed or (commit_started and not isinstance(exc, MoveAborted)):
            # The COMMIT may have gone through (an error on COMMIT, a lost connection, a
            # time limit): undo nothing. The source settles with the master's fenced
            # metadata when its lease ends; an uncommitted copy is dropped by the next run.
            # (MoveAborted is only raised before a COMMIT is sent: that one is undone.)
            if not committed:
                _commit_report(move, target, report)
        else:
            _undo(move, source, target, frozen_at is not None, report, drop_target=not transfer)
        if frozen_at is not None:
            report.freeze_ms = (clock() - frozen_at) * 1000
        log.warning("move %s -> %s failed: %s", move.source, move.target, report.error)
    finally:
        log_unpin(source)
        report.duration_s = clock() - began
    return report


def _copy(
    move: Move,
    table: Table,
    source: TabletServer,
    target: TabletServer,
    command: Callable[[TabletServer, CopyCommand], CopyReply],
    report: MoveReport,
    say: Progress,
) -> None:
    """Copy in chunks of ``DISTDB_MOVE_COPY_CHUNK`` rows (cut from the master's copy)."""
    chunk = settings.DISTDB_MOVE_COPY_CHUNK
    rows = count_in(table, move.start, move.end)
    cuts = [key_at(table, move.start, move.end, i) for i in range(chunk, rows, chunk)]
    for lo, hi in range_cut(move.start, move.end, cuts):
        say("copying", report.rows_copied)
        cmd = CopyCommand(
            id=new_command_id(), table=move.table, start=lo, end=hi, source_url=source.url
        )
        report.rows_copied += command(target, cmd).rows
    say("copied", report.rows_copied)


def _drop(move: Move) -> DropCommand:
    return DropCommand(id=new_command_id(), table=move.table, start=move.start, end=move.end)


def _catch_up(move: Move, source: TabletServer, after: int) -> CatchUpCommand:
    return CatchUpCommand(
        id=new_command_id(),
        table=move.table,
        start=move.start,
        end=move.end,
        source_url=source.url,
        after_seq=after,
        source=source.node_id,
    )


def _commit(
    move: Move,
    table: Table,
    source: TabletServer,
    target: TabletServer,
    deadline: float,
    clock: Clock,
    *,
    transfer: bool,
) -> int:
    """The table's tablets with [start, end) given to the target, as a new version,
    committed before ``deadline`` or not at all (``metadata_commit``). The new tablets are
    computed from the committed ones *under the metadata lock*, so a change committed
    meanwhile (another run, a deleted table) is neither overwritten nor missed."""

    def assignments() -> list[RangeAssignment]:
        out: list[RangeAssignment] = []
        inside = False
        rf = Table.objects.filter(pk=table.pk).values_list("rf", flat=True).first() or 1
        tablets = Tablet.objects.filter(table=table).select_related("server")
        for t in tablets.order_by("start_key"):
            for lo, hi in range_cut(t.start_key, t.end_key, (move.start, move.end)):
                moving = lo >= move.start and (
                    move.end is None or (hi is not None and hi <= move.end)
                )
                owner, in_sync = t.server.node_id, tuple(t.in_sync)
                if moving:
                    if t.server_id != source.pk:
                        raise MoveAborted(f"{move.table} [{lo!r}, {hi!r}) is no longer on {source}")
                    inside = True
                    owner, in_sync = _moved(move, source, target, in_sync, rf, transfer=transfer)
                out.append(RangeAssignment(move.table, lo, hi, owner, in_sync))
        if not inside:
            raise MoveAborted(f"{move.table} [{move.start!r}, {move.end!r}) is not a current range")
        return _merge_adjacent(out)

    reason = f"move {move.table} [{move.start!r}, {move.end!r}) {source} -> {target}"
    return metadata_commit(table, assignments, reason, push=False, deadline=deadline, clock=clock)


def _moved(
    move: Move,
    source: TabletServer,
    target: TabletServer,
    in_sync: tuple[str, ...],
    rf: int,
    *,
    transfer: bool,
) -> tuple[str, tuple[str, ...]]:
    """The leader and in-sync followers of a piece of the moving range after the move.

    A ``transfer`` copied nothing: its target must still be an in-sync follower, i.e.
    hold every acknowledged write. Dropped from the set meanwhile (the leader's shipper
    could not reach it), it may lack writes acknowledged since, collected below the
    move's pinned floor and so on no catch-up's path: the move is abandoned."""
    if move.kind == "replica":  # the leader stays; the target joins its followers
        if target.node_id in in_sync:
            raise MoveAborted(f"{target} already follows {move.table} [{move.start!r}, ...)")
        if move.replaces is not None:  # in place of that follower, in this same commit
            if move.replaces not in in_sync:
                raise MoveAborted(
                    f"{move.replaces} no longer follows {move.table} [{move.start!r}, ...)"
                )
            return source.node_id, tuple(
                target.node_id if f == move.replaces else f for f in in_sync
            )
        if 1 + len(in_sync) >= rf:  # rf was lowered while the copy ran
            raise MoveAborted(f"{move.table} has its {rf} copies already")
        return source.node_id, (*in_sync, target.node_id)
    if target.node_id in in_sync:  # a leadership transfer: the source follows now
        return target.node_id, tuple(source.node_id if f == target.node_id else f for f in in_sync)
    if transfer:
        raise MoveAborted(f"{target} left the in-sync set of {move.table} during the transfer")
    return target.node_id, in_sync  # the followers stay


def _follows(table: Table, move: Move, target: TabletServer) -> bool:
    """Whether ``target`` is an in-sync follower of every tablet under the moving range."""
    tablets = Tablet.objects.filter(table=table)
    inside = [
        t for t in tablets
        if (move.end is None or t.start_key < move.end)
        and (t.end_key is None or t.end_key > move.start)
    ]  # fmt: skip
    return bool(inside) and all(target.node_id in (t.in_sync or ()) for t in inside)


def _join(
    move: Move, source: TabletServer, target: TabletServer, report: MoveReport, caught_up_seq: int
) -> None:
    """A new follower joins: the leader applies the version first (it replicates to the
    follower from then on), then lifts its freeze; then the follower is told. The
    follower it replaced, if any, is told last, and then drops its copy."""
    metadata = metadata_current()
    steps: list[tuple[TabletServer, Command[Any]]] = [
        (source, ApplyMetadataCommand(id=new_command_id(), metadata=metadata)),
        (
            source,
            UnfreezeCommand(id=new_command_id(), table=move.table, start=move.start, end=move.end),
        ),  # fmt: skip
        (
            target,
            ApplyMetadataCommand(
                id=new_command_id(),
                metadata=metadata,
                caught_up=CaughtUp(
                    table=move.table,
                    start=move.start,
                    end=move.end,
                    leader=source.node_id,
                    seq=caught_up_seq,
                ),
            ),
        ),  # fmt: skip
    ]
    # ``filter().first()``: a server deleted meanwhile must not cost the leader its
    # metadata and unfreeze below (the copy it held is dropped by the next run, if any).
    replaced = (
        None
        if move.replaces is None
        else TabletServer.objects.filter(node_id=move.replaces).first()
    )
    if replaced is not None:
        # The follower replaced stops following once it applies the version; only then
        # may its copy go (a range it still follows is never dropped: ``rows_drop_unowned``).
        # If it misses this, the next run drops the copy (``_drop_leftovers``).
        steps += [
            (replaced, ApplyMetadataCommand(id=new_command_id(), metadata=metadata)),
            (
                replaced,
                DropUnownedCommand(
                    id=new_command_id(), table=move.table, start=move.start, end=move.end
                ),
            ),
        ]
    for server, cmd in steps:
        try:
            link_call(server.node_id, cmd, timeout_s=10)
        except DistdbError as exc:
            # The leader's freeze ends with its lease (it settles with the master); the
            # follower hears the version at its next heartbeat.
            report.warnings.append(f"{server} did not {cmd.type} v{metadata.version} yet: {exc}")
            if server is replaced:
                break  # its drop waits for the next run


def _commit_report(move: Move, target: TabletServer, report: MoveReport) -> None:
    """After a commit whose outcome is unknown: say in the report what the metadata
    shows now, and push it if the move went through (the target serves at once).

    Informational only: nothing is undone either way (``move_range``), since a COMMIT
    still in flight on a lost connection may land after this read.
    """
    try:
        tablets = Tablet.objects.filter(table__name=move.table).select_related("server")
        inside = [
            t for t in tablets
            if (move.end is None or t.start_key < move.end)
            and (t.end_key is None or t.end_key > move.start)
        ]  # fmt: skip
        seen = bool(inside) and all(t.server_id == target.pk for t in inside)
    except Exception as exc:  # noqa: BLE001 - the report says so; nothing depends on it
        report.warnings.append(f"the commit's outcome is unknown ({exc}); nothing undone")
        return
    if seen:
        report.warnings.append("the commit went through before the error: the move stands")
        metadata_push()  # the target serves as soon as it hears (the source is fenced)
    else:
        report.warnings.append(
            "the commit's outcome is unknown; nothing undone: the source settles with the "
            "master when its lease ends, a copy left on the target is dropped by the next run"
        )


def _merge_adjacent(assignments: list[RangeAssignment]) -> list[RangeAssignment]:
    merged: list[RangeAssignment] = []
    for a in assignments:
        last = merged[-1] if merged else None
        if last and (last.server_id, last.in_sync, last.end) == (a.server_id, a.in_sync, a.start):
            merged[-1] = RangeAssignment(a.table, last.start, a.end, a.server_id, a.in_sync)
        else:
            merged.append(a)
    return merged


def _hand_over(source: TabletServer, target: TabletServer, report: MoveReport) -> None:
    """Make the target serve and the source answer ``outdated`` (both told at once).

    A server that cannot be told now learns the version when it relinks, and a source
    whose lease ends first asks the master (the commit is final), so a failure here is
    only a warning.
    """
    metadata = metadata_current()

    async def tell_both() -> list[ApplyMetadataReply | BaseException]:
        calls = [
            link_call_async(
                server.node_id,
                ApplyMetadataCommand(id=new_command_id(), metadata=metadata),
                timeout_s=10,
            )
            for server in (target, source)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = run_on_link_loop(tell_both(), 10)
    for server, outcome in zip((target, source), outcomes, strict=True):
        if isinstance(outcome, Exception):
            report.warnings.append(f"{server} did not apply v{metadata.version} yet: {outcome}")


class _Laps:
    """Records how long each step under the write freeze took (the report's breakdown)."""

    def __init__(self, into: dict[str, float], start: float, clock: Clock) -> None:
        self.into, self.last, self.clock = into, start, clock

    def __call__(self, step: str) -> None:
        now = self.clock()
        self.into[step] = round((now - self.last) * 1000, 1)
        self.last = now


def _undo(
    move: Move,
    source: TabletServer,
    target: TabletServer,
    frozen: bool,
    report: MoveReport,
    *,
    drop_target: bool = True,
) -> None:
    """Best effort: reopen the source's range, drop the target's partial copy (not a
    follower's copy: a leadership transfer copied nothing)."""
    steps: list[tuple[TabletServer, Command[Any]]] = []
    if frozen:
        unfreeze = UnfreezeCommand(
            id=new_command_id(), table=move.table, start=move.start, end=move.end
        )
        steps.append((source, unfreeze))
    if drop_target:
        steps.append((target, _drop(move)))
    for server, cmd in steps:
        try:
            link_call(server.node_id, cmd, timeout_s=10)
        except DistdbError as exc:
            # An unanswered unfreeze ends with the lease; a copy left behind is dropped
            # by the next run (drop_unowned) before anything else moves.
            report.warnings.append(f"undo {cmd.type} on {server} failed: {exc}")
