"""The lab's admin endpoint (HTTP/JSON), served by the supervisor: which servers run, fault
injection on whole servers, and the management API of every server.

    GET  /servers                      -> [{"name", "roles", "site", "running", "pid",
                                            "endpoints"}, ...]
    POST /servers/<NAME>/<ACTION>      -> {"server", "action", "running"}
    GET|POST /api/...                  the management API (docs/management.md)
    GET|POST /faults/...               partitions, slow servers, scripted replies
                                       (lab/fault_api.py); wipe-db is a server action

The endpoint is a twisted.web resource tree: another part of the lab mounts itself with one
line, e.g. ``admin_root(...).putChild(b"faults", FaultsResource(supervisor))``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.web import resource, server

from exchange_emu.admin.http_json import json_answer as _json
from exchange_emu.admin.same_origin import guarded_site
from exchange_emu.lab import fault_api
from exchange_emu.lab.api_forward import TRANSPORT_ROLES, ApiForwarder, admin_address
from exchange_emu.lab.fault_control import FaultError
from exchange_emu.lab.lab_api import SendResource, TrackingResource
from exchange_emu.lab.supervisor import LabSupervisor

ACTIONS = ("kill", "stop", "start", "restart", "wipe-db")


class ServersResource(resource.Resource):
    """``/servers``: the topology and the whole-server faults."""

    isLeaf = True

    def __init__(self, supervisor: LabSupervisor) -> None:
        super().__init__()
        self.supervisor = supervisor

    def servers(self) -> list[dict[str, Any]]:
        out = []
        for name, each in self.supervisor.organization.servers.items():
            running = self.supervisor.processes.get(name)
            endpoints: dict[str, Any] = {
                "smtp": str(each.smtp) if each.smtp else None,
                "store_driver": str(each.store_driver) if each.store_driver else None,
                # the management API runs in transport servers only
                "admin": admin_address(each) if each.roles & TRANSPORT_ROLES else None,
                "receive_connectors": {c.name: str(c.bind) for c in each.receive_connectors},
            }
            out.append({"name": name, "roles": sorted(each.roles), "site": each.site,
                        "running": running is not None,
                        "pid": running[0].pid if running is not None else None,
                        "endpoints": endpoints})
        return out

    def render_GET(self, request: Any) -> bytes:
        if request.postpath in ([], [b""]):
            return _json(request, 200, self.servers())
        return _json(request, 404, {"error": "try GET /servers"})

    def render_POST(self, request: Any) -> bytes | int:
        parts = [p.decode() for p in request.postpath]
        if len(parts) != 2 or parts[1] not in ACTIONS:
            return _json(request, 404, {
                "error": f"try POST /servers/<NAME>/<{'|'.join(ACTIONS)}>"})
        name, action = parts
        known = {n.lower(): n for n in self.supervisor.organization.servers}
        if name.lower() not in known:
            return _json(request, 404, {"error": f"no server named {name!r} "
                                        f"(known: {', '.join(known.values())})"})
        name = known[name.lower()]
        d = self.act(name, action)

        def done(_: object) -> None:
            running = name in self.supervisor.processes
            request.write(_json(request, 200, {"server": name, "action": action,
                                               "running": running}))
            request.finish()

        def failed(failure: Any) -> None:
            request.write(_json(request, 409, {"error": failure.getErrorMessage()}))
            request.finish()

        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET

    def act(self, name: str, action: str) -> Deferred[Any]:
        supervisor = self.supervisor
        running = name in supervisor.processes
        if action == "wipe-db":
            try:
                return fault_api.wipe_db(supervisor, name)
            except FaultError as e:
                return fail(e)
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


def admin_root(supervisor: LabSupervisor, reactor: Any = None) -> resource.Resource:
    """The lab endpoint's root: ``/servers`` and ``/api``; mount more with putChild."""
    if reactor is None:
        reactor = supervisor.reactor
    root = resource.Resource()
    root.putChild(b"servers", ServersResource(supervisor))
    root.putChild(b"faults", fault_api.FaultsResource(supervisor))
    api = ApiForwarder(supervisor, reactor)
    api.putChild(b"tracking", TrackingResource(supervisor))
    api.putChild(b"send", SendResource(supervisor, reactor))
    root.putChild(b"api", api)
    return root


def admin_site(supervisor: LabSupervisor) -> server.Site:
    """The lab endpoint's site; ``site.resource`` is :func:`admin_root`'s tree, with the
    web queue viewer mounted on it."""
    from exchange_emu.lab.viewer import mount_viewer

    root = admin_root(supervisor)
    mount_viewer(root, supervisor.organization, supervisor.reactor)
    return guarded_site(root)
