"""``python -m bench.peer setup --rows N``: create the peer's database and load N rows
(``PEER_DB`` names the file). The same row shape as the benchmark's (``bench.generators``)."""

from __future__ import annotations

import argparse
import os
import random


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["setup"])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.peer.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from bench.generators import Values
    from bench.peer.models import Row

    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    values = Values(rng=random.Random(args.seed))
    with transaction.atomic():
        for start in range(0, args.rows, 1000):
            stop = min(start + 1000, args.rows)
            Row.objects.bulk_create([Row(key=k, data=values.row()) for k in range(start, stop)])


if __name__ == "__main__":
    main()
