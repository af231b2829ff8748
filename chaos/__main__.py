"""``python -m chaos [--seed N] [--duration S] [--nemesis kill,pause,...]`` (``make chaos``).

Exit status 0 when every checker passed, 1 when one failed (the verdict names it).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

from chaos.nemesis import NEMESES
from chaos.runner import ChaosConfig, chaos_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of faults")
    parser.add_argument("--nemesis", default=",".join(NEMESES), help="comma-separated kinds")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--max-active", type=int, default=2, help="faults at once")
    parser.add_argument(
        "--move-weight", type=int, default=3, help="how many times as often moves are drawn"
    )
    parser.add_argument(
        "--rf", type=int, default=2, help="replication factor of the workload's tables"
    )
    parser.add_argument("--tablets", type=int, default=2, help="tablet servers")
    parser.add_argument("--out", type=Path, default=None, help="default chaos/results/<run>")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.nemesis.split(",") if k)
    unknown = set(kinds) - set(NEMESES)
    if unknown:
        parser.error(f"unknown nemesis {sorted(unknown)}; choose from {', '.join(NEMESES)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    out = args.out or Path("chaos/results") / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"chaos: seed {seed}, {args.duration:.0f}s of {', '.join(kinds)} -> {out}", flush=True)
    result = chaos_run(
        ChaosConfig(
            seed=seed,
            duration_s=args.duration,
            out_dir=out,
            workers=args.workers,
            kinds=kinds,
            max_active=args.max_active,
            move_weight=args.move_weight,
            rf=args.rf,
            tablets=args.tablets,
        )
    )
    print(result.summary())
    for line in result.linearizability["anomalies"][:20]:
        print("  ", line)
    for problem in result.ownership["problems"][:20]:
        print("  ", problem)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
