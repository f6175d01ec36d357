"""The floor of this project's stack: the least a store-and-forward SMTP relay built on
Python, Twisted and SQLite costs, to weigh exchange-emu's figures against (the suite's
systems ``bare``, ``bare2`` and ``bare2-hold``).

Nothing of Exchange: no logs, routing, policy, shadow redundancy or tracking. It accepts any
envelope; commits each message durably before its ``250`` (SQLite, WAL, ``synchronous=FULL``,
one commit per reactor turn for every message that ended in it, on the reactor thread: the
cheapest way in CPU, where exchange-emu commits on a writer thread so that the reactor never
waits for the disk); forwards it to one next hop with ``PIPELINING`` and ``DATA``, in
sessions opened as exchange-emu's delivery queue opens them (a new one when none is open or
20 messages wait that no starting session will take); and deletes it once that hop said
``250``. Restarted, it forwards what it had queued.

``--hold`` acknowledges a message only once the next hop acknowledged it (or after 30 s,
Exchange's ``MaxAcknowledgementDelay``): the shape of delayed acknowledgement, without the
discard notification and the query that close it in Exchange. Two of them in a row are a
floor for exchange-emu's EDGE01 → HUB01 with delayed acknowledgement. A held session
carries one message at a time (``DATA`` waits for the last ``250``), so with ``--hold`` a
new session starts for every message that waits, up to 20 — the most concurrency the next
hop can be given.

``--writer-thread`` commits on a thread of its own instead, as exchange-emu does: what
keeping the disk off the reactor thread costs.

    python benchmarks/bare_relay.py --port 2525 --next 127.0.0.1:2526 --database /tmp/q.db --hold
"""

from __future__ import annotations

import argparse
import collections
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.protocols.basic import LineReceiver
from twisted.python.threadpool import ThreadPool

MESSAGES_PER_SESSION = 20
MAX_SESSIONS = 20
HOLD_LIMIT = 30.0
RETRY_DELAY = 1.0


@dataclass(eq=False)
class Message:
    """A queued message: its row, envelope and body (dot-unstuffed, CRLF line ends)."""

    row: int
    sender: bytes
    recipients: list[bytes]
    body: bytes
    forwarded: defer.Deferred[None] = field(default_factory=defer.Deferred)


class Store:
    """The queue: one SQLite table, written in one transaction for every message that
    ended in a reactor turn — on the reactor thread, or with ``writer_thread`` on a thread
    of its own (as exchange-emu's queue database commits), then for everything that asked
    while the last transaction ran."""

    def __init__(self, path: Path, reactor: Any, writer_thread: bool = False) -> None:
        self.reactor = reactor
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS queue (row INTEGER PRIMARY KEY, "
                        "sender BLOB, recipients BLOB, body BLOB)")
        self.adds: list[tuple[bytes, list[bytes], bytes, defer.Deferred[Message]]] = []
        self.deletes: list[int] = []
        self.flush_call: IDelayedCall | None = None
        self.writer: ThreadPool | None = None
        self.writing = False
        if writer_thread:
            self.writer = ThreadPool(1, 1, "writer")
            self.writer.start()
            reactor.addSystemEventTrigger("after", "shutdown", self.writer.stop)

    def queued(self) -> list[Message]:
        return [Message(row, sender, recipients.split(b"\n"), body) for row, sender,
                recipients, body in self.db.execute("SELECT * FROM queue ORDER BY row")]

    def add(self, sender: bytes, recipients: list[bytes], body: bytes) -> defer.Deferred[Message]:
        """The message, once committed."""
        d: defer.Deferred[Message] = defer.Deferred()
        self.adds.append((sender, recipients, body, d))
        self._schedule()
        return d

    def delete(self, row: int) -> None:
        self.deletes.append(row)
        self._schedule()

    def _schedule(self) -> None:
        if self.flush_call is None and not self.writing:
            self.flush_call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self.flush_call = None
        adds, self.adds = self.adds, []
        deletes, self.deletes = self.deletes, []
        if self.writer is None:
            self._written(adds, deletes, self._transaction(adds, deletes))
            return
        self.writing = True
        deferToThreadPool(self.reactor, self.writer, self._transaction, adds, deletes
                          ).addCallback(lambda result: self._written(adds, deletes, result))

    def _transaction(self, adds: list[tuple[bytes, list[bytes], bytes, Any]],
                     deletes: list[int]) -> list[int | None] | sqlite3.Error:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            rows = [self.db.execute("INSERT INTO queue (sender, recipients, body) "
                                    "VALUES (?, ?, ?)", (s, b"\n".join(r), body)).lastrowid
                    for s, r, body, _ in adds]
            self.db.executemany("DELETE FROM queue WHERE row = ?", [(r,) for r in deletes])
            self.db.execute("COMMIT")
            return rows
        except sqlite3.Error as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            return e

    def _written(self, adds: list[tuple[bytes, list[bytes], bytes, defer.Deferred[Message]]],
                 deletes: list[int], result: list[int | None] | sqlite3.Error) -> None:
        self.writing = False
        if self.adds or self.deletes:
            self._schedule()
        if isinstance(result, sqlite3.Error):
            self.deletes[:0] = deletes  # retried with the next commit
            for *_, d in adds:
                d.errback(result)
            return
        for (sender, recipients, body, d), row in zip(adds, result, strict=True):
            assert row is not None
            d.callback(Message(row, sender, recipients, body))


class Forwarder:
    """The delivery queue to the next hop."""

    def __init__(self, reactor: Any, host: str, port: int, store: Store, batch: int) -> None:
        self.reactor, self.host, self.port, self.store = reactor, host, port, store
        self.batch = batch
        self.waiting: collections.deque[Message] = collections.deque()
        self.sessions = 0
        self.connecting = 0
        """Sessions not yet greeted: each will take up to ``batch`` of the waiting messages."""

    def enqueue(self, message: Message) -> None:
        self.waiting.append(message)
        self._pump()

    def _pump(self) -> None:
        """A new session when none is open, or when a whole batch waits that no session
        about to start will take."""
        while self.sessions < MAX_SESSIONS:
            unclaimed = len(self.waiting) - self.connecting * self.batch
            if unclaimed <= 0 or (self.sessions and unclaimed < self.batch):
                return
            self.sessions += 1
            self.connecting += 1
            self.reactor.connectTCP(self.host, self.port, _SendFactory(self))

    def connection_failed(self) -> None:
        self.sessions -= 1
        self.connecting -= 1
        self.reactor.callLater(RETRY_DELAY, self._pump)

    def take(self) -> Message | None:
        return self.waiting.popleft() if self.waiting else None

    def session_ended(self, unfinished: Message | None) -> None:
        self.sessions -= 1
        if unfinished is not None:  # the connection broke mid-message: try again later
            self.waiting.appendleft(unfinished)
            self.reactor.callLater(RETRY_DELAY, self._pump)
        else:
            self._pump()

    def done(self, message: Message, code: int) -> None:
        """The next hop answered the message's data: ``code``."""
        if code >= 500:
            print(f"bare relay: next hop refused message {message.row} with {code}; "
                  "dropped", file=sys.stderr, flush=True)
        self.store.delete(message.row)
        if not message.forwarded.called:
            message.forwarded.callback(None)


class _SendFactory(protocol.ClientFactory):
    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def buildProtocol(self, addr: object) -> SendSession:
        return SendSession(self.forwarder)

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        self.forwarder.connection_failed()


def _stuffed(body: bytes) -> bytes:
    body = body.replace(b"\r\n.", b"\r\n..")
    return (b"." + body if body.startswith(b".") else body) + b".\r\n"


class SendSession(LineReceiver):
    """One SMTP session to the next hop: EHLO, then MAIL, RCPT…, DATA pipelined, the body,
    while messages wait; QUIT."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.replies: list[int] = []
        self.expected = 1  # the greeting
        self.state = "greeting"
        self.greeted = False
        self.current: Message | None = None

    def lineReceived(self, line: bytes) -> None:
        if line[3:4] == b"-":
            return  # a multi-line reply goes on
        self.replies.append(int(line[:3]))
        if len(self.replies) < self.expected:
            return
        replies, self.replies = self.replies, []
        if self.state == "greeting":
            self._command(b"EHLO bare.relay.test\r\n", "ehlo")
        elif self.state == "ehlo" and self.greeted is False:
            self.greeted = True
            self.forwarder.connecting -= 1
            self._next()
        elif self.state == "ehlo" or self.state == "sent":
            if self.state == "sent":
                assert self.current is not None
                self.forwarder.done(self.current, replies[-1])
                self.current = None
            self._next()
        elif self.state == "envelope":
            assert self.current is not None
            if replies[-1] == 354:
                self._command(_stuffed(self.current.body), "sent")
            else:  # refused before the data: this message fails or waits
                code = next((c for c in replies[:-1] if c >= 400), replies[-1])
                message, self.current = self.current, None
                if code >= 500:
                    self.forwarder.done(message, code)
                else:
                    self.forwarder.waiting.append(message)
                self._command(b"RSET\r\n", "ehlo")
        elif self.state == "quit":
            assert self.transport is not None
            self.transport.loseConnection()

    def _command(self, data: bytes, state: str, expected: int = 1) -> None:
        assert self.transport is not None
        self.state, self.expected = state, expected
        self.transport.write(data)

    def _next(self) -> None:
        message = self.forwarder.take()
        if message is None:
            self._command(b"QUIT\r\n", "quit")
            return
        self.current = message
        envelope = b"MAIL FROM:<%s>\r\n" % message.sender + b"".join(
            b"RCPT TO:<%s>\r\n" % r for r in message.recipients) + b"DATA\r\n"
        self._command(envelope, "envelope", 2 + len(message.recipients))

    def connectionLost(self, reason: object = None) -> None:
        if not self.greeted:
            self.forwarder.connecting -= 1
        self.forwarder.session_ended(self.current)


class ReceiveSession(LineReceiver):
    """One inbound SMTP session. While a ``250`` is held, later commands wait their turn."""

    MAX_LENGTH = 1 << 16

    def __init__(self, relay: BareRelay) -> None:
        self.relay = relay
        self.sender = b""
        self.recipients: list[bytes] = []
        self.data = bytearray()
        self.held: list[bytes] | None = None

    def connectionMade(self) -> None:
        self._reply(b"220 bare.relay.test ESMTP\r\n")

    def _reply(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def lineReceived(self, line: bytes) -> None:
        if self.held is not None:
            self.held.append(line)
            return
        verb = line[:4].upper()
        if verb == b"EHLO":
            self._reply(b"250-bare.relay.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                        b"250 SIZE 52428800\r\n")
        elif verb == b"HELO":
            self._reply(b"250 bare.relay.test\r\n")
        elif verb == b"MAIL":
            self.sender = line.partition(b"<")[2].partition(b">")[0]
            self.recipients = []
            self._reply(b"250 2.1.0 Sender OK\r\n")
        elif verb == b"RCPT":
            self.recipients.append(line.partition(b"<")[2].partition(b">")[0])
            self._reply(b"250 2.1.5 Recipient OK\r\n")
        elif verb == b"DATA":
            if not self.recipients:
                self._reply(b"503 5.5.1 Need RCPT first\r\n")
                return
            self._reply(b"354 Go ahead\r\n")
            self.data = bytearray()
            self.setRawMode()
        elif verb in (b"RSET", b"NOOP"):
            self.recipients = []
            self._reply(b"250 2.0.0 OK\r\n")
        elif verb == b"QUIT":
            self._reply(b"221 2.0.0 Bye\r\n")
            assert self.transport is not None
            self.transport.loseConnection()
        else:
            self._reply(b"500 5.5.2 Unknown command\r\n")

    def rawDataReceived(self, data: bytes) -> None:
        start = max(len(self.data) - 4, 0)
        self.data += data
        if self.data.startswith(b".\r\n"):
            end, body = 0, b""
        else:
            end = self.data.find(b"\r\n.\r\n", start)
            if end < 0:
                return
            body = bytes(self.data[:end + 2])
            end += 2
        rest = bytes(self.data[end + 3:])
        self.data = bytearray()
        body = body.replace(b"\r\n..", b"\r\n.")
        if body.startswith(b".."):
            body = body[1:]
        self.held = []
        self.relay.accept(self.sender, self.recipients, body).addCallbacks(
            self._accepted, self._not_stored)
        self.recipients = []
        self.setLineMode(rest)

    def _accepted(self, _: object) -> None:
        self._reply(b"250 2.6.0 Queued mail for delivery\r\n")
        self._release()

    def _not_stored(self, failure: Any) -> None:
        self._reply(b"451 4.3.0 Not stored: %s\r\n" % str(failure.value).encode()[:200])
        self._release()

    def _release(self) -> None:
        held, self.held = self.held or [], None
        for index, line in enumerate(held):
            self.lineReceived(line)
            if self.held is not None:  # the next message's data: the rest waits again
                self.held.extend(held[index + 1:])
                return


class BareRelay(protocol.ServerFactory):
    def __init__(self, reactor: Any, store: Store, forwarder: Forwarder, hold: bool) -> None:
        self.reactor, self.store, self.forwarder, self.hold = reactor, store, forwarder, hold

    def buildProtocol(self, addr: object) -> ReceiveSession:
        return ReceiveSession(self)

    def accept(self, sender: bytes, recipients: list[bytes], body: bytes
               ) -> defer.Deferred[None]:
        """Fires when the message may be acknowledged: committed, and with ``--hold``
        forwarded too (or held for :data:`HOLD_LIMIT`)."""
        return self.store.add(sender, list(recipients), body).addCallback(self._queued)

    def _queued(self, message: Message) -> defer.Deferred[None] | None:
        self.forwarder.enqueue(message)
        if not self.hold:
            return None
        held: defer.Deferred[None] = defer.Deferred()
        timer = self.reactor.callLater(HOLD_LIMIT, held.callback, None)

        def forwarded(_: object) -> None:
            if timer.active():
                timer.cancel()
                held.callback(None)

        message.forwarded.addCallback(forwarded)
        return held


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--next", required=True, metavar="HOST:PORT")
    parser.add_argument("--database", type=Path, required=True)
    parser.add_argument("--hold", action="store_true",
                        help="acknowledge only once the next hop acknowledged")
    parser.add_argument("--writer-thread", action="store_true",
                        help="commit on a thread of its own, not on the reactor thread")
    args = parser.parse_args()
    host, _, port = args.next.rpartition(":")
    from twisted.internet import reactor

    store = Store(args.database, reactor, args.writer_thread)
    forwarder = Forwarder(reactor, host, int(port), store, 1 if args.hold else MESSAGES_PER_SESSION)
    for message in store.queued():
        forwarder.enqueue(message)
    reactor.listenTCP(args.port, BareRelay(reactor, store, forwarder, args.hold),
                      interface="127.0.0.1")
    print(f"bare relay listening on 127.0.0.1:{args.port}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
