"""The lab's admin endpoint (HTTP/JSON), served by the supervisor: which servers run,
and fault injection on whole servers — kill (SIGKILL), stop, start, restart.

    GET  /servers                      -> [{"name", "roles", "running", "pid"}, ...]
    POST /servers/<NAME>/<ACTION>      -> {"server", "action", "running"}
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.web import resource, server

from exchange_emu.lab.supervisor import LabSupervisor

ACTIONS = ("kill", "stop", "start", "restart")


class LabAdmin(resource.Resource):
    isLeaf = True

    def __init__(self, supervisor: LabSupervisor) -> None:
        super().__init__()
        self.supervisor = supervisor

    def _json(self, request: Any, status: int, body: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode()

    def servers(self) -> list[dict[str, Any]]:
        out = []
        for name, each in self.supervisor.organization.servers.items():
            running = self.supervisor.processes.get(name)
            out.append({"name": name, "roles": sorted(each.roles),
                        "running": running is not None,
                        "pid": running[0].pid if running is not None else None})
        return out

    def render_GET(self, request: Any) -> bytes:
        if request.postpath == [b"servers"]:
            return self._json(request, 200, self.servers())
        return self._json(request, 404, {"error": "try GET /servers"})

    def render_POST(self, request: Any) -> bytes | int:
        parts = [p.decode() for p in request.postpath]
        if len(parts) != 3 or parts[0] != "servers" or parts[2] not in ACTIONS:
            return self._json(request, 404, {
                "error": f"try POST /servers/<NAME>/<{'|'.join(ACTIONS)}>"})
        name, action = parts[1], parts[2]
        known = {n.lower(): n for n in self.supervisor.organization.servers}
        if name.lower() not in known:
            return self._json(request, 404, {"error": f"no server named {name!r} "
                                             f"(known: {', '.join(known.values())})"})
        name = known[name.lower()]
        d = self.act(name, action)

        def done(_: object) -> None:
            running = name in self.supervisor.processes
            request.write(self._json(request, 200, {"server": name, "action": action,
                                                    "running": running}))
            request.finish()

        def failed(failure: Any) -> None:
            request.write(self._json(request, 409, {"error": failure.getErrorMessage()}))
            request.finish()

        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET

    def act(self, name: str, action: str) -> Deferred[Any]:
        supervisor = self.supervisor
        running = name in supervisor.processes
        if action == "kill":
            if not running:
                return fail(ValueError(f"{name} is not running"))
            ended = supervisor.processes[name][1].ended
            supervisor.kill(name)
            return ended
        if action == "stop":
            return supervisor.stop(name) if running else succeed(None)
        if action == "start":
            supervisor.start(name)
            return succeed(None)
        d = supervisor.stop(name) if running else succeed(None)
        return d.addCallback(lambda _: supervisor.start(name))


def admin_site(supervisor: LabSupervisor) -> server.Site:
    from exchange_emu.lab.viewer import with_viewer

    site = server.Site(with_viewer(LabAdmin(supervisor), supervisor.organization,
                                   supervisor.reactor))
    site.noisy = False
    return site
