"""The lab admin endpoint's fault injection beyond whole-server kill/stop/start:

    GET  /faults                      -> {"faults": [line, ...], "plans": {SERVER: plan}}
    POST /faults/partition            {"a", "b", "mode": "refuse"|"blackhole", "hang"}
    POST /faults/heal                 {"servers": [] | [A] | [A, B]}
    POST /faults/slow                 {"server", "delay_ms"}
    POST /faults/reply                {"server", "verb", "code", "text", "count",
                                       "probability", "seed"}
    POST /faults/crash-at             {"server", "step"}: restart it with
                                       EXCHANGE_EMU_CRASH_AT=step (it dies there)
    POST /servers/<NAME>/wipe-db      stop, delete its queue database, start (a lost disk)

Every answer is JSON; a refused request gets ``{"error": "..."}`` with status 400/404/409.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.web import resource, server

from exchange_emu.admin.http_json import json_answer as _json
from exchange_emu.faults import CRASH_AT
from exchange_emu.lab import fault_control
from exchange_emu.lab.fault_control import FaultError
from exchange_emu.lab.supervisor import LabSupervisor

POST_ACTIONS = ("partition", "heal", "slow", "reply", "crash-at")


class FaultsResource(resource.Resource):
    """``/faults``: the fault plans of every server of the lab."""

    isLeaf = True

    def __init__(self, supervisor: LabSupervisor) -> None:
        super().__init__()
        self.supervisor = supervisor

    @property
    def organization(self) -> Any:
        return self.supervisor.organization

    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, {"faults": fault_control.list_faults(self.organization),
                                    "plans": fault_control.faults_json(self.organization)})

    def render_POST(self, request: Any) -> bytes | int:
        path = [p.decode() for p in request.postpath if p]
        if len(path) != 1 or path[0] not in POST_ACTIONS:
            return _json(request, 404, {"error": "try POST /faults/<"
                                        + "|".join(POST_ACTIONS) + ">"})
        try:
            raw = request.content.read() if request.content is not None else b""
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return _json(request, 400, {"error": f"the body must be a JSON object ({e})"})
        try:
            if path[0] == "crash-at":
                return self._crash_at(request, body)
            message = self._plan_fault(path[0], body)
        except FaultError as e:
            return _json(request, 400, {"error": str(e)})
        except (KeyError, TypeError, ValueError) as e:
            return _json(request, 400, {"error": f"bad or missing field: {e}"})
        return _json(request, 200, {"done": message,
                                    "faults": fault_control.list_faults(self.organization)})

    def _plan_fault(self, action: str, body: dict[str, Any]) -> str:
        org = self.organization
        if action == "partition":
            return fault_control.partition(org, body["a"], body["b"],
                                           body.get("mode", "refuse"),
                                           float(body.get("hang", 30.0)))
        if action == "heal":
            return fault_control.heal(org, list(body.get("servers", [])))
        if action == "slow":
            return fault_control.slow(org, body["server"], int(body["delay_ms"]))
        return fault_control.script_reply(
            org, body["server"], body["verb"], int(body["code"]), body.get("text"),
            int(body.get("count", 1)), float(body.get("probability", 1.0)), body.get("seed"))

    def _crash_at(self, request: Any, body: dict[str, Any]) -> int:
        name = fault_control.server_named(self.organization, body["server"]).name
        step = str(body["step"])
        d = restart(self.supervisor, name, {CRASH_AT: step})
        return _finish(request, d, lambda: {"server": name, "crash_at": step,
                                            "running": name in self.supervisor.processes})


def restart(supervisor: LabSupervisor, name: str,
            env: dict[str, str] | None = None) -> Deferred[Any]:
    """Stop ``name`` if it runs, then start it (with ``env`` added)."""
    d = supervisor.stop(name) if name in supervisor.processes else succeed(None)
    return d.addCallback(lambda _: supervisor.start(name, env))


def wipe_db(supervisor: LabSupervisor, name: str) -> Deferred[Any]:
    """Stop the server, delete its queue database, start it: a lost disk."""
    server_ = supervisor.organization.server(name)
    fault_control.queue_database_files(server_)  # refuse a non-SQLite database up front
    d = supervisor.stop(name) if name in supervisor.processes else succeed(None)

    def wipe(_: object) -> None:
        fault_control.wipe_queue_database(server_)
        supervisor.start(name)

    return d.addCallback(wipe)


def _finish(request: Any, d: Deferred[Any], answer: Any) -> int:
    def done(_: object) -> None:
        request.write(_json(request, 200, answer()))
        request.finish()

    def failed(failure: Any) -> None:
        request.write(_json(request, 409, {"error": failure.getErrorMessage()}))
        request.finish()

    d.addCallbacks(done, failed)
    return server.NOT_DONE_YET
