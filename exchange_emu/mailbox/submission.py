"""The Mail Submission service of a mailbox server (scenario B.1).

It hands each new Outbox item to a hub transport server of its own AD site,
round robin over the hubs that are connected and answer, skipping dead ones.
An item stays in the Outbox — its only copy on this leg — until a hub reports
ownership (B.4). If the hub that took it goes away first, the item is handed
to another hub: the Outbox is the shadow of this leg.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from exchange_emu.storedriver.commands import NotifySubmission

log = Logger()


class HubLink(Protocol):
    """A connected hub, as the Mail Submission service sees it."""

    hub: str

    def callRemote(self, commandType: Any, *a: Any, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class Submission:
    """An Outbox item waiting to be taken by a hub."""

    item_id: int
    database: str
    message_id: str
    sender: str = ""
    recipients: tuple[str, ...] = ()
    subject: str = ""


class MailSubmissionService:
    """Notifies hubs of new Outbox items, round robin, until one takes each."""

    def __init__(self, clock: IReactorTime, *,
                 on_taken: Callable[[Submission, str, float], None] | None = None,
                 retry_interval: float = 5.0, local_hub: str | None = None) -> None:
        self.clock = clock
        self.local_hub = local_hub
        """This server's own hub role, if it has one: used only when no other hub answers."""
        self.on_taken = on_taken
        self.retry_interval = retry_interval
        self.hubs: list[HubLink] = []
        self._next = 0
        self.waiting: dict[int, Submission] = {}
        self.taken_by: dict[int, tuple[Submission, HubLink]] = {}
        self._notifying: set[int] = set()
        self._timer: IDelayedCall | None = None
        self.stopped = False

    # -- what the mailbox server tells it ----------------------------------------

    def submit(self, item: Submission) -> None:
        """A new item is in an Outbox (or was found there at start-up)."""
        if item.item_id in self.taken_by or item.item_id in self._notifying:
            return
        self.waiting[item.item_id] = item
        self._kick()

    def hub_connected(self, link: HubLink) -> None:
        self.hubs.append(link)
        self._kick()

    def hub_disconnected(self, link: HubLink) -> None:
        """The hub is gone: what it took but never reported goes to another hub."""
        if link in self.hubs:
            self.hubs.remove(link)
        for item_id, (item, hub) in list(self.taken_by.items()):
            if hub is link:
                del self.taken_by[item_id]
                log.info("Mail Submission: {hub} went away before owning item {id}; "
                         "resubmitting it", hub=link.hub, id=item_id)
                self.waiting[item_id] = item
        self._kick()

    def owned(self, item_id: int) -> None:
        """B.4: a hub reported ownership; the item has left the Outbox."""
        self.taken_by.pop(item_id, None)
        self.waiting.pop(item_id, None)

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    # -- round robin -----------------------------------------------------------------

    def _kick(self, delay: float = 0.0) -> None:
        if self.stopped:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= self.clock.seconds() + delay:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._run)

    def _run(self) -> None:
        self._timer = None
        for item in list(self.waiting.values()):
            if item.item_id not in self._notifying:
                self._notify(item)

    def pick_hub(self, exclude: set[int]) -> HubLink | None:
        """The next hub in round-robin order not in ``exclude`` (by identity). A hub on
        this very server comes last: the message should leave the box (protocol.md §8)."""
        for local in (False, True):
            for _ in range(len(self.hubs)):
                hub = self.hubs[self._next % len(self.hubs)]
                self._next += 1
                if id(hub) not in exclude and (hub.hub == self.local_hub) == local:
                    return hub
        return None

    def _notify(self, item: Submission, tried: set[int] | None = None) -> None:
        tried = tried if tried is not None else set()
        hub = self.pick_hub(tried)
        if hub is None:
            # No hub connected (or none answered): try again in a while.
            self._kick(self.retry_interval)
            return
        tried.add(id(hub))
        self._notifying.add(item.item_id)
        notified_at = self.clock.seconds()
        d = hub.callRemote(NotifySubmission, database=item.database, item_id=item.item_id)

        def answered(answer: dict[str, Any]) -> None:
            self._notifying.discard(item.item_id)
            if item.item_id not in self.waiting:
                return  # owned meanwhile
            if answer.get("taken"):
                del self.waiting[item.item_id]
                self.taken_by[item.item_id] = (item, hub)
                if self.on_taken is not None:
                    self.on_taken(item, hub.hub, notified_at)
            else:
                self._notify(item, tried)

        def failed(failure: Any) -> None:
            self._notifying.discard(item.item_id)
            log.info("Mail Submission: {hub} did not take item {id}: {why}", hub=hub.hub,
                     id=item.item_id, why=failure.getErrorMessage())
            if item.item_id in self.waiting:
                self._notify(item, tried)

        d.addCallbacks(answered, failed)
