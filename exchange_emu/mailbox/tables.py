"""The mailbox store's tables at the newest schema version (SQLAlchemy Core).

One mailbox server keeps all of its mailbox databases (Exchange's ``DB01.edb``, ``DB02.edb``, …)
in one SQLAlchemy database; every row carries the name of the mailbox database it belongs to.
Queries use these objects; the schema is created and changed only by the ordered steps in
:mod:`exchange_emu.mailbox.migrations`, and a test checks that the two agree.

``database_info`` and ``schema_version`` are the queue database's own tables (copied into this
metadata), because the store is opened with :class:`~exchange_emu.storage.QueueDatabase`, which
keeps the database GUID and the schema version in them.

Times are seconds since the epoch (floats) supplied by the caller.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

from exchange_emu.storage import tables as storage_tables

#: Integer keys: BIGINT on server databases, INTEGER (the rowid alias) on SQLite.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Folder(enum.StrEnum):
    """The default folders of an Exchange mailbox that the emulator uses."""

    INBOX = "Inbox"
    OUTBOX = "Outbox"
    SENT_ITEMS = "Sent Items"
    DRAFTS = "Drafts"
    DELETED_ITEMS = "Deleted Items"


#: Every folder, in the order Outlook lists them.
FOLDERS: tuple[Folder, ...] = tuple(Folder)


class SubmissionState(enum.StrEnum):
    """Where an Outbox item is in the Mail Submission service's hand-over to a hub."""

    NOTIFIED = "notified"  # a hub was told about it (B.1)
    TAKEN = "taken"  # the hub has it in its Submission queue (B.2) or owns it (B.4)


metadata = sa.MetaData(naming_convention=storage_tables.NAMING_CONVENTION)

#: The migration bookkeeping, shared with the queue database.
schema_version = storage_tables.schema_version.to_metadata(metadata)

#: The store's identity (GUID), created by QueueDatabase.open exactly as for a queue database.
database_info = storage_tables.database_info.to_metadata(metadata)

#: Mailboxes (``Get-Mailbox``): the address is lower-cased; ``database`` is the mailbox database.
mailboxes = sa.Table(
    "mailboxes",
    metadata,
    sa.Column("address", sa.String(320), primary_key=True),
    sa.Column("display_name", sa.Unicode(256), nullable=False),
    sa.Column("database", sa.String(64), nullable=False),
    sa.Index("ix_mailboxes_database", "database"),
)

#: Mailbox items (messages) with their folder; ``id`` is never reused.
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "mailbox",
        sa.String(320),
        sa.ForeignKey("mailboxes.address", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("database", sa.String(64), nullable=False),
    sa.Column("folder", sa.String(32), nullable=False),
    sa.Column("internet_message_id", sa.String(998), nullable=False),
    sa.Column("submit_time", sa.Float, nullable=False),
    sa.Column("subject", sa.UnicodeText, nullable=True),
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("recipients", sa.UnicodeText, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("mime", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Column("submission_state", sa.String(16), nullable=True),
    sa.Column("submitted_via", sa.String(255), nullable=True),
    sa.Column("notified_at", sa.Float, nullable=True),
    sa.CheckConstraint(
        "folder IN ('Inbox', 'Outbox', 'Sent Items', 'Drafts', 'Deleted Items')", name="folder"
    ),
    sa.CheckConstraint(
        "submission_state IS NULL OR submission_state IN ('notified', 'taken')",
        name="submission_state",
    ),
    sa.Index("ix_items_mailbox_folder", "mailbox", "folder"),
    sa.Index("ix_items_folder_database", "folder", "database"),
    sa.Index("ix_items_database_created_at", "database", "created_at"),
    sqlite_autoincrement=True,
)

#: Exchange's DeliveredTo table: what each mailbox already received, for duplicate detection.
delivered_to = sa.Table(
    "delivered_to",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("database", sa.String(64), nullable=False),
    sa.Column(
        "mailbox",
        sa.String(320),
        sa.ForeignKey("mailboxes.address", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("internet_message_id", sa.String(998), nullable=False),
    sa.Column("submit_time", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=False),
    sa.UniqueConstraint(
        "database", "mailbox", "internet_message_id", "submit_time", name="uq_delivered_to_key"
    ),
    sa.Index("ix_delivered_to_delivered_at", "delivered_at"),
)

#: Replication state per mailbox database, for the transport dumpster and lossy failover.
database_state = sa.Table(
    "database_state",
    metadata,
    sa.Column("database", sa.String(64), primary_key=True),
    sa.Column("replicated", sa.Boolean, nullable=False),
    sa.Column("replicated_up_to", sa.Float, nullable=True),
)
