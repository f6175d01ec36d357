"""The primary's XQDISCARD hand-out (D.6): answered from a read, deleted by a later write,
never handed out twice by one process — on a real SQLite queue database."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from exchange_emu.storage import QueueDatabase
from exchange_emu.storage.tables import discard_notifications
from exchange_emu.transport.discard_handout import (
    DELETE_BATCH,
    DELETE_DELAY,
    FEED_GRACE,
    DiscardHandOut,
)
from exchange_emu.transport.jobs import WaitingDiscard, delete_discards, waiting_discards

CONTEXT = "EDGE01-context"
NOW = 1000.0


class _WithQueueDatabase(TestCase):
    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="exchange-emu-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.db = QueueDatabase(f"sqlite:///{directory / 'q.db'}", reactor=reactor)
        self.db.open()
        self.addCleanup(self.db.stopService)

    async def notify(self, count: int, context: str = CONTEXT, first: int = 0) -> None:
        def insert(conn: sa.Connection) -> None:
            conn.execute(sa.insert(discard_notifications), [
                {"shadow_context": context, "shadow_message_id": f"shadow-{n}",
                 "created_at": float(n), "internet_message_id": f"<{n}@x>"}
                for n in range(first, first + count)])
        await self.db.write(insert)

    async def remaining(self) -> list[str]:
        def select(conn: sa.Connection) -> list[str]:
            return list(conn.execute(sa.select(discard_notifications.c.shadow_message_id)
                                     .order_by(discard_notifications.c.id)).scalars())
        return await self.db.read(select)


class DiscardHandOutTests(_WithQueueDatabase):
    """Without a clock: every query reads the database."""

    @staticmethod
    def row_ids(conn: sa.Connection) -> list[int]:
        return list(conn.execute(sa.select(discard_notifications.c.id)).scalars())

    async def test_oldest_first_up_to_the_maximum_then_deleted(self):
        await self.notify(5)
        await self.notify(1, context="another holder")
        handout = DiscardHandOut(self.db)
        taken = await handout.take(CONTEXT, 3)
        assert [t.shadow_message_id for t in taken] == ["shadow-0", "shadow-1", "shadow-2"]
        assert taken[0].message_id == "<0@x>"
        await self.db.write(lambda conn: None)  # the delete was queued before this write
        assert await self.remaining() == ["shadow-3", "shadow-4", "shadow-0"]

    async def test_a_second_query_before_the_delete_commits_gets_the_next_ones(self):
        """The reply does not wait for the delete; a query in between must not hand the
        same notifications out again."""
        await self.notify(4)
        handout = DiscardHandOut(self.db)
        gate = threading.Event()
        blocked = self.db.write(lambda conn: gate.wait(10))  # the writer is busy
        first = await handout.take(CONTEXT, 2)
        second = await handout.take(CONTEXT, 2)
        gate.set()
        await blocked
        assert [t.shadow_message_id for t in first] == ["shadow-0", "shadow-1"]
        assert [t.shadow_message_id for t in second] == ["shadow-2", "shadow-3"]
        await self.db.write(lambda conn: None)
        assert await self.remaining() == []
        assert await handout.take(CONTEXT, 2) == []

    async def test_a_read_older_than_the_delete_neither_repeats_nor_loses_a_notification(self):
        """Two queries of one holder overlap: the later read began before the first
        delete committed, so it still sees that row. It must not hand it out again, nor
        delete the new notification SQLite gave the freed row id to."""
        await self.notify(1)
        held: list[Deferred[Any]] = []

        class SlowReplies:
            """The queue database, but the next read's result is held back."""

            def __init__(self, db: QueueDatabase) -> None:
                self.db, self.hold = db, False

            def read(self, *args: Any) -> Deferred[Any]:
                d = self.db.read(*args)
                if self.hold:
                    gate: Deferred[None] = Deferred()
                    held.append(gate)
                    d.addCallback(lambda rows: gate.addCallback(lambda _: rows))
                return d

            def write(self, *args: Any) -> Deferred[Any]:
                return self.db.write(*args)

            def write_short(self, *args: Any) -> Deferred[Any]:
                return self.db.write_short(*args)

        database = SlowReplies(self.db)
        handout = DiscardHandOut(database)  # type: ignore[arg-type]
        gate = threading.Event()
        blocked = self.db.write(lambda conn: gate.wait(10))  # the first delete waits
        first = await handout.take(CONTEXT, 5)
        database.hold = True
        second = Deferred.fromCoroutine(handout.take(CONTEXT, 5))
        database.hold = False
        await self.db.read(lambda conn: None)  # the second read ran (row still there)
        gate.set()
        await blocked
        await self.db.write(lambda conn: None)  # the first delete committed
        await self.notify(1, first=1)  # a new notification; SQLite reuses the freed id
        held[0].callback(None)
        assert [t.shadow_message_id for t in first] == ["shadow-0"]
        assert await second == []
        await self.db.write(lambda conn: None)
        assert await self.remaining() == ["shadow-1"]
        third = await handout.take(CONTEXT, 5)
        assert [t.shadow_message_id for t in third] == ["shadow-1"]

    async def test_a_stale_delete_spares_a_new_notification_with_the_same_row_id(self):
        await self.notify(1)
        (old,) = await self.db.read(waiting_discards, CONTEXT, 5)
        old_row = await self.db.read(self.row_ids)
        await self.db.write(delete_discards, CONTEXT, [old.shadow_message_id])
        await self.notify(1, first=1)
        assert await self.db.read(self.row_ids) == old_row  # SQLite reused the freed id
        # handed out twice, deleted twice
        await self.db.write(delete_discards, CONTEXT, [old.shadow_message_id])
        assert await self.remaining() == ["shadow-1"]


class CountedCalls:
    """The queue database, counting the reads and writes made through it."""

    def __init__(self, db: QueueDatabase) -> None:
        self.db, self.reads, self.writes = db, 0, 0

    def read(self, *args: Any) -> Deferred[Any]:
        self.reads += 1
        return self.db.read(*args)

    def write(self, *args: Any) -> Deferred[Any]:
        self.writes += 1
        return self.db.write(*args)

    def write_short(self, *args: Any) -> Deferred[Any]:
        self.writes += 1
        return self.db.write_short(*args)


class FedDiscardHandOutTests(_WithQueueDatabase):
    """With a clock, notifications fed in as they are committed are handed out from memory;
    the database is read at a holder's first query and every sweep interval after."""

    def make(self) -> tuple[DiscardHandOut, CountedCalls, task.Clock]:
        clock = task.Clock()
        clock.advance(NOW)  # the notifications (created at 0, 1, 2…) are older than FEED_GRACE
        database = CountedCalls(self.db)
        return DiscardHandOut(database, clock, sweep_interval=5.0), database, clock  # type: ignore[arg-type]

    async def test_fed_notifications_are_answered_without_a_read(self):
        handout, database, clock = self.make()
        assert await handout.take(CONTEXT, 10) == []  # the first query reads the database
        assert database.reads == 1
        await self.notify(2)
        handout.queued(CONTEXT, "shadow-0", "<0@x>")
        handout.queued(CONTEXT, "shadow-1", "<1@x>")
        handout.queued("another holder", "shadow-9", "<9@x>")
        clock.advance(1)
        taken = await handout.take(CONTEXT, 10)
        assert [(t.shadow_message_id, t.message_id) for t in taken] == [
            ("shadow-0", "<0@x>"), ("shadow-1", "<1@x>")]
        assert database.reads == 1
        clock.advance(DELETE_DELAY)  # the delete starts
        await self.db.write(lambda conn: None)  # the delete was queued before this write
        assert await self.remaining() == []
        assert await handout.take(CONTEXT, 10) == []

    async def test_what_is_fed_in_or_read_keeps_the_identity_of_its_message(self):
        """The D.6 row names the message (internal id, sender, subject) whichever way its
        notification came; one written before schema version 7 has its Message-ID only."""
        handout, _, clock = self.make()

        def rows(conn: sa.Connection) -> None:
            conn.execute(sa.insert(discard_notifications).values(
                shadow_context=CONTEXT, shadow_message_id="shadow-0", created_at=0.0,
                internet_message_id="<0@x>"))
            conn.execute(sa.insert(discard_notifications).values(
                shadow_context=CONTEXT, shadow_message_id="shadow-1", created_at=1.0,
                internet_message_id="<1@x>", internal_message_id=11, sender_address="a@x",
                message_subject="one"))

        await self.db.write(rows)
        handout.queued(CONTEXT, "shadow-2", "<2@x>", 12, "b@x", "two")
        clock.advance(1)
        assert await handout.take(CONTEXT, 10) == [
            WaitingDiscard("shadow-0", "<0@x>", None, "", ""),
            WaitingDiscard("shadow-1", "<1@x>", 11, "a@x", "one"),
            WaitingDiscard("shadow-2", "<2@x>", 12, "b@x", "two")]

    async def test_what_only_the_database_holds_comes_with_the_next_sweep_and_first(self):
        """E.g. notifications prepared before a restart: read at the first query, or at the
        first query a sweep interval after the last read, ahead of those fed in since."""
        handout, database, clock = self.make()
        assert await handout.take(CONTEXT, 10) == []
        await self.notify(1)  # behind the hand-out's back
        await self.notify(1, first=1)
        handout.queued(CONTEXT, "shadow-1", "<1@x>")
        clock.advance(4)
        assert [t.shadow_message_id for t in await handout.take(CONTEXT, 10)] == ["shadow-1"]
        await self.notify(1, first=2)
        handout.queued(CONTEXT, "shadow-2", "<2@x>")
        clock.advance(1)
        taken = await handout.take(CONTEXT, 10)
        assert [t.shadow_message_id for t in taken] == ["shadow-0", "shadow-2"]
        assert database.reads == 2
        clock.advance(DELETE_DELAY)
        await self.db.write(lambda conn: None)
        assert await self.remaining() == []

    async def test_a_read_never_brings_back_what_was_handed_out(self):
        handout, _, clock = self.make()
        await self.notify(2)
        first = await handout.take(CONTEXT, 1)  # the sweep found both, one handed out
        handout.queued(CONTEXT, "shadow-0", "<0@x>")  # its feed arrives late: ignored
        clock.advance(5)
        second = await handout.take(CONTEXT, 10)
        assert [t.shadow_message_id for t in first + second] == ["shadow-0", "shadow-1"]

    async def test_a_read_leaves_out_what_its_own_commit_is_about_to_feed_in(self):
        """A notification younger than FEED_GRACE comes from a delivery whose commit feeds it
        in once its tracking rows are written; a read racing that commit leaves it out
        (it would go out before those rows), the feed or a later read brings it."""
        handout, _, _ = self.make()
        await self.notify(1, first=int(NOW - FEED_GRACE) - 1)  # before a restart, say
        await self.notify(1, first=int(NOW))  # committed just now, not fed in yet
        taken = await handout.take(CONTEXT, 10)
        assert [t.shadow_message_id for t in taken] == [f"shadow-{int(NOW - FEED_GRACE) - 1}"]
        handout.queued(CONTEXT, f"shadow-{int(NOW)}", "<x>")
        assert [t.shadow_message_id for t in await handout.take(CONTEXT, 10)] == [
            f"shadow-{int(NOW)}"]

    async def test_notifications_past_the_auto_discard_interval_are_forgotten(self):
        handout, _, clock = self.make()
        assert await handout.take(CONTEXT, 10) == []
        handout.queued(CONTEXT, "shadow-0", "<0@x>")
        clock.advance(3)
        handout.queued(CONTEXT, "shadow-1", "<1@x>")
        handout.forget_older_than(NOW + 2)
        assert [t.shadow_message_id for t in await handout.take(CONTEXT, 10)] == ["shadow-1"]


class GroupedDeleteTests(_WithQueueDatabase):
    """With a clock, the deletes of what several queries handed out go in one write."""

    def make(self) -> tuple[DiscardHandOut, CountedCalls, task.Clock]:
        clock = task.Clock()
        clock.advance(NOW)
        database = CountedCalls(self.db)
        return DiscardHandOut(database, clock), database, clock  # type: ignore[arg-type]

    async def test_queries_within_the_delay_share_one_delete(self):
        handout, database, clock = self.make()
        await self.notify(3)
        for n in range(3):
            handout.queued(CONTEXT, f"shadow-{n}", f"<{n}@x>")
        assert [t.shadow_message_id for t in await handout.take(CONTEXT, 1)] == ["shadow-0"]
        clock.advance(DELETE_DELAY / 2)
        assert [t.shadow_message_id for t in await handout.take(CONTEXT, 10)] == [
            "shadow-1", "shadow-2"]
        assert database.writes == 0
        await self.db.write(lambda conn: None)
        assert await self.remaining() == ["shadow-0", "shadow-1", "shadow-2"]
        clock.advance(DELETE_DELAY / 2)
        assert database.writes == 1
        await self.db.write(lambda conn: None)
        assert await self.remaining() == []

    async def test_a_sweep_while_the_delete_waits_hands_nothing_out_again(self):
        clock = task.Clock()
        clock.advance(NOW)
        database = CountedCalls(self.db)
        handout = DiscardHandOut(database, clock,  # type: ignore[arg-type]
                                 sweep_interval=DELETE_DELAY / 2)
        await self.notify(2)
        assert len(await handout.take(CONTEXT, 10)) == 2  # the first query's sweep
        clock.advance(DELETE_DELAY / 2)  # a sweep is due; the delete has not started
        assert await handout.take(CONTEXT, 10) == []
        assert (database.reads, database.writes) == (2, 0)
        clock.advance(DELETE_DELAY / 2)
        await self.db.write(lambda conn: None)
        assert await self.remaining() == []

    async def test_a_full_batch_is_deleted_at_once(self):
        handout, database, _ = self.make()
        await self.notify(DELETE_BATCH)
        taken = await handout.take(CONTEXT, DELETE_BATCH)
        assert len(taken) == DELETE_BATCH
        assert database.writes == 1  # without waiting for the clock
        await self.db.write(lambda conn: None)
        assert await self.remaining() == []

    async def test_stopping_flushes_what_waits(self):
        handout, database, _ = self.make()
        await self.notify(1)
        assert len(await handout.take(CONTEXT, 10)) == 1
        handout.flush_deletes()
        assert database.writes == 1
        assert handout._delete_timer is None
        await self.db.write(lambda conn: None)
        assert await self.remaining() == []
