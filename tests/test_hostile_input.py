"""Hostile input against the receive protocol, on a StringTransport: every attack gets a
precise SMTP reply (or a clean close), never a traceback, and never changes where one
message ends and the next begins. (The real-server versions are in
test_hostile_processes.py; plain protocol errors are in test_smtp_server.py.)"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from exchange_emu.logs.protocol_log import ProtocolLog, read_protocol_log
from exchange_emu.smtp.envelope import encode_shadow_context
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.smtp.server import ExchangeESMTPFactory

from smtp_fakes import NOW, FakePolicy, _addr, connect

CONTEXT = encode_shadow_context("0f3b0c50-985c-4e23-a9b7-4a7b46d456e0", "HUB01", "")
MAIL = b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\n"


def session(policy: FakePolicy | None = None, settings: ServerSettings | None = None):
    h = connect(policy, settings)
    h.output()
    h.feed(b"EHLO hub01.contoso.test\r\n")
    return h


def no_traceback(h) -> None:
    """What an attacker sees never carries a Python error, and every line is a reply."""
    data = h.transport.value()
    assert b"Traceback" not in data
    for line in data.split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line


# -- SMTP smuggling: every bare-CR/bare-LF end-of-data look-alike is content -------------

SMUGGLERS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\n", b"\r.\r\n",
             b"\n.\r", b"\r\n.\x00\r\n", b"\r\n. \r\n", b"\n..\n", b"\r\n.\r\r\n"]


@pytest.mark.parametrize("smuggle", SMUGGLERS)
def test_smuggled_second_message_stays_inside_the_first(smuggle):
    """A fake end of data followed by a whole second transaction: one message, whose body
    holds the would-be second one; nothing is answered until the real CRLF.CRLF."""
    h = session()
    h.feed(MAIL + b"DATA\r\n")
    inner = (b"MAIL FROM:<ceo@contoso.test>\r\nRCPT TO:<victim@contoso.test>\r\nDATA\r\n"
             b"Subject: forged\r\n\r\nsend money")
    out = h.feed(b"Subject: s\r\n\r\nhello" + smuggle + inner + b"\r\n.\r\n")
    assert out.count(b"250 2.6.0") == 1 and out.startswith(b"250 2.6.0")
    assert len(h.policy.stored) == 1
    body = h.policy.stored[0].body
    assert body.endswith(b"hello" + smuggle.replace(b"\n..", b"\n..") + inner + b"\r\n")
    assert h.policy.stored[0].message.sender == "a@contoso.test"
    no_traceback(h)


def test_two_real_messages_in_one_packet_are_never_merged():
    """CRLF.CRLF followed by a pipelined transaction: two messages, each with its own body."""
    h = session()
    out = h.feed(MAIL + b"DATA\r\nSubject: 1\r\n\r\none\r\n.\r\n"
                 + MAIL + b"DATA\r\nSubject: 2\r\n\r\ntwo\r\n.\r\n")
    assert out.count(b"250 2.6.0") == 2
    assert [s.body.rsplit(b"\r\n\r\n", 1)[1] for s in h.policy.stored] == [b"one\r\n",
                                                                           b"two\r\n"]


# -- header and CRLF injection in the envelope -------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"MAIL FROM:<a@contoso.test>\rRCPT TO:<x@fabrikam.test>", b"501 5.1.7 Invalid address"),
        (b"MAIL FROM:<a\r@contoso.test>", b"501 5.1.7 Invalid address"),
        (b"MAIL FROM:<a\x00@contoso.test>", b"501 5.1.7 Invalid address"),
        (b"MAIL FROM:<a@contoso.test\rBcc: x@fabrikam.test>", b"501 5.1.7 Invalid address"),
        (b"MAIL FROM:<\xc3\xa9@contoso.test>", b"501 5.1.7 Invalid address"),
        (b"MAIL FROM:<\xff@contoso.test>", b"501 5.1.7 Invalid address"),
        (b"MAIL FROM:<a@contoso.test> ENVID=x+0D+0ABcc:+20y", b"501 5.5.4 Invalid arguments"),
        (b"MAIL FROM:<a@contoso.test> ENVID=x+0", b"501 5.5.4 Invalid arguments"),
        (b"MAIL FROM:<a@contoso.test> AUTH=<>+0A", b"501 5.5.4 Invalid arguments"),
        (b"MAIL FROM:<a@contoso.test> SIZE=\xc2\xb2", b"501 5.5.4 Invalid arguments"),
        (b"MAIL FROM:<a@contoso.test> SIZE=\xd9\xa1\xd9\xa2", b"501 5.5.4 Invalid arguments"),
        (b"MAIL FROM:<a@contoso.test> SIZE=-1", b"501 5.5.4 Invalid arguments"),
        (b"MAIL FROM:<a@contoso.test> BODY=8BITMIME\rX", b"555 5.5.4 Unsupported option: X"),
    ],
)
def test_injection_in_mail_from_is_refused(command, expected):
    h = session()
    assert h.feed(command + b"\r\n") == expected + b"\r\n"
    assert h.feed(b"RCPT TO:<b@contoso.test>\r\n") == b"503 5.5.2 Need mail command\r\n"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"RCPT TO:<b@contoso.test>\rRCPT TO:<c@fabrikam.test>", b"501 5.1.3 Invalid address"),
        (b"RCPT TO:<b@contoso.test\n>",  # a bare LF ends a command line
         b"501 5.1.3 Invalid address\r\n500 5.3.3 Unrecognized command"),
        (b"RCPT TO:<b\x7f@contoso.test>", b"501 5.1.3 Invalid address"),
        (b"RCPT TO:<b@contoso.test> ORCPT=rfc822;b+0D+0ABcc:+20x@y.test",
         b"501 5.5.4 Invalid arguments"),
        (b"RCPT TO:<b@contoso.test> ORCPT=b@contoso.test", b"501 5.5.4 Invalid arguments"),
        (b"RCPT TO:<b@contoso.test> ORCPT=rfc822;+ZZ", b"501 5.5.4 Invalid arguments"),
        (b"RCPT TO:<b@contoso.test> NOTIFY=SUCCESS\rX", b"555 5.5.4 Unsupported option: X"),
    ],
)
def test_injection_in_rcpt_to_is_refused(command, expected):
    h = session()
    h.feed(b"MAIL FROM:<a@contoso.test>\r\n")
    assert h.feed(command + b"\r\n") == expected + b"\r\n"
    assert h.feed(b"DATA\r\n") == b"503 5.5.2 Need rcpt command\r\n"


@pytest.mark.parametrize("name", [b"evil\rX-Injected: yes", b"a\x00b", b"\xff\xfe", b"a\tb"])
def test_hello_name_that_would_inject_into_received_is_refused(name):
    """The HELO name goes into this server's Received: header; a bare CR or a control
    character would start a header line of the attacker's choosing."""
    h = connect()
    h.output()
    assert h.feed(b"EHLO " + name + b"\r\n") == b"501 5.5.4 Invalid domain name\r\n"
    assert h.feed(b"MAIL FROM:<a@contoso.test>\r\n") == b"503 5.5.2 Send hello first\r\n"


# -- XSHADOW / MAIL XSHADOW= / XQDISCARD with malformed base64 and GUIDs -----------------


def _b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


@pytest.mark.parametrize(
    "argument",
    [
        _b64(b"guid@HUB01"),  # two parts
        _b64(b"guid@HUB01@tls@extra"),  # four parts
        _b64(b"guid@@tls"),  # no server name
        _b64(b"guid@HUB\r\n01@tls"),  # control characters
        _b64(b"\xff\xfe@HUB01@x"),  # not UTF-8
        _b64(b"guid@HUB01@x")[:-1],  # bad padding
        b"====",
        b"Z3VpZEBIVUIwMUB4\xc3\xa9",  # non-ASCII after valid base64
        b"Z3VpZEBIVUIwMUB4" + b"\x00",
        b"A" * 256,  # one over the limit
        b"A" * 2000,  # huge
    ],
)
def test_malformed_xshadow_context_is_501(argument):
    h = session()
    assert h.feed(b"XSHADOW " + argument + b"\r\n") == b"501 5.5.4 Invalid arguments\r\n"
    # A refused XSHADOW leaves the session unshadowed, and it may try again.
    assert h.feed(f"XSHADOW {CONTEXT}\r\n".encode()).startswith(b"250 ")
    no_traceback(h)


@pytest.mark.parametrize(
    "value",
    [
        b"5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d2",  # 35 characters
        b"5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d211",  # 37
        b"5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4dzz",  # not hex
        b"XQ==" * 9,  # base64, not a GUID
        b"5d0a8a3e+2D1f7b-4c1e-9a55-2b8f0c6e4d2+",  # broken xtext
        b"{5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d2}",
        b"\xc2\xb2" * 18,
        b"5" * 1500,
        b"",
    ],
)
def test_malformed_shadow_message_id_is_501(value):
    h = session()
    h.feed(f"XSHADOW {CONTEXT}\r\n".encode())
    out = h.feed(b"MAIL FROM:<a@contoso.test> XSHADOW=" + value + b"\r\n")
    assert out == b"501 5.5.4 Invalid arguments\r\n"
    no_traceback(h)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        (b"\xc2\xb2", b"501 5.5.4 Invalid arguments"),
        (b"\xd9\xa5\xd9\xa0", b"501 5.5.4 Invalid arguments"),
        (b"-5", b"501 5.5.4 Invalid arguments"),
        (b"1e3", b"501 5.5.4 Invalid arguments"),
        (b"50 50", b"501 5.5.4 Invalid arguments"),
        (b"\xff", b"501 5.5.4 Invalid arguments"),
        (b"9" * 1000, b"251 OK, no discard events"),  # capped at 1000, not an overflow
    ],
)
def test_malformed_xqdiscard_count(argument, expected):
    h = session()
    h.feed(f"XSHADOW {CONTEXT}\r\n".encode())
    assert h.feed(b"XQDISCARD " + argument + b"\r\n") == expected + b"\r\n"


# -- binary, NUL and non-UTF-8 input; lines that never end --------------------------------


def test_nul_and_binary_commands_are_unrecognized_then_the_session_closes():
    h = connect()
    h.output()
    out = h.feed(b"\x00" * 300 + b"\r\n" + b"NOOP\x00\r\n" + b"\xff\xfe\xfd\r\n"
                 + b"\x1b[2J\r\n" + b"EHLO\x00x\r\n")
    assert out == b"500 5.3.3 Unrecognized command\r\n" * 5 + (
        b"421 4.7.0 Too many errors on this connection, closing transmission channel\r\n")
    assert h.transport.disconnecting


def test_non_utf8_bytes_reach_a_real_protocol_log_escaped(tmp_path: Path):
    """A command with bytes that are not UTF-8 used to end the session with an encoding
    error in the protocol log; now it is logged escaped and answered."""
    clock = Clock()
    clock.advance(NOW)
    log = ProtocolLog(tmp_path, kind="SmtpReceive", clock=clock)
    factory = ExchangeESMTPFactory(
        ServerSettings("Default HUB01", "hub01.contoso.test"), FakePolicy(), clock, log)
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=_addr("127.0.0.1", 1),
                                hostAddress=_addr("127.0.0.1", 2))
    proto.makeConnection(transport)
    transport.clear()
    proto.dataReceived(b"NOOP \xff\xfe\r\nVRFY \xc3(\r\nQUIT\r\n")
    assert transport.value() == (b"250 2.0.0 OK\r\n252 2.1.5 Cannot VRFY user\r\n"
                                 b"221 2.0.0 Service closing transmission channel\r\n")
    log.close()
    assert log.current_path is not None
    data = [row.data for row in read_protocol_log(log.current_path) if row.event == "<"]
    assert data == ["NOOP \\udcff\\udcfe", "VRFY \\udcc3(", "QUIT"]


def test_endless_command_line_is_refused_once_and_memory_stays_bounded():
    """10 MB without a line end: one 500, the bytes are dropped as they come."""
    h = connect()
    h.output()
    replies = b""
    for _ in range(160):
        replies += h.feed(b"A" * 65536)
        assert len(h.proto._buffer) <= 65536 + 2048
    assert replies == b"500 5.5.2 Line too long\r\n"
    assert h.feed(b"tail\r\nNOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_endless_data_line_is_read_and_refused_with_bounded_memory():
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", max_message_size=2**20)
    h = session(settings=settings)
    h.feed(MAIL + b"DATA\r\n")
    for _ in range(100):
        assert h.feed(b"B" * 65536) == b""
        assert len(h.proto._buffer) < 16 and h.proto._transaction.spool._file.tell() < 2**16
    assert h.feed(b"\r\n.\r\n") == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert h.policy.stored == []


# -- a session cut off in the middle of anything -------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [b"MAIL FROM:<a@cont", MAIL + b"DATA\r\nSubject: x\r\n\r\npartial\r\n.",
     b"MAIL FROM:<a@contoso.test> BODY=BINARYMIME\r\nRCPT TO:<b@contoso.test>\r\n"
     b"BDAT 100 LAST\r\nonly part",
     MAIL + b"BDAT 5\r\n12345BDAT 10 LAST\r\n123", b"AUTH LOGIN\r\n", b"\r"],
)
def test_truncated_session_at_eof_stores_nothing_and_raises_nothing(tail):
    h = session()
    h.feed(tail)
    h.proto.connectionLost(None)
    assert h.policy.stored == []
    assert h.proto.factory.sessions == set()
    no_traceback(h)


# -- BDAT with bad sizes, mixed with DATA ------------------------------------------------


@pytest.mark.parametrize("argument", [b"", b"-1", b"1.5", b"\xc2\xb2", b"\xd9\xa1", b"0x10",
                                      b"5 LAST extra", b"5 NOTLAST", b"99999999999999999999x"])
def test_bdat_with_a_size_that_cannot_be_read_closes_the_session(argument):
    """The chunk's length is unknown, so its bytes cannot be told from commands: 501 and
    close (Exchange cannot resynchronise either)."""
    h = session()
    h.feed(MAIL)
    out = h.feed(b"BDAT " + argument + b"\r\nMAIL FROM:<evil@x.test>\r\n")
    assert out == b"501 5.5.4 Invalid arguments\r\n"
    assert h.transport.disconnecting and h.policy.stored == []


def test_bdat_larger_than_the_limit_is_read_and_dropped_without_storing_it():
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", max_message_size=2**16)
    h = session(settings=settings)
    h.feed(MAIL)
    size = 2**22
    assert h.feed(f"BDAT {size} LAST\r\n".encode()) == b""
    for _ in range(size // 2**16 - 1):
        assert h.feed(b"\x00" * 2**16) == b""
    assert h.proto._transaction.spool._file.tell() <= 2**16
    assert h.feed(b"\x00" * 2**16 + b"NOOP\r\n") == (
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n")
    assert h.policy.stored == []


def test_data_after_a_bdat_chunk_is_refused_and_bdat_text_inside_data_is_body():
    h = session()
    h.feed(MAIL)
    assert h.feed(b"BDAT 3\r\nabcDATA\r\n") == (
        b"250 2.0.0 CHUNK received OK, 3 octets\r\n"
        b"503 5.5.1 Bad sequence of commands: BODY=BINARYMIME requires BDAT\r\n")
    assert h.feed(b"BDAT 2 LAST\r\nde").startswith(b"250 2.6.0")
    assert h.policy.stored[-1].body.endswith(b"\r\n\r\nabcde") or \
        h.policy.stored[-1].body.endswith(b"abcde")
    h.feed(MAIL + b"DATA\r\n")
    out = h.feed(b"BDAT 5 LAST\r\nhello\r\n.\r\n")
    assert out.startswith(b"250 2.6.0") and out.count(b"\r\n") == 1
    assert h.policy.stored[-1].body.endswith(b"BDAT 5 LAST\r\nhello\r\n")


def test_bdat_zero_last_on_an_empty_transaction_is_one_empty_message():
    h = session()
    h.feed(MAIL)
    assert h.feed(b"BDAT 0 LAST\r\n").startswith(b"250 2.6.0")
    assert len(h.policy.stored) == 1


# -- pipelining far ahead of a held reply --------------------------------------------------


def test_flood_behind_a_held_reply_pauses_the_client_instead_of_buffering_it():
    policy = FakePolicy()
    policy.hold = True
    h = session(policy)
    h.feed(MAIL + b"DATA\r\nx\r\n.\r\n")
    for _ in range(40):
        h.feed(b"NOOP\r\n" * 10000)
    assert h.transport.producerState == "paused"
    policy.held[0].callback(None)
    assert h.transport.value().startswith(b"250 2.6.0")


# -- found by the fuzzers (tests/test_smtp_fuzz.py) ---------------------------------------


def test_stuffed_dot_line_arriving_byte_by_byte_is_unstuffed():
    """A "..\\r\\n" line fed one byte at a time was cut between its CRLF and its dots,
    so the stuffed dot stayed in the body."""
    h = session()
    h.feed(MAIL + b"DATA\r\n")
    for byte in b"Subject: s\r\n..\r\n...x\r\n.\r\n":
        h.feed(bytes([byte]))
    assert h.policy.stored[0].body.endswith(b"Subject: s\r\n.\r\n..x\r\n")


def test_command_line_of_exactly_the_limit_is_not_refused_when_its_cr_comes_alone():
    """A line of max_command_line_length bytes whose CR arrived before its LF was refused
    as too long; the same bytes in one packet were not."""
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", max_command_line_length=80)
    h = connect(settings=settings)
    h.output()
    line = b"NOOP " + b"x" * 75
    assert h.feed(line + b"\r") == b""
    assert h.feed(b"\n") == b"250 2.0.0 OK\r\n"
