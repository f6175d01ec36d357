"""The crash matrix (docs/crash-matrix.md): every scenario A–F, every server on its path
SIGKILLed at seeded random instants while messages flow, restarted or not; then every
acknowledged message is looked for at its destination.

    .venv/bin/python benchmarks/crash.py                       # large, SQLite and PostgreSQL
    .venv/bin/python benchmarks/crash.py --size small --backend sqlite
    .venv/bin/python benchmarks/crash.py --trials 10 --messages 60 --kills 3 --seed 7
    .venv/bin/python benchmarks/crash.py --only D:HUB02        # one scenario:server

It prints one row per case (backend, scenario, server killed, restarted?, trials, sent,
acknowledged, lost, duplicates, RESUBMIT and DUPLICATEDELIVER rows) and exits 1 if any
acknowledged message was lost, an Exchange mailbox got a message twice or a lab did not
drain in time (the problems of such a trial are printed, with the end of each server's
output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from exchange_emu.lab.crash_matrix import (
    CASES,
    LARGE,
    SMALL,
    CaseResult,
    PostgresStores,
    SqliteStores,
    Stores,
    postgres_database,
    run_matrix,
    table,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("small", "large"), default="large")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--trials", type=int, help="trials per case (a fresh lab each)")
    parser.add_argument("--messages", type=int, help="messages per trial")
    parser.add_argument("--kills", type=int, help="kills per trial of a restarted server")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--only", action="append", metavar="SCENARIO[:SERVER]",
                        help="run only these cases (repeatable), e.g. D or D:HUB02")
    parser.add_argument("--workers", type=int, default=1, help="labs running at a time")
    parser.add_argument("--keep", action="store_true", help="keep the labs' data folders")
    args = parser.parse_args()

    size = SMALL if args.size == "small" else LARGE
    for name in ("trials", "messages", "kills"):
        if getattr(args, name) is not None:
            size = replace(size, **{name: getattr(args, name)})
    cases = [c for c in CASES if not args.only or any(
        w.upper() in (c.scenario, f"{c.scenario}:{c.killed}") for w in args.only)]
    if not cases:
        parser.error(f"--only {args.only} matches no case")
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    print(f"crash matrix: {len(cases)} cases x {size.trials} trials, {size.messages} messages "
          f"per trial, {size.kills} kill(s) per restarted server, seed {args.seed}",
          flush=True)

    results: list[CaseResult] = []

    def report(result: CaseResult) -> None:
        print(table([result]).splitlines()[-1], flush=True)
        if result.duplicates:
            print(f"duplicates: {result.duplicates_explained()}", flush=True)
        if result.unexplained:
            print(f"UNEXPLAINED DUPLICATES: {result.unexplained}", flush=True)
        if result.lost:
            print(f"LOST: {result.lost}", flush=True)
        if result.problems:
            print("\n".join(result.problems), flush=True)

    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="crash-matrix-")) if args.keep else \
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-matrix-")))
        for backend in backends:
            stores: Stores = SqliteStores() if backend == "sqlite" else \
                PostgresStores(stack.enter_context(postgres_database()))
            results += run_matrix(root / backend, stores, size, args.seed, cases, report,
                                  workers=args.workers)
        if args.keep:
            print(f"data kept in {root}")
    print()
    print(table(results))
    lost = sum(len(r.lost) for r in results)
    causes: Counter[str] = sum((r.duplicate_causes for r in results), Counter())
    by_cause = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items()))
    print(f"\n{sum(r.acknowledged for r in results)} acknowledged, {lost} lost, "
          f"{sum(r.duplicates for r in results)} duplicates at foreign/legacy recipients"
          + (f" ({by_cause})" if by_cause else ""))
    return 1 if lost or any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
