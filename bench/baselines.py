"""The storage-alone baseline: the tablet's data plane called in-process, no server at all.

``tablet_app.services.rows`` (``rows_read``, ``rows_scan``, ``rows_mutate``) on a fresh
SQLite database with the tablet role's settings (same pragmas: WAL, synchronous FULL,
IMMEDIATE transactions), one caller, no HTTP, no JSON parsing of requests: the floor the
servers cannot beat. It runs in its own process (``python -m bench.baselines``) because
it configures Django for the tablet role, which the benchmark's driver process must not.

The workloads are the very ones of ``bench.workloads``, through a transport whose methods
call the service functions directly (the event loop only sequences them; concurrency 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NODE_ID = "bench-storage"
TABLE = "usertable"


class StorageLayer:
    """The transport interface (see ``bench.transports``) over the tablet's service functions."""

    def __init__(self, table: str) -> None:
        from distdb import protocol
        from distdb.keys import encode_key
        from tablet_app.services import rows

        self.table, self.rows, self.protocol, self.encode = table, rows, protocol, encode_key

    def _key(self, key: int) -> str:
        return self.encode("int", key)

    def _mutate(self, mutations: list[dict[str, Any]]) -> tuple[str | None, int]:
        # model_construct: the server validates requests, the storage layer does not.
        built = [self.protocol.Mutation.model_construct(**m) for m in mutations]
        results = self.rows.rows_mutate(self.table, built).results
        failed = [r for r in results if r["status"] in ("error", "outdated")]
        if failed:
            return f"row:{(failed[0]['error'] or {}).get('code', 'outdated')}", 0
        return None, len(mutations)

    async def read(self, key: int) -> tuple[str | None, int]:
        return await self.read_many([key])

    async def read_many(self, keys: list[int]) -> tuple[str | None, int]:
        result = self.rows.rows_read(self.table, [self._key(k) for k in keys])
        if result.outdated:
            return "outdated", len(result.rows)
        if len(result.rows) != len(keys):
            return "missing", len(result.rows)
        return None, len(result.rows)

    async def update(self, key: int, column: str, value: Any) -> tuple[str | None, int]:
        return self._mutate(
            [{"op": "set", "key": self._key(key), "cells": {column: value}, "columns": None}]
        )

    async def scan(self, start: int, limit: int) -> tuple[str | None, int]:
        result = self.rows.rows_scan(self.table, self._key(start), None, limit)
        return ("outdated", 0) if result.outdated else (None, len(result.rows))

    async def insert(self, rows: list[tuple[int, dict]]) -> tuple[str | None, int]:
        return self._mutate(
            [{"op": "insert", "key": self._key(k), "cells": c, "columns": None} for k, c in rows]
        )


def _setup(data_dir: Path) -> None:
    """Configure Django as a tablet server on a fresh database that owns all of TABLE."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="distdb.settings.tablet",
        DISTDB_NODE_ID=NODE_ID,
        DISTDB_DATA_DIR=str(data_dir),
        # The workloads' coroutines call the ORM directly, one at a time, on one thread:
        # exactly the single synchronous caller Django's async guard is there to protect.
        DJANGO_ALLOW_ASYNC_UNSAFE="true",
    )
    os.environ.pop("DISTDB_DATABASE_URL", None)  # always the SQLite default, like the cluster
    import django

    django.setup()
    from django.core.management import call_command

    from distdb import protocol
    from tablet_app.services.ownership import metadata_apply

    call_command("migrate", verbosity=0, interactive=False)
    tablet = protocol.TabletAssignment(
        table=TABLE, start="", end=None, server=NODE_ID, url="http://in-process"
    )
    metadata = protocol.Metadata(
        version=1, tables={TABLE: protocol.TableInfo(key_type="int")}, tablets=[tablet]
    )
    metadata_apply(metadata, NODE_ID)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.generators import Values
    from bench.workloads import KeySpace, run_load, run_mix

    storage = StorageLayer(TABLE)
    keys, values = KeySpace(), Values(rng=random.Random(args.seed))
    out: dict[str, Any] = {
        "load": await run_load(
            storage, keys, values, rows=args.rows, batch=args.batch_rows, concurrency=1
        )
    }
    for i, name in enumerate(args.workloads):
        out[name] = await run_mix(
            storage,
            name,
            keys,
            values,
            concurrency=1,
            duration_s=args.duration,
            warmup_s=args.warmup,
            seed=args.seed + i,
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="distdb storage-alone baseline (one process)")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--batch-rows", type=int, default=100)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--workloads", default="a,c,e,batch_read")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    with tempfile.TemporaryDirectory(prefix="distdb-bench-storage-") as tmp:
        _setup(Path(tmp))
        results = asyncio.run(_run(args))
    args.out.write_text(json.dumps(results, default=str))


def storage_baseline(
    *, rows: int, duration_s: float, warmup_s: float, workloads: list[str], seed: int, out: Path
) -> dict[str, Any]:
    """Run the baseline in a child process and return its results (workload -> summary)."""
    cmd = [sys.executable, "-m", "bench.baselines", "--rows", str(rows)]
    cmd += ["--duration", str(duration_s), "--warmup", str(warmup_s)]
    cmd += ["--workloads", ",".join(workloads), "--seed", str(seed), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"the storage baseline failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


if __name__ == "__main__":
    main()
