"""The ESMTP server protocol of an Exchange 2010 receive connector.

Exact bytes of protocol.md §1–§4 and §7: Exchange's banner and EHLO list,
``XSHADOW``, ``MAIL … XSHADOW=``, ``XQDISCARD``, ``XEXCH50``, ``BDAT``,
``STARTTLS``/``X-ANONYMOUSTLS``. Replies never change order. Commands are handled
one after the other: while a reply is pending (a policy decision, a tarpit) later
pipelined input waits in the buffer — except behind a message's commit (or its held
delayed acknowledgement): a client pipelining its next messages (RFC 2920) has their
``MAIL``, ``RCPT``, ``DATA`` and ``BDAT`` handled at once, up to :data:`COMMITS_AHEAD`
commits in flight, so consecutive messages of a session commit together; their replies
wait in the outbox behind the pending ``250``.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import itertools
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_emu.smtp import replies
from exchange_emu.smtp.body import BodySpool, DotDecoder
from exchange_emu.smtp.envelope import (
    EnvelopeSyntaxError,
    decode_shadow_context,
    is_number,
    parse_path_command,
    parse_shadow_message_id,
    xtext_decode,
)
from exchange_emu.smtp.interfaces import (
    Acceptance,
    IReceivePolicy,
    NullSessionLogFactory,
    ReceivedMessage,
    Recipient,
    ServerSettings,
    SessionInfo,
    SessionLog,
    SessionLogFactory,
)
from exchange_emu.smtp.replies import Reply

log = Logger()

MAX_XEXCH50_BLOB = 1024 * 1024
MAX_DISCARD_QUERY = 1000
STEPS_PER_TURN = 25
"""Pipelined commands (or body chunks) one session handles before the others get a turn."""
COMMITS_AHEAD = 20
"""Messages of one session whose commits may be in flight at once (pipelined messages)."""
OUTBOX_LIMIT = 128
"""Replies the outbox may hold behind a pending commit before reading stops (a client
pipelining far ahead waits; TCP back-pressure does the rest)."""
_AHEAD_VERBS = frozenset({b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET"})
"""Commands handled while an earlier message's commit is pending: the next transaction's."""
_BODY_TYPES = ("7BIT", "8BITMIME", "BINARYMIME")
_NOTIFY_VALUES = {"NEVER", "SUCCESS", "FAILURE", "DELAY"}


def rfc2822_date(when: float) -> str:
    """``Sat, 28 Nov 2026 13:00:00 +0000`` (UTC), as in Exchange's banner."""
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))


class _Transaction:
    """One mail transaction: from ``MAIL`` to the end of the body or ``RSET``."""

    def __init__(self, sender: str, params: dict[str, str | None]) -> None:
        self.sender = sender
        self.params = params
        self.recipients: list[Recipient] = []
        self.shadow_message_id: str | None = None
        self.body_type = (params.get("BODY") or "7BIT").upper()
        self.xexch50: bytes | None = None
        self.spool: BodySpool | None = None
        self.bdat_failed: Reply | None = None

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class _Slot:
    """One reply in the outbox: known, or still waiting for its message's commit."""

    __slots__ = ("reply",)

    def __init__(self, reply: Reply | None) -> None:
        self.reply = reply


class ExchangeESMTP(Protocol):
    """One SMTP receive session on an Exchange 2010 receive connector."""

    def __init__(
        self,
        settings: ServerSettings,
        policy: IReceivePolicy,
        clock: IReactorTime,
        session_log_factory: SessionLogFactory,
        session_id: str,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.clock = clock
        self._log_factory = session_log_factory
        self.session_id = session_id
        self.session: SessionInfo | None = None
        self.protocol_log: SessionLog = NullSessionLogFactory().open_session("", "", "")
        self._buffer = bytearray()  # consumed from the front: del is O(1) there
        self._mode = "command"
        self._busy = False
        self._processing = False
        self._closed = False
        self._discarding_long_line = False
        self._transaction: _Transaction | None = None
        self._decoder: DotDecoder | None = None
        self._raw_remaining = 0
        self._raw_done: Callable[[], object] | None = None
        self._raw_sink: Callable[[bytes], None] | None = None
        self._errors = 0
        self._xshadow_used = False
        self._messages = 0
        self._idle_timer: IDelayedCall | None = None
        self._session_timer: IDelayedCall | None = None
        self._paused_transport = False
        self._writes_blocked = False  # the client does not read its replies
        self._producing_for_transport = False
        self._next_turn: IDelayedCall | None = None  # a flood waits for its next turn
        self._tarpit: IDelayedCall | None = None  # a held 5xx (TarpitInterval)
        self._auth_continuation: Callable[[str], Any] | None = None
        self._outbox: deque[_Slot] = deque()
        """Replies that wait, in order, behind a commit still in progress."""
        self._commits_in_flight = 0
        self._commit: Deferred[Any] | None = None  # the last body handed to the policy
        self._close_when_flushed = False

    # -- connection -----------------------------------------------------

    def connectionMade(self) -> None:
        transport: Any = self.transport
        _no_delay(transport)
        if getattr(transport, "registerProducer", None) is not None:
            transport.registerProducer(self, True)  # told when its write buffer is full
            self._producing_for_transport = True
        local, peer = transport.getHost(), transport.getPeer()
        self.session = SessionInfo(
            session_id=self.session_id,
            connector_name=self.settings.connector_name,
            local_ip=getattr(local, "host", "127.0.0.1"),
            local_port=getattr(local, "port", 0),
            peer_ip=getattr(peer, "host", "127.0.0.1"),
            peer_port=getattr(peer, "port", 0),
        )
        self.session = self._with(org_server=self.policy.is_org_server(self.session))
        self.protocol_log = self._log_factory.open_session(
            self.settings.connector_name,
            f"{self.session.local_ip}:{self.session.local_port}",
            f"{self.session.peer_ip}:{self.session.peer_port}",
        )
        self.protocol_log.connected()
        refusal = self.factory.admit(self) if isinstance(self.factory, ExchangeESMTPFactory) \
            else None
        if refusal is not None:
            self._send(refusal)
            self._close()
            return
        self._idle_timer = self.clock.callLater(
            self.settings.connection_inactivity_timeout, self._timed_out
        )
        self._session_timer = self.clock.callLater(
            self.settings.connection_timeout, self._timed_out
        )
        self._respond(self._faulted("CONNECT", lambda: replies.r(220, self._banner())))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        if isinstance(self.factory, ExchangeESMTPFactory):
            self.factory.release(self)
        for timer in (self._idle_timer, self._session_timer, self._next_turn, self._tarpit):
            if timer is not None and timer.active():
                timer.cancel()
        self._outbox.clear()
        if self._transaction is not None and (not self._busy or self._tarpit is not None):
            self._transaction.close()  # (a Deferred of the policy may still hold it)
        self.protocol_log.disconnected()

    def _with(self, **changes: Any) -> SessionInfo:
        assert self.session is not None
        fields = dict(self.session.__dict__)
        fields.update(changes)
        return SessionInfo(**fields)

    def _timed_out(self) -> None:
        if self._closed or self._mode == "closing":
            return
        if self._busy or self._outbox:  # a held reply is not the client's inactivity
            self._idle_timer = self.clock.callLater(
                self.settings.connection_inactivity_timeout, self._timed_out
            )
            return
        self.protocol_log.info("Connection timed out")
        self._send(replies.TIMED_OUT)
        self._close()

    def _close(self) -> None:
        self._mode = "closing"
        self._buffer.clear()
        if self._outbox:  # the replies owed go out first
            self._close_when_flushed = True
            return
        transport: Any = self.transport
        if self._producing_for_transport:
            # A TLS transport shuts down only once no producer is registered.
            self._producing_for_transport = False
            transport.unregisterProducer()
        transport.loseConnection()

    def _send(self, reply: Reply) -> None:
        if self._closed:
            return
        if self._outbox:
            self._outbox.append(_Slot(reply))
            return
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        self.protocol_log.sent(reply.text.replace("\n", " / ") if len(reply.lines) > 1
                               else f"{reply.code} {reply.lines[0]}")
        self.transport.write(reply.to_bytes())  # type: ignore[union-attr]

    # -- input ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._mode == "closing":
            return
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.reset(self.settings.connection_inactivity_timeout)
        self._buffer += data
        self._process()

    def _process(self) -> None:
        if self._processing or self._next_turn is not None:
            return
        self._processing = True
        try:
            steps = {"command": self._command_step, "data": self._data_step,
                     "raw": self._raw_step}
            turn = 0
            while self._buffer and not self._busy and self._mode in steps:
                if self._outbox and not self._may_run_ahead():
                    break  # resumed when the outbox has gone out (_flush)
                if turn == STEPS_PER_TURN:
                    # A client pipelining without end: let every other session have
                    # its turn before this one goes on (its reading is paused till then).
                    self._next_turn = self.clock.callLater(0, self._take_turn)
                    break
                turn += 1
                if not steps[self._mode]():
                    break
        finally:
            self._processing = False
        self._flow_control()

    def _may_run_ahead(self) -> bool:
        """Behind a pending commit, go on only with the next message's commands."""
        if self._mode != "command":
            return True  # the body of the next message
        if (self._commits_in_flight >= COMMITS_AHEAD or len(self._outbox) >= OUTBOX_LIMIT
                or self._auth_continuation is not None):
            return False
        end = self._buffer.find(b"\n")
        if end < 0:
            return True  # an incomplete line: read on (a too long one is answered in order)
        verb = bytes(self._buffer[:min(end, 5)]).split(b" ", 1)[0].rstrip(b"\r").upper()
        return verb in _AHEAD_VERBS

    def _respond_to_body(self, result: Reply | Deferred[Any] | None) -> None:
        """The reply to a whole body: a commit in progress takes its place in the outbox and
        later pipelined commands go on (see the module doc); anything else as usual."""
        if not isinstance(result, Deferred) or result is not self._commit:
            self._respond(result)
            return
        self._commit = None
        slot = _Slot(None)
        self._outbox.append(slot)
        self._commits_in_flight += 1
        result.addErrback(self._command_failed)
        result.addCallback(self._committed, slot)

    def _committed(self, reply: Reply, slot: _Slot) -> None:
        self._commits_in_flight -= 1
        delay = self._tarpit_delay(reply)
        if delay > 0:  # as _answer would, the refusal waits its tarpit (still in order)
            self._commits_in_flight += 1
            self.protocol_log.info(f"Tarpit for '{_timespan(delay)}' due to '{reply}'")
            self.clock.callLater(delay, self._committed_after_tarpit, reply, slot)
            return
        slot.reply = reply
        self._flush()

    def _committed_after_tarpit(self, reply: Reply, slot: _Slot) -> None:
        self._commits_in_flight -= 1
        slot.reply = reply
        self._flush()

    def _flush(self) -> None:
        """Send the outbox's replies that are ready, in order; then carry on reading."""
        while self._outbox and self._outbox[0].reply is not None:
            reply = self._outbox.popleft().reply
            assert reply is not None
            if not self._closed:
                self._write(reply)
        if self._closed:
            return
        if not self._outbox and self._close_when_flushed:
            self._close_when_flushed = False
            self._close()
            return
        self._process()

    def _take_turn(self) -> None:
        self._next_turn = None
        if not self._closed:
            self._process()

    def _flow_control(self) -> None:
        """Stop reading from a client that pipelines far ahead of a held reply, that does
        not read its replies, or that waits for its next turn (TCP back-pressure does the
        rest)."""
        if self._closed or self._mode == "closing":
            return
        waiting = self._busy or (bool(self._outbox) and not self._may_run_ahead())
        backlog = len(self._buffer) > 1024 * 1024 and waiting
        pause = backlog or self._writes_blocked or self._next_turn is not None
        transport: Any = self.transport
        if pause and not self._paused_transport:
            self._paused_transport = True
            transport.pauseProducing()
        elif not pause and self._paused_transport:
            self._paused_transport = False
            transport.resumeProducing()

    # IPushProducer: the transport says when its write buffer is full and drained again.

    def pauseProducing(self) -> None:
        self._writes_blocked = True
        self._flow_control()

    def resumeProducing(self) -> None:
        self._writes_blocked = False
        self._flow_control()

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost does the cleaning up."""

    def _command_step(self) -> bool:
        newline = self._buffer.find(b"\n")
        limit = self.settings.max_command_line_length
        if newline < 0:
            if self._discarding_long_line:
                self._buffer.clear()  # still the refused line: already answered
            elif len(self._buffer) - self._buffer.endswith(b"\r") > limit:
                # Refuse now (a last CR may still be the line's end, so it does not
                # count); drop the rest of this line when its end comes.
                self._buffer.clear()
                self._discarding_long_line = True
                self._answer(replies.LINE_TOO_LONG)
            return False
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        if self._discarding_long_line:
            self._discarding_long_line = False
            return True
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > limit:
            self._answer(replies.LINE_TOO_LONG)
            return True
        if self._auth_continuation is not None:
            continuation, self._auth_continuation = self._auth_continuation, None
            self.protocol_log.received("****")
            self._respond(continuation(line.decode("utf-8", "replace")))
            return True
        self._command(line)
        return True

    def _command(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "surrogateescape")
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        self.protocol_log.received(text if verb != "AUTH" else "AUTH ****")
        handler = getattr(self, f"smtp_{verb.replace('-', '_')}", None)
        if handler is None or not verb.replace("-", "").isalnum():
            self._answer(replies.UNRECOGNIZED)
            return
        if verb == "BDAT":  # a scripted BDAT reply answers the last chunk (see _end_of_body)
            self._respond(self._run_handler(verb, handler, argument))
            return
        helo = argument.strip(" ") if verb in ("EHLO", "HELO") else None
        self._respond(self._faulted(verb, lambda: self._run_handler(verb, handler, argument),
                                    helo=helo))

    def _scripted_reply(self, reply: Reply | None, close: bool) -> Reply | None:
        if not close:
            return reply
        assert reply is not None
        self._send(reply)
        self._close()
        return None

    def _run_handler(self, verb: str, handler: Any, argument: str) -> Any:
        try:
            return handler(argument.strip(" "))
        except Exception:
            log.failure("SMTP command {verb} failed", verb=verb)
            return replies.LOCAL_ERROR

    def _faulted(self, stage: str, run: Callable[[], Any], helo: str | None = None,
                 replaced: Callable[[], None] | None = None) -> Any:
        """The reply at ``stage`` as the server's fault plan (exchange_emu/fault_plan.py)
        has it: a partition, a slow server or a scripted reply; else ``run()``."""
        plan = getattr(self.factory, "faults", None)
        if plan is None:
            return run()
        fault = plan.intercept(stage, helo or (self.session.helo if self.session else None))
        if fault is None:
            return run()
        self.protocol_log.info(f"fault injection at {stage}")
        if fault.blackhole:  # no answer, and input waits, until the partition heals
            return plan.healed(self.clock, lambda: self._closed, helo).addCallback(
                lambda _: self._faulted(stage, run, helo, replaced))
        answer = run
        if fault.replaces:
            if replaced is not None:
                replaced()
            answer = lambda: self._scripted_reply(fault.reply, fault.close)  # noqa: E731
        if fault.delay > 0:
            return deferLater(self.clock, fault.delay, answer)
        return answer()

    def _respond(self, result: Reply | Deferred[Any] | None) -> None:
        if isinstance(result, Deferred):
            self._busy = True
            result.addErrback(self._command_failed)
            result.addCallback(self._deferred_reply)
        elif result is not None:
            self._answer(result)

    def _answer(self, reply: Reply) -> None:
        """Send a reply now or, a 5xx to an anonymous peer, after TarpitInterval (Exchange
        slows down a peer that may be abusing the connection; later input waits)."""
        interval = self._tarpit_delay(reply)
        if interval > 0:
            self._busy = True
            self.protocol_log.info(f"Tarpit for '{_timespan(interval)}' due to '{reply}'")
            self._tarpit = self.clock.callLater(interval, self._after_tarpit, reply)
            return
        self._deliver(reply)

    def _tarpit_delay(self, reply: Reply) -> float:
        """TarpitInterval for a 5xx to an anonymous peer, else 0."""
        assert self.session is not None
        anonymous = not self.session.org_server and self.session.authenticated_as is None
        return self.settings.tarpit_interval if reply.code >= 500 and anonymous else 0.0

    def _after_tarpit(self, reply: Reply) -> None:
        self._tarpit = None
        self._busy = False
        self._deliver(reply)
        if not self._closed:
            self._process()

    def _deliver(self, reply: Reply) -> None:
        if reply.code in (500, 501, 503, 555):
            self._protocol_error(reply)
        else:
            self._send(reply)

    def _command_failed(self, failure: Failure) -> Reply:
        log.failure("SMTP command failed", failure)
        return replies.LOCAL_ERROR

    def _deferred_reply(self, reply: Reply | None) -> None:
        self._busy = False
        self._respond(reply)
        if not self._closed:
            self._process()

    def _protocol_error(self, reply: Reply) -> None:
        self._errors += 1
        if self._errors >= self.settings.max_protocol_errors:
            self._send(reply)
            self._send(replies.TOO_MANY_ERRORS)
            self._close()
            return
        self._send(reply)

    # -- session verbs ----------------------------------------------------

    def _banner(self) -> str:
        """The 220 greeting: Exchange 2010/2007's, Exchange 2003's, or a plain MTA's."""
        now = rfc2822_date(self.clock.seconds())
        fqdn = self.settings.fqdn
        if self.settings.flavor == "non-exchange":
            return f"{fqdn} ESMTP ready"
        if self.settings.flavor == "2003":
            return (f"{fqdn} Microsoft ESMTP MAIL Service, Version: 6.0.3790.4675 ready at "
                    f"{now}")
        return f"{fqdn} Microsoft ESMTP MAIL Service ready at {now}"

    def ehlo_keywords(self) -> list[str]:
        """The EHLO keywords of this server's dialect, in Exchange's order (protocol.md §1).
        Exchange 2003 adds X-EXPS and X-LINK2STATE; neither 2003 nor 2007 has XSHADOW."""
        s = self.settings
        assert self.session is not None
        tls_offered = s.tls is not None and not self.session.tls
        if s.flavor == "non-exchange":
            size = f"SIZE {s.max_message_size}" if s.max_message_size else "SIZE"
            starttls = ["STARTTLS"] if tls_offered else []
            return [size, "PIPELINING", "DSN", "ENHANCEDSTATUSCODES", *starttls, "8BITMIME"]
        org = self.session.org_server and not s.client_connector
        keywords = [
            f"SIZE {s.max_message_size}" if s.max_message_size else "SIZE",
            "PIPELINING",
            "DSN",
            "ENHANCEDSTATUSCODES",
        ]
        if tls_offered:
            keywords.append("STARTTLS")
            if self._anonymous_tls_offered():
                keywords.append("X-ANONYMOUSTLS")
        if self._mechanisms():
            keywords.append("AUTH " + " ".join(self._mechanisms()))
        if s.flavor == "2003":
            keywords.append("X-EXPS GSSAPI NTLM")
        keywords += ["8BITMIME", "BINARYMIME", "CHUNKING"]
        if s.flavor == "2003":
            keywords.append("X-LINK2STATE")
        if org:
            keywords.append("XEXCH50")
        if s.flavor == "2010" and not s.client_connector:
            keywords.append("XRDST")
        if org and s.flavor == "2010" and self.policy.shadow_redundancy_enabled:
            keywords.append("XSHADOW")
        return keywords

    def _anonymous_tls_offered(self) -> bool:
        """X-ANONYMOUSTLS: Exchange 2007 and 2010, never on a Client connector."""
        return self.settings.flavor in ("2010", "2007") and not self.settings.client_connector

    def _peer_certificate(self) -> bytes | None:
        """The client certificate of the finished TLS handshake (DER), if one was sent."""
        get = getattr(self.transport, "getPeerCertificate", None)
        certificate = get() if get is not None else None
        if certificate is None:
            return None
        return bytes(certificate.to_cryptography().public_bytes(Encoding.DER))

    def _identify_peer(self) -> None:
        """After TLS: which org server (if any) the peer's certificate proves it is."""
        assert self.session is not None
        if not self.session.tls or self.session.peer_certificate is not None:
            return
        der = self._peer_certificate()
        if der is None:
            self.protocol_log.info("TLS: no client certificate")
            return
        self.session = self._with(peer_certificate=der)
        server = self.policy.certificate_server(self.session)
        self.session = self._with(certificate_server=server)
        self.protocol_log.info(f"TLS: client certificate proves {server}" if server
                               else "TLS: client certificate proves no org server")

    def _greeting(self, argument: str, esmtp: bool) -> Reply:
        if not _is_hello_name(argument):
            return replies.INVALID_DOMAIN
        self._reset_transaction()
        self.session = self._with(helo=argument, esmtp=esmtp, shadow_context=None)
        self._xshadow_used = False
        self._identify_peer()
        self.session = self._with(org_server=self.policy.is_org_server(self.session))
        first = replies.hello(self.settings.fqdn, self.session.peer_ip)
        if not esmtp:
            return replies.r(250, first)
        return Reply(250, (first, *self.ehlo_keywords()))

    def smtp_EHLO(self, argument: str) -> Reply:
        return self._greeting(argument, esmtp=True)

    def smtp_HELO(self, argument: str) -> Reply:
        return self._greeting(argument, esmtp=False)

    def smtp_NOOP(self, argument: str) -> Reply:
        return replies.OK

    def smtp_HELP(self, argument: str) -> Reply:
        return replies.HELP

    def smtp_VRFY(self, argument: str) -> Reply:
        return replies.CANNOT_VRFY

    def smtp_RSET(self, argument: str) -> Reply:
        self._reset_transaction()
        return replies.RESETTING

    def smtp_QUIT(self, argument: str) -> None:
        self._send(replies.CLOSING)
        self._close()

    def _start_tls(self, argument: str) -> Reply | None:
        assert self.session is not None
        if self.settings.tls is None or self.session.tls:
            return replies.UNRECOGNIZED
        if argument:
            return replies.INVALID_ARGUMENTS
        if self._transaction is not None:
            return replies.BAD_SEQUENCE
        self._send(replies.TLS_READY)
        # Anything pipelined after the command arrived in clear text before
        # the handshake: discard it, never execute it.
        self._buffer.clear()
        self.transport.startTLS(self.settings.tls)  # type: ignore[union-attr]
        self.session = self._with(tls=True, helo=None, esmtp=False, shadow_context=None,
                                  authenticated_as=None)
        self._xshadow_used = False
        self.protocol_log.info("TLS negotiation started")
        return None

    def smtp_STARTTLS(self, argument: str) -> Reply | None:
        return self._start_tls(argument)

    def smtp_X_ANONYMOUSTLS(self, argument: str) -> Reply | None:
        if not self._anonymous_tls_offered():
            return replies.UNRECOGNIZED
        return self._start_tls(argument)

    # -- AUTH (client submission) -------------------------------------------------

    def _mechanisms(self) -> tuple[str, ...]:
        """The mechanisms offered now: none outside TLS under BasicAuthRequireTLS."""
        assert self.session is not None
        if self.settings.auth_requires_tls and not self.session.tls:
            return ()
        return self._all_mechanisms()

    def _all_mechanisms(self) -> tuple[str, ...]:
        return tuple(m for m in self.settings.auth_mechanisms if m in ("LOGIN", "PLAIN"))

    def smtp_AUTH(self, argument: str) -> Reply | Deferred[Any] | None:
        """AUTH PLAIN [response] / AUTH LOGIN against the organization's mailboxes."""
        assert self.session is not None
        if self.session.helo is None:
            return replies.SEND_HELLO_FIRST
        if not self._all_mechanisms():
            return replies.UNRECOGNIZED
        if not self._mechanisms():
            return replies.STARTTLS_FIRST
        if self.session.authenticated_as is not None:
            return replies.AUTH_ALREADY
        if self._transaction is not None:
            return replies.BAD_SEQUENCE
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in self._mechanisms():
            return replies.AUTH_UNKNOWN_MECHANISM
        if mechanism == "PLAIN":
            if initial:
                return self._auth_plain(initial)
            self._auth_continuation = self._auth_plain
            return replies.r(334, "")
        username: list[str] = []

        def got_username(line: str) -> Reply | None:
            decoded = _b64(line)
            if line == "*" or decoded is None:
                return replies.AUTH_CANCELLED
            username.append(decoded)
            self._auth_continuation = got_password
            return replies.r(334, "UGFzc3dvcmQ6")

        def got_password(line: str) -> Reply | Deferred[Any]:
            decoded = _b64(line)
            if line == "*" or decoded is None:
                return replies.AUTH_CANCELLED
            return self._check_credentials(username[0], decoded)

        if initial:
            return got_username(initial)
        self._auth_continuation = got_username
        return replies.r(334, "VXNlcm5hbWU6")

    def _auth_plain(self, response: str) -> Reply | Deferred[Any]:
        decoded = _b64(response)
        if response == "*" or decoded is None or decoded.count("\0") != 2:
            return replies.AUTH_CANCELLED
        _authzid, username, password = decoded.split("\0")
        return self._check_credentials(username, password)

    def _check_credentials(self, username: str, password: str) -> Deferred[Any]:
        assert self.session is not None
        session = self.session

        def decided(ok: Any) -> Reply:
            if not ok:
                self.protocol_log.info(f"AUTH failed for {username!r}")
                return replies.AUTH_FAILED
            self.session = self._with(authenticated_as=username)
            self.protocol_log.info(f"authenticated as {username}")
            return replies.AUTH_OK

        return maybeDeferred(self.policy.authenticate, session, username, password).addCallback(
            decided)

    # -- shadow redundancy verbs -------------------------------------------

    def _org_verb_refusal(self) -> Reply | None:
        assert self.session is not None
        if self.session.helo is None:
            return replies.BAD_SEQUENCE
        if self.settings.client_connector:
            return replies.NOT_IMPLEMENTED
        if not self.session.org_server:
            return replies.NOT_AUTHORIZED
        return None

    def smtp_XSHADOW(self, argument: str) -> Reply:
        """The shadow holder asks to shadow this session (protocol.md §2)."""
        assert self.session is not None
        if self.session.helo is None:
            return replies.BAD_SEQUENCE
        if (self.settings.client_connector or not self.policy.shadow_redundancy_enabled
                or self.settings.flavor != "2010"):
            return replies.NOT_IMPLEMENTED
        if not self.session.org_server:
            return replies.NOT_AUTHORIZED
        if self._transaction is not None or self._xshadow_used:
            return replies.BAD_SEQUENCE
        if not argument:
            return replies.SHADOW_CONTEXT_REQUIRED
        try:
            context = decode_shadow_context(argument)
        except EnvelopeSyntaxError:
            return replies.INVALID_ARGUMENTS
        proved = self.session.certificate_server
        if proved is not None and context.server_name.lower() != proved.lower():
            # A server proved by certificate shadows (and collects discards) only as itself.
            self.protocol_log.info(f"XSHADOW context names {context.server_name}; "
                                   f"certificate proves {proved}")
            return replies.NOT_AUTHORIZED
        self._xshadow_used = True
        self.session = self._with(shadow_context=context.encoded)
        return replies.r(250, self.policy.database_id())

    def smtp_XQDISCARD(self, argument: str) -> Reply | Deferred[Reply]:
        """The shadow holder collects discard notifications (protocol.md §4)."""
        refusal = self._org_verb_refusal()
        if refusal is not None:
            return refusal
        assert self.session is not None
        if self.session.shadow_context is None:
            return replies.BAD_SEQUENCE
        if not argument:
            return replies.DISCARD_COUNT_REQUIRED
        if not is_number(argument) or int(argument) <= 0:
            return replies.INVALID_ARGUMENTS
        maximum = min(int(argument), MAX_DISCARD_QUERY)
        d = self.policy.take_discards(self.session, maximum)

        def reply(ids: list[str]) -> Reply:
            if not ids:
                return replies.NO_DISCARD_EVENTS
            return Reply(250, tuple(ids[:maximum]))

        return d.addCallback(reply)

    def smtp_XEXCH50(self, argument: str) -> Reply | None:
        """Exchange 2003/2007 per-message MAPI properties: a raw byte blob."""
        refusal = self._org_verb_refusal()
        if refusal is not None:
            return refusal
        if self._transaction is None or not self._transaction.recipients:
            return replies.BAD_SEQUENCE
        parts = argument.split()
        if len(parts) != 2 or not all(is_number(p) for p in parts):
            return replies.INVALID_ARGUMENTS
        length = int(parts[0])
        if length > MAX_XEXCH50_BLOB:
            return replies.INVALID_ARGUMENTS
        transaction = self._transaction
        chunks: list[bytes] = []

        def done() -> Reply:
            transaction.xexch50 = b"".join(chunks)
            return replies.XEXCH50_OK

        self._send(replies.SEND_BINARY_DATA)
        self._read_raw(length, chunks.append, done)
        return None

    # -- mail transaction -------------------------------------------------

    def _reset_transaction(self) -> None:
        if self._transaction is not None:
            self._transaction.close()
        self._transaction = None

    def smtp_MAIL(self, argument: str) -> Reply | Deferred[Any] | None:
        assert self.session is not None
        if self.session.helo is None:
            return replies.SEND_HELLO_FIRST
        if self._transaction is not None:
            return replies.SENDER_ALREADY_SPECIFIED
        if self.settings.require_tls and not self.session.tls:
            return replies.STARTTLS_FIRST
        if self.settings.require_authentication and self.session.authenticated_as is None:
            return replies.AUTH_REQUIRED
        if self._messages >= self.settings.max_messages_per_connection > 0:
            self._send(replies.TOO_MANY_MESSAGES)
            self._close()
            return None
        try:
            command = parse_path_command(argument, "FROM")
        except EnvelopeSyntaxError:
            return replies.INVALID_SENDER
        authenticated = self.session.authenticated_as
        if authenticated is not None and command.address.lower() != authenticated.lower():
            return replies.SEND_AS_DENIED
        params = command.params
        refusal = self._check_mail_params(params)
        if refusal is not None:
            return refusal
        shadow_id = None
        if "XSHADOW" in params:
            try:
                shadow_id = parse_shadow_message_id(params["XSHADOW"] or "")
            except EnvelopeSyntaxError:
                return replies.INVALID_ARGUMENTS
        transaction = _Transaction(command.address, params)
        transaction.shadow_message_id = shadow_id

        def decided(refusal: Any) -> Reply:
            if refusal is not None:
                return refusal
            self._transaction = transaction
            return replies.SENDER_OK

        session = self.session
        return maybeDeferred(
            self.policy.check_sender, session, command.address, params
        ).addCallback(decided)

    def _check_mail_params(self, params: dict[str, str | None]) -> Reply | None:
        assert self.session is not None
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not is_number(value):
                    return replies.INVALID_ARGUMENTS
                if self.settings.max_message_size and int(value) > self.settings.max_message_size:
                    return replies.SIZE_EXCEEDED
            elif key == "BODY":
                if value is None or value.upper() not in _BODY_TYPES:
                    return replies.INVALID_ARGUMENTS
            elif key == "XSHADOW":
                if self.session.shadow_context is None or value is None:
                    return replies.INVALID_ARGUMENTS
            elif key == "RET":
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    return replies.INVALID_ARGUMENTS
            elif key in ("ENVID", "AUTH"):
                if value is None or not _printable_xtext(value):
                    return replies.INVALID_ARGUMENTS
            else:
                return replies.unsupported_parameter(key)
        return None

    def smtp_RCPT(self, argument: str) -> Reply | Deferred[Any]:
        assert self.session is not None
        transaction = self._transaction
        if transaction is None:
            return replies.NEED_MAIL
        try:
            command = parse_path_command(argument, "TO")
        except EnvelopeSyntaxError:
            return replies.INVALID_RECIPIENT
        notify = orcpt = None
        for key, value in command.params.items():
            if key == "NOTIFY":
                words = set((value or "").upper().split(","))
                if not words <= _NOTIFY_VALUES or ("NEVER" in words and len(words) > 1):
                    return replies.INVALID_ARGUMENTS
                notify = (value or "").upper()
            elif key == "ORCPT":
                # addr-type ";" xtext (RFC 3461), nothing that decodes to a line break
                if not value or ";" not in value or not _printable_xtext(value):
                    return replies.INVALID_ARGUMENTS
                orcpt = value
            else:
                return replies.unsupported_parameter(key)
        if len(transaction.recipients) >= self.settings.max_recipients_per_message:
            return replies.TOO_MANY_RECIPIENTS
        recipient = Recipient(command.address, notify, orcpt)

        def decided(refusal: Any) -> Reply:
            if refusal is not None:
                return refusal
            transaction.recipients.append(recipient)
            return replies.RECIPIENT_OK

        return maybeDeferred(
            self.policy.check_recipient, self.session, transaction.sender, recipient
        ).addCallback(decided)

    def _new_spool(self, max_line_length: int) -> BodySpool:
        return BodySpool(self.settings.max_message_size or 2**62, max_line_length)

    def smtp_DATA(self, argument: str) -> Reply | None:
        transaction = self._transaction
        if transaction is None:
            return replies.NEED_MAIL
        if not transaction.recipients:
            return replies.NEED_RCPT
        if argument:
            return replies.INVALID_ARGUMENTS
        if transaction.body_type == "BINARYMIME" or transaction.spool is not None:
            return replies.BINARYMIME_NEEDS_BDAT
        transaction.spool = self._new_spool(self.settings.max_data_line_length)
        self._decoder = DotDecoder(transaction.spool)
        self._mode = "data"
        self._send(replies.START_MAIL_INPUT)
        return None

    def _data_step(self) -> bool:
        assert self._decoder is not None
        rest = self._decoder.feed(bytes(self._buffer))
        self._buffer.clear()
        if rest is None:
            return False
        self._buffer += rest
        self._mode = "command"
        self._decoder = None
        self._respond_to_body(self._end_of_body("DOT"))
        return True

    def smtp_BDAT(self, argument: str) -> Reply | None:
        """``BDAT <size> [LAST]`` (CHUNKING): exactly ``size`` raw bytes follow."""
        parts = argument.split()
        valid = (
            len(parts) in (1, 2)
            and is_number(parts[0])
            and (len(parts) == 1 or parts[1].upper() == "LAST")
        )
        if not valid:
            # The chunk size is unknown: the session cannot be resynchronised.
            self._send(replies.INVALID_ARGUMENTS)
            self._close()
            return None
        size, last = int(parts[0]), len(parts) == 2
        transaction = self._transaction
        failure: Reply | None = None
        if transaction is None:
            failure = replies.NEED_MAIL
        elif not transaction.recipients:
            failure = replies.NEED_RCPT
        if failure is not None or transaction is None:
            # Read and drop the chunk so its bytes are never taken as commands. The
            # transaction has failed (RFC 3030): a MAIL pipelined after it starts a new one
            # instead of being refused and its recipients joining this sender's.
            self._reset_transaction()
            refusal = failure or replies.BAD_SEQUENCE
            self._read_raw(size, lambda data: None, lambda: refusal)
            return None
        if transaction.spool is None:
            transaction.spool = self._new_spool(2**62)
        spool = transaction.spool

        def chunk_done() -> Reply | Deferred[Any] | None:
            if not last:
                return replies.chunk_received(size)
            return self._end_of_body("BDAT")

        self._read_raw(size, spool.write, chunk_done)
        return None

    def _read_raw(
        self, size: int, sink: Callable[[bytes], None], done: Callable[[], Any]
    ) -> None:
        self._mode = "raw"
        self._raw_remaining = size
        self._raw_sink = sink
        self._raw_done = done
        if size == 0:
            self._finish_raw()

    def _raw_step(self) -> bool:
        assert self._raw_sink is not None
        take = bytes(self._buffer[: self._raw_remaining])
        del self._buffer[: len(take)]
        self._raw_remaining -= len(take)
        self._raw_sink(take)
        if self._raw_remaining:
            return False
        self._finish_raw()
        return True

    def _finish_raw(self) -> None:
        done = self._raw_done
        self._mode = "command"
        self._raw_done = self._raw_sink = None
        assert done is not None
        result: Any
        try:
            result = done()
        except Exception:
            log.failure("raw read completion failed")
            result = replies.LOCAL_ERROR
        self._respond_to_body(result)

    def _end_of_body(self, stage: str) -> Reply | Deferred[Any] | None:
        """The whole body is in (after DATA's dot, or BDAT LAST): the fault plan's reply,
        or the server's own."""
        transaction = self._transaction

        def drop() -> None:
            self._transaction = None
            if transaction is not None:
                transaction.close()

        return self._faulted(stage, self._commit_body, replaced=drop)

    def _commit_body(self) -> Reply | Deferred[Any]:
        """Refuse the body, or hand it to the policy to commit."""
        transaction = self._transaction
        assert transaction is not None and transaction.spool is not None and self.session
        self._transaction = None
        spool = transaction.spool
        if spool.oversize:
            transaction.close()
            return replies.SIZE_EXCEEDED
        if spool.line_too_long:
            transaction.close()
            return replies.BODY_LINE_TOO_LONG
        if spool.header_size_exceeds(self.settings.max_header_size):
            transaction.close()
            return replies.HEADER_SIZE_EXCEEDED
        message_id, subject, hops = _header_facts(spool.headers(self.settings.max_header_size))
        prefix = self._trace_headers()
        if message_id is None:
            message_id = f"<{uuid.uuid4()}@{self.settings.fqdn}>"
            prefix += f"Message-ID: {message_id}\r\n".encode()
        spool.prefix = prefix
        params = transaction.params
        message = ReceivedMessage(
            session=self.session,
            sender=transaction.sender,
            recipients=tuple(transaction.recipients),
            body=spool.open(),  # type: ignore[arg-type]
            size=spool.size + len(prefix),
            message_id=message_id,
            subject=subject,
            hop_count=hops,
            body_type=transaction.body_type,
            envid=params.get("ENVID"),
            ret=params.get("RET"),
            shadow_message_id=transaction.shadow_message_id,
            xexch50=transaction.xexch50,
        )
        self._messages += 1

        def answer(result: Acceptance | Reply) -> Reply:
            if isinstance(result, Reply):
                return result
            for line in result.log_lines:
                self.protocol_log.info(line)
            return replies.queued(result.message_id, result.internal_id, self.settings.fqdn)

        d = maybeDeferred(self.policy.accept, message)
        d.addCallback(answer)
        d.addBoth(_passthrough_after(transaction.close))
        self._commit = d
        return d

    def _trace_headers(self) -> bytes:
        """The ``Received:`` header this server adds, as Exchange writes it."""
        assert self.session is not None
        tls = " (TLS)" if self.session.tls else ""
        return (
            f"Received: from {self.session.helo} ({self.session.peer_ip}) by "
            f"{self.settings.fqdn} ({self.session.local_ip}) with Microsoft SMTP Server{tls} "
            f"id {self.settings.software_version}; {rfc2822_date(self.clock.seconds())}\r\n"
        ).encode("utf-8", "surrogateescape")


def _b64(text: str) -> str | None:
    """Decode a base64 SASL line (None when it is not base64 of UTF-8)."""
    try:
        return base64.b64decode(text.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
        return None


def _timespan(seconds: float) -> str:
    """``0.00:00:05`` (d.hh:mm:ss[.fff]), as Exchange's protocol log writes a tarpit."""
    millis = round(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    text = f"{whole // 86400}.{whole // 3600 % 24:02}:{whole // 60 % 60:02}:{whole % 60:02}"
    return text + (f".{ms:03}" if ms else "")


def _printable_xtext(value: str) -> bool:
    """RFC 3461 xtext that decodes to printable US-ASCII: an ``ENVID`` or ``ORCPT`` with an
    encoded CR or LF would inject lines into the DSN this server may write later."""
    try:
        decoded = xtext_decode(value)
    except EnvelopeSyntaxError:
        return False
    return all(32 <= ord(c) < 127 for c in decoded)


def _is_hello_name(argument: str) -> bool:
    """A HELO/EHLO domain or address literal: printable ASCII, no spaces. A bare CR or a
    control character would end up in the ``Received:`` header this server writes."""
    return bool(argument) and argument.isascii() and all(33 <= ord(c) < 127 for c in argument)


def _no_delay(transport: Any) -> None:
    """Replies go out at once: without TCP_NODELAY, Nagle's algorithm holds a reply
    behind the peer's delayed ACK of the previous one (about 40 ms on Linux)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


def _passthrough_after(action: Callable[[], None]) -> Callable[[Any], Any]:
    def run(result: Any) -> Any:
        action()
        return result

    return run


_FIELD_LINE = re.compile(r"[\x21-\x39\x3b-\x7e]+:")
"""A header field's first line, as the email package's feed parser accepts it."""


def _header_facts(header_block: bytes) -> tuple[str | None, str, int]:
    """Message-ID, Subject and the number of ``Received:`` headers.

    A plain header block (ASCII, CRLF lines, well-formed field names) is read directly,
    about twenty times faster; anything else goes to the email package (compat32), whose
    answers the fast reading equals (tests/test_smtp_server.py checks it property-wise).
    """
    facts = _plain_header_facts(header_block)
    return facts if facts is not None else _parsed_header_facts(header_block)


def _plain_header_facts(header_block: bytes) -> tuple[str | None, str, int] | None:
    """:func:`_header_facts` of a plain header block, or None when it is not one."""
    if not header_block.isascii():
        return None
    fields: list[list[str]] = []
    for line in header_block.decode("ascii").split("\r\n"):
        if "\r" in line or "\n" in line:
            return None
        if not line:
            break
        if line[0] in " \t":
            if not fields:
                return None
            fields[-1].append(line)
        elif line.startswith("From ") or _FIELD_LINE.match(line) is None:
            return None
        else:
            fields.append([line])
    message_id: str | None = None
    subject: str | None = None
    received = 0
    for lines in fields:
        name, _, value = lines[0].partition(":")
        name = name.lower()
        if name == "received":
            received += 1
        elif name == "message-id" and message_id is None:
            if len(lines) > 1:
                return None  # folded inside: as the email package keeps it
            message_id = value.strip()
        elif name == "subject" and subject is None:
            subject = " ".join(" ".join([value, *lines[1:]]).split())
    return message_id or None, subject or "", received


def _parsed_header_facts(header_block: bytes) -> tuple[str | None, str, int]:
    """:func:`_header_facts` by the email package."""
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
            header_block
        )
    except Exception:
        return None, "", 0
    message_id = headers.get("Message-ID")
    subject = headers.get("Subject") or ""
    received = headers.get_all("Received") or []
    message_id = str(message_id).strip() if message_id else None
    return message_id or None, " ".join(str(subject).split()), len(received)


class ExchangeESMTPFactory(ServerFactory):
    """Builds the sessions of one receive connector."""

    def __init__(
        self,
        settings: ServerSettings,
        policy: IReceivePolicy,
        clock: IReactorTime,
        session_log_factory: SessionLogFactory | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.clock = clock
        self.session_log_factory: SessionLogFactory = (
            session_log_factory or NullSessionLogFactory()
        )
        self.noisy = False
        self.faults: Any = None
        """The server's fault plan (exchange_emu.fault_plan.FaultPlan), if it has one."""
        self.sessions: set[ExchangeESMTP] = set()
        self._per_source: dict[str, int] = {}
        self._ids = itertools.count(int(clock.seconds() * 1000) << 12)

    def admit(self, session: ExchangeESMTP) -> Reply | None:
        """MaxInboundConnection and MaxInboundConnectionPerSource: a reply refusing the new
        session, or None (then it counts until it is released)."""
        assert session.session is not None
        source = session.session.peer_ip
        if len(self.sessions) >= self.settings.max_inbound_connection:
            return replies.TOO_MANY_CONNECTIONS
        if (not session.session.org_server and self._per_source.get(source, 0)
                >= self.settings.max_inbound_connection_per_source):
            # (Servers of the organization count towards the total only: in a lab they
            # all share one address.)
            return replies.TOO_MANY_FROM_SOURCE
        self.sessions.add(session)
        self._per_source[source] = self._per_source.get(source, 0) + 1
        return None

    def release(self, session: ExchangeESMTP) -> None:
        if session not in self.sessions or session.session is None:
            return
        self.sessions.discard(session)
        source = session.session.peer_ip
        self._per_source[source] -= 1
        if not self._per_source[source]:
            del self._per_source[source]

    def buildProtocol(self, addr: Any) -> ExchangeESMTP:
        proto = ExchangeESMTP(
            self.settings,
            self.policy,
            self.clock,
            self.session_log_factory,
            f"{next(self._ids) & 0xFFFFFFFFFFFFFFFF:016X}",
        )
        proto.factory = self
        return proto
