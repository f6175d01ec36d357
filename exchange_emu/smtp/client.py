"""The ESMTP client of an Exchange 2010 send connector.

One session: EHLO (HELO fallback), STARTTLS where offered and wanted,
``XSHADOW`` where advertised and asked for, then each message — pipelined
where the peer offers PIPELINING, sent with BDAT where it offers CHUNKING,
with ``MAIL … XSHADOW=<id>`` on a shadowed session, and then, as long as the caller has
more ready (``SessionRequest.more``), the next ones, with an ``XQDISCARD`` between two
rounds where the caller says one is due; with nothing left to send, the session stays open
while the caller wants it to (``SessionRequest.linger``: a held acknowledgement waits for a
discard notification from this peer) — then ``XQDISCARD <max>`` repeated while the reply
was full (unless the session has just asked), then ``QUIT``. On a shadowed session whose peer
offers PIPELINING and CHUNKING, all the session's messages go out in one pipeline
(RFC 2920, RFC 3030: ``MAIL``, ``RCPT``…, ``BDAT <n> LAST`` and the body, for
each), so the peer can commit them together instead of one round trip each. Every
reply goes back to the caller: the session's outcome, each message's, each
recipient's.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_emu.smtp.envelope import (
    EnvelopeSyntaxError,
    parse_shadow_message_id,
    xtext_encode,
)
from exchange_emu.smtp.interfaces import NullSessionLog, SessionLog
from exchange_emu.smtp.replies import Reply

log = Logger()

MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 2000


class SessionAborted(Exception):
    """The session ended before it was done (connection lost, timeout, bad reply)."""


@dataclass(frozen=True)
class OutboundMessage:
    """A message to send: envelope and the exact body bytes (with headers)."""

    sender: str
    recipients: tuple[str, ...]
    body: bytes
    shadow_message_id: str | None = None
    body_type: str = "7BIT"
    envid: str | None = None
    """``ENVID`` as received: already xtext, sent on unchanged."""
    ret: str | None = None
    xexch50: bytes | None = None
    notify: dict[str, str] = field(default_factory=dict)
    orcpt: dict[str, str] = field(default_factory=dict)
    """``ORCPT`` per recipient as received (``rfc822;`` xtext), sent on unchanged."""


@dataclass(frozen=True)
class SessionRequest:
    """What the caller wants of one outbound session."""

    helo: str
    messages: Sequence[OutboundMessage] = ()
    shadow_context: str | None = None
    """Send ``XSHADOW <context>`` when the peer advertises it (we become shadow holder)."""
    query_discards: bool = True
    discard_max: int = 50
    more: Callable[[SessionOutcome], Awaitable[Sequence[OutboundMessage]]] | None = None
    """Asked once the messages so far are answered: the next messages for this open
    session (an Exchange send connector takes its queue's next messages on an open
    connection, up to ``MaxMessagesPerConnection``); none ends them. Given the outcome so
    far; the new messages' outcomes follow the earlier ones in its ``messages``."""
    linger: Callable[[], Awaitable[bool]] | None = None
    """Asked on a shadowed session that has nothing left to send: true keeps it open (it
    then asks ``discards_due`` and ``more`` again), false ends it."""
    discards_due: Callable[[], bool] | None = None
    """Asked on a shadowed session after each round of messages: true asks ``XQDISCARD``
    there and then, not only at the session's end (a held 250 is waiting for one)."""
    on_discards: Callable[[Sequence[str], float], None] | None = None
    """Called with each XQDISCARD reply's shadow message ids (and when the query was
    sent) as it arrives, before the session ends."""
    tls: Any = None
    """A client TLS connection creator: STARTTLS when the peer offers it."""
    require_tls: bool = False
    use_bdat: bool = True
    use_pipelining: bool = True
    reply_timeout: float = 300.0


@dataclass
class MessageOutcome:
    """Every reply one message got."""

    message: OutboundMessage
    mail_reply: Reply | None = None
    recipient_replies: dict[str, Reply] = field(default_factory=dict)
    xexch50_reply: Reply | None = None
    data_reply: Reply | None = None
    shadowed: bool = False
    """Sent with ``XSHADOW=`` on a session the peer agreed to shadow."""
    elapsed: float = 0.0
    """Seconds from ``MAIL`` to the last reply of this message (on the session's clock)."""
    finished_at: float = 0.0
    """When the last reply of this message arrived (the session's clock)."""

    @property
    def completed(self) -> bool:
        return self.data_reply is not None or self.refused_before_data

    @property
    def refused_before_data(self) -> bool:
        if self.mail_reply is not None and not self.mail_reply.positive:
            return True
        replies = self.recipient_replies
        return bool(replies) and len(replies) == len(self.message.recipients) and not any(
            r.positive for r in replies.values()
        )

    @property
    def accepted(self) -> bool:
        return self.data_reply is not None and self.data_reply.code // 100 == 2

    def recipient_results(self) -> dict[str, Reply | None]:
        """The reply that decided each recipient's fate (None: no answer, session broke)."""
        out: dict[str, Reply | None] = {}
        for rcpt in self.message.recipients:
            if self.mail_reply is not None and not self.mail_reply.positive:
                out[rcpt] = self.mail_reply
                continue
            reply = self.recipient_replies.get(rcpt)
            if reply is None or not reply.positive:
                out[rcpt] = reply
            else:
                out[rcpt] = self.data_reply
        return out


@dataclass
class SessionOutcome:
    """What happened on one outbound session."""

    banner: Reply | None = None
    ehlo: Reply | None = None
    keywords: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    tls_failed: bool = False
    """TLS was required or started and did not work out: nothing was sent (``error``)."""
    shadow_reply: Reply | None = None
    primary_database_id: str | None = None
    messages: list[MessageOutcome] = field(default_factory=list)
    discards: list[str] = field(default_factory=list)
    discard_query: str = "not-asked"  # "ok" | "failed" | "not-asked"
    discards_queried_at: float | None = None
    """When the first ``XQDISCARD`` went out (the session's clock)."""
    error: str | None = None

    @property
    def shadowed(self) -> bool:
        return self.primary_database_id is not None


class ESMTPClientProtocol(Protocol):
    """Reads SMTP replies and hands them out in order."""

    def __init__(self, session_log: SessionLog | None = None) -> None:
        self._buffer = b""
        self._lines: list[str] = []
        self._replies: deque[Reply] = deque()
        self._waiters: deque[Deferred[Reply]] = deque()
        self._lost: Failure | None = None
        self.connected_d: Deferred[None] = Deferred()
        self.protocol_log = session_log or NullSessionLog()

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:  # commands must not wait for a delayed ACK
            set_no_delay(True)
        self.protocol_log.connected()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    self._abort("reply line too long")
                return
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            self._reply_line(raw.rstrip(b"\r").decode("utf-8", "replace"))

    def _reply_line(self, line: str) -> None:
        code = line[:3]
        well_formed = len(line) >= 3 and code.isascii() and code.isdigit()
        if not well_formed or line[3:4] not in ("", " ", "-"):
            self._abort(f"malformed reply line {line[:80]!r}")
            return
        self._lines.append(line[4:])
        if len(self._lines) > MAX_REPLY_LINES:
            self._abort("reply too long")
            return
        if line[3:4] == "-":
            return
        reply = Reply(int(code), tuple(self._lines))
        self._lines = []
        self.protocol_log.received(str(reply))
        if self._waiters:
            self._waiters.popleft().callback(reply)
        else:
            self._replies.append(reply)

    def _abort(self, why: str) -> None:
        self.protocol_log.info(why)
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = reason or Failure(ConnectionDone())
        self.protocol_log.disconnected()
        while self._waiters:
            self._waiters.popleft().errback(self._lost)

    def read_reply(self, clock: IReactorTime, timeout: float) -> Deferred[Reply]:
        if self._replies:
            d: Deferred[Reply] = Deferred()
            d.callback(self._replies.popleft())
            return d
        if self._lost is not None:
            return _failed(self._lost)
        d = Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(d)
        d.addTimeout(timeout, clock)
        return d

    def send(self, *lines: str) -> None:
        for line in lines:
            self.protocol_log.sent(line if not line.startswith("AUTH") else "AUTH ****")
        self.transport.write("".join(f"{line}\r\n" for line in lines).encode())  # type: ignore[union-attr]

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def _tls_failure(error: BaseException) -> str:
    """A handshake failure in a few words: OpenSSL's reasons, or service_identity's."""
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list):
        reasons = [part[-1] for part in args[0] if isinstance(part, tuple) and part[-1]]
        if reasons:
            return "; ".join(str(r) for r in reasons)
    if type(error).__name__ == "VerificationError":
        return "certificate does not name the host (service_identity: " + " ".join(
            str(error).split())[:200] + ")"
    return " ".join((str(error) or type(error).__name__).split())[:300]


def _failed(failure: Failure) -> Deferred[Reply]:
    d: Deferred[Reply] = Deferred()
    d.errback(failure)
    return d


def dot_stuff(body: bytes) -> bytes:
    """The body as DATA sends it: dot-stuffed, CRLF-ended, then ``.``."""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def parse_ehlo(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper-cased) to their parameters."""
    keywords: dict[str, str] = {}
    for line in reply.lines[1:]:
        word, _, params = line.partition(" ")
        keywords[word.upper()] = params
    return keywords


class _Conversation:
    """Drives one session over a connected ``ESMTPClientProtocol``."""

    def __init__(self, proto: ESMTPClientProtocol, request: SessionRequest, clock: IReactorTime):
        self.proto = proto
        self.request = request
        self.clock = clock
        self.outcome = SessionOutcome()

    async def read(self) -> Reply:
        return await self.proto.read_reply(self.clock, self.request.reply_timeout)

    async def command(self, line: str) -> Reply:
        self.proto.send(line)
        return await self.read()

    async def run(self) -> SessionOutcome:
        out = self.outcome
        try:
            out.banner = await self.read()
            if out.banner.code != 220:
                out.error = f"greeting refused: {out.banner}"
                await self.quit()
                return out
            if not await self.hello():
                return out
            if self.request.tls is not None and "STARTTLS" in out.keywords:
                if not await self.starttls():
                    return out
            elif self.request.require_tls:
                out.tls_failed = True
                out.error = ("TLS required but this server has no certificate"
                             if self.request.tls is None
                             else "TLS required but the peer does not offer STARTTLS")
                await self.quit()
                return out
            if self.request.shadow_context is not None and "XSHADOW" in out.keywords:
                await self.xshadow()
            wants_discards = out.shadowed and self.request.query_discards
            linger = self.request.linger if wants_discards else None
            messages = self.request.messages
            just_asked = False
            while True:
                while messages:
                    await self.send_messages(messages)
                    just_asked = False
                    if wants_discards and self._query_due():
                        if not await self.query_discards():
                            return out
                        just_asked = True
                    messages = await self.request.more(out) if self.request.more else ()
                if linger is None:
                    break
                if not await linger():
                    break
                if self._query_due():
                    if not await self.query_discards():
                        return out
                    just_asked = True
                messages = await self.request.more(out) if self.request.more else ()
            # The session ends with XQDISCARD, unless it has just asked and sent nothing since.
            if wants_discards and not just_asked and not await self.query_discards():
                return out
            await self.quit()
        except (CancelledError, TimeoutError):
            out.error = "session ended: no reply in time"
        except Exception as e:  # connection lost or reset mid-session
            out.error = f"session ended: {type(e).__name__}: {e}"
        finally:
            transport: Any = self.proto.transport
            if transport is not None:
                transport.loseConnection()
        return out

    def _query_due(self) -> bool:
        due = self.request.discards_due
        return due is not None and due()

    async def hello(self) -> bool:
        out = self.outcome
        out.ehlo = await self.command(f"EHLO {self.request.helo}")
        if out.ehlo.code == 250:
            out.keywords = parse_ehlo(out.ehlo)
            return True
        out.ehlo = await self.command(f"HELO {self.request.helo}")
        out.keywords = {}
        if out.ehlo.code != 250:
            out.error = f"HELO refused: {out.ehlo}"
            await self.quit()
            return False
        return True

    async def starttls(self) -> bool:
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            if self.request.require_tls:
                self.outcome.tls_failed = True
                self.outcome.error = f"TLS required but STARTTLS was refused: {reply}"
                await self.quit()
                return False
            return True
        transport: Any = self.proto.transport
        transport.startTLS(self.request.tls)
        self.outcome.tls = True
        verified = getattr(self.request.tls, "hostname", None)
        try:
            greeted = await self.hello()
        except (CancelledError, TimeoutError):
            raise
        except Exception as e:  # the handshake failed: no certificate we trust, wrong name
            self.outcome.tls_failed = True
            problem = getattr(self.request.tls, "problem", None) or _tls_failure(e)
            self.outcome.error = f"TLS negotiation failed: {problem}"
            self.proto.protocol_log.info(self.outcome.error)
            return False
        self.proto.protocol_log.info(
            f"TLS negotiated; certificate of {verified} verified" if verified
            else "TLS negotiated (opportunistic: certificate not verified)")
        return greeted

    async def xshadow(self) -> None:
        """Ask the peer to become primary for this session's messages (D.3)."""
        assert self.request.shadow_context is not None
        reply = await self.command(f"XSHADOW {self.request.shadow_context}")
        self.outcome.shadow_reply = reply
        if reply.code == 250 and len(reply.lines) == 1:
            self.outcome.primary_database_id = reply.lines[0].strip()

    def _mail_command(self, message: OutboundMessage, shadowed: bool) -> str:
        keywords = self.outcome.keywords
        parts = [f"MAIL FROM:<{message.sender}>"]
        if "SIZE" in keywords:
            parts.append(f"SIZE={len(message.body)}")
        if shadowed:
            parts.append(f"XSHADOW={xtext_encode(message.shadow_message_id or '')}")
        if message.body_type in ("8BITMIME", "BINARYMIME") and message.body_type in keywords:
            parts.append(f"BODY={message.body_type}")
        if "DSN" in keywords:
            if message.ret:
                parts.append(f"RET={message.ret}")
            if message.envid:
                parts.append(f"ENVID={message.envid}")
        return " ".join(parts)

    def _rcpt_command(self, message: OutboundMessage, rcpt: str) -> str:
        line = f"RCPT TO:<{rcpt}>"
        if "DSN" in self.outcome.keywords:
            if rcpt in message.notify:
                line += f" NOTIFY={message.notify[rcpt]}"
            if rcpt in message.orcpt:
                line += f" ORCPT={message.orcpt[rcpt]}"
        return line

    async def send_message(self, message: OutboundMessage) -> MessageOutcome:
        keywords = self.outcome.keywords
        shadowed = self.outcome.shadowed and message.shadow_message_id is not None
        result = MessageOutcome(message, shadowed=shadowed)
        bdat = self.request.use_bdat and "CHUNKING" in keywords
        if message.body_type == "BINARYMIME" and not bdat:
            result.mail_reply = Reply(554, ("5.6.1 Next hop does not support BINARYMIME",))
            return result
        send_xexch50 = message.xexch50 is not None and "XEXCH50" in keywords
        pipelining = self.request.use_pipelining and "PIPELINING" in keywords
        commands = [self._mail_command(message, shadowed)]
        commands += [self._rcpt_command(message, r) for r in message.recipients]
        body_in_pipeline = pipelining and not send_xexch50
        if body_in_pipeline:
            self.proto.send(*commands)
            if bdat:
                self.proto.send(f"BDAT {len(message.body)} LAST")
                self.proto.send_raw(message.body)
            else:
                self.proto.send("DATA")
            result.mail_reply = await self.read()
            for rcpt in message.recipients:
                result.recipient_replies[rcpt] = await self.read()
        else:
            for i, line in enumerate(commands):
                reply = await self.command(line)
                if i == 0:
                    result.mail_reply = reply
                    if not reply.positive:
                        await self.command("RSET")
                        return result
                else:
                    result.recipient_replies[message.recipients[i - 1]] = reply
            if not any(r.positive for r in result.recipient_replies.values()):
                await self.command("RSET")
                return result
            if send_xexch50:
                assert message.xexch50 is not None
                reply = await self.command(f"XEXCH50 {len(message.xexch50)} 2")
                if reply.code == 354:
                    self.proto.send_raw(message.xexch50)
                    reply = await self.read()
                result.xexch50_reply = reply
            if bdat:
                self.proto.send(f"BDAT {len(message.body)} LAST")
                self.proto.send_raw(message.body)
            else:
                self.proto.send("DATA")
        if bdat:
            result.data_reply = await self.read()
        else:
            go_ahead = await self.read()
            if go_ahead.code != 354:
                result.data_reply = go_ahead
            elif not any(r.positive for r in result.recipient_replies.values()):
                # Nobody to deliver to, yet the peer wants the body: end it empty.
                self.proto.send_raw(b".\r\n")
                await self.read()
                result.data_reply = go_ahead
            else:
                self.proto.send_raw(dot_stuff(message.body))
                result.data_reply = await self.read()
        if not result.accepted:
            await self.command("RSET")
        return result

    async def send_messages(self, messages: Sequence[OutboundMessage]) -> None:
        """One round of messages, in one pipeline where the peer allows it."""
        if self._pipelines_messages(messages):
            await self.send_pipelined(messages)
        elif self._pipelines_data(messages):
            await self.send_data_pipelined(messages)
        else:
            for message in messages:
                started = self.clock.seconds()
                result = await self.send_message(message)
                result.finished_at = self.clock.seconds()
                result.elapsed = result.finished_at - started
                self.outcome.messages.append(result)

    def _pipelines_messages(self, messages: Sequence[OutboundMessage]) -> bool:
        """Several messages on a shadowed session (the peer is an Exchange 2010 server of
        the organization, which takes every recipient from us) offering PIPELINING and
        CHUNKING, and nothing that needs a round trip of its own (XEXCH50's 354).

        Other peers get one message at a time: one whose recipients were all refused may
        keep that transaction open when its BDAT fails, and the next message's pipelined
        RCPTs and body would then join the wrong envelope.
        """
        keywords = self.outcome.keywords
        return (len(messages) > 1 and self.outcome.shadowed
                and self.request.use_pipelining
                and self.request.use_bdat and "PIPELINING" in keywords
                and "CHUNKING" in keywords
                and not ("XEXCH50" in keywords
                         and any(m.xexch50 is not None for m in messages)))

    def _pipelines_data(self, messages: Sequence[OutboundMessage]) -> bool:
        """Several messages to a peer offering PIPELINING that gets them with DATA (no
        CHUNKING, or BDAT not wanted), none needing XEXCH50 or BINARYMIME."""
        keywords = self.outcome.keywords
        bdat = self.request.use_bdat and "CHUNKING" in keywords
        return (len(messages) > 1 and self.request.use_pipelining
                and "PIPELINING" in keywords and not bdat
                and all(m.body_type != "BINARYMIME" for m in messages)
                and not ("XEXCH50" in keywords
                         and any(m.xexch50 is not None for m in messages)))

    def _data_commands(self, message: OutboundMessage) -> list[str]:
        shadowed = self.outcome.shadowed and message.shadow_message_id is not None
        return [self._mail_command(message, shadowed),
                *(self._rcpt_command(message, r) for r in message.recipients), "DATA"]

    async def send_data_pipelined(self, messages: Sequence[OutboundMessage]) -> None:
        """Each message's ``MAIL``, ``RCPT``… and ``DATA`` go in the same write as the
        previous message's body (RFC 2920: after the end of data, the next transaction's
        commands may follow): a round trip per message fewer. Safe with any peer: no body
        goes out before its ``354``, and a message refused before its body is ended with
        ``RSET`` before the next one's commands are sent."""
        out = self.outcome
        self.proto.send(*self._data_commands(messages[0]))
        sent_at = self.clock.seconds()
        for index, message in enumerate(messages):
            following = messages[index + 1] if index + 1 < len(messages) else None
            result = MessageOutcome(
                message, shadowed=out.shadowed and message.shadow_message_id is not None)
            result.mail_reply = await self.read()
            for rcpt in message.recipients:
                result.recipient_replies[rcpt] = await self.read()
            go_ahead = await self.read()
            started, next_sent_at = sent_at, None
            if go_ahead.code == 354 and any(r.positive for r in
                                            result.recipient_replies.values()):
                self.proto.send_raw(dot_stuff(message.body))
                if following is not None:  # the end of data ends this transaction
                    self.proto.send(*self._data_commands(following))
                    next_sent_at = self.clock.seconds()
                result.data_reply = await self.read()
            else:
                if go_ahead.code == 354:  # nobody to deliver to, yet the peer wants a body
                    self.proto.send_raw(b".\r\n")
                    await self.read()
                result.data_reply = go_ahead
                await self.command("RSET")  # (MAIL may have been taken: end it)
                if following is not None:
                    self.proto.send(*self._data_commands(following))
                    next_sent_at = self.clock.seconds()
            result.finished_at = self.clock.seconds()
            result.elapsed = result.finished_at - started
            out.messages.append(result)
            sent_at = next_sent_at if next_sent_at is not None else sent_at

    async def send_pipelined(self, messages: Sequence[OutboundMessage]) -> None:
        """Every message's commands and body in one pipeline, then their replies in order.

        A message refused at any step may leave the peer's transaction open, which would
        spoil the replies to the messages after it: those of them that were not accepted
        are sent again, one at a time, after an ``RSET`` (an accepted one is accepted).
        """
        out = self.outcome
        shadowed = out.shadowed
        started = self.clock.seconds()
        for message in messages:
            self.proto.send(
                self._mail_command(message, shadowed and message.shadow_message_id is not None),
                *(self._rcpt_command(message, r) for r in message.recipients),
                f"BDAT {len(message.body)} LAST")
            self.proto.send_raw(message.body)
        first = len(out.messages)
        for message in messages:
            result = MessageOutcome(
                message, shadowed=shadowed and message.shadow_message_id is not None)
            result.mail_reply = await self.read()
            for rcpt in message.recipients:
                result.recipient_replies[rcpt] = await self.read()
            result.data_reply = await self.read()
            result.finished_at = self.clock.seconds()
            result.elapsed = result.finished_at - started
            out.messages.append(result)
        sent = out.messages[first:]
        refused = [i for i, r in enumerate(sent) if not r.accepted]
        if not refused:
            return
        await self.command("RSET")
        for index in refused[1:]:
            again = self.clock.seconds()
            result = await self.send_message(sent[index].message)
            result.finished_at = self.clock.seconds()
            result.elapsed = result.finished_at - again
            out.messages[first + index] = result

    async def query_discards(self) -> bool:
        """``XQDISCARD <max>``, asked again while the reply was full (D.5–D.6)."""
        out = self.outcome
        maximum = self.request.discard_max
        out.discards_queried_at = self.clock.seconds()
        while True:
            reply = await self.command(f"XQDISCARD {maximum}")
            if reply.code == 251:
                break
            if reply.code != 250:
                out.discard_query = "failed"
                await self.quit()
                return False
            try:
                ids = [parse_shadow_message_id(line.strip()) for line in reply.lines]
            except EnvelopeSyntaxError:
                out.discard_query = "failed"
                out.error = "malformed shadow message id in XQDISCARD reply"
                return False
            out.discards.extend(ids)
            if ids and self.request.on_discards is not None:
                self.request.on_discards(ids, out.discards_queried_at)
            if len(ids) < maximum:
                break
        out.discard_query = "ok"
        return True

    async def quit(self) -> None:
        with contextlib.suppress(Exception):  # the peer may close first
            await self.command("QUIT")


def run_session(
    proto: ESMTPClientProtocol, request: SessionRequest, clock: IReactorTime
) -> Deferred[SessionOutcome]:
    """Converse over an already connected protocol."""
    return Deferred.fromCoroutine(_Conversation(proto, request, clock).run())


def send_session(
    endpoint: IStreamClientEndpoint,
    request: SessionRequest,
    clock: IReactorTime,
    session_log: SessionLog | None = None,
) -> Deferred[SessionOutcome]:
    """Connect, run one session, and report its outcome (connection errors included)."""
    proto = ESMTPClientProtocol(session_log)

    def connected(_: object) -> Deferred[SessionOutcome]:
        return run_session(proto, request, clock)

    def not_connected(failure: Failure) -> SessionOutcome:
        return SessionOutcome(error=f"cannot connect: {failure.getErrorMessage()}")

    factory = _OneSession(proto)
    d = endpoint.connect(factory)
    return d.addCallbacks(connected, not_connected)


class _OneSession(Factory):
    """Connects one given protocol, quietly (no "Starting factory" log lines)."""

    noisy = False

    def __init__(self, proto: ESMTPClientProtocol) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> ESMTPClientProtocol:
        return self.proto
