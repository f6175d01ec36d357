"""The queue database's tables as they are at the newest schema version (SQLAlchemy Core).

Queries use these objects. The schema itself is created and changed only by the ordered steps in
:mod:`exchange_emu.storage.migrations`; a test checks that migrating an empty database from
scratch yields exactly these tables, columns and indexes.

Times are seconds since the epoch (floats) supplied by the caller, because every clock in the
emulator is injected.
"""

from __future__ import annotations

import sqlalchemy as sa

#: Constraint names that are identical on every backend, so later migrations can name them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Integer keys: BIGINT on server databases, INTEGER (the rowid alias) on SQLite.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: The schema version the database is at: one row, maintained by the migration runner.
schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

#: The queue database's identity: the GUID an ``XSHADOW`` reply hands out (one row, id 1).
database_info = sa.Table(
    "database_info",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("database_guid", sa.String(36), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("running", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("id = 1", name="single_row"),
)

#: Messages in the transport queue; ``internal_id`` is Exchange's InternalId (never reused).
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("internal_id", Id, primary_key=True, autoincrement=True),
    sa.Column("internet_message_id", sa.String(998), nullable=False, default=""),
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("client_ip", sa.String(45), nullable=True),
    sa.Column("client_hostname", sa.String(255), nullable=True),
    sa.Column("receive_connector", sa.String(255), nullable=True),
    sa.Column("subject", sa.UnicodeText, nullable=True),
    sa.Column("hop_count", sa.Integer, nullable=False, default=0),
    sa.Column("body_type", sa.String(16), nullable=False, default="7BIT"),
    sa.Column("dsn_envid", sa.String(100), nullable=True),
    sa.Column("dsn_ret", sa.String(8), nullable=True),
    sa.Column("xexch50", sa.LargeBinary, nullable=True),
    sa.Column("shadow_context", sa.String(255), nullable=True),
    sa.Column("shadow_message_id", sa.String(255), nullable=True),
    sa.Column("delayed_ack", sa.Boolean, nullable=False, default=False),
    sa.Column("state", sa.String(16), nullable=False, default="queued"),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("crash_count", sa.Integer, nullable=False, default=0),
    sa.Column("origin_server", sa.String(255), nullable=True),
    sa.Column("delay_dsn_sent", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("mapi_submission", sa.String(255), nullable=True),
    sa.Index("ix_messages_state", "state"),
    sa.Index("ix_messages_internet_message_id", "internet_message_id"),
    sa.Index("ix_messages_expires_at", "expires_at"),
    sa.Index("ix_messages_shadow_context", "shadow_context", "shadow_message_id"),
    sqlite_autoincrement=True,
)

#: The messages the categorizer has taken for processing (its batch in progress): written in
#: the transaction that takes the batch, deleted in the one that routes it. Exchange's poison
#: message detection counts a crash only against the messages in process at the time, so a
#: start after a crash counts one against each message listed here.
categorizer_batch = sa.Table(
    "categorizer_batch",
    metadata,
    sa.Column("internal_id", Id, nullable=False),
    sa.Index("ix_categorizer_batch_internal_id", "internal_id"),
)

#: One row per recipient of a message: where it is queued and how delivery went.
recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "internal_id",
        Id,
        sa.ForeignKey("messages.internal_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("address", sa.String(320), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="ready"),
    sa.Column("next_hop", sa.String(255), nullable=True),
    sa.Column("queue", sa.String(255), nullable=False, default="Submission"),
    sa.Column("retry_count", sa.Integer, nullable=False, default=0),
    sa.Column("next_retry_at", sa.Float, nullable=True),
    sa.Column("last_response", sa.UnicodeText, nullable=True),
    sa.Column("notify", sa.String(64), nullable=True),
    sa.Column("orcpt", sa.String(500), nullable=True),
    sa.Column("delivered_to", sa.String(255), nullable=True),
    sa.Index("ix_recipients_internal_id", "internal_id"),
    sa.Index("ix_recipients_queue_status", "queue", "status", "next_retry_at"),
)

#: Shadow copies WE hold for a primary server that acknowledged them (Exchange's shadow queue
#: ``<Server>\Shadow\<n>``, one per primary); the body is the referenced message's.
shadow_messages = sa.Table(
    "shadow_messages",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "internal_id",
        Id,
        sa.ForeignKey("messages.internal_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("primary_server", sa.String(255), nullable=False),
    sa.Column("shadow_message_id", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("primary_server", "shadow_message_id"),
    sa.Index("ix_shadow_messages_internal_id", "internal_id"),
    sa.Index("ix_shadow_messages_created_at", "created_at"),
)

#: What a shadow holder knows of each primary: its queue-database id and heartbeat health.
primaries = sa.Table(
    "primaries",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("database_id", sa.String(64), nullable=True),
    sa.Column("failed_heartbeats", sa.Integer, nullable=False, default=0),
    sa.Column("last_heartbeat_at", sa.Float, nullable=True),
    sa.Column("last_success_at", sa.Float, nullable=True),
)

#: Discard notifications a primary keeps per shadow context until the holder's ``XQDISCARD``.
discard_notifications = sa.Table(
    "discard_notifications",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("shadow_context", sa.String(255), nullable=False),
    sa.Column("shadow_message_id", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("internet_message_id", sa.String(998), nullable=True),
    # The message's identity for the D.6 tracking row (NULL in rows older than version 7).
    sa.Column("internal_message_id", Id, nullable=True),
    sa.Column("sender_address", sa.String(320), nullable=True),
    sa.Column("message_subject", sa.UnicodeText, nullable=True),
    sa.Index("ix_discard_notifications_context", "shadow_context", "created_at"),
    sa.Index("ix_discard_notifications_created_at", "created_at"),
    sa.Index("ix_discard_notifications_shadow_message_id", "shadow_message_id"),
)

#: The transport dumpster: copies of messages delivered to replicated mailbox databases,
#: kept until the database's log holding them is replicated (or size and age limits),
#: for redelivery after a lossy failover.
dumpster = sa.Table(
    "dumpster",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("database", sa.String(255), nullable=False),
    sa.Column("internet_message_id", sa.String(998), nullable=False),
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("recipients", sa.UnicodeText, nullable=False),
    sa.Column("submit_time", sa.Float, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=False),
    sa.Index("ix_dumpster_database_delivered_at", "database", "delivered_at"),
    sqlite_autoincrement=True,
)

#: Exchange's queue identities (``HUB01\\12`` for a delivery queue, ``HUB01\\Shadow\\3`` for a
#: shadow queue): a number per next hop (kind ``delivery``) or primary server (kind ``shadow``),
#: never reused, and whether an administrator suspended the queue (Suspend-Queue survives a
#: restart).
queues = sa.Table(
    "queues",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("suspended", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("kind", "name"),
    sqlite_autoincrement=True,
)
