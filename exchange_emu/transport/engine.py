"""The transport pipeline of a hub or edge: categorizer, delivery queues and
shadow redundancy, over the queue database.

A message committed by a receive connector waits in the Submission queue;
the categorizer routes each recipient into a delivery queue per next hop;
each delivery queue opens SMTP sessions (XSHADOW where the next hop offers
it) and applies the replies in one transaction per session. Shadow copies
are kept per primary until its discard notification, its auto-discard age,
or a takeover (heartbeat retry count reached, or a new primary database id).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import threads
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger

from exchange_emu.directory import Organization, Server
from exchange_emu.faults import crash_point
from exchange_emu.security.tls import ClientContexts, send_tls
from exchange_emu.smtp.client import (
    MessageOutcome,
    OutboundMessage,
    SessionOutcome,
    SessionRequest,
    send_session,
)
from exchange_emu.smtp.envelope import encode_shadow_context
from exchange_emu.smtp.interfaces import NullSessionLogFactory, SessionLogFactory
from exchange_emu.storage import QueueDatabase, short_write
from exchange_emu.storage.queue import record_heartbeat, shadow_primaries
from exchange_emu.transport import admin_jobs, jobs
from exchange_emu.transport.delayed_ack import DELIVERED, SKIPPED, DelayedAcknowledgement
from exchange_emu.transport.discard_handout import DiscardHandOut
from exchange_emu.transport.routing import (
    LOCAL,
    MAILBOX,
    NextHop,
    Router,
    RoutingFailure,
    Target,
)
from exchange_emu.transport.store_driver import HubStoreDriver, submit_time_of
from exchange_emu.transport.tracking import TransportTracking

log = Logger()

MAX_SESSIONS_PER_QUEUE = 20
"""Exchange's MaxPerDomainOutboundConnections."""
MESSAGES_PER_SESSION = 20
"""Exchange's MaxMessagesPerConnection (send side)."""
UNREACHABLE = "Unreachable"
EXPEDITE_FIRST = 0.002
"""Seconds before the first discard query for a message whose 250 is held (F.6); the
queries back off, doubling, to EXPEDITE_MAX while nothing new is held. The held 250 waits
for the answer, so the first queries come soon: a query is a short session (EHLO, XSHADOW,
XQDISCARD, QUIT); while a session to that primary is open, that session asks after its
current round of messages instead (``SessionRequest.discards_due``). The
query starts once this server recorded the session that made the shadow copy; by then the
primary has usually recorded its own delivery too, and answers from memory, so with one
sender 2 ms missed almost never (5 ms cost a fifth of the throughput; 0 missed often)."""
EXPEDITE_MAX = 2.0
EARLY_DISCARD_TTL = 600.0
"""How long a discard notification that arrived before its shadow copy was recorded is kept."""
_CONTEXT_NAMESPACE = uuid.UUID("6f1d5e1c-8f5b-4f8e-9a51-3c2a7f4e1b00")


def _session_writer(db: QueueDatabase, results: Sequence[jobs.MessageResult]) -> Any:
    """How to record a session's results: a short write unless it is large or fails a
    recipient (an NDR carries the message's body)."""
    rows = sum(len(r.delivered) + len(r.deferred) + len(r.failed) for r in results)
    if short_write(rows) and not any(r.failed for r in results):
        return db.write_short
    return db.write


def _write_local_mailboxes(root: Path, items: list[jobs.DeliveryItem]) -> int:
    """Thread side of local delivery: write each copy atomically and fsync it."""
    count = 0
    for item in items:
        for recipient in item.recipients:
            folder = root / recipient.address.lower()
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / f"{item.envelope.internal_id}-{recipient.id}.eml"
            temporary = final.with_suffix(".tmp")
            with open(temporary, "wb") as out:
                out.write(item.body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
            count += 1
    return count


def _sleep(clock: IReactorTime, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    clock.callLater(seconds, d.callback, None)
    return d


def _run(coroutine: Coroutine[Any, Any, Any], what: str) -> Deferred[Any]:
    """Run a coroutine; log (never swallow silently) what it raises."""
    d = Deferred.fromCoroutine(coroutine)
    d.addErrback(lambda f: log.failure("{what} failed", f, what=what))
    return d


class TransportEngine(service.Service):
    """One transport server's pipeline (Exchange's Microsoft Exchange Transport service)."""

    def __init__(
        self,
        organization: Organization,
        server: Server,
        database: QueueDatabase,
        tracking: TransportTracking,
        reactor: Any,
        send_log: SessionLogFactory | None = None,
        connect: Callable[[Target], IStreamClientEndpoint] | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.organization = organization
        self.server = server
        self.database = database
        self.tracking = tracking
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.send_log: SessionLogFactory = send_log or NullSessionLogFactory()
        self.connect = connect or self._tcp_endpoint
        self.settings = organization.transport
        self.router = Router(organization, server)
        default_domain = organization.default_accepted_domain
        self.signer = jobs.DsnSettings(
            server.fqdn,
            f"postmaster@{default_domain.domain if default_domain else server.fqdn}",
        )
        self.shadow_context = encode_shadow_context(
            uuid.uuid5(_CONTEXT_NAMESPACE, server.name), server.name, server.fqdn
        )
        self.queues: dict[str, DeliveryQueue] = {}
        self.suspended_queues: set[str] = set()
        """Next hops whose delivery queue an administrator suspended (Suspend-Queue)."""
        self.down_until: dict[str, float] = {}
        self.store_driver: HubStoreDriver | None = None
        self.client_tls: ClientContexts | None = None
        """This server's client TLS contexts (its certificate, the organization CA);
        None: no certificate, no STARTTLS."""
        self.delayed_ack: DelayedAcknowledgement | None = None
        self.discards = DiscardHandOut(database, self.clock)
        """The discard notifications this server prepared, as XQDISCARD hands them out."""
        self.categorizer = Categorizer(self)
        self.shadow = ShadowRedundancy(self)
        self.stopping = False
        self.ready: Deferred[None] = Deferred()
        self._active: set[Deferred[Any]] = set()
        self._aging: IDelayedCall | None = None

    # -- lifecycle ----------------------------------------------------------

    def with_tls(self, request: SessionRequest, hop: NextHop, target: Target
                 ) -> SessionRequest:
        """The session's STARTTLS policy for this target (docs/security.md)."""
        server = None
        if target.server is not None:
            with contextlib.suppress(LookupError):
                server = self.organization.server(target.server)
        tls, required = send_tls(self.client_tls, server, target.fqdn or target.address.host,
                                 hop.require_tls)
        return dataclasses.replace(request, tls=tls, require_tls=required)

    def _tcp_endpoint(self, target: Target) -> IStreamClientEndpoint:
        return TCP4ClientEndpoint(self.reactor, target.address.host, target.address.port,
                                  timeout=30)

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        d = self.database.write(jobs.start_up)
        d.addCallback(self._load_suspended)
        d.addCallback(self._recovered)
        d.addErrback(lambda f: log.failure("transport start-up failed", f))

    def _load_suspended(self, recovery: jobs.Recovery) -> Deferred[jobs.Recovery]:
        """Suspend-Queue outlives a restart: read which queues stay suspended."""
        d = self.database.read(admin_jobs.suspended_queues)

        def loaded(names: set[str]) -> jobs.Recovery:
            self.suspended_queues = names
            return recovery

        return d.addCallback(loaded)

    def _recovered(self, recovery: jobs.Recovery) -> None:
        for envelope in recovery.poisoned:
            log.warn("{server}: message {id} crashed the server twice: Poison queue",
                     server=self.server.name, id=envelope.message_id)
            self.tracking.poison(envelope)
        self.categorizer.add_all()
        self.shadow.start()
        self._schedule_aging()
        self.ready.callback(None)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.stopping = True
        if self.delayed_ack is not None:
            self.delayed_ack.release_all()
        for timer in (self._aging, self.shadow.timer, self.categorizer.timer):
            if timer is not None and timer.active():
                timer.cancel()
        for queue in self.queues.values():
            queue.cancel_timer()
            for wake in list(queue.idle):
                wake.fire(False)
        self.discards.flush_deletes()
        pending = DeferredList(list(self._active), consumeErrors=True)
        pending.addTimeout(10, self.clock, onTimeoutCancel=lambda result, timeout: None)
        d: Deferred[Any] = pending.addBoth(lambda _: self.database.write(jobs.stopped_cleanly))
        d.addErrback(lambda f: log.failure("transport shutdown", f))
        return d.addCallback(lambda _: None)

    def track(self, d: Deferred[Any]) -> Deferred[Any]:
        self._active.add(d)
        return d.addBoth(self._untrack, d)

    def _untrack(self, result: Any, d: Deferred[Any]) -> Any:
        self._active.discard(d)
        return result

    # -- entry points ---------------------------------------------------------

    def submitted(self, internal_id: int) -> None:
        """A receive connector committed a message to the Submission queue."""
        self.categorizer.add([internal_id])

    def queue(self, hop: NextHop) -> DeliveryQueue:
        queue = self.queues.get(hop.name)
        if queue is None:
            queue = self.queues[hop.name] = DeliveryQueue(self, hop)
            queue.suspended = hop.name in self.suspended_queues
        else:
            queue.hop = hop
        return queue

    def mailbox_server_reachable(self, mailbox_server: str) -> None:
        """The store driver link to ``mailbox_server`` is (back) up: its mailbox delivery
        queues in Retry try again now instead of at their next retry time, which after
        the glitch and transient retries is OutboundConnectionFailureRetryInterval
        (10 minutes) away — the hub knows the server is back, it need not guess."""
        for queue in self.queues.values():
            if (queue.hop.delivery == MAILBOX and queue.status == "Retry"
                    and any(t.server == mailbox_server for t in queue.hop.targets)):
                queue.retry_now()

    def route(self, address: str) -> NextHop | RoutingFailure:
        return self.router.route(address)

    def mark_down(self, server: str, seconds: float) -> None:
        """Prefer other targets than ``server`` for a while (it stopped answering)."""
        self.down_until[server] = self.clock.seconds() + seconds

    def ordered_targets(self, hop: NextHop) -> list[Target]:
        now = self.clock.seconds()
        up = [t for t in hop.targets if self.down_until.get(t.server or "", 0) <= now]
        down = [t for t in hop.targets if t not in up]
        return up + down

    # -- delay DSN and expiry ---------------------------------------------------

    def _schedule_aging(self) -> None:
        interval = min(self.settings.delay_notification_timeout,
                       self.settings.message_expiration_timeout) / 10
        self._aging = self.clock.callLater(max(1.0, min(interval, 60.0)), self._age)

    def _age(self) -> None:
        self._aging = None
        if self.stopping:
            return
        d = self.database.write(
            jobs.age_messages, self.clock.seconds(),
            delay_after=self.settings.delay_notification_timeout,
            expire_after=self.settings.message_expiration_timeout, signer=self.signer)

        def aged(result: tuple[jobs.Report, list[int]]) -> None:
            report, expired = result
            self.report(report)
            for queue in self.queues.values():
                queue.forget(expired)

        d.addCallback(aged)
        d.addErrback(lambda f: log.failure("message aging failed", f))
        d.addBoth(lambda _: self._schedule_aging() if not self.stopping else None)

    def xexch50_blob(self, item: jobs.DeliveryItem) -> bytes | None:
        """Exchange 2003 sends its per-message MAPI properties to Exchange peers with
        XEXCH50; the emulator's 2003 server sends a small stand-in blob."""
        if self.server.has_role("legacy") and self.server.version == "2003":
            return (b"EXCH50\x00" + item.envelope.message_id.encode("utf-8", "replace")
                    + b"\x00" + self.server.fqdn.encode())
        return None

    def still_to_deliver(self, internal_id: int) -> bool:
        """Is the message waiting in Submission or in a delivery queue (in memory)?"""
        return internal_id in self.categorizer.pending or any(
            internal_id in queue.items for queue in self.queues.values())

    def skip_delayed_ack(self, internal_id: int, reason: str) -> None:
        """protocol.md §6: the message cannot reach its next hops soon; acknowledge now."""
        if self.delayed_ack is not None:
            self.delayed_ack.resolve(internal_id, SKIPPED, reason)

    def report(self, report: jobs.Report, scenario_for_discard: str = "D.4.4") -> None:
        """Tracking rows for what a job did; new DSNs go to the categorizer."""
        for envelope, recipient, reply in report.failed:
            self.tracking.failed(envelope, recipient, reply)
        for new_id, kind, envelope, dsn_id in report.dsns:
            self.tracking.dsn(envelope, kind, dsn_id)
            self.categorizer.add([new_id])
        for settled in report.settled:
            if settled.deleted and self.delayed_ack is not None:
                self.delayed_ack.resolve(settled.envelope.internal_id, DELIVERED, deleted=True)
            if settled.discard_queued:
                scenario = scenario_for_discard if settled.shadowed or scenario_for_discard == (
                    "C.3") else "E.6"
                self.tracking.discard_prepared(settled.envelope, scenario)
                envelope = settled.envelope
                if envelope.shadow_context and envelope.shadow_message_id:
                    self.discards.queued(envelope.shadow_context, envelope.shadow_message_id,
                                         envelope.message_id, envelope.internal_id,
                                         envelope.sender, envelope.subject)
            if settled.envelope.mapi_submission:
                self.track(_run(self.report_ownership(settled), "ownership report"))

    async def redeliver(self, database: str, since: float) -> int:
        """Lossy failover of ``database``: resubmit what the transport dumpster holds for
        it since ``since``; the mailbox's duplicate detection drops what survived."""
        ids = await self.database.write(jobs.redeliver_from_dumpster, database, since,
                                        self.clock.seconds())
        envelopes = await self.database.read(jobs.envelopes_of, ids)
        for envelope in envelopes:
            self.tracking.redelivered(envelope, database)
        self.categorizer.add(ids)
        return len(ids)

    async def report_ownership(self, settled: jobs.Settled, attempts: int = 12) -> None:
        """B.4: the next hop has the message; tell the mailbox server (the item moves
        from the Outbox to Sent Items). B.5: the hub deleted it or keeps a shadow."""
        assert settled.envelope.mapi_submission is not None
        for _ in range(attempts):
            if self.store_driver is not None and not self.stopping:
                try:
                    await self.store_driver.report_ownership(settled.envelope.mapi_submission)
                except Exception as e:
                    log.info("{server}: ownership report failed ({why}); trying again",
                             server=self.server.name, why=e)
                else:
                    self.tracking.ownership_reported(settled.envelope, settled.shadowed)
                    return
            await _sleep(self.clock, 5.0)


class Categorizer:
    """Resolves and routes what waits in the Submission queue, in batches."""

    def __init__(self, engine: TransportEngine) -> None:
        self.engine = engine
        self.pending: set[int] = set()
        self.load_all = False
        self.running = False
        self.timer: IDelayedCall | None = None

    def add(self, internal_ids: Sequence[int]) -> None:
        self.pending.update(internal_ids)
        self._schedule()

    def add_all(self) -> None:
        self.load_all = True
        self._schedule()

    def _schedule(self) -> None:
        if self.running or (self.timer is not None and self.timer.active()):
            return
        self.timer = self.engine.clock.callLater(0, self._start)

    def _start(self) -> None:
        self.timer = None
        if self.engine.stopping or self.running:
            return
        self.running = True
        d = self.engine.track(_run(self._drain(), "categorizer"))
        d.addBoth(self._finished)

    def _finished(self, _: object) -> None:
        self.running = False
        if (self.pending or self.load_all) and not self.engine.stopping:
            self._schedule()

    async def _drain(self) -> None:
        engine = self.engine
        while not engine.stopping and (self.pending or self.load_all):
            if self.load_all:
                self.load_all = False
                batch = await engine.database.write(jobs.take_submission, None)
                if len(batch) >= 1000:
                    self.load_all = True
            else:
                ids = sorted(self.pending)[:1000]
                self.pending.difference_update(ids)
                db = engine.database
                batch = await (db.write_short if short_write(len(ids)) else db.write)(
                    jobs.take_submission, ids)
            if batch:
                await self._categorize(batch)

    async def _categorize(self, batch: list[jobs.Submitted]) -> None:
        engine = self.engine
        decisions: list[jobs.RouteDecision] = []
        hops: dict[int, dict[str, NextHop]] = {}
        for submitted in batch:
            internal_id = submitted.envelope.internal_id
            hops[internal_id] = {}
            for recipient in submitted.recipients:
                route = engine.route(recipient.address)
                if isinstance(route, NextHop):
                    hops[internal_id][route.name] = route
                    decisions.append(jobs.RouteDecision(recipient.id, internal_id, jobs.READY,
                                                        route.name))
                elif route.unreachable:
                    decisions.append(jobs.RouteDecision(
                        recipient.id, internal_id, jobs.UNREACHABLE, UNREACHABLE, route.reply))
                    engine.skip_delayed_ack(internal_id, "unreachable")
                else:
                    decisions.append(jobs.RouteDecision(
                        recipient.id, internal_id, jobs.FAILED, "", route.reply))
        db = engine.database
        short = short_write(len(decisions)) and all(d.status != jobs.FAILED for d in decisions)
        report = await (db.write_short if short else db.write)(  # (an NDR carries a body)
            jobs.apply_routes, decisions, engine.clock.seconds(), engine.signer)
        engine.report(report)
        for submitted in batch:
            self._queue(submitted.envelope, hops[submitted.envelope.internal_id])

    def route_on_receipt(self, addresses: Sequence[str]) -> dict[str, NextHop] | None:
        """Categorize before the receive commit: each recipient's next hop, so that the
        message is committed straight into its delivery queues (one transaction instead
        of three). None when a recipient needs the Submission queue's full treatment
        (unroutable or unknown recipients: NDRs, Unreachable) or the server is stopping."""
        if self.engine.stopping:
            return None
        hops: dict[str, NextHop] = {}
        for address in addresses:
            route = self.engine.route(address)
            if not isinstance(route, NextHop):
                return None
            hops[address] = route
        return hops

    def queue_on_receipt(self, envelope: jobs.Envelope, hops: dict[str, NextHop]) -> None:
        """A message categorized on receipt (:meth:`route_on_receipt`) is committed: it
        waits in its delivery queues."""
        self._queue(envelope, {hop.name: hop for hop in hops.values()})

    def _queue(self, envelope: jobs.Envelope, routed: dict[str, NextHop]) -> None:
        """Hand a categorized message to its delivery queues (bifurcated when several);
        delayed acknowledgement is skipped for a queue that will not deliver soon."""
        engine = self.engine
        internal_id = envelope.internal_id
        if len(routed) > 1:
            engine.tracking.transferred(envelope, sorted(routed))
        for hop in routed.values():
            queue = engine.queue(hop)
            if queue.status == "Retry" or queue.suspended:
                engine.skip_delayed_ack(internal_id, f"queue {queue.name} in "
                                        f"{'Suspended' if queue.suspended else 'Retry'}")
            elif len(queue.items) >= engine.settings.delayed_ack_skip_queue_length:
                engine.skip_delayed_ack(internal_id, f"queue {queue.name} holds "
                                        f"{len(queue.items)} items")
            queue.add(internal_id)


class _Connection:
    """One session slot of a delivery queue (MaxPerDomainOutboundConnections), given back
    once, when its connection closes or, without one, when the delivery is over."""

    def __init__(self, queue: DeliveryQueue) -> None:
        self.queue: DeliveryQueue | None = queue

    def close(self) -> None:
        queue, self.queue = self.queue, None
        if queue is not None:
            queue._connection_closed()


class _Wake:
    """An idle session's wait: fired with true to go on (messages ready, or a discard query
    due), with false to end."""

    def __init__(self) -> None:
        self.d: Deferred[bool] = Deferred()

    def fire(self, go_on: bool) -> None:
        if not self.d.called:
            self.d.callback(go_on)


class _SessionRounds:
    """One outbound session of a delivery queue, in rounds: once a round of its messages
    is answered, that round is booked (the SEND rows, shadow copies, F.6) while the session
    takes the queue's next ready messages (an Exchange send connector's open connection
    takes them, up to MaxMessagesPerConnection) instead of each waiting for a session; with
    nothing left to send, a shadowed session stays open while a held 250 waits for the
    primary's discard (``linger``)."""

    def __init__(self, queue: DeliveryQueue, batch: list[int],
                 items: list[jobs.DeliveryItem], shadow: bool) -> None:
        self.queue = queue
        self.batch = batch
        self.items = items
        self.shadow = shadow
        self.outbound = [queue._outbound(item, shadow) for item in items]
        self.booked = 0
        """How many of ``items`` (from the first) are booked or being booked."""
        self.booking: list[Deferred[Any]] = []
        self.discards_applied = 0
        """How many of the session's discard notifications (from the first) are applied."""

    def _primary(self, target: Target, outcome: SessionOutcome) -> str | None:
        return (target.server or str(target.address)) if outcome.shadowed else None

    async def next_round(self, target: Target, outcome: SessionOutcome
                         ) -> list[OutboundMessage]:
        queue, engine = self.queue, self.queue.engine
        answered = len(outcome.messages)
        if answered > self.booked:
            if self.booked == 0:
                # The primary's database id first (protocol.md §2): a changed one takes
                # over the old shadows, never the ones this session makes.
                await engine.shadow.contact(target, outcome, heartbeat=False)
            first, self.booked = self.booked, answered
            primary = self._primary(target, outcome)
            booking = engine.track(_run(
                queue._record(self.items[first:answered], self.outbound[first:answered],
                              outcome.messages[first:answered], None, target, primary),
                f"delivery queue {queue.name}"))
            if primary is not None:  # a session kept open for it looks again (linger)
                booking.addBoth(engine.shadow.recorded, primary)
            self.booking.append(booking)
        self._apply_discards(target, outcome)
        added = await queue._next_for_session(self.batch,
                                              MESSAGES_PER_SESSION - len(self.items))
        messages = [queue._outbound(item, self.shadow) for item in added]
        self.items.extend(added)
        self.outbound.extend(messages)
        return messages

    async def linger(self, target: Target) -> bool:
        """Nothing left to send: keep the session while a held acknowledgement waits for a
        discard notification from this primary (F.6 then asks here, without a session of
        its own) or this session's shadow copies are still being recorded, until messages
        are ready for it or the query falls due; end it once neither holds, or when the
        session is full."""
        queue, engine = self.queue, self.queue.engine
        primary = target.server or str(target.address)
        shadow = engine.shadow
        if engine.stopping or queue.suspended or len(self.items) >= MESSAGES_PER_SESSION:
            return False
        if shadow.discards_due_soon(primary) or queue.has_ready():
            return True
        if not (self.recording() or shadow.awaits_discards(primary)):
            return False
        wake = _Wake()
        queue.idle.append(wake)
        shadow.idle.setdefault(primary, []).append(wake)
        wake.d.addTimeout(EXPEDITE_MAX, engine.clock, onTimeoutCancel=lambda *_: False)
        try:
            return await wake.d
        finally:
            queue.idle.remove(wake)
            shadow.idle[primary].remove(wake)

    def recording(self) -> bool:
        """Is a booking of this session still being written?"""
        return any(not d.called for d in self.booking)

    async def finish(self, target: Target, outcome: SessionOutcome) -> None:
        """The session is over: book the rest, then apply the discards it brought."""
        queue, engine = self.queue, self.queue.engine
        primary = self._primary(target, outcome)
        await engine.shadow.contact(target, outcome, heartbeat=False)
        first = self.booked
        self.booked = len(self.items)
        if first < self.booked:  # (after the last round, usually booked already)
            await queue._record(self.items[first:], self.outbound[first:],
                                outcome.messages[first:], outcome.error, target, primary)
        self._apply_discards(target, outcome)
        for d in self.booking:
            await d

    def _apply_discards(self, target: Target, outcome: SessionOutcome) -> None:
        """D.7 for the discard notifications the session brought since the last time (a
        session kept open for a held acknowledgement asks several times)."""
        primary = self._primary(target, outcome)
        fresh = outcome.discards[self.discards_applied:]
        if primary is None or not fresh:
            return
        self.discards_applied = len(outcome.discards)
        engine = self.queue.engine
        self.booking.append(engine.track(_run(
            engine.shadow.apply_discards(primary, fresh, outcome.discards_queried_at
                                         or engine.clock.seconds()),
            f"discards from {primary}")))


class DeliveryQueue:
    """One delivery queue (``<Server>\\<NextHopDomain>``): sessions to one next hop."""

    def __init__(self, engine: TransportEngine, hop: NextHop) -> None:
        self.engine = engine
        self.hop = hop
        self.items: dict[int, float] = {}  # internal id -> not before
        self.in_flight: set[int] = set()
        self.sessions = 0
        self.idle: list[_Wake] = []
        """Open sessions waiting with nothing to send (``_SessionRounds.linger``)."""
        self.status = "Ready"
        self.retry_count = 0
        self.next_attempt = 0.0
        self.last_error: str | None = None
        self.timer: IDelayedCall | None = None
        self.suspended = False
        """Suspend-Queue: no session starts while set (sessions already open finish)."""

    @property
    def name(self) -> str:
        return self.hop.name

    @property
    def display_status(self) -> str:
        """Get-Queue's Status: Suspended, Retry, Active or Ready."""
        return "Suspended" if self.suspended else self.status

    def add(self, internal_id: int, not_before: float = 0.0) -> None:
        self.items[internal_id] = not_before
        self.kick()

    def forget(self, internal_ids: Sequence[int]) -> None:
        for internal_id in internal_ids:
            self.items.pop(internal_id, None)

    def retry_now(self) -> None:
        """Leave Retry: every waiting message is due now (Exchange's Retry-Queue)."""
        self.status = "Ready"
        self.retry_count = 0
        self.next_attempt = 0.0
        for internal_id in self.items:
            if internal_id not in self.in_flight:
                self.items[internal_id] = 0.0
        self.kick()

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def kick(self, delay: float = 0.0) -> None:
        clock = self.engine.clock
        if self.timer is not None and self.timer.active():
            if self.timer.getTime() <= clock.seconds() + delay:
                return
            self.timer.cancel()
        self.timer = clock.callLater(max(0.0, delay), self._pump)

    def _pump(self) -> None:
        self.timer = None
        engine = self.engine
        if engine.stopping or self.suspended:
            return
        now = engine.clock.seconds()
        if now < self.next_attempt:
            self.kick(self.next_attempt - now)
            return
        ready = sorted(i for i, t in self.items.items() if t <= now and i not in self.in_flight)
        if ready and self.idle:
            self.idle[0].fire(True)  # an open session takes them
        # A new session for a full batch, or when none is open; otherwise what
        # arrives meanwhile waits for an open session's next round.
        while ready and self.sessions < MAX_SESSIONS_PER_QUEUE and (
            self.sessions == 0 or len(ready) >= MESSAGES_PER_SESSION
        ):
            batch, ready = ready[:MESSAGES_PER_SESSION], ready[MESSAGES_PER_SESSION:]
            self.in_flight.update(batch)
            self.sessions += 1
            self.status = "Active"
            connection = _Connection(self)
            d = engine.track(_run(self._deliver(batch, connection),
                                  f"delivery queue {self.name}"))
            d.addBoth(self._session_done, batch, connection)
        later = [t for i, t in self.items.items() if i not in self.in_flight and t > now]
        if later:
            self.kick(min(later) - now)

    def has_ready(self) -> bool:
        """Is a message due that no session has taken yet?"""
        now = self.engine.clock.seconds()
        return any(t <= now and i not in self.in_flight for i, t in self.items.items())

    def _connection_closed(self) -> None:
        """A session's connection is over: another may start for what waits meanwhile,
        while the ended session's replies are still being recorded."""
        self.sessions -= 1
        if self.sessions == 0 and self.status == "Active":
            self.status = "Ready"
        if any(i not in self.in_flight for i in self.items):
            self.kick()

    def _session_done(self, _: object, batch: list[int], connection: _Connection) -> None:
        connection.close()
        self.in_flight.difference_update(batch)
        if any(i not in self.in_flight for i in self.items):
            self.kick()

    def _retry_delay(self) -> float:
        s = self.engine.settings
        if self.retry_count <= s.queue_glitch_retry_count:
            return s.queue_glitch_retry_interval
        if self.retry_count <= s.queue_glitch_retry_count + s.transient_failure_retry_attempts:
            return s.transient_failure_retry_interval
        return s.outbound_connection_failure_retry_interval

    async def _load(self, internal_ids: list[int]) -> list[jobs.DeliveryItem]:
        """What is still queued of ``internal_ids``, with bodies; forget the rest."""
        items = await self.engine.database.read_short(
            jobs.load_short_delivery, jobs.load_delivery, self.name, internal_ids)
        found = {item.envelope.internal_id for item in items}
        self.forget([i for i in internal_ids if i not in found])
        return items

    async def _next_for_session(self, batch: list[int], room: int) -> list[jobs.DeliveryItem]:
        """The queue's next ready messages for a session still open (an Exchange send
        connector takes them on the open connection, up to MaxMessagesPerConnection),
        added to its ``batch``: they go without a session of their own."""
        if room <= 0 or self.engine.stopping or self.suspended:
            return []
        now = self.engine.clock.seconds()
        ready = sorted(i for i, t in self.items.items()
                       if t <= now and i not in self.in_flight)[:room]
        if not ready:
            return []
        self.in_flight.update(ready)
        batch.extend(ready)
        return await self._load(ready)

    def _outbound(self, item: jobs.DeliveryItem, shadow: bool) -> OutboundMessage:
        return OutboundMessage(
            sender=item.envelope.sender,
            recipients=tuple(r.address for r in item.recipients),
            body=item.body,
            shadow_message_id=str(uuid.uuid4()) if shadow else None,
            body_type=item.body_type,
            envid=item.envid,
            ret=item.ret,
            xexch50=item.xexch50 or self.engine.xexch50_blob(item),
            notify={r.address: r.notify for r in item.recipients if r.notify},
            orcpt={r.address: r.orcpt for r in item.recipients if r.orcpt},
        )

    async def _deliver(self, batch: list[int], connection: _Connection) -> None:
        engine = self.engine
        items = await self._load(batch)
        if not items:
            return
        if self.hop.delivery == MAILBOX:
            await self._deliver_to_mailbox(items)
            return
        if self.hop.delivery == LOCAL:
            await self._deliver_locally(items)
            return
        shadow = (engine.settings.shadow_redundancy_enabled and self.hop.shadow_capable
                  and engine.server.supports_shadow_redundancy)
        session = _SessionRounds(self, batch, items, shadow)
        request = SessionRequest(
            helo=engine.server.fqdn,
            messages=list(session.outbound),
            shadow_context=engine.shadow_context if shadow else None,
            discard_max=engine.settings.xqdiscard_max_events,
        )
        outcome, target = await engine.shadow.session(self.hop, request,
                                                      next_round=session.next_round,
                                                      linger=session.linger)
        connection.close()
        if target is None:
            await self._queue_failed(items, f"451 4.4.0 {outcome.error or 'connection failed'}")
            return
        self.retry_count = 0
        self.next_attempt = 0.0
        self.last_error = None
        await session.finish(target, outcome)

    async def _record(self, items: Sequence[jobs.DeliveryItem],
                      outbound: Sequence[OutboundMessage], answers: Sequence[MessageOutcome],
                      error: str | None, target: Target, primary: str | None) -> None:
        """Book what the next hop answered for ``items`` (``answers``, in the same order;
        the session broke, with ``error``, before the rest were answered)."""
        engine = self.engine
        now = engine.clock.seconds()
        retry_at = now + engine.settings.message_retry_interval
        results = []
        for index, item in enumerate(items):
            mo = answers[index] if index < len(answers) else None
            delivered, deferred, failed = [], [], []
            replies = mo.recipient_results() if mo is not None else {}
            for recipient in item.recipients:
                reply = replies.get(recipient.address)
                text = str(reply) if reply is not None else (
                    f"451 4.4.0 {error or 'no reply from the next hop'}")
                if reply is not None and reply.positive:
                    delivered.append((recipient.id, text))
                elif reply is not None and reply.permanent:
                    failed.append((recipient.id, text))
                else:
                    deferred.append((recipient.id, text))
            shadowed = mo is not None and mo.shadowed
            shadow_id = outbound[index].shadow_message_id if shadowed else None
            results.append(jobs.MessageResult(
                item.envelope.internal_id, tuple(delivered), tuple(deferred), tuple(failed),
                shadow_id))
        report = await _session_writer(engine.database, results)(
            jobs.record_session, results, delivered_to=target.server or str(target.address),
            primary=primary, now=now, retry_at=retry_at, signer=engine.signer)
        settled = {s.envelope.internal_id: s for s in report.settled}
        finished = {}
        for item, answer in zip(items, answers, strict=False):
            finished[item.envelope.internal_id] = answer.finished_at
        for item, result in zip(items, results, strict=True):
            internal_id = item.envelope.internal_id
            if result.delivered:
                s = settled.get(internal_id)
                engine.tracking.send(
                    item.envelope, [r.address for r in item.recipients if any(
                        r.id == rid for rid, _ in result.delivered)],
                    [reply for _, reply in result.delivered], next_hop=self.name,
                    target_fqdn=target.fqdn or str(target.address),
                    shadowed=result.shadow_message_id is not None,
                    deleted=bool(s and s.deleted), when=finished.get(internal_id),
                    delayed_ack=bool(engine.delayed_ack
                                     and engine.delayed_ack.held(internal_id)))
            if result.deferred:
                engine.tracking.deferred(
                    item.envelope, [r.address for r in item.recipients if any(
                        r.id == rid for rid, _ in result.deferred)],
                    result.deferred[0][1], self.name)
                self.items[internal_id] = retry_at
                engine.skip_delayed_ack(internal_id, "deferred")
            else:
                self.items.pop(internal_id, None)
        for envelope, shadow_id in report.shadows_added:
            engine.tracking.shadow_created(envelope, primary or "", shadow_id,
                                           when=finished.get(envelope.internal_id))
            if primary and engine.delayed_ack and engine.delayed_ack.held(envelope.internal_id):
                engine.delayed_ack.await_discard(envelope, primary, shadow_id)
                engine.shadow.expedite(primary, envelope.internal_id)
        early = engine.shadow.early_discards.get(primary or "", {})
        arrived = [shadow_id for _, shadow_id in report.shadows_added if shadow_id in early]
        if primary and arrived:
            for shadow_id in arrived:
                early.pop(shadow_id, None)
            await engine.shadow.apply_discards(primary, arrived, engine.clock.seconds())
        engine.report(report)

    async def _deliver_to_mailbox(self, items: list[jobs.DeliveryItem]) -> None:
        """C.1: through the store driver into the mailboxes of one database."""
        engine = self.engine
        target = self.hop.targets[0]
        driver = engine.store_driver
        if driver is None or target.server not in driver.links:
            await self._queue_failed(
                items, f"451 4.4.0 STOREDRV; no store driver connection to {target.server}")
            return
        self.retry_count = 0
        self.next_attempt = 0.0
        now = engine.clock.seconds()
        results: list[jobs.MessageResult] = []
        duplicates: dict[int, list[str]] = {}
        for item in items:
            addresses = [r.address for r in item.recipients]
            try:
                statuses = await driver.deliver(target.server or "", self.name, addresses,
                                                item.envelope.sender, item.envelope.message_id,
                                                item.body)
                crash_point("C.1")  # delivered, nothing recorded yet (fault injection)
            except Exception as e:
                reply = f"451 4.4.0 STOREDRV.Deliver; {e}"
                results.append(jobs.MessageResult(item.envelope.internal_id, deferred=tuple(
                    (r.id, reply) for r in item.recipients)))
                continue
            delivered, failed = [], []
            for r in item.recipients:
                status = statuses.get(r.address, "unknown")
                if status == "unknown":
                    failed.append((r.id, "550 5.1.1 STOREDRV.Deliver; recipient not found"))
                else:
                    delivered.append((r.id, "250 2.1.5 STOREDRV.Deliver; " + status))
                    if status == "duplicate":
                        duplicates.setdefault(item.envelope.internal_id, []).append(r.address)
            results.append(jobs.MessageResult(item.envelope.internal_id, tuple(delivered), (),
                                              tuple(failed)))
        report = await _session_writer(engine.database, results)(
            jobs.record_session, results, delivered_to=target.server, primary=None, now=now,
            retry_at=now + engine.settings.message_retry_interval, signer=engine.signer)
        dumpster = [(item, [r.address for r in item.recipients])
                    for item, result in zip(items, results, strict=True) if result.delivered]
        if dumpster:
            await engine.database.write(
                jobs.add_to_dumpster, self.name, [
                    (item.envelope, addresses, submit_time_of(item.body), item.body)
                    for item, addresses in dumpster],
                now, engine.settings.max_dumpster_size_per_database,
                engine.settings.max_dumpster_time)
        for item, result in zip(items, results, strict=True):
            internal_id = item.envelope.internal_id
            if result.delivered:
                dups = duplicates.get(internal_id, [])
                fresh = [r.address for r in item.recipients
                         if any(r.id == rid for rid, _ in result.delivered)
                         and r.address not in dups]
                if fresh:
                    engine.tracking.delivered(item.envelope, fresh, self.name, target.fqdn)
                if dups:
                    engine.tracking.duplicate_dropped(item.envelope, dups, self.name)
            if result.deferred:
                engine.tracking.deferred(item.envelope, [r.address for r in item.recipients],
                                         result.deferred[0][1], self.name)
                self.items[internal_id] = now + engine.settings.message_retry_interval
            else:
                self.items.pop(internal_id, None)
        engine.report(report, "C.3")

    async def _deliver_locally(self, items: list[jobs.DeliveryItem]) -> None:
        """A legacy or Internet server's own mailboxes: one file per message and
        recipient under ``<data_dir>/Mailboxes/<address>/``, written and synced before
        the delivery is recorded."""
        engine = self.engine
        now = engine.clock.seconds()
        crash_point("E.4")  # a server without XSHADOW took it; not yet delivered (fault injection)
        written = await threads.deferToThread(
            _write_local_mailboxes, Path(engine.server.data_dir) / "Mailboxes", items)
        results = [jobs.MessageResult(item.envelope.internal_id, delivered=tuple(
            (r.id, "250 2.0.0 delivered to local mailbox") for r in item.recipients))
            for item in items]
        report = await _session_writer(engine.database, results)(
            jobs.record_session, results, delivered_to=engine.server.name, primary=None,
            now=now, retry_at=now, signer=engine.signer)
        for item in items:
            engine.tracking.delivered_locally(item.envelope,
                                              [r.address for r in item.recipients])
            self.items.pop(item.envelope.internal_id, None)
        del written
        engine.report(report)

    async def _queue_failed(self, items: list[jobs.DeliveryItem], reply: str) -> None:
        """No target of the next hop answered: the queue goes to Retry."""
        engine = self.engine
        self.retry_count += 1
        delay = self._retry_delay()
        now = engine.clock.seconds()
        self.status = "Retry"
        self.last_error = reply
        self.next_attempt = now + delay
        ids = [item.envelope.internal_id for item in items]
        await engine.database.write(jobs.defer_queue, self.name, ids, reply, now + delay)
        for item in items:
            engine.tracking.deferred(item.envelope, [r.address for r in item.recipients],
                                     reply, self.name)
            self.items[item.envelope.internal_id] = now + delay
            engine.skip_delayed_ack(item.envelope.internal_id, f"queue {self.name} in Retry")


class ShadowRedundancy:
    """The shadow holder's side: heartbeats to primaries, discards, takeover."""

    def __init__(self, engine: TransportEngine) -> None:
        self.engine = engine
        self.last_contact: dict[str, float] = {}
        self.last_attempt: dict[str, float] = {}
        self.expedited: dict[str, set[int]] = {}
        self.early_discards: dict[str, dict[str, float]] = {}
        self._acknowledged: dict[tuple[str, str], tuple[jobs.Envelope, float]] = {}
        """Held 250s sent on a discard (F.7) whose shadow copy is not deleted yet (and when)."""
        self.open_sessions: dict[str, int] = {}
        self._expedite_timers: dict[str, IDelayedCall] = {}
        self._expedite_delay: dict[str, float] = {}
        self._query_due: set[str] = set()
        """Primaries whose expedited discard query fell due while a session to them was
        open: that session asks after its current round."""
        self.idle: dict[str, list[_Wake]] = {}
        """Primary -> its open sessions waiting with nothing to send."""
        self.heartbeats: set[str] = set()
        self.timer: IDelayedCall | None = None
        self.started_at = 0.0
        self._healthy: dict[str, tuple[str | None, float]] = {}
        """Primary -> (its database id, when a successful heartbeat was last recorded)."""

    @property
    def interval(self) -> float:
        return self.engine.settings.shadow_heartbeat_timeout_interval

    def start(self) -> None:
        self.started_at = self.engine.clock.seconds()
        self._schedule()

    def _schedule(self) -> None:
        if not self.engine.stopping:
            self.timer = self.engine.clock.callLater(max(0.5, self.interval / 4), self._tick)

    def _tick(self) -> None:
        self.timer = None
        d = self.engine.track(_run(self._check(), "shadow redundancy check"))
        d.addBoth(lambda _: self._schedule())

    async def _check(self) -> None:
        engine = self.engine
        now = engine.clock.seconds()
        expired = await engine.database.write(
            jobs.expire_shadows, now - engine.settings.shadow_message_auto_discard_interval)
        for envelope in expired:
            engine.tracking.shadow_discarded(envelope, "", reason="auto-discard")
        await engine.database.write(
            jobs.expire_discards, now - engine.settings.shadow_message_auto_discard_interval)
        engine.discards.forget_older_than(
            now - engine.settings.shadow_message_auto_discard_interval)
        primaries = await engine.database.read(shadow_primaries)
        for primary in primaries:
            last = max(self.last_contact.get(primary, self.started_at),
                       self.last_attempt.get(primary, self.started_at))
            if now - last >= self.interval and primary not in self.heartbeats:
                self.heartbeats.add(primary)
                self.last_attempt[primary] = now
                d = engine.track(_run(self.heartbeat(primary), f"heartbeat to {primary}"))
                d.addBoth(self._heartbeat_done, primary)

    def _heartbeat_done(self, result: object, primary: str) -> object:
        self.heartbeats.discard(primary)
        return result

    async def session(
        self, hop: NextHop, request: SessionRequest,
        next_round: Callable[[Target, SessionOutcome], Awaitable[Sequence[OutboundMessage]]]
        | None = None,
        linger: Callable[[Target], Awaitable[bool]] | None = None,
    ) -> tuple[SessionOutcome, Target | None]:
        """Open a session to the first target of ``hop`` that answers; ``next_round`` and
        ``linger`` (given the target) are the session's ``SessionRequest.more`` and
        ``SessionRequest.linger``."""
        engine = self.engine
        outcome = SessionOutcome(error="no target")
        for target in engine.ordered_targets(hop):
            log_session = engine.send_log.open_session(
                hop.name, engine.server.fqdn, str(target.address))
            name = target.server or str(target.address)
            self.open_sessions[name] = self.open_sessions.get(name, 0) + 1
            session_request = engine.with_tls(request, hop, target)
            if request.shadow_context is not None:
                session_request = dataclasses.replace(
                    session_request, on_discards=functools.partial(self.discards_arrived, name))
            if next_round is not None:
                session_request = dataclasses.replace(
                    session_request, more=functools.partial(next_round, target),
                    discards_due=functools.partial(self._discards_due, name))
            if linger is not None and request.shadow_context is not None:
                session_request = dataclasses.replace(
                    session_request, linger=functools.partial(linger, target))
            try:
                outcome = await send_session(engine.connect(target), session_request,
                                             engine.clock, log_session)
            finally:
                self.open_sessions[name] -= 1
            if outcome.banner is not None and not outcome.tls_failed:
                return outcome, target
        return outcome, None

    def expedite(self, primary: str, internal_id: int) -> None:
        """F.6: a message whose acknowledgement is held is shadowed at ``primary``: ask it
        for discard notifications soon, then again backing off while nothing new is held
        (instead of waiting for the heartbeat interval)."""
        self.expedited.setdefault(primary, set()).add(internal_id)
        self._expedite_delay[primary] = EXPEDITE_FIRST
        self._schedule_expedited(primary, EXPEDITE_FIRST)

    def _schedule_expedited(self, primary: str, delay: float) -> None:
        clock = self.engine.clock
        timer = self._expedite_timers.get(primary)
        if timer is not None and timer.active():
            if timer.getTime() <= clock.seconds() + delay:
                return
            timer.cancel()
        self._expedite_timers[primary] = clock.callLater(delay, self._expedited_query, primary)

    def awaits_discards(self, primary: str) -> bool:
        """Does a held acknowledgement wait for a discard notification from ``primary``?"""
        engine = self.engine
        held = engine.delayed_ack.waiting if engine.delayed_ack is not None else frozenset()
        return bool(self.expedited.get(primary, set()) & held)

    def discards_due_soon(self, primary: str) -> bool:
        """Is an expedited query to ``primary`` due and not yet asked?"""
        return primary in self._query_due

    def recorded(self, result: Any, primary: str) -> Any:
        """A booking of a session to ``primary`` is written: a session of it waiting with
        nothing to send decides again whether to stay open."""
        self._wake_idle(primary, True)
        return result

    def _wake_idle(self, primary: str, go_on: bool) -> None:
        for wake in list(self.idle.get(primary, ())):
            wake.fire(go_on)

    def _expedited_query(self, primary: str) -> None:
        engine = self.engine
        held = engine.delayed_ack.waiting if engine.delayed_ack is not None else frozenset()
        waiting = self.expedited.get(primary, set()) & held
        if not waiting or engine.stopping:
            self.expedited.pop(primary, None)
            self._wake_idle(primary, False)
            return
        self.expedited[primary] = set(waiting)
        delay = min(self._expedite_delay.get(primary, EXPEDITE_FIRST) * 2, EXPEDITE_MAX)
        self._expedite_delay[primary] = delay
        if self.open_sessions.get(primary):
            # A session to that primary is open: it asks after its current round of
            # messages, or at once if it waits with nothing to send; not a session of
            # its own.
            self._query_due.add(primary)
            self._schedule_expedited(primary, delay)
            self._wake_idle(primary, True)
            return
        d = engine.track(_run(self.heartbeat(primary, expedited=True),
                              f"discard query to {primary}"))
        d.addBoth(lambda _: self._schedule_expedited(primary, delay))

    def _discards_due(self, primary: str) -> bool:
        """Asked by an open session to ``primary`` between rounds: is an expedited
        discard query (F.6) due? It is then that session's to make."""
        if primary not in self._query_due:
            return False
        self._query_due.discard(primary)
        return True

    async def heartbeat(self, primary: str, expedited: bool = False) -> None:
        """No session went to ``primary`` for a heartbeat interval: EHLO, XSHADOW,
        XQDISCARD, QUIT — a complete XQDISCARD reply is a successful heartbeat.

        ``expedited``: an early discard query for a held 250 (F.6), made milliseconds
        apart; its success counts, its failure does not (the heartbeats, one per interval,
        count those), or a primary restarting for a moment would be taken over."""
        engine = self.engine
        try:
            server = engine.organization.server(primary)
        except LookupError:
            return
        if server.smtp is None:
            return
        target = Target(server.smtp, server.name, server.fqdn)
        hop = NextHop(server.fqdn, "smtp", (target,), "Heartbeat")
        request = SessionRequest(helo=engine.server.fqdn, shadow_context=engine.shadow_context,
                                 discard_max=engine.settings.xqdiscard_max_events)
        outcome, reached = await self.session(hop, request)
        await self.contact(target, outcome, heartbeat=True, count_failure=not expedited)
        if reached is not None and outcome.shadowed and outcome.discards:
            await self.apply_discards(
                primary, outcome.discards, outcome.discards_queried_at or engine.clock.seconds())

    async def contact(self, target: Target, outcome: SessionOutcome, heartbeat: bool,
                      count_failure: bool = True) -> None:
        """Book a session to a (possible) primary: heartbeat success or failure (unless
        ``count_failure`` is false), and the database id check of protocol.md §2."""
        engine = self.engine
        primary = target.server or str(target.address)
        now = engine.clock.seconds()
        if not heartbeat and outcome.error is not None:
            # A delivery session that broke (one kept open for a held 250 may break when
            # the primary dies) says nothing about the primary now: the heartbeats decide,
            # unless it brought a database id not known to be this primary's.
            known = self._healthy.get(primary)
            if outcome.primary_database_id is None or (
                    known is not None and outcome.primary_database_id == known[0]):
                return
        if outcome.banner is not None:
            self.last_contact[primary] = now
        if not heartbeat and not outcome.shadowed:
            return  # not a shadow session: says nothing about a primary's health
        success = outcome.shadowed and outcome.discard_query in ("ok", "not-asked")
        if not success and not count_failure:
            return
        known = self._healthy.get(primary)
        if (success and known is not None and now - known[1] < self.interval
                and outcome.primary_database_id in (None, known[0])):
            # Healthy before and still the same database: writing would change only the
            # time stamps, so this session costs no commit (they are at most one
            # heartbeat interval old).
            return
        state = await engine.database.write_short(
            record_heartbeat, primary, success, outcome.primary_database_id, now)
        if success and not state.database_changed:
            self._healthy[primary] = (state.database_id, now)
        else:
            self._healthy.pop(primary, None)
        retry_count = engine.settings.shadow_heartbeat_retry_count
        if state.database_changed:
            await self.take_over(primary, "primary database id changed")
        elif not success and state.failed_heartbeats >= retry_count:
            engine.mark_down(primary, self.interval * retry_count)
            await self.take_over(primary, "heartbeat retry count reached")

    async def take_over(self, primary: str, reason: str) -> None:
        """Take ownership of every shadow copy kept for ``primary`` and resubmit it."""
        engine = self.engine
        envelopes = await engine.database.write(jobs.take_ownership, primary)
        if engine.delayed_ack is not None:
            engine.delayed_ack.stop_awaiting(primary)
        for envelope in envelopes:
            engine.tracking.resubmitted(envelope, primary, reason)
        if envelopes:
            log.info("{server}: took ownership of {n} shadow messages of {primary}: {reason}",
                     server=engine.server.name, n=len(envelopes), primary=primary, reason=reason)
            engine.categorizer.add([e.internal_id for e in envelopes])

    async def apply_discards(self, primary: str, shadow_ids: Sequence[str],
                             queried_at: float) -> None:
        """D.5–D.7: the primary handed over discard notifications; drop those shadows.
        F.7 comes first: a held 250 whose last awaited discard this is goes out now, as
        the message is durably queued here and has reached its next hops; its deletion
        (D.7, F.8) follows when the write commits."""
        engine = self.engine
        self.discards_arrived(primary, shadow_ids, queried_at)
        acknowledged = {}
        for shadow_id in shadow_ids:
            entry = self._acknowledged.pop((primary, shadow_id), None)
            if entry is not None:
                acknowledged[entry[0].internal_id] = entry[0]
        now = engine.clock.seconds()
        for key, (_, when) in list(self._acknowledged.items()):
            if now - when > EARLY_DISCARD_TTL:  # their session failed before this step
                del self._acknowledged[key]
        db = engine.database
        dropped = await (db.write_short if short_write(len(shadow_ids)) else db.write)(
            jobs.apply_discards, primary, list(shadow_ids))
        matched = {shadow_id for _, _, _, shadow_id in dropped}
        early = self.early_discards.setdefault(primary, {})
        now = engine.clock.seconds()
        for shadow_id in shadow_ids:
            if shadow_id not in matched:
                # The primary was faster than our own bookkeeping: this discard belongs to
                # a message whose 250 we have not recorded yet. Keep it for a while.
                early[shadow_id] = now
        for shadow_id, seen in list(early.items()):
            if now - seen > EARLY_DISCARD_TTL:
                del early[shadow_id]
        for envelope, deleted, handed, _shadow_id in dropped:
            if envelope.internal_id not in acknowledged:
                held = engine.delayed_ack is not None and engine.delayed_ack.held(
                    envelope.internal_id)
                engine.tracking.discard_queried(envelope, primary, queried_at,
                                                delayed_ack=held)
                if deleted and engine.delayed_ack is not None:
                    engine.delayed_ack.resolve(envelope.internal_id, DELIVERED,
                                               deleted=True)  # F.7, F.8
            engine.tracking.shadow_discarded(
                envelope, primary, delivered_to_mailboxes=self._delivers_to_mailboxes(
                    primary, handed),
                acknowledged_before=deleted and envelope.internal_id in acknowledged)

    def discards_arrived(self, primary: str, shadow_ids: Sequence[str],
                         queried_at: float) -> None:
        """F.6, F.7: an XQDISCARD reply came back; the held 250s that were waiting for
        these discards only go out at once, before the session or any commit ends."""
        engine = self.engine
        ack = engine.delayed_ack
        if ack is None:
            return
        for shadow_id in shadow_ids:
            envelope = ack.discarded(primary, shadow_id)
            if envelope is None or engine.still_to_deliver(envelope.internal_id):
                continue
            engine.tracking.discard_queried(envelope, primary, queried_at, delayed_ack=True)
            ack.resolve(envelope.internal_id, DELIVERED)
            self._acknowledged[(primary, shadow_id)] = (envelope, engine.clock.seconds())

    def _delivers_to_mailboxes(self, primary: str, addresses: Sequence[str]) -> bool:
        """Did ``primary`` take these recipients for mailboxes of its own site (scenario
        C there, so this discard is C.4)?"""
        org = self.engine.organization
        try:
            site = org.server(primary).site
        except LookupError:
            return False
        for address in addresses:
            recipient = org.recipient(address)
            database = org.database(recipient.database) if recipient and recipient.database \
                else None
            if database is None or org.server(database.server).site != site:
                return False
        return bool(addresses)
