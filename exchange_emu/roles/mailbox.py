"""``twistd exchange-mailbox``: not implemented yet (a later issue builds it)."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from exchange_emu.roles.not_built import NotImplementedRole
from exchange_emu.roles.options import ServerOptions


class Options(ServerOptions):
    synopsis = "--config etc/lab.toml --server NAME [--port-offset N]"


def makeService(options: Options, reactor: Any = None) -> service.IService:
    _, server = options.server("exchange-mailbox", "mailbox")
    return NotImplementedRole(server.name, "mailbox")
