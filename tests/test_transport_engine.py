"""The transport pipeline of one hub (HUB01) in-process, its timers on a
task.Clock, against fake next hops (our SMTP server with an in-memory policy)
listening on loopback: shadow queues, discards, heartbeats, takeover,
resubmission, auto-discard, retry, expiry, delay DSN and NDR."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from org_files import chain_org
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.trial.unittest import TestCase

from exchange_emu.directory import load_organization
from exchange_emu.smtp.interfaces import ServerSettings, SessionInfo
from exchange_emu.smtp.server import ExchangeESMTPFactory
from exchange_emu.storage import NewMessage, QueueDatabase, QueueStore
from exchange_emu.storage.queue import get_primary, shadow_primaries
from exchange_emu.storage.tables import discard_notifications
from exchange_emu.transport import jobs
from exchange_emu.transport.discard_handout import DiscardHandOut
from exchange_emu.transport.engine import TransportEngine
from exchange_emu.transport.receive_policy import TransportReceivePolicy
from exchange_emu.transport.tracking import TransportTracking

from smtp_fakes import FakePolicy

NOW = 1795870800.0


class RecordingLog:
    """A message tracking log that keeps its rows in memory."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def record(self, event: Any) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class EngineHarness(TestCase):
    """HUB01's engine; fake HUB02/HUB03/EDGE01 servers; Internet mail goes via HUB02/HUB03."""

    async def start(self, *, retry_count: int = 3, heartbeat: str = "00:00:10",
                    fakes: tuple[str, ...] = ("HUB02", "HUB03")) -> None:
        directory = Path(tempfile.mkdtemp(prefix="exchange-emu-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        config, self.ports = chain_org(
            directory, heartbeat=heartbeat, retry_count=retry_count,
            internet_sources=("HUB02", "HUB03"),
            transport={"DelayNotificationTimeout": "00:02:00",
                       "MessageExpirationTimeout": "00:10:00",
                       "ShadowMessageAutoDiscardInterval": "00:30:00",
                       "OutboundConnectionFailureRetryInterval": "00:00:30"})
        self.organization = load_organization(config)
        self.server = self.organization.server("HUB01")
        self.clock = Clock()
        self.clock.advance(NOW)
        self.db = QueueDatabase(f"sqlite:///{directory / 'hub01.db'}", reactor=reactor)
        self.db.open()
        self.addCleanup(self.db.stopService)
        self.store = QueueStore(self.db)
        self.log = RecordingLog()
        self.engine = TransportEngine(
            self.organization, self.server, self.db,
            TransportTracking(self.server, self.log), reactor, clock=self.clock)
        self.fakes: dict[str, FakePolicy] = {}
        self.listeners: dict[str, Any] = {}
        self.fake_factories: dict[str, ExchangeESMTPFactory] = {}
        for name in fakes:
            await self.start_fake(name)
        self.engine.startService()
        await self.engine.ready
        self.addCleanup(self.stop_engine)
        await self.settle()

    async def stop_engine(self) -> None:
        await self.engine.stopService()
        for name in list(self.listeners):
            await self.stop_fake(name)

    async def start_fake(self, name: str) -> FakePolicy:
        policy = self.fakes.get(name) or FakePolicy()
        self.fakes[name] = policy
        fqdn = self.organization.server(name).fqdn
        factory = ExchangeESMTPFactory(ServerSettings(f"Default {name}", fqdn), policy, reactor)
        self.fake_factories[name] = factory
        self.listeners[name] = await TCP4ServerEndpoint(
            reactor, self.ports[name], interface="127.0.0.1").listen(factory)
        return policy

    async def stop_fake(self, name: str) -> None:
        """The fake server goes down: no new connections, and the open ones are cut."""
        await self.listeners.pop(name).stopListening()
        factory = self.fake_factories.pop(name, None)
        for session in list(factory.sessions if factory is not None else ()):
            session.transport.abortConnection()  # type: ignore[union-attr]

    async def settle(self) -> None:
        """Run what is due on the Clock, and wait for the work it starts, until quiet."""
        for _ in range(2000):
            self.clock.advance(0)
            active = list(self.engine._active)
            # Sessions kept open for a held 250's discard query wait for the Clock: wait
            # for any work to end, bounded, as a session may go back to waiting meanwhile.
            lingering = sum(len(queue.idle) for queue in self.engine.queues.values())
            if len(active) > lingering:
                bound = deferLater(reactor, 0.01)
                bound.addErrback(lambda _: None)
                await DeferredList([*active, bound], fireOnOneCallback=True,
                                   fireOnOneErrback=True, consumeErrors=True)
                bound.cancel()
                continue
            due = [c for c in self.clock.getDelayedCalls() if c.getTime() <= self.clock.seconds()]
            if not due:
                return
        raise AssertionError("the engine did not settle")

    async def advance(self, seconds: float, step: float = 0.5) -> None:
        """Move the Clock forward in steps, letting the engine act at each."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))
            await self.settle()

    async def submit(self, to: str = "erin@fabrikam.test", sender: str = "alice@contoso.test",
                     message_id: str | None = None) -> int:
        message_id = message_id or f"<{uuid.uuid4()}@contoso.test>"
        internal_id = await self.store.accept_message(NewMessage(
            sender=sender, recipients=(to,), received_at=self.clock.seconds(),
            body=f"Message-ID: {message_id}\r\nSubject: unit\r\n\r\nbody\r\n".encode(),
            message_id=message_id, subject="unit"))
        self.engine.submitted(internal_id)
        await self.settle()
        return internal_id

    def events(self, event_id: str) -> list[Any]:
        return [e for e in self.log.events if e.event_id == event_id]

    async def primaries(self) -> dict[str, int]:
        return await self.db.read(shadow_primaries)



class EngineTests(EngineHarness):

    async def test_next_hop_250_makes_a_shadow_copy_per_primary(self):
        """D.4.3: after the primary's 250 the message sits in the shadow queue for that
        primary — one shadow queue per primary."""
        await self.start()
        first = await self.submit()
        self.engine.mark_down("HUB02", 3600)  # the next one goes to HUB03
        second = await self.submit()
        self.assertEqual(await self.primaries(), {"HUB02": 1, "HUB03": 1})
        self.assertEqual(len(self.fakes["HUB02"].stored), 1)
        self.assertEqual(len(self.fakes["HUB03"].stored), 1)
        for internal_id in (first, second):
            message = await self.store.get_message(internal_id)
            self.assertEqual(message.state, "shadow")
        self.assertEqual(len(self.events("HAREDIRECT")), 2)

    async def test_discard_notification_deletes_the_shadow(self):
        """D.5–D.7: the primary hands the shadow id back on XQDISCARD; the holder deletes
        the shadow copy and, nothing else pending, the message."""
        await self.start()
        internal_id = await self.submit()
        stored = self.fakes["HUB02"].stored[0].message
        self.assertIsNotNone(stored.shadow_message_id)
        context = stored.session.shadow_context
        self.fakes["HUB02"].discards[context] = [stored.shadow_message_id]
        await self.advance(10)  # a heartbeat interval with no session: heartbeat
        self.assertEqual(await self.primaries(), {})
        self.assertIsNone(await self.store.get_message(internal_id))
        self.assertEqual([e.step for e in self.events("HADISCARD")], ["D.5", "D.7"])

    async def prepare_discard(self, context: str, shadow_id: str, message_id: str) -> int:
        """A message from ``context``'s holder (XSHADOW=), delivered: its discard
        notification is prepared (D.4.4). Its internal id."""
        internal_id = await self.store.accept_message(NewMessage(
            sender="alice@contoso.test", recipients=("erin@fabrikam.test",),
            received_at=self.clock.seconds(),
            body=b"Subject: unit, with a comma\r\n\r\nbody\r\n",
            message_id=message_id, subject="unit, with a comma", shadow_context=context,
            shadow_message_id=shadow_id))
        self.engine.submitted(internal_id)
        await self.settle()
        return internal_id

    def receive_policy(self, discards: DiscardHandOut) -> TransportReceivePolicy:
        """HUB01's receive side, writing its tracking rows where the engine's go."""
        return TransportReceivePolicy(
            self.organization, self.server, self.server.receive_connectors[0], self.store,
            self.clock, tracking=self.log, discards=discards)

    @staticmethod
    def holder_session(context: str) -> SessionInfo:
        return SessionInfo("08C1", "Default HUB01", "127.0.0.1", 25, "127.0.0.2", 40000,
                           helo="edge01.contoso.test", org_server=True, shadow_context=context)

    def identity(self, event: Any) -> tuple[str, str, str, str, str]:
        return (event.internal_message_id, event.message_id, event.sender_address,
                event.return_path, event.message_subject)

    async def test_as_primary_a_prepared_notification_is_handed_out_without_a_read(self):
        """D.4.4 → D.6: once the delivery of a message that came with XSHADOW= is recorded,
        the engine gives its discard notification to the XQDISCARD hand-out, which answers
        the holder's next query from memory, before any database read would find it. The
        D.6 row names the message like the D.4.4 row does."""
        await self.start()
        context = "EDGE01-shadow-context"
        policy = self.receive_policy(self.engine.discards)
        session = self.holder_session(context)
        assert await policy.take_discards(session, 50) == []  # the holder's first query
        internal_id = await self.prepare_discard(context, "shadow-1", "<primary@contoso.test>")
        self.assertEqual(len(self.fakes["HUB02"].stored), 1)
        self.assertEqual([e.step for e in self.events("NOTIFYSHADOW")], ["D.4.4"])
        # The notification the database keeps names the message too (for a later read).
        self.assertEqual(await self.db.read(jobs.waiting_discards, context, 50), [
            jobs.WaitingDiscard("shadow-1", "<primary@contoso.test>", internal_id,
                                "alice@contoso.test", "unit, with a comma")])
        # Within the sweep interval: answered from what the engine fed in.
        self.assertEqual(await policy.take_discards(session, 50), ["shadow-1"])
        prepared, handed_out = self.events("NOTIFYSHADOW")
        self.assertEqual((prepared.step, handed_out.step), ("D.4.4", "D.6"))
        self.assertEqual(self.identity(handed_out), self.identity(prepared))
        self.assertEqual(self.identity(handed_out), (
            str(internal_id), "<primary@contoso.test>", "alice@contoso.test",
            "alice@contoso.test", "unit, with a comma"))
        self.assertEqual(handed_out.custom_data["holder"], "edge01.contoso.test")

    async def test_as_primary_a_notification_read_from_the_database_names_its_message(self):
        """D.6 from a database read (a notification prepared before a restart): the row
        names the message as well; one written before schema version 7 gives its
        Message-ID only."""
        await self.start()
        context = "EDGE01-shadow-context"
        internal_id = await self.prepare_discard(context, "shadow-1", "<new@contoso.test>")

        def old_row(conn: Any) -> None:
            conn.execute(sa.insert(discard_notifications).values(
                shadow_context=context, shadow_message_id="shadow-0", created_at=0.0,
                internet_message_id="<old@contoso.test>"))

        await self.db.write(old_row)
        policy = self.receive_policy(DiscardHandOut(self.db))  # without a clock: reads
        self.assertEqual(await policy.take_discards(self.holder_session(context), 50),
                         ["shadow-0", "shadow-1"])
        old, new = [e for e in self.events("NOTIFYSHADOW") if e.step == "D.6"]
        self.assertEqual(self.identity(old), ("", "<old@contoso.test>", "", "", ""))
        self.assertEqual(self.identity(new), (
            str(internal_id), "<new@contoso.test>", "alice@contoso.test",
            "alice@contoso.test", "unit, with a comma"))

    async def test_shadow_kept_until_its_discard(self):
        """Heartbeats that bring no discard leave the shadow copy alone."""
        await self.start()
        internal_id = await self.submit()
        await self.advance(35)
        self.assertEqual(await self.primaries(), {"HUB02": 1})
        self.assertIsNotNone(await self.store.get_message(internal_id))

    async def test_failed_heartbeats_are_counted_and_a_success_resets_them(self):
        await self.start(retry_count=5)
        await self.submit()
        await self.stop_fake("HUB02")
        await self.advance(10)
        state = await self.db.read(get_primary, "HUB02")
        self.assertEqual(state.failed_heartbeats, 1)
        await self.advance(10)
        self.assertEqual((await self.db.read(get_primary, "HUB02")).failed_heartbeats, 2)
        await self.start_fake("HUB02")
        await self.advance(10)
        self.assertEqual((await self.db.read(get_primary, "HUB02")).failed_heartbeats, 0)
        self.assertEqual(await self.primaries(), {"HUB02": 1})
        self.assertEqual(self.events("RESUBMIT"), [])

    async def test_takeover_at_retry_count_reroutes_to_another_hub(self):
        """At ShadowHeartbeatRetryCount failed heartbeats the holder takes ownership and
        resubmits: recategorized, rerouted past the dead primary (to HUB03)."""
        await self.start(retry_count=3)
        internal_id = await self.submit()
        await self.stop_fake("HUB02")
        await self.advance(20)
        self.assertEqual(self.events("RESUBMIT"), [])  # two failures: not yet
        await self.advance(10)
        resubmits = self.events("RESUBMIT")
        self.assertEqual(len(resubmits), 1)
        self.assertEqual(resubmits[0].custom_data["reason"], "heartbeat retry count reached")
        self.assertEqual(await self.primaries(), {"HUB03": 1})
        self.assertEqual(len(self.fakes["HUB03"].stored), 1)
        self.assertEqual(self.fakes["HUB03"].stored[0].message.message_id,
                         (await self.store.get_message(internal_id)).message_id)

    async def test_new_primary_database_id_resubmits_at_once(self):
        """The primary answers XSHADOW with another database id: it lost its queue
        database, so the holder resubmits the whole shadow queue for it at once."""
        await self.start(retry_count=1000)
        await self.submit()
        await self.submit()
        self.fakes["HUB02"].database_guid = uuid.uuid4()
        self.fakes["HUB02"].stored.clear()
        await self.advance(10)
        resubmits = self.events("RESUBMIT")
        self.assertEqual(len(resubmits), 2)
        self.assertEqual({e.custom_data["reason"] for e in resubmits},
                         {"primary database id changed"})
        # Rerouted: back to HUB02 (it is alive, with its new database) as new shadows.
        self.assertEqual(len(self.fakes["HUB02"].stored), 2)
        self.assertEqual(await self.primaries(), {"HUB02": 2})

    async def test_shadow_older_than_auto_discard_interval_is_dropped(self):
        await self.start()
        internal_id = await self.submit()
        interval = self.organization.transport.shadow_message_auto_discard_interval
        await self.advance(interval - 20, step=interval / 4)
        self.assertEqual(await self.primaries(), {"HUB02": 1})
        await self.advance(40, step=10)
        self.assertEqual(await self.primaries(), {})
        self.assertIsNone(await self.store.get_message(internal_id))

    async def test_unreachable_next_hop_goes_to_retry_then_expires_with_ndr(self):
        """Queue at the point of failure: Retry with Exchange's intervals; at
        MessageExpirationTimeout the recipient fails and the sender gets an NDR."""
        await self.start(fakes=())
        internal_id = await self.submit(sender="postmaster@contoso.test")
        queue = self.engine.queues["Internet via EDGE01"]
        self.assertEqual(queue.status, "Retry")
        self.assertGreater(len(self.events("DEFER")), 0)
        message = await self.store.get_message(internal_id)
        self.assertEqual(message.recipients[0].status, "retry")
        expiry = self.organization.transport.message_expiration_timeout
        await self.advance(expiry + 60, step=5)
        self.assertIsNone(await self.store.get_message(internal_id))
        fails = [e for e in self.events("FAIL") if e.internal_message_id == str(internal_id)]
        self.assertIn("4.4.7 QUEUE.Expired", fails[0].recipient_status[0])
        self.assertIn("failed", [e.custom_data["kind"] for e in self.events("DSN")])

    async def test_delay_dsn_goes_out_once(self):
        await self.start(fakes=())
        await self.submit()
        delay = self.organization.transport.delay_notification_timeout
        await self.advance(delay + 30, step=5)
        await self.advance(60, step=5)
        kinds = [e.custom_data["kind"] for e in self.events("DSN")]
        self.assertEqual(kinds.count("delayed"), 1)

    async def test_permanent_refusal_fails_the_recipient_with_an_ndr(self):
        await self.start()
        self.fakes["HUB02"].refuse_recipients.add("erin@fabrikam.test")
        internal_id = await self.submit()
        self.assertIsNone(await self.store.get_message(internal_id))
        fails = [e for e in self.events("FAIL") if e.internal_message_id == str(internal_id)]
        self.assertEqual(fails[0].recipient_status, ("550 5.7.1 Unable to relay",))
        # One NDR to alice; (it fails in turn, alice being unknown here, but a DSN
        # never gets a DSN: the null sender stops the loop).
        self.assertEqual([e.custom_data["kind"] for e in self.events("DSN")], ["failed"])

    async def test_unknown_recipient_of_authoritative_domain_gets_ndr(self):
        await self.start()
        await self.submit(to="nobody@contoso.test")
        fail = self.events("FAIL")
        self.assertIn("5.1.1 RESOLVER.ADR.RecipNotFound", fail[0].recipient_status[0])

    async def test_restart_resumes_pending_work(self):
        """Everything pending lives in the queue database: a new engine on the same
        database carries on (the message queued while the next hop was down is sent)."""
        await self.start(fakes=())
        internal_id = await self.submit()
        await self.engine.stopService()
        self.engine = TransportEngine(
            self.organization, self.server, self.db,
            TransportTracking(self.server, self.log), reactor, clock=self.clock)
        await self.start_fake("HUB02")
        self.engine.startService()
        await self.engine.ready
        await self.settle()
        self.assertEqual(len(self.fakes["HUB02"].stored), 1)
        self.assertEqual((await self.store.get_message(internal_id)).state, "shadow")


class PoisonTests(TestCase):
    """Exchange's poison message detection, on the jobs: a crash counts only against the
    messages the categorizer had taken for processing."""

    def _database(self) -> QueueDatabase:
        directory = Path(tempfile.mkdtemp(prefix="exchange-emu-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        db = QueueDatabase(f"sqlite:///{directory / 'q.db'}", reactor=reactor)
        db.open()
        self.addCleanup(db.stopService)
        return db

    def _accept(self, conn: Any, message_id: str) -> int:
        from exchange_emu.storage.queue import accept_message

        return accept_message(conn, NewMessage(
            sender="a@contoso.test", recipients=("b@x.test",), body=b"x", received_at=NOW,
            message_id=message_id))

    def _state(self, conn: Any, internal_id: int) -> tuple[str, int]:
        import sqlalchemy as sa

        row = conn.execute(sa.text("SELECT state, crash_count FROM messages "
                                   "WHERE internal_id = :i"), {"i": internal_id}).one()
        return row.state, int(row.crash_count)

    def test_message_in_process_during_two_crashes_goes_to_poison(self):
        db = self._database()
        with db.engine.begin() as conn:
            internal_id = self._accept(conn, "<p@x>")
            first = jobs.start_up(conn)  # a clean previous run: nothing counted
            self.assertFalse(first.crashed)
            taken = jobs.take_submission(conn)  # the categorizer takes it ... and dies
            self.assertEqual([t.envelope.internal_id for t in taken], [internal_id])
            second = jobs.start_up(conn)  # "running" still set: the first run crashed
            self.assertTrue(second.crashed)
            self.assertEqual(second.poisoned, ())
            self.assertEqual(self._state(conn, internal_id), ("queued", 1))
            jobs.take_submission(conn)  # taken again after the restart ... and dies again
            third = jobs.start_up(conn)
            self.assertEqual([p.message_id for p in third.poisoned], ["<p@x>"])
            self.assertEqual(self._state(conn, internal_id), ("poison", 2))
            self.assertEqual(jobs.load_submission(conn), [])

    def test_message_waiting_during_two_crashes_is_not_poisoned(self):
        """A message in Submission that the categorizer had not taken yet when the server
        died (twice) was not being processed: it is routed normally afterwards."""
        db = self._database()
        signer = jobs.DsnSettings("hub01.contoso.test", "postmaster@contoso.test")
        with db.engine.begin() as conn:
            jobs.start_up(conn)
            busy = self._accept(conn, "<busy@x>")
            jobs.take_submission(conn, [busy])  # the batch in process at the crash
            waiting = self._accept(conn, "<waiting@x>")  # arrived, not taken yet
            self.assertTrue(jobs.start_up(conn).crashed)
            self.assertEqual(jobs.start_up(conn).poisoned, ())  # crashed again at once
            self.assertEqual(self._state(conn, waiting), ("queued", 0))
            self.assertEqual(self._state(conn, busy), ("queued", 1))
            batch = jobs.take_submission(conn)
            self.assertEqual(sorted(s.envelope.internal_id for s in batch),
                             sorted([busy, waiting]))
            jobs.apply_routes(conn, [
                jobs.RouteDecision(r.id, s.envelope.internal_id, jobs.READY, "x.test")
                for s in batch for r in s.recipients], NOW, signer)
            self.assertEqual(jobs.start_up(conn).poisoned, ())  # routed: released from process
            self.assertEqual(self._state(conn, waiting), ("queued", 0))
            self.assertEqual(self._state(conn, busy), ("queued", 1))


class PoisonEngineTests(EngineHarness):
    """Poison message detection across real restarts of the engine on one database; a
    "crash" is a stop that leaves the database marked running, as a killed process does."""

    async def crash_and_restart(self, *, run: bool = True) -> None:
        from unittest import mock

        with mock.patch.object(jobs, "stopped_cleanly", lambda conn: None):
            await self.engine.stopService()
        self.engine = TransportEngine(
            self.organization, self.server, self.db,
            TransportTracking(self.server, self.log), reactor, clock=self.clock)
        self.engine.startService()
        await self.engine.ready
        if run:
            await self.settle()

    async def test_message_being_categorized_at_two_crashes_goes_to_poison(self):
        """The categorizer dies on the message (taken, not routed) in two runs in a row:
        the next start moves it to the Poison queue and nothing is sent."""
        await self.start()

        def dies(address: str) -> Any:
            raise RuntimeError(f"categorizer dies on {address}")

        self.engine.route = dies  # type: ignore[method-assign]
        internal_id = await self.store.accept_message(NewMessage(
            sender="alice@contoso.test", recipients=("erin@fabrikam.test",),
            received_at=self.clock.seconds(), body=b"Subject: p\r\n\r\nx\r\n",
            message_id="<poison@contoso.test>"))
        self.engine.submitted(internal_id)
        await self.settle()  # the categorizer took it and died on it
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        await self.crash_and_restart(run=False)
        self.engine.route = dies  # type: ignore[method-assign]
        await self.settle()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.events("POISONMESSAGE"), [])
        await self.crash_and_restart()
        self.assertEqual([e.message_id for e in self.events("POISONMESSAGE")],
                         ["<poison@contoso.test>"])
        self.assertEqual((await self.store.get_message(internal_id)).state, "poison")
        self.assertEqual(self.fakes["HUB02"].stored, [])

    async def test_message_waiting_at_two_crashes_is_routed(self):
        """The bug the crash matrix found: two quick crashes after a restart used to send
        every message waiting in Submission to the Poison queue."""
        await self.start(fakes=())
        internal_id = await self.store.accept_message(NewMessage(
            sender="alice@contoso.test", recipients=("erin@fabrikam.test",),
            received_at=self.clock.seconds(), body=b"Subject: w\r\n\r\nx\r\n",
            message_id="<waiting@contoso.test>"))  # committed; the server dies at once
        await self.crash_and_restart(run=False)  # and again before the categorizer runs
        await self.crash_and_restart(run=False)
        self.assertEqual((await self.store.get_message(internal_id)).crash_count, 0)
        await self.start_fake("HUB02")
        await self.settle()
        self.assertEqual(self.events("POISONMESSAGE"), [])
        self.assertEqual(len(self.fakes["HUB02"].stored), 1)
        self.assertEqual((await self.store.get_message(internal_id)).state, "shadow")


class EarlyDiscardTests(EngineHarness):
    async def test_discard_arriving_before_the_shadow_is_recorded_is_not_lost(self):
        """With several sessions to one primary, the primary can hand out a message's
        discard (on another session's XQDISCARD) before this holder has recorded the
        shadow copy from the 250; the holder keeps it and applies it on recording,
        instead of keeping the shadow until auto-discard."""
        import uuid as uuid_module
        from unittest import mock

        await self.start()
        fixed = uuid_module.UUID("12345678-1234-4234-8234-123456789abc")
        await self.engine.shadow.apply_discards("HUB02", [str(fixed)], self.clock.seconds())
        assert str(fixed) in self.engine.shadow.early_discards["HUB02"]
        with mock.patch("exchange_emu.transport.engine.uuid.uuid4", return_value=fixed):
            internal_id = await self.submit()
        assert self.fakes["HUB02"].stored[0].message.shadow_message_id == str(fixed)
        self.assertEqual(await self.primaries(), {})
        self.assertIsNone(await self.store.get_message(internal_id))
        assert str(fixed) not in self.engine.shadow.early_discards["HUB02"]


class SessionRoundTests(EngineHarness):
    """An Exchange send connector takes its queue's next messages on a connection that is
    still open (up to MaxMessagesPerConnection) instead of opening one for each."""

    async def drive_until(self, condition: Callable[[], bool], what: str) -> None:
        """Run the engine's due timers (on the Clock) while the real reactor carries its
        sessions and database work, until ``condition`` holds; fail after 10 s."""
        reached: Deferred[None] = Deferred()

        def check() -> None:
            self.clock.advance(0)
            if condition() and not reached.called:
                reached.callback(None)

        loop = LoopingCall(check)
        loop.start(0.001)
        reached.addTimeout(10, reactor)
        try:
            await reached
        except TimeoutError:
            self.fail(f"timed out waiting until {what}")
        finally:
            loop.stop()

    async def queue_message(self, message_id: str) -> int:
        internal_id = await self.store.accept_message(NewMessage(
            sender="alice@contoso.test", recipients=("erin@fabrikam.test",),
            received_at=self.clock.seconds(),
            body=f"Message-ID: {message_id}\r\nSubject: unit\r\n\r\nbody\r\n".encode(),
            message_id=message_id, subject="unit"))
        self.engine.submitted(internal_id)
        return internal_id

    async def test_a_message_queued_while_a_session_is_open_rides_it(self):
        """The second message, queued while the first one's session waits for its 250,
        goes on that session once the 250 came, not on a session of its own; the first
        is booked (shadow copy, SEND, HAREDIRECT) meanwhile, before the session ends."""
        await self.start()
        bookings = []
        database = self.engine.database

        def counting(write: Any) -> Any:
            def counting_write(job: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
                if job is jobs.record_session:
                    bookings.append(len(args[0]))
                return write(job, *args, **kwargs)
            return counting_write

        database.write = counting(database.write)  # type: ignore[method-assign]
        database.write_short = counting(database.write_short)  # type: ignore[method-assign]
        hub02 = self.fakes["HUB02"]
        hub02.hold = True
        first = await self.queue_message("<first@contoso.test>")
        await self.drive_until(lambda: len(hub02.stored) == 1, "HUB02 has the first")
        second = await self.queue_message("<second@contoso.test>")
        await self.drive_until(
            lambda: any(second in q.items for q in self.engine.queues.values()),
            "the second is queued for delivery")
        hub02.held[0].callback(None)
        await self.drive_until(lambda: len(hub02.stored) == 2, "HUB02 has the second")
        await self.drive_until(lambda: len(self.events("HAREDIRECT")) == 1,
                               "the first is booked")
        self.assertEqual(len(hub02.held), 2)
        self.assertFalse(hub02.held[1].called)  # the session is still open
        self.assertEqual((await self.store.get_message(first)).state, "shadow")
        self.assertEqual([e.message_id for e in self.events("SEND")], ["<first@contoso.test>"])
        hub02.held[1].callback(None)
        await self.settle()
        sessions = {stored.message.session.session_id for stored in hub02.stored}
        self.assertEqual(len(sessions), 1)
        self.assertEqual(await self.primaries(), {"HUB02": 2})
        self.assertEqual((await self.store.get_message(second)).state, "shadow")
        self.assertEqual(len(self.events("HAREDIRECT")), 2)
        self.assertEqual(bookings, [1, 1])  # one transaction per round, none empty
