"""A transport server's own admin endpoint: the management cmdlets as HTTP/JSON
(``docs/management.md``), served inside the server's process.

The address is the server's ``admin`` key in the organization file; without one (or when that
port is busy, with a warning) the server listens on a free port of 127.0.0.1. Either way it
writes the address it listens on to ``<data_dir>/admin.address``, where the lab supervisor
finds it, and removes the file when it stops.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web import resource

from exchange_emu.admin.errors import ManagementError, parse_result_size
from exchange_emu.admin.http_json import STREAMED, ApiRoot, JsonResource, arg, body
from exchange_emu.admin.queues import QueueManagement
from exchange_emu.admin.receive_connectors import ConnectorManagement
from exchange_emu.admin.same_origin import guarded_site
from exchange_emu.admin.transport_config import TransportConfigManagement
from exchange_emu.directory import Address, Server
from exchange_emu.startup import StartupError
from exchange_emu.transport.server import TransportServer

log = Logger()

ADDRESS_FILE = "admin.address"
"""Where a server without an ``admin`` key writes the address it listens on."""


def admin_address_file(server: Server) -> Path:
    return Path(server.data_dir) / ADDRESS_FILE


def _required(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ManagementError(f"give {name} (e.g. {name}=HUB01\\\\12)")
    return value


def management_tree(transport: TransportServer) -> resource.Resource:
    """``/api/...`` of one server (the same paths as the lab endpoint's)."""
    queues = QueueManagement(transport.engine)
    config = TransportConfigManagement(transport)
    connectors = ConnectorManagement(transport)
    api = ApiRoot()

    async def get_queues(request: Any) -> Any:
        identity = arg(request, "identity")
        if identity:
            return [await queues.get_queue(identity)]
        return await queues.get_queues(arg(request, "filter"),
                                       parse_result_size(arg(request, "result_size")))

    async def get_messages(request: Any) -> Any:
        return await queues.get_messages(arg(request, "queue"), arg(request, "filter"),
                                         parse_result_size(arg(request, "result_size")))

    async def get_message(request: Any) -> Any:
        return await queues.get_message(_required(arg(request, "identity"), "identity"))

    def queue_action(verb: str) -> JsonResource:
        async def act(request: Any) -> Any:
            given = body(request)
            identity = _required(given.get("identity"), "identity")
            if verb == "retry":
                return await queues.retry_queue(identity, bool(given.get("resubmit")))
            if verb == "suspend":
                return await queues.suspend_queue(identity)
            return await queues.resume_queue(identity)
        return JsonResource(post=act)

    def message_action(verb: str) -> JsonResource:
        async def act(request: Any) -> Any:
            given = body(request)
            identity = _required(given.get("identity"), "identity")
            if verb == "suspend":
                return await queues.suspend_message(identity)
            if verb == "resume":
                return await queues.resume_message(identity)
            return await queues.remove_message(identity, bool(given.get("with_ndr")))
        return JsonResource(post=act)

    async def export(request: Any) -> Any:
        identity = _required(arg(request, "identity"), "identity")
        await queues.get_message(identity)  # 404 before any byte is sent
        started = False

        def write(chunk: bytes) -> None:
            nonlocal started
            if not started:
                started = True
                request.setHeader(b"content-type", b"message/rfc822")
            request.write(chunk)

        await queues.export_message(identity, write)
        if not started:
            request.setHeader(b"content-type", b"message/rfc822")
        request.finish()
        return STREAMED

    async def get_config(request: Any) -> Any:
        return [config.get()]

    async def set_config(request: Any) -> Any:
        given = body(request)
        return [config.set(given.get("settings"))]

    async def get_connectors(request: Any) -> Any:
        return connectors.get(arg(request, "identity"))

    async def set_connector(request: Any) -> Any:
        given = body(request)
        return connectors.set(_required(given.get("identity"), "identity"),
                              given.get("settings"))

    api.putChild(b"queues", JsonResource(get=get_queues))
    queue = JsonResource()
    for verb in ("retry", "suspend", "resume"):
        queue.putChild(verb.encode(), queue_action(verb))
    api.putChild(b"queue", queue)
    api.putChild(b"messages", JsonResource(get=get_messages))
    message = JsonResource(get=get_message)
    for verb in ("suspend", "resume", "remove"):
        message.putChild(verb.encode(), message_action(verb))
    message.putChild(b"export", JsonResource(get=export))
    api.putChild(b"message", message)
    api.putChild(b"transport-config", JsonResource(get=get_config, post=set_config))
    api.putChild(b"receive-connectors", JsonResource(get=get_connectors))
    api.putChild(b"receive-connector", JsonResource(post=set_connector))
    root = resource.Resource()
    root.putChild(b"api", api)
    return root


class ServerAdminEndpoint(service.Service):
    """The admin endpoint of one server process (started after its transport server)."""

    def __init__(self, server_: Server, transport: TransportServer, reactor: Any) -> None:
        self.server = server_
        self.transport = transport
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        from twisted.internet.error import CannotListenError

        automatic = Address("127.0.0.1", 0)
        address = self.server.admin or automatic
        site = guarded_site(management_tree(self.transport))
        site.log = lambda request: None  # type: ignore[method-assign]  # no access log lines
        try:
            self.port = self.reactor.listenTCP(address.port, site, interface=address.host)
        except CannotListenError as e:
            if address == automatic:
                raise StartupError(f"{self.server.name}: admin endpoint cannot listen on "
                                   f"{address}: {e.socketError}") from None
            # The management API is no reason to keep a transport server from running:
            # take a free port and say so (the lab finds it in admin.address).
            log.warn("{server}: admin endpoint cannot listen on {address} ({why}); using "
                     "a free port of 127.0.0.1 instead", server=self.server.name,
                     address=str(address), why=e.socketError)
            self.port = self.reactor.listenTCP(0, site, interface=automatic.host)
        assert self.port is not None
        host: Any = self.port.getHost()
        actual = f"{host.host}:{host.port}"
        path = admin_address_file(self.server)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(actual + "\n")
        os.replace(temporary, path)
        log.info("{server}: admin endpoint on http://{address}/api/queues",
                 server=self.server.name, address=actual)
        super().privilegedStartService()

    def stopService(self) -> Any:
        super().stopService()
        with contextlib.suppress(OSError):
            admin_address_file(self.server).unlink()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
