"""``twistd exchange-mailbox``: an Exchange 2010 mailbox server."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from exchange_emu.roles.options import ServerOptions
from exchange_emu.roles.server_services import ExchangeServer
from exchange_emu.security.credentials import CertificateError
from exchange_emu.startup import ExitOnStartupError
from exchange_emu.stop_signals import StopOnceOnSignals


class Options(ServerOptions):
    synopsis = "--config etc/lab.toml --server NAME [--port-offset N]"
    longdesc = (
        "Run one Exchange 2010 mailbox server of an organization file: its mailbox "
        "databases, the store-driver endpoint the hubs of its site connect to, and the "
        "Mail Submission service. Example: twistd -n exchange-mailbox --config "
        "etc/lab.toml --server MBX01"
    )


def makeService(options: Options, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    organization, server = options.server("exchange-mailbox", "mailbox")
    top = ExitOnStartupError("exchange-mailbox")
    StopOnceOnSignals(reactor).setServiceParent(top)
    try:
        ExchangeServer(organization, server, reactor).setServiceParent(top)
    except CertificateError as e:
        raise SystemExit(f"exchange-mailbox: error: {e}") from None
    return top
