"""The Exchange ESMTP server protocol, byte for byte, on a StringTransport."""

from __future__ import annotations

import base64
import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_emu.smtp.envelope import encode_shadow_context
from exchange_emu.smtp.interfaces import ServerSettings

from smtp_fakes import DATABASE_GUID, FakePolicy, connect

CONTEXT = encode_shadow_context("0f3b0c50-985c-4e23-a9b7-4a7b46d456e0", "HUB01", "")
DB_ID = base64.b64encode(DATABASE_GUID.bytes).decode()
SHADOW_ID = "5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d21"


def ehlo(h, name: bytes = b"hub01.contoso.test") -> bytes:
    return h.feed(b"EHLO " + name + b"\r\n")


def shadowed(h):
    ehlo(h)
    assert h.feed(f"XSHADOW {CONTEXT}\r\n".encode()) == f"250 {DB_ID}\r\n".encode()
    return h


def test_banner_is_exchange_banner():
    """The greeting names the FQDN and the time, as Exchange 2010 does."""
    h = connect()
    assert h.output() == (
        b"220 edge01.contoso.test Microsoft ESMTP MAIL Service ready at "
        b"Sat, 28 Nov 2026 13:00:00 +0000\r\n"
    )


def test_ehlo_lists_exchange_keywords_in_order_for_org_server():
    """An org server sees the whole list, XSHADOW last (protocol.md §1)."""
    h = connect()
    h.output()
    assert ehlo(h) == (
        b"250-edge01.contoso.test Hello [127.0.0.1]\r\n"
        b"250-SIZE 37748736\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n"
        b"250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250-XEXCH50\r\n250-XRDST\r\n"
        b"250 XSHADOW\r\n"
    )


def test_ehlo_with_certificate_offers_tls_before_8bitmime():
    """STARTTLS and X-ANONYMOUSTLS appear only with a certificate, in Exchange's slot."""
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", tls=object())
    h = connect(settings=settings)
    h.output()
    lines = ehlo(h).decode().split("\r\n")
    assert lines[5:8] == ["250-STARTTLS", "250-X-ANONYMOUSTLS", "250-8BITMIME"]


def test_ehlo_for_anonymous_peer_hides_org_verbs():
    """A peer not proven to be an org server is offered neither XEXCH50 nor XSHADOW."""
    h = connect(FakePolicy(org=False))
    h.output()
    out = ehlo(h)
    assert b"XSHADOW" not in out and b"XEXCH50" not in out
    assert out.endswith(b"250 XRDST\r\n")


def test_client_connector_advertises_no_shadow_exch50_or_anonymous_tls():
    """The port-587 'Client' connector advertises no XSHADOW, XEXCH50, X-ANONYMOUSTLS."""
    settings = ServerSettings("Client HUB01", "hub01.contoso.test", client_connector=True,
                              tls=object())
    h = connect(settings=settings)
    h.output()
    out = ehlo(h)
    assert b"STARTTLS" in out
    for word in (b"XSHADOW", b"XEXCH50", b"X-ANONYMOUSTLS", b"XRDST"):
        assert word not in out
    assert h.feed(f"XSHADOW {CONTEXT}\r\n".encode()) == b"502 5.3.3 Command not implemented\r\n"


def test_helo_gets_single_line_and_ehlo_without_domain_is_refused():
    h = connect()
    h.output()
    assert h.feed(b"HELO hub01\r\n") == b"250 edge01.contoso.test Hello [127.0.0.1]\r\n"
    assert h.feed(b"EHLO\r\n") == b"501 5.5.4 Invalid domain name\r\n"


# -- XSHADOW (protocol.md §2) ------------------------------------------------


def test_xshadow_success_returns_database_id_without_enhanced_code():
    h = connect()
    h.output()
    ehlo(h)
    reply = h.feed(f"XSHADOW {CONTEXT}\r\n".encode())
    assert reply == f"250 {DB_ID}\r\n".encode()
    assert len(DB_ID) == 24 and DB_ID.endswith("==")
    assert h.proto.session.shadow_context == CONTEXT


@pytest.mark.parametrize(
    ("setup", "command", "expected"),
    [
        ([], f"XSHADOW {CONTEXT}", b"503 5.5.1 Bad sequence of commands"),
        (["EHLO hub01"], "XSHADOW", b"501 5.0.0 XSHADOW requires Shadow server's context"),
        (["EHLO hub01"], "XSHADOW " + "A" * 256, b"501 5.5.4 Invalid arguments"),
        (["EHLO hub01"], "XSHADOW not*base64", b"501 5.5.4 Invalid arguments"),
        (["EHLO hub01", f"XSHADOW {CONTEXT}"], f"XSHADOW {CONTEXT}",
         b"503 5.5.1 Bad sequence of commands"),
        (["EHLO hub01", "MAIL FROM:<a@contoso.test>"], f"XSHADOW {CONTEXT}",
         b"503 5.5.1 Bad sequence of commands"),
    ],
)
def test_xshadow_errors(setup, command, expected):
    h = connect()
    h.output()
    for line in setup:
        h.feed(line.encode() + b"\r\n")
    assert h.feed(command.encode() + b"\r\n") == expected + b"\r\n"


def test_xshadow_from_non_org_peer_is_not_authorized():
    h = connect(FakePolicy(org=False))
    h.output()
    ehlo(h)
    assert h.feed(f"XSHADOW {CONTEXT}\r\n".encode()) == b"550 5.7.1 Not authorized\r\n"


def test_xshadow_when_shadow_redundancy_disabled_is_not_implemented():
    policy = FakePolicy()
    policy.shadow_redundancy_enabled = False
    h = connect(policy)
    h.output()
    assert b"XSHADOW" not in ehlo(h)
    assert h.feed(f"XSHADOW {CONTEXT}\r\n".encode()) == b"502 5.3.3 Command not implemented\r\n"


# -- MAIL … XSHADOW= (protocol.md §3) ------------------------------------------


def test_mail_xshadow_id_is_stored_with_the_message_and_context():
    h = shadowed(connect())
    out = h.feed(
        f"MAIL FROM:<alice@contoso.test> SIZE=10240 XSHADOW={SHADOW_ID}\r\n"
        "RCPT TO:<erin@fabrikam.test>\r\nDATA\r\n".encode()
    )
    assert out == (b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
                   b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")
    out = h.feed(b"Message-ID: <7c1d@contoso.test>\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
    assert out == (b"250 2.6.0 <7c1d@contoso.test> [InternalId=1, "
                   b"Hostname=edge01.contoso.test] Queued mail for delivery\r\n")
    stored = h.policy.stored[0].message
    assert stored.shadow_message_id == SHADOW_ID
    assert stored.session.shadow_context == CONTEXT
    assert stored.subject == "hi"


def test_mail_xshadow_without_shadow_session_is_invalid():
    h = connect()
    h.output()
    ehlo(h)
    assert h.feed(f"MAIL FROM:<a@contoso.test> XSHADOW={SHADOW_ID}\r\n".encode()) == (
        b"501 5.5.4 Invalid arguments\r\n")


def test_mail_xshadow_with_malformed_guid_is_invalid():
    h = shadowed(connect())
    assert h.feed(b"MAIL FROM:<a@contoso.test> XSHADOW=not-a-guid\r\n") == (
        b"501 5.5.4 Invalid arguments\r\n")


# -- XQDISCARD (protocol.md §4) --------------------------------------------------


def test_xqdiscard_hands_over_only_this_contexts_ids_once():
    policy = FakePolicy()
    ids = ["0b6a6a22-6a0c-4c5c-9a3e-0d1b2e3f4a5b", "9f0c3c1e-2d5b-4f55-8a43-1f2c0d8f6a10"]
    policy.discards[CONTEXT] = list(ids)
    policy.discards["b3RoZXI="] = ["11111111-1111-1111-1111-111111111111"]
    h = shadowed(connect(policy))
    assert h.feed(b"XQDISCARD 50\r\n") == (
        f"250-{ids[0]}\r\n250 {ids[1]}\r\n".encode())
    assert h.feed(b"XQDISCARD 50\r\n") == b"251 OK, no discard events\r\n"
    assert policy.discards["b3RoZXI="]  # another holder's ids are untouched


def test_xqdiscard_returns_at_most_max_lines():
    policy = FakePolicy()
    policy.discards[CONTEXT] = [f"00000000-0000-0000-0000-{i:012d}" for i in range(5)]
    h = shadowed(connect(policy))
    assert h.feed(b"XQDISCARD 2\r\n").count(b"\r\n") == 2
    assert h.feed(b"XQDISCARD 50\r\n").count(b"\r\n") == 3


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("XQDISCARD", b"501 5.0.0 XQDISCARD requires maximum discard events count"),
        ("XQDISCARD 0", b"501 5.5.4 Invalid arguments"),
        ("XQDISCARD -3", b"501 5.5.4 Invalid arguments"),
        ("XQDISCARD ten", b"501 5.5.4 Invalid arguments"),
    ],
)
def test_xqdiscard_argument_errors(command, expected):
    h = shadowed(connect())
    assert h.feed(command.encode() + b"\r\n") == expected + b"\r\n"


def test_xqdiscard_before_xshadow_is_bad_sequence():
    h = connect()
    h.output()
    ehlo(h)
    assert h.feed(b"XQDISCARD 50\r\n") == b"503 5.5.1 Bad sequence of commands\r\n"


# -- pipelining and held replies -----------------------------------------------------


def test_whole_pipelined_session_in_one_packet_answers_in_order():
    h = connect()
    h.output()
    out = h.feed(
        b"EHLO hub01\r\nMAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\n"
        b"RCPT TO:<c@contoso.test>\r\nDATA\r\nSubject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n"
    )
    codes = [line[:4] for line in out.decode().split("\r\n") if line]
    assert codes[-6:] == ["250 ", "250 ", "250 ", "354 ", "250 ", "221 "]
    assert h.transport.disconnecting


def test_held_reply_keeps_later_pipelined_replies_back():
    """A held end-of-data reply (delayed ack) comes before the replies to what follows."""
    policy = FakePolicy()
    policy.hold = True
    h = connect(policy)
    h.output()
    h.feed(b"EHLO hub01\r\nMAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n")
    out = h.feed(b"Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<z@contoso.test>\r\nNOOP\r\n")
    assert out == b""  # nothing may overtake the held reply
    policy.held[0].callback(None)
    out = h.output().decode().split("\r\n")
    assert out[0].startswith("250 2.6.0 ")
    assert out[1:3] == ["250 2.1.0 Sender OK", "250 2.0.0 OK"]


def test_client_disconnect_during_held_reply_keeps_message():
    policy = FakePolicy()
    policy.hold = True
    h = connect(policy)
    h.feed(b"EHLO hub01\r\nMAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n")
    h.feed(b"hello\r\n.\r\n")
    h.proto.connectionLost(None)
    policy.held[0].callback(None)
    assert len(policy.stored) == 1 and h.output() == b""


# -- bodies: DATA, BDAT, limits --------------------------------------------------------


def start_data(h, mail: bytes = b"MAIL FROM:<a@contoso.test>") -> None:
    h.output()
    ehlo(h)
    out = h.feed(mail + b"\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n")
    assert out.endswith(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")


def test_dot_unstuffing_and_terminator_split_across_packets():
    h = connect()
    start_data(h)
    for piece in (b"Subject: s\r\n\r\n..dotted\r\n", b"line\r", b"\n.", b"\r", b"\nNOOP\r\n"):
        out = h.feed(piece)
    assert out.startswith(b"250 2.6.0") and out.endswith(b"250 2.0.0 OK\r\n")
    body = h.policy.stored[0].body
    assert body.endswith(b"\r\n\r\n.dotted\r\nline\r\n")


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"])
def test_bare_lf_or_cr_dot_does_not_end_data(smuggle):
    """SMTP smuggling: only CRLF.CRLF ends the body, so nothing after it runs as commands."""
    h = connect()
    start_data(h)
    out = h.feed(b"Subject: s\r\n\r\nhello" + smuggle + b"MAIL FROM:<evil@x.test>\r\n")
    assert out == b""
    out = h.feed(b"\r\n.\r\n")
    assert out.startswith(b"250 2.6.0")
    assert len(h.policy.stored) == 1
    assert b"MAIL FROM:<evil@x.test>" in h.policy.stored[0].body


def test_received_header_and_generated_message_id_are_added():
    h = connect()
    start_data(h)
    out = h.feed(b"Subject: no id\r\n\r\nx\r\n.\r\n")
    stored = h.policy.stored[0]
    assert stored.body.startswith(
        b"Received: from hub01.contoso.test (127.0.0.1) by edge01.contoso.test (127.0.0.1) "
        b"with Microsoft SMTP Server id 14.3.123.4; Sat, 28 Nov 2026 13:00:00 +0000\r\n"
        b"Message-ID: <"
    )
    assert stored.message.message_id.encode() in out
    assert stored.message.message_id.endswith("@edge01.contoso.test>")


def test_hop_count_counts_received_headers():
    h = connect()
    start_data(h)
    h.feed(b"Received: from a\r\nReceived: from b\r\nSubject: s\r\n\r\nx\r\n.\r\n")
    assert h.policy.stored[0].message.hop_count == 2


def test_long_line_inside_data_is_never_run_as_commands():
    """A body line over the limit refuses the message; the rest of the body is still body."""
    settings = ServerSettings("Default EDGE01", "edge01.contoso.test", max_data_line_length=100)
    h = connect(settings=settings)
    start_data(h)
    out = h.feed(b"Subject: s\r\n\r\n" + b"A" * 150 + b"QUIT\r\nRSET\r\nQUIT\r\n")
    assert out == b""
    out = h.feed(b"more body\r\n.\r\nNOOP\r\n")
    assert out == (b"554 5.6.0 Invalid message content: line too long\r\n250 2.0.0 OK\r\n")
    assert h.policy.stored == [] and not h.transport.disconnecting


def test_long_line_split_across_packets_is_caught():
    settings = ServerSettings("Default EDGE01", "edge01.contoso.test", max_data_line_length=100)
    h = connect(settings=settings)
    start_data(h)
    for _ in range(5):
        h.feed(b"B" * 30)
    assert h.feed(b"\r\n.\r\n").startswith(b"554 5.6.0")


def test_declared_size_over_limit_is_refused():
    h = connect()
    h.output()
    ehlo(h)
    assert h.feed(b"MAIL FROM:<a@contoso.test> SIZE=37748737\r\n") == (
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")


def test_oversize_data_is_read_and_refused_without_storing():
    settings = ServerSettings("Default EDGE01", "edge01.contoso.test", max_message_size=1000)
    h = connect(settings=settings)
    start_data(h)
    out = h.feed(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 30 + b".\r\nNOOP\r\n")
    assert out == (b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
                   b"250 2.0.0 OK\r\n")
    assert h.policy.stored == []


def test_bdat_chunks_split_across_packets():
    h = connect()
    h.output()
    ehlo(h)
    h.feed(b"MAIL FROM:<a@contoso.test> BODY=BINARYMIME\r\nRCPT TO:<b@contoso.test>\r\n")
    first = b"Subject: b\r\n\r\n\x00\x01"
    assert h.feed(f"BDAT {len(first)}\r\n".encode() + first[:5]) == b""
    out = h.feed(first[5:] + b"BDAT 5 LAST\r\nQUI")
    assert out == f"250 2.0.0 CHUNK received OK, {len(first)} octets\r\n".encode()
    out = h.feed(b"T\r\n\r\n.\r\nNOOP\r\n")
    assert out.startswith(b"250 2.6.0") and out.endswith(b"250 2.0.0 OK\r\n")
    assert h.policy.stored[0].body.endswith(first + b"QUIT\r")
    assert h.policy.stored[0].message.body_type == "BINARYMIME"


def test_bdat_without_transaction_swallows_its_chunk():
    h = connect()
    h.output()
    ehlo(h)
    assert h.feed(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n") == (
        b"503 5.5.2 Need mail command\r\n250 2.0.0 OK\r\n")


def test_binarymime_with_data_is_refused():
    h = connect()
    h.output()
    ehlo(h)
    h.feed(b"MAIL FROM:<a@contoso.test> BODY=BINARYMIME\r\nRCPT TO:<b@contoso.test>\r\n")
    assert h.feed(b"DATA\r\n").startswith(b"503 5.5.1")


def test_xexch50_reads_exact_raw_bytes_and_keeps_the_blob():
    h = connect()
    h.output()
    ehlo(h)
    h.feed(b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\n")
    blob = b"\x00\r\n.\r\nQUIT\r\n\xff"
    assert h.feed(f"XEXCH50 {len(blob)} 2\r\n".encode()) == b"354 Send binary data\r\n"
    assert h.feed(blob + b"DATA\r\n") == (
        b"250 2.0.0 XEXCH50 OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n")
    h.feed(b"x\r\n.\r\n")
    assert h.policy.stored[0].message.xexch50 == blob


def test_xexch50_from_anonymous_peer_is_not_authorized():
    h = connect(FakePolicy(org=False))
    h.output()
    ehlo(h)
    h.feed(b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\n")
    assert h.feed(b"XEXCH50 10 2\r\n") == b"550 5.7.1 Not authorized\r\n"


# -- other verbs and limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"NOOP", b"250 2.0.0 OK"),
        (b"RSET", b"250 2.0.0 Resetting"),
        (b"VRFY alice", b"252 2.1.5 Cannot VRFY user"),
        (b"FOO bar", b"500 5.3.3 Unrecognized command"),
        (b"HELP", b"214-This server supports the following commands:\r\n"
                  b"214 HELO EHLO STARTTLS RCPT DATA RSET MAIL QUIT HELP AUTH BDAT"),
        (b"MAIL FROM:<a@contoso.test>", b"503 5.5.2 Send hello first"),
        (b"STARTTLS", b"500 5.3.3 Unrecognized command"),
    ],
)
def test_simple_verbs(command, expected):
    h = connect()
    h.output()
    assert h.feed(command + b"\r\n") == expected + b"\r\n"


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        ([b"RCPT TO:<b@contoso.test>"], b"503 5.5.2 Need mail command"),
        ([b"MAIL FROM:<a@contoso.test>", b"DATA"], b"503 5.5.2 Need rcpt command"),
        ([b"MAIL FROM:<a@contoso.test>", b"MAIL FROM:<a@contoso.test>"],
         b"503 5.5.2 Sender already specified"),
        ([b"MAIL FROM:<not an address>"], b"501 5.1.7 Invalid address"),
        ([b"MAIL FROM:<a@contoso.test>", b"RCPT TO:<>"], b"501 5.1.3 Invalid address"),
        ([b"MAIL FROM:<a@contoso.test> FOO=1"], b"555 5.5.4 Unsupported option: FOO"),
        ([b"MAIL FROM:<a@contoso.test>", b"RCPT TO:<b@contoso.test> NOTIFY=NEVER,DELAY"],
         b"501 5.5.4 Invalid arguments"),
    ],
)
def test_transaction_sequence_errors(commands, expected):
    h = connect()
    h.output()
    ehlo(h)
    for command in commands[:-1]:
        h.feed(command + b"\r\n")
    assert h.feed(commands[-1] + b"\r\n") == expected + b"\r\n"


def test_null_sender_and_dsn_parameters_accepted():
    h = connect()
    h.output()
    ehlo(h)
    out = h.feed(b"MAIL FROM:<> RET=HDRS ENVID=abc+2Bdef\r\n"
                 b"RCPT TO:<b@contoso.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@contoso.test\r\n")
    assert out == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"


def test_too_many_recipients():
    settings = ServerSettings("Default EDGE01", "edge01.contoso.test", max_recipients_per_message=2)
    h = connect(settings=settings)
    h.output()
    ehlo(h)
    out = h.feed(b"MAIL FROM:<a@contoso.test>\r\n" + b"RCPT TO:<b@contoso.test>\r\n" * 3)
    assert out.endswith(b"250 2.1.5 Recipient OK\r\n452 4.5.3 Too many recipients\r\n")


def test_refused_recipient_uses_policy_reply():
    policy = FakePolicy(org=False)
    policy.refuse_recipients.add("erin@fabrikam.test")
    h = connect(policy)
    h.output()
    ehlo(h)
    out = h.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<erin@fabrikam.test>\r\n")
    assert out.endswith(b"550 5.7.1 Unable to relay\r\n")


def test_command_line_over_limit_is_refused_and_its_tail_never_runs():
    settings = ServerSettings("Default EDGE01", "edge01.contoso.test", max_command_line_length=64)
    h = connect(settings=settings)
    h.output()
    out = h.feed(b"NOOP " + b"x" * 100)
    assert out == b"500 5.5.2 Line too long\r\n"
    assert h.feed(b"x QUIT\r\nNOOP\r\n") == b"250 2.0.0 OK\r\n"
    assert not h.transport.disconnecting


def test_too_many_protocol_errors_disconnects():
    h = connect()
    h.output()
    out = h.feed(b"BAD\r\n" * 5)
    assert out.endswith(b"421 4.7.0 Too many errors on this connection, closing transmission "
                        b"channel\r\n")
    assert h.transport.disconnecting


def test_inactivity_timeout_closes_with_421():
    h = connect()
    h.output()
    h.clock.advance(299)
    assert h.output() == b""
    h.feed(b"NOOP\r\n")
    h.clock.advance(299)
    assert not h.transport.disconnecting
    h.clock.advance(2)
    assert h.output() == b"421 4.4.1 Connection timed out\r\n"
    assert h.transport.disconnecting


def test_quit_closes():
    h = connect()
    h.output()
    assert h.feed(b"QUIT\r\n") == b"221 2.0.0 Service closing transmission channel\r\n"
    assert h.transport.disconnecting


# -- AUTH on a client submission connector ------------------------------------------------

CLIENT = ServerSettings("Client HUB01", "hub01.contoso.test", client_connector=True,
                        auth_mechanisms=("LOGIN", "PLAIN"), require_authentication=True)


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def test_client_connector_offers_auth_and_requires_it():
    h = connect(FakePolicy(org=False), settings=CLIENT)
    h.output()
    assert b"250-AUTH LOGIN PLAIN\r\n" in ehlo(h)
    assert h.feed(b"MAIL FROM:<alice@contoso.test>\r\n") == (
        b"530 5.7.1 Client was not authenticated\r\n")


def test_auth_plain_with_initial_response():
    h = connect(FakePolicy(org=False), settings=CLIENT)
    h.output()
    ehlo(h)
    assert h.feed(b"AUTH PLAIN " + b64("\0alice@contoso.test\0secret") + b"\r\n") == (
        b"235 2.7.0 Authentication successful\r\n")
    assert h.feed(b"MAIL FROM:<alice@contoso.test>\r\n") == b"250 2.1.0 Sender OK\r\n"
    assert h.proto.session.authenticated_as == "alice@contoso.test"


def test_auth_login_challenge_and_wrong_password():
    h = connect(FakePolicy(org=False), settings=CLIENT)
    h.output()
    ehlo(h)
    assert h.feed(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert h.feed(b64("alice@contoso.test") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert h.feed(b64("wrong") + b"\r\n") == b"535 5.7.3 Authentication unsuccessful\r\n"
    assert h.feed(b"AUTH LOGIN " + b64("alice@contoso.test") + b"\r\n") == (
        b"334 UGFzc3dvcmQ6\r\n")
    assert h.feed(b64("secret") + b"\r\n") == b"235 2.7.0 Authentication successful\r\n"


def test_authenticated_client_may_only_send_as_itself():
    h = connect(FakePolicy(org=False), settings=CLIENT)
    h.output()
    ehlo(h)
    h.feed(b"AUTH PLAIN " + b64("\0alice@contoso.test\0secret") + b"\r\n")
    assert h.feed(b"MAIL FROM:<bob@contoso.test>\r\n") == (
        b"550 5.7.1 Client does not have permissions to send as this sender\r\n")


CLIENT_TLS = dataclasses.replace(CLIENT, tls=object(), auth_requires_tls=True)


def test_basic_auth_requires_tls_first():
    """BasicAuthRequireTLS: no AUTH in EHLO before STARTTLS, 530 5.7.0 for AUTH; after
    the handshake the session starts over, AUTH is offered and works."""
    h = connect(FakePolicy(org=False), settings=CLIENT_TLS)
    h.output()
    plain = ehlo(h)
    assert b"AUTH" not in plain and b"250-STARTTLS\r\n" in plain
    assert b"X-ANONYMOUSTLS" not in plain
    assert h.feed(b"AUTH PLAIN " + b64("\0alice@contoso.test\0secret") + b"\r\n") == (
        b"530 5.7.0 Must issue a STARTTLS command first\r\n")
    assert h.feed(b"MAIL FROM:<alice@contoso.test>\r\n") == (
        b"530 5.7.1 Client was not authenticated\r\n")
    assert h.feed(b"STARTTLS\r\n") == b"220 2.0.0 SMTP server ready\r\n"
    assert h.transport.tls_started == [CLIENT_TLS.tls]
    assert h.feed(b"MAIL FROM:<alice@contoso.test>\r\n") == b"503 5.5.2 Send hello first\r\n"
    secure = ehlo(h)
    assert b"250-AUTH LOGIN PLAIN\r\n" in secure and b"STARTTLS" not in secure
    assert h.feed(b"AUTH PLAIN " + b64("\0alice@contoso.test\0wrong") + b"\r\n") == (
        b"535 5.7.3 Authentication unsuccessful\r\n")
    assert h.feed(b"AUTH PLAIN " + b64("\0alice@contoso.test\0secret") + b"\r\n") == (
        b"235 2.7.0 Authentication successful\r\n")
    assert h.feed(b"MAIL FROM:<bob@contoso.test>\r\n") == (
        b"550 5.7.1 Client does not have permissions to send as this sender\r\n")
    assert h.feed(b"MAIL FROM:<Alice@Contoso.test>\r\n") == b"250 2.1.0 Sender OK\r\n"


def test_require_tls_connector_refuses_mail_in_clear():
    """RequireTLS on a receive connector: MAIL only inside TLS."""
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", tls=object(),
                              require_tls=True)
    h = connect(FakePolicy(org=False), settings=settings)
    h.output()
    ehlo(h)
    assert h.feed(b"MAIL FROM:<a@contoso.test>\r\n") == (
        b"530 5.7.0 Must issue a STARTTLS command first\r\n")
    h.feed(b"STARTTLS\r\n")
    ehlo(h)
    assert h.feed(b"MAIL FROM:<a@contoso.test>\r\n") == b"250 2.1.0 Sender OK\r\n"


def test_certificate_proved_server_gets_shadow_verbs_only_as_itself():
    """After TLS with a client certificate the policy maps to HUB01: XSHADOW is offered,
    HUB01's context is accepted, another server's context is 550 5.7.1."""
    policy = FakePolicy(org=False)
    policy.certificate_servers[b"hub01-der"] = "HUB01"
    settings = ServerSettings("Default HUB02", "hub02.contoso.test", tls=object())
    h = connect(policy, settings=settings)
    h.output()
    assert b"XSHADOW" not in ehlo(h)
    h.feed(b"STARTTLS\r\n")

    class Presented:
        def to_cryptography(self):
            class Cert:
                def public_bytes(self, encoding):
                    return b"hub01-der"
            return Cert()

    h.transport.peer_certificate = Presented()
    assert ehlo(h).endswith(b"250-XEXCH50\r\n250-XRDST\r\n250 XSHADOW\r\n")
    other = encode_shadow_context("0f3b0c50-985c-4e23-a9b7-4a7b46d456e0", "HUB03", "")
    assert h.feed(f"XSHADOW {other}\r\n".encode()) == b"550 5.7.1 Not authorized\r\n"
    assert h.feed(f"XSHADOW {CONTEXT}\r\n".encode()) == f"250 {DB_ID}\r\n".encode()


@pytest.mark.parametrize(
    ("flavor", "client", "expected"),
    [
        ("2010", False, [b"STARTTLS", b"X-ANONYMOUSTLS"]),
        ("2007", False, [b"STARTTLS", b"X-ANONYMOUSTLS"]),
        ("2003", False, [b"STARTTLS"]),
        ("non-exchange", False, [b"STARTTLS"]),
        ("2010", True, [b"STARTTLS"]),
    ],
)
def test_tls_keywords_per_flavor_and_connector(flavor, client, expected):
    settings = ServerSettings("C", "hub01.contoso.test", tls=object(), flavor=flavor,
                              client_connector=client)
    h = connect(FakePolicy(org=False), settings=settings)
    h.output()
    words = [line[4:] for line in ehlo(h).split(b"\r\n") if line]
    assert [w for w in words if w in (b"STARTTLS", b"X-ANONYMOUSTLS")] == expected
    if b"X-ANONYMOUSTLS" not in expected:
        assert h.feed(b"X-ANONYMOUSTLS\r\n") == b"500 5.3.3 Unrecognized command\r\n"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"AUTH CRAM-MD5", b"504 5.7.4 Unrecognized authentication type"),
        (b"AUTH PLAIN !!notbase64", b"501 5.0.0 Authentication cancelled"),
        (b"AUTH PLAIN " + base64.b64encode(b"no-nuls"), b"501 5.0.0 Authentication cancelled"),
    ],
)
def test_auth_errors(command, expected):
    h = connect(FakePolicy(org=False), settings=CLIENT)
    h.output()
    ehlo(h)
    assert h.feed(command + b"\r\n") == expected + b"\r\n"


def test_auth_credentials_never_reach_the_protocol_log():
    lines: list[str] = []

    class Log:
        def connected(self): pass
        def sent(self, data): lines.append(data)
        def received(self, data): lines.append(data)
        def info(self, data, context=""): lines.append(data)
        def disconnected(self): pass

    class Factory:
        def open_session(self, *a):
            return Log()

    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from exchange_emu.smtp.server import ExchangeESMTPFactory

    from smtp_fakes import _addr

    proto = ExchangeESMTPFactory(CLIENT, FakePolicy(org=False), Clock(), Factory()
                                 ).buildProtocol(None)
    proto.makeConnection(StringTransport(peerAddress=_addr("127.0.0.1", 1),
                                         hostAddress=_addr("127.0.0.1", 2)))
    proto.dataReceived(b"EHLO x\r\nAUTH LOGIN\r\n" + b64("alice@contoso.test") + b"\r\n"
                       + b64("secret") + b"\r\n")
    text = "\n".join(lines)
    assert b64("secret").decode() not in text and "secret" not in text
    assert "AUTH ****" in text


# -- connection limits (MaxInboundConnection, …PerSource, MaxMessagesPerConnection) ------


def _sessions(settings: ServerSettings, count: int, org: bool = False):
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from exchange_emu.smtp.server import ExchangeESMTPFactory

    from smtp_fakes import _addr

    factory = ExchangeESMTPFactory(settings, FakePolicy(org=org), Clock())
    out = []
    for i in range(count):
        proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=_addr(f"192.0.2.{1 + i % 2}", 1000 + i),
                                    hostAddress=_addr("127.0.0.1", 25))
        proto.makeConnection(transport)
        out.append((proto, transport))
    return factory, out


def test_max_inbound_connection_per_source_and_total():
    settings = ServerSettings("Default EDGE01", "edge01.contoso.test",
                              max_inbound_connection=3, max_inbound_connection_per_source=1)
    factory, sessions = _sessions(settings, 4)
    replies_ = [t.value().split(b"\r\n")[0] for _, t in sessions]
    assert replies_[0].startswith(b"220 ") and replies_[1].startswith(b"220 ")
    assert replies_[2] == (b"421 4.3.2 The maximum number of concurrent connections has "
                           b"exceeded a limit, closing transmission channel")
    assert sessions[2][1].disconnecting
    sessions[0][0].connectionLost(None)  # one leaves: its source may connect again
    proto = factory.buildProtocol(None)
    from twisted.internet.testing import StringTransport

    from smtp_fakes import _addr

    transport = StringTransport(peerAddress=_addr("192.0.2.1", 2000),
                                hostAddress=_addr("127.0.0.1", 25))
    proto.makeConnection(transport)
    assert transport.value().startswith(b"220 ")


def test_max_inbound_connection_total_counts_org_servers_too():
    settings = ServerSettings("Default HUB01", "hub01.contoso.test",
                              max_inbound_connection=2, max_inbound_connection_per_source=1)
    _, sessions = _sessions(settings, 3, org=True)
    assert [t.value()[:4] for _, t in sessions] == [b"220 ", b"220 ", b"421 "]
    assert b"concurrent server connections" in sessions[2][1].value()


def test_max_messages_per_connection():
    settings = ServerSettings("Default EDGE01", "edge01.contoso.test",
                              max_messages_per_connection=1)
    h = connect(settings=settings)
    h.output()
    ehlo(h)
    h.feed(b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\nx\r\n.\r\n")
    out = h.feed(b"MAIL FROM:<a@contoso.test>\r\n")
    assert out == (b"421 4.4.2 The maximum number of messages per connection has been "
                   b"reached, closing transmission channel\r\n")
    assert h.transport.disconnecting


# -- pipelined messages: the next one is handled while the previous one commits ------------


def _bdat_message(n: int) -> bytes:
    body = f"Message-ID: <p{n}@contoso.test>\r\n\r\nbody {n}\r\n".encode()
    return (b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\n"
            + f"BDAT {len(body)} LAST\r\n".encode() + body)


def _held_session(max_messages: int = 20) -> tuple[FakePolicy, Any]:
    """A session (after EHLO) whose policy holds every commit until the test fires it."""
    policy = FakePolicy()
    policy.hold = True
    h = connect(policy, ServerSettings("Default EDGE01", "edge01.contoso.test",
                                       max_messages_per_connection=max_messages))
    h.output()
    ehlo(h)
    return policy, h


def test_pipelined_messages_commit_together_and_replies_keep_their_order():
    """Three messages pipelined with BDAT: all three reach the policy while the first commit
    is still pending (so they can commit together), yet nothing is answered before the
    first 250, and the replies come in command order as the commits finish."""
    policy, h = _held_session()
    out = h.feed(b"".join(_bdat_message(n) for n in range(3)))
    assert out == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
    assert len(policy.held) == 3
    policy.held[1].callback(None)  # the second commit first: its 250 waits for the first's
    assert h.output() == b""
    policy.held[0].callback(None)
    lines = h.output().decode().splitlines()
    assert lines[0].startswith("250 2.6.0 <p0@contoso.test>")
    assert lines[1:3] == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"]
    assert lines[3].startswith("250 2.6.0 <p1@contoso.test>")
    assert lines[4:] == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"]
    policy.held[2].callback(None)
    assert h.output().startswith(b"250 2.6.0 <p2@contoso.test>")


def test_quit_behind_a_pending_commit_waits_for_it():
    """Only the next message's commands run ahead of a commit: QUIT is answered (and the
    connection closed) after the 250 it follows."""
    policy, h = _held_session()
    h.feed(_bdat_message(0) + b"QUIT\r\n")
    assert not h.transport.disconnecting
    policy.held[0].callback(None)
    out = h.output()
    assert out.splitlines()[-2].startswith(b"250 2.6.0") and out.endswith(b"221 2.0.0 "
                                                                         b"Service closing "
                                                                         b"transmission "
                                                                         b"channel\r\n")
    assert h.transport.disconnecting


def test_commits_in_flight_per_session_are_bounded():
    from exchange_emu.smtp.server import COMMITS_AHEAD

    policy, h = _held_session(max_messages=0)
    h.feed(b"".join(_bdat_message(n) for n in range(COMMITS_AHEAD + 5)))
    assert len(policy.held) == COMMITS_AHEAD
    policy.held[0].callback(None)
    assert len(policy.held) == COMMITS_AHEAD + 1  # one done, the next one goes ahead
    n = 1
    while n < len(policy.held):  # (the list grows as commits finish and others go ahead)
        policy.held[n].callback(None)
        n += 1
    assert len(policy.held) == COMMITS_AHEAD + 5
    assert h.output().count(b"250 2.6.0") == COMMITS_AHEAD + 5


def test_closing_behind_pending_commits_sends_their_replies_first():
    """MaxMessagesPerConnection reached by a pipelined MAIL while earlier commits are
    pending: their 250s go out, then the 421, then the connection closes."""
    policy, h = _held_session(max_messages=2)
    out = h.feed(b"".join(_bdat_message(n) for n in range(3)))
    assert out == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
    assert len(policy.held) == 2
    assert not h.transport.disconnecting  # the 421 waits behind the two commits
    policy.held[0].callback(None)
    assert not h.transport.disconnecting
    policy.held[1].callback(None)
    lines = h.output().decode().splitlines()
    assert [line[:9] for line in lines] == [
        "250 2.6.0", "250 2.1.0", "250 2.1.5", "250 2.6.0", "421 4.4.2"]
    assert h.transport.disconnecting


# -- reading Message-ID, Subject and the Received count -----------------------------------

_PLAIN_NAMES = st.sampled_from(["Message-ID", "message-id", "Subject", "SUBJECT",
                                "Received", "X-Other"])
_ODD_NAMES = st.sampled_from(["From", "Message-ID ", "", "Sub ject", "Subject\x7f"])
_PLAIN_VALUES = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)
                        | st.just("\t"), max_size=30)
_ODD_VALUES = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x17f),
                      max_size=30)


@st.composite
def _header_blocks(draw: Any, plain: bool) -> bytes:
    names = _PLAIN_NAMES if plain else _PLAIN_NAMES | _ODD_NAMES
    values = _PLAIN_VALUES if plain else _PLAIN_VALUES | _ODD_VALUES
    kinds = ["field", "field", "fold"] + ([] if plain else ["junk"])
    lines: list[str] = [f"{draw(names)}:{draw(values)}"]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(kinds))
        if kind == "field":
            lines.append(f"{draw(names)}:{draw(values)}")
        elif kind == "fold":
            lines.append(draw(st.sampled_from([" ", "\t"])) + draw(values))
        else:
            lines.append(draw(st.sampled_from(["From someone", "no colon", "a\nb", "c\rd"])))
    endings = ["\r\n\r\n", "\r\n", ""] + ([] if plain else ["\n\n"])
    return ("\r\n".join(lines) + draw(st.sampled_from(endings))).encode(
        "utf-8", "surrogateescape")


@settings(max_examples=300, deadline=None)
@given(_header_blocks(plain=True))
def test_plain_header_blocks_are_read_directly_as_the_email_package_reads_them(block: bytes):
    from exchange_emu.smtp.server import _parsed_header_facts, _plain_header_facts

    plain = _plain_header_facts(block)
    lines = block.split(b"\r\n")
    folded_message_id = any(
        line.lower().startswith(b"message-id:") and following[:1] in (b" ", b"\t")
        for line, following in itertools.pairwise(lines))
    if not folded_message_id:
        assert plain is not None
    if plain is not None:
        assert plain == _parsed_header_facts(block)


@settings(max_examples=300, deadline=None)
@given(_header_blocks(plain=False))
def test_odd_header_blocks_read_directly_only_where_the_email_package_agrees(block: bytes):
    from exchange_emu.smtp.server import _parsed_header_facts, _plain_header_facts

    plain = _plain_header_facts(block)
    if plain is not None:
        assert plain == _parsed_header_facts(block)


def test_an_ordinary_header_block_is_read_without_the_email_package():
    from exchange_emu.smtp.server import _header_facts, _plain_header_facts

    block = (b"Received: from a by b\r\n\tid 1; Sat, 28 Nov 2026 13:00:00 +0000\r\n"
             b"Received: from c by d\r\nMessage-ID: <m@contoso.test>\r\n"
             b"Subject: hello\r\n  there\r\nsubject: second\r\n\r\n")
    assert _plain_header_facts(block) == ("<m@contoso.test>", "hello there", 2)
    assert _header_facts(block) == ("<m@contoso.test>", "hello there", 2)
