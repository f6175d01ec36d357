"""The scenario runner of the lab endpoint (what the web page's "Run" button calls), and
the sequence diagram of any message.

    POST /scenarios/<A..F|all>/run          text/plain, streamed: ``run: ID``, the
                                            narration lines as ``scenario run`` prints
                                            them, one ``diagram: URL`` per message, and
                                            ``done: N of M scenarios followed ...``
    GET  /scenarios/<ID>/diagram.svg?part=N the run's N-th message as an SVG diagram
    GET  /diagram.svg?message_id=<...>      any message's diagram, from the tracking logs
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web import resource, server

from exchange_emu.directory import Organization
from exchange_emu.lab.scenario_diagram import message_svg, scenario_title
from exchange_emu.lab.scenarios import SCENARIOS, ScenarioResult, run

KEEP_RUNS = 20
"""Runs whose diagrams stay available (the oldest is forgotten first)."""
RUN_TIMEOUT = 60.0
"""Seconds a run waits for a message's steps to appear in the tracking logs."""


def _error(request: Any, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"error": message}).encode()


def _svg_response(request: Any, d: Deferred[str]) -> int:
    def done(svg: str) -> None:
        request.setHeader(b"content-type", b"image/svg+xml; charset=utf-8")
        request.write(svg.encode())
        request.finish()

    def failed(failure: Failure) -> None:
        request.write(_error(request, 500, f"cannot draw the diagram: "
                                           f"{failure.getErrorMessage()}"))
        request.finish()

    d.addCallbacks(done, failed)
    return server.NOT_DONE_YET


class ScenarioRuns(resource.Resource):
    """``/scenarios/...``: run scenarios through the lab; the diagrams of past runs."""

    isLeaf = True

    def __init__(self, organization: Organization, reactor: Any,
                 timeout: float = RUN_TIMEOUT) -> None:
        super().__init__()
        self.organization = organization
        self.reactor = reactor
        self.timeout = timeout
        self.runs: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        """Run id -> (message id, scenarios) for each message the run sent."""

    def render_POST(self, request: Any) -> bytes | int:
        parts = [p.decode() for p in request.postpath]
        if len(parts) != 2 or parts[1] != "run":
            return _error(request, 404, "try POST /scenarios/<A|B|C|D|E|F|all>/run")
        wanted = SCENARIOS if parts[0].lower() == "all" else parts[0].upper()
        if not wanted or wanted not in SCENARIOS:
            return _error(request, 404, f"no scenario {parts[0]!r}: A, B, C, D, E, F or all")
        run_id = uuid.uuid4().hex[:10]
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-run-id", run_id.encode())
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def write(text: str) -> None:
            if not gone:
                request.write((text.rstrip("\n") + "\n").encode())

        write(f"run: {run_id}")
        d = Deferred.fromCoroutine(run(self.reactor, self.organization, wanted, write,
                                       self.timeout))
        d.addCallbacks(self._finished, self._failed, callbackArgs=(run_id, write),
                       errbackArgs=(write,))
        d.addBoth(lambda _: None if gone else request.finish())
        return server.NOT_DONE_YET

    def _finished(self, results: list[ScenarioResult], run_id: str, write: Any) -> None:
        messages: dict[str, str] = {}
        for result in results:
            messages[result.message_id] = messages.get(result.message_id, "") + result.scenario
        self.runs[run_id] = list(messages.items())
        while len(self.runs) > KEEP_RUNS:
            self.runs.popitem(last=False)
        for part, scenarios in enumerate(messages.values()):
            write(f"diagram: /scenarios/{run_id}/diagram.svg?part={part} {scenarios}")
        failed = [r.scenario for r in results if not r.ok]
        write(f"done: {len(results) - len(failed)} of {len(results)} scenarios followed the "
              "documented steps" + (f"; not: {', '.join(failed)}" if failed else ""))

    def _failed(self, failure: Failure, write: Any) -> None:
        write(f"error: {failure.getErrorMessage()}; are the servers running?")

    def render_GET(self, request: Any) -> bytes | int:
        parts = [p.decode() for p in request.postpath]
        if len(parts) != 2 or parts[1] != "diagram.svg":
            return _error(request, 404, "try GET /scenarios/<RUN-ID>/diagram.svg?part=0")
        if parts[0] not in self.runs:
            return _error(request, 404, f"no run {parts[0]!r} (the last {KEEP_RUNS} runs "
                                        "are kept); run one with POST /scenarios/<X>/run")
        messages = self.runs[parts[0]]
        part = request.args.get(b"part", [b"0"])[0].decode()
        if not part.isdigit() or int(part) >= len(messages):
            return _error(request, 404, f"part must be 0..{len(messages) - 1}")
        message_id, scenarios = messages[int(part)]
        return _svg_response(request, threads.deferToThread(
            message_svg, self.organization, message_id, scenario_title(scenarios, message_id)))


class MessageDiagram(resource.Resource):
    """``/diagram.svg?message_id=<...>``: any message's trip, from the tracking logs."""

    isLeaf = True

    def __init__(self, organization: Organization) -> None:
        super().__init__()
        self.organization = organization

    def render_GET(self, request: Any) -> bytes | int:
        message_id = request.args.get(b"message_id", [b""])[0].decode("utf-8", "replace")
        if not message_id.strip():
            return _error(request, 400, "give the message: /diagram.svg?message_id=<...>")
        return _svg_response(request, threads.deferToThread(
            message_svg, self.organization, message_id))
