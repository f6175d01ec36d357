"""Deferred-returning facade over the queue operations, for code on the reactor thread.

Each method runs the matching function of :mod:`exchange_emu.storage.queue` on the
:class:`QueueDatabase`'s threads: writes are group-committed and fire after their commit; reads
run on a reader thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred

from exchange_emu.storage import queue as q
from exchange_emu.storage.database import QueueDatabase, short_write


class QueueStore:
    """The transport server's view of its queue database (messages, shadows, discards)."""

    def __init__(self, db: QueueDatabase) -> None:
        self.db = db

    # messages
    def accept_message(self, new: q.NewMessage) -> Deferred[int]:
        """Queue a message in Submission; fires with its InternalId once committed."""
        size = q.body_size(new.body)
        short = size is not None and short_write(len(new.recipients), size)
        return (self.db.write_short if short else self.db.write)(q.accept_message, new)

    def get_message(self, internal_id: int) -> Deferred[q.StoredMessage | None]:
        """A message's envelope and recipients, or None."""
        return self.db.read(q.get_message, internal_id)

    def get_body(self, internal_id: int) -> Deferred[bytes]:
        """A message's content (errbacks with MessageNotFoundError for an unknown id)."""
        return self.db.read(q.get_body, internal_id)

    def count_messages(self, state: str | None = None) -> Deferred[int]:
        """How many messages are stored (in ``state``, if given)."""
        return self.db.read(q.count_messages, state)

    def list_messages(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> Deferred[list[q.MessageSummary]]:
        """A page of messages in InternalId order (``Get-Message``)."""
        return self.db.read(
            q.list_messages, state=state, queue=queue, after_id=after_id, limit=limit
        )

    def set_message_state(self, internal_id: int, state: str) -> Deferred[bool]:
        """Move a message to ``state``; False if unknown."""
        return self.db.write(q.set_message_state, internal_id, state)

    def delete_message(self, internal_id: int) -> Deferred[bool]:
        """Remove a message with its recipients and shadow records; False if unknown."""
        return self.db.write(q.delete_message, internal_id)

    # discard notifications (we are the primary)
    def add_discard_notifications(
        self, context: str, shadow_message_ids: Sequence[str], now: float
    ) -> Deferred[int]:
        """Queue discard notifications for a shadow holder's context; fires with the count."""
        return self.db.write(q.add_discard_notifications, context, list(shadow_message_ids), now)

    def take_discard_notifications(self, context: str, limit: int) -> Deferred[list[str]]:
        """``XQDISCARD``: up to ``limit`` ids for ``context``, oldest first, removed durably."""
        return self.db.write(q.take_discard_notifications, context, limit)

    def count_discard_notifications(self, context: str | None = None) -> Deferred[int]:
        """How many discard notifications wait (for ``context`` or all)."""
        return self.db.read(q.count_discard_notifications, context)

    def expire_discard_notifications(self, older_than: float) -> Deferred[int]:
        """Drop notifications older than ``older_than``; fires with how many."""
        return self.db.write(q.expire_discard_notifications, older_than)

    # shadows (we are the shadow holder)
    def add_shadow(
        self, internal_id: int, primary: str, shadow_message_id: str, now: float
    ) -> Deferred[None]:
        """Put message ``internal_id`` in our shadow queue for ``primary``."""
        return self.db.write(q.add_shadow, internal_id, primary, shadow_message_id, now)

    def remove_shadows(self, primary: str, shadow_message_ids: Sequence[str]) -> Deferred[int]:
        """Apply discard notifications from ``primary``; fires with shadows removed."""
        return self.db.write(q.remove_shadows, primary, list(shadow_message_ids))

    def shadows_for(self, primary: str) -> Deferred[list[q.ShadowRecord]]:
        """Our shadow queue for ``primary``, oldest first."""
        return self.db.read(q.shadows_for, primary)

    def shadow_primaries(self) -> Deferred[dict[str, int]]:
        """Primaries we hold shadows for, with counts."""
        return self.db.read(q.shadow_primaries)

    def expire_shadows(self, older_than: float) -> Deferred[int]:
        """Drop shadow records older than ``older_than``; fires with how many."""
        return self.db.write(q.expire_shadows, older_than)

    # primaries (heartbeat)
    def get_primary(self, name: str) -> Deferred[q.PrimaryState | None]:
        """What we know of primary ``name``."""
        return self.db.read(q.get_primary, name)

    def record_heartbeat(
        self, name: str, success: bool, database_id: str | None, now: float
    ) -> Deferred[q.PrimaryState]:
        """Record a heartbeat result for ``name``; fires with its new state."""
        return self.db.write_short(q.record_heartbeat, name, success, database_id, now)
