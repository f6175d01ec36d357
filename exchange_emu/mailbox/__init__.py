"""The mailbox store of an Exchange 2010 mailbox server: its mailbox databases in one database.

Mailboxes and their folders (Inbox, Outbox, Sent Items, Drafts, Deleted Items), the DeliveredTo
table for duplicate detection, and the replication state the transport dumpster needs. Opened
with :class:`~exchange_emu.storage.QueueDatabase` and :data:`MAILBOX_MIGRATIONS`; see
docs/mailbox.md.
"""

from exchange_emu.mailbox.errors import UnknownMailbox
from exchange_emu.mailbox.migrations import MAILBOX_MIGRATIONS
from exchange_emu.mailbox.operations import (
    DELIVERED,
    DELIVERED_TO_RETENTION,
    DUPLICATE,
    UNKNOWN,
    DatabaseState,
    ItemSummary,
    Mailbox,
    OutboxItem,
    StoredItem,
)
from exchange_emu.mailbox.store import MailboxStore, mailbox_database
from exchange_emu.mailbox.tables import FOLDERS, Folder, SubmissionState

__all__ = [
    "DELIVERED",
    "DELIVERED_TO_RETENTION",
    "DUPLICATE",
    "FOLDERS",
    "MAILBOX_MIGRATIONS",
    "UNKNOWN",
    "DatabaseState",
    "Folder",
    "ItemSummary",
    "Mailbox",
    "MailboxStore",
    "OutboxItem",
    "StoredItem",
    "SubmissionState",
    "UnknownMailbox",
    "mailbox_database",
]
