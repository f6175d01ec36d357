"""Short writes and reads on a SQLite file: statements on the reactor thread, the commit on
the writer.

``QueueDatabase.write_short`` runs a short job's statements on the reactor thread and leaves
only the ``COMMIT`` to the writer thread; every write still takes its turn in one queue, a
failing job still fails alone, and the reactor never waits for SQLite's write lock.
``read_short`` runs a short read there too, and on a reader thread whatever is not short.
These tests use the real reactor and a real SQLite file (the database runs real threads).
"""

from __future__ import annotations

import io
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from queue_db_helpers import hold_writer
from sqlalchemy import event
from sqlalchemy.engine import Connection
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.trial import unittest

from exchange_emu.smtp.body import PrefixedBody
from exchange_emu.storage import (
    NewMessage,
    NotShort,
    QueueDatabase,
    QueueStore,
    short_write,
    tables,
)
from exchange_emu.storage import queue as q
from exchange_emu.storage.database import SHORT_WRITE_BODY_BYTES, SHORT_WRITE_ROWS
from exchange_emu.transport import jobs
from exchange_emu.transport.engine import _session_writer

if TYPE_CHECKING:
    from conftest import QueueDbUrl

reactor = IReactorFromThreads(global_reactor)


def _message(n: int, body: bytes | None = None) -> NewMessage:
    return NewMessage(sender=f"alice{n}@contoso.test", recipients=(f"erin{n}@fabrikam.test",),
                      body=body or f"Subject: test {n}\r\n\r\nhello {n}\r\n".encode(),
                      received_at=1_000.0 + n, subject=f"test {n}")


def _accept_on(threads: list[str], n: int) -> Any:
    """A write job that accepts message ``n`` and notes the thread it ran on."""

    def job(conn: Connection) -> int:
        threads.append(threading.current_thread().name)
        return q.accept_message(conn, _message(n))

    return job


REACTOR = threading.main_thread().name
WRITER = "queue-db-writer"


@pytest.mark.usefixtures("sqlite_queue_db")
class ShortWriteTests(unittest.TestCase):
    queue_db: QueueDbUrl

    def open_db(self, **kwargs: Any) -> QueueDatabase:
        db = QueueDatabase(self.queue_db.url, reactor=reactor, **kwargs)
        db.open()
        self.addCleanup(db.stopService)
        return db


    async def test_statements_run_on_the_reactor_and_the_commit_on_the_writer(self) -> None:
        db = self.open_db()
        ran: list[str] = []
        committed: list[str] = []
        event.listen(db.engine, "commit",
                     lambda conn: committed.append(threading.current_thread().name))
        internal_id = await db.write_short(_accept_on(ran, 1))
        await db.write(_accept_on(ran, 2))
        self.assertEqual(ran, [REACTOR, WRITER])  # a short write here, a long one there
        self.assertEqual(committed, [WRITER, WRITER])  # the commits never on the reactor
        self.assertEqual(await QueueStore(db).count_messages(), 2)
        self.assertGreater(internal_id, 0)

    async def test_short_and_long_writes_keep_the_order_they_were_asked_in(self) -> None:
        db = self.open_db()
        ran: list[str] = []
        gate, held = hold_writer(db)
        asked = [db.write_short(_accept_on(ran, 1)), db.write(_accept_on(ran, 2)),
                 db.write_short(_accept_on(ran, 3)), db.write_short(_accept_on(ran, 4))]
        before = db.commits
        gate.set()
        await held
        ids = await defer.gatherResults(asked)
        self.assertEqual(ids, sorted(ids))  # InternalIds increase in the order asked
        self.assertEqual(db.commits - before, 2)  # the holding job, then the four as one batch
        self.assertEqual(ran, [WRITER] * 4)  # a batch with a long write runs on the writer

    async def test_writes_asked_for_during_a_commit_share_the_next_one(self) -> None:
        db = self.open_db()
        ran: list[str] = []
        gate, held = hold_writer(db)
        asked = [db.write_short(_accept_on(ran, n)) for n in range(20)]
        before = db.commits
        gate.set()
        await held
        await defer.gatherResults(asked)
        self.assertEqual(db.commits - before, 2)
        self.assertEqual(ran, [REACTOR] * 20)

    async def test_a_failing_short_job_fails_alone(self) -> None:
        db = self.open_db()
        store = QueueStore(db)

        class Boom(Exception):
            pass

        def faulty(conn: Connection) -> None:
            q.accept_message(conn, _message(666))
            raise Boom("faulty job")

        gate, held = hold_writer(db)
        good = [store.accept_message(_message(n)) for n in range(3)]
        bad = db.write_short(faulty)
        good += [store.accept_message(_message(n)) for n in range(3, 6)]
        gate.set()
        await held
        ids = await defer.gatherResults(good)
        await self.assertFailure(bad, Boom)
        self.assertEqual(len(set(ids)), 6)
        self.assertEqual(db.batch_failures, 1)
        listed = await store.list_messages()
        self.assertEqual(sorted(m.subject for m in listed), [f"test {n}" for n in range(6)])

    async def test_the_reactor_never_waits_for_the_write_lock(self) -> None:
        """Another connection holds SQLite's write lock: the short write does not start on
        the reactor (whose BEGIN does not wait) but on the writer thread, which waits for
        the lock. The lock is let go 0.2 s later from a thread of the test's own: had the
        reactor waited in its BEGIN, the job would have run there."""
        db = self.open_db(busy_timeout=5.0)
        path = sa.make_url(self.queue_db.url).database
        assert path is not None
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.2, other.execute, ("ROLLBACK",))
        self.addCleanup(release.cancel)
        ran: list[str] = []
        release.start()
        first = db.write_short(_accept_on(ran, 1))
        self.assertFalse(first.called)
        await first
        self.assertEqual(ran, [WRITER])
        await db.write_short(_accept_on(ran, 2))  # and the next one runs here again
        self.assertEqual(ran, [WRITER, REACTOR])
        self.assertEqual(await QueueStore(db).count_messages(), 2)

    async def test_stopping_finishes_the_short_writes_waiting(self) -> None:
        db = self.open_db()
        store = QueueStore(db)
        gate, held = hold_writer(db)
        done: list[int] = []
        for n in range(30):
            store.accept_message(_message(n)).addCallback(done.append)
        stopping = db.stopService()
        late = store.accept_message(_message(99))
        gate.set()
        await held
        await stopping
        self.assertEqual(len(done), 30)
        await self.assertFailure(late, Exception)
        engine = sa.create_engine(self.queue_db.url)
        try:
            with engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(tables.messages))
                self.assertEqual(count.scalar_one(), 30)
        finally:
            engine.dispose()

    async def test_a_large_body_is_accepted_as_a_long_write(self) -> None:
        db = self.open_db()
        calls: list[str] = []
        write, write_short = db.write, db.write_short

        def note(name: str, method: Any) -> Any:
            def noted(*args: Any) -> Any:
                calls.append(name)
                return method(*args)
            return noted

        db.write = note("write", write)  # type: ignore[method-assign]
        db.write_short = note("write_short", write_short)  # type: ignore[method-assign]
        store = QueueStore(db)
        await store.accept_message(_message(1))
        large = b"Subject: large\r\n\r\n" + b"x" * SHORT_WRITE_BODY_BYTES
        await store.accept_message(_message(2, io.BytesIO(large)))  # type: ignore[arg-type]
        self.assertEqual(calls, ["write_short", "write"])


@pytest.mark.usefixtures("sqlite_queue_db")
class ShortReadTests(unittest.TestCase):
    queue_db: QueueDbUrl

    def open_db(self) -> QueueDatabase:
        db = QueueDatabase(self.queue_db.url, reactor=reactor)
        db.open()
        self.addCleanup(db.stopService)
        return db

    async def queued(self, db: QueueDatabase, *bodies: bytes) -> list[int]:
        store = QueueStore(db)
        return [await store.accept_message(NewMessage(
            sender="a@contoso.test", recipients=("b@fabrikam.test",), body=body,
            received_at=1.0, queue="hop")) for body in bodies]

    async def test_a_short_read_runs_on_the_reactor_at_its_next_turn(self) -> None:
        db = self.open_db()
        ids = await self.queued(db, b"Subject: a\r\n\r\nshort\r\n")
        threads: list[str] = []

        def load(conn: Connection) -> list[jobs.DeliveryItem]:
            threads.append(threading.current_thread().name)
            return jobs.load_short_delivery(conn, "hop", ids)

        d = db.read_short(load, jobs.load_delivery)
        self.assertFalse(d.called)  # (the replies written in this turn go out first)
        items = await d
        self.assertEqual([item.body for item in items], [b"Subject: a\r\n\r\nshort\r\n"])
        self.assertEqual(threads, [REACTOR])
        self.assertEqual(db.short_reads_refused, 0)

    async def test_bodies_over_the_limit_are_read_on_a_reader_thread(self) -> None:
        db = self.open_db()
        large = b"Subject: b\r\n\r\n" + b"y" * SHORT_WRITE_BODY_BYTES
        ids = await self.queued(db, b"Subject: a\r\n\r\nsmall\r\n", large)
        threads: list[str] = []

        def short(conn: Connection) -> list[jobs.DeliveryItem]:
            threads.append(threading.current_thread().name)
            return jobs.load_short_delivery(conn, "hop", ids)

        def load(conn: Connection) -> list[jobs.DeliveryItem]:
            threads.append(threading.current_thread().name)
            return jobs.load_delivery(conn, "hop", ids)

        items = await db.read_short(short, load)
        self.assertEqual(sorted(len(item.body) for item in items)[-1], len(large))
        self.assertEqual(threads[0], REACTOR)  # it found the bodies too long …
        self.assertTrue(threads[1].startswith("queue-db-reader"))  # … and a reader read them
        self.assertEqual(db.short_reads_refused, 1)
        engine = sa.create_engine(self.queue_db.url)
        try:
            with engine.connect() as conn, self.assertRaises(NotShort):
                jobs.load_short_delivery(conn, "hop", ids)
        finally:
            engine.dispose()

    async def test_a_short_read_does_not_wait_for_a_writer(self) -> None:
        """WAL: another connection holding the write lock does not stop the read."""
        db = self.open_db()
        ids = await self.queued(db, b"Subject: a\r\n\r\nshort\r\n")
        path = sa.make_url(self.queue_db.url).database
        assert path is not None
        other = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        self.assertEqual(
            len(await db.read_short(jobs.load_short_delivery, jobs.load_delivery, "hop", ids)), 1)
        self.assertEqual(db.short_reads_refused, 0)
        other.execute("ROLLBACK")


class _NoTell:
    def read(self) -> bytes:
        return b""


def test_body_size_of_bytes_files_and_a_received_header_before_a_spool() -> None:
    spool = io.BytesIO(b"0123456789")
    spool.seek(4)
    assert q.body_size(b"abc") == 3
    assert q.body_size(spool) == 10 and spool.tell() == 4  # (the position is kept)
    assert q.body_size(PrefixedBody(b"Received: x\r\n", io.BytesIO(b"body"))) == 17
    assert q.body_size(_NoTell()) is None  # type: ignore[arg-type]


def test_short_write_limits() -> None:
    assert short_write(SHORT_WRITE_ROWS, SHORT_WRITE_BODY_BYTES)
    assert not short_write(SHORT_WRITE_ROWS + 1)
    assert not short_write(1, SHORT_WRITE_BODY_BYTES + 1)


def test_a_session_failing_a_recipient_is_recorded_as_a_long_write(tmp_path: Path) -> None:
    """Recording a session is short unless it is large or fails a recipient (the NDR it
    writes carries the message's body)."""
    db = QueueDatabase(f"sqlite:///{tmp_path / 'q.db'}", reactor=reactor)
    delivered = jobs.MessageResult(1, delivered=((1, "250 ok"),))
    failed = jobs.MessageResult(2, failed=((2, "550 no"),))
    many = [jobs.MessageResult(n, deferred=((n, "451 later"),))
            for n in range(SHORT_WRITE_ROWS + 1)]
    assert _session_writer(db, [delivered]) == db.write_short
    assert _session_writer(db, [delivered, failed]) == db.write
    assert _session_writer(db, many) == db.write
