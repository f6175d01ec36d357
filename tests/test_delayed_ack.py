"""Delayed acknowledgement (scenario F) on a task.Clock: HUB01's receive connector
holds the 250 of a message from a peer without XSHADOW until Delivered, Expired
or Skipped — the real receive policy and engine, fake next hops on loopback."""

from __future__ import annotations

from typing import Any

from test_transport_engine import EngineHarness
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from exchange_emu.smtp.server import ExchangeESMTPFactory
from exchange_emu.storage import QueueStore
from exchange_emu.storage.queue import shadow_primaries
from exchange_emu.transport import jobs
from exchange_emu.transport.delayed_ack import (
    AckOutcome,
    DelayedAcknowledgement,
    format_tarpit,
)
from exchange_emu.transport.engine import EXPEDITE_FIRST
from exchange_emu.transport.receive_policy import TransportReceivePolicy
from exchange_emu.transport.routing import RoutingFailure
from exchange_emu.transport.server import receive_settings

ACK_DELAY = 3.0  # chain_org's MaxAcknowledgementDelay


def test_tarpit_time_is_a_dotnet_timespan():
    assert format_tarpit(25.6394) == "0.00:00:25.639"
    assert format_tarpit(90061.5) == "1.01:01:01.500"


def _envelope(internal_id: int) -> jobs.Envelope:
    return jobs.Envelope(internal_id, f"<{internal_id}@t>", "a@t", "", 1, "SMTP", 0.0,
                         None, None)


def test_the_hold_waits_for_the_discard_of_every_next_hop():
    """F.7 needs the discards of all next hops; the last one names the held message."""
    holds = DelayedAcknowledgement(Clock())
    outcomes: list[AckOutcome] = []
    holds.hold(7, 30.0).addCallback(outcomes.append)
    holds.await_discard(_envelope(7), "HUB01", "s1")
    holds.await_discard(_envelope(7), "HUB02", "s2")
    assert holds.discarded("HUB01", "s1") is None
    assert holds.discarded("HUB01", "s1") is None  # the same notification again: nothing
    assert holds.discarded("HUB02", "unknown") is None
    last = holds.discarded("HUB02", "s2")
    assert last is not None and last.internal_id == 7
    assert outcomes == [] and holds.held(7)  # the caller decides whether to release


def test_a_taken_back_copy_no_longer_counts_and_a_resolved_hold_forgets_its_copies():
    holds = DelayedAcknowledgement(Clock())
    holds.hold(7, 30.0)
    holds.await_discard(_envelope(7), "HUB01", "s1")
    holds.stop_awaiting("HUB01")  # resubmitted elsewhere: HUB01's discard proves nothing
    assert holds.discarded("HUB01", "s1") is None
    holds.hold(8, 30.0)
    holds.await_discard(_envelope(8), "HUB01", "s2")
    holds.resolve(8, "Expired")
    assert holds.discarded("HUB01", "s2") is None
    assert holds._by_shadow == {}


class DelayedAckTests(EngineHarness):
    async def start_with_client(self, **options: Any) -> None:
        await self.start(**options)
        self.engine.delayed_ack = DelayedAcknowledgement(self.clock)
        connector = self.server.receive_connectors[0]
        self.policy = TransportReceivePolicy(
            self.organization, self.server, connector, QueueStore(self.db), self.clock,
            self.log, on_submitted=self.engine.submitted, delayed_ack=self.engine.delayed_ack)
        self.protocol_log: list[str] = []
        harness = self

        class Log:
            def connected(self) -> None: ...
            def sent(self, data: str) -> None: ...
            def received(self, data: str) -> None: ...
            def disconnected(self) -> None: ...

            def info(self, data: str, context: str = "") -> None:
                harness.protocol_log.append(data)

        class Logs:
            def open_session(self, *a: Any) -> Log:
                return Log()

        factory = ExchangeESMTPFactory(receive_settings(self.server, connector), self.policy,
                                       self.clock, Logs())
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4000),
                                         hostAddress=IPv4Address("TCP", "127.0.0.1", 25))
        self.proto.makeConnection(self.transport)
        self.proto.dataReceived(b"EHLO unix-host.contoso.test\r\n")

    async def send(self, extra: bytes = b"", to: str = "erin@fabrikam.test") -> float:
        """A message from a peer without XSHADOW; returns when its body was sent."""
        self.transport.clear()
        self.proto.dataReceived(b"MAIL FROM:<app@contoso.test>\r\nRCPT TO:<" + to.encode()
                                + b">\r\nDATA\r\n")
        self.transport.clear()
        sent_at = self.clock.seconds()
        self.proto.dataReceived(b"Subject: F\r\n\r\nhello\r\n.\r\n" + extra)
        for _ in range(50):  # bounded: let the commit on the database thread come back
            await self.db.write(lambda conn: None)
            if self.engine.categorizer.pending or self.engine.delayed_ack.waiting:
                break
        await self.settle()
        return sent_at

    def reply(self) -> bytes:
        return self.transport.value()

    async def test_delivered_when_the_discard_notification_comes_back(self):
        """F.4–F.8: held until the primary's discard notification, then 250 at once."""
        await self.start_with_client()
        sent_at = await self.send()
        assert self.reply() == b""  # committed, relayed to HUB02, but still held
        stored = self.fakes["HUB02"].stored[0].message
        self.fakes["HUB02"].discards[stored.session.shadow_context] = [
            stored.shadow_message_id]
        await self.advance(0.5, step=0.1)  # F.6: an early discard query, not the heartbeat
        assert self.reply().startswith(b"250 2.6.0 ")
        line = self.protocol_log[-1]
        assert line.endswith("due to 'DelayedAck',Delivered")
        held = float(line.split("'")[1].split(":")[-1])
        assert 0 < held <= self.clock.seconds() - sent_at
        steps = [s for e in self.log.events for s in e.steps]
        assert steps.index("F.6") < steps.index("F.7") < steps.index("F.8")

    async def test_the_first_discard_query_comes_expedite_first_after_the_shadow(self):
        """F.6: the holder asks the primary EXPEDITE_FIRST after recording the shadow copy
        (a held 250 waits for it), not a moment sooner, not at the heartbeat."""
        await self.start_with_client()
        await self.send()
        stored = self.fakes["HUB02"].stored[0].message
        self.fakes["HUB02"].discards[stored.session.shadow_context] = [
            stored.shadow_message_id]
        await self.advance(EXPEDITE_FIRST * 0.9, step=EXPEDITE_FIRST * 0.9)
        assert self.reply() == b""
        await self.advance(EXPEDITE_FIRST * 0.1, step=EXPEDITE_FIRST * 0.1)
        assert self.reply().startswith(b"250 2.6.0 ")

    async def test_the_delivery_session_stays_open_to_ask_for_the_discard(self):
        """F.6 on the session that made the shadow copy: with nothing more to send it stays
        open while the 250 is held, without asking at once (the primary has only just
        taken the message), asks when the expedited query falls due, and ends once
        nothing is held — no query session of its own, and no second XQDISCARD at its
        end."""
        await self.start_with_client()
        await self.send()
        hub02 = self.fakes["HUB02"]
        stored = hub02.stored[0].message
        session = stored.session.session_id
        hub02.discards[stored.session.shadow_context] = [stored.shadow_message_id]
        assert sum(len(q.idle) for q in self.engine.queues.values()) == 1  # still open
        assert hub02.discard_queries == []
        await self.advance(EXPEDITE_FIRST * 0.9, step=EXPEDITE_FIRST * 0.9)
        assert self.reply() == b""
        await self.advance(EXPEDITE_FIRST * 0.1, step=EXPEDITE_FIRST * 0.1)
        assert self.reply().startswith(b"250 2.6.0 ")
        await self.advance(1, step=0.1)
        assert hub02.discard_queries == [session]
        assert sum(len(q.idle) for q in self.engine.queues.values()) == 0
        assert await self.db.read(shadow_primaries) == {}  # D.7 applied

    async def test_a_message_queued_meanwhile_goes_on_the_open_session(self):
        """While the delivery session waits for a held 250's discard, the queue's next
        message goes on it, not on a session of its own."""
        await self.start_with_client()
        await self.send()
        hub02 = self.fakes["HUB02"]
        await self.submit()
        assert len(hub02.stored) == 2
        assert hub02.stored[1].message.session.session_id == \
            hub02.stored[0].message.session.session_id
        assert hub02.stored[1].message.shadow_message_id is not None

    async def test_a_session_cut_while_open_for_a_held_250_is_no_sign_of_life(self):
        """The primary dies while the delivery session waits open for a held 250's
        discard: the cut session does not count as contact (the heartbeats decide, from
        the last real contact), nor as a failed heartbeat."""
        await self.start_with_client()
        await self.send()
        shadow = self.engine.shadow
        contacted = shadow.last_contact["HUB02"]
        await self.advance(1, step=0.1)
        assert sum(len(q.idle) for q in self.engine.queues.values()) == 1
        await self.stop_fake("HUB02")
        for _ in range(100):  # bounded: the cut reaches the session over loopback
            await self.advance(0.01, step=0.01)
            if not any(q.idle for q in self.engine.queues.values()):
                break
        assert not any(q.idle for q in self.engine.queues.values())
        assert shadow.last_contact["HUB02"] == contacted
        assert self.events("RESUBMIT") == []

    async def test_an_open_session_to_the_primary_makes_the_due_discard_query(self):
        """F.6 while a session to the primary is open (and busy): the expedited query falls
        to that session, once, not to a session of its own."""
        await self.start_with_client()
        await self.send()
        stored = self.fakes["HUB02"].stored[0].message
        self.fakes["HUB02"].discards[stored.session.shadow_context] = [
            stored.shadow_message_id]
        shadow = self.engine.shadow
        shadow.idle.clear()  # (the session cannot be woken: as if busy with a round)
        assert not shadow._discards_due("HUB02")
        await self.advance(EXPEDITE_FIRST, step=EXPEDITE_FIRST)
        assert self.reply() == b""  # no query session of its own
        assert shadow._discards_due("HUB02")  # the open session's to ask, once
        assert not shadow._discards_due("HUB02")

    async def test_failed_early_queries_do_not_count_as_failed_heartbeats(self):
        """The early discard queries for a held 250 come milliseconds apart; were their
        failures counted, a primary down for a moment would be taken over. Only the
        heartbeats, one per ShadowHeartbeatTimeoutInterval (10 s here), count failures."""
        await self.start_with_client(retry_count=2)
        await self.send()
        assert await self.primaries() == {"HUB02": 1}
        await self.stop_fake("HUB02")
        await self.advance(5, step=0.05)  # many early queries, all refused
        assert self.events("RESUBMIT") == []
        assert await self.primaries() == {"HUB02": 1}
        await self.advance(20, step=0.5)  # two heartbeat intervals: two failed heartbeats
        assert [e.custom_data.get("reason") for e in self.events("RESUBMIT")] == [
            "heartbeat retry count reached"]

    async def test_the_250_goes_out_before_the_deletion_commits(self):
        """F.7 before F.8: the message is durably queued and has reached its next hop
        once the discard comes back, so the 250 does not wait for the delete's commit."""
        await self.start_with_client()
        gate: Deferred[None] = Deferred()
        database = self.engine.database
        write, write_short = database.write, database.write_short

        def gated(write: Any) -> Any:
            def gated_write(job: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
                if job is not jobs.apply_discards:
                    return write(job, *args, **kwargs)
                return gate.addCallback(lambda _: write(job, *args, **kwargs))
            return gated_write

        database.write = gated(write)  # type: ignore[method-assign]
        database.write_short = gated(write_short)  # type: ignore[method-assign]
        await self.send()
        stored = self.fakes["HUB02"].stored[0].message
        self.fakes["HUB02"].discards[stored.session.shadow_context] = [
            stored.shadow_message_id]
        for _ in range(100):  # bounded: the discard query runs while the delete waits
            if self.reply():
                break
            self.clock.advance(0.05)
            await self.db.write(lambda conn: None)
        assert self.reply().startswith(b"250 2.6.0 ")
        assert self.protocol_log[-1].endswith("due to 'DelayedAck',Delivered")
        steps = [s for e in self.log.events for s in e.steps]
        assert "F.7" in steps and "D.7" not in steps and "F.8" not in steps
        assert await self.db.read(shadow_primaries) == {"HUB02": 1}  # not deleted yet
        gate.callback(None)
        await self.settle()
        assert await self.db.read(shadow_primaries) == {}
        rows = [(e.event_id, e.steps) for e in self.log.events if e.steps]
        assert rows[-2:] == [("RECEIVE", ("F.7",)), ("HADISCARD", ("D.7", "F.8"))]

    async def test_expired_after_max_acknowledgement_delay_exactly(self):
        await self.start_with_client()
        sent_at = await self.send()
        await self.advance(ACK_DELAY - 0.5, step=0.5)
        assert self.reply() == b""
        await self.advance(0.5, step=0.5)
        assert self.reply().startswith(b"250 2.6.0 ")
        assert self.clock.seconds() - sent_at == ACK_DELAY
        assert self.protocol_log[-1] == "Tarpit for '0.00:00:03.000' due to 'DelayedAck',Expired"

    async def test_skipped_when_the_next_hop_queue_is_in_retry(self):
        await self.start_with_client(fakes=())
        await self.send()
        assert self.reply().startswith(b"250 2.6.0 ")
        assert self.protocol_log[-1].endswith("'DelayedAck',Skipped")
        ack = next(e for e in self.log.events if "F.7" in e.steps)
        assert ack.custom_data["reason"] == "queue Internet via EDGE01 in Retry"

    async def test_skipped_when_the_message_is_deferred(self):
        await self.start_with_client()
        self.fakes["HUB02"].defer_recipients.add("erin@fabrikam.test")
        self.fakes["HUB03"].defer_recipients.add("erin@fabrikam.test")
        await self.send()
        assert self.reply().startswith(b"250 2.6.0 ")
        ack = next(e for e in self.log.events if "F.7" in e.steps)
        assert ack.custom_data["reason"] == "deferred"

    async def test_skipped_when_unreachable(self):
        await self.start_with_client()
        self.engine.route = lambda address: RoutingFailure("451 4.4.0 no route", True)
        await self.send()
        assert self.reply().startswith(b"250 2.6.0 ")
        ack = next(e for e in self.log.events if "F.7" in e.steps)
        assert ack.custom_data["reason"] == "unreachable"

    async def test_skipped_when_the_queue_already_holds_enough(self):
        await self.start_with_client()
        queue = self.engine.queue(self.engine.route("erin@fabrikam.test"))
        for fake_id in range(100_000, 100_100):  # 100 items waiting (not ready yet)
            queue.items[fake_id] = self.clock.seconds() + 3600
        await self.send()
        assert self.reply().startswith(b"250 2.6.0 ")
        ack = next(e for e in self.log.events if "F.7" in e.steps)
        assert ack.custom_data["reason"].endswith("holds 100 items")

    async def test_pipelined_commands_wait_behind_the_held_reply(self):
        await self.start_with_client()
        await self.send(extra=b"NOOP\r\nRSET\r\n")
        assert self.reply() == b""
        await self.advance(ACK_DELAY, step=0.5)
        lines = self.reply().decode().split("\r\n")
        assert lines[0].startswith("250 2.6.0 ")
        assert lines[1:3] == ["250 2.0.0 OK", "250 2.0.0 Resetting"]

    async def test_disconnect_while_held_loses_nothing(self):
        await self.start_with_client()
        await self.send()
        self.proto.connectionLost(None)
        stored = self.fakes["HUB02"].stored
        assert len(stored) == 1  # committed and relayed although no 250 went out
        await self.advance(ACK_DELAY, step=0.5)
        assert self.reply() == b""
