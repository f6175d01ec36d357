"""The Exchange ESMTP client: scripted replies on a StringTransport, and real
sessions over loopback TCP against our server and from Python's smtplib."""

from __future__ import annotations

import datetime
import smtplib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from exchange_emu.smtp.client import (
    ESMTPClientProtocol,
    OutboundMessage,
    SessionRequest,
    dot_stuff,
    run_session,
    send_session,
)
from exchange_emu.smtp.envelope import encode_shadow_context
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.smtp.server import ExchangeESMTPFactory

from smtp_fakes import FakePolicy

CONTEXT = encode_shadow_context("0f3b0c50-985c-4e23-a9b7-4a7b46d456e0", "HUB01", "")
ID1 = "5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d21"
ID2 = "0b6a6a22-6a0c-4c5c-9a3e-0d1b2e3f4a5b"


def message(body: bytes = b"Subject: t\r\n\r\nhello\r\n", shadow_id: str | None = ID1,
            recipients: tuple[str, ...] = ("b@contoso.test",)) -> OutboundMessage:
    return OutboundMessage("a@contoso.test", recipients, body, shadow_message_id=shadow_id)


class Scripted:
    """A client session on a StringTransport, fed server replies by hand."""

    def __init__(self, request: SessionRequest) -> None:
        self.clock = Clock()
        self.proto = ESMTPClientProtocol()
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.result = run_session(self.proto, request, self.clock)
        self.outcomes: list = []
        self.result.addCallback(self.outcomes.append)

    def server(self, text: str) -> bytes:
        """Feed one batch of server reply lines; return what the client wrote."""
        self.transport.clear()
        self.proto.dataReceived(text.replace("\n", "\r\n").encode())
        return self.transport.value()


def test_dot_stuffing():
    assert dot_stuff(b".a\r\n.\r\nb") == b"..a\r\n..\r\nb\r\n.\r\n"


def test_pipelined_shadowed_session_and_repeat_while_full_xqdiscard():
    """MAIL/RCPT/DATA go in one write; XQDISCARD is asked again while full."""
    s = Scripted(SessionRequest("hub01.contoso.test", [message()], shadow_context=CONTEXT,
                                discard_max=2, use_bdat=False))
    assert s.server("220 edge01 ready\n") == b"EHLO hub01.contoso.test\r\n"
    out = s.server("250-edge01 Hello\n250-SIZE 100000\n250-PIPELINING\n250 XSHADOW\n")
    assert out == f"XSHADOW {CONTEXT}\r\n".encode()
    out = s.server("250 q3Jx0V5YqUqW3w3vOaG5Xw==\n")
    assert out == (f"MAIL FROM:<a@contoso.test> SIZE=21 XSHADOW={ID1}\r\n"
                   "RCPT TO:<b@contoso.test>\r\nDATA\r\n").encode()
    assert s.server("250 2.1.0 Sender OK\n250 2.1.5 Recipient OK\n354 go\n") == (
        b"Subject: t\r\n\r\nhello\r\n.\r\n")
    assert s.server("250 2.6.0 <x> Queued mail for delivery\n") == b"XQDISCARD 2\r\n"
    assert s.server(f"250-{ID1}\n250 {ID2}\n") == b"XQDISCARD 2\r\n"
    assert s.server("251 OK, no discard events\n") == b"QUIT\r\n"
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    outcome = s.outcomes[0]
    assert outcome.primary_database_id == "q3Jx0V5YqUqW3w3vOaG5Xw=="
    assert outcome.discards == [ID1, ID2] and outcome.discard_query == "ok"
    assert outcome.messages[0].accepted and outcome.messages[0].shadowed
    assert outcome.error is None


def test_discards_are_handed_over_as_each_xqdiscard_reply_arrives():
    """F.6: the caller hears of each discard batch at once, not when the session ends."""
    heard: list[tuple[list[str], float]] = []
    s = Scripted(SessionRequest("hub01.contoso.test", shadow_context=CONTEXT, discard_max=1,
                                on_discards=lambda ids, at: heard.append((list(ids), at))))
    s.clock.advance(7)
    s.server("220 edge01 ready\n")
    s.server("250-edge01 Hello\n250-PIPELINING\n250 XSHADOW\n")
    assert s.server("250 q3Jx0V5YqUqW3w3vOaG5Xw==\n") == b"XQDISCARD 1\r\n"
    assert s.server(f"250 {ID1}\n") == b"XQDISCARD 1\r\n"
    assert heard == [([ID1], 7.0)]
    s.server(f"250 {ID2}\n")
    assert heard == [([ID1], 7.0), ([ID2], 7.0)] and s.outcomes == []  # session still open
    assert s.server("251 OK, no discard events\n") == b"QUIT\r\n"
    assert len(heard) == 2  # an empty reply hands over nothing


def _shadowed_pipeline(bodies: list[bytes], ids: list[str]) -> tuple[Scripted, bytes]:
    """A shadowed session with PIPELINING and CHUNKING up to its first pipeline."""
    s = Scripted(SessionRequest("hub01.contoso.test",
                                [message(b, i) for b, i in zip(bodies, ids, strict=True)],
                                shadow_context=CONTEXT, query_discards=False))
    s.server("220 edge01 ready\n")
    s.server("250-edge01 Hello\n250-PIPELINING\n250-CHUNKING\n250 XSHADOW\n")
    return s, s.server("250 q3Jx0V5YqUqW3w3vOaG5Xw==\n")


def _mail(body: bytes, shadow_id: str) -> bytes:
    return (f"MAIL FROM:<a@contoso.test> XSHADOW={shadow_id}\r\nRCPT TO:<b@contoso.test>\r\n"
            f"BDAT {len(body)} LAST\r\n").encode() + body


OK_MESSAGE = "250 2.1.0 Sender OK\n250 2.1.5 Recipient OK\n250 2.6.0 <x> Queued mail\n"


def test_messages_of_a_shadowed_session_go_in_one_pipeline_with_bdat():
    """PIPELINING and CHUNKING on a shadowed session: every message's MAIL, RCPT, BDAT
    and body in one write, before any of their replies."""
    bodies = [f"Subject: {n}\r\n\r\nhello\r\n".encode() for n in range(3)]
    s, out = _shadowed_pipeline(bodies, [ID1, ID2, ID1])
    assert out == b"".join(_mail(b, i) for b, i in zip(bodies, [ID1, ID2, ID1], strict=True))
    assert s.server(OK_MESSAGE * 3) == b"QUIT\r\n"
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    assert [m.accepted for m in s.outcomes[0].messages] == [True, True, True]


def test_pipelined_message_refused_after_a_refused_one_is_sent_again_after_rset():
    """The second message is refused; the third's replies may be the fallout of that
    (here: MAIL 503 and nothing taken): after RSET the third goes again, alone."""
    bodies = [f"Subject: {n}\r\n\r\nhello\r\n".encode() for n in range(3)]
    s, _ = _shadowed_pipeline(bodies, [ID1, ID2, ID1])
    refused = "250 2.1.0 Sender OK\n550 5.1.1 Unknown\n554 5.5.1 no valid recipients\n"
    fallout = ("503 5.5.2 Sender already specified\n503 5.5.2 Need mail command\n"
               "503 5.5.2 Need mail command\n")
    assert s.server(OK_MESSAGE + refused + fallout) == b"RSET\r\n"
    assert s.server("250 2.0.0 Resetting\n") == _mail(bodies[2], ID1)
    assert s.server(OK_MESSAGE) == b"QUIT\r\n"
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    assert [m.accepted for m in s.outcomes[0].messages] == [True, False, True]


def test_unshadowed_session_sends_one_message_at_a_time():
    """A peer that is not a shadowing org server gets each message's pipeline after the
    previous one's replies."""
    bodies = [f"Subject: {n}\r\n\r\nhello\r\n".encode() for n in range(2)]
    s = Scripted(SessionRequest("hub01.contoso.test", [message(b, None) for b in bodies]))
    s.server("220 edge01 ready\n")
    out = s.server("250-edge01 Hello\n250-PIPELINING\n250 CHUNKING\n")
    assert out == (b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\n"
                   + f"BDAT {len(bodies[0])} LAST\r\n".encode() + bodies[0])


def test_next_message_goes_in_the_same_write_as_a_data_body():
    """A peer with PIPELINING but no CHUNKING: the next message's MAIL, RCPT and DATA
    follow the previous body's end in one write; nothing is sent before its 354."""
    bodies = [f"Subject: {n}\r\n\r\nhello\r\n".encode() for n in range(2)]
    s = Scripted(SessionRequest("hub01.contoso.test", [message(b, None) for b in bodies]))
    s.server("220 sink ready\n")
    commands = b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n"
    assert s.server("250-sink Hello\n250 PIPELINING\n") == commands
    go = "250 2.1.0 Sender OK\n250 2.1.5 Recipient OK\n354 go\n"
    assert s.server(go) == dot_stuff(bodies[0]) + commands
    assert s.server("250 2.6.0 queued\n") == b""
    assert s.server(go) == dot_stuff(bodies[1])
    assert s.server("250 2.6.0 queued\n") == b"QUIT\r\n"
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    assert [m.accepted for m in s.outcomes[0].messages] == [True, True]


class Rounds:
    """A caller's ``more``: hands out prepared rounds of messages, one per call, and
    remembers how many outcomes each call saw."""

    def __init__(self, *rounds: list[OutboundMessage]) -> None:
        self.rounds = list(rounds)
        self.seen: list[int] = []

    async def __call__(self, outcome) -> list[OutboundMessage]:
        self.seen.append(len(outcome.messages))
        return self.rounds.pop(0) if self.rounds else []


def test_next_round_of_a_shadowed_session_goes_once_the_first_is_answered():
    """A send connector's open connection takes the queue's next messages: once the first
    pipeline is answered the caller is asked for more, they go in the same session (a
    pipeline of their own), and only when it has none left come XQDISCARD and QUIT."""
    bodies = [f"Subject: {n}\r\n\r\nhello\r\n".encode() for n in range(3)]
    more = Rounds([message(bodies[1], ID2), message(bodies[2], ID1)])
    s = Scripted(SessionRequest("hub01.contoso.test", [message(bodies[0], ID1)],
                                shadow_context=CONTEXT, more=more))
    s.server("220 edge01 ready\n")
    s.server("250-edge01 Hello\n250-PIPELINING\n250-CHUNKING\n250 XSHADOW\n")
    assert s.server("250 q3Jx0V5YqUqW3w3vOaG5Xw==\n") == _mail(bodies[0], ID1)
    assert more.seen == []  # not asked while the first round is unanswered
    assert s.server(OK_MESSAGE) == _mail(bodies[1], ID2) + _mail(bodies[2], ID1)
    assert more.seen == [1]
    assert s.server(OK_MESSAGE * 2) == b"XQDISCARD 50\r\n"
    assert more.seen == [1, 3]
    assert s.server("251 OK, no discard events\n") == b"QUIT\r\n"
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    outcome = s.outcomes[0]
    assert [m.message.body for m in outcome.messages] == bodies
    assert all(m.accepted and m.shadowed for m in outcome.messages)


def test_discard_query_due_between_rounds_goes_before_the_next_round():
    """F.6 on an open session: when the caller says a discard query is due, XQDISCARD goes
    after the round just answered, its ids reach the caller at once, and the next round
    follows; the session's own query at its end still comes."""
    heard: list[list[str]] = []
    due = iter([True, False])
    bodies = [f"Subject: {n}\r\n\r\nhello\r\n".encode() for n in range(2)]
    more = Rounds([message(bodies[1], ID2)])
    s = Scripted(SessionRequest("hub01.contoso.test", [message(bodies[0], ID1)],
                                shadow_context=CONTEXT, more=more,
                                discards_due=lambda: next(due),
                                on_discards=lambda ids, at: heard.append(list(ids))))
    s.server("220 edge01 ready\n")
    s.server("250-edge01 Hello\n250-PIPELINING\n250-CHUNKING\n250 XSHADOW\n")
    s.server("250 q3Jx0V5YqUqW3w3vOaG5Xw==\n")
    assert s.server(OK_MESSAGE) == b"XQDISCARD 50\r\n"
    assert more.seen == []
    assert s.server(f"250 {ID1}\n") == _mail(bodies[1], ID2)
    assert heard == [[ID1]]
    assert s.server(OK_MESSAGE) == b"XQDISCARD 50\r\n"  # not due, but the session ends
    assert s.server(f"250 {ID2}\n") == b"QUIT\r\n"
    assert heard == [[ID1], [ID2]]
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    assert s.outcomes[0].discards == [ID1, ID2]


def test_a_lingering_session_asks_for_discards_only_when_one_is_due():
    """F.6 on the session that made the shadow copy: once its messages are answered it
    stays open (``linger``) without an XQDISCARD of its own (the primary has only just
    taken them); it asks when the caller says a query is due, and, having just asked,
    ends with QUIT alone."""
    waits: list[Deferred] = []
    due = iter([False, True])

    def linger() -> Deferred:
        waits.append(Deferred())
        return waits[-1]

    s = Scripted(SessionRequest("hub01.contoso.test", [message()], shadow_context=CONTEXT,
                                more=Rounds(), linger=linger,
                                discards_due=lambda: next(due, False)))
    s.server("220 edge01 ready\n")
    s.server("250-edge01 Hello\n250-PIPELINING\n250-CHUNKING\n250 XSHADOW\n")
    s.server("250 q3Jx0V5YqUqW3w3vOaG5Xw==\n")
    assert s.server(OK_MESSAGE) == b""
    assert len(waits) == 1
    s.transport.clear()
    waits[0].callback(True)
    assert s.transport.value() == b"XQDISCARD 50\r\n"
    assert s.server(f"250 {ID1}\n") == b""
    s.transport.clear()
    waits[1].callback(False)
    assert s.transport.value() == b"QUIT\r\n"
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    assert s.outcomes[0].discards == [ID1]


def test_next_round_to_a_peer_without_pipelining_goes_one_message_at_a_time():
    """More messages for an open session to a foreign peer: each after the last's reply."""
    bodies = [f"Subject: {n}\r\n\r\nhello\r\n".encode() for n in range(2)]
    more = Rounds([message(bodies[1], None)])
    s = Scripted(SessionRequest("sink.fabrikam.test", [message(bodies[0], None)], more=more))
    s.server("220 sink ready\n")
    assert s.server("250 sink Hello\n") == b"MAIL FROM:<a@contoso.test>\r\n"
    assert s.server("250 2.1.0 Sender OK\n") == b"RCPT TO:<b@contoso.test>\r\n"
    assert s.server("250 2.1.5 Recipient OK\n") == b"DATA\r\n"
    assert s.server("354 go\n") == dot_stuff(bodies[0])
    assert s.server("250 2.6.0 queued\n") == b"MAIL FROM:<a@contoso.test>\r\n"
    s.server("250 2.1.0 Sender OK\n")
    s.server("250 2.1.5 Recipient OK\n")
    assert s.server("354 go\n") == dot_stuff(bodies[1])
    assert s.server("250 2.6.0 queued\n") == b"QUIT\r\n"
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    assert [m.accepted for m in s.outcomes[0].messages] == [True, True]
    assert more.seen == [1, 2]


def test_a_broken_session_asks_for_no_more_messages():
    """The connection drops while the first round is out: the caller is not asked for
    more, and the outcome says why the session ended."""
    more = Rounds([message(b"Subject: 2\r\n\r\nx\r\n", ID2)])
    s = Scripted(SessionRequest("hub01.contoso.test", [message()], shadow_context=CONTEXT,
                                more=more))
    s.server("220 edge01 ready\n")
    s.server("250-edge01 Hello\n250-PIPELINING\n250-CHUNKING\n250 XSHADOW\n")
    s.server("250 q3Jx0V5YqUqW3w3vOaG5Xw==\n")
    s.proto.connectionLost(None)
    outcome = s.outcomes[0]
    assert more.seen == [] and outcome.messages == [] and outcome.error


def test_message_refused_before_its_body_is_reset_before_the_next_one():
    """No recipient taken: DATA is refused, RSET ends what the peer may keep of that
    transaction, and only then do the next message's commands go."""
    bodies = [f"Subject: {n}\r\n\r\nhello\r\n".encode() for n in range(2)]
    s = Scripted(SessionRequest("hub01.contoso.test", [message(b, None) for b in bodies]))
    s.server("220 sink ready\n")
    s.server("250-sink Hello\n250 PIPELINING\n")
    out = s.server("250 2.1.0 Sender OK\n550 5.1.1 Unknown\n554 5.5.1 no valid recipients\n")
    assert out == b"RSET\r\n"
    assert s.server("250 2.0.0 Resetting\n") == (
        b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n")
    assert s.server("250 2.1.0 Sender OK\n250 2.1.5 Recipient OK\n354 go\n") == dot_stuff(
        bodies[1])
    assert s.server("250 2.6.0 queued\n") == b"QUIT\r\n"
    s.server("221 bye\n")
    s.proto.connectionLost(None)
    assert [m.accepted for m in s.outcomes[0].messages] == [False, True]


def test_helo_fallback_and_no_xshadow_without_advertisement():
    """A peer that refuses EHLO gets HELO; without XSHADOW no shadowing starts (E.2–E.3)."""
    s = Scripted(SessionRequest("hub01", [message()], shadow_context=CONTEXT))
    s.server("220 legacy ready\n")
    assert s.server("500 what\n") == b"HELO hub01\r\n"
    assert s.server("250 legacy\n") == b"MAIL FROM:<a@contoso.test>\r\n"
    assert s.server("250 ok\n") == b"RCPT TO:<b@contoso.test>\r\n"
    assert s.server("250 ok\n") == b"DATA\r\n"
    s.server("354 go\n")
    assert s.server("250 queued\n") == b"QUIT\r\n"
    s.server("221 bye\n")
    outcome = s.outcomes[0]
    assert not outcome.shadowed and not outcome.messages[0].shadowed
    assert outcome.messages[0].accepted


def test_per_recipient_results_report_4xx_and_5xx():
    s = Scripted(SessionRequest("hub01", [message(recipients=("a@x.test", "b@x.test",
                                                               "c@x.test"))]))
    s.server("220 ready\n")
    s.server("250-x\n250 PIPELINING\n")
    out = s.server("250 ok\n250 ok\n450 4.2.0 busy\n550 5.1.1 unknown\n354 go\n")
    assert out.endswith(b".\r\n")
    s.server("250 2.6.0 queued\n")
    s.server("221 bye\n")
    results = s.outcomes[0].messages[0].recipient_results()
    assert results["a@x.test"].code == 250
    assert results["b@x.test"].transient and results["c@x.test"].permanent


def test_malformed_discard_id_ends_session():
    s = Scripted(SessionRequest("hub01", [], shadow_context=CONTEXT))
    s.server("220 ready\n")
    s.server("250-x\n250 XSHADOW\n")
    s.server("250 q3Jx0V5YqUqW3w3vOaG5Xw==\n")
    s.server("250 not-a-guid\n")
    outcome = s.outcomes[0]
    assert outcome.discard_query == "failed" and "malformed" in outcome.error
    assert s.transport.disconnecting


def test_reply_timeout_is_reported():
    s = Scripted(SessionRequest("hub01", [message()], reply_timeout=30))
    s.clock.advance(31)
    assert s.outcomes[0].error == "session ended: no reply in time"


def _self_signed() -> ssl.CertificateOptions:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge01.contoso.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    pem = cert.public_bytes(serialization.Encoding.PEM) + pem_key
    return ssl.PrivateCertificate.loadPEM(pem).options()


class LoopbackTests(TestCase):
    """Real TCP over loopback between our client and our server."""

    def listen(self, policy: FakePolicy, settings: ServerSettings | None = None):
        settings = settings or ServerSettings("Default EDGE01", "edge01.contoso.test")
        factory = ExchangeESMTPFactory(settings, policy, reactor)
        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)

        def listening(port):
            self.addCleanup(port.stopListening)
            return port.getHost().port

        return d.addCallback(listening)

    async def test_client_to_server_shadowed_with_bdat_and_discards(self):
        policy = FakePolicy()
        policy.discards[CONTEXT] = [ID2]
        port = await self.listen(policy)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        body = b"Subject: loop\r\n\r\n" + b".leading dot\r\n" * 100
        outcome = await send_session(
            endpoint,
            SessionRequest("hub01.contoso.test", [message(body), message(body, ID2)],
                           shadow_context=CONTEXT),
            reactor,
        )
        self.assertIsNone(outcome.error)
        self.assertTrue(outcome.shadowed)
        self.assertEqual([m.accepted for m in outcome.messages], [True, True])
        self.assertEqual(outcome.discards, [ID2])
        self.assertEqual(len(policy.stored), 2)
        self.assertTrue(policy.stored[0].body.endswith(body))
        self.assertEqual(policy.stored[1].message.shadow_message_id, ID2)

    async def test_refused_recipients_do_not_lend_their_sender_to_the_next_message(self):
        """Every recipient of a message refused, then its BDAT: the server ends that
        transaction (RFC 3030), so the next message's MAIL is its own, not refused."""
        policy = FakePolicy()
        policy.refuse_recipients = {"nobody@contoso.test"}
        settings = ServerSettings("Default EDGE01", "edge01.contoso.test", tarpit_interval=0)
        port = await self.listen(policy, settings)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        messages = [message(b"Subject: 1\r\n\r\none\r\n", ID1, ("nobody@contoso.test",)),
                    OutboundMessage("c@contoso.test", ("b@contoso.test",),
                                    b"Subject: 2\r\n\r\ntwo\r\n", shadow_message_id=ID2)]
        outcome = await send_session(endpoint, SessionRequest(
            "hub01.contoso.test", messages, shadow_context=CONTEXT), reactor)
        self.assertIsNone(outcome.error)
        self.assertEqual([m.accepted for m in outcome.messages], [False, True])
        self.assertEqual(outcome.messages[1].mail_reply.code, 250)
        self.assertEqual([(s.message.sender, s.body.split(b"\r\n\r\n")[-1])
                          for s in policy.stored], [("c@contoso.test", b"two\r\n")])

    async def test_data_messages_pipelined_into_our_server_keep_their_envelopes(self):
        """DATA, three messages, the second one's only recipient refused: our server (its
        outbox running the next message ahead of a commit) stores the first and third, each
        with its own sender, once."""
        policy = FakePolicy()
        policy.refuse_recipients = {"nobody@contoso.test"}
        settings = ServerSettings("Default EDGE01", "edge01.contoso.test", tarpit_interval=0)
        port = await self.listen(policy, settings)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        messages = [OutboundMessage(f"s{n}@contoso.test", (rcpt,),
                                    f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())
                    for n, rcpt in enumerate(("b@contoso.test", "nobody@contoso.test",
                                              "b@contoso.test"))]
        outcome = await send_session(endpoint, SessionRequest(
            "hub01.contoso.test", messages, use_bdat=False), reactor)
        self.assertIsNone(outcome.error)
        self.assertEqual([m.accepted for m in outcome.messages], [True, False, True])
        self.assertEqual([(s.message.sender, s.body.split(b"\r\n\r\n")[-1])
                          for s in policy.stored],
                         [("s0@contoso.test", b"body 0\r\n"), ("s2@contoso.test", b"body 2\r\n")])

    async def test_client_to_server_with_data_when_bdat_off(self):
        policy = FakePolicy(org=False)
        port = await self.listen(policy)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        body = b"Subject: dots\r\n\r\n.\r\n..\r\nend\r\n"
        outcome = await send_session(
            endpoint, SessionRequest("x.test", [message(body)], shadow_context=CONTEXT,
                                     use_bdat=False), reactor)
        self.assertFalse(outcome.shadowed)  # not an org server: XSHADOW not offered
        self.assertTrue(outcome.messages[0].accepted)
        self.assertTrue(policy.stored[0].body.endswith(body))

    async def test_starttls_then_shadowed_session(self):
        policy = FakePolicy()
        settings = ServerSettings("Default EDGE01", "edge01.contoso.test", tls=_self_signed())
        port = await self.listen(policy, settings)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        outcome = await send_session(
            endpoint,
            SessionRequest("hub01", [message()], shadow_context=CONTEXT,
                           tls=ssl.CertificateOptions(), require_tls=True),
            reactor,
        )
        self.assertIsNone(outcome.error)
        self.assertTrue(outcome.tls)
        self.assertNotIn("STARTTLS", outcome.keywords)
        self.assertTrue(outcome.messages[0].accepted)
        self.assertTrue(policy.stored[0].message.session.tls)
        self.assertIn(b"with Microsoft SMTP Server (TLS)", policy.stored[0].body)

    async def test_connection_refused_is_reported(self):
        port = await self.listen(FakePolicy())
        # Nothing listens one port below a fresh ephemeral port, almost surely.
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port - 1 if port > 1025 else port + 1)
        outcome = await send_session(endpoint, SessionRequest("x", [message()]), reactor)
        if outcome.error is not None:
            self.assertIn("cannot connect", outcome.error)

    async def test_smtplib_as_a_foreign_client(self):
        """Python's smtplib, a client nobody here wrote, gets its mail accepted."""
        policy = FakePolicy(org=False)
        port = await self.listen(policy)

        def send() -> tuple:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                code, _ = client.ehlo("app.contoso.test")
                refused = client.sendmail(
                    "app@contoso.test", ["bob@contoso.test", "alice@contoso.test"],
                    b"Subject: from smtplib\r\n\r\n.hidden dot\r\nbye\r\n")
                noop = client.noop()
                return code, refused, noop

        code, refused, noop = await threads.deferToThread(send)
        self.assertEqual(code, 250)
        self.assertEqual(refused, {})
        self.assertEqual(noop[0], 250)
        self.assertEqual(len(policy.stored), 1)
        stored = policy.stored[0]
        self.assertEqual([r.address for r in stored.message.recipients],
                         ["bob@contoso.test", "alice@contoso.test"])
        self.assertTrue(stored.body.endswith(b"\r\n.hidden dot\r\nbye\r\n"))
        self.assertEqual(stored.message.subject, "from smtplib")
