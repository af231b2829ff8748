"""``manage.py generate_fixture``: write a products seed data set of any size.

Wraps :func:`fixtures.products.write_jsonl` so that large data sets (for load
tests and benchmarks) can be made on demand instead of being committed; the
committed ``fixtures/products.jsonl`` is just the first 1,000 rows of the same
deterministic sequence (seed 42).

    python manage.py generate_fixture --rows 100000 --out var/products-100000.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from fixtures.products import write_jsonl


class Command(BaseCommand):
    help = (
        "Generate N deterministic fake Amazon product rows as JSON Lines "
        '({"key": <int>, "cells": {...}} per line), e.g. for seeding or benchmarks.'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rows", type=int, required=True, metavar="N", help="number of rows to write (>= 1)"
        )
        parser.add_argument(
            "--out",
            metavar="PATH",
            help="output file (default: var/products-<N>.jsonl under the project directory)",
        )
        parser.add_argument(
            "--seed", type=int, default=42, help="generator seed (default: 42, as the fixture)"
        )
        parser.add_argument(
            "--start", type=int, default=1, metavar="KEY", help="first key (default: 1, >= 1)"
        )
        parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        rows: int = options["rows"]
        start: int = options["start"]
        seed: int = options["seed"]
        if rows < 1:
            raise CommandError(f"--rows must be a positive integer, got {rows}")
        if start < 1:
            raise CommandError(f"--start must be an integer >= 1, got {start}")

        if options["out"]:
            out = Path(options["out"])
        else:
            # Anchored to the project, not the cwd, so the default is the same
            # wherever manage.py is run from; var/ is git-ignored.
            out = Path(settings.BASE_DIR) / "var" / f"products-{rows}.jsonl"
        if out.is_dir():
            raise CommandError(f"--out must be a file path, {out} is a directory")

        # The bar is only useful to a person watching; in CI logs or when piped
        # its carriage-return redraws are noise. It goes to stderr (tqdm's
        # default) so stdout carries only the result line.
        bar = tqdm(
            total=rows,
            unit="row",
            unit_scale=True,
            file=sys.stderr,
            disable=options["no_progress"] or not self.stdout.isatty(),
        )

        def progress(done: int) -> None:
            # write_jsonl reports cumulative counts; tqdm wants increments.
            bar.update(done - bar.n)

        try:
            with bar:
                written = write_jsonl(out, rows, start=start, seed=seed, progress=progress)
        except OSError as exc:
            raise CommandError(f"cannot write {out}: {exc}") from exc

        last = start + written - 1
        self.stdout.write(
            self.style.SUCCESS(f"Wrote {written:,} rows (keys {start}..{last}) to {out}")
        )
