"""The transport dumpster (C.2) on a hub: size and age limits, oldest out first,
truncation by replication, and redelivery after a lossy failover."""

from __future__ import annotations

import pytest
from twisted.internet import reactor

from exchange_emu.storage import QueueDatabase
from exchange_emu.transport import jobs

NOW = 1795870800.0


def envelope(n: int) -> jobs.Envelope:
    return jobs.Envelope(n, f"<d{n}@contoso.test>", "alice@contoso.test", "s", 100, "SMTP",
                         NOW, None, None)


@pytest.fixture
def db(queue_db):
    database = QueueDatabase(queue_db.url, reactor=reactor)
    database.open()
    yield database
    database.engine.dispose()


def put(db, n: int, at: float, size: int = 100, max_size: int = 10_000,
        max_age: float = 3600) -> None:
    with db.engine.begin() as conn:
        jobs.add_to_dumpster(conn, "DB02", [(envelope(n), ["carol@contoso.test"], NOW,
                                             b"x" * size)], at, max_size, max_age)


def contents(db) -> list[str]:
    with db.engine.begin() as conn:
        return [e.message_id for e in jobs.dumpster_contents(conn, "DB02")]


def test_size_limit_drops_the_oldest_first(db):
    for n in range(5):
        put(db, n, NOW + n, size=100, max_size=350)
    assert contents(db) == ["<d2@contoso.test>", "<d3@contoso.test>", "<d4@contoso.test>"]


def test_age_limit(db):
    put(db, 1, NOW)
    put(db, 2, NOW + 3000)
    put(db, 3, NOW + 3601)  # now the first is older than MaxDumpsterTime
    assert contents(db) == ["<d2@contoso.test>", "<d3@contoso.test>"]


def test_replicated_items_leave(db):
    for n in range(3):
        put(db, n, NOW + n)
    with db.engine.begin() as conn:
        jobs.truncate_dumpster(conn, "DB02", NOW + 3, 10_000, 3600, replicated_up_to=NOW + 2)
    assert contents(db) == ["<d2@contoso.test>"]


def test_redelivery_resubmits_what_was_delivered_since(db):
    for n in range(3):
        put(db, n, NOW + n * 10)
    with db.engine.begin() as conn:
        ids = jobs.redeliver_from_dumpster(conn, "DB02", NOW + 10, NOW + 100)
        submitted = jobs.load_submission(conn, ids)
    assert [s.envelope.message_id for s in submitted] == ["<d1@contoso.test>",
                                                          "<d2@contoso.test>"]
    assert [r.address for r in submitted[0].recipients] == ["carol@contoso.test"]
    assert submitted[0].envelope.source == "DUMPSTER"
