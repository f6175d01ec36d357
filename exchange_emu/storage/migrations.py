"""Schema migrations for the queue database: an ordered list of steps, applied on open.

The ``schema_version`` table holds the version a database is at. :func:`upgrade` applies every
step above it, in order, each in its own transaction together with the version bump, so a step
that fails leaves the database at the previous version (DDL is transactional on SQLite here and
on PostgreSQL). A database at a version above the newest step was written by newer code and is
refused with :class:`SchemaVersionError` rather than being used half-understood.

Adding a step: append ``Migration(n + 1, "what it does", fn)`` to :data:`MIGRATIONS`, change
:mod:`exchange_emu.storage.tables` to the new shape, and never edit an existing step — steps
describe history, so each defines (or alters) tables with its own frozen ``Table`` objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from exchange_emu.storage import tables
from exchange_emu.storage.engine import WRITE_OPTIONS
from exchange_emu.storage.errors import SchemaVersionError


@dataclass(frozen=True)
class Migration:
    """One schema step: ``apply(conn)`` moves a database from ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial_schema(conn: Connection) -> None:
    """Version 1: the queue database of a transport server (frozen; do not edit)."""
    md = sa.MetaData(naming_convention=tables.NAMING_CONVENTION)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    sa.Table(
        "database_info",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("database_guid", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.CheckConstraint("id = 1", name="single_row"),
    )
    sa.Table(
        "messages",
        md,
        sa.Column("internal_id", ident, primary_key=True, autoincrement=True),
        sa.Column("internet_message_id", sa.String(998), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("client_ip", sa.String(45), nullable=True),
        sa.Column("client_hostname", sa.String(255), nullable=True),
        sa.Column("receive_connector", sa.String(255), nullable=True),
        sa.Column("subject", sa.UnicodeText, nullable=True),
        sa.Column("hop_count", sa.Integer, nullable=False),
        sa.Column("body_type", sa.String(16), nullable=False),
        sa.Column("dsn_envid", sa.String(100), nullable=True),
        sa.Column("dsn_ret", sa.String(8), nullable=True),
        sa.Column("xexch50", sa.LargeBinary, nullable=True),
        sa.Column("shadow_context", sa.String(255), nullable=True),
        sa.Column("shadow_message_id", sa.String(255), nullable=True),
        sa.Column("delayed_ack", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("crash_count", sa.Integer, nullable=False),
        sa.Column("origin_server", sa.String(255), nullable=True),
        sa.Index("ix_messages_state", "state"),
        sa.Index("ix_messages_internet_message_id", "internet_message_id"),
        sa.Index("ix_messages_expires_at", "expires_at"),
        sa.Index("ix_messages_shadow_context", "shadow_context", "shadow_message_id"),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "recipients",
        md,
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column(
            "internal_id",
            ident,
            sa.ForeignKey("messages.internal_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_hop", sa.String(255), nullable=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("retry_count", sa.Integer, nullable=False),
        sa.Column("next_retry_at", sa.Float, nullable=True),
        sa.Column("last_response", sa.UnicodeText, nullable=True),
        sa.Column("notify", sa.String(64), nullable=True),
        sa.Column("orcpt", sa.String(500), nullable=True),
        sa.Index("ix_recipients_internal_id", "internal_id"),
        sa.Index("ix_recipients_queue_status", "queue", "status", "next_retry_at"),
    )
    sa.Table(
        "shadow_messages",
        md,
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column(
            "internal_id",
            ident,
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
    sa.Table(
        "primaries",
        md,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("database_id", sa.String(64), nullable=True),
        sa.Column("failed_heartbeats", sa.Integer, nullable=False),
        sa.Column("last_heartbeat_at", sa.Float, nullable=True),
        sa.Column("last_success_at", sa.Float, nullable=True),
    )
    sa.Table(
        "discard_notifications",
        md,
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("shadow_context", sa.String(255), nullable=False),
        sa.Column("shadow_message_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Index("ix_discard_notifications_context", "shadow_context", "created_at"),
        sa.Index("ix_discard_notifications_created_at", "created_at"),
    )
    md.create_all(conn, checkfirst=False)


#: Every schema step, oldest first; the last one's version is the code's schema version.
def _v2_transport_pipeline(conn: Connection) -> None:
    """Version 2: what the transport pipeline needs to resume after a crash (frozen)."""
    for statement in (
        # The server a recipient was handed to: on takeover, the recipients a dead
        # primary had are the ones to resubmit.
        "ALTER TABLE recipients ADD COLUMN delivered_to VARCHAR(255)",
        # The Internet message-id a discard notification is for (message tracking).
        "ALTER TABLE discard_notifications ADD COLUMN internet_message_id VARCHAR(998)",
        # Whether the delay DSN went out (DelayNotificationTimeout), so it goes once.
        "ALTER TABLE messages ADD COLUMN delay_dsn_sent BOOLEAN NOT NULL DEFAULT FALSE",
        # Set while the server runs, cleared on a clean stop: found set on open, the
        # previous run crashed (poison message detection).
        "ALTER TABLE database_info ADD COLUMN running BOOLEAN NOT NULL DEFAULT FALSE",
    ):
        conn.execute(sa.text(statement))


def _v3_store_driver(conn: Connection) -> None:
    """Version 3: messages submitted through the store driver, and the transport dumpster."""
    # "<mailbox server>:<database>:<item id>" of the Outbox item a message came from, so
    # the hub can report ownership (B.4) once the next hop has it.
    conn.execute(sa.text("ALTER TABLE messages ADD COLUMN mapi_submission VARCHAR(255)"))
    md = sa.MetaData(naming_convention=tables.NAMING_CONVENTION)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    sa.Table(
        "dumpster",
        md,
        sa.Column("id", ident, primary_key=True, autoincrement=True),
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
    ).create(conn)


def _v4_admin_queues(conn: Connection) -> None:
    """Version 4: queue identities and suspension for the management operations (frozen)."""
    md = sa.MetaData(naming_convention=tables.NAMING_CONVENTION)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    sa.Table(
        "queues",
        md,
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("suspended", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("kind", "name"),
        sqlite_autoincrement=True,
    ).create(conn)


def _v5_discard_lookup(conn: Connection) -> None:
    """Version 5: find a waiting discard notification by its shadow message id (settling a
    message checks that its notification is not queued twice)."""
    conn.execute(sa.text("CREATE INDEX ix_discard_notifications_shadow_message_id "
                         "ON discard_notifications (shadow_message_id)"))


def _v6_categorizer_batch(conn: Connection) -> None:
    """Version 6: the messages the categorizer has taken for processing, so a crash counts
    against those only (poison message detection) (frozen)."""
    md = sa.MetaData(naming_convention=tables.NAMING_CONVENTION)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    sa.Table(
        "categorizer_batch",
        md,
        sa.Column("internal_id", ident, nullable=False),
        sa.Index("ix_categorizer_batch_internal_id", "internal_id"),
    ).create(conn)


def _v7_discard_message_identity(conn: Connection) -> None:
    """Version 7: a discard notification names its message like every tracking row does
    (internal id, sender, subject), so the primary's D.6 row can too (frozen)."""
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite").compile(dialect=conn.dialect)
    for statement in (
        f"ALTER TABLE discard_notifications ADD COLUMN internal_message_id {ident}",
        "ALTER TABLE discard_notifications ADD COLUMN sender_address VARCHAR(320)",
        "ALTER TABLE discard_notifications ADD COLUMN message_subject "
        f"{sa.UnicodeText().compile(dialect=conn.dialect)}",
    ):
        conn.execute(sa.text(statement))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial queue database schema", _v1_initial_schema),
    Migration(2, "transport pipeline: delivered_to, delay DSN, crash detection",
              _v2_transport_pipeline),
    Migration(3, "store driver submissions and the transport dumpster", _v3_store_driver),
    Migration(4, "queue identities and suspended queues (Get-Queue, Suspend-Queue)",
              _v4_admin_queues),
    Migration(5, "index discard notifications by shadow message id", _v5_discard_lookup),
    Migration(6, "messages the categorizer is processing (poison message detection)",
              _v6_categorizer_batch),
    Migration(7, "discard notifications name their message (internal id, sender, subject)",
              _v7_discard_message_identity),
)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The schema version a database has after all of ``migrations`` ran."""
    return migrations[-1].version if migrations else 0


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Raise ``ValueError`` unless the steps are numbered 1, 2, 3, … without gaps."""
    for expected, step in enumerate(migrations, start=1):
        if step.version != expected:
            raise ValueError(
                f"migration {step.description!r} has version {step.version}, expected {expected}"
            )


def get_version(conn: Connection) -> int:
    """The schema version of the database behind ``conn`` (0 when it has no schema yet)."""
    if not sa.inspect(conn).has_table(tables.schema_version.name):
        return 0
    version = conn.execute(sa.select(sa.func.max(tables.schema_version.c.version))).scalar()
    return int(version) if version is not None else 0


def _set_version(conn: Connection, version: int) -> None:
    updated = conn.execute(sa.update(tables.schema_version).values(version=version))
    if updated.rowcount == 0:
        conn.execute(sa.insert(tables.schema_version).values(version=version))


def upgrade(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to the newest step; return the version it is at afterwards.

    Blocking: call it from a thread (or before the reactor runs). Raises
    :class:`SchemaVersionError` if the database is newer than ``migrations`` know, and lets the
    error of a failing step propagate after rolling that step back.
    """
    check_migrations(migrations)
    newest = latest_version(migrations)
    with engine.connect() as conn:
        conn.execution_options(**WRITE_OPTIONS)
        with conn.begin():
            current = get_version(conn)
        if current > newest:
            raise SchemaVersionError(
                f"queue database schema version {current} is newer than this exchange-emu "
                f"supports ({newest}); use a newer exchange-emu or another database"
            )
        for step in migrations:
            if step.version <= current:
                continue
            with conn.begin():
                # Re-read inside the step's transaction: another process may have migrated.
                current = get_version(conn)
                if step.version <= current:
                    continue
                if current == 0:
                    tables.schema_version.create(conn, checkfirst=True)
                step.apply(conn)
                _set_version(conn, step.version)
            current = step.version
    return current
