"""makeService shared by the hub and edge roles."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from exchange_emu.roles.options import ServerOptions
from exchange_emu.roles.server_services import ExchangeServer
from exchange_emu.security.credentials import CertificateError
from exchange_emu.startup import ExitOnStartupError
from exchange_emu.stop_signals import StopOnceOnSignals


def make_transport_service(
    options: ServerOptions, role: str, program: str, reactor: Any = None
) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    organization, server = options.server(program, role)
    top = ExitOnStartupError(program)
    StopOnceOnSignals(reactor).setServiceParent(top)
    try:
        ExchangeServer(organization, server, reactor).setServiceParent(top)
    except CertificateError as e:
        raise SystemExit(f"{program}: error: {e}") from None
    return top
