"""What the SMTP fuzzers (hypothesis in test_smtp_fuzz.py, atheris in tests/fuzz/) share:
a receive session over a StringTransport fed arbitrary bytes in arbitrary pieces, and the
invariants every run must keep.

Invariants: no exception escapes ``dataReceived`` and none is logged by the server (a
swallowed one would show as ``451 4.7.0``); every line written is a well-formed SMTP reply;
every ``250 2.6.0`` is one stored message and no message is stored twice; and the same
bytes give the same replies and the same messages however they are cut into packets.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from exchange_emu.smtp.envelope import encode_shadow_context
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.smtp.server import ExchangeESMTPFactory

from smtp_fakes import NOW, FakePolicy, _addr, run_due_calls

CONTEXT = encode_shadow_context("0f3b0c50-985c-4e23-a9b7-4a7b46d456e0", "HUB01", "").encode()

# Small limits, so that short inputs reach every limit; many errors allowed, so that a
# run goes deep instead of ending at the fifth mistake.
SETTINGS = ServerSettings(
    "Default HUB01", "hub01.contoso.test", max_message_size=3000, max_recipients_per_message=3,
    max_protocol_errors=10_000, max_command_line_length=80, max_data_line_length=120,
    max_header_size=400, max_messages_per_connection=6,
)

FRAGMENTS: tuple[bytes, ...] = (
    b"EHLO hub02.contoso.test\r\n", b"HELO x\r\n", b"MAIL FROM:<a@contoso.test>\r\n",
    b"MAIL FROM:<> BODY=BINARYMIME SIZE=100\r\n", b"MAIL FROM:<a@b.test> ENVID=a+2B\r\n",
    b"MAIL FROM:<s@contoso.test> XSHADOW=5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d21\r\n",
    b"RCPT TO:<b@contoso.test>\r\n", b"RCPT TO:<c@contoso.test> NOTIFY=NEVER ORCPT=rfc822;c\r\n",
    b"DATA\r\n", b"BDAT 5\r\n", b"BDAT 3 LAST\r\n", b"BDAT 0 LAST\r\n", b"BDAT x\r\n",
    b"XEXCH50 4 2\r\n", b"XSHADOW " + CONTEXT + b"\r\n", b"XQDISCARD 50\r\n",
    b"AUTH LOGIN\r\n", b"STARTTLS\r\n", b"RSET\r\n", b"NOOP\r\n", b"VRFY a\r\n",
    b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b".\r\n", b"..", b".",
    b"\r\n", b"\r", b"\n", b"\x00", b"\xff\xfe", b"Subject: s\r\n\r\n", b"Message-ID: <m@x>\r\n",
    b"A" * 100, b"B" * 130 + b"\r\n", b" ", b":", b"<", b">", b"=", b"+", b"\t",
)

_REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*")
_GENERATED_ID = re.compile(rb"<[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                           rb"@hub01\.contoso\.test>")


@dataclass(frozen=True)
class Outcome:
    """What one run produced, with generated Message-IDs made comparable."""

    replies: bytes
    messages: tuple[tuple[str, tuple[str, ...], bytes], ...]
    closed: bool


@contextmanager
def logged_failures() -> Iterator[list[dict[str, Any]]]:
    """Collect every failure the server logs (an exception it caught and answered 451)."""
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observe)


def run_session(pieces: Sequence[bytes], org: bool = True,
                commits: random.Random | None = None) -> Outcome:
    """Feed ``pieces`` one ``dataReceived`` each; then the connection is lost.

    With ``commits``, every commit is held and they finish in an order ``commits`` shuffles,
    a few after each piece and the rest at the end: pipelined messages then run ahead of
    pending commits (the server's outbox), which must change nothing the client sees.
    """
    clock = Clock()
    clock.advance(NOW)
    policy = FakePolicy(org=org)
    policy.hold = commits is not None
    factory = ExchangeESMTPFactory(SETTINGS, policy, clock)
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=_addr("127.0.0.1", 50000),
                                hostAddress=_addr("127.0.0.1", 25))

    def finish_some(everything: bool) -> None:
        assert commits is not None
        while True:
            pending = [d for d in policy.held if not d.called]
            if not pending:
                return
            commits.shuffle(pending)
            for d in pending[:None if everything else commits.randint(0, len(pending))]:
                d.callback(None)
                run_due_calls(clock)
            if not everything:
                return

    with logged_failures() as failures:
        proto.makeConnection(transport)
        for piece in pieces:
            if transport.disconnecting:
                break
            proto.dataReceived(piece)
            run_due_calls(clock)
            if commits is not None:
                finish_some(everything=False)
        if commits is not None:
            finish_some(everything=True)
        closed = bool(transport.disconnecting)
        proto.connectionLost(None)
    assert not failures, failures
    assert factory.sessions == set()
    output = transport.value()
    check_replies(output)
    accepted = output.count(b"250 2.6.0 ")
    assert accepted == len(policy.stored), (accepted, len(policy.stored))
    internal_ids = [s.message.message_id for s in policy.stored]
    assert len(set(map(id, policy.stored))) == len(internal_ids)
    messages = tuple((s.message.sender, tuple(r.address for r in s.message.recipients),
                      _GENERATED_ID.sub(b"<generated>", s.body)) for s in policy.stored)
    return Outcome(_GENERATED_ID.sub(b"<generated>", output), messages, closed)


def check_replies(output: bytes) -> None:
    """Every line is ``ddd SP text`` or ``ddd-text``, a multi-line reply keeps its code,
    and the server never says it failed internally."""
    assert output.endswith(b"\r\n") or output == b"", output[-80:]
    code: bytes | None = None
    for line in output.split(b"\r\n")[:-1]:
        assert _REPLY_LINE.fullmatch(line), line
        if code is not None:
            assert line[:3] == code, (code, line)
        code = line[:3] if line[3:4] == b"-" else None
        assert not line.startswith(b"451 4.7.0 Temporary server error"), line
    assert code is None, "unfinished multi-line reply"


def cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted)."""
    if not data:
        return []
    offsets = sorted({p % len(data) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(offsets)]


BODY_PIECES: tuple[bytes, ...] = (
    b"Subject: s\r\n", b"\r\n", b"text", b".", b"..", b"\r", b"\n", b"\n.\n", b"\r.\r",
    b"\r\n.\n", b"\n.\r\n", b"\r\n.\r", b"\x00", b"\xff", b"MAIL FROM:<evil@x.test>\r\n",
    b"QUIT\r\n", b"C" * 150, b"H: " + b"h" * 60 + b"\r\n",
)
MAILS: tuple[bytes, ...] = (
    b"MAIL FROM:<a@contoso.test>\r\n", b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<a@contoso.test> BODY=BINARYMIME\r\n", b"MAIL FROM:<a@contoso.test> SIZE=10\r\n",
    b"MAIL FROM:<s@contoso.test> XSHADOW=5d0a8a3e-1f7b-4c1e-9a55-2b8f0c6e4d21\r\n",
)


def sessions(st: Any) -> Any:
    """A hypothesis strategy: sessions shaped like real ones (EHLO, transactions with DATA
    or BDAT bodies full of smuggling look-alikes), with junk spliced in anywhere."""

    bodies = st.lists(st.one_of(st.sampled_from(BODY_PIECES), st.binary(max_size=12)),
                      max_size=12).map(b"".join)

    @st.composite
    def transaction(draw: Any) -> bytes:
        out = [draw(st.sampled_from(MAILS))]
        out += [b"RCPT TO:<b@contoso.test>\r\n"] * draw(st.integers(0, 4))
        if draw(st.booleans()):
            out += [b"DATA\r\n", draw(bodies), b"\r\n.\r\n"]
        else:
            chunks = draw(st.lists(st.binary(max_size=40), min_size=1, max_size=3))
            for n, chunk in enumerate(chunks):
                last = b" LAST" if n == len(chunks) - 1 else b""
                out += [b"BDAT %d%s\r\n" % (len(chunk), last), chunk]
        return b"".join(out)

    @st.composite
    def session(draw: Any) -> bytes:
        parts = [b"EHLO hub02.contoso.test\r\n"]
        if draw(st.booleans()):
            parts.append(b"XSHADOW " + CONTEXT + b"\r\n")
        for _ in range(draw(st.integers(1, 4))):
            parts.append(draw(transaction()))
            if draw(st.integers(0, 3)) == 0:
                parts.append(draw(st.sampled_from(FRAGMENTS)))
        parts.append(b"XQDISCARD 50\r\nQUIT\r\n")
        data = b"".join(parts)
        if draw(st.integers(0, 3)) == 0:  # splice junk in anywhere
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        return data

    return session()
