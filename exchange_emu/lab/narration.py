"""Scenario narration: the steps of the shadow redundancy document, as they happened,
read from the message tracking logs of every server of the organization."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exchange_emu.logs import TrackingEvent

STEPS: dict[str, str] = {
    "A": "the client wrote the message into the sender's Outbox; no shadow exists for this leg",
    "B.1": "the Mail Submission service notified a hub of its AD site",
    "B.2": "the hub took the message out of the Outbox into its Submission queue",
    "B.3": "the hub routed it: mailboxes of its site by scenario C, the rest to a next hop",
    "B.4": "the next hop had it: the hub reported ownership; the item went to Sent Items",
    "B.5": "the hub deleted the message, or kept it as a shadow copy for the next hop",
    "C.1": "the hub delivered the message to the destination mailboxes",
    "C.2": "the hub added it to the transport dumpster",
    "C.3": "the hub queued discard notifications for the hop it received the message from",
    "C.4": "that previous hop deleted its shadow copy",
    "D.1": "the sending server opened an SMTP connection to the next transport server",
    "D.2": "the receiver advertised XSHADOW",
    "D.3": "the sender asked for shadow redundancy on the session (XSHADOW)",
    "D.4.1": "the sender transmitted the message",
    "D.4.2": "the receiver recorded the message as shadowed on the sender",
    "D.4.3": "the sender made the receiver the primary and kept a shadow copy",
    "D.4.4": "the sender prepared discard notifications for the hop it received the message from",
    "D.5": "the shadow holder queried the primary for discard status (XQDISCARD)",
    "D.6": "the primary sent the discard notifications prepared for the holder",
    "D.7": "the holder deleted its shadow copy",
    "E.1": "the Exchange 2010 server opened an SMTP connection to a server without XSHADOW",
    "E.2": "that server did not advertise shadow redundancy",
    "E.3": "so shadow redundancy was not started on the session",
    "E.4": "the message was delivered to that server",
    "E.5": "the Exchange 2010 server deleted the message",
    "E.6": "it prepared discard notifications for the hop it received the message from",
    "F.1": "a server without shadow redundancy opened an SMTP connection",
    "F.2": "the Exchange 2010 server answered EHLO",
    "F.3": "the sender, not speaking XSHADOW, simply sent the message",
    "F.4": "the message was committed and marked for delayed acknowledgement",
    "F.5": "it was sent on to its next hops with scenario D",
    "F.6": "the next hops were queried for its discard status",
    "F.7": "the held acknowledgement (250) went out to the sender",
    "F.8": "the message was deleted from this server",
}

EXPECTED: dict[str, tuple[str, ...]] = {
    scenario: tuple(step for step in STEPS if step.split(".")[0] == scenario)
    for scenario in "ABCDEF"
}
"""The steps each scenario must show (D.4.4 only where the sender had a previous hop)."""


@dataclass(frozen=True)
class NarratedStep:
    step: str
    server: str
    event_id: str
    when: str
    text: str


def narrate(events: Iterable[TrackingEvent], message_id: str) -> list[NarratedStep]:
    """Every step the tracking rows of ``message_id`` record, in time order."""
    rows = sorted((e for e in events if e.message_id == message_id and e.steps),
                  key=lambda e: (e.date_time is None, e.date_time))
    out = []
    for event in rows:
        when = event.date_time.strftime("%H:%M:%S.%f")[:-3] if event.date_time else ""
        for step in event.steps:
            out.append(NarratedStep(step, event.server_hostname, event.event_id, when,
                                    STEPS.get(step, "")))
    return out


def followed(steps: Sequence[NarratedStep], scenario: str) -> tuple[bool, list[str]]:
    """Did the message show every step of ``scenario``, each server's in the documented
    order? Returns the verdict and the steps that were missing or out of order."""
    expected = [s for s in EXPECTED[scenario] if s != "D.4.4"]
    seen = [s.step for s in steps if s.step.split(".")[0] == scenario]
    problems = [f"missing {s}" for s in expected if s not in seen]
    by_server: dict[str, list[str]] = {}
    for s in steps:
        if s.step.split(".")[0] == scenario:
            by_server.setdefault(s.server, []).append(s.step)
    order = {step: index for index, step in enumerate(EXPECTED[scenario])}
    for server, server_steps in by_server.items():
        ranks = [order.get(step, -1) for step in server_steps]
        if ranks != sorted(ranks):
            problems.append(f"out of order on {server}: {', '.join(server_steps)}")
    return not problems, problems


def format_narration(steps: Sequence[NarratedStep]) -> str:
    width = max((len(s.server) for s in steps), default=0)
    return "\n".join(f"{s.when}  {s.step:<6} {s.server:<{width}}  {s.event_id:<12} {s.text}"
                     for s in steps)
