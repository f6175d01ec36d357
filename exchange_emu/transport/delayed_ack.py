"""Delayed acknowledgement (scenario F): for a message from a peer that did not
negotiate XSHADOW, the receive connector holds back its final ``250`` until
the message has reached all its next hops and their discard notifications
came back (Delivered), MaxAcknowledgementDelay ran out (Expired), or the hold
is skipped because the message cannot leave soon (Skipped) — protocol.md §6.
The message is already committed; the hold only delays the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from exchange_emu.transport.jobs import Envelope

DELIVERED = "Delivered"
EXPIRED = "Expired"
SKIPPED = "Skipped"


@dataclass(frozen=True)
class AckOutcome:
    """How a held acknowledgement ended, and how long it was held."""

    outcome: str
    held: float
    reason: str = ""
    deleted: bool = False
    """Delivered, and the message is already gone from this server (F.8 happened first)."""

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
        self.shadows: set[tuple[str, str]] = set()
        """(primary, shadow message id) of the copies whose discard notification is awaited."""
        self.envelope: Envelope | None = None


class DelayedAcknowledgement:
    """The held acknowledgements of one transport server, by InternalId."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._holds: dict[int, _Hold] = {}
        self._by_shadow: dict[tuple[str, str], int] = {}

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

    def await_discard(self, envelope: Envelope, primary: str, shadow_message_id: str) -> None:
        """F.5: the held message is shadowed at ``primary``; F.7 needs its discard."""
        hold = self._holds.get(envelope.internal_id)
        if hold is not None:
            hold.shadows.add((primary, shadow_message_id))
            hold.envelope = envelope
            self._by_shadow[(primary, shadow_message_id)] = envelope.internal_id

    def discarded(self, primary: str, shadow_message_id: str) -> Envelope | None:
        """F.6: ``primary``'s discard notification for a shadow copy came back. Returns
        the held message when that was the last discard it awaited."""
        internal_id = self._by_shadow.pop((primary, shadow_message_id), None)
        hold = self._holds.get(internal_id) if internal_id is not None else None
        if hold is None:
            return None
        hold.shadows.discard((primary, shadow_message_id))
        return None if hold.shadows else hold.envelope

    def stop_awaiting(self, primary: str) -> None:
        """The holder took the copies at ``primary`` back (resubmission): its discards no
        longer show that those messages reached their next hops."""
        for shadow in [s for s in self._by_shadow if s[0] == primary]:
            hold = self._holds.get(self._by_shadow.pop(shadow))
            if hold is not None:
                hold.shadows.discard(shadow)

    def resolve(self, internal_id: int, outcome: str, reason: str = "",
                deleted: bool = False) -> None:
        """End the hold of ``internal_id`` (nothing happens if it is not held)."""
        hold = self._holds.pop(internal_id, None)
        if hold is None:
            return
        if hold.timer.active():
            hold.timer.cancel()
        for shadow in hold.shadows:
            self._by_shadow.pop(shadow, None)
        hold.d.callback(AckOutcome(outcome, self.clock.seconds() - hold.started, reason,
                                   deleted))

    def release_all(self, outcome: str = EXPIRED) -> None:
        """Stopping: acknowledge whatever is held."""
        for internal_id in list(self._holds):
            self.resolve(internal_id, outcome, "server stopping")
