"""``GET /events`` of the lab endpoint: what the queue viewer shows, pushed as it changes
(server-sent events, ``text/event-stream``).

Once a second, while at least one page listens, the lab polls its own HTTP API —
``GET /servers`` (which servers run) and ``GET /api/queues`` (Get-Queue on every running
server) — and sends ``event: servers`` / ``event: queues`` with the new snapshot when it
differs from the last one sent; and it reads every server's message tracking log (on a
thread) and sends the rows written since the last poll as ``event: tracking``. A page
that connects first gets the latest snapshots at once.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from twisted.internet import task, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.client import Agent, readBody

from exchange_emu.admin.tracking import (
    TrackingQuery,
    search_tracking_logs,
    tracking_log_directory,
)
from exchange_emu.directory import Organization
from exchange_emu.logs import TrackingEvent, event_to_dict, find_tracking_logs
from exchange_emu.logs.tracking_event import event_to_row

POLL_INTERVAL = 1.0
"""Seconds between two polls: snapshots change at most once a second."""
KEEPALIVE = 15.0
"""Seconds between comment lines that keep an idle stream open through proxies."""

log = Logger()


def sse(event: str, data: Any) -> bytes:
    """One server-sent event: ``event: NAME`` and its JSON ``data`` line."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class TrackingWatch:
    """The tracking rows of every server that are newer than the last call's."""

    def __init__(self, organization: Organization) -> None:
        self.organization = organization
        self.mark: datetime | None = None
        self.seen_at_mark: set[tuple[str, ...]] = set()
        self.started = False
        self.files: tuple[tuple[str, int, int], ...] = ()

    def _files(self) -> tuple[tuple[str, int, int], ...]:
        """Every tracking log file of the organization with its size and change time."""
        found = []
        for each in self.organization.servers.values():
            for path in find_tracking_logs(tracking_log_directory(each)):
                with contextlib.suppress(OSError):  # rolled over meanwhile
                    status = path.stat()
                    found.append((str(path), status.st_size, status.st_mtime_ns))
        return tuple(found)

    def new_rows(self) -> list[TrackingEvent]:
        """Blocking (reads files): run it on a thread. The first call only sets the mark.
        Nothing is parsed while no log file has grown or changed."""
        files = self._files()
        if self.started and files == self.files:
            return []
        self.files = files
        query = TrackingQuery(start=self.mark, result_size=None)
        events = [e for e in search_tracking_logs(self.organization, query).events
                  if e.date_time is not None]
        mark = self.mark
        fresh = [e for e in events if mark is None or (e.date_time or mark) > mark
                 or tuple(event_to_row(e)) not in self.seen_at_mark]
        if events:
            last = max(e.date_time for e in events if e.date_time is not None)
            if last != self.mark:
                self.seen_at_mark = set()
            self.mark = last
            self.seen_at_mark |= {tuple(event_to_row(e)) for e in events if e.date_time == last}
        first, self.started = not self.started, True
        return [] if first else fresh


class LabEvents(resource.Resource):
    """The ``/events`` stream; one poller shared by every listening page."""

    isLeaf = True

    def __init__(self, organization: Organization, base_url: str, reactor: Any,
                 interval: float = POLL_INTERVAL) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.reactor = reactor
        self.agent = Agent(reactor)
        self.watch = TrackingWatch(organization)
        self.listeners: list[Any] = []
        self.latest: dict[str, str] = {}
        self.loop = task.LoopingCall(self.poll)
        self.loop.clock = reactor
        self.interval = interval
        self.keepalive = task.LoopingCall(self._broadcast, b": keepalive\n\n")
        self.keepalive.clock = reactor
        self.polling = False

    def render_GET(self, request: Any) -> int:
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.write(b"retry: 2000\n\n")
        for name, text in self.latest.items():
            request.write(f"event: {name}\ndata: {text}\n\n".encode())
        self.listeners.append(request)
        request.notifyFinish().addBoth(self._gone, request)
        if not self.loop.running:
            self.loop.start(self.interval, now=True)
            self.keepalive.start(KEEPALIVE, now=False)
        return server.NOT_DONE_YET

    def _gone(self, _: object, request: Any) -> None:
        if request in self.listeners:
            self.listeners.remove(request)
        if not self.listeners and self.loop.running:
            self.loop.stop()
            self.keepalive.stop()

    def _broadcast(self, data: bytes) -> None:
        for request in list(self.listeners):
            request.write(data)

    def publish(self, name: str, value: Any) -> None:
        """Send a snapshot to every page, if it differs from the last one sent."""
        text = json.dumps(value, sort_keys=True)
        if self.latest.get(name) == text:
            return
        self.latest[name] = text
        self._broadcast(f"event: {name}\ndata: {text}\n\n".encode())

    def poll(self) -> Deferred[None] | None:
        if self.polling:  # the previous poll is still waiting for a server
            return None
        self.polling = True
        d = self._poll()
        d.addErrback(lambda f: log.failure("polling the lab for /events failed", f))
        d.addBoth(self._polled)
        return d

    def _polled(self, _: object) -> None:
        self.polling = False

    @inlineCallbacks
    def _poll(self) -> Any:
        servers = yield self.get_json("/servers")
        if servers is not None:
            self.publish("servers", servers)
        queues = yield self.get_json("/api/queues")
        if queues is not None:
            self.publish("queues", queues)
        rows = yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                               self.watch.new_rows)
        if rows:
            self._broadcast(sse("tracking", [event_to_dict(e) for e in rows]))

    @inlineCallbacks
    def get_json(self, path: str) -> Any:
        """GET one of the lab's own JSON resources; None when it answers with an error."""
        response = yield self.agent.request(b"GET", (self.base_url + path).encode())
        body = yield readBody(response)
        if response.code != 200:
            return None
        return json.loads(body)


def events_resource(organization: Organization, reactor: Any) -> LabEvents:
    """``/events`` for the lab endpoint of ``organization`` (its ``[lab] admin``)."""
    admin = organization.lab.admin
    assert admin is not None
    return LabEvents(organization, f"http://{admin}", reactor)
