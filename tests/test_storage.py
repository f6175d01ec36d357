"""Tests for exchange_emu.storage: the transport server's queue database (Exchange's mail.que).

The same behaviour suite runs against SQLite (WAL file) and PostgreSQL. Asynchronous tests are
``twisted.trial`` TestCases driven by the global reactor, because the database really runs on
threads; synchronous start-up and migration checks are plain pytest functions over the
parametrized ``queue_db`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import base64
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from queue_db_helpers import hold_writer
from sqlalchemy.engine import Connection
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.trial import unittest

from exchange_emu.storage import (
    MIGRATIONS,
    MessageNotFoundError,
    MessageState,
    Migration,
    NewMessage,
    QueueDatabase,
    QueueStore,
    Recipient,
    SchemaVersionError,
    StorageError,
    tables,
)
from exchange_emu.storage import queue as q
from exchange_emu.storage.engine import create_queue_engine, display_url
from exchange_emu.storage.migrations import check_migrations, get_version, upgrade
from exchange_emu.transport import jobs

if TYPE_CHECKING:
    from conftest import QueueDbUrl  # the fixtures' value type (tests/conftest.py)

CURRENT = MIGRATIONS[-1].version

#: The real reactor (the database runs real threads), adapted to what QueueDatabase needs.
reactor = IReactorFromThreads(global_reactor)


def _message(n: int = 0, **overrides: Any) -> NewMessage:
    fields: dict[str, Any] = {
        "sender": f"alice{n}@contoso.test",
        "recipients": (f"erin{n}@fabrikam.test",),
        "body": f"Subject: test {n}\r\n\r\nhello {n}\r\n".encode(),
        "received_at": 1_000.0 + n,
        "message_id": f"<{n}@contoso.test>",
        "subject": f"test {n}",
    }
    fields.update(overrides)
    return NewMessage(**fields)


def _add_table_v2(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE primaries ADD COLUMN note VARCHAR(40)")
    conn.exec_driver_sql("CREATE TABLE extra_v2 (id INTEGER PRIMARY KEY, label VARCHAR(20))")


NEXT = CURRENT + 1
V2 = Migration(NEXT, "test: add primaries.note and extra_v2", _add_table_v2)


class _QueueDatabaseBehaviour:
    """Behaviour shared by every backend; mixed into one trial TestCase per backend."""

    queue_db: QueueDbUrl
    addCleanup: Callable[..., None]
    assertEqual: Callable[..., None]
    assertTrue: Callable[..., None]
    assertIsNone: Callable[..., None]
    assertIn: Callable[..., None]
    assertLessEqual: Callable[..., None]
    assertGreater: Callable[..., None]
    assertRaises: Callable[..., Any]
    assertFailure: Callable[..., defer.Deferred[Any]]

    # --- helpers ---------------------------------------------------------------------------

    def open_db(self, **kwargs: Any) -> QueueDatabase:
        db = QueueDatabase(self.queue_db.url, reactor=reactor, **kwargs)
        db.open()
        self.addCleanup(db.stopService)
        return db


    def raw_count(self, table: sa.Table) -> int:
        """Count rows through an engine of our own (what a restarted server would see)."""
        engine = create_queue_engine(self.queue_db.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        finally:
            engine.dispose()

    # --- lifecycle and identity ------------------------------------------------------------

    def test_open_creates_schema_and_database_guid(self) -> None:
        """Opening an empty database migrates it to the newest version and gives it a GUID
        whose base64 form is what XSHADOW answers."""
        db = self.open_db()
        self.assertEqual(db.schema_version, CURRENT)
        self.assertEqual(db.database_id.version, 4)
        text = db.database_id_base64
        self.assertEqual(len(text), 24)
        self.assertTrue(text.endswith("=="))
        self.assertEqual(base64.b64decode(text), db.database_id.bytes)
        names = set(sa.inspect(db.engine).get_table_names())
        for table in tables.metadata.sorted_tables:
            self.assertIn(table.name, names)

    async def test_reopen_keeps_guid_and_wipe_makes_new_one(self) -> None:
        """The GUID lives with the database: reopening keeps it, a recreated database gets
        a new one (what makes a shadow holder resubmit)."""
        first = self.open_db()
        guid = first.database_id
        await first.stopService()
        second = self.open_db()
        self.assertEqual(second.database_id, guid)
        await second.stopService()
        self.queue_db.wipe()
        third = self.open_db()
        self.assertTrue(third.database_id != guid)

    async def test_start_service_after_privileged_start_is_noop(self) -> None:
        """privilegedStartService opens; startService then reuses the same engine."""
        db = QueueDatabase(self.queue_db.url, reactor=reactor)
        self.addCleanup(db.stopService)
        db.privilegedStartService()
        engine = db.engine
        db.startService()
        self.assertTrue(db.running)
        self.assertTrue(db.engine is engine)
        db.open()
        self.assertTrue(db.engine is engine)
        await db.stopService()
        self.assertTrue(not db.running and not db.is_open)

    async def test_jobs_refused_when_not_open(self) -> None:
        """Jobs before open or after stop errback with StorageError."""
        db = QueueDatabase(self.queue_db.url, reactor=reactor)
        await self.assertFailure(QueueStore(db).count_messages(), StorageError)
        db.open()
        await db.stopService()
        await self.assertFailure(QueueStore(db).accept_message(_message()), StorageError)

    async def test_a_reader_keeps_its_connection_until_a_read_fails(self) -> None:
        """A reader thread reuses its connection (no pool check-out, pre-ping and reset per
        read) and checks out another after a failed read."""
        db = self.open_db(readers=1)
        checkouts: list[object] = []
        sa.event.listen(db.engine, "checkout", lambda *args: checkouts.append(args))

        def fail(conn: Connection) -> None:
            raise RuntimeError("this read fails")

        def one(conn: Connection) -> Any:
            return conn.exec_driver_sql("SELECT 1").scalar()

        assert [await db.read(one), await db.read(one)] == [1, 1]
        await self.assertFailure(db.read(fail), RuntimeError)
        self.assertEqual(await db.read(one), 1)
        self.assertEqual(len(checkouts), 2)

    async def test_results_fire_on_reactor_thread(self) -> None:
        """Jobs run on the database's threads; their Deferreds fire on the reactor thread."""
        db = self.open_db()
        seen: list[str] = []

        def where(conn: Connection) -> str:
            return threading.current_thread().name

        writer = await db.write(where)
        reader = await db.read(where)
        seen.append(threading.current_thread().name)
        self.assertEqual(writer, "queue-db-writer")
        self.assertTrue(reader.startswith("queue-db-reader"))
        self.assertTrue(threading.current_thread() is threading.main_thread())

    async def test_live_results_may_not_escape(self) -> None:
        """A job returning a Result or Row (instead of plain values) errbacks TypeError."""
        db = self.open_db()

        def leaky(conn: Connection) -> Any:
            return conn.execute(sa.select(sa.literal(1)))

        def leaky_row(conn: Connection) -> Any:
            return conn.execute(sa.select(sa.literal(1))).one()

        await self.assertFailure(db.read(leaky), TypeError)
        await self.assertFailure(db.write(leaky_row), TypeError)
        self.assertEqual(await db.read(lambda conn: conn.execute(sa.select(1)).scalar_one()), 1)

    # --- messages --------------------------------------------------------------------------

    async def test_accept_and_get_round_trip(self) -> None:
        """Every envelope field and the body come back as stored."""
        store = QueueStore(self.open_db())
        new = _message(
            7,
            recipients=(
                "bob@contoso.test",
                Recipient("carol@fabrikam.test", notify="SUCCESS,FAILURE", orcpt="rfc822;c@f"),
            ),
            body=b"\x00\x01binary\r\n\xff",
            source="STOREDRIVER",
            client_ip="192.0.2.7",
            client_hostname="mbx01.contoso.test",
            receive_connector="Default HUB01",
            hop_count=3,
            body_type="BINARYMIME",
            dsn_envid="env-7",
            dsn_ret="HDRS",
            xexch50=b"\x01\x02\x03",
            shadow_context="Y3R4",
            shadow_message_id="5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d21",
            delayed_ack=True,
            expires_at=2_000.5,
            origin_server="edge01.contoso.test",
            subject="Grüße",
        )
        internal_id = await store.accept_message(new)
        got = await store.get_message(internal_id)
        assert got is not None
        self.assertEqual(got.internal_id, internal_id)
        self.assertEqual(got.message_id, "<7@contoso.test>")
        self.assertEqual(got.sender, "alice7@contoso.test")
        self.assertEqual(got.size, len(b"\x00\x01binary\r\n\xff"))
        self.assertEqual(got.received_at, 1_007.0)
        self.assertEqual(
            (got.source, got.client_ip, got.client_hostname, got.receive_connector),
            ("STOREDRIVER", "192.0.2.7", "mbx01.contoso.test", "Default HUB01"),
        )
        self.assertEqual((got.subject, got.hop_count, got.body_type), ("Grüße", 3, "BINARYMIME"))
        self.assertEqual((got.dsn_envid, got.dsn_ret, got.xexch50), ("env-7", "HDRS", b"\1\2\3"))
        self.assertEqual(
            (got.shadow_context, got.shadow_message_id, got.delayed_ack),
            ("Y3R4", "5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d21", True),
        )
        self.assertEqual(
            (got.state, got.expires_at, got.crash_count, got.origin_server),
            ("queued", 2_000.5, 0, "edge01.contoso.test"),
        )
        self.assertEqual(
            [r.address for r in got.recipients], ["bob@contoso.test", "carol@fabrikam.test"]
        )
        for r in got.recipients:
            self.assertEqual((r.status, r.queue, r.retry_count), ("ready", "Submission", 0))
        self.assertEqual(got.recipients[1].notify, "SUCCESS,FAILURE")
        self.assertEqual(got.recipients[1].orcpt, "rfc822;c@f")
        self.assertEqual(await store.get_body(internal_id), b"\x00\x01binary\r\n\xff")

    async def test_body_from_spooled_file(self) -> None:
        """A body given as a file is read from position 0 on the database thread and the
        file is left open for its owner."""
        store = QueueStore(self.open_db())
        payload = b"Subject: big\r\n\r\n" + b"x" * 300_000
        with tempfile.TemporaryFile() as spool:
            spool.write(payload)  # position is now at the end
            internal_id = await store.accept_message(_message(body=spool))
            self.assertTrue(not spool.closed)
        self.assertEqual(await store.get_body(internal_id), payload)
        got = await store.get_message(internal_id)
        assert got is not None
        self.assertEqual(got.size, len(payload))

    async def test_missing_message(self) -> None:
        """An unknown InternalId gives None, and its body MessageNotFoundError."""
        store = QueueStore(self.open_db())
        self.assertIsNone(await store.get_message(12345))
        await self.assertFailure(store.get_body(12345), MessageNotFoundError)

    async def test_internal_ids_increase_and_are_never_reused(self) -> None:
        """InternalIds grow even across deletion of the newest message."""
        store = QueueStore(self.open_db())
        first = await store.accept_message(_message(1))
        second = await store.accept_message(_message(2))
        self.assertTrue(await store.delete_message(second))
        third = await store.accept_message(_message(3))
        self.assertTrue(first < second < third)

    async def test_delete_removes_recipients_and_shadows(self) -> None:
        """Deleting a message cascades to its recipients and shadow records."""
        store = QueueStore(self.open_db())
        internal_id = await store.accept_message(_message(recipients=("a@x", "b@x")))
        await store.add_shadow(internal_id, "edge01", str(uuid.uuid4()), 5.0)
        self.assertTrue(await store.delete_message(internal_id))
        self.assertTrue(not await store.delete_message(internal_id))
        self.assertEqual(self.raw_count(tables.recipients), 0)
        self.assertEqual(self.raw_count(tables.shadow_messages), 0)

    async def test_count_and_list_messages(self) -> None:
        """Counting by state; listing filters by state and queue and pages by InternalId."""
        store = QueueStore(self.open_db())
        ids = [await store.accept_message(_message(n)) for n in range(5)]
        await store.accept_message(_message(9, queue="fabrikam.test"))
        await store.set_message_state(ids[0], MessageState.POISON)
        self.assertEqual(await store.count_messages(), 6)
        self.assertEqual(await store.count_messages(MessageState.QUEUED), 5)
        self.assertEqual(await store.count_messages("poison"), 1)
        page = await store.list_messages(limit=2)
        self.assertEqual([m.internal_id for m in page], ids[:2])
        self.assertEqual(page[0].recipient_count, 1)
        page2 = await store.list_messages(after_id=page[-1].internal_id, limit=2)
        self.assertEqual([m.internal_id for m in page2], ids[2:4])
        poison = await store.list_messages(state="poison")
        self.assertEqual([m.internal_id for m in poison], [ids[0]])
        hop = await store.list_messages(queue="fabrikam.test")
        self.assertEqual([m.subject for m in hop], ["test 9"])

    # --- group commit ----------------------------------------------------------------------

    async def test_concurrent_accepts_share_commits(self) -> None:
        """200 messages accepted in one reactor turn commit in a handful of transactions."""
        db = self.open_db()
        store = QueueStore(db)
        before = db.commits
        ids = await defer.gatherResults([store.accept_message(_message(n)) for n in range(200)])
        commits = db.commits - before
        self.assertEqual(len(set(ids)), 200)
        self.assertLessEqual(commits, 20)
        self.assertEqual(await store.count_messages(), 200)

    async def test_waiting_jobs_commit_as_one_batch(self) -> None:
        """Jobs queued while the writer is busy all commit together in one transaction."""
        db = self.open_db()
        store = QueueStore(db)
        before = db.commits
        gate, held = hold_writer(db)
        pending = [store.accept_message(_message(n)) for n in range(100)]
        gate.set()
        await held
        await defer.gatherResults(pending)
        self.assertEqual(db.commits - before, 2)  # the holding job, then the 100 messages

    async def test_batch_size_is_bounded(self) -> None:
        """With max_batch=10, 50 waiting jobs take exactly 5 commits."""
        db = self.open_db(max_batch=10)
        store = QueueStore(db)
        gate, held = hold_writer(db)
        before = db.commits + 1
        pending = [store.accept_message(_message(n)) for n in range(50)]
        gate.set()
        await held
        await defer.gatherResults(pending)
        self.assertEqual(db.commits - before, 5)

    async def test_failing_job_errbacks_alone(self) -> None:
        """A job that raises in a batch fails only its own Deferred; its partial writes are
        rolled back and the other jobs of the batch still commit."""
        db = self.open_db()
        store = QueueStore(db)

        class Boom(Exception):
            pass

        def faulty(conn: Connection) -> int:
            q.accept_message(conn, _message(666))
            raise Boom("faulty job")

        gate, held = hold_writer(db)
        good_before = [store.accept_message(_message(n)) for n in range(5)]
        bad = db.write(faulty)
        good_after = [store.accept_message(_message(n)) for n in range(5, 10)]
        gate.set()
        await held
        ids = await defer.gatherResults(good_before + good_after)
        await self.assertFailure(bad, Boom)
        self.assertEqual(len(set(ids)), 10)
        self.assertEqual(db.batch_failures, 1)
        self.assertEqual(await store.count_messages(), 10)
        listed = await store.list_messages()
        self.assertTrue(all(m.subject != "test 666" for m in listed))

    async def test_constraint_violation_fails_only_that_job(self) -> None:
        """A foreign-key violation (shadow for a message that does not exist) fails only that
        write: foreign keys are enforced on every backend."""
        db = self.open_db()
        store = QueueStore(db)
        gate, held = hold_writer(db)
        ok = store.accept_message(_message(1))
        orphan = store.add_shadow(999_999, "edge01", str(uuid.uuid4()), 1.0)
        ok2 = store.accept_message(_message(2))
        gate.set()
        await held
        await defer.gatherResults([ok, ok2])
        await self.assertFailure(orphan, sa.exc.IntegrityError)
        self.assertEqual(await store.count_messages(), 2)

    async def test_write_fires_only_after_commit(self) -> None:
        """When accept_message's Deferred fires, another connection already sees the
        message: the acknowledgement is durable."""
        store = QueueStore(self.open_db())
        visible: list[int] = []
        d = store.accept_message(_message(1))
        d.addCallback(lambda _id: visible.append(self.raw_count(tables.messages)))
        await d
        self.assertEqual(visible, [1])

    # --- stopping --------------------------------------------------------------------------

    async def test_stop_drains_pending_jobs(self) -> None:
        """stopService finishes every queued job (and fires its Deferred) before it fires;
        the work is in the database afterwards."""
        db = self.open_db()
        store = QueueStore(db)
        gate, held = hold_writer(db)
        done: list[int] = []
        for n in range(50):
            store.accept_message(_message(n)).addCallback(done.append)
        stopping = db.stopService()
        again = db.stopService()
        late = store.accept_message(_message(99))
        global_reactor.callLater(0.05, gate.set)
        await stopping
        await again
        await held
        self.assertEqual(len(done), 50)
        await self.assertFailure(late, StorageError)
        self.assertEqual(self.raw_count(tables.messages), 50)

    # --- discard notifications -------------------------------------------------------------

    async def test_take_discard_notifications(self) -> None:
        """XQDISCARD hands over only the asking context's ids, at most `limit`, oldest
        first, and removes them durably."""
        db = self.open_db()
        store = QueueStore(db)
        await store.add_discard_notifications("ctxA", ["a3", "a4"], now=30.0)
        await store.add_discard_notifications("ctxB", ["b1"], now=5.0)
        await store.add_discard_notifications("ctxA", ["a1", "a2"], now=10.0)
        self.assertEqual(await store.count_discard_notifications(), 5)
        self.assertEqual(await store.count_discard_notifications("ctxA"), 4)
        self.assertEqual(await store.take_discard_notifications("ctxA", 3), ["a1", "a2", "a3"])
        await db.stopService()

        db2 = self.open_db()
        store2 = QueueStore(db2)
        self.assertEqual(await store2.count_discard_notifications("ctxA"), 1)
        self.assertEqual(await store2.take_discard_notifications("ctxA", 50), ["a4"])
        self.assertEqual(await store2.take_discard_notifications("ctxA", 50), [])
        self.assertEqual(await store2.take_discard_notifications("ctxB", 50), ["b1"])
        await self.assertFailure(store2.take_discard_notifications("ctxA", 0), ValueError)

    async def test_discard_notifications_dedupe_and_expire(self) -> None:
        """An id already waiting for a context is not queued twice; old ones expire."""
        store = QueueStore(self.open_db())
        self.assertEqual(await store.add_discard_notifications("c", ["x", "y", "x"], 1.0), 2)
        self.assertEqual(await store.add_discard_notifications("c", ["y", "z"], 2.0), 1)
        self.assertEqual(await store.add_discard_notifications("other", ["x"], 3.0), 1)
        self.assertEqual(await store.expire_discard_notifications(older_than=2.0), 2)
        self.assertEqual(await store.take_discard_notifications("c", 50), ["z"])
        self.assertEqual(await store.count_discard_notifications("other"), 1)

    # --- shadows and primaries -------------------------------------------------------------

    async def test_shadow_queue_per_primary(self) -> None:
        """Shadow records are kept per primary; discards remove them, and a shadow-only
        message goes once no primary shadows it any more."""
        store = QueueStore(self.open_db())
        shadow_only = await store.accept_message(_message(1, state=MessageState.SHADOW))
        still_queued = await store.accept_message(_message(2))
        s1, s2, s3 = (str(uuid.uuid4()) for _ in range(3))
        await store.add_shadow(shadow_only, "edge01.contoso.test", s1, now=10.0)
        await store.add_shadow(shadow_only, "hub02.contoso.test", s2, now=11.0)
        await store.add_shadow(still_queued, "edge01.contoso.test", s3, now=5.0)
        edge = await store.shadows_for("edge01.contoso.test")
        self.assertEqual(
            [(r.internal_id, r.shadow_message_id) for r in edge],
            [(still_queued, s3), (shadow_only, s1)],
        )
        self.assertEqual(edge[0].created_at, 5.0)
        self.assertEqual(
            await store.shadow_primaries(), {"edge01.contoso.test": 2, "hub02.contoso.test": 1}
        )
        await self.assertFailure(
            store.add_shadow(still_queued, "edge01.contoso.test", s3, now=6.0),
            sa.exc.IntegrityError,
        )
        self.assertEqual(await store.remove_shadows("edge01.contoso.test", [s1, s3, "nope"]), 2)
        self.assertTrue(await store.get_message(shadow_only) is not None)  # hub02 still has it
        self.assertTrue(await store.get_message(still_queued) is not None)  # not shadow-only
        self.assertEqual(await store.remove_shadows("hub02.contoso.test", [s2]), 1)
        self.assertIsNone(await store.get_message(shadow_only))
        self.assertEqual(await store.shadow_primaries(), {})

    async def test_expire_shadows(self) -> None:
        """Shadows older than the auto-discard interval go, with their shadow-only message."""
        store = QueueStore(self.open_db())
        old = await store.accept_message(_message(1, state="shadow"))
        new = await store.accept_message(_message(2, state="shadow"))
        await store.add_shadow(old, "edge01", "s-old", now=1.0)
        await store.add_shadow(new, "edge01", "s-new", now=100.0)
        self.assertEqual(await store.expire_shadows(older_than=50.0), 1)
        self.assertEqual(
            [r.shadow_message_id for r in await store.shadows_for("edge01")], ["s-new"]
        )
        self.assertIsNone(await store.get_message(old))
        self.assertEqual(await store.count_messages(), 1)

    async def test_heartbeats(self) -> None:
        """Failed heartbeats count up, a success resets them, and a new queue-database id
        from the primary is flagged (it lost its database)."""
        store = QueueStore(self.open_db())
        self.assertIsNone(await store.get_primary("edge01"))
        s = await store.record_heartbeat("edge01", False, None, now=10.0)
        self.assertEqual(
            (s.failed_heartbeats, s.last_heartbeat_at, s.last_success_at), (1, 10.0, None)
        )
        s = await store.record_heartbeat("edge01", False, None, now=20.0)
        self.assertEqual(s.failed_heartbeats, 2)
        s = await store.record_heartbeat("edge01", True, "q3Jx0V5YqUqW3w3vOaG5Xw==", now=30.0)
        self.assertEqual(
            (s.failed_heartbeats, s.last_success_at, s.database_changed), (0, 30.0, False)
        )
        s = await store.record_heartbeat("edge01", True, "AAAAAAAAAAAAAAAAAAAAAA==", now=40.0)
        self.assertTrue(s.database_changed)
        stored = await store.get_primary("edge01")
        assert stored is not None
        self.assertEqual(
            (stored.database_id, stored.failed_heartbeats, stored.last_heartbeat_at),
            ("AAAAAAAAAAAAAAAAAAAAAA==", 0, 40.0),
        )
        self.assertTrue(not stored.database_changed)

    async def test_crash_counts_only_the_categorizer_batch(self) -> None:
        """Poison message detection (schema step 6): a crash counts against the messages the
        categorizer had taken (committed with the batch), not against those merely waiting;
        routing a batch releases it; two crashes in process move a message to Poison."""
        from exchange_emu.transport import jobs

        db = self.open_db()
        store = QueueStore(db)
        signer = jobs.DsnSettings("hub01.contoso.test", "postmaster@contoso.test")
        await db.write(jobs.start_up)
        busy = await store.accept_message(_message(1))
        routed = await store.accept_message(_message(2))
        taken = await db.write(jobs.take_submission, [busy, routed])
        self.assertEqual(sorted(t.envelope.internal_id for t in taken), [busy, routed])
        await db.write(jobs.apply_routes, [
            jobs.RouteDecision(r.id, routed, jobs.READY, "fabrikam.test")
            for t in taken if t.envelope.internal_id == routed for r in t.recipients],
            1.0, signer)
        self.assertEqual(self.raw_count(tables.categorizer_batch), 1)  # busy only
        waiting = await store.accept_message(_message(3))
        first = await db.write(jobs.start_up)  # the server had died
        self.assertEqual((first.crashed, first.poisoned), (True, ()))
        self.assertEqual(self.raw_count(tables.categorizer_batch), 0)
        await db.write(jobs.take_submission, [busy])  # dies on it again
        second = await db.write(jobs.start_up)
        self.assertEqual([p.internal_id for p in second.poisoned], [busy])
        counts = {}
        for internal_id in (busy, routed, waiting):
            got = await store.get_message(internal_id)
            assert got is not None
            counts[internal_id] = (str(got.state), got.crash_count)
        self.assertEqual(counts, {busy: ("poison", 2), routed: ("queued", 0),
                                  waiting: ("queued", 0)})

    # --- migrations ------------------------------------------------------------------------

    async def test_upgrade_from_version_1_keeps_data(self) -> None:
        """A database at version 1 with messages in it is upgraded to the newest version
        (here also through an injected second step) and keeps its messages and GUID."""
        old = self.open_db(migrations=MIGRATIONS[:1])
        self.assertEqual(old.schema_version, 1)
        internal_id = await QueueStore(old).accept_message(_message(1))
        guid = old.database_id
        await old.stopService()

        current = self.open_db()
        self.assertEqual(current.schema_version, CURRENT)
        await current.stopService()

        newer = self.open_db(migrations=(*MIGRATIONS, V2))
        self.assertEqual((newer.schema_version, newer.database_id), (NEXT, guid))
        got = await QueueStore(newer).get_message(internal_id)
        assert got is not None
        self.assertEqual(got.subject, "test 1")
        columns = {c["name"] for c in sa.inspect(newer.engine).get_columns("primaries")}
        self.assertIn("note", columns)

    async def test_upgrade_from_version_6_keeps_discard_notifications(self) -> None:
        """Version 7 gives discard notifications the identity of their message (for the D.6
        tracking row). Notifications waiting in a version 6 database are kept, and are
        handed out with their Message-ID and no internal id, sender or subject."""
        old = self.open_db(migrations=MIGRATIONS[:6])
        self.assertEqual(old.schema_version, 6)

        def insert_v6(conn: Connection) -> None:
            # Version 6's columns only, spelled out: the model has more now.
            conn.execute(sa.text(
                "INSERT INTO discard_notifications (shadow_context, shadow_message_id, "
                "created_at, internet_message_id) VALUES ('ctx', 's1', 1.0, '<1@x>'), "
                "('ctx', 's2', 2.0, NULL)"))

        await old.write(insert_v6)
        await old.stopService()

        current = self.open_db()
        self.assertEqual(current.schema_version, CURRENT)
        columns = {c["name"] for c in
                   sa.inspect(current.engine).get_columns("discard_notifications")}
        self.assertLessEqual(
            {"internal_message_id", "sender_address", "message_subject"}, columns)
        self.assertEqual(await current.read(jobs.waiting_discards, "ctx", 50), [
            jobs.WaitingDiscard("s1", "<1@x>", None, "", ""),
            jobs.WaitingDiscard("s2", "", None, "", "")])

        def insert_v7(conn: Connection) -> None:
            conn.execute(sa.insert(tables.discard_notifications).values(
                shadow_context="ctx", shadow_message_id="s3", created_at=3.0,
                internet_message_id="<3@x>", internal_message_id=2**40,
                sender_address="alice@contoso.test", message_subject="Grüße, 3"))

        await current.write(insert_v7)
        waiting = await current.read(jobs.waiting_discards, "ctx", 50)
        self.assertEqual(waiting[-1], jobs.WaitingDiscard(
            "s3", "<3@x>", 2**40, "alice@contoso.test", "Grüße, 3"))


@pytest.mark.usefixtures("sqlite_queue_db")
class SQLiteQueueDatabaseTests(_QueueDatabaseBehaviour, unittest.TestCase):
    """The queue database behaviour on a SQLite file in WAL mode."""


@pytest.mark.postgresql
@pytest.mark.usefixtures("postgresql_queue_db")
class PostgreSQLQueueDatabaseTests(_QueueDatabaseBehaviour, unittest.TestCase):
    """The queue database behaviour on PostgreSQL (psycopg2)."""


@pytest.mark.postgresql
@pytest.mark.usefixtures("postgresql_queue_db")
class LostPostgreSQLConnectionTests(unittest.TestCase):
    """The database threads keep their connections; one the server drops is replaced, and
    the job that found it dropped runs again on the new one (once: nothing was committed).
    Through psycopg2 here, psycopg 3 below."""

    queue_db: QueueDbUrl
    driver = "psycopg2"

    @property
    def url(self) -> str:
        return self.queue_db.url.replace("postgresql+psycopg2://", f"postgresql+{self.driver}://")

    def _terminate(self, *pids: int) -> None:
        engine = create_queue_engine(self.queue_db.url)
        try:
            with engine.begin() as conn:
                for pid in pids:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            engine.dispose()

    async def test_writes_and_reads_go_on_after_the_server_dropped_their_connections(
            self) -> None:
        db = QueueDatabase(self.url, reactor=reactor, readers=1)
        db.open()
        self.addCleanup(db.stopService)
        store = QueueStore(db)

        def pid(conn: Connection) -> int:
            return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

        writer, reader = await db.write(pid), await db.read(pid)
        self.assertEqual((await db.write(pid), await db.read(pid)), (writer, reader))  # kept
        self._terminate(writer, reader)
        # The write goes through a direct statement (a psycopg2 error, not Core's), the
        # read through Core; each finds its connection gone, and runs once more.
        internal_id = await store.accept_message(_message(1))
        self.assertEqual(await store.count_messages(), 1)
        self.assertEqual(await store.get_body(internal_id), _message(1).body)
        self.assertTrue(await db.write(pid) != writer and await db.read(pid) != reader)


class LostPsycopg3ConnectionTests(LostPostgreSQLConnectionTests):
    driver = "psycopg"


class InMemorySQLiteTests(unittest.TestCase):
    """``sqlite://`` works too: one shared connection, reads on the writer thread."""

    async def test_memory_database(self) -> None:
        """Write then read through the single connection of an in-memory database."""
        db = QueueDatabase("sqlite://", reactor=reactor)
        db.open()
        self.addCleanup(db.stopService)
        store = QueueStore(db)
        internal_id = await store.accept_message(_message(1))
        self.assertEqual(await store.get_body(internal_id), _message(1).body)
        self.assertEqual(await store.count_messages(), 1)


# --- synchronous start-up checks (no reactor needed) -------------------------------------------


def test_too_new_database_is_refused(queue_db: QueueDbUrl) -> None:
    """A database migrated by newer code (version 2) is refused by code that knows only
    version 1, with a one-line SchemaVersionError."""
    engine = create_queue_engine(queue_db.url)
    try:
        assert upgrade(engine, (*MIGRATIONS, V2)) == NEXT
    finally:
        engine.dispose()
    db = QueueDatabase(queue_db.url, reactor=reactor, migrations=MIGRATIONS[:1])
    with pytest.raises(SchemaVersionError) as info:
        db.open()
    message = str(info.value)
    assert message.startswith(f"cannot open queue database {display_url(queue_db.url)}: ")
    assert f"schema version {NEXT} is newer" in message
    assert "\n" not in message
    assert not db.is_open


def test_failing_migration_rolls_back(queue_db: QueueDbUrl) -> None:
    """A step that fails half-way leaves the database at the previous version, without
    its partial DDL, and the error is a StorageError."""

    def half_done(conn: Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE half_done (id INTEGER PRIMARY KEY)")
        raise RuntimeError("step 2 exploded")

    engine = create_queue_engine(queue_db.url)
    try:
        upgrade(engine, MIGRATIONS[:1])
        db = QueueDatabase(
            queue_db.url,
            reactor=reactor,
            migrations=(*MIGRATIONS[:1], Migration(2, "broken", half_done)),
        )
        with pytest.raises(StorageError, match="step 2 exploded"):
            db.open()
        with engine.connect() as conn:
            assert get_version(conn) == 1
        assert not sa.inspect(engine).has_table("half_done")
    finally:
        engine.dispose()


def test_model_matches_migrations(queue_db: QueueDbUrl) -> None:
    """Migrating an empty database gives exactly the tables, columns and indexes of
    exchange_emu.storage.tables (the frozen steps and the model cannot drift apart)."""
    engine = create_queue_engine(queue_db.url)
    try:
        assert upgrade(engine) == CURRENT
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == set(tables.metadata.tables)
        for table in tables.metadata.sorted_tables:
            reflected = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
            modelled = {c.name: c.nullable for c in table.columns}
            assert reflected == modelled, table.name
            reflected_ix = {ix["name"] for ix in inspector.get_indexes(table.name)}
            modelled_ix = {ix.name for ix in table.indexes}
            assert modelled_ix <= reflected_ix, table.name
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_and_full_sync(sqlite_queue_db: QueueDbUrl) -> None:
    """SQLite runs with journal_mode=WAL, synchronous=FULL, foreign keys and a busy
    timeout, and creates the database file's directory."""
    engine = create_queue_engine(sqlite_queue_db.url, busy_timeout=7.5)
    try:
        with engine.connect() as conn:
            pragma = conn.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 7500
        path = sa.make_url(sqlite_queue_db.url).database
        assert path is not None and Path(path).exists()
    finally:
        engine.dispose()


def test_sqlite_write_transactions_take_the_write_lock_at_begin(
        sqlite_queue_db: QueueDbUrl) -> None:
    """A writer's transaction holds SQLite's write lock from its BEGIN (IMMEDIATE), so it
    never fails half-way upgrading a read lock; a reader's (DEFERRED) takes none."""
    import sqlite3

    from exchange_emu.storage.engine import WRITE_OPTIONS

    engine = create_queue_engine(sqlite_queue_db.url, busy_timeout=0)
    path = sa.make_url(sqlite_queue_db.url).database
    assert path is not None
    upgrade(engine)

    def second_writer_blocked() -> bool:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as error:
            assert "locked" in str(error)
            return True
        finally:
            other.close()

    try:
        with engine.connect() as conn:
            conn.execution_options(**WRITE_OPTIONS)
            with conn.begin():
                assert second_writer_blocked()
        with engine.connect() as conn, conn.begin():
            assert not second_writer_blocked()
    finally:
        engine.dispose()


def test_migration_list_must_be_consecutive() -> None:
    """Steps numbered 1, 2, 3 … only; anything else is a programming error."""
    check_migrations((*MIGRATIONS, V2))
    with pytest.raises(ValueError, match="expected 2"):
        check_migrations((*MIGRATIONS[:1], Migration(3, "gap", _add_table_v2)))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+psycopg2://postgres:s3cret@127.0.0.1:1/queue", "127.0.0.1"),
        ("nosuchdialect://host/db", "nosuchdialect"),
        ("this is not a url", "this is not a url"),
    ],
)
def test_bad_url_gives_one_line_storage_error(url: str, reason: str) -> None:
    """An unusable URL stops start-up with one line naming the database, password hidden."""
    db = QueueDatabase(url, reactor=reactor)
    with pytest.raises(StorageError) as info:
        db.privilegedStartService()
    message = str(info.value)
    assert message.startswith(f"cannot open queue database {display_url(url)}: ")
    assert reason in message
    assert "\n" not in message
    assert "s3cret" not in message
    assert not db.is_open


def test_sqlite_path_that_is_a_directory(tmp_path: Path) -> None:
    """A SQLite path that cannot be a database file gives a StorageError one-liner."""
    url = f"sqlite:///{tmp_path}"
    with pytest.raises(StorageError) as info:
        QueueDatabase(url, reactor=reactor).open()
    assert str(info.value) == f"cannot open queue database {url}: unable to open database file"


@pytest.mark.postgresql
def test_plain_postgresql_url_works(postgresql_queue_db: QueueDbUrl) -> None:
    """``postgresql://`` — what a user writes — opens with the driver SQLAlchemy picks for it
    (psycopg 3 in SQLAlchemy 2.1), not only the test suite's ``postgresql+psycopg2://``."""
    url = postgresql_queue_db.url.replace("postgresql+psycopg2://", "postgresql://")
    db = QueueDatabase(url, reactor=reactor)
    db.open()
    try:
        with db.engine.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one() == 0
        assert db.schema_version == CURRENT
    finally:
        db.engine.dispose()
