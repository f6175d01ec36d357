"""``exchange-emu scenario run X --fail STEP:ACTION``: a failure experiment on the running
lab. It breaks a server (or the network) at a step of a scenario, lets the
organization recover as Exchange 2010 would, narrates every row of the message's
tracking logs together with what the experiment did, and ends with where the message
is now — delivered once, or lost and why Exchange could not save it.

Timing. A fault "at a step" is injected one of two ways:

- **crash points** (``EXCHANGE_EMU_CRASH_AT``, exchange_emu/faults.py) where the
  instant matters and no tracking row can be watched in time — a hub that dies
  between its Submission-queue commit and its answer to the mailbox (B.2), a hub
  that dies between a mailbox delivery and recording it (C.1);
- **watching the tracking logs** (polled every 0.1 s) where the next step is held
  up on purpose — e.g. D.4.3 with the primary's next hop stopped, so that the primary
  still has the message when it is killed.

The experiments use the servers of the default lab (etc/lab.toml): MBX01 (alice,
bob), HUB01, HUB02, MBX02 (carol), HUB03, EDGE01, LEGACY01 (dave), INTERNET01 (erin).
"""

from __future__ import annotations

import dataclasses
import json
import smtplib
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred

from exchange_emu.admin.tracking import TrackingQuery, search_tracking_logs
from exchange_emu.directory import Organization
from exchange_emu.lab import fault_control
from exchange_emu.lab.cli_faults import admin_post
from exchange_emu.lab.fault_control import FaultError
from exchange_emu.lab.narration import STEPS
from exchange_emu.logs import TrackingEvent
from exchange_emu.logs.logfile import DEFAULT_FLUSH_INTERVAL
from exchange_emu.mailbox.client import compose, submit

POLL = 0.1
NEEDED = ("MBX01", "HUB01", "HUB02", "MBX02", "HUB03", "EDGE01", "LEGACY01", "INTERNET01")


class ExperimentError(Exception):
    """The experiment could not run (lab not as expected); the message says why."""


@dataclass
class Outcome:
    expected_copies: int
    copies: int
    where: str
    explanation: str
    message_id: str = ""
    """The message's Message-ID (a subject where no server ever logged the message)."""

    @property
    def ok(self) -> bool:
        return self.copies == self.expected_copies


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@dataclass
class Lab:
    """What an experiment can do to the running lab, and what it has done (narrated)."""

    reactor: Any
    organization: Organization
    write: Callable[[str], None]
    timeout: float
    actions: list[tuple[datetime, str]] = field(default_factory=list)

    # -- acting --------------------------------------------------------------------

    def note(self, text: str) -> None:
        """An action of the experiment, shown in the narration at the time it happened."""
        self.actions.append((datetime.now(UTC), text))
        self.write(f"   ** {text}")

    async def _admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return await threads.deferToThread(admin_post, self.organization, path, body)
        except FaultError as e:
            raise ExperimentError(str(e)) from None

    async def server(self, action: str, name: str, why: str) -> None:
        self.note(f"{action} {name}: {why}")
        await self._admin(f"/servers/{name}/{action}")
        if action in ("start", "restart", "wipe-db"):
            await self.listening(name)

    async def crash_at(self, name: str, step: str, why: str) -> None:
        self.note(f"restart {name} with EXCHANGE_EMU_CRASH_AT={step}: {why}")
        await self._admin("/faults/crash-at", {"server": name, "step": step})
        await self.listening(name)

    async def plan(self, text: str, change: Callable[..., str], *args: Any) -> None:
        """Change fault plans, and wait until every running server applies them."""
        change(self.organization, *args)
        self.note(text)
        running = await self.running()

        async def in_force() -> bool:
            return all(fault_control.applied(self.organization.server(name))
                       for name, up in running.items() if up)

        await self.until("the servers to apply the fault plan", in_force, 10.0)

    async def running(self) -> dict[str, bool]:
        admin = self.organization.lab.admin

        def get() -> dict[str, bool]:
            with urllib.request.urlopen(f"http://{admin}/servers", timeout=10) as response:
                return {s["name"]: s["running"] for s in json.load(response)}

        return await threads.deferToThread(get)

    async def until(self, what: str, check: Callable[[], Awaitable[Any]],
                    timeout: float | None = None) -> Any:
        """Poll ``check`` (bounded) until it returns something true."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            found = await check()
            if found:
                return found
            if time.monotonic() > deadline:
                raise ExperimentError(f"gave up waiting for {what}")
            await _sleep(self.reactor, POLL)

    async def stopped(self, name: str) -> None:
        async def down() -> bool:
            return not (await self.running()).get(name, True)

        await self.until(f"{name} to stop", down)
        self.note(f"{name} is down")

    async def listening(self, name: str) -> None:
        server = self.organization.server(name)
        address = server.smtp or server.store_driver
        assert address is not None

        async def answers() -> bool:
            def connect() -> bool:
                import socket

                try:
                    socket.create_connection((address.host, address.port), 1).close()
                    return True
                except OSError:
                    return False
            return await threads.deferToThread(connect)

        await self.until(f"{name} to listen", answers)

    # -- watching ------------------------------------------------------------------

    def events(self, message_id: str) -> list[TrackingEvent]:
        found = search_tracking_logs(self.organization, TrackingQuery.from_text(
            message_id=message_id, result_size="unlimited"))
        return sorted(found.events, key=lambda e: (e.date_time is None, e.date_time))

    async def row(self, message_id: str, step: str | None = None, event_id: str | None = None,
                  timeout: float | None = None) -> TrackingEvent:
        """Wait for the first row of ``message_id`` with that step (or event)."""
        async def find() -> TrackingEvent | None:
            for event in self.events(message_id):
                if (step is None or step in event.steps) and (
                        event_id is None or event.event_id == event_id):
                    return event
            return None

        found: TrackingEvent = await self.until(f"{event_id or step} of {message_id}", find,
                                                timeout)
        return found

    async def settle(self, message_id: str, event_id: str | None, why: str,
                     timeout: float | None = None, step: str | None = None) -> None:
        """Wait (bounded) for a row that shows the recovery is complete; say if it never
        came (the outcome then tells what is where)."""
        try:
            await self.row(message_id, step=step, event_id=event_id, timeout=timeout)
        except ExperimentError:
            self.note(f"no {event_id or step} row within the time limit ({why})")

    def server_of(self, event: TrackingEvent) -> str:
        for server in self.organization.servers.values():
            if server.fqdn.lower() == event.server_hostname.lower():
                return server.name
        return event.server_hostname

    # -- where the message is --------------------------------------------------------

    def mailbox_copies(self, address: str, match: Callable[[Any], bool],
                       folder: str | None = None) -> int:
        from exchange_emu.mailbox.report import (
            locate_mailbox,
            open_store,
            parse_folder,
            read_listing,
        )

        location = locate_mailbox(self.organization, address)
        engine = open_store(location)
        try:
            _, listed = read_listing(engine, location,
                                     parse_folder(folder) if folder else None)
        finally:
            engine.dispose()
        return sum(1 for item in listed if match(item))

    def local_copies(self, server: str, address: str, message_id: str) -> int:
        folder = Path(self.organization.server(server).data_dir) / "Mailboxes" / address.lower()
        if not folder.exists():
            return 0
        return sum(message_id.encode() in p.read_bytes() for p in folder.glob("*.eml"))


# -- sending --------------------------------------------------------------------------


async def submit_abc(lab: Lab, recipient: str, label: str) -> str:
    """alice writes to ``recipient`` from her mailbox (scenario A, then B …)."""
    subject = f"{label} {uuid.uuid4().hex[:8]}"
    mime = compose("alice@contoso.test", [recipient], subject, "A failure experiment.")
    done = await submit(lab.reactor, lab.organization, "alice@contoso.test", [recipient], mime)
    lab.note(f"alice submitted {done.message_id} to {recipient} (subject {subject!r})")
    return done.message_id


async def internet_sends(lab: Lab, label: str) -> str:
    """erin@fabrikam.test writes to bob from INTERNET01, which relays to EDGE01 (F)."""
    message_id = f"<{label.replace(' ', '-')}-{uuid.uuid4().hex[:8]}@fabrikam.test>"
    internet = lab.organization.server("INTERNET01")
    assert internet.smtp is not None

    def send() -> None:
        with smtplib.SMTP(internet.smtp.host, internet.smtp.port, timeout=60) as client:  # type: ignore[union-attr]
            client.sendmail("erin@fabrikam.test", ["bob@contoso.test"],
                            f"Message-ID: {message_id}\r\nSubject: {label}\r\n\r\n"
                            "A failure experiment.\r\n".encode())

    await threads.deferToThread(send)
    lab.note(f"INTERNET01 accepted {message_id} from erin for bob@contoso.test")
    return message_id


def inbox_outcome(lab: Lab, address: str, message_id: str, expected: int,
                  explanation: str) -> Outcome:
    copies = lab.mailbox_copies(address, lambda i: i.message_id == message_id, "Inbox")
    return Outcome(expected, copies, f"{address}'s Inbox holds {copies} "
                   f"cop{'y' if copies == 1 else 'ies'} of it", explanation)


# -- the experiments ------------------------------------------------------------------


async def a_kill_mailbox(lab: Lab) -> tuple[str, Outcome]:
    await lab.crash_at("MBX01", "A", "it dies when alice's client hands it a message, "
                       "before the Outbox commit")
    subject = f"A kill-mailbox {uuid.uuid4().hex[:8]}"
    mime = compose("alice@contoso.test", ["carol@contoso.test"], subject, "Lost?")
    try:
        await submit(lab.reactor, lab.organization, "alice@contoso.test",
                     ["carol@contoso.test"], mime)
        lab.note("the submission succeeded (the crash point did not fire)")
    except Exception as e:
        lab.note(f"alice's client got no confirmation: {e}")
    await lab.stopped("MBX01")
    await lab.server("start", "MBX01", "back, with its store")
    outbox = lab.mailbox_copies("alice@contoso.test", lambda i: i.subject == subject)
    carol = lab.mailbox_copies("carol@contoso.test", lambda i: i.subject == subject)
    return subject, Outcome(
        0, outbox + carol,
        f"nowhere in the organization: alice's mailbox holds {outbox} and carol's {carol} "
        "items with that subject; no server logged it",
        "Scenario A is not redundant. MBX01 died before it committed the message to "
        "alice's Outbox, so no server of the organization ever had it and nothing can "
        "resubmit it. Exchange cannot save it: the client still has it (Outlook keeps it "
        "in its own Outbox or offline store) and must submit it again.")


async def b2_kill_hub(lab: Lab) -> tuple[str, Outcome]:
    await lab.server("stop", "HUB02", "so that Mail Submission must hand the message to HUB01")
    await lab.crash_at("HUB01", "B.2", "it dies right after it committed a message taken "
                       "from an Outbox, before it told the mailbox")
    message_id = await submit_abc(lab, "carol@contoso.test", "B.2 kill-hub")
    await lab.stopped("HUB01")
    await lab.server("start", "HUB02", "a hub for Mail Submission to resubmit to")
    await lab.row(message_id, step="B.4")
    await lab.server("start", "HUB01", "back with its queue database (it still holds its copy)")
    await lab.settle(message_id, "DUPLICATEDELIVER", "HUB01's recovered copy")
    return message_id, inbox_outcome(
        lab, "carol@contoso.test", message_id, 1,
        "HUB01 died after its B.2 commit — before it logged B.2 or answered MBX01 — and "
        "so before B.4: it never reported ownership, so the item stayed "
        "in alice's Outbox. When HUB01's link dropped, MBX01's Mail Submission service "
        "notified another hub of the site (HUB02), which delivered it and reported "
        "ownership (B.4; the item went to Sent Items). HUB01 came back with its own copy "
        "in its queue and delivered it too: carol's mailbox recognised the duplicate "
        "(DUPLICATEDELIVER) and dropped it.")


async def c1_kill_hub(lab: Lab) -> tuple[str, Outcome]:
    await lab.crash_at("HUB03", "C.1", "it dies right after it delivered to a mailbox, "
                       "before it recorded the delivery")
    message_id = await submit_abc(lab, "carol@contoso.test", "C.1 kill-hub")
    await lab.stopped("HUB03")
    await lab.server("start", "HUB03", "back with its queue database")
    await lab.settle(message_id, "DUPLICATEDELIVER", "HUB03's redelivery")
    await lab.settle(message_id, None, "the holder deleting its shadow copy", step="C.4")
    return message_id, inbox_outcome(
        lab, "carol@contoso.test", message_id, 1,
        "HUB03 delivered to carol's mailbox (C.1) and died before it recorded the delivery "
        "or queued the discard notification (C.2, C.3). The previous hop kept its shadow "
        "copy meanwhile. Back up, HUB03 found the message still queued and delivered it "
        "again; the mailbox's duplicate detection dropped the second copy "
        "(DUPLICATEDELIVER), and the discard notification then reached the shadow holder.")


async def c2_lossy_failover(lab: Lab) -> tuple[str, Outcome]:
    from exchange_emu.mailbox.client import failover

    message_id = await submit_abc(lab, "carol@contoso.test", "C.2 lossy-failover")
    await lab.row(message_id, step="C.2")
    lab.note("C.2 seen: HUB03 delivered and keeps the message in its transport dumpster")
    lab.note("lossy failover of DB02 (MBX02): its passive copy lacks the last 60 s of log")
    answer = await failover(lab.reactor, lab.organization, "DB02", lossy=True,
                            lost_seconds=60.0)
    lab.note(f"failover done: {answer['lost']} items lost, {answer['hubs']} hubs asked to "
             "redeliver from their transport dumpsters")
    await lab.row(message_id, event_id="RESUBMIT")

    async def redelivered() -> bool:  # the second C.1 row: delivered (or dropped) again
        return sum("C.1" in e.steps for e in lab.events(message_id)) >= 2

    await lab.until("the redelivery from the dumpster", redelivered)
    return message_id, inbox_outcome(
        lab, "carol@contoso.test", message_id, 1,
        "carol's mailbox database failed over to a copy that lacked its last minute, so the "
        "delivered message was gone from her Inbox. The mailbox server asked every hub of "
        "the site to redeliver what it delivered to DB02 since then; HUB03 still had the "
        "message in its transport dumpster (C.2) and resubmitted it (RESUBMIT, source "
        "DUMPSTER). Anything that had survived would have been dropped as a duplicate.")


async def _primary_holding(lab: Lab, label: str) -> tuple[str, str]:
    """alice → carol with MBX02 stopped: HUB03 (the primary) keeps the message; wait for
    D.4.3 on the hub of Site-A that shadows it. The message id and that holder."""
    await lab.server("stop", "MBX02", "so that HUB03, the primary, keeps carol's message "
                     "in its queue")
    message_id = await submit_abc(lab, "carol@contoso.test", label)
    event = await lab.row(message_id, step="D.4.3")
    holder = lab.server_of(event)
    lab.note(f"D.4.3 seen: {holder} holds the shadow copy, HUB03 is the primary")
    return message_id, holder


def _takeover_wait(lab: Lab) -> float:
    settings = lab.organization.transport
    return (settings.shadow_heartbeat_timeout_interval
            * (settings.shadow_heartbeat_retry_count + 2) + 30)


async def d43_kill_primary(lab: Lab) -> tuple[str, Outcome]:
    message_id, holder = await _primary_holding(lab, "D.4.3 kill-primary")
    await lab.server("kill", "HUB03", "the primary dies with the message in its queue")
    await lab.server("start", "MBX02", "carol's mailbox server is back")
    await lab.row(message_id, event_id="RESUBMIT", timeout=_takeover_wait(lab))
    lab.note(f"{holder} took ownership of its shadow copy")
    await lab.server("start", "HUB03", "the primary comes back with its queue database")
    await lab.settle(message_id, "DUPLICATEDELIVER", "both copies reached MBX02")
    return message_id, inbox_outcome(
        lab, "carol@contoso.test", message_id, 1,
        f"{holder} had the shadow copy (D.4.3). HUB03 died; each heartbeat "
        f"(ShadowHeartbeatTimeoutInterval) from {holder} failed, and at "
        f"ShadowHeartbeatRetryCount {holder} took ownership (RESUBMIT) and rerouted its "
        "copy — to HUB03 again, the only hub of Site-B, so it waited there. HUB03 came "
        "back with its database and delivered its own copy; the resubmitted one followed "
        "and carol's mailbox dropped it as a duplicate (DUPLICATEDELIVER): delivered "
        "exactly once.")


async def d43_partition(lab: Lab) -> tuple[str, Outcome]:
    message_id, holder = await _primary_holding(lab, "D.4.3 partition")
    await lab.plan(f"partitioned {holder} from HUB03 (connections refused)",
             fault_control.partition, holder, "HUB03")
    await lab.row(message_id, event_id="RESUBMIT", timeout=_takeover_wait(lab))
    lab.note(f"{holder} took ownership: its heartbeats to HUB03 could not get through")
    await lab.plan(f"healed the partition between {holder} and HUB03", fault_control.heal,
             [holder, "HUB03"])
    await lab.server("start", "MBX02", "carol's mailbox server is back")
    await lab.settle(message_id, "DUPLICATEDELIVER", "both copies reached MBX02")
    return message_id, inbox_outcome(
        lab, "carol@contoso.test", message_id, 1,
        f"Both servers stayed up, but {holder} could not reach HUB03: to the shadow holder "
        "a partition looks exactly like a dead primary. After ShadowHeartbeatRetryCount "
        f"failed heartbeats {holder} took ownership and resubmitted its copy (RESUBMIT), "
        "which waited for the partition to heal. Then both HUB03's copy and the "
        "resubmitted one reached carol's mailbox, which dropped the second "
        "(DUPLICATEDELIVER).")


async def _to_dave(lab: Lab, label: str) -> str:
    await lab.crash_at("LEGACY01", "E.4", "it dies after it accepted a message (its 250 "
                       "went out), before it delivered it")
    message_id = await submit_abc(lab, "dave@legacy.contoso.test", label)
    await lab.row(message_id, step="E.5")
    await lab.stopped("LEGACY01")
    return message_id


async def e4_kill_legacy(lab: Lab) -> tuple[str, Outcome]:
    message_id = await _to_dave(lab, "E.4 kill-legacy")
    await lab.server("start", "LEGACY01", "back with its own queue database")
    await lab.settle(message_id, "DELIVER", "LEGACY01 delivering from its queue")
    copies = lab.local_copies("LEGACY01", "dave@legacy.contoso.test", message_id)
    return message_id, Outcome(
        1, copies, f"dave's mailbox on LEGACY01 holds {copies} cop"
        f"{'y' if copies == 1 else 'ies'} of it",
        "LEGACY01 (Exchange 2007) does not speak XSHADOW, so the 2010 hub kept no shadow: "
        "it deleted its copy as soon as LEGACY01 said 250 (E.5). What saved the message is "
        "LEGACY01's own queue database, which had it before the 250 — not shadow "
        "redundancy. Had LEGACY01 lost its disk, nothing could resubmit it (try "
        "E.4:wipe-legacy).")


async def e4_wipe_legacy(lab: Lab) -> tuple[str, Outcome]:
    message_id = await _to_dave(lab, "E.4 wipe-legacy")
    await lab.server("wipe-db", "LEGACY01", "its disk is lost: the queue database is gone")
    copies = lab.local_copies("LEGACY01", "dave@legacy.contoso.test", message_id)
    return message_id, Outcome(
        0, copies, f"nowhere: dave's mailbox holds {copies} copies; the hub deleted its copy "
        "at E.5 and LEGACY01's queue is gone",
        "Lost, and Exchange cannot save it: redundancy reaches only as far as the last "
        "server that speaks XSHADOW. The hub handed the message to LEGACY01 without "
        "shadow redundancy (E.2, E.3), deleted it on LEGACY01's 250 (E.5), and LEGACY01 "
        "lost it with its disk. No server holds a shadow copy to resubmit.")


async def _edge_holding(lab: Lab, label: str) -> str:
    for hub in ("HUB01", "HUB02"):
        await lab.plan(f"black-holed EDGE01 from {hub}: EDGE01 cannot hand the message on",
                 fault_control.partition, "EDGE01", hub, "blackhole", 3.0)
    message_id = await internet_sends(lab, label)
    await lab.row(message_id, step="F.4")
    if any("F.5" in e.steps for e in lab.events(message_id)):
        raise ExperimentError("EDGE01 sent the message on before the fault took effect; "
                              "run the experiment again")
    lab.note("F.4 seen: EDGE01 committed the message and holds INTERNET01's 250")
    return message_id


async def _edge_back(lab: Lab, message_id: str) -> None:
    for hub in ("HUB01", "HUB02"):
        await lab.plan(f"healed EDGE01 and {hub}", fault_control.heal, ["EDGE01", hub])
    await lab.server("start", "EDGE01", "back with its queue database")


async def f5_stop_edge(lab: Lab) -> tuple[str, Outcome]:
    message_id = await _edge_holding(lab, "F.5 stop-edge")
    await lab.server("stop", "EDGE01", "a clean shutdown before F.5")
    await _edge_back(lab, message_id)
    await lab.row(message_id, event_id="DELIVER")
    await _sleep(lab.reactor, 2.0)
    return message_id, inbox_outcome(
        lab, "bob@contoso.test", message_id, 1,
        "EDGE01 had committed the message (F.4) but not yet sent it on (F.5). A clean "
        "shutdown releases every held acknowledgement: INTERNET01 got its 250 — the "
        "message was safe on EDGE01's disk — and considered it done. Back up, EDGE01 "
        "found it in its queue and delivered it through a hub: once.")


async def f5_kill_edge(lab: Lab) -> tuple[str, Outcome]:
    message_id = await _edge_holding(lab, "F.5 kill-edge")
    await lab.server("kill", "EDGE01", "a crash before F.5, with INTERNET01's 250 held")
    await _edge_back(lab, message_id)
    await lab.settle(message_id, "DUPLICATEDELIVER", "INTERNET01's retry and EDGE01's "
                     "recovered copy both reached MBX01")
    return message_id, inbox_outcome(
        lab, "bob@contoso.test", message_id, 1,
        "EDGE01 died while it held INTERNET01's acknowledgement (delayed ack, F.4). "
        "INTERNET01 never got its 250, so for it the message was not sent: it kept it "
        "and retried until EDGE01 answered again. EDGE01 also had its own committed "
        "copy. Both reached bob's mailbox, which dropped the second (DUPLICATEDELIVER): "
        "delayed acknowledgement turns a crash into a duplicate, never a loss.")


@dataclass(frozen=True)
class Experiment:
    key: str
    scenario: str
    summary: str
    run: Callable[[Lab], Awaitable[tuple[str, Outcome]]]


EXPERIMENTS = {e.key: e for e in (
    Experiment("A:kill-mailbox", "A", "MBX01 dies before the Outbox commit", a_kill_mailbox),
    Experiment("B.2:kill-hub", "B", "the hub dies after taking the message from the Outbox, "
               "before reporting ownership", b2_kill_hub),
    Experiment("C.1:kill-hub", "C", "HUB03 dies right after delivering to carol's mailbox",
               c1_kill_hub),
    Experiment("C.2:lossy-failover", "C", "carol's database fails over losing its last "
               "minute, after the delivery", c2_lossy_failover),
    Experiment("D.4.3:kill-primary", "D", "the primary (HUB03) dies after the holder has the "
               "shadow", d43_kill_primary),
    Experiment("D.4.3:partition", "D", "holder and primary partitioned after D.4.3, then "
               "healed", d43_partition),
    Experiment("E.4:kill-legacy", "E", "LEGACY01 dies after it accepted the message",
               e4_kill_legacy),
    Experiment("E.4:wipe-legacy", "E", "LEGACY01 loses its disk after it accepted the message",
               e4_wipe_legacy),
    Experiment("F.5:stop-edge", "F", "EDGE01 stopped while it holds the ack, before F.5",
               f5_stop_edge),
    Experiment("F.5:kill-edge", "F", "EDGE01 killed while it holds the ack, before F.5",
               f5_kill_edge),
)}


def find(scenario: str, spec: str) -> Experiment:
    """The experiment ``spec`` (STEP:ACTION) of ``scenario``; ExperimentError listing the
    valid ones otherwise."""
    wanted = spec.strip()
    for key, experiment in EXPERIMENTS.items():
        if key.lower() == wanted.lower() and experiment.scenario in scenario:
            return experiment
    valid = ", ".join(k for k, e in EXPERIMENTS.items() if e.scenario in scenario)
    if len(scenario) == 1:
        raise ExperimentError(f"no experiment {spec!r} for scenario {scenario}; "
                              f"valid: {valid}")
    raise ExperimentError(f"no experiment {spec!r}; valid: {valid}")


# -- narration --------------------------------------------------------------------------

EVENT_TEXT = {
    "RESUBMIT": "the shadow holder took ownership and resubmitted its copy",
    "DEFER": "delivery deferred",
    "DUPLICATEDELIVER": "the mailbox already had it: duplicate dropped",
    "FAIL": "delivery failed",
    "DSN": "a delivery status notification was sent",
    "POISONMESSAGE": "the message crashed the server twice: Poison queue",
}
PLAIN_EVENT_TEXT = {
    "DELIVER": "delivered to the server's own mailbox",
    "RECEIVE": "received",
    "SEND": "sent to the next hop",
}


def describe(event: TrackingEvent) -> list[tuple[str, str]]:
    """(step, meaning) for each step the row records, or ("-", meaning) for a row that
    implements no step of the document (a takeover, a deferral, a dropped duplicate)."""
    data = event.custom_data
    extra = data.get("reason") if hasattr(data, "get") else None
    if event.event_id in ("DEFER", "FAIL") and event.recipient_status:
        extra = event.recipient_status[0]
    suffix = f" ({extra})" if extra else ""
    if event.event_id == "RESUBMIT" and event.source == "DUMPSTER":
        return [("-", "redelivered from the transport dumpster (a lossy failover asked)")]
    if event.event_id in EVENT_TEXT or not event.steps:
        text = EVENT_TEXT.get(event.event_id) or PLAIN_EVENT_TEXT.get(
            event.event_id, event.event_id.lower())
        return [(",".join(event.steps) or "-", text + suffix)]
    pairs = [(step, STEPS.get(step, step)) for step in event.steps]
    last_step, last_text = pairs[-1]
    pairs[-1] = (last_step, last_text + suffix)
    return pairs


def narration(lab: Lab, message_id: str) -> str:
    """Every tracking row of the message (a line per step) and every action of the
    experiment, in time order."""
    lines: list[tuple[datetime, int, str]] = []
    width = max(len(s.name) for s in lab.organization.servers.values())
    for order, event in enumerate(lab.events(message_id)):
        when = event.date_time or datetime.now(UTC)
        stamp = f"{when:%H:%M:%S.%f}"[:-3]
        for index, (step, text) in enumerate(describe(event)):
            if index == 0:
                lines.append((when, order, f"{stamp}  {step:<6} {lab.server_of(event):<{width}}"
                              f"  {event.event_id:<16} {text}"))
            else:
                lines.append((when, order, f"{'':<12}  {step:<6} {'':<{width}}  {'':<16} "
                              f"{text}"))
    for when, text in lab.actions:
        lines.append((when, -1, f"{when:%H:%M:%S.%f}"[:-3] + f"  {'**':<6} {'':<{width}}  "
                      f"{'EXPERIMENT':<16} {text}"))
    return "\n".join(text for _, _, text in sorted(lines, key=lambda row: row[:2]))


def observed(lab: Lab, message_id: str) -> str:
    """What the tracking logs say about the recovery, counted."""
    events = lab.events(message_id)
    takeovers = [e for e in events if e.event_id == "RESUBMIT" and e.source == "SMTP"]
    from_dumpster = sum(e.event_id == "RESUBMIT" and e.source == "DUMPSTER" for e in events)
    duplicates = sum(e.event_id == "DUPLICATEDELIVER" for e in events)
    delivered = sum(e.event_id == "DELIVER" for e in events)
    parts = [f"{delivered} delivery row{'s' if delivered != 1 else ''}",
             f"{duplicates} duplicate{'s' if duplicates != 1 else ''} dropped by a mailbox"]
    if takeovers:
        parts.append("shadow takeover by " + ", ".join(sorted({lab.server_of(e) for e in
                                                                takeovers})))
    else:
        parts.append("no shadow takeover")
    if from_dumpster:
        parts.append(f"{from_dumpster} redelivery from a transport dumpster")
    return "; ".join(parts)


async def run_experiment(reactor: Any, organization: Organization, scenario: str, spec: str,
                         write: Callable[[str], None], timeout: float = 120.0) -> Outcome:
    experiment = find(scenario, spec)
    missing = [n for n in NEEDED if n not in organization.servers]
    if missing:
        raise ExperimentError(f"the experiments need the servers of etc/lab.toml; this "
                              f"organization lacks {', '.join(missing)}")
    if organization.lab.admin is None:
        raise ExperimentError("the experiments need the lab admin endpoint ([lab] admin)")
    lab = Lab(reactor, organization, write, timeout)
    running = await lab.running()
    down = [name for name in NEEDED if not running.get(name)]
    if down:
        raise ExperimentError(f"{', '.join(down)} not running; start the lab (exchange-emu "
                              "lab) and wait until every server listens")
    write(f"== Experiment {experiment.key}: {experiment.summary}")
    try:
        message_id, outcome = await experiment.run(lab)
    finally:
        fault_control.heal(organization, [])
        restart = [n for n, up in (await lab.running()).items() if not up and n in NEEDED]
        for name in restart:
            await lab.server("start", name, "leaving the lab as it was")
    # Tracking rows reach the disk within the log's flush interval: let the last ones in.
    await _sleep(reactor, 2 * DEFAULT_FLUSH_INTERVAL)
    outcome = dataclasses.replace(outcome, message_id=message_id)
    write(f"== What happened to {message_id}:")
    write(narration(lab, message_id))
    write(f"-- Where it is now: {outcome.where}.")
    write(f"-- Observed: {observed(lab, message_id)}")
    write(textwrap.fill(f"-- Why: {outcome.explanation}", 100, subsequent_indent="   "))
    verdict = ("delivered exactly once, as Exchange 2010 would" if outcome.expected_copies == 1
               else "not delivered: Exchange 2010 cannot save this one (see Why)")
    if outcome.ok:
        write(f"-- Verdict: {verdict}.")
    else:
        write(f"-- Verdict: NOT as expected: {outcome.copies} copies, expected "
              f"{outcome.expected_copies}.")
    return outcome
