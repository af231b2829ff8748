"""``manage.py rebalance [--dry-run] [--json]``: run one rebalance now, with progress."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from distdb.errors import LeaseHeld
from master_app.services.rebalance import rebalance_run
from master_app.services.status import run_as_dict


class Command(BaseCommand):
    help = (
        "Collect changes, plan balanced split points over the live tablet servers and move "
        "the ranges that change owner (one run at a time). --dry-run only prints the plan."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Print the plan, move nothing.")
        parser.add_argument(
            "--json", action="store_true", help="Print the run's report as JSON (last line)."
        )
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--trigger", default="command", help="Recorded in the run report.")

    def handle(self, *args, dry_run: bool, json: bool, no_progress: bool, trigger: str, **opts):
        quiet = json or no_progress
        display = _Display(self.stdout, enabled=not quiet)
        try:
            run = rebalance_run(trigger, dry_run=dry_run, progress=display)
        except LeaseHeld as exc:
            raise CommandError(f"a run is already going: {exc.message}") from None
        finally:
            display.close()
        report = run_as_dict(run)
        if json:
            self.stdout.write(_json(report))
        else:
            self._summary(run, report)
        if run.outcome == run.Outcome.FAILED:
            raise CommandError(f"run {run.pk} failed: {run.error}")

    def _summary(self, run, report) -> None:
        for plan in run.plan:
            self.stdout.write(f"{plan['table']}: {plan['note'] or 'rows per server'}")
            for server, rows in sorted(plan["before"].items()):
                self.stdout.write(f"  {server:<12} {rows:>10} -> {plan['after'].get(server, 0)}")
            for m in plan["moves"]:
                self.stdout.write(
                    f"  move [{m['start_display']}, {m['end_display']}) "
                    f"{m['source']} -> {m['target']}: {m['rows']} rows"
                )
            for m in plan.get("follower_moves", ()):
                self.stdout.write(
                    f"  follower [{m['start_display']}, {m['end_display']}) "
                    f"{m['replaces']} -> {m['target']} (leader {m['source']}): {m['rows']} rows"
                )
        line = f"run {run.pk}: {run.get_outcome_display()} in {run.duration_s:.1f}s"
        if run.rows_moved:
            line += (
                f", {run.rows_moved} rows moved ({report['rows_per_s']:.0f} rows/s), "
                f"longest write freeze {run.longest_freeze_ms:.0f} ms"
            )
        self.stdout.write(self.style.SUCCESS(line) if run.outcome != "failed" else line)


def _json(data) -> str:
    return json.dumps(data, default=str)


class _Display:
    """Renders the run's progress events: step lines, and a row bar per move (tqdm)."""

    def __init__(self, out, *, enabled: bool) -> None:
        self.out, self.enabled = out, enabled
        self.bar: tqdm | None = None

    def __call__(self, event: str, info: dict) -> None:
        if not self.enabled:
            return
        if event == "step" and not info["text"].startswith("move "):
            tqdm.write(f"- {info['text']}")
        elif event == "plan":
            tqdm.write(f"- {len(info['moves'])} move(s) planned")
            for line in info["lines"]:
                tqdm.write(f"    {line}")
        elif event == "move":
            move = info["move"]
            if self.bar is None:
                self.bar = tqdm(
                    total=move.rows, unit="row", desc=f"move {info['index']}", leave=True
                )
            self.bar.set_postfix_str(info["step"])
            self.bar.update(info["rows"] - self.bar.n)
        elif event == "moved":
            report = info["report"]
            self.close()
            tqdm.write(
                f"  {report.outcome}: {report.rows_copied} rows, "
                f"+{report.catch_up_entries} caught up, freeze {report.freeze_ms:.0f} ms"
                + (f", error: {report.error}" if report.error else "")
            )
            if report.freeze_steps_ms:
                steps = ", ".join(f"{k} {v:.0f}" for k, v in report.freeze_steps_ms.items())
                tqdm.write(f"  under the freeze (ms): {steps}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
