"""Exchange's queue viewer cmdlets on one running transport server: Get-Queue, Get-Message,
Retry-Queue, Suspend-Queue, Resume-Queue, Suspend-Message, Resume-Message, Remove-Message
and Export-Message.

Every change is one transaction on the queue database, committed before the call returns,
and then applied to the engine's in-memory queues (a suspended queue starts no session; a
resumed message is categorized again). Rows are dicts keyed by the cmdlets' output
properties (Identity, Status, MessageCount, …), ready for JSON and for ``-Filter``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from exchange_emu.admin.errors import ManagementError, NotFoundError
from exchange_emu.admin.filters import parse_filter
from exchange_emu.admin.identity import (
    MessageIdentity,
    QueueIdentity,
    QueueKind,
    parse_message_identity,
    parse_queue_identity,
)
from exchange_emu.storage import POISON_QUEUE, SUBMISSION_QUEUE, UNREACHABLE_QUEUE
from exchange_emu.transport import admin_jobs, jobs
from exchange_emu.transport.admin_jobs import QueuedMessage
from exchange_emu.transport.engine import TransportEngine

QUEUE_PROPERTIES: dict[str, type] = {
    "Identity": str, "DeliveryType": str, "NextHopDomain": str, "Status": str,
    "MessageCount": int, "LastError": str, "RetryCount": int, "NextRetryTime": str,
}
"""Get-Queue's output properties (and what ``-Filter`` may test)."""
MESSAGE_PROPERTIES: dict[str, type] = {
    "Identity": str, "FromAddress": str, "Status": str, "Size": int, "Subject": str,
    "InternetMessageId": str, "Queue": str, "LastError": str, "DateReceived": str,
    "ExpirationTime": str, "Source": str, "RecipientCount": int,
}
"""Get-Message's output properties (and what ``-Filter`` may test)."""
EXPORT_CHUNK = 256 * 1024
"""Bytes of a message's content read from the database at a time by Export-Message."""

_NAMED = {QueueKind.SUBMISSION: SUBMISSION_QUEUE, QueueKind.UNREACHABLE: UNREACHABLE_QUEUE,
          QueueKind.POISON: POISON_QUEUE}
_BY_NAME = {name: kind for kind, name in _NAMED.items()}


def _time(seconds: float | None) -> str | None:
    if seconds is None or seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


class QueueManagement:
    """The queue cmdlets of one transport server (its engine and queue database)."""

    def __init__(self, engine: TransportEngine) -> None:
        self.engine = engine
        self.server = engine.server.name.upper()
        self._delivery_numbers: dict[str, int] = {}
        self._shadow_numbers: dict[str, int] = {}

    # -- identities ----------------------------------------------------------------------------

    def _check_server(self, identity: QueueIdentity) -> None:
        if identity.server != self.server:
            raise ManagementError(f"{identity} names server {identity.server}; this is "
                                  f"{self.server} (ask the lab endpoint, or use {self.server}\\…)")

    async def _queue_name(self, identity: QueueIdentity) -> str:
        """The queue's name (next hop, primary, or named queue); 404 if it does not exist."""
        self._check_server(identity)
        if identity.kind in _NAMED:
            return _NAMED[identity.kind]
        kind = admin_jobs.SHADOW if identity.kind == QueueKind.SHADOW else admin_jobs.DELIVERY
        assert identity.number is not None
        found = await self.engine.database.read(admin_jobs.queue_by_number, kind,
                                                identity.number)
        if found is None:
            raise NotFoundError(f"there is no queue {identity} on {self.server}; "
                                "get-queue lists them")
        return found[0]

    async def _numbers(self) -> tuple[dict[str, int], dict[str, int], dict[str, int],
                                      dict[str, int]]:
        counts, shadows = await self.engine.database.read(admin_jobs.queue_message_counts)
        names = (set(self.engine.queues) | set(counts) | self.engine.suspended_queues) - set(
            _BY_NAME)
        delivery = await self._numbered(admin_jobs.DELIVERY, names, self._delivery_numbers)
        shadow = await self._numbered(admin_jobs.SHADOW, set(shadows), self._shadow_numbers)
        return counts, shadows, delivery, shadow

    async def _numbered(self, kind: str, names: set[str], known: dict[str, int]
                        ) -> dict[str, int]:
        """Numbers of the queues named; a write only when a queue is new (numbers never
        change, so they are remembered)."""
        missing = names - set(known)
        if missing:
            known.update(await self.engine.database.write(admin_jobs.queue_numbers, kind,
                                                          missing))
        return {name: known[name] for name in names}

    def _message_queue_identity(self, message: QueuedMessage, delivery: dict[str, int],
                                shadow: dict[str, int]) -> QueueIdentity:
        if message.shadow:
            return QueueIdentity(self.server, QueueKind.SHADOW, shadow.get(message.queue))
        if message.queue in _BY_NAME:
            return QueueIdentity(self.server, _BY_NAME[message.queue])
        return QueueIdentity(self.server, QueueKind.DELIVERY, delivery.get(message.queue))

    # -- Get-Queue -----------------------------------------------------------------------------

    async def get_queues(self, filter_text: str | None = None,
                         result_size: int | None = 1000) -> list[dict[str, Any]]:
        """Get-Queue: Submission, every delivery queue (in use, holding messages, or
        suspended), Unreachable, Poison and one shadow queue per primary, in Exchange's
        identity order."""
        wanted = parse_filter(filter_text, QUEUE_PROPERTIES)
        counts, shadows, delivery, shadow = await self._numbers()
        engine = self.engine
        rows: list[dict[str, Any]] = [self._named_row(QueueKind.SUBMISSION, counts)]
        for name, number in sorted(delivery.items(), key=lambda item: item[1]):
            rows.append(self._delivery_row(name, number, counts))
        rows.append(self._named_row(QueueKind.UNREACHABLE, counts))
        rows.append(self._named_row(QueueKind.POISON, counts))
        for primary, number in sorted(shadow.items(), key=lambda item: item[1]):
            try:
                fqdn = engine.organization.server(primary).fqdn
            except LookupError:
                fqdn = primary
            rows.append({
                "Identity": str(QueueIdentity(self.server, QueueKind.SHADOW, number)),
                "DeliveryType": "ShadowRedundancy", "NextHopDomain": fqdn, "Status": "Ready",
                "MessageCount": shadows.get(primary, 0), "LastError": None, "RetryCount": 0,
                "NextRetryTime": None,
            })
        matching = [row for row in rows if wanted.matches(row)]
        return matching if result_size is None else matching[:result_size]

    def _delivery_row(self, name: str, number: int, counts: dict[str, int]
                      ) -> dict[str, Any]:
        queue = self.engine.queues.get(name)
        suspended = name in self.engine.suspended_queues
        return {
            "Identity": str(QueueIdentity(self.server, QueueKind.DELIVERY, number)),
            "DeliveryType": queue.hop.delivery_type if queue else "Undefined",
            "NextHopDomain": name,
            "Status": "Suspended" if suspended else (queue.display_status if queue
                                                     else "Ready"),
            "MessageCount": counts.get(name, 0),
            "LastError": queue.last_error if queue else None,
            "RetryCount": queue.retry_count if queue else 0,
            "NextRetryTime": _time(queue.next_attempt) if queue and queue.status == "Retry"
            else None,
        }

    def _named_row(self, kind: QueueKind, counts: dict[str, int]) -> dict[str, Any]:
        status = "Ready"
        if kind == QueueKind.SUBMISSION and self.engine.categorizer.running:
            status = "Active"
        return {
            "Identity": str(QueueIdentity(self.server, kind)),
            "DeliveryType": "Unreachable" if kind == QueueKind.UNREACHABLE else "Undefined",
            "NextHopDomain": kind.value.lower(), "Status": status,
            "MessageCount": counts.get(_NAMED[kind], 0), "LastError": None, "RetryCount": 0,
            "NextRetryTime": None,
        }

    async def get_queue(self, identity: str) -> dict[str, Any]:
        """Get-Queue -Identity."""
        queue = parse_queue_identity(identity)
        name = await self._queue_name(queue)
        if queue.kind == QueueKind.DELIVERY:  # also one idle since an earlier run
            assert queue.number is not None
            counts, _ = await self.engine.database.read(admin_jobs.queue_message_counts)
            return self._delivery_row(name, queue.number, counts)
        for row in await self.get_queues(result_size=None):
            if row["Identity"].lower() == str(queue).lower():
                return row
        raise NotFoundError(f"there is no queue {queue} on {self.server}; "
                            "get-queue lists them")

    # -- Get-Message ---------------------------------------------------------------------------

    async def get_messages(self, queue: str | None = None, filter_text: str | None = None,
                           result_size: int | None = 1000) -> list[dict[str, Any]]:
        """Get-Message [-Queue]: one row per message and queue it waits in."""
        wanted = parse_filter(filter_text, MESSAGE_PROPERTIES)
        name: str | None = None
        shadow: str | None = None
        if queue:
            identity = parse_queue_identity(queue)
            found = await self._queue_name(identity)
            if identity.kind == QueueKind.SHADOW:
                shadow = found
            else:
                name = found
        listed = await self.engine.database.read(admin_jobs.queued_messages, name, shadow)
        rows = await self._message_rows(listed)
        matching = [row for row in rows if wanted.matches(row)]
        return matching if result_size is None else matching[:result_size]

    async def _message_rows(self, listed: list[QueuedMessage]) -> list[dict[str, Any]]:
        _, _, delivery, shadow = await self._numbers()
        return [self._message_row(m, delivery, shadow) for m in listed]

    def _message_row(self, message: QueuedMessage, delivery: dict[str, int],
                     shadow: dict[str, int]) -> dict[str, Any]:
        queue_identity = self._message_queue_identity(message, delivery, shadow)
        statuses = {r.status for r in message.recipients}
        live = None if message.shadow else self.engine.queues.get(message.queue)
        in_flight = live is not None and message.internal_id in live.in_flight
        if admin_jobs.SUSPENDED in statuses:
            status = "PendingSuspend" if in_flight else "Suspended"
        elif in_flight:
            status = "Active"
        elif admin_jobs.RETRY in statuses:
            status = "Retry"
        else:
            status = "Ready"
        errors = [r.last_response for r in message.recipients if r.last_response]
        return {
            "Identity": str(MessageIdentity(queue_identity, message.internal_id)),
            "FromAddress": message.sender or "<>",
            "Status": status,
            "Size": message.size,
            "Subject": message.subject,
            "InternetMessageId": message.message_id,
            "Queue": str(queue_identity),
            "LastError": errors[0] if errors else None,
            "DateReceived": _time(message.received_at),
            "ExpirationTime": _time(message.expires_at) if message.expires_at else _time(
                message.received_at + self.engine.settings.message_expiration_timeout),
            "Source": message.source,
            "RecipientCount": len(message.recipients),
            "Recipients": [{"Address": r.address, "Status": r.status.capitalize(),
                            "LastError": r.last_response} for r in message.recipients],
        }

    async def _find(self, text: str) -> tuple[MessageIdentity, str, dict[str, Any]]:
        """A message by identity: (identity, queue name, Get-Message row); 404 if absent."""
        identity = parse_message_identity(text)
        name = await self._queue_name(identity.queue)
        shadow = identity.queue.kind == QueueKind.SHADOW
        listed = await self.engine.database.read(
            admin_jobs.queued_messages, None if shadow else name, name if shadow else None,
            identity.internal_id)
        if not listed:
            raise NotFoundError(f"there is no message {identity} (no message "
                                f"{identity.internal_id} in queue {identity.queue}); "
                                "get-message lists them")
        rows = await self._message_rows(listed)
        return identity, name, rows[0]

    async def get_message(self, identity: str) -> dict[str, Any]:
        """Get-Message -Identity (with its recipients, status and last error)."""
        return (await self._find(identity))[2]

    # -- changes -------------------------------------------------------------------------------

    async def _delivery_queue(self, text: str, verb: str) -> tuple[QueueIdentity, str]:
        identity = parse_queue_identity(text)
        name = await self._queue_name(identity)
        if identity.kind != QueueKind.DELIVERY:
            raise ManagementError(f"{verb} works on delivery queues ({self.server}\\N), not "
                                  f"{identity}; to hold single messages use suspend-message")
        return identity, name

    async def suspend_queue(self, text: str) -> dict[str, Any]:
        """Suspend-Queue: no new session to that next hop until Resume-Queue (durable)."""
        identity, name = await self._delivery_queue(text, "Suspend-Queue")
        await self.engine.database.write(admin_jobs.set_queue_suspended, name, True)
        self.engine.suspended_queues.add(name)
        queue = self.engine.queues.get(name)
        if queue is not None:
            queue.suspended = True
            queue.cancel_timer()
        return await self.get_queue(str(identity))

    async def resume_queue(self, text: str) -> dict[str, Any]:
        """Resume-Queue: delivery from that queue starts again."""
        identity, name = await self._delivery_queue(text, "Resume-Queue")
        await self.engine.database.write(admin_jobs.set_queue_suspended, name, False)
        self.engine.suspended_queues.discard(name)
        queue = self.engine.queues.get(name)
        if queue is not None:
            queue.suspended = False
            queue.kick()
        return await self.get_queue(str(identity))

    async def retry_queue(self, text: str, resubmit: bool = False) -> dict[str, Any]:
        """Retry-Queue: connect to the next hop now; with -Resubmit, the queue's messages go
        back to the categorizer and are routed afresh."""
        identity = parse_queue_identity(text)
        name = await self._queue_name(identity)
        engine = self.engine
        if identity.kind in (QueueKind.SHADOW, QueueKind.POISON):
            raise ManagementError(f"Retry-Queue does not apply to {identity}; use "
                                  "resume-message for a poison message")
        if identity.kind == QueueKind.SUBMISSION:
            engine.categorizer.add_all()
            return await self.get_queue(str(identity))
        if resubmit or identity.kind == QueueKind.UNREACHABLE:
            ids = await engine.database.write(
                admin_jobs.resubmit, name, None,
                (admin_jobs.READY, admin_jobs.RETRY, admin_jobs.UNREACHABLE))
            queue = engine.queues.get(name)
            if queue is not None:
                queue.forget(ids)
            await self._resubmitted(ids, "Retry-Queue -Resubmit")
        else:
            await engine.database.write(admin_jobs.retry_now, name, engine.clock.seconds())
            queue = engine.queues.get(name)
            if queue is not None:
                queue.next_attempt = 0.0
                for internal_id in queue.items:
                    queue.items[internal_id] = 0.0
                queue.kick()
        return await self.get_queue(str(identity))

    async def suspend_message(self, text: str) -> dict[str, Any]:
        """Suspend-Message: the message is not delivered (nor categorized) until resumed;
        PendingSuspend while a session already carries it."""
        identity, name, row = await self._find(text)
        if identity.queue.kind == QueueKind.SHADOW:
            raise ManagementError("a shadow copy cannot be suspended; remove-message drops it")
        if row["Status"] not in ("Suspended", "PendingSuspend"):
            await self.engine.database.write(admin_jobs.suspend_message,
                                             identity.internal_id, name)
            queue = self.engine.queues.get(name)
            if queue is not None and identity.internal_id not in queue.in_flight:
                queue.forget([identity.internal_id])
        return await self.get_message(str(identity))

    async def resume_message(self, text: str) -> dict[str, Any]:
        """Resume-Message: a suspended (or poison) message is categorized and routed again."""
        identity, name, row = await self._find(text)
        if row["Status"] not in ("Suspended", "PendingSuspend"):
            raise ManagementError(f"{identity} is not suspended (status {row['Status']}); "
                                  "nothing to resume", status=409)
        ids = await self.engine.database.write(admin_jobs.resubmit, name,
                                               [identity.internal_id], (admin_jobs.SUSPENDED,))
        await self._resubmitted(ids, "Resume-Message")
        return {"Identity": str(identity), "Status": "Ready", "Resubmitted": bool(ids)}

    async def _resubmitted(self, ids: list[int], cmdlet: str) -> None:
        """Messages sent back to Submission: a RESUBMIT tracking row each, then route them."""
        engine = self.engine
        for envelope in await engine.database.read(jobs.envelopes_of, ids):
            engine.tracking.resubmitted_by_admin(envelope, cmdlet)
        engine.categorizer.add(ids)

    async def remove_message(self, text: str, with_ndr: bool = False) -> dict[str, Any]:
        """Remove-Message: the message leaves the queue, with an NDR to its sender
        (-WithNDR) or silently."""
        identity, name, row = await self._find(text)
        engine = self.engine
        if identity.queue.kind == QueueKind.SHADOW:
            removed = await engine.database.write(admin_jobs.remove_shadow,
                                                  identity.internal_id, name)
        else:
            report, removed = await engine.database.write(
                admin_jobs.remove_message, identity.internal_id, name, with_ndr,
                engine.clock.seconds(), engine.signer)
            engine.report(report)
            queue = engine.queues.get(name)
            if queue is not None:
                queue.forget([identity.internal_id])
        return {"Identity": str(identity), "Status": "PendingRemove" if removed else
                row["Status"], "Removed": removed, "WithNDR": with_ndr}

    async def export_message(self, text: str,
                             write: Callable[[bytes], Awaitable[None] | None]) -> int:
        """Export-Message: the message's content (RFC 822) handed to ``write`` in chunks of
        EXPORT_CHUNK bytes, never loaded whole. Returns the size."""
        identity, _, _ = await self._find(text)
        database = self.engine.database
        size = await database.read(admin_jobs.body_size, identity.internal_id)
        if size is None:
            raise NotFoundError(f"{identity} is gone")
        offset = 0
        while offset < size:
            chunk = await database.read(admin_jobs.body_chunk, identity.internal_id, offset,
                                        EXPORT_CHUNK)
            if not chunk:
                break
            pending = write(chunk)
            if pending is not None:
                await pending
            offset += len(chunk)
        return offset
