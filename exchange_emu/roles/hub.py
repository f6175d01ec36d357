"""``twistd exchange-hub``: an Exchange 2010 hub transport server."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from exchange_emu.roles.options import ServerOptions
from exchange_emu.roles.transport_role import make_transport_service


class Options(ServerOptions):
    synopsis = "--config etc/lab.toml --server NAME [--port-offset N]"
    longdesc = (
        "Run one Exchange 2010 hub transport server of an organization file: its queue "
        "database, receive connectors and logs. Example: twistd -n exchange-hub "
        "--config etc/lab.toml --server HUB01"
    )


def makeService(options: Options, reactor: Any = None) -> service.IService:
    return make_transport_service(options, "hub", "exchange-hub", reactor)
