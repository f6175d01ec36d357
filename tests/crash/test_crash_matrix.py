"""The crash matrix at its small size (docs/crash-matrix.md): for every scenario A–F and
every server on its path, that server is SIGKILLed at a seeded random instant while
messages flow, and restarted (or not); every acknowledged message must then be in its
destination mailbox exactly once, or at a foreign/legacy recipient at least once, every
extra copy there with a cause the tracking logs show (a takeover, or sent again).

The seed is EXCHANGE_EMU_CRASH_SEED (a fixed default): a failing run is reproduced with
``benchmarks/crash.py --size small --seed N --only SCENARIO:SERVER``."""

from __future__ import annotations

from collections import Counter
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
    Trial,
    environment_seed,
    run_case,
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


def test_a_message_the_trial_never_sent_fails_the_case(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy at the destination that this trial did not send means another lab's server
    shares its port (labs run side by side): the case must say so, not pass."""
    stray = "<crash-another-lab-1@contoso.test>"
    read = Trial.destination_copies

    def with_a_stray(trial: Trial) -> Counter[str]:
        copies = read(trial)
        copies[stray] += 1
        return copies

    monkeypatch.setattr(Trial, "destination_copies", with_a_stray)
    case = next(c for c in CASES if (c.scenario, c.killed) == ("E", "LEGACY01"))
    result = run_case(case, tmp_path, SqliteStores(), SMALL, environment_seed())
    assert result.acknowledged > 0
    assert not result.lost
    assert [p for p in result.problems if "never sent" in p and stray in p], result.problems
