"""A property of shadow redundancy, checked with hypothesis over a small chain
of in-process servers: HUB01 (takes mail from clients) → HUB02 (its primary)
→ a foreign sink. Each server is its queue database driven by the same
transport jobs the real servers run; any interleaving of deliveries, discard
queries, lost replies, takeovers, crashes (with restart) and a wiped HUB02 is
tried. Invariant, after every step: every message acknowledged to a client is
delivered to the sink or held (queued or shadowed) by at least one server.
And once the faults stop, everything is delivered and both queues drain."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from twisted.internet import reactor

from exchange_emu.smtp.envelope import encode_shadow_context
from exchange_emu.storage import NewMessage, QueueDatabase
from exchange_emu.storage.queue import accept_message
from exchange_emu.storage.tables import messages, shadow_messages
from exchange_emu.transport import jobs

SIGNER = jobs.DsnSettings("hub.contoso.test", "postmaster@contoso.test")
CONTEXT = encode_shadow_context(uuid.uuid4(), "HUB01", "hub01.contoso.test")
NOW = 1795870800.0


class Server:
    """A server of the chain: its queue database and the next hop it routes to."""

    def __init__(self, directory: Path, name: str, next_hop: str) -> None:
        self.directory = directory
        self.name = name
        self.next_hop = next_hop
        self.db = self._open()

    def _open(self) -> QueueDatabase:
        db = QueueDatabase(f"sqlite:///{self.directory / self.name}.db", reactor=reactor)
        db.open()
        return db

    def run(self, job, *args, **kwargs):
        with self.db.engine.begin() as conn:
            return job(conn, *args, **kwargs)

    def categorize(self) -> None:
        for submitted in self.run(jobs.load_submission, None):
            decisions = [jobs.RouteDecision(r.id, submitted.envelope.internal_id, jobs.READY,
                                            self.next_hop) for r in submitted.recipients]
            self.run(jobs.apply_routes, decisions, NOW, SIGNER)

    def restart(self) -> None:
        """A crash and a restart: only what was committed survives."""
        self.db.engine.dispose()
        self.db = self._open()
        self.run(jobs.start_up)
        self.categorize()

    def wipe(self) -> None:
        self.db.engine.dispose()
        for path in self.directory.glob(f"{self.name}.db*"):
            path.unlink()
        self.db = self._open()
        self.run(jobs.start_up)

    def pending(self) -> list[jobs.DeliveryItem]:
        with self.db.engine.begin() as conn:
            ids = [int(i) for i in conn.execute(sa.select(messages.c.internal_id)).scalars()]
        return self.run(jobs.load_delivery, self.next_hop, ids)

    def held(self) -> set[str]:
        with self.db.engine.begin() as conn:
            return set(conn.execute(sa.select(messages.c.internet_message_id)).scalars())

    def shadow_count(self) -> int:
        with self.db.engine.begin() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(shadow_messages)).scalar_one())

    def close(self) -> None:
        self.db.engine.dispose()


class ShadowChain(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        directory = Path(self.tmp.name)
        self.hub01 = Server(directory, "HUB01", "HUB02")
        self.hub02 = Server(directory, "HUB02", "sink")
        for server in (self.hub01, self.hub02):
            server.run(jobs.start_up)
        self.acknowledged: set[str] = set()
        self.sink: list[str] = []
        self.count = 0

    def teardown(self) -> None:
        self.hub01.close()
        self.hub02.close()
        self.tmp.cleanup()

    @rule()
    def client_submits(self) -> None:
        """A client's message is committed by HUB01, then acknowledged (F.3)."""
        self.count += 1
        message_id = f"<m{self.count}@contoso.test>"
        self.hub01.run(accept_message, NewMessage(
            sender="app@contoso.test", recipients=("erin@fabrikam.test",), received_at=NOW,
            body=f"Message-ID: {message_id}\r\n\r\nx\r\n".encode(), message_id=message_id))
        self.acknowledged.add(message_id)
        self.hub01.categorize()

    @rule(lose_reply=st.booleans())
    def hub01_sends_to_hub02(self, lose_reply: bool) -> None:
        """D.4: HUB02 commits each message with its shadow id; HUB01 makes it a shadow
        copy — unless HUB01 crashed before it could record the 250."""
        items = self.hub01.pending()
        results = []
        for item in items:
            shadow_id = str(uuid.uuid4())
            self.hub02.run(accept_message, NewMessage(
                sender=item.envelope.sender, recipients=tuple(r.address for r in item.recipients),
                body=item.body, received_at=NOW, message_id=item.envelope.message_id,
                shadow_context=CONTEXT, shadow_message_id=shadow_id))
            delivered = tuple((r.id, "250 OK") for r in item.recipients)
            results.append(jobs.MessageResult(item.envelope.internal_id, delivered=delivered,
                                              shadow_message_id=shadow_id))
        self.hub02.categorize()
        if lose_reply:
            self.hub01.restart()
        else:
            self.hub01.run(jobs.record_session, results, delivered_to="HUB02", primary="HUB02",
                           now=NOW, retry_at=NOW, signer=SIGNER)

    @rule(lose_reply=st.booleans())
    def hub02_sends_to_sink(self, lose_reply: bool) -> None:
        """E.4–E.6: the sink has it; HUB02 deletes it and prepares the discard for HUB01."""
        items = self.hub02.pending()
        self.sink.extend(item.envelope.message_id for item in items)
        if lose_reply:
            self.hub02.restart()
            return
        results = [jobs.MessageResult(item.envelope.internal_id,
                                      delivered=tuple((r.id, "250 OK") for r in item.recipients))
                   for item in items]
        self.hub02.run(jobs.record_session, results, delivered_to="sink", primary=None,
                       now=NOW, retry_at=NOW, signer=SIGNER)

    @rule(lose_reply=st.booleans(), maximum=st.integers(1, 5))
    def hub01_queries_discards(self, lose_reply: bool, maximum: int) -> None:
        """D.5–D.7 (a lost reply: the notifications are gone, the shadows stay)."""
        handed = self.hub02.run(jobs.hand_out_discards, CONTEXT, maximum)
        if not lose_reply:
            self.hub01.run(jobs.apply_discards, "HUB02", [sid for sid, _ in handed])

    @rule()
    def hub01_takes_ownership(self) -> None:
        """Heartbeats failed (or a new database id): HUB01 resubmits its shadows."""
        self.hub01.run(jobs.take_ownership, "HUB02")
        self.hub01.categorize()

    @rule()
    def hub01_crashes_and_restarts(self) -> None:
        self.hub01.restart()

    @rule()
    def hub02_crashes_and_restarts(self) -> None:
        self.hub02.restart()

    @rule()
    def hub02_loses_its_database(self) -> None:
        """HUB02 comes back with a new queue database; HUB01 sees the new database id at
        its next XSHADOW and resubmits its whole shadow queue for HUB02 (protocol.md §2)."""
        self.hub02.wipe()
        self.hub01.run(jobs.take_ownership, "HUB02")
        self.hub01.categorize()

    @invariant()
    def every_acknowledged_message_is_delivered_or_held(self) -> None:
        safe = set(self.sink) | self.hub01.held() | self.hub02.held()
        lost = self.acknowledged - safe
        assert not lost, f"lost: {sorted(lost)}"

    def finish(self) -> None:
        """No more faults: everything drains to the sink and both queues empty."""
        for _ in range(10):
            self.hub01_sends_to_hub02(lose_reply=False)
            self.hub02_sends_to_sink(lose_reply=False)
            self.hub01_queries_discards(lose_reply=False, maximum=1000)
            if not (self.hub01.held() or self.hub02.held()):
                break
            if not self.hub02.held() and self.hub01.shadow_count():
                # Discards lost with a reply: only the auto-discard age clears these.
                self.hub01.run(jobs.expire_shadows, NOW + 1)
        assert set(self.sink) == self.acknowledged
        assert not self.hub01.held() and not self.hub02.held()


class ShadowChainWithFinish(ShadowChain):
    def teardown(self) -> None:
        try:
            self.finish()
        finally:
            super().teardown()


TestShadowChain = ShadowChainWithFinish.TestCase
TestShadowChain.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
