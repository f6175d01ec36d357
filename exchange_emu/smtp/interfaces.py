"""What the SMTP server asks of the transport server behind it.

The protocol parses and replies; every decision (is this peer an Exchange
server of the organization? may this recipient be relayed to? is the message
committed?) comes from an ``IReceivePolicy`` — so one protocol class serves
the hub, edge and legacy roles with different policy (architecture.md,
"Policy out of protocols").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Protocol, Union

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from exchange_emu.smtp.replies import Reply


@dataclass(frozen=True)
class ServerSettings:
    """A receive connector as the SMTP protocol sees it (Exchange's
    ``Get-ReceiveConnector`` fields that shape the session)."""

    connector_name: str
    fqdn: str
    max_message_size: int = 10 * 1024 * 1024
    max_recipients_per_message: int = 200
    max_protocol_errors: int = 5
    max_command_line_length: int = 2048
    max_data_line_length: int = 32768
    max_header_size: int = 64 * 1024
    max_inbound_connection: int = 5000
    max_inbound_connection_per_source: int = 20
    max_messages_per_connection: int = 20
    connection_timeout: float = 600.0
    connection_inactivity_timeout: float = 300.0
    tarpit_interval: float = 0.0
    """TarpitInterval: how long a 5xx to an anonymous peer is held (Exchange: 5 s; 0 off)."""
    client_connector: bool = False
    """A ``Client <SERVER>`` connector: no XSHADOW, XEXCH50 or X-ANONYMOUSTLS."""
    tls: object | None = None
    """A server TLS context factory; STARTTLS/X-ANONYMOUSTLS only when set."""
    auth_mechanisms: tuple[str, ...] = ()
    """SASL mechanisms offered (``AUTH LOGIN PLAIN``); PLAIN and LOGIN are implemented."""
    require_authentication: bool = False
    """``MAIL`` needs a successful ``AUTH`` first (a Client connector)."""
    auth_requires_tls: bool = False
    """BasicAuthRequireTLS: ``AUTH`` is offered and accepted only inside TLS."""
    require_tls: bool = False
    """RequireTLS: ``MAIL`` only inside TLS (``530 5.7.0`` before)."""
    software_version: str = "14.3.123.4"
    flavor: str = "2010"
    """Whose dialect: "2010", "2007", "2003" (Exchange) or "non-exchange" (plain RFC 5321)."""


@dataclass(frozen=True)
class SessionInfo:
    """Who is on the other end of one SMTP receive session."""

    session_id: str
    connector_name: str
    local_ip: str
    local_port: int
    peer_ip: str
    peer_port: int
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    org_server: bool = False
    shadow_context: str | None = None
    """The ``XSHADOW`` context the peer gave (base64 text), if it asked to shadow."""
    authenticated_as: str | None = None
    """The mailbox the client authenticated as (``AUTH``), if any."""
    peer_certificate: bytes | None = None
    """The client certificate (DER) the peer presented in the TLS handshake, if any."""
    certificate_server: str | None = None
    """The Exchange server of the organization that certificate proved the peer to be."""


@dataclass(frozen=True)
class Recipient:
    address: str
    notify: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True)
class ReceivedMessage:
    """A whole message as received, handed to the policy to commit."""

    session: SessionInfo
    sender: str
    recipients: tuple[Recipient, ...]
    body: IO[bytes]
    size: int
    message_id: str
    subject: str
    hop_count: int
    body_type: str = "7BIT"
    envid: str | None = None
    ret: str | None = None
    shadow_message_id: str | None = None
    xexch50: bytes | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Acceptance:
    """The policy's word that a message is committed (durably queued)."""

    internal_id: int
    message_id: str
    log_lines: tuple[str, ...] = ()
    """Information lines for the SmtpReceive protocol log (e.g. the delayed-ack tarpit)."""


MaybeDeferredReply = Union[Reply, None, "Deferred[Reply | None]"]


class IReceivePolicy(Interface):
    """The transport server's decisions for one receive connector."""

    shadow_redundancy_enabled = Attribute("bool: ShadowRedundancyEnabled")

    def database_id() -> str:
        """Base64 of the queue database GUID (the ``XSHADOW`` reply)."""

    def is_org_server(session: SessionInfo) -> bool:
        """Has the peer proved it is an Exchange server of the organization (a certificate:
        ``session.certificate_server``; or the lab trust rule)?"""

    def certificate_server(session: SessionInfo) -> str | None:
        """The org server whose certificate ``session.peer_certificate`` is, or None."""

    def check_sender(session: SessionInfo, sender: str, params: dict[str, str | None]) -> object:
        """``None`` to accept ``MAIL``, or a refusal ``Reply`` (may be a Deferred)."""

    def check_recipient(session: SessionInfo, sender: str, recipient: Recipient) -> object:
        """``None`` to accept ``RCPT``, or a refusal ``Reply`` (may be a Deferred)."""

    def accept(message: ReceivedMessage) -> Deferred[Acceptance | Reply]:
        """Commit the message; fire with an ``Acceptance`` only once it is
        durable (or a refusal ``Reply``). May hold the answer (delayed ack)."""

    def authenticate(session: SessionInfo, username: str, password: str) -> object:
        """True (or a Deferred firing True) when the credentials are a mailbox's."""

    def take_discards(session: SessionInfo, maximum: int) -> Deferred[list[str]]:
        """Hand over (and forget) at most ``maximum`` discard notifications
        queued for ``session.shadow_context``."""


class SessionLog(Protocol):
    """One session's SMTP protocol log (SmtpReceive/SmtpSend), as seen by the wire code."""

    def connected(self) -> None: ...
    def sent(self, data: str) -> None: ...
    def received(self, data: str) -> None: ...
    def info(self, data: str, context: str = "") -> None: ...
    def disconnected(self) -> None: ...


class SessionLogFactory(Protocol):
    def open_session(self, connector_id: str, local: str, remote: str) -> SessionLog: ...


class NullSessionLog:
    """A protocol log that writes nothing."""

    def connected(self) -> None:
        pass

    def sent(self, data: str) -> None:
        pass

    def received(self, data: str) -> None:
        pass

    def info(self, data: str, context: str = "") -> None:
        pass

    def disconnected(self) -> None:
        pass


class NullSessionLogFactory:
    def open_session(self, connector_id: str, local: str, remote: str) -> SessionLog:
        return NullSessionLog()
