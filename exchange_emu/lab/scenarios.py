"""``exchange-emu scenario run``: send the message each scenario needs through the
running lab, follow it through every server's tracking log, and narrate the steps.

- A, B and C: alice (MBX01, Site-A) writes to carol (MBX02, Site-B) — client
  submission, Mail Submission, hub → hub across sites (D), delivery (C);
- D and E: alice writes to erin@fabrikam.test — HUB → EDGE01 (D), EDGE01 → INTERNET01 (E);
- F: erin writes from INTERNET01 to bob — the Internet to EDGE01 (F), on to bob's mailbox.
"""

from __future__ import annotations

import smtplib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred

from exchange_emu.admin.tracking import TrackingQuery, search_tracking_logs
from exchange_emu.directory import Organization
from exchange_emu.lab.narration import NarratedStep, followed, narrate
from exchange_emu.mailbox.client import compose, submit

SCENARIOS = "ABCDEF"
TITLES = {
    "A": "Submission from a MAPI or mobile client",
    "B": "Mailbox server to hub transport server",
    "C": "Hub transport server to mailbox server (delivery)",
    "D": "Between Exchange 2010 transport servers",
    "E": "Exchange 2010 transport to a server without shadow redundancy",
    "F": "A server without shadow redundancy to Exchange 2010 transport",
}
MESSAGE_FOR = {"A": "abc", "B": "abc", "C": "abc", "D": "de", "E": "de", "F": "f"}


@dataclass
class ScenarioResult:
    scenario: str
    message_id: str
    ok: bool
    problems: list[str]


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def _smtp(host: str, port: int, sender: str, recipient: str, message_id: str,
          subject: str) -> None:
    with smtplib.SMTP(host, port, timeout=120) as client:
        client.sendmail(sender, [recipient], (f"Message-ID: {message_id}\r\nSubject: {subject}"
                                              "\r\n\r\nA message of the scenario runner.\r\n"
                                              ).encode())


async def send_for(reactor: Any, organization: Organization, kind: str) -> str:
    """Send the message scenario group ``kind`` needs; its Message-ID."""
    tag = uuid.uuid4().hex[:8]
    if kind == "abc":
        mime = compose("alice@contoso.test", ["carol@contoso.test"], f"Scenarios A-C {tag}",
                       "A message of the scenario runner.")
        return (await submit(reactor, organization, "alice@contoso.test",
                             ["carol@contoso.test"], mime)).message_id
    message_id = f"<scenario-{kind}-{tag}@contoso.test>"
    if kind == "de":
        hub = organization.server("HUB01")
        assert hub.smtp is not None
        await threads.deferToThread(_smtp, hub.smtp.host, hub.smtp.port, "alice@contoso.test",
                                    "erin@fabrikam.test", message_id, f"Scenarios D-E {tag}")
    else:
        internet = organization.server("INTERNET01")
        assert internet.smtp is not None
        await threads.deferToThread(_smtp, internet.smtp.host, internet.smtp.port,
                                    "erin@fabrikam.test", "bob@contoso.test", message_id,
                                    f"Scenario F {tag}")
    return message_id


async def follow(reactor: Any, organization: Organization, message_id: str,
                 scenarios: str, timeout: float) -> list[NarratedStep]:
    """Poll every server's tracking log until the scenarios' steps are all there."""
    deadline = time.monotonic() + timeout
    while True:
        search = await threads.deferToThread(  # reading files: off the reactor thread
            search_tracking_logs, organization,
            TrackingQuery.from_text(message_id=message_id, result_size="unlimited"))
        steps = narrate(search.events, message_id)
        if all(followed(steps, s)[0] for s in scenarios) or time.monotonic() > deadline:
            return steps
        await _sleep(reactor, 0.5)


async def run(reactor: Any, organization: Organization, wanted: str,
              write: Callable[[str], None], timeout: float = 60.0) -> list[ScenarioResult]:
    from exchange_emu.lab.narration import format_narration

    results = []
    for kind in dict.fromkeys(MESSAGE_FOR[s] for s in wanted):
        group = "".join(s for s in wanted if MESSAGE_FOR[s] == kind)
        message_id = await send_for(reactor, organization, kind)
        write(f"== Scenario{'s' if len(group) > 1 else ''} {', '.join(group)}: "
              f"message {message_id}")
        steps = await follow(reactor, organization, message_id, group, timeout)
        write(format_narration(steps))
        for scenario in group:
            ok, problems = followed(steps, scenario)
            results.append(ScenarioResult(scenario, message_id, ok, problems))
            verdict = "followed the documented steps" if ok else "did NOT follow: " + \
                "; ".join(problems)
            write(f"-- {scenario} ({TITLES[scenario]}): {verdict}")
    return results
