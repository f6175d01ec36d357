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

    async def take(self, context: str, maximum: int) -> list[WaitingDiscard]:
        """Up to ``maximum`` of ``context``'s notifications, oldest first, not handed out
        before; their delete is under way when this returns."""
        rows = await self.database.read(waiting_discards, context,
                                        maximum + len(self._deleting))
        taken = [r for r in rows if r.id not in self._deleting][:maximum]
        if taken:
            ids = {r.id for r in taken}
            self._deleting |= ids
            deleted: Deferred[None] = self.database.write(delete_discards, sorted(ids))
            # Failed: they are handed out again at the next query (harmless to the holder).
            deleted.addBoth(lambda _: self._deleting.difference_update(ids))
        return taken
