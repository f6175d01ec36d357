"""Message tracking rows of a transport server, each naming the scenario step
it implements (``custom-data`` ``S:step=D.4.3``), so a message can be followed
hop by hop through the six scenarios of the shadow redundancy document."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from exchange_emu.directory import Server
from exchange_emu.logs.tracking_event import CustomData, TrackingEvent, scenario_steps
from exchange_emu.logs.tracking_log import MessageTrackingLog, NullMessageTrackingLog
from exchange_emu.transport.jobs import Envelope


def _routed(envelope: Envelope) -> tuple[str, ...]:
    """B.3: a message from the store driver is routed here (first hop after a mailbox)."""
    return ("B.3",) if envelope.source == "STOREDRIVER" else ()


class TransportTracking:
    """Writes one server's message tracking log rows for the transport pipeline."""

    def __init__(self, server: Server, log: MessageTrackingLog | NullMessageTrackingLog) -> None:
        self.server = server
        self.log = log

    def _row(
        self,
        event_id: str,
        source: str,
        envelope: Envelope,
        steps: Sequence[str],
        *,
        recipients: Sequence[str] = (),
        statuses: Sequence[str] = (),
        server_hostname: str = "",
        connector: str = "",
        reference: str = "",
        when: float | None = None,
        **extra: str,
    ) -> None:
        custom = scenario_steps(*steps, **extra) if steps else dict(extra)
        # Every value below is already in the form TrackingEvent's checks leave it, except
        # a recipient address holding ";" (a quoted local part): that one gets the checks.
        checked = any(";" in r or not r for r in recipients)
        make = TrackingEvent if checked else TrackingEvent.trusted
        self.log.record(
            make(
                event_id=event_id,
                source=source,
                date_time=datetime.fromtimestamp(when, UTC) if when is not None else None,
                server_hostname=server_hostname or self.server.fqdn,
                connector_id=connector,
                internal_message_id=str(envelope.internal_id),
                message_id=envelope.message_id,
                recipient_address=tuple(recipients),
                recipient_status=tuple(statuses),
                total_bytes=envelope.size,
                recipient_count=len(recipients) or None,
                reference=reference,
                message_subject=envelope.subject,
                sender_address=envelope.sender,
                return_path=envelope.sender,
                custom_data=custom if checked else CustomData.trusted(custom),
            )
        )

    def send(self, envelope: Envelope, recipients: Sequence[str], replies: Sequence[str], *,
             next_hop: str, target_fqdn: str, shadowed: bool, deleted: bool,
             when: float | None = None, delayed_ack: bool = False) -> None:
        """SEND to the next hop: D.1–D.4.1 on a shadowed session, else E.1–E.4 (E.5
        too when the message is deleted at once). Unlike Exchange, server-hostname
        stays this server (so an organization-wide log shows who sent); the
        destination is in custom-data."""
        if shadowed:
            steps: tuple[str, ...] = ("D.1", "D.2", "D.3", "D.4.1")
        else:
            steps = ("E.1", "E.2", "E.3", "E.4") + (("E.5",) if deleted else ())
        steps = _routed(envelope) + (("F.5",) if delayed_ack else ()) + steps
        if not self.server.is_exchange_2010:
            steps = ()  # the scenarios' steps are Exchange 2010's
        self._row("SEND", "SMTP", envelope, steps, recipients=recipients, statuses=replies,
                  connector=next_hop, when=when, destination=target_fqdn)

    def delivered(self, envelope: Envelope, recipients: Sequence[str], database: str,
                  mailbox_server: str) -> None:
        """C.1 (and C.2: a copy goes to the transport dumpster): delivered to mailboxes."""
        self._row("DELIVER", "STOREDRIVER", envelope, (*_routed(envelope), "C.1", "C.2"),
                  recipients=recipients, statuses=["250 2.1.5 delivered"] * len(recipients),
                  connector=database, destination=mailbox_server)

    def delivered_locally(self, envelope: Envelope, recipients: Sequence[str]) -> None:
        """A legacy or Internet server delivered to its own mailboxes."""
        self._row("DELIVER", "SMTP", envelope, (), recipients=recipients,
                  statuses=["250 2.0.0 delivered"] * len(recipients))

    def duplicate_dropped(self, envelope: Envelope, recipients: Sequence[str],
                          database: str) -> None:
        """The mailbox already had it (DeliveredTo): dropped silently."""
        self._row("DUPLICATEDELIVER", "STOREDRIVER", envelope, ("C.1",),
                  recipients=recipients, connector=database)

    def received_from_store_driver(self, envelope: Envelope, recipients: Sequence[str],
                                   mailbox_server: str) -> None:
        """B.2: the hub took the message out of the Outbox into its Submission queue."""
        self._row("RECEIVE", "STOREDRIVER", envelope, ("B.2",), recipients=recipients,
                  mailbox_server=mailbox_server)

    def ownership_reported(self, envelope: Envelope, shadowed: bool) -> None:
        """B.4 (the item moves to Sent Items) and B.5 (deleted, or kept as a shadow)."""
        self._row("NOTIFYMAPI", "STOREDRIVER", envelope, ("B.4", "B.5"),
                  outcome="shadowed" if shadowed else "deleted")

    def redelivered(self, envelope: Envelope, database: str) -> None:
        """Transport dumpster redelivery after a lossy failover."""
        self._row("RESUBMIT", "DUMPSTER", envelope, (), database=database)

    def shadow_created(self, envelope: Envelope, primary: str, shadow_id: str,
                       when: float | None = None) -> None:
        """D.4.3: the next hop is the primary; the message goes to its shadow queue."""
        self._row("HAREDIRECT", "SMTP", envelope, ("D.4.3",), primary=primary,
                  shadow_message_id=shadow_id, when=when)

    def shadow_refused(self, envelope: Envelope, next_hop: str, why: str) -> None:
        self._row("HAREDIRECTFAIL", "SMTP", envelope, (), next_hop=next_hop, reason=why)

    def discard_prepared(self, envelope: Envelope, scenario: str) -> None:
        """D.4.4 / E.6 (and C.3): a discard notification waits for the previous hop."""
        assert envelope.shadow_message_id is not None
        self._row("NOTIFYSHADOW", "SMTP", envelope, (scenario,),
                  shadow_message_id=envelope.shadow_message_id)

    def discard_queried(self, envelope: Envelope, primary: str, queried_at: float,
                        delayed_ack: bool = False) -> None:
        """D.5 (F.6 for a held message): the query whose reply carried this message's
        discard notification."""
        steps = ("D.5", "F.6") if delayed_ack else ("D.5",)
        self.log.record(TrackingEvent.trusted(
            event_id="HADISCARD", source="SMTP", server_hostname=self.server.fqdn,
            date_time=datetime.fromtimestamp(queried_at, UTC),
            internal_message_id=str(envelope.internal_id), message_id=envelope.message_id,
            sender_address=envelope.sender, message_subject=envelope.subject,
            custom_data=CustomData.trusted(scenario_steps(*steps, primary=primary))))

    def shadow_discarded(self, envelope: Envelope, primary: str, reason: str = "discard",
                         delivered_to_mailboxes: bool = False,
                         acknowledged_before: bool = False) -> None:
        """D.7: the holder deletes its shadow copy (C.4 too, when the primary delivered
        it to mailboxes; F.8 when this deletes a message whose held 250 went out)."""
        steps: tuple[str, ...] = ()
        if reason == "discard":
            steps = ("D.7", "C.4") if delivered_to_mailboxes else ("D.7",)
            if acknowledged_before:
                steps += ("F.8",)
        self._row("HADISCARD", "SMTP", envelope, steps, primary=primary, reason=reason)

    def resubmitted(self, envelope: Envelope, primary: str, reason: str) -> None:
        """The holder takes ownership of a shadow copy and resubmits it."""
        self._row("RESUBMIT", "SMTP", envelope, (), primary=primary, reason=reason)

    def resubmitted_by_admin(self, envelope: Envelope, cmdlet: str) -> None:
        """An administrator sent the message back to the categorizer (Retry-Queue
        -Resubmit, Resume-Message)."""
        self._row("RESUBMIT", "ADMIN", envelope, (), reason=cmdlet)

    def deferred(self, envelope: Envelope, recipients: Sequence[str], reply: str,
                 next_hop: str) -> None:
        self._row("DEFER", "SMTP", envelope, (), recipients=recipients,
                  statuses=[reply] * len(recipients), connector=next_hop)

    def failed(self, envelope: Envelope, recipient: str, reply: str) -> None:
        self._row("FAIL", "SMTP", envelope, (), recipients=[recipient], statuses=[reply])

    def dsn(self, envelope: Envelope, kind: str, dsn_message_id: str) -> None:
        self._row("DSN", "DSN", envelope, (), reference=dsn_message_id, kind=kind)

    def poison(self, envelope: Envelope) -> None:
        self._row("POISONMESSAGE", "QUEUE", envelope, ())

    def transferred(self, envelope: Envelope, queues: Sequence[str]) -> None:
        """Bifurcation: the recipients of one message go to several next hops."""
        self._row("TRANSFER", "ROUTING", envelope, (), queues=";".join(queues))
