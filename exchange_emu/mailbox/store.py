"""Deferred-returning facade over the mailbox store, for code on the reactor thread.

The mailbox store of an Exchange 2010 mailbox server (all its mailbox databases, one SQLAlchemy
database) is a :class:`~exchange_emu.storage.QueueDatabase` opened with
:data:`~exchange_emu.mailbox.migrations.MAILBOX_MIGRATIONS`: the same group-commit writer thread
and reader threads as a queue database. Each method runs the matching function of
:mod:`exchange_emu.mailbox.operations` on those threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads

from exchange_emu.mailbox import operations as ops
from exchange_emu.mailbox.migrations import MAILBOX_MIGRATIONS
from exchange_emu.mailbox.operations import (
    DatabaseState,
    ItemSummary,
    Mailbox,
    OutboxItem,
    StoredItem,
)
from exchange_emu.storage.database import QueueDatabase

__all__ = [
    "DatabaseState",
    "ItemSummary",
    "Mailbox",
    "MailboxStore",
    "OutboxItem",
    "StoredItem",
    "mailbox_database",
]


def mailbox_database(url: str, *, reactor: IReactorFromThreads, **kwargs: Any) -> QueueDatabase:
    """The database service of a mailbox server's store at ``url`` (its ``database_url``).

    ``kwargs`` are :class:`QueueDatabase`'s (``readers``, ``max_batch``, ``busy_timeout``).
    """
    return QueueDatabase(url, reactor=reactor, migrations=MAILBOX_MIGRATIONS, **kwargs)


class MailboxStore:
    """A mailbox server's view of its mailbox databases (mailboxes, folders, DeliveredTo)."""

    def __init__(self, db: QueueDatabase) -> None:
        self.db = db

    # mailboxes
    def ensure_mailboxes(self, mailboxes: Sequence[tuple[str, str, str]]) -> Deferred[int]:
        """Sync ``(address, display_name, database)`` from the organization file."""
        return self.db.write(ops.ensure_mailboxes, list(mailboxes))

    def mailbox_addresses(self) -> Deferred[list[Mailbox]]:
        """Every mailbox of the store, by address."""
        return self.db.read(ops.mailbox_addresses)

    # Outbox and Mail Submission (scenarios A, B)
    def submit_to_outbox(
        self, *, mailbox: str, recipients: Sequence[str], mime: bytes, now: float, fqdn: str
    ) -> Deferred[OutboxItem]:
        """Scenario A: save a client's message in the sender's Outbox (UnknownMailbox errback)."""
        return self.db.write(
            ops.submit_to_outbox,
            mailbox=mailbox,
            recipients=list(recipients),
            mime=mime,
            now=now,
            fqdn=fqdn,
        )

    def pending_outbox(self, database: str | None = None) -> Deferred[list[OutboxItem]]:
        """Outbox items not yet in Sent Items, oldest first."""
        return self.db.read(ops.pending_outbox, database)

    def mark_notified(self, item_id: int, hub: str, now: float) -> Deferred[bool]:
        """B.1: ``hub`` was notified of the item."""
        return self.db.write(ops.mark_notified, item_id, hub, now)

    def mark_taken(self, item_id: int, hub: str) -> Deferred[bool]:
        """B.2: ``hub`` has the item in its Submission queue."""
        return self.db.write(ops.mark_taken, item_id, hub)

    def move_to_sent_items(self, item_id: int, hub: str) -> Deferred[bool]:
        """B.4: ``hub`` took ownership; the item moves to Sent Items (once; else False)."""
        return self.db.write(ops.move_to_sent_items, item_id, hub)

    def get_item(self, item_id: int) -> Deferred[StoredItem | None]:
        """An item with its MIME message, or None."""
        return self.db.read(ops.get_item, item_id)

    # delivery (scenario C) and DeliveredTo
    def deliver(
        self,
        *,
        database: str,
        recipients: Sequence[str],
        sender: str,
        mime: bytes,
        message_id: str,
        submit_time: float,
        now: float,
    ) -> Deferred[dict[str, str]]:
        """C.1: deliver into Inboxes; fires with delivered/duplicate/unknown per recipient."""
        return self.db.write(
            ops.deliver,
            database=database,
            recipients=list(recipients),
            sender=sender,
            mime=mime,
            message_id=message_id,
            submit_time=submit_time,
            now=now,
        )

    def expire_delivered_to(self, older_than: float) -> Deferred[int]:
        """Drop DeliveredTo rows older than ``older_than``; fires with how many."""
        return self.db.write(ops.expire_delivered_to, older_than)

    # reading folders
    def folder_counts(self, mailbox: str) -> Deferred[dict[str, int]]:
        """Items per folder of ``mailbox``."""
        return self.db.read(ops.folder_counts, mailbox)

    def list_items(
        self, mailbox: str, folder: str | None = None
    ) -> Deferred[list[ItemSummary]]:
        """The items of ``mailbox`` (in ``folder``, or all)."""
        return self.db.read(ops.list_items, mailbox, folder)

    # DAG replication and lossy failover
    def set_replicated(self, database: str, replicated: bool) -> Deferred[DatabaseState]:
        """Record whether ``database`` has DAG copies."""
        return self.db.write(ops.set_replicated, database, replicated)

    def report_replicated_up_to(self, database: str, up_to: float) -> Deferred[DatabaseState]:
        """Record that ``database`` is replicated to every copy up to ``up_to``."""
        return self.db.write(ops.report_replicated_up_to, database, up_to)

    def database_state(self, database: str) -> Deferred[DatabaseState]:
        """``database``'s replication state."""
        return self.db.read(ops.database_state, database)

    def lossy_rollback(self, database: str, to_time: float) -> Deferred[int]:
        """Lossy failover of ``database`` back to ``to_time``; fires with items lost."""
        return self.db.write(ops.lossy_rollback, database, to_time)
