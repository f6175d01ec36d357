"""The primary's side of ``XQDISCARD`` (D.6): handing discard notifications to holders.

A notification says that a message the holder shadows is delivered; that became true (and
durable) when the delivery was recorded. Handing it out therefore waits for no commit: the
notifications are read, answered, and deleted in a group-committed write afterwards. Until
that delete is committed they are not handed out again by this process; after a crash in
between the holder may be told twice, which it ignores (the shadow is already gone).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from exchange_emu.storage import QueueDatabase
from exchange_emu.transport.jobs import WaitingDiscard, delete_discards, waiting_discards


class DiscardHandOut:
    """One transport server's discard notifications as ``XQDISCARD`` hands them out."""

    def __init__(self, database: QueueDatabase) -> None:
        self.database = database
        self._deleting: set[int] = set()
        """Handed out; their delete is not committed yet."""
        self._reads = 0
        """Reads started so far (a read's number orders it against delete commits)."""
        self._open_reads: set[int] = set()
        self._deleted: dict[int, int] = {}
        """Row id -> the number of the first read started after its delete committed:
        an earlier read may still return the row, and must not hand it out again."""

    async def take(self, context: str, maximum: int) -> list[WaitingDiscard]:
        """Up to ``maximum`` of ``context``'s notifications, oldest first, not handed out
        before; their delete is under way when this returns."""
        number = self._reads
        self._reads += 1
        self._open_reads.add(number)
        try:
            rows = await self.database.read(waiting_discards, context,
                                            maximum + len(self._deleting) + len(self._deleted))
        finally:
            self._open_reads.discard(number)
        taken = [r for r in rows if r.id not in self._deleting
                 and number >= self._deleted.get(r.id, -1)][:maximum]
        self._forget_deleted()
        if taken:
            ids = {r.id for r in taken}
            self._deleting |= ids
            deleted: Deferred[None] = self.database.write(delete_discards, taken)
            # Failed: they are handed out again at the next query (harmless to the holder).
            deleted.addCallback(lambda _: self._committed(ids))
            deleted.addBoth(lambda _: self._deleting.difference_update(ids))
        return taken

    def _committed(self, ids: set[int]) -> None:
        for row_id in ids:
            self._deleted[row_id] = self._reads
        self._forget_deleted()

    def _forget_deleted(self) -> None:
        """Deletes older than every open read concern no read any more."""
        oldest = min(self._open_reads, default=self._reads)
        for row_id in [i for i, after in self._deleted.items() if after <= oldest]:
            del self._deleted[row_id]
