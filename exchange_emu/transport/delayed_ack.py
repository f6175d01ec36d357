"""Delayed acknowledgement (scenario F): for a message from a peer that did not
negotiate XSHADOW, the receive connector holds back its final ``250`` until
the message has reached all its next hops and their discard notifications
came back (Delivered), MaxAcknowledgementDelay ran out (Expired), or the hold
is skipped because the message cannot leave soon (Skipped) — protocol.md §6.
The message is already committed; the hold only delays the reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

DELIVERED = "Delivered"
EXPIRED = "Expired"
SKIPPED = "Skipped"


@dataclass(frozen=True)
class AckOutcome:
    """How a held acknowledgement ended, and how long it was held."""

    outcome: str
    held: float
    reason: str = ""

    def tarpit_line(self) -> str:
        """Exchange's SmtpReceive information line for the hold."""
        return f"Tarpit for '{format_tarpit(self.held)}' due to 'DelayedAck',{self.outcome}"


def format_tarpit(seconds: float) -> str:
    """A .NET TimeSpan as Exchange writes it in the tarpit line: ``0.00:00:25.639``."""
    millis = round(seconds * 1000)
    days, rest = divmod(millis, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{days}.{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


class _Hold:
    def __init__(self, d: Deferred[AckOutcome], started: float, timer: IDelayedCall) -> None:
        self.d = d
        self.started = started
        self.timer = timer


class DelayedAcknowledgement:
    """The held acknowledgements of one transport server, by InternalId."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._holds: dict[int, _Hold] = {}

    def hold(self, internal_id: int, max_delay: float) -> Deferred[AckOutcome]:
        """F.4: hold the acknowledgement of a committed message (at most ``max_delay``)."""
        d: Deferred[AckOutcome] = Deferred()
        timer = self.clock.callLater(max_delay, self.resolve, internal_id, EXPIRED)
        self._holds[internal_id] = _Hold(d, self.clock.seconds(), timer)
        return d

    def held(self, internal_id: int) -> bool:
        return internal_id in self._holds

    @property
    def waiting(self) -> frozenset[int]:
        return frozenset(self._holds)

    def resolve(self, internal_id: int, outcome: str, reason: str = "") -> None:
        """End the hold of ``internal_id`` (nothing happens if it is not held)."""
        hold = self._holds.pop(internal_id, None)
        if hold is None:
            return
        if hold.timer.active():
            hold.timer.cancel()
        hold.d.callback(AckOutcome(outcome, self.clock.seconds() - hold.started, reason))

    def release_all(self, outcome: str = EXPIRED) -> None:
        """Stopping: acknowledge whatever is held."""
        for internal_id in list(self._holds):
            self.resolve(internal_id, outcome, "server stopping")
