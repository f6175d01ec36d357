"""The Mail Submission service (B.1): round robin over the hubs that answer, dead
hubs skipped, and an item taken by a hub that dies goes to another hub."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock

from exchange_emu.mailbox.submission import MailSubmissionService, Submission


class FakeHub:
    def __init__(self, hub: str, answer: str = "take") -> None:
        self.hub = hub
        self.answer = answer
        self.notified: list[int] = []
        self.pending: list[Deferred[Any]] = []

    def callRemote(self, command: Any, **kw: Any) -> Deferred[Any]:
        self.notified.append(kw["item_id"])
        if self.answer == "take":
            return succeed({"taken": True, "internal_id": 1})
        if self.answer == "dead":
            return fail(ConnectionLost("gone"))
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


def item(n: int) -> Submission:
    return Submission(n, "DB01", f"<{n}@contoso.test>")


def make(*hubs: FakeHub) -> tuple[MailSubmissionService, Clock, list[tuple[int, str]]]:
    clock = Clock()
    taken: list[tuple[int, str]] = []
    service = MailSubmissionService(clock, on_taken=lambda i, hub, at: taken.append(
        (i.item_id, hub)), retry_interval=5)
    for hub in hubs:
        service.hub_connected(hub)
    return service, clock, taken


def test_round_robin_over_connected_hubs():
    hub1, hub2 = FakeHub("HUB01"), FakeHub("HUB02")
    service, clock, taken = make(hub1, hub2)
    for n in range(4):
        service.submit(item(n))
        clock.advance(0)
    assert [hub for _, hub in taken] == ["HUB01", "HUB02", "HUB01", "HUB02"]
    assert service.waiting == {}


def test_a_dead_hub_is_skipped():
    dead, alive = FakeHub("HUB01", "dead"), FakeHub("HUB02")
    service, clock, taken = make(dead, alive)
    service.submit(item(1))
    clock.advance(0)
    assert dead.notified == [1] and taken == [(1, "HUB02")]


def test_no_hub_answers_then_one_connects():
    dead = FakeHub("HUB01", "dead")
    service, clock, taken = make(dead)
    service.submit(item(1))
    clock.advance(0)
    assert taken == [] and 1 in service.waiting
    clock.advance(5)  # tried again after retry_interval: still nobody
    assert dead.notified == [1, 1]
    service.hub_connected(FakeHub("HUB02"))
    clock.advance(0)
    assert taken == [(1, "HUB02")]


def test_item_taken_by_a_hub_that_dies_before_owning_goes_to_another_hub():
    """Between B.2 and B.4 the Outbox is the only copy: the item goes out again."""
    hub1, hub2 = FakeHub("HUB01"), FakeHub("HUB02")
    service, clock, taken = make(hub1, hub2)
    service.submit(item(7))
    clock.advance(0)
    assert taken == [(7, "HUB01")]
    service.hub_disconnected(hub1)
    clock.advance(0)
    assert taken == [(7, "HUB01"), (7, "HUB02")]


def test_owned_item_is_not_resubmitted_when_its_hub_leaves():
    hub1, hub2 = FakeHub("HUB01"), FakeHub("HUB02")
    service, clock, taken = make(hub1, hub2)
    service.submit(item(3))
    clock.advance(0)
    service.owned(3)  # B.4
    service.hub_disconnected(hub1)
    clock.advance(10)
    assert taken == [(3, "HUB01")] and hub2.notified == []


def test_a_hub_on_the_same_server_is_used_only_when_no_other_hub_takes_it():
    """Hub and mailbox on one server: submission prefers another hub of the site."""
    local, other = FakeHub("EX01"), FakeHub("HUB02", "dead")
    clock = Clock()
    taken: list[tuple[int, str]] = []
    service = MailSubmissionService(clock, local_hub="EX01",
                                    on_taken=lambda i, hub, at: taken.append((i.item_id, hub)))
    service.hub_connected(local)
    service.hub_connected(other)
    service.submit(item(1))
    clock.advance(0)
    assert other.notified == [1]  # asked first although connected second
    assert taken == [(1, "EX01")]  # it did not answer: the local hub, as the fallback
    other.answer = "take"
    service.submit(item(2))
    clock.advance(0)
    assert taken[-1] == (2, "HUB02") and local.notified == [1]
