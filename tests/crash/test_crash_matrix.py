"""The crash matrix at its small size (docs/crash-matrix.md): for every scenario A–F and
every server on its path, that server is SIGKILLed at a seeded random instant while
messages flow, and restarted (or not); every acknowledged message must then be in its
destination mailbox exactly once, or at a foreign/legacy recipient at least once, every
extra copy there with a cause the tracking logs show (a takeover, or sent again).

The seed is EXCHANGE_EMU_CRASH_SEED (a fixed default): a failing run is reproduced with
``benchmarks/crash.py --size small --seed N --only SCENARIO:SERVER``."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange_emu.lab.crash_matrix import (
    CASES,
    ROUTES,
    SMALL,
    CaseResult,
    PostgresStores,
    SqliteStores,
    Stores,
    environment_seed,
    run_matrix,
    table,
)

pytestmark = pytest.mark.integration


def check(results: list[CaseResult]) -> None:
    print("\n" + table(results))
    assert [(r.case.scenario, r.case.killed) for r in results] == \
        [(c.scenario, c.killed) for c in CASES]
    for result in results:
        where = f"{result.backend} {result.case}"
        assert result.trials == SMALL.trials, where
        assert result.sent == SMALL.trials * SMALL.messages, where
        # Something got through in every case, so there was something to lose.
        assert result.acknowledged > 0, where
        assert not result.lost, f"{where}: LOST {result.lost}\n" + "\n".join(result.problems)
        assert not result.problems, f"{where}:\n" + "\n".join(result.problems)
        if ROUTES[result.case.scenario].destination.startswith("MBX"):
            assert result.duplicates == 0, where
        # Every extra copy at a foreign/legacy recipient has a documented cause.
        assert not result.unexplained, f"{where}: duplicates no cause explains: " \
            f"{result.unexplained}"


def run(tmp_path: Path, stores: Stores) -> list[CaseResult]:
    # Four labs at a time: the matrix is mostly waiting (start-up, retries, heartbeats).
    return run_matrix(tmp_path, stores, SMALL, environment_seed(), CASES, workers=4)


def test_crash_matrix_sqlite(tmp_path: Path) -> None:
    check(run(tmp_path, SqliteStores()))


@pytest.mark.postgresql
def test_crash_matrix_postgresql(tmp_path: Path, storage_postgresql_database: str) -> None:
    check(run(tmp_path, PostgresStores(storage_postgresql_database)))
