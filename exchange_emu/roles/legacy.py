"""``twistd exchange-legacy``: an Exchange 2007 hub, an Exchange 2003 bridgehead, or a
non-Exchange MTA (the ``version`` of the server in the organization file): store and
forward with its own durable queue, local mailboxes for its own domains, no XSHADOW."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from exchange_emu.roles.options import ServerOptions
from exchange_emu.roles.transport_role import make_transport_service


class Options(ServerOptions):
    synopsis = "--config etc/lab.toml --server NAME [--port-offset N]"
    longdesc = (
        "Run a legacy mail server of an organization file: an Exchange 2007 hub or "
        "Exchange 2003 bridgehead (version 2007/2003), or a plain Internet MTA "
        "(version non-exchange). Example: twistd -n exchange-legacy --config etc/lab.toml "
        "--server LEGACY01"
    )


def makeService(options: Options, reactor: Any = None) -> service.IService:
    return make_transport_service(options, "legacy", "exchange-legacy", reactor)
