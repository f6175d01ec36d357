"""TLS between our SMTP client and server over real loopback sockets, with the lab CA:
verified handshakes, refused ones (wrong name, unknown CA, expired, downgrade), the
STARTTLS injection class, and who counts as an Exchange server of the organization."""

from __future__ import annotations

import shutil
import socket
import ssl as stdlib_ssl
import tempfile
from pathlib import Path
from typing import Any

from test_transport_engine import EngineHarness
from tls_fixtures import CertLab, reissue, tls_org, unchecked_credentials
from twisted.internet import protocol, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import TestCase

from exchange_emu.security.authority import ensure_certificates
from exchange_emu.security.credentials import ServerCredentials
from exchange_emu.security.tls import ClientContexts, send_tls, server_options
from exchange_emu.smtp.client import OutboundMessage, SessionOutcome, SessionRequest, send_session
from exchange_emu.smtp.envelope import encode_shadow_context
from exchange_emu.smtp.interfaces import ServerSettings, SessionInfo
from exchange_emu.smtp.server import ExchangeESMTPFactory

from smtp_fakes import FakePolicy

HUB01_CONTEXT = encode_shadow_context("0f3b0c50-985c-4e23-a9b7-4a7b46d456e0", "HUB01",
                                      "hub01.contoso.test")
HUB03_CONTEXT = encode_shadow_context("1f3b0c50-985c-4e23-a9b7-4a7b46d456e0", "HUB03",
                                      "hub03.contoso.test")
SHADOW_ID = "5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d21"


class CertificatePolicy(FakePolicy):
    """The fake receive policy, but org servers are only those proved by certificate."""

    def __init__(self, credentials: ServerCredentials) -> None:
        super().__init__(org=False)
        self.credentials = credentials

    def certificate_server(self, session: SessionInfo) -> str | None:
        assert session.peer_certificate is not None
        return self.credentials.identify(session.peer_certificate).server


def message(to: str = "erin@fabrikam.test") -> OutboundMessage:
    return OutboundMessage("alice@contoso.test", (to,), b"Subject: tls\r\n\r\nhello\r\n",
                           shadow_message_id=SHADOW_ID)


class _Strip(protocol.Protocol):
    """A man in the middle that removes STARTTLS from the server's EHLO reply."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.peer: Any = None
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        proxy = self

        class Upstream(protocol.Protocol):
            def connectionMade(self) -> None:
                proxy.peer = self.transport
                for data in proxy.pending:
                    self.transport.write(data)

            def dataReceived(self, data: bytes) -> None:
                proxy.transport.write(data.replace(b"250-STARTTLS\r\n", b""))

            def connectionLost(self, reason: Any = None) -> None:
                proxy.transport.loseConnection()

        factory = protocol.ClientFactory()
        factory.protocol = Upstream
        reactor.connectTCP("127.0.0.1", self.upstream_port, factory)

    def dataReceived(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.peer is not None:
            self.peer.loseConnection()


class TlsLoopbackTests(TestCase):
    def setUp(self) -> None:
        self.lab: CertLab = tls_org(self.fresh_dir())

    def fresh_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="exchange-emu-tls-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    async def listen(self, policy: FakePolicy, credentials: ServerCredentials | None,
                     name: str = "Default HUB02", fqdn: str = "hub02.contoso.test",
                     **settings: Any) -> int:
        tls = server_options(credentials) if credentials is not None else None
        factory = ExchangeESMTPFactory(ServerSettings(name, fqdn, tls=tls, **settings),
                                       policy, reactor)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def send(self, port: int, hostname: str, *, sender: str = "HUB01",
                   to_server: str | None = "HUB02", require: bool = False,
                   context: str | None = HUB01_CONTEXT) -> SessionOutcome:
        org = self.lab.organization
        tls, required = send_tls(ClientContexts(self.lab.credentials(sender)),
                                 org.server(to_server) if to_server else None, hostname,
                                 require)
        request = SessionRequest(f"{sender.lower()}.contoso.test", [message()],
                                 shadow_context=context, tls=tls, require_tls=required)
        return await send_session(TCP4ClientEndpoint(reactor, "127.0.0.1", port), request,
                                  reactor)

    async def test_verified_handshake_proves_the_sender_an_org_server(self):
        """HUB01 → HUB02 with the lab CA: TLS both ways, HUB01's certificate makes it an
        org server (XSHADOW offered) with no trust rule at all."""
        policy = CertificatePolicy(self.lab.credentials("HUB02"))
        port = await self.listen(policy, self.lab.credentials("HUB02"))
        outcome = await self.send(port, "hub02.contoso.test")
        self.assertIsNone(outcome.error)
        self.assertTrue(outcome.tls)
        self.assertTrue(outcome.shadowed)
        self.assertIn("XSHADOW", outcome.keywords)
        self.assertTrue(outcome.messages[0].accepted)
        session = policy.stored[0].message.session
        self.assertTrue(session.tls)
        self.assertEqual(session.certificate_server, "HUB01")

    async def _refused(self, port: int, hostname: str, policy: FakePolicy,
                       expected: str, require: bool = True) -> SessionOutcome:
        outcome = await self.send(port, hostname, require=require)
        self.assertTrue(outcome.tls_failed, outcome)
        self.assertIn(expected, outcome.error or "")
        self.assertEqual(outcome.messages, [])
        self.assertEqual(policy.stored, [])
        return outcome

    async def test_name_mismatch_is_refused(self):
        """HUB02 presents a certificate for another name: not sent."""
        reissue(self.lab, "HUB02", fqdn="hub99.contoso.test")
        policy = FakePolicy(org=False)
        port = await self.listen(policy, unchecked_credentials(self.lab, "HUB02"))
        await self._refused(port, "hub02.contoso.test", policy,
                            "TLS negotiation failed: certificate is for hub99.contoso.test, "
                            "not hub02.contoso.test")

    async def test_unknown_ca_is_refused(self):
        other = tls_org(self.fresh_dir())
        reissue(self.lab, "HUB02", authority_of=other)
        policy = FakePolicy(org=False)
        port = await self.listen(policy, unchecked_credentials(self.lab, "HUB02"))
        await self._refused(port, "hub02.contoso.test", policy,
                            "not issued by the organization CA (unknown issuer)")

    async def test_expired_certificate_is_refused(self):
        reissue(self.lab, "HUB02", expired=True)
        policy = FakePolicy(org=False)
        port = await self.listen(policy, unchecked_credentials(self.lab, "HUB02"))
        await self._refused(port, "hub02.contoso.test", policy,
                            "TLS negotiation failed: certificate expired (CN=hub02.contoso.test)")

    async def test_org_server_with_a_bad_certificate_is_refused_without_require_tls(self):
        """An Exchange server of the organization is always verified when it offers TLS."""
        reissue(self.lab, "HUB02", expired=True)
        policy = FakePolicy(org=False)
        port = await self.listen(policy, unchecked_credentials(self.lab, "HUB02"))
        await self._refused(port, "hub02.contoso.test", policy, "certificate expired",
                            require=False)

    async def test_downgrade_under_required_tls_is_refused(self):
        """A proxy strips STARTTLS from the EHLO reply: under RequireTLS nothing is sent."""
        policy = FakePolicy(org=False)
        upstream = await self.listen(policy, self.lab.credentials("HUB02"))
        factory = protocol.Factory.forProtocol(lambda: _Strip(upstream))
        proxy = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(proxy.stopListening)
        outcome = await self._refused(proxy.getHost().port, "mail.fabrikam.test", policy,
                                      "does not offer STARTTLS")
        self.assertNotIn("STARTTLS", outcome.keywords)

    async def test_downgrade_without_required_tls_still_sends(self):
        """Opportunistic TLS to a peer that offers none (here: stripped) sends in clear."""
        policy = FakePolicy(org=False)
        port = await self.listen(policy, None, name="Default INTERNET01",
                                 fqdn="mail.fabrikam.test", flavor="non-exchange")
        outcome = await self.send(port, "mail.fabrikam.test", to_server="INTERNET01")
        self.assertIsNone(outcome.error)
        self.assertFalse(outcome.tls)
        self.assertTrue(outcome.messages[0].accepted)
        self.assertEqual(len(policy.stored), 1)

    async def test_opportunistic_tls_to_the_internet_encrypts_without_verifying(self):
        """INTERNET01 offers STARTTLS with a certificate for another name: opportunistic
        TLS still encrypts and sends; the same under RequireTLS is refused."""
        reissue(self.lab, "INTERNET01", fqdn="elsewhere.fabrikam.test")
        policy = FakePolicy(org=False)
        port = await self.listen(policy, unchecked_credentials(self.lab, "INTERNET01"),
                                 name="Default INTERNET01", fqdn="mail.fabrikam.test",
                                 flavor="non-exchange")
        outcome = await self.send(port, "mail.fabrikam.test", to_server="INTERNET01")
        self.assertIsNone(outcome.error)
        self.assertTrue(outcome.tls)
        self.assertTrue(policy.stored[0].message.session.tls)
        refused = await self.send(port, "mail.fabrikam.test", to_server="INTERNET01",
                                  require=True)
        self.assertTrue(refused.tls_failed)
        self.assertEqual(len(policy.stored), 1)

    async def test_bytes_pipelined_after_starttls_are_never_executed(self):
        """CVE-2011-0411 class: RSET and MAIL sent with STARTTLS in one write get no
        plain-text reply and are not executed inside TLS either."""
        policy = FakePolicy(org=False)
        port = await self.listen(policy, self.lab.credentials("HUB02"))
        ca = self.lab.organization.tls.ca_certificate  # type: ignore[union-attr]
        replies = await threads.deferToThread(_inject_after_starttls, port, ca)
        plain, tls_ehlo, tls_rcpt = replies
        self.assertEqual(plain, b"220 2.0.0 SMTP server ready\r\n")
        self.assertTrue(tls_ehlo.startswith(b"250-hub02.contoso.test Hello"))
        self.assertNotIn(b"STARTTLS", tls_ehlo)
        self.assertEqual(tls_rcpt, b"503 5.5.2 Need mail command\r\n")
        self.assertEqual(policy.stored, [])

    async def test_peer_without_certificate_gets_no_shadow_verbs(self):
        """No client certificate, no trusted network: no XSHADOW/XEXCH50 in EHLO (plain or
        TLS), 550 5.7.1 Not authorized for XSHADOW, XQDISCARD and XEXCH50."""
        policy = CertificatePolicy(self.lab.credentials("HUB02"))
        port = await self.listen(policy, self.lab.credentials("HUB02"))
        ca = self.lab.organization.tls.ca_certificate  # type: ignore[union-attr]
        transcript = await threads.deferToThread(_anonymous_dialogue, port, ca)
        plain_ehlo, tls_ehlo, xshadow, xqdiscard, xexch50 = transcript
        for ehlo in (plain_ehlo, tls_ehlo):
            self.assertNotIn(b"XSHADOW", ehlo)
            self.assertNotIn(b"XEXCH50", ehlo)
        self.assertIn(b"X-ANONYMOUSTLS", plain_ehlo)
        self.assertEqual(xshadow, b"550 5.7.1 Not authorized\r\n")
        self.assertEqual(xqdiscard, b"550 5.7.1 Not authorized\r\n")
        self.assertEqual(xexch50, b"550 5.7.1 Not authorized\r\n")

    async def test_certificate_identity_limits_discards_to_its_own_context(self):
        """HUB03 proves itself with its certificate: it may shadow as HUB03 and collect
        HUB03's discards, but asking with HUB01's context is 550 5.7.1 and HUB01's
        discard notifications stay where they are."""
        policy = CertificatePolicy(self.lab.credentials("HUB02"))
        policy.discards[HUB01_CONTEXT] = [SHADOW_ID]
        policy.discards[HUB03_CONTEXT] = ["0b6a6a22-6a0c-4c5c-9a3e-0d1b2e3f4a5b"]
        port = await self.listen(policy, self.lab.credentials("HUB02"))
        hub03 = self.lab.organization.server("HUB03")
        ca = self.lab.organization.tls.ca_certificate  # type: ignore[union-attr]
        spoof, own, discards = await threads.deferToThread(
            _shadow_as, port, ca, hub03.certificate, hub03.certificate_key)
        self.assertEqual(spoof, b"550 5.7.1 Not authorized\r\n")
        self.assertTrue(own.startswith(b"250 "))
        self.assertEqual(discards, b"250 0b6a6a22-6a0c-4c5c-9a3e-0d1b2e3f4a5b\r\n")
        self.assertEqual(policy.discards[HUB01_CONTEXT], [SHADOW_ID])


class _Lines:
    """A blocking SMTP line reader over a socket (plain or TLS), with a timeout."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buffer = b""

    def reply(self) -> bytes:
        out = b""
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError(f"closed after {out + self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            out += line + b"\r\n"
            if line[3:4] != b"-":
                return out

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()


def _tls_context(ca: Path, cert: Path | None = None, key: Path | None = None
                 ) -> stdlib_ssl.SSLContext:
    context = stdlib_ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _connect(port: int) -> tuple[socket.socket, _Lines]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = _Lines(sock)
    lines.reply()
    return sock, lines


def _inject_after_starttls(port: int, ca: Path) -> tuple[bytes, bytes, bytes]:
    sock, lines = _connect(port)
    with sock:
        lines.command(b"EHLO attacker.test")
        sock.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<mallory@attacker.test>\r\n")
        plain = lines.reply()
        # Had the server answered RSET or MAIL in clear text, those bytes would sit before
        # its TLS records and the handshake below would fail.
        assert lines.buffer == b"", lines.buffer
        wrapped = _tls_context(ca).wrap_socket(sock, server_hostname="hub02.contoso.test")
        secure = _Lines(wrapped)
        ehlo = secure.command(b"EHLO attacker.test")
        rcpt = secure.command(b"RCPT TO:<erin@fabrikam.test>")
        return plain, ehlo, rcpt


def _anonymous_dialogue(port: int, ca: Path) -> tuple[bytes, ...]:
    sock, lines = _connect(port)
    with sock:
        plain_ehlo = lines.command(b"EHLO stranger.test")
        lines.command(b"STARTTLS")
        wrapped = _tls_context(ca).wrap_socket(sock, server_hostname="hub02.contoso.test")
        secure = _Lines(wrapped)
        tls_ehlo = secure.command(b"EHLO stranger.test")
        xshadow = secure.command(b"XSHADOW " + HUB01_CONTEXT.encode())
        xqdiscard = secure.command(b"XQDISCARD 50")
        secure.command(b"MAIL FROM:<a@stranger.test>")
        secure.command(b"RCPT TO:<erin@fabrikam.test>")
        xexch50 = secure.command(b"XEXCH50 10 2")
        return plain_ehlo, tls_ehlo, xshadow, xqdiscard, xexch50


def _shadow_as(port: int, ca: Path, cert: Path | None, key: Path | None
               ) -> tuple[bytes, bytes, bytes]:
    sock, lines = _connect(port)
    with sock:
        lines.command(b"EHLO hub03.contoso.test")
        lines.command(b"STARTTLS")
        wrapped = _tls_context(ca, cert, key).wrap_socket(
            sock, server_hostname="hub02.contoso.test")
        secure = _Lines(wrapped)
        ehlo = secure.command(b"EHLO hub03.contoso.test")
        assert b"XSHADOW" in ehlo, ehlo
        spoof = secure.command(b"XSHADOW " + HUB01_CONTEXT.encode())
        own = secure.command(b"XSHADOW " + HUB03_CONTEXT.encode())
        discards = secure.command(b"XQDISCARD 50")
        return spoof, own, discards


class EngineTlsTests(EngineHarness):
    """HUB01's engine towards org servers whose certificates it cannot accept."""

    async def start_tls_fake(self, lab: CertLab, name: str) -> FakePolicy:
        policy = FakePolicy()
        settings = ServerSettings(f"Default {name}", self.organization.server(name).fqdn,
                                  tls=server_options(unchecked_credentials(lab, name)))
        factory = ExchangeESMTPFactory(settings, policy, reactor)
        self.listeners[name] = await TCP4ServerEndpoint(
            reactor, self.ports[name], interface="127.0.0.1").listen(factory)
        return policy

    async def test_refused_certificate_leaves_the_queue_in_retry_and_loses_nothing(self):
        await self.start(fakes=())
        ensure_certificates(self.organization)
        lab = CertLab(self.organization, self.organization.source)
        self.engine.client_tls = ClientContexts(lab.credentials("HUB01"))
        for name in ("HUB02", "HUB03"):
            reissue(lab, name, expired=True)
        bad = [await self.start_tls_fake(lab, name) for name in ("HUB02", "HUB03")]
        internal_id = await self.submit()
        queue = self.engine.queues["Internet via EDGE01"]
        self.assertEqual(queue.status, "Retry")
        self.assertIn("451 4.4.0 TLS negotiation failed: certificate expired",
                      queue.last_error or "")
        self.assertEqual([p.stored for p in bad], [[], []])
        message = await self.store.get_message(internal_id)
        self.assertEqual(message.recipients[0].status, "retry")
        # A renewed certificate: the next retry delivers.
        await self.stop_fake("HUB02")
        reissue(lab, "HUB02")
        good = await self.start_tls_fake(lab, "HUB02")
        await self.advance(60, step=1)
        self.assertEqual(len(good.stored), 1)
        self.assertTrue(good.stored[0].message.session.tls)
