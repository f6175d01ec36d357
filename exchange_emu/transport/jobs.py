"""The transport pipeline's queue operations, run on the queue database's
writer thread (each function takes a ``Connection`` and returns plain data).

Every state change of a message is one of these functions, so each is one
(group-committed) transaction: a crash between two of them leaves the queue
database in a state the next start can resume from.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from exchange_emu.storage import POISON_QUEUE, SUBMISSION_QUEUE, NewMessage
from exchange_emu.storage import Recipient as NewRecipient
from exchange_emu.storage.database import SHORT_WRITE_BODY_BYTES
from exchange_emu.storage.direct import DirectStatement
from exchange_emu.storage.errors import NotShort
from exchange_emu.storage.queue import accept_message
from exchange_emu.storage.tables import (
    categorizer_batch,
    database_info,
    discard_notifications,
    dumpster,
    messages,
    recipients,
    shadow_messages,
)
from exchange_emu.transport import dsn

READY = "ready"
RETRY = "retry"
UNREACHABLE = "unreachable"
DELIVERED = "delivered"
FAILED = "failed"
SUSPENDED = "suspended"
PENDING = (READY, RETRY, UNREACHABLE)
"""Recipient statuses that still need this server to do something."""

QUEUED = "queued"
SHADOW = "shadow"
POISON = "poison"

_CHUNK = 500


def _chunks(values: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


@dataclass(frozen=True)
class DsnSettings:
    """Who signs this server's delivery status notifications."""

    reporting_mta: str
    postmaster: str


@dataclass(frozen=True)
class Envelope:
    """A message's envelope facts, for tracking rows and routing."""

    internal_id: int
    message_id: str
    sender: str
    subject: str
    size: int
    source: str
    received_at: float
    shadow_context: str | None
    shadow_message_id: str | None
    mapi_submission: str | None = None


@dataclass(frozen=True)
class SubmittedRecipient:
    id: int
    address: str


@dataclass(frozen=True)
class Submitted:
    """A message with recipients waiting in the Submission queue for the categorizer."""

    envelope: Envelope
    recipients: tuple[SubmittedRecipient, ...]


@dataclass
class Settled:
    """What became of a message once no recipient needs this server any more."""

    envelope: Envelope
    discard_queued: bool = False  # for the previous hop (D.4.4, C.3, E.6)
    deleted: bool = False  # E.5: not shadowed anywhere, gone
    shadowed: bool = False  # kept as a shadow copy for a primary (D.4.3)


@dataclass
class Report:
    """The outcome of one job, for tracking rows and the in-memory queues."""

    settled: list[Settled] = field(default_factory=list)
    dsns: list[tuple[int, str, Envelope, str]] = field(default_factory=list)
    """(new internal id, kind, original envelope, DSN message-id) for each DSN generated."""
    failed: list[tuple[Envelope, str, str]] = field(default_factory=list)
    """(envelope, recipient, reply) for each recipient failed."""
    shadows_added: list[tuple[Envelope, str]] = field(default_factory=list)
    """(envelope, our shadow message id) for each shadow copy made (D.4.3)."""


def _envelope(row: Sequence[Any]) -> Envelope:
    """The envelope from a row whose first columns are ``_ENVELOPE``'s, in order."""
    return Envelope(int(row[0]), row[1], row[2], row[3] or "", int(row[4]), row[5],
                    float(row[6]), row[7], row[8], row[9])


_ENVELOPE = [
    messages.c.internal_id,
    messages.c.internet_message_id,
    messages.c.sender,
    messages.c.subject,
    messages.c.size,
    messages.c.source,
    messages.c.received_at,
    messages.c.shadow_context,
    messages.c.shadow_message_id,
    messages.c.mapi_submission,
]


def _ids() -> sa.BindParameter[Any]:
    """The ``ids`` list parameter of a statement built once at import (``IN :ids``).

    The hot jobs run for every message or session; a statement object built once keeps its
    compiled form cached, where building the statement anew on each call costs more than
    running it.
    """
    return sa.bindparam("ids", expanding=True)


_SELECT_ENVELOPES = DirectStatement(
    sa.select(*_ENVELOPE).where(messages.c.internal_id.in_(_ids())))


def _envelopes(conn: Connection, internal_ids: Iterable[int]) -> dict[int, Envelope]:
    ids = sorted(set(internal_ids))
    out: dict[int, Envelope] = {}
    for chunk in _chunks(ids):
        for row in _SELECT_ENVELOPES.rows(conn, {"ids": chunk}):
            out[int(row[0])] = _envelope(row)
    return out


def envelopes_of(conn: Connection, internal_ids: Sequence[int]) -> list[Envelope]:
    envelopes = _envelopes(conn, internal_ids)
    return [envelopes[i] for i in internal_ids if i in envelopes]


# --- start-up -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    crashed: bool
    poisoned: tuple[Envelope, ...]
    to_categorize: int


def start_up(conn: Connection, poison_threshold: int = 2) -> Recovery:
    """Resume after a start: every pending recipient goes back to Submission so
    it is categorized and routed afresh (the organization may have changed).

    If the previous run did not stop cleanly, each message the categorizer had
    taken for processing (see :func:`take_submission`) counts one crash; at
    ``poison_threshold`` it goes to the Poison queue instead (Exchange's poison
    message detection). Messages merely waiting in a queue count nothing.
    """
    crashed = bool(conn.execute(sa.select(database_info.c.running)).scalar_one())
    conn.execute(sa.update(database_info).values(running=True))
    poisoned: list[Envelope] = []
    if crashed:
        in_process = sa.select(categorizer_batch.c.internal_id)
        conn.execute(
            sa.update(messages)
            .where(messages.c.internal_id.in_(in_process), messages.c.state == QUEUED)
            .values(crash_count=messages.c.crash_count + 1)
        )
        rows = conn.execute(
            sa.select(*_ENVELOPE).where(
                messages.c.crash_count >= poison_threshold, messages.c.state == QUEUED
            )
        ).all()
        poisoned = [_envelope(row) for row in rows]
        ids = [p.internal_id for p in poisoned]
        for chunk in _chunks(ids):
            conn.execute(
                sa.update(messages).where(messages.c.internal_id.in_(chunk)).values(state=POISON)
            )
            conn.execute(
                sa.update(recipients)
                .where(recipients.c.internal_id.in_(chunk), recipients.c.status.in_(PENDING))
                .values(queue=POISON_QUEUE, status=SUSPENDED)
            )
    conn.execute(sa.delete(categorizer_batch))  # nothing is in process before the start
    result = conn.execute(
        sa.update(recipients)
        .where(recipients.c.status.in_(PENDING), recipients.c.queue != SUBMISSION_QUEUE)
        .values(queue=SUBMISSION_QUEUE, status=READY, next_hop=None, next_retry_at=None)
    )
    waiting = conn.execute(
        sa.select(sa.func.count()).select_from(recipients).where(
            recipients.c.queue == SUBMISSION_QUEUE, recipients.c.status == READY
        )
    ).scalar_one()
    del result
    return Recovery(crashed, tuple(poisoned), int(waiting))


def stopped_cleanly(conn: Connection) -> None:
    conn.execute(sa.update(database_info).values(running=False))


# --- categorizer ------------------------------------------------------------------------------


_SUBMISSION_OF = sa.select(recipients.c.id, recipients.c.internal_id, recipients.c.address).where(
    recipients.c.queue == SUBMISSION_QUEUE, recipients.c.status == READY,
    recipients.c.internal_id.in_(_ids()))


def load_submission(
    conn: Connection, internal_ids: Sequence[int] | None = None, limit: int = 1000
) -> list[Submitted]:
    """Messages with recipients waiting in the Submission queue (all, or ``internal_ids``)."""
    query = sa.select(recipients.c.id, recipients.c.internal_id, recipients.c.address).where(
        recipients.c.queue == SUBMISSION_QUEUE, recipients.c.status == READY
    )
    rows: list[Any] = []
    if internal_ids is None:
        rows = list(conn.execute(query.order_by(recipients.c.internal_id).limit(limit * 50)))
    else:
        for chunk in _chunks(sorted(set(internal_ids))):
            rows.extend(conn.execute(_SUBMISSION_OF, {"ids": list(chunk)}))
    grouped: dict[int, list[SubmittedRecipient]] = defaultdict(list)
    for row in rows:
        grouped[int(row.internal_id)].append(SubmittedRecipient(int(row.id), row.address))
    envelopes = _envelopes(conn, grouped)
    return [
        Submitted(envelopes[i], tuple(grouped[i]))
        for i in sorted(grouped)[:limit]
        if i in envelopes
    ]


_TAKE = sa.insert(categorizer_batch)
_RELEASE = sa.delete(categorizer_batch).where(categorizer_batch.c.internal_id.in_(_ids()))


def take_submission(
    conn: Connection, internal_ids: Sequence[int] | None = None, limit: int = 1000
) -> list[Submitted]:
    """The categorizer takes a batch from the Submission queue (as :func:`load_submission`)
    and records, in the same transaction, that these messages are in process: a crash
    before :func:`apply_routes` releases them counts against them (poison message
    detection), and against no message that was merely waiting."""
    batch = load_submission(conn, internal_ids, limit)
    if batch:
        conn.execute(_TAKE, [{"internal_id": s.envelope.internal_id} for s in batch])
    return batch


@dataclass(frozen=True)
class RouteDecision:
    """The categorizer's verdict on one recipient."""

    recipient_id: int
    internal_id: int
    status: str  # READY (queued to next hop), UNREACHABLE, or FAILED
    queue: str
    response: str | None = None


_ROUTE = (
    sa.update(recipients).where(recipients.c.id.in_(_ids()))
    .values(queue=sa.bindparam("b_queue"), next_hop=sa.bindparam("b_queue"),
            status=sa.bindparam("b_status"), last_response=sa.bindparam("b_response"))
)


def apply_routes(
    conn: Connection, decisions: Sequence[RouteDecision], now: float, signer: DsnSettings
) -> Report:
    """Put each categorized recipient in its delivery queue (bifurcating the message
    where recipients go different ways), fail the unroutable ones with an NDR."""
    by_queue: dict[tuple[str, str, str | None], list[int]] = defaultdict(list)
    failures: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for d in decisions:
        if d.status == FAILED:
            failures[d.internal_id].append((d.recipient_id, d.response or "550 5.4.4 unroutable"))
        else:
            by_queue[(d.queue, d.status, d.response)].append(d.recipient_id)
    for (queue, status, response), ids in by_queue.items():
        for chunk in _chunks(ids):
            conn.execute(_ROUTE, {"ids": list(chunk), "b_queue": queue, "b_status": status,
                                  "b_response": response})
    report = Report()
    _fail(conn, failures, now, signer, report)
    routed = sorted({d.internal_id for d in decisions})
    for chunk in _chunks(routed):
        conn.execute(_RELEASE, {"ids": list(chunk)})  # no longer in process
    _settle(conn, routed, now, report)
    return report


# --- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRecipient:
    id: int
    address: str
    notify: str | None
    orcpt: str | None


@dataclass(frozen=True)
class DeliveryItem:
    """A message as one delivery queue sends it: only that queue's recipients."""

    envelope: Envelope
    body: bytes
    body_type: str
    envid: str | None
    ret: str | None
    xexch50: bytes | None
    recipients: tuple[DeliveryRecipient, ...]


_DELIVERY_RECIPIENTS = DirectStatement(
    sa.select(recipients.c.id, recipients.c.internal_id, recipients.c.address,
              recipients.c.notify, recipients.c.orcpt)
    .where(recipients.c.internal_id.in_(_ids()), recipients.c.queue == sa.bindparam("b_queue"),
           recipients.c.status.in_((READY, RETRY)))
    .order_by(recipients.c.id)
)
_DELIVERY_MESSAGES = DirectStatement(
    sa.select(*_ENVELOPE, messages.c.body, messages.c.body_type, messages.c.dsn_envid,
              messages.c.dsn_ret, messages.c.xexch50)
    .where(messages.c.internal_id.in_(_ids()))
)


def load_delivery(conn: Connection, queue: str, internal_ids: Sequence[int]) -> list[DeliveryItem]:
    """The messages (with body) and their recipients waiting in ``queue``."""
    grouped: dict[int, list[DeliveryRecipient]] = defaultdict(list)
    for chunk in _chunks(sorted(set(internal_ids))):
        for rid, internal_id, address, notify, orcpt in _DELIVERY_RECIPIENTS.rows(
                conn, {"ids": chunk, "b_queue": queue}):
            grouped[int(internal_id)].append(DeliveryRecipient(int(rid), address, notify, orcpt))
    items = []
    for chunk in _chunks(sorted(grouped)):
        for msg in _DELIVERY_MESSAGES.rows(conn, {"ids": chunk}):
            body, body_type, envid, ret, xexch50 = msg[len(_ENVELOPE):]
            items.append(
                DeliveryItem(_envelope(msg), bytes(body), body_type, envid, ret,
                             None if xexch50 is None else bytes(xexch50),
                             tuple(grouped[int(msg[0])]))
            )
    return items


# length() of a blob reads its size from the record, not the blob's pages.
_BODY_BYTES = DirectStatement(sa.select(sa.func.sum(sa.func.length(messages.c.body))).where(
    messages.c.internal_id.in_(_ids())))


def load_short_delivery(conn: Connection, queue: str, internal_ids: Sequence[int]
                        ) -> list[DeliveryItem]:
    """:func:`load_delivery` for ``QueueDatabase.read_short``: raises NotShort where the
    bodies come to more than SHORT_WRITE_BODY_BYTES."""
    total = 0
    for chunk in _chunks(sorted(set(internal_ids))):
        total += int(_BODY_BYTES.scalars(conn, {"ids": list(chunk)})[0] or 0)
    if total > SHORT_WRITE_BODY_BYTES:
        raise NotShort(f"{total} bytes of bodies")
    return load_delivery(conn, queue, internal_ids)


@dataclass(frozen=True)
class MessageResult:
    """What the next hop said about one message's recipients."""

    internal_id: int
    delivered: tuple[tuple[int, str], ...] = ()  # (recipient id, reply)
    deferred: tuple[tuple[int, str], ...] = ()
    failed: tuple[tuple[int, str], ...] = ()
    shadow_message_id: str | None = None
    """Our ``XSHADOW=`` id, when the next hop took the message as primary."""


_MARK_DELIVERED = DirectStatement(
    sa.update(recipients).where(recipients.c.id == sa.bindparam("b_id"))
    .values(status=DELIVERED, last_response=sa.bindparam("b_reply"),
            delivered_to=sa.bindparam("b_to"))
)
_MARK_DEFERRED = DirectStatement(
    sa.update(recipients).where(recipients.c.id == sa.bindparam("b_id"))
    .values(status=RETRY, last_response=sa.bindparam("b_reply"),
            next_retry_at=sa.bindparam("b_at"), retry_count=recipients.c.retry_count + 1)
)
_INSERT_SHADOW = DirectStatement(
    sa.insert(shadow_messages),
    column_keys=["internal_id", "primary_server", "shadow_message_id", "created_at"])


def record_session(
    conn: Connection,
    results: Sequence[MessageResult],
    *,
    delivered_to: str | None,
    primary: str | None,
    now: float,
    retry_at: float,
    signer: DsnSettings,
) -> Report:
    """Apply one outbound session's replies. Delivered recipients are done; a
    shadowed message becomes a shadow copy for ``primary`` (D.4.3) instead of
    being deleted; deferred ones wait for ``retry_at``; failed ones get an NDR."""
    report = Report()
    failures: dict[int, list[tuple[int, str]]] = defaultdict(list)
    delivered = [{"b_id": rid, "b_reply": reply, "b_to": delivered_to}
                 for result in results for rid, reply in result.delivered]
    deferred = [{"b_id": rid, "b_reply": reply, "b_at": retry_at}
                for result in results for rid, reply in result.deferred]
    shadows = [{"internal_id": result.internal_id, "primary_server": primary,
                "shadow_message_id": result.shadow_message_id, "created_at": now}
               for result in results
               if primary is not None and result.delivered and result.shadow_message_id]
    # One statement each, executed for many rows: a session's replies cost a few round
    # trips, not a few per recipient.
    _MARK_DELIVERED.run_many(conn, delivered)
    _MARK_DEFERRED.run_many(conn, deferred)
    _INSERT_SHADOW.run_many(conn, shadows)
    for result in results:
        failures[result.internal_id].extend(result.failed)
    envelopes = _envelopes(conn, [r.internal_id for r in results])
    report.shadows_added = [
        (envelopes[r.internal_id], r.shadow_message_id)
        for r in results
        if primary is not None and r.delivered and r.shadow_message_id
        and r.internal_id in envelopes
    ]
    _fail(conn, {k: v for k, v in failures.items() if v}, now, signer, report)
    _settle(conn, [r.internal_id for r in results], now, report, envelopes)
    return report


def defer_queue(
    conn: Connection, queue: str, internal_ids: Sequence[int], reply: str, retry_at: float
) -> int:
    """The next hop could not be reached: every recipient of these messages in
    ``queue`` waits for the queue's next retry (queue at the point of failure)."""
    changed = 0
    for chunk in _chunks(sorted(set(internal_ids))):
        changed += conn.execute(
            sa.update(recipients)
            .where(recipients.c.internal_id.in_(chunk), recipients.c.queue == queue,
                   recipients.c.status.in_((READY, RETRY)))
            .values(status=RETRY, last_response=reply, next_retry_at=retry_at)
        ).rowcount
    return changed


# --- failure, DSN and settling ------------------------------------------------------------------


def _enhanced(reply: str) -> str:
    parts = reply.split()
    if len(parts) > 1 and parts[1][:1] in "245" and parts[1].count(".") == 2:
        return parts[1]
    return "5.0.0" if reply[:1] == "5" else "4.0.0"


def _fail(
    conn: Connection,
    failures: dict[int, list[tuple[int, str]]],
    now: float,
    signer: DsnSettings,
    report: Report,
) -> None:
    """Fail recipients for good; send one NDR per message to its sender where wanted."""
    if not failures:
        return
    envelopes = _envelopes(conn, failures)
    for internal_id, failed in failures.items():
        envelope = envelopes.get(internal_id)
        if envelope is None:
            continue
        ids = [rid for rid, _ in failed]
        rows = {
            int(r.id): r
            for r in conn.execute(
                sa.select(recipients.c.id, recipients.c.address, recipients.c.notify,
                          recipients.c.orcpt).where(recipients.c.id.in_(ids))
            )
        }
        statuses = []
        for rid, reply in failed:
            conn.execute(
                sa.update(recipients).where(recipients.c.id == rid)
                .values(status=FAILED, last_response=reply)
            )
            row = rows.get(rid)
            if row is None:
                continue
            report.failed.append((envelope, row.address, reply))
            statuses.append(dsn.RecipientStatus(row.address, _enhanced(reply), reply,
                                                orcpt=row.orcpt, notify=row.notify))
        wanted = dsn.dsn_recipients("failed", envelope.sender, statuses)
        if wanted:
            _queue_dsn(conn, "failed", envelope, wanted, now, signer, report)


def _queue_dsn(
    conn: Connection,
    kind: str,
    envelope: Envelope,
    statuses: Sequence[dsn.RecipientStatus],
    now: float,
    signer: DsnSettings,
    report: Report,
    retry_until: float = 0.0,
) -> None:
    row = conn.execute(
        sa.select(messages.c.body, messages.c.dsn_ret, messages.c.dsn_envid)
        .where(messages.c.internal_id == envelope.internal_id)
    ).one()
    common: dict[str, Any] = dict(
        reporting_mta=signer.reporting_mta, postmaster=signer.postmaster,
        original_sender=envelope.sender, original=bytes(row.body), recipients=statuses,
        arrival=envelope.received_at, now=now, ret=row.dsn_ret, envid=row.dsn_envid,
        message_id=f"<{uuid.uuid4()}@{signer.reporting_mta}>",
    )
    if kind == "failed":
        message = dsn.build_ndr(**common)
    else:
        message = dsn.build_delay_dsn(retry_until=retry_until, **common)
    new_id = accept_message(
        conn,
        NewMessage(
            sender="", recipients=(NewRecipient(message.recipient),), body=message.body,
            received_at=now, message_id=message.message_id, subject=message.subject,
            source="DSN", body_type=message.body_type,
        ),
    )
    report.dsns.append((new_id, kind, envelope, message.message_id))


_PENDING_OF = DirectStatement(sa.select(recipients.c.internal_id).distinct().where(
    recipients.c.internal_id.in_(_ids()), recipients.c.status.in_((*PENDING, SUSPENDED))))
_SHADOWED_OF = DirectStatement(sa.select(shadow_messages.c.internal_id).distinct().where(
    shadow_messages.c.internal_id.in_(_ids())))
_KEEP_AS_SHADOW = DirectStatement(
    sa.update(messages).where(messages.c.internal_id.in_(_ids())).values(state=SHADOW))
_DELETE_MESSAGES = DirectStatement(sa.delete(messages).where(messages.c.internal_id.in_(_ids())))
_WAITING_DISCARDS = DirectStatement(sa.select(
    discard_notifications.c.shadow_context, discard_notifications.c.shadow_message_id
).where(discard_notifications.c.shadow_message_id.in_(_ids())))
_INSERT_DISCARD = DirectStatement(
    sa.insert(discard_notifications),
    column_keys=["shadow_context", "shadow_message_id", "created_at", "internet_message_id",
                 "internal_message_id", "sender_address", "message_subject"])


def _settle(conn: Connection, internal_ids: Iterable[int], now: float, report: Report,
            known: dict[int, Envelope] | None = None) -> None:
    """Messages none of whose recipients is pending any more: queue the discard
    notification for the hop they came from, then keep them as shadow copies
    (if a primary holds them) or delete them. ``known``: envelopes already read in this
    transaction."""
    ids = sorted(set(internal_ids))
    if not ids:
        return
    pending: set[int] = set()
    shadowed: set[int] = set()
    for chunk in _chunks(ids):
        pending.update(int(i) for i in _PENDING_OF.scalars(conn, {"ids": chunk}))
        shadowed.update(int(i) for i in _SHADOWED_OF.scalars(conn, {"ids": chunk}))
    done = [i for i in ids if i not in pending]
    known = known or {}
    envelopes = {i: known[i] for i in done if i in known}
    envelopes.update(_envelopes(conn, [i for i in done if i not in known]))
    settled_now = [Settled(envelopes[i]) for i in done if i in envelopes]
    queued = _queue_discards(conn, [s.envelope for s in settled_now], now)
    keep, delete = [], []
    for settled in settled_now:
        internal_id = settled.envelope.internal_id
        settled.discard_queued = internal_id in queued
        if internal_id in shadowed:
            keep.append(internal_id)
            settled.shadowed = True
        else:
            delete.append(internal_id)
            settled.deleted = True
        report.settled.append(settled)
    for chunk in _chunks(keep):
        _KEEP_AS_SHADOW.run(conn, {"ids": chunk})
    for chunk in _chunks(delete):
        _DELETE_MESSAGES.run(conn, {"ids": chunk})


def _queue_discards(conn: Connection, envelopes: Sequence[Envelope], now: float) -> set[int]:
    """Discard notifications for the hops these messages came from (those that came with
    ``XSHADOW=``), unless one is already waiting; the internal ids given one."""
    wanted = {(e.shadow_context, e.shadow_message_id): e for e in envelopes
              if e.shadow_context and e.shadow_message_id}
    if not wanted:
        return set()
    shadow_ids = sorted({shadow_id for _, shadow_id in wanted})
    for start in range(0, len(shadow_ids), _CHUNK):
        for context, shadow_id in _WAITING_DISCARDS.rows(
                conn, {"ids": shadow_ids[start:start + _CHUNK]}):
            wanted.pop((context, shadow_id), None)
    if wanted:
        _INSERT_DISCARD.run_many(conn, [
            {"shadow_context": context, "shadow_message_id": shadow_id, "created_at": now,
             "internet_message_id": envelope.message_id,
             "internal_message_id": envelope.internal_id, "sender_address": envelope.sender,
             "message_subject": envelope.subject}
            for (context, shadow_id), envelope in wanted.items()])
    return {envelope.internal_id for envelope in wanted.values()}


# --- shadow redundancy ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WaitingDiscard:
    """A discard notification waiting for its holder's ``XQDISCARD``, with the identity of
    the message it is for (the D.6 tracking row names it like every other row). A
    notification written before schema version 7 knows only the Message-ID: no internal id
    (``None``), sender or subject (``""``)."""

    shadow_message_id: str
    message_id: str
    internal_message_id: int | None = None
    sender: str = ""
    subject: str = ""


_WAITING_COLUMNS = (
    discard_notifications.c.shadow_message_id, discard_notifications.c.internet_message_id,
    discard_notifications.c.internal_message_id, discard_notifications.c.sender_address,
    discard_notifications.c.message_subject)
_WAITING_FOR_CONTEXT = DirectStatement(
    sa.select(*_WAITING_COLUMNS)
    .where(discard_notifications.c.shadow_context == sa.bindparam("b_context"))
    .order_by(discard_notifications.c.created_at, discard_notifications.c.id)
    .limit(sa.bindparam("b_limit"))
)
_WAITING_FOR_CONTEXT_BEFORE = DirectStatement(
    sa.select(*_WAITING_COLUMNS)
    .where(discard_notifications.c.shadow_context == sa.bindparam("b_context"),
           discard_notifications.c.created_at < sa.bindparam("b_before"))
    .order_by(discard_notifications.c.created_at, discard_notifications.c.id)
    .limit(sa.bindparam("b_limit"))
)
_DELETE_DISCARD = DirectStatement(sa.delete(discard_notifications).where(
    discard_notifications.c.shadow_context == sa.bindparam("b_context"),
    discard_notifications.c.shadow_message_id == sa.bindparam("b_shadow")))


def waiting_discards(conn: Connection, context: str, limit: int,
                     created_before: float | None = None) -> list[WaitingDiscard]:
    """Up to ``limit`` of ``context``'s discard notifications (those created before
    ``created_before``, if given), oldest first (D.6)."""
    if created_before is None:
        rows = _WAITING_FOR_CONTEXT.rows(conn, {"b_context": context, "b_limit": limit})
    else:
        rows = _WAITING_FOR_CONTEXT_BEFORE.rows(
            conn, {"b_context": context, "b_limit": limit, "b_before": created_before})
    return [WaitingDiscard(shadow_id, message_id or "",
                           int(internal_id) if internal_id is not None else None,
                           sender or "", subject or "")
            for shadow_id, message_id, internal_id, sender, subject in rows]


def delete_discards(conn: Connection, context: str, shadow_message_ids: Sequence[str]) -> None:
    """Notifications handed out: gone. By context and shadow id, not row id: SQLite may give
    a deleted row's id to a new notification, which must not go unseen; a notification with
    the same context and shadow id says what the holder was just told."""
    _DELETE_DISCARD.run_many(conn, [{"b_context": context, "b_shadow": shadow_id}
                                    for shadow_id in shadow_message_ids])


def hand_out_discards(conn: Connection, context: str, limit: int) -> list[tuple[str, str]]:
    """The primary's side of ``XQDISCARD`` in one transaction: up to ``limit`` of
    ``context``'s notifications, oldest first, deleted (D.6)."""
    rows = waiting_discards(conn, context, limit)
    delete_discards(conn, context, [r.shadow_message_id for r in rows])
    return [(r.shadow_message_id, r.message_id) for r in rows]


_SHADOWS_OF_PRIMARY = DirectStatement(sa.select(
    shadow_messages.c.id, shadow_messages.c.internal_id, shadow_messages.c.shadow_message_id
).where(shadow_messages.c.primary_server == sa.bindparam("b_primary"),
        shadow_messages.c.shadow_message_id.in_(_ids())))
_HANDED_TO = DirectStatement(sa.select(recipients.c.internal_id, recipients.c.address).where(
    recipients.c.internal_id.in_(_ids()), recipients.c.delivered_to == sa.bindparam("b_primary")))
_DELETE_SHADOWS = DirectStatement(
    sa.delete(shadow_messages).where(shadow_messages.c.id.in_(_ids())))
_DELETE_SHADOW_MESSAGES = DirectStatement(sa.delete(messages).where(
    messages.c.internal_id.in_(_ids()), messages.c.state == SHADOW))


def apply_discards(
    conn: Connection, primary: str, shadow_message_ids: Sequence[str]
) -> list[tuple[Envelope, bool, tuple[str, ...], str]]:
    """The holder's side (D.7): drop the shadow copies ``primary`` says it is done
    with; a message no primary shadows any more, with nothing else pending, is
    deleted. Returns (envelope, deleted, the recipients handed to that primary, the
    shadow id) per shadow dropped."""
    if not shadow_message_ids:
        return []
    rows: list[Sequence[Any]] = []  # (shadow row id, internal id, shadow message id)
    for start in range(0, len(shadow_message_ids), _CHUNK):
        rows.extend(_SHADOWS_OF_PRIMARY.rows(conn, {
            "b_primary": primary, "ids": shadow_message_ids[start:start + _CHUNK]}))
    if not rows:
        return []
    ids = [int(r[1]) for r in rows]
    shadow_ids = {int(r[1]): r[2] for r in rows}
    handed: dict[int, list[str]] = defaultdict(list)
    still: set[int] = set()
    for chunk in _chunks(ids):
        for internal_id, address in _HANDED_TO.rows(conn, {"ids": chunk, "b_primary": primary}):
            handed[int(internal_id)].append(address)
    for start in range(0, len(rows), _CHUNK):
        _DELETE_SHADOWS.run(conn, {"ids": [r[0] for r in rows[start:start + _CHUNK]]})
    envelopes = _envelopes(conn, ids)
    for chunk in _chunks(ids):
        still.update(int(i) for i in _SHADOWED_OF.scalars(conn, {"ids": chunk}))
    deleted = {i for i in ids if i not in still}
    for chunk in _chunks(sorted(deleted)):
        _DELETE_SHADOW_MESSAGES.run(conn, {"ids": chunk})
    return [(envelopes[i], i in deleted, tuple(handed[i]), shadow_ids[i])
            for i in ids if i in envelopes]


def take_ownership(conn: Connection, primary: str) -> list[Envelope]:
    """The holder takes over every shadow copy it keeps for ``primary`` (heartbeat
    retry count reached, or the primary lost its queue database): the recipients
    handed to that primary go back to Submission to be categorized and rerouted."""
    ids = sorted({int(i) for i in conn.execute(
        sa.select(shadow_messages.c.internal_id).where(
            shadow_messages.c.primary_server == primary)).scalars()})
    if not ids:
        return []
    for chunk in _chunks(ids):
        conn.execute(
            sa.update(recipients)
            .where(recipients.c.internal_id.in_(chunk), recipients.c.delivered_to == primary,
                   recipients.c.status == DELIVERED)
            .values(status=READY, queue=SUBMISSION_QUEUE, next_hop=None, delivered_to=None,
                    next_retry_at=None)
        )
        conn.execute(sa.update(messages).where(messages.c.internal_id.in_(chunk))
                     .values(state=QUEUED))
    conn.execute(sa.delete(shadow_messages).where(shadow_messages.c.primary_server == primary))
    return list(_envelopes(conn, ids).values())


def expire_shadows(conn: Connection, older_than: float) -> list[Envelope]:
    """ShadowMessageAutoDiscardInterval: drop shadow copies older than ``older_than``;
    messages left with nothing pending are deleted."""
    rows = conn.execute(sa.select(shadow_messages.c.id, shadow_messages.c.internal_id)
                        .where(shadow_messages.c.created_at < older_than)).all()
    if not rows:
        return []
    conn.execute(sa.delete(shadow_messages).where(shadow_messages.c.id.in_([r.id for r in rows])))
    ids = sorted({int(r.internal_id) for r in rows})
    envelopes = _envelopes(conn, ids)
    still = {int(i) for i in conn.execute(
        sa.select(shadow_messages.c.internal_id).distinct()
        .where(shadow_messages.c.internal_id.in_(ids))).scalars()}
    gone = [i for i in ids if i not in still]
    if gone:
        conn.execute(sa.delete(messages).where(
            messages.c.internal_id.in_(gone), messages.c.state == SHADOW))
    return [envelopes[i] for i in ids if i in envelopes]


def expire_discards(conn: Connection, older_than: float) -> int:
    return int(conn.execute(sa.delete(discard_notifications).where(
        discard_notifications.c.created_at < older_than)).rowcount)


# --- delay DSN and expiry ---------------------------------------------------------------------


def age_messages(
    conn: Connection,
    now: float,
    *,
    delay_after: float,
    expire_after: float,
    signer: DsnSettings,
) -> tuple[Report, list[int]]:
    """DelayNotificationTimeout: one delay DSN per message still pending after it.
    MessageExpirationTimeout: pending recipients fail (NDR ``4.4.7 QUEUE.Expired``).
    Returns the report and the ids of expired messages (to drop from the queues)."""
    report = Report()
    expired_rows = conn.execute(
        sa.select(recipients.c.id, recipients.c.internal_id)
        .join(messages, messages.c.internal_id == recipients.c.internal_id)
        .where(recipients.c.status.in_(PENDING), messages.c.received_at < now - expire_after,
               messages.c.state == QUEUED)
    ).all()
    failures: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for row in expired_rows:
        failures[int(row.internal_id)].append(
            (int(row.id), "550 4.4.7 QUEUE.Expired; message expired"))
    _fail(conn, failures, now, signer, report)
    _settle(conn, failures, now, report)
    delayed = conn.execute(
        sa.select(recipients.c.internal_id, recipients.c.address, recipients.c.notify,
                  recipients.c.orcpt, recipients.c.last_response)
        .join(messages, messages.c.internal_id == recipients.c.internal_id)
        .where(recipients.c.status.in_(PENDING), messages.c.received_at < now - delay_after,
               messages.c.delay_dsn_sent == sa.false(), messages.c.state == QUEUED)
    ).all()
    by_message: dict[int, list[dsn.RecipientStatus]] = defaultdict(list)
    for late in delayed:
        reply = late.last_response or "400 4.4.7 Message delayed"
        by_message[int(late.internal_id)].append(dsn.RecipientStatus(
            late.address, _enhanced(reply).replace("5.", "4.", 1), reply,
            orcpt=late.orcpt, notify=late.notify))
    envelopes = _envelopes(conn, by_message)
    for internal_id, statuses in by_message.items():
        envelope = envelopes[internal_id]
        conn.execute(sa.update(messages).where(messages.c.internal_id == internal_id)
                     .values(delay_dsn_sent=True))
        wanted = dsn.dsn_recipients("delayed", envelope.sender, statuses)
        if wanted:
            _queue_dsn(conn, "delayed", envelope, wanted, now, signer, report,
                       retry_until=envelope.received_at + expire_after)
    return report, sorted(failures)


# --- transport dumpster -------------------------------------------------------------------------


def add_to_dumpster(
    conn: Connection,
    database: str,
    entries: Sequence[tuple[Envelope, Sequence[str], float, bytes]],
    now: float,
    max_size: int,
    max_age: float,
) -> int:
    """C.2: keep a copy of each message delivered to ``database``; then hold the
    dumpster to MaxDumpsterSizePerDatabase and MaxDumpsterTime, oldest out first.
    Returns how many old copies left."""
    if entries:
        conn.execute(sa.insert(dumpster), [
            dict(database=database, internet_message_id=envelope.message_id,
                 sender=envelope.sender, recipients=json.dumps(list(addresses)),
                 submit_time=submit_time, size=len(body), body=body, delivered_at=now)
            for envelope, addresses, submit_time, body in entries])
    return truncate_dumpster(conn, database, now, max_size, max_age)


def truncate_dumpster(conn: Connection, database: str, now: float, max_size: int,
                      max_age: float, replicated_up_to: float | None = None) -> int:
    """Drop what the dumpster of ``database`` need not keep: older than MaxDumpsterTime,
    beyond MaxDumpsterSizePerDatabase (oldest first), or already replicated."""
    removed = conn.execute(sa.delete(dumpster).where(
        dumpster.c.database == database, dumpster.c.delivered_at < now - max_age)).rowcount
    if replicated_up_to is not None:
        removed += conn.execute(sa.delete(dumpster).where(
            dumpster.c.database == database,
            dumpster.c.delivered_at < replicated_up_to)).rowcount
    rows = conn.execute(
        sa.select(dumpster.c.id, dumpster.c.size).where(dumpster.c.database == database)
        .order_by(dumpster.c.delivered_at.desc(), dumpster.c.id.desc())).all()
    total, drop = 0, []
    for row in rows:
        total += int(row.size)
        if total > max_size:
            drop.append(int(row.id))
    for chunk in _chunks(drop):
        removed += conn.execute(sa.delete(dumpster).where(dumpster.c.id.in_(chunk))).rowcount
    return int(removed)


@dataclass(frozen=True)
class DumpsterEntry:
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    delivered_at: float


def dumpster_contents(conn: Connection, database: str) -> list[DumpsterEntry]:
    return [DumpsterEntry(r.internet_message_id, r.sender, tuple(json.loads(r.recipients)),
                          int(r.size), float(r.delivered_at))
            for r in conn.execute(
                sa.select(dumpster).where(dumpster.c.database == database)
                .order_by(dumpster.c.delivered_at, dumpster.c.id))]


def redeliver_from_dumpster(conn: Connection, database: str, since: float,
                            now: float) -> list[int]:
    """After a lossy failover of ``database``: resubmit every copy delivered to it since
    ``since`` (duplicate detection at the mailbox drops what survived). Returns the new
    messages' InternalIds, waiting in Submission."""
    ids = []
    for row in conn.execute(
            sa.select(dumpster).where(dumpster.c.database == database,
                                      dumpster.c.delivered_at >= since)
            .order_by(dumpster.c.delivered_at, dumpster.c.id)).all():
        ids.append(accept_message(conn, NewMessage(
            sender=row.sender, recipients=tuple(json.loads(row.recipients)),
            body=bytes(row.body), received_at=now, message_id=row.internet_message_id,
            source="DUMPSTER", origin_server=f"dumpster:{database}")))
    return ids
