"""Thread-side operations on the mailbox store: mailboxes, Outbox, delivery, DeliveredTo, DAG.

Every function takes a SQLAlchemy ``Connection`` already inside a transaction and returns plain
values (ints, strings, frozen dataclasses), never a ``Result`` or ``Row``. Run them through
:class:`~exchange_emu.storage.QueueDatabase` (``write``/``read``) or use the Deferred-returning
facade :class:`~exchange_emu.mailbox.store.MailboxStore`. As with the queue database, a write
function may run twice (a failed group-commit batch is re-run job by job), so these touch
nothing but the database.

Mailbox addresses are compared lower-cased; mailbox database names are used as the
organization file spells them (``DB01``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from exchange_emu.mailbox.errors import UnknownMailbox
from exchange_emu.mailbox.mime import read_headers, stamp_submission
from exchange_emu.mailbox.tables import FOLDERS, Folder, SubmissionState, delivered_to, items
from exchange_emu.mailbox.tables import database_state as database_state_table
from exchange_emu.mailbox.tables import mailboxes as mailbox_table

#: How long a mailbox remembers a delivery in its DeliveredTo table (Exchange: 7 days).
DELIVERED_TO_RETENTION = 7 * 24 * 3600.0

#: Per-recipient results of :func:`deliver`.
DELIVERED = "delivered"
DUPLICATE = "duplicate"  # already in DeliveredTo: dropped silently (DUPLICATEDELIVER)
UNKNOWN = "unknown"  # no such mailbox in that mailbox database

#: Largest number of bound parameters put in one ``IN (...)`` list.
_CHUNK = 500


@dataclass(frozen=True)
class Mailbox:
    """A mailbox (``Get-Mailbox``): lower-cased address, display name, mailbox database."""

    address: str
    display_name: str
    database: str


@dataclass(frozen=True)
class OutboxItem:
    """A message waiting in a sender's Outbox for the Mail Submission service (scenario B)."""

    item_id: int
    database: str
    mailbox: str
    message_id: str
    submit_time: float
    subject: str | None
    size: int


@dataclass(frozen=True)
class ItemSummary:
    """One line of a folder listing (no body)."""

    item_id: int
    folder: str
    message_id: str
    submit_time: float
    subject: str | None
    sender: str
    size: int
    created_at: float
    delivered_at: float | None


@dataclass(frozen=True)
class StoredItem:
    """A mailbox item with its envelope, folder, submission state and whole MIME message."""

    item_id: int
    mailbox: str
    database: str
    folder: str
    message_id: str
    submit_time: float
    subject: str | None
    sender: str
    recipients: tuple[str, ...]
    size: int
    mime: bytes
    created_at: float
    delivered_at: float | None
    submission_state: str | None
    submitted_via: str | None
    notified_at: float | None


@dataclass(frozen=True)
class DatabaseState:
    """A mailbox database's replication state (DAG copy status, as the transport dumpster sees
    it): whether it is replicated, and up to what time its log has reached every copy."""

    database: str
    replicated: bool = False
    replicated_up_to: float | None = None


def _chunks(values: Sequence[str]) -> list[Sequence[str]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


def _recipients_text(recipients: Sequence[str]) -> str:
    return json.dumps(list(recipients))


def _recipients_tuple(text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text)
    except ValueError:
        return (text,)
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (str(value),)


def _require_mailbox(conn: Connection, address: str) -> str:
    """The mailbox database of ``address``; raises :class:`UnknownMailbox`."""
    database = conn.execute(
        sa.select(mailbox_table.c.database).where(mailbox_table.c.address == address)
    ).scalar_one_or_none()
    if database is None:
        raise UnknownMailbox(address)
    return str(database)


# --- mailboxes -------------------------------------------------------------------------------


def ensure_mailboxes(conn: Connection, mailboxes: Sequence[tuple[str, str, str]]) -> int:
    """Sync mailboxes ``(address, display_name, database)`` from the organization file.

    Inserts missing mailboxes and updates changed ones; returns how many rows changed. A
    mailbox whose database changed is moved with its items and DeliveredTo rows (a mailbox
    move). Mailboxes missing from ``mailboxes`` are kept.
    """
    wanted: dict[str, tuple[str, str]] = {
        address.strip().lower(): (display_name, database)
        for address, display_name, database in mailboxes
    }
    existing = {
        str(row.address): (str(row.display_name), str(row.database))
        for row in conn.execute(sa.select(mailbox_table))
    }
    changed = 0
    for address, (display_name, database) in wanted.items():
        old = existing.get(address)
        if old is None:
            conn.execute(
                sa.insert(mailbox_table).values(
                    address=address, display_name=display_name, database=database
                )
            )
        elif old != (display_name, database):
            conn.execute(
                sa.update(mailbox_table)
                .where(mailbox_table.c.address == address)
                .values(display_name=display_name, database=database)
            )
            if old[1] != database:
                for table in (items, delivered_to):
                    conn.execute(
                        sa.update(table)
                        .where(table.c.mailbox == address)
                        .values(database=database)
                    )
        else:
            continue
        changed += 1
    return changed


def mailbox_addresses(conn: Connection) -> list[Mailbox]:
    """Every mailbox of the store, by address."""
    rows = conn.execute(sa.select(mailbox_table).order_by(mailbox_table.c.address))
    return [Mailbox(str(r.address), str(r.display_name), str(r.database)) for r in rows]


# --- Outbox (scenarios A and B) --------------------------------------------------------------


def submit_to_outbox(
    conn: Connection,
    *,
    mailbox: str,
    recipients: Sequence[str],
    mime: bytes,
    now: float,
    fqdn: str,
) -> OutboxItem:
    """Scenario A: a client saves a message in ``mailbox``'s Outbox, and nothing else happens.

    Adds ``Message-ID: <uuid@fqdn>`` and ``Date:`` (from ``now``) when the message lacks them;
    the client submit time is ``now``. Raises :class:`UnknownMailbox` for an unknown sender
    mailbox and ``ValueError`` without recipients.
    """
    address = mailbox.strip().lower()
    database = _require_mailbox(conn, address)
    envelope = [r.strip() for r in recipients if r.strip()]
    if not envelope:
        raise ValueError("a message needs at least one recipient")
    stamped, fields = stamp_submission(mime, now=now, fqdn=fqdn)
    message_id = fields.message_id or ""
    result = conn.execute(
        sa.insert(items).values(
            mailbox=address,
            database=database,
            folder=Folder.OUTBOX.value,
            internet_message_id=message_id,
            submit_time=now,
            subject=fields.subject,
            sender=address,
            recipients=_recipients_text(envelope),
            size=len(stamped),
            mime=stamped,
            created_at=now,
        )
    )
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no item id")
    item_id = int(key[0])
    return OutboxItem(item_id, database, address, message_id, now, fields.subject, len(stamped))


def pending_outbox(conn: Connection, database: str | None = None) -> list[OutboxItem]:
    """Outbox items not yet moved to Sent Items (of ``database``, or all), oldest first.

    The Mail Submission service's work list, also after a restart: items already notified or
    taken by a hub stay here until :func:`move_to_sent_items`.
    """
    query = sa.select(
        items.c.id,
        items.c.database,
        items.c.mailbox,
        items.c.internet_message_id,
        items.c.submit_time,
        items.c.subject,
        items.c.size,
    ).where(items.c.folder == Folder.OUTBOX.value)
    if database is not None:
        query = query.where(items.c.database == database)
    return [
        OutboxItem(
            int(r.id),
            str(r.database),
            str(r.mailbox),
            str(r.internet_message_id),
            float(r.submit_time),
            r.subject,
            int(r.size),
        )
        for r in conn.execute(query.order_by(items.c.id))
    ]


def _set_submission(
    conn: Connection, item_id: int, values: dict[str, object]
) -> bool:
    updated = conn.execute(
        sa.update(items)
        .where(items.c.id == item_id, items.c.folder == Folder.OUTBOX.value)
        .values(**values)
    )
    return updated.rowcount == 1


def mark_notified(conn: Connection, item_id: int, hub: str, now: float) -> bool:
    """B.1: the Mail Submission service notified ``hub`` of this Outbox item.

    False if the item is not (or no longer) in the Outbox.
    """
    return _set_submission(
        conn,
        item_id,
        {"submission_state": SubmissionState.NOTIFIED.value, "submitted_via": hub,
         "notified_at": now},
    )


def mark_taken(conn: Connection, item_id: int, hub: str) -> bool:
    """B.2: ``hub`` has the item in its Submission queue; it stays in the Outbox until B.4.

    False if the item is not (or no longer) in the Outbox.
    """
    return _set_submission(
        conn, item_id, {"submission_state": SubmissionState.TAKEN.value, "submitted_via": hub}
    )


def move_to_sent_items(conn: Connection, item_id: int, hub: str) -> bool:
    """B.4: ``hub`` has taken ownership, so the item leaves the Outbox for Sent Items.

    Idempotent: False when the item is already in Sent Items or does not exist.
    """
    return _set_submission(
        conn,
        item_id,
        {"folder": Folder.SENT_ITEMS.value, "submission_state": SubmissionState.TAKEN.value,
         "submitted_via": hub},
    )


def get_item(conn: Connection, item_id: int) -> StoredItem | None:
    """An item with its envelope, folder, recipients and MIME message, or None."""
    r = conn.execute(sa.select(items).where(items.c.id == item_id)).first()
    if r is None:
        return None
    return StoredItem(
        item_id=int(r.id),
        mailbox=str(r.mailbox),
        database=str(r.database),
        folder=str(r.folder),
        message_id=str(r.internet_message_id),
        submit_time=float(r.submit_time),
        subject=r.subject,
        sender=str(r.sender),
        recipients=_recipients_tuple(str(r.recipients)),
        size=int(r.size),
        mime=bytes(r.mime),
        created_at=float(r.created_at),
        delivered_at=None if r.delivered_at is None else float(r.delivered_at),
        submission_state=r.submission_state,
        submitted_via=r.submitted_via,
        notified_at=None if r.notified_at is None else float(r.notified_at),
    )


# --- delivery (scenario C) and DeliveredTo ---------------------------------------------------


def deliver(
    conn: Connection,
    *,
    database: str,
    recipients: Sequence[str],
    sender: str,
    mime: bytes,
    message_id: str,
    submit_time: float,
    now: float,
) -> dict[str, str]:
    """C.1: deliver a message into the Inbox of each recipient's mailbox in ``database``.

    Returns a status per recipient (keyed as given): ``"delivered"``; ``"duplicate"`` when the
    mailbox's DeliveredTo table already holds this Internet Message-ID with this client submit
    time (dropped silently, Exchange's ``DUPLICATEDELIVER``); ``"unknown"`` when ``database``
    has no such mailbox. The DeliveredTo rows are written in the same transaction.
    """
    by_address: dict[str, str] = {}
    for recipient in recipients:
        by_address.setdefault(recipient.strip().lower(), recipient)
    addresses = list(by_address)
    present: set[str] = set()
    already: set[str] = set()
    for chunk in _chunks(addresses):
        present.update(
            str(a)
            for a in conn.execute(
                sa.select(mailbox_table.c.address).where(
                    mailbox_table.c.database == database, mailbox_table.c.address.in_(chunk)
                )
            ).scalars()
        )
        already.update(
            str(a)
            for a in conn.execute(
                sa.select(delivered_to.c.mailbox).where(
                    delivered_to.c.database == database,
                    delivered_to.c.internet_message_id == message_id,
                    delivered_to.c.submit_time == submit_time,
                    delivered_to.c.mailbox.in_(chunk),
                )
            ).scalars()
        )
    statuses: dict[str, str] = {}
    fresh: list[str] = []
    for address in addresses:
        if address not in present:
            status = UNKNOWN
        elif address in already:
            status = DUPLICATE
        else:
            status = DELIVERED
            fresh.append(address)
        statuses[by_address[address]] = status
    if fresh:
        subject = read_headers(mime).subject
        envelope = _recipients_text([r.strip() for r in recipients])
        conn.execute(
            sa.insert(items),
            [
                {
                    "mailbox": address,
                    "database": database,
                    "folder": Folder.INBOX.value,
                    "internet_message_id": message_id,
                    "submit_time": submit_time,
                    "subject": subject,
                    "sender": sender,
                    "recipients": envelope,
                    "size": len(mime),
                    "mime": mime,
                    "created_at": now,
                    "delivered_at": now,
                }
                for address in fresh
            ],
        )
        conn.execute(
            sa.insert(delivered_to),
            [
                {
                    "database": database,
                    "mailbox": address,
                    "internet_message_id": message_id,
                    "submit_time": submit_time,
                    "delivered_at": now,
                }
                for address in fresh
            ],
        )
    return statuses


def expire_delivered_to(conn: Connection, older_than: float) -> int:
    """Forget deliveries made before ``older_than`` (see :data:`DELIVERED_TO_RETENTION`)."""
    deleted = conn.execute(sa.delete(delivered_to).where(delivered_to.c.delivered_at < older_than))
    return int(deleted.rowcount)


# --- reading folders -------------------------------------------------------------------------


def folder_counts(conn: Connection, mailbox: str) -> dict[str, int]:
    """Items per folder of ``mailbox`` (every folder, zeros included, in Outlook's order).

    Raises :class:`UnknownMailbox`.
    """
    address = mailbox.strip().lower()
    _require_mailbox(conn, address)
    counts: dict[str, int] = {folder.value: 0 for folder in FOLDERS}
    rows = conn.execute(
        sa.select(items.c.folder, sa.func.count())
        .where(items.c.mailbox == address)
        .group_by(items.c.folder)
    )
    for folder, count in rows:
        counts[str(folder)] = int(count)
    return counts


def list_items(conn: Connection, mailbox: str, folder: str | None = None) -> list[ItemSummary]:
    """The items of ``mailbox`` (in ``folder``, or all), by item id. Raises UnknownMailbox."""
    address = mailbox.strip().lower()
    _require_mailbox(conn, address)
    query = sa.select(
        items.c.id,
        items.c.folder,
        items.c.internet_message_id,
        items.c.submit_time,
        items.c.subject,
        items.c.sender,
        items.c.size,
        items.c.created_at,
        items.c.delivered_at,
    ).where(items.c.mailbox == address)
    if folder is not None:
        query = query.where(items.c.folder == Folder(folder).value)
    return [
        ItemSummary(
            item_id=int(r.id),
            folder=str(r.folder),
            message_id=str(r.internet_message_id),
            submit_time=float(r.submit_time),
            subject=r.subject,
            sender=str(r.sender),
            size=int(r.size),
            created_at=float(r.created_at),
            delivered_at=None if r.delivered_at is None else float(r.delivered_at),
        )
        for r in conn.execute(query.order_by(items.c.id))
    ]


# --- DAG replication and lossy failover (transport dumpster) ---------------------------------


def _upsert_state(conn: Connection, database: str, values: dict[str, object]) -> DatabaseState:
    table = database_state_table
    updated = conn.execute(
        sa.update(table).where(table.c.database == database).values(**values)
    )
    if updated.rowcount == 0:
        conn.execute(
            sa.insert(table).values(
                **{"database": database, "replicated": False, "replicated_up_to": None, **values}
            )
        )
    return database_state(conn, database)


def set_replicated(conn: Connection, database: str, replicated: bool) -> DatabaseState:
    """Whether ``database`` has DAG copies (only then do hubs keep a transport dumpster)."""
    return _upsert_state(conn, database, {"replicated": replicated})


def report_replicated_up_to(conn: Connection, database: str, up_to: float) -> DatabaseState:
    """``database``'s log is on every copy up to ``up_to``: dumpster items before it can go."""
    return _upsert_state(conn, database, {"replicated_up_to": up_to})


def database_state(conn: Connection, database: str) -> DatabaseState:
    """``database``'s replication state (not replicated when nothing was recorded)."""
    table = database_state_table
    r = conn.execute(
        sa.select(table.c.replicated, table.c.replicated_up_to).where(
            table.c.database == database
        )
    ).first()
    if r is None:
        return DatabaseState(database)
    up_to = None if r.replicated_up_to is None else float(r.replicated_up_to)
    return DatabaseState(database, bool(r.replicated), up_to)


def lossy_rollback(conn: Connection, database: str, to_time: float) -> int:
    """A lossy failover: ``database`` comes back as it was at ``to_time`` (its last replicated
    time). Deletes its items created after ``to_time`` and the DeliveredTo rows written after
    it (those of the lost deliveries), so a redelivery from the transport dumpster is accepted
    again. Other databases are untouched. Returns how many items were lost.
    """
    lost = conn.execute(
        sa.delete(items).where(items.c.database == database, items.c.created_at > to_time)
    )
    conn.execute(
        sa.delete(delivered_to).where(
            delivered_to.c.database == database, delivered_to.c.delivered_at > to_time
        )
    )
    return int(lost.rowcount)
