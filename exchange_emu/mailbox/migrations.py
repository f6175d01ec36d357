"""Schema steps of the mailbox store, applied by :func:`exchange_emu.storage.migrations.upgrade`.

Pass :data:`MAILBOX_MIGRATIONS` to ``QueueDatabase(url, reactor=..., migrations=...)``. The
rules are the queue database's (docs/storage.md, "Migrations"): steps are numbered 1, 2, 3 …,
each runs in its own transaction with the version bump, and an old step is never edited — each
defines its tables with its own frozen ``Table`` objects.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from exchange_emu.storage.migrations import Migration
from exchange_emu.storage.tables import NAMING_CONVENTION


def _v1_mailbox_store(conn: Connection) -> None:
    """Version 1: mailboxes, items, DeliveredTo, database state (frozen; do not edit)."""
    md = sa.MetaData(naming_convention=NAMING_CONVENTION)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    # The same shape as the queue database's database_info at its version 2, so that
    # QueueDatabase.open creates and loads the GUID here exactly as it does there.
    sa.Table(
        "database_info",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("database_guid", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("running", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.CheckConstraint("id = 1", name="single_row"),
    )
    sa.Table(
        "mailboxes",
        md,
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("display_name", sa.Unicode(256), nullable=False),
        sa.Column("database", sa.String(64), nullable=False),
        sa.Index("ix_mailboxes_database", "database"),
    )
    sa.Table(
        "items",
        md,
        sa.Column("id", ident, primary_key=True, autoincrement=True),
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
            "folder IN ('Inbox', 'Outbox', 'Sent Items', 'Drafts', 'Deleted Items')",
            name="folder",
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
    sa.Table(
        "delivered_to",
        md,
        sa.Column("id", ident, primary_key=True, autoincrement=True),
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
            "database", "mailbox", "internet_message_id", "submit_time",
            name="uq_delivered_to_key",
        ),
        sa.Index("ix_delivered_to_delivered_at", "delivered_at"),
    )
    sa.Table(
        "database_state",
        md,
        sa.Column("database", sa.String(64), primary_key=True),
        sa.Column("replicated", sa.Boolean, nullable=False),
        sa.Column("replicated_up_to", sa.Float, nullable=True),
    )
    md.create_all(conn, checkfirst=False)


#: Every schema step of the mailbox store, oldest first.
MAILBOX_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial mailbox store schema", _v1_mailbox_store),
)
