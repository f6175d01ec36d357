"""The queue viewer's operations on the queue database (Get-Queue, Suspend-Message, …),
run on the database's threads: each takes a ``Connection`` inside a transaction and returns
plain data, so every administrator's change is one transaction, committed before the
management API answers.

Queues are the ``recipients.queue`` column (a next hop's name, ``Submission``,
``Unreachable`` or ``Poison``) and the shadow records per primary; the ``queues`` table gives
each delivery and shadow queue its Exchange number and holds Suspend-Queue.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from exchange_emu.storage import POISON_QUEUE, SUBMISSION_QUEUE
from exchange_emu.storage.tables import messages, queues, recipients, shadow_messages
from exchange_emu.transport.jobs import (
    FAILED,
    POISON,
    QUEUED,
    READY,
    RETRY,
    SUSPENDED,
    UNREACHABLE,
    DsnSettings,
    Report,
    _envelopes,
    _fail,
    _settle,
)

DELIVERY = "delivery"
SHADOW = "shadow"
WAITING = (READY, RETRY, UNREACHABLE, SUSPENDED)
"""Recipient statuses that keep a message in a queue (what Get-Message lists)."""
REMOVED_REPLY = "550 5.7.1 QUEUE.Admin; message deleted by administrator"


@dataclass(frozen=True)
class QueueRecipient:
    """A recipient of a message in one queue (Get-Message -IncludeRecipientInfo)."""

    address: str
    status: str
    last_response: str | None
    next_retry_at: float | None


@dataclass(frozen=True)
class QueuedMessage:
    """A message as it sits in one queue: the envelope and that queue's recipients.

    ``queue`` is the queue's name: a next hop, ``Submission``, ``Unreachable``, ``Poison``,
    or the primary server's name when ``shadow`` is set.
    """

    internal_id: int
    queue: str
    shadow: bool
    message_id: str
    sender: str
    subject: str
    size: int
    received_at: float
    source: str
    expires_at: float | None
    recipients: tuple[QueueRecipient, ...]


# --- queue numbers and suspension ----------------------------------------------------------


def queue_numbers(conn: Connection, kind: str, names: Iterable[str]) -> dict[str, int]:
    """The number of each ``kind`` queue named (giving new names the next number)."""
    wanted = sorted(set(names))
    known = {row.name: int(row.id) for row in conn.execute(
        sa.select(queues.c.id, queues.c.name).where(queues.c.kind == kind))}
    for name in wanted:
        if name not in known:
            result = conn.execute(sa.insert(queues).values(kind=kind, name=name,
                                                           suspended=False))
            key = result.inserted_primary_key
            assert key is not None
            known[name] = int(key[0])
    return {name: known[name] for name in wanted}


def queue_by_number(conn: Connection, kind: str, number: int) -> tuple[str, bool] | None:
    """The name and suspension of queue ``number`` of ``kind``; None if there is none."""
    row = conn.execute(sa.select(queues.c.name, queues.c.suspended).where(
        queues.c.kind == kind, queues.c.id == number)).one_or_none()
    return None if row is None else (str(row.name), bool(row.suspended))


def suspended_queues(conn: Connection) -> set[str]:
    """The next hops whose delivery queue an administrator suspended."""
    return {str(n) for n in conn.execute(sa.select(queues.c.name).where(
        queues.c.kind == DELIVERY, queues.c.suspended == sa.true())).scalars()}


def set_queue_suspended(conn: Connection, name: str, suspended: bool) -> None:
    """Suspend-Queue / Resume-Queue of the delivery queue to ``name`` (durable)."""
    queue_numbers(conn, DELIVERY, [name])
    conn.execute(sa.update(queues).where(queues.c.kind == DELIVERY, queues.c.name == name)
                 .values(suspended=suspended))


# --- listings ----------------------------------------------------------------------------------


def queue_message_counts(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """Messages per queue name (recipients waiting there) and shadow copies per primary."""
    counts = {str(name): int(count) for name, count in conn.execute(
        sa.select(recipients.c.queue, sa.func.count(sa.distinct(recipients.c.internal_id)))
        .where(recipients.c.status.in_(WAITING)).group_by(recipients.c.queue))}
    shadows = {str(name): int(count) for name, count in conn.execute(
        sa.select(shadow_messages.c.primary_server, sa.func.count())
        .group_by(shadow_messages.c.primary_server))}
    return counts, shadows


_COLUMNS = (messages.c.internal_id, messages.c.internet_message_id, messages.c.sender,
            messages.c.subject, messages.c.size, messages.c.received_at, messages.c.source,
            messages.c.expires_at)


def queued_messages(conn: Connection, queue: str | None = None, shadow: str | None = None,
                    internal_id: int | None = None) -> list[QueuedMessage]:
    """Messages waiting in queues, one entry per (message, queue), in InternalId order.

    ``queue`` keeps one queue by name; ``shadow`` keeps one primary's shadow queue (and no
    other queue); ``internal_id`` keeps one message. Without ``queue`` and ``shadow`` every
    queue is listed, shadow queues included.
    """
    out: list[QueuedMessage] = []
    if shadow is None:
        query = (sa.select(*_COLUMNS, recipients.c.queue, recipients.c.address,
                           recipients.c.status, recipients.c.last_response,
                           recipients.c.next_retry_at)
                 .join(messages, messages.c.internal_id == recipients.c.internal_id)
                 .where(recipients.c.status.in_(WAITING))
                 .order_by(recipients.c.internal_id, recipients.c.id))
        if queue is not None:
            query = query.where(recipients.c.queue == queue)
        if internal_id is not None:
            query = query.where(recipients.c.internal_id == internal_id)
        grouped: dict[tuple[int, str], list[QueueRecipient]] = defaultdict(list)
        rows: dict[tuple[int, str], Any] = {}
        for row in conn.execute(query):
            key = (int(row.internal_id), str(row.queue))
            rows.setdefault(key, row)
            grouped[key].append(QueueRecipient(row.address, row.status, row.last_response,
                                               row.next_retry_at))
        out.extend(_queued(rows[key], key[1], False, tuple(grouped[key])) for key in rows)
    if queue is None:
        shadows: Any = (sa.select(*_COLUMNS, shadow_messages.c.primary_server)
                 .join(messages, messages.c.internal_id == shadow_messages.c.internal_id)
                 .order_by(shadow_messages.c.internal_id))
        if shadow is not None:
            shadows = shadows.where(shadow_messages.c.primary_server == shadow)
        if internal_id is not None:
            shadows = shadows.where(shadow_messages.c.internal_id == internal_id)
        out.extend(_queued(row, str(row.primary_server), True, ())
                   for row in conn.execute(shadows))
    out.sort(key=lambda m: m.internal_id)
    return out


def _queued(row: Any, queue: str, shadow: bool,
            rcpts: tuple[QueueRecipient, ...]) -> QueuedMessage:
    return QueuedMessage(
        internal_id=int(row.internal_id), queue=queue, shadow=shadow,
        message_id=row.internet_message_id, sender=row.sender, subject=row.subject or "",
        size=int(row.size), received_at=float(row.received_at), source=row.source,
        expires_at=row.expires_at, recipients=rcpts)


def body_size(conn: Connection, internal_id: int) -> int | None:
    """The size of a stored message's content, or None if there is no such message."""
    size = conn.execute(sa.select(sa.func.length(messages.c.body))
                        .where(messages.c.internal_id == internal_id)).scalar_one_or_none()
    return None if size is None else int(size)


def body_chunk(conn: Connection, internal_id: int, offset: int, length: int) -> bytes:
    """``length`` bytes of a message's content from ``offset`` (Export-Message streams the
    body in chunks instead of loading it whole). On SQLite this is incremental blob I/O,
    which reads only the pages of that range; elsewhere ``substr`` of the column."""
    if conn.dialect.name == "sqlite":
        raw: Any = conn.connection.driver_connection
        blobopen = getattr(raw, "blobopen", None)  # Python 3.11+
        if blobopen is not None:
            try:
                blob = blobopen("messages", "body", internal_id, readonly=True)
            except Exception:  # no such row (sqlite3.OperationalError)
                return b""
            with blob:
                blob.seek(min(offset, len(blob)))
                return bytes(blob.read(length))
    chunk = conn.execute(sa.select(sa.func.substr(messages.c.body, offset + 1, length))
                         .where(messages.c.internal_id == internal_id)).scalar_one_or_none()
    return bytes(chunk) if chunk is not None else b""


# --- changes -----------------------------------------------------------------------------------


def _in_queue(queue: str, internal_ids: Sequence[int] | None,
              statuses: Sequence[str]) -> list[sa.ColumnElement[bool]]:
    where = [recipients.c.queue == queue, recipients.c.status.in_(statuses)]
    if internal_ids is not None:
        where.append(recipients.c.internal_id.in_(list(internal_ids)))
    return where


def suspend_message(conn: Connection, internal_id: int, queue: str) -> int:
    """Suspend-Message: the message's recipients waiting in ``queue`` are suspended (no
    delivery, no categorization). Returns how many recipients changed."""
    return int(conn.execute(sa.update(recipients).where(
        *_in_queue(queue, [internal_id], (READY, RETRY, UNREACHABLE)))
        .values(status=SUSPENDED)).rowcount)


def resubmit(conn: Connection, queue: str, internal_ids: Sequence[int] | None,
             statuses: Sequence[str]) -> list[int]:
    """Send the recipients in ``queue`` with one of ``statuses`` back to Submission, to be
    categorized afresh (Resume-Message, Retry-Queue -Resubmit). A poison message becomes a
    queued one again. Returns the InternalIds touched."""
    where = _in_queue(queue, internal_ids, statuses)
    ids = sorted({int(i) for i in conn.execute(
        sa.select(recipients.c.internal_id).where(*where)).scalars()})
    if not ids:
        return []
    conn.execute(sa.update(recipients).where(*where).values(
        status=READY, queue=SUBMISSION_QUEUE, next_hop=None, next_retry_at=None))
    if queue == POISON_QUEUE:
        conn.execute(sa.update(messages).where(messages.c.internal_id.in_(ids),
                                               messages.c.state == POISON)
                     .values(state=QUEUED, crash_count=0))
    return ids


def retry_now(conn: Connection, queue: str, now: float) -> int:
    """Retry-Queue: recipients waiting for the queue's next retry may go now."""
    return int(conn.execute(sa.update(recipients).where(*_in_queue(queue, None, (RETRY,)))
                            .values(next_retry_at=now)).rowcount)


def remove_message(conn: Connection, internal_id: int, queue: str, with_ndr: bool,
                   now: float, signer: DsnSettings) -> tuple[Report, int]:
    """Remove-Message: the message's recipients in ``queue`` fail — with an NDR to the
    sender (``-WithNDR``) or silently. A message with nothing left pending is deleted (or
    kept as a shadow copy) and its discard notification queued, as after a delivery.
    Returns the report and how many recipients were removed."""
    rows = conn.execute(sa.select(recipients.c.id, recipients.c.address).where(
        *_in_queue(queue, [internal_id], WAITING))).all()
    report = Report()
    if not rows:
        return report, 0
    if with_ndr:
        _fail(conn, {internal_id: [(int(r.id), REMOVED_REPLY) for r in rows]}, now, signer,
              report)
    else:
        conn.execute(sa.update(recipients).where(recipients.c.id.in_([int(r.id) for r in rows]))
                     .values(status=FAILED, last_response=REMOVED_REPLY))
        envelope = _envelopes(conn, [internal_id]).get(internal_id)
        if envelope is not None:
            report.failed.extend((envelope, r.address, REMOVED_REPLY) for r in rows)
    _settle(conn, [internal_id], now, report)
    return report, len(rows)


def remove_shadow(conn: Connection, internal_id: int, primary: str) -> int:
    """Remove-Message of a shadow copy: drop our shadow record for ``primary``; the message
    goes when nothing else keeps it."""
    removed = int(conn.execute(sa.delete(shadow_messages).where(
        shadow_messages.c.internal_id == internal_id,
        shadow_messages.c.primary_server == primary)).rowcount)
    still = conn.execute(sa.select(shadow_messages.c.id).where(
        shadow_messages.c.internal_id == internal_id)).first()
    if removed and still is None:
        conn.execute(sa.delete(messages).where(messages.c.internal_id == internal_id,
                                               messages.c.state == "shadow"))
    return removed
