"""The receive side of a transport server: relay control, hop count, commit
before acknowledgement — the real policy and queue database behind the protocol."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from org_files import chain_org
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from exchange_emu.directory import load_organization
from exchange_emu.logs.tracking_log import NullMessageTrackingLog
from exchange_emu.smtp.server import ExchangeESMTPFactory
from exchange_emu.storage import QueueDatabase, QueueStore
from exchange_emu.transport.engine import Categorizer, TransportEngine
from exchange_emu.transport.receive_policy import TransportReceivePolicy
from exchange_emu.transport.server import receive_settings
from exchange_emu.transport.tracking import TransportTracking


class ReceivePolicyTests(TestCase):
    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="exchange-emu-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        config, _ = chain_org(directory)
        self.organization = load_organization(config)
        self.server = self.organization.server("HUB01")
        self.db = QueueDatabase(f"sqlite:///{directory / 'q.db'}", reactor=reactor)
        self.db.open()
        self.addCleanup(self.db.stopService)
        self.submitted: list[int] = []

    def connect(self, org_peer: bool, categorizer: Categorizer | None = None) -> StringTransport:
        connector = self.server.receive_connectors[0]
        if not org_peer:
            connector = dataclasses.replace(connector, org_server_networks=())
        policy = TransportReceivePolicy(self.organization, self.server, connector,
                                        QueueStore(self.db), Clock(),
                                        on_submitted=self.submitted.append,
                                        categorizer=categorizer)
        self.clock = Clock()
        factory = ExchangeESMTPFactory(receive_settings(self.server, connector), policy,
                                       self.clock)
        self.proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 25))
        self.proto.makeConnection(transport)
        self.proto.dataReceived(b"EHLO client.example\r\n")
        transport.clear()
        return transport

    def feed(self, transport: StringTransport, data: bytes) -> bytes:
        transport.clear()
        self.proto.dataReceived(data)
        return transport.value()

    def test_anonymous_peer_may_not_relay_to_a_foreign_domain(self):
        t = self.connect(org_peer=False)
        out = self.feed(t, b"MAIL FROM:<x@example.net>\r\nRCPT TO:<erin@fabrikam.test>\r\n"
                           b"RCPT TO:<alice@contoso.test>\r\n")
        # The refusal is tarpitted (TarpitInterval, 5 s), and what follows waits for it.
        assert out == b"250 2.1.0 Sender OK\r\n"
        self.clock.advance(5)
        assert t.value() == (b"250 2.1.0 Sender OK\r\n550 5.7.1 Unable to relay\r\n"
                             b"250 2.1.5 Recipient OK\r\n")

    def test_org_server_may_relay_anywhere(self):
        t = self.connect(org_peer=True)
        out = self.feed(t, b"MAIL FROM:<x@contoso.test>\r\nRCPT TO:<erin@fabrikam.test>\r\n")
        assert out.endswith(b"250 2.1.5 Recipient OK\r\n")

    async def test_acknowledged_only_after_commit_then_submitted(self):
        t = self.connect(org_peer=True)
        self.feed(t, b"MAIL FROM:<x@contoso.test>\r\nRCPT TO:<erin@fabrikam.test>\r\nDATA\r\n")
        t.clear()
        self.proto.dataReceived(b"Message-ID: <c@x>\r\n\r\nbody\r\n.\r\n")
        assert t.value() == b""  # the commit runs on the database thread first
        for _ in range(100):  # bounded: let the writer's result arrive
            if t.value():
                break
            await self.db.write(lambda conn: None)
        assert t.value().startswith(b"250 2.6.0 <c@x> [InternalId=1, Hostname=hub01")
        assert self.submitted == [1]
        stored = await QueueStore(self.db).get_message(1)
        assert stored.message_id == "<c@x>"

    async def send(self, t: StringTransport, rcpt: str, message_id: str) -> int:
        """One message over the session; its InternalId once the 250 came (bounded wait)."""
        self.feed(t, f"MAIL FROM:<x@contoso.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        t.clear()
        self.proto.dataReceived(f"Message-ID: {message_id}\r\n\r\nbody\r\n.\r\n".encode())
        for _ in range(100):
            if t.value():
                break
            await self.db.write(lambda conn: None)
        reply = t.value().decode()
        assert reply.startswith(f"250 2.6.0 {message_id} [InternalId="), reply
        return int(reply.split("InternalId=")[1].split(",")[0])

    async def test_categorized_on_receipt_straight_into_its_delivery_queue(self):
        """Every recipient has a next hop: the one receive commit puts the message in that
        delivery queue (not Submission), and the queue has it; an unknown recipient of an
        authoritative domain still goes through Submission (the categorizer's NDR)."""
        engine = TransportEngine(self.organization, self.server, self.db,
                                 TransportTracking(self.server, NullMessageTrackingLog()),
                                 reactor, clock=Clock())
        t = self.connect(org_peer=True, categorizer=engine.categorizer)
        routed = await self.send(t, "erin@fabrikam.test", "<routed@x>")
        hop = engine.route("erin@fabrikam.test")
        stored = await QueueStore(self.db).get_message(routed)
        assert [(r.queue, r.next_hop) for r in stored.recipients] == [(hop.name, hop.name)]
        assert routed in engine.queues[hop.name].items
        assert self.submitted == []
        unknown = await self.send(t, "nobody@contoso.test", "<unknown@x>")
        stored = await QueueStore(self.db).get_message(unknown)
        assert [(r.queue, r.next_hop) for r in stored.recipients] == [("Submission", None)]
        assert self.submitted == [unknown]

    async def test_hop_count_over_the_connector_limit_is_refused(self):
        t = self.connect(org_peer=True)
        limit = self.server.receive_connectors[0].max_hop_count
        self.feed(t, b"MAIL FROM:<x@contoso.test>\r\nRCPT TO:<erin@fabrikam.test>\r\nDATA\r\n")
        out = self.feed(t, b"Received: from a\r\n" * limit + b"\r\nloop\r\n.\r\n")
        assert out == b"554 5.4.6 Hop count exceeded - possible mail loop\r\n"
        assert self.submitted == []
