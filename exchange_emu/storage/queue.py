"""Thread-side operations on the queue database: messages, recipients, shadows, discards.

Every function takes a SQLAlchemy ``Connection`` that is already inside a transaction and
returns plain values (ints, strings, frozen dataclasses) — never a ``Result`` or ``Row`` — so it
can run on the database thread and hand its result to the reactor. Run them through
:class:`~exchange_emu.storage.database.QueueDatabase` (``write``/``read``) or use the
Deferred-returning facade :class:`~exchange_emu.storage.store.QueueStore`.

A write function may be run twice: when a group-commit batch fails it is rolled back and every
job in it re-runs alone. So these functions touch nothing but the database (a body file is
re-read from position 0).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from exchange_emu.storage.direct import DirectStatement
from exchange_emu.storage.errors import MessageNotFoundError
from exchange_emu.storage.tables import (
    discard_notifications,
    messages,
    primaries,
    recipients,
    shadow_messages,
)

#: Exchange's queue that every accepted message enters first.
SUBMISSION_QUEUE = "Submission"
#: Where messages with no route wait (Exchange's Unreachable queue).
UNREACHABLE_QUEUE = "Unreachable"
#: Where messages that crashed the transport service too often are parked.
POISON_QUEUE = "Poison"

#: Largest number of bound parameters put in one ``IN (...)`` list.
_CHUNK = 500


class MessageState(enum.StrEnum):
    """Where a message is in its life on this server (the ``messages.state`` column)."""

    QUEUED = "queued"  # being categorized or waiting in a delivery queue
    SUSPENDED = "suspended"  # Suspend-Message
    DELIVERED = "delivered"  # every recipient reached its next hop or mailbox
    SHADOW = "shadow"  # kept only as a shadow copy for one or more primaries
    POISON = "poison"  # in the Poison queue
    DELETED = "deleted"  # removed by an administrator, kept for the record


class RecipientStatus(enum.StrEnum):
    """Delivery state of one recipient (the ``recipients.status`` column)."""

    READY = "ready"
    RETRY = "retry"
    SUSPENDED = "suspended"
    DELIVERED = "delivered"
    FAILED = "failed"


class BodyType(enum.StrEnum):
    """The ``BODY=`` the message arrived with (RFC 6152 / RFC 3030)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"
    BINARY_MIME = "BINARYMIME"


@dataclass(frozen=True)
class Recipient:
    """An envelope recipient (``RCPT TO``) with its DSN ``NOTIFY=`` and ``ORCPT=`` parameters."""

    address: str
    notify: str | None = None
    orcpt: str | None = None
    queue: str | None = None
    """The delivery queue the categorizer chose before the commit (categorized on receipt);
    None: the message's queue (Submission)."""


@dataclass(frozen=True, kw_only=True)
class NewMessage:
    """A message a transport server is about to acknowledge (``250 2.6.0 … Queued mail``).

    ``body`` is either the bytes or a binary file object (e.g. a spooled temporary file); a file
    is read on the database thread from position 0 and is never closed by the store: keep it
    open until the ``accept_message`` Deferred has fired, then close it yourself.
    ``received_at`` is the caller's clock (seconds since the epoch).
    """

    sender: str
    recipients: tuple[str | Recipient, ...]
    body: bytes | BinaryIO
    received_at: float
    message_id: str = ""
    subject: str | None = None
    source: str = "SMTP"
    client_ip: str | None = None
    client_hostname: str | None = None
    receive_connector: str | None = None
    hop_count: int = 0
    body_type: str = BodyType.SEVEN_BIT
    dsn_envid: str | None = None
    dsn_ret: str | None = None
    xexch50: bytes | None = None
    shadow_context: str | None = None
    shadow_message_id: str | None = None
    delayed_ack: bool = False
    expires_at: float | None = None
    origin_server: str | None = None
    mapi_submission: str | None = None
    """``<mailbox server>:<database>:<item id>`` of the Outbox item (store-driver submissions)."""
    state: str = MessageState.QUEUED
    queue: str = SUBMISSION_QUEUE

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("a message needs at least one recipient")
        if self.body_type not in set(BodyType):
            raise ValueError(f"unknown body type {self.body_type!r}")

    def recipient_list(self) -> tuple[Recipient, ...]:
        """The recipients, each as a :class:`Recipient`."""
        return tuple(r if isinstance(r, Recipient) else Recipient(r) for r in self.recipients)


@dataclass(frozen=True)
class StoredRecipient:
    """A recipient row as stored: queue, next hop, status and retry bookkeeping."""

    id: int
    address: str
    status: str
    queue: str
    next_hop: str | None
    retry_count: int
    next_retry_at: float | None
    last_response: str | None
    notify: str | None
    orcpt: str | None


@dataclass(frozen=True)
class StoredMessage:
    """A queued message's envelope and recipients (the body comes from :func:`get_body`)."""

    internal_id: int
    message_id: str
    sender: str
    size: int
    received_at: float
    source: str
    client_ip: str | None
    client_hostname: str | None
    receive_connector: str | None
    subject: str | None
    hop_count: int
    body_type: str
    dsn_envid: str | None
    dsn_ret: str | None
    xexch50: bytes | None
    shadow_context: str | None
    shadow_message_id: str | None
    delayed_ack: bool
    state: str
    expires_at: float | None
    crash_count: int
    origin_server: str | None
    recipients: tuple[StoredRecipient, ...]


@dataclass(frozen=True)
class MessageSummary:
    """One line of a ``Get-Message`` style listing."""

    internal_id: int
    message_id: str
    sender: str
    subject: str | None
    size: int
    received_at: float
    source: str
    state: str
    recipient_count: int


@dataclass(frozen=True)
class ShadowRecord:
    """A shadow copy we hold for ``primary`` (an entry of Exchange's ``Shadow\\<n>`` queue)."""

    internal_id: int
    primary: str
    shadow_message_id: str
    created_at: float


@dataclass(frozen=True)
class PrimaryState:
    """A shadow holder's view of one primary server (heartbeat via ``XQDISCARD``).

    ``database_changed`` is set only by :func:`record_heartbeat`: the primary answered
    ``XSHADOW`` with a queue-database id different from the one stored before — it lost its
    queue database, so the holder must resubmit its whole shadow queue for it.
    """

    name: str
    database_id: str | None
    failed_heartbeats: int
    last_heartbeat_at: float | None
    last_success_at: float | None
    database_changed: bool = False


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def body_size(body: bytes | BinaryIO) -> int | None:
    """How many bytes a message body holds: its ``size`` if it tells one, or a file's
    length; None if it cannot say."""
    if isinstance(body, bytes | bytearray | memoryview):
        return len(body)
    size = getattr(body, "size", None)
    if isinstance(size, int):
        return size
    try:
        position = body.tell()
        end = body.seek(0, 2)
        body.seek(position)
    except (AttributeError, OSError, ValueError):
        return None
    return end


def _read_body(body: bytes | BinaryIO) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    body.seek(0)
    data = body.read()
    if not isinstance(data, bytes | bytearray):
        raise TypeError("a message body file must be opened in binary mode")
    return bytes(data)


# --- messages --------------------------------------------------------------------------------


_MESSAGE_COLUMNS = [
    "internet_message_id", "sender", "size", "body", "received_at", "source", "client_ip",
    "client_hostname", "receive_connector", "subject", "hop_count", "body_type", "dsn_envid",
    "dsn_ret", "xexch50", "shadow_context", "shadow_message_id", "delayed_ack", "state",
    "expires_at", "crash_count", "origin_server",
]
# Built once and run straight on SQLite's driver: the accepting path runs once per message
# received, where SQLAlchemy's execution machinery cost more than the inserts themselves.
_INSERT_MESSAGE = DirectStatement(sa.insert(messages), column_keys=_MESSAGE_COLUMNS)
_INSERT_MESSAGE_V3 = DirectStatement(  # mapi_submission is a column of schema v3
    sa.insert(messages), column_keys=[*_MESSAGE_COLUMNS, "mapi_submission"])
_INSERT_RECIPIENT = DirectStatement(sa.insert(recipients), column_keys=[
    "internal_id", "address", "status", "next_hop", "queue", "retry_count", "next_retry_at",
    "last_response", "notify", "orcpt"])


def accept_message(conn: Connection, new: NewMessage) -> int:
    """Insert a message and its recipients (status ready, queue ``new.queue``).

    Returns the new InternalId. Ids increase and are never reused, even after deletion.
    """
    body = _read_body(new.body)
    values: dict[str, Any] = dict(
        internet_message_id=new.message_id,
        sender=new.sender,
        size=len(body),
        body=body,
        received_at=new.received_at,
        source=new.source,
        client_ip=new.client_ip,
        client_hostname=new.client_hostname,
        receive_connector=new.receive_connector,
        subject=new.subject,
        hop_count=new.hop_count,
        body_type=str(new.body_type),
        dsn_envid=new.dsn_envid,
        dsn_ret=new.dsn_ret,
        xexch50=new.xexch50,
        shadow_context=new.shadow_context,
        shadow_message_id=new.shadow_message_id,
        delayed_ack=new.delayed_ack,
        state=str(new.state),
        expires_at=new.expires_at,
        crash_count=0,
        origin_server=new.origin_server,
    )
    insert = _INSERT_MESSAGE
    if new.mapi_submission is not None:
        values["mapi_submission"] = new.mapi_submission
        insert = _INSERT_MESSAGE_V3
    internal_id = insert.insert(conn, values)
    _INSERT_RECIPIENT.run_many(
        conn,
        [
            {
                "internal_id": internal_id,
                "address": r.address,
                "status": RecipientStatus.READY.value,
                "next_hop": r.queue,
                "queue": r.queue or new.queue,
                "retry_count": 0,
                "next_retry_at": None,
                "last_response": None,
                "notify": r.notify,
                "orcpt": r.orcpt,
            }
            for r in new.recipient_list()
        ],
    )
    return internal_id


_ENVELOPE_COLUMNS = [c for c in messages.c if c.name != "body"]


def get_message(conn: Connection, internal_id: int) -> StoredMessage | None:
    """The message's envelope and recipients, or None if there is no such InternalId."""
    row = conn.execute(
        sa.select(*_ENVELOPE_COLUMNS).where(messages.c.internal_id == internal_id)
    ).one_or_none()
    if row is None:
        return None
    rcpts = conn.execute(
        sa.select(recipients)
        .where(recipients.c.internal_id == internal_id)
        .order_by(recipients.c.id)
    ).all()
    return StoredMessage(
        internal_id=int(row.internal_id),
        message_id=row.internet_message_id,
        sender=row.sender,
        size=int(row.size),
        received_at=float(row.received_at),
        source=row.source,
        client_ip=row.client_ip,
        client_hostname=row.client_hostname,
        receive_connector=row.receive_connector,
        subject=row.subject,
        hop_count=int(row.hop_count),
        body_type=row.body_type,
        dsn_envid=row.dsn_envid,
        dsn_ret=row.dsn_ret,
        xexch50=bytes(row.xexch50) if row.xexch50 is not None else None,
        shadow_context=row.shadow_context,
        shadow_message_id=row.shadow_message_id,
        delayed_ack=bool(row.delayed_ack),
        state=row.state,
        expires_at=row.expires_at,
        crash_count=int(row.crash_count),
        origin_server=row.origin_server,
        recipients=tuple(
            StoredRecipient(
                id=int(r.id),
                address=r.address,
                status=r.status,
                queue=r.queue,
                next_hop=r.next_hop,
                retry_count=int(r.retry_count),
                next_retry_at=r.next_retry_at,
                last_response=r.last_response,
                notify=r.notify,
                orcpt=r.orcpt,
            )
            for r in rcpts
        ),
    )


def get_body(conn: Connection, internal_id: int) -> bytes:
    """The message's content; raises :class:`MessageNotFoundError` for an unknown id."""
    body = conn.execute(
        sa.select(messages.c.body).where(messages.c.internal_id == internal_id)
    ).scalar_one_or_none()
    if body is None:
        raise MessageNotFoundError(f"no message with InternalId {internal_id}")
    return bytes(body)


def count_messages(conn: Connection, state: str | None = None) -> int:
    """How many messages are stored, optionally only those in ``state``."""
    query = sa.select(sa.func.count()).select_from(messages)
    if state is not None:
        query = query.where(messages.c.state == str(state))
    return int(conn.execute(query).scalar_one())


def list_messages(
    conn: Connection,
    *,
    state: str | None = None,
    queue: str | None = None,
    after_id: int = 0,
    limit: int = 1000,
) -> list[MessageSummary]:
    """Messages in InternalId order, for ``Get-Message`` (default result size 1000).

    ``queue`` keeps messages with at least one recipient in that queue; page with
    ``after_id`` = the last InternalId of the previous page.
    """
    rcpt_count = (
        sa.select(sa.func.count())
        .where(recipients.c.internal_id == messages.c.internal_id)
        .scalar_subquery()
    )
    query = (
        sa.select(
            messages.c.internal_id,
            messages.c.internet_message_id,
            messages.c.sender,
            messages.c.subject,
            messages.c.size,
            messages.c.received_at,
            messages.c.source,
            messages.c.state,
            rcpt_count.label("recipient_count"),
        )
        .where(messages.c.internal_id > after_id)
        .order_by(messages.c.internal_id)
        .limit(limit)
    )
    if state is not None:
        query = query.where(messages.c.state == str(state))
    if queue is not None:
        query = query.where(
            messages.c.internal_id.in_(
                sa.select(recipients.c.internal_id).where(recipients.c.queue == queue)
            )
        )
    return [
        MessageSummary(
            internal_id=int(r.internal_id),
            message_id=r.internet_message_id,
            sender=r.sender,
            subject=r.subject,
            size=int(r.size),
            received_at=float(r.received_at),
            source=r.source,
            state=r.state,
            recipient_count=int(r.recipient_count),
        )
        for r in conn.execute(query)
    ]


def set_message_state(conn: Connection, internal_id: int, state: str) -> bool:
    """Move a message to ``state``; False if there is no such message."""
    result = conn.execute(
        sa.update(messages).where(messages.c.internal_id == internal_id).values(state=str(state))
    )
    return result.rowcount > 0


def delete_message(conn: Connection, internal_id: int) -> bool:
    """Remove a message with its recipients and shadow records; False if it did not exist."""
    result = conn.execute(sa.delete(messages).where(messages.c.internal_id == internal_id))
    return result.rowcount > 0


# --- discard notifications (we are the primary) ----------------------------------------------


def add_discard_notifications(
    conn: Connection, context: str, shadow_message_ids: Sequence[str], now: float
) -> int:
    """Queue discard notifications for the shadow holder ``context`` (its ``XSHADOW`` context).

    Ids already waiting for that context are not queued twice. Returns how many were added.
    """
    wanted = list(dict.fromkeys(shadow_message_ids))
    if not wanted:
        return 0
    pending: set[str] = set()
    for chunk in _chunks(wanted):
        pending.update(
            conn.execute(
                sa.select(discard_notifications.c.shadow_message_id).where(
                    discard_notifications.c.shadow_context == context,
                    discard_notifications.c.shadow_message_id.in_(chunk),
                )
            ).scalars()
        )
    rows = [
        {"shadow_context": context, "shadow_message_id": sid, "created_at": now}
        for sid in wanted
        if sid not in pending
    ]
    if rows:
        conn.execute(sa.insert(discard_notifications), rows)
    return len(rows)


def take_discard_notifications(conn: Connection, context: str, limit: int) -> list[str]:
    """Hand over (and delete) up to ``limit`` of ``context``'s notifications, oldest first.

    This is the primary's side of ``XQDISCARD <max>``: the deletion commits in the same
    transaction, so once the caller sees the ids they are gone for good.
    """
    if limit < 1:
        raise ValueError("limit must be a positive integer")
    rows = conn.execute(
        sa.select(discard_notifications.c.id, discard_notifications.c.shadow_message_id)
        .where(discard_notifications.c.shadow_context == context)
        .order_by(discard_notifications.c.created_at, discard_notifications.c.id)
        .limit(limit)
    ).all()
    ids = [int(r.id) for r in rows]
    for chunk in _chunks(ids):
        conn.execute(sa.delete(discard_notifications).where(discard_notifications.c.id.in_(chunk)))
    return [str(r.shadow_message_id) for r in rows]


def count_discard_notifications(conn: Connection, context: str | None = None) -> int:
    """How many discard notifications wait, for one context or for all."""
    query = sa.select(sa.func.count()).select_from(discard_notifications)
    if context is not None:
        query = query.where(discard_notifications.c.shadow_context == context)
    return int(conn.execute(query).scalar_one())


def expire_discard_notifications(conn: Connection, older_than: float) -> int:
    """Drop notifications created before ``older_than`` (ShadowMessageAutoDiscardInterval)."""
    result = conn.execute(
        sa.delete(discard_notifications).where(discard_notifications.c.created_at < older_than)
    )
    return int(result.rowcount)


# --- shadow messages (we are the shadow holder) ----------------------------------------------


def add_shadow(
    conn: Connection, internal_id: int, primary: str, shadow_message_id: str, now: float
) -> None:
    """Record that message ``internal_id`` is shadowed by us for ``primary`` under the id we
    sent as ``MAIL FROM … XSHADOW=<shadow_message_id>``."""
    conn.execute(
        sa.insert(shadow_messages).values(
            internal_id=internal_id,
            primary_server=primary,
            shadow_message_id=shadow_message_id,
            created_at=now,
        )
    )


def _purge_unshadowed(conn: Connection, internal_ids: Iterable[int]) -> int:
    """Delete messages in state ``shadow`` among ``internal_ids`` that no shadow record uses."""
    candidates = sorted(set(internal_ids))
    removed = 0
    still_shadowed = sa.exists().where(shadow_messages.c.internal_id == messages.c.internal_id)
    for chunk in _chunks(candidates):
        result = conn.execute(
            sa.delete(messages).where(
                messages.c.internal_id.in_(chunk),
                messages.c.state == MessageState.SHADOW.value,
                ~still_shadowed,
            )
        )
        removed += result.rowcount
    return removed


def remove_shadows(conn: Connection, primary: str, shadow_message_ids: Sequence[str]) -> int:
    """Delete our shadows for ``primary`` named by its discard notifications; return how many.

    A message in state ``shadow`` that no longer has any shadow record is deleted as well
    (scenario D.7: the holder deletes the shadow message).
    """
    removed = 0
    touched: list[int] = []
    for chunk in _chunks(list(dict.fromkeys(shadow_message_ids))):
        where = (
            shadow_messages.c.primary_server == primary,
            shadow_messages.c.shadow_message_id.in_(chunk),
        )
        touched.extend(
            int(i)
            for i in conn.execute(sa.select(shadow_messages.c.internal_id).where(*where)).scalars()
        )
        removed += conn.execute(sa.delete(shadow_messages).where(*where)).rowcount
    _purge_unshadowed(conn, touched)
    return removed


def shadows_for(conn: Connection, primary: str) -> list[ShadowRecord]:
    """Our shadow queue for ``primary``, oldest first."""
    rows = conn.execute(
        sa.select(shadow_messages)
        .where(shadow_messages.c.primary_server == primary)
        .order_by(shadow_messages.c.created_at, shadow_messages.c.id)
    ).all()
    return [
        ShadowRecord(
            internal_id=int(r.internal_id),
            primary=r.primary_server,
            shadow_message_id=r.shadow_message_id,
            created_at=float(r.created_at),
        )
        for r in rows
    ]


def shadow_primaries(conn: Connection) -> dict[str, int]:
    """Each primary we hold shadows for, with the number of shadows (``Shadow\\<n>`` queues)."""
    rows = conn.execute(
        sa.select(shadow_messages.c.primary_server, sa.func.count())
        .group_by(shadow_messages.c.primary_server)
        .order_by(shadow_messages.c.primary_server)
    ).all()
    return {str(name): int(count) for name, count in rows}


def expire_shadows(conn: Connection, older_than: float) -> int:
    """Drop shadow records created before ``older_than`` (ShadowMessageAutoDiscardInterval).

    Messages in state ``shadow`` left without shadow records are deleted too.
    """
    old = shadow_messages.c.created_at < older_than
    touched = [
        int(i) for i in conn.execute(sa.select(shadow_messages.c.internal_id).where(old)).scalars()
    ]
    removed = int(conn.execute(sa.delete(shadow_messages).where(old)).rowcount)
    _purge_unshadowed(conn, touched)
    return removed


# --- primaries (heartbeat) -------------------------------------------------------------------


def get_primary(conn: Connection, name: str) -> PrimaryState | None:
    """What we know of primary ``name``, or None if we never talked shadow with it."""
    row = conn.execute(sa.select(primaries).where(primaries.c.name == name)).one_or_none()
    if row is None:
        return None
    return PrimaryState(
        name=row.name,
        database_id=row.database_id,
        failed_heartbeats=int(row.failed_heartbeats),
        last_heartbeat_at=row.last_heartbeat_at,
        last_success_at=row.last_success_at,
    )


def record_heartbeat(
    conn: Connection, name: str, success: bool, database_id: str | None, now: float
) -> PrimaryState:
    """Record one heartbeat to primary ``name`` and return its new state.

    A success resets the failed-heartbeat counter, a failure raises it (ownership is taken
    when it reaches ShadowHeartbeatRetryCount — the caller's decision). ``database_id`` is the
    primary's ``XSHADOW`` reply if the session got that far; the state's ``database_changed``
    says it differs from the id stored before.
    """
    before = get_primary(conn, name)
    if before is None:
        conn.execute(sa.insert(primaries).values(name=name, failed_heartbeats=0))
        before = PrimaryState(name, None, 0, None, None)
    changed = (
        database_id is not None
        and before.database_id is not None
        and database_id != before.database_id
    )
    after = PrimaryState(
        name=name,
        database_id=database_id if database_id is not None else before.database_id,
        failed_heartbeats=0 if success else before.failed_heartbeats + 1,
        last_heartbeat_at=now,
        last_success_at=now if success else before.last_success_at,
        database_changed=changed,
    )
    conn.execute(
        sa.update(primaries)
        .where(primaries.c.name == name)
        .values(
            database_id=after.database_id,
            failed_heartbeats=after.failed_heartbeats,
            last_heartbeat_at=after.last_heartbeat_at,
            last_success_at=after.last_success_at,
        )
    )
    return after
