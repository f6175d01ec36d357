"""The receive side of a transport server: what a receive connector accepts
and how an accepted message becomes durable.

Relay control (protocol.md §9): an anonymous peer may only send to accepted
domains; an Exchange server of the organization may relay anywhere. A message
is acknowledged only after the commit that puts it in the Submission queue, or,
categorized on receipt (every recipient has a next hop), straight in its delivery queues.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from exchange_emu.directory import Organization, ReceiveConnector, Server
from exchange_emu.directory.passwords import verify_password
from exchange_emu.logs.tracking_event import TrackingEvent, scenario_step, scenario_steps
from exchange_emu.logs.tracking_log import MessageTrackingLog, NullMessageTrackingLog
from exchange_emu.security.credentials import ServerCredentials
from exchange_emu.smtp import replies
from exchange_emu.smtp.envelope import EnvelopeSyntaxError, decode_shadow_context, domain_of
from exchange_emu.smtp.interfaces import (
    Acceptance,
    IReceivePolicy,
    ReceivedMessage,
    Recipient,
    SessionInfo,
)
from exchange_emu.smtp.replies import Reply
from exchange_emu.storage import NewMessage, QueueStore
from exchange_emu.storage import Recipient as StoredRecipient
from exchange_emu.transport.delayed_ack import (
    DELIVERED,
    AckOutcome,
    DelayedAcknowledgement,
    format_tarpit,
)
from exchange_emu.transport.discard_handout import DiscardHandOut
from exchange_emu.transport.jobs import Envelope, WaitingDiscard

if TYPE_CHECKING:
    from exchange_emu.transport.engine import Categorizer


@implementer(IReceivePolicy)
class TransportReceivePolicy:
    """Decisions of one receive connector of a hub or edge transport server."""

    def __init__(
        self,
        organization: Organization,
        server: Server,
        connector: ReceiveConnector,
        store: QueueStore,
        clock: IReactorTime,
        tracking: MessageTrackingLog | NullMessageTrackingLog | None = None,
        on_submitted: Callable[[int], None] | None = None,
        delayed_ack: DelayedAcknowledgement | None = None,
        credentials: ServerCredentials | None = None,
        categorizer: Categorizer | None = None,
        discards: DiscardHandOut | None = None,
    ) -> None:
        self.organization = organization
        self.server = server
        self.connector = connector
        self.store = store
        self.clock = clock
        self.tracking = tracking or NullMessageTrackingLog()
        self.on_submitted = on_submitted
        self.delayed_ack = delayed_ack
        self.credentials = credentials
        self.categorizer = categorizer
        self.discards = discards or DiscardHandOut(store.db)
        """The server's XQDISCARD hand-out (shared by its receive connectors)."""
        """Routes messages before their commit (categorized on receipt) when it can."""
        self.shadow_redundancy_enabled = (
            organization.transport.shadow_redundancy_enabled
            and server.supports_shadow_redundancy
        )

    def database_id(self) -> str:
        return self.store.db.database_id_base64

    def is_org_server(self, session: SessionInfo) -> bool:
        """An Exchange server of the organization: it proved an organization certificate
        over TLS, or (the lab trust rule, a shortcut) it connects from one of the
        connector's org-server networks."""
        if session.certificate_server is not None:
            return True
        try:
            address = ipaddress.ip_address(session.peer_ip)
        except ValueError:
            return False
        return any(address in network for network in self.connector.org_server_networks)

    def certificate_server(self, session: SessionInfo) -> str | None:
        """The Exchange server whose organization certificate the peer presented."""
        if self.credentials is None or session.peer_certificate is None:
            return None
        return self.credentials.identify(session.peer_certificate).server

    def check_sender(self, session: SessionInfo, sender: str, params: Any) -> None:
        return None

    def authenticate(self, session: SessionInfo, username: str, password: str) -> bool:
        """A mailbox of the organization with that password (hashed in the file)."""
        recipient = self.organization.recipient(username)
        if recipient is None or recipient.password_hash is None:
            return False
        return verify_password(recipient.password_hash, password)

    def check_recipient(self, session: SessionInfo, sender: str, rcpt: Recipient) -> Reply | None:
        if session.org_server or session.authenticated_as is not None:
            return None  # ExchangeServers and authenticated ExchangeUsers may relay
        if domain_of(rcpt.address) in self.server.local_domains:
            return None  # a legacy or Internet server's own domain
        if self.organization.accepted_domain(domain_of(rcpt.address)) is None:
            return replies.UNABLE_TO_RELAY
        return None

    def accept(self, message: ReceivedMessage) -> Deferred[Acceptance | Reply]:
        if message.hop_count >= self.connector.max_hop_count:
            d: Deferred[Acceptance | Reply] = Deferred()
            d.callback(replies.HOP_COUNT_EXCEEDED)
            return d
        session = message.session
        delayed = self._delays_acknowledgement(session)
        hops = (self.categorizer.route_on_receipt([r.address for r in message.recipients])
                if self.categorizer is not None else None)
        new = NewMessage(
            sender=message.sender,
            recipients=tuple(
                StoredRecipient(r.address, r.notify, r.orcpt,
                                queue=hops[r.address].name if hops is not None else None)
                for r in message.recipients
            ),
            body=message.body,  # type: ignore[arg-type]
            received_at=self.clock.seconds(),
            message_id=message.message_id,
            subject=message.subject,
            source="SMTP",
            client_ip=session.peer_ip,
            client_hostname=session.helo,
            receive_connector=self.connector.name,
            hop_count=message.hop_count,
            body_type=message.body_type,
            dsn_envid=message.envid,
            dsn_ret=message.ret,
            xexch50=message.xexch50,
            shadow_context=session.shadow_context if message.shadow_message_id else None,
            shadow_message_id=message.shadow_message_id,
            delayed_ack=delayed,
        )

        def committed(internal_id: int) -> Any:
            self._track_receive(message, internal_id, delayed)
            hold = None
            if delayed and self.delayed_ack is not None:
                # F.4: committed; the 250 waits for the next hops (or the delay).
                hold = self.delayed_ack.hold(internal_id,
                                             self.connector.max_acknowledgement_delay)
            if hops is not None and self.categorizer is not None:
                self.categorizer.queue_on_receipt(self._envelope(message, internal_id, new),
                                                  hops)
            elif self.on_submitted is not None:
                self.on_submitted(internal_id)
            if hold is None:
                return Acceptance(internal_id, message.message_id)

            def acknowledge(outcome: AckOutcome) -> Acceptance:
                self._track_acknowledged(message, internal_id, outcome)
                return Acceptance(internal_id, message.message_id,
                                  log_lines=(outcome.tarpit_line(),))

            return hold.addCallback(acknowledge)

        result: Deferred[Acceptance | Reply] = self.store.accept_message(new).addCallback(
            committed)
        return result

    @staticmethod
    def _envelope(message: ReceivedMessage, internal_id: int, new: NewMessage) -> Envelope:
        return Envelope(internal_id, message.message_id, message.sender, message.subject or "",
                        message.size, new.source, new.received_at, new.shadow_context,
                        new.shadow_message_id, None)

    def _delays_acknowledgement(self, session: SessionInfo) -> bool:
        """Scenario F: a peer that did not negotiate XSHADOW gets its 250 only once the
        message is safe elsewhere (MaxAcknowledgementDelay 0 turns this off)."""
        return (
            self.delayed_ack is not None
            and self.shadow_redundancy_enabled
            and session.shadow_context is None
            and session.authenticated_as is None
            and self.connector.max_acknowledgement_delay > 0
        )

    def _track_acknowledged(self, message: ReceivedMessage, internal_id: int,
                            outcome: AckOutcome) -> None:
        """F.7: the held 250 goes out (with F.8 when the message is already gone from
        here; otherwise F.8 is the row of its deletion, after the 250)."""
        steps = ("F.7", "F.8") if outcome.outcome == DELIVERED and outcome.deleted else (
            "F.7",)
        extra = {"delayed_ack": outcome.outcome, "tarpit": format_tarpit(outcome.held)}
        if outcome.reason:
            extra["reason"] = outcome.reason
        self.tracking.record(TrackingEvent(
            event_id="RECEIVE", source="SMTP", server_hostname=self.server.fqdn,
            client_ip=message.session.peer_ip, client_hostname=message.session.helo or "",
            internal_message_id=str(internal_id), message_id=message.message_id,
            recipient_address=tuple(r.address for r in message.recipients),
            sender_address=message.sender, message_subject=message.subject,
            custom_data=scenario_steps(*steps, **extra)))

    def _track_receive(self, message: ReceivedMessage, internal_id: int,
                       delayed: bool = False) -> None:
        session = message.session
        if not self.server.is_exchange_2010:
            custom: dict[str, str] = {}  # the scenarios' steps are Exchange 2010's
        elif message.shadow_message_id:
            # D.4.2: this server records the message as shadowed on the sender.
            custom = scenario_step("D.4.2", shadow_message_id=message.shadow_message_id)
        elif session.authenticated_as is not None:
            # A: a client's submission; nothing shadows this leg.
            custom = scenario_step("A", shadow="none", user=session.authenticated_as)
        elif delayed:
            # F.1–F.3: a peer without shadow redundancy connects and simply sends the
            # message; F.4: it is committed and marked for delayed acknowledgement.
            custom = scenario_steps("F.1", "F.2", "F.3", "F.4")
        else:
            # F.3: a peer without shadow redundancy simply sends the message.
            custom = scenario_step("F.3")
        self.tracking.record(
            TrackingEvent(
                event_id="RECEIVE",
                source="SMTP",
                client_ip=session.peer_ip,
                client_hostname=session.helo or "",
                server_ip=session.local_ip,
                server_hostname=self.server.fqdn,
                source_context=f"08C{session.session_id};{session.connector_name}",
                connector_id=self.connector.name,
                internal_message_id=str(internal_id),
                message_id=message.message_id,
                recipient_address=tuple(r.address for r in message.recipients),
                total_bytes=message.size,
                recipient_count=len(message.recipients),
                message_subject=message.subject,
                sender_address=message.sender,
                return_path=message.sender,
                directionality="Originating" if session.org_server else "Incoming",
                custom_data=custom,
            )
        )

    def take_discards(self, session: SessionInfo, maximum: int) -> Deferred[list[str]]:
        """D.6: hand the holder every discard notification prepared for it."""
        context = session.shadow_context
        assert context is not None
        try:
            holder = decode_shadow_context(context).server_name
        except EnvelopeSyntaxError:
            holder = session.helo or session.peer_ip

        def handed_out(rows: list[WaitingDiscard]) -> list[str]:
            for row in rows:
                self.tracking.record(TrackingEvent(
                    event_id="NOTIFYSHADOW", source="SMTP", server_hostname=self.server.fqdn,
                    client_hostname=session.helo or "", client_ip=session.peer_ip,
                    internal_message_id=(str(row.internal_message_id)
                                         if row.internal_message_id is not None else ""),
                    message_id=row.message_id, message_subject=row.subject,
                    sender_address=row.sender, return_path=row.sender,
                    custom_data=scenario_step("D.6", shadow_message_id=row.shadow_message_id,
                                              holder=holder),
                ))
            return [row.shadow_message_id for row in rows]

        return Deferred.fromCoroutine(self.discards.take(context, maximum)).addCallback(
            handed_out)
