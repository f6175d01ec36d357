"""The primary's XQDISCARD hand-out (D.6): answered from a read, deleted by a later write,
never handed out twice by one process — on a real SQLite queue database."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from exchange_emu.storage import QueueDatabase
from exchange_emu.storage.tables import discard_notifications
from exchange_emu.transport.discard_handout import DiscardHandOut
from exchange_emu.transport.jobs import delete_discards, waiting_discards

CONTEXT = "EDGE01-context"


class DiscardHandOutTests(TestCase):
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
        assert [(t.id, t.shadow_message_id) for t in third] == [(first[0].id, "shadow-1")]

    async def test_a_stale_delete_spares_a_new_notification_with_the_same_row_id(self):
        await self.notify(1)
        (old,) = await self.db.read(waiting_discards, CONTEXT, 5)
        await self.db.write(delete_discards, [old])
        await self.notify(1, first=1)
        (new,) = await self.db.read(waiting_discards, CONTEXT, 5)
        assert new.id == old.id  # SQLite gave the freed id to the new row
        await self.db.write(delete_discards, [old])  # handed out twice, deleted twice
        assert await self.remaining() == ["shadow-1"]
