"""The primary's side of ``XQDISCARD`` (D.6): handing discard notifications to holders.

A notification says that a message the holder shadows is delivered; that became true (and
durable) when the delivery was recorded. Handing it out therefore waits for no commit: the
notifications are answered at once and deleted afterwards — with a clock, those handed out
within :data:`DELETE_DELAY` seconds in one write, so a lone sender's messages do not cost a
commit each. Until that delete is committed they are not handed out again by this process;
after a crash in between the holder may be told twice, which it ignores (the shadow is
already gone).

Like Exchange's shadow redundancy manager, the primary keeps the notifications it prepared in
memory (:meth:`DiscardHandOut.queued`, called once their commit returned), so an
``XQDISCARD`` reply waits for no database read either. The queue database stays the record: a
holder's first query after start, and one every ``sweep_interval`` seconds after that, also
reads the notifications the database holds for it (those prepared before a restart) — those
older than :data:`FEED_GRACE`, so that a read racing a delivery's commit does not hand its
notification out before the delivery's tracking rows are written.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from exchange_emu.storage import QueueDatabase, short_write
from exchange_emu.transport.jobs import WaitingDiscard, delete_discards, waiting_discards

DATABASE_SWEEP_INTERVAL = 5.0
"""Seconds between reads of a holder's notifications from the queue database, when the
notifications are also fed in as they are prepared."""
FEED_GRACE = 1.0
"""A database read leaves out notifications younger than this: their own commit feeds them
in (:meth:`DiscardHandOut.queued`) once the delivery's tracking rows are written, and a read
racing that commit would hand one out before them."""
DELETE_DELAY = 0.25
"""Seconds the deletes of handed-out notifications wait to go together in one write."""
DELETE_BATCH = 500
"""This many handed-out notifications waiting for their delete go at once."""


class DiscardHandOut:
    """One transport server's discard notifications as ``XQDISCARD`` hands them out.

    Without ``clock`` every query reads the database (nothing feeds :meth:`queued`); with it,
    queries are answered from memory and read the database every ``sweep_interval`` seconds.
    """

    def __init__(self, database: QueueDatabase, clock: IReactorTime | None = None,
                 sweep_interval: float = DATABASE_SWEEP_INTERVAL) -> None:
        self.database = database
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._waiting: dict[str, dict[str, tuple[WaitingDiscard, float]]] = {}
        """Context -> shadow message id -> (the notification, when queued); oldest first."""
        self._swept: dict[str, float] = {}
        """Context -> when its last database read started."""
        self._deleting: set[tuple[str, str]] = set()
        """(context, shadow id) handed out; the delete is not committed yet."""
        self._reads = 0
        """Reads started so far (a read's number orders it against delete commits)."""
        self._open_reads: set[int] = set()
        self._deleted: dict[tuple[str, str], int] = {}
        """(context, shadow id) -> the number of the first read started after its delete
        committed: an earlier read may still return the row, and must not hand it out again."""
        self._to_delete: dict[str, list[str]] = {}
        """Context -> shadow ids handed out whose delete has not started (DELETE_DELAY)."""
        self._delete_timer: IDelayedCall | None = None

    def queued(self, context: str, shadow_message_id: str, message_id: str,
               internal_message_id: int | None = None, sender: str = "",
               subject: str = "") -> None:
        """A notification for ``context`` was committed: hand it out at the next query."""
        if (context, shadow_message_id) in self._deleting:
            return  # the same news is being handed out already
        now = self._clock.seconds() if self._clock is not None else 0.0
        discard = WaitingDiscard(shadow_message_id, message_id, internal_message_id, sender,
                                 subject)
        self._waiting.setdefault(context, {}).setdefault(shadow_message_id, (discard, now))

    def forget_older_than(self, when: float) -> None:
        """Notifications queued before ``when`` are dropped (``ShadowMessageAutoDiscard``)."""
        for context, waiting in list(self._waiting.items()):
            for shadow_id in [s for s, (_, at) in waiting.items() if at < when]:
                del waiting[shadow_id]
            if not waiting:
                del self._waiting[context]

    async def take(self, context: str, maximum: int) -> list[WaitingDiscard]:
        """Up to ``maximum`` of ``context``'s notifications, oldest first, not handed out
        before; their delete is under way when this returns."""
        if self._sweep_due(context):
            await self._sweep(context, maximum)
        waiting = self._waiting.get(context, {})
        shadow_ids = list(waiting)[:maximum]
        taken = [waiting.pop(s)[0] for s in shadow_ids]
        if not waiting:
            self._waiting.pop(context, None)
        if taken:
            self._deleting.update((context, s) for s in shadow_ids)
            if self._clock is None:
                self._delete(context, shadow_ids)
            else:
                self._to_delete.setdefault(context, []).extend(shadow_ids)
                if sum(map(len, self._to_delete.values())) >= DELETE_BATCH:
                    self.flush_deletes()
                elif self._delete_timer is None:
                    self._delete_timer = self._clock.callLater(DELETE_DELAY,
                                                               self.flush_deletes)
        return taken

    def flush_deletes(self) -> None:
        """Start the deletes of everything handed out so far (also when stopping)."""
        if self._delete_timer is not None and self._delete_timer.active():
            self._delete_timer.cancel()
        self._delete_timer = None
        waiting, self._to_delete = self._to_delete, {}
        for context, shadow_ids in waiting.items():
            self._delete(context, shadow_ids)

    def _delete(self, context: str, shadow_ids: list[str]) -> None:
        keys = {(context, s) for s in shadow_ids}
        write = self.database.write_short if short_write(len(shadow_ids)) else self.database.write
        deleted: Deferred[None] = write(delete_discards, context, shadow_ids)
        # Failed: the next database read finds them again (harmless to the holder).
        deleted.addCallback(lambda _: self._committed(keys))
        deleted.addBoth(lambda _: self._deleting.difference_update(keys))

    def _sweep_due(self, context: str) -> bool:
        if self._clock is None:
            return True
        now = self._clock.seconds()
        last = self._swept.get(context)
        if last is not None and now - last < self._sweep_interval:
            return False
        self._swept[context] = now
        return True

    async def _sweep(self, context: str, maximum: int) -> None:
        """Read ``context``'s oldest notifications and add those memory does not have."""
        number = self._reads
        self._reads += 1
        self._open_reads.add(number)
        known = self._waiting.get(context, {})
        try:
            rows: Sequence[WaitingDiscard] = await self.database.read(
                waiting_discards, context,
                maximum + len(known) + len(self._deleting) + len(self._deleted),
                self._sweep_before())
        finally:
            self._open_reads.discard(number)
        now = self._clock.seconds() if self._clock is not None else 0.0
        found = {
            r.shadow_message_id: (r, now) for r in rows
            if (context, r.shadow_message_id) not in self._deleting
            and number >= self._deleted.get((context, r.shadow_message_id), -1)
        }
        self._forget_deleted()
        if found:
            # What the database holds is older than what was fed in since: it goes first.
            found.update(self._waiting.get(context, {}))
            self._waiting[context] = found

    def _sweep_before(self) -> float | None:
        return None if self._clock is None else self._clock.seconds() - FEED_GRACE

    def _committed(self, keys: set[tuple[str, str]]) -> None:
        for key in keys:
            self._deleted[key] = self._reads
        self._forget_deleted()

    def _forget_deleted(self) -> None:
        """Deletes older than every open read concern no read any more."""
        oldest = min(self._open_reads, default=self._reads)
        for key in [k for k, after in self._deleted.items() if after <= oldest]:
            del self._deleted[key]
