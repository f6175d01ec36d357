"""The lab endpoint's ``/api/...``: the management API of every server, in one place.

A request naming one server (``server=``, or the server part of an ``identity`` or
``queue``) is passed to that server's own admin endpoint and its answer streamed back
(Export-Message included). A listing without a server (Get-Queue, Get-Message,
Get-TransportConfig, Get-ReceiveConnector) goes to every running transport server and the
answers are merged in organization-file order; servers not running are named in the
``X-Exchange-Emu-Not-Running`` header instead of failing the call. A server that is not
running, or not answering, is a 502.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any
from urllib.parse import urlencode

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Protocol
from twisted.web import resource, server
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer

from exchange_emu.admin.errors import ManagementError, NotFoundError
from exchange_emu.admin.http_json import JsonNotFound, arg, refuse, send_json
from exchange_emu.admin.server_api import admin_address_file
from exchange_emu.directory import Server
from exchange_emu.lab.supervisor import LabSupervisor

NOT_RUNNING_HEADER = b"x-exchange-emu-not-running"
TRANSPORT_ROLES = frozenset({"hub", "edge", "legacy"})
_MERGED = {"queues", "messages", "transport-config", "receive-connectors"}
"""Listings answered by every running server when no server is named."""
_FORWARDED = {*_MERGED, "queue", "message", "receive-connector"}
"""The first path segments under ``/api`` that the servers answer."""


class ServerNotRunning(ManagementError):
    status = 502


def admin_address(server_: Server) -> str | None:
    """Where a server's admin endpoint listens: the address it wrote at start-up
    (``<data_dir>/admin.address``), else its ``admin`` key; None if unknown."""
    try:
        written = admin_address_file(server_).read_text().strip()
    except OSError:
        written = ""
    if written:
        return written
    return str(server_.admin) if server_.admin is not None else None


def _server_of(identity: str) -> str:
    return identity.strip().replace("/", "\\").split("\\", 1)[0].strip()


class _Relay(Protocol):
    """Copies a server's answer into the lab's response as it arrives (a stream)."""

    def __init__(self, request: Any) -> None:
        self.request = request

    def dataReceived(self, data: bytes) -> None:
        if not self.request.finished:
            self.request.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.request.finished and not getattr(self.request, "_disconnected", False):
            self.request.finish()


class ApiForwarder(resource.Resource):
    """``/api``: lab-level children (``tracking``, ``send``) are put here with putChild;
    every other path is forwarded to the servers."""

    def __init__(self, supervisor: LabSupervisor, reactor: Any) -> None:
        super().__init__()
        self.supervisor = supervisor
        self.agent = Agent(reactor, connectTimeout=10)

    def getChild(self, path: bytes, request: Any) -> resource.Resource:
        if path.decode("utf-8", "replace") not in _FORWARDED:
            return JsonNotFound()
        return _Forward(self)

    # -- choosing the servers ------------------------------------------------------------------

    def transport_servers(self) -> list[Server]:
        return [s for s in self.supervisor.organization.servers.values()
                if s.roles & TRANSPORT_ROLES]

    def named(self, name: str) -> Server:
        known = {n.upper(): s for n, s in self.supervisor.organization.servers.items()}
        found = known.get(name.upper())
        if found is None:
            raise NotFoundError(f"no server named {name!r} (known: "
                                f"{', '.join(self.supervisor.organization.servers)})")
        if not found.roles & TRANSPORT_ROLES:
            raise ManagementError(f"{found.name} is a {'/'.join(sorted(found.roles))} server; "
                                  "queues live on hub, edge and legacy servers")
        return found

    def target(self, request: Any, payload: dict[str, Any]) -> Server | None:
        """The one server a request is for, or None for every server."""
        names = []
        for given in (arg(request, "server"), payload.get("server")):
            if isinstance(given, str) and given.strip():
                names.append(given.strip())
        for given in (arg(request, "identity"), arg(request, "queue"), payload.get("identity")):
            if isinstance(given, str) and given.strip():
                names.append(_server_of(given))
        if not names:
            return None
        if len({n.upper() for n in names}) > 1:
            raise ManagementError(f"the request names several servers ({', '.join(names)}); "
                                  "name one")
        return self.named(names[0])

    def running_address(self, server_: Server) -> str:
        if server_.name not in self.supervisor.processes:
            raise ServerNotRunning(f"{server_.name} is not running "
                                   f"(exchange-emu fault start {server_.name})")
        address = admin_address(server_)
        if address is None:
            raise ServerNotRunning(f"{server_.name} has not published its admin endpoint "
                                   "yet (starting?)")
        return address

    # -- forwarding ------------------------------------------------------------------------------

    async def forward(self, request: Any) -> None:
        raw = request.content.read() if request.content is not None else b""
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except ValueError:
            payload = None
        if payload is not None and not isinstance(payload, dict):
            payload = None
        section = request.prepath[1].decode() if len(request.prepath) > 1 else ""
        target = self.target(request, payload or {})
        if target is None and (section in _MERGED and (
                request.method == b"GET" or section == "transport-config")):
            await self.merge(request, raw)
            return
        if target is None:
            raise ManagementError("give the identity (SERVER\\...) or server= of what to act on")
        await self.relay(request, target, raw)

    def _url(self, address: str, request: Any, drop_server: bool = False) -> bytes:
        path = b"/".join([b"", *request.prepath, *request.postpath])
        query = {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()
                 if not (drop_server and k == b"server")}
        encoded = urlencode(query, doseq=True)
        return f"http://{address}".encode() + path + (b"?" + encoded.encode() if encoded
                                                       else b"")

    def _producer(self, raw: bytes) -> IBodyProducer | None:
        return FileBodyProducer(BytesIO(raw)) if raw else None

    async def relay(self, request: Any, target: Server, raw: bytes) -> None:
        address = self.running_address(target)
        try:
            response = await self.agent.request(
                request.method, self._url(address, request),
                Headers({b"content-type": [b"application/json"]}), self._producer(raw))
        except Exception as e:
            raise ServerNotRunning(f"{target.name} does not answer at {address} "
                                   f"({type(e).__name__}); is it running?") from None
        request.setResponseCode(response.code)
        kind = response.headers.getRawHeaders(b"content-type") or [b"application/json"]
        request.setHeader(b"content-type", kind[0])
        finished = request.notifyFinish()
        response.deliverBody(_Relay(request))
        await finished

    async def merge(self, request: Any, raw: bytes) -> None:
        servers = self.transport_servers()
        running: list[tuple[Server, str]] = []
        missing: list[str] = []
        for each in servers:
            try:
                running.append((each, self.running_address(each)))
            except ServerNotRunning:
                missing.append(each.name)

        async def ask(each: Server, address: str) -> tuple[int, Any]:
            response = await self.agent.request(
                request.method, self._url(address, request, drop_server=True),
                Headers({b"content-type": [b"application/json"]}), self._producer(raw))
            return response.code, json.loads(await readBody(response))

        results = await DeferredList(
            [_deferred(ask(each, address)) for each, address in running], consumeErrors=True)
        merged: list[Any] = []
        for (each, _), (ok, value) in zip(running, results, strict=True):
            if not ok:
                missing.append(each.name)
                continue
            code, answer = value
            if code != 200:
                send_json(request, code, answer)
                return
            merged.extend(answer if isinstance(answer, list) else [answer])
        if missing:
            request.setHeader(NOT_RUNNING_HEADER, ", ".join(missing).encode())
        send_json(request, 200, merged)


def _deferred(coroutine: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


class _Forward(resource.Resource):
    """Any ``/api/...`` path that the lab itself does not answer."""

    isLeaf = True

    def __init__(self, forwarder: ApiForwarder) -> None:
        super().__init__()
        self.forwarder = forwarder

    def render(self, request: Any) -> int:
        d = _deferred(self.forwarder.forward(request))
        d.addErrback(lambda failure: refuse(request, failure))
        return server.NOT_DONE_YET
