"""An in-memory receive policy and a StringTransport harness for protocol tests."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from exchange_emu.smtp.interfaces import (
    Acceptance,
    IReceivePolicy,
    ReceivedMessage,
    Recipient,
    ServerSettings,
    SessionInfo,
)
from exchange_emu.smtp.replies import Reply
from exchange_emu.smtp.server import ExchangeESMTPFactory

DATABASE_GUID = uuid.UUID("d1b2c3d4-0000-4000-8000-00000000abcd")
NOW = 1795870800.0  # Sat, 28 Nov 2026 13:00:00 +0000


@dataclass
class Stored:
    message: ReceivedMessage
    body: bytes


@implementer(IReceivePolicy)
class FakePolicy:
    """Accepts everything; remembers what it committed; can hold the answer."""

    shadow_redundancy_enabled = True

    def __init__(self, org: bool = True) -> None:
        self.org = org
        self.stored: list[Stored] = []
        self.hold = False
        self.held: list[Deferred[Any]] = []
        self.discards: dict[str, list[str]] = {}
        self.discard_queries: list[str] = []
        """The session id of each XQDISCARD asked."""
        self.refuse_recipients: set[str] = set()
        self.defer_recipients: set[str] = set()
        self.database_guid = DATABASE_GUID
        self.certificate_servers: dict[bytes, str] = {}
        """Client certificates (DER) that prove an org server, and which."""

    def database_id(self) -> str:
        return base64.b64encode(self.database_guid.bytes).decode()

    def is_org_server(self, session: SessionInfo) -> bool:
        return self.org or session.certificate_server is not None

    def certificate_server(self, session: SessionInfo) -> str | None:
        return self.certificate_servers.get(session.peer_certificate or b"")

    def check_sender(self, session: SessionInfo, sender: str, params: Any) -> None:
        return None

    def authenticate(self, session: SessionInfo, username: str, password: str) -> bool:
        return (username, password) == ("alice@contoso.test", "secret")

    def check_recipient(self, session: SessionInfo, sender: str, rcpt: Recipient) -> Reply | None:
        if rcpt.address in self.refuse_recipients:
            return Reply(550, ("5.7.1 Unable to relay",))
        if rcpt.address in self.defer_recipients:
            return Reply(451, ("4.3.2 Try again later",))
        return None

    def accept(self, message: ReceivedMessage) -> Deferred[Any]:
        message.body.seek(0)
        self.stored.append(Stored(message, message.body.read()))
        acceptance = Acceptance(len(self.stored), message.message_id)
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.held.append(d)
            d.addCallback(lambda _: acceptance)
            return d
        return succeed(acceptance)

    def take_discards(self, session: SessionInfo, maximum: int) -> Deferred[list[str]]:
        assert session.shadow_context is not None
        self.discard_queries.append(session.session_id)
        queue = self.discards.get(session.shadow_context, [])
        taken, self.discards[session.shadow_context] = queue[:maximum], queue[maximum:]
        return succeed(taken)


@dataclass
class Harness:
    transport: StringTransport
    proto: Any
    policy: FakePolicy
    clock: Clock
    sent: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> bytes:
        """Send bytes to the server; return the bytes it wrote since the last call."""
        self.transport.clear()
        self.proto.dataReceived(data)
        run_due_calls(self.clock)
        return self.output()

    def output(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out


class TLSStringTransport(StringTransport):
    """A StringTransport whose ``startTLS`` "completes" at once (the session logic after a
    handshake, without one); ``peer_certificate`` is what the client "presented"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tls_started: list[object] = []
        self.peer_certificate: Any = None

    def startTLS(self, context: object, normal: bool = True) -> None:
        self.tls_started.append(context)

    def getPeerCertificate(self) -> Any:
        return self.peer_certificate


def run_due_calls(clock: Clock) -> None:
    """Run what the server scheduled for now (a pipelining session's next turn)."""
    while any(call.getTime() <= clock.seconds() for call in clock.getDelayedCalls()):
        clock.advance(0)


def connect(
    policy: FakePolicy | None = None, settings: ServerSettings | None = None
) -> Harness:
    clock = Clock()
    clock.advance(NOW)
    policy = policy or FakePolicy()
    settings = settings or ServerSettings(
        connector_name="Default EDGE01", fqdn="edge01.contoso.test", max_message_size=37748736
    )
    factory = ExchangeESMTPFactory(settings, policy, clock)
    proto = factory.buildProtocol(None)
    transport = TLSStringTransport(peerAddress=_addr("127.0.0.1", 50000),
                                   hostAddress=_addr("127.0.0.1", 2530))
    proto.makeConnection(transport)
    return Harness(transport, proto, policy, clock)


def _addr(host: str, port: int) -> Any:
    from twisted.internet.address import IPv4Address

    return IPv4Address("TCP", host, port)
